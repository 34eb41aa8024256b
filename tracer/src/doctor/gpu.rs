//! NVIDIA GPUs through NVML (the samplers' [`GpuSampler`]): the driver, and each GPU's
//! memory. No driver is `info`, not a problem: the models load on the CPU.
use super::{Check, Status};
use crate::{event::GpuSample, sample::gpu::GpuSampler, units::format_bytes};

/// Free memory under this share of a GPU's total is a warning.
pub const LOW_FREE: f64 = 0.10;

pub fn check_driver(driver: Option<&(String, Option<String>)>, available: bool, count: usize) -> Check {
    if !available {
        return Check::info(
            "nvidia_driver",
            "no NVIDIA driver (NVML, libnvidia-ml.so, not found): no GPU memory to sample; models load on the CPU",
        );
    }
    let version = match driver {
        Some((d, Some(cuda))) => format!("driver {d} (CUDA {cuda})"),
        Some((d, None)) => format!("driver {d}"),
        None => "driver of unknown version".to_string(),
    };
    if count == 0 {
        Check::warn(
            "nvidia_driver",
            format!("{version}, but NVML lists no GPU"),
            "check `nvidia-smi`: the device may be missing from this container or disabled",
        )
    } else {
        Check::ok("nvidia_driver", format!("{version}, {count} GPU{}", if count == 1 { "" } else { "s" }))
    }
}

/// Bytes free on a GPU.
pub fn free(g: &GpuSample) -> u64 {
    g.total_bytes.saturating_sub(g.used_bytes)
}

pub fn check_gpu(g: &GpuSample) -> Check {
    let name = format!("gpu.{}", g.index);
    let finding = format!(
        "{}: {} total, {} used, {} free",
        g.name,
        format_bytes(g.total_bytes),
        format_bytes(g.used_bytes),
        format_bytes(free(g))
    );
    if (free(g) as f64) < g.total_bytes as f64 * LOW_FREE {
        Check::new(
            name,
            Status::Warn,
            format!("{finding}: under 10% free"),
            Some("see `nvidia-smi` for what holds it; a model loaded there now may fail with out-of-memory".into()),
        )
    } else {
        Check::ok(name, finding)
    }
}

pub struct Facts {
    pub available: bool,
    pub driver: Option<(String, Option<String>)>,
    pub gpus: Vec<GpuSample>,
}

impl Facts {
    pub fn gather() -> Facts {
        let mut sampler = GpuSampler::new();
        let mut gpus = Vec::new();
        sampler.sample(&[], &mut gpus);
        Facts { available: sampler.available(), driver: sampler.driver_version(), gpus }
    }

    pub fn count(&self) -> usize {
        self.gpus.len()
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut out = vec![check_driver(self.driver.as_ref(), self.available, self.gpus.len())];
        out.extend(self.gpus.iter().map(check_gpu));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200(used: u64) -> GpuSample {
        GpuSample {
            index: 0,
            name: "NVIDIA H200".into(),
            used_bytes: used,
            total_bytes: 140 << 30,
            process_bytes: None,
        }
    }

    #[test]
    fn no_driver_is_info_and_a_driver_without_gpus_warns() {
        assert_eq!(check_driver(None, false, 0).status, Status::Info);
        let d = ("550.54.15".to_string(), Some("12.4".to_string()));
        let ok = check_driver(Some(&d), true, 2);
        assert_eq!(ok.status, Status::Ok);
        assert_eq!(ok.finding, "driver 550.54.15 (CUDA 12.4), 2 GPUs");
        assert_eq!(check_driver(Some(&d), true, 0).status, Status::Warn);
    }

    #[test]
    fn gpu_row_shows_free_memory_and_warns_when_nearly_full() {
        let c = check_gpu(&h200(1 << 30));
        assert_eq!((c.name.as_str(), c.status), ("gpu.0", Status::Ok));
        assert_eq!(c.finding, "NVIDIA H200: 140 GiB total, 1.00 GiB used, 139 GiB free");
        assert_eq!(check_gpu(&h200(135 << 30)).status, Status::Warn);
    }

    #[test]
    fn this_machine_reports_a_driver_row_and_one_row_per_gpu() {
        let f = Facts::gather();
        let rows = f.checks();
        assert_eq!(rows.len(), 1 + f.count());
        assert_eq!(rows[0].name, "nvidia_driver");
        assert_eq!(rows[0].status == Status::Info, !f.available, "{rows:?}");
    }
}
