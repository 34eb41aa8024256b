//! Case 2 (loss): bursts of one-page mmap/munmap calls at the fastest rate the stress
//! program makes them, traced with `--probes mmap` through a pipe. The program makes
//! exactly N calls and nothing else that maps memory between `go` and its `_exit`, so
//! received (one-page mmap/munmap records) + lost (the mmap/munmap `lost` records) must
//! equal N exactly.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    proc::{Finished, Lines, Proc},
    stats::{median, percentile},
    stress::{Bins, Phase, Target},
    trace::{self, TraceStats},
};

const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize)]
pub struct LossRow {
    pub ring_buffer: String,
    /// Calls the program made (mmap + munmap), known exactly.
    pub generated: u64,
    /// One-page mmap/munmap records in the trace.
    pub received: u64,
    /// Records the tracer counted lost for the mmap and munmap probes.
    pub lost: u64,
    /// received + lost == generated.
    pub exact: bool,
    /// mmap/munmap records of another length (should be 0: nothing else maps memory).
    pub other_mem_calls: u64,
    /// `trace_end`: events written and lost (all probes).
    pub trace_end_events: Option<u64>,
    pub trace_end_lost: Option<u64>,
    pub burst_wall_s: f64,
    /// Calls per second while traced, and in the same burst untraced.
    pub calls_per_s: f64,
    pub bare_calls_per_s: f64,
    pub tracer_cpu_s: f64,
    pub tracer_maxrss_bytes: u64,
    /// Kernel event to JSON line on the pipe, under this burst.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Loss {
    pub rows: Vec<LossRow>,
}

/// The tracer, its trace read through a pipe while the stress program runs `stress_args`.
pub struct Piped {
    pub phases: Vec<Phase>,
    pub trace: TraceStats,
    pub tracer: Finished,
}

pub fn traced_through_pipe(bins: &Bins, stress_args: &[String], tracer_args: &[&str]) -> Result<Piped> {
    let target = Target::start(bins, stress_args)?;
    let mut tracer = Proc::spawn(
        Command::new(&bins.tracer)
            .args(["--pid", &target.proc.pid().to_string()])
            .args(tracer_args)
            .args(["--jsonl", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "tracer",
    )?;
    let stdout = tracer.child.stdout.take().context("tracer stdout")?;
    let reader = std::thread::spawn(move || trace::read(stdout));
    let err = Lines::read(tracer.child.stderr.take().context("tracer stderr")?, "tracer stderr");
    err.wait_for("tracer: tracing pid", ATTACH_TIMEOUT)?;
    let phases = target.go_and_finish()?;
    let finished = tracer.wait_success(EXIT_TIMEOUT, &err)?;
    let trace = reader.join().map_err(|_| anyhow::anyhow!("the trace reader panicked"))??;
    Ok(Piped { phases, trace, tracer: finished })
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Burst sizes traced with the default ring buffer.
    pub sizes: Vec<u64>,
    /// One more burst of this size with a small ring buffer, so that records are lost and
    /// the accounting of the loss is exercised too.
    pub small_ring_size: Option<u64>,
}

pub const RING: &str = "16MiB";
pub const SMALL_RING: &str = "64KiB";

pub fn run(plan: &Plan, bins: &Bins) -> Result<Loss> {
    let runs = plan.sizes.iter().map(|n| (*n, RING)).chain(plan.small_ring_size.map(|n| (n, SMALL_RING)));
    let mut rows = Vec::new();
    for (n, ring) in runs {
        println!("xtask: bench loss: a burst of {n} mmap/munmap calls, bare then traced with a {ring} ring buffer");
        let bare = Target::start(bins, &[format!("burst={n}")])?
            .go_and_finish()
            .with_context(|| format!("bare burst of {n}"))?;
        let bare_wall = bare.first().context("the stress program reported no burst phase")?.wall_s;
        let piped = traced_through_pipe(
            bins,
            &[format!("burst={n}")],
            &["--probes", "mmap", "--grace", "200ms", "--ring-buffer", ring],
        )
        .with_context(|| format!("loss burst of {n}"))?;
        let phase = piped.phases.first().context("the stress program reported no burst phase")?;
        let lost = piped.trace.lost_mem_calls();
        let received = piped.trace.page_calls;
        let lat = &piped.trace.latencies_ns;
        rows.push(LossRow {
            ring_buffer: ring.into(),
            generated: phase.ops,
            received,
            lost,
            exact: received + lost == phase.ops,
            other_mem_calls: piped.trace.other_mem_calls,
            trace_end_events: piped.trace.end.map(|e| e.0),
            trace_end_lost: piped.trace.end.map(|e| e.1),
            burst_wall_s: phase.wall_s,
            calls_per_s: phase.ops as f64 / phase.wall_s.max(1e-9),
            bare_calls_per_s: phase.ops as f64 / bare_wall.max(1e-9),
            tracer_cpu_s: piped.tracer.cpu_s,
            tracer_maxrss_bytes: piped.tracer.maxrss_bytes,
            latency_p50_ms: median(lat).map(|ns| ns / 1e6),
            latency_p99_ms: percentile(lat, 99.0).map(|ns| ns / 1e6),
        });
    }
    Ok(Loss { rows })
}
