//! The events of a live session kept in memory, for diagnosis, the Perfetto export and
//! the TUI at the end or while tracing. Bounded by design: a burst of a million mmap
//! calls must not grow memory without limit. Past [`Timeline::MEMORY_CALLS_KEPT`] memory
//! calls kept one by one, the rest are counted per process per second
//! (`memory_summary` events, exact counts and bytes: what the diagnosis sums), except
//! mappings of files and failed calls; past [`Timeline::HARD_LIMIT`] events only the
//! ones that end a process or the trace are kept. What was dropped is counted; the
//! JSON-lines file has everything it was asked for.
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
            hard_limit,
            folder: MemoryFolder::new(u64::MAX),
            dropped: BTreeMap::new(),
        }
    }

    /// Keeps a copy of `ev`, or counts it, as the limits say; events arrive in time order.
    pub fn push(&mut self, ev: &Event) {
        for summary in self.folder.due(ev.ts_ns) {
            self.keep(summary);
        }
        if matches!(ev.kind, EventKind::TraceEnd { .. }) {
            let floor = self.events.last().map_or(ev.ts_ns, |e| e.ts_ns);
            for summary in self.folder.drain(floor) {
                self.keep(summary);
            }
        }
        let foldable = self.folder.note(ev);
        if foldable && self.memory_calls >= self.memory_calls_kept {
            self.folder.add(ev);
            return;
        }
        if is_memory_call(ev) {
            self.memory_calls += 1;
        }
        self.keep(ev.clone());
    }

    fn keep(&mut self, ev: Event) {
        if self.events.len() < self.hard_limit || is_essential(&ev) {
            self.events.push(ev);
        } else {
            *self.dropped.entry(ev.kind_name()).or_default() += 1;
        }
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
}
