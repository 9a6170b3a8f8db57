"""Makes tiny random-weight checkpoints of every architecture we run, with
mlx-lm's own model classes, and mlx-lm's logits for them, so that
src/model/load/mlx_lm_tests.rs can hold our implementation of each
architecture against mlx-lm's:

  models/tiny/<name>-f32/       f32 weights as mlx-lm saves them (config.json,
                                model.safetensors + index, a 256-byte BPE
                                tokenizer.json, tokenizer_config.json)
  models/tiny/<name>-mlx-4bit/  the same model cast to bf16 and quantized by
                                mlx-lm (`quantize_model`, affine 4-bit), as
                                `mlx_lm.convert -q` writes it
  .../mlx_lm_logits.json        in each: for a few token-id sequences fed in
                                steps (a prefill, more prefill, decode steps),
                                mlx-lm's logits of the last position after
                                every step, through its own KV caches (gemma's
                                rotating ones included), computed in f32

    bench/.venv/bin/python scripts/make_tiny_checkpoints.py [--force]

Runs in a few seconds. Idempotent: skipped when models/tiny/STAMP holds this
script's hash (a changed script remakes everything).
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes, load_model, quantize_model, save_config, save_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tiny"
VOCAB = 320  # 256 byte tokens, 3 specials, the rest unused rows as real models have

# Shared shape: GQA (4 query heads over 2 key/value heads), a few layers.
BASE = {
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 2048,
    "bos_token_id": 256,
    "eos_token_id": 256,
}

# name -> (config, group size of the 4-bit directory). Each exercises what its
# architecture does differently; values are chosen so that a misread field
# changes the logits (e.g. head_dim unlike hidden / heads, an attention scale
# unlike head_dim^-1/2, rope_theta unlike the default).
ARCHS = {
    # SmolLM-like: tied embeddings.
    "llama": ({**BASE, "model_type": "llama", "rope_theta": 50000.0, "tie_word_embeddings": True}, 64),
    # Llama 3 RoPE scaling, with original_max_position_embeddings small enough
    # that the prompts reach all three regimes (kept, blended, scaled).
    "llama3": (
        {
            **BASE,
            "model_type": "llama",
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        },
        32,
    ),
    # Mistral: mlx-lm runs it as llama; heads wider than hidden / heads (as Nemo's).
    "mistral": ({**BASE, "model_type": "mistral", "head_dim": 24, "rope_theta": 1000000.0, "tie_word_embeddings": False, "sliding_window": None}, 64),
    # q/k/v biases, untied output.
    "qwen2": ({**BASE, "model_type": "qwen2", "rope_theta": 1000000.0, "tie_word_embeddings": False}, 64),
    # Per-head q/k RMS norms, head_dim narrower than hidden / heads.
    "qwen3": ({**BASE, "model_type": "qwen3", "head_dim": 8, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}, 32),
    # Fused qkv_proj and gate_up_proj.
    "phi3": ({**BASE, "model_type": "phi3", "rope_theta": 10000.0, "tie_word_embeddings": False}, 64),
    # Phi-4-mini's variant of phi3: RoPE over the leading part of each head only.
    "phi3-partial-rope": ({**BASE, "model_type": "phi3", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "tie_word_embeddings": True}, 64),
    # Five sliding-window layers then a global one; a window of 8 so that the
    # prompts cross it; two RoPE bases; sqrt(hidden) not exact in bf16 (96).
    "gemma3": (
        {
            **BASE,
            "model_type": "gemma3_text",
            "hidden_size": 96,
            "num_hidden_layers": 6,
            "intermediate_size": 160,
            "head_dim": 16,
            "query_pre_attn_scalar": 24,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "sliding_window": 8,
            "sliding_window_pattern": 6,
        },
        32,
    ),
}


def ids(n: int, seed: int) -> list[int]:
    """n byte-token ids, deterministic and varied."""
    return [(seed * 131 + i * 37 + (i * i) % 11) % 256 for i in range(n)]


# Each case: the token ids of each forward call, in order, through one cache.
CASES = [
    {"name": "long prompt, then decode", "steps": [ids(40, 1), [7], [200], [31]]},
    {"name": "prefill in two chunks, then decode", "steps": [ids(20, 2), ids(14, 3), [99], [5]]},
    {"name": "short prompt, then decode", "steps": [ids(3, 4), [42], [17], [250]]},
]


def gpt2_byte_chars() -> list[str]:
    """The printable character GPT-2's byte-level BPE writes for each byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer(path: Path) -> None:
    """A byte-level BPE of the 256 bytes (no merges) and three special tokens."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": 256 + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for i, s in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {c: i for i, c in enumerate(gpt2_byte_chars())},
            "merges": [],
        },
    }
    (path / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False})
    )


def randomize(model: nn.Module, gemma: bool) -> None:
    """Every parameter random (seeded by the caller): norms near their neutral
    value (1, or 0 for Gemma's `1 + w`), biases small, matrices as initialised."""

    def pick(path: str, p: mx.array) -> mx.array:
        if path.endswith("norm.weight"):
            return (0.0 if gemma else 1.0) + 0.3 * mx.random.normal(p.shape)
        if path.endswith(".bias"):
            return 0.2 * mx.random.normal(p.shape)
        if "embed_tokens" in path:
            return mx.random.normal(p.shape) * (0.5 if gemma else 1.0)
        return mx.random.uniform(-1.0, 1.0, p.shape) * (3.0 / p.shape[-1]) ** 0.5

    model.update(tree_unflatten([(k, pick(k, v)) for k, v in tree_flatten(model.parameters())]))
    mx.eval(model.parameters())


def reference_logits(path: Path) -> dict:
    """mlx-lm's logits for CASES on the directory as mlx-lm loads it, in f32."""
    model, _ = load_model(path)
    model.update(tree_map(lambda p: p.astype(mx.float32) if p.dtype == mx.bfloat16 else p, model.parameters()))
    cases = []
    for case in CASES:
        cache = make_prompt_cache(model)
        logits = []
        for step in case["steps"]:
            out = model(mx.array([step]), cache=cache)[0, -1].astype(mx.float32)
            mx.eval(out)
            logits.append([round(float(x), 6) for x in out.tolist()])
        cases.append({"name": case["name"], "steps": case["steps"], "logits": logits})
    return {"cases": cases}


def make(name: str, config: dict, group_size: int, seed: int) -> None:
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    mx.random.seed(seed)
    randomize(model, config["model_type"].startswith("gemma"))
    if config["model_type"] == "gemma3_text":
        model.sanitize({})  # no lm_head: tied, as Gemma 3 is
    for suffix in ["f32", "mlx-4bit"]:
        path = OUT / f"{name}-{suffix}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        saved = dict(config)
        if suffix == "mlx-4bit":
            model.set_dtype(mx.bfloat16)
            model, saved = quantize_model(model, saved, group_size, 4)
        save_model(path, model)
        save_config(saved, path / "config.json")
        write_tokenizer(path)
        (path / "mlx_lm_logits.json").write_text(json.dumps(reference_logits(path)))
        print(f"{path.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--force", action="store_true", help="remake even when up to date")
    args = ap.parse_args()
    stamp = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    if not args.force and (OUT / "STAMP").exists() and (OUT / "STAMP").read_text().strip() == stamp:
        print("tiny checkpoints are up to date", file=sys.stderr)
        return
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for seed, (name, (config, group_size)) in enumerate(ARCHS.items()):
        make(name, config, group_size, seed + 1)
    (OUT / "STAMP").write_text(stamp + "\n")


if __name__ == "__main__":
    main()
