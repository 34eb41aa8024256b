//! The fate of processes: how each traced process ended (OOM-killed, killed by another
//! process's signal, crashed, exited) and the chain of events that shows it.
//!
//! A death is anchored on the process's `exit` with `group_dead`; an OOM kill or a
//! SIGKILL of a traced process whose exit is not in the trace (the trace ended, or lost
//! it) is a death too, with less confidence. The causes are looked for between the
//! previous death of the same pid (or the trace start) and the anchor.
use std::collections::HashMap;

use super::{
    fmt::{count, duration, format_bytes, format_kb, time_of_day},
    growth,
    trace::{oom_victim, Trace},
    Cause, Confidence, Link,
};
use crate::event::EventKind;

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGQUIT: i32 = 3;
const SIGILL: i32 = 4;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGTERM: i32 = 15;

/// A termination request handled this long before an exit is named with the exit.
const REQUEST_BEFORE_EXIT_NS: u64 = 60_000_000_000;

/// How one process ended.
#[derive(Debug, Clone)]
pub(crate) struct Death {
    pub pid: u32,
    pub cause: Cause,
    pub confidence: Confidence,
    /// Exclusive lower bound of the window searched for the causes (the previous death
    /// of this pid), None from the start of the trace.
    pub from_ns: Option<u64>,
    /// First event of the fatal chain: the kill signal, the OOM kill, or the exit.
    pub start_ns: u64,
    /// The exit, or the last fatal event when the exit is not in the trace.
    pub end_ns: u64,
    pub exit: Option<usize>,
    /// "pid 4711 (workload) was OOM-killed at the memory cgroup limit (2.00 GiB) ...".
    pub headline: String,
    /// In time order.
    pub chain: Vec<Link>,
    pub evidence: Vec<String>,
    /// The death explains itself without resets (an exit after refused allocations):
    /// worth a verdict of its own, like a kill or a crash.
    pub notable: bool,
}

/// The fields of a `signal` event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sig<'a> {
    pub idx: usize,
    pub ts: u64,
    pub sender: u32,
    pub sender_comm: &'a str,
    pub target: u32,
    pub signal: i32,
    pub name: &'a str,
    pub code: &'a str,
    pub result: &'a str,
    /// Who started the sender, nearest first, when it was read.
    pub parents: Option<&'a str>,
}

impl<'a> Sig<'a> {
    fn of(t: &Trace<'a>, idx: usize) -> Option<Sig<'a>> {
        let e = t.ev.get(idx)?;
        match &e.kind {
            EventKind::Signal { target_pid, signal, signal_name, si_code_name, result, sender_parents, .. } => Some(Sig {
                parents: sender_parents.as_deref(),
                idx,
                ts: e.ts_ns,
                sender: e.pid,
                sender_comm: &e.comm,
                target: *target_pid,
                signal: *signal,
                name: signal_name,
                code: si_code_name,
                result,
            }),
            EventKind::SignalDeliver { signal, signal_name, si_code_name, .. } => Some(Sig {
                idx,
                ts: e.ts_ns,
                sender: 0,
                sender_comm: "",
                target: e.pid,
                signal: *signal,
                name: signal_name,
                code: si_code_name,
                result: "delivered",
                parents: None,
            }),
            _ => None,
        }
    }

    fn sig_name(&self) -> String {
        if self.name.is_empty() {
            format!("signal {}", self.signal)
        } else {
            self.name.to_string()
        }
    }

    fn sent_by_a_process(&self) -> bool {
        is_user_code(self.code)
    }

    fn sender_label(&self) -> String {
        if self.sender_comm.is_empty() {
            format!("pid {}", self.sender)
        } else {
            format!("{}[{}]", self.sender_comm, self.sender)
        }
    }

    fn sender_who(&self) -> String {
        if self.sender_comm.is_empty() {
            format!("pid {}", self.sender)
        } else {
            format!("pid {} ({})", self.sender, self.sender_comm)
        }
    }
}

/// si_codes of signals a process sent (kill, tgkill, sigqueue), as opposed to the kernel.
pub(crate) fn is_user_code(code: &str) -> bool {
    matches!(code, "SI_USER" | "SI_TKILL" | "SI_QUEUE")
}

pub(crate) fn is_crash_signal(sig: i32) -> bool {
    matches!(sig, SIGSEGV | SIGBUS | SIGABRT | SIGILL | SIGFPE)
}

fn code_meaning(code: &str, sig: i32) -> Option<&'static str> {
    Some(match code {
        "SI_USER" => "kill(2)",
        "SI_TKILL" => "tgkill(2)",
        "SI_QUEUE" => "sigqueue(3)",
        "SI_KERNEL" if sig == SIGSEGV => "general protection fault",
        "SEGV_MAPERR" => "address not mapped",
        "SEGV_ACCERR" => "invalid permissions for the mapping",
        "BUS_ADRERR" => "nonexistent physical address, e.g. a truncated mapped file",
        "BUS_ADRALN" => "misaligned address",
        "BUS_OBJERR" => "object-specific hardware error",
        "BUS_MCEERR_AR" | "BUS_MCEERR_AO" => "hardware memory error",
        "FPE_INTDIV" => "integer divide by zero",
        "FPE_INTOVF" => "integer overflow",
        c if c.starts_with("ILL_") => "illegal instruction",
        c if c.starts_with("FPE_") => "arithmetic error",
        _ => return None,
    })
}

/// One line for a `signal` (or `signal_deliver`) event.
pub(crate) fn signal_what(t: &Trace, s: &Sig) -> String {
    let to = t.label(s.target);
    let name = s.sig_name();
    let code = if s.code.is_empty() { "no si_code" } else { s.code };
    let mut line = if s.sender == s.target && s.sent_by_a_process() {
        let abort = if s.signal == SIGABRT { ", abort()" } else { "" };
        format!("{name} from {to} itself ({code}{abort})")
    } else if s.sent_by_a_process() {
        let how = code_meaning(code, s.signal).map(|m| format!(": {m}")).unwrap_or_default();
        format!("{name} from {} ({code}{how}) to {to}", s.sender_label())
    } else if code == "SI_KERNEL" && s.signal != SIGSEGV {
        format!("{name} from the kernel (SI_KERNEL) to {to}")
    } else {
        let how = code_meaning(code, s.signal).map(|m| format!(": {m}")).unwrap_or_default();
        format!("{name} ({code}{how}) from the kernel to {to}")
    };
    if !s.result.is_empty() && s.result != "delivered" {
        line.push_str(&format!(" [{}]", s.result));
    }
    line
}

/// The fields of an `exit` event.
#[derive(Debug, Clone)]
struct ExitInfo {
    idx: usize,
    ts: u64,
    code: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<String>,
    core: bool,
    source: String,
}

fn exit_info(t: &Trace, idx: usize) -> Option<ExitInfo> {
    let e = t.ev.get(idx)?;
    match &e.kind {
        EventKind::Exit { exit_code, signal, signal_name, core_dumped, source, .. } => Some(ExitInfo {
            idx,
            ts: e.ts_ns,
            code: *exit_code,
            signal: *signal,
            signal_name: signal_name.clone(),
            core: *core_dumped,
            source: source.clone(),
        }),
        _ => None,
    }
}

impl ExitInfo {
    fn sig_name(&self) -> String {
        match (&self.signal_name, self.signal) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(s)) => format!("signal {s}"),
            _ => "a signal".into(),
        }
    }
}

fn exit_what(t: &Trace, pid: u32, x: &ExitInfo) -> String {
    let core = if x.core { ", core dumped" } else { "" };
    match (x.code, x.signal) {
        (_, Some(_)) => format!("{} died of {}{core}", t.label(pid), x.sig_name()),
        (Some(c), None) => format!("{} exited with code {c}{core}", t.label(pid)),
        (None, None) => format!("{} ended (exit status unknown: source {})", t.label(pid), x.source),
    }
}

fn oom_what(t: &Trace, idx: usize) -> String {
    let Some(e) = t.ev.get(idx) else { return String::new() };
    let EventKind::OomKill { victim_pid, victim_comm, anon_rss_kb, file_rss_kb, shmem_rss_kb, .. } = &e.kind else {
        return String::new();
    };
    let victim = match victim_pid {
        Some(v) if !victim_comm.is_empty() => format!("{victim_comm}[{v}]"),
        Some(v) => t.label(*v),
        None if !victim_comm.is_empty() => victim_comm.clone(),
        None => "a process".into(),
    };
    let mut mem = Vec::new();
    if let Some(a) = anon_rss_kb {
        mem.push(format!("anon {}", format_kb(*a)));
    }
    if let Some(f) = file_rss_kb {
        mem.push(format!("file {}", format_kb(*f)));
    }
    if let Some(s) = shmem_rss_kb.filter(|&s| s > 0) {
        mem.push(format!("shmem {}", format_kb(s)));
    }
    let mem = if mem.is_empty() { String::new() } else { format!(": {}", mem.join(", ")) };
    let runner = if Some(e.pid) != *victim_pid && e.pid != 0 {
        let c = if e.comm.is_empty() { format!("pid {}", e.pid) } else { format!("{}[{}]", e.comm, e.pid) };
        format!(" (the OOM killer ran in {c})")
    } else {
        String::new()
    };
    format!("OOM killer chose {victim}{mem}{runner}")
}

/// "1.86 GiB anon and 12.0 MiB file RSS": what the victim held at the kill.
fn oom_held(t: &Trace, idx: usize) -> Option<String> {
    let EventKind::OomKill { anon_rss_kb, file_rss_kb, .. } = &t.ev.get(idx)?.kind else { return None };
    match (anon_rss_kb, file_rss_kb) {
        (Some(a), Some(f)) => Some(format!("{} anon and {} file RSS", format_kb(*a), format_kb(*f))),
        (Some(a), None) => Some(format!("{} anon RSS", format_kb(*a))),
        (None, Some(f)) => Some(format!("{} file RSS", format_kb(*f))),
        (None, None) => None,
    }
}

/// Where the kernel's anon, file and shmem figures of the victim add up to more than the
/// memory cgroup's limit, the one clause that explains it: the RSS counts every page the
/// process maps, the limit only the pages charged to this cgroup.
fn beyond_limit(t: &Trace, idx: usize, limit: &growth::LimitKind) -> String {
    let growth::LimitKind::Memcg { limit, .. } = limit else { return String::new() };
    let EventKind::OomKill { anon_rss_kb, file_rss_kb, shmem_rss_kb, .. } = &t.ev[idx].kind else { return String::new() };
    let held = [anon_rss_kb, file_rss_kb, shmem_rss_kb].iter().filter_map(|v| **v).fold(0u64, |a, kb| a.saturating_add(kb.saturating_mul(1024)));
    // Rounding and a few shared pages put the sum a little over the limit: not worth a word.
    if held <= limit.saturating_add(limit / 20) || file_rss_kb.unwrap_or(0) == 0 {
        return String::new();
    }
    format!(
        " ({} in all, more than the {} limit: file pages count against the memory cgroup that first read them into the page cache, which need not be this one)",
        format_bytes(held),
        format_bytes(*limit)
    )
}

/// What the victim held just before the kill by the tracer's own figures, for kernels
/// whose `oom:mark_victim` carries only the pid (before 5.14): the last `rss_stat`
/// members, else the last sample. The phrase says where the figure came from.
fn last_memory_before(t: &Trace, pid: u32, kill_ts: u64) -> Option<(String, String)> {
    let mut members: HashMap<&str, i64> = HashMap::new();
    let mut rss_at = None;
    let mut sampled: Option<(u64, u64)> = None;
    for (_, e) in t.iter() {
        if e.ts_ns > kill_ts {
            break;
        }
        match &e.kind {
            EventKind::Rss { member, bytes } if e.pid == pid => {
                members.insert(member.as_str(), *bytes);
                rss_at = Some(e.ts_ns);
            }
            EventKind::Sample { processes, .. } => {
                if let Some(p) = processes.iter().find(|p| p.pid == pid) {
                    sampled = Some((p.rss_bytes, e.ts_ns));
                }
            }
            _ => {}
        }
    }
    let before = |at: u64| crate::units::duration(kill_ts.saturating_sub(at));
    let kb = |name: &str| members.get(name).map(|&b| (b.max(0) as u64) / 1024);
    if let (Some(at), Some(anon)) = (rss_at, kb("MM_ANONPAGES")) {
        let file = kb("MM_FILEPAGES").map(|f| format!(" and {} file", format_kb(f))).unwrap_or_default();
        let when = before(at);
        return Some((
            format!("about {} anon{file} RSS", format_kb(anon)),
            format!("this kernel's oom:mark_victim gives no memory figures: those above are the last rss_stat counters of {}, {when} before the kill", t.who(pid)),
        ));
    }
    let (rss, at) = sampled?;
    let when = before(at);
    Some((
        format!("about {} RSS", crate::units::format_bytes(rss)),
        format!("this kernel's oom:mark_victim gives no memory figures: the RSS above is the last sample of {}, {when} before the kill", t.who(pid)),
    ))
}

/// The memory of the victim at the kill, as the OOM killer saw it.
fn oom_memory_line(t: &Trace, idx: usize) -> Option<String> {
    let e = t.ev.get(idx)?;
    let EventKind::OomKill { total_vm_kb, anon_rss_kb, file_rss_kb, shmem_rss_kb, pgtables_kb, oom_score_adj, .. } = &e.kind else {
        return None;
    };
    let parts: Vec<String> = [
        total_vm_kb.map(|v| format!("total_vm {}", format_kb(v))),
        anon_rss_kb.map(|v| format!("anon {}", format_kb(v))),
        file_rss_kb.map(|v| format!("file {}", format_kb(v))),
        shmem_rss_kb.map(|v| format!("shmem {}", format_kb(v))),
        pgtables_kb.map(|v| format!("page tables {}", format_kb(v))),
        oom_score_adj.map(|v| format!("oom_score_adj {v}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| format!("memory at the kill: {}", parts.join(", ")))
}

/// Signals to, deliveries to, and OOM kills of each pid: built once per trace.
pub(crate) struct ProcIndex {
    signals: HashMap<u32, Vec<usize>>,
    delivers: HashMap<u32, Vec<usize>>,
    ooms: HashMap<u32, Vec<usize>>,
}

impl ProcIndex {
    pub fn new(t: &Trace) -> Self {
        let mut ix = ProcIndex { signals: HashMap::new(), delivers: HashMap::new(), ooms: HashMap::new() };
        for (i, e) in t.iter() {
            match &e.kind {
                EventKind::Signal { target_pid, .. } => ix.signals.entry(*target_pid).or_default().push(i),
                EventKind::SignalDeliver { .. } => ix.delivers.entry(e.pid).or_default().push(i),
                EventKind::OomKill { .. } => {
                    if let Some(v) = oom_victim(e) {
                        ix.ooms.entry(v).or_default().push(i);
                    }
                }
                _ => {}
            }
        }
        ix
    }
}

/// What is known about one process's end: the window and the events in it.
pub(crate) struct Window<'t, 'a> {
    pub t: &'t Trace<'a>,
    pub pid: u32,
    pub from: Option<u64>,
    pub until: u64,
    exit: Option<ExitInfo>,
    /// Signals generated for the process in the window, in time order.
    signals: Vec<Sig<'a>>,
    /// Signals it dequeued in the window.
    delivers: Vec<Sig<'a>>,
    /// OOM kills that chose it, in time order.
    ooms: Vec<usize>,
}

impl<'t, 'a> Window<'t, 'a> {
    fn new(t: &'t Trace<'a>, ix: &ProcIndex, pid: u32, exit: Option<usize>, from: Option<u64>, until: u64) -> Self {
        let inside = |ts: u64| from.is_none_or(|f| ts > f) && ts <= until;
        let pick = |m: &HashMap<u32, Vec<usize>>| -> Vec<usize> {
            m.get(&pid).map(|v| v.iter().copied().filter(|&i| inside(t.ev[i].ts_ns)).collect()).unwrap_or_default()
        };
        Window {
            t,
            pid,
            from,
            until,
            exit: exit.and_then(|i| exit_info(t, i)),
            signals: pick(&ix.signals).into_iter().filter_map(|i| Sig::of(t, i)).collect(),
            delivers: pick(&ix.delivers).into_iter().filter_map(|i| Sig::of(t, i)).collect(),
            ooms: pick(&ix.ooms),
        }
    }

    fn death(&self, cause: Cause, confidence: Confidence, headline: String, mut chain: Vec<Link>, evidence: Vec<String>) -> Death {
        chain.sort_by_key(super::trace::link_key);
        let end_ns = self.exit.as_ref().map(|x| x.ts).unwrap_or(self.until);
        let start_ns = chain
            .iter()
            .filter(|l| l.kind != "mmap" && l.kind != "rss" && l.kind != "sample")
            .map(|l| l.ts_ns)
            .min()
            .unwrap_or(end_ns)
            .min(end_ns);
        Death {
            pid: self.pid,
            cause,
            confidence,
            from_ns: self.from,
            start_ns,
            end_ns,
            exit: self.exit.as_ref().map(|x| x.idx),
            headline,
            chain,
            evidence,
            notable: false,
        }
    }

    fn exit_link(&self) -> Option<Link> {
        self.exit.as_ref().map(|x| self.t.link(x.idx, exit_what(self.t, self.pid, x)))
    }

    fn missing_exit_note(&self) -> Option<String> {
        self.exit.is_none().then(|| format!("the exit of {} is not in the trace (the trace ended first, or lost it)", self.t.who(self.pid)))
    }

    /// The first SIGKILL in the window: SIGKILL cannot be caught, so it is the fatal one.
    fn first_sigkill(&self) -> Option<&Sig<'a>> {
        self.signals.iter().find(|s| s.signal == SIGKILL)
    }
}

/// The owner was OOM-killed: an `oom_kill` chose it, or (Medium) the kernel sent it
/// SIGKILL (SI_KERNEL) and its oom_kill event is missing.
pub(crate) fn oom_killed(w: &Window) -> Option<Death> {
    if let Some(x) = &w.exit {
        if x.code.is_some() || x.signal.is_some_and(|s| s != SIGKILL) {
            return None;
        }
    }
    let t = w.t;
    let oom = w.ooms.last().copied();
    let first_kill = w.first_sigkill();
    let kernel_kill = first_kill.filter(|s| s.code == "SI_KERNEL");
    if oom.is_none() && kernel_kill.is_none() {
        return None;
    }
    let kill_ts = match (kernel_kill, oom) {
        (Some(k), Some(o)) => k.ts.min(t.ev[o].ts_ns),
        (Some(k), None) => k.ts,
        (None, Some(o)) => t.ev[o].ts_ns,
        (None, None) => return None,
    };
    let growth = growth::before_kill(t, w.pid, kill_ts);
    let limit = growth::memory_limit(t, kill_ts);
    let mut chain = growth.links.clone();
    chain.extend(limit.link.clone());
    if let Some(k) = kernel_kill {
        chain.push(t.link(k.idx, signal_what(t, k)));
    }
    let mut evidence = limit.evidence.clone();
    if let Some(o) = oom {
        chain.push(t.link(o, oom_what(t, o)));
        evidence.extend(oom_memory_line(t, o));
    }
    chain.extend(w.exit_link());
    evidence.extend(growth.evidence.iter().cloned());
    let grew = growth.phrase.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
    let (headline, confidence) = if let Some(o) = oom {
        let c = if w.exit.is_some() { Confidence::High } else { Confidence::Medium };
        let held = match oom_held(t, o) {
            Some(h) => format!(", holding {h}{},", beyond_limit(t, o, &limit.kind)),
            None => match last_memory_before(t, w.pid, kill_ts) {
                Some((h, source)) => {
                    evidence.push(source);
                    format!(", holding {h},")
                }
                None => String::new(),
            },
        };
        let neighbour = growth::neighbour_grower(t, w.pid, kill_ts).map(|n| {
            let adj = match &t.ev[o].kind {
                EventKind::OomKill { oom_score_adj: Some(a), .. } if *a != 0 => format!(" (its oom_score_adj is {a})"),
                _ => String::new(),
            };
            chain.push(t.link(n.last, format!("{}[{}] in the same memory cgroup had grown by {}", n.comm, n.pid, format_bytes(n.grew))));
            evidence.push(format!(
                "memory cgroup members (samples over the {} before the kill): {}[{}] grew by {}, {} by {}",
                duration(n.span_ns),
                n.comm,
                n.pid,
                format_bytes(n.grew),
                t.who(w.pid),
                format_bytes(n.victim_grew)
            ));
            format!(
                "; the memory went to pid {} ({}), which grew by {} in the {} before while this one grew by {}, and the kernel chose this one{adj}",
                n.pid,
                n.comm,
                format_bytes(n.grew),
                duration(n.span_ns),
                format_bytes(n.victim_grew)
            )
        });
        chain.sort_by_key(|l| l.ts_ns);
        let headline = format!("{} was OOM-killed{}{held}{grew}", t.who(w.pid), limit.phrase);
        let headline = match neighbour {
            Some(n) => format!("{}{n}", headline.trim_end_matches(',')),
            None => headline,
        };
        (headline, c)
    } else {
        let lost = match t.lost_total {
            0 => String::new(),
            n => format!(" (it lost {})", count(n, "event")),
        };
        evidence.push(format!(
            "no oom_kill event for {} in the trace: the OOM killer is inferred from the SIGKILL the kernel sent (SI_KERNEL)",
            t.who(w.pid)
        ));
        (
            format!(
                "{} was killed by the kernel with SIGKILL (SI_KERNEL), most likely by the OOM killer{}{grew}, though the trace has no oom_kill event{lost}",
                t.who(w.pid),
                limit.phrase
            ),
            if w.exit.is_some() { Confidence::Medium } else { Confidence::Low },
        )
    };
    let run_up = RunUp::of(t, w.pid, kill_ts);
    let headline = match run_up.first_warning(t) {
        Some((i, f)) => {
            let lead = kill_ts.saturating_sub(t.ev[i].ts_ns);
            chain.push(t.link(i, format!("forecast: {} reached in ~{:.1} s", f.limit_name, f.seconds_to_limit)));
            chain.sort_by_key(|l| l.ts_ns);
            evidence.push(format!(
                "first warning {} before the kill: {} had {} of headroom ({:.1}%), growing {}/s over {} ({} points), projected to be reached in {:.1} s",
                duration(lead),
                f.limit_name,
                format_bytes(f.headroom_bytes),
                f.headroom_percent,
                format_bytes(f.rate_bytes_per_s.max(0.0) as u64),
                duration(f.window_ms * 1_000_000),
                f.points,
                f.seconds_to_limit
            ));
            format!("{headline}; warned {} before", duration(lead))
        }
        None => headline,
    };
    evidence.extend(run_up.stall_evidence(t));
    if confidence < Confidence::High {
        evidence.extend(t.lost_note());
    }
    evidence.extend(w.missing_exit_note());
    Some(w.death(Cause::OomKilled, confidence, headline, chain, evidence))
}

/// How long before a kill a forecast may be and still be about it.
const WARNING_REACH_NS: u64 = 60_000_000_000;

/// The run-up to a kill at `kill_ts`: from a minute before it (or the OOM kill before it,
/// when later), in the victim's memory cgroup (a `tracer watch` window holds several
/// services': another cgroup's forecasts and stalls are not about this kill).
struct RunUp<'a> {
    from: u64,
    kill_ts: u64,
    /// The memory cgroup of the last sample before the kill that has the victim among
    /// its processes.
    cgroup: Option<&'a str>,
}

impl<'a> RunUp<'a> {
    fn of(t: &super::trace::Trace<'a>, pid: u32, kill_ts: u64) -> RunUp<'a> {
        let from = t
            .ev
            .iter()
            .filter(|e| e.ts_ns < kill_ts && matches!(e.kind, EventKind::OomKill { .. }))
            .map(|e| e.ts_ns)
            .max()
            .unwrap_or(0)
            .max(kill_ts.saturating_sub(WARNING_REACH_NS));
        let cgroup = t.ev.iter().rev().filter(|e| e.ts_ns <= kill_ts).find_map(|e| match &e.kind {
            EventKind::Sample { processes, cgroup: Some(cg), .. } if processes.iter().any(|p| p.pid == pid) => Some(cg.path.as_str()),
            _ => None,
        });
        RunUp { from, kill_ts, cgroup }
    }

    fn events(&self, t: &super::trace::Trace<'a>) -> impl Iterator<Item = (usize, &'a crate::event::Event)> + '_ {
        let ev: &'a [crate::event::Event] = t.ev;
        ev.iter().enumerate().filter(move |(_, e)| e.ts_ns >= self.from && e.ts_ns <= self.kill_ts)
    }

    /// Whether a forecast's limit name ("memory cgroup <folder>") is this kill's cgroup.
    fn ours(&self, limit_name: &str) -> bool {
        self.cgroup.is_none_or(|c| limit_name.ends_with(c))
    }

    /// The first `forecast` of the run-up.
    fn first_warning(&self, t: &super::trace::Trace<'a>) -> Option<(usize, &'a crate::event::Forecast)> {
        self.events(t).find_map(|(i, e)| match &e.kind {
            EventKind::Forecast(f) if f.limit != "memory_cgroup" || self.ours(&f.limit_name) => Some((i, f)),
            _ => None,
        })
    }

    /// The first `memory_stall` of the run-up (the host's, or the victim's cgroup's), as
    /// evidence with its lead.
    fn stall_evidence(&self, t: &super::trace::Trace<'a>) -> Option<String> {
        self.events(t).find_map(|(_, e)| match &e.kind {
            EventKind::MemoryStall { scope, name, stall_us, window_us, .. } if scope != "memory_cgroup" || self.cgroup.is_none_or(|c| c == name) => {
                let whose = if scope == "host" { "on the host".to_string() } else { format!("in {name}") };
                Some(format!(
                    "the kernel reported memory stalls {} before the kill: tasks {whose} waited for memory at least {} within {} (a PSI trigger)",
                    duration(self.kill_ts.saturating_sub(e.ts_ns)),
                    duration(stall_us.saturating_mul(1_000)),
                    duration(window_us.saturating_mul(1_000))
                ))
            }
            _ => None,
        })
    }
}

/// The owner crashed: SIGSEGV, SIGBUS, SIGABRT, SIGILL or SIGFPE from the kernel (a
/// fault) or from itself (abort()).
pub(crate) fn crashed(w: &Window) -> Option<Death> {
    let t = w.t;
    let x = w.exit.as_ref()?;
    let sig = x.signal?;
    if !is_crash_signal(sig) {
        return None;
    }
    let gen = w.signals.iter().rev().find(|s| s.signal == sig);
    if let Some(g) = gen {
        if g.sent_by_a_process() && g.sender != w.pid {
            return None; // another process sent it: killed_by_signal
        }
    }
    let deliver = w.delivers.iter().rev().find(|s| s.signal == sig);
    let seen = gen.or(deliver);
    let mut chain = Vec::new();
    if let Some(s) = seen {
        chain.push(t.link(s.idx, signal_what(t, s)));
    }
    chain.extend(w.exit_link());
    let mut evidence = Vec::new();
    let code = seen.map(|s| s.code).unwrap_or("");
    let core = if x.core { ", core dumped" } else { "" };
    let headline = if sig == SIGABRT {
        let from = match seen {
            Some(s) if s.sent_by_a_process() => " from itself, abort()",
            _ => "",
        };
        format!("{} aborted (SIGABRT{from}){core}", t.who(w.pid))
    } else {
        let detail = match code_meaning(code, sig) {
            Some(m) => format!(" ({code}: {m})"),
            None if !code.is_empty() => format!(" ({code})"),
            None => String::new(),
        };
        format!("{} crashed with {}{detail}{core}", t.who(w.pid), x.sig_name())
    };
    let confidence = if seen.is_some() { Confidence::High } else { Confidence::Medium };
    if seen.is_none() {
        evidence.push(format!("the {} itself is not in the trace, only the exit status", x.sig_name()));
        evidence.extend(t.lost_note());
    }
    Some(w.death(Cause::Crashed, confidence, headline, chain, evidence))
}

/// Who a signal's sender is, by its name and whether it is the victim's parent: the
/// sentence that says what kind of actor killed the process (never an OOM kill by the
/// kernel).
pub(crate) fn sender_role(comm: &str, is_parent: bool) -> Option<String> {
    let c = comm.to_ascii_lowercase();
    let parent = if is_parent { " (its parent)" } else { "" };
    let role = if ["systemd-oomd", "earlyoom", "oomd", "nohang", "low-memory-moni"].iter().any(|n| c.starts_with(n)) {
        format!("{comm} is a userspace OOM killer: it acted on memory pressure, before and instead of the kernel's OOM killer")
    } else if c == "systemd" || c == "init" {
        format!("{comm} is the service manager: the unit was stopped or restarted, or its stop timed out")
    } else if c.starts_with("gunicorn") {
        format!("{comm}{parent} is the gunicorn master: it kills a worker that misses --timeout (SIGABRT, then SIGKILL) or that it restarts")
    } else if ["supervisord", "circusd", "uvicorn", "celery", "pm2", "runsv", "s6-supervise", "tini", "dumb-init"].iter().any(|n| c.starts_with(n)) {
        format!("{comm}{parent} is a process supervisor: a restart, a stop or a timeout of its own")
    } else if ["kubelet", "containerd", "containerd-shim", "runc", "crun", "dockerd", "docker", "conmon", "crio", "podman"].iter().any(|n| c.starts_with(n)) {
        format!("{comm} is the container runtime or orchestrator: the container was stopped (a deploy, a failed liveness probe, an eviction)")
    } else if ["sh", "bash", "dash", "zsh", "fish", "ksh", "kill", "pkill", "killall", "timeout", "sudo"].contains(&c.as_str()) {
        format!("{comm}{parent} is a shell or a kill command: a person or a script sent it")
    } else if is_parent {
        format!("{comm} is its parent")
    } else {
        return None;
    };
    Some(role)
}

/// Another process (or the kernel, for a non-OOM reason) sent the owner a fatal signal.
pub(crate) fn killed_by_signal(w: &Window) -> Option<Death> {
    let t = w.t;
    let sig = match &w.exit {
        Some(x) if x.code.is_some() => return None,
        Some(x) => x.signal?,
        None => w.first_sigkill()?.signal,
    };
    let gen = if sig == SIGKILL { w.first_sigkill() } else { w.signals.iter().rev().find(|s| s.signal == sig) };
    let mut chain = Vec::new();
    if let Some(g) = gen {
        chain.push(t.link(g.idx, signal_what(t, g)));
    }
    chain.extend(w.exit_link());
    let name = gen.map(|g| g.sig_name()).or_else(|| w.exit.as_ref().map(|x| x.sig_name())).unwrap_or_else(|| format!("signal {sig}"));
    let who = t.who(w.pid);
    let mut evidence = Vec::new();
    let headline = match gen {
        Some(g) if g.sender == w.pid && g.sent_by_a_process() => format!("{who} was killed by {name} it sent itself ({})", g.code),
        Some(g) if g.sent_by_a_process() => {
            let how = code_meaning(g.code, sig).map(|m| format!(": {m}")).unwrap_or_default();
            let role = sender_role(g.sender_comm, t.parent_of(w.pid) == Some(g.sender)).map(|r| format!("; {r}")).unwrap_or_default();
            if let Some(p) = g.parents {
                evidence.push(format!("{} was started by {p}", g.sender_who()));
            }
            format!("{who} was killed by {name} from {} ({}{how}) at {}{role}", g.sender_who(), g.code, time_of_day(g.ts))
        }
        Some(g) => format!("{who} was killed by {name} from the kernel ({})", if g.code.is_empty() { "no si_code" } else { g.code }),
        None => {
            evidence.push(format!("no signal event for the {name}: who sent it is not in the trace"));
            evidence.extend(t.lost_note());
            format!("{who} was killed by {name}; who sent it is not in the trace")
        }
    };
    evidence.extend(w.missing_exit_note());
    let confidence = match (gen.is_some(), w.exit.is_some()) {
        (true, true) => Confidence::High,
        (true, false) => Confidence::Medium,
        _ => Confidence::Low,
    };
    Some(w.death(Cause::KilledBySignal, confidence, headline, chain, evidence))
}

/// The owner exited on its own with an exit code (maybe after handling a termination
/// request, which is named).
pub(crate) fn exited(w: &Window) -> Option<Death> {
    let t = w.t;
    let x = w.exit.as_ref()?;
    let code = x.code?;
    let request = w
        .signals
        .iter()
        .rev()
        .find(|s| matches!(s.signal, SIGTERM | SIGINT | SIGHUP | SIGQUIT) && s.ts.saturating_add(REQUEST_BEFORE_EXIT_NS) >= x.ts);
    let mut chain = Vec::new();
    let mut headline = format!("{} exited with code {code}", t.who(w.pid));
    if let Some(r) = request {
        chain.push(t.link(r.idx, signal_what(t, r)));
        if r.sent_by_a_process() && r.sender != w.pid {
            headline.push_str(&format!(" after {} from {}", r.sig_name(), r.sender_who()));
        } else {
            headline.push_str(&format!(" after {}", r.sig_name()));
        }
    }
    let mut evidence = Vec::new();
    let failed = if code != 0 { failed_allocations(t, w.pid, x.ts) } else { None };
    let notable = failed.is_some();
    if let Some(failed) = failed {
        headline.push_str(&failed.phrase);
        chain.extend(failed.links);
        evidence.extend(failed.evidence);
    }
    chain.extend(w.exit_link());
    let mut death = w.death(Cause::Exited, Confidence::High, headline, chain, evidence);
    death.notable = notable;
    Some(death)
}

/// How far back failed allocations explain an exit.
const FAILED_ALLOCATIONS_BEFORE_EXIT_NS: u64 = 30_000_000_000;

/// Allocations the kernel refused (ENOMEM) before an exit: what a MemoryError or a
/// `std::bad_alloc` exit looks like, which users mistake for an OOM kill.
struct FailedAllocations {
    phrase: String,
    links: Vec<Link>,
    evidence: Vec<String>,
}

fn failed_allocations(t: &Trace, pid: u32, exit_ts: u64) -> Option<FailedAllocations> {
    let from = exit_ts.saturating_sub(FAILED_ALLOCATIONS_BEFORE_EXIT_NS);
    let mut failed: Vec<(usize, u64)> = Vec::new();
    let mut limit = None;
    for (i, e) in t.iter() {
        if e.ts_ns > exit_ts {
            break;
        }
        match &e.kind {
            EventKind::Mmap { len, error: Some(err), .. } if e.pid == pid && err == "ENOMEM" && e.ts_ns >= from => failed.push((i, *len)),
            EventKind::Mremap { new_len, error: Some(err), .. } if e.pid == pid && err == "ENOMEM" && e.ts_ns >= from => {
                failed.push((i, *new_len))
            }
            EventKind::Sample { processes, .. } => {
                if let Some(l) = processes.iter().find(|p| p.pid == pid).and_then(|p| p.address_space_limit_bytes) {
                    limit = Some(l);
                }
            }
            _ => {}
        }
    }
    let (&(first, first_len), &(last, _)) = (failed.first()?, failed.last()?);
    let n = failed.len() as u64;
    let same_size = failed.iter().all(|&(_, len)| len == first_len);
    let sizes = if same_size && n > 1 {
        format!(" of {} each", format_bytes(first_len))
    } else if n == 1 {
        format!(" of {}", format_bytes(first_len))
    } else {
        String::new()
    };
    let mut links = vec![t.link(first, format!("an allocation of {} failed with ENOMEM", format_bytes(first_len)))];
    if last != first {
        links.push(t.link(last, format!("the last of {n} failed allocations")));
    }
    let limit_clause = limit.map(|l| format!("; its address-space limit (RLIMIT_AS) was {}", format_bytes(l))).unwrap_or_default();
    let what = if n == 1 { format!("1 allocation{sizes}") } else { format!("{n} allocations{sizes}") };
    let phrase = format!(" after {what} failed with ENOMEM{limit_clause}");
    let mut evidence = vec![
        "the kernel refused the allocations (ENOMEM), so the program failed on its own (a Python MemoryError, a std::bad_alloc): this is not an OOM kill, nothing was killed".to_string(),
    ];
    if limit.is_none() {
        evidence.push("no address-space limit was sampled; without one, ENOMEM means the mapping did not fit the address space or overcommit refused it (vm.overcommit_memory)".into());
    }
    Some(FailedAllocations { phrase, links, evidence })
}

/// The process ended but the trace does not say how.
fn unknown_end(w: &Window) -> Death {
    let t = w.t;
    let mut evidence = Vec::new();
    evidence.extend(w.exit.as_ref().map(|x| format!("exit status source: {}", x.source)));
    evidence.extend(t.lost_note());
    let headline = format!("{} ended; how is not in the trace (no exit status, no fatal signal)", t.who(w.pid));
    w.death(Cause::Unexplained, Confidence::Low, headline, w.exit_link().into_iter().collect(), evidence)
}

/// How `pid` ended in the window: the first rule that fits.
pub(crate) fn fate(t: &Trace, ix: &ProcIndex, pid: u32, exit: Option<usize>, from: Option<u64>, until: u64) -> Death {
    let w = Window::new(t, ix, pid, exit, from, until);
    oom_killed(&w).or_else(|| crashed(&w)).or_else(|| killed_by_signal(&w)).or_else(|| exited(&w)).unwrap_or_else(|| unknown_end(&w))
}

fn covered(deaths: &[Death], pid: u32, ts: u64) -> bool {
    deaths.iter().any(|d| d.pid == pid && d.from_ns.is_none_or(|f| ts > f) && (ts <= d.end_ns || d.exit.is_none()))
}

fn previous_end(deaths: &[Death], pid: u32, ts: u64) -> Option<u64> {
    deaths.iter().filter(|d| d.pid == pid && d.end_ns < ts).map(|d| d.end_ns).max()
}

/// Every death of a traced process in the trace, in time order.
pub(crate) fn deaths(t: &Trace) -> Vec<Death> {
    let ix = ProcIndex::new(t);
    let mut out: Vec<Death> = Vec::new();
    let mut last_exit: HashMap<u32, u64> = HashMap::new();
    for (i, e) in t.iter() {
        if let EventKind::Exit { group_dead: true, .. } = e.kind {
            let from = last_exit.get(&e.pid).copied();
            out.push(fate(t, &ix, e.pid, Some(i), from, e.ts_ns));
            last_exit.insert(e.pid, e.ts_ns);
        }
    }
    // OOM kills of traced processes whose exit is not in the trace.
    for (_, e) in t.iter() {
        if let (EventKind::OomKill { is_target, .. }, Some(v)) = (&e.kind, oom_victim(e)) {
            if (*is_target || t.is_traced(v)) && !covered(&out, v, e.ts_ns) {
                let from = previous_end(&out, v, e.ts_ns);
                out.push(fate(t, &ix, v, None, from, e.ts_ns));
            }
        }
    }
    // SIGKILLs of traced processes whose exit is not in the trace.
    for (_, e) in t.iter() {
        if let EventKind::Signal { target_pid, signal: SIGKILL, .. } = e.kind {
            if t.is_traced(target_pid) && !covered(&out, target_pid, e.ts_ns) {
                let from = previous_end(&out, target_pid, e.ts_ns);
                out.push(fate(t, &ix, target_pid, None, from, e.ts_ns));
            }
        }
    }
    out.sort_by_key(|d| (d.start_ns, d.end_ns, d.pid));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testkit::{Tb, GIB, MIB, PID};

    fn only_death(b: &Tb) -> Death {
        let t = Trace::new(&b.ev);
        let mut d = deaths(&t);
        assert_eq!(d.len(), 1, "{d:#?}");
        d.remove(0)
    }

    fn kinds(d: &Death) -> Vec<&str> {
        d.chain.iter().map(|l| l.kind.as_str()).collect()
    }

    /// Issue 13: before 5.14 oom:mark_victim carries only the victim's pid.
    #[test]
    fn an_oom_kill_without_figures_takes_them_from_the_last_rss_events_and_says_so() {
        let mut b = Tb::new(PID);
        b.rss(1_500, PID, "MM_ANONPAGES", (60 * MIB) as i64);
        b.rss(1_500, PID, "MM_FILEPAGES", (2 * MIB) as i64);
        b.cgroup_sample(1_900, 64 * MIB, Some(64 * MIB), Some(0));
        b.signal(2_000, 77, "stress", PID, SIGKILL, "SI_KERNEL");
        let o = b.oom_kill(2_000, 77, "stress", PID, "workload", 0, 0);
        if let EventKind::OomKill { anon_rss_kb, file_rss_kb, total_vm_kb, shmem_rss_kb, pgtables_kb, .. } = &mut b.ev[o].kind {
            (*anon_rss_kb, *file_rss_kb, *total_vm_kb, *shmem_rss_kb, *pgtables_kb) = (None, None, None, None, None);
        }
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::OomKilled);
        assert!(d.headline.contains("holding about 60.0 MiB anon and 2.00 MiB file RSS,"), "{}", d.headline);
        assert!(
            d.evidence.iter().any(|e| e.contains("last rss_stat counters") && e.contains("500 ms before the kill")),
            "{:?}",
            d.evidence
        );
        // Only samples: the last one, said as such.
        let mut b = Tb::new(PID);
        b.sample_full(1_900, PID, 63 * MIB, None, None);
        let o = b.oom_kill(2_000, 77, "stress", PID, "workload", 0, 0);
        if let EventKind::OomKill { anon_rss_kb, file_rss_kb, .. } = &mut b.ev[o].kind {
            (*anon_rss_kb, *file_rss_kb) = (None, None);
        }
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert!(d.headline.contains("holding about 63.0 MiB RSS,"), "{}", d.headline);
        assert!(d.evidence.iter().any(|e| e.contains("last sample") && e.contains("100 ms before")), "{:?}", d.evidence);
    }

    /// Issue 14: exit code 1 after failed allocations (RLIMIT_AS, Python's MemoryError).
    #[test]
    fn an_exit_after_failed_allocations_names_them_and_the_limit() {
        let mut b = Tb::new(PID);
        let s = b.sample_full(500, PID, 300 * MIB, None, None);
        if let EventKind::Sample { processes, .. } = &mut b.ev[s].kind {
            processes[0].address_space_limit_bytes = Some(400 * MIB);
        }
        for i in 0..9 {
            let m = b.mmap_file(1_000 + i, PID, 16 * MIB, "");
            if let EventKind::Mmap { error, path, result, fd, .. } = &mut b.ev[m].kind {
                (*error, *path, *result, *fd) = (Some("ENOMEM".into()), None, (-12i64) as u64, -1);
            }
        }
        b.exit_code(1_100, PID, 1);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Exited);
        assert_eq!(
            d.headline,
            "pid 4711 (workload) exited with code 1 after 9 allocations of 16.0 MiB each failed with ENOMEM; its address-space limit (RLIMIT_AS) was 400 MiB"
        );
        assert!(d.evidence.iter().any(|e| e.contains("this is not an OOM kill")), "{:?}", d.evidence);
        assert_eq!(kinds(&d), ["mmap", "mmap", "exit"]);
    }

    /// Issue 14: anon + file RSS above the cgroup's limit gets the one clause that says why.
    #[test]
    fn rss_beyond_the_limit_is_explained_in_one_clause() {
        let mut b = Tb::new(PID);
        b.cgroup_sample(1_900, GIB - MIB, Some(GIB), Some(0));
        b.oom_kill(2_000, PID, "workload", PID, "workload", 1021 * 1024, 718 * 1024);
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert!(
            d.headline.contains(
                "holding 1021 MiB anon and 718 MiB file RSS (1.70 GiB in all, more than the 1.00 GiB limit: file pages count \
                 against the memory cgroup that first read them into the page cache, which need not be this one),"
            ),
            "{}",
            d.headline
        );
        // Under the limit: no clause.
        let mut b = Tb::new(PID);
        b.cgroup_sample(1_900, GIB - MIB, Some(GIB), Some(0));
        b.oom_kill(2_000, PID, "workload", PID, "workload", 900 * 1024, 12 * 1024);
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert!(d.headline.contains("holding 900 MiB anon and 12.0 MiB file RSS,"), "{}", d.headline);
    }

    #[test]
    fn a_senders_kind_is_named_never_as_an_oom_kill_by_the_kernel() {
        assert!(sender_role("systemd-oomd", false).unwrap().contains("userspace OOM killer"));
        assert!(sender_role("earlyoom", false).unwrap().contains("before and instead of the kernel's OOM killer"));
        assert!(sender_role("gunicorn", true).unwrap().contains("misses --timeout (SIGABRT, then SIGKILL)"));
        assert!(sender_role("kubelet", false).unwrap().contains("container runtime or orchestrator"));
        assert!(sender_role("containerd-shim", false).unwrap().contains("container runtime"));
        assert!(sender_role("bash", false).unwrap().contains("a person or a script"));
        assert!(sender_role("systemd", false).unwrap().contains("service manager"));
        assert_eq!(sender_role("python3", true).as_deref(), Some("python3 is its parent"));
        assert_eq!(sender_role("python3", false), None);
    }

    /// Issue 15: the target is OOM-killed but a neighbour in its cgroup grew: name it.
    #[test]
    fn the_neighbour_that_grew_is_named_when_the_kernel_chose_the_target() {
        let member = |pid: u32, comm: &str, rss: u64| crate::event::MemberRss { pid, comm: comm.into(), rss_bytes: rss };
        let mut b = Tb::new(PID);
        for (k, (loader, server)) in [(50 * MIB, 30 * MIB), (400 * MIB, 31 * MIB), (900 * MIB, 32 * MIB)].into_iter().enumerate() {
            let s = b.cgroup_sample(1_000 + 500 * k as u64, loader + server, Some(GIB), Some(0));
            if let EventKind::Sample { cgroup: Some(c), .. } = &mut b.ev[s].kind {
                c.members = vec![member(999, "loader", loader), member(PID, "workload", server)];
            }
        }
        let o = b.oom_kill(2_100, 999, "loader", PID, "workload", 32 * 1024, 1024);
        if let EventKind::OomKill { oom_score_adj, .. } = &mut b.ev[o].kind {
            *oom_score_adj = Some(1000);
        }
        b.exit_signal(2_110, PID, SIGKILL);
        let d = only_death(&b);
        assert!(
            d.headline.ends_with(
                "; the memory went to pid 999 (loader), which grew by 850 MiB in the 1.1 s before while this one grew by 2.00 MiB, and the kernel chose this one (its oom_score_adj is 1000)"
            ),
            "{}",
            d.headline
        );
        assert!(d.chain.iter().any(|l| l.what == "loader[999] in the same memory cgroup had grown by 850 MiB"), "{:?}", d.chain);
        // The victim itself grew most: no neighbour named.
        let mut b = Tb::new(PID);
        for (k, server) in [30 * MIB, 500 * MIB].into_iter().enumerate() {
            let s = b.cgroup_sample(1_000 + 500 * k as u64, server, Some(GIB), Some(0));
            if let EventKind::Sample { cgroup: Some(c), .. } = &mut b.ev[s].kind {
                c.members = vec![member(999, "loader", 40 * MIB + k as u64 * 100 * MIB), member(PID, "workload", server)];
            }
        }
        b.oom_kill(2_100, PID, "workload", PID, "workload", 500 * 1024, 1024);
        b.exit_signal(2_110, PID, SIGKILL);
        assert!(!only_death(&b).headline.contains("the memory went to"));
    }

    #[test]
    fn shared_libraries_are_not_growth() {
        let mut b = Tb::new(PID);
        b.mmap_file(900, PID, 2 * MIB, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        b.mmap_file(950, PID, 3 * MIB, "/usr/lib/locale/locale-archive");
        b.mmap_file(1_000, PID, GIB, "/models/aya/model-00001.safetensors");
        b.rss(1_500, PID, "MM_ANONPAGES", (1900 * MIB) as i64);
        b.oom_kill(2_000, 77, "python3", PID, "workload", 1900 * 1024, 12 * 1024);
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert!(d.headline.ends_with("after mapping 1.00 GiB of model-00001.safetensors"), "{}", d.headline);
        assert!(!d.headline.contains("libc") && !d.headline.contains("files"), "{}", d.headline);
        assert!(!d.chain.iter().any(|l| l.what.contains("libc")), "{:#?}", d.chain);
        assert!(
            d.evidence.iter().any(|e| e.contains("not counted as growth: 5.00 MiB in 2 files (locale-archive (3.00 MiB), libc.so.6 (2.00 MiB))")),
            "{:#?}",
            d.evidence
        );
    }

    #[test]
    fn oom_killed_with_the_whole_chain_is_high() {
        let mut b = Tb::new(PID);
        b.mmap_file(1_000, PID, GIB, "/models/aya/model-00001.safetensors");
        b.rss(1_500, PID, "MM_ANONPAGES", (1900 * MIB) as i64);
        b.cgroup_sample(1_900, 2 * GIB - MIB, Some(2 * GIB), Some(0));
        b.signal(2_000, 77, "python3", PID, SIGKILL, "SI_KERNEL");
        b.oom_kill(2_000, 77, "python3", PID, "workload", 1900 * 1024, 12 * 1024);
        b.exit_signal(2_010, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::OomKilled);
        assert_eq!(d.confidence, Confidence::High);
        assert_eq!(kinds(&d), ["mmap", "rss", "sample", "signal", "oom_kill", "exit"]);
        assert!(
            d.headline.starts_with(
                "pid 4711 (workload) was OOM-killed at the memory cgroup limit (2.00 GiB), holding 1.86 GiB anon and 12.0 MiB file RSS,"
            ),
            "{}",
            d.headline
        );
        assert!(d.headline.contains("after mapping 1.00 GiB of model-00001.safetensors"), "{}", d.headline);
        let oom = &d.chain[4].what;
        assert_eq!(oom, "OOM killer chose workload[4711]: anon 1.86 GiB, file 12.0 MiB (the OOM killer ran in python3[77])");
        assert_eq!(d.chain[3].what, "SIGKILL from the kernel (SI_KERNEL) to workload[4711]");
        assert_eq!(d.start_ns, b.ts(2_000));
        assert_eq!(d.end_ns, b.ts(2_010));
    }

    #[test]
    fn oom_kill_of_another_process_in_the_memcg_is_not_the_owners() {
        let mut b = Tb::new(PID);
        b.oom_kill(1_000, PID, "workload", 999, "sidecar", 500 * 1024, 0);
        b.exit_code(3_000, PID, 1);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Exited);
        assert_eq!(d.pid, PID);
        assert!(d.headline.contains("exited with code 1"), "{}", d.headline);
        assert!(!d.headline.contains("OOM"), "{}", d.headline);
    }

    #[test]
    fn user_sigkill_right_after_an_oom_kill_of_another_process_is_killed_by_signal() {
        let mut b = Tb::new(PID);
        b.oom_kill(1_000, 50, "kworker", 999, "sidecar", 500 * 1024, 0);
        b.signal(1_050, 1234, "bash", PID, SIGKILL, "SI_USER");
        b.exit_signal(1_060, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::KilledBySignal);
        assert_eq!(d.confidence, Confidence::High);
        assert!(d.headline.contains("killed by SIGKILL from pid 1234 (bash) (SI_USER: kill(2))"), "{}", d.headline);
        assert_eq!(kinds(&d), ["signal", "exit"]);
    }

    #[test]
    fn sigkill_from_the_kernel_without_oom_event_is_a_medium_oom_that_mentions_lost_events() {
        let mut b = Tb::new(PID);
        b.lost(900, "oom", 3);
        b.signal(1_000, 0, "swapper/0", PID, SIGKILL, "SI_KERNEL");
        b.exit_signal(1_010, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::OomKilled);
        assert_eq!(d.confidence, Confidence::Medium);
        assert!(d.headline.contains("most likely by the OOM killer"), "{}", d.headline);
        assert!(d.headline.contains("lost 3 events"), "{}", d.headline);
        assert!(d.evidence.iter().any(|l| l.contains("lost 3 events (oom: 3)")), "{:?}", d.evidence);
        assert_eq!(kinds(&d), ["signal", "exit"]);
    }

    #[test]
    fn sigkill_from_the_kernel_with_neither_oom_event_nor_exit_is_low() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 0, "swapper/0", PID, SIGKILL, "SI_KERNEL");
        let d = only_death(&b);
        assert_eq!((d.cause, d.confidence), (Cause::OomKilled, Confidence::Low));
    }

    #[test]
    fn oom_kill_whose_victim_pid_was_not_resolved_matches_the_main_thread() {
        let mut b = Tb::new(PID);
        let i = b.oom_kill(1_000, 77, "python3", PID, "workload", 1024, 0);
        if let EventKind::OomKill { victim_pid, .. } = &mut b.ev[i].kind {
            *victim_pid = None;
        }
        b.exit_signal(1_010, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!((d.cause, d.confidence), (Cause::OomKilled, Confidence::High));
    }

    #[test]
    fn oom_kill_without_exit_in_the_trace_is_medium() {
        let mut b = Tb::new(PID);
        b.oom_kill(1_000, 77, "python3", PID, "workload", 1024, 0);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::OomKilled);
        assert_eq!(d.confidence, Confidence::Medium);
        assert!(d.exit.is_none());
        assert!(d.evidence.iter().any(|l| l.contains("not in the trace")), "{:?}", d.evidence);
    }

    #[test]
    fn segfault_from_the_kernel_is_a_crash() {
        let mut b = Tb::new(PID);
        b.signal(1_000, PID, "workload", PID, SIGSEGV, "SEGV_MAPERR");
        b.exit_signal(1_001, PID, SIGSEGV);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Crashed);
        assert_eq!(d.confidence, Confidence::High);
        assert!(d.headline.contains("crashed with SIGSEGV (SEGV_MAPERR: address not mapped)"), "{}", d.headline);
        assert_eq!(d.chain[0].what, "SIGSEGV (SEGV_MAPERR: address not mapped) from the kernel to workload[4711]");
    }

    #[test]
    fn abort_from_itself_is_a_crash() {
        let mut b = Tb::new(PID);
        b.signal(1_000, PID, "workload", PID, SIGABRT, "SI_TKILL");
        b.exit_signal(1_001, PID, SIGABRT);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Crashed);
        assert!(d.headline.contains("aborted (SIGABRT from itself, abort())"), "{}", d.headline);
    }

    #[test]
    fn sigsegv_sent_with_kill_by_another_process_is_killed_by_signal() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1234, "bash", PID, SIGSEGV, "SI_USER");
        b.exit_signal(1_001, PID, SIGSEGV);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::KilledBySignal);
        assert!(d.headline.contains("pid 1234 (bash)"), "{}", d.headline);
    }

    #[test]
    fn sigterm_from_another_process_is_killed_by_signal() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1, "systemd", PID, SIGTERM, "SI_USER");
        b.exit_signal(1_020, PID, SIGTERM);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::KilledBySignal);
        assert!(d.headline.contains("killed by SIGTERM from pid 1 (systemd)"), "{}", d.headline);
    }

    #[test]
    fn fatal_signal_without_a_signal_event_is_low() {
        let mut b = Tb::new(PID);
        b.exit_signal(1_020, PID, SIGKILL);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::KilledBySignal);
        assert_eq!(d.confidence, Confidence::Low);
        assert!(d.headline.contains("who sent it is not in the trace"), "{}", d.headline);
    }

    #[test]
    fn exit_code_is_said_and_a_handled_sigterm_is_named() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1, "systemd", PID, SIGTERM, "SI_USER");
        b.exit_code(1_500, PID, 0);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Exited);
        assert_eq!(d.headline, "pid 4711 (workload) exited with code 0 after SIGTERM from pid 1 (systemd)");
        assert_eq!(kinds(&d), ["signal", "exit"]);
    }

    #[test]
    fn exit_without_status_is_unexplained() {
        let mut b = Tb::new(PID);
        b.exit_unknown(1_500, PID);
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::Unexplained);
        assert_eq!(d.confidence, Confidence::Low);
    }

    #[test]
    fn sigkill_without_exit_is_a_death_and_not_counted_twice_with_its_oom() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1234, "bash", PID, SIGKILL, "SI_USER");
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::KilledBySignal);
        assert_eq!(d.confidence, Confidence::Medium);

        let mut b = Tb::new(PID);
        b.signal(1_000, 77, "python3", PID, SIGKILL, "SI_KERNEL");
        b.oom_kill(1_000, 77, "python3", PID, "workload", 1024, 0);
        b.signal(1_100, 1234, "bash", PID, SIGKILL, "SI_USER");
        let d = only_death(&b);
        assert_eq!(d.cause, Cause::OomKilled);
    }

    #[test]
    fn each_life_of_a_reused_pid_has_its_own_death() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 1234, "bash", PID, SIGKILL, "SI_USER");
        b.exit_signal(1_001, PID, SIGKILL);
        b.exit_code(5_000, PID, 2);
        let t = Trace::new(&b.ev);
        let d = deaths(&t);
        assert_eq!(d.iter().map(|d| d.cause).collect::<Vec<_>>(), [Cause::KilledBySignal, Cause::Exited]);
        assert_eq!(d[1].chain.len(), 1, "the first life's SIGKILL is not the second's");
    }
}
