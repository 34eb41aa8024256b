//! The scenarios of the matrix on this host's own kernel: the reference the guests are
//! compared with. Same commands, limits and grace as guest.sh (keep them in step); the
//! memory cgroup is the project's `scenario::Memcg` (v1 or v2, whichever the host has),
//! the clients are plain sockets as in tests/tests/diagnose.rs.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{ChildStdout, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use scenario::{ChildGuard, Memcg};

use super::{verdicts_of_report, Observed, Scenario, Verdicts};

const LIMIT: Duration = Duration::from_secs(90);

pub struct Bins {
    pub tracer: PathBuf,
    pub stress: PathBuf,
}

/// Runs every scenario (result, seconds); its files (`NAME.jsonl`, `.log.txt`, `.report.json`) in `out`.
pub fn run(bins: &Bins, out: &Path) -> Vec<(Scenario, Observed, f64)> {
    Scenario::ALL
        .into_iter()
        .map(|s| {
            let started = Instant::now();
            let observed = one(bins, out, s).map_err(|e| format!("{e:#}"));
            let secs = started.elapsed().as_secs_f64();
            match &observed {
                Ok(c) => println!("xtask: kernels: host: {} -> {} ({secs:.1} s)", s.name(), super::matrix::verdicts_text(c)),
                Err(e) => eprintln!("xtask: kernels: host: {} FAILED: {e}", s.name()),
            }
            (s, observed, secs)
        })
        .collect()
}

/// `tracer run --no-tui --jsonl OUT/NAME.jsonl --grace GRACE -- ARGS`, stderr to NAME.log.
struct Traced {
    child: ChildGuard,
    out: Lines,
    name: &'static str,
    log: PathBuf,
}

/// The traced command's stdout, read on a thread.
struct Lines(Receiver<String>);

impl Lines {
    fn read(pipe: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(std::result::Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines(rx)
    }

    /// The next line that starts with `prefix`.
    fn wait_for(&self, prefix: &str) -> Result<String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => bail!("the traced command printed no {prefix:?} within {LIMIT:?}"),
                Err(RecvTimeoutError::Disconnected) => bail!("the traced command ended before printing {prefix:?}"),
            }
        }
    }
}

impl Traced {
    fn start(bins: &Bins, dir: &Path, s: Scenario, grace: &str, args: &[&str]) -> Result<Traced> {
        let name = s.name();
        let log = dir.join(format!("{name}.log.txt"));
        let mut cmd = Command::new(&bins.tracer);
        cmd.args(["run", "--no-tui", "--jsonl"])
            .arg(dir.join(format!("{name}.jsonl")))
            .args(["--grace", grace, "--"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bins.tracer.display()))?;
        let out = Lines::read(child.stdout.take().expect("piped"));
        Ok(Traced { child: ChildGuard(child), out, name, log })
    }

    /// The command `tracer run` started (its only child).
    fn traced_child(&self) -> Result<u32> {
        let pid = self.child.pid();
        let mut kids = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            kids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        kids.first().copied().with_context(|| format!("tracer {pid} has no child; it said:\n{}", self.said()))
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the tracer to end by itself.
    fn finish(mut self) -> Result<()> {
        let Some(status) = self.child.wait_timeout(LIMIT) else {
            // SIGINT makes the tracer flush its trace before the guard kills it.
            self.child.signal(libc::SIGINT);
            let _ = self.child.wait_timeout(Duration::from_secs(10));
            bail!("{}: tracer still running after {LIMIT:?}; it said:\n{}", self.name, self.said());
        };
        if !status.success() {
            eprintln!("xtask: kernels: host: {}: tracer ended with {status}", self.name);
        }
        Ok(())
    }
}

fn kill9(pid: u32) -> Result<()> {
    let status = Command::new("kill").arg("-KILL").arg(pid.to_string()).status().context("cannot run kill")?;
    if !status.success() {
        bail!("kill -KILL {pid} failed ({status})");
    }
    Ok(())
}

fn port_of(line: &str) -> Result<u16> {
    line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).with_context(|| format!("no port in {line:?}"))
}

fn one(bins: &Bins, dir: &Path, s: Scenario) -> Result<Verdicts> {
    let stress = bins.stress.to_str().context("the tracer-stress path is not UTF-8")?;
    match s {
        Scenario::Oom => {
            let cg = Memcg::new("kernels-oom", 64 << 20).context("cannot create the memory cgroup of the oom scenario")?;
            let cgroup = cg.path.display().to_string();
            Traced::start(bins, dir, s, "500ms", &[stress, "alloc", "--cgroup", &cgroup])?.finish()?;
        }
        Scenario::Signal => {
            let t = Traced::start(bins, dir, s, "1s", &[stress, "ignore-term"])?;
            t.out.wait_for("ready").with_context(|| t.said())?;
            kill9(t.traced_child()?)?;
            t.finish()?;
        }
        Scenario::Refused => {
            Traced::start(bins, dir, s, "500ms", &["/bin/sh", "-c", r#"exec "$0" connect 9"#, stress])?.finish()?;
        }
        Scenario::Abort => {
            let t = Traced::start(bins, dir, s, "500ms", &[stress, "serve-unread"])?;
            let port = port_of(&t.out.wait_for("listening ").with_context(|| t.said())?)?;
            let mut client = TcpStream::connect(("127.0.0.1", port))?;
            client.write_all(b"unread request\n")?;
            client.set_read_timeout(Some(LIMIT))?;
            let _ = client.read(&mut [0u8; 16]);
            t.finish()?;
        }
        Scenario::KilledWithClients => {
            let t = Traced::start(bins, dir, s, "2s", &[stress, "serve-idle", "2"])?;
            let port = port_of(&t.out.wait_for("listening ").with_context(|| t.said())?)?;
            let mut clients = [TcpStream::connect(("127.0.0.1", port))?, TcpStream::connect(("127.0.0.1", port))?];
            t.out.wait_for("accepted").with_context(|| t.said())?;
            kill9(t.traced_child()?)?;
            std::thread::sleep(Duration::from_millis(300));
            for c in &mut clients {
                let _ = c.write_all(b"anyone?\n");
            }
            // One more connect, refused now that nobody listens.
            let _ = TcpStream::connect(("127.0.0.1", port));
            t.finish()?;
        }
        Scenario::MmapFile => {
            let file = dir.join("model.bin");
            std::fs::write(&file, vec![0u8; 16 << 20])?;
            let path = file.display().to_string();
            let t = Traced::start(bins, dir, s, "500ms", &[stress, "mmap-file", &path]);
            let done = t.and_then(Traced::finish);
            let _ = std::fs::remove_file(&file);
            done?;
        }
    }
    report(bins, dir, s)
}

/// `tracer report NAME.jsonl --format json`, kept as NAME.report.json; its verdicts.
fn report(bins: &Bins, dir: &Path, s: Scenario) -> Result<Verdicts> {
    let trace = dir.join(format!("{}.jsonl", s.name()));
    let out = Command::new(&bins.tracer)
        .arg("report")
        .arg(&trace)
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run tracer report")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dir.join(format!("{}.report.json", s.name())), &text)?;
    if !out.status.success() {
        bail!("tracer report {} failed ({}): {}", trace.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    verdicts_of_report(&text)
}
