//! `cargo xtask build-gpu`: a CUDA build of `workload` (and a release `tracer`) for a GPU
//! machine, made on a machine with no GPU and no CUDA toolkit.
//!
//! The CUDA toolkit comes from NVIDIA's PyPI wheels, installed into a virtual environment
//! under `target/gpu-toolchain/`; the CUDA 13 wheels all unpack into one
//! `site-packages/nvidia/cu13/{bin,include,lib,nvvm}` tree, which nvcc uses as its
//! toolkit root. Around it this command assembles a `CUDA_HOME`-like folder:
//!
//! * `bin`, `include`, `nvvm`: links into the wheels' tree;
//! * `lib64/`: links with the unversioned names the linker looks for (`libcudart.so`,
//!   `libcublas.so`, `libcublasLt.so`, `libcurand.so`, `libnvrtc.so`);
//! * `lib64/stubs/libcuda.so`: a link-time stub of the driver library, made here from
//!   the driver API's function names (no wheel ships one; the real `libcuda.so.1` comes
//!   with the GPU machine's driver).
//!
//! Why CUDA 13.0: candle 0.11.1 turns on cudarc's `dynamic-linking` (not `dynamic-loading`),
//! so the binary records the sonames of the CUDA libraries it was linked against. Built
//! against 13.0 it asks for `libcublas.so.13`, `libcublasLt.so.13`, `libnvrtc.so.13`,
//! `libcudart.so.13`, `libcurand.so.10` and `libcuda.so.1`, which a machine with CUDA 13
//! libraries has; a 12.x build would ask for the `.so.12` libraries, which it may not have
//! (cuBLASLt alone is 540 MB, too big to carry along). 13.0 is the oldest 13.x, so the
//! binary uses no symbol a later 13.x lacks, and its PTX (ISA 9.0) is JIT-compiled by any
//! CUDA 13 driver.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    exec::{build_path, command, exec, output, workspace_root},
    setup,
};

/// The CUDA toolkit release the wheels below belong to (cudarc's `cuda-13000`).
const CUDA_RELEASE: &str = "13.0";
const CUDARC_CUDA_VERSION: &str = "13000";

/// NVIDIA's wheels of CUDA 13.0 update 2: the compiler (nvcc, its front end `crt`, `nvvm`
/// with cicc and libdevice), headers (runtime, CCCL for cub/thrust) and the libraries
/// candle links against. Pinned together so a rebuild gets the same toolkit.
const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
];

/// Where the packed gpu-dist goes, relative to the workspace root.
const CARRY_DIR: &str = "target/gpu-carry";

/// Libraries the build links against, by soname; each gets an unversioned link.
const LINKED_LIBS: &[&str] = &["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13"];

#[derive(Args)]
pub struct Options {
    /// Compute capability to compile the kernels for (CUDA_COMPUTE_CAP): 90 is H100/H200
    /// (built as sm_90a, which runs on compute capability 9.0 only)
    #[arg(long, default_value = "90")]
    compute_cap: String,
    /// Cargo target folder of the GPU build (kept apart from the CPU builds)
    #[arg(long, default_value = "target/gpu")]
    target_dir: PathBuf,
    /// Build only the workload, not the tracer
    #[arg(long)]
    no_tracer: bool,
    /// Install and check the CUDA toolchain, build nothing
    #[arg(long)]
    toolchain_only: bool,
}

/// The assembled toolchain.
pub struct Toolchain {
    /// The CUDA_HOME-like folder.
    pub cuda_home: PathBuf,
    pub nvcc: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let root = workspace_root();
    let started = Instant::now();
    let toolchain = toolchain(&root.join("target/gpu-toolchain"))?;
    check_nvcc(&toolchain, &opts.compute_cap, &root.join("target/gpu-toolchain"))?;
    if opts.toolchain_only {
        println!("xtask: CUDA {CUDA_RELEASE} toolchain ready in {}", toolchain.cuda_home.display());
        print_env(&toolchain, &opts.compute_cap);
        return Ok(());
    }
    let target_dir = if opts.target_dir.is_absolute() { opts.target_dir.clone() } else { root.join(&opts.target_dir) };

    let build_started = Instant::now();
    let mut cargo = cuda_command(&toolchain, &opts.compute_cap, "cargo");
    cargo.current_dir(&root).env("CARGO_TARGET_DIR", &target_dir).args([
        "build",
        "--release",
        "-p",
        "workload",
        "--features",
        "cuda",
    ]);
    exec(&mut cargo).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nThe CUDA build of workload failed. If nvcc failed, its error is above (a host compiler it rejects: set \
             NVCC_CCBIN=/usr/bin/g++-12; a missing header: the wheels in {} are incomplete, delete that folder and rerun). If \
             the link failed on -lcuda or -lcublas, the folder {} is incomplete: delete target/gpu-toolchain and rerun.",
            toolchain.cuda_home.display(),
            toolchain.cuda_home.display()
        )
    })?;
    let workload_secs = build_started.elapsed().as_secs_f64();

    let mut tracer_secs = None;
    if !opts.no_tracer {
        // The tracer embeds its eBPF program, built by tracer/build.rs with the chain
        // that `cargo xtask setup` installs.
        setup::run(&setup::Options {})?;
        let tracer_started = Instant::now();
        exec(command("cargo").current_dir(&root).env("CARGO_TARGET_DIR", &target_dir).args([
            "build",
            "--release",
            "-p",
            "tracer",
        ]))
        .context("the release build of tracer failed (it needs `cargo xtask setup`; its error is above)")?;
        tracer_secs = Some(tracer_started.elapsed().as_secs_f64());
    }

    let dist = root.join("target/gpu-dist");
    let release = target_dir.join("release");
    assemble_dist(&root, &release, &dist, !opts.no_tracer, &toolchain, &opts.compute_cap)?;
    println!(
        "xtask: GPU build done in {:.0} s (workload with CUDA {:.0} s{}).\n\
         On the GPU machine (driver and CUDA 13 libraries, Python 3): carry {CARRY_DIR}/gpu-dist.tar.gz, then\n  \
         tar -xzf {CARRY_DIR}/gpu-dist.tar.gz -C /tmp && OUT=$PWD/gpu-check-out bash /tmp/gpu-dist/check.sh",
        started.elapsed().as_secs_f64(),
        workload_secs,
        tracer_secs.map(|s| format!(", tracer {s:.0} s")).unwrap_or_default(),
    );
    Ok(())
}

/// A command with the toolchain's environment: nvcc first on PATH, CUDA_HOME for cudarc's
/// link search, the compute capability for candle-kernels (no GPU to ask here) and the
/// CUDA version for cudarc.
pub fn cuda_command(toolchain: &Toolchain, compute_cap: &str, program: &str) -> std::process::Command {
    let mut cmd = command(program);
    cmd.env("PATH", format!("{}:{}", toolchain.cuda_home.join("bin").display(), build_path()))
        .env("CUDA_HOME", &toolchain.cuda_home)
        .env("CUDA_PATH", &toolchain.cuda_home)
        .env("CUDA_ROOT", &toolchain.cuda_home)
        .env("NVCC", &toolchain.nvcc)
        .env("CUDA_COMPUTE_CAP", compute_cap)
        .env("CUDARC_CUDA_VERSION", CUDARC_CUDA_VERSION)
        .env("LIBRARY_PATH", toolchain.cuda_home.join("lib64"));
    cmd
}

fn print_env(toolchain: &Toolchain, compute_cap: &str) {
    let home = toolchain.cuda_home.display();
    println!("  export PATH={home}/bin:$PATH CUDA_HOME={home} CUDA_PATH={home} CUDA_ROOT={home} NVCC={home}/bin/nvcc");
    println!("  export CUDA_COMPUTE_CAP={compute_cap} CUDARC_CUDA_VERSION={CUDARC_CUDA_VERSION} LIBRARY_PATH={home}/lib64");
}

/// Installs the wheels (once; a stamp file remembers which) and assembles the CUDA home.
pub fn toolchain(dir: &Path) -> Result<Toolchain> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("xtask: creating the Python environment for the CUDA wheels in {}", venv.display());
        exec(command("python3").args(["-m", "venv"]).arg(&venv)).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}: python3 cannot create a virtual environment; install it with `apt-get install -y python3 python3-venv`"
            )
        })?;
    }
    let stamp = dir.join("wheels.txt");
    let wanted = WHEELS.join("\n") + "\n";
    let site = site_packages_cu13(&venv);
    let installed =
        std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && site.as_ref().is_some_and(|s| s.join("bin/nvcc").exists());
    if installed {
        println!("xtask: CUDA {CUDA_RELEASE} wheels present in {}", venv.display());
    } else {
        println!("xtask: installing the CUDA {CUDA_RELEASE} wheels from PyPI (about 1.2 GB, once): {}", WHEELS.join(" "));
        exec(command(&python.display().to_string()).args(["-m", "pip", "install", "--disable-pip-version-check"]).args(WHEELS))
            .map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\npip could not install NVIDIA's CUDA wheels: check that PyPI is reachable from here (pip's \
                     index: PIP_INDEX_URL or pip.conf) and that there is 1.5 GB free under {}, then rerun `cargo xtask \
                     build-gpu` (delete {} to start over)",
                dir.display(),
                venv.display()
            )
        })?;
        std::fs::write(&stamp, &wanted)?;
    }
    let site = site_packages_cu13(&venv).with_context(|| {
        format!(
            "the CUDA wheels are installed but {}/lib/python3*/site-packages/nvidia/cu13 is missing: delete {} and rerun",
            venv.display(),
            venv.display()
        )
    })?;

    let home = dir.join("cuda");
    let lib64 = home.join("lib64");
    std::fs::create_dir_all(lib64.join("stubs"))?;
    for sub in ["bin", "include", "nvvm"] {
        relink(&site.join(sub), &home.join(sub))?;
    }
    for soname in LINKED_LIBS {
        let real = site.join("lib").join(soname);
        if !real.exists() {
            bail!("{} is missing from the CUDA wheels: delete {} and rerun", real.display(), venv.display());
        }
        let unversioned = soname.split(".so").next().unwrap_or(soname).to_string() + ".so";
        relink(&real, &lib64.join(soname))?;
        relink(&real, &lib64.join(unversioned))?;
    }
    driver_stub(&site.join("include"), &lib64.join("stubs"))?;
    Ok(Toolchain { nvcc: home.join("bin/nvcc"), cuda_home: home })
}

fn site_packages_cu13(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13"))
        .find(|p| p.is_dir())
}

/// Makes `link` a symbolic link to `target`, replacing whatever was there.
fn relink(target: &Path, link: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// `libcuda.so` for the linker: every driver API function, empty, under the soname
/// `libcuda.so.1`. The names come from cudarc's bindings (what the Rust code can call,
/// across CUDA versions) and from cuda.h as preprocessed (its `_v2`-style renames), so
/// the stub has every name the link can ask for. It is never loaded: at run time the
/// driver's own libcuda.so.1 answers.
fn driver_stub(include: &Path, stubs: &Path) -> Result<()> {
    let lib = stubs.join("libcuda.so");
    let mut names = std::collections::BTreeSet::new();
    if let Some(bindings) = cudarc_driver_bindings() {
        let text = std::fs::read_to_string(&bindings)?;
        names.extend(text.lines().filter_map(|l| l.strip_prefix("pub unsafe fn ")).filter_map(function_name));
    } else {
        println!("xtask: cudarc's sources not found in the cargo registry; the driver stub takes its names from cuda.h only");
    }
    let preprocessed = {
        let mut cc = command("cc");
        cc.args(["-E", "-P", "-x", "c", "-"]).arg(format!("-I{}", include.display()));
        preprocess(cc, "#include <cuda.h>\n")?
    };
    let words: Vec<&str> = preprocessed.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    for pair in words.windows(2) {
        if pair[0] == "CUresult" && pair[1].starts_with("cu") {
            names.insert(pair[1].to_string());
        }
    }
    if names.len() < 100 {
        bail!("found only {} CUDA driver functions for the libcuda stub: {} looks incomplete", names.len(), include.display());
    }
    let source: String = names.iter().map(|n| format!("void {n}(void) {{}}\n")).collect();
    let stamp = stubs.join("libcuda.c");
    if lib.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == source) {
        return Ok(());
    }
    std::fs::write(&stamp, &source)?;
    exec(command("cc").args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"]).arg(&lib).arg(&stamp))
        .context("cannot build the link-time stub of libcuda.so (needs a C compiler: apt-get install -y gcc)")?;
    println!("xtask: made the link-time libcuda stub ({} functions) in {}", names.len(), lib.display());
    Ok(())
}

fn function_name(rest: &str) -> Option<String> {
    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    name.starts_with("cu").then_some(name)
}

fn preprocess(mut cc: std::process::Command, source: &str) -> Result<String> {
    use std::io::Write;
    let mut child = cc
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cc to read cuda.h: install a C compiler (apt-get install -y gcc)")?;
    child.stdin.take().context("no stdin")?.write_all(source.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("cc could not preprocess cuda.h from the CUDA wheels");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// cudarc's driver bindings in the cargo registry, for the version in Cargo.lock.
fn cudarc_driver_bindings() -> Option<PathBuf> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    let version = loop {
        if lines.next()? == "name = \"cudarc\"" {
            break lines.next()?.strip_prefix("version = \"")?.trim_end_matches('"').to_string();
        }
    };
    let registry = crate::exec::cargo_bin().parent()?.join("registry/src");
    std::fs::read_dir(registry)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("cudarc-{version}/src/driver/sys/mod.rs")))
        .find(|p| p.exists())
}

/// nvcc runs, is the release we pinned, and can compile a bf16 kernel with the host
/// compiler for the target GPU, before cargo spends minutes getting there.
fn check_nvcc(toolchain: &Toolchain, compute_cap: &str, dir: &Path) -> Result<()> {
    let version = output(cuda_command(toolchain, compute_cap, &toolchain.nvcc.display().to_string()).arg("--version"))
        .with_context(|| format!("{} --version failed: delete {} and rerun", toolchain.nvcc.display(), dir.display()))?;
    if !version.contains(&format!("release {CUDA_RELEASE}")) {
        bail!("{} is not CUDA {CUDA_RELEASE}: {version}", toolchain.nvcc.display());
    }
    let probe = dir.join("probe.cu");
    std::fs::write(
        &probe,
        "#include <cuda_bf16.h>\n#include <cub/cub.cuh>\n\
         extern \"C\" __global__ void probe(__nv_bfloat16 *x) { x[threadIdx.x] = __float2bfloat16(1.0f); }\n",
    )?;
    let arch = if compute_cap.chars().all(|c| c.is_ascii_digit()) && compute_cap.parse::<u32>().is_ok_and(|c| c >= 90) {
        format!("{compute_cap}a")
    } else {
        compute_cap.to_string()
    };
    let mut nvcc = cuda_command(toolchain, compute_cap, &toolchain.nvcc.display().to_string());
    nvcc.arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"))
        .args(["-std=c++17", "-c", "-o"])
        .arg(dir.join("probe.o"))
        .arg(&probe);
    if let Ok(ccbin) = std::env::var("NVCC_CCBIN") {
        nvcc.args(["-ccbin", &ccbin]);
    }
    exec(&mut nvcc).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nnvcc {CUDA_RELEASE} cannot compile a kernel for sm_{arch} here. If it rejects the host compiler, point \
             it at a supported one (gcc 11 to 15): NVCC_CCBIN=/usr/bin/g++-12 cargo xtask build-gpu"
        )
    })?;
    println!("xtask: nvcc {CUDA_RELEASE} compiles for sm_{arch} with the host compiler");
    Ok(())
}

/// target/gpu-dist: the binaries, the device check script and a note of how they were
/// built and what they need at run time.
fn assemble_dist(root: &Path, release: &Path, dist: &Path, tracer: bool, toolchain: &Toolchain, compute_cap: &str) -> Result<()> {
    std::fs::create_dir_all(dist)?;
    let mut files = vec![("workload", release.join("workload"))];
    if tracer {
        files.push(("tracer", release.join("tracer")));
    }
    files.push(("check.sh", root.join("gpu/check.sh")));
    for (name, from) in &files {
        let to = dist.join(name);
        let _ = std::fs::remove_file(&to);
        std::fs::copy(from, &to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    // No debug sections: the binaries must travel (64 MiB at most with the check script).
    for name in ["workload", "tracer"].iter().take(if tracer { 2 } else { 1 }) {
        let _ = exec(command("strip").arg("--strip-debug").arg(dist.join(name)));
    }
    let needed = output(command("readelf").arg("-d").arg(dist.join("workload"))).unwrap_or_default();
    let needed: Vec<String> = needed
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect();
    let glibc = max_glibc(&dist.join("workload"));
    let mut info = String::new();
    info.push_str(&format!(
        "workload: candle 0.11.1 with --features cuda, CUDA {CUDA_RELEASE} (nvcc from PyPI wheels), kernels for \
         CUDA_COMPUTE_CAP={compute_cap}\n"
    ));
    info.push_str(&format!("needs at run time: {}\n", needed.join(" ")));
    if let Some(g) = glibc {
        info.push_str(&format!("needs glibc >= {g}\n"));
    }
    info.push_str(&format!("toolchain: {}\nwheels: {}\n", toolchain.cuda_home.display(), WHEELS.join(" ")));
    for (name, _) in &files {
        let size = std::fs::metadata(dist.join(name)).map(|m| m.len()).unwrap_or(0);
        info.push_str(&format!("{name}: {:.1} MiB\n", size as f64 / (1u64 << 20) as f64));
    }
    std::fs::write(dist.join("BUILD-INFO.txt"), &info)?;
    print!("{info}");
    // One compressed file to carry: the binaries together pass 64 MiB, gzip halves them
    // and every machine with tar (or Python) unpacks it.
    let carry = root.join(CARRY_DIR);
    std::fs::create_dir_all(&carry)?;
    let archive = carry.join("gpu-dist.tar.gz");
    let parent = dist.parent().context("gpu-dist has no parent folder")?;
    exec(command("tar").arg("-C").arg(parent).arg("-czf").arg(&archive).arg("gpu-dist"))
        .context("cannot pack target/gpu-dist (needs tar and gzip)")?;
    let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    println!("xtask: packed {} ({:.1} MiB)", archive.display(), size as f64 / (1u64 << 20) as f64);
    Ok(())
}

/// The newest GLIBC_x.y symbol version the binary asks for.
fn max_glibc(binary: &Path) -> Option<String> {
    let symbols = output(command("objdump").arg("-T").arg(binary))?;
    symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Vec<u32> = v.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            Some((parts, v.to_string()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}
