//! The eBPF build chain, installed only where missing: Debian's LLVM 22 development
//! packages, the nightly toolchain with rust-src (for `-Z build-std=core`), and
//! bpf-linker built against LLVM 22; and Debian's Prometheus, which some tests run.
use anyhow::{bail, Result};
use clap::Args;

use crate::exec::{cargo_bin, command, exec, output};

const DEB_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];
/// Not needed to build, only to test: `scenario::prometheus` runs Debian's Prometheus
/// against `tracer watch --metrics`, so that the exposition is checked by the real
/// parser (the tests skip, loudly, without it). On a host run by systemd the package
/// also enables its own prometheus.service on :9090, which the tests do not use.
/// `sudo`: the suite's unprivileged check types `cargo xtask test` as a user with a sudo
/// rule.
const TEST_PACKAGES: &[&str] = &["prometheus", "sudo"];

#[derive(Args)]
pub struct Options {}

pub fn run(_: &Options) -> Result<()> {
    debian_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    println!("xtask: setup complete (LLVM 22, nightly rust-src, bpf-linker, prometheus and sudo for the tests)");
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    output(command("dpkg-query").args(["-W", "-f=${Status}", pkg])).is_some_and(|s| s.contains("install ok installed"))
}

fn debian_packages() -> Result<()> {
    let wanted: Vec<&str> = DEB_PACKAGES.iter().chain(TEST_PACKAGES).copied().collect();
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        println!("xtask: Debian packages present: {}", wanted.join(" "));
        return Ok(());
    }
    // As another user, apt-get runs through sudo: only this step needs root.
    let root = crate::privilege::is_root();
    let has_sudo = crate::exec::on_path("sudo").is_some();
    if !root && !has_sudo {
        bail!(
            "missing Debian packages {}: install them as root (`apt-get install -y {}`), or install sudo",
            missing.join(" "),
            missing.join(" ")
        );
    }
    let apt = || {
        let mut c = if root { command("apt-get") } else { command("sudo") };
        if !root {
            c.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    println!("xtask: installing {}", missing.join(" "));
    exec(apt().arg("update"))?;
    exec(apt().args(["install", "-y", "--no-install-recommends"]).args(&missing))
        .map_err(|e| anyhow::anyhow!("{e:#}: LLVM 22 comes from Debian's bookworm-security (or newer) archive; check /etc/apt/sources.list*"))
}

fn nightly_rust_src() -> Result<()> {
    let installed = output(command("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]));
    if installed.as_deref().is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src"))) {
        println!("xtask: nightly toolchain with rust-src present");
        return Ok(());
    }
    if installed.is_none() {
        println!("xtask: installing the nightly toolchain");
        exec(command("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    println!("xtask: adding rust-src to nightly");
    exec(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    let bin = cargo_bin().join("bpf-linker");
    if bin.exists() && output(command(&bin.display().to_string()).arg("--version")).is_some() {
        println!("xtask: bpf-linker present ({})", bin.display());
        return Ok(());
    }
    println!("xtask: building bpf-linker against LLVM 22 (a few minutes, once)");
    exec(command("cargo").args(["install", "bpf-linker", "--no-default-features", "--features", "llvm-22"]))
}
