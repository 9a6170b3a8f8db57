//! Writes a GGUF model as a Hugging Face style directory of bf16 weights
//! (our dequantization of every tensor, under HF names and conventions),
//! with config.json, generation_config.json, tokenizer.json and
//! tokenizer_config.json, for `scripts/make_mlx_model.py` (which then makes
//! an MLX-quantized directory of it with mlx-lm) and the model-directory tests.
//!
//!   cargo run --release --example export_hf -- model.gguf out_dir/
//!
//! HF conventions differ from llama.cpp's in two places: llama's q/k rows
//! are stored as trained (llama.cpp permutes them for RoPE over adjacent
//! pairs; undone here), and Gemma's norm weights are stored without the +1
//! (llama.cpp adds it; subtracted here).

use std::{collections::BTreeMap, path::PathBuf};

use half::bf16;
use mlx_serving::model::{
    load::{dir::hf_name, gguf::Gguf},
    load_gguf, WeightFormat,
};
use serde_json::{json, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: export_hf <model.gguf> <out_dir>";
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let gguf = Gguf::open(&path)?;
    let arch = gguf.get("general.architecture").and_then(|v| match v {
        mlx_serving::model::load::gguf::Value::String(s) => Some(s.clone()),
        _ => None,
    });
    let arch = arch.ok_or("no general.architecture")?;
    let (model_type, builder) = match arch.as_str() {
        "llama" | "smollm" => ("llama", "llama"),
        "qwen2" => ("qwen2", "qwen2"),
        "gemma3" => ("gemma3_text", "gemma3"),
        other => return Err(format!("architecture {other} is not exported").into()),
    };
    let num = |key: &str| gguf.get(&format!("{arch}.{key}")).and_then(|v| v.as_f64());
    let heads = num("attention.head_count").ok_or("no head count")? as usize;
    let kv_heads = num("attention.head_count_kv").map_or(heads, |n| n as usize);
    let hidden = num("embedding_length").ok_or("no embedding_length")? as usize;
    let head_dim = num("attention.key_length").map_or(hidden / heads, |n| n as usize);

    // Weights, bf16, sorted by name.
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for t in gguf.tensors() {
        let mut values = gguf.dequantize(t)?;
        let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
        let name = hf_name(&t.name, builder);
        if builder == "llama" && (t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight")) {
            let n = if t.name.ends_with("attn_q.weight") { heads } else { kv_heads };
            values = unpermute(&values, n, head_dim, shape[1]);
        }
        if builder == "gemma3" && t.name.ends_with("norm.weight") {
            values.iter_mut().for_each(|x| *x -= 1.0);
        }
        let bytes = values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
        tensors.insert(name, (shape, bytes));
    }
    std::fs::create_dir_all(&out)?;
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, (shape, bytes)) in &tensors {
        header.insert(name.clone(), json!({"dtype": "BF16", "shape": shape, "data_offsets": [at, at + bytes.len()]}));
        at += bytes.len();
    }
    let header = serde_json::to_string(&Value::Object(header))?;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    for (_, bytes) in tensors.values() {
        file.extend_from_slice(bytes);
    }
    std::fs::write(out.join("model.safetensors"), file)?;

    // Tokenizer and template as we build them from the GGUF.
    let model = load_gguf(&path, WeightFormat::Quantized)?;
    let t = &model.tokenizer;
    let id = |key: &str| gguf.get(key).and_then(|v| v.as_f64()).map(|v| v as u64);
    let (bos, eos, eot) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.eot_token_id"));
    let add_bos = gguf.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_f64()).is_some_and(|v| v != 0.0);
    let mut tokenizer: Value = serde_json::from_str(&t.to_json()?)?;
    if let (true, Some(bos)) = (add_bos, bos) {
        // As HF tokenizers say it: the BOS in the post-processor's template
        // (transformers moves `add_bos_token` there when it rewrites the files).
        let text = t.bos_text();
        tokenizer["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {text.clone(): {"id": text, "ids": [bos], "tokens": [text]}},
        });
    }
    std::fs::write(out.join("tokenizer.json"), serde_json::to_string(&tokenizer)?)?;
    let tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": t.bos_text(),
        "eos_token": t.eos_text(),
        "chat_template": model.template_source,
        "add_bos_token": add_bos,
        "clean_up_tokenization_spaces": false,
    });
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer_config)?)?;
    let ends: Vec<u64> = eos.into_iter().chain(eot).collect();
    std::fs::write(out.join("generation_config.json"), serde_json::to_string_pretty(&json!({"bos_token_id": bos, "eos_token_id": ends}))?)?;

    let info = &model.info;
    let mut config = json!({
        "architectures": [match builder { "gemma3" => "Gemma3ForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => "LlamaForCausalLM" }],
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": info.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": num("feed_forward_length").map(|n| n as u64),
        "rms_norm_eps": num("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        "rope_theta": num("rope.freq_base").unwrap_or(10000.0),
        "max_position_embeddings": info.context_length,
        "vocab_size": info.vocab_size,
        "tie_word_embeddings": gguf.tensor("output.weight").is_none(),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "bfloat16",
    });
    if builder == "gemma3" {
        config["sliding_window"] = json!(num("attention.sliding_window").map(|n| n as u64));
        config["sliding_window_pattern"] = json!(6);
        config["rope_local_base_freq"] = json!(10000.0);
        config["query_pre_attn_scalar"] = json!(head_dim);
        config["hidden_activation"] = json!("gelu_pytorch_tanh");
    }
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    println!("wrote {} ({} tensors, bf16)", out.display(), tensors.len());
    Ok(())
}

/// Undoes llama.cpp's permutation of q/k rows: within each head, GGUF row
/// `2i + j` (pair i, half j) is HF row `j * head_dim/2 + i`.
fn unpermute(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    out
}
