//! Events per second over a sliding window of clock ticks. The clock is given (the wall
//! clock in the live loop, any value in tests), so the meter is deterministic.
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Rate {
    /// `(now_ns, events counted so far)` at each tick, newest last.
    marks: VecDeque<(u64, u64)>,
    window_ns: u64,
}

impl Rate {
    pub fn new(window_ns: u64) -> Rate {
        Rate { marks: VecDeque::new(), window_ns: window_ns.max(1) }
    }

    /// Records the running count at `now_ns`; keeps one mark older than the window so
    /// the rate always spans at least the window once it has run that long.
    pub fn tick(&mut self, now_ns: u64, total: u64) {
        if let Some(&(last, _)) = self.marks.back() {
            if now_ns < last {
                // The clock went back: start over rather than divide by nonsense.
                self.marks.clear();
            }
        }
        self.marks.push_back((now_ns, total));
        while self.marks.len() > 2 && self.marks[1].0 + self.window_ns <= now_ns {
            self.marks.pop_front();
        }
    }

    /// Events per second between the oldest mark kept and the newest.
    pub fn per_sec(&self) -> f64 {
        match (self.marks.front(), self.marks.back()) {
            (Some(&(t0, n0)), Some(&(t1, n1))) if t1 > t0 => n1.saturating_sub(n0) as f64 * 1e9 / (t1 - t0) as f64,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rate_follows_the_last_window_and_drops_to_zero_when_events_stop() {
        let mut r = Rate::new(S);
        assert_eq!(r.per_sec(), 0.0);
        r.tick(10 * S, 0);
        r.tick(10 * S + S / 2, 500);
        assert_eq!(r.per_sec(), 1000.0);
        r.tick(11 * S, 1000);
        assert_eq!(r.per_sec(), 1000.0);
        // Nothing more arrives: after a window the rate is zero.
        r.tick(12 * S, 1000);
        r.tick(13 * S, 1000);
        assert_eq!(r.per_sec(), 0.0);
        r.tick(5 * S, 1000);
        assert_eq!(r.per_sec(), 0.0, "clock going back resets");
    }
}
