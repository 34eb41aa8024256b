//! The trace as the rules see it: events in time order (whatever order the slice had),
//! who the target is, process names, and what was lost.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::{fmt, Link};
use crate::event::{CgroupSample, Event, EventKind, GpuSample, ProcessSample, SystemSample};

pub(crate) struct Trace<'a> {
    pub ev: &'a [Event],
    /// Indices into `ev`, sorted by (ts_ns, causal rank of the kind, index): every rule
    /// walks this.
    pub order: Vec<usize>,
    /// The target of the trace (`trace_start.target_pid`).
    pub target: Option<u32>,
    /// When the trace started (trace_start, else the first event).
    pub start_ns: u64,
    /// Events the kernel could not hand over, per probe.
    pub lost_by_probe: BTreeMap<String, u64>,
    pub lost_total: u64,
    /// pid -> (rank, comm): the best name seen for a process.
    comms: HashMap<u32, (u8, String)>,
    /// Processes with their own events: the target, traced children, owners.
    traced: HashSet<u32>,
}

impl<'a> Trace<'a> {
    pub fn new(ev: &'a [Event]) -> Self {
        let mut order: Vec<usize> = (0..ev.len()).collect();
        order.sort_by_key(|&i| (ev[i].ts_ns, tie_rank(ev[i].kind_name()), i));
        let mut t = Trace {
            ev,
            order,
            target: None,
            start_ns: 0,
            lost_by_probe: BTreeMap::new(),
            lost_total: 0,
            comms: HashMap::new(),
            traced: HashSet::new(),
        };
        t.start_ns = t.order.first().map(|&i| ev[i].ts_ns).unwrap_or(0);
        let mut end_lost = 0u64;
        for i in t.order.clone() {
            let e = &ev[i];
            match &e.kind {
                // The first trace_start (by time) is the trace's.
                EventKind::TraceStart { target_pid, .. } if t.target.is_none() => {
                    t.target = Some(*target_pid);
                    t.start_ns = e.ts_ns;
                }
                EventKind::TraceEnd { lost, .. } => end_lost = end_lost.max(*lost),
                EventKind::Lost { probe, count, .. } => {
                    let slot = t.lost_by_probe.entry(probe.clone()).or_insert(0);
                    *slot = slot.saturating_add(*count);
                    t.lost_total = t.lost_total.saturating_add(*count);
                }
                _ => {}
            }
            t.learn_comm(e);
            t.learn_traced(e);
        }
        t.lost_total = t.lost_total.max(end_lost);
        t
    }

    /// Events in time order with their index in the slice.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &'a Event)> + '_ {
        self.order.iter().map(move |&i| (i, &self.ev[i]))
    }

    fn name(&mut self, pid: u32, rank: u8, comm: &str) {
        if comm.is_empty() {
            return;
        }
        let slot = self.comms.entry(pid).or_insert((0, String::new()));
        if rank >= slot.0 {
            *slot = (rank, comm.to_string());
        }
    }

    /// Names seen on the main thread (or procfs, or as a signal/OOM victim) beat names of
    /// other threads; a later name beats an earlier one of the same rank (after exec).
    /// tcp_reset/tcp_state/oom_kill/signal carry another task's comm in pid/comm.
    fn learn_comm(&mut self, e: &Event) {
        match &e.kind {
            EventKind::TraceStart { target_pid, .. } => {
                // /proc/PID/comm of the target at attach time.
                if e.pid == *target_pid {
                    self.name(*target_pid, 2, &e.comm);
                }
            }
            EventKind::TcpReset { .. } | EventKind::TcpState { .. } | EventKind::TraceEnd { .. } | EventKind::Lost { .. } => {}
            EventKind::Signal { target_pid, target_tid, target_comm, .. } => {
                let rank = if target_tid == target_pid { 3 } else { 1 };
                self.name(*target_pid, rank, target_comm);
                // The sender, when it is a process that sent it (kill/tgkill).
                self.name(e.pid, if e.tid == e.pid { 2 } else { 1 }, &e.comm);
            }
            EventKind::OomKill { victim_pid: Some(v), victim_tid, victim_comm, .. } => {
                self.name(*v, if victim_tid == v { 3 } else { 1 }, victim_comm);
            }
            EventKind::OomKill { .. } => {}
            EventKind::Sample { processes, .. } => {
                for p in processes {
                    self.name(p.pid, 3, &p.comm);
                }
            }
            EventKind::Fork { child_pid, child_comm, thread, .. } => {
                self.name(e.pid, if e.tid == e.pid { 3 } else { 1 }, &e.comm);
                if !thread {
                    self.name(*child_pid, 2, child_comm);
                }
            }
            _ => {
                self.name(e.pid, if e.tid == e.pid { 3 } else { 1 }, &e.comm);
            }
        }
    }

    pub fn comm(&self, pid: u32) -> Option<&str> {
        self.comms.get(&pid).map(|(_, c)| c.as_str())
    }

    /// `workload[4711]`, or `pid 4711` without a name.
    pub fn label(&self, pid: u32) -> String {
        match self.comm(pid) {
            Some(c) => format!("{c}[{pid}]"),
            None => format!("pid {pid}"),
        }
    }

    /// `pid 4711 (workload)`, or `pid 4711` without a name.
    /// The parent of `pid` as the trace knows it: the traced process that forked it, or
    /// the starter a `restart` event names.
    pub fn parent_of(&self, pid: u32) -> Option<u32> {
        self.ev.iter().find_map(|e| match &e.kind {
            EventKind::Fork { child_pid, thread: false, .. } if *child_pid == pid => Some(e.pid),
            EventKind::Restart { new_pid, parent_pid, .. } if *new_pid == pid => *parent_pid,
            _ => None,
        })
    }

    pub fn who(&self, pid: u32) -> String {
        match self.comm(pid) {
            Some(c) => format!("pid {pid} ({c})"),
            None => format!("pid {pid}"),
        }
    }

    pub fn link(&self, index: usize, what: impl Into<String>) -> Link {
        let e = &self.ev[index];
        Link { index, ts_ns: e.ts_ns, kind: e.kind_name().to_string(), what: what.into() }
    }

    /// "the trace lost 42 events (oom: 2, tcp: 40)", when it lost any.
    pub fn lost_note(&self) -> Option<String> {
        if self.lost_total == 0 {
            return None;
        }
        let per: Vec<String> = self.lost_by_probe.iter().map(|(p, n)| format!("{p}: {n}")).collect();
        let n = fmt::count(self.lost_total, "event");
        Some(if per.is_empty() { format!("the trace lost {n}") } else { format!("the trace lost {n} ({})", per.join(", ")) })
    }

    /// Whether a process is traced: the target, a traced child, or a process with its
    /// own events in the trace.
    pub fn is_traced(&self, pid: u32) -> bool {
        self.target == Some(pid) || self.traced.contains(&pid)
    }

    fn learn_traced(&mut self, e: &Event) {
        let pid = match &e.kind {
            EventKind::Fork { child_pid, traced: true, thread: false, .. } => Some(*child_pid),
            EventKind::Exit { .. }
            | EventKind::Exec { .. }
            | EventKind::Mmap { .. }
            | EventKind::Munmap { .. }
            | EventKind::Brk { .. }
            | EventKind::Mremap { .. }
            | EventKind::MemorySummary { .. }
            | EventKind::Rss { .. }
            | EventKind::SignalDeliver { .. }
            | EventKind::TcpState { .. }
            | EventKind::TcpReset { attributed_by: Some(_), .. } => Some(e.pid),
            // A peer (the server a traced client reached) is not traced.
            EventKind::Signal { target_pid, peer: false, .. } => Some(*target_pid),
            EventKind::OomKill { is_target: true, .. } => oom_victim(e),
            _ => None,
        };
        if let Some(pid) = pid {
            self.traced.insert(pid);
        }
    }
}

/// A `sample` event's fields, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct SampleView<'a> {
    pub processes: &'a [ProcessSample],
    pub cgroup: Option<&'a CgroupSample>,
    pub gpus: &'a [GpuSample],
    pub system: &'a SystemSample,
}

pub(crate) fn sample_of(e: &Event) -> Option<SampleView<'_>> {
    match &e.kind {
        EventKind::Sample { processes, cgroup, gpus, system } => Some(SampleView { processes, cgroup: cgroup.as_ref(), gpus, system }),
        _ => None,
    }
}

/// Order of events with the same timestamp, by kind, as they happen in the kernel: the
/// OOM killer sends SIGKILL, then marks the victim; the exit comes next, then the
/// resets of the sockets it closed. Makes the order independent of the slice's.
pub(crate) fn tie_rank(kind: &str) -> u8 {
    match kind {
        "trace_start" => 0,
        "signal" => 6,
        "oom_kill" => 7,
        "signal_deliver" => 8,
        "exit" => 9,
        "tcp_state" => 10,
        "tcp_reset" => 11,
        "trace_end" => 20,
        _ => 5,
    }
}

/// Sort key of a chain link: time, then the same tie-break as the trace order.
pub(crate) fn link_key(l: &Link) -> (u64, u8, usize) {
    (l.ts_ns, tie_rank(&l.kind), l.index)
}

/// The victim of an `oom_kill`: its pid, else its thread id (the pid of a main thread)
/// when the capture could not resolve the process.
pub(crate) fn oom_victim(e: &Event) -> Option<u32> {
    match &e.kind {
        EventKind::OomKill { victim_pid: Some(v), .. } => Some(*v),
        EventKind::OomKill { victim_pid: None, victim_tid, .. } if *victim_tid != 0 => Some(*victim_tid),
        _ => None,
    }
}
