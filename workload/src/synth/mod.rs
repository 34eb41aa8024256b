//! `workload gen-model`: synthetic checkpoints with the real tensor names and random
//! weights, so the whole loading path runs without downloading anything.

pub mod pytorch;
pub mod shapes;
pub mod tokenizer;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, View};

use crate::checkpoint::Arch;
pub use shapes::{Dims, Preset};
use shapes::{Fill, TensorSpec};

/// How the weights are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageDtype {
    F32,
    F16,
    Bf16,
}

impl StorageDtype {
    pub fn size(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::Bf16 => Dtype::BF16,
        }
    }

    /// The name transformers writes as `torch_dtype`.
    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub arch: Arch,
    pub dims: Dims,
    pub dtype: StorageDtype,
    /// Start a new safetensors shard (with an index) once a shard would pass this size.
    pub shard_bytes: u64,
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenReport {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub parameters: u64,
    pub weight_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write safetensors: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GenError + '_ {
    move |source| GenError::Io { path: path.to_path_buf(), source }
}

/// A tensor whose bytes are made when the writer asks for them, so a multi-gigabyte
/// checkpoint never sits in memory whole.
struct LazyTensor {
    spec: TensorSpec,
    dtype: StorageDtype,
    seed: u64,
}

impl LazyTensor {
    fn values(&self) -> Vec<f32> {
        let n = self.spec.elements() as usize;
        match self.spec.fill {
            Fill::Ones => vec![1.0; n],
            Fill::Zeros => vec![0.0; n],
            Fill::Random(std) => {
                // Uniform on [-a, a] has standard deviation a / sqrt(3).
                let a = std * 3f32.sqrt();
                let mut rng = SmallRng::seed_from_u64(self.seed ^ fnv1a(&self.spec.name));
                (0..n).map(|_| rng.random_range(-a..a)).collect()
            }
        }
    }
}

impl View for &LazyTensor {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.spec.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let values = self.values();
        let bytes: Vec<u8> = match self.dtype {
            StorageDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StorageDtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            StorageDtype::Bf16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        };
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        (self.spec.elements() * self.dtype.size()) as usize
    }
}

/// Stable across runs and platforms, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Writes config.json, tokenizer.json and the weights into `out`.
pub fn generate(spec: &GenSpec, out: &Path) -> Result<GenReport, GenError> {
    let (tensors, parameters, weight_bytes) = prepare(spec, out)?;
    let mut shards: Vec<Vec<&LazyTensor>> = vec![Vec::new()];
    let mut shard_size = 0u64;
    for t in &tensors {
        let size = t.spec.elements() * spec.dtype.size();
        if shard_size > 0 && shard_size + size > spec.shard_bytes {
            shards.push(Vec::new());
            shard_size = 0;
        }
        shard_size += size;
        if let Some(last) = shards.last_mut() {
            last.push(t);
        }
    }

    let mut files = Vec::new();
    if shards.len() == 1 {
        let path = out.join("model.safetensors");
        write_shard(&path, &shards[0])?;
        files.push(path);
    } else {
        let count = shards.len();
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let name = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
            let path = out.join(&name);
            write_shard(&path, shard)?;
            for t in shard {
                weight_map.insert(t.spec.name.clone(), name.clone());
            }
            files.push(path);
        }
        let index = serde_json::json!({"metadata": {"total_size": weight_bytes}, "weight_map": weight_map});
        write_json(&out.join("model.safetensors.index.json"), &index)?;
    }
    Ok(GenReport { dir: out.to_path_buf(), files, parameters, weight_bytes })
}

/// The folder with config.json and tokenizer.json written, no weights left from an
/// earlier run, and the tensors to write.
fn prepare(spec: &GenSpec, out: &Path) -> Result<(Vec<LazyTensor>, u64, u64), GenError> {
    let d = &spec.dims;
    if d.heads == 0 || !d.hidden.is_multiple_of(d.heads) || d.kv_heads == 0 || !d.heads.is_multiple_of(d.kv_heads) {
        return Err(GenError::Invalid(format!(
            "hidden size {} must divide into {} heads, which must divide into {} key/value heads",
            d.hidden, d.heads, d.kv_heads
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let tokenizer = tokenizer::tokenizer_json(spec.arch, d.vocab).map_err(GenError::Invalid)?;
    write_json(&out.join("tokenizer.json"), &tokenizer)?;
    write_json(&out.join("config.json"), &shapes::config_json(spec.arch, d, spec.dtype.torch_name()))?;
    // Stale weights from an earlier run with other shapes would be picked up first.
    for stale in ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"] {
        let path = out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }

    let tensors: Vec<LazyTensor> = shapes::tensors(spec.arch, d)
        .into_iter()
        .map(|t| LazyTensor { spec: t, dtype: spec.dtype, seed: spec.seed })
        .collect();
    let weight_bytes: u64 = tensors.iter().map(|t| t.spec.elements() * spec.dtype.size()).sum();
    let parameters: u64 = tensors.iter().map(|t| t.spec.elements()).sum();
    Ok((tensors, parameters, weight_bytes))
}

/// As [`generate`], with the weights in one `pytorch_model.bin` (torch.save's zip
/// format) instead of safetensors; `shard_bytes` does not apply.
pub fn generate_pytorch(spec: &GenSpec, out: &Path) -> Result<GenReport, GenError> {
    let (tensors, parameters, weight_bytes) = prepare(spec, out)?;
    let path = out.join("pytorch_model.bin");
    let items = tensors.iter().map(|t| pytorch::PthTensor { name: &t.spec.name, dtype: t.dtype, shape: &t.spec.shape, data: Cow::Owned(View::data(&t).into_owned()) });
    pytorch::write(&path, items).map_err(io(&path))?;
    Ok(GenReport { dir: out.to_path_buf(), files: vec![path], parameters, weight_bytes })
}

fn write_shard(path: &Path, tensors: &[&LazyTensor]) -> Result<(), GenError> {
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize_to_file(tensors.iter().map(|t| (t.spec.name.clone(), *t)), metadata, path)
        .map_err(|e| GenError::Safetensors { path: path.to_path_buf(), reason: format!("{e:?}") })?;
    // safetensors writes through a private temporary file (0600); a checkpoint is meant
    // to be read by the service, which may run as another user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io(path))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), GenError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| GenError::Invalid(e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, WeightFiles};

    fn tiny(arch: Arch) -> GenSpec {
        GenSpec { arch, dims: shapes::preset_dims(arch, Preset::Tiny), dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 7 }
    }

    #[test]
    fn a_pytorch_checkpoint_holds_the_same_tensors_and_replaces_safetensors() {
        for arch in [Arch::Nllb, Arch::Aya] {
            let dir = tempfile::tempdir().unwrap();
            let st = generate(&tiny(arch), dir.path()).unwrap();
            let st_ck = Checkpoint::open(dir.path()).unwrap();
            let pt = generate_pytorch(&tiny(arch), dir.path()).unwrap();
            assert!(!dir.path().join("model.safetensors").exists(), "stale safetensors would be read first");
            let pt_ck = Checkpoint::open(dir.path()).unwrap();
            assert!(matches!(pt_ck.files, WeightFiles::Pytorch(_)));
            assert_eq!((pt.weight_bytes, pt.parameters), (st.weight_bytes, st.parameters));
            assert_eq!(pt_ck.stored_bytes(), st_ck.stored_bytes());
            let mut a: Vec<_> = st_ck.tensors.iter().map(|t| (t.name.clone(), t.elements)).collect();
            let mut b: Vec<_> = pt_ck.tensors.iter().map(|t| (t.name.clone(), t.elements)).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b);
            let size = std::fs::metadata(&pt.files[0]).unwrap().len();
            assert!(size > pt.weight_bytes && size < pt.weight_bytes + (1 << 20), "{size} bytes for {} of weights", pt.weight_bytes);
        }
    }

    #[test]
    fn generated_checkpoint_opens_with_the_expected_inventory() {
        for arch in [Arch::Nllb, Arch::Aya] {
            let dir = tempfile::tempdir().unwrap();
            let report = generate(&tiny(arch), dir.path()).unwrap();
            let ck = Checkpoint::open(dir.path()).unwrap();
            assert_eq!(ck.arch, arch);
            assert_eq!(ck.stored_bytes(), report.weight_bytes);
            assert_eq!(ck.tensors.len(), shapes::tensors(arch, &tiny(arch).dims).len());
        }
    }

    #[test]
    fn a_small_shard_size_writes_an_index() {
        let mut spec = tiny(Arch::Aya);
        spec.shard_bytes = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let report = generate(&spec, dir.path()).unwrap();
        assert!(report.files.len() > 1);
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert!(matches!(&ck.files, WeightFiles::Safetensors(p) if p.len() == report.files.len()));
        assert_eq!(ck.stored_bytes(), report.weight_bytes);
    }

    #[test]
    fn weights_are_deterministic_and_storage_dtype_halves_the_size() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate(&tiny(Arch::Nllb), a.path()).unwrap();
        generate(&tiny(Arch::Nllb), b.path()).unwrap();
        let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
        let mut half = tiny(Arch::Nllb);
        half.dtype = StorageDtype::Bf16;
        let c = tempfile::tempdir().unwrap();
        let r = generate(&half, c.path()).unwrap();
        assert_eq!(r.weight_bytes * 2, Checkpoint::open(a.path()).unwrap().stored_bytes());
    }

    #[test]
    fn random_weights_have_the_requested_spread() {
        let t = LazyTensor {
            spec: TensorSpec { name: "x".into(), shape: vec![100_000], fill: Fill::Random(0.02) },
            dtype: StorageDtype::F32,
            seed: 1,
        };
        let v = t.values();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3, "mean {mean} std {std}");
    }

    #[test]
    fn bad_head_counts_are_refused() {
        let mut spec = tiny(Arch::Aya);
        spec.dims.kv_heads = 3;
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(generate(&spec, dir.path()), Err(GenError::Invalid(_))));
    }
}
