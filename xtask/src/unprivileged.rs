//! The README's test command typed by a user who is not root, checked from a root run:
//! a user made for the check, with a passwordless sudo rule made for it and this host's
//! Rust toolchain, runs `cargo xtask test FILTER --no-dist --no-kernels` in this
//! workspace. It must build as that user, raise privileges once through sudo, pass one
//! end-to-end test that needs root (a real OOM kill), and leave all of `target/` the
//! user's, including a file an earlier `sudo cargo ...` left there as root.
//!
//! The toolchain is root's (no other user has one here, and rustup's servers cannot be
//! reached). In a private mount namespace the user sees, at the very paths root uses, a
//! cargo home of its own (a copy of root's: its registry and tools) and root's rustup
//! toolchains read-only, as if it had installed them itself; folders above them that
//! others cannot enter (/root is 0700) are laid over with an open tmpfs there. The same
//! paths matter: cargo hashes a dependency's source path into its fingerprint, and the
//! check reuses the suite's build rather than building it all again as the user.
//! `target/` and `Cargo.lock` are lent to the user for the check and given back to the
//! workspace's owner after, whatever happened.
use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    exec::{exec, on_path},
    privilege::chown_tree,
};

const USER: &str = "tracer-check";
/// Needs root (it loads eBPF programs and makes a memory cgroup), and takes seconds.
const ROOT_TEST: &str = "oom_kill_in_memcg_is_traced_signal_victim_exit_after_rss_growth";
const SUDOERS: &str = "/etc/sudoers.d/tracer-unprivileged-check";
const SCRATCH: &str = "/var/tmp/tracer-unprivileged-check";
/// What a `sudo cargo ...` typed earlier left in `target/`.
const LEFT_BY_ROOT: &str = "debug/.left-by-sudo-cargo";

/// What the check's user types.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Typed {
    /// `cargo xtask test ROOT_TEST --no-dist --no-kernels` (debug build; what the suite runs)
    Test,
    /// `cargo xtask run-workload --no-tui` (a release build: minutes where none is there)
    RunWorkload,
}

impl Typed {
    fn command(self) -> String {
        match self {
            Typed::Test => format!("cargo xtask test {ROOT_TEST} --no-dist --no-kernels"),
            Typed::RunWorkload => "cargo xtask run-workload --no-tui".to_string(),
        }
    }
}

/// Runs the check; everything it made is removed, and `target/` given back, on return.
pub fn check(workspace: &Path, typed: Typed) -> Result<()> {
    println!("xtask: unprivileged check: `{}` as user {USER}, with sudo", typed.command());
    if on_path("sudo").is_none() {
        bail!("the unprivileged check needs sudo (`cargo xtask setup` installs it); or pass --no-unprivileged");
    }
    let target = workspace.join("target");
    anyhow::ensure!(target.is_dir(), "no {} to check a user's run on: build first", target.display());
    // The workspace's owner, not target/'s: a killed earlier check left target/ lent.
    let meta = std::fs::metadata(workspace).with_context(|| format!("{}", workspace.display()))?;
    let mut undo = Undo { target: target.clone(), owner: (meta.uid(), meta.gid()), lent: false, sudoers: false, user: false, scratch: None };

    let (uid, gid) = make_user(&mut undo)?;
    let homes = Homes::of_root()?;
    let scratch = PathBuf::from(SCRATCH);
    undo.scratch = Some(scratch.clone());
    let _ = std::fs::remove_dir_all(&scratch);
    for d in ["home", "stage/workspace", "stage/rustup"] {
        let d = scratch.join(d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    exec(Command::new("cp").arg("-a").arg(&homes.cargo).arg(scratch.join("cargo")))?;
    chown_tree(&scratch, uid, gid).context("giving the scratch folder to the check's user")?;

    std::fs::write(SUDOERS, format!("{USER} ALL=(root) NOPASSWD: ALL\n")).context("writing the sudo rule")?;
    undo.sudoers = true;
    std::fs::set_permissions(SUDOERS, std::os::unix::fs::PermissionsExt::from_mode(0o440))?;
    exec(Command::new("visudo").args(["-c", "-q", "-f", SUDOERS])).context("sudo refused the check's rule")?;

    // What a user's build writes in a checkout that is theirs: target/, and Cargo.lock
    // when cargo (the nightly one of the eBPF build too) brings it up to date.
    undo.lent = true;
    for p in undo.lent_paths() {
        chown_tree(&p, uid, gid).with_context(|| format!("lending {} to the check's user", p.display()))?;
    }
    let left = target.join(LEFT_BY_ROOT);
    std::fs::write(&left, "made as root\n")?;
    std::os::unix::fs::lchown(&left, Some(0), Some(0))?;

    let user_env = [
        ("HOME", scratch.join("home").display().to_string()),
        ("USER", USER.to_string()),
        ("LOGNAME", USER.to_string()),
        ("CARGO_HOME", homes.cargo.display().to_string()),
        ("RUSTUP_HOME", homes.rustup.display().to_string()),
        ("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", homes.cargo.join("bin").display())),
    ];
    let passed_on = ["CARGO_INCREMENTAL", "CI", "TERM"].into_iter().filter_map(|k| std::env::var(k).ok().map(|v| (k, v)));
    let env: Vec<String> = user_env.into_iter().chain(passed_on).map(|(k, v)| format!("{k}={v}")).collect();
    let script = namespace_script(workspace, &homes, &scratch, (uid, gid), &env, &typed.command());
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script]);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let output = run_echoed(&mut cmd)?;
    verdict(typed, &output.0, output.1, &target, uid, &left)
}

/// Where root's toolchain lives.
struct Homes {
    cargo: PathBuf,
    rustup: PathBuf,
}

impl Homes {
    fn of_root() -> Result<Homes> {
        let home = |var: &str, dot: &str| {
            std::env::var_os(var).map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(dot))).filter(|p| p.is_dir())
        };
        Ok(Homes {
            cargo: home("CARGO_HOME", ".cargo").context("no cargo home to lend the check's user (CARGO_HOME or ~/.cargo)")?,
            rustup: home("RUSTUP_HOME", ".rustup").context("no rustup toolchains to lend the check's user (RUSTUP_HOME or ~/.rustup)")?,
        })
    }
}

/// The shell run in the private mount namespace, as root until its last line.
fn namespace_script(workspace: &Path, homes: &Homes, scratch: &Path, (uid, gid): (u32, u32), env: &[String], typed: &str) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let stage_ws = scratch.join("stage/workspace");
    let stage_rustup = scratch.join("stage/rustup");
    let mut lines = vec![
        "set -e".to_string(),
        // Held before anything is laid over the folders they are in.
        format!("mount --bind {} {}", q(workspace), q(&stage_ws)),
        format!("mount --bind {} {}", q(&homes.rustup), q(&stage_rustup)),
    ];
    let mut closed: Vec<PathBuf> = [workspace, &homes.cargo, &homes.rustup].into_iter().filter_map(first_closed_ancestor).collect();
    closed.sort();
    closed.dedup();
    // A tmpfs over a folder hides the ones below it.
    let covered: Vec<PathBuf> = closed.clone();
    closed.retain(|c| !covered.iter().any(|o| o != c && c.starts_with(o)));
    for c in &closed {
        lines.push(format!("mount -t tmpfs -o mode=0755 tracer-check {}", q(c)));
    }
    for p in [workspace, &homes.cargo, &homes.rustup] {
        lines.push(format!("mkdir -p {}", q(p)));
    }
    lines.push(format!("mount --bind {} {}", q(&stage_ws), q(workspace)));
    lines.push(format!("mount --bind {} {}", q(&scratch.join("cargo")), q(&homes.cargo)));
    lines.push(format!("mount --bind {} {r} && mount -o remount,bind,ro {r}", q(&stage_rustup), r = q(&homes.rustup)));
    let env: Vec<String> = env.iter().map(|kv| shell_quote(kv)).collect();
    lines.push(format!(
        "cd {} && exec setpriv --reuid={uid} --regid={gid} --init-groups -- env -i {} \
         sh -c '{typed} 2>&1'",
        q(workspace),
        env.join(" ")
    ));
    lines.join("\n")
}

/// The first folder above `path` that a user who is neither its owner nor in its group
/// cannot enter.
fn first_closed_ancestor(path: &Path) -> Option<PathBuf> {
    let mut chain: Vec<&Path> = path.ancestors().skip(1).collect();
    chain.reverse();
    chain.into_iter().find(|a| std::fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0)).map(Path::to_path_buf)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd`, its output echoed line by line as it comes; returns the output and whether
/// it succeeded.
fn run_echoed(cmd: &mut Command) -> Result<(String, bool)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("running unshare (util-linux)")?;
    let mut all = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.unwrap_or_default();
            println!("  {USER}| {line}");
            all.push_str(&line);
            all.push('\n');
        }
    }
    Ok((all, child.wait()?.success()))
}

/// What the check demands of the run it watched.
fn verdict(typed: Typed, output: &str, success: bool, target: &Path, uid: u32, left: &Path) -> Result<()> {
    let mut wrong = Vec::new();
    if !success {
        wrong.push("the user's `cargo xtask test` failed".to_string());
    }
    if !output.contains("running the rest through sudo") {
        wrong.push("it did not raise privileges through sudo".to_string());
    }
    match typed {
        Typed::Test => {
            let (passed, failed) = test_counts(output);
            if (passed, failed) != (1, 0) {
                wrong.push(format!("{passed} test(s) passed and {failed} failed, not the one root test ({ROOT_TEST})"));
            }
        }
        Typed::RunWorkload => {
            if !output.lines().any(|l| l.starts_with("verdict [")) {
                wrong.push("run-workload printed no verdict".to_string());
            }
        }
    }
    if output.contains("Compiling ") {
        // Not wrong, but the suite's build should have been reused: say what it cost.
        println!("xtask: unprivileged check: the user's cargo rebuilt some crates (see above)");
    }
    let mut not_theirs = Vec::new();
    owned_by_others(target, uid, &mut not_theirs);
    if !not_theirs.is_empty() {
        let n = not_theirs.len();
        not_theirs.truncate(5);
        wrong.push(format!("{n} path(s) under {} are not the user's, e.g. {}", target.display(), not_theirs.join(", ")));
    }
    if std::fs::symlink_metadata(left).map(|m| m.uid()).ok() != Some(uid) {
        wrong.push(format!("{} (left by an earlier sudo) was not given back", left.display()));
    }
    if !wrong.is_empty() {
        bail!("unprivileged check: {}", wrong.join("; "));
    }
    let what = match typed {
        Typed::Test => format!("{ROOT_TEST} passed as root"),
        Typed::RunWorkload => "the scenario played as root, with its verdict".to_string(),
    };
    println!("xtask: unprivileged check passed: built as {USER}, one sudo, {what}, all of target/ is {USER}'s");
    Ok(())
}

/// The sums of libtest's "test result" lines.
fn test_counts(output: &str) -> (u64, u64) {
    let count = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == ';').filter(|w| !w.is_empty()).collect();
        words.windows(2).find(|w| w[1] == word).and_then(|w| w[0].parse().ok()).unwrap_or(0)
    };
    output
        .lines()
        .filter(|l| l.trim_start().starts_with("test result:"))
        .fold((0, 0), |(p, f), l| (p + count(l, "passed"), f + count(l, "failed")))
}

fn owned_by_others(path: &Path, uid: u32, found: &mut Vec<String>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if meta.uid() != uid {
        found.push(path.display().to_string());
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            owned_by_others(&entry.path(), uid, found);
        }
    }
}

/// The check's user, made now (one a killed earlier check left is reused).
fn make_user(undo: &mut Undo) -> Result<(u32, u32)> {
    let exists = || Command::new("id").arg(USER).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !exists() {
        exec(Command::new("useradd").args(["--system", "--user-group", "--no-create-home", "--home-dir", &format!("{SCRATCH}/home"), "--shell", "/bin/sh", USER]))
            .context("making the check's user (useradd)")?;
    }
    undo.user = true;
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, USER]).output()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| format!("id {flag} {USER}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Everything the check changed, undone when it returns or fails.
struct Undo {
    target: PathBuf,
    owner: (u32, u32),
    lent: bool,
    sudoers: bool,
    user: bool,
    scratch: Option<PathBuf>,
}

impl Undo {
    fn lent_paths(&self) -> [PathBuf; 2] {
        [self.target.clone(), self.target.with_file_name("Cargo.lock")]
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.lent {
            for p in self.lent_paths() {
                if let Err(e) = chown_tree(&p, self.owner.0, self.owner.1) {
                    eprintln!("xtask: could not give {} back to uid {}: {e}", p.display(), self.owner.0);
                }
            }
            let _ = std::fs::remove_file(self.target.join(LEFT_BY_ROOT));
        }
        if self.sudoers {
            let _ = std::fs::remove_file(SUDOERS);
        }
        if let Some(s) = &self.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
        if self.user {
            let _ = Command::new("userdel").arg(USER).stderr(Stdio::null()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counts_sum_every_binary_result_line() {
        let out = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 350 filtered out; finished in 0.01s\n\
                   running 1 test\n\
                   test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 20 filtered out; finished in 3.2s\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored\n";
        assert_eq!(test_counts(out), (3, 1));
        assert_eq!(test_counts("no tests here"), (0, 0));
    }

    #[test]
    fn a_folder_others_cannot_enter_is_found_above_the_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let closed = tmp.path().join("closed");
        let ws = closed.join("a/ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        assert_eq!(first_closed_ancestor(&ws), Some(closed.clone()));
        std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        // /tmp's own ancestors are open on any host that runs this.
        assert_eq!(first_closed_ancestor(&ws), None);
    }

    #[test]
    fn quoting_survives_a_quote_in_a_path() {
        let out = Command::new("sh").arg("-c").arg(format!("printf %s {}", shell_quote("it's a path"))).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a path");
    }
}
