//! Bounded chart data: memory series that downsample as they grow, and the markers
//! (OOM kills, fatal signals, exits, resets) on the same time axis.
use std::collections::VecDeque;

/// Points `(seconds since the trace start, bytes)` in time order, at most `cap` of them.
/// When full, every pair of neighbours but the newest point is merged into the one with
/// the larger value (peaks survive, the last value stays exact), so memory stays bounded
/// however long the trace and however fast the events come.
#[derive(Clone, Debug)]
pub struct Series {
    points: Vec<(f64, f64)>,
    cap: usize,
}

impl Series {
    pub fn new(cap: usize) -> Series {
        Series { points: Vec::new(), cap: cap.max(4) }
    }

    pub fn push(&mut self, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        // Out-of-order input (a reorder slip) is pinned to the newest time.
        let x = self.points.last().map_or(x, |l| x.max(l.0));
        if self.points.len() >= self.cap {
            self.compact();
        }
        self.points.push((x, y));
    }

    /// Halves the points, keeping the newest as is.
    fn compact(&mut self) {
        let Some(last) = self.points.pop() else { return };
        let merged: Vec<(f64, f64)> = self
            .points
            .chunks(2)
            .map(|c| match c {
                [a, b] => (b.0, a.1.max(b.1)),
                [a] => *a,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        self.points = merged;
        self.points.push(last);
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        self.points.last().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn max_y(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }
}

/// What a marker on the chart stands for, in the order labels are given room.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MarkerKind {
    Oom,
    /// A fatal signal to the target, by name.
    Signal(String),
    /// The target process ended.
    Exit,
    /// Attributed TCP resets.
    Rst,
    /// The target was started again (`--follow-restarts`).
    Restart,
}

impl MarkerKind {
    pub fn label(&self) -> &str {
        match self {
            MarkerKind::Oom => "OOM",
            MarkerKind::Signal(name) => name,
            MarkerKind::Exit => "exit",
            MarkerKind::Rst => "RST",
            MarkerKind::Restart => "restart",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub x: f64,
    /// The last event merged into this marker.
    pub x_last: f64,
    pub kind: MarkerKind,
    pub count: u64,
}

impl Marker {
    /// `OOM`, `RST×15`.
    pub fn label(&self) -> String {
        if self.count > 1 {
            format!("{}×{}", self.kind.label(), self.count)
        } else {
            self.kind.label().to_string()
        }
    }
}

/// Markers, the oldest dropped beyond `cap`; a marker of the same kind within `merge`
/// seconds of the previous one is counted into it (a burst of resets is one marker).
#[derive(Clone, Debug)]
pub struct Markers {
    list: VecDeque<Marker>,
    cap: usize,
    merge: f64,
}

impl Markers {
    pub fn new(cap: usize, merge: f64) -> Markers {
        Markers { list: VecDeque::new(), cap: cap.max(1), merge }
    }

    pub fn push(&mut self, x: f64, kind: MarkerKind) {
        if !x.is_finite() {
            return;
        }
        // Look back only a little: markers come in time order.
        if let Some(m) = self.list.iter_mut().rev().take(8).find(|m| m.kind == kind) {
            if (x - m.x_last).abs() <= self.merge {
                m.count += 1;
                m.x_last = m.x_last.max(x);
                return;
            }
        }
        if self.list.len() >= self.cap {
            self.list.pop_front();
        }
        self.list.push_back(Marker { x, x_last: x, kind, count: 1 });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Marker> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_stays_bounded_keeps_its_peak_and_its_last_value() {
        let mut s = Series::new(64);
        for i in 0..100_000u32 {
            let y = if i == 50_000 { 1e12 } else { f64::from(i % 100) };
            s.push(f64::from(i) / 10.0, y);
            assert!(s.len() <= 64);
        }
        s.push(10_001.0, 0.0);
        assert!(s.len() <= 64);
        assert_eq!(s.max_y(), 1e12, "the peak survives downsampling");
        assert_eq!(s.last(), Some((10_001.0, 0.0)), "the last value is exact");
        assert!(s.points().windows(2).all(|w| w[0].0 <= w[1].0), "time order kept");
    }

    #[test]
    fn out_of_order_and_non_finite_points_do_not_break_the_order() {
        let mut s = Series::new(8);
        s.push(5.0, 1.0);
        s.push(4.0, 2.0);
        s.push(f64::NAN, 3.0);
        s.push(6.0, f64::INFINITY);
        assert_eq!(s.points(), [(5.0, 1.0), (5.0, 2.0)]);
    }

    #[test]
    fn a_burst_of_resets_is_one_counted_marker_and_markers_are_bounded() {
        let mut m = Markers::new(4, 0.5);
        m.push(6.0, MarkerKind::Oom);
        for i in 0..15 {
            m.push(6.02 + f64::from(i) * 0.1, MarkerKind::Rst);
        }
        assert_eq!(m.len(), 2);
        let rst = m.iter().find(|m| m.kind == MarkerKind::Rst).unwrap();
        assert_eq!((rst.count, rst.label()), (15, "RST×15".to_string()));
        for i in 0..100 {
            m.push(100.0 + f64::from(i), MarkerKind::Exit);
        }
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|m| m.kind == MarkerKind::Exit));
    }
}
