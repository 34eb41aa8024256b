//! Where the cgroup hierarchies that can hold a memory cgroup are mounted, from
//! mountinfo text (`id parent maj:min root mountpoint options [optional...] - fstype
//! source superoptions`).
//!
//! Read from this process's own mountinfo: the cgroup's files are opened through our
//! mount namespace, whatever the target's is.

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

impl Mounts {
    /// The hierarchy of cgroup `version` (1: the v1 memory one, 2: the unified one).
    pub fn of_version(&self, version: u8) -> Option<&Mount> {
        if version == 1 {
            self.v1_memory.as_ref()
        } else {
            self.v2.as_ref()
        }
    }
}

/// Finds the v1 memory and v2 hierarchies in mountinfo text.
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
pub fn unescape(s: &str) -> String {
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

/// Whether a v2 `cgroup.controllers` text lists the memory controller: on a hybrid
/// machine v2 is mounted without it, and then holds no memory limit.
pub fn has_memory_controller(controllers: &str) -> bool {
    controllers.split_whitespace().any(|c| c == "memory")
}

/// The hierarchies in /proc/self/mountinfo; none when it cannot be read (no /proc).
pub fn read_mounts() -> Mounts {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_a_stray_backslash_kept() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape("/a\\9b\\04"), "/a\\9b\\04");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn a_whole_hierarchy_mount_wins_over_an_earlier_bind_mount() {
        let mi = "\
50 31 0:38 /docker/abc /inner rw - cgroup2 cgroup2 rw
51 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
52 31 0:38 / /again rw - cgroup2 cgroup2 rw
53 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
garbage line
";
        let m = parse_mountinfo(mi);
        assert_eq!(m.v2, Some(Mount { root: "/".into(), mountpoint: "/sys/fs/cgroup".into() }));
        assert_eq!(m.v1_memory, None);
        assert_eq!(m.of_version(2).map(|m| m.mountpoint.as_str()), Some("/sys/fs/cgroup"));
        assert_eq!(m.of_version(1), None);
    }

    #[test]
    fn the_memory_controller_is_found_in_cgroup_controllers() {
        assert!(has_memory_controller("cpuset cpu io memory pids\n"));
        assert!(!has_memory_controller("cpuset cpu io pids\n"));
        assert!(!has_memory_controller(""));
    }
}
