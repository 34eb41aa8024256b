//! How much memory loading a checkpoint needs: the workload refuses a load over its budget
//! with this figure, and `tracer doctor` predicts the same refusal with it.

/// Extra room a load needs beyond its weights: activations, the KV cache of the first
/// requests and allocator slack. The workload reads each tensor straight into the buffer
/// it keeps (no mapping, no second copy): a full NLLB load peaks at 1.03 times its
/// weights, the process itself included (`cargo xtask bench`), so 5% is the measured
/// factor with room to spare, and a model that needs 95% of what is free still loads.
pub const WORKING_MEMORY_FRACTION: f64 = 0.05;

/// Bytes a load of `weights` bytes needs, working memory included.
pub fn needed_for(weights: u64) -> u64 {
    weights + (weights as f64 * WORKING_MEMORY_FRACTION) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_needs_its_weights_and_a_twentieth_more() {
        assert_eq!(needed_for(1000), 1050);
        assert_eq!(needed_for(0), 0);
        assert_eq!(needed_for(2 << 30), (2u64 << 30) + (2u64 << 30) / 20);
    }
}
