//! A model folder on disk: which architecture it is, which weight files it has, how many
//! bytes its tensors need at a given dtype, and a `VarBuilder` over them.
//!
//! Everything here reads only headers, so the budget check can run before a single
//! weight is paged in. Finding the weight files and reading safetensors headers is
//! [`host::checkpoint`]'s, shared with `tracer doctor` so both size a checkpoint alike;
//! what needs candle stays here: the dtypes it loads, a pickle's tensors (its pickle
//! reader) and the `VarBuilder`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// The model families the service knows, detected from `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// NLLB-200 (`m2m_100`).
    Nllb,
    /// Aya (`cohere`).
    Aya,
}

impl Arch {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "m2m_100" | "nllb" => Some(Self::Nllb),
            "cohere" => Some(Self::Aya),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Nllb => "nllb",
            Self::Aya => "aya",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nllb" => Ok(Self::Nllb),
            "aya" => Ok(Self::Aya),
            other => Err(format!("unknown architecture {other:?}: use nllb or aya")),
        }
    }
}

/// What a corrupt weights file needs, said after every [`CheckpointError::Corrupt`].
pub const CORRUPT_FIX: &str = "re-download it, or regenerate it with `workload gen-model`";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{dir}: not a folder; give the folder that holds config.json and the weights")]
    NotADirectory { dir: PathBuf },
    #[error("{path}: cannot read: {source}; check that it exists and that this user may read it")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {reason}; use the config.json that came with the weights")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{path}: model_type {model_type:?} is not supported; this service runs m2m_100 (NLLB) and cohere (Aya)")]
    UnsupportedArch { path: PathBuf, model_type: String },
    #[error("{dir}: no weights found: expected model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin")]
    NoWeights { dir: PathBuf },
    #[error("{path}: invalid shard index: {reason}; download the index and its shards again")]
    BadIndex { path: PathBuf, reason: String },
    /// `reason` says what is wrong with the file, in words (see [`Self::corrupt`]).
    #[error("{path}: corrupt weights file: {reason}; {CORRUPT_FIX}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: tensor {tensor} is stored as {dtype:?}, which candle cannot load; convert the checkpoint to F32, F16 or BF16")]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: safetensors::Dtype },
}

impl CheckpointError {
    /// A corrupt weights file: `detail` is what the reader said, made a sentence; an
    /// empty file is called empty, and a safetensors file is diagnosed again from its
    /// header, which says truncated or foreign in so many words.
    pub fn corrupt(path: &Path, detail: &str) -> Self {
        let reason = empty_file(path).unwrap_or_else(|| {
            let safetensors = path.extension().is_some_and(|e| e == "safetensors");
            match safetensors.then(|| host::checkpoint::read_header(path)) {
                Some(Err(host::checkpoint::CheckpointError::Corrupt { reason, .. })) => header_problem(&reason),
                _ => crate::reason::one_line(detail),
            }
        });
        Self::Corrupt { path: path.to_path_buf(), reason }
    }

    /// A candle error from mapping or reading the weight files at `fallback` (the first
    /// of them); the file is the one the error names, if it names one.
    fn from_candle(fallback: &Path, e: &candle_core::Error) -> Self {
        let (path, inner) = crate::reason::candle_path(e);
        Self::corrupt(path.unwrap_or(fallback), &crate::reason::candle(inner))
    }
}

/// "the file is empty" when it is: clearer than any reader's words for it.
fn empty_file(path: &Path) -> Option<String> {
    std::fs::metadata(path).is_ok_and(|m| m.len() == 0).then(|| "the file is empty (0 bytes)".to_string())
}

/// `host::checkpoint`'s reason for a bad safetensors header, said as what is wrong with
/// the file.
fn header_problem(reason: &str) -> String {
    if reason.contains("too short for a header") {
        return format!("too short to be a safetensors file ({reason})");
    }
    if reason.contains("does not fit a") {
        return format!("not a safetensors file, or cut short inside its header ({reason})");
    }
    // "the header describes X bytes but the file has Y (truncated?)"
    let numbers: Vec<u64> = reason.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    if reason.starts_with("the header describes") && numbers.len() == 2 {
        let detail = reason.trim_end_matches(" (truncated?)");
        return if numbers[1] < numbers[0] {
            format!("it is truncated ({detail})")
        } else {
            format!("it has bytes its header does not describe ({detail})")
        };
    }
    format!("its safetensors header is not valid ({reason})")
}

/// The same failures in this service's words (its messages predate the shared crate,
/// and its clients and tests read them).
impl From<host::checkpoint::CheckpointError> for CheckpointError {
    fn from(e: host::checkpoint::CheckpointError) -> Self {
        use host::checkpoint::CheckpointError as Host;
        match e {
            Host::NoWeights { dir } => Self::NoWeights { dir },
            Host::Io { path, source } => Self::Io { path, source },
            Host::BadIndex { path, reason } => Self::BadIndex { path, reason },
            Host::Corrupt { path, reason } => {
                let reason = empty_file(&path).unwrap_or_else(|| header_problem(&reason));
                Self::Corrupt { path, reason }
            }
        }
    }
}

pub use host::checkpoint::WeightFiles;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub elements: u64,
}

/// A model folder, with its config parsed and its tensor inventory read from headers.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub arch: Arch,
    pub config: serde_json::Value,
    pub files: WeightFiles,
    pub tensors: Vec<TensorEntry>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::NotADirectory { dir: dir.to_path_buf() });
        }
        let config_path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(&read(&config_path)?)
            .map_err(|e| CheckpointError::BadConfig { path: config_path.clone(), reason: e.to_string() })?;
        let model_type = config
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| CheckpointError::BadConfig {
                path: config_path.clone(),
                reason: "no \"model_type\" key".into(),
            })?;
        let arch = Arch::from_model_type(model_type).ok_or_else(|| CheckpointError::UnsupportedArch {
            path: config_path.clone(),
            model_type: model_type.to_string(),
        })?;
        let files = host::checkpoint::find_weight_files(dir)?;
        let tensors = match &files {
            WeightFiles::Safetensors(paths) => {
                let mut all = Vec::new();
                for path in paths {
                    all.extend(safetensors_inventory(path)?);
                }
                all
            }
            WeightFiles::Pytorch(path) => pytorch_inventory(path)?,
        };
        Ok(Self { dir: dir.to_path_buf(), arch, config, files, tensors })
    }

    /// Bytes the tensors take once converted to `dtype`, which is what loading allocates.
    pub fn bytes_at(&self, dtype: DType) -> u64 {
        self.tensors.iter().map(|t| t.elements * dtype.size_in_bytes() as u64).sum()
    }

    /// Bytes the tensors take as stored.
    pub fn stored_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.elements * t.dtype.size_in_bytes() as u64).sum()
    }

    /// The safetensors reader behind a load on the CPU, where the model is built from its
    /// tensors read ahead by every core (see crate::preload); None where it loads tensor by
    /// tensor (a GPU, where host memory then holds one tensor at a time, or a pickle).
    pub fn preload_reader(&self, device: &Device) -> Result<Option<crate::weights::ReadSafetensors>, CheckpointError> {
        match &self.files {
            WeightFiles::Safetensors(paths) if device.is_cpu() => crate::weights::ReadSafetensors::open(paths)
                .map(Some)
                .map_err(|e| CheckpointError::from_candle(&paths[0], &e)),
            _ => Ok(None),
        }
    }

    /// A `VarBuilder` over the weight files that counts the bytes handed out in `progress`.
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
        progress: Arc<AtomicU64>,
    ) -> Result<VarBuilder<'static>, CheckpointError> {
        let inner: Box<dyn SimpleBackend> = match &self.files {
            // Read, not mapped: the lean loader (see crate::weights).
            WeightFiles::Safetensors(paths) => Box::new(
                crate::weights::ReadSafetensors::open(paths).map_err(|e| CheckpointError::from_candle(&paths[0], &e))?,
            ),
            WeightFiles::Pytorch(path) => Box::new(
                candle_core::pickle::PthTensors::new(path, None).map_err(|e| CheckpointError::from_candle(path, &e))?,
            ),
        };
        let backend: Box<dyn SimpleBackend> = Box::new(CountingBackend { inner, loaded: progress });
        Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })
}

/// The tensors of one safetensors file, sorted by name, in the dtypes candle loads.
fn safetensors_inventory(path: &Path) -> Result<Vec<TensorEntry>, CheckpointError> {
    let mut entries: Vec<TensorEntry> = Vec::new();
    for t in host::checkpoint::read_tensors(path)? {
        let unsupported =
            || CheckpointError::UnsupportedDtype { path: path.to_path_buf(), tensor: t.name.clone(), dtype: t.dtype };
        let dtype = candle_dtype(t.dtype).ok_or_else(unsupported)?;
        entries.push(TensorEntry { elements: t.elements(), name: t.name, dtype });
    }
    Ok(entries)
}

fn pytorch_inventory(path: &Path) -> Result<Vec<TensorEntry>, CheckpointError> {
    let infos = candle_core::pickle::read_pth_tensor_info(path, false, None)
        .map_err(|e| CheckpointError::from_candle(path, &e))?;
    // A pickle may name one storage under several keys (tied weights); count each name,
    // as loading materialises each name it is asked for.
    let mut by_name: BTreeMap<String, TensorEntry> = BTreeMap::new();
    for info in infos {
        let elements = info.layout.shape().elem_count() as u64;
        by_name.insert(info.name.clone(), TensorEntry { name: info.name, dtype: info.dtype, elements });
    }
    Ok(by_name.into_values().collect())
}

pub(crate) fn candle_dtype(dtype: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match dtype {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        _ => return None,
    })
}

/// Counts the bytes of each tensor as the model takes it, so a progress bar and the
/// `/models` endpoint can show how far a load has come.
struct CountingBackend {
    inner: Box<dyn SimpleBackend>,
    loaded: Arc<AtomicU64>,
}

impl CountingBackend {
    fn count(&self, tensor: candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        if let Ok(t) = &tensor {
            self.loaded.fetch_add((t.elem_count() * t.dtype().size_in_bytes()) as u64, Ordering::Relaxed);
        }
        tensor
    }
}

impl SimpleBackend for CountingBackend {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.count(self.inner.get(s, name, h, dtype, dev))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.count(self.inner.get_unchecked(name, dtype, dev))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_config(dir: &Path, model_type: &str) {
        std::fs::write(dir.join("config.json"), format!(r#"{{"model_type": "{model_type}"}}"#)).unwrap();
    }

    fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), Tensor::zeros(s.clone(), DType::F32, &Device::Cpu).unwrap()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn single_file_inventory_counts_bytes_per_dtype() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "m2m_100");
        write_safetensors(&dir.path().join("model.safetensors"), &[("a", vec![4, 8]), ("b", vec![10])]);
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.arch, Arch::Nllb);
        assert_eq!(ck.tensors.len(), 2);
        assert_eq!(ck.stored_bytes(), 42 * 4);
        assert_eq!(ck.bytes_at(DType::BF16), 42 * 2);
    }

    #[test]
    fn sharded_checkpoint_lists_every_shard_once() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "cohere");
        write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &[("a", vec![3])]);
        write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &[("b", vec![5]), ("c", vec![2])]);
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.arch, Arch::Aya);
        match &ck.files {
            WeightFiles::Safetensors(paths) => assert_eq!(paths.len(), 2),
            other => panic!("expected safetensors, got {other:?}"),
        }
        assert_eq!(ck.stored_bytes(), 10 * 4);
        let loaded = Arc::new(AtomicU64::new(0));
        let vb = ck.var_builder(DType::F32, &Device::Cpu, loaded.clone()).unwrap();
        assert_eq!(vb.get(5, "b").unwrap().dims(), &[5]);
        assert_eq!(loaded.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn missing_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "cohere");
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00001.safetensors"}}"#,
        )
        .unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model-00001-of-00001.safetensors is missing"), "{err}");
    }

    #[test]
    fn truncated_safetensors_is_corrupt_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "m2m_100");
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a", vec![1024])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    /// The header was read when the folder was opened; the file changes before the load
    /// maps it (a download still running, a copy over it): safetensors' own checks refuse
    /// it at the mmap, and the reason is still a sentence naming the file.
    #[test]
    fn a_file_that_changes_before_the_load_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "m2m_100");
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a", vec![1024])]);
        let ck = Checkpoint::open(dir.path()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 151 + 17) as u8).collect();
        for (content, what) in [
            (bytes[..bytes.len() - 100].to_vec(), "truncated"),
            (Vec::new(), "empty (0 bytes)"),
            (bytes[..5].to_vec(), "too short to be a safetensors file"),
            (garbage, "not a safetensors file"),
            (bytes.iter().chain(b"extra").copied().collect(), "bytes its header does not describe"),
        ] {
            std::fs::write(&path, &content).unwrap();
            let err = match ck.var_builder(DType::F32, &Device::Cpu, Arc::new(AtomicU64::new(0))) {
                Err(e) => e,
                Ok(_) => panic!("{} bytes loaded", content.len()),
            };
            let text = err.to_string();
            assert!(matches!(err, CheckpointError::Corrupt { .. }), "{text}");
            assert!(text.starts_with(&format!("{}: corrupt weights file: ", path.display())), "{text}");
            assert!(text.contains(what), "{text:?} does not say {what:?}");
            assert!(text.ends_with("re-download it, or regenerate it with `workload gen-model`"), "{text}");
            assert!(!text.contains("path: ") && !text.contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn unknown_model_type_and_missing_weights_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "llama");
        assert!(Checkpoint::open(dir.path()).unwrap_err().to_string().contains("\"llama\" is not supported"));
        write_config(dir.path(), "cohere");
        assert!(matches!(Checkpoint::open(dir.path()).unwrap_err(), CheckpointError::NoWeights { .. }));
        let missing = dir.path().join("nope");
        assert!(matches!(Checkpoint::open(&missing).unwrap_err(), CheckpointError::NotADirectory { .. }));
    }

    #[test]
    fn pytorch_zip_inventory_is_read_from_the_pickle() {
        // Written by torch.save({'w': arange(12).reshape(3,4), 'w_alias': w,
        // 'b': zeros(5, float16)}): an alias of one storage, as tied weights are saved.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth-small");
        let ck = Checkpoint::open(&dir).unwrap();
        assert!(matches!(ck.files, WeightFiles::Pytorch(_)));
        assert_eq!(ck.tensors.len(), 3);
        assert_eq!(ck.stored_bytes(), 2 * 12 * 4 + 5 * 2);
        let loaded = Arc::new(AtomicU64::new(0));
        let vb = ck.var_builder(DType::F32, &Device::Cpu, loaded.clone()).unwrap();
        let w = vb.get((3, 4), "w_alias").unwrap();
        assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 66.0);
        assert_eq!(loaded.load(Ordering::Relaxed), 48);
    }
}
