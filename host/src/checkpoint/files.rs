//! Which files hold a model folder's weights, in the order loaders look for them:
//! `model.safetensors`, the shards named by `model.safetensors.index.json`, then
//! `pytorch_model.bin`.
//!
//! A shard is taken only as a plain file name in the folder: an index is downloaded
//! data, and `../` in it must not make a loader read elsewhere.
use std::{
    collections::BTreeSet,
    path::{Component, Path, PathBuf},
};

use super::error::CheckpointError;

/// The single-file safetensors checkpoint.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded safetensors checkpoint (`weight_map`: tensor -> shard).
pub const INDEX: &str = "model.safetensors.index.json";
/// A PyTorch zip pickle, as NLLB's main branch ships.
pub const PYTORCH: &str = "pytorch_model.bin";

/// How the weights are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One or more safetensors files (several when sharded with an index), sorted.
    Safetensors(Vec<PathBuf>),
    /// A PyTorch zip pickle.
    Pytorch(PathBuf),
}

/// The weight files in `dir`: errors when none is there, or when the index is invalid or
/// one of its shards is missing.
pub fn find_weight_files(dir: &Path) -> Result<WeightFiles, CheckpointError> {
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(WeightFiles::Safetensors(vec![single]));
    }
    let index = dir.join(INDEX);
    if index.is_file() {
        return Ok(WeightFiles::Safetensors(shards_from_index(dir, &index)?));
    }
    let pth = dir.join(PYTORCH);
    if pth.is_file() {
        return Ok(WeightFiles::Pytorch(pth));
    }
    Err(CheckpointError::NoWeights { dir: dir.to_path_buf() })
}

/// The shard files of `index` in `dir`, each once, sorted, all present.
pub fn shards_from_index(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let bad = |reason: String| CheckpointError::BadIndex { path: index.to_path_buf(), reason };
    let text = std::fs::read(index).map_err(CheckpointError::io(index))?;
    let paths: Vec<PathBuf> = shard_names(&text).map_err(bad)?.iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(bad(format!("shard {} is missing", missing.display())));
    }
    Ok(paths)
}

/// The shard names an index's JSON maps its tensors to, each once, sorted; the reason
/// when it has none or one is not a file name.
pub fn shard_names(index_json: &[u8]) -> Result<Vec<String>, String> {
    let json: serde_json::Value = serde_json::from_slice(index_json).map_err(|e| e.to_string())?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or("no \"weight_map\" object")?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| format!("{tensor}: the shard name is not a string"))?;
        if !is_file_name(file) {
            return Err(format!("{tensor}: shard {file:?} is not a file in the model folder"));
        }
        names.insert(file.to_string());
    }
    if names.is_empty() {
        return Err("the weight map is empty".into());
    }
    Ok(names.into_iter().collect())
}

/// One plain component: no folder, no `..`, not absolute.
fn is_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None)) && !name.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_unique_sorted_file_names() {
        let index = br#"{"metadata": {"total_size": 20}, "weight_map": {"c": "m-2.safetensors", "a": "m-1.safetensors", "b": "m-2.safetensors"}}"#;
        assert_eq!(shard_names(index).unwrap(), ["m-1.safetensors", "m-2.safetensors"]);
        for (index, reason) in [
            (&br#"{"weight_map": {"a": "../x"}}"#[..], r#"a: shard "../x" is not a file in the model folder"#),
            (br#"{"weight_map": {"a": "/etc/passwd"}}"#, r#"a: shard "/etc/passwd" is not a file in the model folder"#),
            (br#"{"weight_map": {"a": "sub/x"}}"#, r#"a: shard "sub/x" is not a file in the model folder"#),
            (br#"{"weight_map": {"a": ".."}}"#, r#"a: shard ".." is not a file in the model folder"#),
            (br#"{"weight_map": {"a": 3}}"#, "a: the shard name is not a string"),
            (br#"{"weight_map": {}}"#, "the weight map is empty"),
            (br#"{"weights": {}}"#, "no \"weight_map\" object"),
        ] {
            assert_eq!(shard_names(index).unwrap_err(), reason);
        }
        assert!(shard_names(b"{not json").is_err());
    }

    #[test]
    fn files_are_found_in_loader_order_and_a_missing_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_weight_files(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::NoWeights { .. }), "{err}");
        assert!(err.to_string().contains("download them"), "{err}");

        std::fs::write(dir.path().join(PYTORCH), b"pickle").unwrap();
        assert_eq!(find_weight_files(dir.path()).unwrap(), WeightFiles::Pytorch(dir.path().join(PYTORCH)));

        std::fs::write(dir.path().join(INDEX), r#"{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}"#)
            .unwrap();
        std::fs::write(dir.path().join("m-1.safetensors"), b"").unwrap();
        let err = find_weight_files(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::BadIndex { .. }), "{err}");
        let shard = dir.path().join("m-2.safetensors");
        assert!(err.to_string().contains(&format!("shard {} is missing", shard.display())), "{err}");
        assert!(err.to_string().starts_with(&dir.path().join(INDEX).display().to_string()), "{err}");

        std::fs::write(&shard, b"").unwrap();
        assert_eq!(
            find_weight_files(dir.path()).unwrap(),
            WeightFiles::Safetensors(vec![dir.path().join("m-1.safetensors"), shard])
        );

        std::fs::write(dir.path().join(SINGLE), b"").unwrap();
        assert_eq!(find_weight_files(dir.path()).unwrap(), WeightFiles::Safetensors(vec![dir.path().join(SINGLE)]));
    }

    #[test]
    fn an_unreadable_index_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the index should be: is_file() says no, so it is not taken.
        std::fs::create_dir(dir.path().join(INDEX)).unwrap();
        assert!(matches!(find_weight_files(dir.path()), Err(CheckpointError::NoWeights { .. })));
        let err = shards_from_index(dir.path(), &dir.path().join(INDEX)).unwrap_err();
        assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
        assert!(err.to_string().contains(INDEX), "{err}");
    }
}
