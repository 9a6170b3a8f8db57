"""Converts a llama-family GGUF into an mlx-lm model directory with the same
weights (MLX's affine-quantized form of the GGUF tensors, or dequantized f32
with --dequantize) and our tokenizer (exported by examples/export_tokenizer.rs).

    python bench/convert_gguf.py model.gguf out_dir [--dequantize]
"""

import json
import sys
from pathlib import Path

import mlx.core as mx

NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if base == "token_embd":
        return f"model.embed_tokens.{suffix}"
    if base == "output_norm":
        return f"model.norm.{suffix}"
    if base == "output":
        return f"lm_head.{suffix}"
    _, layer, part = base.split(".", 2)
    return f"model.layers.{layer}.{NAMES[part]}.{suffix}"


def scalar(meta, key, default=None):
    value = meta.get(key)
    return default if value is None else value.item()


def main(gguf: str, out: str, dequantize: bool) -> None:
    tensors, meta = mx.load(gguf, return_metadata=True)
    arch = str(meta["general.architecture"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, per_layer_bits = {}, {}
    for name, array in tensors.items():
        if name.endswith((".scales", ".biases")):
            continue
        base = name.rsplit(".", 1)[0]
        scales = tensors.get(f"{base}.scales")
        if scales is None:
            weights[hf_name(name)] = array.astype(mx.float32)
            continue
        biases = tensors[f"{base}.biases"]
        bits = array.shape[-1] * 32 // (scales.shape[-1] * 32)
        if dequantize:
            weights[hf_name(name)] = mx.dequantize(array, scales.astype(mx.float32), biases.astype(mx.float32), 32, bits)
        else:
            weights[hf_name(name)] = array
            weights[hf_name(f"{base}.scales")] = scales
            weights[hf_name(f"{base}.biases")] = biases
            per_layer_bits[hf_name(name).rsplit(".", 1)[0]] = bits
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights)
    config = {
        "model_type": "llama",
        "hidden_size": scalar(meta, f"{arch}.embedding_length"),
        "num_hidden_layers": scalar(meta, f"{arch}.block_count"),
        "intermediate_size": scalar(meta, f"{arch}.feed_forward_length"),
        "num_attention_heads": scalar(meta, f"{arch}.attention.head_count"),
        "num_key_value_heads": scalar(meta, f"{arch}.attention.head_count_kv"),
        "rms_norm_eps": scalar(meta, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": scalar(meta, f"{arch}.rope.freq_base", 10000.0),
        "vocab_size": int(tensors["token_embd.weight"].shape[0]),
        "max_position_embeddings": scalar(meta, f"{arch}.context_length"),
        # GGUF stores Q/K permuted for interleaved ("traditional") RoPE.
        "rope_traditional": True,
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    if per_layer_bits:
        quantization = {"group_size": 32, "bits": 4}
        for path, bits in per_layer_bits.items():
            if bits != 4:
                quantization[path] = {"group_size": 32, "bits": bits}
        config["quantization"] = quantization
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {out_dir} ({'dequantized f32' if dequantize else 'quantized'})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--dequantize" in sys.argv[3:])
