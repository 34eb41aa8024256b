//! A child memory cgroup with a limit, v1 or v2, removed (with everything in it killed)
//! on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Memcg {
    pub path: PathBuf,
    pub version: u8,
}

impl Memcg {
    /// Creates `tracer-<name>-<our pid>` under the memory hierarchy with `limit_bytes`.
    pub fn new(name: &str, limit_bytes: u64) -> std::io::Result<Memcg> {
        let unique = format!("tracer-{name}-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let path = v1.join(&unique);
            std::fs::create_dir(&path)?;
            let cg = Memcg { path, version: 1 };
            std::fs::write(cg.path.join("memory.limit_in_bytes"), limit_bytes.to_string())?;
            return Ok(cg);
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Err(std::io::Error::other(
                "no memory cgroup controller (v1 at /sys/fs/cgroup/memory or v2 with `memory` in cgroup.controllers) on this machine",
            ));
        }
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
        let path = v2.join(&unique);
        std::fs::create_dir(&path)?;
        let cg = Memcg { path, version: 2 };
        std::fs::write(cg.path.join("memory.max"), limit_bytes.to_string())?;
        // No swap: the limit must mean an OOM kill, as in the container of the report.
        let _ = std::fs::write(cg.path.join("memory.swap.max"), "0");
        Ok(cg)
    }

    /// A command that joins this cgroup before it execs `program`, so everything it
    /// allocates from its first instruction is charged here.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(Self::JOIN_AND_EXEC).arg(&self.path).arg(program);
        cmd
    }

    /// The `sh -c` script of [`Memcg::command`]: `$0` is the cgroup, `$@` the command.
    pub const JOIN_AND_EXEC: &'static str = r#"echo $$ > "$0/cgroup.procs" && exec "$@""#;

    /// How many processes the kernel OOM-killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == 1 { "memory.oom_control" } else { "memory.events" };
        std::fs::read_to_string(self.path.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.procs();
            if procs.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in procs {
                // SAFETY: plain syscall.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}
