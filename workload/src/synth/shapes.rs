//! The shapes of synthetic checkpoints: presets, the config.json each writes, and the
//! full list of tensors with their Hugging Face names.

use serde_json::json;

use crate::checkpoint::Arch;

/// Hyper-parameters that decide every tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    /// NLLB: encoder layers (the decoder has as many); Aya: decoder layers.
    pub layers: usize,
    pub heads: usize,
    /// Aya's grouped-query key/value heads; NLLB uses `heads`.
    pub kv_heads: usize,
    /// FFN width (NLLB fc1) or MLP intermediate size (Aya).
    pub ffn: usize,
    pub max_positions: usize,
}

/// `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Seconds to generate and load; for tests.
    Tiny,
    /// Tens of MB; translations run fast on CPU.
    Small,
    /// The real shapes: NLLB-200-distilled-600M (2.4 GB at f32), aya-23-8B (32 GB at f32).
    Full,
}

pub fn preset_dims(arch: Arch, preset: Preset) -> Dims {
    match (arch, preset) {
        (Arch::Nllb, Preset::Tiny) => Dims { vocab: 512, hidden: 64, layers: 2, heads: 4, kv_heads: 4, ffn: 128, max_positions: 128 },
        (Arch::Nllb, Preset::Small) => Dims { vocab: 16384, hidden: 256, layers: 3, heads: 4, kv_heads: 4, ffn: 1024, max_positions: 256 },
        (Arch::Nllb, Preset::Full) => {
            Dims { vocab: 256_206, hidden: 1024, layers: 12, heads: 16, kv_heads: 16, ffn: 4096, max_positions: 1024 }
        }
        (Arch::Aya, Preset::Tiny) => Dims { vocab: 512, hidden: 64, layers: 2, heads: 4, kv_heads: 2, ffn: 128, max_positions: 256 },
        (Arch::Aya, Preset::Small) => Dims { vocab: 16384, hidden: 256, layers: 4, heads: 8, kv_heads: 2, ffn: 704, max_positions: 512 },
        (Arch::Aya, Preset::Full) => {
            Dims { vocab: 256_000, hidden: 4096, layers: 32, heads: 32, kv_heads: 8, ffn: 14336, max_positions: 8192 }
        }
    }
}

/// A tensor to write: name, shape, and how to fill it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub fill: Fill,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Uniform noise with this standard deviation (Hugging Face initialises with 0.02).
    Random(f32),
    Ones,
    Zeros,
}

impl TensorSpec {
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

fn push(out: &mut Vec<TensorSpec>, name: String, shape: Vec<usize>, fill: Fill) {
    out.push(TensorSpec { name, shape, fill });
}

/// Every tensor of the checkpoint, named as transformers saves it (tied heads saved once).
pub fn tensors(arch: Arch, d: &Dims) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let w = Fill::Random(0.02);
    match arch {
        Arch::Nllb => {
            push(&mut out, "model.shared.weight".into(), vec![d.vocab, d.hidden], w);
            let linear = |out: &mut Vec<TensorSpec>, p: &str, o: usize, i: usize| {
                push(out, format!("{p}.weight"), vec![o, i], w);
                push(out, format!("{p}.bias"), vec![o], Fill::Zeros);
            };
            let norm = |out: &mut Vec<TensorSpec>, p: &str| {
                push(out, format!("{p}.weight"), vec![d.hidden], Fill::Ones);
                push(out, format!("{p}.bias"), vec![d.hidden], Fill::Zeros);
            };
            for stack in ["encoder", "decoder"] {
                for i in 0..d.layers {
                    let l = format!("model.{stack}.layers.{i}");
                    let mut attention = vec!["self_attn"];
                    if stack == "decoder" {
                        attention.push("encoder_attn");
                    }
                    for attn in attention {
                        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                            linear(&mut out, &format!("{l}.{attn}.{proj}"), d.hidden, d.hidden);
                        }
                        norm(&mut out, &format!("{l}.{attn}_layer_norm"));
                    }
                    linear(&mut out, &format!("{l}.fc1"), d.ffn, d.hidden);
                    linear(&mut out, &format!("{l}.fc2"), d.hidden, d.ffn);
                    norm(&mut out, &format!("{l}.final_layer_norm"));
                }
                norm(&mut out, &format!("model.{stack}.layer_norm"));
            }
        }
        Arch::Aya => {
            let head_dim = d.hidden / d.heads;
            push(&mut out, "model.embed_tokens.weight".into(), vec![d.vocab, d.hidden], w);
            for i in 0..d.layers {
                let l = format!("model.layers.{i}");
                push(&mut out, format!("{l}.input_layernorm.weight"), vec![d.hidden], Fill::Ones);
                push(&mut out, format!("{l}.self_attn.q_proj.weight"), vec![d.heads * head_dim, d.hidden], w);
                push(&mut out, format!("{l}.self_attn.k_proj.weight"), vec![d.kv_heads * head_dim, d.hidden], w);
                push(&mut out, format!("{l}.self_attn.v_proj.weight"), vec![d.kv_heads * head_dim, d.hidden], w);
                push(&mut out, format!("{l}.self_attn.o_proj.weight"), vec![d.hidden, d.heads * head_dim], w);
                push(&mut out, format!("{l}.mlp.gate_proj.weight"), vec![d.ffn, d.hidden], w);
                push(&mut out, format!("{l}.mlp.up_proj.weight"), vec![d.ffn, d.hidden], w);
                push(&mut out, format!("{l}.mlp.down_proj.weight"), vec![d.hidden, d.ffn], w);
            }
            push(&mut out, "model.norm.weight".into(), vec![d.hidden], Fill::Ones);
        }
    }
    out
}

pub fn total_elements(arch: Arch, d: &Dims) -> u64 {
    tensors(arch, d).iter().map(TensorSpec::elements).sum()
}

/// The special token ids of a synthetic checkpoint, shared by config.json and tokenizer.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u32,
    pub pad: u32,
    pub eos: u32,
}

pub fn special_ids(arch: Arch, d: &Dims) -> SpecialIds {
    match arch {
        // As NLLB: <s>=0 <pad>=1 </s>=2 <unk>=3.
        Arch::Nllb => SpecialIds { bos: 0, pad: 1, eos: 2 },
        // As aya-23: <PAD>=0, <BOS_TOKEN>=5, and the end-of-turn token near the top of the
        // vocabulary ends a chat answer.
        Arch::Aya => SpecialIds { bos: 5, pad: 0, eos: super::tokenizer::aya_turn_token_ids(d.vocab).end_of_turn },
    }
}

/// config.json in the checkpoint's own format, as transformers writes it.
pub fn config_json(arch: Arch, d: &Dims, storage_dtype: &str) -> serde_json::Value {
    let ids = special_ids(arch, d);
    match arch {
        Arch::Nllb => json!({
            "architectures": ["M2M100ForConditionalGeneration"],
            "model_type": "m2m_100",
            "vocab_size": d.vocab,
            "d_model": d.hidden,
            "encoder_layers": d.layers,
            "decoder_layers": d.layers,
            "encoder_attention_heads": d.heads,
            "decoder_attention_heads": d.heads,
            "encoder_ffn_dim": d.ffn,
            "decoder_ffn_dim": d.ffn,
            "max_position_embeddings": d.max_positions,
            "activation_function": "relu",
            "scale_embedding": true,
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.0,
            "encoder_layerdrop": 0,
            "decoder_layerdrop": 0,
            "init_std": 0.02,
            "is_encoder_decoder": true,
            "use_cache": true,
            "tie_word_embeddings": true,
            "bos_token_id": ids.bos,
            "pad_token_id": ids.pad,
            "eos_token_id": ids.eos,
            "decoder_start_token_id": ids.eos,
            "torch_dtype": storage_dtype,
            "workload_synthetic": true,
        }),
        Arch::Aya => json!({
            "architectures": ["CohereForCausalLM"],
            "model_type": "cohere",
            "vocab_size": d.vocab,
            "hidden_size": d.hidden,
            "intermediate_size": d.ffn,
            "num_hidden_layers": d.layers,
            "num_attention_heads": d.heads,
            "num_key_value_heads": d.kv_heads,
            "max_position_embeddings": d.max_positions,
            "rope_theta": 10000.0,
            "layer_norm_eps": 1e-5,
            "logit_scale": 0.0625,
            "use_qk_norm": false,
            "attention_bias": false,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "tie_word_embeddings": true,
            "use_cache": true,
            "bos_token_id": ids.bos,
            "pad_token_id": ids.pad,
            "eos_token_id": ids.eos,
            "torch_dtype": storage_dtype,
            "workload_synthetic": true,
        }),
    }
}

/// Dims whose checkpoint takes about `target_bytes` at `bytes_per_element`: the small
/// preset widened step by step, then the vocabulary grown to fill the remainder, so the
/// result lands within one embedding row of the target.
pub fn dims_for_bytes(arch: Arch, target_bytes: u64, bytes_per_element: u64) -> Result<Dims, String> {
    let base = preset_dims(arch, Preset::Small);
    let min_vocab = super::tokenizer::min_vocab(arch);
    let at = |width: usize| -> Dims {
        let hidden = 64 * width;
        let ffn = match arch {
            Arch::Nllb => 4 * hidden,
            Arch::Aya => (hidden * 11 / 4).div_ceil(64) * 64,
        };
        Dims { vocab: min_vocab, hidden, ffn, ..base.clone() }
    };
    let bytes = |d: &Dims| total_elements(arch, d) * bytes_per_element;
    if bytes(&at(1)) > target_bytes {
        return Err(format!(
            "--bytes {target_bytes} is too small: the smallest {} checkpoint this generator makes is {} bytes",
            arch.name(),
            bytes(&at(1))
        ));
    }
    let mut width = 1;
    while bytes(&at(width + 1)) <= target_bytes && width < 1024 {
        width += 1;
    }
    let mut dims = at(width);
    let row_bytes = dims.hidden as u64 * bytes_per_element;
    dims.vocab += ((target_bytes - bytes(&dims)) / row_bytes) as usize;
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_nllb_has_the_600m_parameter_count() {
        let n = total_elements(Arch::Nllb, &preset_dims(Arch::Nllb, Preset::Full));
        // facebook/nllb-200-distilled-600M: 615,073,792 parameters with the tied head once.
        assert!((600_000_000..630_000_000).contains(&n), "{n}");
    }

    #[test]
    fn full_aya_has_the_8b_parameter_count() {
        let n = total_elements(Arch::Aya, &preset_dims(Arch::Aya, Preset::Full));
        // CohereForAI/aya-23-8B: 8.03 billion parameters.
        assert!((7_900_000_000..8_100_000_000).contains(&n), "{n}");
    }

    #[test]
    fn nllb_names_follow_transformers() {
        let names: Vec<String> = tensors(Arch::Nllb, &preset_dims(Arch::Nllb, Preset::Tiny)).into_iter().map(|t| t.name).collect();
        for expected in [
            "model.shared.weight",
            "model.encoder.layers.1.self_attn.out_proj.bias",
            "model.decoder.layers.0.encoder_attn_layer_norm.weight",
            "model.decoder.layers.1.fc2.weight",
            "model.encoder.layer_norm.bias",
            "model.decoder.layer_norm.weight",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        assert!(!names.iter().any(|n| n.contains("encoder_attn") && n.contains("encoder.layers")));
    }

    #[test]
    fn aya_uses_grouped_kv_heads() {
        let d = preset_dims(Arch::Aya, Preset::Tiny);
        let t = tensors(Arch::Aya, &d);
        let k = t.iter().find(|t| t.name == "model.layers.0.self_attn.k_proj.weight").unwrap();
        assert_eq!(k.shape, vec![d.kv_heads * d.hidden / d.heads, d.hidden]);
    }

    #[test]
    fn bytes_target_is_met_within_one_embedding_row() {
        for arch in [Arch::Nllb, Arch::Aya] {
            for target in [50_000_000u64, 400_000_000, 1_500_000_000] {
                let d = dims_for_bytes(arch, target, 4).unwrap();
                let got = total_elements(arch, &d) * 4;
                assert!(got <= target && target - got < (d.hidden * 4) as u64, "{arch:?} {target} -> {got}");
            }
        }
        assert!(dims_for_bytes(Arch::Nllb, 1000, 4).unwrap_err().contains("too small"));
    }
}
