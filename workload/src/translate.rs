//! A loaded model with its tokenizer: text in, text out.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::checkpoint::{Arch, Checkpoint, CheckpointError};
use crate::device::Placement;
use crate::languages;
use crate::models::{aya, nllb};

/// Tokens generated at most per request unless the caller says otherwise.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 64;

enum Engine {
    Nllb(nllb::Model),
    Aya(aya::Model),
}

/// One model ready to translate.
pub struct Translator {
    /// The name it is served under (`--model NAME=DIR`), which its errors give.
    name: String,
    engine: Engine,
    tokenizer: Tokenizer,
    max_new_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: cannot load the tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// The tokenizer loads, but no request could be served with it.
    #[error("{path}: unusable for the {arch} model: {missing}; {TOKENIZER_FIX}")]
    TokenizerUnusable { path: PathBuf, arch: &'static str, missing: String },
    #[error("{path}: config does not fit the {arch} model: {reason}; use the config.json that came with the weights")]
    Config { path: PathBuf, arch: &'static str, reason: String },
    #[error(
        "{dir}: weights do not match the {arch} model: {reason}; config.json and the weights must come from \
         the same checkpoint"
    )]
    Weights { dir: PathBuf, arch: &'static str, reason: String },
}

const TOKENIZER_FIX: &str = "copy it from the model's repository, or regenerate the checkpoint with `workload gen-model`";

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("unknown language {code:?} for model {model}: use a FLORES-200 code like eng_Latn or fra_Latn that the model supports")]
    UnknownLanguage { code: String, model: String },
    #[error("text is {tokens} tokens long, the model takes at most {max}")]
    TooLong { tokens: usize, max: usize },
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    /// One line, without the backtrace candle may attach.
    #[error("model failed: {0}")]
    Model(String),
}

impl From<candle_core::Error> for TranslateError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(crate::reason::candle(&e))
    }
}

impl TranslateError {
    /// True when the request, not the service, was at fault.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::UnknownLanguage { .. } | Self::TooLong { .. })
    }
}

/// The result of one request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Translation {
    pub text: String,
    pub input_tokens: usize,
    pub output_tokens: usize,
}

impl Translator {
    /// Builds the model served as `name` from the checkpoint on `placement`; `loaded`
    /// counts weight bytes as they are read.
    pub fn load(
        name: &str,
        checkpoint: &Checkpoint,
        placement: &Placement,
        loaded: Arc<AtomicU64>,
    ) -> Result<Self, LoadError> {
        let tokenizer_path = checkpoint.dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(LoadError::Tokenizer {
                path: tokenizer_path,
                reason: "file is missing; copy tokenizer.json from the model repository next to config.json".into(),
            });
        }
        // The tokenizer (a large JSON for NLLB's 256k vocabulary) is parsed while the
        // weights are read: a quarter of a second off every load.
        let (tokenizer, engine) = std::thread::scope(|s| {
            let tokenizer = s.spawn(|| {
                let tokenizer = load_tokenizer(&tokenizer_path)?;
                check_tokenizer(&tokenizer, checkpoint.arch, &tokenizer_path).map_err(|missing| {
                    LoadError::TokenizerUnusable { path: tokenizer_path.clone(), arch: checkpoint.arch.name(), missing }
                })?;
                Ok(tokenizer)
            });
            let engine = build_engine(checkpoint, placement, loaded);
            let tokenizer = tokenizer.join().unwrap_or_else(|_| {
                Err(LoadError::Tokenizer { path: tokenizer_path.clone(), reason: "the tokenizer's parser panicked".into() })
            });
            (tokenizer, engine)
        });
        // A broken tokenizer is named first: it is the cheaper thing to fix.
        let tokenizer = tokenizer?;
        let engine = engine?;
        Ok(Self { name: name.to_string(), engine, tokenizer, max_new_tokens: DEFAULT_MAX_NEW_TOKENS })
    }

    pub fn with_max_new_tokens(mut self, max_new_tokens: usize) -> Self {
        self.max_new_tokens = max_new_tokens.max(1);
        self
    }

    pub fn arch(&self) -> Arch {
        match self.engine {
            Engine::Nllb(_) => Arch::Nllb,
            Engine::Aya(_) => Arch::Aya,
        }
    }

    /// Whether `code` (FLORES-200) can be a source or target of this model.
    pub fn supports(&self, code: &str) -> bool {
        self.check_language(code).is_ok()
    }

    fn unknown_language(&self, code: &str) -> TranslateError {
        TranslateError::UnknownLanguage { code: code.to_string(), model: self.name.clone() }
    }

    fn check_language(&self, code: &str) -> Result<(), TranslateError> {
        let unknown = || self.unknown_language(code);
        if !languages::looks_like_code(code) {
            return Err(unknown());
        }
        match self.engine {
            Engine::Nllb(_) => self.tokenizer.token_to_id(code).map(|_| ()).ok_or_else(unknown),
            Engine::Aya(_) => languages::aya_name(code).map(|_| ()).ok_or_else(unknown),
        }
    }

    pub fn translate(&mut self, text: &str, source: &str, target: &str) -> Result<Translation, TranslateError> {
        self.check_language(source)?;
        self.check_language(target)?;
        let unknown = |code: &str| TranslateError::UnknownLanguage { code: code.to_string(), model: self.name.clone() };
        match &mut self.engine {
            Engine::Nllb(model) => {
                let lang_id = |code: &str| self.tokenizer.token_to_id(code).ok_or_else(|| unknown(code));
                let (src_lang, tgt_lang) = (lang_id(source)?, lang_id(target)?);
                let eos = model.config().eos_token_id;
                let max_positions = model.config().max_position_embeddings;
                let tokens = encode(&self.tokenizer, text)?;
                // NLLB's source layout: [src_lang] tokens [eos].
                let mut src = Vec::with_capacity(tokens.len() + 2);
                src.push(src_lang);
                src.extend_from_slice(&tokens);
                src.push(eos);
                if src.len() > max_positions {
                    return Err(TranslateError::TooLong { tokens: src.len(), max: max_positions });
                }
                let prefix = [eos, tgt_lang];
                let max_len = (prefix.len() + self.max_new_tokens).min(max_positions);
                let out = model.generate_greedy(&src, &prefix, max_len)?;
                let generated = &out[prefix.len().min(out.len())..];
                let text = decode(&self.tokenizer, generated)?;
                Ok(Translation { text, input_tokens: src.len(), output_tokens: generated.len() })
            }
            Engine::Aya(model) => {
                let from = languages::aya_name(source).ok_or_else(|| unknown(source))?;
                let to = languages::aya_name(target).ok_or_else(|| unknown(target))?;
                let prompt = aya::translation_prompt(text, from, to);
                let ids = encode(&self.tokenizer, &prompt)?;
                let max_positions = model.config().max_position_embeddings;
                let room = max_positions.saturating_sub(self.max_new_tokens.min(max_positions / 2));
                if ids.len() > room {
                    return Err(TranslateError::TooLong { tokens: ids.len(), max: room });
                }
                let eos = model.config().eos_token_ids();
                let new = model.generate_greedy(&ids, self.max_new_tokens, &eos)?;
                let text = decode(&self.tokenizer, &new)?;
                Ok(Translation { text, input_tokens: ids.len(), output_tokens: new.len() })
            }
        }
    }
}

/// The model's weights read and its layers built on `placement`.
fn build_engine(checkpoint: &Checkpoint, placement: &Placement, loaded: Arc<AtomicU64>) -> Result<Engine, LoadError> {
    let config_path = checkpoint.dir.join("config.json");
    let arch = checkpoint.arch.name();
    let config_error = |e: serde_json::Error| LoadError::Config { path: config_path.clone(), arch, reason: e.to_string() };
    let weights_error =
        |e: candle_core::Error| LoadError::Weights { dir: checkpoint.dir.clone(), arch, reason: crate::reason::candle(&e) };
    enum Config {
        Nllb(nllb::Config),
        Aya(aya::Config),
    }
    let config = match checkpoint.arch {
        Arch::Nllb => Config::Nllb(serde_json::from_value(checkpoint.config.clone()).map_err(config_error)?),
        Arch::Aya => Config::Aya(serde_json::from_value(checkpoint.config.clone()).map_err(config_error)?),
    };
    let construct = |vb: candle_nn::VarBuilder<'_>| -> candle_core::Result<Engine> {
        Ok(match &config {
            Config::Nllb(cfg) => Engine::Nllb(nllb::Model::load(vb, cfg)?),
            Config::Aya(cfg) => Engine::Aya(aya::Model::load(vb, cfg)?),
        })
    };
    match checkpoint.preload_reader(&placement.device)? {
        Some(reader) => {
            let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            crate::preload::build(reader, placement.dtype, workers, loaded, construct).map_err(weights_error)
        }
        None => construct(checkpoint.var_builder(placement.dtype, &placement.device, loaded)?).map_err(weights_error),
    }
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, LoadError> {
    if !path.is_file() {
        return Err(LoadError::Tokenizer {
            path: path.to_path_buf(),
            reason: "file is missing; copy tokenizer.json from the model repository next to config.json".into(),
        });
    }
    Tokenizer::from_file(path).map_err(|e| LoadError::Tokenizer {
        path: path.to_path_buf(),
        reason: format!("{}; {TOKENIZER_FIX}", crate::reason::one_line(&e.to_string())),
    })
}

/// The tokens the Aya prompt is built from ([`aya::translation_prompt`]).
const AYA_PROMPT_TOKENS: [&str; 5] =
    ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>"];

/// What the tokenizer lacks for `arch` to serve any request: a vocabulary that encodes
/// text, and NLLB's language tokens or Aya's chat-template tokens.
fn check_tokenizer(tokenizer: &Tokenizer, arch: Arch, path: &Path) -> Result<(), String> {
    if tokenizer.get_vocab_size(true) == 0 {
        return Err("its vocabulary is empty".into());
    }
    const PROBE: &str = "Hello, world";
    match tokenizer.encode(PROBE, false) {
        Ok(e) if !e.get_ids().is_empty() => {}
        Ok(_) => return Err(format!("it encodes {PROBE:?} to no tokens")),
        Err(e) => return Err(format!("it cannot encode {PROBE:?}: {}", crate::reason::one_line(&e.to_string()))),
    }
    match arch {
        Arch::Nllb => {
            let codes: Vec<&str> = languages::nllb_codes().collect();
            let missing: Vec<&str> = codes.iter().copied().filter(|c| tokenizer.token_to_id(c).is_none()).collect();
            if missing.len() == codes.len() {
                return Err("it has none of NLLB's language tokens (eng_Latn, fra_Latn, …)".into());
            }
            if !missing.is_empty() {
                tracing::warn!(
                    "{}: no language token for {}: requests in those languages will be refused",
                    path.display(),
                    missing.join(", ")
                );
            }
        }
        Arch::Aya => {
            let missing: Vec<&str> =
                AYA_PROMPT_TOKENS.iter().copied().filter(|t| tokenizer.token_to_id(t).is_none()).collect();
            if !missing.is_empty() {
                return Err(format!("it lacks Aya's chat-template tokens {}", missing.join(", ")));
            }
        }
    }
    Ok(())
}

/// Token ids of `text` without the tokenizer's own special tokens: each model's layout
/// is built explicitly above, because the saved post-processors differ between exports.
fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TranslateError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| TranslateError::Tokenizer(e.to_string()))
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, TranslateError> {
    tokenizer.decode(ids, true).map(|s| s.trim().to_string()).map_err(|e| TranslateError::Tokenizer(e.to_string()))
}
