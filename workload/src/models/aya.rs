//! Aya (CohereForCausalLM).
