//! GPU memory from NVML, per device and for the traced processes.
//!
//! NVML (libnvidia-ml.so) is opened at run time, once per session: without an NVIDIA
//! driver the tracer logs one info line and samples no GPU, never an error.
use std::ffi::OsStr;

use nvml_wrapper::{enums::device::UsedGpuMemory, Nvml};

use crate::event::GpuSample;

pub struct GpuSampler {
    nvml: Option<Nvml>,
    /// Device names, read once.
    names: Vec<String>,
}

impl GpuSampler {
    /// Opens NVML from the default library (`libnvidia-ml.so`).
    pub fn new() -> GpuSampler {
        Self::init(None)
    }

    /// Opens NVML from `library` (a path or a soname), or the default one.
    pub fn init(library: Option<&OsStr>) -> GpuSampler {
        let nvml = match library {
            Some(lib) => Nvml::builder().lib_path(lib).init(),
            None => Nvml::init(),
        };
        let nvml = match nvml {
            Ok(n) => n,
            Err(e) => {
                tracing::info!("no NVIDIA driver ({e}): GPU memory is not sampled");
                return GpuSampler { nvml: None, names: Vec::new() };
            }
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                tracing::info!("no NVIDIA driver (NVML lists no devices: {e}): GPU memory is not sampled");
                return GpuSampler { nvml: None, names: Vec::new() };
            }
        };
        let names: Vec<String> = (0..count)
            .map(|i| nvml.device_by_index(i).and_then(|d| d.name()).unwrap_or_else(|_| format!("GPU {i}")))
            .collect();
        tracing::debug!("NVML sees {count} GPU(s): {names:?}");
        GpuSampler { nvml: Some(nvml), names }
    }

    /// Whether NVML is there (a driver was found).
    pub fn available(&self) -> bool {
        self.nvml.is_some()
    }

    /// The driver version and the CUDA version it supports (`"550.54.15"`, `"12.4"`), when
    /// a driver was found.
    pub fn driver_version(&self) -> Option<(String, Option<String>)> {
        let nvml = self.nvml.as_ref()?;
        let driver = nvml.sys_driver_version().ok()?;
        let cuda = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!("{}.{}", nvml_wrapper::cuda_driver_version_major(v), nvml_wrapper::cuda_driver_version_minor(v))
        });
        Some((driver, cuda))
    }

    /// One sample per GPU into `out`; nothing without a driver. A device that fails to
    /// answer is left out of this sample.
    pub fn sample(&mut self, pids: &[u32], out: &mut Vec<GpuSample>) {
        let Some(nvml) = &self.nvml else { return };
        for (index, name) in (0u32..).zip(&self.names) {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("GPU {index}: {e}");
                    continue;
                }
            };
            let mem = match device.memory_info() {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("GPU {index} memory: {e}");
                    continue;
                }
            };
            let compute = device.running_compute_processes();
            let graphics = device.running_graphics_processes();
            let process_bytes = if compute.is_err() && graphics.is_err() {
                None
            } else {
                let entries = compute.iter().flatten().chain(graphics.iter().flatten()).map(|p| {
                    let used = match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    };
                    (p.pid, used)
                });
                traced_bytes(entries, pids)
            };
            out.push(GpuSample {
                index,
                name: name.clone(),
                used_bytes: mem.used,
                total_bytes: mem.total,
                process_bytes,
            });
        }
    }
}

impl Default for GpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// GPU memory of the traced `pids` among NVML's `(pid, used bytes)` entries (compute then
/// graphics: a process in both is counted once). None when NVML has no per-process figure
/// for one of them (MIG without the right privileges, vGPU, WDDM).
pub fn traced_bytes(entries: impl Iterator<Item = (u32, Option<u64>)>, pids: &[u32]) -> Option<u64> {
    let mut seen: Vec<u32> = Vec::new();
    let mut total = 0u64;
    for (pid, used) in entries {
        if !pids.contains(&pid) || seen.contains(&pid) {
            continue;
        }
        seen.push(pid);
        total = total.saturating_add(used?);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_processes_gpu_memory_is_summed_once_each() {
        let entries = [(10, Some(100)), (11, Some(50)), (99, Some(7)), (10, Some(100))];
        assert_eq!(traced_bytes(entries.into_iter(), &[10, 11]), Some(150));
        assert_eq!(traced_bytes(entries.into_iter(), &[12]), Some(0));
        assert_eq!(traced_bytes([(10, None), (11, Some(5))].into_iter(), &[10, 11]), None);
        // Another process's missing figure does not matter.
        assert_eq!(traced_bytes([(99, None), (11, Some(5))].into_iter(), &[11]), Some(5));
    }

    #[test]
    fn without_a_driver_there_are_no_gpu_samples_and_no_error() {
        // A library that is nowhere behaves like a machine without the driver.
        let mut s = GpuSampler::init(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")));
        assert!(!s.available());
        let mut out = Vec::new();
        s.sample(&[std::process::id()], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn default_library_samples_every_gpu_or_none() {
        let mut s = GpuSampler::new();
        let mut out = Vec::new();
        s.sample(&[std::process::id()], &mut out);
        if s.available() {
            for g in &out {
                assert!(g.total_bytes > 0 && g.used_bytes <= g.total_bytes, "{g:?}");
                // This test process holds no GPU memory.
                assert!(matches!(g.process_bytes, None | Some(0)), "{g:?}");
            }
        } else {
            assert!(out.is_empty());
        }
    }
}
