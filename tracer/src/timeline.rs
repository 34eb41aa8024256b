//! The events of a live session kept in memory, for diagnosis, the Perfetto export and
//! the TUI at the end or while tracing. Bounded: a burst of a million mmap calls must not
//! grow memory without limit. Past [`Timeline::SOFT_LIMIT`] events the memory syscalls
//! (mmap, munmap, brk, mremap) are no longer kept, except mappings of a file (model
//! loads); past [`Timeline::HARD_LIMIT`] only the events that end a process or the trace
//! are. What was dropped is counted; the JSON-lines file always has everything.
use std::collections::BTreeMap;

use crate::event::{Event, EventKind};

#[derive(Clone, Debug)]
pub struct Timeline {
    events: Vec<Event>,
    soft_limit: usize,
    hard_limit: usize,
    dropped: BTreeMap<&'static str, u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    /// Events kept in full (about 150 bytes each plus strings).
    pub const SOFT_LIMIT: usize = 500_000;
    /// Events kept at all, whatever their kind.
    pub const HARD_LIMIT: usize = 2_000_000;

    pub fn new() -> Timeline {
        Timeline::with_limits(Self::SOFT_LIMIT, Self::HARD_LIMIT)
    }

    pub fn with_limits(soft_limit: usize, hard_limit: usize) -> Timeline {
        Timeline { events: Vec::new(), soft_limit, hard_limit: hard_limit.max(soft_limit), dropped: BTreeMap::new() }
    }

    /// Keeps a copy of `ev` when the limits allow it; events arrive in time order.
    pub fn push(&mut self, ev: &Event) {
        let n = self.events.len();
        let keep = if n < self.soft_limit {
            true
        } else if n < self.hard_limit {
            !is_bulk_memory_syscall(ev)
        } else {
            is_essential(ev)
        };
        if keep {
            self.events.push(ev.clone());
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

/// Memory syscalls come in bursts of millions; a mapping of a file is rare and tells what
/// was loaded, so it stays.
fn is_bulk_memory_syscall(ev: &Event) -> bool {
    match &ev.kind {
        EventKind::Mmap { path, error, .. } => path.is_none() || error.is_some(),
        EventKind::Munmap { .. } | EventKind::Brk { .. } | EventKind::Mremap { .. } => true,
        _ => false,
    }
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

    #[test]
    fn past_the_soft_limit_memory_syscalls_are_dropped_and_counted() {
        let mut t = Timeline::with_limits(3, 10);
        for i in 0..3 {
            t.push(&mmap(i, None));
        }
        t.push(&mmap(3, None));
        t.push(&ev(4, EventKind::Brk { requested: 0, result: 0, duration_ns: 0 }));
        t.push(&mmap(5, Some("/models/aya/model.safetensors")));
        t.push(&rss(6));
        assert_eq!(t.len(), 5);
        assert_eq!(t.dropped(), 2);
        assert_eq!(t.dropped_by_kind().get("mmap"), Some(&1));
        assert_eq!(t.dropped_by_kind().get("brk"), Some(&1));
    }

    #[test]
    fn a_million_mmaps_stay_bounded() {
        let mut t = Timeline::with_limits(1000, 2000);
        for i in 0..1_000_000 {
            t.push(&mmap(i, None));
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.dropped(), 999_000);
    }

    #[test]
    fn past_the_hard_limit_only_essential_events_stay() {
        let mut t = Timeline::with_limits(1, 2);
        t.push(&rss(1));
        t.push(&rss(2));
        t.push(&rss(3));
        t.push(&ev(4, EventKind::TraceEnd { reason: "duration".into(), events: 3, lost: 0, other_resets: Default::default() }));
        assert_eq!(t.len(), 3);
        assert_eq!(t.dropped_by_kind().get("rss"), Some(&1));
        assert_eq!(t.events().last().map(Event::kind_name), Some("trace_end"));
    }
}
