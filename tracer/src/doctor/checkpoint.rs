//! A model folder as `workload` loads it, read from headers only: `config.json`'s
//! `model_type`, then `model.safetensors`, the shards of `model.safetensors.index.json`,
//! or `pytorch_model.bin` (sized from the file: its pickle is not read here). No weight
//! is paged in, so checking a 10 GiB checkpoint costs a few kilobytes of reads.
//!
//! The files are found and the headers read by [`host::checkpoint`], as `workload`
//! finds and reads them before it loads: the doctor's numbers are the workload's. Here
//! stays what only the doctor needs: `--model`, the config, the totals and the fixes.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use host::checkpoint::WeightFiles;
use thiserror::Error;

/// `--model NAME=DIR` (or just `DIR`, named after its folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub dir: PathBuf,
}

pub fn parse_model_spec(s: &str) -> Result<ModelSpec, String> {
    let (name, dir) = match s.split_once('=') {
        Some((name, dir)) => (name.trim().to_string(), dir.trim()),
        None => {
            // A bare word is a name without its folder, not a folder named like it: only a
            // path (it has a slash) may stand alone, named after its last component.
            if !s.contains('/') {
                return Err(format!(
                    "{s:?} is a name without a folder: give the model as NAME=DIR, e.g. --model {s}=/models/{s}, or a folder path such as ./{s}"
                ));
            }
            let name = Path::new(s.trim()).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, s.trim())
        }
    };
    if dir.is_empty() || name.is_empty() {
        return Err(format!("{s:?}: give a model as NAME=DIR, e.g. --model aya=/models/aya"));
    }
    Ok(ModelSpec { name, dir: PathBuf::from(dir) })
}

/// How the weights are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// One file, or `files` shards listed by model.safetensors.index.json.
    Safetensors { files: usize },
    /// A PyTorch pickle: sized from the file, assuming f32 storage.
    Pytorch,
}

/// A checkpoint's tensors, as its headers describe them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub model_type: Option<String>,
    pub format: WeightFormat,
    /// Tensors in the headers (0 for a pickle: not read).
    pub tensors: usize,
    /// Elements over all tensors (for a pickle: file size / 4).
    pub elements: u64,
    /// Bytes as stored.
    pub stored_bytes: u64,
    /// Stored dtypes (`BF16`, `F32`...); `F32?` for a pickle.
    pub dtypes: Vec<String>,
}

impl Inventory {
    /// Bytes once converted to a dtype of `elem_bytes` per element (4: f32, 2: bf16),
    /// which is what loading allocates.
    pub fn bytes_at(&self, elem_bytes: u64) -> u64 {
        self.elements.saturating_mul(elem_bytes)
    }

    /// Whether the sizes are estimates (a pickle).
    pub fn estimated(&self) -> bool {
        self.format == WeightFormat::Pytorch
    }
}

/// Why a model folder cannot be sized; each says what to do.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{0}: no such folder")]
    NoFolder(PathBuf),
    #[error("{0}: not a folder")]
    NotAFolder(PathBuf),
    #[error("{0}: missing")]
    NoConfig(PathBuf),
    #[error("{path}: cannot read: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{0}: no weights (model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin)")]
    NoWeights(PathBuf),
    #[error("{path}: invalid shard index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{path}: corrupt safetensors header: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl CheckpointError {
    pub fn fix(&self) -> String {
        match self {
            CheckpointError::NoFolder(_) | CheckpointError::NotAFolder(_) => {
                "give --model NAME=DIR with the folder that holds config.json and the weights".into()
            }
            CheckpointError::NoConfig(_) | CheckpointError::BadConfig { .. } => {
                "a Hugging Face model folder needs config.json with its model_type (workload gen-model writes one)"
                    .into()
            }
            CheckpointError::Io { .. } => "check the files' permissions (the server must read them too)".into(),
            CheckpointError::NoWeights(_) => {
                "download the weights into the folder, or write synthetic ones with `workload gen-model`".into()
            }
            CheckpointError::BadIndex { .. } | CheckpointError::Corrupt { .. } => {
                "download the checkpoint again (an interrupted download leaves truncated files)".into()
            }
        }
    }
}

/// The shared crate's errors in the doctor's words (the fix is [`CheckpointError::fix`]).
impl From<host::checkpoint::CheckpointError> for CheckpointError {
    fn from(e: host::checkpoint::CheckpointError) -> Self {
        use host::checkpoint::CheckpointError as Host;
        match e {
            Host::NoWeights { dir } => CheckpointError::NoWeights(dir),
            Host::Io { path, source } => CheckpointError::Io { path, reason: source.to_string() },
            Host::BadIndex { path, reason } => CheckpointError::BadIndex { path, reason },
            Host::Corrupt { path, reason } => CheckpointError::Corrupt { path, reason },
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// Reads a model folder's config and weight headers.
pub fn open(dir: &Path) -> Result<Inventory, CheckpointError> {
    if !dir.exists() {
        return Err(CheckpointError::NoFolder(dir.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(CheckpointError::NotAFolder(dir.to_path_buf()));
    }
    let config = dir.join("config.json");
    let text = match std::fs::read(&config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CheckpointError::NoConfig(config)),
        Err(e) => return Err(io(&config)(e)),
    };
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| CheckpointError::BadConfig { path: config.clone(), reason: e.to_string() })?;
    let model_type = json.get("model_type").and_then(|v| v.as_str()).map(str::to_string);

    let files = match host::checkpoint::find_weight_files(dir)? {
        WeightFiles::Safetensors(files) => files,
        WeightFiles::Pytorch(pickle) => {
            let size = std::fs::metadata(&pickle).map_err(io(&pickle))?.len();
            return Ok(Inventory {
                model_type,
                format: WeightFormat::Pytorch,
                tensors: 0,
                elements: size / 4,
                stored_bytes: size,
                dtypes: vec!["F32?".into()],
            });
        }
    };
    let mut inv = Inventory {
        model_type,
        format: WeightFormat::Safetensors { files: files.len() },
        tensors: 0,
        elements: 0,
        stored_bytes: 0,
        dtypes: Vec::new(),
    };
    let mut dtypes = BTreeSet::new();
    for f in &files {
        for t in host::checkpoint::read_tensors(f)? {
            inv.tensors += 1;
            inv.elements += t.elements();
            inv.stored_bytes += t.bytes;
            dtypes.insert(t.dtype.to_string());
        }
    }
    inv.dtypes = dtypes.into_iter().collect();
    Ok(inv)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use safetensors::{tensor::TensorView, Dtype};

    /// Writes a safetensors file with zero-filled tensors of `(name, dtype, shape)`.
    pub(crate) fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, &[usize])]) {
        let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, d, s)| {
                let bytes = s.iter().product::<usize>() * d.bitsize() / 8;
                (n.to_string(), *d, s.to_vec(), vec![0u8; bytes])
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> =
            data.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn folder(model_type: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), format!(r#"{{"model_type": "{model_type}"}}"#)).unwrap();
        dir
    }

    #[test]
    fn model_specs_parse_with_and_without_a_name() {
        assert_eq!(
            parse_model_spec("aya=/models/aya").unwrap(),
            ModelSpec { name: "aya".into(), dir: "/models/aya".into() }
        );
        assert_eq!(parse_model_spec("/models/nllb/").unwrap().name, "nllb");
        assert!(parse_model_spec("aya=").is_err());
        assert!(parse_model_spec("=/x").is_err());
        assert!(parse_model_spec("").is_err());
        // Issue 14: `--model x` was read as a model named x in folder x.
        let e = parse_model_spec("x").unwrap_err();
        assert!(e.contains("NAME=DIR") && e.contains("--model x=/models/x"), "{e}");
        assert_eq!(parse_model_spec("./x").unwrap().name, "x");
    }

    #[test]
    fn single_file_counts_elements_and_stored_bytes() {
        let dir = folder("m2m_100");
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &[("a", Dtype::F32, &[4, 8]), ("b", Dtype::BF16, &[10]), ("c", Dtype::F32, &[3])],
        );
        let inv = open(dir.path()).unwrap();
        assert_eq!(inv.model_type.as_deref(), Some("m2m_100"));
        assert_eq!(inv.format, WeightFormat::Safetensors { files: 1 });
        assert_eq!((inv.tensors, inv.elements), (3, 45));
        assert_eq!(inv.stored_bytes, 35 * 4 + 10 * 2);
        assert_eq!((inv.bytes_at(4), inv.bytes_at(2)), (180, 90));
        assert_eq!(inv.dtypes, vec!["BF16".to_string(), "F32".to_string()]);
        assert!(!inv.estimated());
    }

    #[test]
    fn shards_are_read_once_each_and_a_missing_shard_is_named() {
        let dir = folder("cohere");
        write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &[("a", Dtype::BF16, &[3])]);
        write_safetensors(
            &dir.path().join("model-00002-of-00002.safetensors"),
            &[("b", Dtype::BF16, &[5]), ("c", Dtype::BF16, &[2])],
        );
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
        let inv = open(dir.path()).unwrap();
        assert_eq!(inv.format, WeightFormat::Safetensors { files: 2 });
        assert_eq!((inv.tensors, inv.elements, inv.stored_bytes), (3, 10, 20));

        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::BadIndex { .. }), "{err}");
        assert!(err.to_string().contains("model-00002-of-00002.safetensors is missing"), "{err}");
        std::fs::write(dir.path().join("model.safetensors.index.json"), r#"{"weight_map": {"a": "../x"}}"#).unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::BadIndex { .. })));
    }

    #[test]
    fn a_pickle_is_sized_from_its_file_as_f32() {
        let dir = folder("m2m_100");
        std::fs::write(dir.path().join("pytorch_model.bin"), vec![0u8; 4000]).unwrap();
        let inv = open(dir.path()).unwrap();
        assert!(inv.estimated());
        assert_eq!((inv.elements, inv.bytes_at(2), inv.stored_bytes), (1000, 2000, 4000));
    }

    #[test]
    fn a_truncated_file_is_corrupt_not_a_panic() {
        let dir = folder("cohere");
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a", Dtype::F32, &[1000])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::Corrupt { .. })));
        std::fs::write(&path, b"abc").unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::Corrupt { .. })));
        std::fs::write(&path, b"\x04\x00\x00\x00\x00\x00\x00\x00nope").unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn folders_without_config_or_weights_say_what_is_missing() {
        let err = open(Path::new("/nonexistent/model")).unwrap_err();
        assert!(matches!(err, CheckpointError::NoFolder(_)));
        assert!(err.fix().contains("NAME=DIR"));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::NoConfig(_))));
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert!(matches!(open(dir.path()), Err(CheckpointError::BadConfig { .. })));
        let dir = folder("cohere");
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::NoWeights(_)));
        assert!(err.fix().contains("gen-model"));
        let file = dir.path().join("config.json");
        assert!(matches!(open(&file), Err(CheckpointError::NotAFolder(_))));
    }
}
