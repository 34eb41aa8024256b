//! The limits on a process's memory: its cgroup's and every ancestor's up to the
//! hierarchy's root, since a parent's limit binds every child below it (a container's
//! own cgroup often has none; its parent, the one the orchestrator made, does).
use std::path::Path;

use super::{
    control::{control_files, parse_limit, parse_u64},
    membership::{locate_pid, Location},
    mounts::read_mounts,
};

/// One cgroup on the path from the process's cgroup to the hierarchy's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub dir: String,
    /// None: no limit of its own.
    pub limit: Option<u64>,
    pub usage: u64,
    /// Of the usage, file pages on the inactive list (memory.stat: v1
    /// `total_inactive_file`, v2 `inactive_file`): the page cache the kernel drops before
    /// it OOM-kills anything, such as a checkpoint just read. 0 when unknown.
    pub reclaimable: u64,
}

impl Level {
    /// Bytes left under its limit, counting reclaimable page cache as room; None without
    /// a limit.
    pub fn free(&self) -> Option<u64> {
        self.limit.map(|l| room(l, self.usage, self.reclaimable))
    }
}

/// Bytes left under `limit` with `usage` charged, of which `reclaimable` is page cache the
/// kernel drops before it OOM-kills.
pub fn room(limit: u64, usage: u64, reclaimable: u64) -> u64 {
    limit.saturating_sub(usage.saturating_sub(reclaimable))
}

/// Inactive file bytes in the text of a memory.stat.
fn inactive_file(stat: &str, version: u8) -> Option<u64> {
    let key = if version == 1 { "total_inactive_file" } else { "inactive_file" };
    stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The level with a limit and the least room left: a parent's limit binds every child.
pub fn tightest(levels: &[Level]) -> Option<&Level> {
    levels.iter().filter(|l| l.limit.is_some()).min_by_key(|l| l.free())
}

/// The limit and usage in cgroup folder `dir` of `version`; None without a usage file
/// (not a memory cgroup, removed, or the v2 root).
pub fn read_level(dir: &Path, version: u8) -> Option<Level> {
    let files = control_files(version);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let usage = read(files.usage).and_then(|t| parse_u64(&t))?;
    let limit = read(files.limit).and_then(|t| parse_limit(version, &t));
    let reclaimable = read("memory.stat").and_then(|t| inactive_file(&t, version)).unwrap_or(0).min(usage);
    Some(Level { dir: dir.display().to_string(), limit, usage, reclaimable })
}

/// `dir` and its ancestors up to `mountpoint`, innermost first, with their limits and
/// usage (v1 or v2 files).
pub fn levels(dir: &str, mountpoint: &str, version: u8) -> Vec<Level> {
    let mut out = Vec::new();
    let mut at = Path::new(dir);
    loop {
        out.extend(read_level(at, version));
        match at.parent() {
            Some(p) if at != Path::new(mountpoint) && p.starts_with(mountpoint) => at = p,
            _ => break,
        }
    }
    out
}

impl Location {
    /// This cgroup and its ancestors, innermost first.
    pub fn levels(&self) -> Vec<Level> {
        levels(&self.dir, &self.mountpoint, self.version)
    }
}

/// The binding memory limit of `pid` now, `(version, level)`: the level with the least
/// room among its cgroup and the ancestors. None when no level has a limit.
pub fn tightest_of_pid(pid: u32) -> Option<(u8, Level)> {
    let location = locate_pid(pid, &read_mounts())?;
    let levels = location.levels();
    tightest(&levels).cloned().map(|l| (location.version, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_level_is_the_one_with_least_room() {
        let levels = [
            Level { dir: "/a/b".into(), limit: None, usage: 10, reclaimable: 0 },
            Level { dir: "/a".into(), limit: Some(100), usage: 90, reclaimable: 0 },
            Level { dir: "/".into(), limit: Some(1000), usage: 100, reclaimable: 0 },
        ];
        assert_eq!(tightest(&levels).unwrap().dir, "/a");
        assert_eq!(tightest(&levels[..1]), None);
    }

    /// Writes a cgroup folder's usage and, when given, limit files.
    fn cgroup(dir: &Path, version: u8, usage: &str, limit: Option<&str>) {
        std::fs::create_dir_all(dir).unwrap();
        let files = control_files(version);
        std::fs::write(dir.join(files.usage), usage).unwrap();
        if let Some(limit) = limit {
            std::fs::write(dir.join(files.limit), limit).unwrap();
        }
    }

    #[test]
    fn the_walk_reads_every_ancestor_up_to_the_mount_and_no_further() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("memory");
        let job = mount.join("kube/pod/job");
        // Above the mount point: never read.
        cgroup(tmp.path(), 1, "1\n", Some("2\n"));
        cgroup(&mount, 1, "4096000\n", Some("9223372036854771712\n"));
        cgroup(&mount.join("kube"), 1, "3000\n", Some("8000\n"));
        // kube/pod has no files: not a memory cgroup, skipped.
        cgroup(&job, 1, "1000\n", Some("9223372036854771712\n"));
        let levels = levels(&job.display().to_string(), &mount.display().to_string(), 1);
        let dirs: Vec<&str> = levels.iter().map(|l| l.dir.as_str()).collect();
        assert_eq!(dirs, [job.display().to_string(), mount.join("kube").display().to_string(), mount.display().to_string()]);
        assert_eq!(levels[0].limit, None);
        let binding = tightest(&levels).unwrap();
        assert_eq!((binding.limit, binding.usage, binding.free()), (Some(8000), 3000, Some(5000)));
    }

    #[test]
    fn inactive_file_cache_counts_as_room() {
        let tmp = tempfile::tempdir().unwrap();
        cgroup(tmp.path(), 1, "6000\n", Some("8000\n"));
        // v1's own inactive_file is this cgroup alone; total_ includes the children, as
        // usage_in_bytes does.
        std::fs::write(tmp.path().join("memory.stat"), "cache 4000\ninactive_file 100\ntotal_inactive_file 2500\n").unwrap();
        let l = read_level(tmp.path(), 1).unwrap();
        assert_eq!((l.usage, l.reclaimable, l.free()), (6000, 2500, Some(4500)));
        let v2 = tmp.path().join("v2");
        cgroup(&v2, 2, "6000\n", Some("8000\n"));
        std::fs::write(v2.join("memory.stat"), "anon 3000\nfile 3000\ninactive_file 1000\nactive_file 2000\n").unwrap();
        assert_eq!(read_level(&v2, 2).unwrap().free(), Some(3000));
        // Never more than the usage, whatever the file says.
        std::fs::write(v2.join("memory.stat"), "inactive_file 99999\n").unwrap();
        assert_eq!(read_level(&v2, 2).unwrap().free(), Some(8000));
    }

    #[test]
    fn v2_levels_read_max_and_current() {
        let tmp = tempfile::tempdir().unwrap();
        let svc = tmp.path().join("system.slice/svc");
        cgroup(tmp.path(), 2, "7\n", None);
        cgroup(&tmp.path().join("system.slice"), 2, "500\n", Some("max\n"));
        cgroup(&svc, 2, "100\n", Some("1000\n"));
        let loc = Location {
            version: 2,
            path: "/system.slice/svc".into(),
            mountpoint: tmp.path().display().to_string(),
            dir: svc.display().to_string(),
        };
        let levels = loc.levels();
        assert_eq!(levels.len(), 3);
        assert_eq!(tightest(&levels).unwrap().dir, svc.display().to_string());
        assert_eq!(read_level(&tmp.path().join("nope"), 2), None);
    }

    #[test]
    fn the_running_process_has_a_readable_binding_limit_or_none() {
        if let Some((version, level)) = tightest_of_pid(std::process::id()) {
            assert!(version == 1 || version == 2);
            assert!(level.limit.is_some_and(|l| l > 0) && Path::new(&level.dir).exists(), "{level:?}");
        }
        assert_eq!(tightest_of_pid(u32::MAX - 1), None);
    }
}
