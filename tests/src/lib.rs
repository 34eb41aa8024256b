//! Fixtures for end-to-end scenarios on the real kernel: memory cgroups (v1 and v2),
//! processes killed on drop, and a tracer run whose trace is read back as events.
//! Every fixture cleans up in `Drop`, so a failing assertion leaves nothing behind.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{ChildStdout, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub mod facts;
pub mod python;

use tracer::diagnose::Verdict;
use tracer::event::{Event, EventKind};

/// Directory of the binaries of this build (`target/debug`), from the test executable.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The tracer binary: $TRACER_BIN, else the one built next to the tests.
pub fn tracer_bin() -> PathBuf {
    let path = std::env::var_os("TRACER_BIN").map(PathBuf::from).unwrap_or_else(|| build_dir().join("tracer"));
    assert!(path.exists(), "{} not found: build it with `cargo build -p tracer` (or run `cargo xtask test`)", path.display());
    path
}

pub fn stress_bin() -> PathBuf {
    let path = build_dir().join("tracer-stress");
    assert!(path.exists(), "{} not found: `cargo build -p tracer-tests`", path.display());
    path
}

/// The workload binary (the companion translation service).
pub fn workload_bin() -> PathBuf {
    let path = std::env::var_os("WORKLOAD_BIN").map(PathBuf::from).unwrap_or_else(|| build_dir().join("workload"));
    assert!(path.exists(), "{} not found: build it with `cargo build -p workload` (or run `cargo xtask test`)", path.display());
    path
}

/// Stops a test that needs root with the command that gives it, instead of a confusing
/// failure deeper in.
pub fn require_root(what: &str) {
    assert!(is_root(), "{what}: run the end-to-end tests as root (`cargo xtask test` does, through sudo)");
}

/// The stress program with `stress_args`, held at its `ready` until `tracer --pid PID
/// tracer_args` (trace file named `file`) is attached, then let go; traced until the
/// tracer ends by itself, within `timeout`.
pub fn trace_held_stress(stress_args: &[&str], tracer_args: &[&str], file: &str, timeout: Duration) -> (Trace, KeptTrace) {
    let mut target = Command::new(stress_bin())
        .args(stress_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting tracer-stress");
    let mut stdin = target.stdin.take().expect("stdin");
    let mut out = BufReader::new(target.stdout.take().expect("stdout"));
    let target = ChildGuard(target);
    wait_for_line(&mut out, "ready");
    let pid = target.pid().to_string();
    let mut args = vec!["--pid", pid.as_str()];
    args.extend_from_slice(tracer_args);
    let run = TracerRun::start_named(&args, file);
    run.wait_attached(Duration::from_secs(60));
    std::io::Write::write_all(&mut stdin, b"go\n").expect("letting tracer-stress go");
    run.finish_keeping_file(timeout)
}

/// The stress program's path as an argument.
pub fn stress() -> String {
    stress_bin().display().to_string()
}

/// `tracer run --grace GRACE -- tracer-stress ARGS` for a stress command that prints
/// `listening PORT`; returns the run, the command's stdout and the port.
pub fn start_stress_server(args: &[&str], grace: &str) -> (TracerRun, BufReader<ChildStdout>, u16) {
    let s = stress();
    let mut full = vec!["run", "--grace", grace, "--", s.as_str()];
    full.extend_from_slice(args);
    let mut run = TracerRun::start(&full);
    let mut out = run.stdout.take().expect("stdout");
    let line = wait_for_line(&mut out, "listening ");
    let port = line["listening ".len()..].parse().expect("port");
    (run, out, port)
}

pub fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Memory cgroups and guarded processes live in the `scenario` crate, shared with
/// `cargo xtask run-workload`.
pub use scenario::{ChildGuard, Memcg};

/// Reads lines from a child's stdout until one starts with `prefix`.
pub fn wait_for_line(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("reading child stdout");
        assert!(n > 0, "child closed stdout before printing {prefix:?}");
        if line.starts_with(prefix) {
            return line.trim().to_string();
        }
    }
}

/// A running tracer writing its trace to a temporary file.
pub struct TracerRun {
    child: ChildGuard,
    pub stdout: Option<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    trace: PathBuf,
    args: Vec<String>,
    _dir: TempDir,
}

/// A temporary directory removed on drop (no extra dependency for one helper).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = std::env::temp_dir();
        for n in 0.. {
            let p = base.join(format!("tracer-{tag}-{}-{n}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return TempDir(p);
            }
        }
        unreachable!()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TracerRun {
    /// Starts `tracer ARGS --jsonl FILE`; stdout is piped (and inherited by a traced
    /// command), stderr is collected.
    pub fn start(args: &[&str]) -> TracerRun {
        TracerRun::start_named(args, "trace.jsonl")
    }

    /// As [`TracerRun::start`], with the trace file named `name` (`trace.jsonl.zst`: compressed).
    pub fn start_named(args: &[&str], name: &str) -> TracerRun {
        TracerRun::start_with(args, name, &[])
    }

    /// As [`TracerRun::start`], with `env` set for the tracer (and what it runs).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> TracerRun {
        TracerRun::start_with(args, "trace.jsonl", env)
    }

    fn start_with(args: &[&str], name: &str, env: &[(&str, &str)]) -> TracerRun {
        let dir = TempDir::new("trace");
        let trace = dir.0.join(name);
        let mut cmd = Command::new(tracer_bin());
        cmd.envs(env.iter().copied());
        // Options go before `--` of `run`.
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        cmd.args(&args[..split]).arg("--jsonl").arg(&trace).args(&args[split..]);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tracer");
        let stdout = child.stdout.take().map(BufReader::new);
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut r = BufReader::new(&mut err_pipe);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        TracerRun { child: ChildGuard(child), stdout, stderr, trace, args: args.iter().map(|a| a.to_string()).collect(), _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The command a `tracer run` started (its only child).
    pub fn traced_child(&self) -> u32 {
        let children = tracer::process::descendants(self.pid());
        *children.first().unwrap_or_else(|| panic!("tracer {} has no child; stderr:\n{}", self.pid(), self.stderr()))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr says the tracer is attached.
    pub fn wait_attached(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains("tracer: tracing pid") {
            assert!(Instant::now() < deadline, "tracer did not attach in {timeout:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the tracer to exit by itself and returns its exit status and trace.
    pub fn finish(self, timeout: Duration) -> Trace {
        self.finish_keeping_file(timeout).0
    }

    /// As [`TracerRun::finish`], and the trace file, there until the [`KeptTrace`] goes.
    pub fn finish_keeping_file(mut self, timeout: Duration) -> (Trace, KeptTrace) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.0.try_wait().expect("wait tracer") {
                break s;
            }
            if Instant::now() > deadline {
                // SAFETY: plain syscall; SIGINT makes the tracer flush and exit.
                unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
                std::thread::sleep(Duration::from_secs(2));
                panic!("tracer still running after {timeout:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut bytes = std::fs::read(&self.trace).unwrap_or_default();
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            bytes = zstd::stream::decode_all(&bytes[..]).unwrap_or_else(|e| panic!("the compressed trace does not decompress: {e}"));
        }
        let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("the trace is not UTF-8: {e}"));
        let (mut events, mut verdicts) = (Vec::new(), Vec::new());
        for line in text.lines() {
            // The live tracer writes its verdicts next to the events, as `kind: verdict`.
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad trace line {line}: {e}"));
            if value["kind"] == "verdict" {
                verdicts.push(serde_json::from_value::<Verdict>(value).unwrap_or_else(|e| panic!("bad verdict line {line}: {e}")));
            } else {
                events.push(serde_json::from_value::<Event>(value).unwrap_or_else(|e| panic!("bad trace line {line}: {e}")));
            }
        }
        facts::assert_true(&events, &format!("the trace of `tracer {}`", self.args.join(" ")));
        let trace = Trace { status: status.code(), events, verdicts, stderr: self.stderr() };
        (trace, KeptTrace { path: self.trace, _dir: self._dir })
    }

    /// Sends SIGINT (as Ctrl-C would) and collects the trace.
    pub fn interrupt(self, timeout: Duration) -> Trace {
        // SAFETY: plain syscall.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        self.finish(timeout)
    }
}

/// A trace file kept after its tracer ended: removed on drop.
pub struct KeptTrace {
    pub path: PathBuf,
    _dir: TempDir,
}

/// A finished trace.
#[derive(Debug)]
pub struct Trace {
    pub status: Option<i32>,
    pub events: Vec<Event>,
    /// The verdicts the tracer wrote at the end of the trace.
    pub verdicts: Vec<Verdict>,
    pub stderr: String,
}

impl Trace {
    pub fn target_pid(&self) -> u32 {
        match self.events.first().map(|e| &e.kind) {
            Some(EventKind::TraceStart { target_pid, .. }) => *target_pid,
            other => panic!("trace does not start with trace_start: {other:?}\nstderr:\n{}", self.stderr),
        }
    }

    /// Index of the first event matching `pred`.
    pub fn position(&self, pred: impl Fn(&Event) -> bool) -> Option<usize> {
        self.events.iter().position(pred)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.kind_name() == kind)
    }

    pub fn lost(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Lost { count, .. } => Some(*count),
                _ => None,
            })
            .sum()
    }

    /// For failure messages: the trace without its bulk.
    pub fn dump(&self) -> String {
        let mut s = format!("status {:?}\nstderr:\n{}\n", self.status, self.stderr);
        for e in self.events.iter().filter(|e| !matches!(e.kind, EventKind::Mmap { .. } | EventKind::Munmap { .. })).take(200) {
            s.push_str(&serde_json::to_string(e).unwrap_or_default());
            s.push('\n');
        }
        s
    }
}
