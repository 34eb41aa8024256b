//! The events of a live session kept in memory, for diagnosis, the Perfetto export and
//! the TUI at the end or while tracing. Bounded by design: a burst of a million mmap
//! calls must not grow memory without limit. Past [`Timeline::MEMORY_CALLS_KEPT`] memory
//! calls kept one by one, the rest are counted per process per second
//! (`memory_summary` events, exact counts and bytes: what the diagnosis sums), except
//! mappings of files and failed calls. Routine events (a connection's state changes, the
//! signals processes use as a mechanism) are kept, the newest [`Timeline::ROUTINE_KEPT`],
//! with those near a reset or a death. Past [`Timeline::HARD_LIMIT`] events only the ones
//! that end a process or the trace are kept. What was dropped is counted; the JSON-lines
//! file has everything it was asked for.
use std::collections::BTreeMap;

use crate::{
    event::{Event, EventKind},
    summary::MemoryFolder,
};

#[derive(Clone, Debug)]
pub struct Timeline {
    events: Vec<Event>,
    /// Memory calls kept one event each so far.
    memory_calls: usize,
    memory_calls_kept: usize,
    /// `sample` and `memory_summary` events kept, and how many of them stay at full
    /// resolution (the newest); older ones are thinned.
    periodic: usize,
    periodic_kept: usize,
    /// Routine events kept (see [`is_routine`]) and how many of them stay, the newest.
    routine: usize,
    routine_kept: usize,
    /// The routine count that starts the next pass: half the bound above what the last
    /// pass left (the protected ones can keep that above the bound).
    routine_pass_at: usize,
    /// Passes made so far (each walks the whole timeline).
    routine_passes: usize,
    hard_limit: usize,
    folder: MemoryFolder,
    dropped: BTreeMap<&'static str, u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    /// Memory calls kept one event each (about 300 bytes each with their strings);
    /// later ones are counted.
    pub const MEMORY_CALLS_KEPT: usize = 10_000;
    /// Samples and memory summaries kept at full resolution, the newest (samples come
    /// every 100 ms by default, summaries once a second per busy process). Older ones are
    /// thinned by halves, so a tracer left attached for days keeps a bounded, coarser
    /// past: of two samples the one with more memory in use stays (peaks survive), the
    /// samples either side of an OOM kill always stay (the diagnosis reads the limit from
    /// them), two summaries of a process become one (counts stay exact). All of them
    /// together stay under twice this, a bound reached within the first minute, so the
    /// tracer's memory is flat from then on (at 6,000 it took 20 minutes and 10 MiB).
    pub const PERIODIC_KEPT: usize = 300;
    /// Routine events kept, the newest (about 300 bytes each): a server taking 1,000
    /// connections a second makes 6,000 state changes a second, a Go program thousands of
    /// SIGURG. Older ones are dropped (and counted) in batches, except a socket's close
    /// within [`NEAR_RESET_NS`] of a reset of the same socket and the signals within
    /// [`BEFORE_DEATH_NS`] before their receiver's death: what the diagnosis reads.
    pub const ROUTINE_KEPT: usize = 20_000;
    /// Events kept at all, whatever their kind.
    pub const HARD_LIMIT: usize = 2_000_000;

    pub fn new() -> Timeline {
        Timeline::with_limits(Self::MEMORY_CALLS_KEPT, Self::HARD_LIMIT)
    }

    pub fn with_limits(memory_calls_kept: usize, hard_limit: usize) -> Timeline {
        Timeline {
            events: Vec::new(),
            memory_calls: 0,
            memory_calls_kept,
            periodic: 0,
            periodic_kept: Self::PERIODIC_KEPT,
            routine: 0,
            routine_kept: Self::ROUTINE_KEPT,
            routine_pass_at: Self::ROUTINE_KEPT + Self::ROUTINE_KEPT / 2,
            routine_passes: 0,
            hard_limit,
            folder: MemoryFolder::new(u64::MAX),
            dropped: BTreeMap::new(),
        }
    }

    /// Keeps a copy of `ev`, or counts it, as the limits say; events arrive in time order.
    pub fn push(&mut self, ev: &Event) {
        let (due, folded) = self.folder.offer(ev, self.memory_calls >= self.memory_calls_kept);
        for summary in due {
            self.keep(summary);
        }
        if matches!(ev.kind, EventKind::TraceEnd { .. }) {
            let floor = self.events.last().map_or(ev.ts_ns, |e| e.ts_ns);
            for summary in self.folder.drain(floor) {
                self.keep(summary);
            }
        }
        if folded {
            return;
        }
        if is_memory_call(ev) {
            self.memory_calls += 1;
        }
        self.keep(ev.clone());
    }

    fn keep(&mut self, ev: Event) {
        let periodic = is_periodic(&ev);
        let routine = is_routine(&ev);
        if self.events.len() < self.hard_limit || is_essential(&ev) {
            self.events.push(ev);
        } else {
            *self.dropped.entry(ev.kind_name()).or_default() += 1;
            return;
        }
        if periodic {
            self.periodic += 1;
            if self.periodic > 2 * self.periodic_kept {
                self.thin();
            }
        }
        if routine {
            self.routine += 1;
            // In batches of half the bound: each pass walks the whole timeline.
            if self.routine > self.routine_pass_at {
                self.drop_old_routine();
            }
        }
    }

    /// Drops the oldest routine events down to `routine_kept`, but not the ones the
    /// diagnosis reads (see [`Timeline::ROUTINE_KEPT`]).
    fn drop_old_routine(&mut self) {
        self.routine_passes += 1;
        let routine: Vec<usize> = (0..self.events.len()).filter(|&i| is_routine(&self.events[i])).collect();
        let old = &routine[..routine.len().saturating_sub(self.routine_kept)];
        // (owner, local address) -> reset times; pid -> death times.
        let mut resets: std::collections::HashMap<(u32, &str), Vec<u64>> = std::collections::HashMap::new();
        let mut deaths: std::collections::HashMap<u32, Vec<u64>> = std::collections::HashMap::new();
        for e in &self.events {
            match &e.kind {
                EventKind::TcpReset { saddr, .. } => resets.entry((e.pid, saddr.as_str())).or_default().push(e.ts_ns),
                EventKind::Exit { group_dead: true, .. } => deaths.entry(e.pid).or_default().push(e.ts_ns),
                _ => {}
            }
        }
        let mut drop = vec![false; self.events.len()];
        for &i in old {
            let e = &self.events[i];
            let needed = match &e.kind {
                EventKind::TcpState { saddr, new_state, .. } if new_state == "TCP_CLOSE" => resets
                    .get(&(e.pid, saddr.as_str()))
                    .is_some_and(|t| t.iter().any(|&r| r.abs_diff(e.ts_ns) <= NEAR_RESET_NS)),
                EventKind::Signal { target_pid, .. } => deaths
                    .get(target_pid)
                    .is_some_and(|t| t.iter().any(|&d| d >= e.ts_ns && d - e.ts_ns <= BEFORE_DEATH_NS)),
                _ => false,
            };
            drop[i] = !needed;
        }
        for (e, _) in self.events.iter().zip(&drop).filter(|(_, d)| **d) {
            *self.dropped.entry(e.kind_name()).or_default() += 1;
        }
        self.remove(&drop);
        self.routine = self.events.iter().filter(|e| is_routine(e)).count();
        self.routine_pass_at = self.routine.max(self.routine_kept) + self.routine_kept / 2;
    }

    /// Removes the events whose index is marked in `drop`.
    fn remove(&mut self, drop: &[bool]) {
        let mut marked = drop.iter();
        self.events.retain(|_| !marked.next().copied().unwrap_or(false));
    }

    /// Halves the samples and summaries older than the newest `periodic_kept` (see
    /// [`Timeline::PERIODIC_KEPT`]).
    fn thin(&mut self) {
        let periodic: Vec<usize> = (0..self.events.len()).filter(|&i| is_periodic(&self.events[i])).collect();
        let old = periodic.len().saturating_sub(self.periodic_kept);
        let mut drop = vec![false; self.events.len()];
        let protected = self.samples_around_kills(&periodic);
        // The first of a pair, per (is a sample, pid).
        let mut first_of: std::collections::HashMap<(bool, u32), usize> = std::collections::HashMap::new();
        for &i in &periodic[..old] {
            let key = (matches!(self.events[i].kind, EventKind::Sample { .. }), self.events[i].pid);
            let Some(first) = first_of.remove(&key) else {
                first_of.insert(key, i);
                continue;
            };
            if key.0 {
                let (keep, lose) =
                    if memory_in_use(&self.events[first]) > memory_in_use(&self.events[i]) { (first, i) } else { (i, first) };
                match (protected.contains(&keep), protected.contains(&lose)) {
                    (_, false) => drop[lose] = true,
                    (false, true) => drop[keep] = true,
                    (true, true) => {}
                }
            } else {
                let earlier = self.events[first].kind.clone();
                merge_summaries(&earlier, &mut self.events[i].kind);
                drop[first] = true;
            }
        }
        self.remove(&drop);
        self.periodic = self.events.iter().filter(|e| is_periodic(e)).count();
    }

    /// The samples on either side of each OOM kill: the diagnosis reads the cgroup's
    /// limit and kill counter from them (within seconds of the kill), so thinning never
    /// drops them. Two per kill, and kills are always kept.
    fn samples_around_kills(&self, periodic: &[usize]) -> std::collections::HashSet<usize> {
        let samples: Vec<usize> =
            periodic.iter().copied().filter(|&i| matches!(self.events[i].kind, EventKind::Sample { .. })).collect();
        let mut protected = std::collections::HashSet::new();
        for kill in self.events.iter().filter(|e| matches!(e.kind, EventKind::OomKill { .. })) {
            let after = samples.partition_point(|&i| self.events[i].ts_ns <= kill.ts_ns);
            protected.extend(after.checked_sub(1).map(|b| samples[b]));
            protected.extend(samples.get(after).copied());
        }
        protected
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events not kept, in all.
    pub fn dropped(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Events not kept, per kind.
    pub fn dropped_by_kind(&self) -> &BTreeMap<&'static str, u64> {
        &self.dropped
    }
}

fn is_periodic(ev: &Event) -> bool {
    matches!(ev.kind, EventKind::Sample { .. } | EventKind::MemorySummary { .. })
}

/// What a sample says is in use: the memory cgroup's usage, else the processes' RSS.
fn memory_in_use(ev: &Event) -> u64 {
    match &ev.kind {
        EventKind::Sample { cgroup: Some(c), .. } => c.usage_bytes,
        EventKind::Sample { processes, .. } => processes.iter().map(|p| p.rss_bytes).sum(),
        _ => 0,
    }
}

/// Adds an earlier summary of the same process into a later one.
fn merge_summaries(earlier: &EventKind, later: &mut EventKind) {
    if let (
        EventKind::MemorySummary { from_ns: f0, mmaps: a0, mmap_bytes: b0, munmaps: c0, munmap_bytes: d0, mremaps: e0, brks: g0, largest_mmap_bytes: l0, .. },
        EventKind::MemorySummary { from_ns, mmaps, mmap_bytes, munmaps, munmap_bytes, mremaps, brks, largest_mmap_bytes, .. },
    ) = (earlier, later)
    {
        *from_ns = (*from_ns).min(*f0);
        *mmaps += a0;
        *mmap_bytes = mmap_bytes.saturating_add(*b0);
        *munmaps += c0;
        *munmap_bytes = munmap_bytes.saturating_add(*d0);
        *mremaps += e0;
        *brks += g0;
        *largest_mmap_bytes = (*largest_mmap_bytes).max(*l0);
    }
}

/// How far a socket's close may be from a reset of the same socket and still explain it
/// (the diagnosis pairs a failed connect or an abortive close, both a change to
/// TCP_CLOSE, with a reset within 100 ms).
const NEAR_RESET_NS: u64 = 100_000_000;
/// How long before its receiver's death a routine signal stays kept.
const BEFORE_DEATH_NS: u64 = 1_000_000_000;

/// Events that come by the thousand a second in a healthy service, of which the diagnosis
/// reads only the recent ones and those near a reset or a death: state changes of
/// connections (not of listening sockets, nor a connect's end), and signals used as a mechanism (child exits,
/// timers, SIGUSR1/2, SIGURG, real-time signals), never the ones that end a process.
fn is_routine(ev: &Event) -> bool {
    match &ev.kind {
        // Leaving SYN_SENT marks a port the process connected from, which decides how a
        // later reset of that connection is grouped (by the remote service), at any age.
        EventKind::TcpState { old_state, new_state, .. } => {
            !matches!(old_state.as_str(), "TCP_LISTEN" | "TCP_SYN_SENT") && new_state != "TCP_LISTEN"
        }
        EventKind::Signal { signal, peer: false, .. } => is_mechanism_signal(*signal),
        _ => false,
    }
}

/// SIGUSR1 10, SIGUSR2 12, SIGALRM 14, SIGCHLD 17, SIGCONT 18, SIGURG 23, SIGVTALRM 26,
/// SIGPROF 27, SIGWINCH 28, SIGIO 29, and the real-time signals.
fn is_mechanism_signal(sig: i32) -> bool {
    matches!(sig, 10 | 12 | 14 | 17 | 18 | 23 | 26..=29 | 32..=64)
}

fn is_memory_call(ev: &Event) -> bool {
    matches!(ev.kind, EventKind::Mmap { .. } | EventKind::Munmap { .. } | EventKind::Brk { .. } | EventKind::Mremap { .. })
}

/// What a verdict cannot do without: the start and end of the trace, deaths, kills.
fn is_essential(ev: &Event) -> bool {
    matches!(
        ev.kind,
        EventKind::TraceStart { .. }
            | EventKind::TraceEnd { .. }
            | EventKind::OomKill { .. }
            | EventKind::Exit { group_dead: true, .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid: 1, tid: 1, comm: "x".into(), kind }
    }

    fn mmap(ts: u64, path: Option<&str>) -> Event {
        ev(
            ts,
            EventKind::Mmap {
                addr: 0,
                len: 4096,
                prot: "rw-".into(),
                flags: "PRIVATE".into(),
                fd: -1,
                offset: 0,
                result: 0x1000,
                error: None,
                path: path.map(Into::into),
                duration_ns: 1, file: None,
            },
        )
    }

    fn rss(ts: u64) -> Event {
        ev(ts, EventKind::Rss { member: "MM_ANONPAGES".into(), bytes: 1 })
    }

    fn summaries(t: &Timeline) -> Vec<(u64, u64)> {
        t.events()
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::MemorySummary { mmaps, mmap_bytes, .. } => Some((mmaps, mmap_bytes)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn past_the_limit_memory_calls_are_counted_not_kept() {
        let mut t = Timeline::with_limits(3, 100);
        for i in 0..3 {
            t.push(&mmap(i, None));
        }
        t.push(&mmap(3, None));
        t.push(&ev(4, EventKind::Brk { requested: 0, result: 0, duration_ns: 0 }));
        t.push(&mmap(5, Some("/models/aya/model.safetensors")));
        t.push(&rss(6));
        assert_eq!(t.len(), 5, "{:?}", t.events());
        t.push(&ev(7, EventKind::TraceEnd { reason: "duration".into(), events: 7, lost: 0, other_resets: Default::default(), cut: None }));
        // The two calls past the limit are one summary, before the end.
        assert_eq!(summaries(&t), [(1, 4096)]);
        let kinds: Vec<_> = t.events().iter().map(Event::kind_name).collect();
        assert_eq!(kinds, ["mmap", "mmap", "mmap", "mmap", "rss", "memory_summary", "trace_end"]);
        assert_eq!(t.dropped(), 0);
    }

    #[test]
    fn a_million_mmaps_stay_bounded_and_counted_exactly() {
        let mut t = Timeline::with_limits(1000, 2_000_000);
        // 10^6 calls over 10 s.
        for i in 0..1_000_000u64 {
            t.push(&mmap(i * 10_000, None));
        }
        t.push(&ev(10_000_000_000, EventKind::TraceEnd { reason: "duration".into(), events: 0, lost: 0, other_resets: Default::default(), cut: None }));
        let counted: u64 = summaries(&t).iter().map(|s| s.0).sum();
        assert_eq!(counted + 1000, 1_000_000);
        assert!(t.len() < 1100, "{}", t.len());
        let ts: Vec<u64> = t.events().iter().map(|e| e.ts_ns).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }

    fn sample(ts: u64, usage: u64) -> Event {
        ev(
            ts,
            EventKind::Sample {
                processes: vec![],
                cgroup: Some(crate::event::CgroupSample {
                    path: "/sys/fs/cgroup/svc".into(),
                    version: 2,
                    usage_bytes: usage,
                    limit_bytes: None,
                    peak_bytes: None,
                    oom_kills: None,
                    members: vec![], pressure: None,
                }),
                gpus: vec![],
                system: crate::event::SystemSample {
                    mem_total_bytes: 0,
                    mem_available_bytes: 0,
                    psi_memory_some_avg10: None,
                    psi_memory_full_avg10: None,
                },
            },
        )
    }

    #[test]
    fn a_day_of_samples_stays_bounded_keeps_its_peak_and_the_last_half_minute_in_full() {
        let mut t = Timeline::new();
        let n = 864_000u64; // a day at 100 ms
        for i in 0..n {
            // A peak at one moment early in the day.
            let usage = if i == 1234 { 9 << 30 } else { (1 << 30) + (i % 7) * 4096 };
            t.push(&sample(i * 100_000_000, usage));
        }
        assert!(t.len() <= 2 * Timeline::PERIODIC_KEPT, "{} samples kept", t.len());
        let peak = t.events().iter().map(memory_in_use).max();
        assert_eq!(peak, Some(9 << 30), "the peak survives thinning");
        // The last PERIODIC_KEPT samples are all there, 100 ms apart.
        let ts: Vec<u64> = t.events().iter().map(|e| e.ts_ns).collect();
        let recent = &ts[ts.len() - Timeline::PERIODIC_KEPT..];
        assert!(recent.windows(2).all(|w| w[1] - w[0] == 100_000_000));
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_samples_either_side_of_an_old_kill_survive_an_hour_of_thinning() {
        let mut t = Timeline::new();
        let kill_ts = 600 * 1_000_000_000 + 50_000_000; // at 10 min, between two samples
        for i in 0..36_000u64 {
            let ts = i * 100_000_000;
            // Memory falls at the kill: thinning by peaks alone would keep neither neighbour.
            let usage = if ts < kill_ts { 1 << 30 } else { 2 << 30 };
            t.push(&sample(ts, usage + (i % 3) * 4096));
            if ts < kill_ts && ts + 100_000_000 > kill_ts {
                t.push(&ev(
                    kill_ts,
                    crate::event::testkit::oom_kill_kind(Some(7), "svc"),
                ));
            }
        }
        assert!(t.len() <= 2 * Timeline::PERIODIC_KEPT + 3, "{} kept", t.len());
        let ts: Vec<u64> = t.events().iter().filter(|e| matches!(e.kind, EventKind::Sample { .. })).map(|e| e.ts_ns).collect();
        assert!(ts.contains(&(kill_ts - 50_000_000)), "the sample before the kill is gone");
        assert!(ts.contains(&(kill_ts + 50_000_000)), "the sample after the kill is gone");
    }

    #[test]
    fn thinned_summaries_keep_their_counts() {
        let mut t = Timeline::with_limits(0, Timeline::HARD_LIMIT);
        t.periodic_kept = 10;
        // 100 s of one mmap every 10 ms: one summary a second.
        for i in 0..10_000u64 {
            t.push(&mmap(i * 10_000_000, None));
        }
        t.push(&ev(100_000_000_000, EventKind::TraceEnd { reason: "duration".into(), events: 0, lost: 0, other_resets: Default::default(), cut: None }));
        let counted: u64 = summaries(&t).iter().map(|s| s.0).sum();
        assert_eq!(counted, 10_000);
        assert!(summaries(&t).len() <= 20, "{}", summaries(&t).len());
    }

    #[test]
    fn past_the_hard_limit_only_essential_events_stay() {
        let mut t = Timeline::with_limits(1, 2);
        t.push(&rss(1));
        t.push(&rss(2));
        t.push(&rss(3));
        t.push(&ev(4, EventKind::TraceEnd { reason: "duration".into(), events: 3, lost: 0, other_resets: Default::default(), cut: None }));
        assert_eq!(t.len(), 3);
        assert_eq!(t.dropped_by_kind().get("rss"), Some(&1));
        assert_eq!(t.events().last().map(Event::kind_name), Some("trace_end"));
    }

    fn state(ts: u64, pid: u32, port: u16, old: &str, new: &str) -> Event {
        Event {
            pid,
            ..ev(
                ts,
                EventKind::TcpState {
                    old_state: old.into(),
                    new_state: new.into(),
                    saddr: format!("127.0.0.1:{port}"),
                    daddr: "127.0.0.1:8000".into(),
                    skaddr: port as u64,
                },
            )
        }
    }

    fn signal(ts: u64, target: u32, sig: i32) -> Event {
        ev(
            ts,
            EventKind::Signal {
                target_pid: target,
                target_tid: target,
                target_comm: "svc".into(),
                signal: sig,
                signal_name: String::new(),
                si_code: 0,
                si_code_name: "SI_TKILL".into(),
                result: "delivered".into(),
                group: false,
                peer: false,
                sender_parents: None,
            },
        )
    }

    fn reset(ts: u64, pid: u32, port: u16) -> Event {
        Event {
            pid,
            ..ev(
                ts,
                EventKind::TcpReset {
                    direction: crate::event::Direction::Sent,
                    state: None,
                    reason: None,
                    saddr: format!("127.0.0.1:{port}"),
                    daddr: "127.0.0.1:8000".into(),
                    skaddr: port as u64,
                    attributed_by: Some("socket".into()),
                    context_pid: pid,
                    context_comm: "svc".into(),
                },
            )
        }
    }

    fn death(ts: u64, pid: u32, sig: i32) -> Event {
        Event {
            pid,
            ..ev(
                ts,
                EventKind::Exit {
                    group_dead: true,
                    exit_code: None,
                    signal: Some(sig),
                    signal_name: None,
                    core_dumped: false,
                    source: "task_exit_code".into(),
                },
            )
        }
    }

    fn count(t: &Timeline, kind: &str) -> usize {
        t.events().iter().filter(|e| e.kind_name() == kind).count()
    }

    #[test]
    fn a_storm_of_handled_signals_and_connections_stays_bounded_and_counted() {
        let mut t = Timeline::new();
        t.push(&state(0, 7, 8000, "TCP_CLOSE", "TCP_LISTEN"));
        t.push(&signal(1, 7, 15));
        t.push(&state(2, 7, 33_000, "TCP_SYN_SENT", "TCP_ESTABLISHED"));
        let n = 400_000u64;
        for i in 0..n {
            // A SIGUSR1 and a connection's state change every 10 us.
            t.push(&signal(10 + i * 10_000, 7, 10));
            t.push(&state(15 + i * 10_000, 7, 40_000 + (i % 20_000) as u16, "TCP_ESTABLISHED", "TCP_FIN_WAIT1"));
        }
        let bound = Timeline::ROUTINE_KEPT + Timeline::ROUTINE_KEPT / 2;
        assert!(t.len() <= bound + 3, "{} kept", t.len());
        // Exact counts: kept and dropped add up to what came.
        let dropped = t.dropped_by_kind();
        assert_eq!(count(&t, "signal") as u64 + dropped.get("signal").copied().unwrap_or(0), n + 1);
        assert_eq!(count(&t, "tcp_state") as u64 + dropped.get("tcp_state").copied().unwrap_or(0), n + 2);
        // What ends a process and a listening socket are never routine.
        assert_eq!(t.events()[0].kind_name(), "tcp_state", "the listen is gone");
        assert!(matches!(t.events()[1].kind, EventKind::Signal { signal: 15, .. }), "the SIGTERM is gone");
        assert!(matches!(&t.events()[2].kind, EventKind::TcpState { old_state, .. } if old_state == "TCP_SYN_SENT"), "the connect is gone");
        // The newest are all there, in order.
        let last = &t.events()[t.len() - 4..];
        assert_eq!(last.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), [(n - 2) * 10_000 + 10, (n - 2) * 10_000 + 15, (n - 1) * 10_000 + 10, (n - 1) * 10_000 + 15]);
        assert!(t.events().windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }

    #[test]
    fn routine_events_near_a_reset_or_a_death_outlive_the_storm() {
        let mut t = Timeline::new();
        // Early on: a worker gets SIGUSR2 and dies of it 200 ms later; a connection is
        // reset 50 ms after it closed; another one closed long before any reset.
        t.push(&signal(1_000, 9, 12));
        t.push(&state(2_000, 7, 50_001, "TCP_ESTABLISHED", "TCP_CLOSE"));
        t.push(&state(3_000, 7, 50_002, "TCP_ESTABLISHED", "TCP_CLOSE"));
        t.push(&reset(50_002_000, 7, 50_001));
        t.push(&death(200_001_000, 9, 12));
        for i in 0..200_000u64 {
            t.push(&signal(1_000_000_000 + i * 1_000, 7, 17));
        }
        let kept = |f: &dyn Fn(&Event) -> bool| t.events().iter().any(f);
        assert!(kept(&|e| matches!(e.kind, EventKind::Signal { signal: 12, target_pid: 9, .. })), "the signal before the death");
        assert!(kept(&|e| matches!(&e.kind, EventKind::TcpState { saddr, .. } if saddr.ends_with(":50001"))), "the close before the reset");
        assert!(!kept(&|e| matches!(&e.kind, EventKind::TcpState { saddr, .. } if saddr.ends_with(":50002"))), "a close far from any reset is dropped");
        assert_eq!(t.dropped_by_kind().get("tcp_state"), Some(&1));
    }

    #[test]
    fn a_reset_storm_whose_closes_all_stay_is_not_walked_again_at_every_event() {
        let mut t = Timeline::new();
        let n = 300_000u64;
        for i in 0..n {
            // Each connection: established, closed, reset (the close is protected).
            let port = 10_000 + (i % 50_000) as u16;
            let ts = i * 100_000;
            t.push(&state(ts, 7, port, "TCP_ESTABLISHED", "TCP_FIN_WAIT1"));
            t.push(&state(ts + 10, 7, port, "TCP_FIN_WAIT1", "TCP_CLOSE"));
            t.push(&reset(ts + 20, 7, port));
        }
        let closes = t.events().iter().filter(|e| matches!(&e.kind, EventKind::TcpState { new_state, .. } if new_state == "TCP_CLOSE")).count();
        assert_eq!(closes as u64, n, "a close next to its reset was dropped");
        assert_eq!(count(&t, "tcp_reset") as u64, n);
        // Every pass drops or keeps at least half the bound's worth of new routine events.
        let most = (2 * n as usize).div_ceil(Timeline::ROUTINE_KEPT / 2) + 1;
        assert!(t.routine_passes <= most, "{} passes over the timeline for {} routine events", t.routine_passes, 2 * n);
        assert!(t.routine_passes > 0);
    }
}
