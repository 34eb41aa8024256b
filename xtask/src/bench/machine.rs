//! The machine and the tool versions a result was measured with.
use std::{collections::BTreeMap, path::Path, process::Command};

use serde::Serialize;

use super::{stress::Bins, tools::Tools};
use crate::exec::output;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub mem_total_gib: f64,
    pub os: String,
    pub load_avg_at_start: String,
    pub git_commit: String,
    /// Tool name -> its own version line.
    pub versions: BTreeMap<String, String>,
}

pub fn describe(root: &Path, bins: &Bins, tools: &Tools) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| "unknown".into());
    let git = |args: &[&str]| output(Command::new("git").current_dir(root).args(args)).map(|s| s.trim().to_string());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let git_commit =
        git(&["rev-parse", "--short", "HEAD"]).map(|c| if dirty { format!("{c} (with local changes)") } else { c });
    Machine {
        cpu_model,
        cores,
        kernel: first_line(std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()),
        mem_total_gib: mem_kb / (1024.0 * 1024.0),
        os,
        load_avg_at_start: first_line(std::fs::read_to_string("/proc/loadavg").ok()),
        git_commit: git_commit.unwrap_or_else(|| "unknown".into()),
        versions: versions(bins, tools),
    }
}

fn first_line(s: Option<String>) -> String {
    s.and_then(|s| s.lines().next().map(|l| l.trim().to_string())).unwrap_or_else(|| "unknown".into())
}

fn version_of(program: &Path, arg: &str) -> String {
    first_line(output(Command::new(program).arg(arg)))
}

fn versions(bins: &Bins, tools: &Tools) -> BTreeMap<String, String> {
    let mut v = BTreeMap::from([
        ("tracer".to_string(), version_of(&bins.tracer, "--version")),
        ("workload".to_string(), version_of(&bins.workload, "--version")),
        ("rustc".to_string(), version_of(Path::new("rustc"), "--version")),
    ]);
    if let Some(s) = &tools.strace {
        v.insert("strace".into(), version_of(s, "-V"));
    }
    if let Some(b) = &tools.bpftrace {
        v.insert("bpftrace".into(), version_of(b, "--version"));
    }
    v
}
