//! PSI triggers: the kernel wakes the tracer when tasks wait for memory (reclaim,
//! refaults of pages it just dropped) for at least a given time within a window, on a
//! memory cgroup (v2 `memory.pressure`) or the whole host (/proc/pressure/memory). That
//! comes before an OOM kill, and between two samples: the session writes a
//! `memory_stall` event and samples at once, so the forecast has fresh points.
//!
//! A trigger is armed by writing `some <stall µs> <window µs>` to the file and polling it
//! for POLLPRI; the kernel fires at most once per window. Without CAP_SYS_RESOURCE the
//! kernel (6.5 and later) takes only windows that are whole multiples of 2 s: a 1 s
//! window refused so is armed again at 2 s with twice the stall, the same share.
use std::{
    fs::File,
    io::Write as _,
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::event::EventKind;

/// The window a trigger is asked for first.
pub const WINDOW: Duration = Duration::from_secs(1);
/// What an unprivileged trigger's window must be a multiple of.
const UNPRIVILEGED_WINDOW: Duration = Duration::from_secs(2);

/// One armed trigger; the file stays open while it is armed.
#[derive(Debug)]
pub struct StallTrigger {
    file: File,
    path: PathBuf,
    /// `memory_cgroup` or `host`.
    pub scope: &'static str,
    /// The cgroup folder, or "host".
    pub name: String,
    pub stall: Duration,
    pub window: Duration,
}

impl AsRawFd for StallTrigger {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl StallTrigger {
    /// Arms a `some` trigger on a pressure file: `stall` within [`WINDOW`], or the same
    /// share of a 2 s window where the kernel refuses 1 s.
    pub fn arm(path: &Path, scope: &'static str, name: String, stall: Duration) -> std::io::Result<StallTrigger> {
        let stall = stall.min(WINDOW.saturating_sub(Duration::from_millis(1))).max(Duration::from_micros(1));
        match Self::arm_once(path, stall, WINDOW) {
            Ok(file) => Ok(StallTrigger { file, path: path.to_path_buf(), scope, name, stall, window: WINDOW }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let scale = UNPRIVILEGED_WINDOW.as_secs_f64() / WINDOW.as_secs_f64();
                let stall = stall.mul_f64(scale);
                let file = Self::arm_once(path, stall, UNPRIVILEGED_WINDOW)?;
                Ok(StallTrigger { file, path: path.to_path_buf(), scope, name, stall, window: UNPRIVILEGED_WINDOW })
            }
            Err(e) => Err(e),
        }
    }

    fn arm_once(path: &Path, stall: Duration, window: Duration) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        // The kernel reads the trigger in one write, NUL included.
        file.write_all(format!("some {} {}\0", stall.as_micros(), window.as_micros()).as_bytes())?;
        Ok(file)
    }

    /// The kernel's running total of `some` stall time in the file, in µs.
    pub fn total_us(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        some_total_us(&text)
    }

    /// The event for one firing.
    pub fn event_kind(&self) -> EventKind {
        EventKind::MemoryStall {
            scope: self.scope.into(),
            name: self.name.clone(),
            stalled: "some".into(),
            stall_us: self.stall.as_micros() as u64,
            window_us: self.window.as_micros() as u64,
            total_us: self.total_us(),
        }
    }
}

/// `total=` of the `some` line of a pressure file.
pub fn some_total_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("total="))?.parse().ok()
}

/// The triggers a session arms: the memory cgroup's, where it is v2 and has a pressure
/// file, and the host's. What cannot be armed is said once and left out.
pub fn arm_all(cgroup: Option<(&str, u8)>, stall: Duration) -> Vec<StallTrigger> {
    let mut out = Vec::new();
    if let Some((dir, 2)) = cgroup {
        let file = Path::new(dir).join("memory.pressure");
        if file.exists() {
            match StallTrigger::arm(&file, "memory_cgroup", dir.to_string(), stall) {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!("no memory-stall trigger on {}: {e}", file.display()),
            }
        }
    }
    let host = Path::new("/proc/pressure/memory");
    if host.exists() {
        match StallTrigger::arm(host, "host", "host".into(), stall) {
            Ok(t) => out.push(t),
            Err(e) => tracing::warn!("no memory-stall trigger on {}: {e} (needs root or CAP_SYS_RESOURCE on older kernels)", host.display()),
        }
    } else {
        tracing::info!("no /proc/pressure/memory (a kernel without PSI, or booted with psi=0): no memory-stall triggers");
    }
    out
}

/// The armed triggers of a session, registered with the event loop.
#[derive(Default)]
pub struct Stalls {
    fds: Vec<tokio::io::unix::AsyncFd<StallTrigger>>,
    /// The memory cgroup the cgroup trigger is for (to re-arm after the target moved).
    pub armed_for: Option<String>,
}

impl Stalls {
    /// Arms [`arm_all`]'s triggers; those the event loop cannot take are left out.
    pub fn arm(cgroup: Option<(&str, u8)>, stall: Duration) -> Stalls {
        let fds = arm_all(cgroup, stall)
            .into_iter()
            // SAFETY: the trigger owns its file, and the AsyncFd owns the trigger: the fd
            // lives exactly as long as the registration.
            .filter_map(|t| match unsafe { tokio::io::unix::AsyncFd::register_with_interest(t, tokio::io::Interest::PRIORITY) } {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!("no memory-stall trigger: registering it with the event loop: {e}");
                    None
                }
            })
            .collect();
        Stalls { fds, armed_for: cgroup.map(|(dir, _)| dir.to_string()) }
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Waits for a trigger to fire (forever with none): the event for it. A trigger the
    /// kernel gave up on (its cgroup was removed: POLLERR) is dropped.
    pub async fn fired(&mut self) -> EventKind {
        loop {
            if self.fds.is_empty() {
                return std::future::pending().await;
            }
            let waits = self.fds.iter().enumerate().map(|(i, fd)| {
                Box::pin(async move {
                    match fd.ready(tokio::io::Interest::PRIORITY).await {
                        Ok(mut guard) => {
                            let broken = guard.ready().is_error();
                            guard.clear_ready();
                            (i, broken)
                        }
                        Err(_) => (i, true),
                    }
                })
            });
            let ((i, broken), _, _) = futures_util::future::select_all(waits).await;
            if broken {
                let gone = self.fds.remove(i);
                tracing::info!("the memory-stall trigger on {} ended (its cgroup is gone)", gone.get_ref().name);
                if gone.get_ref().scope == "memory_cgroup" {
                    // A cgroup made again at the same path (a restarted unit) is armed anew.
                    self.armed_for = None;
                }
                continue;
            }
            return self.fds[i].get_ref().event_kind();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_total_is_read_from_a_pressure_file() {
        let text = "some avg10=1.08 avg60=0.19 avg300=0.04 total=14476913\nfull avg10=0.18 avg60=0.03 avg300=0.00 total=11929808\n";
        assert_eq!(some_total_us(text), Some(14476913));
        assert_eq!(some_total_us("full avg10=0 total=3\n"), None);
        assert_eq!(some_total_us(""), None);
    }

    #[test]
    fn a_missing_pressure_file_is_an_error_not_a_trigger() {
        let e = StallTrigger::arm(Path::new("/no/such/pressure"), "host", "host".into(), Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(arm_all(Some(("/no/such/cgroup", 2)), Duration::from_millis(100)).iter().all(|t| t.scope == "host"));
    }

    /// The real kernel: a trigger is armed on /proc/pressure/memory (1 s window with
    /// CAP_SYS_RESOURCE, else 2 s with the stall doubled) and the total is the file's.
    #[test]
    fn the_host_trigger_arms_on_the_real_file() {
        let host = Path::new("/proc/pressure/memory");
        if !host.exists() {
            eprintln!("SKIP: no /proc/pressure/memory on this kernel");
            return;
        }
        let t = match StallTrigger::arm(host, "host", "host".into(), Duration::from_millis(100)) {
            Ok(t) => t,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::PermissionDenied) => {
                eprintln!("SKIP: {} refuses this process a trigger ({e}): a kernel before 6.5 without CAP_SYS_RESOURCE", host.display());
                return;
            }
            Err(e) => panic!("arming a trigger on {}: {e}", host.display()),
        };
        assert!(t.window == WINDOW || t.window == UNPRIVILEGED_WINDOW, "{:?}", t.window);
        assert_eq!(t.stall.as_secs_f64() / t.window.as_secs_f64(), 0.1, "the share asked for");
        let before = some_total_us(&std::fs::read_to_string(host).unwrap()).unwrap();
        let ours = t.total_us().unwrap();
        let after = some_total_us(&std::fs::read_to_string(host).unwrap()).unwrap();
        assert!(before <= ours && ours <= after, "{before} <= {ours} <= {after}");
        // Too long a stall is cut to under the window, not refused.
        let long = StallTrigger::arm(host, "host", "host".into(), Duration::from_secs(5)).unwrap();
        assert!(long.stall < long.window);
    }

    /// A real v2 cgroup's trigger fires on real reclaim in it: a process reading a file
    /// through a small v1 memory limit, placed in a unified-hierarchy cgroup too (hybrid
    /// hosts account stalls there). Pure v2 hosts have both in one folder.
    #[test]
    fn a_cgroup_trigger_fires_on_real_reclaim_in_that_cgroup() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (v2_base, limit_base) = if unified.join("cgroup.procs").exists() && v1.join("memory.limit_in_bytes").exists() {
            (unified, v1)
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup"))
        } else {
            eprintln!("SKIP: no cgroup v2 hierarchy here");
            return;
        };
        let name = format!("tracer-unit-stall-{}", std::process::id());
        let (v2, lim) = (v2_base.join(&name), limit_base.join(&name));
        struct Cleanup(Vec<PathBuf>, Option<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if let Some(c) = self.1.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                // The shell's cat or dd may outlive it, and would keep the cgroups busy.
                for d in &self.0 {
                    for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.parse::<i32>().ok()) {
                        // SAFETY: plain syscall on a pid of the test's own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                for d in &self.0 {
                    for _ in 0..100 {
                        if std::fs::remove_dir(d).is_ok() || !d.exists() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        let mut cleanup = Cleanup(Vec::new(), None);
        for d in [&v2, &lim] {
            if d.exists() {
                continue;
            }
            if let Err(e) = std::fs::create_dir(d) {
                eprintln!("SKIP: cannot create {} ({e}; not root?)", d.display());
                return;
            }
            cleanup.0.push(d.clone());
        }
        let limit_file = if lim.join("memory.limit_in_bytes").exists() { "memory.limit_in_bytes" } else { "memory.max" };
        std::fs::write(lim.join(limit_file), (32u64 << 20).to_string()).unwrap();
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(format!("{name}.bin"));
        struct Remove<'a>(&'a Path);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(self.0);
            }
        }
        let _remove = Remove(&file);
        std::fs::write(&file, vec![7u8; 128 << 20]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async {
            let v2_dir = v2.display().to_string();
            let mut stalls = Stalls::arm(Some((&v2_dir, 2)), Duration::from_millis(10));
            assert!(stalls.fds.iter().any(|t| t.get_ref().scope == "memory_cgroup"), "no cgroup trigger on {v2_dir}");
            let f = file.display();
            let sh = format!(
                "echo $$ > {}/cgroup.procs; echo $$ > {}/cgroup.procs; while :; do dd if={f} iflag=nocache count=0 status=none; cat {f} > /dev/null; done",
                lim.display(),
                v2.display()
            );
            cleanup.1 = Some(std::process::Command::new("sh").args(["-c", &sh]).spawn().unwrap());
            let until = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                match tokio::time::timeout_at(until, stalls.fired()).await {
                    Ok(k @ EventKind::MemoryStall { .. }) if matches!(&k, EventKind::MemoryStall { scope, .. } if scope == "memory_cgroup") => break Some(k),
                    Ok(_) => continue,
                    Err(_) => break None,
                }
            }
        });
        let Some(EventKind::MemoryStall { name: got_name, total_us, .. }) = got else { panic!("the cgroup's trigger never fired in 20 s of reclaim") };
        assert_eq!(got_name, v2.display().to_string());
        let now = some_total_us(&std::fs::read_to_string(v2.join("memory.pressure")).unwrap()).unwrap();
        assert!(total_us.is_some_and(|t| t > 0 && t <= now), "{total_us:?} vs {now}");
    }
}
