//! The fact-check run on every trace the end-to-end tests produce: each file size a
//! report or verdict states is at most the file's size (on disk, and as the kernel read
//! it at the mmap), each mapped file the kernel named is that file on disk, each
//! `pid N (comm)` and `comm[N]` is in the trace with that comm, each memory-cgroup figure
//! set against a limit comes from that one cgroup's samples, and each chain is in time
//! order. A report line that could be wrong is compared with the truth here.
use std::{collections::HashSet, os::unix::fs::MetadataExt};

use tracer::{
    diagnose::{diagnose, Verdict},
    event::{Event, EventKind},
    export::report::Report,
};

/// What was checked, so that a caller can see the check was not empty.
#[derive(Debug, Default)]
pub struct Checked {
    pub files_on_disk: usize,
    pub names: usize,
    pub chains: usize,
    pub sizes: usize,
}

/// Every fact of the trace, its verdicts and its report; the list of wrong ones.
pub fn check(events: &[Event]) -> Result<Checked, Vec<String>> {
    let verdicts = diagnose(events);
    let report = Report::build(events, verdicts.clone(), Vec::new(), None);
    let mut wrong = Vec::new();
    let mut done = Checked::default();
    mapped_files_are_the_files_on_disk(events, &mut wrong, &mut done);
    mapping_sizes_fit_the_files(&report, &verdicts, &mut wrong, &mut done);
    names_are_in_the_trace(events, &verdicts, &report, &mut wrong, &mut done);
    chains_are_in_time_order(&verdicts, &mut wrong, &mut done);
    events_are_in_time_order(events, &mut wrong);
    cgroup_figures_are_one_cgroups(events, &report, &mut wrong);
    if wrong.is_empty() { Ok(done) } else { Err(wrong) }
}

/// `check`, as a test assertion.
pub fn assert_true(events: &[Event], what: &str) -> Checked {
    match check(events) {
        Ok(done) => done,
        Err(wrong) => panic!("fact-check of {what} failed:\n  {}", wrong.join("\n  ")),
    }
}

/// A file the kernel named at an mmap, still on disk with the same device and inode,
/// has the size the kernel read (these tests do not change the files they map).
fn mapped_files_are_the_files_on_disk(events: &[Event], wrong: &mut Vec<String>, done: &mut Checked) {
    let mut seen = HashSet::new();
    for e in events {
        let EventKind::Mmap { path: Some(path), file: Some(f), .. } = &e.kind else { continue };
        if f.path_cut || !seen.insert((f.dev.clone(), f.ino)) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(path) else { continue };
        let dev = format!("{:02x}:{:02x}", libc::major(meta.dev()), libc::minor(meta.dev()));
        if meta.ino() != f.ino || dev != f.dev {
            // Another file has the name now (a temporary one replaced): nothing to compare.
            continue;
        }
        done.files_on_disk += 1;
        if meta.len() != f.size {
            wrong.push(format!("{path}: the trace says {} bytes at the mmap, the disk {} bytes", f.size, meta.len()));
        }
    }
}

/// "1.50 GiB", "307 MiB", "75.0 KiB", "512 B" back to bytes, and how far off the rounding
/// may be.
fn parse_shown_bytes(text: &str) -> Option<(f64, f64)> {
    let (num, unit) = text.trim().split_once(' ')?;
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    // Three significant figures: off by at most half a unit of the last one.
    let step = if v >= 100.0 { 1.0 } else if v >= 10.0 { 0.1 } else { 0.01 };
    Some((v * scale, step * scale))
}

fn disk_size(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// No report line or verdict says more bytes of a file were mapped than the file has.
fn mapping_sizes_fit_the_files(report: &Report, verdicts: &[Verdict], wrong: &mut Vec<String>, done: &mut Checked) {
    for f in &report.memory.file_mappings {
        if let Some(size) = f.size {
            done.sizes += 1;
            if f.bytes > size {
                wrong.push(format!("report: {} of {} mapped, but the file had {} bytes at the mmap", f.bytes, f.path, size));
            }
        }
        if f.size.is_none() {
            if let Some(size) = disk_size(&f.path) {
                done.sizes += 1;
                if f.bytes > size {
                    wrong.push(format!("report: {} bytes of {} mapped, but it has {size} bytes on disk", f.bytes, f.path));
                }
            }
        }
    }
    // "mapped 1.50 GiB of /path (mapped twice)" in chains.
    for v in verdicts {
        for l in &v.chain {
            let Some(rest) = l.what.strip_prefix("mapped ") else { continue };
            let Some((shown, path)) = rest.split_once(" of ") else { continue };
            // What follows the path: " in 3 mmaps", ", mapped twice", " in 2 overlapping mmaps, …".
            let path = [" in ", ", mapped "].iter().fold(path, |p, sep| p.split(sep).next().unwrap_or(p));
            let (Some((bytes, slack)), Some(size)) = (parse_shown_bytes(shown), disk_size(path)) else { continue };
            done.sizes += 1;
            if bytes - slack > size as f64 {
                wrong.push(format!("verdict {}: \"{}\" but {path} has {size} bytes", v.cause.as_str(), l.what));
            }
        }
    }
}

/// `pid N (comm)` and `comm[N]` in `text`.
fn named_processes(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("pid ") {
        rest = &rest[at + 4..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[digits.len()..];
        if let (Ok(pid), Some(inner)) = (digits.parse::<u32>(), after.strip_prefix(" (")) {
            if let Some(end) = inner.find(')') {
                out.push((pid, inner[..end].to_string()));
            }
        }
    }
    for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ',') {
        let Some(open) = word.find('[') else { continue };
        let Some(close) = word[open..].find(']') else { continue };
        let (comm, pid) = (&word[..open], &word[open + 1..open + close]);
        if let (false, Ok(pid)) = (comm.is_empty(), pid.parse::<u32>()) {
            out.push((pid, comm.to_string()));
        }
    }
    out
}

/// Every process a verdict or the report names is in the trace under that comm.
fn names_are_in_the_trace(events: &[Event], verdicts: &[Verdict], report: &Report, wrong: &mut Vec<String>, done: &mut Checked) {
    let mut known: HashSet<(u32, String)> = HashSet::new();
    for e in events {
        known.insert((e.pid, e.comm.clone()));
        match &e.kind {
            EventKind::Peer { owner_pid, owner_comm, .. } => {
                known.insert((*owner_pid, owner_comm.clone()));
            }
            EventKind::Signal { target_pid, target_tid, target_comm, sender_parents, .. } => {
                if target_pid == target_tid {
                    known.insert((*target_pid, target_comm.clone()));
                }
                known.extend(sender_parents.as_deref().map(named_processes).unwrap_or_default());
            }
            EventKind::Fork { child_pid, child_comm, .. } => {
                known.insert((*child_pid, child_comm.clone()));
            }
            EventKind::OomKill { victim_pid: Some(p), victim_comm, .. } => {
                known.insert((*p, victim_comm.clone()));
            }
            EventKind::Sample { processes, cgroup, .. } => {
                for p in processes {
                    known.insert((p.pid, p.comm.clone()));
                }
                for m in cgroup.iter().flat_map(|c| &c.members) {
                    known.insert((m.pid, m.comm.clone()));
                }
            }
            _ => {}
        }
    }
    let mut texts: Vec<String> = report.summary.clone();
    for v in verdicts {
        texts.push(v.summary.clone());
        texts.extend(v.chain.iter().map(|l| l.what.clone()));
        texts.extend(v.evidence.iter().cloned());
    }
    for text in &texts {
        for (pid, comm) in named_processes(text) {
            done.names += 1;
            if !known.contains(&(pid, comm.clone())) {
                wrong.push(format!("\"{text}\" names pid {pid} as {comm:?}, which the trace never shows"));
            }
        }
    }
}

/// The trace is in time order: capture releases an event only once nothing still in the
/// kernel can precede it, and samples are merged in.
fn events_are_in_time_order(events: &[Event], wrong: &mut Vec<String>) {
    for (i, pair) in events.windows(2).enumerate() {
        if pair[1].ts_ns < pair[0].ts_ns {
            wrong.push(format!(
                "event {} ({}, ts {}) comes after event {} ({}, ts {}) but happened {} ns before it",
                i + 1,
                pair[1].kind_name(),
                pair[1].ts_ns,
                i,
                pair[0].kind_name(),
                pair[0].ts_ns,
                pair[0].ts_ns - pair[1].ts_ns
            ));
            if wrong.len() > 20 {
                return;
            }
        }
    }
}

fn chains_are_in_time_order(verdicts: &[Verdict], wrong: &mut Vec<String>, done: &mut Checked) {
    for v in verdicts {
        done.chains += 1;
        for pair in v.chain.windows(2) {
            if pair[1].ts_ns < pair[0].ts_ns {
                wrong.push(format!("verdict {}: \"{}\" comes after \"{}\" but happened before it", v.cause.as_str(), pair[1].what, pair[0].what));
            }
        }
    }
}

/// The report's memory-cgroup peak and limit are figures of samples of that one cgroup.
fn cgroup_figures_are_one_cgroups(events: &[Event], report: &Report, wrong: &mut Vec<String>) {
    let Some(c) = &report.memory.cgroup else { return };
    let samples: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Sample { cgroup: Some(s), .. } if s.path == c.path => Some(s),
            _ => None,
        })
        .collect();
    if !samples.iter().any(|s| s.usage_bytes == c.peak_usage_bytes) {
        wrong.push(format!("report: cgroup {} peak {} is no sample of that cgroup", c.path, c.peak_usage_bytes));
    }
    if let Some(limit) = c.limit_bytes {
        if !samples.iter().any(|s| s.limit_bytes == Some(limit)) {
            wrong.push(format!("report: cgroup {} limit {limit} is no sample of that cgroup", c.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_oom() -> Vec<Event> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer/tests/data/oom.jsonl");
        tracer::export::reader::read_trace_file(&path).unwrap().events
    }

    #[test]
    fn a_true_trace_passes() {
        let done = check(&golden_oom()).unwrap_or_else(|w| panic!("{w:?}"));
        assert!(done.names > 0 && done.chains > 0, "{done:?}");
    }

    /// The bug the check is for: a 17 MiB mapping said to be of a 75-byte file.
    #[test]
    fn a_mapping_bigger_than_its_file_is_caught() {
        let dir = std::env::temp_dir().join(format!("tracer-facts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("tokenizer.json");
        std::fs::write(&small, [b'x'; 75]).unwrap();
        let mut events = golden_oom();
        for e in &mut events {
            if let EventKind::Mmap { path: Some(p), .. } = &mut e.kind {
                if p.ends_with("tokenizer.json") {
                    *p = small.display().to_string();
                }
            }
        }
        let wrong = check(&events).expect_err("a 17 MiB mapping of a 75-byte file");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(wrong.iter().any(|w| w.contains("tokenizer.json") && w.contains("75 bytes")), "{wrong:?}");
    }

    #[test]
    fn a_name_the_trace_never_shows_and_a_chain_out_of_order_are_caught() {
        let events = golden_oom();
        let mut verdicts = diagnose(&events);
        let report = Report::build(&events, verdicts.clone(), Vec::new(), None);
        let (mut wrong, mut done) = (Vec::new(), Checked::default());
        names_are_in_the_trace(&events, &verdicts, &report, &mut wrong, &mut done);
        chains_are_in_time_order(&verdicts, &mut wrong, &mut done);
        events_are_in_time_order(&events, &mut wrong);
        assert!(wrong.is_empty(), "{wrong:?}");
        verdicts[0].summary.push_str(", then pid 4711 (ghost) and ghost[4711]");
        verdicts[0].chain.reverse();
        names_are_in_the_trace(&events, &verdicts, &report, &mut wrong, &mut done);
        chains_are_in_time_order(&verdicts, &mut wrong, &mut done);
        assert_eq!(wrong.iter().filter(|w| w.contains("\"ghost\"")).count(), 2, "{wrong:?}");
        assert!(wrong.iter().any(|w| w.contains("happened before it")), "{wrong:?}");
        // An event out of place in the trace is caught too.
        let mut shuffled = events.clone();
        shuffled.swap(1, 2);
        let mut out_of_order = Vec::new();
        events_are_in_time_order(&shuffled, &mut out_of_order);
        assert!(out_of_order.iter().any(|w| w.contains("comes after event 1")), "{out_of_order:?}");
    }

    #[test]
    fn names_and_sizes_are_read_back_from_the_words() {
        assert_eq!(
            named_processes("pid 4711 (workload) was OOM-killed (the OOM killer ran in python3[77]), SIGKILL to workload[4711]"),
            vec![(4711, "workload".into()), (77, "python3".into()), (4711, "workload".into())]
        );
        assert_eq!(parse_shown_bytes("1.50 GiB"), Some((1.5 * 1073741824.0, 0.01 * 1073741824.0)));
        assert_eq!(parse_shown_bytes("307 MiB").map(|b| b.0), Some(307.0 * 1048576.0));
        assert_eq!(parse_shown_bytes("lots"), None);
    }
}
