//! The companion translation service: NLLB and Aya on candle, served over HTTP,
//! loaded either eagerly (the crash from the bug report) or in the background
//! after a memory-budget check (the fix).

pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod languages;
pub mod loader;
pub mod models;
pub mod preload;
pub mod probe;
pub mod reason;
pub mod registry;
pub mod server;
pub mod shutdown;
pub mod synth;
pub mod translate;
pub mod weights;
