//! The session's side of the live view, a [`Sink`]: one batch of events per tick, never
//! waiting (a full channel keeps the batch for the next tick, so capture never blocks on
//! the screen), and the current verdicts at most about once a second.
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::TuiUpdate;
use crate::{
    diagnose::{self, Verdict},
    event::{Event, EventKind},
    sink::{Finishing, Sink, SinkError},
    timeline::Timeline,
};

/// Messages the channel from the session to the TUI holds.
pub const CHANNEL: usize = 64;

/// Memory syscalls and RSS steps: what a burst is made of, and what the view skips first
/// when it falls far behind.
fn is_bulk(ev: &Event) -> bool {
    matches!(
        ev.kind,
        EventKind::Mmap { .. }
            | EventKind::Munmap { .. }
            | EventKind::Brk { .. }
            | EventKind::Mremap { .. }
            | EventKind::Rss { .. }
    )
}

/// What one [`Batcher::flush`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Nothing was waiting.
    Empty,
    /// One batch of this many events went out.
    Sent(usize),
    /// The channel is full: the events wait for the next tick.
    Full(usize),
    /// The TUI is gone: nothing more is kept.
    Closed,
}

/// Events for the TUI, sent as one batch per tick without ever waiting. While the channel
/// is full the events accumulate; past `cap` waiting events the bulk kinds (memory
/// syscalls, RSS steps) are skipped, past twice `cap` everything is, and the TUI is told
/// how many (the trace file has them all).
pub struct Batcher {
    tx: mpsc::Sender<TuiUpdate>,
    pending: Vec<Event>,
    cap: usize,
    /// Events skipped and not reported yet.
    skipped: u64,
    closed: bool,
}

impl Batcher {
    /// Events waiting at most (then bulk kinds are skipped).
    pub const CAP: usize = 250_000;

    pub fn new(tx: mpsc::Sender<TuiUpdate>, cap: usize) -> Batcher {
        Batcher { tx, pending: Vec::new(), cap: cap.max(1), skipped: 0, closed: false }
    }

    pub fn push(&mut self, ev: &Event) {
        if self.closed {
            return;
        }
        let n = self.pending.len();
        if n >= self.cap.saturating_mul(2) || (n >= self.cap && is_bulk(ev)) {
            self.skipped += 1;
            return;
        }
        self.pending.push(ev.clone());
    }

    /// Events waiting for the channel.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Sends what is waiting as one batch if the channel has room; never waits.
    pub fn flush(&mut self) -> Flush {
        if self.closed {
            return Flush::Closed;
        }
        if self.pending.is_empty() {
            return Flush::Empty;
        }
        let n = self.pending.len();
        match self.tx.try_send(TuiUpdate::Events(std::mem::take(&mut self.pending))) {
            Ok(()) => {
                if self.skipped > 0 && self.try_send(TuiUpdate::Notice(skipped_notice(self.skipped))) {
                    self.skipped = 0;
                }
                Flush::Sent(n)
            }
            Err(TrySendError::Full(TuiUpdate::Events(batch))) => {
                self.pending = batch;
                Flush::Full(n)
            }
            Err(TrySendError::Full(_)) => unreachable!("try_send hands back what it was given"),
            Err(TrySendError::Closed(_)) => {
                self.close();
                Flush::Closed
            }
        }
    }

    /// Another update, if the channel has room; false when it did not go.
    pub fn try_send(&mut self, update: TuiUpdate) -> bool {
        match self.tx.try_send(update) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Closed(_)) => {
                self.close();
                false
            }
        }
    }

    /// Sends whatever is waiting, then `update`, waiting for room (the end of a session:
    /// nothing is captured any more). A gone TUI is not an error.
    pub async fn send_rest(&mut self, then: Vec<TuiUpdate>) {
        if self.closed {
            return;
        }
        let mut updates = Vec::new();
        if !self.pending.is_empty() {
            updates.push(TuiUpdate::Events(std::mem::take(&mut self.pending)));
        }
        if self.skipped > 0 {
            updates.push(TuiUpdate::Notice(skipped_notice(self.skipped)));
            self.skipped = 0;
        }
        for u in updates.into_iter().chain(then) {
            if self.tx.send(u).await.is_err() {
                self.close();
                return;
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.pending = Vec::new();
    }
}

fn skipped_notice(n: u64) -> String {
    format!("the view fell behind and skipped {n} events; the trace file has them all")
}

/// When to diagnose the live timeline again: only after new events, at most once per
/// `every`, and never more than a tenth of the time (a diagnosis that took 300 ms waits
/// 3 s before the next).
#[derive(Clone, Debug)]
pub struct VerdictPacer {
    every: Duration,
    next_at: Option<Instant>,
    fresh: bool,
}

impl VerdictPacer {
    pub fn new(every: Duration) -> VerdictPacer {
        VerdictPacer { every, next_at: None, fresh: false }
    }

    pub fn saw_events(&mut self) {
        self.fresh = true;
    }

    pub fn due(&self, now: Instant) -> bool {
        self.fresh && self.next_at.is_none_or(|t| now >= t)
    }

    /// A diagnosis finished at `now` after `cost`; `delivered`: the TUI got it (else the
    /// next one is due as soon as the pace allows, even without new events).
    pub fn done(&mut self, now: Instant, cost: Duration, delivered: bool) {
        self.fresh = !delivered;
        self.next_at = Some(now + self.every.max(cost.saturating_mul(10)));
    }
}

/// The session's side of the live view.
pub struct LiveFeed {
    batcher: Batcher,
    pacer: VerdictPacer,
}

impl LiveFeed {
    /// Live verdicts at most this often.
    pub const VERDICTS_EVERY: Duration = Duration::from_secs(1);

    /// `tx` goes to the TUI.
    pub fn new(tx: mpsc::Sender<TuiUpdate>) -> LiveFeed {
        LiveFeed { batcher: Batcher::new(tx, Batcher::CAP), pacer: VerdictPacer::new(Self::VERDICTS_EVERY) }
    }

    /// The end of the session: the last events, the final verdicts and why it ended. The
    /// screen stays up until the user quits.
    pub async fn end(&mut self, verdicts: Vec<Verdict>, reason: &str) {
        self.batcher.send_rest(vec![TuiUpdate::Verdicts(verdicts), TuiUpdate::Finished { reason: reason.to_string() }]).await;
    }
}

impl Sink for LiveFeed {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.batcher.push(ev);
        self.pacer.saw_events();
        Ok(())
    }

    /// The batch, and the verdicts when due. A closed view is not an error here: the
    /// session hears of it through its stop request, which says whether a key closed it.
    fn tick(&mut self, timeline: &Timeline) -> Result<(), SinkError> {
        self.batcher.flush();
        let started = Instant::now();
        if self.batcher.closed() || !self.pacer.due(started) {
            return Ok(());
        }
        let verdicts = diagnose::diagnose(timeline.events());
        let cost = started.elapsed();
        let delivered = self.batcher.try_send(TuiUpdate::Verdicts(verdicts));
        self.pacer.done(Instant::now(), cost, delivered);
        Ok(())
    }

    fn finish<'a>(&'a mut self, verdicts: &'a [Verdict], end: &'a Event, reason: &'a str) -> Finishing<'a> {
        Box::pin(async move {
            self.batcher.push(end);
            self.end(verdicts.to_vec(), reason).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid: 7, tid: 7, comm: "t".into(), kind }
    }

    fn brk(ts: u64) -> Event {
        ev(ts, EventKind::Brk { requested: 0, result: 4096, duration_ns: 1 })
    }

    fn exit(ts: u64) -> Event {
        ev(
            ts,
            EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: Some(9),
                signal_name: Some("SIGKILL".into()),
                core_dumped: false,
                source: Default::default(),
            },
        )
    }

    #[tokio::test]
    async fn a_full_channel_keeps_the_events_for_the_next_tick_in_order_and_never_waits() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut b = Batcher::new(tx, 1_000);
        assert_eq!(b.flush(), Flush::Empty);
        let mut ts = 0;
        let mut tick = |b: &mut Batcher, n: usize| {
            for _ in 0..n {
                ts += 1;
                b.push(&brk(ts));
            }
            b.flush()
        };
        assert_eq!(tick(&mut b, 3), Flush::Sent(3));
        assert_eq!(tick(&mut b, 2), Flush::Sent(2));
        // The TUI is not reading: the channel is full, nothing blocks, events accumulate.
        assert_eq!(tick(&mut b, 4), Flush::Full(4));
        assert_eq!(tick(&mut b, 1), Flush::Full(5));
        assert_eq!(b.waiting(), 5);
        // The TUI reads one message: the next tick sends everything kept, as one batch.
        assert!(matches!(rx.recv().await, Some(TuiUpdate::Events(v)) if v.len() == 3));
        assert_eq!(tick(&mut b, 1), Flush::Sent(6));
        assert!(matches!(rx.recv().await, Some(TuiUpdate::Events(v)) if v.len() == 2));
        match rx.recv().await {
            Some(TuiUpdate::Events(v)) => assert_eq!(v.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), (6..=11).collect::<Vec<_>>()),
            other => panic!("{other:?}"),
        }
        // The TUI is gone: nothing is kept any more.
        drop(rx);
        assert_eq!(tick(&mut b, 1), Flush::Closed);
        assert_eq!(tick(&mut b, 1), Flush::Closed);
        assert_eq!(b.waiting(), 0);
    }

    #[tokio::test]
    async fn far_behind_bulk_events_are_skipped_first_and_the_tui_is_told() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut b = Batcher::new(tx, 4);
        b.push(&brk(0));
        assert_eq!(b.flush(), Flush::Sent(1));
        for ts in 1..=10 {
            b.push(&brk(ts));
        }
        b.push(&exit(11));
        assert_eq!(b.flush(), Flush::Full(5), "four memory events and the exit");
        for ts in 12..=20 {
            b.push(&exit(ts));
        }
        assert_eq!(b.waiting(), 8, "twice the cap at most");
        let _ = rx.recv().await;
        assert_eq!(b.flush(), Flush::Sent(8));
        let _ = rx.recv().await;
        // The notice waited for room (the batch took it); at the end it says how many
        // were skipped (6 brk + 6 exits).
        assert!(rx.try_recv().is_err());
        b.send_rest(Vec::new()).await;
        match rx.try_recv() {
            Ok(TuiUpdate::Notice(n)) => assert!(n.contains("skipped 12 events"), "{n}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verdicts_are_paced_to_new_events_once_a_second_and_a_tenth_of_the_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = VerdictPacer::new(s(1));
        assert!(!p.due(t0), "nothing seen yet");
        p.saw_events();
        assert!(p.due(t0));
        p.done(t0, Duration::from_millis(5), true);
        assert!(!p.due(t0 + s(5)), "no new events");
        p.saw_events();
        assert!(!p.due(t0 + Duration::from_millis(900)));
        assert!(p.due(t0 + s(1)));
        // An expensive diagnosis slows the pace down.
        p.done(t0 + s(1), Duration::from_millis(400), true);
        p.saw_events();
        assert!(!p.due(t0 + s(4)));
        assert!(p.due(t0 + s(5)));
        // Not delivered (channel full): due again at the next pace without new events.
        p.done(t0 + s(5), Duration::ZERO, false);
        assert!(p.due(t0 + s(6)));
    }

    #[tokio::test]
    async fn the_feed_sends_batches_and_verdicts_then_the_end() {
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let mut feed = LiveFeed::new(tx);
        let mut timeline = Timeline::new();
        for e in [brk(1), exit(2)] {
            timeline.push(&e);
            feed.event(&e).unwrap();
        }
        feed.tick(&timeline).unwrap();
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Events(v)) if v.len() == 2));
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Verdicts(_))));
        feed.event(&brk(3)).unwrap();
        feed.tick(&timeline).unwrap();
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Events(v)) if v.len() == 1));
        assert!(rx.try_recv().is_err(), "verdicts not again within the second");
        feed.end(Vec::new(), "target_exited").await;
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Verdicts(_))));
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Finished { reason }) if reason == "target_exited"));
    }
}
