//! What `tracer` and `workload` both read from the machine they run on, written once.
//!
//! The tracer explains an OOM kill with the memory cgroup limit and the checkpoint that
//! was loading; the workload refuses a load that would not fit that same limit. Both must
//! agree on where the limit is and on how big a checkpoint is, so both read it here:
//!
//! - [`memcg`]: the memory cgroup of a process (v1, v2 or hybrid), its usage and limit,
//!   and the tightest limit on its path to the root.
//! - [`checkpoint`]: a model folder's weight files and their tensors, from the headers
//!   only (no weight is paged in).
//! - [`bytes`]: sizes as users type them and as the workload prints them.
//! - [`load`]: what loading a checkpoint needs beyond its weights.
//!
//! Parsing takes text, so the unit tests feed it fixtures; the functions that read /proc,
//! /sys or a model folder are thin wrappers around it.
pub mod bytes;
pub mod checkpoint;
pub mod load;
pub mod memcg;
