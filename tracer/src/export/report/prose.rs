//! Phrases shared by the renderings: sizes, times, who, and one line per fact.
use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use super::{CgroupPeak, GpuPeak, ProcessPeak, Report, SystemLow};
use crate::diagnose::Verdict;

/// Sizes read the same in the verdicts and around them.
pub use crate::units::{format_bytes, time_of_day};

/// Characters of the command line in the title.
pub(super) const TITLE_CMDLINE: usize = 100;

/// Line breaks and tabs (a `python -c` script) as spaces.
pub(super) fn one_line(s: &str) -> String {
    if !s.contains(|c: char| c.is_control()) {
        return s.to_string();
    }
    s.split(|c: char| c.is_control() || c == ' ').filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ")
}

pub(super) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Seconds since `t0`: `+3.021 s`.
pub fn rel(ts_ns: u64, t0: u64) -> String {
    let d = ts_ns as i128 - t0 as i128;
    let sign = if d < 0 { "-" } else { "+" };
    let a = d.unsigned_abs();
    format!("{sign}{}.{:03} s", a / 1_000_000_000, (a / 1_000_000) % 1000)
}


/// Date and time in UTC: `2024-05-01T12:00:00.000Z`.
pub fn date_time(ts_ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ts_ns)).to_string()
}

pub(super) fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

pub(super) fn who(pid: Option<u32>, comm: Option<&str>) -> String {
    match (pid, comm) {
        (Some(p), Some(c)) if !c.is_empty() => format!("pid {p} ({c})"),
        (Some(p), _) => format!("pid {p}"),
        (None, Some(c)) if !c.is_empty() => c.to_string(),
        _ => "unknown process".into(),
    }
}

pub(super) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl Report {
    /// (what, peak or low) for the memory cgroup, each GPU and MemAvailable, in that
    /// order; `cgroup` names the cgroup in the rendering's own markup.
    pub fn memory_facts(&self, cgroup: impl Fn(&CgroupPeak) -> String) -> Vec<Vec<String>> {
        let m = &self.memory;
        let mut facts = Vec::new();
        if let Some(c) = &m.cgroup {
            facts.push(vec![cgroup(c), self.cgroup_line(c)]);
        }
        for g in &m.gpus {
            facts.push(vec![format!("GPU {} ({})", g.index, g.name), self.gpu_line(g)]);
        }
        if let Some(low) = &m.mem_available_min {
            facts.push(vec!["MemAvailable".into(), self.mem_available_line(low)]);
        }
        facts
    }

    /// The title: what was traced.
    pub fn title(&self) -> String {
        let t = &self.target;
        match (t.pid, t.ran()) {
            (Some(pid), Some(cmd)) => format!("tracer report: pid {pid} ({})", shorten(&one_line(cmd), TITLE_CMDLINE)),
            (Some(pid), None) => format!("tracer report: {}", who(Some(pid), t.comm.as_deref())),
            (None, _) => "tracer report: unknown target (the trace has no trace_start line)".into(),
        }
    }

    pub(super) fn trace_line(&self) -> String {
        let mut s = String::new();
        if let Some(src) = &self.source {
            let _ = write!(s, "{src}, ");
        }
        let _ = write!(
            s,
            "from {} for {}, ",
            date_time(self.span.start_ns),
            rel(self.span.end_ns, self.span.start_ns).trim_start_matches('+')
        );
        match &self.span.end_reason {
            Some(r) => {
                let _ = write!(s, "ended: {r}");
            }
            None => s.push_str("no trace_end line (the trace was cut short)"),
        }
        s
    }

    pub(super) fn target_line(&self) -> String {
        let t = &self.target;
        let mut s = who(t.pid, t.comm.as_deref());
        if let Some(ran) = t.ran() {
            let _ = write!(s, ": {}", one_line(ran));
        }
        if let Some(before) = t.started_as() {
            let _ = write!(s, " (started as: {})", one_line(before));
        }
        match t.follow_children {
            Some(true) => s.push_str(", children followed"),
            Some(false) => s.push_str(", children not followed"),
            None => {}
        }
        s
    }

    pub(super) fn events_line(&self) -> String {
        let e = &self.events;
        let mut s = format!("{} events, {} lost", e.total, e.lost);
        if !e.lost_by_probe.is_empty() {
            let per: Vec<String> = e.lost_by_probe.iter().map(|(p, n)| format!("{p} {n}")).collect();
            let _ = write!(s, " ({})", per.join(", "));
        }
        if !e.other_resets.is_empty() {
            let total: u64 = e.other_resets.values().sum();
            let per: Vec<String> = e.other_resets.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = write!(s, "; {total} resets elsewhere on the host, not the target's, counted and not written ({})", per.join(", "));
        }
        if let Some(c) = &e.cut {
            let t0 = self.span.start_ns;
            let _ = write!(
                s,
                "; {} events from {} to {} left out to keep the file under --max-size ({})",
                c.events,
                rel(c.from_ns, t0),
                rel(c.to_ns, t0),
                format_bytes(c.bytes)
            );
        }
        s
    }

    pub(super) fn cgroup_line(&self, c: &CgroupPeak) -> String {
        let t0 = self.span.start_ns;
        let mut s = format!("usage peak {} at {}", format_bytes(c.peak_usage_bytes), rel(c.at_ns, t0));
        match c.limit_bytes {
            Some(l) => {
                let _ = write!(s, " of limit {} ({})", format_bytes(l), pct(c.peak_usage_bytes, l));
            }
            None => s.push_str(", no limit"),
        }
        if let Some(p) = c.kernel_peak_bytes {
            let _ = write!(s, "; kernel peak {}", format_bytes(p));
        }
        if let Some(k) = c.oom_kills {
            let _ = write!(s, "; OOM kills {k} by its last sample at {}", rel(c.last_sample_ns, t0));
        }
        if !c.moved_from.is_empty() {
            let _ = write!(s, "; the target moved in from {} (figures of this cgroup only)", c.moved_from.join(", "));
        }
        s
    }

    pub(super) fn gpu_line(&self, g: &GpuPeak) -> String {
        let mut s = format!(
            "used peak {} of {} at {}",
            format_bytes(g.peak_used_bytes),
            format_bytes(g.total_bytes),
            rel(g.at_ns, self.span.start_ns)
        );
        if let Some(p) = g.peak_process_bytes {
            let _ = write!(s, "; traced processes peak {}", format_bytes(p));
        }
        s
    }

    pub(super) fn mem_available_line(&self, low: &SystemLow) -> String {
        let mut s = format!(
            "minimum {} of {} at {}",
            format_bytes(low.min_available_bytes),
            format_bytes(low.mem_total_bytes),
            rel(low.at_ns, self.span.start_ns)
        );
        if let Some(psi) = low.psi_memory_some_avg10_max {
            let _ = write!(s, "; memory pressure (PSI some avg10) up to {psi:.2}%");
        }
        s
    }

    pub(super) fn memory_source_line(&self) -> String {
        match self.memory.source.as_str() {
            "samples" => format!(
                "From {} samples: each peak is the highest value a sample read, at the time shown. A peak between two \
                 samples (the last moments before an OOM kill) is not in these figures; the verdicts give the kernel's own \
                 figures at the kill, which can be higher.",
                self.memory.samples
            ),
            "rss_events" => "From rss events (no samples in this trace): resident = file + anon + shmem pages.".into(),
            _ => "No samples and no rss events in this trace.".into(),
        }
    }

    pub(super) fn process_peak_line(&self, p: &ProcessPeak) -> String {
        let mut s = format!(
            "{} at {} (first seen {})",
            format_bytes(p.peak_rss_bytes),
            rel(p.at_ns, self.span.start_ns),
            format_bytes(p.first_rss_bytes)
        );
        if !p.members.is_empty() {
            let m: Vec<String> = p.members.iter().map(|(k, v)| format!("{k} {}", format_bytes(*v))).collect();
            let _ = write!(s, ": {}", m.join(", "));
        }
        s
    }

    pub(super) fn cgroup_env_line(&self) -> String {
        match &self.environment.cgroup {
            Some(c) => format!(
                "{} (v{}, limit {})",
                c.path,
                c.version,
                c.limit_bytes.map_or_else(|| "none".to_string(), format_bytes)
            ),
            None => "not sampled".into(),
        }
    }

    pub(super) fn gpus_env_line(&self) -> String {
        if self.environment.gpus.is_empty() {
            return "none seen".into();
        }
        let g: Vec<String> = self
            .environment
            .gpus
            .iter()
            .map(|g| format!("{}: {} ({})", g.index, g.name, format_bytes(g.total_bytes)))
            .collect();
        g.join(", ")
    }

    pub(super) fn environment_rows(&self) -> Vec<(&'static str, String)> {
        let env = &self.environment;
        vec![
            ("kernel", env.kernel.clone().unwrap_or_else(|| "unknown".into())),
            ("probes", list_or_none(&env.probes)),
            ("missing probes", list_or_none(&env.missing_probes)),
            ("rss threshold", env.rss_threshold_bytes.map_or_else(|| "unknown".into(), format_bytes)),
            ("memory cgroup", self.cgroup_env_line()),
            ("GPUs", self.gpus_env_line()),
        ]
    }
}

/// One line about a verdict's scope: who, which port, how many resets, when.
pub(super) fn verdict_scope(v: &Verdict, t0: u64) -> String {
    let mut s = who(v.pid, v.comm.as_deref());
    if let Some(port) = v.port {
        let _ = write!(s, ", port {port}");
    }
    let _ = write!(s, ", {} reset{}", v.resets, if v.resets == 1 { "" } else { "s" });
    if v.first_ns == v.last_ns {
        let _ = write!(s, ", at {}", rel(v.first_ns, t0));
    } else {
        let _ = write!(s, ", from {} to {}", rel(v.first_ns, t0), rel(v.last_ns, t0));
    }
    s
}
