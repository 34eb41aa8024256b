//! NLLB-200 (Hugging Face `M2M100ForConditionalGeneration`) on candle.
//!
//! - Paper: "No Language Left Behind: Scaling Human-Centered Machine Translation",
//!   <https://arxiv.org/abs/2207.04672>
//! - Reference implementation: `transformers/models/m2m_100/modeling_m2m_100.py`,
//!   <https://github.com/huggingface/transformers/tree/main/src/transformers/models/m2m_100>
//!
//! Tensor names follow the Hugging Face checkpoints one for one so that `model.safetensors` files
//! load unchanged. Only batch size 1 is supported: the service translates one request at a time.
//! Source ids are not masked: like a Hugging Face call without an `attention_mask`, every source
//! token is attended to, so callers should not pad the source.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Activation, Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Deserializer};

/// Hugging Face hard-codes `nn.LayerNorm(d)`, i.e. PyTorch's default eps; it is not a config key.
const LAYER_NORM_EPS: f64 = 1e-5;

/// `M2M100SinusoidalPositionalEmbedding` builds `max_position_embeddings + 2` rows, because
/// positions start after the padding index (fairseq's convention).
const POSITION_OFFSET: usize = 2;

/// The checkpoint keys the single shared embedding matrix may be stored under. Recent
/// `transformers` versions save only `model.shared.weight`; older exports and conversions keep one
/// of the tied aliases instead.
const TIED_EMBEDDING_NAMES: [&str; 4] = [
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
];

/// The subset of the checkpoint's `config.json` (an `M2M100Config`) that the model needs. Missing
/// keys take `M2M100Config`'s defaults; unknown keys are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    #[serde(default = "default_layers")]
    pub encoder_layers: usize,
    #[serde(default = "default_layers")]
    pub decoder_layers: usize,
    #[serde(default = "default_attention_heads")]
    pub encoder_attention_heads: usize,
    #[serde(default = "default_attention_heads")]
    pub decoder_attention_heads: usize,
    #[serde(default = "default_ffn_dim")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "default_ffn_dim")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_pad_token_id")]
    pub pad_token_id: u32,
    /// Hugging Face also allows a list here; a one-element list is accepted.
    #[serde(
        default = "default_eos_token_id",
        deserialize_with = "deserialize_single_token_id"
    )]
    pub eos_token_id: u32,
    #[serde(default = "default_bos_token_id")]
    pub bos_token_id: u32,
    #[serde(default = "default_decoder_start_token_id")]
    pub decoder_start_token_id: u32,
    #[serde(default = "default_true")]
    pub scale_embedding: bool,
    #[serde(default = "default_activation_function")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_vocab_size() -> usize {
    128_112
}
fn default_d_model() -> usize {
    1024
}
fn default_layers() -> usize {
    12
}
fn default_attention_heads() -> usize {
    16
}
fn default_ffn_dim() -> usize {
    4096
}
fn default_max_position_embeddings() -> usize {
    1024
}
fn default_pad_token_id() -> u32 {
    1
}
fn default_eos_token_id() -> u32 {
    2
}
fn default_bos_token_id() -> u32 {
    0
}
fn default_decoder_start_token_id() -> u32 {
    2
}
fn default_true() -> bool {
    true
}
fn default_activation_function() -> String {
    "relu".to_string()
}

fn deserialize_single_token_id<'de, De: Deserializer<'de>>(de: De) -> Result<u32, De::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    match OneOrMany::deserialize(de)? {
        OneOrMany::One(id) => Ok(id),
        OneOrMany::Many(ids) if ids.len() == 1 => Ok(ids[0]),
        OneOrMany::Many(ids) => Err(serde::de::Error::custom(format!(
            "eos_token_id: exactly one id is supported, got {ids:?}"
        ))),
    }
}

impl Config {
    fn activation(&self) -> candle_core::Result<Activation> {
        // Names as in transformers' ACT2FN; "gelu" there is the exact (erf) GELU.
        match self.activation_function.as_str() {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" => Ok(Activation::NewGelu),
            "gelu_pytorch_tanh" => Ok(Activation::GeluPytorchTanh),
            other => candle_core::bail!(
                "NLLB: unsupported activation_function {other:?} (supported: \"relu\", \"gelu\", \
                 \"gelu_new\", \"gelu_pytorch_tanh\")"
            ),
        }
    }
}

/// The sinusoidal table exactly as `M2M100SinusoidalPositionalEmbedding.get_embedding` builds it:
/// all sines first, then all cosines (not interleaved), computed in f32 like torch does, with a
/// zero column for odd widths and the padding row zeroed. Row-major `[num_embeddings, dim]`.
fn sinusoidal_table(num_embeddings: usize, dim: usize, padding_idx: usize) -> Vec<f32> {
    let half = dim / 2;
    // `half - 1` is 0 for dim 2 or 3, where torch divides by zero and produces inf/nan; no real
    // checkpoint is that narrow, so avoid the division rather than copy that.
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut table = vec![0f32; num_embeddings * dim];
    for pos in 0..num_embeddings {
        if pos == padding_idx {
            continue;
        }
        let row = &mut table[pos * dim..(pos + 1) * dim];
        for (i, f) in freqs.iter().enumerate() {
            let angle = pos as f32 * f;
            row[i] = angle.sin();
            row[half + i] = angle.cos();
        }
    }
    table
}

/// Position ids as `create_position_ids_from_input_ids`: non-pad tokens count up from
/// `padding_idx + 1` (continuing after `past` cached tokens), pad tokens get `padding_idx`, whose
/// row in the table is zero.
fn position_ids(ids: &[u32], padding_idx: u32, past: usize) -> Vec<usize> {
    let pad = padding_idx as usize;
    let mut non_pad = 0usize;
    ids.iter()
        .map(|&id| {
            if id == padding_idx {
                pad
            } else {
                non_pad += 1;
                pad + past + non_pad
            }
        })
        .collect()
}

/// Token embeddings (scaled) plus sinusoidal positions, shared by the encoder and the decoder:
/// Hugging Face ties both `embed_tokens` to `model.shared` and builds identical position tables.
struct Embeddings {
    tokens: Embedding,
    scale: f64,
    positions: Tensor,
    padding_idx: u32,
    vocab_size: usize,
    rows: usize,
    max_tokens: usize,
}

impl Embeddings {
    fn new(
        weight: Tensor,
        cfg: &Config,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let rows = cfg.max_position_embeddings + POSITION_OFFSET;
        let pad = cfg.pad_token_id as usize;
        if pad >= rows {
            candle_core::bail!(
                "NLLB: pad_token_id {pad} must be below max_position_embeddings + 2 = {rows}: it \
                 indexes the position table"
            );
        }
        let table = sinusoidal_table(rows, cfg.d_model, pad);
        let positions = Tensor::from_vec(table, (rows, cfg.d_model), device)?.to_dtype(dtype)?;
        Ok(Self {
            tokens: Embedding::new(weight, cfg.d_model),
            scale: if cfg.scale_embedding {
                (cfg.d_model as f64).sqrt()
            } else {
                1.0
            },
            positions,
            padding_idx: cfg.pad_token_id,
            vocab_size: cfg.vocab_size,
            rows,
            // Positions run up to `pad + n` for n tokens without padding.
            max_tokens: rows - 1 - pad,
        })
    }

    /// `[1, ids.len(), d_model]` for `ids` that follow `past` already-processed tokens.
    fn forward(&self, ids: &[u32], past: usize) -> candle_core::Result<Tensor> {
        check_ids(ids, self.vocab_size)?;
        let pos = position_ids(ids, self.padding_idx, past);
        if let Some(&too_far) = pos.iter().find(|&&p| p >= self.rows) {
            candle_core::bail!(
                "NLLB: sequence too long: {} tokens (after {past} already decoded) need position \
                 {too_far}, but this model supports at most {} tokens",
                ids.len(),
                self.max_tokens
            );
        }
        let device = self.positions.device();
        let pos: Vec<u32> = pos.into_iter().map(|p| p as u32).collect();
        let pos = Tensor::new(pos.as_slice(), device)?;
        let ids = Tensor::new(ids, device)?.unsqueeze(0)?;
        let tokens = (self.tokens.forward(&ids)? * self.scale)?;
        let positions = self.positions.index_select(&pos, 0)?.unsqueeze(0)?;
        tokens + positions
    }
}

fn check_ids(ids: &[u32], vocab_size: usize) -> candle_core::Result<()> {
    if ids.is_empty() {
        candle_core::bail!("NLLB: empty token sequence");
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        candle_core::bail!("NLLB: token id {bad} is outside the vocabulary of {vocab_size}");
    }
    Ok(())
}

/// `M2M100Attention`: biased q/k/v/out projections, scores scaled by `head_dim^-0.5`.
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
}

impl Attention {
    fn load(vb: VarBuilder, d_model: usize, num_heads: usize) -> candle_core::Result<Self> {
        if num_heads == 0 || !d_model.is_multiple_of(num_heads) {
            candle_core::bail!("NLLB: d_model {d_model} is not divisible by {num_heads} heads");
        }
        let head_dim = d_model / num_heads;
        Ok(Self {
            q_proj: candle_nn::linear(d_model, d_model, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(d_model, d_model, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(d_model, d_model, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(d_model, d_model, vb.pp("out_proj"))?,
            num_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
        })
    }

    /// `[1, t, d]` -> `[1, heads, t, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        xs.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `xs`, split into heads; kept separate from `attend` so the decoder can
    /// cache them (its own past tokens, and the encoder output once per source).
    fn project_kv(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let k = self.split_heads(&self.k_proj.forward(xs)?)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?)?;
        Ok((k, v))
    }

    fn attend(
        &self,
        xs: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let q = self.split_heads(&self.q_proj.forward(xs)?)?;
        // Scale after the product, as the reference does, to stay bit-close in f32.
        let scores = (q.matmul(&k.t()?.contiguous()?)? * self.scaling)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.out_proj.forward(&out)
    }
}

/// fc1 -> activation -> fc2, the position-wise block of both layer kinds.
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(
        vb: &VarBuilder,
        d_model: usize,
        ffn_dim: usize,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(d_model, ffn_dim, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn_dim, d_model, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&self.activation.forward(&self.fc1.forward(xs)?)?)
    }
}

/// `M2M100EncoderLayer`: pre-LayerNorm self-attention and feed-forward, each with a residual.
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, cfg: &Config, activation: Activation) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: Attention::load(vb.pp("self_attn"), d, cfg.encoder_attention_heads)?,
            self_attn_layer_norm: candle_nn::layer_norm(
                d,
                LAYER_NORM_EPS,
                vb.pp("self_attn_layer_norm"),
            )?,
            ffn: FeedForward::load(&vb, d, cfg.encoder_ffn_dim, activation)?,
            final_layer_norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.self_attn_layer_norm.forward(xs)?;
        let (k, v) = self.self_attn.project_kv(&h)?;
        let xs = (xs + self.self_attn.attend(&h, &k, &v, None)?)?;
        let h = self.ffn.forward(&self.final_layer_norm.forward(&xs)?)?;
        xs + h
    }
}

/// Per decoder layer: keys/values of the tokens decoded so far, and of the encoder output (fixed
/// for one source, so computed once instead of at every step).
struct LayerCache {
    self_kv: Option<(Tensor, Tensor)>,
    cross_kv: (Tensor, Tensor),
}

/// Decoder state for one source sentence. It lives only as long as one `forward` or
/// `generate_greedy` call, so one request can never see another's keys and values.
struct DecoderCache {
    layers: Vec<LayerCache>,
    len: usize,
}

/// `M2M100DecoderLayer`: pre-LayerNorm causal self-attention, cross-attention over the encoder
/// output, then feed-forward, each with a residual.
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, cfg: &Config, activation: Activation) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.decoder_attention_heads;
        Ok(Self {
            self_attn: Attention::load(vb.pp("self_attn"), d, heads)?,
            self_attn_layer_norm: candle_nn::layer_norm(
                d,
                LAYER_NORM_EPS,
                vb.pp("self_attn_layer_norm"),
            )?,
            encoder_attn: Attention::load(vb.pp("encoder_attn"), d, heads)?,
            encoder_attn_layer_norm: candle_nn::layer_norm(
                d,
                LAYER_NORM_EPS,
                vb.pp("encoder_attn_layer_norm"),
            )?,
            ffn: FeedForward::load(&vb, d, cfg.decoder_ffn_dim, activation)?,
            final_layer_norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut LayerCache,
    ) -> candle_core::Result<Tensor> {
        let h = self.self_attn_layer_norm.forward(xs)?;
        let (k, v) = self.self_attn.project_kv(&h)?;
        let (k, v) = match &cache.self_kv {
            Some((past_k, past_v)) => (
                Tensor::cat(&[past_k, &k], 2)?,
                Tensor::cat(&[past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        let attn = self.self_attn.attend(&h, &k, &v, mask)?;
        cache.self_kv = Some((k, v));
        let xs = (xs + attn)?;

        let h = self.encoder_attn_layer_norm.forward(&xs)?;
        let (cross_k, cross_v) = &cache.cross_kv;
        let xs = (&xs + self.encoder_attn.attend(&h, cross_k, cross_v, None)?)?;

        let h = self.ffn.forward(&self.final_layer_norm.forward(&xs)?)?;
        xs + h
    }
}

/// Additive mask for `t` new tokens after `past` cached ones: token `i` sees cached tokens and new
/// tokens up to itself. A single new token sees everything, so it needs no mask.
fn causal_mask(
    t: usize,
    past: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    if t <= 1 {
        return Ok(None);
    }
    let total = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(
        Tensor::from_vec(mask, (t, total), device)?.to_dtype(dtype)?,
    ))
}

/// A loaded NLLB / M2M100 model, batch size 1.
pub struct Model {
    cfg: Config,
    embeddings: Embeddings,
    encoder_layers: Vec<EncoderLayer>,
    encoder_layer_norm: LayerNorm,
    decoder_layers: Vec<DecoderLayer>,
    decoder_layer_norm: LayerNorm,
    lm_head: Linear,
    dtype: DType,
    device: Device,
}

/// The shared embedding under whichever tied name the checkpoint uses.
fn load_shared_embedding(vb: &VarBuilder, cfg: &Config) -> candle_core::Result<Tensor> {
    // An untied `lm_head.weight` is an output projection, not the input embedding.
    let candidates: &[&str] = if cfg.tie_word_embeddings {
        &TIED_EMBEDDING_NAMES
    } else {
        &TIED_EMBEDDING_NAMES[..3]
    };
    match candidates.iter().find(|name| vb.contains_tensor(name)) {
        Some(name) => vb.get((cfg.vocab_size, cfg.d_model), name),
        None => candle_core::bail!(
            "NLLB: no shared embedding in the checkpoint; looked for {}",
            candidates.join(", ")
        ),
    }
}

impl Model {
    /// Loads a Hugging Face M2M100/NLLB checkpoint from the root of `vb` (names `model.*`), in
    /// `vb`'s dtype and on its device.
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let activation = cfg.activation()?;
        let dtype = vb.dtype();
        let device = vb.device().clone();

        let shared = load_shared_embedding(&vb, cfg)?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(shared.clone(), None)
        } else {
            Linear::new(
                vb.get((cfg.vocab_size, cfg.d_model), "lm_head.weight")?,
                None,
            )
        };
        let embeddings = Embeddings::new(shared, cfg, dtype, &device)?;

        let vb_enc = vb.pp("model").pp("encoder");
        let encoder_layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::load(vb_enc.pp("layers").pp(i), cfg, activation))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let encoder_layer_norm =
            candle_nn::layer_norm(cfg.d_model, LAYER_NORM_EPS, vb_enc.pp("layer_norm"))?;

        let vb_dec = vb.pp("model").pp("decoder");
        let decoder_layers = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::load(vb_dec.pp("layers").pp(i), cfg, activation))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let decoder_layer_norm =
            candle_nn::layer_norm(cfg.d_model, LAYER_NORM_EPS, vb_dec.pp("layer_norm"))?;

        Ok(Self {
            cfg: cfg.clone(),
            embeddings,
            encoder_layers,
            encoder_layer_norm,
            decoder_layers,
            decoder_layer_norm,
            lm_head,
            dtype,
            device,
        })
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Logits [tgt_len, vocab] for a full teacher-forced pass (no cache use), f32.
    pub fn forward(&mut self, src_ids: &[u32], decoder_ids: &[u32]) -> candle_core::Result<Tensor> {
        // Validate the decoder side before spending time on the encoder.
        check_ids(decoder_ids, self.cfg.vocab_size)?;
        let encoded = self.encode(src_ids)?;
        let mut cache = self.new_cache(&encoded)?;
        let hidden = self.decode(decoder_ids, &mut cache)?;
        self.lm_head
            .forward(&hidden)?
            .squeeze(0)?
            .to_dtype(DType::F32)
    }

    /// Greedy decoding with the KV cache. Starts from `decoder_prefix` (e.g. [eos, tgt_lang]),
    /// returns the whole decoder sequence including the prefix, stopping after eos or when the
    /// sequence reaches `max_len` tokens.
    pub fn generate_greedy(
        &mut self,
        src_ids: &[u32],
        decoder_prefix: &[u32],
        max_len: usize,
    ) -> candle_core::Result<Vec<u32>> {
        check_ids(decoder_prefix, self.cfg.vocab_size)?;
        // Fail before any work rather than after decoding hundreds of tokens.
        if max_len > self.embeddings.max_tokens {
            candle_core::bail!(
                "NLLB: max_len {max_len} is too long: this model supports at most {} decoder tokens",
                self.embeddings.max_tokens
            );
        }
        let mut sequence = decoder_prefix.to_vec();
        if sequence.len() >= max_len {
            return Ok(sequence);
        }
        let encoded = self.encode(src_ids)?;
        let mut cache = self.new_cache(&encoded)?;
        let mut step_input = decoder_prefix.to_vec();
        while sequence.len() < max_len {
            let hidden = self.decode(&step_input, &mut cache)?;
            let next = self.argmax_last(&hidden)?;
            sequence.push(next);
            // The prefix itself starts with eos (the decoder start token), so only generated
            // tokens end the sequence.
            if next == self.cfg.eos_token_id {
                break;
            }
            step_input = vec![next];
        }
        Ok(sequence)
    }

    /// Encoder output `[1, src_len, d_model]`.
    fn encode(&self, src_ids: &[u32]) -> candle_core::Result<Tensor> {
        let mut xs = self.embeddings.forward(src_ids, 0)?;
        for layer in &self.encoder_layers {
            xs = layer.forward(&xs)?;
        }
        self.encoder_layer_norm.forward(&xs)
    }

    fn new_cache(&self, encoded: &Tensor) -> candle_core::Result<DecoderCache> {
        let layers = self
            .decoder_layers
            .iter()
            .map(|layer| {
                Ok(LayerCache {
                    self_kv: None,
                    cross_kv: layer.encoder_attn.project_kv(encoded)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderCache { layers, len: 0 })
    }

    /// Runs `ids` (the tokens after the `cache.len` already decoded) through the decoder and
    /// returns their final hidden states `[1, ids.len(), d_model]`.
    fn decode(&self, ids: &[u32], cache: &mut DecoderCache) -> candle_core::Result<Tensor> {
        let past = cache.len;
        let mut xs = self.embeddings.forward(ids, past)?;
        let mask = causal_mask(ids.len(), past, self.dtype, &self.device)?;
        for (layer, layer_cache) in self.decoder_layers.iter().zip(cache.layers.iter_mut()) {
            xs = layer.forward(&xs, mask.as_ref(), layer_cache)?;
        }
        cache.len += ids.len();
        self.decoder_layer_norm.forward(&xs)
    }

    /// Most likely next token after the last position of `hidden`; only that row goes through the
    /// LM head, which matters with NLLB's 256k vocabulary.
    fn argmax_last(&self, hidden: &Tensor) -> candle_core::Result<u32> {
        let t = hidden.dim(1)?;
        let logits = self
            .lm_head
            .forward(&hidden.narrow(1, t - 1, 1)?)?
            .flatten_all()?
            .to_dtype(DType::F32)?;
        logits.argmax(D::Minus1)?.to_scalar::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tiny_config() -> Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 40,
            "d_model": 16,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 32,
            "decoder_ffn_dim": 32,
            "max_position_embeddings": 20,
        }))
        .expect("tiny config parses")
    }

    /// Deterministic pseudo-random values (xorshift), so the tests need no RNG seeding support.
    struct Rng(u64);
    impl Rng {
        fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            // Uniform in [-1, 1).
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn tensor(&mut self, shape: &[usize], scale: f32, offset: f32) -> Tensor {
            let n = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| offset + scale * self.next_f32()).collect();
            Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
        }
    }

    /// All tensors of a checkpoint for `cfg`, under Hugging Face's names, with the shared
    /// embedding stored under `embedding_name`.
    fn random_weights(cfg: &Config, seed: u64, embedding_name: &str) -> HashMap<String, Tensor> {
        let mut rng = Rng(seed);
        let d = cfg.d_model;
        let mut w = HashMap::new();
        w.insert(
            embedding_name.to_string(),
            rng.tensor(&[cfg.vocab_size, d], 0.5, 0.0),
        );
        let linear =
            |w: &mut HashMap<String, Tensor>, rng: &mut Rng, name: String, i: usize, o: usize| {
                w.insert(format!("{name}.weight"), rng.tensor(&[o, i], 0.4, 0.0));
                w.insert(format!("{name}.bias"), rng.tensor(&[o], 0.1, 0.0));
            };
        let norm = |w: &mut HashMap<String, Tensor>, rng: &mut Rng, name: String| {
            w.insert(format!("{name}.weight"), rng.tensor(&[d], 0.2, 1.0));
            w.insert(format!("{name}.bias"), rng.tensor(&[d], 0.1, 0.0));
        };
        for (side, layers, ffn) in [
            ("encoder", cfg.encoder_layers, cfg.encoder_ffn_dim),
            ("decoder", cfg.decoder_layers, cfg.decoder_ffn_dim),
        ] {
            for l in 0..layers {
                let p = format!("model.{side}.layers.{l}");
                let attns: &[&str] = if side == "encoder" {
                    &["self_attn"]
                } else {
                    &["self_attn", "encoder_attn"]
                };
                for attn in attns {
                    for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                        linear(&mut w, &mut rng, format!("{p}.{attn}.{proj}"), d, d);
                    }
                    norm(&mut w, &mut rng, format!("{p}.{attn}_layer_norm"));
                }
                linear(&mut w, &mut rng, format!("{p}.fc1"), d, ffn);
                linear(&mut w, &mut rng, format!("{p}.fc2"), ffn, d);
                norm(&mut w, &mut rng, format!("{p}.final_layer_norm"));
            }
            norm(&mut w, &mut rng, format!("model.{side}.layer_norm"));
        }
        w
    }

    fn load(cfg: &Config, weights: HashMap<String, Tensor>) -> candle_core::Result<Model> {
        Model::load(
            VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
            cfg,
        )
    }

    fn tiny_model(seed: u64) -> Model {
        let cfg = tiny_config();
        load(&cfg, random_weights(&cfg, seed, "model.shared.weight")).expect("tiny model loads")
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn sinusoidal_table_matches_hand_computed_values() {
        // dim 4: half 2, frequencies exp(-i * ln(10000) / (2 - 1)) = [1, 1e-4]; sines then cosines.
        let t = sinusoidal_table(5, 4, 1);
        let row = |p: usize| &t[p * 4..(p + 1) * 4];
        assert_eq!(row(0), &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(row(1), &[0.0; 4], "padding row must be zero");
        for p in [2usize, 3, 4] {
            let want = [
                (p as f64).sin(),
                (p as f64 * 1e-4).sin(),
                (p as f64).cos(),
                (p as f64 * 1e-4).cos(),
            ];
            for (got, want) in row(p).iter().zip(want) {
                assert!(
                    (*got as f64 - want).abs() < 1e-6,
                    "row {p}: {got} vs {want}"
                );
            }
        }
        // dim 6: frequencies [1, 1e-2, 1e-4].
        let t = sinusoidal_table(4, 6, 1);
        let p = 3f64;
        let want = [
            p.sin(),
            (p * 1e-2).sin(),
            (p * 1e-4).sin(),
            p.cos(),
            (p * 1e-2).cos(),
            (p * 1e-4).cos(),
        ];
        for (got, want) in t[18..24].iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // Odd width: a trailing zero column.
        let t = sinusoidal_table(4, 5, 1);
        assert_eq!(t[3 * 5 + 4], 0.0);
        assert!((t[3 * 5] - 3f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn positions_start_after_pad_and_skip_padding() {
        assert_eq!(position_ids(&[7, 8, 9], 1, 0), vec![2, 3, 4]);
        assert_eq!(position_ids(&[7, 1, 8, 9], 1, 0), vec![2, 1, 3, 4]);
        // Continuing after 3 cached tokens, as the decoder does during generation.
        assert_eq!(position_ids(&[9], 1, 3), vec![5]);
        assert_eq!(position_ids(&[1], 1, 3), vec![1]);
        assert_eq!(position_ids(&[5, 6], 0, 0), vec![1, 2]);
    }

    #[test]
    fn padding_tokens_get_the_zero_position_row() -> candle_core::Result<()> {
        let mut model = tiny_model(11);
        let emb = &model.embeddings;
        let xs = emb.forward(&[5, 1, 6], 0)?.squeeze(0)?;
        let token =
            (emb.tokens.forward(&Tensor::new(&[1u32], &Device::Cpu)?)? * 4.0)?.squeeze(0)?;
        assert!(
            max_abs_diff(&xs.get(1)?, &token) < 1e-6,
            "pad must get only its scaled token embedding"
        );
        // And the token after the pad continues at position 3, not 4.
        let after = (xs.get(2)?
            - (emb.tokens.forward(&Tensor::new(&[6u32], &Device::Cpu)?)? * 4.0)?.squeeze(0)?)?;
        assert!(max_abs_diff(&after, &emb.positions.get(3)?) < 1e-6);
        // Sanity: the model runs on a padded sequence.
        model.forward(&[5, 1, 6, 2], &[2, 1, 7])?;
        Ok(())
    }

    #[test]
    fn config_defaults_match_m2m100() {
        let cfg: Config = serde_json::from_str("{}").expect("empty config parses");
        assert_eq!(cfg.vocab_size, 128_112);
        assert_eq!(cfg.d_model, 1024);
        assert_eq!((cfg.encoder_layers, cfg.decoder_layers), (12, 12));
        assert_eq!(
            (cfg.encoder_attention_heads, cfg.decoder_attention_heads),
            (16, 16)
        );
        assert_eq!((cfg.encoder_ffn_dim, cfg.decoder_ffn_dim), (4096, 4096));
        assert_eq!(cfg.max_position_embeddings, 1024);
        assert_eq!(
            (cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id),
            (1, 2, 0)
        );
        assert_eq!(cfg.decoder_start_token_id, 2);
        assert!(cfg.scale_embedding && cfg.tie_word_embeddings);
        assert_eq!(cfg.activation_function, "relu");
    }

    #[test]
    fn config_parses_a_real_nllb_config() {
        // facebook/nllb-200-distilled-600M's config.json, abridged only in the unused keys. Note
        // `num_hidden_layers` next to `encoder_layers`: aliasing the two would reject this file.
        let cfg: Config = serde_json::from_str(
            r#"{"_name_or_path": "facebook/nllb-200-distilled-600M", "activation_dropout": 0.0,
                "activation_function": "relu", "architectures": ["M2M100ForConditionalGeneration"],
                "attention_dropout": 0.1, "bos_token_id": 0, "d_model": 1024,
                "decoder_attention_heads": 16, "decoder_ffn_dim": 4096, "decoder_layerdrop": 0,
                "decoder_layers": 12, "decoder_start_token_id": 2, "dropout": 0.1,
                "encoder_attention_heads": 16, "encoder_ffn_dim": 4096, "encoder_layerdrop": 0,
                "encoder_layers": 12, "eos_token_id": 2, "init_std": 0.02, "is_encoder_decoder": true,
                "max_length": 200, "max_position_embeddings": 1024, "model_type": "m2m_100",
                "num_hidden_layers": 12, "pad_token_id": 1, "scale_embedding": true,
                "tokenizer_class": "NllbTokenizer", "torch_dtype": "float32",
                "transformers_version": "4.21.0.dev0", "use_cache": true, "vocab_size": 256206}"#,
        )
        .expect("NLLB config parses");
        assert_eq!(cfg.vocab_size, 256_206);
        assert_eq!(cfg.encoder_layers, 12);
    }

    #[test]
    fn eos_token_id_may_be_a_single_element_list() {
        let cfg: Config = serde_json::from_str(r#"{"eos_token_id": [3]}"#).expect("list parses");
        assert_eq!(cfg.eos_token_id, 3);
        let err = serde_json::from_str::<Config>(r#"{"eos_token_id": [2, 3]}"#)
            .expect_err("several eos ids are not supported");
        assert!(err.to_string().contains("eos_token_id"), "{err}");
    }

    #[test]
    fn unsupported_activation_is_a_clear_error() {
        let mut cfg = tiny_config();
        cfg.activation_function = "tanh".to_string();
        let weights = random_weights(&cfg, 1, "model.shared.weight");
        let err = load(&cfg, weights).err().expect("tanh is not supported");
        assert!(
            err.to_string()
                .contains("unsupported activation_function \"tanh\""),
            "{err}"
        );
    }

    #[test]
    fn gelu_changes_the_output() -> candle_core::Result<()> {
        let mut cfg = tiny_config();
        let mut relu = load(&cfg, random_weights(&cfg, 5, "model.shared.weight"))?;
        cfg.activation_function = "gelu".to_string();
        let mut gelu = load(&cfg, random_weights(&cfg, 5, "model.shared.weight"))?;
        let a = relu.forward(&[3, 4, 2], &[2, 5])?;
        let b = gelu.forward(&[3, 4, 2], &[2, 5])?;
        assert!(max_abs_diff(&a, &b) > 1e-4);
        Ok(())
    }

    #[test]
    fn forward_returns_f32_logits_per_target_position() -> candle_core::Result<()> {
        let mut model = tiny_model(3);
        let logits = model.forward(&[30, 4, 5, 6, 2], &[2, 31, 7])?;
        assert_eq!(logits.dims(), &[3, 40]);
        assert_eq!(logits.dtype(), DType::F32);
        Ok(())
    }

    #[test]
    fn runs_in_bf16_and_returns_f32_logits() -> candle_core::Result<()> {
        let cfg = tiny_config();
        let weights = random_weights(&cfg, 3, "model.shared.weight");
        let mut f32_model = load(&cfg, weights.clone())?;
        let mut bf16_model = Model::load(
            VarBuilder::from_tensors(weights, DType::BF16, &Device::Cpu),
            &cfg,
        )?;
        let src = [30u32, 4, 5, 6, 2];
        let want = f32_model.forward(&src, &[2, 31, 7])?;
        let got = bf16_model.forward(&src, &[2, 31, 7])?;
        assert_eq!(got.dtype(), DType::F32);
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 0.1, "bf16 logits differ by {diff}");
        let out = bf16_model.generate_greedy(&src, &[2, 31], 8)?;
        assert!(out.len() > 2 && out.len() <= 8, "{out:?}");
        Ok(())
    }

    #[test]
    fn decoder_is_causal() -> candle_core::Result<()> {
        let mut model = tiny_model(4);
        let short = model.forward(&[30, 4, 2], &[2, 31, 7])?;
        let long = model.forward(&[30, 4, 2], &[2, 31, 7, 9, 10])?;
        assert!(max_abs_diff(&short, &long.narrow(0, 0, 3)?) < 1e-5);
        Ok(())
    }

    #[test]
    fn cached_decoding_matches_full_forward() -> candle_core::Result<()> {
        let mut model = tiny_model(7);
        let src = [30u32, 12, 5, 17, 9, 2];
        let prefix = [2u32, 31];
        let max_len = 12;

        // Reference: uncached greedy, one full forward per step.
        let mut reference = prefix.to_vec();
        while reference.len() < max_len {
            let logits = model.forward(&src, &reference)?;
            let next = logits
                .get(reference.len() - 1)?
                .argmax(0)?
                .to_scalar::<u32>()?;
            reference.push(next);
            if next == model.config().eos_token_id {
                break;
            }
        }
        let generated = model.generate_greedy(&src, &prefix, max_len)?;
        assert_eq!(generated, reference);
        assert!(
            generated.len() > prefix.len() + 2,
            "too short to exercise the cache: {generated:?}"
        );

        // Step by step through the cache, every row equals the full pass.
        let full = model.forward(&src, &generated)?;
        let encoded = model.encode(&src)?;
        let mut cache = model.new_cache(&encoded)?;
        let mut rows = vec![model.decode(&generated[..2], &mut cache)?];
        for &id in &generated[2..] {
            rows.push(model.decode(&[id], &mut cache)?);
        }
        let cached = model.lm_head.forward(&Tensor::cat(&rows, 1)?)?.squeeze(0)?;
        let diff = max_abs_diff(&cached, &full);
        assert!(diff < 1e-5, "cached vs full logits differ by {diff}");
        Ok(())
    }

    #[test]
    fn generation_stops_after_eos_but_not_on_the_start_token() -> candle_core::Result<()> {
        let cfg = tiny_config();
        let mut weights = random_weights(&cfg, 9, "model.shared.weight");
        // Make every decoder output the eos embedding: with a zero final LayerNorm weight the
        // hidden state is the bias, and a bias equal to a long eos row makes eos the argmax.
        let embedding = weights["model.shared.weight"].clone();
        let eos_row = (embedding.get(2)? * 10.0)?;
        let embedding = Tensor::cat(
            &[
                embedding.narrow(0, 0, 2)?,
                eos_row.unsqueeze(0)?,
                embedding.narrow(0, 3, 37)?,
            ],
            0,
        )?;
        weights.insert("model.shared.weight".into(), embedding);
        weights.insert(
            "model.decoder.layer_norm.weight".into(),
            Tensor::zeros(16, DType::F32, &Device::Cpu)?,
        );
        weights.insert("model.decoder.layer_norm.bias".into(), eos_row);
        let mut model = load(&cfg, weights)?;
        // The prefix starts with eos (the decoder start token) and generation still runs.
        assert_eq!(
            model.generate_greedy(&[30, 4, 2], &[2, 31], 10)?,
            vec![2, 31, 2]
        );
        Ok(())
    }

    #[test]
    fn generation_respects_max_len() -> candle_core::Result<()> {
        let mut model = tiny_model(7);
        let out = model.generate_greedy(&[30, 12, 2], &[2, 31], 5)?;
        assert!(out.len() <= 5 && out.starts_with(&[2, 31]), "{out:?}");
        // A prefix already at max_len comes back unchanged.
        assert_eq!(
            model.generate_greedy(&[30, 12, 2], &[2, 31, 7], 2)?,
            vec![2, 31, 7]
        );
        Ok(())
    }

    #[test]
    fn tied_embedding_loads_under_each_name() -> candle_core::Result<()> {
        let cfg = tiny_config();
        let mut reference = load(&cfg, random_weights(&cfg, 21, "model.shared.weight"))?;
        let want = reference.forward(&[30, 4, 5, 2], &[2, 31, 6])?;
        for name in TIED_EMBEDDING_NAMES {
            let mut model = load(&cfg, random_weights(&cfg, 21, name))?;
            let got = model.forward(&[30, 4, 5, 2], &[2, 31, 6])?;
            assert_eq!(max_abs_diff(&got, &want), 0.0, "embedding stored as {name}");
        }
        Ok(())
    }

    #[test]
    fn missing_tied_embedding_names_every_candidate() {
        let cfg = tiny_config();
        let weights = random_weights(&cfg, 21, "unrelated.weight");
        let err = load(&cfg, weights).err().expect("no embedding").to_string();
        for name in TIED_EMBEDDING_NAMES {
            assert!(err.contains(name), "{err} should name {name}");
        }
    }

    #[test]
    fn too_long_input_is_an_error_not_a_panic() {
        let mut model = tiny_model(2);
        let max = model.config().max_position_embeddings; // 20, and pad is 1
        let ok: Vec<u32> = vec![5; max];
        assert!(
            model.forward(&ok, &[2, 31]).is_ok(),
            "{max} tokens fit the position table"
        );
        let long: Vec<u32> = vec![5; max + 1];
        let err = model
            .forward(&long, &[2, 31])
            .expect_err("too long")
            .to_string();
        assert!(err.contains("too long"), "{err}");
        let err = model
            .forward(&[5, 2], &long)
            .expect_err("too long")
            .to_string();
        assert!(err.contains("too long"), "{err}");
        let err = model
            .generate_greedy(&[5, 2], &[2, 31], max + 1)
            .expect_err("too long")
            .to_string();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn bad_ids_are_errors() {
        let mut model = tiny_model(2);
        let err = model
            .forward(&[5, 40], &[2])
            .expect_err("out of vocab")
            .to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
        assert!(model.forward(&[], &[2]).is_err());
        assert!(model.generate_greedy(&[5, 2], &[], 5).is_err());
    }
}
