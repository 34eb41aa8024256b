//! Counting memory calls instead of keeping one event each: a process that maps and
//! unmaps small anonymous buffers thousands of times a second (an allocator, a tokenizer)
//! would otherwise fill the trace and the tracer's memory with lines nobody reads one by
//! one. Per process, the calls of one interval become one `memory_summary` event with
//! exact counts and bytes. What a diagnosis names one by one stays one event each:
//! mappings of files (model loads), calls that failed, calls at or above the size limit,
//! and unmaps of a range a file was mapped at.
//!
//! Summaries come out in time order with the events around them: an interval's summary
//! carries the interval's end as its time and is released before the first event at or
//! after that end ([`MemoryFolder::due`]).
use std::collections::{BTreeMap, HashMap};

use crate::event::{Event, EventKind};

/// One summary per process per interval.
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// The calls of one process in the interval that began at `from_ns`.
#[derive(Clone, Debug)]
struct Bucket {
    from_ns: u64,
    last_ns: u64,
    comm: String,
    mmaps: u64,
    mmap_bytes: u64,
    munmaps: u64,
    munmap_bytes: u64,
    mremaps: u64,
    brks: u64,
    largest_mmap_bytes: u64,
}

impl Bucket {
    fn new(ev: &Event) -> Bucket {
        Bucket {
            from_ns: ev.ts_ns,
            last_ns: ev.ts_ns,
            comm: ev.comm.clone(),
            mmaps: 0,
            mmap_bytes: 0,
            munmaps: 0,
            munmap_bytes: 0,
            mremaps: 0,
            brks: 0,
            largest_mmap_bytes: 0,
        }
    }

    fn end_ns(&self) -> u64 {
        self.from_ns.saturating_add(INTERVAL_NS)
    }

    fn into_event(self, pid: u32, ts_ns: u64, below_bytes: u64) -> Event {
        Event {
            ts_ns,
            pid,
            tid: pid,
            comm: self.comm,
            kind: EventKind::MemorySummary {
                from_ns: self.from_ns,
                mmaps: self.mmaps,
                mmap_bytes: self.mmap_bytes,
                munmaps: self.munmaps,
                munmap_bytes: self.munmap_bytes,
                mremaps: self.mremaps,
                brks: self.brks,
                largest_mmap_bytes: self.largest_mmap_bytes,
                below_bytes,
            },
        }
    }
}

/// Folds memory calls into per-process summaries.
#[derive(Clone, Debug)]
pub struct MemoryFolder {
    /// Calls this size or larger stay one event each.
    below_bytes: u64,
    open: HashMap<u32, Bucket>,
    /// Where each process has files mapped: an unmap there is about the file, not about
    /// anonymous memory, and stays an event.
    file_ranges: HashMap<u32, Vec<(u64, u64)>>,
}

impl MemoryFolder {
    pub fn new(below_bytes: u64) -> MemoryFolder {
        MemoryFolder { below_bytes, open: HashMap::new(), file_ranges: HashMap::new() }
    }

    pub fn below_bytes(&self) -> u64 {
        self.below_bytes
    }

    /// Learns from `ev` what it must (file mappings, the end of a process) and says
    /// whether it may be counted instead of kept.
    fn note(&mut self, ev: &Event) -> bool {
        match &ev.kind {
            EventKind::Mmap { len, error: None, path, fd, result, .. } => {
                if path.is_some() || *fd >= 0 {
                    self.file_ranges.entry(ev.pid).or_default().push((*result, result.saturating_add(*len)));
                    false
                } else {
                    *len < self.below_bytes
                }
            }
            EventKind::Munmap { addr, len, error: None, .. } => {
                let end = addr.saturating_add(*len);
                match self.file_ranges.get_mut(&ev.pid) {
                    Some(ranges) if ranges.iter().any(|&(s, e)| s < end && *addr < e) => {
                        ranges.retain(|&(s, e)| !(s >= *addr && e <= end));
                        false
                    }
                    _ => *len < self.below_bytes,
                }
            }
            EventKind::Mremap { old_addr, old_len, new_len, error: None, .. } => {
                let end = old_addr.saturating_add(*old_len);
                let on_file =
                    self.file_ranges.get(&ev.pid).is_some_and(|r| r.iter().any(|&(s, e)| s < end && *old_addr < e));
                !on_file && (*new_len).max(*old_len) < self.below_bytes
            }
            EventKind::Brk { .. } => true,
            EventKind::Exec { .. } | EventKind::Exit { group_dead: true, .. } => {
                self.file_ranges.remove(&ev.pid);
                false
            }
            _ => false,
        }
    }

    /// Counts `ev`, which [`MemoryFolder::note`] allowed.
    fn add(&mut self, ev: &Event) {
        let b = self.open.entry(ev.pid).or_insert_with(|| Bucket::new(ev));
        b.last_ns = b.last_ns.max(ev.ts_ns);
        match &ev.kind {
            EventKind::Mmap { len, .. } => {
                b.mmaps += 1;
                b.mmap_bytes = b.mmap_bytes.saturating_add(*len);
                b.largest_mmap_bytes = b.largest_mmap_bytes.max(*len);
            }
            EventKind::Munmap { len, .. } => {
                b.munmaps += 1;
                b.munmap_bytes = b.munmap_bytes.saturating_add(*len);
            }
            EventKind::Mremap { .. } => b.mremaps += 1,
            EventKind::Brk { .. } => b.brks += 1,
            _ => {}
        }
    }

    /// One event through the folder: the summaries due before it (release them first),
    /// and whether it was counted (when `may_fold` and [`MemoryFolder::note`] allows it)
    /// rather than to be kept.
    pub fn offer(&mut self, ev: &Event, may_fold: bool) -> (Vec<Event>, bool) {
        let due = self.due(ev.ts_ns);
        let folded = self.note(ev) && may_fold;
        if folded {
            self.add(ev);
        }
        (due, folded)
    }

    /// Summaries of the intervals that ended at or before `ts_ns`, oldest first, each at
    /// its interval's end: release them before an event at `ts_ns`.
    pub fn due(&mut self, ts_ns: u64) -> Vec<Event> {
        if self.open.is_empty() || !self.open.values().any(|b| b.end_ns() <= ts_ns) {
            return Vec::new();
        }
        let ended: BTreeMap<(u64, u32), u32> =
            self.open.iter().filter(|(_, b)| b.end_ns() <= ts_ns).map(|(pid, b)| ((b.end_ns(), *pid), *pid)).collect();
        ended
            .into_iter()
            .filter_map(|((end, _), pid)| self.open.remove(&pid).map(|b| b.into_event(pid, end, self.below_bytes)))
            .collect()
    }

    /// Every open summary, at the end of the trace: each at its last call or at `floor_ns`
    /// (the last event released), whichever is later, so that time order holds.
    pub fn drain(&mut self, floor_ns: u64) -> Vec<Event> {
        let mut open: Vec<(u32, Bucket)> = self.open.drain().collect();
        open.sort_by_key(|(pid, b)| (b.last_ns, *pid));
        let below = self.below_bytes;
        let mut at = floor_ns;
        open.into_iter()
            .map(|(pid, b)| {
                at = at.max(b.last_ns.min(b.end_ns()));
                b.into_event(pid, at, below)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, pid: u32, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid, tid: pid, comm: "alloc".into(), kind }
    }

    fn anon(ts: u64, pid: u32, len: u64) -> Event {
        ev(
            ts,
            pid,
            EventKind::Mmap {
                addr: 0,
                len,
                prot: "rw-".into(),
                flags: "PRIVATE|ANONYMOUS".into(),
                fd: -1,
                offset: 0,
                result: 0x7000_0000,
                error: None,
                path: None,
                duration_ns: 1,
                file: None,
            },
        )
    }

    fn file(ts: u64, pid: u32, at: u64, len: u64) -> Event {
        ev(
            ts,
            pid,
            EventKind::Mmap {
                addr: 0,
                len,
                prot: "r--".into(),
                flags: "PRIVATE".into(),
                fd: 3,
                offset: 0,
                result: at,
                error: None,
                path: Some("/models/nllb/model.safetensors".into()),
                duration_ns: 1,
                file: None,
            },
        )
    }

    fn munmap(ts: u64, pid: u32, addr: u64, len: u64) -> Event {
        ev(ts, pid, EventKind::Munmap { addr, len, error: None, duration_ns: 1 })
    }

    /// Runs events through the folder as the session does; what comes out.
    fn run(f: &mut MemoryFolder, events: &[Event]) -> Vec<Event> {
        let mut out = Vec::new();
        for e in events {
            let (due, folded) = f.offer(e, true);
            out.extend(due);
            if !folded {
                out.push(e.clone());
            }
        }
        let last = out.last().map(|e| e.ts_ns).unwrap_or(0);
        out.extend(f.drain(last));
        out
    }

    #[test]
    fn small_anonymous_calls_become_one_summary_per_interval_with_exact_counts() {
        let mut f = MemoryFolder::new(1 << 20);
        let mut events = Vec::new();
        for i in 0..1000u64 {
            events.push(anon(i * 1_000_000, 7, 64 << 10));
            events.push(munmap(i * 1_000_000 + 500, 7, 0x7000_0000, 64 << 10));
        }
        // 1000 pairs over 1 s: the interval closes at the last one.
        let out = run(&mut f, &events);
        let summaries: Vec<_> = out.iter().filter(|e| e.kind_name() == "memory_summary").collect();
        let (mut mmaps, mut bytes, mut munmaps) = (0, 0, 0);
        for s in &summaries {
            if let EventKind::MemorySummary { mmaps: m, mmap_bytes, munmaps: u, .. } = &s.kind {
                mmaps += m;
                bytes += mmap_bytes;
                munmaps += u;
            }
        }
        assert_eq!(out.len(), summaries.len(), "nothing else came out: {out:?}");
        assert_eq!((mmaps, munmaps, bytes), (1000, 1000, 1000 * (64 << 10)));
        assert!(summaries.len() <= 2, "{summaries:?}");
    }

    #[test]
    fn files_failures_and_large_calls_stay_events() {
        let mut f = MemoryFolder::new(1 << 20);
        let mut failed = anon(3, 7, 4096);
        if let EventKind::Mmap { error, .. } = &mut failed.kind {
            *error = Some("ENOMEM".into());
        }
        let events = vec![
            file(1, 7, 0x1000_0000, 8 << 30),
            munmap(2, 7, 0x1000_0000, 4096),
            failed,
            anon(4, 7, 2 << 20),
            anon(5, 7, 4096),
        ];
        let out = run(&mut f, &events);
        let kinds: Vec<_> = out.iter().map(Event::kind_name).collect();
        assert_eq!(kinds, ["mmap", "munmap", "mmap", "mmap", "memory_summary"]);
    }

    #[test]
    fn summaries_keep_time_order_with_other_events() {
        let mut f = MemoryFolder::new(1 << 20);
        let rss = |ts| ev(ts, 8, EventKind::Rss { member: "MM_ANONPAGES".into(), bytes: 1 });
        let events = vec![
            anon(10, 7, 4096),
            anon(20, 9, 4096),
            rss(500_000_000),
            anon(900_000_000, 7, 4096),
            rss(1_000_000_015),
            rss(1_000_000_030),
            anon(1_500_000_000, 7, 4096),
            rss(1_600_000_000),
        ];
        let out = run(&mut f, &events);
        let ts: Vec<u64> = out.iter().map(|e| e.ts_ns).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        // pid 7's first interval [10, 1 s + 10) holds two calls; pid 9's one.
        let by_pid: Vec<(u32, u64, u64)> = out
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::MemorySummary { mmaps, from_ns, .. } => Some((e.pid, mmaps, from_ns)),
                _ => None,
            })
            .collect();
        assert_eq!(by_pid, [(7, 2, 10), (9, 1, 20), (7, 1, 1_500_000_000)]);
    }
}
