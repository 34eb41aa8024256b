//! Root for the steps that need it, and only for them. `cargo xtask run-workload` and
//! `cargo xtask test` build as the user who typed them; then this same xtask binary runs
//! again through `sudo` for the privileged part, with the build chain's PATH (sudo's
//! `secure_path` would drop `~/.cargo/bin`), and runs no cargo there: it uses what the
//! user built. What the privileged part writes under `target/` is handed back to the user
//! at the end (also after `sudo cargo xtask ...` typed by hand), so `target/` stays theirs.
use std::{
    path::Path,
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::exec::{build_path, on_path};

/// Hidden flag of the second, privileged run: the build is done.
pub const BUILT_FLAG: &str = "--built";

pub fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// The command that runs `exe` (this xtask) again as root with `args`: `sudo env PATH=...
/// HOME=... XTASK ARGS`. An error naming what is needed when there is no sudo.
pub fn rerun_command(why: &str, exe: &Path, args: &[String]) -> Result<Command> {
    let Some(sudo) = on_path("sudo") else {
        bail!("{why} needs root, and this user has no sudo: run it as root, or install sudo and allow this user to use it");
    };
    let mut cmd = Command::new(sudo);
    cmd.arg("env").arg(format!("PATH={}", build_path()));
    // The user's toolchain and caches: the privileged part reads them, it runs no cargo.
    for var in ["HOME", "CARGO_HOME", "RUSTUP_HOME", "XDG_CACHE_HOME", "TERM", "RUST_LOG", "CI"] {
        if let Some(v) = std::env::var_os(var) {
            let mut kv = std::ffi::OsString::from(format!("{var}="));
            kv.push(v);
            cmd.arg(kv);
        }
    }
    cmd.arg(exe).args(args).arg(BUILT_FLAG);
    Ok(cmd)
}

/// Runs this xtask again as root for the privileged part; fails when that part failed.
pub fn rerun_as_root(why: &str, args: &[String]) -> Result<()> {
    let exe = ExeCopy::make()?;
    let mut cmd = rerun_command(why, &exe.0, args)?;
    println!("xtask: {why} needs root: running the rest through sudo (one password prompt at most)");
    let status = cmd.status().context("running sudo")?;
    if !status.success() {
        bail!("the privileged part failed ({status})");
    }
    Ok(())
}

/// A copy of the running xtask binary for the privileged run. Not its path: the user's
/// `cargo build --bins` links xtask again (with the features the whole workspace
/// unifies, not those of `cargo run -p xtask`) over target/debug/xtask while this one
/// runs, and the running one is then only reachable through /proc/self/exe.
struct ExeCopy(std::path::PathBuf);

impl ExeCopy {
    fn make() -> Result<ExeCopy> {
        // Beside the binary: the user's target folder, wherever CARGO_TARGET_DIR put it.
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let dir = exe.parent().context("the xtask binary's folder")?;
        let path = dir.join(format!("xtask-for-sudo-{}", std::process::id()));
        std::fs::copy("/proc/self/exe", &path).with_context(|| format!("copying the xtask binary to {}", path.display()))?;
        Ok(ExeCopy(path))
    }
}

impl Drop for ExeCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// In a privileged run started by sudo: gives `paths` (recursively) back to the user who
/// ran sudo. Nothing to do for a root login.
pub fn give_back(paths: &[&Path]) {
    let ids = |v: &str| std::env::var(v).ok().and_then(|s| s.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (ids("SUDO_UID"), ids("SUDO_GID")) else { return };
    if uid == 0 {
        return;
    }
    for p in paths {
        if let Err(e) = chown_tree(p, uid, gid) {
            eprintln!("xtask: could not give {} back to uid {uid}: {e}", p.display());
        }
    }
}

/// chown -R without following symbolic links.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn the_rerun_keeps_the_toolchain_path_and_marks_the_build_done() {
        if on_path("sudo").is_none() {
            let e = rerun_command("the test suite", Path::new("/x/xtask"), &["test".into()]).unwrap_err();
            assert!(e.to_string().contains("needs root, and this user has no sudo"), "{e}");
            return;
        }
        let cmd = rerun_command("the test suite", Path::new("/x/xtask"), &["test".into(), "capture".into()]).unwrap();
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[0], "env");
        assert!(args[1].starts_with("PATH=") && args[1].contains(".cargo/bin") && args[1].contains("llvm-22"), "{args:?}");
        assert_eq!(args[args.len() - 4..], ["/x/xtask", "test", "capture", BUILT_FLAG], "{args:?}");
    }

    #[test]
    fn give_back_hands_a_tree_with_a_link_to_another_user_and_leaves_the_link_target_alone() {
        if !is_root() {
            eprintln!("skipped: chown to another user needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let tree = tmp.path().join("target");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), "y").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        // nobody:nogroup, the user with no rights on anything.
        chown_tree(&tree, 65534, 65534).unwrap();
        for p in [tree.clone(), tree.join("a"), tree.join("a/b"), tree.join("a/b/file"), tree.join("a/link")] {
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", p.display());
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0, "the link was followed");
        assert!(chown_tree(&tmp.path().join("missing"), 1, 1).is_ok());
    }
}
