//! Case 6 (agent): what `tracer watch` costs the host it is left on. Idle: its share of a
//! core and its memory with nothing happening but what the host does anyway, /metrics
//! scraped every second as Prometheus would. Churn: processes and memory cgroups coming
//! and going by the thousand, each process killed by a signal (a rare event the agent
//! reports): its memory after. With `--soak DURATION`, the churn goes on that long at a
//! gentler pace and the agent's memory once its caches are full (the warm-up: the series
//! of a removed cgroup are kept `--service-ttl`) is compared with the most after it.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    proc::{status_bytes, Lines, Proc},
    steady::cpu_s,
    stress::Bins,
};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub idle_s: u64,
    /// Processes started and killed in the churn, and memory cgroups made and removed.
    pub processes: u64,
    pub cgroups: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub idle_s: f64,
    pub idle_cpu_pct: f64,
    pub idle_rss_max_bytes: u64,
    pub churn_processes: u64,
    pub churn_cgroups: u64,
    pub churn_s: f64,
    pub churn_cpu_pct: f64,
    pub rss_after_churn_bytes: u64,
    /// Lines the agent wrote over both phases, and the kills it reported in the churn.
    pub lines: u64,
    pub kills_reported: u64,
    pub soak: Option<Soak>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub seconds: f64,
    pub processes: u64,
    pub cgroups: u64,
    pub cpu_pct: f64,
    /// Seconds after which the agent holds all it keeps: growth after it is a leak.
    pub warm_up_s: f64,
    pub rss_at_warm_up_bytes: Option<u64>,
    pub rss_max_after_warm_up_bytes: Option<u64>,
    /// (seconds since the soak began, agent RSS in bytes), every second: whether growth
    /// stops once the agent's bounded caches are full shows here, not in two figures.
    pub rss: Vec<(f64, u64)>,
}

impl Soak {
    /// None when the soak was too short to say (under twice the warm-up).
    pub fn growth_after_warm_up(&self) -> Option<f64> {
        if self.seconds < 2.0 * self.warm_up_s {
            return None;
        }
        Some(self.rss_max_after_warm_up_bytes? as f64 / self.rss_at_warm_up_bytes? as f64 - 1.0)
    }
}

/// The agent's `--service-ttl`: what a gone cgroup's series are kept, the longest of
/// what it keeps (the identity cache keeps gone processes 2 min, the window is 2 min).
const SERVICE_TTL_S: u64 = 300;
/// Its caches are full a minute after the longest keep.
const WARM_UP_S: f64 = SERVICE_TTL_S as f64 + 60.0;

/// The agent, started and attached.
struct Running {
    proc: Proc,
    err: Lines,
    port: u16,
}

fn start(bins: &Bins, jsonl: &Path) -> Result<Running> {
    let port = scenario::http::free_port().context("a free port")?;
    let mut proc = Proc::spawn(
        Command::new(&bins.tracer)
            .args(["watch", "--no-incidents", "--metrics", &port.to_string(), "--service-ttl"])
            .arg(format!("{SERVICE_TTL_S}s"))
            .arg("--jsonl")
            .arg(jsonl)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "tracer watch",
    )?;
    let err = Lines::read(proc.child.stderr.take().context("tracer watch stderr")?, "tracer watch stderr");
    err.wait_for("Ctrl-C stops", Duration::from_secs(60))?;
    Ok(Running { proc, err, port })
}

/// GET /metrics, as a scrape would.
fn scrape(port: u16) {
    use std::io::{Read, Write};
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// A memory cgroup made, a process moved in and killed, the cgroup removed; then
/// `processes / cgroups` plain processes started and killed.
struct Churn {
    base: Option<std::path::PathBuf>,
    n: u64,
    /// The processes it killed: the agent's report is checked against these (other
    /// processes on the host are killed too, by whoever).
    killed: std::collections::HashSet<u32>,
    /// Cgroups it could not remove (a killed task not reaped in time), said at the end.
    leaked: Vec<std::path::PathBuf>,
}

impl Drop for Churn {
    fn drop(&mut self) {
        for d in &self.leaked {
            if std::fs::remove_dir(d).is_err() && d.exists() {
                eprintln!("xtask: bench agent: cannot remove the churn's cgroup {}", d.display());
            }
        }
    }
}

impl Churn {
    fn new() -> Churn {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let base = if v1.join("memory.limit_in_bytes").exists() { v1 } else { Path::new("/sys/fs/cgroup") };
        Churn { base: Some(base.to_path_buf()), n: 0, killed: Default::default(), leaked: Vec::new() }
    }

    /// One process started and killed by SIGKILL, in a fresh cgroup when `in_cgroup`.
    fn one(&mut self, in_cgroup: bool) -> Result<()> {
        self.n += 1;
        let dir = in_cgroup.then(|| self.base.as_ref().map(|b| b.join(format!("tracer-bench-churn-{}-{}", std::process::id(), self.n)))).flatten();
        if let Some(d) = &dir {
            std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut child = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().context("starting sleep")?;
        if let Some(d) = &dir {
            let _ = std::fs::write(d.join("cgroup.procs"), child.id().to_string());
        }
        self.killed.insert(child.id());
        let _ = child.kill();
        let _ = child.wait();
        if let Some(d) = dir {
            // The killed task leaves the cgroup as it is reaped; rmdir may race it.
            let removed = (0..500).any(|_| {
                let ok = std::fs::remove_dir(&d).is_ok() || !d.exists();
                if !ok {
                    std::thread::sleep(Duration::from_millis(2));
                }
                ok
            });
            if !removed {
                self.leaked.push(d);
            }
        }
        Ok(())
    }
}

pub fn run(plan: &Plan, soak: Option<Duration>, bins: &Bins, dir: &Path) -> Result<Agent> {
    let jsonl = dir.join("agent");
    let mut agent = start(bins, &jsonl)?;
    let pid = agent.proc.pid();
    println!("xtask: bench agent: idle {} s with /metrics scraped every second", plan.idle_s);
    let cpu0 = cpu_s(pid).context("the agent's CPU time")?;
    let go = Instant::now();
    let mut idle_rss = 0;
    while go.elapsed() < Duration::from_secs(plan.idle_s) {
        std::thread::sleep(Duration::from_secs(1));
        scrape(agent.port);
        idle_rss = idle_rss.max(status_bytes(pid, "VmRSS").unwrap_or(0));
    }
    let idle_s = go.elapsed().as_secs_f64();
    let cpu1 = cpu_s(pid).unwrap_or(cpu0);

    println!("xtask: bench agent: churn, {} processes killed, {} of them in a memory cgroup made for it", plan.processes, plan.cgroups);
    let every = (plan.processes / plan.cgroups.max(1)).max(1);
    let mut churn = Churn::new();
    let go = Instant::now();
    let mut scraped = Instant::now();
    for k in 0..plan.processes {
        churn.one(k % every == 0)?;
        if scraped.elapsed() >= Duration::from_secs(1) {
            scrape(agent.port);
            scraped = Instant::now();
        }
    }
    let churn_s = go.elapsed().as_secs_f64();
    let cpu2 = cpu_s(pid).unwrap_or(cpu1);
    // The last kills' verdicts come a settle time later.
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = status_bytes(pid, "VmRSS").unwrap_or(0);

    let soak = match soak {
        Some(length) => Some(soak_for(length, &mut agent)?),
        None => None,
    };
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_success(Duration::from_secs(60), &agent.err)?;
    let text = std::fs::read_to_string(jsonl.join("tracer-watch.jsonl")).unwrap_or_default();
    let lines = text.lines().count() as u64;
    // The churn's own kills, by pid: the host's other processes die too.
    let kills_reported = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "signal" && e["signal_name"] == "SIGKILL")
        .filter(|e| e["target_pid"].as_u64().is_some_and(|p| churn.killed.contains(&(p as u32))))
        .count() as u64;
    let _ = std::fs::remove_dir_all(&jsonl);
    Ok(Agent {
        idle_s,
        idle_cpu_pct: (cpu1 - cpu0) / idle_s.max(1e-9) * 100.0,
        idle_rss_max_bytes: idle_rss,
        churn_processes: plan.processes,
        churn_cgroups: plan.cgroups,
        churn_s,
        churn_cpu_pct: (cpu2 - cpu1) / churn_s.max(1e-9) * 100.0,
        rss_after_churn_bytes: rss_after,
        lines,
        kills_reported,
        soak,
    })
}

/// The agent left on for `length` with a gentle churn (a process killed every 100 ms, a
/// cgroup every second): its memory after the warm-up against the rest.
fn soak_for(length: Duration, agent: &mut Running) -> Result<Soak> {
    println!("xtask: bench agent soak: {}", humantime::format_duration(length));
    let pid = agent.proc.pid();
    let cpu0 = cpu_s(pid).context("the agent's CPU time")?;
    let mut churn = Churn::new();
    let go = Instant::now();
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let (mut processes, mut cgroups) = (0u64, 0u64);
    let mut next_sample = Instant::now();
    while go.elapsed() < length {
        let in_cgroup = processes % 10 == 0;
        churn.one(in_cgroup)?;
        processes += 1;
        cgroups += u64::from(in_cgroup);
        if Instant::now() >= next_sample {
            scrape(agent.port);
            if let Some(r) = status_bytes(pid, "VmRSS") {
                rss.push((go.elapsed().as_secs_f64(), r));
            }
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = go.elapsed().as_secs_f64();
    let cpu = cpu_s(pid).unwrap_or(cpu0);
    Ok(Soak {
        seconds,
        processes,
        cgroups,
        cpu_pct: (cpu - cpu0) / seconds.max(1e-9) * 100.0,
        warm_up_s: WARM_UP_S,
        rss_at_warm_up_bytes: rss.iter().find(|(t, _)| *t >= WARM_UP_S).map(|&(_, r)| r),
        rss_max_after_warm_up_bytes: rss.iter().filter(|(t, _)| *t >= WARM_UP_S).map(|&(_, r)| r).max(),
        rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(seconds: f64, at: u64, max: u64) -> Soak {
        Soak {
            seconds,
            processes: 0,
            cgroups: 0,
            cpu_pct: 0.0,
            warm_up_s: 360.0,
            rss_at_warm_up_bytes: Some(at),
            rss_max_after_warm_up_bytes: Some(max),
            rss: Vec::new(),
        }
    }

    #[test]
    fn growth_is_measured_after_the_warm_up_and_only_on_a_long_enough_soak() {
        assert_eq!(soak(700.0, 100, 110).growth_after_warm_up(), None, "under twice the warm-up");
        let g = soak(1800.0, 100, 103).growth_after_warm_up().unwrap();
        assert!((g - 0.03).abs() < 1e-9, "{g}");
        assert_eq!(Soak { rss_at_warm_up_bytes: None, ..soak(1800.0, 1, 1) }.growth_after_warm_up(), None);
    }
}
