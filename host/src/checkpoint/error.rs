//! Why a checkpoint's weights cannot be found or read: each names the file and says
//! what to do. The tracer's doctor and the workload wrap these in their own errors, to
//! keep the messages their users and tests know.
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error(
        "{dir}: no weights (model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin): \
         download them into the folder"
    )]
    NoWeights { dir: PathBuf },
    #[error("{path}: cannot read: {source}; check that it exists and that this user may read it")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index is not JSON, has no usable `weight_map`, or names a shard that is
    /// missing or outside the folder (the reason names it).
    #[error("{path}: invalid shard index: {reason}; download the index and its shards again")]
    BadIndex { path: PathBuf, reason: String },
    /// The header is not one the file can have: truncated, too long, or not safetensors.
    #[error(
        "{path}: corrupt safetensors header: {reason}; download the file again \
         (an interrupted download leaves it truncated)"
    )]
    Corrupt { path: PathBuf, reason: String },
}

impl CheckpointError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io { path: path.to_path_buf(), source }
    }
}
