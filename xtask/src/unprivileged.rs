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
/// Marks the account as the check's own: one without it is never reused or deleted.
const COMMENT: &str = "tracer unprivileged check (temporary)";
/// Needs root (it loads eBPF programs and makes a memory cgroup), and takes seconds.
const ROOT_TEST: &str = "oom_kill_in_memcg_is_traced_signal_victim_exit_after_rss_growth";
pub const SUDOERS: &str = "/etc/sudoers.d/tracer-unprivileged-check";
/// Prefix of the scratch folders (one per run, made afresh: never a path found there).
const SCRATCH_PREFIX: &str = "/var/tmp/tracer-unprivileged-check.";
const LOCK: &str = "/run/lock/tracer-unprivileged-check.lock";
/// What a `sudo cargo ...` typed earlier left in `target/`.
const LEFT_BY_ROOT: &str = "debug/.left-by-sudo-cargo";
/// Printed by the namespace script once its mounts are in place.
const MOUNTED: &str = "tracer-check: mounts in place";

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

/// Runs the check; everything it made is removed, and `target/` given back, on return,
/// on an error and on Ctrl-C (SIGINT, SIGTERM and SIGHUP wait while it cleans up).
pub fn check(workspace: &Path, typed: Typed) -> Result<()> {
    let _signals = SignalsWait::start();
    println!("xtask: unprivileged check: `{}` as user {USER}, with sudo", typed.command());
    if on_path("sudo").is_none() {
        bail!("the unprivileged check needs sudo (`cargo xtask setup` installs it); or pass --no-unprivileged");
    }
    let _lock = lock()?;
    let target = workspace.join("target");
    anyhow::ensure!(target.join("debug").is_dir(), "no build in {} to check a user's run on: build first (`cargo build --bins`)", target.display());
    let target = target.canonicalize().with_context(|| format!("resolving {}", target.display()))?;
    let homes = Homes::of_root()?;
    for home in [&homes.cargo, &homes.rustup] {
        anyhow::ensure!(
            !workspace.starts_with(home) && !home.starts_with(workspace),
            "the workspace {} and the toolchain folder {} lie one inside the other: the check cannot lend them apart; clone the workspace elsewhere, or pass --no-unprivileged",
            workspace.display(),
            home.display()
        );
    }
    remove_stale_scratch();
    let mut undo = Undo { target: target.clone(), owner: (0, 0), lent: false, sudoers: false, user: None, scratch: None };
    let (uid, gid) = make_user(&mut undo)?;
    // target/'s owner; the workspace's where a killed earlier check left target/ lent.
    let owner_of = |p: &Path| std::fs::metadata(p).map(|m| (m.uid(), m.gid())).with_context(|| format!("{}", p.display()));
    undo.owner = match owner_of(&target)? {
        (u, _) if u == uid => owner_of(workspace)?,
        o => o,
    };

    let scratch = make_scratch(uid, gid)?;
    undo.scratch = Some(scratch.clone());
    for d in ["home", "stage/workspace", "stage/rustup", "cargo"] {
        let d = scratch.join(d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The contents, so that a cargo home that is a link is copied, not linked.
    exec(Command::new("cp").arg("-a").arg(homes.cargo.join(".")).arg(scratch.join("cargo")))?;
    stop_if_interrupted()?;
    chown_tree(&scratch, uid, gid).with_context(|| format!("giving {} to the check's user", scratch.display()))?;

    std::fs::write(SUDOERS, format!("{USER} ALL=(root) NOPASSWD: ALL\n")).with_context(|| format!("writing {SUDOERS}"))?;
    undo.sudoers = true;
    std::fs::set_permissions(SUDOERS, std::os::unix::fs::PermissionsExt::from_mode(0o440)).with_context(|| format!("chmod {SUDOERS}"))?;
    exec(Command::new("visudo").args(["-c", "-q", "-f", SUDOERS])).context("sudo refused the check's rule")?;
    // Syntax is not enough: the rule must be read (sudoers needs `@includedir /etc/sudoers.d`).
    let rule = Command::new("sudo").args(["-n", "-l", "-U", USER]).output().context("running sudo -l")?;
    anyhow::ensure!(
        String::from_utf8_lossy(&rule.stdout).contains("NOPASSWD: ALL"),
        "sudo does not read {SUDOERS}: add `@includedir /etc/sudoers.d` to /etc/sudoers (visudo), or pass --no-unprivileged"
    );

    stop_if_interrupted()?;
    // What a user's build writes in a checkout that is theirs: target/, and Cargo.lock
    // when cargo (the nightly one of the eBPF build too) brings it up to date.
    undo.lent = true;
    for p in undo.lent_paths() {
        chown_tree(&p, uid, gid).with_context(|| format!("lending {} to the check's user", p.display()))?;
    }
    let left = target.join(LEFT_BY_ROOT);
    std::fs::write(&left, "made as root\n").with_context(|| format!("writing {}", left.display()))?;
    std::os::unix::fs::lchown(&left, Some(0), Some(0)).with_context(|| format!("chown {}", left.display()))?;

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
    // Its own session: no sudo prompt can reach a terminal and wait there.
    cmd.args(["--mount", "--propagation", "private", "--", "setsid", "sh", "-c", &script]);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    stop_if_interrupted()?;
    let (output, success) = run_echoed(&mut cmd, uid)?;
    stop_if_interrupted()?;
    verdict(typed, &output, success, &target, uid, &left)
}

/// One check at a time on a host: they share the user, the rule and the scratch prefix.
fn lock() -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let _ = std::fs::create_dir_all("/run/lock");
    let f = std::fs::File::create(LOCK).with_context(|| format!("creating {LOCK}"))?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another unprivileged check is running on this host ({LOCK} is locked): wait for it, or pass --no-unprivileged");
    }
    Ok(f)
}

/// A new folder, 0700 and the user's: made with mkdir, which fails on anything already
/// at the path (a link planted there included).
fn make_scratch(uid: u32, gid: u32) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let path = PathBuf::from(format!("{SCRATCH_PREFIX}{}.{nanos}", std::process::id()));
    std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).with_context(|| format!("chmod {}", path.display()))?;
    std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    Ok(path)
}

/// Scratch folders of checks killed before they cleaned up (each a copy of a cargo home).
fn remove_stale_scratch() {
    let prefix = Path::new(SCRATCH_PREFIX);
    let (Some(dir), Some(name)) = (prefix.parent(), prefix.file_name().map(|n| n.to_string_lossy().into_owned())) else { return };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.file_name().to_string_lossy().starts_with(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where an earlier check was killed before it cleaned up, one sentence with the fix.
pub fn left_over_warning() -> Option<String> {
    use std::os::fd::AsRawFd as _;
    // A check holding the lock is running (this may be its user's run): nothing left over.
    if let Ok(f) = std::fs::File::open(LOCK) {
        // SAFETY: flock on an fd this function owns; closing it releases a lock taken here.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return None;
        }
    }
    Path::new(SUDOERS).exists().then(|| {
        format!(
            "an unprivileged check was killed before it cleaned up: {SUDOERS} and the user {USER} are still there, and target/ may be {USER}'s; \
             as root, `cargo xtask test --unprivileged-only` cleans up first (or remove the file, `userdel {USER}`, and chown target/ and Cargo.lock back)"
        )
    })
}

/// SIGINT, SIGTERM and SIGHUP caught (not fatal) while the check runs: the check stops
/// at its next step, the user's run is killed, and the cleanup runs. Child processes get
/// the default handling back at exec, so a Ctrl-C stops a copy or a build at once.
struct SignalsWait([libc::sighandler_t; 3]);

const WAITING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl SignalsWait {
    fn start() -> Self {
        INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic; the previous ones are restored on drop.
        SignalsWait(WAITING.map(|s| unsafe { libc::signal(s, handler) }))
    }
}

impl Drop for SignalsWait {
    fn drop(&mut self) {
        for (s, h) in WAITING.iter().zip(self.0) {
            // SAFETY: restoring what start() found.
            unsafe { libc::signal(*s, h) };
        }
    }
}

fn stop_if_interrupted() -> Result<()> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("interrupted: the unprivileged check stopped and cleaned up");
    }
    Ok(())
}

/// Where root's toolchain lives.
struct Homes {
    cargo: PathBuf,
    rustup: PathBuf,
}

impl Homes {
    fn of_root() -> Result<Homes> {
        // The cargo home whose bin/ setup checks and the build PATH names.
        let cargo = crate::exec::cargo_bin().parent().map(Path::to_path_buf).filter(|p| p.is_dir());
        let rustup = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))
            .filter(|p| p.is_dir());
        Ok(Homes {
            cargo: cargo.context("no cargo home to lend the check's user (CARGO_HOME or ~/.cargo)")?,
            rustup: rustup.context("no rustup toolchains to lend the check's user (RUSTUP_HOME or ~/.rustup)")?,
        })
    }
}

/// The shell run in the private mount namespace, as root until its last line.
fn namespace_script(workspace: &Path, homes: &Homes, scratch: &Path, (uid, gid): (u32, u32), env: &[String], typed: &str) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let stage_ws = scratch.join("stage/workspace");
    let stage_rustup = scratch.join("stage/rustup");
    let mut closed: Vec<PathBuf> = [workspace, &homes.cargo, &homes.rustup].into_iter().filter_map(first_closed_ancestor).collect();
    closed.sort();
    closed.dedup();
    // A tmpfs over a folder hides the ones below it.
    let covered: Vec<PathBuf> = closed.clone();
    closed.retain(|c| !covered.iter().any(|o| o != c && c.starts_with(o)));
    let ws_covered = closed.iter().any(|c| workspace.starts_with(c));
    // Recursive binds: mounts below (a target/ on its own volume) come along.
    let mut lines = vec!["set -e".to_string()];
    // Held before anything is laid over the folders they are in.
    if ws_covered {
        lines.push(format!("mount --rbind {} {}", q(workspace), q(&stage_ws)));
    }
    lines.push(format!("mount --rbind {} {}", q(&homes.rustup), q(&stage_rustup)));
    for c in &closed {
        lines.push(format!("mount -t tmpfs -o mode=0755 tracer-check {}", q(c)));
    }
    for p in [workspace, &homes.cargo, &homes.rustup] {
        lines.push(format!("mkdir -p {}", q(p)));
    }
    if ws_covered {
        lines.push(format!("mount --rbind {} {}", q(&stage_ws), q(workspace)));
    }
    lines.push(format!("mount --bind {} {}", q(&scratch.join("cargo")), q(&homes.cargo)));
    lines.push(format!("mount --rbind {} {}", q(&stage_rustup), q(&homes.rustup)));
    lines.push(format!("mount -o remount,bind,ro {}", q(&homes.rustup)));
    lines.push(format!("echo '{MOUNTED}'"));
    lines.push(format!("cd {}", q(workspace)));
    let env: Vec<String> = env.iter().map(|kv| shell_quote(kv)).collect();
    lines.push(format!("exec setpriv --reuid={uid} --regid={gid} --init-groups -- env -i {} sh -c '{typed} 2>&1'", env.join(" ")));
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

/// Runs `cmd`, its output echoed line by line as it comes, killed on an interrupt;
/// returns the output and whether it succeeded. What the user left running when
/// it ended is killed (it would hold the output open).
fn run_echoed(cmd: &mut Command, uid: u32) -> Result<(String, bool)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("running unshare and setsid (util-linux)")?;
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in out.map(BufReader::new).into_iter().flat_map(|r| r.lines()) {
            let line = line.unwrap_or_default();
            println!("  {USER}| {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The run is its own session (setsid): a Ctrl-C at the terminal does not reach it.
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the user's run")? {
            break status;
        }
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("pkill").args(["-KILL", "-s", &child.id().to_string()]).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    kill_user_processes(uid);
    let all = reader.join().unwrap_or_default();
    Ok((all, status.success()))
}

fn kill_user_processes(uid: u32) {
    let _ = Command::new("pkill").args(["-KILL", "-U", &uid.to_string()]).status();
}

/// What the check demands of the run it watched.
fn verdict(typed: Typed, output: &str, success: bool, target: &Path, uid: u32, left: &Path) -> Result<()> {
    if !output.contains(MOUNTED) {
        bail!("the check's mount namespace could not be set up (see the mount errors above); skip the check with --no-unprivileged");
    }
    let mut wrong = Vec::new();
    if !success {
        wrong.push(format!("the user's `{}` failed", typed.command()));
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
    let compiled = compiled_crates(output);
    if !compiled.is_empty() {
        // Not wrong, but the suite's build should have been reused: say what it cost.
        println!("xtask: unprivileged check: the user's cargo compiled {} crate(s): {}", compiled.len(), compiled.join(", "));
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
        bail!("{} (rerun it alone with `cargo xtask test --unprivileged-only`)", wrong.join("; "));
    }
    let what = match typed {
        Typed::Test => format!("{ROOT_TEST} passed as root"),
        Typed::RunWorkload => "the scenario played as root, with its verdict".to_string(),
    };
    println!("xtask: unprivileged check passed: built as {USER}, one sudo, {what}, all of target/ is {USER}'s");
    Ok(())
}

/// What cargo compiled, from its "Compiling" lines; a fresh build script's warnings that
/// cargo replays ("warning: tracer@0.1.0:    Compiling ...", the eBPF build's) are not.
fn compiled_crates(output: &str) -> Vec<&str> {
    output.lines().filter_map(|l| l.trim_start().strip_prefix("Compiling ")).collect()
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

/// The check's user, made now (one a killed earlier check left, known by its comment, is
/// reused; an account of that name that is not the check's stops it).
fn make_user(undo: &mut Undo) -> Result<(u32, u32)> {
    let entry = Command::new("getent").args(["passwd", USER]).output().context("running getent")?;
    let entry = String::from_utf8_lossy(&entry.stdout).trim().to_string();
    if entry.is_empty() {
        exec(Command::new("useradd").args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--comment", COMMENT, USER]))
            .context("making the check's user (useradd)")?;
    } else if entry.split(':').nth(4) != Some(COMMENT) {
        bail!("this host has an account {USER} that the unprivileged check did not make ({entry}): it is left alone; pass --no-unprivileged");
    }
    undo.user = Some(USER);
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, USER]).output().with_context(|| format!("running id {flag} {USER}"))?;
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
    user: Option<&'static str>,
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
            if let Err(e) = std::fs::remove_file(SUDOERS) {
                eprintln!("xtask: could not remove {SUDOERS}: {e}; remove it by hand");
            }
        }
        if let Some(s) = &self.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
        if let Some(user) = self.user {
            let _ = Command::new("pkill").args(["-KILL", "-u", user]).status();
            match Command::new("userdel").arg(user).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!("xtask: userdel {user} failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
                Err(e) => eprintln!("xtask: userdel {user}: {e}"),
            }
            // Where useradd made the group but userdel keeps it (USERGROUPS_ENAB no).
            let _ = Command::new("groupdel").arg(user).stderr(Stdio::null()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_build_script_warnings_are_not_compiles() {
        let out = "warning: tracer@0.1.0:    Compiling proc-macro2 v1.0.107\n   Compiling xtask v0.1.0 (/w/xtask)\n    Finished `dev` profile\n";
        assert_eq!(compiled_crates(out), ["xtask v0.1.0 (/w/xtask)"]);
    }

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
