//! What grew before a kill (file mappings, anonymous memory, GPU memory) and which limit
//! was hit (the memory cgroup's, the system's, or unknown).
use std::collections::BTreeMap;

use super::trace::{sample_of, SampleView};
use super::{
    fmt::{basename, count, duration, format_bytes, format_bytes_delta},
    trace::Trace,
    Link,
};
use crate::{
    event::EventKind,
    mappings::{MappedFile, Mappings},
};

/// How far back "what grew before the kill" looks.
pub(crate) const GROWTH_WINDOW_NS: u64 = 30_000_000_000;
/// A sample this close to the kill describes the memory at the kill.
pub(crate) const NEAR_KILL_NS: u64 = 10_000_000_000;
/// Growth below this is noise, not worth a line in a summary.
const NOTABLE_BYTES: i128 = 1 << 20;

/// Growth of a victim in the window before its kill.
#[derive(Debug, Default)]
pub(crate) struct Growth {
    /// Largest file mappings, the last anonymous RSS record: in time order.
    pub links: Vec<Link>,
    pub evidence: Vec<String>,
    /// "after mapping 1.20 GiB of model.safetensors while anonymous memory grew by 700 MiB".
    pub phrase: Option<String>,
}

/// One RSS member (MM_ANONPAGES, ...) from the window's baseline to its last record.
#[derive(Debug, PartialEq)]
pub(crate) struct RssGrowth {
    pub member: String,
    pub before: i64,
    pub after: i64,
    pub last: usize,
}

/// How far back a neighbour's growth is compared with the victim's.
pub(crate) const NEIGHBOUR_WINDOW_NS: u64 = 10_000_000_000;

/// A process of the victim's memory cgroup that grew more than the victim before its
/// OOM kill (from the samples' member lists): the one that ate the memory.
#[derive(Debug, PartialEq)]
pub(crate) struct Neighbour {
    pub pid: u32,
    pub comm: String,
    pub grew: u64,
    /// The victim's own growth over the same samples.
    pub victim_grew: u64,
    pub span_ns: u64,
    /// The last sample that lists it.
    pub last: usize,
}

pub(crate) fn neighbour_grower(t: &Trace, victim: u32, kill_ts: u64) -> Option<Neighbour> {
    let from = kill_ts.saturating_sub(NEIGHBOUR_WINDOW_NS);
    // pid -> (comm, first rss, first ts, last rss, last index)
    let mut seen: BTreeMap<u32, (String, u64, u64, u64, usize)> = BTreeMap::new();
    let mut window_start: Option<u64> = None;
    for (i, e) in t.iter() {
        if e.ts_ns < from || e.ts_ns > kill_ts {
            continue;
        }
        let Some(cg) = sample_of(e).and_then(|s| s.cgroup).filter(|c| !c.members.is_empty()) else { continue };
        let first_sample = *window_start.get_or_insert(e.ts_ns);
        for m in &cg.members {
            // A process that was not there at the first sample started since: all of
            // its memory is growth.
            let slot = seen.entry(m.pid).or_insert_with(|| {
                let base = if e.ts_ns == first_sample { m.rss_bytes } else { 0 };
                (m.comm.clone(), base, first_sample, m.rss_bytes, i)
            });
            slot.3 = m.rss_bytes;
            slot.4 = i;
        }
    }
    let growth = |v: &(String, u64, u64, u64, usize)| v.3.saturating_sub(v.1);
    // The samples must be of the victim's own cgroup (the target's, which it may not be).
    let victim_grew = seen.get(&victim).map(growth)?;
    let (pid, v) = seen.iter().filter(|(p, _)| **p != victim).max_by_key(|(_, v)| growth(v))?;
    let grew = growth(v);
    if grew < NOTABLE_BYTES as u64 * 16 || grew <= victim_grew {
        return None;
    }
    Some(Neighbour { pid: *pid, comm: v.0.clone(), grew, victim_grew, span_ns: kill_ts.saturating_sub(v.2), last: v.4 })
}

/// The start of the growth window for a kill at `kill_ts`.
pub(crate) fn window_start(t: &Trace, kill_ts: u64) -> u64 {
    kill_ts.saturating_sub(GROWTH_WINDOW_NS).max(t.start_ns.min(kill_ts))
}

/// File mappings of `pid` in [from, to], per file, most bytes first.
pub(crate) fn file_mappings(t: &Trace, pid: u32, from: u64, to: u64) -> Vec<MappedFile> {
    let mut m = Mappings::default();
    for (i, e) in t.iter() {
        if e.pid == pid && e.ts_ns >= from && e.ts_ns <= to {
            let _ = m.add(i, e);
        }
    }
    m.files()
}

/// Anonymous mmaps of `pid` in [from, to]: (bytes, calls).
fn anonymous_mappings(t: &Trace, pid: u32, from: u64, to: u64) -> (u64, u64) {
    let (mut bytes, mut calls) = (0u64, 0u64);
    for (_, e) in t.iter() {
        if e.pid != pid || e.ts_ns < from || e.ts_ns > to {
            continue;
        }
        match &e.kind {
            EventKind::Mmap { len, error: None, flags, .. } if flags.contains("ANONYMOUS") => {
                bytes = bytes.saturating_add(*len);
                calls += 1;
            }
            // Calls counted instead of kept: the interval ends at the summary's time.
            EventKind::MemorySummary { mmaps, mmap_bytes, .. } => {
                bytes = bytes.saturating_add(*mmap_bytes);
                calls += mmaps;
            }
            _ => {}
        }
    }
    (bytes, calls)
}

fn member_rank(member: &str) -> u8 {
    match member {
        "MM_ANONPAGES" => 0,
        "MM_FILEPAGES" => 1,
        "MM_SHMEMPAGES" => 2,
        "MM_SWAPENTS" => 3,
        _ => 4,
    }
}

/// RSS per member of `pid`: the last record before `from` (else the first in the window)
/// to the last record in [from, to]. Members without a record in the window are left out.
pub(crate) fn rss_growth(t: &Trace, pid: u32, from: u64, to: u64) -> Vec<RssGrowth> {
    /// (baseline bytes, (bytes, index) of the last record in the window)
    type Span = (Option<i64>, Option<(i64, usize)>);
    let mut m: BTreeMap<&str, Span> = BTreeMap::new();
    // An exec replaces the memory: records of the program before it (`tracer run`'s
    // copy of itself, a shell) are no baseline for the one after.
    let exec_at = t
        .iter()
        .filter(|(_, e)| e.pid == pid && e.ts_ns <= to && matches!(e.kind, EventKind::Exec { .. }))
        .map(|(_, e)| e.ts_ns)
        .last()
        .unwrap_or(0);
    for (i, e) in t.iter() {
        if e.pid != pid || e.ts_ns > to || e.ts_ns < exec_at {
            continue;
        }
        let EventKind::Rss { member, bytes } = &e.kind else { continue };
        let slot = m.entry(member.as_str()).or_insert((None, None));
        if e.ts_ns < from {
            slot.0 = Some(*bytes);
        } else {
            if slot.0.is_none() {
                slot.0 = Some(*bytes);
            }
            slot.1 = Some((*bytes, i));
        }
    }
    let mut out: Vec<RssGrowth> = m
        .into_iter()
        .filter_map(|(member, (before, last))| {
            let (after, last) = last?;
            Some(RssGrowth { member: member.to_string(), before: before.unwrap_or(after), after, last })
        })
        .collect();
    out.sort_by_key(|g| (member_rank(&g.member), g.member.clone()));
    out
}

/// Values of one quantity in samples: the last sample before `from` (else the first in
/// the window) and the last in [from, to].
fn sampled<F: Fn(&SampleView) -> Option<u64>>(t: &Trace, from: u64, to: u64, f: F) -> Option<(u64, u64)> {
    let (mut before, mut last) = (None, None);
    for (_, e) in t.iter() {
        if e.ts_ns > to {
            break;
        }
        let Some(s) = sample_of(e) else { continue };
        let Some(v) = f(&s) else { continue };
        if e.ts_ns < from {
            before = Some(v);
        } else {
            if before.is_none() {
                before = Some(v);
            }
            last = Some(v);
        }
    }
    Some((before?, last?))
}

fn delta(before: u64, after: u64) -> i128 {
    after as i128 - before as i128
}

/// What grew for `pid` before its kill at `kill_ts`.
pub(crate) fn before_kill(t: &Trace, pid: u32, kill_ts: u64) -> Growth {
    let from = window_start(t, kill_ts);
    let mut g = Growth::default();
    let span = if kill_ts.saturating_sub(from) >= GROWTH_WINDOW_NS {
        format!("in the {} before the kill", duration(GROWTH_WINDOW_NS))
    } else {
        format!("since the trace started, {} before the kill", duration(kill_ts.saturating_sub(from)))
    };

    let (code, maps): (Vec<MappedFile>, Vec<MappedFile>) = file_mappings(t, pid, from, kill_ts).into_iter().partition(|m| m.code);
    if !code.is_empty() {
        let total: u64 = code.iter().fold(0u64, |a, m| a.saturating_add(m.distinct_bytes));
        let listed: Vec<String> = code.iter().take(3).map(|m| format!("{} ({})", basename(&m.path), format_bytes(m.distinct_bytes))).collect();
        let more = if code.len() > 3 { format!(" and {} more", count(code.len() as u64 - 3, "file")) } else { String::new() };
        g.evidence.push(format!(
            "program code and system files mapped {span}, not counted as growth: {} in {} ({}{more})",
            format_bytes(total),
            count(code.len() as u64, "file"),
            listed.join(", ")
        ));
    }
    let mut phrase_parts: Vec<String> = Vec::new();
    if let Some(top) = maps.first() {
        let total: u64 = maps.iter().fold(0u64, |a, m| a.saturating_add(m.distinct_bytes));
        let listed: Vec<String> =
            maps.iter().take(3).map(|m| format!("{} ({}{})", m.path, format_bytes(m.distinct_bytes), m.how(format_bytes))).collect();
        let more = if maps.len() > 3 { format!(" and {} more", count(maps.len() as u64 - 3, "file")) } else { String::new() };
        g.evidence.push(format!("file mappings {span}: {}{more}", listed.join(", ")));
        // Only mappings that matter next to the largest (a model, not libc) join the chain.
        for m in maps.iter().take(3).filter(|m| m.distinct_bytes >= top.distinct_bytes / 20) {
            g.links.push(t.link(m.largest, format!("mapped {} of {}{}", format_bytes(m.distinct_bytes), m.path, m.how(format_bytes))));
        }
        phrase_parts.push(if maps.len() == 1 {
            format!("mapping {} of {}", format_bytes(top.distinct_bytes), basename(&top.path))
        } else {
            format!(
                "mapping {} of {} files (largest {}, {})",
                format_bytes(total),
                maps.len(),
                basename(&top.path),
                format_bytes(top.distinct_bytes)
            )
        });
    }

    let rss = rss_growth(t, pid, from, kill_ts);
    let mut anon_phrase = None;
    for r in &rss {
        let d = r.after as i128 - r.before as i128;
        let name = match r.member.as_str() {
            "MM_ANONPAGES" => "anonymous RSS",
            "MM_FILEPAGES" => "file RSS",
            "MM_SHMEMPAGES" => "shared memory RSS",
            "MM_SWAPENTS" => "swap",
            _ => "RSS",
        };
        g.evidence.push(format!(
            "{name} ({}) {span}: {} -> {} ({})",
            r.member,
            format_bytes(r.before.max(0) as u64),
            format_bytes(r.after.max(0) as u64),
            format_bytes_delta(d)
        ));
        if r.member == "MM_ANONPAGES" {
            g.links.push(
                t.link(r.last, format!("anonymous RSS reached {} ({} {span})", format_bytes(r.after.max(0) as u64), format_bytes_delta(d))),
            );
            if d >= NOTABLE_BYTES {
                anon_phrase = Some(format!("anonymous memory grew by {}", format_bytes(d as u64)));
            }
        }
    }
    if rss.is_empty() {
        if let Some((a, b)) = sampled(t, from, kill_ts, |s| s.processes.iter().find(|p| p.pid == pid).map(|p| p.rss_bytes)) {
            let d = delta(a, b);
            g.evidence.push(format!("RSS (procfs samples) {span}: {} -> {} ({})", format_bytes(a), format_bytes(b), format_bytes_delta(d)));
            if d >= NOTABLE_BYTES {
                anon_phrase = Some(format!("its RSS grew by {}", format_bytes(d as u64)));
            }
        }
    }
    let (anon_bytes, anon_calls) = anonymous_mappings(t, pid, from, kill_ts);
    if anon_calls > 0 {
        g.evidence.push(format!(
            "anonymous mappings {span}: {} reserved in {} (address space: only the pages touched are resident, counted in anonymous RSS; thread stacks and arenas reserve far more than they use)",
            format_bytes(anon_bytes),
            count(anon_calls, "mmap")
        ));
    }

    // GPUs: one line per GPU whose memory grew.
    let indices: Vec<u32> = {
        let mut v: Vec<u32> =
            t.iter().filter_map(|(_, e)| sample_of(e).map(|s| s.gpus.iter().map(|gpu| gpu.index).collect::<Vec<_>>())).flatten().collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for idx in indices {
        let name = t
            .iter()
            .find_map(|(_, e)| sample_of(e).and_then(|s| s.gpus.iter().find(|gpu| gpu.index == idx).map(|gpu| gpu.name.clone())))
            .unwrap_or_default();
        let proc = sampled(t, from, kill_ts, |s| s.gpus.iter().find(|gpu| gpu.index == idx).and_then(|gpu| gpu.process_bytes));
        let (what, vals) = match proc {
            Some(v) => ("memory of the traced processes", Some(v)),
            None => ("memory in use", sampled(t, from, kill_ts, |s| s.gpus.iter().find(|gpu| gpu.index == idx).map(|gpu| gpu.used_bytes))),
        };
        if let Some((a, b)) = vals {
            if b > a {
                g.evidence.push(format!(
                    "GPU {idx} ({name}) {what} {span}: {} -> {} ({})",
                    format_bytes(a),
                    format_bytes(b),
                    format_bytes_delta(delta(a, b))
                ));
            }
        }
    }

    if let Some(a) = anon_phrase {
        phrase_parts.push(a);
    }
    g.phrase = match phrase_parts.as_slice() {
        [] => None,
        [one] if one.starts_with("mapping") => Some(format!("after {one}")),
        [one] => Some(format!("after {one}")),
        [map, anon, ..] => Some(format!("after {map} while {anon}")),
    };
    g.links.sort_by_key(super::trace::link_key);
    g
}

/// Which memory limit a kill hit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LimitKind {
    /// The memory cgroup's limit; `confirmed` when usage was within 5% of it or the
    /// cgroup's OOM kill counter went up.
    Memcg {
        limit: u64,
        confirmed: bool,
    },
    /// No cgroup limit, MemAvailable was low.
    System,
    Unknown,
}

#[derive(Debug)]
pub(crate) struct LimitFinding {
    pub kind: LimitKind,
    /// " at the memory cgroup limit (2.00 GiB)": goes right after "was OOM-killed".
    pub phrase: String,
    pub evidence: Vec<String>,
    /// The sample that shows the cgroup at its limit.
    pub link: Option<Link>,
}

fn at_limit(used: u64, limit: u64) -> bool {
    limit > 0 && (used as u128) * 100 >= (limit as u128) * 95
}

fn system_low(avail: u64, total: u64) -> bool {
    total > 0 && (avail as u128) * 100 <= (total as u128) * 5
}

/// The limit the OOM kill at `kill_ts` hit, from the samples around it.
pub(crate) fn memory_limit(t: &Trace, kill_ts: u64) -> LimitFinding {
    let samples: Vec<(usize, SampleView)> = t.iter().filter_map(|(i, e)| sample_of(e).map(|s| (i, s))).collect();
    if samples.is_empty() {
        return LimitFinding {
            kind: LimitKind::Unknown,
            phrase: " (unknown limit: the trace has no memory samples)".into(),
            evidence: vec!["limit: unknown, the trace has no memory samples (sampling was off)".into()],
            link: None,
        };
    }
    let ts = |i: usize| t.ev[i].ts_ns;
    let before = samples.iter().rev().find(|(i, _)| ts(*i) <= kill_ts && ts(*i).saturating_add(NEAR_KILL_NS) >= kill_ts).copied();
    let after = samples.iter().find(|(i, _)| ts(*i) > kill_ts && ts(*i) <= kill_ts.saturating_add(NEAR_KILL_NS)).copied();
    // The OOM kill counter before the kill, from any earlier sample.
    let kills_before = samples.iter().rev().filter(|(i, _)| ts(*i) <= kill_ts).find_map(|(_, s)| s.cgroup.and_then(|c| c.oom_kills));
    let cg_before = before.and_then(|(_, s)| s.cgroup);
    let cg_after = after.and_then(|(_, s)| s.cgroup);
    let limit = cg_before.and_then(|c| c.limit_bytes).or_else(|| cg_after.and_then(|c| c.limit_bytes)).filter(|&l| l > 0);
    let path = cg_before.or(cg_after).map(|c| c.path.clone()).unwrap_or_default();
    let mut evidence = Vec::new();
    let sys = before.or(after).map(|(i, s)| (i, s.system.mem_available_bytes, s.system.mem_total_bytes));
    let sys_line = sys.map(|(i, a, tot)| {
        format!("system: MemAvailable {} of {} at {}", format_bytes(a), format_bytes(tot), super::fmt::time_of_day(ts(i)))
    });

    if let Some(limit) = limit {
        let mut why: Vec<String> = Vec::new();
        let mut link = None;
        if let (Some((i, _)), Some(c)) = (before, cg_before) {
            evidence.push(format!(
                "memory cgroup {path}: {} in use of its {} limit at {} ({} before the kill)",
                format_bytes(c.usage_bytes),
                format_bytes(limit),
                super::fmt::time_of_day(ts(i)),
                duration(kill_ts.saturating_sub(ts(i)))
            ));
            if at_limit(c.usage_bytes, limit) {
                why.push("usage within 5% of the limit".into());
                link = Some(t.link(i, format!("memory cgroup at {} of its {} limit", format_bytes(c.usage_bytes), format_bytes(limit))));
            }
        }
        if let Some(c) = cg_after {
            if let (Some(b), Some(a)) = (kills_before, c.oom_kills) {
                if a > b {
                    why.push(format!("the cgroup's OOM kill count went from {b} to {a}"));
                }
            }
            if let Some(peak) = c.peak_bytes {
                if at_limit(peak, limit) {
                    why.push(format!("its peak usage reached {}", format_bytes(peak)));
                }
            }
        }
        if !why.is_empty() {
            evidence.push(format!("limit: the memory cgroup limit ({}): {}", format_bytes(limit), why.join("; ")));
            return LimitFinding {
                kind: LimitKind::Memcg { limit, confirmed: true },
                phrase: format!(" at the memory cgroup limit ({})", format_bytes(limit)),
                evidence,
                link,
            };
        }
        if let Some((_, a, tot)) = sys.filter(|&(_, a, tot)| system_low(a, tot)) {
            evidence.extend(sys_line);
            evidence.push("limit: system memory (the memory cgroup was below its limit, MemAvailable was low)".into());
            return LimitFinding {
                kind: LimitKind::System,
                phrase: format!(" when the system ran out of memory (MemAvailable {} of {})", format_bytes(a), format_bytes(tot)),
                evidence,
                link: None,
            };
        }
        evidence.extend(sys_line);
        evidence.push(format!(
            "limit: not confirmed; the memory cgroup has a {} limit but no sample near the kill shows it reached",
            format_bytes(limit)
        ));
        let used = cg_before.map(|c| format!("; {} in use at the last sample", format_bytes(c.usage_bytes))).unwrap_or_default();
        return LimitFinding {
            kind: LimitKind::Memcg { limit, confirmed: false },
            phrase: format!(" in a memory cgroup limited to {}{used}", format_bytes(limit)),
            evidence,
            link: None,
        };
    }

    match sys {
        Some((_, a, tot)) if system_low(a, tot) => {
            evidence.extend(sys_line);
            evidence.push("limit: system memory (no memory cgroup limit, MemAvailable was low)".into());
            LimitFinding {
                kind: LimitKind::System,
                phrase: format!(" when the system ran out of memory (MemAvailable {} of {})", format_bytes(a), format_bytes(tot)),
                evidence,
                link: None,
            }
        }
        Some((_, a, tot)) => {
            evidence.extend(sys_line);
            evidence.push("limit: unknown (no memory cgroup limit and MemAvailable was not low near the kill)".into());
            LimitFinding {
                kind: LimitKind::Unknown,
                phrase: format!(" (unknown limit: no memory cgroup limit, MemAvailable {} of {})", format_bytes(a), format_bytes(tot)),
                evidence,
                link: None,
            }
        }
        None => LimitFinding {
            kind: LimitKind::Unknown,
            phrase: " (unknown limit: no memory sample near the kill)".into(),
            evidence: vec!["limit: unknown, no memory sample within 10 s of the kill".into()],
            link: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testkit::{Tb, GIB, MIB, PID};

    #[test]
    fn top_file_mappings_are_summed_per_file_largest_first() {
        let mut b = Tb::new(PID);
        b.mmap_file(100, PID, 100 * MIB, "/models/nllb/model.safetensors");
        b.mmap_file(200, PID, GIB, "/models/aya/model-00001.safetensors");
        b.mmap_file(300, PID, 200 * MIB, "/models/aya/model-00001.safetensors");
        b.mmap_file(300, 999, 5 * GIB, "/other/process.bin");
        let t = Trace::new(&b.ev);
        let maps = file_mappings(&t, PID, 0, u64::MAX);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].path, "/models/aya/model-00001.safetensors");
        // Both mmaps start at offset 0: the file's first GiB, mapped once and partly twice.
        assert_eq!((maps[0].distinct_bytes, maps[0].mapped_bytes, maps[0].calls), (GIB, GIB + 200 * MIB, 2));
        assert_eq!(maps[0].largest, 2, "the 1 GiB mmap is the largest of that file");
    }

    #[test]
    fn growth_window_is_the_last_30_seconds_and_rss_baseline_is_before_it() {
        let mut b = Tb::new(PID);
        b.rss(1_000, PID, "MM_ANONPAGES", (100 * MIB) as i64);
        b.mmap_file(2_000, PID, 4 * GIB, "/models/old.bin"); // 58 s before the kill: out
        b.rss(40_000, PID, "MM_ANONPAGES", (300 * MIB) as i64);
        b.mmap_file(45_000, PID, GIB, "/models/aya/model-00001.safetensors");
        b.rss(59_000, PID, "MM_ANONPAGES", (1900 * MIB) as i64);
        b.mmap_anon(59_500, PID, 512 * MIB);
        b.mmap_anon(59_600, PID, 512 * MIB);
        let t = Trace::new(&b.ev);
        let kill = b.ts(60_000);
        let g = before_kill(&t, PID, kill);
        let phrase = g.phrase.clone().unwrap_or_default();
        assert!(phrase.contains("mapping 1.00 GiB of model-00001.safetensors"), "{phrase}");
        assert!(phrase.contains("anonymous memory grew by 1.76 GiB"), "{phrase}");
        assert!(!g.evidence.iter().any(|l| l.contains("old.bin")), "{:?}", g.evidence);
        assert!(g.evidence.iter().any(|l| l.contains("100 MiB -> 1.86 GiB")), "{:?}", g.evidence);
        assert!(g.evidence.iter().any(|l| l.starts_with("anonymous mappings") && l.contains("1.00 GiB reserved in 2 mmaps (address space")), "{:?}", g.evidence);
        let kinds: Vec<&str> = g.links.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["mmap", "rss"]);
        let rss = rss_growth(&t, PID, window_start(&t, kill), kill);
        assert_eq!((rss[0].before, rss[0].after), ((100 * MIB) as i64, (1900 * MIB) as i64));
    }

    #[test]
    fn the_program_before_an_exec_is_no_baseline() {
        let mut b = Tb::new(PID);
        // `tracer run`'s child is a copy of the tracer until it execs the command.
        b.rss(100, PID, "MM_ANONPAGES", (40 * MIB) as i64);
        b.push(200, PID, "workload", EventKind::Exec { filename: "/bin/workload".into(), old_pid: PID, argv: None, argv_cut: false });
        b.rss(300, PID, "MM_ANONPAGES", (8 * MIB) as i64);
        b.rss(900, PID, "MM_ANONPAGES", (60 * MIB) as i64);
        let t = Trace::new(&b.ev);
        let rss = rss_growth(&t, PID, 0, b.ts(1_000));
        assert_eq!((rss[0].before, rss[0].after), ((8 * MIB) as i64, (60 * MIB) as i64));
    }

    #[test]
    fn growth_from_samples_and_gpus_when_there_are_no_rss_records() {
        let mut b = Tb::new(PID);
        b.sample_full(1_000, PID, 200 * MIB, None, Some((GIB, 4 * GIB)));
        b.sample_full(2_000, PID, 900 * MIB, None, Some((3 * GIB, 4 * GIB)));
        let t = Trace::new(&b.ev);
        let g = before_kill(&t, PID, b.ts(2_100));
        assert!(g.phrase.as_deref().unwrap_or("").contains("its RSS grew by 700 MiB"), "{:?}", g.phrase);
        assert!(g.evidence.iter().any(|l| l.starts_with("GPU 0") && l.contains("+2.00 GiB")), "{:?}", g.evidence);
    }

    #[test]
    fn memcg_limit_confirmed_by_usage_near_the_limit() {
        let mut b = Tb::new(PID);
        b.cgroup_sample(900, 1990 * MIB, Some(2 * GIB), Some(0));
        let t = Trace::new(&b.ev);
        let f = memory_limit(&t, b.ts(1_000));
        assert_eq!(f.kind, LimitKind::Memcg { limit: 2 * GIB, confirmed: true });
        assert_eq!(f.phrase, " at the memory cgroup limit (2.00 GiB)");
        assert_eq!(f.link.map(|l| l.kind), Some("sample".to_string()));
    }

    #[test]
    fn memcg_limit_confirmed_by_the_oom_kill_counter() {
        let mut b = Tb::new(PID);
        b.cgroup_sample(900, GIB, Some(2 * GIB), Some(0)); // fast growth: the sample lags
        b.cgroup_sample(1_100, 10 * MIB, Some(2 * GIB), Some(1));
        let t = Trace::new(&b.ev);
        let f = memory_limit(&t, b.ts(1_000));
        assert_eq!(f.kind, LimitKind::Memcg { limit: 2 * GIB, confirmed: true });
        assert!(f.evidence.iter().any(|l| l.contains("OOM kill count went from 0 to 1")), "{:?}", f.evidence);
    }

    #[test]
    fn memcg_limit_far_away_is_not_claimed() {
        let mut b = Tb::new(PID);
        b.cgroup_sample(900, GIB, Some(8 * GIB), Some(0));
        b.cgroup_sample(1_100, GIB, Some(8 * GIB), Some(0));
        let t = Trace::new(&b.ev);
        let f = memory_limit(&t, b.ts(1_000));
        assert_eq!(f.kind, LimitKind::Memcg { limit: 8 * GIB, confirmed: false });
        assert!(!f.phrase.contains("at the memory cgroup limit"), "{}", f.phrase);
    }

    #[test]
    fn system_memory_without_a_cgroup_limit() {
        let mut b = Tb::new(PID);
        b.sample_system(900, 100 * MIB, 16 * GIB);
        let t = Trace::new(&b.ev);
        let f = memory_limit(&t, b.ts(1_000));
        assert_eq!(f.kind, LimitKind::System);
        assert!(f.phrase.contains("MemAvailable 100 MiB of 16.0 GiB"), "{}", f.phrase);
    }

    #[test]
    fn unknown_limit_without_samples() {
        let b = Tb::new(PID);
        let t = Trace::new(&b.ev);
        let f = memory_limit(&t, b.ts(1_000));
        assert_eq!(f.kind, LimitKind::Unknown);
        assert!(f.phrase.contains("unknown limit"), "{}", f.phrase);
    }
}
