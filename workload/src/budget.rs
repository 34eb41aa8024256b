//! How much memory a model load may take before the kernel kills us for it.
//!
//! The OOM kill in the bug report came from loading a model that did not fit the
//! container's memory cgroup. The fix checks first: bytes needed at the target dtype
//! against the tightest cgroup limit on our path (v1 or v2) and the system's
//! MemAvailable, and refuses the load with the numbers instead of dying.

use std::fmt;
use std::path::{Path, PathBuf};

/// Extra room a load needs beyond its weights: activations, the KV cache of the first
/// requests and allocator slack. Generous on purpose: a refused load is recoverable,
/// an OOM kill is not.
pub const WORKING_MEMORY_FRACTION: f64 = 0.10;

/// cgroup v1 reports "no limit" as a huge page-aligned number, not as "max".
const V1_UNLIMITED_FLOOR: u64 = 1 << 60;

/// The memory limit and usage of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupMemory {
    pub version: u8,
    /// Folder of the cgroup in the cgroup filesystem.
    pub dir: PathBuf,
    pub limit: u64,
    pub usage: u64,
}

impl CgroupMemory {
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.usage)
    }
}

/// Where the memory for a load can come from right now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryBudget {
    /// The cgroup on our path with the least room left, if any has a limit.
    pub cgroup: Option<CgroupMemory>,
    /// MemAvailable from /proc/meminfo.
    pub mem_available: u64,
    /// Free GPU memory on the device the model goes to, when it is a GPU.
    pub gpu_free: Option<u64>,
    /// `--gpu-memory-limit`: pretend at most this much device memory is free. Applies to
    /// GPU loads only (with `gpu_free`), to rehearse an over-budget load on a big GPU.
    pub gpu_limit: Option<u64>,
    /// A limit given by the operator (`--memory-budget`), applied on top of the others.
    pub operator_limit: Option<u64>,
}

/// Why a model may not be loaded: every number the decision used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub needed: u64,
    pub weights: u64,
    pub available: u64,
    pub constraint: String,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs {} ({} of weights + {:.0}% working memory) but only {} is available ({})",
            human_bytes(self.needed),
            human_bytes(self.weights),
            WORKING_MEMORY_FRACTION * 100.0,
            human_bytes(self.available),
            self.constraint
        )
    }
}

impl MemoryBudget {
    /// Reads the budget of the calling process.
    pub fn of_current_process() -> std::io::Result<Self> {
        use procfs::Current as _;
        let meminfo = procfs::Meminfo::current().map_err(std::io::Error::other)?;
        let mem_available = meminfo.mem_available.unwrap_or(meminfo.mem_free + meminfo.cached);
        Ok(Self {
            cgroup: tightest_cgroup(std::process::id()),
            mem_available,
            gpu_free: None,
            gpu_limit: None,
            operator_limit: None,
        })
    }

    /// The smallest amount any constraint allows, with a description of that constraint.
    pub fn available(&self) -> (u64, String) {
        // On a GPU the weights live in device memory; host memory only stages them.
        if let Some(free) = self.gpu_free {
            let mut gpu = (free, format!("GPU free memory {}", human_bytes(free)));
            if let Some(limit) = self.gpu_limit.filter(|&limit| limit < free) {
                gpu = (limit, format!("--gpu-memory-limit {} (GPU free memory {})", human_bytes(limit), human_bytes(free)));
            }
            return match self.operator_limit {
                Some(limit) if limit < gpu.0 => (limit, format!("--memory-budget {}", human_bytes(limit))),
                _ => gpu,
            };
        }
        let mut candidates = vec![(self.mem_available, format!("system MemAvailable {}", human_bytes(self.mem_available)))];
        if let Some(cg) = &self.cgroup {
            candidates.push((
                cg.free(),
                format!(
                    "memory cgroup {} v{}: limit {}, in use {}",
                    cg.dir.display(),
                    cg.version,
                    human_bytes(cg.limit),
                    human_bytes(cg.usage)
                ),
            ));
        }
        if let Some(limit) = self.operator_limit {
            candidates.push((limit, format!("--memory-budget {}", human_bytes(limit))));
        }
        candidates.into_iter().min_by_key(|(bytes, _)| *bytes).unwrap_or((0, "nothing".into()))
    }

    /// Ok when `weights` bytes plus working memory fit, else the numbers that say why not.
    pub fn check(&self, weights: u64) -> Result<(), OverBudget> {
        let needed = needed_for(weights);
        let (available, constraint) = self.available();
        if needed <= available {
            Ok(())
        } else {
            Err(OverBudget { needed, weights, available, constraint })
        }
    }
}

/// Bytes a load of `weights` bytes needs, working memory included.
pub fn needed_for(weights: u64) -> u64 {
    weights + (weights as f64 * WORKING_MEMORY_FRACTION) as u64
}

/// The memory cgroup with the least room among `pid`'s cgroup and its ancestors: a
/// parent's limit applies to every child below it.
pub fn tightest_cgroup(pid: u32) -> Option<CgroupMemory> {
    let cgroup_file = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let (version, mount, path) = memory_cgroup_path(&cgroup_file, &mountinfo)?;
    let mut dir = mount.join(path.trim_start_matches('/'));
    let mut tightest: Option<CgroupMemory> = None;
    loop {
        if let Some(cg) = read_cgroup_memory(version, &dir) {
            if tightest.as_ref().is_none_or(|t| cg.free() < t.free()) {
                tightest = Some(cg);
            }
        }
        if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
            break;
        }
    }
    tightest
}

/// (version, mount point of the hierarchy, path of the process's cgroup in it) for the
/// memory controller. v1 wins on hybrid systems: that is where the memory limit lives.
pub fn memory_cgroup_path(cgroup_file: &str, mountinfo: &str) -> Option<(u8, PathBuf, String)> {
    let mut v2_path = None;
    for line in cgroup_file.lines() {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            let mount = mount_point(mountinfo, |fstype, opts| fstype == "cgroup" && opts.split(',').any(|o| o == "memory"))?;
            return Some((1, mount, path.to_string()));
        }
        if controllers.is_empty() {
            v2_path = Some(path.to_string());
        }
    }
    let path = v2_path?;
    let mount = mount_point(mountinfo, |fstype, _| fstype == "cgroup2")?;
    // A hybrid system mounts v2 without the memory controller; then there is no limit.
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    controllers.split_whitespace().any(|c| c == "memory").then_some((2, mount, path))
}

fn mount_point(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split_whitespace().nth(4)?;
        let mut right = right.split_whitespace();
        let fstype = right.next()?;
        let _source = right.next();
        let super_opts = right.next().unwrap_or("");
        matches(fstype, super_opts).then(|| PathBuf::from(mount))
    })
}

fn read_cgroup_memory(version: u8, dir: &Path) -> Option<CgroupMemory> {
    let (limit_file, usage_file) = match version {
        1 => ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        _ => ("memory.max", "memory.current"),
    };
    let limit = std::fs::read_to_string(dir.join(limit_file)).ok()?;
    let limit = limit.trim();
    if limit == "max" {
        return None;
    }
    let limit: u64 = limit.parse().ok()?;
    if limit >= V1_UNLIMITED_FLOOR {
        return None;
    }
    let usage: u64 = std::fs::read_to_string(dir.join(usage_file)).ok()?.trim().parse().ok()?;
    Some(CgroupMemory { version, dir: dir.to_path_buf(), limit, usage })
}

/// "1.50 GiB": binary units, as cgroup limits are usually set.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parses "512MiB", "2G", "1.5GiB", "1000000": the sizes a user types for a limit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size: use e.g. 512MiB, 2GiB or 1000000"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, KB, MB or GB")),
    };
    Ok((number * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_controller_wins_on_a_hybrid_system() {
        let cgroup = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let (version, mount, path) = memory_cgroup_path(cgroup, MOUNTINFO_HYBRID).unwrap();
        assert_eq!((version, mount.as_path(), path.as_str()), (1, Path::new("/sys/fs/cgroup/memory"), "/process_api/abc"));
    }

    #[test]
    fn v1_controller_listed_with_others_is_found() {
        let cgroup = "4:cpu,memory:/x\n";
        assert_eq!(memory_cgroup_path(cgroup, MOUNTINFO_HYBRID).unwrap().0, 1);
    }

    #[test]
    fn no_memory_controller_means_no_cgroup_limit() {
        assert_eq!(memory_cgroup_path("1:cpu:/\n", MOUNTINFO_HYBRID), None);
    }

    #[test]
    fn tightest_constraint_is_reported_with_its_numbers() {
        let budget = MemoryBudget {
            cgroup: Some(CgroupMemory { version: 2, dir: "/sys/fs/cgroup/svc".into(), limit: 2 << 30, usage: 1 << 30 }),
            mem_available: 8 << 30,
            gpu_free: None,
            gpu_limit: None,
            operator_limit: None,
        };
        let err = budget.check(1 << 30).unwrap_err();
        assert_eq!(err.available, 1 << 30);
        assert_eq!(err.needed, (1 << 30) + ((1u64 << 30) as f64 * 0.1) as u64);
        let text = err.to_string();
        assert!(text.contains("1.10 GiB") && text.contains("/sys/fs/cgroup/svc v2: limit 2.00 GiB, in use 1.00 GiB"), "{text}");
        assert!(budget.check(512 << 20).is_ok());
    }

    #[test]
    fn operator_limit_and_mem_available_apply() {
        let mut budget =
            MemoryBudget { cgroup: None, mem_available: 100 << 20, gpu_free: None, gpu_limit: None, operator_limit: None };
        assert!(budget.check(200 << 20).unwrap_err().constraint.contains("MemAvailable"));
        budget.mem_available = 64 << 30;
        budget.operator_limit = Some(10 << 20);
        assert!(budget.check(20 << 20).unwrap_err().constraint.contains("--memory-budget"));
    }

    #[test]
    fn gpu_memory_replaces_host_memory_for_gpu_loads() {
        let budget = MemoryBudget {
            cgroup: None,
            mem_available: 1 << 30,
            gpu_free: Some(80 << 30),
            gpu_limit: None,
            operator_limit: None,
        };
        assert!(budget.check(16 << 30).is_ok());
        assert!(budget.check(80 << 30).unwrap_err().constraint.contains("GPU"));
    }

    #[test]
    fn gpu_memory_limit_pretends_less_is_free_and_says_so() {
        // An H200 with 139 GiB free, told to pretend 8 GiB: a 16 GiB model no longer fits.
        let mut budget = MemoryBudget {
            cgroup: None,
            mem_available: 200 << 30,
            gpu_free: Some(139 << 30),
            gpu_limit: Some(8 << 30),
            operator_limit: None,
        };
        let err = budget.check(16 << 30).unwrap_err();
        assert_eq!(err.available, 8 << 30);
        assert_eq!(err.needed, needed_for(16 << 30));
        let text = err.to_string();
        assert!(
            text.contains("needs 17.60 GiB (16.00 GiB of weights")
                && text.contains("only 8.00 GiB is available (--gpu-memory-limit 8.00 GiB (GPU free memory 139.00 GiB))"),
            "{text}"
        );
        assert!(budget.check(7 << 30).is_ok());
        // min(real free, limit): a limit above what is free changes nothing.
        budget.gpu_limit = Some(500 << 30);
        let err = budget.check(200 << 30).unwrap_err();
        assert_eq!((err.available, err.constraint.as_str()), (139 << 30, "GPU free memory 139.00 GiB"));
        // --memory-budget below both still wins.
        budget.gpu_limit = Some(8 << 30);
        budget.operator_limit = Some(1 << 30);
        assert!(budget.check(2 << 30).unwrap_err().constraint.contains("--memory-budget"));
    }

    #[test]
    fn gpu_memory_limit_does_not_apply_to_cpu_loads() {
        let budget = MemoryBudget {
            cgroup: None,
            mem_available: 64 << 30,
            gpu_free: None,
            gpu_limit: Some(1 << 30),
            operator_limit: None,
        };
        assert!(budget.check(4 << 30).is_ok());
    }

    #[test]
    fn sizes_parse_in_the_units_users_type() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").unwrap_err().contains("unknown size unit"));
        assert_eq!(human_bytes(1536 << 20), "1.50 GiB");
        assert_eq!(human_bytes(12), "12 B");
    }

    #[test]
    fn the_running_process_budget_is_readable() {
        let budget = MemoryBudget::of_current_process().unwrap();
        assert!(budget.mem_available > 0);
        if let Some(cg) = budget.cgroup {
            assert!(cg.limit > 0 && cg.dir.exists());
        }
    }
}
