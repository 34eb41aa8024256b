//! Case 1 (overhead on the target) and case 3's first half (what each tool costs itself):
//! the stress program's phases bare and under each tool, in interleaved rounds (the tool
//! order rotates each round), reported as medians and as ratios to the bare medians.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::{
    stats::{median, ratio},
    stress::{self, Bins, Run, Tool},
    tools::Tools,
};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub rounds: usize,
    pub mem: u64,
    pub signals: u64,
    pub rst: u64,
}

impl Plan {
    pub fn phases(&self) -> Vec<String> {
        vec![format!("mem={}", self.mem), format!("signals={}", self.signals), format!("rst={}", self.rst)]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub phase: String,
    pub ops: u64,
    pub wall_median_s: Option<f64>,
    pub cpu_median_s: Option<f64>,
    /// Median wall time under the tool / median bare wall time.
    pub wall_ratio: Option<f64>,
    pub cpu_ratio: Option<f64>,
    /// Slowest / fastest wall time across the runs: how noisy this figure is.
    pub wall_spread: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolSummary {
    pub tool: Tool,
    pub command: String,
    pub phases: Vec<PhaseSummary>,
    /// The whole run (all phases): target wall and CPU, as ratios to bare.
    pub total_wall_ratio: Option<f64>,
    pub total_cpu_ratio: Option<f64>,
    pub tool_cpu_median_s: Option<f64>,
    pub tool_maxrss_median_bytes: Option<f64>,
    pub tool_lines_median: Option<f64>,
    /// Largest loss the tool reported in any run (0: it kept up; None: strace, which
    /// cannot lose).
    pub lost_max: Option<u64>,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    pub plan: Plan,
    pub tools: Vec<ToolSummary>,
    /// Tools left out, with why.
    pub skipped: Vec<String>,
}

pub fn run(plan: &Plan, bins: &Bins, tools: &Tools, scratch: &Path) -> Result<Overhead> {
    let mut order: Vec<Tool> = vec![Tool::Bare, Tool::Tracer, Tool::Watch];
    let mut skipped = Vec::new();
    for (tool, present) in [(Tool::Strace, tools.strace.is_some()), (Tool::Bpftrace, tools.bpftrace.is_some())] {
        if present {
            order.push(tool);
        } else {
            skipped.push(format!("{}: not installed", tool.name()));
        }
    }
    let phases = plan.phases();
    let mut runs: Vec<(Tool, Vec<Run>)> = order.iter().map(|t| (*t, Vec::new())).collect();
    for round in 0..plan.rounds {
        for k in 0..order.len() {
            let tool = order[(round + k) % order.len()];
            println!("xtask: bench overhead round {}/{}: {}", round + 1, plan.rounds, tool.name());
            let run = match stress::run(tool, bins, tools, &phases, scratch) {
                Ok(run) => run,
                // A peer that hangs or fails in one round (bpftrace once did not end within
                // two minutes of SIGINT) costs that round, not the whole benchmark: its
                // figures are the medians of the rounds it finished, and the report says so.
                Err(e) if tool.is_peer() => {
                    let why = format!("{}: round {} failed and is left out of its medians: {e:#}", tool.name(), round + 1);
                    eprintln!("xtask: bench overhead: {why}");
                    skipped.push(why);
                    continue;
                }
                Err(e) => return Err(e.context(format!("overhead round {}, {}", round + 1, tool.name()))),
            };
            if let Some(slot) = runs.iter_mut().find(|(t, _)| *t == tool) {
                slot.1.push(run);
            }
        }
    }
    runs.retain(|(tool, r)| {
        if r.is_empty() {
            skipped.push(format!("{}: every round failed", tool.name()));
        }
        !r.is_empty()
    });
    let bare = runs.iter().find(|(t, _)| *t == Tool::Bare).map(|(_, r)| r.clone()).unwrap_or_default();
    let tools = runs.into_iter().map(|(tool, runs)| summarize(tool, runs, &bare)).collect();
    Ok(Overhead { plan: plan.clone(), tools, skipped })
}

fn phase_samples(runs: &[Run], phase: &str, f: impl Fn(&stress::Phase) -> f64) -> Vec<f64> {
    runs.iter().flat_map(|r| r.phases.iter().filter(|p| p.name == phase).map(&f)).collect()
}

fn total_samples(runs: &[Run], f: impl Fn(&stress::Phase) -> f64) -> Vec<f64> {
    runs.iter().map(|r| r.phases.iter().map(&f).sum()).collect()
}

fn summarize(tool: Tool, runs: Vec<Run>, bare: &[Run]) -> ToolSummary {
    let names: Vec<(String, u64)> =
        runs.first().map(|r| r.phases.iter().map(|p| (p.name.clone(), p.ops)).collect()).unwrap_or_default();
    let phases = names
        .into_iter()
        .map(|(phase, ops)| {
            let walls = phase_samples(&runs, &phase, |p| p.wall_s);
            let wall = median(&walls);
            let spread = ratio(walls.iter().copied().reduce(f64::max), walls.iter().copied().reduce(f64::min));
            let cpu = median(&phase_samples(&runs, &phase, |p| p.cpu_s));
            let bare_wall = median(&phase_samples(bare, &phase, |p| p.wall_s));
            let bare_cpu = median(&phase_samples(bare, &phase, |p| p.cpu_s));
            PhaseSummary {
                phase,
                ops,
                wall_median_s: wall,
                cpu_median_s: cpu,
                wall_ratio: ratio(wall, bare_wall),
                cpu_ratio: ratio(cpu, bare_cpu),
                wall_spread: spread,
            }
        })
        .collect();
    let costs: Vec<&stress::ToolCost> = runs.iter().filter_map(|r| r.cost.as_ref()).collect();
    ToolSummary {
        tool,
        command: tool.shown(),
        phases,
        total_wall_ratio: ratio(
            median(&total_samples(&runs, |p| p.wall_s)),
            median(&total_samples(bare, |p| p.wall_s)),
        ),
        total_cpu_ratio: ratio(median(&total_samples(&runs, |p| p.cpu_s)), median(&total_samples(bare, |p| p.cpu_s))),
        tool_cpu_median_s: median(&costs.iter().map(|c| c.cpu_s).collect::<Vec<_>>()),
        tool_maxrss_median_bytes: median(&costs.iter().map(|c| c.maxrss_bytes as f64).collect::<Vec<_>>()),
        tool_lines_median: median(&costs.iter().map(|c| c.lines as f64).collect::<Vec<_>>()),
        lost_max: costs.iter().filter_map(|c| c.lost).max(),
        runs,
    }
}
