"""Reference outputs for the Rust Aya (CohereForCausalLM) port in workload/src/models/aya.rs.

Builds two tiny, randomly initialised Cohere checkpoints with Hugging Face
transformers (no hub access needed) and records, for each, the logits of one
forward pass and a greedy generation. workload/tests/parity_aya.rs replays them.

Run from the repository root (by hand; CI only reads the committed fixtures):

    /work/venv-parity/bin/python workload/parity/aya.py

It rewrites workload/tests/fixtures/aya-tiny/ and
workload/tests/fixtures/aya-tiny-qknorm/, each holding config.json,
model.safetensors and expected.json.

Random weights make near-ties in the argmax likely, and a tie would make the
greedy comparison depend on rounding rather than on the port being right. So the
script checks that at every greedy step the gap between the best and the second
best logit is above MIN_GAP, and searches over seeds until that holds and the
generation is long enough to mean something.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import safetensors.torch
import torch
import transformers
from transformers import CohereConfig, CohereForCausalLM, GenerationConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

MIN_GAP = 1e-3
# Seeds are searched for a wider margin than MIN_GAP, so the fixture does not sit
# just above the bar.
SEARCH_GAP = 1e-2
MAX_NEW_TOKENS = 12
# Starts with bos (5) like a real Cohere chat prompt; the other ids are arbitrary.
INPUT_IDS = [5, 17, 42, 99, 3, 200, 131, 64, 7, 250]

BASE_CONFIG = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA: two query heads share each key/value head
    max_position_embeddings=128,
    rope_theta=10000.0,
    layer_norm_eps=1e-5,
    logit_scale=0.0625,
    tie_word_embeddings=True,
    bos_token_id=5,
    eos_token_id=255,
    pad_token_id=0,
    hidden_act="silu",
    # HF's default 0.02 gives logits of order 1e-2 at this size, where every
    # argmax is a near-tie; a larger spread makes the logits informative.
    initializer_range=0.25,
)


def perturb_norms(model, generator):
    """HF initialises every CohereLayerNorm weight to ones, which would hide a
    port that ignores or mis-shapes them (the qk-norm weight is per head)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                noise = torch.randn(param.shape, generator=generator)
                param.copy_(1.0 + 0.3 * noise)


def greedy_with_gaps(model, input_ids, max_new_tokens, eos_ids):
    """Greedy decoding by full forward passes; returns new ids and the smallest
    top-1/top-2 logit gap seen."""
    ids = list(input_ids)
    new = []
    min_gap = float("inf")
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            top2 = torch.topk(logits, 2).values
            min_gap = min(min_gap, float(top2[0] - top2[1]))
            nxt = int(torch.argmax(logits))
            ids.append(nxt)
            new.append(nxt)
            if nxt in eos_ids:
                break
    return new, min_gap


def build(name, extra, pick_eos_from_trajectory):
    out_dir = os.path.join(FIXTURES, name)
    for seed in range(1000):
        torch.manual_seed(seed)
        config = CohereConfig(**{**BASE_CONFIG, **extra})
        model = CohereForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32)
        perturb_norms(model, torch.Generator().manual_seed(seed + 10_000))
        model.eval()

        eos_ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        new, gap = greedy_with_gaps(model, INPUT_IDS, MAX_NEW_TOKENS, eos_ids)
        if gap <= SEARCH_GAP or len(new) < MAX_NEW_TOKENS or len(set(new)) < 4:
            continue
        if pick_eos_from_trajectory:
            # Make one of the generated tokens an eos so that this fixture also
            # covers stopping on eos (inclusive) with a list of eos ids, while
            # still generating a fair number of tokens first.
            stop_at = next((i for i in range(6, MAX_NEW_TOKENS - 1) if new[i] not in new[:i]), None)
            if stop_at is None:
                continue
            eos_ids = [config.eos_token_id, new[stop_at]]
            config.eos_token_id = eos_ids
        break
    else:
        raise SystemExit(f"{name}: no seed gave a clear greedy trajectory")

    input_ids = torch.tensor([INPUT_IDS])
    with torch.no_grad():
        logits = model(input_ids).logits[0].float()

    # A fresh GenerationConfig so no defaults carried by the model (repetition
    # penalty, min length, sampling) can change plain greedy decoding.
    gen_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS,
        eos_token_id=eos_ids,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
    )
    with torch.no_grad():
        output = model.generate(input_ids, generation_config=gen_config)
    output_ids = output[0].tolist()

    manual, gap = greedy_with_gaps(model, INPUT_IDS, MAX_NEW_TOKENS, eos_ids)
    assert output_ids == INPUT_IDS + manual, (output_ids, manual)
    assert gap > MIN_GAP, gap

    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(out_dir, f))

    saved = safetensors.torch.load_file(os.path.join(out_dir, "model.safetensors"))
    assert "model.embed_tokens.weight" in saved, sorted(saved)

    eos_record = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    expected = {
        "input_ids": INPUT_IDS,
        "logits_shape": list(logits.shape),
        "logits": [float(x) for x in logits.flatten().numpy().astype(np.float32)],
        "generate": {
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_id": eos_record,
            "output_ids": output_ids,
        },
        "min_top2_gap": gap,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": seed,
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")

    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
    print(
        f"{name}: seed {seed}, {len(output_ids) - len(INPUT_IDS)} new tokens {output_ids[len(INPUT_IDS):]}, "
        f"eos {eos_record}, min top-2 gap {gap:.4f}, logit std {float(logits.std()):.3f}, sizes {sizes}"
    )


def main():
    torch.set_grad_enabled(False)
    build("aya-tiny", {}, pick_eos_from_trajectory=False)
    build("aya-tiny-qknorm", {"use_qk_norm": True}, pick_eos_from_trajectory=True)


if __name__ == "__main__":
    main()
