"""Build the tiny NLLB (M2M100) parity fixture used by `workload/tests/parity_nllb.rs`.

Run from the repository root (no network needed: the model is built from a config):

    /work/venv-parity/bin/python workload/parity/nllb.py

It writes `workload/tests/fixtures/nllb-tiny/{config.json,model.safetensors,expected.json}`.

What it does:

* Builds a small `M2M100ForConditionalGeneration` with the same structure as NLLB-200 (pre-LayerNorm
  encoder/decoder, ReLU FFN, scaled and tied embeddings, sinusoidal positions, pad=1, eos=2, bos=0,
  decoder start=2) and random weights.
* Re-draws every parameter, biases and LayerNorm weights included. The HF initialiser sets biases to 0
  and LayerNorm weights to 1, which would let the Rust side drop a bias or swap a LayerNorm's weight and
  bias without the parity test noticing.
* Records the logits of one teacher-forced forward pass, the same for a pair of inputs that contain a
  pad token mid-sequence (pad positions are skipped by the sinusoidal embedding), and the ids of a greedy
  `generate` call with `forced_bos_token_id`.
* Random weights can put two logits within float noise of each other, and then candle and torch may
  pick different argmaxes. The script therefore tries seeds in order from `FIRST_SEED` and keeps the
  first one where, at every free greedy step, the top-1 logit beats the top-2 logit by more than
  `MIN_GAP`, and where generation runs for at least `MIN_GENERATED` tokens before eos, with at
  least `MIN_DISTINCT` different ones (random models like to repeat one token forever). Both
  the search and the result are deterministic.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

import safetensors.torch
import torch
import transformers
from transformers import M2M100Config, M2M100ForConditionalGeneration

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "nllb-tiny")

CONFIG = dict(
    vocab_size=256,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    max_position_embeddings=64,
    activation_function="relu",
    scale_embedding=True,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    decoder_start_token_id=2,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    decoder_layerdrop=0.0,
    tie_word_embeddings=True,
)

# Language codes sit at the top of the vocabulary, as in NLLB (e.g. eng_Latn=256047).
SRC_LANG = 250
TGT_LANG = 252
INPUT_IDS = [SRC_LANG, 17, 94, 33, 128, 61, 200, 7, 2]
DECODER_INPUT_IDS = [2, TGT_LANG, 45, 9, 170, 88, 3]
# Pad (1) in the middle of both sides: positions must skip it, and with no attention mask HF still
# attends to it.
PADDED_INPUT_IDS = [SRC_LANG, 17, 1, 33, 128, 2]
PADDED_DECODER_INPUT_IDS = [2, TGT_LANG, 1, 45, 9]

MAX_NEW_TOKENS = 12
MIN_GAP = 2e-3  # twice the 1e-3 asked for, for margin
MIN_GENERATED = 8  # free tokens after [2, tgt_lang] before eos, at least
MIN_DISTINCT = 4  # distinct free tokens, so a stuck loop (one token repeated) is not accepted
FIRST_SEED = 0
MAX_SEEDS = 200

# Standard deviations of the re-drawn weights. With tied embeddings a large embedding makes the
# decoder predict its own input token forever, and large projections make every step's output the
# same; these values keep the sinusoidal positions influential enough that greedy decoding moves on.
EMBED_STD = 0.02
WEIGHT_STD = 0.05
BIAS_STD = 0.02
LAYER_NORM_STD = 0.2  # around 1.0


def build(seed: int) -> M2M100ForConditionalGeneration:
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(M2M100Config(**CONFIG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + LAYER_NORM_STD * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(BIAS_STD * torch.randn_like(p))
            elif name == "model.shared.weight":
                p.copy_(EMBED_STD * torch.randn_like(p))
            else:
                p.copy_(WEIGHT_STD * torch.randn_like(p))
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr(), "LM head must stay tied"
    model.eval()
    return model.float()


def forward_logits(model, input_ids, decoder_input_ids) -> torch.Tensor:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([input_ids]),
            decoder_input_ids=torch.tensor([decoder_input_ids]),
            use_cache=False,
        )
    return out.logits[0]


def manual_greedy(model, input_ids):
    """Greedy decoding by full forward passes, returning ids and the smallest top-1/top-2 gap."""
    seq = [CONFIG["decoder_start_token_id"], TGT_LANG]
    min_gap = math.inf
    while len(seq) < 1 + MAX_NEW_TOKENS:
        last = forward_logits(model, input_ids, seq)[-1]
        top = torch.topk(last, 2)
        min_gap = min(min_gap, float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        seq.append(nxt)
        if nxt == CONFIG["eos_token_id"]:
            break
    return seq, min_gap


def hf_generate(model, input_ids):
    # Everything that could bend greedy decoding is switched off explicitly in the model's generation
    # config (which `generate` starts from), so that the Rust side's plain argmax loop is the same
    # algorithm.
    gen = model.generation_config
    for key, value in dict(
        do_sample=False,
        num_beams=1,
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        min_length=0,
        min_new_tokens=None,
        bad_words_ids=None,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        forced_eos_token_id=None,
        sequence_bias=None,
        exponential_decay_length_penalty=None,
        renormalize_logits=False,
        length_penalty=1.0,
        max_length=None,
    ).items():
        setattr(gen, key, value)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([input_ids]),
            forced_bos_token_id=TGT_LANG,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            num_beams=1,
        )
    return out[0].tolist()


def rounded(t: torch.Tensor) -> list[float]:
    return [float(f"{x:.7g}") for x in t.reshape(-1).tolist()]


def main() -> int:
    for seed in range(FIRST_SEED, FIRST_SEED + MAX_SEEDS):
        model = build(seed)
        seq, gap = manual_greedy(model, INPUT_IDS)
        generated = len(seq) - 2 - (1 if seq[-1] == CONFIG["eos_token_id"] else 0)
        distinct = len(set(seq[2:]))
        if gap <= MIN_GAP or generated < MIN_GENERATED or distinct < MIN_DISTINCT:
            print(f"seed {seed}: min gap {gap:.2e}, {generated} tokens before eos, {distinct} distinct; skipped")
            continue
        hf = hf_generate(model, INPUT_IDS)
        if hf != seq:
            print(f"seed {seed}: generate {hf} != manual greedy {seq}; skipped")
            continue
        break
    else:
        print("no seed satisfied the constraints", file=sys.stderr)
        return 1

    print(f"seed {seed}: min gap {gap:.4f}, output {hf}")
    os.makedirs(OUT_DIR, exist_ok=True)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    # save_pretrained may also write generation_config.json; the Rust side does not read it.
    extra = os.path.join(OUT_DIR, "generation_config.json")
    if os.path.exists(extra):
        os.remove(extra)

    saved = safetensors.torch.load_file(os.path.join(OUT_DIR, "model.safetensors"))
    print("saved tensors:", len(saved), "embedding names:", [k for k in saved if "shared" in k or "embed" in k or "lm_head" in k])

    logits = forward_logits(model, INPUT_IDS, DECODER_INPUT_IDS)
    padded = forward_logits(model, PADDED_INPUT_IDS, PADDED_DECODER_INPUT_IDS)
    expected = dict(
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        seed=seed,
        input_ids=INPUT_IDS,
        decoder_input_ids=DECODER_INPUT_IDS,
        logits_shape=list(logits.shape),
        logits=rounded(logits),
        padded=dict(
            input_ids=PADDED_INPUT_IDS,
            decoder_input_ids=PADDED_DECODER_INPUT_IDS,
            logits_shape=list(padded.shape),
            logits=rounded(padded),
        ),
        generate=dict(
            forced_bos_token_id=TGT_LANG,
            max_new_tokens=MAX_NEW_TOKENS,
            output_ids=hf,
            min_top2_gap=round(gap, 6),
        ),
    )
    with open(os.path.join(OUT_DIR, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    for name in sorted(os.listdir(OUT_DIR)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT_DIR, name))} bytes")

    # The same weights as NLLB's main branch ships them: a pickled state_dict in
    # pytorch_model.bin, with the tied embedding under all four of its names.
    pth_dir = os.path.join(os.path.dirname(OUT_DIR), "nllb-tiny-pth")
    os.makedirs(pth_dir, exist_ok=True)
    shutil.copy(os.path.join(OUT_DIR, "config.json"), pth_dir)
    torch.save(model.state_dict(), os.path.join(pth_dir, "pytorch_model.bin"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
