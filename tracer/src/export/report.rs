//! The root-cause analysis document: a [`Report`] built from a trace's events and its
//! verdicts, rendered as text (a terminal), markdown (an incident ticket) or JSON (the
//! same content for programs). The model knows nothing of its renderings.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    diagnose::Verdict,
    event::{CgroupSample, Event, EventKind, GpuSample, ProcessSample, SystemSample},
    export::reader::ReadProblem,
};

mod markdown;
mod prose;
mod text;

pub use markdown::render_markdown;
pub use prose::{date_time, format_bytes, rel, time_of_day};
pub use text::render_text;

/// Largest file mappings listed.
const TOP_FILE_MAPPINGS: usize = 10;

/// What the report says about one trace.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The trace file, as given.
    pub source: Option<String>,
    pub target: Target,
    pub span: Span,
    /// One line per verdict, or one line saying why there is none.
    pub summary: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub memory: Memory,
    pub events: EventCounts,
    pub environment: Environment,
    /// Lines of the trace file that could not be read.
    pub problems: Vec<ReadProblem>,
}

/// The traced process, from `trace_start`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Target {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cmdline: Option<String>,
    /// The program the target ran last, from its last `exec` in the trace (its
    /// arguments as the kernel read them): what `cmdline` became after a shell's exec.
    pub program: Option<String>,
    pub follow_children: Option<bool>,
}

impl Target {
    /// What the target ran: its last exec's arguments, unless they are the start of the
    /// command line it was traced with (the same program, cut at the kernel's limit).
    pub fn ran(&self) -> Option<&str> {
        match (&self.program, &self.cmdline) {
            (Some(p), Some(c)) if c.starts_with(p.trim_end_matches(" …")) => Some(c),
            (Some(p), _) => Some(p),
            (None, c) => c.as_deref(),
        }
    }

    /// The command line it was traced with, when it is not what it ran (a shell that
    /// exec'd the program).
    pub fn started_as(&self) -> Option<&str> {
        self.cmdline.as_deref().filter(|c| Some(*c) != self.ran())
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Span {
    /// First event; relative times in the renderings count from here.
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ns: u64,
    /// `trace_end` reason; None when the trace has no `trace_end` (cut short).
    pub end_reason: Option<String>,
}

/// Where the memory figures come from: `samples`, `rss_events` or `none`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    pub source: String,
    pub samples: u64,
    /// Peak resident set per process, largest first.
    pub processes: Vec<ProcessPeak>,
    pub cgroup: Option<CgroupPeak>,
    pub gpus: Vec<GpuPeak>,
    pub mem_available_min: Option<SystemLow>,
    /// Files mapped with mmap, most bytes first.
    pub file_mappings: Vec<FileMapping>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessPeak {
    pub pid: u32,
    pub comm: String,
    pub peak_rss_bytes: u64,
    pub at_ns: u64,
    /// Resident set when first seen, to show the growth.
    pub first_rss_bytes: u64,
    /// rss members at the peak (from `rss` events only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CgroupPeak {
    pub path: String,
    pub version: u8,
    pub peak_usage_bytes: u64,
    pub at_ns: u64,
    pub limit_bytes: Option<u64>,
    /// The kernel's own peak (memory.peak / max_usage_in_bytes), highest seen.
    pub kernel_peak_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// The last sample's time: the cgroup's OOM kill count is as of then (a kill after
    /// it is not in the count).
    pub last_sample_ns: u64,
    /// Cgroups the target was in before it moved into this one (`tracer run`'s shell
    /// joins the cgroup after the first sample): their figures are not this cgroup's, so
    /// they are left out of it and the move is said as a move.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved_from: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuPeak {
    pub index: u32,
    pub name: String,
    pub total_bytes: u64,
    pub peak_used_bytes: u64,
    pub at_ns: u64,
    pub peak_process_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SystemLow {
    pub mem_total_bytes: u64,
    pub min_available_bytes: u64,
    pub at_ns: u64,
    pub psi_memory_some_avg10_max: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileMapping {
    pub path: String,
    /// Process of the first mapping.
    pub pid: u32,
    /// Bytes of the file that were mapped, each counted once (never more than its size).
    pub bytes: u64,
    /// Sum of the lengths of the successful mappings of this file (more than `bytes`
    /// when the same range was mapped again).
    pub mapped_bytes: u64,
    /// The file's size, when the kernel read it at the mmap.
    pub size: Option<u64>,
    pub mappings: u64,
    pub first_ns: u64,
    /// How it was mapped: "" (once), " in 3 mmaps", " (mapped twice)".
    pub how: String,
}

impl FileMapping {
    /// `1 mmap`, `3 mmaps`, `2 mmaps, 3.00 GiB in all` (when ranges were mapped again).
    pub fn mmaps_cell(&self) -> String {
        let n = if self.mappings == 1 { "1 mmap".to_string() } else { format!("{} mmaps", self.mappings) };
        if self.mapped_bytes > self.bytes {
            format!("{n}, {} in all", format_bytes(self.mapped_bytes))
        } else {
            n
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EventCounts {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Records the kernel could not hand over: `trace_end.lost`, else the `lost` events.
    pub lost: u64,
    pub lost_by_probe: BTreeMap<String, u64>,
    /// Resets elsewhere on the host, counted per reason and not written (`trace_end`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub other_resets: BTreeMap<String, u64>,
    /// `--max-size`: events the file left out to stay under its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<crate::event::TraceCut>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Environment {
    pub kernel: Option<String>,
    pub probes: Vec<String>,
    pub missing_probes: Vec<String>,
    pub rss_threshold_bytes: Option<u64>,
    pub cgroup: Option<CgroupInfo>,
    pub gpus: Vec<GpuInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CgroupInfo {
    pub path: String,
    pub version: u8,
    pub limit_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub total_bytes: u64,
}

impl Report {
    /// `events` in time order (as the reader returns them), `verdicts` from
    /// [`crate::diagnose::diagnose`] over the same slice.
    pub fn build(
        events: &[Event],
        verdicts: Vec<Verdict>,
        problems: Vec<ReadProblem>,
        source: Option<String>,
    ) -> Report {
        let mut target = Target::default();
        let mut environment = Environment::default();
        let mut span = Span {
            start_ns: events.iter().map(|e| e.ts_ns).min().unwrap_or(0),
            end_ns: events.iter().map(|e| e.ts_ns).max().unwrap_or(0),
            ..Span::default()
        };
        span.duration_ns = span.end_ns.saturating_sub(span.start_ns);
        let mut counts = EventCounts::default();
        let mut end_lost = None;
        for ev in events {
            counts.total += 1;
            *counts.by_kind.entry(ev.kind_name().to_string()).or_default() += 1;
            match &ev.kind {
                EventKind::TraceStart {
                    target_pid,
                    target_cmdline,
                    follow_children,
                    kernel,
                    probes,
                    missing_probes,
                    rss_threshold_bytes,
                } if target.pid.is_none() => {
                    target = Target {
                        pid: Some(*target_pid),
                        comm: Some(ev.comm.clone()).filter(|c| !c.is_empty()),
                        cmdline: Some(target_cmdline.clone()).filter(|c| !c.is_empty()),
                        program: None,
                        follow_children: Some(*follow_children),
                    };
                    environment.kernel = Some(kernel.clone()).filter(|k| !k.is_empty());
                    environment.probes = probes.clone();
                    environment.missing_probes = missing_probes.clone();
                    environment.rss_threshold_bytes = Some(*rss_threshold_bytes);
                }
                EventKind::Exec { argv: Some(argv), argv_cut, .. } if target.pid == Some(ev.pid) && !argv.is_empty() => {
                    target.program = Some(crate::event::argv_line(argv, *argv_cut));
                }
                EventKind::TraceEnd { reason, lost, other_resets, cut, .. } => {
                    span.end_reason = Some(reason.clone());
                    end_lost = Some(*lost);
                    counts.other_resets = other_resets.clone();
                    counts.cut = cut.clone();
                }
                EventKind::Lost { probe, count, .. } => {
                    *counts.lost_by_probe.entry(probe.clone()).or_default() += count;
                }
                EventKind::Sample { cgroup, gpus, .. } => {
                    if let Some(c) = cgroup {
                        environment.cgroup =
                            Some(CgroupInfo { path: c.path.clone(), version: c.version, limit_bytes: c.limit_bytes });
                    }
                    for g in gpus {
                        match environment.gpus.iter_mut().find(|x| x.index == g.index) {
                            Some(x) => x.total_bytes = g.total_bytes,
                            None => environment.gpus.push(GpuInfo {
                                index: g.index,
                                name: g.name.clone(),
                                total_bytes: g.total_bytes,
                            }),
                        }
                    }
                }
                _ => {}
            }
        }
        environment.gpus.sort_by_key(|g| g.index);
        // `tracer run` names the target before its exec: its main thread's latest comm wins.
        if let Some(pid) = target.pid {
            let main_thread = |e: &&Event| {
                e.pid == pid && e.tid == pid && !e.comm.is_empty() && !matches!(e.kind, EventKind::TcpReset { .. })
            };
            if let Some(e) = events.iter().rev().find(main_thread) {
                target.comm = Some(e.comm.clone());
            }
        }
        counts.lost = end_lost.unwrap_or_else(|| counts.lost_by_probe.values().sum());
        let summary = summary_lines(events, &verdicts);
        Report {
            source,
            target,
            span,
            summary,
            verdicts,
            memory: memory(events),
            events: counts,
            environment,
            problems,
        }
    }
}

/// One line per verdict; without verdicts, one line saying what the trace has.
pub fn summary_lines(events: &[Event], verdicts: &[Verdict]) -> Vec<String> {
    if !verdicts.is_empty() {
        return verdicts
            .iter()
            .map(|v| format!("[{}] {}: {}", label(&v.confidence), label(&v.cause), v.summary))
            .collect();
    }
    let resets = events.iter().filter(|e| matches!(e.kind, EventKind::TcpReset { .. })).count();
    let fatal = events
        .iter()
        .filter(|e| match &e.kind {
            EventKind::Exit { group_dead: true, signal: Some(_), .. } => true,
            EventKind::OomKill { is_target, .. } => *is_target,
            _ => false,
        })
        .count();
    if resets == 0 && fatal == 0 {
        vec!["No resets and no fatal event of the target were seen".into()]
    } else {
        vec![format!(
            "No verdict: the trace has {resets} reset(s) and {fatal} fatal event(s) of traced processes, but the diagnosis gave no answer"
        )]
    }
}

/// The snake_case name serde gives a unit variant (`oom_killed`, `high`).
pub fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The memory facts of a trace, gathered in one pass.
#[derive(Default)]
struct MemoryScan<'e> {
    mem: Memory,
    from_samples: BTreeMap<u32, ProcessPeak>,
    from_rss: BTreeMap<u32, (BTreeMap<String, u64>, Option<ProcessPeak>)>,
    gpus: BTreeMap<u32, GpuPeak>,
    files: crate::mappings::Mappings,
    seen: usize,
    _events: std::marker::PhantomData<&'e ()>,
    /// Cgroups left behind so far, for the next cgroup's peak.
    moved_from: Vec<String>,
}

impl<'e> MemoryScan<'e> {
    /// Peaks of processes, the memory cgroup, GPUs, and the system's low point.
    fn sample(
        &mut self,
        ev: &Event,
        processes: &[ProcessSample],
        cgroup: &Option<CgroupSample>,
        gpu_samples: &[GpuSample],
        system: &SystemSample,
    ) {
        self.mem.samples += 1;
        for p in processes {
            let peak = self.from_samples.entry(p.pid).or_insert_with(|| ProcessPeak {
                pid: p.pid,
                comm: p.comm.clone(),
                peak_rss_bytes: p.rss_bytes,
                at_ns: ev.ts_ns,
                first_rss_bytes: p.rss_bytes,
                members: BTreeMap::new(),
            });
            if p.rss_bytes > peak.peak_rss_bytes {
                peak.peak_rss_bytes = p.rss_bytes;
                peak.at_ns = ev.ts_ns;
            }
            if !p.comm.is_empty() {
                peak.comm.clone_from(&p.comm);
            }
        }
        if let Some(c) = cgroup {
            // Figures set against a limit come from the cgroup of that limit: a move
            // starts the peaks again.
            let moved = self.mem.cgroup.as_ref().filter(|p| p.path != c.path).map(|p| {
                let mut from = p.moved_from.clone();
                from.push(p.path.clone());
                from
            });
            if let Some(from) = moved {
                self.mem.cgroup = None;
                self.moved_from = from;
            }
            let moved_from = &self.moved_from;
            let peak = self.mem.cgroup.get_or_insert_with(|| CgroupPeak {
                path: c.path.clone(),
                version: c.version,
                peak_usage_bytes: c.usage_bytes,
                at_ns: ev.ts_ns,
                limit_bytes: c.limit_bytes,
                kernel_peak_bytes: None,
                oom_kills: None,
                last_sample_ns: ev.ts_ns,
                moved_from: moved_from.clone(),
            });
            peak.last_sample_ns = ev.ts_ns;
            if c.usage_bytes > peak.peak_usage_bytes {
                peak.peak_usage_bytes = c.usage_bytes;
                peak.at_ns = ev.ts_ns;
            }
            peak.limit_bytes = c.limit_bytes;
            peak.kernel_peak_bytes = max_opt(peak.kernel_peak_bytes, c.peak_bytes);
            peak.oom_kills = max_opt(peak.oom_kills, c.oom_kills);
        }
        for g in gpu_samples {
            let peak = self.gpus.entry(g.index).or_insert_with(|| GpuPeak {
                index: g.index,
                name: g.name.clone(),
                total_bytes: g.total_bytes,
                peak_used_bytes: g.used_bytes,
                at_ns: ev.ts_ns,
                peak_process_bytes: None,
            });
            if g.used_bytes > peak.peak_used_bytes {
                peak.peak_used_bytes = g.used_bytes;
                peak.at_ns = ev.ts_ns;
            }
            peak.peak_process_bytes = max_opt(peak.peak_process_bytes, g.process_bytes);
        }
        let low = self.mem.mem_available_min.get_or_insert(SystemLow {
            mem_total_bytes: system.mem_total_bytes,
            min_available_bytes: system.mem_available_bytes,
            at_ns: ev.ts_ns,
            psi_memory_some_avg10_max: None,
        });
        if system.mem_available_bytes < low.min_available_bytes {
            low.min_available_bytes = system.mem_available_bytes;
            low.at_ns = ev.ts_ns;
        }
        if let Some(psi) = system.psi_memory_some_avg10 {
            low.psi_memory_some_avg10_max = Some(low.psi_memory_some_avg10_max.map_or(psi, |m| m.max(psi)));
        }
    }

    /// The resident set per process from rss events (the sum of its resident members).
    fn rss(&mut self, ev: &Event, member: &str, bytes: &i64) {
        let (members, peak) = self.from_rss.entry(ev.pid).or_default();
        members.insert(member.to_string(), (*bytes).max(0) as u64);
        let resident: u64 = members.iter().filter(|(m, _)| !crate::event::is_swap_member(m)).map(|(_, b)| b).sum();
        match peak {
            Some(p) if resident <= p.peak_rss_bytes => {}
            Some(p) => {
                p.peak_rss_bytes = resident;
                p.at_ns = ev.ts_ns;
                p.members = members.clone();
            }
            None => {
                *peak = Some(ProcessPeak {
                    pid: ev.pid,
                    comm: ev.comm.clone(),
                    peak_rss_bytes: resident,
                    at_ns: ev.ts_ns,
                    first_rss_bytes: resident,
                    members: members.clone(),
                })
            }
        }
    }

}

fn memory(events: &[Event]) -> Memory {
    let mut scan = MemoryScan::default();
    for ev in events {
        match &ev.kind {
            EventKind::Sample { processes, cgroup, gpus, system } => scan.sample(ev, processes, cgroup, gpus, system),
            EventKind::Rss { member, bytes } => scan.rss(ev, member, bytes),
            EventKind::Mmap { .. } => {
                scan.files.add(scan.seen, ev);
            }
            _ => {}
        }
        scan.seen += 1;
    }
    let MemoryScan { mut mem, from_samples, from_rss, gpus, files, .. } = scan;
    let mut processes: Vec<ProcessPeak> = if !from_samples.is_empty() {
        mem.source = "samples".into();
        from_samples.into_values().collect()
    } else if !from_rss.is_empty() {
        mem.source = "rss_events".into();
        from_rss.into_values().filter_map(|(_, p)| p).collect()
    } else {
        mem.source = "none".into();
        Vec::new()
    };
    processes.sort_by(|a, b| b.peak_rss_bytes.cmp(&a.peak_rss_bytes).then(a.pid.cmp(&b.pid)));
    mem.processes = processes;
    mem.gpus = gpus.into_values().collect();
    let files: Vec<FileMapping> = files
        .files()
        .into_iter()
        .take(TOP_FILE_MAPPINGS)
        .map(|f| FileMapping {
            how: f.how(format_bytes),
            path: f.path,
            pid: f.pid,
            bytes: f.distinct_bytes,
            mapped_bytes: f.mapped_bytes,
            size: f.size,
            mappings: f.calls,
            first_ns: f.first_ns,
        })
        .collect();
    mem.file_mappings = files;
    mem
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------
// JSON

pub fn render_json(r: &Report) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnose::{Cause, Confidence, Link},
        event::{CgroupSample, ProcessSample, SystemSample},
    };

    fn ev(ts: u64, pid: u32, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid, tid: pid, comm: "w".into(), kind }
    }

    /// Issue 14: "usage peak 4.30 GiB ... of limit 1.00 GiB (430%)" set another cgroup's
    /// usage (the one `tracer run`'s shell was in before it joined) against the limit.
    #[test]
    fn a_move_between_cgroups_keeps_each_figure_with_its_own_cgroup() {
        let sample = |ts: u64, path: &str, usage: u64, limit: Option<u64>| {
            ev(
                ts,
                5,
                EventKind::Sample {
                    processes: vec![],
                    cgroup: Some(CgroupSample {
                        path: path.into(),
                        version: 1,
                        usage_bytes: usage,
                        limit_bytes: limit,
                        peak_bytes: None,
                        oom_kills: None,
                        members: Vec::new(), pressure: None,
                    }),
                    gpus: vec![],
                    system: SystemSample { mem_total_bytes: 1 << 40, mem_available_bytes: 1 << 39, psi_memory_some_avg10: None, psi_memory_full_avg10: None },
                },
            )
        };
        let events = vec![
            sample(1, "/sys/fs/cgroup/memory/process_api", 4400 << 20, None),
            sample(2, "/sys/fs/cgroup/memory/tracer-oom", 10 << 20, Some(1 << 30)),
            sample(3, "/sys/fs/cgroup/memory/tracer-oom", 900 << 20, Some(1 << 30)),
        ];
        let r = Report::build(&events, vec![], vec![], None);
        let c = r.memory.cgroup.as_ref().unwrap();
        assert_eq!(c.path, "/sys/fs/cgroup/memory/tracer-oom");
        assert_eq!((c.peak_usage_bytes, c.at_ns, c.limit_bytes), (900 << 20, 3, Some(1 << 30)));
        assert_eq!(c.moved_from, ["/sys/fs/cgroup/memory/process_api"]);
        let line = r.cgroup_line(c);
        assert!(line.starts_with("usage peak 900 MiB") && line.contains("(88%)"), "{line}");
        assert!(line.contains("moved in from /sys/fs/cgroup/memory/process_api"), "{line}");
    }

    #[test]
    fn bytes_read_like_the_verdicts() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(2 << 30), "2.00 GiB");
        assert_eq!(format_bytes((1 << 30) - 1), "1.00 GiB");
        assert_eq!(format_bytes(300 << 20), "300 MiB");
        assert_eq!(rel(1_500_000_000, 1_000_000_000), "+0.500 s");
        assert_eq!(rel(1_000_000_000, 3_000_000_000), "-2.000 s");
        assert_eq!(time_of_day(1_714_564_803_021_000_000), "12:00:03.021");
    }

    #[test]
    fn without_verdicts_the_summary_says_nothing_happened_or_that_nothing_explained_it() {
        let quiet = vec![ev(1, 1, EventKind::Brk { requested: 0, result: 0, duration_ns: 0 })];
        let r = Report::build(&quiet, vec![], vec![], None);
        assert_eq!(r.summary, vec!["No resets and no fatal event of the target were seen".to_string()]);
        assert!(r.title().contains("unknown target"));
        assert_eq!(r.span.end_reason, None);
        let killed = vec![ev(
            1,
            1,
            EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: Some(9),
                signal_name: Some("SIGKILL".into()),
                core_dumped: false,
                source: "task_exit_code".into(),
            },
        )];
        let r = Report::build(&killed, vec![], vec![], None);
        assert!(r.summary[0].starts_with("No verdict"), "{:?}", r.summary);
    }

    #[test]
    fn memory_prefers_samples_and_falls_back_to_rss_events() {
        let rss = |ts, member: &str, bytes| ev(ts, 5, EventKind::Rss { member: member.into(), bytes });
        let events = vec![
            rss(1, "MM_ANONPAGES", 100),
            rss(2, "MM_FILEPAGES", 50),
            rss(3, "MM_SWAPENTS", 1000),
            rss(4, "MM_ANONPAGES", 20),
        ];
        let m = Report::build(&events, vec![], vec![], None).memory;
        assert_eq!(m.source, "rss_events");
        assert_eq!(m.processes[0].peak_rss_bytes, 150);
        assert_eq!(m.processes[0].at_ns, 2);
        assert_eq!(m.processes[0].first_rss_bytes, 100);

        let sample = |ts, rss_bytes, usage| {
            ev(
                ts,
                5,
                EventKind::Sample {
                    processes: vec![ProcessSample {
                        pid: 5,
                        comm: "w".into(),
                        state: "R".into(),
                        rss_bytes,
                        vm_size_bytes: 0,
                        vm_hwm_bytes: 0,
                        threads: 1,
                        fds: None,
                    address_space_limit_bytes: None,
                    }],
                    cgroup: Some(CgroupSample {
                        path: "/sys/fs/cgroup/x".into(),
                        version: 2,
                        usage_bytes: usage,
                        limit_bytes: Some(1000),
                        peak_bytes: None,
                        oom_kills: Some(0),
                        members: Vec::new(), pressure: None,
                    }),
                    gpus: vec![],
                    system: SystemSample {
                        mem_total_bytes: 10_000,
                        mem_available_bytes: 10_000 - usage,
                        psi_memory_some_avg10: None,
                        psi_memory_full_avg10: None,
                    },
                },
            )
        };
        let mut events = events;
        events.extend([sample(10, 300, 400), sample(20, 900, 990), sample(30, 800, 700)]);
        let m = Report::build(&events, vec![], vec![], None).memory;
        assert_eq!(m.source, "samples");
        assert_eq!((m.processes[0].peak_rss_bytes, m.processes[0].at_ns), (900, 20));
        let c = m.cgroup.unwrap();
        assert_eq!((c.peak_usage_bytes, c.at_ns, c.limit_bytes), (990, 20, Some(1000)));
        // The OOM kill count is as of the last sample (30), not the peak's (20).
        assert_eq!((c.oom_kills, c.last_sample_ns), (Some(0), 30));
        let low = m.mem_available_min.unwrap();
        assert_eq!((low.min_available_bytes, low.at_ns), (10_000 - 990, 20));
    }

    #[test]
    fn markdown_cells_escape_pipes() {
        let v = Verdict {
            cause: Cause::Unexplained,
            summary: "s".into(),
            pid: Some(1),
            comm: None,
            port: None,
            resets: 1,
            first_ns: 5,
            last_ns: 5,
            chain: vec![Link { index: 0, ts_ns: 5, kind: "mmap".into(), what: "PRIVATE|ANONYMOUS".into() }],
            evidence: vec![],
            confidence: Confidence::Low,
            action: None,
        };
        let events = vec![ev(1, 1, EventKind::Brk { requested: 0, result: 0, duration_ns: 0 })];
        let md = render_markdown(&Report::build(&events, vec![v.clone()], vec![], None));
        assert!(md.contains("PRIVATE\\|ANONYMOUS"), "{md}");
    }
}
