//! Case 5 (steady): the tracer left attached to a process making memory calls at a steady
//! rate (about 10k events a second): its share of one core, its memory over time, and the
//! trace's bytes per event, plain and zstd-compressed. `--soak DURATION` runs the same for
//! that long (compressed, to keep the disk bounded) and reports memory after the first
//! minute against the end: a tracer left on for days must stay flat.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    proc::{Lines, Proc},
    stress::{Bins, Target},
};

/// One pair of calls (two events) per pause: this pause gives about 10k events a second
/// here (the sleep itself overshoots by tens of microseconds).
pub const PACE_US: u64 = 150;

/// Memory samples of the tracer, one every this.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Soak: growth allowed from the first minute to the end.
pub const FLAT_TOLERANCE: f64 = 0.05;

#[derive(Debug, Clone, Serialize)]
pub struct SteadyRun {
    /// `jsonl` or `jsonl.zst`.
    pub format: String,
    pub seconds: f64,
    pub events: u64,
    pub events_per_s: f64,
    /// The tracer's CPU time over the wall time, in percent of one core.
    pub tracer_cpu_pct: f64,
    pub trace_bytes: u64,
    pub bytes_per_event: f64,
    /// (seconds since go, tracer RSS in bytes).
    pub rss: Vec<(f64, u64)>,
    /// RSS at one minute (or at the first sample when the run is shorter) and at the end.
    pub rss_at_1min_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    pub rss_max_after_1min_bytes: Option<u64>,
}

impl SteadyRun {
    /// Growth from the first minute to the largest later figure (a fraction); None for a
    /// run shorter than two minutes.
    pub fn growth_after_1min(&self) -> Option<f64> {
        let base = self.rss_at_1min_bytes? as f64;
        if self.seconds < 120.0 {
            return None;
        }
        Some(self.rss_max_after_1min_bytes? as f64 / base - 1.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    pub pace_us: u64,
    pub runs: Vec<SteadyRun>,
    pub soak: Option<SteadyRun>,
}

/// `seconds` plain and compressed.
pub fn run(seconds: u64, bins: &Bins, dir: &Path) -> Result<Steady> {
    let mut runs = Vec::new();
    for name in ["steady.jsonl", "steady.jsonl.zst"] {
        println!("xtask: bench steady: {seconds} s at one mmap+munmap pair every {PACE_US} us, trace to {name}");
        runs.push(one(Duration::from_secs(seconds), bins, &dir.join(name))?);
    }
    Ok(Steady { pace_us: PACE_US, runs, soak: None })
}

/// The same rate for `length`, compressed; run last, as it is long and only its memory
/// and CPU figures matter.
pub fn soak(length: Duration, bins: &Bins, dir: &Path) -> Result<SteadyRun> {
    println!("xtask: bench soak: {} at one mmap+munmap pair every {PACE_US} us, compressed trace", humantime::format_duration(length));
    one(length, bins, &dir.join("soak.jsonl.zst"))
}

fn one(length: Duration, bins: &Bins, trace: &Path) -> Result<SteadyRun> {
    // Pairs for the whole length at the nominal rate; the run is cut at `length` anyway.
    let pairs = length.as_secs().max(1) * 1_000_000 / PACE_US;
    let mut target = Target::start(bins, &["--pace-us".into(), PACE_US.to_string(), format!("burst={}", pairs * 2)])?;
    let pid = target.proc.pid();
    let mut tracer = Proc::spawn(
        Command::new(&bins.tracer)
            .args(["--pid", &pid.to_string(), "--no-tui", "--grace", "200ms", "--duration"])
            .arg(format!("{}ms", length.as_millis()))
            .arg("-o")
            .arg(trace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "tracer",
    )?;
    let err = Lines::read(tracer.child.stderr.take().context("tracer stderr")?, "tracer stderr");
    err.wait_for("tracer: tracing pid", Duration::from_secs(60))?;
    let tracer_pid = tracer.pid();
    let cpu_before = cpu_s(tracer_pid).context("reading the tracer's CPU time")?;
    let go = Instant::now();
    // The program has more pairs than the run needs (its sleeps overshoot): it is killed
    // at the end, so no phase timeout of its own cuts a long soak short.
    target.go()?;
    let mut rss = Vec::new();
    let mut cpu_at_end = cpu_before;
    while go.elapsed() < length {
        std::thread::sleep(SAMPLE_EVERY.min(length.saturating_sub(go.elapsed())).max(Duration::from_millis(10)));
        if let Some(r) = super::proc::status_bytes(tracer_pid, "VmRSS") {
            rss.push((go.elapsed().as_secs_f64(), r));
        }
        if let Some(c) = cpu_s(tracer_pid) {
            cpu_at_end = c;
        }
    }
    let wall = go.elapsed().as_secs_f64();
    let finished = tracer.wait_success(Duration::from_secs(120), &err)?;
    let _ = finished;
    drop(target);
    let events = count_lines(trace)?;
    let trace_bytes = std::fs::metadata(trace).map(|m| m.len()).unwrap_or(0);
    let minute = rss.iter().find(|(t, _)| *t >= 60.0).or(rss.first()).map(|&(_, r)| r);
    let after: Option<u64> = rss.iter().filter(|(t, _)| *t >= 60.0).map(|&(_, r)| r).max();
    let _ = std::fs::remove_file(trace);
    Ok(SteadyRun {
        format: if trace.to_string_lossy().ends_with(".zst") { "jsonl.zst".into() } else { "jsonl".into() },
        seconds: wall,
        events,
        events_per_s: events as f64 / wall.max(1e-9),
        tracer_cpu_pct: (cpu_at_end - cpu_before) / wall.max(1e-9) * 100.0,
        trace_bytes,
        bytes_per_event: trace_bytes as f64 / events.max(1) as f64,
        rss_end_bytes: rss.last().map(|&(_, r)| r),
        rss,
        rss_at_1min_bytes: minute,
        rss_max_after_1min_bytes: after,
    })
}

/// User + system CPU seconds of a process (its threads included), from /proc.
pub(super) fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: plain libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Lines of a trace file, decompressed on the way when it is a `.zst` one.
fn count_lines(trace: &Path) -> Result<u64> {
    use std::io::Read;
    let file = std::fs::File::open(trace).with_context(|| format!("opening {}", trace.display()))?;
    let mut input: Box<dyn Read> = if trace.to_string_lossy().ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(file).context("reading a zstd trace")?)
    } else {
        Box::new(file)
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = input.read(&mut buf).with_context(|| format!("reading {}", trace.display()))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
