//! Parity of `workload::models::nllb` with Hugging Face's `M2M100ForConditionalGeneration`.
//!
//! The fixture in `tests/fixtures/nllb-tiny` is a tiny random checkpoint written by
//! `workload/parity/nllb.py` together with the reference outputs of transformers/torch (float32,
//! CPU). Regenerate it with `/work/venv-parity/bin/python workload/parity/nllb.py`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use workload::models::nllb::{Config, Model};

/// Float32 on both sides; what is left is summation order, far below this.
const LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct ForwardCase {
    input_ids: Vec<u32>,
    decoder_input_ids: Vec<u32>,
    logits_shape: Vec<usize>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct GenerateCase {
    forced_bos_token_id: u32,
    max_new_tokens: usize,
    output_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Expected {
    transformers_version: String,
    torch_version: String,
    seed: u64,
    #[serde(flatten)]
    forward: ForwardCase,
    padded: ForwardCase,
    generate: GenerateCase,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nllb-tiny")
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> anyhow::Result<T> {
    let path = fixture_dir().join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn load() -> anyhow::Result<(Model, Expected)> {
    let cfg: Config = read_json("config.json")?;
    let expected: Expected = read_json("expected.json")?;
    let weights = fixture_dir().join("model.safetensors");
    // SAFETY: the fixture is a regular file in the repository that nothing modifies while the
    // test runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
    let model = Model::load(vb, &cfg)?;
    eprintln!(
        "fixture: seed {}, transformers {}, torch {}",
        expected.seed, expected.transformers_version, expected.torch_version
    );
    Ok((model, expected))
}

/// Max |logit difference| between the model and the reference for one forward case.
fn forward_max_diff(model: &mut Model, case: &ForwardCase) -> anyhow::Result<f32> {
    let logits = model.forward(&case.input_ids, &case.decoder_input_ids)?;
    assert_eq!(logits.dims(), case.logits_shape.as_slice(), "logits shape");
    let got = logits.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(got.len(), case.logits.len(), "number of logits");
    Ok(got
        .iter()
        .zip(&case.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max))
}

#[test]
fn forward_logits_match_transformers() -> anyhow::Result<()> {
    let (mut model, expected) = load()?;
    let diff = forward_max_diff(&mut model, &expected.forward)?;
    println!("nllb-tiny forward: max |logit diff| = {diff:.3e}");
    assert!(
        diff < LOGIT_TOLERANCE,
        "max |logit diff| {diff} >= {LOGIT_TOLERANCE}"
    );
    Ok(())
}

#[test]
fn forward_logits_with_padding_match_transformers() -> anyhow::Result<()> {
    let (mut model, expected) = load()?;
    let diff = forward_max_diff(&mut model, &expected.padded)?;
    println!("nllb-tiny forward with pad tokens: max |logit diff| = {diff:.3e}");
    assert!(
        diff < LOGIT_TOLERANCE,
        "max |logit diff| {diff} >= {LOGIT_TOLERANCE}"
    );
    Ok(())
}

#[test]
fn greedy_generation_matches_transformers() -> anyhow::Result<()> {
    let (mut model, expected) = load()?;
    let gen = &expected.generate;
    let start = model.config().decoder_start_token_id;
    let ids = model.generate_greedy(
        &expected.forward.input_ids,
        &[start, gen.forced_bos_token_id],
        1 + gen.max_new_tokens,
    )?;
    println!("nllb-tiny greedy: {} ids {ids:?}", ids.len());
    assert_eq!(ids, gen.output_ids);
    // Running it again must not see the previous request's cache.
    let again = model.generate_greedy(
        &expected.forward.input_ids,
        &[start, gen.forced_bos_token_id],
        1 + gen.max_new_tokens,
    )?;
    assert_eq!(again, gen.output_ids, "second request differs");
    Ok(())
}

/// NLLB's main branch ships only `pytorch_model.bin`, a pickled state_dict with the tied
/// embedding under four names. Loaded through the service's own checkpoint code.
#[test]
fn pytorch_model_bin_gives_the_same_logits() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nllb-tiny-pth");
    let checkpoint = workload::checkpoint::Checkpoint::open(&dir)?;
    assert!(matches!(checkpoint.files, workload::checkpoint::WeightFiles::Pytorch(_)));
    let loaded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let vb = checkpoint.var_builder(DType::F32, &Device::Cpu, loaded)?;
    let cfg: Config = serde_json::from_value(checkpoint.config.clone())?;
    let mut model = Model::load(vb, &cfg)?;
    let expected: Expected = read_json("expected.json")?;
    let diff = forward_max_diff(&mut model, &expected.forward)?;
    println!("nllb-tiny from pytorch_model.bin: max |logit diff| = {diff:.3e}");
    assert!(diff < LOGIT_TOLERANCE, "max |logit diff| {diff} >= {LOGIT_TOLERANCE}");
    Ok(())
}
