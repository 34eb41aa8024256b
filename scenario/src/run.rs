//! Running one scenario end to end.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http;
use crate::{ChildGuard, Memcg, Scenario};

/// The binaries a scenario drives.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub tracer: PathBuf,
    pub workload: PathBuf,
}

/// The memory limit and the sizes of the synthetic checkpoints: NLLB must fit the limit,
/// Aya must not; the smaller Aya fits beside NLLB when loaded at its own size, and would
/// not at twice it (what a loader that maps the file and copies it out peaks at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub limit: u64,
    pub nllb: u64,
    pub aya: u64,
    pub aya_small: u64,
}

impl Sizes {
    /// For `run-workload`: loads that take seconds, as real ones do.
    pub const DEMO: Sizes = Sizes::for_limit(1 << 30);
    /// For the test suite: the same story in a second or two.
    pub const SMALL: Sizes = Sizes { limit: 256 << 20, nllb: 40 << 20, aya: 600 << 20, aya_small: 115 << 20 };

    /// NLLB at 30% of the limit fits; Aya at 150% cannot; the small Aya at 45% fits beside
    /// NLLB at its own size (75% of the limit) and not at twice it (120%).
    pub const fn for_limit(limit: u64) -> Sizes {
        Sizes { limit, nllb: limit * 3 / 10, aya: limit * 3 / 2, aya_small: limit * 45 / 100 }
    }
}

/// The checkpoints a scenario serves.
pub(crate) struct Checkpoints {
    pub nllb: PathBuf,
    pub aya: PathBuf,
    /// Synthetic only: the smaller Aya the fixed scenario loads.
    pub aya_small: Option<PathBuf>,
}

/// Where the checkpoints come from.
#[derive(Debug, Clone)]
pub enum Models {
    /// Generated with `workload gen-model --bytes`, cached in this folder between runs.
    Synthetic { cache: PathBuf },
    /// Real Hugging Face folders given by the user.
    Real { nllb: PathBuf, aya: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub bins: Binaries,
    pub sizes: Sizes,
    pub models: Models,
    /// Created if missing; receives the trace, report, Perfetto file and logs.
    pub out_dir: PathBuf,
    /// Let the tracer draw its live timeline on this terminal.
    pub tui: bool,
    /// Print progress lines (never while the TUI owns the terminal).
    pub verbose: bool,
}

/// What a scenario left behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub out_dir: PathBuf,
    pub trace: PathBuf,
    pub report: PathBuf,
    pub perfetto: PathBuf,
    pub probe_records: PathBuf,
    /// The verdict lines the tracer wrote into the trace.
    pub verdicts: Vec<Value>,
    /// The probe's summary line.
    pub probe: Value,
    /// How the server ended, from the trace ("killed by SIGKILL", "exit code 0"), if it did.
    pub server_end: Option<String>,
    pub server_pid: u32,
    /// The process that sent the SIGKILL in the `killed` scenario.
    pub killer_pid: Option<u32>,
    pub oom_kills: u64,
    /// `/models` as the service answered it last (None when it was already gone).
    pub models: Option<Value>,
    pub interrupted: bool,
    /// The `watch` scenario: what the agent's outputs held.
    pub agent: Option<crate::watch::AgentOutcome>,
}

impl Outcome {
    /// ECONNRESET/ECONNREFUSED/... counts from the probe.
    pub fn connection_errors(&self) -> Vec<(String, u64)> {
        self.probe["summary"]["connection_errors"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default()
    }

    pub fn causes(&self) -> Vec<&str> {
        self.verdicts.iter().filter_map(|v| v["cause"].as_str()).collect()
    }

    fn verdict(&self, cause: &str) -> Result<&Value, String> {
        let found: Vec<&Value> = self.verdicts.iter().filter(|v| v["cause"] == cause).collect();
        match found.as_slice() {
            [one] if one["pid"] == self.server_pid => Ok(one),
            [one] => Err(format!("the {cause} verdict is about pid {}, not the server {}", one["pid"], self.server_pid)),
            _ => Err(format!("expected one {cause} verdict, got causes {:?}", self.causes())),
        }
    }

    /// Whether the run showed what the scenario is about; the reason when not.
    pub fn check(&self) -> Result<(), String> {
        let errors = self.connection_errors();
        let failures = |e: &[(String, u64)]| e.iter().map(|(_, n)| n).sum::<u64>();
        match self.scenario {
            Scenario::OomDuringLoad => {
                if self.oom_kills == 0 {
                    return Err("the memory cgroup recorded no OOM kill".into());
                }
                let v = self.verdict("oom_killed")?;
                if self.probe["summary"]["max_models_loaded"] != 1 {
                    return Err(format!("health never said models_loaded: 1 ({})", self.probe["summary"]));
                }
                if !errors.iter().any(|(k, n)| (k == "ECONNRESET" || k == "ECONNREFUSED") && *n > 0) {
                    return Err(format!("the probe saw no ECONNRESET/ECONNREFUSED: {errors:?}"));
                }
                if v["resets"].as_u64().unwrap_or(0) == 0 {
                    return Err("the OOM verdict explains no reset".into());
                }
            }
            Scenario::Fixed => {
                if failures(&errors) > 0 {
                    return Err(format!("the probe saw connection errors: {errors:?}"));
                }
                if self.oom_kills > 0 {
                    return Err("an OOM kill happened".into());
                }
                if let Some(v) = self.verdicts.iter().find(|v| v["resets"].as_u64().unwrap_or(0) > 0) {
                    return Err(format!("the tracer reported resets: {}", v["summary"]));
                }
                let aya = self.models.as_ref().and_then(|m| m.as_array()?.iter().find(|m| m["name"] == "aya").cloned());
                let reason = aya.as_ref().and_then(|a| a["reason"].as_str()).unwrap_or_default();
                if aya.as_ref().map(|a| &a["state"]) != Some(&Value::from("FAILED")) || !reason.contains("over memory budget") {
                    return Err(format!("aya is not FAILED over its budget: {aya:?}"));
                }
                for name in ["nllb", AYA_SMALL] {
                    let Some(models) = self.models.as_ref().and_then(|m| m.as_array()) else { break };
                    match models.iter().find(|m| m["name"] == name) {
                        Some(m) if m["state"] != "READY" => return Err(format!("{name} did not load: {m}")),
                        None if name == "nllb" => return Err("nllb is not served".into()),
                        _ => {}
                    }
                }
                if self.server_end.as_deref() != Some("exit code 0") {
                    return Err(format!("the service did not stop cleanly: {:?}", self.server_end));
                }
            }
            Scenario::Killed => {
                let v = self.verdict("killed_by_signal")?;
                let summary = v["summary"].as_str().unwrap_or_default();
                let killer = self.killer_pid.map(|p| p.to_string()).unwrap_or_default();
                if !summary.contains("SIGKILL") || killer.is_empty() || !summary.contains(&killer) {
                    return Err(format!("the verdict does not name SIGKILL from pid {killer}: {summary}"));
                }
            }
            Scenario::CrashLoop => {
                let loops: Vec<&Value> = self.verdicts.iter().filter(|v| v["cause"] == "crash_loop").collect();
                let [v] = loops.as_slice() else {
                    return Err(format!("expected one crash_loop verdict, got causes {:?}", self.causes()));
                };
                let summary = v["summary"].as_str().unwrap_or_default();
                let by = format!("by sh[{}]", self.server_pid);
                if !summary.contains("each time it was OOM-killed") || !summary.contains(&by) {
                    return Err(format!("the crash loop does not say OOM-killed each time, restarted {by}: {summary}"));
                }
                if self.oom_kills < u64::from(crate::crash_loop::STARTS) {
                    return Err(format!("the memory cgroup recorded {} OOM kills, not {}", self.oom_kills, crate::crash_loop::STARTS));
                }
                if self.causes().contains(&"oom_killed") {
                    return Err(format!("the deaths were not grouped: {:?}", self.causes()));
                }
            }
            Scenario::Watch => {
                let v = self.verdict("oom_killed")?;
                let Some(agent) = &self.agent else { return Err("the agent's outputs were not read".into()) };
                if v["service"]["cgroup"] != agent.cgroup.as_str() {
                    return Err(format!("the verdict does not name the cgroup {}: {}", agent.cgroup, v["service"]));
                }
                let Some(incident) = &agent.incident else { return Err("no incident folder with the OOM verdict".into()) };
                for f in ["events.jsonl", "report.md", "trace.perfetto.json", "verdict.json"] {
                    if !incident.join(f).is_file() {
                        return Err(format!("the incident {} has no {f}", incident.display()));
                    }
                }
                // The agent's count, through Prometheus, is the kernel's own count for the cgroup.
                let kernel = format!("= \"{}\"", self.oom_kills);
                match &agent.prometheus {
                    None => return Err("Prometheus is not installed: `cargo xtask setup` installs Debian's prometheus".into()),
                    Some((query, answer)) if self.oom_kills == 0 || answer.len() != 1 || !answer[0].ends_with(&kernel) => {
                        return Err(format!(
                            "Prometheus answered {query} with {answer:?}, not one series at the {} OOM kills the memory cgroup counted",
                            self.oom_kills
                        ))
                    }
                    _ => {}
                }
                if !agent.otlp.iter().any(|(_, body, cause)| cause.as_deref() == Some("oom_killed") && body == v["summary"].as_str().unwrap_or("?")) {
                    return Err(format!("no OTLP record of the OOM verdict among {:?}", agent.otlp));
                }
                if !agent.otlp.iter().any(|(_, body, _)| body.starts_with("OOM killer chose")) {
                    return Err("no OTLP record of the OOM kill itself".into());
                }
            }
            Scenario::Crash => {
                let v = self.verdict("crashed")?;
                if !v["summary"].as_str().unwrap_or_default().contains("SIGSEGV") {
                    return Err(format!("the crash verdict does not name SIGSEGV: {}", v["summary"]));
                }
            }
        }
        Ok(())
    }
}

/// Set by the caller's Ctrl-C handler: every wait gives up, everything is cleaned up.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub(crate) fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub(crate) fn say(opts: &Options, line: &str) {
    if opts.verbose && !opts.tui {
        eprintln!("run-workload: {line}");
    }
}

/// Runs the scenario; the cgroup and every process are gone when this returns.
pub fn run(opts: &Options) -> Result<Outcome> {
    match opts.scenario {
        Scenario::CrashLoop => return crate::crash_loop::run(opts),
        Scenario::Watch => return crate::watch::run(opts),
        _ => {}
    }
    let out = &opts.out_dir;
    let (Checkpoints { nllb, aya, aya_small }, cg) = prepare(opts)?;

    let port = http::free_port().context("no free port on 127.0.0.1")?;
    let trace = out.join("trace.jsonl");
    let perfetto = out.join("trace.perfetto.json");
    let mode = if opts.scenario == Scenario::OomDuringLoad { "eager" } else { "background" };
    let mut tracer = Command::new(&opts.bins.tracer);
    tracer.arg("run").arg("--jsonl").arg(&trace).arg("--perfetto").arg(&perfetto).args(["--grace", "2s"]);
    if !opts.tui {
        tracer.arg("--no-tui");
    }
    tracer.arg("--").arg("/bin/sh").arg("-c").arg(Memcg::JOIN_AND_EXEC).arg(&cg.path).arg(&opts.bins.workload);
    tracer.args(["serve", "--port", &port.to_string(), "--load", mode]);
    tracer.arg("--model").arg(model_arg("nllb", &nllb)).arg("--model").arg(model_arg("aya", &aya));
    // The fix loads what fits: after Aya is refused, the smaller one loads.
    let last_model = match (&aya_small, opts.scenario) {
        (Some(small), Scenario::Fixed) => {
            tracer.arg("--model").arg(model_arg(AYA_SMALL, small));
            AYA_SMALL
        }
        _ => "aya",
    };
    if opts.scenario == Scenario::Crash {
        tracer.args(["--debug-crash-during-load", "aya"]);
    }
    if !opts.tui {
        let log = File::create(out.join("tracer.log")).context("cannot create tracer.log")?;
        tracer.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    }
    let mut tracer = ChildGuard(tracer.spawn().with_context(|| format!("cannot start {}", opts.bins.tracer.display()))?);
    say(opts, &format!("tracer {} started; workload serve --load {mode} on port {port}", tracer.pid()));

    // The server listens before it loads anything; the tracer attached before it started.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http::port_listening(port) {
        if let Some(status) = tracer.0.try_wait()? {
            bail!("the tracer stopped ({status}) before the workload listened; see {}", out.join("tracer.log").display());
        }
        if stopping() || Instant::now() > deadline {
            bail!("the workload did not listen on port {port} within 60 s; see {}", out.join("tracer.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let server_pid = *cg.procs().first().context("the workload is not in its memory cgroup")? as u32;
    say(opts, &format!("workload pid {server_pid} listening on 127.0.0.1:{port}"));

    let (mut probe, probe_records) = start_probe(opts, port)?;

    let mut killer_pid = None;
    let mut models = None;
    match opts.scenario {
        // The crash loop and the agent have their own runs.
        Scenario::OomDuringLoad | Scenario::Crash | Scenario::CrashLoop | Scenario::Watch => {
            wait_gone(server_pid, Duration::from_secs(300));
        }
        Scenario::Fixed => {
            wait_settled(port, last_model, Duration::from_secs(300));
            // Keep probing a while: the service must stay up and answer.
            pause(Duration::from_secs(3));
            models = http::get_json(port, "/models");
            stop_probe(&mut probe);
            // SAFETY: plain kill(2); SIGTERM is the service's clean stop.
            unsafe { libc::kill(server_pid as i32, libc::SIGTERM) };
            wait_gone(server_pid, Duration::from_secs(30));
        }
        Scenario::Killed => {
            wait_settled(port, "nllb", Duration::from_secs(300));
            pause(Duration::from_secs(1));
            models = http::get_json(port, "/models");
            let mut kill = ChildGuard(
                Command::new("/bin/kill").args(["-KILL", &server_pid.to_string()]).spawn().context("cannot run /bin/kill")?,
            );
            killer_pid = Some(kill.pid());
            let _ = kill.0.wait();
            wait_gone(server_pid, Duration::from_secs(30));
        }
    }
    // Clients keep coming after a death, as they did in the report: let the probe see it.
    pause(Duration::from_secs(1));
    stop_probe(&mut probe);
    say(opts, "server gone or stopped; waiting for the tracer to finish");
    let interrupted = wait_tracer(opts, &mut tracer);
    let oom_kills = cg.oom_kills();
    drop(cg);

    finish(opts, Finished { trace, perfetto, probe_records, server_pid, killer_pid, oom_kills, models, interrupted })
}

/// Waits for the tracer to end on its own (after the user's q with the live view),
/// stopping it after Ctrl-C or a minute; whether the run was interrupted.
pub(crate) fn wait_tracer(opts: &Options, tracer: &mut ChildGuard) -> bool {
    let interrupted = stopping();
    if interrupted {
        tracer.signal(libc::SIGINT);
    }
    // With the TUI the user quits with q; without it the tracer ends after its grace.
    let limit = if opts.tui && !interrupted { Duration::from_secs(24 * 3600) } else { Duration::from_secs(60) };
    if tracer.wait_timeout(limit).is_none() {
        tracer.signal(libc::SIGINT);
        tracer.wait_timeout(Duration::from_secs(10));
    }
    interrupted
}

/// `workload probe` against the service on `port`, as the report's clients: its records
/// in the output folder.
pub(crate) fn start_probe(opts: &Options, port: u16) -> Result<(ChildGuard, PathBuf)> {
    let records = opts.out_dir.join("probe.jsonl");
    let probe = ChildGuard(
        Command::new(&opts.bins.workload)
            .args(["probe", "--interval", "50ms", "--translate-interval", "300ms", "--timeout", "3s"])
            .arg("--url")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--out")
            .arg(&records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(opts.out_dir.join("probe.log"))?)
            .spawn()
            .context("cannot start the probe")?,
    );
    Ok((probe, records))
}

/// What a scenario's run hands to [`finish`].
pub(crate) struct Finished {
    pub trace: PathBuf,
    pub perfetto: PathBuf,
    pub probe_records: PathBuf,
    pub server_pid: u32,
    pub killer_pid: Option<u32>,
    pub oom_kills: u64,
    pub models: Option<Value>,
    pub interrupted: bool,
}

/// The report of the trace, the verdicts and the probe's summary: the outcome.
pub(crate) fn finish(opts: &Options, f: Finished) -> Result<Outcome> {
    let Finished { trace, perfetto, probe_records, server_pid, killer_pid, oom_kills, models, interrupted } = f;
    let out = &opts.out_dir;
    let report = out.join("report.md");
    let status = Command::new(&opts.bins.tracer)
        .arg("report")
        .arg(&trace)
        .args(["--format", "markdown", "--out"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(File::create(out.join("report.log"))?)
        .status()
        .context("cannot run tracer report")?;
    if !status.success() {
        bail!("tracer report failed ({status}); see {}", out.join("report.log").display());
    }
    let trace_text = std::fs::read_to_string(&trace).with_context(|| format!("cannot read {}", trace.display()))?;
    let lines: Vec<Value> = trace_text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let verdicts = lines.iter().filter(|v| v["kind"] == "verdict").cloned().collect();
    let server_end = lines.iter().find(|v| v["kind"] == "exit" && v["pid"] == server_pid && v["group_dead"] == true).map(end_of);
    let probe_summary = std::fs::read_to_string(&probe_records)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| serde_json::from_str(l).ok()))
        .unwrap_or(Value::Null);
    Ok(Outcome {
        scenario: opts.scenario,
        out_dir: out.clone(),
        trace,
        report,
        perfetto,
        probe_records,
        verdicts,
        probe: probe_summary,
        server_end,
        server_pid,
        killer_pid,
        oom_kills,
        models,
        interrupted,
        agent: None,
    })
}

pub(crate) fn model_arg(name: &str, dir: &Path) -> String {
    format!("{name}={}", dir.display())
}

pub(crate) fn end_of(exit: &Value) -> String {
    match (exit["signal_name"].as_str(), exit["exit_code"].as_i64()) {
        (Some(sig), _) => format!("killed by {sig}"),
        (None, Some(code)) => format!("exit code {code}"),
        _ => "ended".into(),
    }
}

pub(crate) fn pause(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); its state letter says it is gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

pub(crate) fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while alive(pid) && Instant::now() < deadline && !stopping() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Until `model` is READY or FAILED (or the server died).
fn wait_settled(port: u16, model: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !stopping() {
        match http::model_state(port, model).as_deref() {
            Some("READY") | Some("FAILED") => return,
            None if !http::port_open(port) => return,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// SIGINT, as a user's Ctrl-C: the probe writes its summary and exits.
pub(crate) fn stop_probe(probe: &mut ChildGuard) {
    if matches!(probe.0.try_wait(), Ok(None)) {
        probe.signal(libc::SIGINT);
        probe.wait_timeout(Duration::from_secs(10));
    }
}

/// The name the fixed scenario serves the smaller Aya under.
pub const AYA_SMALL: &str = "aya-small";

/// What every scenario starts with: its output folder, the checkpoints, and the memory
/// cgroup with the limit (said).
pub(crate) fn prepare(opts: &Options) -> Result<(Checkpoints, Memcg)> {
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let checkpoints = checkpoints(opts)?;
    let cg = Memcg::new(opts.scenario.name(), opts.sizes.limit).context("cannot create a memory cgroup (run as root)")?;
    say(opts, &format!("memory cgroup {} with a limit of {} MiB", cg.path.display(), opts.sizes.limit >> 20));
    Ok((checkpoints, cg))
}

/// The model folders: the user's, or synthetic ones sized for the limit (cached).
pub(crate) fn checkpoints(opts: &Options) -> Result<Checkpoints> {
    match &opts.models {
        Models::Real { nllb, aya } => Ok(Checkpoints { nllb: nllb.clone(), aya: aya.clone(), aya_small: None }),
        Models::Synthetic { cache } => Ok(Checkpoints {
            nllb: synthetic(opts, cache, "nllb", opts.sizes.nllb)?,
            aya: synthetic(opts, cache, "aya", opts.sizes.aya)?,
            aya_small: match opts.scenario {
                Scenario::Fixed => Some(synthetic(opts, cache, "aya", opts.sizes.aya_small)?),
                _ => None,
            },
        }),
    }
}

fn synthetic(opts: &Options, cache: &Path, arch: &str, bytes: u64) -> Result<PathBuf> {
    let dir = cache.join(format!("{arch}-{bytes}"));
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    say(opts, &format!("generating a synthetic {arch} checkpoint of {} MiB in {}", bytes >> 20, dir.display()));
    // Written aside and renamed, so an interrupted run never leaves half a cache entry.
    let partial = cache.join(format!(".{arch}-{bytes}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let status = Command::new(&opts.bins.workload)
        .args(["gen-model", "--arch", arch, "--bytes", &bytes.to_string(), "--out"])
        .arg(&partial)
        .stdin(Stdio::null())
        .status()
        .context("cannot run workload gen-model")?;
    if !status.success() {
        bail!("workload gen-model --arch {arch} --bytes {bytes} failed ({status})");
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("cannot move the checkpoint to {}", dir.display()))?;
    Ok(dir)
}
