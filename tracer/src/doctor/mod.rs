//! `tracer doctor`: can this machine trace, and will these models fit?
//!
//! Every check is a [`Check`] row: a stable name, a [`Status`], what was found and, when
//! something is not right, the fix. One module per family: [`kernel`] (version, config,
//! BTF, tracefs, the tracepoints tracer attaches, kprobes), [`privileges`] (root,
//! capabilities, RLIMIT_MEMLOCK), [`memory`] (cgroup layout, the memory cgroup of
//! `--pid`, memory, swap), [`gpu`] (NVIDIA driver and per-GPU memory through NVML) and
//! [`workload`] (the `workload` binary's candle build, and whether the `--model`
//! checkpoints fit, read from their headers by [`checkpoint`]). Each family gathers its
//! facts first and decides in pure functions, which the unit tests drive with text
//! fixtures. [`render`] writes the table or the JSON.
//!
//! The doctor never changes the machine (it does not mount tracefs nor raise limits)
//! and runs without root: what only root can see is `skipped`, saying so.
pub mod checkpoint;
pub mod gpu;
pub mod kernel;
pub mod memory;
pub mod privileges;
pub mod render;
pub mod workload;

use clap::Args;
use serde::{Deserialize, Serialize};

pub use self::checkpoint::ModelSpec;

/// How a check came out. Ordered by severity: the worst of several findings wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As tracer needs it.
    Ok,
    /// Worth knowing; nothing to fix.
    Info,
    /// Could not be checked (typically: needs root); the finding says why.
    Skipped,
    /// tracer works, with less (a missing tracepoint, no BTF...), or a model fits only
    /// partly; the fix says how to get everything.
    Warn,
    /// tracer (or the workload) cannot work this way; exit status 1.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Skipped => "skipped",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable, machine-readable: `kernel`, `tracepoints.tcp`, `model.aya`...
    pub name: String,
    pub status: Status,
    /// What was found, with the numbers.
    pub finding: String,
    /// What to do about it; `null` when there is nothing to do.
    pub fix: Option<String>,
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, finding: impl Into<String>, fix: Option<String>) -> Check {
        Check { name: name.into(), status, finding: finding.into(), fix }
    }

    pub fn ok(name: impl Into<String>, finding: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, finding, None)
    }

    pub fn info(name: impl Into<String>, finding: impl Into<String>) -> Check {
        Check::new(name, Status::Info, finding, None)
    }

    pub fn warn(name: impl Into<String>, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Warn, finding, Some(fix.into()))
    }

    pub fn fail(name: impl Into<String>, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, finding, Some(fix.into()))
    }

    pub fn skipped(name: impl Into<String>, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Skipped, finding, Some(fix.into()))
    }

    /// The same row with a fix, whatever its status (an `info` row that suggests something).
    pub fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Counts by status, and what the exit status is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub ok: usize,
    pub info: usize,
    pub skipped: usize,
    pub warn: usize,
    pub fail: usize,
    /// Whether the doctor ran as root (euid 0): without it, `skipped` rows say what root
    /// would add.
    pub root: bool,
    /// 0 without `fail` rows, 1 with.
    pub exit_status: u8,
}

/// The whole report: `{"checks": [...], "summary": {...}}` in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    pub fn new(checks: Vec<Check>, root: bool) -> Report {
        let mut s = Summary { root, ..Summary::default() };
        for c in &checks {
            *match c.status {
                Status::Ok => &mut s.ok,
                Status::Info => &mut s.info,
                Status::Skipped => &mut s.skipped,
                Status::Warn => &mut s.warn,
                Status::Fail => &mut s.fail,
            } += 1;
        }
        s.exit_status = u8::from(s.fail > 0);
        Report { checks, summary: s }
    }
}

/// What to look at beyond the machine itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The process whose memory cgroup matters (the model server); the doctor's own
    /// when absent.
    pub pid: Option<u32>,
    /// Checkpoints to check against that memory, in load order.
    pub models: Vec<ModelSpec>,
}

/// Runs every check, in report order.
pub fn diagnose(opts: &Options) -> Report {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let root = euid == 0;
    let caps = crate::capture::privileges::effective_caps();

    let kernel = kernel::Facts::gather(root);
    let mut checks = kernel.checks(root);
    checks.extend(privileges::checks(euid, caps, kernel.version));
    let memory = memory::Facts::gather(opts.pid);
    checks.extend(memory.checks());
    let gpus = gpu::Facts::gather();
    checks.extend(gpus.checks());
    let build = workload::Build::find();
    checks.push(workload::check_build(&build, gpus.count()));
    checks.extend(workload::model_checks(&opts.models, &memory, &gpus, &build));
    Report::new(checks, root)
}

/// `tracer doctor [--pid PID] [--model NAME=DIR ...] [--json]`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Checks this machine for tracing and for the workload: kernel version and config \
        (BTF, tracefs, the tracepoints tracer needs, kprobes), privileges (root, CAP_BPF, \
        CAP_PERFMON, RLIMIT_MEMLOCK), cgroup version and the memory limit of --pid, memory and \
        swap, NVIDIA driver and per-GPU memory (NVML), the workload's candle build (CPU/CUDA) and \
        whether the --model checkpoints fit. Each problem comes with its fix.\n\n\
        Runs without root; what only root can see is `skipped`, saying so.\n\n\
        Exit status: 0 when no check is `fail`, 1 otherwise."
)]
pub struct DoctorArgs {
    /// The model server's pid: its memory cgroup and limit (default: the doctor's own)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// A checkpoint folder to size against that memory and the GPUs (repeat for several,
    /// in load order): config.json with model.safetensors, shards with
    /// model.safetensors.index.json, or pytorch_model.bin
    #[arg(long = "model", value_name = "NAME=DIR", value_parser = parse_model_arg)]
    pub models: Vec<ModelSpec>,

    /// JSON for programs: {"checks": [{name, status, finding, fix}], "summary": {...}}
    #[arg(long)]
    pub json: bool,
}

/// `NAME=DIR` for `--model`, as clap's value parser.
pub fn parse_model_arg(s: &str) -> Result<ModelSpec, String> {
    checkpoint::parse_model_spec(s)
}

/// `tracer doctor`: runs the checks and prints the table (or JSON) on standard output.
/// Exit status 0 without `fail` rows, 1 with. Needs no privileges.
pub fn run(args: &DoctorArgs) -> anyhow::Result<std::process::ExitCode> {
    use std::io::{IsTerminal as _, Write as _};

    let report = diagnose(&Options { pid: args.pid, models: args.models.clone() });
    let stdout = std::io::stdout();
    let text = if args.json {
        render::render_json(&report)
    } else {
        let tty = stdout.is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let width = if tty {
            crossterm::terminal::size().map_or(render::WIDTH, |(w, _)| (w as usize).clamp(60, render::WIDTH))
        } else {
            render::WIDTH
        };
        render::render_table(&report, color, width)
    };
    match stdout.lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(e).context("writing the doctor's report to standard output"))
        }
        _ => {}
    }
    Ok(std::process::ExitCode::from(report.summary.exit_status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_each_status_and_fails_only_on_fail() {
        let checks = vec![
            Check::ok("a", "fine"),
            Check::info("b", "fyi"),
            Check::warn("c", "meh", "do x"),
            Check::skipped("d", "unknown without root", "sudo"),
        ];
        let r = Report::new(checks.clone(), false);
        assert_eq!((r.summary.ok, r.summary.info, r.summary.warn, r.summary.skipped, r.summary.fail), (1, 1, 1, 1, 0));
        assert_eq!(r.summary.exit_status, 0);
        let mut with_fail = checks;
        with_fail.push(Check::fail("e", "broken", "fix it"));
        let r = Report::new(with_fail, true);
        assert_eq!((r.summary.fail, r.summary.exit_status, r.summary.root), (1, 1, true));
    }

    #[test]
    fn statuses_order_by_severity_and_serialize_lowercase() {
        assert!(Status::Ok < Status::Info && Status::Info < Status::Skipped);
        assert!(Status::Skipped < Status::Warn && Status::Warn < Status::Fail);
        let json = serde_json::to_string(&Check::warn("x", "y", "z")).unwrap();
        assert_eq!(json, r#"{"name":"x","status":"warn","finding":"y","fix":"z"}"#);
        let ok = serde_json::to_string(&Check::ok("x", "y")).unwrap();
        assert_eq!(ok, r#"{"name":"x","status":"ok","finding":"y","fix":null}"#);
    }
}
