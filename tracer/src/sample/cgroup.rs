//! The memory cgroup of the target, v1 or v2: usage, limit, peak and OOM kills.
//!
//! Located from /proc/PID/cgroup and this process's mountinfo (parsed once): a v1
//! hierarchy with the `memory` controller wins over the v2 one, since on a hybrid system
//! v2 has no memory controller. The location is kept, with the cgroup's files open; each
//! sample re-reads the target's one-line-per-hierarchy /proc/PID/cgroup (a process can
//! be moved, and `sh -c 'echo $$ > cgroup.procs; exec ...'` moves itself right after
//! start) and re-opens the files only when the path changed (an exiting task is moved
//! to the root cgroup: not followed). After the target exited the last cgroup is still
//! read: its usage dropping after an OOM kill is worth seeing.
//!
//! Where the cgroup is and what its files say is [`host::memcg`]'s, shared with the
//! doctor and the workload's budget check; here is what sampling adds: following the
//! process, keeping the files open and reading them without allocating.
use std::{fs::File, path::Path};

use host::memcg::{cgroup_dir, control_files, memory_cgroup, parse_keyed, parse_limit, parse_u64, Mounts};

use super::read_whole;
use crate::event::{CgroupPressure, CgroupSample};

/// Whether /proc/PID/stat text shows an exiting task: a zombie or dead state, or
/// PF_EXITING (0x4) in the flags (field 9).
pub fn stat_exiting(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else { return true };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & 0x4 != 0
}

/// The located cgroup with its files open.
struct Located {
    /// The path in /proc/PID/cgroup it was found from, to see a move.
    from: String,
    path: String,
    version: u8,
    usage: File,
    limit: Option<File>,
    peak: Option<File>,
    /// v1 memory.oom_control, v2 memory.events.
    events: Option<File>,
    stat: Option<File>,
    /// v1 memory.failcnt (v2 counts limit hits in memory.events).
    failcnt: Option<File>,
    /// v2 memory.pressure.
    pressure: Option<File>,
}

impl Located {
    fn open(from: &str, path: String, version: u8) -> Option<Located> {
        let dir = Path::new(&path);
        let open = |name: &str| File::open(dir.join(name)).ok();
        let files = control_files(version);
        // The v2 root cgroup has no memory.current: nothing to report there.
        let usage = open(files.usage)?;
        let (limit, peak, events) = (open(files.limit), open(files.peak), open(files.events));
        let (stat, failcnt, pressure) = (open("memory.stat"), open("memory.failcnt"), open("memory.pressure"));
        Some(Located { from: from.to_string(), path, version, usage, limit, peak, events, stat, failcnt, pressure })
    }

    fn read(&self, buf: &mut Vec<u8>) -> Option<CgroupSample> {
        let mut read = |f: &File, parse: &dyn Fn(&str) -> Option<u64>| -> Option<u64> {
            let n = read_whole(f, buf).ok()?;
            parse(std::str::from_utf8(&buf[..n]).ok()?)
        };
        let usage_bytes = read(&self.usage, &parse_u64)?;
        let limit_bytes = self.limit.as_ref().and_then(|f| read(f, &|t| parse_limit(self.version, t)));
        let peak_bytes = self.peak.as_ref().and_then(|f| read(f, &parse_u64));
        let oom_kills = self.events.as_ref().and_then(|f| read(f, &|t| parse_keyed(t, "oom_kill")));
        let inactive = if self.version == 1 { "total_inactive_file" } else { "inactive_file" };
        let inactive_file_bytes = self.stat.as_ref().and_then(|f| read(f, &|t| parse_keyed(t, inactive)));
        let limit_hits = match self.version {
            1 => self.failcnt.as_ref().and_then(|f| read(f, &parse_u64)),
            _ => self.events.as_ref().and_then(|f| read(f, &|t| parse_keyed(t, "max"))),
        };
        let psi_some_avg10 = self.pressure.as_ref().and_then(|f| {
            let n = read_whole(f, buf).ok()?;
            psi_some_avg10(std::str::from_utf8(&buf[..n]).ok()?)
        });
        let pressure = (inactive_file_bytes.is_some() || limit_hits.is_some() || psi_some_avg10.is_some())
            .then_some(CgroupPressure { inactive_file_bytes, limit_hits, psi_some_avg10 });
        Some(CgroupSample {
            path: self.path.clone(),
            version: self.version,
            usage_bytes,
            limit_bytes,
            peak_bytes,
            oom_kills,
            members: Vec::new(),
            pressure,
        })
    }
}

/// `some avg10` of a PSI file ("some avg10=1.23 avg60=... total=...").
pub fn psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("avg10=")?.parse().ok())
}

/// Samples the memory cgroup of one process.
pub struct CgroupSampler {
    pid: u32,
    mounts: Mounts,
    /// /proc/PID/cgroup, open while the process lives.
    proc_cgroup: Option<File>,
    located: Option<Located>,
    buf: Vec<u8>,
}

impl CgroupSampler {
    /// Locates the memory cgroup of `pid` (mountinfo of this process, read once).
    pub fn new(pid: u32) -> CgroupSampler {
        Self::with_mounts(pid, host::memcg::read_mounts())
    }

    pub fn with_mounts(pid: u32, mounts: Mounts) -> CgroupSampler {
        let proc_cgroup = File::open(format!("/proc/{pid}/cgroup")).ok();
        let mut s = CgroupSampler { pid, mounts, proc_cgroup, located: None, buf: Vec::with_capacity(1024) };
        s.relocate();
        s
    }

    /// Re-reads /proc/PID/cgroup and re-opens the cgroup's files if it moved. Once the
    /// process is gone, the last location stays.
    fn relocate(&mut self) {
        let Some(f) = &self.proc_cgroup else { return };
        let Ok(n) = read_whole(f, &mut self.buf) else {
            tracing::debug!("pid {} gone: keeping its last memory cgroup", self.pid);
            self.proc_cgroup = None;
            return;
        };
        let Ok(text) = std::str::from_utf8(&self.buf[..n]) else { return };
        let Some((version, from)) = memory_cgroup(text, &self.mounts) else {
            self.located = None;
            return;
        };
        if self.located.as_ref().is_some_and(|l| l.from == from) {
            return;
        }
        // An exiting task is moved to the root cgroup (cgroup_exit): that is no move to
        // follow. Checked only when the path changed.
        let exiting = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_or(true, |t| stat_exiting(&t));
        if exiting {
            self.forget_process();
            return;
        }
        let Some(mount) = self.mounts.of_version(version) else { return };
        let path = cgroup_dir(mount, from);
        self.located = Located::open(from, path, version);
        match &self.located {
            Some(l) => tracing::debug!("memory cgroup of pid {}: {} (v{})", self.pid, l.path, l.version),
            None => tracing::debug!("pid {} has no memory cgroup with a controller", self.pid),
        }
    }

    /// Stops following the process (it exited): the cgroup it was last in stays.
    pub fn forget_process(&mut self) {
        if self.proc_cgroup.take().is_some() {
            tracing::debug!("pid {} exited: keeping its last memory cgroup", self.pid);
        }
    }

    /// The cgroup's current values; None when the process has no memory cgroup (or it
    /// was removed).
    pub fn sample(&mut self) -> Option<CgroupSample> {
        self.relocate();
        let sample = self.located.as_ref()?.read(&mut self.buf);
        if sample.is_none() {
            // Removed (rmdir): look again next time if the process still lives.
            self.located = None;
        }
        sample
    }

    /// The cgroup folder, once located.
    pub fn path(&self) -> Option<&str> {
        self.located.as_ref().map(|l| l.path.as_str())
    }

    /// The cgroup folder and its version (1 or 2), once located.
    pub fn located(&self) -> Option<(&str, u8)> {
        self.located.as_ref().map(|l| (l.path.as_str(), l.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exiting_tasks_are_recognized_from_stat() {
        let live = "4711 (python3 (x)) S 1 4711 4711 0 -1 4194560 100 0 0 0 1 2";
        assert!(!stat_exiting(live));
        assert!(stat_exiting("4711 (python3) R 1 4711 4711 0 -1 4194564 100 0 0 0 1 2"));
        assert!(stat_exiting("4711 (python3) Z 1 4711 4711 0 -1 4227076 100 0 0 0 1 2"));
        assert!(stat_exiting(""));
    }

    #[test]
    fn v2_cgroup_without_memory_peak_reports_none_for_peak() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "1048576\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        let path = dir.path().display().to_string();
        let l = Located::open("/x", path.clone(), 2).unwrap();
        let s = l.read(&mut Vec::new()).unwrap();
        assert_eq!(
            s,
            CgroupSample {
                path,
                version: 2,
                usage_bytes: 1 << 20,
                limit_bytes: None,
                peak_bytes: None,
                oom_kills: Some(0),
                members: Vec::new(),
                pressure: Some(CgroupPressure { inactive_file_bytes: None, limit_hits: Some(0), psi_some_avg10: None }),
            }
        );
        // And with a peak and a limit, re-read through the same open files.
        std::fs::write(dir.path().join("memory.peak"), "2097152\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "4194304\n").unwrap();
        let l = Located::open("/x", dir.path().display().to_string(), 2).unwrap();
        std::fs::write(dir.path().join("memory.current"), "3145728\n").unwrap();
        let s = l.read(&mut Vec::new()).unwrap();
        assert_eq!((s.usage_bytes, s.limit_bytes, s.peak_bytes), (3 << 20, Some(4 << 20), Some(2 << 20)));
    }

    #[test]
    fn v2_pressure_signs_are_read_from_stat_events_and_pressure() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(dir.path().join(f), t).unwrap();
        w("memory.current", "1048576\n");
        w("memory.events", "low 0\nhigh 2\nmax 17\noom 1\noom_kill 1\n");
        w("memory.stat", "anon 100\nfile 300\nactive_file 100\ninactive_file 200\n");
        w("memory.pressure", "some avg10=12.50 avg60=3.00 avg300=0.60 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=9\n");
        let s = Located::open("/x", dir.path().display().to_string(), 2).unwrap().read(&mut Vec::new()).unwrap();
        assert_eq!(s.pressure, Some(CgroupPressure { inactive_file_bytes: Some(200), limit_hits: Some(17), psi_some_avg10: Some(12.5) }));
        assert_eq!(psi_some_avg10("full avg10=1.00\n"), None);
    }

    #[test]
    fn real_v1_memcg_of_a_moved_process_is_found_with_its_limit() {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        // SAFETY: plain syscall.
        if !v1.join("memory.limit_in_bytes").exists() || unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root and a cgroup v1 memory hierarchy at {}", v1.display());
            return;
        }
        // Guards from the scenario crate: the process is killed and the cgroup removed
        // on drop, even when an assertion failed.
        let cg = scenario::Memcg::new("sample-test", 48 << 20).unwrap();
        let dir = cg.path.clone();
        let mut child = scenario::ChildGuard(std::process::Command::new("sleep").arg("30").spawn().unwrap());
        let pid = child.pid();

        // Located before the move: the sampler follows it.
        let mut s = CgroupSampler::new(pid);
        let before = s.sample();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        let sample = s.sample().unwrap_or_else(|| panic!("no cgroup for {pid} (before the move: {before:?})"));
        assert_eq!(sample.path, dir.display().to_string());
        assert_eq!(sample.version, 1);
        assert_eq!(sample.limit_bytes, Some(48 << 20));
        assert!(sample.peak_bytes.is_some() && sample.oom_kills == Some(0), "{sample:?}");
        assert_eq!(s.path(), Some(dir.display().to_string().as_str()));

        // The process exits: the last cgroup is still read.
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let after = s.sample().unwrap();
        assert_eq!(after.path, sample.path);
        assert_eq!(after.limit_bytes, Some(48 << 20));
        drop(cg);
        // Removed: no sample, no error.
        assert_eq!(s.sample(), None);
    }
}
