//! The whole suite: unit tests of every crate and the end-to-end scenarios on the real
//! kernel, one at a time (they share the OOM killer, cgroups and tracepoints), the release
//! check (the tarball alone in a Debian 11 root), then the kernel matrix.
//!
//! As root everything runs here. As another user, everything is built as that user first
//! (binaries, test binaries, the release artifacts, the matrix's binaries), then this
//! xtask runs again through sudo and runs what was built, with no cargo: `target/` stays
//! the user's (see crate::privilege). As root, that user's path is checked too (see
//! crate::unprivileged).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{
    exec::{command, exec, workspace_root},
    kernels, privilege, setup, unprivileged,
};

#[derive(Args)]
pub struct Options {
    /// Only tests whose name contains this
    filter: Option<String>,
    /// Skip the release check (`cargo xtask dist`, then the tarball alone in a Debian 11 root)
    #[arg(long)]
    no_dist: bool,
    /// Skip the unprivileged check (run as root: a user made for it types
    /// `cargo xtask test` with a sudo rule, and target/ must stay theirs)
    #[arg(long)]
    no_unprivileged: bool,
    /// Only the unprivileged check (as root, on the build already in target/)
    #[arg(long, conflicts_with_all = ["no_unprivileged", "filter"])]
    unprivileged_only: bool,
    /// What the unprivileged check's user types: test (what the suite checks), or
    /// run-workload (a release build as that user: minutes unless target/release is fresh)
    #[arg(long, value_enum, default_value = "test", requires = "unprivileged_only")]
    unprivileged_types: unprivileged::Typed,
    #[command(flatten)]
    kernels: kernels::Options,
    /// (the privileged second run: everything is built)
    #[arg(long, hide = true)]
    built: bool,
}

/// The test binaries of a build, for the privileged run.
#[derive(Serialize, Deserialize)]
struct TestBinary {
    executable: PathBuf,
    /// Its package's folder: cargo runs tests there.
    package_dir: PathBuf,
}

fn list_file(root: &Path) -> PathBuf {
    root.join("target/xtask-test-binaries.json")
}

pub fn run(opts: &Options) -> Result<()> {
    let root = workspace_root();
    let release_wanted = !opts.no_dist && opts.filter.is_none();
    if opts.unprivileged_only {
        anyhow::ensure!(
            privilege::is_root() && !opts.built,
            "--unprivileged-only makes a user and a sudo rule to check that user's run: run it as root"
        );
        return unprivileged::check(&root, opts.unprivileged_types);
    }
    if let Some(w) = unprivileged::left_over_warning() {
        eprintln!("xtask: warning: {w}");
    }
    if !opts.built {
        warn_if_disk_is_short(&root);
        setup::run(&setup::Options {})?;
        if !privilege::is_root() {
            build_for_sudo(opts, &root, release_wanted)?;
            let args: Vec<String> = std::env::args().skip(1).collect();
            return privilege::rerun_as_root("the test suite (eBPF programs, memory cgroups, a chroot, QEMU)", &args);
        }
    }
    let result = privileged(opts, &root, release_wanted);
    privilege::give_back(&[&root.join("target")]);
    result
}

/// What a clean clone's build and suite took on disk (debug and release builds, the
/// release tarball, the matrix's binaries), with room to spare.
const DISK_NEEDED_GIB: u64 = 16;

/// A build that runs out of disk fails deep inside rustc with "No space left on device";
/// say so up front, with the fix, and go on (it may still fit).
fn warn_if_disk_is_short(root: &Path) {
    let Some(free) = free_bytes(root) else { return };
    let gib = free / (1 << 30);
    if gib < DISK_NEEDED_GIB {
        eprintln!(
            "xtask: warning: only {gib} GiB free on the disk of {}; a clean build and the suite \
             need about {DISK_NEEDED_GIB} GiB. Free some (an old target/ is often tens of GiB: \
             `cargo clean`), or point CARGO_TARGET_DIR at a bigger disk.",
            root.display()
        );
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c is a valid NUL-terminated path and st a buffer of the right type.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled st.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// As the user: everything the privileged run needs.
fn build_for_sudo(opts: &Options, root: &Path, release_wanted: bool) -> Result<()> {
    exec(command("cargo").current_dir(root).args(["build", "--bins"]))?;
    if !opts.kernels.kernels_only {
        let binaries = build_test_binaries(root)?;
        let json = serde_json::to_string_pretty(&binaries)?;
        std::fs::write(list_file(root), json).with_context(|| format!("writing {}", list_file(root).display()))?;
        if release_wanted {
            crate::dist::build(&crate::dist::Options { out: "target/dist".into(), check: false })?;
        }
    }
    if !opts.kernels.no_kernels {
        kernels::build_bins()?;
    }
    Ok(())
}

/// `cargo test --no-run`: the test executables, from cargo's JSON messages.
fn build_test_binaries(root: &Path) -> Result<Vec<TestBinary>> {
    let out = command("cargo")
        .current_dir(root)
        .args(["test", "--no-run", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        anyhow::bail!("cargo test --no-run failed ({})", out.status);
    }
    Ok(test_binaries(&String::from_utf8_lossy(&out.stdout)))
}

fn test_binaries(messages: &str) -> Vec<TestBinary> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let executable = PathBuf::from(m["executable"].as_str()?);
            let package_dir = Path::new(m["manifest_path"].as_str()?).parent()?.to_path_buf();
            Some(TestBinary { executable, package_dir })
        })
        .collect()
}

/// As root: the suite, the release check, the matrix.
fn privileged(opts: &Options, root: &Path, release_wanted: bool) -> Result<()> {
    if opts.kernels.kernels_only {
        return kernels::run(&opts.kernels, opts.built);
    }

    if !opts.built {
        // The end-to-end tests drive the real binaries; build them with the tests. Default
        // members only: tracer-ebpf is built for the bpf target by tracer/build.rs.
        exec(command("cargo").current_dir(root).args(["build", "--bins"]))?;
    }
    let env = [("TRACER_BIN", root.join("target/debug/tracer")), ("WORKLOAD_BIN", root.join("target/debug/workload"))];
    let suite = if opts.built {
        run_built_tests(root, opts.filter.as_deref(), &env)
    } else {
        let mut cmd = command("cargo");
        cmd.current_dir(root).args(["test", "--no-fail-fast", "--"]).arg("--test-threads=1");
        if let Some(f) = &opts.filter {
            cmd.arg(f);
        }
        exec(cmd.envs(env.iter().map(|(k, v)| (k, v))))
    };
    let release = if release_wanted { release_check(opts.built) } else { Ok(()) };
    // Typed by a user, this run is that check already.
    let as_user = if opts.built || opts.filter.is_some() || opts.no_unprivileged { Ok(()) } else { unprivileged::check(root, unprivileged::Typed::Test) };
    let mut failures = Vec::new();
    for (what, r) in [("the suite", suite), ("the release check", release), ("the unprivileged check", as_user)] {
        if let Err(e) = r {
            failures.push(format!("{what} failed: {e:#}"));
        }
    }
    let suite = if failures.is_empty() { Ok(()) } else { Err(anyhow::anyhow!(failures.join("\nand "))) };
    kernels::after_suite(&opts.kernels, suite, opts.built)
}

/// The test binaries the user built, each run as cargo would run it; all of them, then
/// the failures named.
fn run_built_tests(root: &Path, filter: Option<&str>, env: &[(&str, PathBuf)]) -> Result<()> {
    let path = list_file(root);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {} (made by the unprivileged build)", path.display()))?;
    let binaries: Vec<TestBinary> = serde_json::from_str(&text)?;
    let mut failed = Vec::new();
    for b in &binaries {
        let mut cmd = std::process::Command::new(&b.executable);
        cmd.current_dir(&b.package_dir).env("CARGO_MANIFEST_DIR", &b.package_dir).arg("--test-threads=1");
        cmd.args(filter);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if exec(&mut cmd).is_err() {
            failed.push(b.executable.display().to_string());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("failing test binaries: {}", failed.join(", "));
    }
    Ok(())
}

/// The release artifacts (built here unless the unprivileged run built them), and the
/// tarball run on a foreign host.
fn release_check(built: bool) -> Result<()> {
    let tarball = if built {
        workspace_root().join("target/dist").join(format!("{}.tar.gz", crate::dist::release_name()))
    } else {
        crate::dist::build(&crate::dist::Options { out: "target/dist".into(), check: false })?.tarball
    };
    crate::foreign::check(&tarball)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_are_read_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","manifest_path":"/w/tracer/Cargo.toml","profile":{"test":true},"executable":"/w/target/debug/deps/tracer-1"}
{"reason":"compiler-artifact","manifest_path":"/w/tracer/Cargo.toml","profile":{"test":false},"executable":"/w/target/debug/tracer"}
{"reason":"compiler-artifact","manifest_path":"/w/host/Cargo.toml","profile":{"test":true},"executable":null}
{"reason":"build-finished","success":true}
not json"#;
        let b = test_binaries(messages);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].executable.to_str(), b[0].package_dir.to_str()), (Some("/w/target/debug/deps/tracer-1"), Some("/w/tracer")));
    }

    #[test]
    fn free_bytes_agrees_with_df() {
        let root = workspace_root();
        let out = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(&root).output().expect("df runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let df: u64 = text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df prints a number");
        let ours = free_bytes(&root).expect("statvfs works on the workspace");
        // Other writers move the number between the two reads; 256 MiB is far below the
        // warning's granularity.
        assert!(ours.abs_diff(df) < 256 << 20, "statvfs {ours} vs df {df}");
        assert_eq!(free_bytes(Path::new("/no/such/dir")), None);
    }
}
