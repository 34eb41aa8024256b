//! `cargo xtask run-workload`: reproduce the reset from the bug report, explain it, and
//! show the fixed behaviour, following the report's plan: verify the environment,
//! reproduce minimally, monitor, fix, verify.
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use scenario::{Binaries, Models, Options as ScenarioOptions, Scenario, Sizes};

use crate::{
    exec::{command, exec, workspace_root},
    privilege, setup,
};

#[derive(Args)]
pub struct Options {
    /// Scenario to run: oom-during-load (the bug), fixed, killed, crash, crash-loop, watch
    /// (the host agent); see --list
    #[arg(long, default_value = "oom-during-load")]
    scenario: String,
    /// List the scenarios with one line each
    #[arg(long)]
    list: bool,
    /// Plain progress lines instead of the tracer's live timeline (also when not on a terminal)
    #[arg(long)]
    no_tui: bool,
    /// Keep the output folders of earlier runs of this scenario (by default only the
    /// newest run's folder is kept; synthetic checkpoints are always cached)
    #[arg(long)]
    keep: bool,
    /// Real checkpoints instead of synthetic ones: --model nllb=DIR --model aya=DIR
    #[arg(long = "model", value_name = "NAME=DIR")]
    models: Vec<String>,
    /// Memory limit of the cgroup the workload runs in (synthetic checkpoints are sized to it)
    #[arg(long, value_name = "MiB", default_value_t = Sizes::DEMO.limit >> 20)]
    limit_mib: u64,
    /// (the privileged second run: the build is done)
    #[arg(long, hide = true)]
    built: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.list {
        for s in Scenario::ALL {
            println!("{:<16} {}", s.name(), s.description());
        }
        return Ok(());
    }
    let scenario = Scenario::from_name(&opts.scenario).with_context(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario {:?}: use one of {}", opts.scenario, names.join(", "))
    })?;
    let models = real_models(&opts.models)?;
    let root = workspace_root();
    if !opts.built {
        // Built as the user who typed the command, so that target/ stays theirs.
        setup::run(&setup::Options {})?;
        exec(command("cargo").current_dir(&root).args(["build", "--release", "-p", "tracer", "-p", "workload"]))?;
        if !privilege::is_root() {
            let args: Vec<String> = std::env::args().skip(1).collect();
            return privilege::rerun_as_root("run-workload (a memory cgroup, eBPF programs)", &args);
        }
    }
    let result = play(opts, scenario, models, &root);
    // All of target/: typed as `sudo cargo xtask run-workload`, the build above ran as root too.
    privilege::give_back(&[&root.join("target")]);
    result
}

/// The privileged part: the scenario played, the verdicts printed.
fn play(opts: &Options, scenario: Scenario, models: Option<Models>, root: &std::path::Path) -> Result<()> {
    let release = root.join("target/release");
    let base = root.join("target/run-workload");
    if !opts.keep {
        remove_earlier_runs(&base, scenario)?;
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let out_dir = base.join(format!("{}-{stamp}", scenario.name()));
    let limit = opts.limit_mib << 20;
    let sizes = Sizes::for_limit(limit);
    let tui = !opts.no_tui && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    install_ctrl_c();
    let options = ScenarioOptions {
        scenario,
        bins: Binaries { tracer: release.join("tracer"), workload: release.join("workload") },
        sizes,
        models: models.unwrap_or(Models::Synthetic { cache: base.join("models") }),
        out_dir,
        tui,
        verbose: true,
    };
    println!("run-workload: {scenario}: {}", scenario.description());
    let outcome = scenario::run(&options)?;

    println!("\n== {scenario} ==");
    match &outcome.server_end {
        Some(end) => println!("server pid {}: {end}", outcome.server_pid),
        None => println!("server pid {}: still running when the trace ended", outcome.server_pid),
    }
    if outcome.verdicts.is_empty() {
        println!("verdicts: none (no reset, no fatal event of the server)");
    }
    for v in &outcome.verdicts {
        println!("verdict [{}] {}: {}", v["confidence"].as_str().unwrap_or("?"), v["cause"].as_str().unwrap_or("?"), v["summary"].as_str().unwrap_or(""));
        if let Some(a) = v["action"].as_str() {
            println!("  what to do: {a}");
        }
    }
    let errors = outcome.connection_errors();
    let summary = &outcome.probe["summary"];
    println!(
        "probe: {} requests, {} ok, connection errors: {}",
        summary["requests"],
        summary["ok"],
        if errors.is_empty() { "none".to_string() } else { errors.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ") }
    );
    for m in outcome.models.as_ref().and_then(|m| m.as_array()).into_iter().flatten() {
        let size = m["bytes"].as_u64().map(|b| format!(", {} MiB", b >> 20)).unwrap_or_default();
        match (m["state"].as_str(), m["reason"].as_str(), m["load_seconds"].as_f64()) {
            (Some("READY"), _, Some(s)) => println!("model {}: READY{size}, loaded in {s:.1} s", m["name"].as_str().unwrap_or("?")),
            (Some(state), Some(reason), _) => println!("model {}: {state}{size}: {reason}", m["name"].as_str().unwrap_or("?")),
            (state, _, _) => println!("model {}: {}{size}", m["name"].as_str().unwrap_or("?"), state.unwrap_or("?")),
        }
    }
    if let Some(agent) = &outcome.agent {
        match &agent.incident {
            Some(dir) => println!("incident folder: {}", dir.display()),
            None => println!("incident folder: none written"),
        }
        match &agent.prometheus {
            Some((query, answer)) => {
                println!("prometheus: {query}");
                for line in answer {
                    println!("  {line}");
                }
            }
            None => println!("prometheus: not installed, no query (`cargo xtask setup` installs it)"),
        }
        println!("otlp: {} records received", agent.otlp.len());
        for (severity, body, cause) in &agent.otlp {
            let cause = cause.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default();
            println!("  {severity}{cause} {body}");
        }
    }
    println!("output: {}", outcome.out_dir.display());
    println!("  trace    {}", outcome.trace.display());
    println!("  report   {}", outcome.report.display());
    println!("  perfetto {} (open in https://ui.perfetto.dev)", outcome.perfetto.display());
    println!("  probe    {}", outcome.probe_records.display());
    if outcome.interrupted {
        bail!("interrupted; everything it started was removed");
    }
    outcome.check().map_err(|why| anyhow::anyhow!("the {scenario} scenario did not show what it should: {why}"))?;
    println!("{scenario}: as expected");
    Ok(())
}

fn real_models(specs: &[String]) -> Result<Option<Models>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut nllb = None;
    let mut aya = None;
    for spec in specs {
        match spec.split_once('=') {
            Some(("nllb", dir)) => nllb = Some(PathBuf::from(dir)),
            Some(("aya", dir)) => aya = Some(PathBuf::from(dir)),
            _ => bail!("--model {spec:?}: use --model nllb=DIR --model aya=DIR"),
        }
    }
    match (nllb, aya) {
        (Some(nllb), Some(aya)) => Ok(Some(Models::Real { nllb, aya })),
        _ => bail!("give both --model nllb=DIR and --model aya=DIR, or neither for synthetic checkpoints"),
    }
}

fn remove_earlier_runs(base: &std::path::Path, scenario: Scenario) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(base) else { return Ok(()) };
    let prefix = format!("{}-", scenario.name());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.strip_prefix(&prefix).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit())) {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

extern "C" fn on_ctrl_c(_: libc::c_int) {
    scenario::run::STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ctrl-C ends the waits of the scenario, which then removes what it started.
fn install_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_ctrl_c as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_ctrl_c as *const () as libc::sighandler_t);
    }
}
