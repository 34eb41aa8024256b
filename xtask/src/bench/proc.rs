//! Child processes for the benchmark: reaped with `wait4` so that each one's own CPU time
//! and peak RSS are known, killed on drop, and their output lines read on a thread.
use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// What `wait4` said about a child that ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Raw wait status.
    pub status: i32,
    /// User + system CPU seconds of the child (its threads included).
    pub cpu_s: f64,
    /// Peak resident set size in bytes (ru_maxrss).
    pub maxrss_bytes: u64,
}

impl Finished {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

/// A started child, SIGKILLed and reaped on drop unless it was waited for.
pub struct Proc {
    pub child: Child,
    name: String,
    finished: Option<Finished>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Proc { child, name: name.to_string(), finished: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        if self.finished.is_none() {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.pid() as i32, sig) };
        }
    }

    /// Reaps the child if it has ended (non-blocking).
    pub fn try_wait(&mut self) -> Option<Finished> {
        if self.finished.is_none() {
            let mut status = 0;
            // SAFETY: zeroed rusage is a valid out parameter.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::wait4(self.pid() as i32, &mut status, libc::WNOHANG, &mut ru) };
            if rc == self.pid() as i32 {
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
                self.finished = Some(Finished {
                    status,
                    cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
                    maxrss_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
                });
            }
        }
        self.finished
    }

    /// Waits for the child to end by itself; kills it after `timeout` and fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.try_wait() {
                return Ok(f);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} (pid {}) did not end within {timeout:?}; killed it", self.name, self.pid());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits, and fails unless the child exited with status 0.
    pub fn wait_success(&mut self, timeout: Duration, log: &Lines) -> Result<Finished> {
        let f = self.wait(timeout)?;
        if !f.success() {
            bail!("{} failed ({}):\n{}", self.name, f.describe(), log.text());
        }
        Ok(f)
    }

    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// Lines of a child's stdout or stderr, read on a thread: waited for by prefix, and all
/// kept for error messages.
pub struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Lines {
    pub fn read(pipe: impl Read + Send + 'static, what: &str) -> Lines {
        let (tx, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(std::result::Result::ok) {
                if let Ok(mut k) = keep.lock() {
                    k.push(line.clone());
                }
                // Nobody may wait any more: keep draining so the child never blocks.
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen, what: what.to_string() }
    }

    /// The next line that contains `needle`; fails when the pipe closes or on timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no line with {needle:?} within {timeout:?}; it said:\n{}", self.what, self.text())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{}: ended before printing {needle:?}; it said:\n{}", self.what, self.text())
                }
            }
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.seen.lock().map(|s| s.join("\n")).unwrap_or_default()
    }

    pub fn all(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...) in bytes; None when the
/// process is gone or the line is missing.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
