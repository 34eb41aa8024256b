//! The companion translation service: NLLB and Aya on candle, served over HTTP,
//! loaded either eagerly (the crash from the bug report) or in the background
//! after a memory-budget check (the fix).

pub mod models;
