//! A model folder's weights as their headers describe them: which files hold them and
//! which tensors (name, dtype, shape, bytes) are in each safetensors file.
//!
//! The tracer's doctor says whether a checkpoint fits before it is loaded, the workload
//! checks its budget with the same numbers and then loads: both find the files and read
//! the headers here, with plain reads of a few kilobytes (no mmap: a 10 GiB checkpoint
//! costs no page cache and no address space to size). A PyTorch pickle's tensors need a
//! pickle reader (the workload has candle's): only its file is found here.
//!
//! [`files`] finds the weight files (a single file, the shards of an index, or a pickle),
//! [`header`] reads and checks a safetensors header, [`error`] says what is wrong and how
//! to fix it.
pub mod error;
pub mod files;
pub mod header;

pub use safetensors::Dtype;

pub use self::{
    error::CheckpointError,
    files::{find_weight_files, shard_names, shards_from_index, WeightFiles, INDEX, PYTORCH, SINGLE},
    header::{header_len, parse_header, read_header, read_tensors, TensorHeader, MAX_HEADER},
};
