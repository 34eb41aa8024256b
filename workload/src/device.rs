//! Which device and dtype a model runs on.

use candle_core::{DType, Device};

/// `--device auto|cpu|cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {other:?}: use auto, cpu or cuda:N")),
        }
    }
}

/// `--dtype f32|bf16|f16`.
pub fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(format!("unknown dtype {other:?}: use f32, bf16 or f16")),
    }
}

pub fn dtype_name(dtype: DType) -> &'static str {
    dtype.as_str()
}

/// The device a model goes to, and a sentence saying why, for the log.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub dtype: DType,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda:{0} asked for a GPU, but this workload was built without CUDA: rebuild with `cargo build --release -p workload --features cuda` (see `cargo xtask build-gpu`), or use --device cpu")]
    NoCudaSupport(usize),
    #[error("--device cuda:{ordinal}: the GPU did not answer: {reason}; check `nvidia-smi`, or use --device cpu")]
    CudaUnavailable { ordinal: usize, reason: String },
}

/// Picks the device: `auto` takes GPU 0 when the binary has CUDA and a GPU answers.
/// The dtype defaults to bf16 on a GPU (what the checkpoints are trained in, half the
/// memory) and f32 on CPU (candle's CPU matmuls are fastest and exact in f32).
pub fn place(choice: DeviceChoice, dtype: Option<DType>) -> Result<Placement, DeviceError> {
    let (device, description) = match choice {
        DeviceChoice::Cpu => (Device::Cpu, "CPU (--device cpu)".to_string()),
        DeviceChoice::Cuda(ordinal) => {
            if !cfg!(feature = "cuda") {
                return Err(DeviceError::NoCudaSupport(ordinal));
            }
            let device =
                Device::new_cuda(ordinal).map_err(|e| DeviceError::CudaUnavailable { ordinal, reason: first_line(&e) })?;
            (device, format!("GPU cuda:{ordinal}"))
        }
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                match Device::new_cuda(0) {
                    Ok(device) => (device, "GPU cuda:0 (auto: CUDA build and a GPU answered)".to_string()),
                    Err(e) => (Device::Cpu, format!("CPU (auto: no GPU answered: {})", first_line(&e))),
                }
            } else {
                (Device::Cpu, "CPU (auto: this build has no CUDA; build with --features cuda for GPUs)".to_string())
            }
        }
    };
    let dtype = dtype.unwrap_or(if device.is_cuda() { DType::BF16 } else { DType::F32 });
    Ok(Placement { description: format!("{description}, {}", dtype.as_str()), device, dtype })
}

/// The message of a candle error without the backtrace candle appends to it when
/// RUST_BACKTRACE is set: it goes into one log line and into `/models`.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("auto, cpu or cuda:N"));
        assert!(parse_dtype("f8").is_err());
    }

    #[test]
    fn cpu_defaults_to_f32_and_honours_an_explicit_dtype() {
        let p = place(DeviceChoice::Cpu, None).unwrap();
        assert_eq!(p.dtype, DType::F32);
        assert!(p.description.contains("CPU"));
        assert_eq!(place(DeviceChoice::Cpu, Some(DType::BF16)).unwrap().dtype, DType::BF16);
    }

    #[test]
    fn an_error_with_a_backtrace_is_cut_to_its_message() {
        let e = candle_core::Error::Msg("DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")".into());
        let with_bt = candle_core::Error::WithBacktrace {
            inner: Box::new(e),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(first_line(&with_bt), "DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_says_how_to_get_cuda() {
        let err = place(DeviceChoice::Cuda(0), None).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
        let auto = place(DeviceChoice::Auto, None).unwrap();
        assert!(auto.description.contains("no CUDA"), "{}", auto.description);
    }
}
