//! The companion `workload`: which candle build sits next to tracer (CPU or CUDA), and
//! whether the `--model` checkpoints fit the memory they would load into, with the
//! same rule as the workload's own budget check (weights at the load dtype plus 5%
//! working memory; f32 on the CPU, bf16 on a GPU).
use std::{
    ffi::OsStr,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    checkpoint::{self, Inventory, ModelSpec, WeightFormat},
    gpu,
    memory::{self, Facts as Memory},
    Check, Status,
};
use crate::units::format_bytes;

/// Room a load needs beyond its weights, as `workload`'s budget check reserves it.
pub use host::load::{needed_for, WORKING_MEMORY_FRACTION};

/// Bytes that only a CUDA build of candle carries (its CUDA driver bindings).
const CUDA_MARKER: &[u8] = b"cudarc";

/// The `workload` binary found, and what it says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Build {
    /// Where it was looked for, in order.
    pub searched: Vec<String>,
    pub path: Option<PathBuf>,
    /// `workload --version`, e.g. `workload 0.1.0`.
    pub version: Option<String>,
    /// Whether candle's CUDA backend is linked in; None when the binary could not be read.
    pub cuda: Option<bool>,
}

impl Build {
    /// Next to the running tracer first (one `cargo build` puts both in target/...),
    /// then on PATH.
    pub fn find() -> Build {
        let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
        let path_var = std::env::var_os("PATH");
        let (found, searched) = locate(exe_dir.as_deref(), path_var.as_deref());
        let Some(path) = found else { return Build { searched, ..Build::default() } };
        let version = run_version(&path);
        // Its own answer first; the bytes of the binary when it cannot run here.
        let cuda = build_info_cuda(&path).or_else(|| file_contains(&path, CUDA_MARKER).ok());
        Build { searched, path: Some(path), version, cuda }
    }
}

/// The first `workload` executable in `exe_dir`, then each PATH folder; and where it looked.
pub fn locate(exe_dir: Option<&Path>, path_var: Option<&OsStr>) -> (Option<PathBuf>, Vec<String>) {
    let mut searched = Vec::new();
    let dirs = exe_dir
        .map(Path::to_path_buf)
        .into_iter()
        .chain(path_var.map(|p| std::env::split_paths(p).collect::<Vec<_>>()).unwrap_or_default());
    for dir in dirs {
        let candidate = dir.join("workload");
        searched.push(dir.display().to_string());
        if is_executable(&candidate) {
            return (Some(candidate), searched);
        }
    }
    (None, searched)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `workload --version`, waited for at most 5 s.
fn run_version(path: &Path) -> Option<String> {
    run_quietly(path, "--version")
}

/// The `cuda` field of `workload build-info`; None from a binary without the subcommand
/// or one that cannot start (a CUDA build on a machine without the CUDA libraries).
fn build_info_cuda(path: &Path) -> Option<bool> {
    let info: serde_json::Value = serde_json::from_str(&run_quietly(path, "build-info")?).ok()?;
    info["cuda"].as_bool()
}

/// The stdout of `path arg`, waited for at most 5 s.
fn run_quietly(path: &Path, arg: &str) -> Option<String> {
    let mut child = Command::new(path)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) => return None,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some(out.trim().to_string()).filter(|s| !s.is_empty())
}

/// Whether the file at `path` holds `needle`.
fn file_contains(path: &Path, needle: &[u8]) -> std::io::Result<bool> {
    contains(&mut std::fs::File::open(path)?, needle)
}

/// Whether `needle` occurs in what `r` yields, read in 4 MiB chunks (a match may span two).
pub fn contains(r: &mut impl std::io::Read, needle: &[u8]) -> std::io::Result<bool> {
    let Some((&first, rest)) = needle.split_first() else { return Ok(true) };
    let mut buf = vec![0u8; 4 << 20];
    let mut kept = 0;
    loop {
        let n = r.read(&mut buf[kept..])?;
        if n == 0 {
            return Ok(false);
        }
        let end = kept + n;
        let hay = &buf[..end];
        let mut at = 0;
        while let Some(i) = hay[at..].iter().position(|&b| b == first) {
            let start = at + i;
            if hay.len() - start - 1 < rest.len() {
                break;
            }
            if &hay[start + 1..start + 1 + rest.len()] == rest {
                return Ok(true);
            }
            at = start + 1;
        }
        kept = (needle.len() - 1).min(end);
        buf.copy_within(end - kept..end, 0);
    }
}

/// The `workload_build` row; `gpus`: GPUs NVML sees.
pub fn check_build(build: &Build, gpus: usize) -> Check {
    let Some(path) = &build.path else {
        return Check::info(
            "workload_build",
            match build.searched.first() {
                Some(dir) => format!("no workload binary next to tracer ({dir}) or on PATH"),
                None => "no workload binary next to tracer or on PATH".to_string(),
            },
        )
        .with_fix("cargo build --release -p workload (the doctor looks next to tracer, then on PATH)");
    };
    let version = build.version.as_deref().unwrap_or("workload (--version did not answer)");
    let at = format!("{version} at {}", path.display());
    match build.cuda {
        Some(true) if gpus == 0 => Check::warn(
            "workload_build",
            format!("{at}: CUDA build, but no GPU answers: --device auto loads on the CPU"),
            "install the NVIDIA driver (see the nvidia_driver row), or run with --device cpu",
        ),
        Some(true) => Check::ok("workload_build", format!("{at}: CUDA build (candle's CUDA backend is linked in)")),
        Some(false) if gpus > 0 => Check::warn(
            "workload_build",
            format!("{at}: CPU-only build, but {gpus} GPU(s) are here"),
            "cargo build --release -p workload --features cuda to load models on the GPU",
        ),
        Some(false) => Check::ok("workload_build", format!("{at}: CPU build (no CUDA backend linked in)")),
        None => Check::warn(
            "workload_build",
            format!("{at}: cannot read the binary to tell a CPU from a CUDA build"),
            format!("check the permissions of {}", path.display()),
        ),
    }
}

/// Where models go when they load.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// At f32, into the memory cgroup (if limited) and the machine's memory.
    Cpu {
        /// The binding cgroup limit on the path: (dir, version, limit, usage).
        cgroup: Option<(String, u8, u64, u64)>,
        mem_total: u64,
        mem_available: u64,
    },
    /// At bf16, into one GPU's memory.
    Gpu { index: u32, name: String, total: u64, free: u64 },
}

impl Target {
    pub fn dtype(&self) -> (&'static str, u64) {
        match self {
            Target::Cpu { .. } => ("f32", 4),
            Target::Gpu { .. } => ("bf16", 2),
        }
    }

    fn place(&self) -> String {
        match self {
            Target::Cpu { .. } => "on the CPU".into(),
            Target::Gpu { index, .. } => format!("on GPU {index}"),
        }
    }

    /// Where the server will load: GPU 0 when there is one and the workload build is not
    /// known to be CPU-only (`--device auto`), else the CPU.
    pub fn choose(memory: &Memory, gpus: &gpu::Facts, build: &Build) -> Target {
        match gpus.gpus.first() {
            Some(g) if build.cuda != Some(false) => {
                Target::Gpu { index: g.index, name: g.name.clone(), total: g.total_bytes, free: gpu::free(g) }
            }
            _ => Target::Cpu {
                cgroup: memory.cgroup.as_ref().and_then(|cg| {
                    cg.binding().map(|(dir, limit, usage)| (dir.to_string(), cg.sample.version, limit, usage))
                }),
                mem_total: memory.mem_total,
                mem_available: memory.mem_available,
            },
        }
    }
}

/// Whether `weights` (already at the target's dtype) fit: `(status, sentence, fix)`.
/// `who_needs` starts the sentence ("model aya needs", "both need"); `bf16_weights`, on the CPU,
/// offers `--dtype bf16` as a way out when that would fit.
pub fn fit(
    who_needs: &str,
    weights: u64,
    bf16_weights: Option<u64>,
    target: &Target,
) -> (Status, String, Option<String>) {
    let needed = needed_for(weights);
    let (dtype, _) = target.dtype();
    let needs = format!(
        "{who_needs} {} at {dtype} ({} of weights + {:.0}% working memory)",
        format_bytes(needed),
        format_bytes(weights),
        WORKING_MEMORY_FRACTION * 100.0
    );
    match target {
        Target::Gpu { index, name, total, free } => {
            let gpu = format!("GPU {index} ({name})");
            if needed > *total {
                (
                    Status::Fail,
                    format!("{needs} but {gpu} has {} in all", format_bytes(*total)),
                    Some("use a bigger GPU or a smaller model (or --device cpu with enough host memory)".into()),
                )
            } else if needed > *free {
                (
                    Status::Warn,
                    format!("{needs} but {gpu} has only {} free now", format_bytes(*free)),
                    Some("free GPU memory (see nvidia-smi), or load fewer models on it".into()),
                )
            } else {
                (Status::Ok, format!("{needs}: fits {gpu}, {} free", format_bytes(*free)), None)
            }
        }
        Target::Cpu { cgroup, mem_total, mem_available } => {
            let bf16_way = bf16_weights
                .filter(|&b| cgroup.as_ref().is_none_or(|c| needed_for(b) <= c.2) && needed_for(b) <= *mem_total)
                .map(|b| format!(", --dtype bf16 (needs {})", format_bytes(needed_for(b))))
                .unwrap_or_default();
            if let Some((dir, version, limit, usage)) = cgroup {
                if needed > *limit {
                    return (
                        Status::Fail,
                        format!("{needs} but the memory cgroup allows {} ({dir})", format_bytes(*limit)),
                        Some(format!(
                            "raise {}{bf16_way} or use a smaller model",
                            if *version == 1 { "memory.limit_in_bytes" } else { "memory.max" }
                        )),
                    );
                }
                let free = limit.saturating_sub(*usage);
                if needed > free {
                    return (
                        Status::Warn,
                        format!(
                            "{needs}: within the memory cgroup's limit {} but only {} of it is free now ({dir})",
                            format_bytes(*limit),
                            format_bytes(free)
                        ),
                        Some(format!(
                            "unload other models from this cgroup, or raise {}",
                            memory::limit_file(dir, *version)
                        )),
                    );
                }
            }
            if needed > *mem_total {
                return (
                    Status::Fail,
                    format!("{needs} but the machine has {} of memory", format_bytes(*mem_total)),
                    Some(format!("a machine with more memory{bf16_way}, or a smaller model")),
                );
            }
            if needed > *mem_available {
                return (
                    Status::Warn,
                    format!("{needs} but only {} is available on the machine now", format_bytes(*mem_available)),
                    Some("free memory (other processes, page cache pinned by tmpfs) before loading".into()),
                );
            }
            let room = match cgroup {
                Some((dir, _, limit, usage)) => {
                    let free = limit.saturating_sub(*usage).min(*mem_available);
                    format!(
                        "{} free (memory cgroup {dir}: limit {}; MemAvailable {})",
                        format_bytes(free),
                        format_bytes(*limit),
                        format_bytes(*mem_available)
                    )
                }
                None => format!("{} available (no cgroup limit)", format_bytes(*mem_available)),
            };
            (Status::Ok, format!("{needs}: fits, {room}"), None)
        }
    }
}

/// What a checkpoint is, in words: `cohere, 3 tensors (BF16) in 2 safetensors files,
/// 20 B stored; 40 B at f32, 20 B at bf16`.
pub fn describe(inv: &Inventory) -> String {
    let kind = inv.model_type.as_deref().unwrap_or("no model_type");
    let files = match inv.format {
        WeightFormat::Safetensors { files: 1 } => {
            format!("{} tensors ({}) in model.safetensors", inv.tensors, inv.dtypes.join(", "))
        }
        WeightFormat::Safetensors { files } => {
            format!("{} tensors ({}) in {files} safetensors shards", inv.tensors, inv.dtypes.join(", "))
        }
        WeightFormat::Pytorch => "pytorch_model.bin, sized from the file assuming f32 storage (an estimate)".into(),
    };
    format!(
        "{kind}, {files}, {} stored; {} at f32, {} at bf16",
        format_bytes(inv.stored_bytes),
        format_bytes(inv.bytes_at(4)),
        format_bytes(inv.bytes_at(2))
    )
}

/// Model types `workload` serves.
const SERVED: &[&str] = &["m2m_100", "nllb", "cohere"];

/// The `model.NAME` row.
pub fn check_model(spec: &ModelSpec, inv: &Result<Inventory, checkpoint::CheckpointError>, target: &Target) -> Check {
    let name = format!("model.{}", spec.name);
    let inv = match inv {
        Ok(i) => i,
        Err(e) => return Check::fail(name, format!("model {}: {e}", spec.name), e.fix()),
    };
    let (_, elem) = target.dtype();
    let bf16 = matches!(target, Target::Cpu { .. }).then(|| inv.bytes_at(2));
    let (mut status, verdict, mut fix) = fit(&format!("model {} needs", spec.name), inv.bytes_at(elem), bf16, target);
    let mut finding = format!("{}; {}: {verdict}", describe(inv), target.place());
    if let Some(t) = inv.model_type.as_deref().filter(|t| !SERVED.contains(t)) {
        status = status.max(Status::Warn);
        finding.push_str(&format!("; model_type {t:?} is not one workload serves"));
        fix.get_or_insert_with(|| "workload serves m2m_100 (NLLB) and cohere (Aya) checkpoints".into());
    }
    Check::new(name, status, finding, fix)
}

/// All models at once: the server keeps each one it loaded, so the last load needs room
/// beside the others (the bug report's OOM: NLLB fit, then Aya did not).
pub fn check_together(models: &[(&ModelSpec, &Inventory)], target: &Target) -> Check {
    let (_, elem) = target.dtype();
    let weights = models.iter().map(|(_, i)| i.bytes_at(elem)).sum();
    let bf16 = matches!(target, Target::Cpu { .. }).then(|| models.iter().map(|(_, i)| i.bytes_at(2)).sum());
    let names: Vec<&str> = models.iter().map(|(s, _)| s.name.as_str()).collect();
    let (status, verdict, fix) = fit(
        &if models.len() == 2 { "both need".to_string() } else { format!("all {} need", models.len()) },
        weights,
        bf16,
        target,
    );
    Check::new(
        "models.total",
        status,
        format!("{} loaded together {}: {verdict}", names.join(" + "), target.place()),
        fix,
    )
}

/// A row per `--model`, and one for all of them together when there are several.
pub fn model_checks(specs: &[ModelSpec], memory: &Memory, gpus: &gpu::Facts, build: &Build) -> Vec<Check> {
    if specs.is_empty() {
        return Vec::new();
    }
    let target = Target::choose(memory, gpus, build);
    let opened: Vec<_> = specs.iter().map(|s| (s, checkpoint::open(&s.dir))).collect();
    let mut out: Vec<Check> = opened.iter().map(|(s, inv)| check_model(s, inv, &target)).collect();
    let good: Vec<(&ModelSpec, &Inventory)> =
        opened.iter().filter_map(|(s, inv)| inv.as_ref().ok().map(|i| (*s, i))).collect();
    if good.len() > 1 {
        out.push(check_together(&good, &target));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn cpu(limit: Option<u64>, usage: u64) -> Target {
        Target::Cpu {
            cgroup: limit.map(|l| ("/sys/fs/cgroup/memory/svc".to_string(), 1, l, usage)),
            mem_total: 24 * GIB,
            mem_available: 20 * GIB,
        }
    }

    fn inv(elements: u64) -> Inventory {
        Inventory {
            model_type: Some("cohere".into()),
            format: WeightFormat::Safetensors { files: 1 },
            tensors: 3,
            elements,
            stored_bytes: elements * 2,
            dtypes: vec!["BF16".into()],
        }
    }

    #[test]
    fn working_memory_is_five_percent() {
        assert_eq!(needed_for(1000), 1050);
        assert_eq!(needed_for(0), 0);
    }

    #[test]
    fn over_the_cgroup_limit_fails_with_the_numbers_and_a_way_out() {
        // ~8.3 GiB of f32 weights + 5% vs an 8 GiB limit.
        let w = 8 * GIB + 300 * (1 << 20);
        let (status, text, fix) = fit("model aya needs", w, Some(w / 2), &cpu(Some(8 * GIB), 0));
        assert_eq!(status, Status::Fail);
        assert!(text.starts_with("model aya needs 8.71 GiB at f32 (8.29 GiB of weights"), "{text}");
        assert!(text.contains("but the memory cgroup allows 8.00 GiB"), "{text}");
        let fix = fix.unwrap();
        assert!(fix.contains("raise memory.limit_in_bytes") && fix.contains("--dtype bf16"), "{fix}");
    }

    #[test]
    fn within_the_limit_but_not_what_is_free_warns() {
        let (status, text, fix) = fit("model aya needs", 2 * GIB, None, &cpu(Some(4 * GIB), 3 * GIB));
        assert_eq!(status, Status::Warn, "{text}");
        assert!(text.contains("only 1.00 GiB of it is free"), "{text}");
        assert!(fix.unwrap().contains("/sys/fs/cgroup/memory/svc/memory.limit_in_bytes"));
        let (status, text, _) = fit("model aya needs", 2 * GIB, None, &cpu(Some(8 * GIB), GIB));
        assert_eq!(status, Status::Ok, "{text}");
        assert!(text.contains("fits"));
    }

    #[test]
    fn without_a_cgroup_the_machine_bounds_the_load() {
        assert_eq!(fit("m needs", 30 * GIB, None, &cpu(None, 0)).0, Status::Fail);
        assert_eq!(fit("m needs", 39 * GIB / 2, None, &cpu(None, 0)).0, Status::Warn);
        let (s, text, _) = fit("m needs", GIB, None, &cpu(None, 0));
        assert_eq!(s, Status::Ok);
        assert!(text.contains("no cgroup limit"), "{text}");
    }

    #[test]
    fn on_a_gpu_bf16_weights_meet_its_free_memory() {
        let g = Target::Gpu { index: 0, name: "NVIDIA H200".into(), total: 140 * GIB, free: 10 * GIB };
        assert_eq!(g.dtype(), ("bf16", 2));
        assert_eq!(fit("m needs", 8 * GIB, None, &g).0, Status::Ok);
        assert_eq!(fit("m needs", 20 * GIB, None, &g).0, Status::Warn);
        assert_eq!(fit("m needs", 200 * GIB, None, &g).0, Status::Fail);
    }

    #[test]
    fn model_rows_carry_the_inventory_and_together_row_sums() {
        let nllb = ModelSpec { name: "nllb".into(), dir: "/m/nllb".into() };
        let aya = ModelSpec { name: "aya".into(), dir: "/m/aya".into() };
        // 1 GiB of elements: 4 GiB at f32 (4.2 needed); a 6 GiB limit takes one, not both.
        let one = inv(GIB);
        let target = cpu(Some(6 * GIB), 0);
        let row = check_model(&aya, &Ok(one.clone()), &target);
        assert_eq!((row.name.as_str(), row.status), ("model.aya", Status::Ok), "{row:?}");
        assert!(row.finding.starts_with("cohere, 3 tensors (BF16) in model.safetensors"), "{row:?}");
        assert!(row.finding.contains("4.00 GiB at f32, 2.00 GiB at bf16"), "{row:?}");
        let both = check_together(&[(&nllb, &one), (&aya, &one)], &target);
        assert_eq!(both.status, Status::Fail, "{both:?}");
        assert!(
            both.finding.starts_with("nllb + aya loaded together on the CPU: both need 8.40 GiB at f32"),
            "{both:?}"
        );
        assert!(both.fix.unwrap().contains("--dtype bf16"));
    }

    #[test]
    fn a_bad_model_folder_is_a_fail_row_with_its_fix() {
        let spec = ModelSpec { name: "x".into(), dir: "/nonexistent/x".into() };
        let row = check_model(&spec, &checkpoint::open(&spec.dir), &cpu(None, 0));
        assert_eq!(row.status, Status::Fail);
        assert!(row.finding.contains("/nonexistent/x: no such folder"), "{row:?}");
        assert!(row.fix.unwrap().contains("NAME=DIR"));
        let mut odd = inv(10);
        odd.model_type = Some("llama".into());
        assert_eq!(check_model(&spec, &Ok(odd), &cpu(None, 0)).status, Status::Warn);
    }

    #[test]
    fn build_row_from_what_was_found() {
        let none = Build { searched: vec!["/opt/bin".into()], ..Build::default() };
        let c = check_build(&none, 0);
        assert_eq!(c.status, Status::Info);
        assert!(c.finding.contains("/opt/bin") && c.fix.unwrap().contains("cargo build --release -p workload"));
        let cpu_build = Build {
            searched: vec![],
            path: Some("/t/workload".into()),
            version: Some("workload 0.1.0".into()),
            cuda: Some(false),
        };
        let c = check_build(&cpu_build, 0);
        assert_eq!(c.status, Status::Ok);
        assert_eq!(c.finding, "workload 0.1.0 at /t/workload: CPU build (no CUDA backend linked in)");
        assert_eq!(check_build(&cpu_build, 1).status, Status::Warn);
        let cuda = Build { cuda: Some(true), ..cpu_build.clone() };
        assert_eq!(check_build(&cuda, 1).status, Status::Ok);
        assert_eq!(check_build(&cuda, 0).status, Status::Warn);
    }

    #[test]
    fn byte_search_finds_matches_across_chunk_edges() {
        let mut data = vec![b'x'; (4 << 20) + 10];
        let at = (4 << 20) - 3;
        data[at..at + 6].copy_from_slice(b"cudarc");
        assert!(contains(&mut &data[..], b"cudarc").unwrap());
        assert!(!contains(&mut &data[..at + 5], b"cudarc").unwrap());
        assert!(!contains(&mut &b"cudar"[..], b"cudarc").unwrap());
        assert!(contains(&mut &b"ccudarc"[..], b"cudarc").unwrap());
    }

    #[test]
    fn locate_prefers_the_folder_of_tracer_then_path() {
        use std::os::unix::fs::PermissionsExt as _;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let bin = b.path().join("workload");
        std::fs::write(&bin, "#!/bin/sh\necho workload 9.9\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        let (found, searched) = locate(Some(a.path()), Some(&path));
        assert_eq!(found.as_deref(), Some(bin.as_path()));
        assert_eq!(searched.len(), 3);
        let (found, _) = locate(Some(a.path()), None);
        assert_eq!(found, None);
    }
}
