//! A cgroup as the scope of a trace (`--cgroup PATH`, `--unit NAME`): where it is in the
//! cgroup filesystem, and the processes in its subtree.
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ScopeError {
    #[error("{0} does not exist: give a cgroup folder such as /sys/fs/cgroup/system.slice/NAME.service (see `cat /proc/PID/cgroup` for a process's)")]
    Missing(String),
    #[error("{0} is not a cgroup (it has no cgroup.procs): give a folder under /sys/fs/cgroup")]
    NotACgroup(String),
    #[error("no systemd unit named {0:?} on this machine (`systemctl status {0}` says more); give its cgroup with --cgroup PATH instead")]
    UnknownUnit(String),
}

/// The cgroup filesystem roots: v2 (unified), v1's systemd and memory hierarchies.
const ROOTS: [&str; 4] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/memory"];

/// The folder of the cgroup `given`: an absolute folder, or a path relative to a cgroup
/// root (`system.slice/x.service`, as /proc/PID/cgroup and systemd print it).
pub fn resolve_cgroup(given: &Path) -> Result<PathBuf, ScopeError> {
    let shown = given.display().to_string();
    let candidates: Vec<PathBuf> = if given.starts_with("/sys/fs/cgroup") {
        vec![given.to_path_buf()]
    } else {
        let rel = given.strip_prefix("/").unwrap_or(given);
        let mut c: Vec<PathBuf> = ROOTS.iter().map(|r| Path::new(r).join(rel)).collect();
        if given.is_absolute() {
            c.insert(0, given.to_path_buf());
        }
        c
    };
    let Some(dir) = candidates.iter().find(|p| p.is_dir()) else {
        return Err(ScopeError::Missing(shown));
    };
    if !dir.join("cgroup.procs").is_file() {
        return Err(ScopeError::NotACgroup(dir.display().to_string()));
    }
    Ok(dir.clone())
}

/// The cgroup of the systemd unit `name` (`nginx`, `model.service`).
pub fn resolve_unit(name: &str) -> Result<PathBuf, ScopeError> {
    let unit = if name.contains('.') { name.to_string() } else { format!("{name}.service") };
    let from_systemctl = std::process::Command::new("systemctl")
        .args(["show", "--property", "ControlGroup", "--value", &unit])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|cg| !cg.is_empty());
    if let Some(cg) = from_systemctl {
        if let Ok(dir) = resolve_cgroup(Path::new(&cg)) {
            return Ok(dir);
        }
    }
    // Without systemctl (a container, a chroot): the unit's folder in the usual slices.
    for root in ROOTS {
        for slice in ["system.slice", "user.slice", ""] {
            let dir = Path::new(root).join(slice).join(&unit);
            if dir.join("cgroup.procs").is_file() {
                return Ok(dir);
            }
        }
    }
    Err(ScopeError::UnknownUnit(name.to_string()))
}

/// Where a cgroup folder is for the kernel: its hierarchy's id (the `dst_root` of
/// cgroup_attach_task; `None` when it cannot be told) and its path from the hierarchy's
/// root (`/system.slice/x.service`), as the kernel's cgroup tracepoints print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub root: Option<i32>,
    pub path: String,
}

/// The hierarchy of the cgroup folder `dir`, from this process's mount table and cgroup
/// list.
pub fn hierarchy_of(dir: &Path) -> Option<Hierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    hierarchy_in(dir, &mountinfo, &cgroups)
}

/// [`hierarchy_of`] from the texts of /proc/self/mountinfo and /proc/self/cgroup.
fn hierarchy_in(dir: &Path, mountinfo: &str, cgroups: &str) -> Option<Hierarchy> {
    // The deepest cgroup mount holding `dir`: (mount root, mount point, v2?, options).
    let mut best: Option<(&str, &str, bool, &str)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 5 || r.len() < 3 || !matches!(r[0], "cgroup" | "cgroup2") {
            continue;
        }
        let (root, point) = (f[3], f[4]);
        if dir.starts_with(point) && best.is_none_or(|b| point.len() > b.1.len()) {
            best = Some((root, point, r[0] == "cgroup2", r[2]));
        }
    }
    let (mount_root, point, v2, options) = best?;
    let below = dir.strip_prefix(point).ok()?;
    let mut path = Path::new(mount_root).join(below).display().to_string();
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    let root = if v2 {
        // The unified hierarchy is the kernel's first: id 0.
        Some(0)
    } else {
        // v1: the hierarchy whose controllers (or name=) are the mount's options.
        let opts: Vec<&str> = options.split(',').collect();
        cgroups.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, ctrls) = (it.next()?, it.next()?);
            (!ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c))).then(|| id.parse().ok()).flatten()
        })
    };
    Some(Hierarchy { root, path })
}

/// Every process in the cgroup and the cgroups below it, in the order listed.
pub fn members(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_scopes_are_one_sentence_each() {
        assert!(matches!(resolve_cgroup(Path::new("/nonexistent/cg")), Err(ScopeError::Missing(_))));
        let e = resolve_cgroup(Path::new("/tmp")).unwrap_err();
        assert!(matches!(e, ScopeError::NotACgroup(_)), "{e:?}");
        assert!(e.to_string().contains("is not a cgroup"), "{e}");
        let e = resolve_unit("tracer-no-such-unit-xyz").unwrap_err();
        assert!(e.to_string().contains("no systemd unit named"), "{e}");
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 /docker/abc /mnt/ctr rw - cgroup2 cgroup2 rw
";
    const CGROUPS: &str = "9:name=systemd:/\n4:memory:/x\n2:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn a_folder_is_placed_in_its_hierarchy() {
        let h = |d: &str| hierarchy_in(Path::new(d), MOUNTINFO, CGROUPS);
        assert_eq!(h("/sys/fs/cgroup/memory/a/b"), Some(Hierarchy { root: Some(4), path: "/a/b".into() }));
        assert_eq!(h("/sys/fs/cgroup/memory"), Some(Hierarchy { root: Some(4), path: "/".into() }));
        assert_eq!(h("/sys/fs/cgroup/systemd/system.slice"), Some(Hierarchy { root: Some(9), path: "/system.slice".into() }));
        assert_eq!(h("/sys/fs/cgroup/cpu,cpuacct/g"), Some(Hierarchy { root: Some(2), path: "/g".into() }));
        assert_eq!(h("/sys/fs/cgroup/unified/u.service"), Some(Hierarchy { root: Some(0), path: "/u.service".into() }));
        // A container's mount of a cgroup below the hierarchy's root.
        assert_eq!(h("/mnt/ctr/w"), Some(Hierarchy { root: Some(0), path: "/docker/abc/w".into() }));
        assert_eq!(h("/tmp"), None);
    }

    #[test]
    fn this_process_is_where_proc_says_in_the_memory_hierarchy() {
        // The truth: /proc/self/cgroup's memory line names the hierarchy id and path.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some((id, path)) = text.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            (it.next()? == "memory").then(|| (id.parse::<i32>().unwrap(), it.next().unwrap().to_string()))
        }) else {
            eprintln!("SKIP: no cgroup v1 memory hierarchy on this machine");
            return;
        };
        let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        assert_eq!(hierarchy_of(&dir), Some(Hierarchy { root: Some(id), path }));
    }

    #[test]
    fn the_root_cgroup_is_found_from_its_relative_name_and_lists_this_process() {
        // The truth: /proc/self/cgroup names our cgroup relative to a root.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = text.lines().find_map(|l| l.rsplit_once(':').map(|(_, p)| p.to_string())).unwrap();
        let Ok(dir) = resolve_cgroup(Path::new(&rel)) else {
            eprintln!("{rel} is in no mounted hierarchy here");
            return;
        };
        assert!(members(&dir).contains(&std::process::id()), "{} lists no {}", dir.display(), std::process::id());
    }
}
