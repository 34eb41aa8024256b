//! The `watch` scenario: `tracer watch` runs as a host agent with the workload's memory
//! cgroup in scope, metrics scraped by a real Prometheus server, OTLP records sent to a
//! receiver; the workload loads eagerly and is OOM-killed, as in the bug report. What it
//! shows: the agent's verdict on standard error, the incident folder, the Prometheus
//! query answering with the cgroup's labels, the OTLP records received.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    http,
    otlp_receiver::OtlpReceiver,
    prometheus::PrometheusServer,
    run::{prepare, finish, model_arg, pause, say, start_probe, stop_probe, stopping, wait_gone, Finished, Options, Outcome},
    ChildGuard,
};

/// What the agent's outputs held at the end.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// The incident folder of the OOM verdict.
    pub incident: Option<PathBuf>,
    /// The Prometheus query and its answer (one line per series); None when Prometheus
    /// is not installed.
    pub prometheus: Option<(String, Vec<String>)>,
    /// OTLP records received: (severity, body, cause attribute).
    pub otlp: Vec<(String, String, Option<String>)>,
    /// The cgroup's path in its hierarchy, as the agent labels it.
    pub cgroup: String,
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline || stopping() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The incident folder of an `oom_killed` verdict, once written.
fn oom_incident(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    found.sort();
    found.into_iter().find(|d| {
        d.join("report.md").is_file()
            && std::fs::read(d.join("verdict.json")).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).is_some_and(|v| v["cause"] == "oom_killed")
    })
}

pub(crate) fn run(opts: &Options) -> Result<Outcome> {
    let out = &opts.out_dir;
    let (super::run::Checkpoints { nllb, aya, .. }, cg) = prepare(opts)?;
    let cgroup = format!("/{}", cg.path.file_name().and_then(|n| n.to_str()).unwrap_or_default());

    let receiver = OtlpReceiver::start().context("cannot start the OTLP receiver")?;
    let metrics_port = http::free_port().context("no free port on 127.0.0.1")?;
    let metrics = format!("127.0.0.1:{metrics_port}");
    let incidents = out.join("incidents");
    let log_path = out.join("tracer.log");
    let log = File::create(&log_path).context("cannot create tracer.log")?;
    let mut agent = Command::new(&opts.bins.tracer);
    agent.arg("watch").arg("--cgroup").arg(&cg.path).args(["--metrics", &metrics, "--otlp", &receiver.url()]);
    agent.arg("--jsonl").arg(out).arg("--incident-dir").arg(&incidents);
    agent.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let mut agent = ChildGuard(agent.spawn().with_context(|| format!("cannot start {}", opts.bins.tracer.display()))?);
    let ready = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&log_path).ok().filter(|l| l.contains("Ctrl-C stops")).map(|_| ())
    });
    if ready.is_none() {
        bail!("tracer watch did not start in 60 s; see {}", log_path.display());
    }
    say(opts, &format!("tracer watch {} running: metrics at http://{metrics}/metrics, OTLP to {}", agent.pid(), receiver.url()));
    let prometheus = PrometheusServer::start(&metrics, Duration::from_secs(1))?;
    match &prometheus {
        Some(p) => say(opts, &format!("prometheus scraping the agent every second at {}", p.url())),
        None => say(opts, "prometheus is not installed (`cargo xtask setup` installs it): no query"),
    }

    let port = http::free_port().context("no free port on 127.0.0.1")?;
    let mut server = cg.command(&opts.bins.workload);
    server.args(["serve", "--port", &port.to_string(), "--load", "eager"]);
    server.arg("--model").arg(model_arg("nllb", &nllb)).arg("--model").arg(model_arg("aya", &aya));
    let wlog = File::create(out.join("workload.log")).context("cannot create workload.log")?;
    server.stdin(Stdio::null()).stdout(wlog.try_clone()?).stderr(wlog);
    let _server = ChildGuard(server.spawn().context("cannot start the workload")?);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http::port_listening(port) {
        if stopping() || Instant::now() > deadline {
            bail!("the workload did not listen on port {port} within 60 s; see {}", out.join("workload.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let server_pid = *cg.procs().first().context("the workload is not in its memory cgroup")? as u32;
    say(opts, &format!("workload pid {server_pid} listening on 127.0.0.1:{port}, loading eagerly"));
    let (mut probe, probe_records) = start_probe(opts, port)?;
    wait_gone(server_pid, Duration::from_secs(300));
    pause(Duration::from_secs(1));
    stop_probe(&mut probe);
    say(opts, "server gone; waiting for the agent's incident, Prometheus and OTLP");

    let mut outcome = AgentOutcome { cgroup: cgroup.clone(), ..AgentOutcome::default() };
    outcome.incident = wait_for(Duration::from_secs(30), || oom_incident(&incidents));
    let records = receiver.wait_for(Duration::from_secs(15), |r| r.iter().any(|x| x.attributes.get("tracer.cause").is_some_and(|c| c == "oom_killed")));
    outcome.otlp = records.iter().map(|r| (r.severity_text.clone(), r.body.clone(), r.attributes.get("tracer.cause").cloned())).collect();
    if let Some(p) = &prometheus {
        let query = format!("tracer_oom_kills_total{{cgroup=\"{cgroup}\"}}");
        let result = p.wait_for(&query, Duration::from_secs(30), |r| !r.is_empty()).unwrap_or_default();
        let lines = result.iter().map(|s| format!("{} = {}", s["metric"], s["value"][1])).collect();
        outcome.prometheus = Some((query, lines));
    }
    agent.signal(libc::SIGTERM);
    if agent.wait_timeout(Duration::from_secs(20)).is_none() {
        agent.signal(libc::SIGKILL);
    }
    let oom_kills = cg.oom_kills();
    drop(cg);

    // The agent's JSON lines are the trace; the incident holds the Perfetto file.
    let trace = out.join("tracer-watch.jsonl");
    let perfetto = outcome.incident.as_ref().map(|d| d.join("trace.perfetto.json")).unwrap_or_else(|| out.join("trace.perfetto.json"));
    let mut result = finish(
        opts,
        Finished { trace, perfetto, probe_records, server_pid, killer_pid: None, oom_kills, models: None, interrupted: stopping() },
    )?;
    if let Some(dir) = &outcome.incident {
        result.report = dir.join("report.md");
    }
    result.agent = Some(outcome);
    Ok(result)
}
