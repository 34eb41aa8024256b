//! The tools the benchmark compares against: strace and bpftrace (Debian packages) and
//! Python with `safetensors` + numpy (a virtual environment under target/bench-venv).
//! `cargo xtask bench` installs what is missing; the smoke test only looks.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::{on_path, command, exec, output};

const VENV_PACKAGES: &[&str] = &["safetensors", "numpy"];

/// Where each external tool is, when it is.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub strace: Option<PathBuf>,
    pub bpftrace: Option<PathBuf>,
    /// A python with `safetensors.numpy` importable.
    pub python: Option<PathBuf>,
}

impl Tools {
    /// The tools that are missing, named for a message.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.strace.is_none() {
            m.push("strace");
        }
        if self.bpftrace.is_none() {
            m.push("bpftrace");
        }
        if self.python.is_none() {
            m.push("python3 with safetensors + numpy");
        }
        m
    }
}

pub fn venv_dir(root: &Path) -> PathBuf {
    root.join("target/bench-venv")
}

/// Looks for the tools without installing anything.
pub fn detect(root: &Path) -> Tools {
    Tools { strace: on_path("strace"), bpftrace: on_path("bpftrace"), python: python_with_safetensors(root) }
}

/// Installs what is missing (apt-get for strace and bpftrace, pip in a venv for Python),
/// idempotently; fails with the command that would fix it.
pub fn ensure(root: &Path) -> Result<Tools> {
    let missing: Vec<&str> = ["strace", "bpftrace"].into_iter().filter(|t| on_path(t).is_none()).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let venv = venv_dir(root);
    if python_with_safetensors(root).is_none() {
        make_venv(&venv)?;
    }
    let tools = detect(root);
    if !tools.missing().is_empty() {
        bail!("still missing after installing: {}", tools.missing().join(", "));
    }
    Ok(tools)
}


/// The venv's python, when it imports safetensors.numpy.
fn python_with_safetensors(root: &Path) -> Option<PathBuf> {
    let python = venv_dir(root).join("bin/python3");
    let works = python.is_file()
        && output(command(&python.display().to_string()).args(["-c", "import safetensors.numpy, numpy"])).is_some();
    works.then_some(python)
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let fix = format!("sudo apt-get install -y {}", pkgs.join(" "));
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing {}: install with `{fix}` (the benchmark also needs root for the tracer)", pkgs.join(", "));
    }
    println!("xtask: installing {} (apt-get)", pkgs.join(" "));
    let apt = |args: &[&str]| {
        exec(command("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
            .map_err(|e| anyhow::anyhow!("{e:#}: could not install {}; try `{fix}` by hand", pkgs.join(", ")))
    };
    apt(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(pkgs);
    apt(&args)
}

fn make_venv(venv: &Path) -> Result<()> {
    let system = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| output(command(p).arg("--version")).is_some())
        .context("no python3: install it with `sudo apt-get install -y python3 python3-venv`")?;
    if !venv.join("bin/python3").is_file() {
        println!("xtask: creating the Python environment {}", venv.display());
        exec(command(system).args(["-m", "venv"]).arg(venv)).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}: cannot create a venv; install python3-venv (`sudo apt-get install -y python3-venv`)"
            )
        })?;
    }
    let pip = venv.join("bin/pip");
    exec(command(&pip.display().to_string()).args(["install", "--quiet"]).args(VENV_PACKAGES)).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}: pip could not install {} (PyPI must be reachable); try `{} install {}` by hand, or delete {} and rerun",
            VENV_PACKAGES.join(" "),
            pip.display(),
            VENV_PACKAGES.join(" "),
            venv.display()
        )
    })
}
