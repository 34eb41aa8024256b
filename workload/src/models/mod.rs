//! Model implementations matching the Hugging Face checkpoints tensor for tensor.

pub mod aya;
pub mod nllb;
