//! Case 3's second half: how long from the kernel event to its JSON line. The trace is
//! read through a pipe (`--jsonl -`) and every line stamped with CLOCK_REALTIME on
//! arrival; latency = arrival - `ts_ns`. The tracer releases an event once nothing still
//! in the kernel can be older, on its 20 ms tick: at a steady rate expect about 25 ms.
use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    loss::traced_through_pipe,
    stats::{median, percentile},
    stress::Bins,
};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// mmap+munmap pairs, one pair every `pace_us`, all probes.
    pub calls: u64,
    pub pace_us: u64,
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

pub fn run(calls: u64, pace_us: u64, bins: &Bins) -> Result<Latency> {
    println!("xtask: bench latency: {calls} calls paced {pace_us} us apart");
    let piped = traced_through_pipe(
        bins,
        &["--pace-us".into(), pace_us.to_string(), format!("burst={calls}")],
        &["--grace", "200ms"],
    )
    .context("paced latency run")?;
    let lat = &piped.trace.latencies_ns;
    let ms = |v: Option<f64>| v.map(|ns| ns / 1e6);
    Ok(Latency {
        calls,
        pace_us,
        samples: lat.len(),
        p50_ms: ms(median(lat)),
        p99_ms: ms(percentile(lat, 99.0)),
        max_ms: ms(percentile(lat, 100.0)),
    })
}
