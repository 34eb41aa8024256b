//! Aya (Cohere's `CohereForCausalLM` architecture), matching the Hugging Face checkpoints
//! tensor for tensor.
//!
//! - Aya 23 model card: <https://huggingface.co/CohereForAI/aya-23-8B>; paper "Aya 23: Open
//!   Weight Releases to Further Multilingual Progress", <https://arxiv.org/abs/2405.15032>.
//! - Aya Expanse model card: <https://huggingface.co/CohereForAI/aya-expanse-8b>.
//! - Reference implementation: `transformers/models/cohere/modeling_cohere.py`; the parity
//!   fixtures come from `workload/parity/aya.py`.
//!
//! Where Cohere differs from Llama, each an easy place for a port to go quietly wrong:
//! - LayerNorm, not RMSNorm: mean-subtracted, weight only (no bias), computed in f32.
//! - One `input_layernorm` per layer feeding attention and MLP in parallel:
//!   `h = x + attn(ln(x)) + mlp(ln(x))`.
//! - Rotary embedding on interleaved pairs `(x0, x1), (x2, x3), ...` rather than on the two
//!   halves of the head.
//! - Optional per-head LayerNorm on queries and keys (`use_qk_norm`), weight `[heads, head_dim]`.
//! - LM head tied to the token embedding, logits multiplied by `logit_scale`.

use candle_core::{bail, DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Deserializer};

/// Fields and defaults follow `CohereConfig` in transformers 5.x; unknown keys are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawConfig")]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Only set when config.json carries it; otherwise `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// `"default"` unless the checkpoint asks for a scaled RoPE, which this port rejects.
    pub rope_type: String,
    pub layer_norm_eps: f64,
    pub logit_scale: f64,
    pub use_qk_norm: bool,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Empty when config.json has `null`.
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub hidden_act: String,
}

impl Config {
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id.clone()
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Load refuses what the forward pass would otherwise get silently wrong or panic on.
    fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            bail!("aya: num_attention_heads and num_key_value_heads must be positive");
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "aya: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        let head_dim = self.head_dim();
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            bail!("aya: head_dim must be positive and even for rotary pairs, got {head_dim}");
        }
        if self.head_dim.is_none() && head_dim * self.num_attention_heads != self.hidden_size {
            bail!(
                "aya: hidden_size ({}) is not divisible by num_attention_heads ({})",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.rope_type != "default" {
            bail!(
                "aya: rope_type {:?} is not supported, only \"default\"",
                self.rope_type
            );
        }
        // transformers maps both names to SiLU.
        if self.hidden_act != "silu" && self.hidden_act != "swish" {
            bail!(
                "aya: hidden_act {:?} is not supported, only \"silu\"",
                self.hidden_act
            );
        }
        if self.max_position_embeddings == 0 {
            bail!("aya: max_position_embeddings must be positive");
        }
        Ok(())
    }
}

/// config.json as written, before defaults that depend on other keys are resolved.
#[derive(Deserialize)]
#[serde(default)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    // Aya 23 / Expanse configs (transformers 4.x) carry `rope_theta` at the top level;
    // transformers 5.x writes it inside `rope_parameters`.
    rope_theta: Option<f64>,
    rope_parameters: Option<RawRopeParameters>,
    rope_scaling: Option<RawRopeParameters>,
    layer_norm_eps: f64,
    logit_scale: f64,
    use_qk_norm: bool,
    attention_bias: bool,
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    #[serde(deserialize_with = "one_or_many")]
    eos_token_id: Vec<u32>,
    pad_token_id: Option<u32>,
    hidden_act: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            vocab_size: 256000,
            hidden_size: 8192,
            intermediate_size: 22528,
            num_hidden_layers: 40,
            num_attention_heads: 64,
            num_key_value_heads: None,
            head_dim: None,
            max_position_embeddings: 8192,
            rope_theta: None,
            rope_parameters: None,
            rope_scaling: None,
            layer_norm_eps: 1e-5,
            logit_scale: 0.0625,
            use_qk_norm: false,
            attention_bias: false,
            tie_word_embeddings: true,
            bos_token_id: Some(5),
            eos_token_id: vec![255001],
            pad_token_id: Some(0),
            hidden_act: "silu".to_string(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    // transformers 4.x spelling inside `rope_scaling`.
    #[serde(rename = "type")]
    legacy_type: Option<String>,
}

/// transformers 5.x `CohereConfig.default_theta`; 4.x defaulted to 10000, but every
/// released Aya config states its theta explicitly.
const DEFAULT_ROPE_THETA: f64 = 500000.0;

impl From<RawConfig> for Config {
    fn from(raw: RawConfig) -> Self {
        let params = raw.rope_parameters.as_ref();
        let rope_theta = params
            .and_then(|p| p.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA);
        let rope_type = [params, raw.rope_scaling.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|p| p.rope_type.clone().or_else(|| p.legacy_type.clone()))
            .unwrap_or_else(|| "default".to_string());
        Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            head_dim: raw.head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rope_theta,
            rope_type,
            layer_norm_eps: raw.layer_norm_eps,
            logit_scale: raw.logit_scale,
            use_qk_norm: raw.use_qk_norm,
            attention_bias: raw.attention_bias,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw.eos_token_id,
            pad_token_id: raw.pad_token_id,
            hidden_act: raw.hidden_act,
        }
    }
}

/// Released configs use a bare id (aya-23) or a list; `null` means none.
fn one_or_many<'de, De: Deserializer<'de>>(de: De) -> std::result::Result<Vec<u32>, De::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(de)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}

/// Cohere's LayerNorm. HF upcasts to f32 for the statistics, so bf16 weights still
/// normalise in f32 and round once at the end.
struct LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load<S: Into<candle_core::Shape>>(shape: S, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(shape, "weight")?.to_dtype(DType::F32)?;
        Ok(Self { weight, eps })
    }

    /// Normalises over the last dimension; the weight broadcasts from the right, so the
    /// qk-norm weight `[heads, head_dim]` applies per head to `[b, seq, heads, head_dim]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let centered = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_std = (variance + self.eps)?.sqrt()?.recip()?;
        centered
            .broadcast_mul(&inv_std)?
            .broadcast_mul(&self.weight)?
            .to_dtype(dtype)
    }
}

/// cos/sin tables for every position up to `max_position_embeddings`, `[positions, head_dim/2]`:
/// one angle per interleaved pair, the layout `candle_nn::rotary_emb::rope_i` expects.
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(cfg: &Config, dtype: DType, device: &Device) -> Result<Self> {
        let head_dim = cfg.head_dim();
        let positions = cfg.max_position_embeddings;
        // f32 arithmetic in the same order as HF, so angles at large positions agree.
        let base = cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
            .collect();
        let angles: Vec<f32> = (0..positions)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (positions, head_dim / 2), device)?;
        // HF casts cos/sin to the model dtype before rotating in f32; rounding the same
        // way keeps bf16 runs on the same side of HF's numbers.
        let round = |t: Tensor| t.to_dtype(dtype)?.to_dtype(DType::F32);
        Ok(Self {
            cos: round(angles.cos()?)?,
            sin: round(angles.sin()?)?,
        })
    }

    /// `xs`: `[b, heads, seq, head_dim]` at absolute positions `offset..offset + seq`.
    fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = xs.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::rotary_emb::rope_i(&xs, &cos, &sin)?.to_dtype(dtype)
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    if bias {
        candle_nn::linear(in_dim, out_dim, vb)
    } else {
        candle_nn::linear_no_bias(in_dim, out_dim, vb)
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    qk_norm: Option<(LayerNorm, LayerNorm)>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// Rotated keys and values of every position seen so far, `[b, kv_heads, seq, head_dim]`.
    cache: Option<(Tensor, Tensor)>,
}

impl Attention {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (hidden, heads, kv_heads, head_dim) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let bias = cfg.attention_bias;
        let qk_norm = if cfg.use_qk_norm {
            Some((
                LayerNorm::load((heads, head_dim), cfg.layer_norm_eps, vb.pp("q_norm"))?,
                LayerNorm::load((kv_heads, head_dim), cfg.layer_norm_eps, vb.pp("k_norm"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            q_proj: linear(hidden, heads * head_dim, bias, vb.pp("q_proj"))?,
            k_proj: linear(hidden, kv_heads * head_dim, bias, vb.pp("k_proj"))?,
            v_proj: linear(hidden, kv_heads * head_dim, bias, vb.pp("v_proj"))?,
            o_proj: linear(heads * head_dim, hidden, bias, vb.pp("o_proj"))?,
            qk_norm,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            cache: None,
        })
    }

    fn forward(
        &mut self,
        xs: &Tensor,
        rotary: &Rotary,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, seq, _) = xs.dims3()?;
        let q = self
            .q_proj
            .forward(xs)?
            .reshape((b, seq, self.num_heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(xs)?
            .reshape((b, seq, self.num_kv_heads, self.head_dim))?;
        let v = self
            .v_proj
            .forward(xs)?
            .reshape((b, seq, self.num_kv_heads, self.head_dim))?;
        // HF normalises before the head transpose and before RoPE.
        let (q, k) = match &self.qk_norm {
            Some((q_norm, k_norm)) => (q_norm.forward(&q)?, k_norm.forward(&k)?),
            None => (q, k),
        };
        let q = rotary.apply(&q.transpose(1, 2)?, offset)?;
        let k = rotary.apply(&k.transpose(1, 2)?, offset)?;
        let v = v.transpose(1, 2)?.contiguous()?;

        let (k, v) = match self.cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        self.cache = Some((k.clone(), v.clone()));

        // Query head h reads key/value head h / n_rep, as HF's repeat_kv.
        let n_rep = self.num_heads / self.num_kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, n_rep)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, n_rep)?.contiguous()?;

        let dtype = q.dtype();
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        // Softmax in f32 as HF's eager attention does, whatever the model dtype.
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, seq, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: candle_nn::linear_no_bias(hidden, inter, vb.pp("gate_proj"))?,
            up_proj: candle_nn::linear_no_bias(hidden, inter, vb.pp("up_proj"))?,
            down_proj: candle_nn::linear_no_bias(inter, hidden, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?.silu()?;
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)?)?)
    }
}

struct DecoderLayer {
    input_layernorm: LayerNorm,
    self_attn: Attention,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            input_layernorm: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            self_attn: Attention::load(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &mut self,
        xs: &Tensor,
        rotary: &Rotary,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        // Parallel block: attention and MLP both read the same normed input.
        let normed = self.input_layernorm.forward(xs)?;
        let attn = self.self_attn.forward(&normed, rotary, offset, mask)?;
        let mlp = self.mlp.forward(&normed)?;
        (xs + attn)? + mlp
    }
}

/// Additive mask `[seq, offset + seq]`: position `offset + i` sees keys `0..=offset + i`.
fn causal_mask(seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (seq, total), device)
}

/// First index of the largest value, as `torch.argmax` picks among equals.
fn argmax(logits: &Tensor) -> Result<u32> {
    let values = logits.to_vec1::<f32>()?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            bail!("aya: logits contain NaN at token {i}");
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    match best {
        Some((i, _)) => Ok(i as u32),
        None => bail!("aya: empty logits"),
    }
}

pub struct Model {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    lm_head: Linear,
    rotary: Rotary,
    cfg: Config,
    device: Device,
    /// Number of positions held in every layer's KV cache.
    cached: usize,
}

impl Model {
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let vb_m = vb.pp("model");
        let embed_weight = vb_m
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let embed_tokens = Embedding::new(embed_weight.clone(), cfg.hidden_size);
        // transformers saves tied checkpoints without `lm_head.weight`.
        let lm_head_weight = if cfg.tie_word_embeddings {
            embed_weight
        } else {
            vb.pp("lm_head")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(cfg, vb_m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: LayerNorm::load(cfg.hidden_size, cfg.layer_norm_eps, vb_m.pp("norm"))?,
            lm_head: Linear::new(lm_head_weight, None),
            rotary: Rotary::new(cfg, vb.dtype(), vb.device())?,
            cfg: cfg.clone(),
            device: vb.device().clone(),
            cached: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Logits [seq, vocab] for every position of a full pass from an empty cache (clears the cache first), f32.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Tensor> {
        self.clear_cache();
        let logits = self.extend(ids, false);
        self.clear_cache();
        logits
    }

    /// Greedy decoding with the KV cache: returns only the new tokens (stops after any eos id, inclusive, or after max_new_tokens).
    ///
    /// Also stops once the sequence fills `max_position_embeddings`, the positions the model
    /// was trained on; a prompt that alone exceeds it is an error.
    pub fn generate_greedy(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        eos_ids: &[u32],
    ) -> Result<Vec<u32>> {
        self.clear_cache();
        let result = self.generate_inner(prompt, max_new_tokens, eos_ids);
        // Frees the cache memory between requests.
        self.clear_cache();
        result
    }

    fn generate_inner(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        eos_ids: &[u32],
    ) -> Result<Vec<u32>> {
        let mut new_tokens = Vec::new();
        if prompt.is_empty() {
            bail!("aya: cannot generate from an empty prompt");
        }
        if max_new_tokens == 0 {
            // Still reject a prompt that would not fit, as a real request would.
            self.check_fits(prompt)?;
            return Ok(new_tokens);
        }
        let mut logits = self.extend(prompt, true)?;
        loop {
            let next = argmax(&logits.squeeze(0)?)?;
            new_tokens.push(next);
            if eos_ids.contains(&next)
                || new_tokens.len() >= max_new_tokens
                || self.cached >= self.cfg.max_position_embeddings
            {
                return Ok(new_tokens);
            }
            logits = self.extend(&[next], true)?;
        }
    }

    fn clear_cache(&mut self) {
        for layer in &mut self.layers {
            layer.self_attn.cache = None;
        }
        self.cached = 0;
    }

    fn check_fits(&self, ids: &[u32]) -> Result<()> {
        let total = self.cached + ids.len();
        if total > self.cfg.max_position_embeddings {
            bail!(
                "aya: sequence of {total} tokens exceeds max_position_embeddings ({})",
                self.cfg.max_position_embeddings
            );
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            bail!(
                "aya: token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            );
        }
        Ok(())
    }

    /// Runs `ids` after the cached positions and appends them to the cache. Logits f32,
    /// `[1, vocab]` for the last position when `last_only`, else `[ids.len(), vocab]`.
    fn extend(&mut self, ids: &[u32], last_only: bool) -> Result<Tensor> {
        if ids.is_empty() {
            bail!("aya: empty input");
        }
        self.check_fits(ids)?;
        let result = self.extend_unchecked(ids, last_only);
        // A layer that failed midway leaves the caches of different lengths.
        if result.is_err() {
            self.clear_cache();
        }
        result
    }

    fn extend_unchecked(&mut self, ids: &[u32], last_only: bool) -> Result<Tensor> {
        let offset = self.cached;
        let seq = ids.len();
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut xs = self.embed_tokens.forward(&input)?;
        // A single new token may attend to everything cached, so it needs no mask.
        let mask = if seq > 1 {
            Some(causal_mask(seq, offset, &self.device)?)
        } else {
            None
        };
        for layer in &mut self.layers {
            xs = layer.forward(&xs, &self.rotary, offset, mask.as_ref())?;
        }
        self.cached = offset + seq;
        let xs = if last_only {
            xs.narrow(1, seq - 1, 1)?
        } else {
            xs
        };
        let logits = self.lm_head.forward(&self.norm.forward(&xs)?)?;
        (logits * self.cfg.logit_scale)?
            .to_dtype(DType::F32)?
            .squeeze(0)
    }
}

/// The chat prompt for a translation request in Cohere's format, e.g.
/// "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Translate the following text from English to French:\n{text}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
/// Language names are used as given ("English", "French").
///
/// This is what the aya-23 / aya-expanse chat template renders for one user turn with
/// `add_generation_prompt=True` (no system turn); the template strips the message, so this
/// does too. The text already holds `<BOS_TOKEN>`, so tokenize it without adding special
/// tokens.
pub fn translation_prompt(text: &str, source_language: &str, target_language: &str) -> String {
    let message = format!(
        "Translate the following text from {source_language} to {target_language}:\n{text}"
    );
    format!(
        "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>{}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        message.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(json: serde_json::Value) -> Config {
        serde_json::from_value(json).expect("test config parses")
    }

    fn tiny_config(heads: usize, kv_heads: usize, use_qk_norm: bool) -> Config {
        config(serde_json::json!({
            "vocab_size": 40,
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 32,
            "rope_theta": 10000.0,
            "logit_scale": 0.5,
            "use_qk_norm": use_qk_norm,
            "eos_token_id": 39,
        }))
    }

    /// Deterministic values in [-scale, scale) (xorshift), so failures reproduce.
    fn values(n: usize, seed: &mut u64, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn random(shape: &[usize], seed: &mut u64, scale: f32, offset: f32) -> Tensor {
        let n = shape.iter().product();
        let data = values(n, seed, scale)
            .into_iter()
            .map(|v| v + offset)
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("test tensor")
    }

    /// HF tensor names; norm weights away from 1 so that ignoring them would show.
    fn random_weights(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
        let mut seed = seed.max(1);
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let mut w = HashMap::new();
        // Small embeddings next to large block outputs: with tied embeddings a random model
        // otherwise just repeats its last input token.
        w.insert(
            "model.embed_tokens.weight".into(),
            random(&[cfg.vocab_size, h], &mut seed, 0.2, 0.0),
        );
        w.insert(
            "model.norm.weight".into(),
            random(&[h], &mut seed, 0.3, 1.0),
        );
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut put = |name: &str, shape: &[usize], scale: f32, offset: f32| {
                w.insert(
                    format!("{p}.{name}"),
                    random(shape, &mut seed, scale, offset),
                );
            };
            put("input_layernorm.weight", &[h], 0.3, 1.0);
            put("self_attn.q_proj.weight", &[nh * d, h], 0.5, 0.0);
            put("self_attn.k_proj.weight", &[nkv * d, h], 0.5, 0.0);
            put("self_attn.v_proj.weight", &[nkv * d, h], 0.5, 0.0);
            put("self_attn.o_proj.weight", &[h, nh * d], 0.8, 0.0);
            put("mlp.gate_proj.weight", &[i, h], 0.5, 0.0);
            put("mlp.up_proj.weight", &[i, h], 0.5, 0.0);
            put("mlp.down_proj.weight", &[h, i], 0.8, 0.0);
            if cfg.use_qk_norm {
                put("self_attn.q_norm.weight", &[nh, d], 0.3, 1.0);
                put("self_attn.k_norm.weight", &[nkv, d], 0.3, 1.0);
            }
        }
        w
    }

    fn model_from(cfg: &Config, weights: HashMap<String, Tensor>) -> Model {
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        Model::load(vb, cfg).expect("test model loads")
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).expect("same shape").abs().expect("abs");
        d.flatten_all()
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("max")
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().expect("2-D logits")
    }

    #[test]
    fn layer_norm_subtracts_mean_and_has_no_bias() {
        let norm = LayerNorm {
            weight: Tensor::new(&[0.5f32, 1.0, 2.0, -1.0], &Device::Cpu).unwrap(),
            eps: 1e-5,
        };
        let xs = Tensor::new(&[[[1.0f32, 2.0, 3.0, 6.0]]], &Device::Cpu).unwrap();
        let out = norm
            .forward(&xs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // mean 3, centred [-2, -1, 0, 3], variance 14 / 4.
        let inv_std = 1.0 / (3.5f32 + 1e-5).sqrt();
        let expected = [-2.0 * 0.5 * inv_std, -inv_std, 0.0, -3.0 * inv_std];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
        // An RMSNorm would leave the third element non-zero.
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn qk_norm_weight_is_per_head() {
        // Two heads of dim 2: each head normalises on its own and takes its own weight row.
        let norm = LayerNorm {
            weight: Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap(),
            eps: 0.0,
        };
        let xs = Tensor::new(&[[[[0.0f32, 2.0], [10.0, 4.0]]]], &Device::Cpu).unwrap();
        let out = norm
            .forward(&xs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expected = [-1.0, 2.0, 3.0, -4.0];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?} vs {expected:?}");
        }
    }

    #[test]
    fn rotary_rotates_interleaved_pairs() {
        let mut cfg = tiny_config(4, 4, false);
        cfg.hidden_size = 16;
        cfg.head_dim = Some(4);
        let rotary = Rotary::new(&cfg, DType::F32, &Device::Cpu).unwrap();
        let xs = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        // Position 1: angle 1 for the first pair, 10000^(-2/4) = 0.01 for the second.
        let out = rotary
            .apply(&xs, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (c1, s1, c2, s2) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let interleaved = [
            1.0 * c1 - 2.0 * s1,
            1.0 * s1 + 2.0 * c1,
            3.0 * c2 - 4.0 * s2,
            3.0 * s2 + 4.0 * c2,
        ];
        for (o, e) in out.iter().zip(interleaved) {
            assert!((o - e).abs() < 1e-5, "{out:?} vs {interleaved:?}");
        }
        // Llama's half-split layout pairs (x0, x2) and (x1, x3) instead.
        let half_split = [
            1.0 * c1 - 3.0 * s1,
            2.0 * c2 - 4.0 * s2,
            3.0 * c1 + 1.0 * s1,
            4.0 * c2 + 2.0 * s2,
        ];
        let gap = out
            .iter()
            .zip(half_split)
            .map(|(o, e)| (o - e).abs())
            .fold(0.0, f32::max);
        assert!(gap > 0.5, "interleaved and half-split agree: {out:?}");
        // Position 0 is the identity.
        let at0 = rotary
            .apply(&xs, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(at0, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn eos_token_id_as_int_list_or_null() {
        assert_eq!(
            config(serde_json::json!({"eos_token_id": 255001})).eos_token_ids(),
            vec![255001]
        );
        assert_eq!(
            config(serde_json::json!({"eos_token_id": [255001, 6]})).eos_token_ids(),
            vec![255001, 6]
        );
        assert!(config(serde_json::json!({"eos_token_id": null}))
            .eos_token_ids()
            .is_empty());
        assert!(
            serde_json::from_value::<Config>(serde_json::json!({"eos_token_id": "x"})).is_err()
        );
    }

    #[test]
    fn config_defaults_match_hf_cohere_config() {
        let cfg = config(serde_json::json!({"some_unknown_key": [1, 2]}));
        assert_eq!(cfg.vocab_size, 256000);
        assert_eq!(cfg.hidden_size, 8192);
        assert_eq!(cfg.intermediate_size, 22528);
        assert_eq!(cfg.num_hidden_layers, 40);
        assert_eq!(cfg.num_attention_heads, 64);
        assert_eq!(
            cfg.num_key_value_heads, 64,
            "kv heads default to the attention heads"
        );
        assert_eq!(cfg.head_dim(), 128);
        assert_eq!(cfg.max_position_embeddings, 8192);
        assert_eq!(cfg.rope_theta, 500000.0);
        assert_eq!(cfg.rope_type, "default");
        assert_eq!(cfg.layer_norm_eps, 1e-5);
        assert_eq!(cfg.logit_scale, 0.0625);
        assert!(!cfg.use_qk_norm);
        assert!(!cfg.attention_bias);
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.bos_token_id, Some(5));
        assert_eq!(cfg.eos_token_ids(), vec![255001]);
        assert_eq!(cfg.pad_token_id, Some(0));
        assert_eq!(cfg.hidden_act, "silu");
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn config_reads_aya_23_and_transformers_5_layouts() {
        // Shape of aya-23-8B's config.json (transformers 4.x).
        let aya23 = config(serde_json::json!({
            "architectures": ["CohereForCausalLM"], "bos_token_id": 5, "eos_token_id": 255001,
            "hidden_size": 4096, "intermediate_size": 14336, "logit_scale": 0.0625,
            "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
            "rope_theta": 10000, "rope_scaling": null, "torch_dtype": "float16",
            "use_qk_norm": false, "vocab_size": 256000
        }));
        assert_eq!(aya23.rope_theta, 10000.0);
        assert_eq!(aya23.num_key_value_heads, 8);
        assert_eq!(aya23.head_dim(), 128);
        assert!(aya23.validate().is_ok());
        // transformers 5.x nests theta in rope_parameters.
        let v5 = config(serde_json::json!({
            "rope_parameters": {"rope_theta": 8000000.0, "rope_type": "default"}
        }));
        assert_eq!(v5.rope_theta, 8000000.0);
        assert!(v5.validate().is_ok());
        let scaled = config(serde_json::json!({"rope_scaling": {"type": "linear", "factor": 2.0}}));
        assert_eq!(scaled.rope_type, "linear");
        assert!(scaled.validate().is_err());
    }

    #[test]
    fn invalid_head_counts_are_rejected() {
        let cfg = tiny_config(4, 3, false);
        let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
        let err = Model::load(vb, &cfg)
            .err()
            .expect("4 heads over 3 kv heads must fail");
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }

    /// The KV-cached path (prefill, then one token at a time) must give the logits of a
    /// full pass at every step, and greedy decoding the argmax of those.
    fn check_cached_matches_full(cfg: &Config, seed: u64) {
        let mut model = model_from(cfg, random_weights(cfg, seed));
        let prompt = [5u32, 17, 3, 22, 9];
        let steps = 8;
        let generated = model.generate_greedy(&prompt, steps, &[]).unwrap();
        assert_eq!(generated.len(), steps);

        model.clear_cache();
        let mut cached = model.extend(&prompt, true).unwrap();
        let mut seq = prompt.to_vec();
        for &token in &generated {
            let full = model.forward(&seq).unwrap();
            let last = full.narrow(0, seq.len() - 1, 1).unwrap();
            let diff = max_abs_diff(&cached, &last);
            assert!(
                diff < 1e-5,
                "cached vs full logits differ by {diff} at length {}",
                seq.len()
            );
            assert_eq!(argmax(&last.squeeze(0).unwrap()).unwrap(), token);
            // forward() cleared the cache, so rebuild it up to `seq` before stepping.
            model.clear_cache();
            model.extend(&seq, true).unwrap();
            cached = model.extend(&[token], true).unwrap();
            seq.push(token);
        }
        assert!(
            generated
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1,
            "degenerate test model: {generated:?}"
        );
    }

    #[test]
    fn cached_greedy_matches_full_forward_gqa() {
        check_cached_matches_full(&tiny_config(4, 2, false), 7);
    }

    #[test]
    fn cached_greedy_matches_full_forward_qk_norm() {
        check_cached_matches_full(&tiny_config(4, 2, true), 11);
    }

    #[test]
    fn cached_greedy_matches_full_forward_mha() {
        check_cached_matches_full(&tiny_config(2, 2, false), 13);
    }

    #[test]
    fn gqa_shares_each_kv_head_with_consecutive_query_heads() {
        // A GQA model equals an MHA model whose k/v heads are copies: query head h reads
        // kv head h / 2 (HF's repeat_kv), not h % 2.
        let gqa_cfg = tiny_config(4, 2, true);
        let mha_cfg = tiny_config(4, 4, true);
        let gqa_w = random_weights(&gqa_cfg, 3);
        let mut mha_w = gqa_w.clone();
        let d = gqa_cfg.head_dim();
        for l in 0..gqa_cfg.num_hidden_layers {
            for name in ["k_proj", "v_proj", "k_norm"] {
                let key = format!("model.layers.{l}.self_attn.{name}.weight");
                let w = &gqa_w[&key];
                let heads: Vec<Tensor> = (0..4)
                    .map(|h| {
                        if name == "k_norm" {
                            w.narrow(0, h / 2, 1).unwrap()
                        } else {
                            w.narrow(0, (h / 2) * d, d).unwrap()
                        }
                    })
                    .collect();
                mha_w.insert(key, Tensor::cat(&heads, 0).unwrap());
            }
        }
        let ids = [1u32, 2, 3, 4, 5, 6];
        let gqa = model_from(&gqa_cfg, gqa_w).forward(&ids).unwrap();
        let mha = model_from(&mha_cfg, mha_w).forward(&ids).unwrap();
        let diff = max_abs_diff(&gqa, &mha);
        assert!(diff < 1e-5, "GQA vs expanded MHA differ by {diff}");
    }

    #[test]
    fn prefill_is_causal() {
        let cfg = tiny_config(4, 2, false);
        let mut model = model_from(&cfg, random_weights(&cfg, 5));
        let a = rows(&model.forward(&[3, 1, 4, 1, 5]).unwrap());
        let b = rows(&model.forward(&[3, 1, 4, 9, 2]).unwrap());
        assert_eq!(a[..3], b[..3], "earlier positions saw later tokens");
        assert_ne!(a[3], b[3]);
    }

    #[test]
    fn generation_stops_after_eos_inclusive() {
        let cfg = tiny_config(4, 2, false);
        let mut model = model_from(&cfg, random_weights(&cfg, 7));
        let prompt = [5u32, 17, 3];
        let free = model.generate_greedy(&prompt, 6, &[]).unwrap();
        let eos = free[2];
        let first = free.iter().position(|&t| t == eos).unwrap();
        let stopped = model.generate_greedy(&prompt, 6, &[99, eos]).unwrap();
        assert_eq!(stopped, free[..=first].to_vec());
        assert!(model.generate_greedy(&prompt, 0, &[]).unwrap().is_empty());
    }

    #[test]
    fn too_long_or_invalid_input_is_an_error() {
        let cfg = tiny_config(4, 2, false);
        let max = cfg.max_position_embeddings;
        let mut model = model_from(&cfg, random_weights(&cfg, 5));
        let too_long = vec![1u32; max + 1];
        let err = model.forward(&too_long).unwrap_err().to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
        let err = model
            .generate_greedy(&too_long, 4, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
        assert!(model.generate_greedy(&too_long, 0, &[]).is_err());
        // A prompt that exactly fills the context still yields one token, then stops.
        assert_eq!(
            model
                .generate_greedy(&vec![1u32; max], 4, &[])
                .unwrap()
                .len(),
            1
        );
        assert!(model.forward(&[]).is_err());
        assert!(model.generate_greedy(&[], 4, &[]).is_err());
        let err = model
            .forward(&[1, cfg.vocab_size as u32])
            .unwrap_err()
            .to_string();
        assert!(err.contains("vocabulary"), "{err}");
        // The model is still usable after the errors.
        assert_eq!(model.forward(&[1, 2]).unwrap().dims(), &[2, cfg.vocab_size]);
    }

    #[test]
    fn untied_head_uses_lm_head_and_logit_scale() {
        let tied_cfg = tiny_config(4, 2, false);
        let weights = random_weights(&tied_cfg, 9);
        let mut untied_cfg = tied_cfg.clone();
        untied_cfg.tie_word_embeddings = false;
        untied_cfg.logit_scale = tied_cfg.logit_scale * 0.5;
        // Tied logits are scale * E h; untied ones (scale / 2) * (2E) h must be equal.
        let mut untied_w = weights.clone();
        let doubled = (&weights["model.embed_tokens.weight"] * 2.0).unwrap();
        untied_w.insert("lm_head.weight".into(), doubled);
        let ids = [4u32, 8, 15];
        let tied = model_from(&tied_cfg, weights.clone())
            .forward(&ids)
            .unwrap();
        let untied = model_from(&untied_cfg, untied_w).forward(&ids).unwrap();
        assert!(max_abs_diff(&tied, &untied) < 1e-5);
        // Without lm_head.weight an untied config cannot load.
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        assert!(Model::load(vb, &untied_cfg).is_err());
    }

    #[test]
    fn runs_in_bf16_with_f32_logits() {
        // GPU checkpoints load as bf16: the f32 islands (norms, RoPE, softmax, mask) must
        // meet the bf16 matmuls without dtype errors and stay close to the f32 model.
        let cfg = tiny_config(4, 2, true);
        let weights = random_weights(&cfg, 7);
        let ids = [5u32, 17, 3, 22, 9];
        let f32_logits = model_from(&cfg, weights.clone()).forward(&ids).unwrap();
        let vb = VarBuilder::from_tensors(weights, DType::BF16, &Device::Cpu);
        let mut bf16 = Model::load(vb, &cfg).unwrap();
        let logits = bf16.forward(&ids).unwrap();
        assert_eq!(logits.dtype(), DType::F32);
        let diff = max_abs_diff(&logits, &f32_logits);
        let scale = f32_logits
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 0.05 * scale,
            "bf16 vs f32 logits differ by {diff} (max |logit| {scale})"
        );
        assert_eq!(bf16.generate_greedy(&ids, 4, &[]).unwrap().len(), 4);
    }

    #[test]
    fn translation_prompt_uses_the_aya_chat_template() {
        assert_eq!(
            translation_prompt("Hello, world!  \n", "English", "French"),
            "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Translate the following text from \
             English to French:\nHello, world!<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|>\
             <|CHATBOT_TOKEN|>"
        );
    }
}
