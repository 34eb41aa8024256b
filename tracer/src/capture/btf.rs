//! Just enough of a BTF reader to find what no tracepoint format says: a struct member's
//! byte offset in the running kernel (`task_struct.exit_code`), and the names of an
//! enum's values where a tracepoint prints a bare number (`rss_stat`'s member on 5.10).
use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("not a BTF blob (bad magic)")]
    BadMagic,
    #[error("BTF blob is truncated")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_ENUM: u32 = 6;

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated)
}

fn name_at(strings: &[u8], off: u32) -> &[u8] {
    let rest = strings.get(off as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// One type of a BTF blob: its kind, name, flags, and the bytes that follow its header
/// (members of a struct, values of an enum...).
struct BtfType<'b> {
    kind: u32,
    name: &'b [u8],
    /// Size for structs, unions, enums and ints; the referred type id for the others.
    size_type: u32,
    kind_flag: bool,
    vlen: usize,
    extra: &'b [u8],
}

/// Walks the types of a BTF blob, handing each to `visit` with the string section, until
/// `visit` returns `Some`.
fn find_type<T>(btf: &[u8], mut visit: impl FnMut(&BtfType, &[u8]) -> Result<Option<T>, BtfError>) -> Result<Option<T>, BtfError> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != BTF_MAGIC {
        return Err(BtfError::BadMagic);
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or(BtfError::Truncated)?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(BtfError::Truncated)?;

    let mut at = 0;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,           // INT, VAR, DECL_TAG
            2 | 7..=12 | 16 | 18 => 0,  // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            3 => 12,                    // ARRAY
            4 | 5 => vlen * 12,         // STRUCT, UNION
            6 | 13 => vlen * 8,         // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12,       // DATASEC, ENUM64
            other => return Err(BtfError::UnknownKind(other)),
        };
        let ty = BtfType {
            kind,
            name: name_at(strings, name_off),
            size_type: u32_at(types, at - 4)?,
            kind_flag: info >> 31 == 1,
            vlen,
            extra: types.get(at..at + extra).ok_or(BtfError::Truncated)?,
        };
        if let Some(found) = visit(&ty, strings)? {
            return Ok(Some(found));
        }
        at += extra;
    }
    Ok(None)
}

/// Byte offset of `member` in `struct struct_name`, or `None` when either is absent.
pub fn member_offset(btf: &[u8], struct_name: &str, member: &str) -> Result<Option<u32>, BtfError> {
    let found = find_type(btf, |ty, strings| {
        if ty.kind != KIND_STRUCT || ty.name != struct_name.as_bytes() {
            return Ok(None);
        }
        for m in 0..ty.vlen {
            if name_at(strings, u32_at(ty.extra, m * 12)?) == member.as_bytes() {
                let raw = u32_at(ty.extra, m * 12 + 8)?;
                let bits = if ty.kind_flag { raw & 0x00ff_ffff } else { raw };
                return Ok(Some(Some(bits / 8)));
            }
        }
        // The struct is here without that member.
        Ok(Some(None))
    })?;
    Ok(found.flatten())
}

/// The values and names of the enum that has a value named `value_name` (the enums of
/// kernel constants are often anonymous): how a kernel that prints a number in a
/// tracepoint names it.
pub fn enum_with(btf: &[u8], value_name: &str) -> Result<Option<BTreeMap<i64, String>>, BtfError> {
    find_type(btf, |ty, strings| {
        if ty.kind != KIND_ENUM {
            return Ok(None);
        }
        let mut values = BTreeMap::new();
        let mut has = false;
        for m in 0..ty.vlen {
            let name = name_at(strings, u32_at(ty.extra, m * 8)?);
            let value = u32_at(ty.extra, m * 8 + 4)? as i32 as i64;
            has |= name == value_name.as_bytes();
            values.insert(value, String::from_utf8_lossy(name).into_owned());
        }
        Ok(has.then_some(values))
    })
}

const KIND_UNION: u32 = 5;
const KIND_ARRAY: u32 = 3;

/// A struct or union member: name, type id, byte offset.
struct Member {
    name: String,
    type_id: u32,
    offset: u32,
}

/// The structs and unions of a BTF blob, and what each type id is, parsed once: for
/// offsets of members reached through anonymous structs and unions (`qstr.len`, and
/// `file.f_path` on kernels that wrap it in a union).
pub struct Structs {
    /// Per type id (index 0 is `void`): kind, and the type it refers to for modifiers.
    kinds: Vec<(u32, u32)>,
    members: BTreeMap<u32, Vec<Member>>,
    by_name: BTreeMap<String, u32>,
    /// Byte size of each struct and union, by type id.
    sizes: BTreeMap<u32, u32>,
}

impl Structs {
    pub fn parse(btf: &[u8]) -> Result<Structs, BtfError> {
        let mut kinds = vec![(0, 0)];
        let mut members = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        find_type::<()>(btf, |ty, strings| {
            let id = kinds.len() as u32;
            // For modifiers and typedefs the header's size_type field is the referred type;
            // for an array, its element type.
            let referred = match ty.kind {
                KIND_STRUCT | KIND_UNION => 0,
                KIND_ARRAY => u32_at(ty.extra, 0)?,
                _ => ty.size_type,
            };
            kinds.push((ty.kind, referred));
            if ty.kind == KIND_STRUCT || ty.kind == KIND_UNION {
                let mut list = Vec::with_capacity(ty.vlen);
                for m in 0..ty.vlen {
                    let name = String::from_utf8_lossy(name_at(strings, u32_at(ty.extra, m * 12)?)).into_owned();
                    let type_id = u32_at(ty.extra, m * 12 + 4)?;
                    let raw = u32_at(ty.extra, m * 12 + 8)?;
                    let bits = if ty.kind_flag { raw & 0x00ff_ffff } else { raw };
                    list.push(Member { name, type_id, offset: bits / 8 });
                }
                // A struct declared twice (rare) keeps its first, complete definition.
                if ty.kind == KIND_STRUCT && !ty.name.is_empty() && ty.vlen > 0 {
                    by_name.entry(String::from_utf8_lossy(ty.name).into_owned()).or_insert(id);
                }
                members.insert(id, list);
                sizes.insert(id, ty.size_type);
            }
            Ok(None)
        })?;
        Ok(Structs { kinds, members, by_name, sizes })
    }

    /// `sizeof(struct name)`, if the struct is there.
    pub fn size(&self, name: &str) -> Option<u32> {
        self.sizes.get(self.by_name.get(name)?).copied()
    }

    /// Byte offset of `member` in `struct name`, looking inside anonymous structs and
    /// unions; `None` when the struct or the member is absent.
    pub fn offset(&self, name: &str, member: &str) -> Option<u32> {
        self.offset_in(*self.by_name.get(name)?, member, 0)
    }

    fn offset_in(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        self.member_in(id, member, depth).map(|(offset, _)| offset)
    }

    /// (offset, type id) of `member`, looking inside anonymous structs and unions.
    fn member_in(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 4 {
            return None;
        }
        let list = self.members.get(&id)?;
        if let Some(m) = list.iter().find(|m| m.name == member) {
            return Some((m.offset, m.type_id));
        }
        list.iter().filter(|m| m.name.is_empty()).find_map(|m| {
            let (offset, type_id) = self.member_in(self.resolve(m.type_id), member, depth + 1)?;
            Some((m.offset + offset, type_id))
        })
    }

    /// Whether `member` of `struct name` is an array of `struct element` (a kernel that
    /// changed the member's type keeps its name).
    pub fn is_array_of(&self, name: &str, member: &str, element: &str) -> bool {
        let (Some(&id), Some(&element_id)) = (self.by_name.get(name), self.by_name.get(element)) else {
            return false;
        };
        let Some((_, type_id)) = self.member_in(id, member, 0) else {
            return false;
        };
        match self.kinds.get(self.resolve(type_id) as usize) {
            Some(&(KIND_ARRAY, elem)) => self.resolve(elem) == element_id,
            _ => false,
        }
    }

    /// Through typedefs and modifiers to the type itself.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..8 {
            match self.kinds.get(id as usize) {
                Some(&(8 | 9 | 10 | 11 | 18, referred)) => id = referred,
                _ => break,
            }
        }
        id
    }
}

/// The kernel struct offsets the programs walk ([`tracer_common::kfield`]), from the
/// running kernel's BTF; `u32::MAX` for each one not found.
pub fn kernel_offsets(structs: Option<&Structs>) -> [u32; tracer_common::kfield::COUNT] {
    let mut out = [u32::MAX; tracer_common::kfield::COUNT];
    let Some(structs) = structs else {
        return out;
    };
    for (index, name, member) in tracer_common::kfield::ALL {
        if let Some(off) = structs.offset(name, member) {
            out[index] = off;
        }
    }
    out
}

/// Where the BTF rss_stat program finds a process's RSS counters on the running kernel,
/// and how far their central count can be from the exact value on this host
/// ([`tracer_common::RssCounterLayout`]); offsets not found stay unknown.
pub fn rss_counter_layout(structs: Option<&Structs>) -> tracer_common::RssCounterLayout {
    let mut layout = tracer_common::RssCounterLayout::unknown();
    let Some(structs) = structs else {
        return layout;
    };
    // Before 6.2 the counters were atomics (`struct mm_rss_stat`) and a thread's own cache.
    if !structs.is_array_of("mm_struct", "rss_stat", "percpu_counter") {
        return layout;
    }
    let unknown = |v: Option<u32>| v.unwrap_or(u32::MAX);
    layout.mm_rss_stat = unknown(structs.offset("mm_struct", "rss_stat"));
    layout.counter_size = unknown(structs.size("percpu_counter"));
    layout.counter_count = unknown(structs.offset("percpu_counter", "count"));
    layout.counter_counters = unknown(structs.offset("percpu_counter", "counters"));
    layout.array_pptrs = unknown(structs.offset("bpf_array", "pptrs"));
    // Every possible CPU's slot is summed (one that came online later has one too); the
    // online ones bound how far `count` is from the sum now.
    layout.cpus = aya::util::nr_cpus().unwrap_or(0) as u32;
    let online = aya::util::online_cpus().map(|c| c.len() as u32).unwrap_or(layout.cpus);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    layout.page_shift = page.trailing_zeros();
    layout.slack_bytes = counter_slack_pages(online) * page;
    layout
}

/// Pages by which a percpu_counter's `count` can differ from its sum with `online` CPUs:
/// each online CPU's slot stays under the batch (lib/percpu_counter.c: `max(32, 2 *
/// online CPUs)`); an offline CPU's slot is folded into `count`. CPUs coming online later
/// can make it more: the BTF program then records a crossing a little late, never a
/// wrong value.
pub fn counter_slack_pages(online: u32) -> u64 {
    let batch = u64::from(online.saturating_mul(2).max(32));
    batch * u64::from(online)
}

/// The structs of the running kernel's BTF, parsed once for [`kernel_offsets`] and
/// [`rss_counter_layout`]; None without BTF.
pub fn running_kernel_structs() -> Option<Structs> {
    running_kernel_btf().and_then(|b| Structs::parse(&b).ok())
}

/// The running kernel's BTF, if it has one.
fn running_kernel_btf() -> Option<Vec<u8>> {
    std::fs::read("/sys/kernel/btf/vmlinux").ok()
}

/// Names of the mm counters (`MM_FILEPAGES`...) by value, for kernels whose `rss_stat`
/// prints the member as a number (before 5.15's symbolic print fmt).
pub fn mm_counter_names() -> Option<BTreeMap<i64, String>> {
    enum_with(&running_kernel_btf()?, "MM_FILEPAGES").ok().flatten()
}

/// `task_struct.exit_code` of the running kernel, if it has BTF.
pub fn task_exit_code_offset() -> Option<u32> {
    member_offset(&running_kernel_btf()?, "task_struct", "exit_code").ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of these type and string sections.
    fn blob_of(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.push(1);
        blob.push(0);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(types);
        blob.extend_from_slice(strings);
        blob
    }

    /// A blob with `int` and `struct s { int a; int b; }`.
    fn tiny_blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0".to_vec();
        let mut types = Vec::new();
        let push = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
        // [1] INT "int" size 4
        push(&mut types, 1);
        push(&mut types, 1 << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // [2] STRUCT "s" size 8, 2 members
        push(&mut types, 5);
        push(&mut types, (4 << 24) | 2);
        push(&mut types, 8);
        for (name, bit_off) in [(7u32, 0u32), (9, 32)] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, bit_off);
        }
        blob_of(&types, &strings)
    }

    /// `int`, `struct pc { int a; int b; }`, `pc[4]`, `struct mm { int x; pc rss[4]; }`,
    /// `struct old { int rss; }`.
    fn array_blob() -> Vec<u8> {
        let strings = b"\0int\0pc\0a\0b\0mm\0x\0rss\0old\0".to_vec();
        let name = |n: &str| strings.windows(n.len() + 2).position(|w| w[0] == 0 && &w[1..=n.len()] == n.as_bytes() && w[n.len() + 1] == 0).unwrap() as u32 + 1;
        let mut types = Vec::new();
        let mut push = |vals: &[u32]| vals.iter().for_each(|v| types.extend_from_slice(&v.to_le_bytes()));
        push(&[name("int"), 1 << 24, 4, 32]); // [1] int
        push(&[name("pc"), (4 << 24) | 2, 8, name("a"), 1, 0, name("b"), 1, 32]); // [2] struct pc
        push(&[0, 3 << 24, 0, 2, 1, 4]); // [3] pc[4]
        push(&[name("mm"), (4 << 24) | 2, 40, name("x"), 1, 0, name("rss"), 3, 64]); // [4] struct mm
        push(&[name("old"), (4 << 24) | 1, 4, name("rss"), 1, 0]); // [5] struct old
        blob_of(&types, &strings)
    }

    #[test]
    fn tells_an_array_of_structs_from_a_member_of_another_type() {
        let structs = Structs::parse(&array_blob()).unwrap();
        assert!(structs.is_array_of("mm", "rss", "pc"));
        assert!(!structs.is_array_of("old", "rss", "pc"), "an int is not an array of pc");
        assert!(!structs.is_array_of("mm", "x", "pc"));
        assert!(!structs.is_array_of("mm", "rss", "old"));
        assert_eq!(structs.offset("mm", "rss"), Some(8));
        assert_eq!(structs.size("pc"), Some(8));
        assert_eq!(structs.size("mm"), Some(40));
        assert_eq!(structs.size("nothing"), None);
    }

    #[test]
    fn counter_slack_is_the_batch_on_every_cpu() {
        // lib/percpu_counter.c: batch = max(32, 2 * CPUs).
        assert_eq!(counter_slack_pages(1), 32);
        assert_eq!(counter_slack_pages(2), 64);
        assert_eq!(counter_slack_pages(16), 32 * 16);
        assert_eq!(counter_slack_pages(64), 128 * 64);
    }

    #[test]
    fn running_kernel_says_where_the_rss_counters_are() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no BTF on this kernel: the rss probe uses the classic tracepoint");
            return;
        };
        let structs = Structs::parse(&blob).unwrap();
        let layout = rss_counter_layout(Some(&structs));
        if !structs.is_array_of("mm_struct", "rss_stat", "percpu_counter") {
            assert!(!layout.is_complete(), "a kernel without per-CPU rss counters must use the classic hook: {layout:?}");
            return;
        }
        assert!(layout.is_complete(), "{layout:?}");
        // struct percpu_counter { raw_spinlock_t lock; s64 count; ...; s32 __percpu *counters; }
        assert_eq!(layout.counter_count % 8, 0);
        assert!(layout.counter_counters > layout.counter_count && layout.counter_counters < layout.counter_size);
        let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
        let last: u32 = possible.trim().rsplit(['-', ',']).next().unwrap().parse().unwrap();
        assert_eq!(layout.cpus, last + 1, "possible CPUs: {possible}");
        let online = (0..layout.cpus).filter(|c| {
            // cpu0 often has no `online` file: it cannot go offline.
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{c}/online")).map_or(*c == 0, |v| v.trim() == "1")
        });
        let page = 1u64 << layout.page_shift;
        assert_eq!(layout.slack_bytes, counter_slack_pages(online.count() as u32) * page);
        assert_eq!(1u64 << layout.page_shift, unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64);
    }

    #[test]
    fn finds_member_offset_in_bytes() {
        let blob = tiny_blob();
        assert_eq!(member_offset(&blob, "s", "b").unwrap(), Some(4));
        assert_eq!(member_offset(&blob, "s", "zz").unwrap(), None);
        assert_eq!(member_offset(&blob, "t", "a").unwrap(), None);
    }

    #[test]
    fn running_kernel_names_mm_counters_as_rss_stat_does() {
        // The truth on this kernel: rss_stat's own print fmt names its members.
        let Some(names) = mm_counter_names() else {
            eprintln!("no BTF on this kernel: rss members fall back to numbers");
            return;
        };
        assert_eq!(names.get(&0).map(String::as_str), Some("MM_FILEPAGES"), "{names:?}");
        assert_eq!(names.get(&1).map(String::as_str), Some("MM_ANONPAGES"), "{names:?}");
        let format = "/sys/kernel/tracing/events/kmem/rss_stat/format";
        if let Ok(text) = std::fs::read_to_string(format) {
            let printed = crate::capture::format::Format::parse(&text).unwrap().symbols("member");
            for (v, name) in &printed {
                assert_eq!(names.get(v), Some(name), "BTF and {format} disagree on {v}");
            }
        }
    }

    #[test]
    fn running_kernel_has_every_struct_member_the_programs_walk() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no BTF on this kernel: mapped files are named from /proc");
            return;
        };
        let structs = Structs::parse(&blob).unwrap();
        for (_, name, member) in tracer_common::kfield::ALL {
            assert!(structs.offset(name, member).is_some(), "{name}.{member} not in this kernel's BTF");
        }
        // qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }
        assert_eq!(structs.offset("qstr", "len"), Some(4));
        assert_eq!(structs.offset("qstr", "name"), Some(8));
        assert_eq!(structs.offset("path", "dentry"), Some(8));
        // The flat lookup agrees where the member is not nested.
        assert_eq!(structs.offset("task_struct", "exit_code"), member_offset(&blob, "task_struct", "exit_code").unwrap());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(member_offset(b"hello world, not btf at all", "s", "a"), Err(BtfError::BadMagic)));
        let mut blob = tiny_blob();
        blob.truncate(30);
        assert!(member_offset(&blob, "s", "a").is_err());
    }

    #[test]
    fn running_kernel_task_struct_has_exit_code() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            eprintln!("no BTF on this kernel; the e2e exit tests cover the fallback");
            return;
        }
        let off = task_exit_code_offset().expect("exit_code in task_struct");
        assert!(off > 0 && off < 16384, "implausible offset {off}");
    }
}
