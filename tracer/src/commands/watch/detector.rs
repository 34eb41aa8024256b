//! When the agent diagnoses, and which verdicts are new. Rare events (an OOM kill, a
//! fatal signal, an end by a signal, a reset) call for a diagnosis a little later, once
//! the resets that follow a death have come in (as `--grace` does for a trace); the
//! diagnosis runs over the recent window, and a verdict already reported is not
//! reported again.
use std::collections::HashMap;

use crate::{
    diagnose::{Cause, Verdict},
    event::{Event, EventKind},
};

/// Whether an event is one of the rare ones that can end in a verdict.
pub fn is_trigger(ev: &Event) -> bool {
    match &ev.kind {
        // A reset nobody traced owns explains nothing about a service.
        EventKind::OomKill { .. } | EventKind::TcpReset { attributed_by: Some(_), .. } => true,
        EventKind::Exit { signal: Some(_), group_dead: true, .. } => true,
        EventKind::Signal { signal, .. } => tracer_common::ends_from_outside(*signal),
        _ => false,
    }
}

/// What makes two verdicts the same: a death is its process; resets are their cause,
/// owner and port.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    cause: Cause,
    pid: Option<u32>,
    port: Option<u16>,
}

pub struct Detector {
    settle_ns: u64,
    /// When the pending diagnosis is due (wall ns).
    due_ns: Option<u64>,
    /// Verdicts reported, with the end of what they explained.
    reported: HashMap<Key, u64>,
}

impl Detector {
    /// `settle`: how long after a trigger the diagnosis waits.
    pub fn new(settle: std::time::Duration) -> Detector {
        Detector { settle_ns: settle.as_nanos() as u64, due_ns: None, reported: HashMap::new() }
    }

    /// An event went by: a trigger schedules a diagnosis (an earlier one stays: a storm
    /// of resets does not postpone it forever).
    pub fn observe(&mut self, ev: &Event, now_ns: u64) {
        if self.due_ns.is_none() && is_trigger(ev) {
            self.due_ns = Some(now_ns + self.settle_ns);
        }
    }

    /// Whether a diagnosis is due now; clears the schedule when it is.
    pub fn due(&mut self, now_ns: u64) -> bool {
        match self.due_ns {
            Some(t) if t <= now_ns => {
                self.due_ns = None;
                true
            }
            _ => false,
        }
    }

    /// The verdicts not reported before: a new key, or one whose explained span began
    /// after the last report of that key ended (the same port refused again later).
    pub fn fresh(&mut self, verdicts: Vec<Verdict>) -> Vec<Verdict> {
        let mut out = Vec::new();
        for v in verdicts {
            let key = Key { cause: v.cause, pid: v.pid, port: v.port };
            let new = match self.reported.get(&key) {
                None => true,
                Some(&end) => v.first_ns > end,
            };
            let end = self.reported.entry(key).or_insert(0);
            *end = (*end).max(v.last_ns);
            if new {
                out.push(v);
            }
        }
        out
    }

    /// Forgets verdicts whose span ended before `before_ns` (they are out of the window:
    /// they cannot come again), so the map stays bounded.
    pub fn expire(&mut self, before_ns: u64) {
        self.reported.retain(|_, end| *end >= before_ns);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.reported.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Confidence;
    use std::time::Duration;

    fn verdict(cause: Cause, pid: u32, port: Option<u16>, first_ns: u64, last_ns: u64) -> Verdict {
        Verdict {
            cause,
            summary: String::new(),
            pid: Some(pid),
            comm: None,
            port,
            resets: 0,
            first_ns,
            last_ns,
            chain: Vec::new(),
            evidence: Vec::new(),
            confidence: Confidence::High,
            action: None,
        }
    }

    /// `signal` sent by pid 7 to the server, pid 9.
    fn signal(signal: i32, name: &str) -> Event {
        let kind = EventKind::Signal {
            target_pid: 9,
            target_tid: 9,
            target_comm: "srv".into(),
            signal,
            signal_name: name.into(),
            si_code: 0,
            si_code_name: "SI_USER".into(),
            result: "delivered".into(),
            group: true,
            peer: false,
            sender_parents: None,
        };
        Event { ts_ns: 1, pid: 7, tid: 7, comm: "x".into(), kind }
    }

    #[test]
    fn a_trigger_schedules_one_diagnosis_after_the_settle_time() {
        let mut d = Detector::new(Duration::from_secs(2));
        let kill = signal(9, "SIGKILL");
        assert!(is_trigger(&kill));
        d.observe(&kill, 1_000);
        // A second trigger does not move the diagnosis later.
        d.observe(&kill, 1_500_000_000);
        assert!(!d.due(2_000_000_000));
        assert!(d.due(2_000_001_000));
        assert!(!d.due(3_000_000_000), "one diagnosis per schedule");
    }

    #[test]
    fn a_signal_a_server_handles_is_no_trigger() {
        let usr1 = signal(10, "SIGUSR1");
        assert!(!is_trigger(&usr1));
    }

    #[test]
    fn a_verdict_is_reported_once_and_again_only_for_a_later_episode() {
        let mut d = Detector::new(Duration::from_secs(2));
        let first = d.fresh(vec![verdict(Cause::OomKilled, 10, None, 100, 200), verdict(Cause::ConnectionRefused, 0, Some(80), 150, 300)]);
        assert_eq!(first.len(), 2);
        // The next diagnosis over a window that still holds them, with more resets since.
        let again = d.fresh(vec![verdict(Cause::OomKilled, 10, None, 100, 200), verdict(Cause::ConnectionRefused, 0, Some(80), 150, 400)]);
        assert!(again.is_empty(), "{again:?}");
        // The window moved on: the port was refused again after the last report ended.
        let later = d.fresh(vec![verdict(Cause::ConnectionRefused, 0, Some(80), 500, 600)]);
        assert_eq!(later.len(), 1);
        d.expire(550);
        assert_eq!(d.remembered(), 1, "the OOM verdict ended before 550 and is forgotten");
    }
}
