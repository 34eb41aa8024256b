//! Which memory cgroup a process is in, from its /proc/PID/cgroup text
//! (`hierarchy-id:controllers:path` a line), and that cgroup's folder.
//!
//! A v1 hierarchy with the `memory` controller wins over the v2 one: on a hybrid machine
//! v2 has no memory controller, and the limit that kills is the v1 one.
use super::mounts::{Mount, Mounts};

/// The memory cgroup of a process: `(version, path in the hierarchy)`. v1's memory line
/// when there is a v1 memory hierarchy, else v2's `0::` line.
///
/// Borrows from the text: the tracer's sampler calls it on every sample to see a move.
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

/// A located memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1 or 2.
    pub version: u8,
    /// The path in the hierarchy, as /proc/PID/cgroup shows it.
    pub path: String,
    /// Where its hierarchy is mounted: the walk to the root stops there.
    pub mountpoint: String,
    /// Its folder, with the control files.
    pub dir: String,
}

/// The memory cgroup in `proc_cgroup` text, with its folder under `mounts`.
pub fn locate(proc_cgroup: &str, mounts: &Mounts) -> Option<Location> {
    let (version, path) = memory_cgroup(proc_cgroup, mounts)?;
    let mount = mounts.of_version(version)?;
    Some(Location {
        version,
        path: path.to_string(),
        mountpoint: mount.mountpoint.clone(),
        dir: cgroup_dir(mount, path),
    })
}

/// The memory cgroup of `pid` now; None when the process is gone or in no hierarchy
/// with the memory controller.
pub fn locate_pid(pid: u32, mounts: &Mounts) -> Option<Location> {
    locate(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?, mounts)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::memcg::mounts::parse_mountinfo;

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

    /// The workload's hybrid fixture: no v1 cpu mount, and the v2 line at `/`.
    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// `(version, mount point, path)` as the workload's budget check asked for them.
    fn memory_cgroup_path(cgroup: &str, mountinfo: &str) -> Option<(u8, std::path::PathBuf, String)> {
        locate(cgroup, &parse_mountinfo(mountinfo)).map(|l| (l.version, l.mountpoint.into(), l.path))
    }

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
    fn v1_memory_controller_wins_on_a_hybrid_system() {
        let cgroup = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let (version, mount, path) = memory_cgroup_path(cgroup, MOUNTINFO_HYBRID).unwrap();
        assert_eq!((version, mount.as_path(), path.as_str()), (1, Path::new("/sys/fs/cgroup/memory"), "/process_api/abc"));
    }

    #[test]
    fn v1_controller_listed_with_others_is_found() {
        let cgroup = "4:cpu,memory:/x\n";
        assert_eq!(memory_cgroup_path(cgroup, MOUNTINFO_HYBRID).unwrap().0, 1);
    }

    #[test]
    fn no_memory_controller_means_no_cgroup_limit() {
        assert_eq!(memory_cgroup_path("1:cpu:/\n", MOUNTINFO_HYBRID), None);
    }

    #[test]
    fn a_location_carries_its_folder_and_mount() {
        let l = locate(HYBRID_CGROUP, &parse_mountinfo(HYBRID_MOUNTINFO)).unwrap();
        assert_eq!(
            l,
            Location {
                version: 1,
                path: "/process_api/abc".into(),
                mountpoint: "/sys/fs/cgroup/memory".into(),
                dir: "/sys/fs/cgroup/memory/process_api/abc".into(),
            }
        );
        let l = locate(V2_CGROUP, &parse_mountinfo(V2_MOUNTINFO)).unwrap();
        assert_eq!((l.version, l.dir.as_str()), (2, "/sys/fs/cgroup/system.slice/translate.service"));
        // A v1 memory line without a v1 memory mount falls back to v2's line.
        let l = locate(HYBRID_CGROUP, &parse_mountinfo(V2_MOUNTINFO)).unwrap();
        assert_eq!((l.version, l.dir.as_str()), (2, "/sys/fs/cgroup/user.slice"));
    }

    #[test]
    fn a_gone_pid_has_no_location() {
        assert_eq!(locate_pid(u32::MAX - 1, &parse_mountinfo(V2_MOUNTINFO)), None);
    }
}
