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
use std::{fs::File, path::Path};

use super::read_whole;
use crate::event::CgroupSample;

/// A v1 `memory.limit_in_bytes` at or above this is "no limit" (the kernel prints
/// PAGE_COUNTER_MAX in bytes, 0x7FFFFFFFFFFFF000 on 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 60;

/// Where a cgroup hierarchy is mounted: `root` (the cgroup shown at `mountpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub root: String,
    pub mountpoint: String,
}

/// The hierarchies that can hold a memory cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// A cgroup v1 hierarchy with the memory controller.
    pub v1_memory: Option<Mount>,
    /// The cgroup v2 (unified) hierarchy.
    pub v2: Option<Mount>,
}

/// Finds the v1 memory and v2 hierarchies in mountinfo text
/// (`id parent maj:min root mountpoint options [optional...] - fstype source superoptions`).
/// The first mount of each wins, preferring one that shows the whole hierarchy (root `/`).
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mut l = left.split_whitespace();
        let (Some(root), Some(mountpoint)) = (l.nth(3), l.next()) else { continue };
        let mut r = right.split_whitespace();
        let (Some(fstype), _source, Some(superopts)) = (r.next(), r.next(), r.next()) else { continue };
        let mount = Mount { root: unescape(root), mountpoint: unescape(mountpoint) };
        let slot = match fstype {
            "cgroup" if superopts.split(',').any(|o| o == "memory") => &mut m.v1_memory,
            "cgroup2" => &mut m.v2,
            _ => continue,
        };
        if slot.as_ref().is_none_or(|s| s.root != "/" && mount.root == "/") {
            *slot = Some(mount);
        }
    }
    m
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The memory cgroup of a process from its /proc/PID/cgroup text
/// (`hierarchy-id:controllers:path` a line): `(version, path in the hierarchy)`. v1's
/// memory line when there is a v1 memory hierarchy, else v2's `0::` line.
pub fn memory_cgroup<'a>(proc_cgroup: &'a str, mounts: &Mounts) -> Option<(u8, &'a str)> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            v2 = Some(path);
        } else if mounts.v1_memory.is_some() && controllers.split(',').any(|c| c == "memory") {
            return Some((1, path));
        }
    }
    mounts.v2.as_ref().and(v2).map(|p| (2, p))
}

/// The folder of cgroup `path` (as /proc/PID/cgroup shows it) under `mount`.
pub fn cgroup_dir(mount: &Mount, path: &str) -> String {
    // Inside a cgroup namespace the path is already relative to the mount's root.
    let rel = if mount.root != "/" { path.strip_prefix(mount.root.as_str()).unwrap_or(path) } else { path };
    let rel = rel.trim_start_matches('/');
    let base = mount.mountpoint.trim_end_matches('/');
    if rel.is_empty() {
        mount.mountpoint.clone()
    } else {
        format!("{base}/{rel}")
    }
}

/// Whether /proc/PID/stat text shows an exiting task: a zombie or dead state, or
/// PF_EXITING (0x4) in the flags (field 9).
pub fn stat_exiting(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else { return true };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & 0x4 != 0
}

/// A number file (`memory.usage_in_bytes`, `memory.current`, `memory.peak`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 `memory.limit_in_bytes`: None when unlimited.
pub fn parse_v1_limit(text: &str) -> Option<u64> {
    parse_u64(text).filter(|&n| n < V1_UNLIMITED)
}

/// v2 `memory.max`: None for `max`.
pub fn parse_v2_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// The value of `key` in a `key value` file (v1 memory.oom_control, v2 memory.events).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
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
}

impl Located {
    fn open(from: &str, path: String, version: u8) -> Option<Located> {
        let dir = Path::new(&path);
        let open = |name: &str| File::open(dir.join(name)).ok();
        let (usage, limit, peak, events) = if version == 1 {
            (
                open("memory.usage_in_bytes")?,
                open("memory.limit_in_bytes"),
                open("memory.max_usage_in_bytes"),
                open("memory.oom_control"),
            )
        } else {
            // The v2 root cgroup has no memory.current: nothing to report there.
            (open("memory.current")?, open("memory.max"), open("memory.peak"), open("memory.events"))
        };
        Some(Located { from: from.to_string(), path, version, usage, limit, peak, events })
    }

    fn read(&self, buf: &mut Vec<u8>) -> Option<CgroupSample> {
        let mut read = |f: &File, parse: &dyn Fn(&str) -> Option<u64>| -> Option<u64> {
            let n = read_whole(f, buf).ok()?;
            parse(std::str::from_utf8(&buf[..n]).ok()?)
        };
        let usage_bytes = read(&self.usage, &parse_u64)?;
        let limit_parser: &dyn Fn(&str) -> Option<u64> =
            if self.version == 1 { &parse_v1_limit } else { &parse_v2_max };
        let limit_bytes = self.limit.as_ref().and_then(|f| read(f, limit_parser));
        let peak_bytes = self.peak.as_ref().and_then(|f| read(f, &parse_u64));
        let oom_kills = self.events.as_ref().and_then(|f| read(f, &|t| parse_keyed(t, "oom_kill")));
        Some(CgroupSample {
            path: self.path.clone(),
            version: self.version,
            usage_bytes,
            limit_bytes,
            peak_bytes,
            oom_kills,
        })
    }
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
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::with_mounts(pid, parse_mountinfo(&mountinfo))
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
        let mount = if version == 1 { self.mounts.v1_memory.as_ref() } else { self.mounts.v2.as_ref() };
        let Some(mount) = mount else { return };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice\n";

    const V2_MOUNTINFO: &str = "\
25 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_CGROUP: &str = "0::/system.slice/translate.service\n";

    #[test]
    fn hybrid_system_uses_the_v1_memory_hierarchy() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.v1_memory, Some(Mount { root: "/".into(), mountpoint: "/sys/fs/cgroup/memory".into() }));
        assert_eq!(m.v2.as_ref().map(|v| v.mountpoint.as_str()), Some("/sys/fs/cgroup/unified"));
        let (version, path) = memory_cgroup(HYBRID_CGROUP, &m).unwrap();
        assert_eq!((version, path), (1, "/process_api/abc"));
        assert_eq!(cgroup_dir(m.v1_memory.as_ref().unwrap(), path), "/sys/fs/cgroup/memory/process_api/abc");
    }

    #[test]
    fn unified_system_uses_the_v2_line() {
        let m = parse_mountinfo(V2_MOUNTINFO);
        assert_eq!(m.v1_memory, None);
        let (version, path) = memory_cgroup(V2_CGROUP, &m).unwrap();
        assert_eq!(version, 2);
        assert_eq!(cgroup_dir(m.v2.as_ref().unwrap(), path), "/sys/fs/cgroup/system.slice/translate.service");
        assert_eq!(cgroup_dir(m.v2.as_ref().unwrap(), "/"), "/sys/fs/cgroup");
        // No cgroup filesystem mounted at all.
        assert_eq!(memory_cgroup(V2_CGROUP, &Mounts::default()), None);
    }

    #[test]
    fn namespaced_mount_root_and_escaped_mountpoint() {
        let mi = "40 31 0:38 /docker/abc /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory,cpu\n";
        let m = parse_mountinfo(mi);
        let mount = m.v1_memory.unwrap();
        assert_eq!(mount.mountpoint, "/sys/fs/cgroup/my mem");
        assert_eq!(cgroup_dir(&mount, "/docker/abc/job"), "/sys/fs/cgroup/my mem/job");
        assert_eq!(cgroup_dir(&mount, "/job"), "/sys/fs/cgroup/my mem/job");
    }

    #[test]
    fn exiting_tasks_are_recognized_from_stat() {
        let live = "4711 (python3 (x)) S 1 4711 4711 0 -1 4194560 100 0 0 0 1 2";
        assert!(!stat_exiting(live));
        assert!(stat_exiting("4711 (python3) R 1 4711 4711 0 -1 4194564 100 0 0 0 1 2"));
        assert!(stat_exiting("4711 (python3) Z 1 4711 4711 0 -1 4227076 100 0 0 0 1 2"));
        assert!(stat_exiting(""));
    }

    #[test]
    fn v1_values_parse_with_unlimited_limit_as_none() {
        assert_eq!(parse_u64("11831861248\n"), Some(11831861248));
        assert_eq!(parse_v1_limit("9223372036854771712\n"), None);
        assert_eq!(parse_v1_limit("67108864\n"), Some(64 << 20));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(3));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(parse_keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn v2_values_parse_with_max_as_none() {
        assert_eq!(parse_v2_max("max\n"), None);
        assert_eq!(parse_v2_max("268435456\n"), Some(256 << 20));
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "oom"), Some(2));
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
                oom_kills: Some(0)
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
