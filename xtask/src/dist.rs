//! `cargo xtask dist`: the release artifacts. One `tracer` binary with its eBPF programs
//! embedded, linked against glibc 2.31 (Debian 11, Ubuntu 20.04 and anything newer) with
//! cargo-zigbuild: a static musl binary would need no glibc at all, but could not load
//! NVML (libnvidia-ml.so, from the GPU driver) at run time, and GPU memory is half of what
//! tracer samples on the hosts it is for. Packed as a tarball (binary, man page, shell
//! completions, licenses, INSTALL) and a .deb built from the same files with dpkg-deb.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::exec::{build_path, cargo_bin, command, exec, output, workspace_root};

/// The oldest glibc the binary may need.
pub const GLIBC: (u32, u32) = (2, 31);
const TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Args)]
pub struct Options {
    /// Where the tarball and the .deb go
    #[arg(long, value_name = "DIR", default_value = "target/dist")]
    pub out: PathBuf,
    /// Then run the tarball alone in a Debian 11 root: --version, doctor, a traced OOM
    /// kill, report (root; `cargo xtask test` does this too)
    #[arg(long)]
    pub check: bool,
}

/// What `dist` made.
pub struct Artifacts {
    pub tarball: PathBuf,
    pub deb: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let a = build(opts)?;
    println!("xtask: dist: {}", a.tarball.display());
    println!("xtask: dist: {}", a.deb.display());
    if opts.check {
        if !crate::privilege::is_root() {
            anyhow::bail!("--check chroots into a Debian 11 root and makes a memory cgroup: run it as root");
        }
        crate::foreign::check(&a.tarball)?;
    }
    Ok(())
}

pub fn build(opts: &Options) -> Result<Artifacts> {
    crate::setup::run(&crate::setup::Options {})?;
    let root = workspace_root();
    let out = if opts.out.is_absolute() { opts.out.clone() } else { root.join(&opts.out) };
    let zig_dir = zig()?;
    zigbuild()?;
    let version = env!("CARGO_PKG_VERSION");
    let target_dir = cache_dir()?.join("dist-target");
    let mut build = command("cargo");
    build
        .current_dir(&root)
        .args(["zigbuild", "--release", "-p", "tracer", "--target"])
        .arg(format!("{TARGET}.{}.{}", GLIBC.0, GLIBC.1))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", format!("{}:{}", zig_dir.display(), build_path()));
    if let Some(commit) = git_commit(&root) {
        build.env("TRACER_GIT_COMMIT", commit);
    }
    exec(&mut build)?;
    let binary = target_dir.join(TARGET).join("release/tracer");
    let needs = newest_glibc(&std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?);
    if needs.is_some_and(|v| v > GLIBC) {
        bail!("{} needs glibc {:?}, newer than {GLIBC:?}: the zigbuild target was not honoured", binary.display(), needs);
    }

    let name = release_name();
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("completions")).with_context(|| format!("creating {}", stage.display()))?;
    copy(&binary, &stage.join("tracer"))?;
    write(&stage.join("tracer.1"), &run_binary(&binary, &["man"])?)?;
    for (shell, file) in [("bash", "tracer.bash"), ("zsh", "_tracer"), ("fish", "tracer.fish")] {
        write(&stage.join("completions").join(file), &run_binary(&binary, &["completions", shell])?)?;
    }
    for f in ["LICENSE-MIT", "LICENSE-APACHE"] {
        copy(&root.join(f), &stage.join(f))?;
    }
    if root.join("deploy").is_dir() {
        exec(Command::new("cp").arg("-r").arg(root.join("deploy")).arg(&stage))?;
    }
    write(&stage.join("INSTALL"), install_text(version).as_bytes())?;
    let tarball = out.join(format!("{name}.tar.gz"));
    exec(Command::new("tar").arg("-C").arg(&out).args(["--owner=0", "--group=0", "-czf"]).arg(&tarball).arg(&name))?;
    let deb = debian_package(&stage, &out, version)?;
    Ok(Artifacts { tarball, deb })
}

/// tracer-VERSION-x86_64-linux: the tarball's folder, and its name without `.tar.gz`.
pub fn release_name() -> String {
    format!("tracer-{}-x86_64-linux", env!("CARGO_PKG_VERSION"))
}

/// `zig` for cargo-zigbuild: the PyPI `ziglang` wheel in a venv kept between runs, behind a
/// `zig` script; the folder to put first on PATH.
fn zig() -> Result<PathBuf> {
    let dir = cache_dir()?.join("zig");
    let venv = dir.join("venv");
    let python = venv.join("bin/python3");
    let works = |p: &Path| output(Command::new(p).args(["-m", "ziglang", "version"])).is_some();
    if !works(&python) {
        println!("xtask: dist: installing zig (PyPI ziglang) into {} (once)", venv.display());
        exec(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("python3 -m venv failed: install python3-venv")?;
        exec(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "ziglang"]))?;
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let script = format!("#!/bin/sh\nexec {} -m ziglang \"$@\"\n", python.display());
    write(&bin.join("zig"), script.as_bytes())?;
    set_mode(&bin.join("zig"), 0o755)?;
    Ok(bin)
}

fn zigbuild() -> Result<()> {
    if cargo_bin().join("cargo-zigbuild").exists() {
        return Ok(());
    }
    println!("xtask: dist: installing cargo-zigbuild (once)");
    exec(command("cargo").args(["install", "cargo-zigbuild", "--locked"]))
}

/// Kept between runs, outside the checkout: `$XDG_CACHE_HOME/tracer` or `~/.cache/tracer`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the build caches")?;
    let dir = base.join("tracer");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn git_commit(root: &Path) -> Option<String> {
    output(Command::new("git").arg("-C").arg(root).args(["rev-parse", "--short=12", "HEAD"])).map(|s| s.trim().to_string())
}

/// The newest `GLIBC_x.y` symbol version named in an ELF file.
pub fn newest_glibc(elf: &[u8]) -> Option<(u32, u32)> {
    let pat = b"GLIBC_";
    let mut newest = None;
    let mut i = 0;
    while let Some(at) = elf[i..].windows(pat.len()).position(|w| w == pat) {
        let start = i + at + pat.len();
        let end = elf[start..].iter().position(|b| !(b.is_ascii_digit() || *b == b'.')).map_or(elf.len(), |n| start + n);
        let text = std::str::from_utf8(&elf[start..end]).unwrap_or("");
        let mut parts = text.split('.').map(|p| p.parse::<u32>());
        if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
            newest = newest.max(Some((major, minor)));
        }
        i = end.max(start);
    }
    newest
}

fn run_binary(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(binary).args(args).output().with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!("{} {} failed: {}", binary.display(), args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// The .deb, from the staged tarball files.
fn debian_package(stage: &Path, out: &Path, version: &str) -> Result<PathBuf> {
    let pkg = out.join("deb-root");
    let _ = std::fs::remove_dir_all(&pkg);
    let place = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = pkg.join(to);
        std::fs::create_dir_all(dest.parent().context("a path with a folder")?)?;
        copy(from, &dest)?;
        set_mode(&dest, mode)
    };
    place(&stage.join("tracer"), "usr/bin/tracer", 0o755)?;
    place(&stage.join("tracer.1"), "usr/share/man/man1/tracer.1", 0o644)?;
    exec(Command::new("gzip").args(["-9n"]).arg(pkg.join("usr/share/man/man1/tracer.1")))?;
    place(&stage.join("completions/tracer.bash"), "usr/share/bash-completion/completions/tracer", 0o644)?;
    place(&stage.join("completions/_tracer"), "usr/share/zsh/vendor-completions/_tracer", 0o644)?;
    place(&stage.join("completions/tracer.fish"), "usr/share/fish/vendor_completions.d/tracer.fish", 0o644)?;
    // The agent's unit runs /usr/bin/tracer, where this package puts it; installed, not
    // enabled (`systemctl enable --now tracer-watch` is the user's choice).
    if stage.join("deploy/tracer-watch.service").is_file() {
        place(&stage.join("deploy/tracer-watch.service"), "lib/systemd/system/tracer-watch.service", 0o644)?;
    }
    if stage.join("deploy/daemonset.yaml").is_file() {
        place(&stage.join("deploy/daemonset.yaml"), "usr/share/doc/tracer/daemonset.yaml", 0o644)?;
    }
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: tracer\n\nFiles: *\nLicense: MIT or Apache-2.0\n\n{}",
        std::fs::read_to_string(stage.join("LICENSE-MIT"))?
    );
    write(&pkg.join("usr/share/doc/tracer/copyright"), copyright.as_bytes())?;
    let control = format!(
        "Package: tracer\nVersion: {version}\nArchitecture: amd64\nMaintainer: tracer developers <tracer@localhost>\n\
         Depends: libc6 (>= {}.{})\nSection: admin\nPriority: optional\n\
         Description: explains why a socket reset (eBPF process and memory tracer)\n \
         Follows a process from the kernel with eBPF tracepoints: memory growth, OOM kills,\n \
         signals, exits and TCP resets, and ends with a causal verdict. Needs root or\n \
         CAP_BPF + CAP_PERFMON; `tracer doctor` checks the host.\n",
        GLIBC.0, GLIBC.1
    );
    write(&pkg.join("DEBIAN/control"), control.as_bytes())?;
    let deb = out.join(format!("tracer_{version}_amd64.deb"));
    exec(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&pkg).arg(&deb))?;
    std::fs::remove_dir_all(&pkg)?;
    Ok(deb)
}

fn install_text(version: &str) -> String {
    format!(
        "tracer {version}: explains why a socket reset\n\n\
         Install: copy `tracer` anywhere on PATH (it needs glibc {}.{} or newer: Debian 11,\n\
         Ubuntu 20.04, RHEL 9 and anything newer), e.g.\n\n    \
         sudo install -m 0755 tracer /usr/local/bin/tracer\n    \
         sudo install -m 0644 tracer.1 /usr/local/share/man/man1/tracer.1\n\n\
         Shell completions are in completions/ (bash, zsh, fish); `tracer completions SHELL`\n\
         prints them too. On Debian and Ubuntu, the .deb from the same build installs all of it.\n\n\
         Check the host: `tracer doctor` (no privileges needed) says whether this kernel can be\n\
         traced: Linux 5.8 or newer with the BPF ring buffer, tracefs, and root or CAP_BPF +\n\
         CAP_PERFMON. No compiler, LLVM or kernel headers are needed: the eBPF programs are\n\
         in the binary, field layouts are read from tracefs at run time, and only classic\n\
         tracepoints are used (no kprobes). GPU memory is sampled through NVML where an NVIDIA\n\
         driver is installed (libnvidia-ml.so is loaded at run time; without it, no GPU rows).\n\n\
         Trace: `sudo tracer --pid PID`, or `sudo tracer run -- COMMAND`; `tracer report\n\
         TRACE.jsonl` explains a recorded trace. `tracer --help` and `man tracer` say the rest.\n\n\
         Always on: `tracer watch` is the host agent (Prometheus /metrics, OTLP logs, incident\n\
         folders). deploy/tracer-watch.service runs it under systemd with four capabilities\n\
         instead of root (copy it to /etc/systemd/system/; the .deb installs it, not enabled);\n\
         deploy/daemonset.yaml runs it on every node of a Kubernetes cluster.\n\n\
         License: MIT or Apache-2.0 (LICENSE-MIT, LICENSE-APACHE). The kernel programs\n\
         embedded in the binary declare the GPL to the kernel, as programs calling its\n\
         GPL-only helpers must.\n",
        GLIBC.0, GLIBC.1
    )
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_found_among_the_symbol_versions() {
        let elf = b"\0GLIBC_2.2.5\0GLIBC_2.31\0GLIBC_2.4\0GLIBC_PRIVATE\0xGLIBC_2.17";
        assert_eq!(newest_glibc(elf), Some((2, 31)));
        assert_eq!(newest_glibc(b"no versions"), None);
        // The host's own tracer, built against its glibc, names a version: the scan works
        // on real ELF files too.
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"].into_iter().find(|p| Path::new(p).exists());
        if let Some(libc) = libc {
            assert!(newest_glibc(&std::fs::read(libc).unwrap()).is_some_and(|v| v >= (2, 31)));
        }
    }
}
