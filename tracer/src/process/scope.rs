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
