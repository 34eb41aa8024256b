//! The kernel programs are the `tracer` binary target of this crate (`src/main.rs`), built
//! for the bpf target by aya-build. This empty library lets `tracer` depend on the crate
//! so that cargo rebuilds the programs when they change.
#![no_std]
