//! Files mapped with mmap, summed per file rather than per mapping: the bytes of the file
//! that were mapped (a range mapped twice counts once, nothing past the file's end), how
//! many mmaps it took, and whether some bytes were mapped more than once. A file is its
//! device and inode where the kernel named it at the syscall, else its path.
use std::collections::BTreeMap;

use crate::event::{Event, EventKind};

/// One file's mappings.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedFile {
    pub path: String,
    /// The file's size at its first mapping, when the kernel read it.
    pub size: Option<u64>,
    /// Bytes of the file covered by at least one mapping.
    pub distinct_bytes: u64,
    /// Sum of the mappings' lengths (more than `distinct_bytes` when ranges overlap).
    pub mapped_bytes: u64,
    pub calls: u64,
    /// Index (as given to [`Mappings::add`]) of the largest mapping, and of the first.
    pub largest: usize,
    pub first: usize,
    /// Process of the first mapping, and when it was.
    pub pid: u32,
    pub first_ns: u64,
    /// Program code or the system's own files (a mapping with PROT_EXEC, a shared
    /// library, ld.so.cache, locale and gconv data): what every process maps, not the
    /// data a service loads. Kept apart from growth in verdicts.
    pub code: bool,
}

impl MappedFile {
    /// How the bytes were mapped, after "mapped 1.50 GiB of FILE", without brackets so
    /// that callers may bracket it: `` (one mmap), ` in 3 mmaps`, `, mapped twice`,
    /// `, mapped 3 times`, or ` in 5 overlapping mmaps, 2.10 GiB in all`.
    pub fn how(&self, format_bytes: impl Fn(u64) -> String) -> String {
        if self.calls <= 1 {
            return String::new();
        }
        if self.mapped_bytes <= self.distinct_bytes {
            return format!(" in {} mmaps", self.calls);
        }
        if self.distinct_bytes > 0 && self.mapped_bytes == self.distinct_bytes * self.calls {
            return if self.calls == 2 { ", mapped twice".into() } else { format!(", mapped {} times", self.calls) };
        }
        format!(" in {} overlapping mmaps, {} in all", self.calls, format_bytes(self.mapped_bytes))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Inode(String, u64),
    Path(String),
}

/// One file's summary, its mapped ranges (sorted, disjoint) and its largest mmap's length.
type Entry = (MappedFile, Vec<(u64, u64)>, u64);

/// Collects successful file mmaps and summarises them per file, as they come.
#[derive(Default)]
pub struct Mappings {
    files: BTreeMap<Key, Entry>,
}

impl Mappings {
    /// Takes `ev` if it is a successful mmap of a file, and returns that file's summary
    /// so far; `index` is how the caller finds the event again.
    pub fn add(&mut self, index: usize, ev: &Event) -> Option<&MappedFile> {
        let EventKind::Mmap { len, offset, path, error: None, flags, file, prot, .. } = &ev.kind else { return None };
        if flags.contains("ANONYMOUS") {
            return None;
        }
        let key = match (file, path) {
            (Some(f), _) => Key::Inode(f.dev.clone(), f.ino),
            (None, Some(p)) if !p.is_empty() => Key::Path(p.clone()),
            _ => return None,
        };
        let size = file.as_ref().map(|f| f.size);
        let (m, ranges, largest_len) = self.files.entry(key).or_insert_with(|| {
            (
                MappedFile {
                    path: path.clone().unwrap_or_else(|| "(unnamed file)".into()),
                    size,
                    distinct_bytes: 0,
                    mapped_bytes: 0,
                    calls: 0,
                    largest: index,
                    first: index,
                    pid: ev.pid,
                    first_ns: ev.ts_ns,
                    code: path.as_deref().is_some_and(is_system_file),
                },
                Vec::new(),
                0,
            )
        });
        let end = offset.saturating_add(*len);
        let end = m.size.map_or(end, |s| end.min(s.max(*offset)));
        m.distinct_bytes = m.distinct_bytes.saturating_add(insert_range(ranges, (*offset, end)));
        m.mapped_bytes = m.mapped_bytes.saturating_add(end - offset);
        m.calls += 1;
        m.code |= prot.contains("EXEC");
        if *len > *largest_len {
            *largest_len = *len;
            m.largest = index;
        }
        Some(m)
    }

    /// One entry per file, most bytes first.
    pub fn files(self) -> Vec<MappedFile> {
        let mut out: Vec<MappedFile> = self
            .files
            .into_values()
            .map(|(m, _, _)| m)
            .collect();
        out.sort_by(|a, b| b.distinct_bytes.cmp(&a.distinct_bytes).then_with(|| a.path.cmp(&b.path)));
        out
    }
}

/// Files every process maps that are not its data: shared libraries, the loader's cache,
/// locale and character-set tables.
pub fn is_system_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let library = name.ends_with(".so") || name.contains(".so.");
    library
        || name == "ld.so.cache"
        || name == "locale-archive"
        || path.contains("/locale/")
        || path.contains("/gconv/")
}

/// Adds the half-open range `new` to `ranges` (sorted, disjoint, kept so) and returns
/// how many bytes it added that were not covered yet. A file mapped again and again over
/// the same bytes keeps one range.
fn insert_range(ranges: &mut Vec<(u64, u64)>, new: (u64, u64)) -> u64 {
    let (mut start, mut end) = new;
    if end <= start {
        return 0;
    }
    let before: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    // Merge every range that touches [start, end).
    let first = ranges.partition_point(|&(_, e)| e < start);
    let mut last = first;
    while last < ranges.len() && ranges[last].0 <= end {
        start = start.min(ranges[last].0);
        end = end.max(ranges[last].1);
        last += 1;
    }
    ranges.splice(first..last, [(start, end)]);
    let after: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    after - before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FileId;

    fn mmap(len: u64, offset: u64, path: &str, file: Option<(u64, u64)>) -> Event {
        Event {
            ts_ns: 1,
            pid: 7,
            tid: 7,
            comm: "x".into(),
            kind: EventKind::Mmap {
                addr: 0,
                len,
                prot: "r--".into(),
                flags: "PRIVATE".into(),
                fd: 3,
                offset,
                result: 4096,
                error: None,
                path: Some(path.into()),
                duration_ns: 1,
                file: file.map(|(ino, size)| FileId { dev: "08:01".into(), ino, size, path_cut: false }),
            },
        }
    }

    fn bytes(b: u64) -> String {
        format!("{b} B")
    }

    #[test]
    fn ranges_merge_as_they_come() {
        let mut r = Vec::new();
        assert_eq!(insert_range(&mut r, (100, 200)), 100);
        assert_eq!(insert_range(&mut r, (300, 400)), 100);
        assert_eq!(insert_range(&mut r, (150, 350)), 100);
        assert_eq!(r, vec![(100, 400)]);
        assert_eq!(insert_range(&mut r, (0, 100)), 100);
        assert_eq!(r, vec![(0, 400)]);
        assert_eq!(insert_range(&mut r, (10, 20)), 0);
        assert_eq!(insert_range(&mut r, (500, 500)), 0);
        assert_eq!(r, vec![(0, 400)]);
    }

    #[test]
    fn a_file_mapped_twice_counts_once() {
        let mut m = Mappings::default();
        m.add(0, &mmap(1000, 0, "/m/model.safetensors", Some((5, 1000))));
        let so_far = m.add(1, &mmap(1000, 0, "/m/model.safetensors", Some((5, 1000)))).unwrap();
        assert_eq!(so_far.how(bytes), ", mapped twice");
        let files = m.files();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].distinct_bytes, files[0].mapped_bytes, files[0].calls), (1000, 2000, 2));
        assert_eq!(files[0].how(bytes), ", mapped twice");
    }

    #[test]
    fn segments_of_a_library_are_one_file_and_never_more_than_its_size() {
        let mut m = Mappings::default();
        // The loader maps the whole file, then segments over it at their offsets; the
        // last page runs past the end of the file.
        m.add(0, &mmap(8192, 0, "/lib/libc.so.6", Some((9, 6000))));
        m.add(1, &mmap(4096, 0, "/lib/libc.so.6", Some((9, 6000))));
        m.add(2, &mmap(4096, 4096, "/lib/libc.so.6", Some((9, 6000))));
        let f = &m.files()[0];
        assert_eq!(f.distinct_bytes, 6000);
        assert_eq!(f.mapped_bytes, 6000 + 4096 + 1904);
        assert_eq!(f.how(bytes), " in 3 overlapping mmaps, 12000 B in all");
    }

    #[test]
    fn the_same_path_with_another_inode_is_another_file() {
        // A checkpoint replaced between two loads: same name, different file.
        let mut m = Mappings::default();
        m.add(0, &mmap(100, 0, "/m/w.bin", Some((1, 100))));
        m.add(1, &mmap(300, 0, "/m/w.bin", Some((2, 300))));
        let files = m.files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].distinct_bytes, 300);
        assert_eq!(files[0].largest, 1);
    }

    #[test]
    fn without_the_kernels_identity_the_path_is_the_file_and_ranges_still_merge() {
        let mut m = Mappings::default();
        m.add(0, &mmap(100, 0, "/m/w.bin", None));
        m.add(1, &mmap(100, 50, "/m/w.bin", None));
        let f = &m.files()[0];
        assert_eq!((f.distinct_bytes, f.calls, f.size), (150, 2, None));
        assert_eq!(f.how(bytes), " in 2 overlapping mmaps, 200 B in all");
        let mut m = Mappings::default();
        m.add(0, &mmap(100, 0, "/m/w.bin", None));
        m.add(1, &mmap(100, 100, "/m/w.bin", None));
        assert_eq!(m.files()[0].how(bytes), " in 2 mmaps");
    }
}
