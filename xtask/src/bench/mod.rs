//! `cargo xtask bench [--quick]`: what tracing costs the process it watches, against the
//! tools users would reach for instead (strace, bpftrace), in one run, as ratios; what
//! the tracer loses in bursts and costs itself; and how fast the workload loads a model
//! beside Python safetensors. Prints a markdown table and writes it, with the JSON, to
//! `bench/results/`.
mod agent;
mod latency;
mod steady;
mod loss;
mod machine;
mod model;
mod overhead;
mod proc;
mod report;
#[cfg(test)]
mod smoke;
mod stats;
mod stress;
mod tools;
mod trace;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::exec::{command, exec, workspace_root};
use report::Results;
use stress::Bins;
use tools::Tools;

#[derive(Args)]
pub struct Options {
    /// A reduced set that runs in under five minutes
    #[arg(long)]
    quick: bool,
    /// Only these cases, comma separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Case>,
    /// Where the results go [default: bench/results]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Use target/release as it is instead of building it first
    #[arg(long)]
    no_build: bool,
    /// Also leave the tracer attached this long (e.g. 30m) at a steady 10k events/s (with
    /// the steady case), and `tracer watch` on the host with processes and cgroups
    /// churning (with the agent case), and report their memory after the first minute
    /// against the end [default: off]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    soak: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Case {
    /// 1 and 3: the target's slowdown under each tool, and each tool's own cost
    Overhead,
    /// 2: bursts of 10^5..10^7 events: received + lost == generated
    Loss,
    /// 3: kernel event to JSON line
    Latency,
    /// 4: loading a full NLLB checkpoint, workload vs Python safetensors
    Model,
    /// 5: the tracer left attached at a steady rate: CPU, memory, trace bytes per event
    Steady,
    /// 6: `tracer watch` left on the host: idle CPU and memory, processes and cgroups churning
    Agent,
}

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: &'static str,
    pub overhead: overhead::Plan,
    pub loss: loss::Plan,
    pub latency_calls: u64,
    pub latency_pace_us: u64,
    pub model: model::Plan,
    /// Seconds of each steady run (plain and compressed trace).
    pub steady_s: u64,
    pub agent: agent::Plan,
    pub soak: Option<std::time::Duration>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            overhead: overhead::Plan { rounds: 7, mem: 50_000, signals: 100_000, rst: 20_000 },
            loss: loss::Plan { sizes: vec![100_000, 1_000_000, 10_000_000], small_ring_size: Some(1_000_000) },
            latency_calls: 10_000,
            latency_pace_us: 1000,
            model: model::Plan { preset: "full".into(), runs: 5 },
            steady_s: 60,
            agent: agent::Plan { idle_s: 60, processes: 3000, cgroups: 300 },
            soak: None,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            overhead: overhead::Plan { rounds: 5, mem: 5_000, signals: 50_000, rst: 4_000 },
            loss: loss::Plan { sizes: vec![100_000, 1_000_000], small_ring_size: Some(1_000_000) },
            latency_calls: 2_000,
            latency_pace_us: 1000,
            model: model::Plan { preset: "full".into(), runs: 3 },
            steady_s: 15,
            agent: agent::Plan { idle_s: 20, processes: 1000, cgroups: 100 },
            soak: None,
        }
    }

    /// Every case at its smallest: for the test that keeps the harness working.
    #[cfg(test)]
    pub fn smoke() -> Plan {
        Plan {
            mode: "smoke",
            overhead: overhead::Plan { rounds: 1, mem: 200, signals: 200, rst: 20 },
            loss: loss::Plan { sizes: vec![100_000], small_ring_size: Some(100_000) },
            latency_calls: 200,
            latency_pace_us: 1000,
            model: model::Plan { preset: "small".into(), runs: 1 },
            steady_s: 2,
            agent: agent::Plan { idle_s: 2, processes: 20, cgroups: 2 },
            soak: None,
        }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and drops the page cache: run it as root (`sudo cargo xtask bench`)");
    }
    let root = workspace_root();
    let tools = tools::ensure(&root)?;
    if !opts.no_build {
        exec(command("cargo").current_dir(&root).args(["build", "--release", "--bins"]))?;
    }
    let release = root.join("target/release");
    let bins = Bins {
        tracer: release.join("tracer"),
        stress: release.join("tracer-stress"),
        workload: release.join("workload"),
    };
    let mut plan = if opts.quick { Plan::quick() } else { Plan::full() };
    plan.soak = opts.soak;
    let cases = if opts.only.is_empty() {
        vec![Case::Overhead, Case::Loss, Case::Latency, Case::Steady, Case::Agent, Case::Model]
    } else {
        opts.only.clone()
    };
    let results = run_cases(&plan, &cases, &bins, &tools, &root.join("target/bench-cache"))?;
    let md = report::markdown(&results);
    println!("\n{md}");
    let out = opts.out.clone().unwrap_or_else(|| root.join("bench/results"));
    let written = report::write(&results, &out)?;
    println!("xtask: results written to {} (and latest.md / latest.json)", written.display());
    Ok(())
}

/// Runs `cases` of `plan` with these binaries and tools; tools that are missing are
/// skipped and listed. `cache` keeps generated checkpoints between runs.
pub fn run_cases(plan: &Plan, cases: &[Case], bins: &Bins, tools: &Tools, cache: &Path) -> Result<Results> {
    for b in [&bins.tracer, &bins.stress, &bins.workload] {
        if !b.is_file() {
            bail!("{} not found: build it with `cargo build --release --bins`", b.display());
        }
    }
    let started = Instant::now();
    let started_utc = report::utc_now();
    let root = workspace_root();
    let machine = machine::describe(&root, bins, tools);
    let scratch = Scratch::new(&root.join("target/bench-tmp"))?;
    let mut skipped: Vec<String> = Vec::new();
    let mut results = Results {
        started_utc,
        mode: plan.mode.into(),
        duration_s: 0.0,
        machine,
        overhead: None,
        loss: None,
        latency: None,
        steady: None,
        agent: None,
        model: None,
        skipped: Vec::new(),
        bpftrace_script: stress::BPFTRACE_SCRIPT.trim().into(),
    };
    if cases.contains(&Case::Overhead) {
        let o = overhead::run(&plan.overhead, bins, tools, &scratch.0)?;
        skipped.extend(o.skipped.iter().map(|s| format!("case 1/3 under {s}")));
        results.overhead = Some(o);
    }
    if cases.contains(&Case::Loss) {
        results.loss = Some(loss::run(&plan.loss, bins)?);
    }
    if cases.contains(&Case::Latency) {
        results.latency = Some(latency::run(plan.latency_calls, plan.latency_pace_us, bins)?);
    }
    if cases.contains(&Case::Steady) {
        results.steady = Some(steady::run(plan.steady_s, bins, &scratch.0)?);
    }
    if cases.contains(&Case::Agent) {
        results.agent = Some(agent::run(&plan.agent, plan.soak, bins, &scratch.0)?);
    }
    if cases.contains(&Case::Model) {
        let m = model::run(&plan.model, bins, tools.python.as_deref(), cache, &scratch.0)?;
        skipped.extend(m.skipped.iter().map(|s| format!("case 4: {s}")));
        results.model = Some(m);
    }
    // `--only agent --soak 30m` soaks the agent alone (its own soak, in case 6).
    if let Some(length) = plan.soak.filter(|_| cases.contains(&Case::Steady)) {
        let soak = steady::soak(length, bins, &scratch.0)?;
        results.steady.get_or_insert_with(|| steady::Steady { pace_us: steady::PACE_US, runs: Vec::new(), soak: None }).soak = Some(soak);
    }
    results.skipped = skipped;
    results.duration_s = started.elapsed().as_secs_f64();
    Ok(results)
}

/// A scratch directory for trace and probe files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path) -> Result<Scratch> {
        let dir = base.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
