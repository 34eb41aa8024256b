//! One run of the stress program (`tracer-stress bench PHASE=N...`) bare or under a
//! tool attached by pid after its `ready` line: the tracer, strace or bpftrace, each with
//! the equivalent probe set, writing to a file. The program times its phases itself
//! (wall clock and getrusage CPU); the tool's own CPU and peak RSS come from wait4.
use std::{
    io::{BufRead, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{
    proc::{Lines, Proc},
    tools::Tools,
};

/// Syscalls strace traces: the tracer's probe set as syscalls (memory, signals sent,
/// process lifetime, the socket calls that make or end connections). Signals delivered
/// are shown by strace in any case.
pub const STRACE_SET: &str = "trace=mmap,munmap,brk,mremap,kill,tkill,tgkill,rt_sigqueueinfo,rt_tgsigqueueinfo,\
connect,accept,accept4,listen,close,shutdown,clone,clone3,fork,vfork,execve,execveat,exit,exit_group";

/// The tracer's tracepoints in bpftrace, one printed line per event, filtered by the
/// target's pid ($1) as the tracer filters by TGID; resets are global events for both.
pub const BPFTRACE_SCRIPT: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:task:task_newtask /pid == $1/ { printf("fork %s %d %d %d\n", comm, tid, args->pid, args->clone_flags); }
tracepoint:sched:sched_process_exec /pid == $1/ { printf("exec %s %d\n", comm, tid); }
tracepoint:sched:sched_process_exit /pid == $1/ { printf("exit %s %d\n", comm, tid); }
tracepoint:signal:signal_generate /pid == $1 || args->pid == $1/ {
  printf("signal %s %d %d %d %d %d\n", comm, tid, args->pid, args->sig, args->code, args->result);
}
tracepoint:signal:signal_deliver /pid == $1/ { printf("signal_deliver %s %d %d %d\n", comm, tid, args->sig, args->code); }
tracepoint:oom:mark_victim { printf("oom_kill %d\n", args->pid); }
tracepoint:kmem:rss_stat /pid == $1/ { printf("rss %s %d %d %d\n", comm, tid, args->member, args->size); }
tracepoint:tcp:tcp_send_reset { printf("tcp_reset sent %s %d %d\n", comm, tid, args->state); }
tracepoint:tcp:tcp_receive_reset { printf("tcp_reset received %s %d %d %d\n", comm, tid, args->sport, args->dport); }
tracepoint:sock:inet_sock_set_state /pid == $1/ {
  printf("tcp_state %s %d %d %d %d %d\n", comm, tid, args->oldstate, args->newstate, args->sport, args->dport);
}
tracepoint:syscalls:sys_enter_mmap /pid == $1/ { @mmap[tid] = args->len; }
tracepoint:syscalls:sys_exit_mmap /pid == $1/ { printf("mmap %s %d %d %d\n", comm, tid, @mmap[tid], args->ret); delete(@mmap[tid]); }
tracepoint:syscalls:sys_enter_munmap /pid == $1/ { @munmap[tid] = args->len; }
tracepoint:syscalls:sys_exit_munmap /pid == $1/ { printf("munmap %s %d %d %d\n", comm, tid, @munmap[tid], args->ret); delete(@munmap[tid]); }
tracepoint:syscalls:sys_enter_brk /pid == $1/ { @brk[tid] = args->brk; }
tracepoint:syscalls:sys_exit_brk /pid == $1/ { printf("brk %s %d %d %d\n", comm, tid, @brk[tid], args->ret); delete(@brk[tid]); }
tracepoint:syscalls:sys_enter_mremap /pid == $1/ { @mremap[tid] = args->new_len; }
tracepoint:syscalls:sys_exit_mremap /pid == $1/ { printf("mremap %s %d %d %d\n", comm, tid, @mremap[tid], args->ret); delete(@mremap[tid]); }
END { clear(@mmap); clear(@munmap); clear(@brk); clear(@mremap); }
"#;

const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const PHASES_TIMEOUT: Duration = Duration::from_secs(900);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub tracer: PathBuf,
    pub stress: PathBuf,
    pub workload: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Bare,
    Tracer,
    /// `tracer watch` with no scope: the target is one unscoped process on the host.
    Watch,
    Strace,
    Bpftrace,
}

impl Tool {
    /// Another project's tracer, run for comparison.
    pub fn is_peer(self) -> bool {
        matches!(self, Tool::Strace | Tool::Bpftrace)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Bare => "bare",
            Tool::Tracer => "tracer",
            Tool::Watch => "tracer watch",
            Tool::Strace => "strace",
            Tool::Bpftrace => "bpftrace",
        }
    }

    /// The command line shown in the results (PID and FILE stand for the run's own).
    pub fn shown(self) -> String {
        match self {
            Tool::Bare => "(no tool)".into(),
            Tool::Tracer => "tracer --pid PID --grace 100ms --jsonl FILE (all probes: default)".into(),
            Tool::Watch => "tracer watch --no-incidents --jsonl DIR (host-wide; the target is in no scope)".into(),
            Tool::Strace => format!("strace -f -e {STRACE_SET} -o FILE -p PID"),
            Tool::Bpftrace => "bpftrace -e SCRIPT PID > pipe (script in the JSON results)".into(),
        }
    }
}

/// One phase as the stress program measured it.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub ops: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
}

/// What the tool itself cost, and what it wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCost {
    pub cpu_s: f64,
    pub maxrss_bytes: u64,
    /// Lines in its output file.
    pub lines: u64,
    /// Events the tool said it lost: the tracer's `trace_end`, bpftrace's `Lost N events`;
    /// None for strace (ptrace stops the target: it never loses).
    pub lost: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub phases: Vec<Phase>,
    pub cost: Option<ToolCost>,
}

/// The stress program started and waiting at `ready`.
pub struct Target {
    pub proc: Proc,
    stdin: std::process::ChildStdin,
    pub out: Lines,
    pub err: Lines,
}

impl Target {
    pub fn start(bins: &Bins, args: &[String]) -> Result<Target> {
        let mut proc = Proc::spawn(
            Command::new(&bins.stress)
                .arg("bench")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "tracer-stress",
        )?;
        let stdin = proc.child.stdin.take().context("stress stdin")?;
        let out = Lines::read(proc.child.stdout.take().context("stress stdout")?, "tracer-stress stdout");
        let err = Lines::read(proc.child.stderr.take().context("stress stderr")?, "tracer-stress stderr");
        out.wait_for("ready", ATTACH_TIMEOUT).map_err(|e| anyhow::anyhow!("{e:#}\n{}", err.text()))?;
        Ok(Target { proc, stdin, out, err })
    }

    /// Says go and returns with the program running: for a run the caller ends (the
    /// program is killed when the target is dropped).
    pub fn go(&mut self) -> Result<()> {
        writeln!(self.stdin, "go").context("telling tracer-stress to go")
    }

    /// Says go, waits for `done` and the exit, and returns the phases it printed.
    pub fn go_and_finish(mut self) -> Result<Vec<Phase>> {
        writeln!(self.stdin, "go").context("telling tracer-stress to go")?;
        self.out.wait_for("done", PHASES_TIMEOUT).map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.err.text()))?;
        self.proc.wait_success(EXIT_TIMEOUT, &self.err)?;
        self.out.all().iter().filter(|l| l.starts_with("phase ")).map(|l| parse_phase(l)).collect()
    }
}

/// `phase NAME ops=N wall_ns=W cpu_ns=C`.
fn parse_phase(line: &str) -> Result<Phase> {
    let mut words = line.split_whitespace().skip(1);
    let name = words.next().context("phase line without a name")?.to_string();
    let mut get = |key: &str| -> Result<u64> {
        words
            .next()
            .and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("phase line {line:?}: no {key}="))
    };
    let ops = get("ops")?;
    let wall = get("wall_ns")?;
    let cpu = get("cpu_ns")?;
    Ok(Phase { name, ops, wall_s: wall as f64 * 1e-9, cpu_s: cpu as f64 * 1e-9 })
}

/// Runs the stress program with `phases` bare or under `tool`; scratch files go to `dir`.
pub fn run(tool: Tool, bins: &Bins, tools: &Tools, phases: &[String], dir: &Path) -> Result<Run> {
    let target = Target::start(bins, phases)?;
    let pid = target.proc.pid().to_string();
    let out_file = dir.join(format!("{}.out", tool.name()));
    let mut counted: Option<std::thread::JoinHandle<(u64, u64)>> = None;
    let attached = match tool {
        Tool::Bare => None,
        Tool::Tracer => {
            let mut cmd = Command::new(&bins.tracer);
            cmd.args(["--pid", &pid, "--grace", "100ms", "--jsonl"]).arg(&out_file).stdout(Stdio::null());
            Some(attach(cmd, "tracer", |err, _| err.wait_for("tracer: tracing pid", ATTACH_TIMEOUT).map(drop))?)
        }
        Tool::Watch => {
            let mut cmd = Command::new(&bins.tracer);
            cmd.args(["watch", "--no-incidents", "--jsonl"]).arg(&out_file).stdout(Stdio::null());
            Some(attach(cmd, "tracer watch", |err, _| err.wait_for("Ctrl-C stops", ATTACH_TIMEOUT).map(drop))?)
        }
        Tool::Strace => {
            let mut cmd = Command::new(tools.strace.as_ref().context("strace is not installed")?);
            cmd.args(["-f", "-e", STRACE_SET, "-o"]).arg(&out_file).args(["-p", &pid]).stdout(Stdio::null());
            Some(attach(cmd, "strace", |err, _| err.wait_for("attached", ATTACH_TIMEOUT).map(drop))?)
        }
        Tool::Bpftrace => {
            // Its stdout, not `-o FILE`: bpftrace buffers a file until it exits, and BEGIN's
            // `ready` must be seen at once. The lines are counted and dropped.
            let mut cmd = Command::new(tools.bpftrace.as_ref().context("bpftrace is not installed")?);
            cmd.args(["-e", BPFTRACE_SCRIPT, &pid]).stdout(Stdio::piped());
            Some(attach(cmd, "bpftrace", |err, proc| {
                let stdout = proc.child.stdout.take().context("bpftrace stdout")?;
                let (ready_tx, ready_rx) = mpsc::channel();
                counted = Some(std::thread::spawn(move || count_stream(stdout, "ready", ready_tx)));
                match ready_rx.recv_timeout(ATTACH_TIMEOUT) {
                    Ok(()) => Ok(()),
                    Err(_) => bail!("no `ready` from its BEGIN probe within {ATTACH_TIMEOUT:?}:\n{}", err.text()),
                }
            })?)
        }
    };
    let phases = target.go_and_finish()?;
    let cost = match attached {
        None => None,
        Some((mut proc, err)) => {
            match tool {
                Tool::Bpftrace => proc.signal(libc::SIGINT),
                // The agent never ends on its own: stopped as systemd stops it.
                Tool::Watch => proc.signal(libc::SIGTERM),
                _ => {}
            }
            let done = proc.wait_success(EXIT_TIMEOUT, &err)?;
            let (lines, lost) = match (tool, counted) {
                (Tool::Bpftrace, Some(h)) => {
                    let (lines, lost) = h.join().map_err(|_| anyhow::anyhow!("the bpftrace reader panicked"))?;
                    let lost_on_stderr: u64 = err.all().iter().filter_map(|l| bpftrace_lost(l.trim().as_bytes())).sum();
                    (lines, Some(lost + lost_on_stderr))
                }
                (Tool::Tracer, _) => (count_lines(&out_file)?, Some(trace_end_lost(&out_file)?)),
                (Tool::Watch, _) => {
                    let lines = count_lines(&out_file.join("tracer-watch.jsonl"))?;
                    let _ = std::fs::remove_dir_all(&out_file);
                    (lines, watch_lost(&err.text()))
                }
                _ => (count_lines(&out_file)?, None),
            };
            let _ = std::fs::remove_file(&out_file);
            Some(ToolCost { cpu_s: done.cpu_s, maxrss_bytes: done.maxrss_bytes, lines, lost })
        }
    };
    Ok(Run { phases, cost })
}

/// Starts a tool (its stdout set by the caller) with stderr piped, and waits until `ready`
/// says it is attached.
fn attach(mut cmd: Command, name: &str, ready: impl FnOnce(&Lines, &mut Proc) -> Result<()>) -> Result<(Proc, Lines)> {
    let mut proc = Proc::spawn(cmd.stdin(Stdio::null()).stderr(Stdio::piped()), name)?;
    let err = Lines::read(proc.child.stderr.take().context("tool stderr")?, &format!("{name} stderr"));
    ready(&err, &mut proc).with_context(|| format!("{name} did not attach"))?;
    Ok((proc, err))
}

/// Reads bpftrace's output until it closes: says so on `ready` when the line equal to
/// `mark` passes (its BEGIN, printed once every probe is attached), then counts the event
/// lines, and sums the `Lost N events` it reports when its perf buffer overflowed.
fn count_stream(pipe: impl Read, mark: &str, ready: mpsc::Sender<()>) -> (u64, u64) {
    let mut r = std::io::BufReader::with_capacity(1 << 20, pipe);
    let mut line = Vec::new();
    let (mut seen_mark, mut n, mut lost) = (false, 0u64, 0u64);
    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = line.trim_ascii();
        if let Some(k) = bpftrace_lost(text) {
            lost += k;
        } else if seen_mark && !text.is_empty() {
            n += 1;
        } else if text == mark.as_bytes() {
            seen_mark = true;
            let _ = ready.send(());
        }
        line.clear();
    }
    (n, lost)
}

/// N of the agent's last line, `tracer watch: stopped after …: E events, V verdicts, N lost`.
fn watch_lost(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.starts_with("tracer watch: stopped after"))?;
    line.rsplit(", ").next()?.strip_suffix(" lost")?.parse().ok()
}

/// N of bpftrace's `Lost N events`.
fn bpftrace_lost(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("Lost ")?.strip_suffix(" events")?.trim().parse().ok()
}

pub fn count_lines(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// `lost` of the trace's last line, which must be `trace_end`.
fn trace_end_lost(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).with_context(|| format!("reading the end of {}", path.display()))?;
    let last = tail.lines().last().with_context(|| format!("{} is empty", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("the last line of {} is not JSON: {last}", path.display()))?;
    if v["kind"] != "trace_end" {
        bail!("the last line of {} is not trace_end: {last}", path.display());
    }
    v["lost"].as_u64().context("trace_end without lost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_parse() {
        assert_eq!(bpftrace_lost(b"Lost 1234 events"), Some(1234));
        assert_eq!(bpftrace_lost(b"mmap x 1 4096 0"), None);
        let p = parse_phase("phase mem ops=100 wall_ns=2000000000 cpu_ns=1000000000").unwrap();
        assert_eq!((p.name.as_str(), p.ops, p.wall_s, p.cpu_s), ("mem", 100, 2.0, 1.0));
        assert!(parse_phase("phase mem ops=x").is_err());
        let err = "tracer watch: metrics at x\ntracer watch: stopped after 3.1 s: 1200 events, 0 verdicts, 17 lost\n";
        assert_eq!(watch_lost(err), Some(17));
        assert_eq!(watch_lost("tracer watch: killed"), None);
    }
}
