"""Writes an MLX 4-bit model directory of a llama-family shape with random
weights, for timing where real weights of that size cannot be fetched (a GPU
machine without internet). The tokenizer files come from an existing model
directory whose vocabulary size the config takes.

    python scripts/random_mlx_model.py out_dir --shape llama-3.2-1b --tokenizer models/SmolLM2-135M-Instruct-mlx-4bit

Timings on it are of the shape, not of a model: greedy decoding of random
weights never ends early (the benchmarks set token counts anyway).
"""

import argparse
import json
import shutil
from pathlib import Path

import mlx.core as mx

SHAPES = {
    # hidden, layers, heads, kv heads, head dim, intermediate, rope theta
    "smollm2-135m": (576, 30, 9, 3, 64, 1536, 100000.0),
    "llama-3.2-1b": (2048, 16, 32, 8, 64, 8192, 500000.0),
    "llama-3.2-3b": (3072, 28, 24, 8, 128, 8192, 500000.0),
    "llama-3.1-8b": (4096, 32, 32, 8, 128, 14336, 500000.0),
}
GROUP, BITS = 64, 4


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    p.add_argument("--tokenizer", required=True, help="a model directory holding tokenizer.json")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    hidden, layers, heads, kv_heads, head_dim, inter, theta = SHAPES[a.shape]
    src, out = Path(a.tokenizer), Path(a.out)
    vocab = json.loads((src / "config.json").read_text())["vocab_size"] if (src / "config.json").exists() else 49152
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(a.seed)

    weights = {}

    def linear(name, rows, cols):
        w = (mx.random.normal((rows, cols)) * 0.02).astype(mx.bfloat16)
        q, s, b = mx.quantize(w, GROUP, BITS)
        mx.eval(q, s, b)
        weights[f"{name}.weight"], weights[f"{name}.scales"], weights[f"{name}.biases"] = q, s, b

    linear("model.embed_tokens", vocab, hidden)
    for i in range(layers):
        base = f"model.layers.{i}"
        linear(f"{base}.self_attn.q_proj", heads * head_dim, hidden)
        linear(f"{base}.self_attn.k_proj", kv_heads * head_dim, hidden)
        linear(f"{base}.self_attn.v_proj", kv_heads * head_dim, hidden)
        linear(f"{base}.self_attn.o_proj", hidden, heads * head_dim)
        linear(f"{base}.mlp.gate_proj", inter, hidden)
        linear(f"{base}.mlp.up_proj", inter, hidden)
        linear(f"{base}.mlp.down_proj", hidden, inter)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            weights[f"{base}.{norm}.weight"] = mx.ones((hidden,), dtype=mx.bfloat16)
    weights["model.norm.weight"] = mx.ones((hidden,), dtype=mx.bfloat16)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})

    quant = {"group_size": GROUP, "bits": BITS, "mode": "affine"}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": inter,
        "rope_theta": theta,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "vocab_size": vocab,
        "bos_token_id": 1,
        "eos_token_id": [2],
        "torch_dtype": "bfloat16",
        "quantization": quant,
        "quantization_config": quant,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / f).exists():
            shutil.copy(src / f, out / f)
    params = sum(v.size * (32 // BITS if v.dtype == mx.uint32 else 1) for k, v in weights.items() if not k.endswith((".scales", ".biases")))
    print(f"{out}: {a.shape}, {params / 1e9:.2f}B parameters, {BITS}-bit (group {GROUP}), vocab {vocab}")


if __name__ == "__main__":
    main()
