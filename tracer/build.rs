//! Builds the kernel programs (tracer-ebpf) for the bpf target with aya-build; the
//! object is embedded in the binary with `include_bytes_aligned!`.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    git_commit();
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("tracer crate has no parent directory"))?
        .join("tracer-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package { name: "tracer-ebpf", root_dir, ..Default::default() }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` to install \
         bpf-linker (LLVM 22) and the nightly rust-src component",
    )
}

/// TRACER_GIT_COMMIT for `tracer --version`: given in the environment (a build from a
/// source tarball), else asked of git, else "unknown".
fn git_commit() {
    println!("cargo:rerun-if-env-changed=TRACER_GIT_COMMIT");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = root.join(".git");
    // A new commit moves HEAD or the branch it names.
    for f in ["HEAD", "packed-refs"] {
        if git.join(f).exists() {
            println!("cargo:rerun-if-changed={}", git.join(f).display());
        }
    }
    if let Some(branch) = std::fs::read_to_string(git.join("HEAD")).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string())) {
        if git.join(&branch).exists() {
            println!("cargo:rerun-if-changed={}", git.join(branch).display());
        }
    }
    let commit = std::env::var("TRACER_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = std::process::Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=TRACER_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
