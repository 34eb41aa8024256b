//! NLLB-200 (M2M100ForConditionalGeneration).
