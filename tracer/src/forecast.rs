//! Early warning: how much room each memory limit has left and, from how fast memory
//! grows, when it will be reached, while there is still time to act.
//!
//! Fed the session's events in time order. Samples give each limit's exact usage (the
//! memory cgroup's, less the page cache the kernel drops first; the host's; each GPU's)
//! every `--sample-interval`; between samples, `rss` events (the kernel's, every 8 MiB a
//! traced process moves) carry the usage forward, since a model load crosses a limit in
//! far less than a sampling interval. The rate is the least-squares slope over the last
//! few seconds; a limit gets a `forecast` when the projected time to reach it falls under
//! `--warn-before`. No forecast from fewer than MIN_POINTS points, a span shorter than
//! MIN_SPAN, a projection further ahead than MAX_HORIZON times the span behind it, or a
//! series that is flat or falling; the basis (window, points, rate, fit) is in the event,
//! and a limit is warned about at most once a second.
use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use crate::event::{Event, EventKind, Forecast, ProcessSample};

/// `--warn-before`'s default.
pub const DEFAULT_WARN_BEFORE: Duration = Duration::from_secs(10);
/// The rate is taken over the points of this last stretch.
const WINDOW_NS: u64 = 3_000_000_000;
/// Fewer points than this make no forecast.
const MIN_POINTS: usize = 4;
/// Nor do points spanning less than this.
const MIN_SPAN_NS: u64 = 20_000_000;
/// No projection further ahead than this many times the span it is taken from: a line
/// drawn through half a second says little of where memory is in five.
const MAX_HORIZON: f64 = 4.0;
/// Growth slower than this (bytes/s) is flat.
const MIN_RATE: f64 = (1 << 20) as f64;
/// While a limit stays in danger, one forecast per this.
const REPEAT_NS: u64 = 1_000_000_000;
/// A forecast is `high` confidence from this many points over at least HIGH_SPAN_NS that
/// a straight line fits (r² at least HIGH_R2): growth seen long and steady enough to
/// expect more of it. A load's step or a spike that may stop short of the limit is `low`.
const HIGH_POINTS: usize = 8;
const HIGH_SPAN_NS: u64 = 1_000_000_000;
const HIGH_R2: f64 = 0.9;

/// Which limit a series is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Limit {
    Cgroup,
    Host,
    Gpu(u32),
}

/// One limit's usage over time.
#[derive(Debug)]
struct Series {
    limit: Limit,
    /// The cgroup folder, "host memory (MemTotal)", the GPU's name.
    name: String,
    limit_bytes: u64,
    /// At the last sample: the usage, and the traced processes' resident memory then
    /// (rss events move the usage by what that resident memory moved since).
    anchor_used: u64,
    anchor_resident: u64,
    points: VecDeque<(u64, u64)>,
    last_warned_ns: Option<u64>,
    /// The kernel's signs at the last sample (see Forecast).
    psi_some_avg10: Option<f64>,
    limit_hits: Option<u64>,
}

/// A traced process's resident memory.
#[derive(Debug, Default)]
struct Process {
    comm: String,
    /// From its last sample.
    sampled: u64,
    /// rss members (the kernel's absolute counters) as of now, and their sum at the sample.
    members: HashMap<String, u64>,
    members_at_sample: u64,
    points: VecDeque<(u64, u64)>,
}

impl Process {
    fn members_sum(&self) -> u64 {
        self.members.iter().filter(|(m, _)| !crate::event::is_swap_member(m)).map(|(_, b)| b).sum()
    }

    fn resident(&self) -> u64 {
        (self.sampled as i128 + self.members_sum() as i128 - self.members_at_sample as i128).max(0) as u64
    }
}

pub struct Forecaster {
    warn_before_s: f64,
    target_pid: u32,
    series: Vec<Series>,
    processes: HashMap<u32, Process>,
}

impl Forecaster {
    pub fn new(target_pid: u32, warn_before: Duration) -> Self {
        Forecaster { warn_before_s: warn_before.as_secs_f64(), target_pid, series: Vec::new(), processes: HashMap::new() }
    }

    /// Takes in one event; a `forecast` event when a limit is about to be reached.
    pub fn observe(&mut self, ev: &Event) -> Option<Event> {
        match &ev.kind {
            EventKind::Sample { processes, cgroup, gpus, system } => {
                self.sampled(ev.ts_ns, processes);
                let resident = self.resident();
                if let Some(cg) = cgroup {
                    match cg.limit_bytes {
                        Some(limit) => {
                            let reclaimable = cg.pressure.as_ref().and_then(|p| p.inactive_file_bytes).unwrap_or(0);
                            let used = cg.usage_bytes.saturating_sub(reclaimable.min(cg.usage_bytes));
                            self.anchor(ev.ts_ns, Limit::Cgroup, format!("memory cgroup {}", cg.path), limit, used, resident);
                            let psi = cg.pressure.as_ref().and_then(|p| p.psi_some_avg10).or(system.psi_memory_some_avg10);
                            self.signs(&Limit::Cgroup, psi, cg.pressure.as_ref().and_then(|p| p.limit_hits));
                        }
                        None => self.series.retain(|s| s.limit != Limit::Cgroup),
                    }
                }
                if system.mem_total_bytes > 0 {
                    let used = system.mem_total_bytes.saturating_sub(system.mem_available_bytes);
                    self.anchor(ev.ts_ns, Limit::Host, "host memory (MemAvailable)".into(), system.mem_total_bytes, used, resident);
                    self.signs(&Limit::Host, system.psi_memory_some_avg10, None);
                }
                for g in gpus {
                    let name = format!("GPU {} ({})", g.index, g.name);
                    self.anchor(ev.ts_ns, Limit::Gpu(g.index), name, g.total_bytes, g.used_bytes, 0);
                }
                self.warn(ev.ts_ns)
            }
            EventKind::Rss { member, bytes } => {
                let p = self.processes.entry(ev.pid).or_default();
                if p.comm.is_empty() {
                    p.comm = ev.comm.clone();
                }
                p.members.insert(member.clone(), (*bytes).max(0) as u64);
                let now = p.resident();
                push(&mut p.points, ev.ts_ns, now);
                let resident = self.resident();
                // rss events move host memory, not a GPU's.
                for s in self.series.iter_mut().filter(|s| !matches!(s.limit, Limit::Gpu(_))) {
                    let used = (s.anchor_used as i128 + resident as i128 - s.anchor_resident as i128).max(0) as u64;
                    push(&mut s.points, ev.ts_ns, used);
                }
                self.warn(ev.ts_ns)
            }
            // What grew before a kill says nothing of what comes after it.
            EventKind::OomKill { .. } => {
                for s in &mut self.series {
                    s.points.clear();
                }
                for p in self.processes.values_mut() {
                    p.points.clear();
                }
                None
            }
            EventKind::Exit { .. } if ev.pid == ev.tid => {
                self.processes.remove(&ev.pid);
                None
            }
            _ => None,
        }
    }

    fn sampled(&mut self, ts_ns: u64, processes: &[ProcessSample]) {
        self.processes.retain(|pid, _| processes.iter().any(|p| p.pid == *pid));
        for s in processes {
            let p = self.processes.entry(s.pid).or_default();
            p.comm.clone_from(&s.comm);
            p.sampled = s.rss_bytes;
            p.members_at_sample = p.members_sum();
            push(&mut p.points, ts_ns, s.rss_bytes);
        }
    }

    /// The traced processes' resident memory now.
    fn resident(&self) -> u64 {
        self.processes.values().map(Process::resident).sum()
    }

    fn anchor(&mut self, ts_ns: u64, limit: Limit, name: String, limit_bytes: u64, used: u64, resident: u64) {
        let i = match self.series.iter().position(|s| s.limit == limit) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    limit,
                    name: name.clone(),
                    limit_bytes,
                    anchor_used: used,
                    anchor_resident: resident,
                    points: VecDeque::new(),
                    last_warned_ns: None,
                    psi_some_avg10: None,
                    limit_hits: None,
                });
                self.series.len() - 1
            }
        };
        let s = &mut self.series[i];
        if s.name != name || s.limit_bytes != limit_bytes {
            // Another cgroup, or the limit changed: the old points say nothing of it.
            s.points.clear();
            s.name = name;
            s.limit_bytes = limit_bytes;
        }
        s.anchor_used = used;
        s.anchor_resident = resident;
        push(&mut s.points, ts_ns, used);
    }

    fn signs(&mut self, limit: &Limit, psi_some_avg10: Option<f64>, limit_hits: Option<u64>) {
        if let Some(s) = self.series.iter_mut().find(|s| s.limit == *limit) {
            s.psi_some_avg10 = psi_some_avg10;
            s.limit_hits = limit_hits;
        }
    }

    /// The forecast of the limit closest to being reached, when one is within warning.
    fn warn(&mut self, now_ns: u64) -> Option<Event> {
        let warn_before_s = self.warn_before_s;
        let mut best: Option<(usize, Projection)> = None;
        for (i, s) in self.series.iter().enumerate() {
            let Some(p) = project(&s.points, s.limit_bytes) else { continue };
            if p.seconds_to_limit > warn_before_s || s.last_warned_ns.is_some_and(|t| now_ns < t + REPEAT_NS) {
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| p.seconds_to_limit < b.seconds_to_limit) {
                best = Some((i, p));
            }
        }
        let (i, p) = best?;
        self.series[i].last_warned_ns = Some(now_ns);
        let s = &self.series[i];
        let fastest = self
            .processes
            .iter()
            .filter_map(|(pid, proc)| Some((*pid, proc, fit(&proc.points)?.0)))
            .filter(|(_, _, rate)| *rate > 0.0)
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let (pid, comm) = match fastest {
            Some((pid, proc, _)) => (pid, proc.comm.clone()),
            None => (self.target_pid, self.processes.get(&self.target_pid).map(|p| p.comm.clone()).unwrap_or_default()),
        };
        let used = p.used;
        Some(Event {
            ts_ns: now_ns,
            pid,
            tid: pid,
            comm,
            kind: EventKind::Forecast(Forecast {
                limit: match s.limit {
                    Limit::Cgroup => "memory_cgroup",
                    Limit::Host => "host",
                    Limit::Gpu(_) => "gpu",
                }
                .into(),
                limit_name: s.name.clone(),
                limit_bytes: s.limit_bytes,
                used_bytes: used,
                headroom_bytes: s.limit_bytes.saturating_sub(used),
                headroom_percent: 100.0 * s.limit_bytes.saturating_sub(used) as f64 / s.limit_bytes.max(1) as f64,
                rate_bytes_per_s: p.rate,
                seconds_to_limit: p.seconds_to_limit,
                window_ms: p.span_ns / 1_000_000,
                points: p.points as u32,
                r_squared: p.r_squared,
                confidence: if p.points >= HIGH_POINTS && p.span_ns >= HIGH_SPAN_NS && p.r_squared >= HIGH_R2 { "high" } else { "low" }
                    .into(),
                fastest_rate_bytes_per_s: fastest.map(|(_, _, r)| r),
                psi_some_avg10: s.psi_some_avg10,
                limit_hits: s.limit_hits,
            }),
        })
    }
}

/// Appends a point, keeping the window.
fn push(points: &mut VecDeque<(u64, u64)>, ts_ns: u64, used: u64) {
    points.push_back((ts_ns, used));
    while points.front().is_some_and(|&(t, _)| t + WINDOW_NS < ts_ns) {
        points.pop_front();
    }
}

#[derive(Debug, Clone, Copy)]
struct Projection {
    used: u64,
    rate: f64,
    r_squared: f64,
    seconds_to_limit: f64,
    span_ns: u64,
    points: usize,
}

/// Where the points head: None from too few points, too short a span, or no growth.
fn project(points: &VecDeque<(u64, u64)>, limit: u64) -> Option<Projection> {
    let (rate, r_squared) = fit(points)?;
    if rate < MIN_RATE {
        return None;
    }
    let &(first, _) = points.front()?;
    let &(last, used) = points.back()?;
    let seconds_to_limit = limit.saturating_sub(used) as f64 / rate;
    if seconds_to_limit > MAX_HORIZON * (last - first) as f64 * 1e-9 {
        return None;
    }
    Some(Projection { used, rate, r_squared, seconds_to_limit, span_ns: last - first, points: points.len() })
}

/// Least-squares slope in bytes per second and how well the line fits (r²); None from
/// too few points or too short a span.
fn fit(points: &VecDeque<(u64, u64)>) -> Option<(f64, f64)> {
    let &(t0, _) = points.front()?;
    let &(t1, _) = points.back()?;
    if points.len() < MIN_POINTS || t1 - t0 < MIN_SPAN_NS {
        return None;
    }
    let n = points.len() as f64;
    let xy = || points.iter().map(|&(t, y)| ((t - t0) as f64 * 1e-9, y as f64));
    let (sx, sy) = xy().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx, syy) =
        xy().fold((0.0, 0.0, 0.0), |(a, b, c), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx), c + (y - my) * (y - my)));
    if sxx <= 0.0 {
        return None;
    }
    let r2 = if syy > 0.0 { sxy * sxy / (sxx * syy) } else { 1.0 };
    Some((sxy / sxx, r2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CgroupSample, SystemSample};

    const MIB: u64 = 1 << 20;
    const PID: u32 = 7;

    fn ev(ms: u64, kind: EventKind) -> Event {
        Event { ts_ns: 1_000_000_000_000 + ms * 1_000_000, pid: PID, tid: PID, comm: "loader".into(), kind }
    }

    /// A sample of one process holding `used` in a memory cgroup limited to `limit`.
    fn sample(ms: u64, used: u64, limit: u64) -> Event {
        ev(
            ms,
            EventKind::Sample {
                processes: vec![ProcessSample {
                    pid: PID,
                    comm: "loader".into(),
                    state: "R".into(),
                    rss_bytes: used,
                    vm_size_bytes: used,
                    vm_hwm_bytes: used,
                    threads: 1,
                    fds: None,
                    address_space_limit_bytes: None,
                }],
                cgroup: Some(CgroupSample {
                    path: "/sys/fs/cgroup/svc".into(),
                    version: 2,
                    usage_bytes: used,
                    limit_bytes: Some(limit),
                    peak_bytes: None,
                    oom_kills: Some(0),
                    members: Vec::new(),
                    pressure: Some(crate::event::CgroupPressure { inactive_file_bytes: Some(0), limit_hits: Some(3), psi_some_avg10: None }),
                }),
                gpus: Vec::new(),
                // No host series: these tests are about the cgroup.
                // The host's PSI stands in where the cgroup has none (v1).
                system: SystemSample { mem_total_bytes: 0, mem_available_bytes: 0, psi_memory_some_avg10: Some(1.5), psi_memory_full_avg10: None },
            },
        )
    }

    fn rss(ms: u64, anon: u64) -> Event {
        ev(ms, EventKind::Rss { member: "MM_ANONPAGES".into(), bytes: anon as i64 })
    }

    fn forecasts(f: &mut Forecaster, events: impl IntoIterator<Item = Event>) -> Vec<(u64, Forecast)> {
        events
            .into_iter()
            .filter_map(|e| f.observe(&e))
            .map(|e| match e.kind {
                EventKind::Forecast(fc) => ((e.ts_ns - 1_000_000_000_000) / 1_000_000, fc),
                other => panic!("not a forecast: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn steady_growth_is_projected_to_the_limit_when_it_is_within_warn_before() {
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        // 20 MiB/s from 16 MiB toward 256 MiB: the limit at 12 s; under 10 s to go from 2 s,
        // and from 2.4 s that is no more than 4 times the 2.4 s seen.
        let got = forecasts(&mut f, (0..=120).map(|i| sample(i * 100, 16 * MIB + i * 2 * MIB, 256 * MIB)));
        let (at, first) = &got[0];
        assert!((2400..=2500).contains(at), "first warning at {at} ms");
        let truth = 12.0 - *at as f64 / 1e3;
        assert!((first.seconds_to_limit - truth).abs() < 0.05 * truth, "{first:?} vs {truth} s");
        assert!((first.rate_bytes_per_s / (20 * MIB) as f64 - 1.0).abs() < 0.01, "{first:?}");
        assert_eq!((first.limit.as_str(), first.confidence.as_str()), ("memory_cgroup", "high"), "{first:?}");
        assert_eq!(first.limit_name, "memory cgroup /sys/fs/cgroup/svc");
        assert_eq!((first.psi_some_avg10, first.limit_hits), (Some(1.5), Some(3)), "the sample's pressure signs");
        assert_eq!(first.headroom_bytes, first.limit_bytes - first.used_bytes);
        assert!((first.fastest_rate_bytes_per_s.unwrap() / (20 * MIB) as f64 - 1.0).abs() < 0.01, "{first:?}");
        // Repeated while it grows, never more than once a second.
        assert!(got.windows(2).all(|w| w[1].0 - w[0].0 >= 1000), "{:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
        assert!(got.len() >= 9, "{} forecasts", got.len());
    }

    #[test]
    fn an_oom_kill_ends_the_run_up_no_forecast_from_the_points_before_it() {
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        let mut events: Vec<Event> = (0..=30).map(|i| sample(i * 100, 16 * MIB + i * 8 * MIB, 256 * MIB)).collect();
        let kill = crate::event::testkit::oom_kill_kind(Some(PID), "loader");
        events.push(ev(3050, kill));
        // Still sampled (the cgroup outlives its process), a little higher each time.
        events.extend((31..=34).map(|i| sample(i * 100, 250 * MIB + i * MIB, 256 * MIB)));
        let got = forecasts(&mut f, events);
        assert!(!got.is_empty() && got.iter().all(|(at, _)| *at < 3050), "{got:?}");
    }

    #[test]
    fn flat_falling_and_thinly_sampled_series_get_no_forecast() {
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        assert!(forecasts(&mut f, (0..50).map(|i| sample(i * 100, 250 * MIB, 256 * MIB))).is_empty(), "flat, near the limit");
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        assert!(forecasts(&mut f, (0..50).map(|i| sample(i * 100, 250 * MIB - i * MIB, 256 * MIB))).is_empty(), "falling");
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        let three = [sample(0, 10 * MIB, 256 * MIB), sample(100, 100 * MIB, 256 * MIB), sample(200, 200 * MIB, 256 * MIB)];
        assert!(forecasts(&mut f, three).is_empty(), "three points are too few");
    }

    #[test]
    fn a_load_step_between_samples_is_seen_through_rss_events() {
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        // Sampled at 40 MiB; then the kernel's rss events every 8 MiB, 2 GB/s, toward 256 MiB.
        let mut events = vec![rss(0, 40 * MIB), sample(1, 40 * MIB, 256 * MIB)];
        events.extend((1..=20).map(|i| rss(1 + i * 4, 40 * MIB + i * 8 * MIB)));
        let got = forecasts(&mut f, events);
        let (at, first) = got.first().expect("a warning before the limit");
        let used_then = 40 * MIB + (at - 1) / 4 * 8 * MIB;
        assert!(used_then < 256 * MIB && first.seconds_to_limit < 0.2, "{at} ms: {first:?}");
        assert_eq!(first.confidence, "low", "a step of a tenth of a second");
    }

    #[test]
    fn a_spike_that_fits_is_at_most_a_low_confidence_projection_and_stops_when_it_falls() {
        let mut f = Forecaster::new(PID, Duration::from_secs(10));
        let mut events = vec![rss(0, 20 * MIB), sample(1, 20 * MIB, 256 * MIB)];
        // Up by 100 MiB in 250 ms, then back down, sampled on the way.
        events.extend((1..=12).map(|i| rss(1 + i * 20, 20 * MIB + i * 8 * MIB)));
        events.extend((1..=12).map(|i| rss(300 + i * 20, 116 * MIB - i * 8 * MIB)));
        events.extend((0..30).map(|i| sample(600 + i * 100, 20 * MIB, 256 * MIB)));
        let got = forecasts(&mut f, events);
        assert!(got.iter().all(|(_, fc)| fc.confidence == "low"), "{got:?}");
        assert!(got.iter().all(|(at, _)| *at < 300), "no forecast once it falls: {got:?}");
    }
}
