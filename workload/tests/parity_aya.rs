//! Parity of the candle Aya port (`workload::models::aya`) with Hugging Face transformers.
//!
//! The fixtures under `tests/fixtures/aya-tiny*` are tiny random `CohereForCausalLM`
//! checkpoints with the logits and greedy generation transformers produced for them;
//! regenerate them with `/work/venv-parity/bin/python workload/parity/aya.py`.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use workload::models::aya::{Config, Model};

/// Logits are f32 on both sides; differences come only from summation order.
const LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Expected {
    input_ids: Vec<u32>,
    logits_shape: Vec<usize>,
    logits: Vec<f32>,
    generate: Generate,
    transformers_version: String,
}

#[derive(Deserialize)]
struct Generate {
    max_new_tokens: usize,
    eos_token_id: EosIds,
    output_ids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

impl EosIds {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            EosIds::One(id) => vec![*id],
            EosIds::Many(ids) => ids.clone(),
        }
    }
}

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn check_fixture(name: &str, expect_qk_norm: bool) -> Result<()> {
    let dir = fixture_dir(name);
    let cfg: Config = read_json(&dir.join("config.json"))?;
    let expected: Expected = read_json(&dir.join("expected.json"))?;
    // Guards against the two fixtures being swapped or regenerated with another config.
    ensure!(
        cfg.use_qk_norm == expect_qk_norm,
        "{name}: use_qk_norm is {}",
        cfg.use_qk_norm
    );
    ensure!(
        cfg.num_key_value_heads < cfg.num_attention_heads,
        "{name}: fixture should exercise grouped-query attention"
    );

    let weights = dir.join("model.safetensors");
    // SAFETY: the fixture is a read-only file of this repository, not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
    let mut model = Model::load(vb, &cfg)?;

    let logits = model.forward(&expected.input_ids)?;
    ensure!(
        logits.dims() == expected.logits_shape.as_slice(),
        "{name}: logits shape {:?}, expected {:?}",
        logits.dims(),
        expected.logits_shape
    );
    let ours = logits.flatten_all()?.to_vec1::<f32>()?;
    ensure!(
        ours.len() == expected.logits.len(),
        "{name}: logits length mismatch"
    );
    let max_diff = ours
        .iter()
        .zip(&expected.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let max_ref = expected.logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!(
        "{name}: max |logit diff| = {max_diff:.3e} over {} logits (max |logit| {max_ref:.3}, transformers {})",
        ours.len(),
        expected.transformers_version
    );
    ensure!(
        max_diff < LOGIT_TOLERANCE,
        "{name}: max |logit diff| {max_diff:e} >= {LOGIT_TOLERANCE:e}"
    );

    let gen = &expected.generate;
    let eos = gen.eos_token_id.to_vec();
    let new_tokens = model.generate_greedy(&expected.input_ids, gen.max_new_tokens, &eos)?;
    let mut output = expected.input_ids.clone();
    output.extend(&new_tokens);
    println!(
        "{name}: generated {} tokens {new_tokens:?} (eos {eos:?})",
        new_tokens.len()
    );
    ensure!(
        output == gen.output_ids,
        "{name}: greedy output differs\n ours: {output:?}\n   hf: {:?}",
        gen.output_ids
    );
    // A second request on the same model must not see the first one's cache.
    let again = model.generate_greedy(&expected.input_ids, gen.max_new_tokens, &eos)?;
    ensure!(
        again == new_tokens,
        "{name}: second request differs: {again:?}"
    );
    Ok(())
}

#[test]
fn aya_tiny_matches_transformers() -> Result<()> {
    check_fixture("aya-tiny", false)
}

#[test]
fn aya_tiny_qk_norm_matches_transformers() -> Result<()> {
    check_fixture("aya-tiny-qknorm", true)
}
