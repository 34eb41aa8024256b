//! Chrome trace-event JSON (the object format) that ui.perfetto.dev and chrome://tracing
//! open: process and thread names, memory counters, instants for signals, OOM kills,
//! exits and resets, slices for mapped files, and flow arrows along each verdict's chain.
//!
//! Times are microseconds since the first event. Tracks are the real processes and
//! threads, with two exceptions: a reset attributed to a process goes on that process's
//! main thread (the thread in the record is whatever task was current in softirq), and a
//! file mapping that would overlap another slice of its thread without nesting (which
//! both viewers reject) goes on an extra "file mappings" track of the same process.
//!
//! Flows bind to slices, not to instants, in both viewers: each chain link gets a 1 µs
//! slice (`cat: "verdict"`) at its time on its thread, on the whole-microsecond grid
//! like the mapping slices so that their nesting survives the viewers' float parsing.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    diagnose::Verdict,
    event::{Event, EventKind},
    export::report::label,
};

/// Tids of the extra tracks for overlapping file mappings; above any pid_max.
const LANE_TID_BASE: u32 = 4_000_000_000;

/// A whole trace file.
#[derive(Clone, Debug, Serialize)]
pub struct ChromeTrace {
    #[serde(rename = "traceEvents")]
    pub trace_events: Vec<TraceEvent>,
    #[serde(rename = "displayTimeUnit")]
    pub display_time_unit: &'static str,
    /// Free-form facts shown in the viewers' trace info (generator, dropped events).
    #[serde(rename = "otherData")]
    pub other_data: BTreeMap<String, Value>,
}

/// One trace event. Fields absent from a phase are left out.
#[derive(Clone, Debug, Serialize)]
pub struct TraceEvent {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cat: Option<&'static str>,
    pub ph: &'static str,
    /// Microseconds since the first event.
    pub ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    pub pid: u32,
    pub tid: u32,
    /// Instant scope: `g` global, `p` process, `t` thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Flow binding point: `e` binds the flow end to the enclosing slice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bp: Option<&'static str>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub args: Value,
}

impl TraceEvent {
    fn new(ph: &'static str, name: impl Into<String>, ts: f64, (pid, tid): (u32, u32)) -> TraceEvent {
        TraceEvent {
            name: name.into(),
            cat: None,
            ph,
            ts,
            dur: None,
            pid,
            tid,
            s: None,
            id: None,
            bp: None,
            args: Value::Null,
        }
    }

    fn args(mut self, args: Value) -> TraceEvent {
        self.args = args;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PerfettoError {
    #[error("cannot write the Perfetto trace {}: {error}; check that its folder exists and is writable", path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

/// Writes `trace` to `path` as one JSON object.
pub fn write_file(path: &Path, trace: &ChromeTrace) -> Result<(), PerfettoError> {
    let err = |error| PerfettoError::Write { path: path.to_path_buf(), error };
    let file = std::fs::File::create(path).map_err(err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    serde_json::to_writer(&mut out, trace).map_err(|e| err(std::io::Error::other(e)))?;
    out.write_all(b"\n").map_err(err)?;
    out.flush().map_err(err)
}

/// Builds the Perfetto trace of `events` with the flows of `verdicts` and writes it to
/// `path`; `timeline_dropped` is how many events a live session left out of memory.
pub fn write(path: &Path, events: &[Event], verdicts: &[Verdict], timeline_dropped: Option<u64>) -> Result<(), PerfettoError> {
    let mut trace = build(events, verdicts);
    if let Some(n) = timeline_dropped {
        trace.other_data.insert("timeline_dropped_events".into(), n.into());
    }
    write_file(path, &trace)
}

/// The process/thread track an event belongs on.
fn track(ev: &Event) -> (u32, u32) {
    match &ev.kind {
        EventKind::TcpReset { context_pid, .. } if *context_pid != ev.pid => (ev.pid, ev.pid),
        _ => (ev.pid, ev.tid),
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// A slice before placement on a track.
struct Slice {
    pid: u32,
    tid: u32,
    /// Whole microseconds since the first event.
    start_us: u64,
    end_us: u64,
    /// Chain markers must stay on their thread (flows bind there).
    fixed: bool,
    ev: TraceEvent,
}

/// An mmap of a file not yet unmapped.
struct OpenMapping {
    index: usize,
    start: u64,
}

/// Builds the trace. `events` in time order; `verdicts` from diagnosis over the same
/// slice (their links index into it).
pub fn build(events: &[Event], verdicts: &[Verdict]) -> ChromeTrace {
    let t0 = events.iter().map(|e| e.ts_ns).min().unwrap_or(0);
    let t_end = events.iter().map(|e| e.ts_ns).max().unwrap_or(0);
    let clock = Clock { t0 };

    let mut out: Vec<TraceEvent> = Vec::new();
    let mut names = Names::default();
    let mut rss_members: HashMap<u32, BTreeMap<String, i64>> = HashMap::new();
    let mut mappings = Mappings::new(events, clock, t_end);
    for (i, ev) in events.iter().enumerate() {
        names.learn(ev);
        let ts = clock.us(ev.ts_ns);
        counters(ev, ts, &mut rss_members, &mut out);
        out.extend(instant(ev, ts));
        mappings.follow(i, ev);
    }
    let mut slices = mappings.finish();
    let flows = chains(events, verdicts, clock, &mut slices);

    let lane_names = place_slices(&mut slices);
    let mut body: Vec<(u8, f64, TraceEvent)> = Vec::with_capacity(out.len() + slices.len() + flows.len());
    for s in slices {
        body.push((0, -s.ev.dur.unwrap_or(0.0), s.ev));
    }
    for te in out {
        body.push((1, 0.0, te));
    }
    for te in flows {
        body.push((2, 0.0, te));
    }
    // Time order; at one time, slices (outer first), then the rest, then flows.
    body.sort_by(|a, b| a.2.ts.total_cmp(&b.2.ts).then(a.0.cmp(&b.0)).then(a.1.total_cmp(&b.1)));

    let mut trace_events = names.metadata(body.iter().map(|(_, _, te)| (te.pid, te.tid)), &lane_names);
    trace_events.extend(body.into_iter().map(|(_, _, te)| te));
    let mut other_data = BTreeMap::new();
    other_data.insert("generator".into(), json!(format!("tracer {}", env!("CARGO_PKG_VERSION"))));
    other_data.insert("events".into(), json!(events.len()));
    other_data.insert("first_event_ts_ns".into(), json!(t0));
    ChromeTrace { trace_events, display_time_unit: "ms", other_data }
}


/// Microseconds since the first event, as the trace's timestamps.
#[derive(Clone, Copy)]
struct Clock {
    t0: u64,
}

impl Clock {
    fn us(&self, ts: u64) -> f64 {
        ts.saturating_sub(self.t0) as f64 / 1000.0
    }

    fn whole_us(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.t0) / 1000
    }
}

/// Counter tracks: RSS, memory cgroup, GPUs and MemAvailable from samples; RSS members
/// and swap from rss events.
fn counters(ev: &Event, ts: f64, rss_members: &mut HashMap<u32, BTreeMap<String, i64>>, out: &mut Vec<TraceEvent>) {
    match &ev.kind {
        EventKind::Sample { processes, cgroup, gpus, system } => {
            for p in processes {
                out.push(TraceEvent::new("C", "RSS", ts, (p.pid, p.pid)).args(json!({ "bytes": p.rss_bytes })));
            }
            let at = (ev.pid, ev.pid);
            if let Some(c) = cgroup {
                out.push(TraceEvent::new("C", "memcg usage", ts, at).args(json!({ "bytes": c.usage_bytes })));
                if let Some(limit) = c.limit_bytes {
                    out.push(TraceEvent::new("C", "memcg limit", ts, at).args(json!({ "bytes": limit })));
                }
            }
            for g in gpus {
                out.push(
                    TraceEvent::new("C", format!("GPU {} used", g.index), ts, at)
                        .args(json!({ "bytes": g.used_bytes })),
                );
                if let Some(p) = g.process_bytes {
                    out.push(
                        TraceEvent::new("C", format!("GPU {} process memory", g.index), ts, at)
                            .args(json!({ "bytes": p })),
                    );
                }
            }
            out.push(
                TraceEvent::new("C", "MemAvailable", ts, at).args(json!({ "bytes": system.mem_available_bytes })),
            );
        }
        EventKind::Rss { member, bytes } => {
            let at = (ev.pid, ev.pid);
            if member.contains("SWAP") {
                out.push(TraceEvent::new("C", "swap", ts, at).args(json!({ "bytes": bytes })));
            } else {
                // Every resident member in each sample: the viewers stack them into RSS.
                let members = rss_members.entry(ev.pid).or_default();
                members.insert(member.clone(), *bytes);
                out.push(TraceEvent::new("C", "rss_stat", ts, at).args(json!(members)));
            }
        }
        _ => {}
    }
}

/// The instant marker of a signal, an OOM kill, an exit, an exec, a fork, a reset or a
/// loss.
fn instant(ev: &Event, ts: f64) -> Option<TraceEvent> {
    match &ev.kind {
        EventKind::Signal {
            target_pid,
            target_tid,
            target_comm,
            signal,
            signal_name,
            si_code_name,
            result,
            group,
            ..
        } => {
            let mut te =
                TraceEvent::new("i", format!("{signal_name} ({si_code_name}) → pid {target_pid}"), ts, track(ev))
                    .args(json!({
                        "signal": signal, "signal_name": signal_name, "si_code": si_code_name,
                        "target_pid": target_pid, "target_tid": target_tid, "target_comm": target_comm,
                        "result": result, "group": group, "sender_comm": ev.comm,
                    }));
            te.s = Some("p");
            Some(te)
        }
        EventKind::OomKill {
            victim_pid,
            victim_tid,
            victim_comm,
            is_target,
            total_vm_kb,
            anon_rss_kb,
            file_rss_kb,
            shmem_rss_kb,
            oom_score_adj,
            ..
        } => {
            let victim = victim_pid.unwrap_or(*victim_tid);
            let mut te = TraceEvent::new("i", format!("OOM kill: {victim_comm} (pid {victim})"), ts, track(ev))
                .args(json!({
                    "victim_pid": victim_pid, "victim_tid": victim_tid, "victim_comm": victim_comm,
                    "is_target": is_target, "total_vm_kb": total_vm_kb, "anon_rss_kb": anon_rss_kb,
                    "file_rss_kb": file_rss_kb, "shmem_rss_kb": shmem_rss_kb,
                    "oom_score_adj": oom_score_adj, "killer_pid": ev.pid, "killer_comm": ev.comm,
                }));
            te.s = Some("g");
            Some(te)
        }
        EventKind::Exit { group_dead: true, exit_code, signal, signal_name, core_dumped, source } => {
            let name = match (signal_name, exit_code) {
                (Some(s), _) => format!("exit: killed by {s}"),
                (None, Some(c)) => format!("exit {c}"),
                (None, None) => "exit".into(),
            };
            let mut te = TraceEvent::new("i", name, ts, track(ev)).args(json!({
                "exit_code": exit_code, "signal": signal, "signal_name": signal_name,
                "core_dumped": core_dumped, "source": source,
            }));
            te.s = Some("p");
            Some(te)
        }
        EventKind::Exec { filename, old_pid, argv, argv_cut } => {
            let mut te = TraceEvent::new("i", format!("exec {}", basename(filename)), ts, track(ev))
                .args(json!({ "filename": filename, "old_pid": old_pid, "argv": argv, "argv_cut": argv_cut }));
            te.s = Some("p");
            Some(te)
        }
        EventKind::Fork { child_pid, child_comm, thread: false, traced, .. } => {
            let mut te = TraceEvent::new("i", format!("fork → pid {child_pid}"), ts, track(ev))
                .args(json!({ "child_pid": child_pid, "child_comm": child_comm, "traced": traced }));
            te.s = Some("p");
            Some(te)
        }
        EventKind::TcpReset {
            direction,
            state,
            reason,
            saddr,
            daddr,
            skaddr,
            attributed_by,
            context_pid,
            context_comm,
        } => {
            let what = reason.as_deref().or(state.as_deref()).unwrap_or("no reason");
            let mut te =
                TraceEvent::new("i", format!("RST {} ({what})", label(direction)), ts, track(ev)).args(json!({
                    "direction": direction, "reason": reason, "state": state,
                    "saddr": saddr, "daddr": daddr, "skaddr": hex(*skaddr),
                    "attributed_by": attributed_by, "context_pid": context_pid, "context_comm": context_comm,
                }));
            te.s = Some(if attributed_by.is_some() { "p" } else { "g" });
            Some(te)
        }
        EventKind::Restart { old_pid, new_pid, gap_ns, argv, parent_pid, parent_comm } => {
            let mut te = TraceEvent::new("i", format!("restart: pid {old_pid} → {new_pid}"), ts, track(ev)).args(json!({
                "old_pid": old_pid, "new_pid": new_pid, "gap_ns": gap_ns, "argv": argv,
                "parent_pid": parent_pid, "parent_comm": parent_comm,
            }));
            te.s = Some("g");
            Some(te)
        }
        EventKind::MemoryStall { scope, name, stalled, stall_us, window_us, total_us } => {
            let mut te = TraceEvent::new("i", format!("memory stall ({name})"), ts, track(ev)).args(json!({
                "scope": scope, "name": name, "stalled": stalled, "stall_us": stall_us,
                "window_us": window_us, "total_us": total_us,
            }));
            te.s = Some("g");
            Some(te)
        }
        EventKind::Lost { probe, count, total } => {
            let mut te = TraceEvent::new("i", format!("lost {count} ({probe})"), ts, track(ev))
                .args(json!({ "probe": probe, "count": count, "total": total }));
            te.s = Some("g");
            Some(te)
        }
        _ => None,
    }
}

/// Slices for file mappings: from the mmap to the munmap that covers its start, or the
/// process's exit or exec, or the end of the trace.
struct Mappings<'e> {
    events: &'e [Event],
    clock: Clock,
    t_end: u64,
    /// Per process, by start address (one address can be mapped again before an unmap).
    open: HashMap<u32, BTreeMap<u64, Vec<OpenMapping>>>,
    slices: Vec<Slice>,
}

impl<'e> Mappings<'e> {
    fn new(events: &'e [Event], clock: Clock, t_end: u64) -> Mappings<'e> {
        Mappings { events, clock, t_end, open: HashMap::new(), slices: Vec::new() }
    }

    fn follow(&mut self, i: usize, ev: &Event) {
        match &ev.kind {
            EventKind::Mmap { path: Some(_), error: None, result, .. } => {
                self.open.entry(ev.pid).or_default().entry(*result).or_default().push(OpenMapping { index: i, start: *result });
            }
            EventKind::Munmap { addr, len, error: None, .. } => {
                if let Some(by_start) = self.open.get_mut(&ev.pid) {
                    let starts: Vec<u64> = by_start.range(*addr..addr.saturating_add(*len)).map(|(&a, _)| a).collect();
                    let closed: Vec<OpenMapping> =
                        starts.into_iter().flat_map(|start| by_start.remove(&start).unwrap_or_default()).collect();
                    for m in closed {
                        self.close(m, ev.ts_ns);
                    }
                }
            }
            EventKind::Exit { group_dead: true, .. } | EventKind::Exec { .. } => {
                for m in self.open.remove(&ev.pid).unwrap_or_default().into_values().flatten() {
                    self.close(m, ev.ts_ns);
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, m: OpenMapping, end_ns: u64) {
        let ev = &self.events[m.index];
        let EventKind::Mmap { path: Some(path), len, prot, flags, offset, fd, .. } = &ev.kind else {
            return;
        };
        let (start_us, end_us) = (self.clock.whole_us(ev.ts_ns), self.clock.whole_us(end_ns));
        let mut te = TraceEvent::new("X", basename(path), start_us as f64, track(ev)).args(json!({
            "path": path,
            "bytes": len,
            "addr": hex(m.start),
            "prot": prot,
            "flags": flags,
            "offset": offset,
            "fd": fd,
            "unmapped": end_ns < self.t_end,
        }));
        te.cat = Some("mmap");
        te.dur = Some(end_us.saturating_sub(start_us) as f64);
        self.slices.push(Slice { pid: ev.pid, tid: ev.tid, start_us, end_us, fixed: false, ev: te });
    }

    /// The slices, with mappings still in place closed at the end of the trace.
    fn finish(mut self) -> Vec<Slice> {
        let mut still_open: Vec<OpenMapping> =
            std::mem::take(&mut self.open).into_values().flat_map(|m| m.into_values().flatten()).collect();
        still_open.sort_by_key(|m| m.index);
        for m in still_open {
            self.close(m, self.t_end);
        }
        self.slices
    }
}

/// Each verdict's chain: a marker slice per link (into `slices`), and the flow arrows
/// through them.
fn chains(events: &[Event], verdicts: &[Verdict], clock: Clock, slices: &mut Vec<Slice>) -> Vec<TraceEvent> {
    let mut markers: BTreeSet<(u32, u32, u64)> = BTreeSet::new();
    let mut flows: Vec<TraceEvent> = Vec::new();
    for (vi, v) in verdicts.iter().enumerate() {
        let id = vi as u64 + 1;
        let flow_name = format!("verdict {id}: {}", label(&v.cause));
        // Flow points in chain order; consecutive links on one marker are one point.
        let mut points: Vec<(u32, u32, u64)> = Vec::new();
        for link in &v.chain {
            let at = link_track(events, v, link.index, link.ts_ns, &link.kind);
            let start_us = clock.whole_us(link.ts_ns);
            if markers.insert((at.0, at.1, start_us)) {
                let mut te = TraceEvent::new("X", format!("{}: {}", link.kind, link.what), start_us as f64, at)
                    .args(json!({ "verdict": id, "cause": label(&v.cause), "what": link.what, "ts_ns": link.ts_ns }));
                te.cat = Some("verdict");
                te.dur = Some(1.0);
                slices.push(Slice { pid: at.0, tid: at.1, start_us, end_us: start_us + 1, fixed: true, ev: te });
            }
            if points.last() != Some(&(at.0, at.1, start_us)) {
                points.push((at.0, at.1, start_us));
            }
        }
        if points.len() < 2 {
            continue;
        }
        for (k, &(pid, tid, start_us)) in points.iter().enumerate() {
            let ph = match k {
                0 => "s",
                _ if k + 1 == points.len() => "f",
                _ => "t",
            };
            let mut te = TraceEvent::new(ph, flow_name.clone(), start_us as f64, (pid, tid));
            te.cat = Some("verdict");
            te.id = Some(id);
            if ph == "f" {
                te.bp = Some("e");
            }
            flows.push(te);
        }
    }
    flows
}

/// The track of a chain link: its event's, else the verdict's process.
fn link_track(events: &[Event], v: &Verdict, index: usize, ts_ns: u64, kind: &str) -> (u32, u32) {
    let matches = |e: &Event| e.ts_ns == ts_ns && e.kind_name() == kind;
    if let Some(e) = events.get(index).filter(|e| matches(e)) {
        return track(e);
    }
    if let Some(e) = events.iter().find(|e| matches(e)) {
        return track(e);
    }
    let pid = v.pid.unwrap_or(0);
    (pid, pid)
}

/// Puts each slice on its thread, or on an extra track of its process when it would
/// overlap a slice there without nesting. Returns the names of the extra tracks.
fn place_slices(slices: &mut [Slice]) -> BTreeMap<(u32, u32), String> {
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&slices[a], &slices[b]);
        (a.pid, a.tid, a.start_us, std::cmp::Reverse(a.end_us), !a.fixed).cmp(&(
            b.pid,
            b.tid,
            b.start_us,
            std::cmp::Reverse(b.end_us),
            !b.fixed,
        ))
    });
    let mut lanes: HashMap<(u32, u32), Vec<Vec<u64>>> = HashMap::new();
    let mut lane_tids: BTreeMap<(u32, u32, usize), u32> = BTreeMap::new();
    let mut names = BTreeMap::new();
    for i in order {
        let s = &mut slices[i];
        let stacks = lanes.entry((s.pid, s.tid)).or_insert_with(|| vec![Vec::new()]);
        let mut placed = None;
        for (k, stack) in stacks.iter_mut().enumerate() {
            while stack.last().is_some_and(|&end| end <= s.start_us) {
                stack.pop();
            }
            if s.fixed || stack.last().is_none_or(|&end| s.end_us <= end) {
                stack.push(s.end_us);
                placed = Some(k);
                break;
            }
        }
        let k = placed.unwrap_or_else(|| {
            stacks.push(vec![s.end_us]);
            stacks.len() - 1
        });
        if k > 0 {
            let next = LANE_TID_BASE + lane_tids.len() as u32;
            let tid = *lane_tids.entry((s.pid, s.tid, k)).or_insert(next);
            names.insert((s.pid, tid), format!("file mappings of tid {} ({k})", s.tid));
            if let Value::Object(args) = &mut s.ev.args {
                args.insert("tid".into(), json!(s.tid));
            }
            s.ev.tid = tid;
        }
    }
    names
}

/// Process and thread names learned from the events.
#[derive(Default)]
struct Names {
    processes: HashMap<u32, String>,
    /// Names from a main thread (pid == tid) win over those of other threads.
    main_thread: HashMap<u32, bool>,
    threads: HashMap<(u32, u32), String>,
}

impl Names {
    fn set_process(&mut self, pid: u32, name: &str, from_main: bool) {
        if name.is_empty() {
            return;
        }
        let had_main = self.main_thread.get(&pid).copied().unwrap_or(false);
        if from_main || !had_main {
            self.processes.insert(pid, name.to_string());
            self.main_thread.insert(pid, from_main || had_main);
        }
    }

    fn set_thread_if_unknown(&mut self, pid: u32, tid: u32, name: &str) {
        if !name.is_empty() {
            self.threads.entry((pid, tid)).or_insert_with(|| name.to_string());
        }
    }

    fn learn(&mut self, ev: &Event) {
        match &ev.kind {
            // The comm of an attributed reset is the task that happened to be current.
            EventKind::TcpReset { context_pid, .. } if *context_pid != ev.pid => {}
            _ => {
                self.set_process(ev.pid, &ev.comm, ev.pid == ev.tid);
                if !ev.comm.is_empty() {
                    self.threads.insert((ev.pid, ev.tid), ev.comm.clone());
                }
            }
        }
        match &ev.kind {
            EventKind::Fork { child_pid, child_comm, thread: true, .. } => {
                self.set_thread_if_unknown(ev.pid, *child_pid, child_comm)
            }
            EventKind::Fork { child_pid, child_comm, thread: false, .. } => {
                self.set_process(*child_pid, child_comm, false)
            }
            EventKind::Signal { target_pid, target_tid, target_comm, .. } => {
                self.set_process(*target_pid, target_comm, false);
                self.set_thread_if_unknown(*target_pid, *target_tid, target_comm);
            }
            EventKind::Sample { processes, .. } => {
                for p in processes {
                    self.set_process(p.pid, &p.comm, false);
                }
            }
            _ => {}
        }
    }

    /// `M` events naming every process and thread that `used` mentions.
    fn metadata(
        &self,
        used: impl Iterator<Item = (u32, u32)>,
        lanes: &BTreeMap<(u32, u32), String>,
    ) -> Vec<TraceEvent> {
        let used: BTreeSet<(u32, u32)> = used.collect();
        let pids: BTreeSet<u32> = used.iter().map(|&(p, _)| p).collect();
        let mut out = Vec::new();
        for pid in pids {
            let name = self.processes.get(&pid).cloned().unwrap_or_else(|| format!("pid {pid}"));
            out.push(TraceEvent::new("M", "process_name", 0.0, (pid, pid)).args(json!({ "name": name })));
        }
        for (pid, tid) in used {
            let name = lanes
                .get(&(pid, tid))
                .or_else(|| self.threads.get(&(pid, tid)))
                .cloned()
                .unwrap_or_else(|| format!("tid {tid}"));
            out.push(TraceEvent::new("M", "thread_name", 0.0, (pid, tid)).args(json!({ "name": name })));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Cause, Confidence, Link};

    fn ev(ts: u64, pid: u32, tid: u32, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid, tid, comm: format!("t{tid}"), kind }
    }

    fn mmap(ts: u64, tid: u32, path: &str, addr: u64) -> Event {
        ev(
            ts,
            1,
            tid,
            EventKind::Mmap {
                addr: 0,
                len: 1 << 20,
                prot: "r--".into(),
                flags: "PRIVATE".into(),
                fd: 3,
                offset: 0,
                result: addr,
                error: None,
                path: Some(path.into()),
                duration_ns: 1, file: None,
            },
        )
    }

    fn munmap(ts: u64, addr: u64) -> Event {
        ev(ts, 1, 1, EventKind::Munmap { addr, len: 1 << 20, error: None, duration_ns: 1 })
    }

    #[test]
    fn overlapping_mappings_of_one_thread_get_an_extra_track() {
        // a: [0, 30 ms], b: [10 ms, 40 ms]: they overlap without nesting.
        let events = vec![
            mmap(0, 1, "/m/a", 0x1000_0000),
            mmap(10_000_000, 1, "/m/b", 0x2000_0000),
            munmap(30_000_000, 0x1000_0000),
            munmap(40_000_000, 0x2000_0000),
        ];
        let t = build(&events, &[]);
        let x: Vec<&TraceEvent> = t.trace_events.iter().filter(|e| e.ph == "X").collect();
        assert_eq!(x.len(), 2);
        assert_eq!((x[0].name.as_str(), x[0].tid, x[0].dur), ("a", 1, Some(30_000.0)));
        assert_eq!((x[1].name.as_str(), x[1].tid, x[1].dur), ("b", LANE_TID_BASE, Some(30_000.0)));
        assert!(t
            .trace_events
            .iter()
            .any(|e| e.ph == "M" && e.tid == LANE_TID_BASE && e.args["name"] == "file mappings of tid 1 (1)"));
    }

    #[test]
    fn a_single_link_chain_has_a_marker_and_no_flow() {
        let events = vec![munmap(5_000, 0x1)];
        let v = Verdict {
            cause: Cause::Unexplained,
            summary: "s".into(),
            pid: Some(1),
            comm: None,
            port: None,
            resets: 0,
            first_ns: 5_000,
            last_ns: 5_000,
            chain: vec![Link { index: 0, ts_ns: 5_000, kind: "munmap".into(), what: "w".into() }],
            evidence: vec![],
            confidence: Confidence::Low,
            action: None,
        };
        let t = build(&events, &[v]);
        assert!(t.trace_events.iter().any(|e| e.ph == "X" && e.cat == Some("verdict")));
        assert!(!t.trace_events.iter().any(|e| matches!(e.ph, "s" | "t" | "f")));
    }
}
