//! The causal engine: pure functions from a trace to verdicts. Each rule is a named
//! function with its own tests; a verdict carries the chain of events that proves it,
//! and says "unexplained" when no rule fits. Never invent a cause.
//!
//! How a trace becomes verdicts ([`diagnose`]):
//! - `process` finds how each traced process ended (`oom_killed`, `crashed`,
//!   `killed_by_signal`, `exited`, else unexplained), with the chain that shows it;
//!   `growth` adds what grew before an OOM kill and which limit was hit.
//! - `resets` takes the resets attributed to a traced process (`attributed_by` not
//!   null; unattributed resets are skipped, they say nothing about the target). A reset
//!   from the owner's fatal chain on (a few ms of slack) belongs to that death: one
//!   verdict per death, whatever the reason and port (ABORT_ON_CLOSE as it died,
//!   NO_SOCKET for later connects). A reset while the owner was alive is classified by
//!   its reason (`reset_by_peer`, `abort_on_close`, `linger_zero`,
//!   `tcp_memory_pressure`, `keepalive_timeout`, `connection_refused`, else
//!   `unexplained`); those are merged per owner, cause, reason and service port into
//!   bursts (a gap over 30 s starts a new one).
//! - A death without resets is still a verdict (resets: 0) when it was an OOM kill, a
//!   fatal signal or a crash.
//!
//! Verdicts come in the order of their first event.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};

mod actions;
mod fmt;
mod growth;
mod process;
mod resets;
mod restarts;
#[cfg(test)]
pub(crate) mod testkit;
mod trace;



use crate::units::time_of_day;
use trace::Trace;

/// What a verdict blames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The owner was OOM-killed (memcg limit or system memory).
    OomKilled,
    /// Another process sent the owner a fatal signal.
    KilledBySignal,
    /// The owner crashed: SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE from the kernel or itself.
    Crashed,
    /// The owner exited on its own.
    Exited,
    /// Closed (or died) with unread data: the kernel aborts with a RST.
    AbortOnClose,
    /// Closed with SO_LINGER 0.
    LingerZero,
    /// TCP memory pressure made the kernel abort the connection.
    TcpMemoryPressure,
    KeepaliveTimeout,
    /// The peer sent the reset.
    ResetByPeer,
    /// Nobody listened on the port.
    ConnectionRefused,
    Unexplained,
    /// The service died again and again and was started again each time.
    CrashLoop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// One event of a chain: which, when, and what it shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Index of the event in the slice given to [`diagnose`].
    pub index: usize,
    pub ts_ns: u64,
    /// The event's `kind` tag.
    pub kind: String,
    /// One line: what this event contributes.
    pub what: String,
}

/// The answer for one reset, one burst of resets on the same port, or (without resets)
/// one fatal event of the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub cause: Cause,
    /// The answer in one line.
    pub summary: String,
    /// The process the verdict is about (the owner of the reset sockets, or the target).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Port of the resets explained, when they share one: the local port for connections
    /// to the owner's listeners (and connects refused on this machine), the remote port
    /// for the owner's own client connections.
    pub port: Option<u16>,
    /// Resets this verdict explains (0 for a process verdict without resets).
    pub resets: u64,
    /// The first and last reset explained; for a verdict without resets, the first fatal
    /// event (kill signal, OOM kill or exit) and the end of the process.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Events in time order that prove the verdict.
    pub chain: Vec<Link>,
    /// Facts that are not single events: the limit that was hit, what grew before it.
    pub evidence: Vec<String>,
    pub confidence: Confidence,
    /// What to do next, in one line, with the trace's numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Cause {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::OomKilled => "oom_killed",
            Cause::KilledBySignal => "killed_by_signal",
            Cause::Crashed => "crashed",
            Cause::Exited => "exited",
            Cause::AbortOnClose => "abort_on_close",
            Cause::LingerZero => "linger_zero",
            Cause::TcpMemoryPressure => "tcp_memory_pressure",
            Cause::KeepaliveTimeout => "keepalive_timeout",
            Cause::ResetByPeer => "reset_by_peer",
            Cause::ConnectionRefused => "connection_refused",
            Cause::Unexplained => "unexplained",
            Cause::CrashLoop => "crash_loop",
        }
    }
}

impl Confidence {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// A reset this soon before the first event of its owner's fatal chain (a kill signal or
/// an OOM kill) already belongs to the death: timestamps of different probes may differ
/// by a little. Not for a clean exit: a reset just before exit() is the process's own
/// close, and the sockets exit() itself closes are reset after the exit event.
const DEATH_SLACK_NS: u64 = 10_000_000;
/// Another process's OOM kill this close to a verdict is named in its evidence.
const NEARBY_OOM_NS: u64 = 30_000_000_000;

/// Verdicts for a trace (events in time order, as a trace file holds them; any order
/// works). Pure; never panics on odd input.
pub fn diagnose(events: &[Event]) -> Vec<Verdict> {
    let t = Trace::new(events);
    let deaths = process::deaths(&t);
    let all = resets::attributed(&t);
    let listeners = resets::Listeners::new(&t, &all);

    // pid -> its deaths (indices into `deaths`, in time order).
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (k, d) in deaths.iter().enumerate() {
        by_pid.entry(d.pid).or_default().push(k);
    }
    let mut per_death: Vec<Vec<&resets::Reset>> = vec![Vec::new(); deaths.len()];
    let mut alive: Vec<&resets::Reset> = Vec::new();
    for r in &all {
        let death = by_pid
            .get(&r.owner)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&k| {
                let slack = if deaths[k].cause == Cause::Exited { 0 } else { DEATH_SLACK_NS };
                deaths[k].start_ns.saturating_sub(slack) <= r.ts
            })
            .max_by_key(|&k| (deaths[k].start_ns, k));
        match death {
            Some(k) => per_death[k].push(r),
            None => alive.push(r),
        }
    }

    let mut out = Vec::new();
    for (d, rs) in deaths.iter().zip(&per_death) {
        let fatal = matches!(d.cause, Cause::OomKilled | Cause::KilledBySignal | Cause::Crashed) || d.notable;
        if !rs.is_empty() || fatal {
            out.push(resets::death_verdict(&t, &listeners, d, rs));
        }
    }
    for (cause, port, group) in resets::bursts(&alive, &listeners) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else { continue };
        let later = by_pid
            .get(&first.owner)
            .into_iter()
            .flatten()
            .map(|&k| &deaths[k])
            .filter(|d| d.start_ns >= last.ts)
            .min_by_key(|d| d.start_ns);
        out.extend(resets::alive_verdict(&t, &listeners, &cause, port, &group, later));
    }
    let mut out = restarts::group(&t, out);
    note_other_oom_kills(&t, &mut out);
    // What explains the user's symptom first: deaths, then resets of a live process,
    // then clean exits and connects refused (often before the server listened); in time
    // order within each.
    out.sort_by_key(|v| (rank(v.cause), started(v), v.first_ns, v.pid));
    for v in &mut out {
        v.action = actions::action(&t, v);
    }
    out
}

/// How much a cause explains a reset the user saw: lower first.
fn rank(cause: Cause) -> u8 {
    match cause {
        Cause::CrashLoop | Cause::OomKilled | Cause::KilledBySignal | Cause::Crashed => 0,
        Cause::AbortOnClose
        | Cause::LingerZero
        | Cause::TcpMemoryPressure
        | Cause::KeepaliveTimeout
        | Cause::ResetByPeer
        | Cause::Unexplained => 1,
        Cause::Exited | Cause::ConnectionRefused => 2,
    }
}

/// When the incident of a verdict starts: its first fatal event or first reset. Links
/// that are background (memory growth, samples, the listener) do not count.
fn started(v: &Verdict) -> u64 {
    let background = ["mmap", "munmap", "brk", "mremap", "rss", "sample", "tcp_state", "trace_start"];
    v.chain.iter().filter(|l| !background.contains(&l.kind.as_str())).map(|l| l.ts_ns).min().unwrap_or(v.first_ns).min(v.first_ns)
}

/// OOM kills of other processes near a verdict are named, so that nobody reads them as
/// the owner's.
fn note_other_oom_kills(t: &Trace, out: &mut [Verdict]) {
    /// (index, time, victim for the blame check, victim's pid when the kernel gave it, comm)
    type Kill<'a> = (usize, u64, Option<u32>, Option<u32>, &'a str);
    let kills: Vec<Kill> = t
        .iter()
        .filter_map(|(i, e)| match &e.kind {
            EventKind::OomKill { victim_comm, victim_pid, .. } => {
                Some((i, e.ts_ns, trace::oom_victim(e), *victim_pid, victim_comm.as_str()))
            }
            _ => None,
        })
        .collect();
    for v in out.iter_mut() {
        let Some(pid) = v.pid else { continue };
        let from = started(v).saturating_sub(NEARBY_OOM_NS);
        let to = v.last_ns.saturating_add(1_000_000_000);
        let lines: Vec<String> = kills
            .iter()
            .filter(|(i, ts, victim, _, _)| *victim != Some(pid) && *ts >= from && *ts <= to && !v.chain.iter().any(|l| l.index == *i))
            .take(3)
            .map(|(_, ts, victim, victim_pid, comm)| {
                // Without the kernel's pid the victim is known by its thread only: a
                // thread id printed as `comm[N]` would read as a pid that never existed.
                let who = match (victim_pid, victim) {
                    (Some(p), _) if !comm.is_empty() => format!("{comm}[{p}]"),
                    (Some(p), _) => t.label(*p),
                    (None, Some(tid)) => format!("{comm} (thread {tid})"),
                    (None, None) => format!("{comm} (pid unknown)"),
                };
                format!("another process was OOM-killed nearby: {who} at {} (not {})", time_of_day(*ts), t.label(pid))
            })
            .collect();
        v.evidence.extend(lines);
    }
}

/// A verdict as plain text: the summary, the confidence, the chain (one line per event,
/// `  HH:MM:SS.mmm  kind  what`, UTC time of day), then the evidence.
pub fn describe(verdict: &Verdict) -> String {
    let mut s = String::new();
    s.push_str(&verdict.summary);
    s.push('\n');
    let resets = match verdict.resets {
        0 => "no resets".to_string(),
        n => {
            let port = verdict.port.map(|p| format!(" on :{p}")).unwrap_or_default();
            let noun = if n == 1 { "reset" } else { "resets" };
            if verdict.first_ns == verdict.last_ns {
                format!("{n} {noun}{port} at {}", time_of_day(verdict.first_ns))
            } else {
                format!("{n} {noun}{port} from {} to {}", time_of_day(verdict.first_ns), time_of_day(verdict.last_ns))
            }
        }
    };
    s.push_str(&format!("confidence: {}, cause: {}, {resets}\n", verdict.confidence.as_str(), verdict.cause.as_str()));
    for l in &verdict.chain {
        s.push_str(&format!("  {}  {:<9}  {}\n", time_of_day(l.ts_ns), l.kind, l.what));
    }
    if !verdict.evidence.is_empty() {
        s.push_str("evidence:\n");
        for e in &verdict.evidence {
            s.push_str(&format!("  - {e}\n"));
        }
    }
    if let Some(a) = &verdict.action {
        s.push_str(&format!("what to do: {a}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, EventKind};
    use testkit::{Tb, GIB, MIB, PID};

    const SIGKILL: i32 = 9;

    fn kinds(v: &Verdict) -> Vec<&str> {
        v.chain.iter().map(|l| l.kind.as_str()).collect()
    }

    /// The bug report: the workload maps a model in a 2 GiB memcg, is OOM-killed, three
    /// clients get ECONNRESET, twelve later connects ECONNREFUSED.
    fn oom_while_loading() -> Tb {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        b.cgroup_sample(100, 300 * MIB, Some(2 * GIB), Some(0));
        b.mmap_file(1_000, PID, 1200 * MIB, "/models/aya/model-00001.safetensors");
        b.mmap_file(1_100, PID, 100 * MIB, "/models/nllb/model.safetensors");
        b.rss(1_000, PID, "MM_ANONPAGES", (200 * MIB) as i64);
        b.rss(5_900, PID, "MM_ANONPAGES", (1900 * MIB) as i64);
        b.cgroup_sample(5_950, 2 * GIB - 10 * MIB, Some(2 * GIB), Some(0));
        b.signal(6_000, 4800, "workload", PID, SIGKILL, "SI_KERNEL");
        b.oom_kill(6_000, 4800, "workload", PID, "workload", 1900 * 1024, 12 * 1024);
        b.exit_signal(6_020, PID, SIGKILL);
        for i in 0..3 {
            b.rst(6_021 + i, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", &format!("127.0.0.1:{}", 51234 + i), "socket");
        }
        b.cgroup_sample(6_050, 10 * MIB, Some(2 * GIB), Some(1));
        for i in 0..12 {
            b.rst(6_100 + i * 100, PID, "NO_SOCKET", "127.0.0.1:8000", &format!("127.0.0.1:{}", 52000 + i), "listen_port");
        }
        b.trace_end(8_100);
        b
    }

    #[test]
    fn the_first_memory_stall_of_the_run_up_is_in_the_oom_evidence_with_its_lead() {
        let stall = |b: &mut Tb, ms, scope: &str| {
            let name = match scope {
                "host" => "host".to_string(),
                "other" => "/sys/fs/cgroup/another-service".to_string(),
                _ => "/sys/fs/cgroup/demo".to_string(),
            };
            let scope = if scope == "host" { "host" } else { "memory_cgroup" };
            b.push(
                ms,
                PID,
                "workload",
                EventKind::MemoryStall { scope: scope.into(), name, stalled: "some".into(), stall_us: 200_000, window_us: 2_000_000, total_us: Some(9) },
            );
        };
        let mut b = oom_while_loading();
        // Another service's cgroup stalled first (a `tracer watch` window): not this kill's.
        stall(&mut b, 3_000, "other");
        stall(&mut b, 3_900, "memory_cgroup");
        stall(&mut b, 5_000, "host");
        b.ev.sort_by_key(|e| e.ts_ns);
        let v = diagnose(&b.ev);
        let line = v[0].evidence.iter().find(|e| e.contains("memory stalls")).unwrap_or_else(|| panic!("{:?}", v[0].evidence));
        assert_eq!(
            line,
            "the kernel reported memory stalls 2.1 s before the kill: tasks in /sys/fs/cgroup/demo waited for memory at least 200 ms within 2.0 s (a PSI trigger)"
        );
        // A forecast of another service's cgroup is no warning of this kill; one of the
        // victim's is.
        let forecast = |b: &mut Tb, ms, limit_name: &str| {
            b.push(
                ms,
                PID,
                "workload",
                EventKind::Forecast(crate::event::Forecast {
                    limit: "memory_cgroup".into(),
                    limit_name: limit_name.into(),
                    limit_bytes: 2 * GIB,
                    used_bytes: GIB,
                    headroom_bytes: GIB,
                    headroom_percent: 50.0,
                    rate_bytes_per_s: (400 * MIB) as f64,
                    seconds_to_limit: 2.5,
                    window_ms: 1000,
                    points: 9,
                    r_squared: 0.99,
                    confidence: "high".into(),
                    fastest_rate_bytes_per_s: None,
                    psi_some_avg10: None,
                    limit_hits: None,
                }),
            );
        };
        let mut b = oom_while_loading();
        forecast(&mut b, 3_000, "memory cgroup /sys/fs/cgroup/another-service");
        b.ev.sort_by_key(|e| e.ts_ns);
        assert!(!diagnose(&b.ev)[0].summary.contains("warned"), "{}", diagnose(&b.ev)[0].summary);
        forecast(&mut b, 3_500, "memory cgroup /sys/fs/cgroup/demo");
        b.ev.sort_by_key(|e| e.ts_ns);
        assert!(diagnose(&b.ev)[0].summary.contains("; warned 2.5 s before"), "{}", diagnose(&b.ev)[0].summary);
        // None before the run-up (over a minute before the kill): no such line.
        let mut b = oom_while_loading();
        let early = b.ev.iter().map(|e| e.ts_ns).min().unwrap();
        b.ev.insert(0, crate::event::Event { ts_ns: early, pid: PID, tid: PID, comm: "workload".into(), kind: EventKind::MemoryStall {
            scope: "host".into(), name: "host".into(), stalled: "some".into(), stall_us: 1, window_us: 2, total_us: None } });
        for e in b.ev.iter_mut().skip(1) {
            e.ts_ns += 61_000_000_000;
        }
        assert!(diagnose(&b.ev)[0].evidence.iter().all(|e| !e.contains("memory stalls")));
    }

    #[test]
    fn oom_kill_while_loading_explains_the_resets_and_the_refused_connects() {
        let b = oom_while_loading();
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        let v = &v[0];
        assert_eq!(v.cause, Cause::OomKilled);
        assert_eq!((v.pid, v.comm.as_deref(), v.port, v.resets), (Some(PID), Some("workload"), Some(8000), 15));
        assert_eq!(v.confidence, Confidence::High);
        assert_eq!(
            v.summary,
            "pid 4711 (workload) was OOM-killed at the memory cgroup limit (2.00 GiB), holding 1.86 GiB anon and 12.0 MiB file RSS, \
             after mapping 1.27 GiB of 2 files \
             (largest model-00001.safetensors, 1.17 GiB) while anonymous memory grew by 1.66 GiB; \
             3 connections on :8000 were reset as it died and 12 later connects were refused"
        );
        assert_eq!(
            kinds(v),
            [
                "tcp_state",
                "mmap",
                "mmap",
                "rss",
                "sample",
                "signal",
                "oom_kill",
                "exit",
                "tcp_reset",
                "tcp_reset",
                "tcp_reset",
                "tcp_reset",
                "tcp_reset",
                "tcp_reset"
            ]
        );
        assert_eq!((v.first_ns, v.last_ns), (b.ts(6_021), b.ts(7_200)));
        assert!(
            v.evidence.iter().any(|e| e.contains("15 resets") && e.contains("NO_SOCKET x12") && e.contains("TCP_ABORT_ON_CLOSE x3")),
            "{:?}",
            v.evidence
        );
        assert!(v.evidence.iter().any(|e| e.contains("OOM kill count went from 0 to 1")), "{:?}", v.evidence);
        assert!(v.evidence.iter().any(|e| e.starts_with("memory at the kill:") && e.contains("anon 1.86 GiB")), "{:?}", v.evidence);
        // Every link points at the event it describes.
        for l in &v.chain {
            assert_eq!(b.ev[l.index].ts_ns, l.ts_ns);
            assert_eq!(b.ev[l.index].kind_name(), l.kind);
        }
    }

    #[test]
    fn the_same_trace_shuffled_gives_the_same_verdicts() {
        let b = oom_while_loading();
        let want = diagnose(&b.ev);
        let mut shuffled = b.ev.clone();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in (1..shuffled.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let got = diagnose(&shuffled);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.cause, &g.summary, g.resets, g.confidence), (w.cause, &w.summary, w.resets, w.confidence));
            let gk: Vec<&str> = kinds(g);
            assert_eq!(gk, kinds(w));
            for l in &g.chain {
                assert_eq!(shuffled[l.index].ts_ns, l.ts_ns, "indices point into the slice given");
            }
        }
    }

    #[test]
    fn odd_events_do_not_panic() {
        let mut b = oom_while_loading();
        b.ev.push(Event {
            ts_ns: 0,
            pid: 0,
            tid: 0,
            comm: String::new(),
            kind: EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: None,
                signal_name: None,
                core_dumped: false,
                source: String::new(),
            },
        });
        b.ev.push(Event {
            ts_ns: u64::MAX,
            pid: 0,
            tid: 0,
            comm: String::new(),
            kind: crate::event::testkit::oom_kill_kind(None, ""),
        });
        b.ev.push(Event {
            ts_ns: u64::MAX,
            pid: 0,
            tid: 0,
            comm: String::new(),
            kind: EventKind::OomKill {
                victim_pid: Some(0),
                victim_tid: 0,
                victim_comm: String::new(),
                is_target: true,
                total_vm_kb: Some(u64::MAX),
                anon_rss_kb: Some(u64::MAX),
                file_rss_kb: None,
                shmem_rss_kb: None,
                pgtables_kb: None,
                uid: None,
                oom_score_adj: None,
            },
        });
        b.reset(3, 0, Direction::Sent, Some(""), Some(""), "garbage", "", Some("socket"));
        b.reset(4, 77, Direction::Received, None, None, "", "", Some("connection"));
        b.rss(2, 0, "", i64::MIN);
        b.rss(3, 0, "MM_ANONPAGES", i64::MAX);
        b.rss(4, 0, "MM_ANONPAGES", i64::MIN);
        b.mmap_file(1, 0, u64::MAX, "");
        b.mmap_file(1, 0, u64::MAX, "/x");
        b.mmap_file(1, 0, u64::MAX, "/x");
        b.cgroup_sample(2, u64::MAX, Some(0), Some(u64::MAX));
        b.cgroup_sample(3, 0, Some(u64::MAX), Some(0));
        b.sample_system(4, u64::MAX, 0);
        b.sample_full(5, 0, u64::MAX, None, Some((u64::MAX - 600 * MIB, 0)));
        b.signal(0, 0, "", 0, SIGKILL, "SI_KERNEL");
        b.signal(u64::MAX / 2_000_000, 0, "", 0, -1, "");
        b.lost(5, "", u64::MAX);
        b.lost(6, "tcp", u64::MAX);
        b.ev.push(Event {
            ts_ns: 5,
            pid: PID,
            tid: PID,
            comm: "x".into(),
            kind: EventKind::TraceStart {
                target_pid: 0,
                target_cmdline: String::new(),
                follow_children: true,
                kernel: String::new(),
                probes: vec![],
                missing_probes: vec![],
                rss_threshold_bytes: 0,
            },
        });
        let v = diagnose(&b.ev);
        assert!(v.iter().any(|v| v.cause == Cause::OomKilled && v.pid == Some(PID)), "{v:#?}");
        for v in &v {
            let _ = describe(v);
        }
        assert!(diagnose(&[]).is_empty());
        let only_junk = vec![Event {
            ts_ns: 1,
            pid: 0,
            tid: 0,
            comm: String::new(),
            kind: EventKind::Exit {
                group_dead: false,
                exit_code: Some(-1),
                signal: Some(999),
                signal_name: None,
                core_dumped: true,
                source: String::new(),
            },
        }];
        assert!(diagnose(&only_junk).is_empty());
    }

    #[test]
    fn a_trace_without_resets_still_reports_the_targets_fatal_end() {
        let mut b = Tb::new(PID);
        b.signal(1_000, PID, "workload", PID, 11, "SEGV_ACCERR");
        b.exit_signal(1_001, PID, 11);
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!((v[0].cause, v[0].resets, v[0].pid, v[0].port), (Cause::Crashed, 0, Some(PID), None));
        assert_eq!(kinds(&v[0]), ["signal", "exit"]);
        assert_eq!(v[0].first_ns, b.ts(1_000));
    }

    #[test]
    fn a_clean_exit_without_resets_is_no_verdict() {
        let mut b = Tb::new(PID);
        b.exit_code(1_000, PID, 0);
        assert!(diagnose(&b.ev).is_empty());
    }

    #[test]
    fn an_exit_with_resets_says_the_code() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        b.exit_code(1_000, PID, 3);
        b.rst(1_001, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].cause, Cause::Exited);
        assert_eq!(v[0].summary, "pid 4711 (workload) exited with code 3; 1 connection on :8000 was reset as it died");
        assert_eq!(kinds(&v[0]), ["exit", "tcp_reset"]);
    }

    #[test]
    fn a_user_kill_after_an_oom_kill_of_another_process_blames_the_user() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        b.oom_kill(1_000, 4800, "python3", 999, "sidecar", 500 * 1024, 0);
        b.signal(1_050, 1234, "bash", PID, SIGKILL, "SI_USER");
        b.exit_signal(1_060, PID, SIGKILL);
        b.rst(1_061, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        b.rst(2_000, PID, "NO_SOCKET", "127.0.0.1:8000", "127.0.0.1:51235", "listen_port");
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].cause, Cause::KilledBySignal);
        assert!(v[0].summary.starts_with("pid 4711 (workload) was killed by SIGKILL from pid 1234 (bash)"), "{}", v[0].summary);
        assert!(!v[0].summary.contains("OOM"), "{}", v[0].summary);
        assert!(v[0].summary.ends_with("1 connection on :8000 was reset as it died and 1 later connect was refused"), "{}", v[0].summary);
        assert!(v[0].evidence.iter().any(|e| e.contains("another process was OOM-killed nearby: sidecar[999]")), "{:?}", v[0].evidence);
        assert_eq!(kinds(&v[0]), ["tcp_state", "signal", "exit", "tcp_reset", "tcp_reset"]);
    }

    #[test]
    fn an_oom_kill_of_another_process_is_not_blamed_on_the_alive_owner() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        b.oom_kill(1_000, PID, "workload", 999, "sidecar", 500 * 1024, 0);
        b.rst(1_010, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].cause, Cause::AbortOnClose);
        assert!(v[0].evidence.iter().any(|e| e.contains("not workload[4711]")), "{:?}", v[0].evidence);
    }

    #[test]
    fn another_oom_victim_known_by_its_thread_only_is_not_shown_as_a_pid() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        let i = b.oom_kill(1_000, PID, "workload", 1002, "sidecar", 500 * 1024, 0);
        if let EventKind::OomKill { victim_pid, .. } = &mut b.ev[i].kind {
            *victim_pid = None;
        }
        b.rst(1_010, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        let line = v[0].evidence.iter().find(|e| e.contains("OOM-killed nearby")).expect("the other kill is named");
        assert!(line.contains("sidecar (thread 1002)"), "{line}");
        assert!(!line.contains("[1002]"), "{line}");
    }

    #[test]
    fn lost_oom_event_with_resets_is_a_medium_oom_verdict() {
        let mut b = Tb::new(PID);
        b.lost(900, "oom", 1);
        b.signal(1_000, 0, "swapper/0", PID, SIGKILL, "SI_KERNEL");
        b.exit_signal(1_010, PID, SIGKILL);
        b.rst(1_011, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!((v[0].cause, v[0].confidence, v[0].resets), (Cause::OomKilled, Confidence::Medium, 1));
        assert!(v[0].summary.contains("(unknown limit: the trace has no memory samples)"), "{}", v[0].summary);
        assert!(v[0].evidence.iter().any(|e| e.contains("lost 1 event")), "{:?}", v[0].evidence);
    }

    #[test]
    fn deaths_come_first_and_alive_resets_before_a_death_are_not_the_deaths() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        b.rst(500, PID, "NOT_SPECIFIED", "127.0.0.1:8000", "127.0.0.1:50000", "socket");
        b.signal(1_000, 1234, "bash", PID, 15, "SI_USER");
        b.exit_signal(1_010, PID, 15);
        b.rst(1_011, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        // The death explains what the user saw; the earlier unexplained reset comes after it.
        assert_eq!(v.iter().map(|v| (v.cause, v.resets)).collect::<Vec<_>>(), [(Cause::KilledBySignal, 1), (Cause::Unexplained, 1)]);
        assert!(v[1].evidence.iter().any(|e| e.contains("ended later")), "{:?}", v[1].evidence);
    }

    #[test]
    fn resets_of_an_untraced_port_next_to_a_target_oom_are_left_out() {
        let mut b = oom_while_loading();
        b.reset(6_500, 555, Direction::Sent, Some("NO_SOCKET"), None, "127.0.0.1:5432", "127.0.0.1:40000", None);
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].resets, 15);
    }

    #[test]
    fn many_resets_and_many_short_lived_children_stay_a_few_verdicts() {
        let mut b = Tb::new(PID);
        b.listen(5, PID, 8000);
        for child in 0..2_000u32 {
            b.exit_code(10 + child as u64, 10_000 + child, 0);
        }
        for i in 0..100_000u64 {
            b.rst(5_000 + i / 10, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", &format!("127.0.0.1:{}", 40_000 + i % 20_000), "socket");
        }
        b.signal(20_000, 1234, "bash", PID, SIGKILL, "SI_USER");
        b.exit_signal(20_001, PID, SIGKILL);
        for i in 0..50_000u64 {
            b.rst(20_002 + i / 10, PID, "NO_SOCKET", "127.0.0.1:8000", &format!("127.0.0.1:{}", 40_000 + i % 20_000), "listen_port");
        }
        let v = diagnose(&b.ev);
        assert_eq!(
            v.iter().map(|v| (v.cause, v.resets)).collect::<Vec<_>>(),
            [(Cause::KilledBySignal, 50_000), (Cause::AbortOnClose, 100_000)]
        );
        assert!(v.iter().all(|v| v.chain.len() <= 10), "{v:#?}");
    }

    #[test]
    fn describe_prints_summary_confidence_chain_and_evidence() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1234, "bash", PID, SIGKILL, "SI_USER");
        b.exit_signal(1_060, PID, SIGKILL);
        b.rst(1_061, PID, "TCP_ABORT_ON_CLOSE", "127.0.0.1:8000", "127.0.0.1:51234", "socket");
        let v = diagnose(&b.ev);
        let text = describe(&v[0]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], v[0].summary);
        assert_eq!(lines[1], "confidence: high, cause: killed_by_signal, 1 reset on :8000 at 22:13:21.061");
        assert_eq!(lines[2], "  22:13:21.000  signal     SIGKILL from bash[1234] (SI_USER: kill(2)) to workload[4711]");
        assert_eq!(lines[3], "  22:13:21.060  exit       workload[4711] died of SIGKILL");
        assert_eq!(lines[4], "  22:13:21.061  tcp_reset  RST sent to 127.0.0.1:51234 from :8000 (TCP_ABORT_ON_CLOSE, TCP_ESTABLISHED)");
        assert_eq!(lines[5], "evidence:");
        assert!(lines[6].starts_with("  - 1 reset at 22:13:21.061"), "{text}");
    }
}
