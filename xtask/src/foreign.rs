//! The release tarball on a host that has nothing but it: a Debian 11 root (glibc 2.31)
//! made with debootstrap and kept between runs, the tarball unpacked into it, and inside
//! it, with nothing else installed, `tracer --version`, `tracer doctor`, a real `tracer
//! run` of a shell that a memory cgroup OOM-kills, and `tracer report` on that trace.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::exec::{exec, output};

const SUITE: &str = "bullseye";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Where the cgroup v1 memory controller is mounted on this host (v2: the unified root).
const MEMCG_V1: &str = "/sys/fs/cgroup/memory";

/// Ok(false): skipped (said why on standard output).
pub fn check(tarball: &Path) -> Result<bool> {
    let Some(root) = debian_root()? else { return Ok(false) };
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .context("the tarball is not NAME.tar.gz")?
        .to_string();
    let opt = root.join("opt");
    let _ = std::fs::remove_dir_all(opt.join(&name));
    std::fs::create_dir_all(&opt)?;
    exec(Command::new("tar").arg("-C").arg(&opt).arg("-xzf").arg(tarball))?;
    let tracer = format!("/opt/{name}/tracer");
    let mounts = Mounts::bind(&root)?;
    let memcg = Memcg::new()?;
    let result = (|| -> Result<()> {
        let version = chroot(&root, &[&tracer, "--version"])?;
        if !version.contains("commit ") || !version.contains("probes") {
            bail!("`tracer --version` in the Debian 11 root said:\n{version}");
        }
        println!("xtask: foreign host: {}", version.lines().next().unwrap_or(""));
        let doctor = chroot(&root, &[&tracer, "doctor"])?;
        println!("xtask: foreign host: `tracer doctor` ran ({} lines)", doctor.lines().count());
        // bash doubles a string until the memory cgroup's limit stops it.
        let grow = format!("echo $$ > {}/cgroup.procs && exec bash -c 'x=x; while :; do x=$x$x; done'", memcg.inside);
        chroot(&root, &[&tracer, "run", "--no-tui", "--grace", "500ms", "-o", "/tmp/foreign.jsonl", "--", "sh", "-c", &grow])
            .or_else(|e| if e.to_string().contains("OOM") { Ok(String::new()) } else { Err(e) })?;
        let report = chroot(&root, &[&tracer, "report", "/tmp/foreign.jsonl"])?;
        if !report.contains("OOM-killed") {
            bail!("`tracer report` in the Debian 11 root does not name the OOM kill:\n{report}");
        }
        println!("xtask: foreign host: traced a memory-cgroup OOM kill in the Debian 11 root and reported it");
        // The agent, from the same file: the cgroup in scope, the same OOM kill, a verdict
        // and its incident folder.
        let script = format!(
            "{tracer} watch --cgroup {cg} --incident-dir /tmp/incidents --settle 500ms --duration 8s 2>/tmp/watch.err &\n\
             sleep 2\n\
             sh -c '{grow}'\n\
             wait\n\
             cat /tmp/watch.err\n\
             ls /tmp/incidents\n",
            cg = memcg.inside,
            grow = grow.replace('\'', "'\\''"),
        );
        let _ = std::fs::remove_dir_all(root.join("tmp/incidents"));
        std::fs::write(root.join("tmp/watch.sh"), script)?;
        let watched = chroot(&root, &["sh", "/tmp/watch.sh"])?;
        if !watched.contains("oom_killed") || !watched.lines().any(|l| l.contains("-oom_killed-")) {
            bail!("`tracer watch` in the Debian 11 root did not report the OOM kill with an incident:\n{watched}");
        }
        println!("xtask: foreign host: `tracer watch` saw the same kill and wrote its incident folder");
        Ok(())
    })();
    drop(memcg);
    drop(mounts);
    result.map(|()| true)
}

/// The cached Debian 11 root, made once; None (said why) where it cannot be made.
fn debian_root() -> Result<Option<PathBuf>> {
    let root = crate::dist::cache_dir()?.join("debian11-root");
    if root.join("bin/bash").exists() && root.join("etc/debian_version").exists() {
        return Ok(Some(root));
    }
    if output(Command::new("debootstrap").arg("--version")).is_none() {
        println!("xtask: installing debootstrap");
        let apt = Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "debootstrap"]).env("DEBIAN_FRONTEND", "noninteractive").status();
        if !apt.is_ok_and(|s| s.success()) {
            println!("xtask: SKIPPED the foreign-host check: debootstrap is missing and apt-get could not install it");
            return Ok(None);
        }
    }
    if output(Command::new("curl").args(["-sfI", "--max-time", "20"]).arg(format!("{MIRROR}/dists/{SUITE}/Release"))).is_none() {
        println!("xtask: SKIPPED the foreign-host check: the Debian mirror {MIRROR} cannot be reached");
        return Ok(None);
    }
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    println!("xtask: making a Debian 11 root in {} (debootstrap, once)", root.display());
    exec(Command::new("debootstrap").args(["--variant=minbase", SUITE]).arg(&partial).arg(MIRROR))?;
    std::fs::rename(&partial, &root).with_context(|| format!("moving the root to {}", root.display()))?;
    Ok(Some(root))
}

/// Runs ARGV in the root; its standard output, or an error with both outputs.
fn chroot(root: &Path, argv: &[&str]) -> Result<String> {
    let out = Command::new("chroot").arg(root).args(argv).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").output()
        .with_context(|| format!("running chroot {}", root.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{} failed in the Debian 11 root ({}):\n{text}\n{}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// /proc, /sys (with the cgroup and tracefs mounts under it) and /dev of the host in the
/// root, undone on drop.
struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    fn bind(root: &Path) -> Result<Mounts> {
        let mut m = Mounts { points: Vec::new() };
        for (what, args) in [("proc", vec!["-t", "proc", "proc"]), ("sys", vec!["--rbind", "/sys"]), ("dev", vec!["--rbind", "/dev"])] {
            let at = root.join(what);
            std::fs::create_dir_all(&at)?;
            exec(Command::new("mount").args(&args).arg(&at))?;
            m.points.push(at);
        }
        Ok(m)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.points.iter().rev() {
            let _ = Command::new("umount").args(["--recursive", "--lazy"]).arg(at).status();
        }
    }
}

/// A memory cgroup limited to 32 MiB, removed on drop; `inside` is its folder as the root
/// sees it (the same, through the /sys bind).
struct Memcg {
    dir: PathBuf,
    inside: String,
}

impl Memcg {
    fn new() -> Result<Memcg> {
        let name = format!("tracer-foreign-{}", std::process::id());
        let (dir, limit_file) = if Path::new(MEMCG_V1).join("memory.limit_in_bytes").exists() {
            (Path::new(MEMCG_V1).join(&name), "memory.limit_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the memory cgroup {}", dir.display()))?;
        let m = Memcg { inside: dir.display().to_string(), dir };
        std::fs::write(m.dir.join(limit_file), (32u64 << 20).to_string()).with_context(|| format!("limiting {}", m.dir.display()))?;
        Ok(m)
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        // Its processes are dead (OOM-killed) or die with the chroot; retry a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("xtask: could not remove {}", self.dir.display());
    }
}
