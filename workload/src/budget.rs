//! How much memory a model load may take before the kernel kills us for it.
//!
//! The OOM kill in the bug report came from loading a model that did not fit the
//! container's memory cgroup. The fix checks first: bytes needed at the target dtype
//! against the tightest cgroup limit on our path (v1 or v2) and the system's
//! MemAvailable, and refuses the load with the numbers instead of dying.

use std::fmt;
use std::path::PathBuf;

use host::bytes::human_bytes;

pub use host::load::{needed_for, WORKING_MEMORY_FRACTION};

/// The memory limit and usage of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupMemory {
    pub version: u8,
    /// Folder of the cgroup in the cgroup filesystem.
    pub dir: PathBuf,
    pub limit: u64,
    pub usage: u64,
    /// Of the usage, page cache the kernel drops before an OOM kill (see host::memcg::Level).
    pub reclaimable: u64,
}

impl CgroupMemory {
    /// Room under the limit, the page cache it can drop counted as room.
    pub fn free(&self) -> u64 {
        host::memcg::room(self.limit, self.usage, self.reclaimable)
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
                    "memory cgroup {} v{}: limit {}, in use {}{}",
                    cg.dir.display(),
                    cg.version,
                    human_bytes(cg.limit),
                    human_bytes(cg.usage),
                    if cg.reclaimable > 0 {
                        format!(" of which {} page cache it can drop", human_bytes(cg.reclaimable))
                    } else {
                        String::new()
                    }
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


/// The memory cgroup with the least room among `pid`'s cgroup and its ancestors: a
/// parent's limit applies to every child below it. Located and read by
/// [`host::memcg`], as the tracer and its doctor do: a refusal names the limit their
/// reports show.
pub fn tightest_cgroup(pid: u32) -> Option<CgroupMemory> {
    let (version, level) = host::memcg::tightest_of_pid(pid)?;
    Some(CgroupMemory { version, limit: level.limit?, usage: level.usage, reclaimable: level.reclaimable, dir: PathBuf::from(level.dir) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_constraint_is_reported_with_its_numbers() {
        let budget = MemoryBudget {
            cgroup: Some(CgroupMemory { version: 2, dir: "/sys/fs/cgroup/svc".into(), limit: 2 << 30, usage: 1 << 30, reclaimable: 0 }),
            mem_available: 8 << 30,
            gpu_free: None,
            gpu_limit: None,
            operator_limit: None,
        };
        let err = budget.check(1 << 30).unwrap_err();
        assert_eq!(err.available, 1 << 30);
        assert_eq!(err.needed, (1 << 30) + ((1u64 << 30) as f64 * 0.05) as u64);
        let text = err.to_string();
        assert!(text.contains("1.05 GiB") && text.contains("/sys/fs/cgroup/svc v2: limit 2.00 GiB, in use 1.00 GiB"), "{text}");
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
            text.contains("needs 16.80 GiB (16.00 GiB of weights")
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
    fn the_running_process_budget_is_readable() {
        let budget = MemoryBudget::of_current_process().unwrap();
        assert!(budget.mem_available > 0);
        if let Some(cg) = budget.cgroup {
            assert!(cg.limit > 0 && cg.dir.exists());
        }
    }
}
