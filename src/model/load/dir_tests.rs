//! Model directories: config.json parsing, quantization overrides, the name
//! map, a tiny generated directory (float and MLX 4-bit) that loads and runs,
//! and hostile safetensors headers (forged and randomly mutated) that must be
//! `MODEL_LOAD_FAILED`, never a panic or an allocation out of proportion.

use std::path::{Path, PathBuf};

use half::bf16;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::{error::ErrorCode, model::KvCache};

const SMOL_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
  "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
  "intermediate_size": 1536, "rms_norm_eps": 1e-05, "rope_theta": 100000,
  "rope_scaling": null, "max_position_embeddings": 8192, "vocab_size": 49152,
  "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
  "quantization": {"group_size": 64, "bits": 4, "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
                   "model.embed_tokens": false}
}"#;

#[test]
fn config_of_a_llama_with_quantization_overrides() {
    let c = Config::parse(SMOL_CONFIG).unwrap();
    assert_eq!((c.arch, c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn), ("llama", 576, 30, 9, 3, 64, 1536));
    assert_eq!((c.rope_theta, c.rms_eps, c.context_length, c.vocab_size), (100000.0, 1e-5, 8192, 49152));
    assert_eq!((c.bos, c.eos.as_slice()), (Some(1), &[2u32][..]));
    let q = c.quantization.unwrap();
    assert_eq!((q.group_size, q.bits), (64, 4));
    assert_eq!(q.of("model.layers.0.mlp.down_proj"), Some((32, 8)));
    assert_eq!(q.of("model.layers.1.mlp.down_proj"), Some((64, 4)));
    assert_eq!(q.of("model.embed_tokens"), None);
}

#[test]
fn config_of_gemma3_text() {
    let c = Config::parse(
        r#"{"model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048, "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
            "query_pre_attn_scalar": 256, "max_position_embeddings": 32768, "vocab_size": 262144,
            "layer_types": ["sliding_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention",
                            "sliding_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention",
                            "sliding_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention"],
            "eos_token_id": [1, 106]}"#,
    )
    .unwrap();
    assert_eq!((c.arch, c.head_dim, c.sliding_window, c.query_pre_attn_scalar), ("gemma3", 256, Some(512), Some(256.0)));
    assert_eq!(c.eos, [1, 106]);
    // Any other layout of global layers is refused, not silently run as 1 in 6.
    let shifted = r#"{"model_type": "gemma3_text", "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 8, "vocab_size": 4, "layer_types": ["full_attention", "sliding_attention"]}"#;
    assert!(Config::parse(shifted).unwrap_err().contains("layer_types"));
}

#[test]
fn config_refusals_name_the_reason() {
    let bad = |json: &str, why: &str| {
        let e = Config::parse(json).unwrap_err();
        assert!(e.contains(why), "{e} does not say {why}");
    };
    bad(r#"{"model_type": "gpt_neox"}"#, "not supported (llama, mistral, qwen2, qwen3, phi3, gemma3_text)");
    bad(r#"{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8}"#, "vocab_size is missing");
    bad(r#"{"model_type": "llama", "hidden_size": -8}"#, "hidden_size = -8 is not a count");
    bad(r#"{"model_type": "llama", "hidden_size": 4294967296}"#, "is not a count");
    bad(r#"{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 3, "num_hidden_layers": 1}"#, "multiple");
    let q = |quant: &str| format!(r#"{{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 4, "quantization": {quant}}}"#);
    bad(&q(r#"{"group_size": 64, "bits": 7}"#), "7-bit");
    bad(&q(r#"{"group_size": 16, "bits": 4}"#), "group 16");
    bad(&q(r#"{"group_size": 64, "bits": 4, "mode": "mxfp4"}"#), "mode");
    bad(&q(r#"{"group_size": 64, "bits": 4, "model.layers.0.mlp.up_proj": {"bits": 4}}"#), "group_size");
    bad(r#"{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4}}"#, "yarn");
}

#[test]
fn llama3_rope_scaling_keeps_high_frequencies_and_stretches_low_ones() {
    let s = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let (_, periods) = rope_scaling(Some(&s), 500000.0, 128).unwrap();
    let p = periods.unwrap();
    assert_eq!(p.len(), 64);
    assert_eq!(p[0], 1.0);
    let last = 500000f32.powf(126.0 / 128.0);
    assert!((p[63] / last - 8.0).abs() < 1e-4);
    assert!(p.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn gguf_names_map_to_hf_names() {
    assert_eq!(hf_name("token_embd", "llama"), "model.embed_tokens");
    assert_eq!(hf_name("blk.3.attn_q", "llama"), "model.layers.3.self_attn.q_proj");
    assert_eq!(hf_name("blk.3.attn_q.bias", "qwen2"), "model.layers.3.self_attn.q_proj.bias");
    assert_eq!(hf_name("blk.0.ffn_norm.weight", "llama"), "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(hf_name("blk.0.ffn_norm.weight", "gemma3"), "model.layers.0.pre_feedforward_layernorm.weight");
    assert_eq!(hf_name("blk.0.post_attention_norm.weight", "gemma3"), "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(hf_name("blk.0.post_ffw_norm.weight", "gemma3"), "model.layers.0.post_feedforward_layernorm.weight");
    assert_eq!(hf_name("blk.1.attn_k_norm.weight", "qwen3"), "model.layers.1.self_attn.k_norm.weight");
    assert_eq!(hf_name("blk.1.ffn_up", "phi3"), "model.layers.1.mlp.gate_up_proj");
    assert_eq!(hf_name("output_norm.weight", "llama"), "model.norm.weight");
    assert_eq!(hf_name("output", "llama"), "lm_head");
}

// ---- a tiny generated directory ----

const HIDDEN: usize = 32;
const FFN: usize = 64;
const VOCAB: usize = 4;

/// One tensor of a safetensors file: name, dtype, shape, bytes.
type Entry = (String, &'static str, Vec<usize>, Vec<u8>);

/// A safetensors file of `entries` in order, offsets contiguous.
fn safetensors(entries: &[Entry]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, dtype, shape, bytes) in entries {
        header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + bytes.len()]}));
        at += bytes.len();
    }
    let header = serde_json::to_string(&serde_json::Value::Object(header)).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for e in entries {
        out.extend_from_slice(&e.3);
    }
    out
}

fn bf16s(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(|v| bf16::from_f32(v).to_le_bytes()).collect()
}

/// The tensors of a one-layer llama; quantized: linears as MLX 4-bit, group 32.
fn tensors(quantized: bool, rng: &mut StdRng) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut matrix = |out: &mut Vec<Entry>, name: &str, rows: usize, cols: usize| {
        if quantized {
            let words: Vec<u8> = (0..rows * cols / 8).flat_map(|_| rng.random::<u32>().to_le_bytes()).collect();
            out.push((format!("{name}.weight"), "U32", vec![rows, cols / 8], words));
            let groups = rows * cols / 32;
            out.push((format!("{name}.scales"), "BF16", vec![rows, cols / 32], bf16s((0..groups).map(|_| rng.random_range(0.01..0.05)))));
            out.push((format!("{name}.biases"), "BF16", vec![rows, cols / 32], bf16s((0..groups).map(|_| rng.random_range(-0.2..0.0)))));
        } else {
            out.push((format!("{name}.weight"), "BF16", vec![rows, cols], bf16s((0..rows * cols).map(|_| rng.random_range(-0.2..0.2)))));
        }
    };
    matrix(&mut out, "model.embed_tokens", VOCAB, HIDDEN);
    let p = "model.layers.0";
    matrix(&mut out, &format!("{p}.self_attn.q_proj"), HIDDEN, HIDDEN);
    matrix(&mut out, &format!("{p}.self_attn.k_proj"), HIDDEN / 2, HIDDEN);
    matrix(&mut out, &format!("{p}.self_attn.v_proj"), HIDDEN / 2, HIDDEN);
    matrix(&mut out, &format!("{p}.self_attn.o_proj"), HIDDEN, HIDDEN);
    matrix(&mut out, &format!("{p}.mlp.gate_proj"), FFN, HIDDEN);
    matrix(&mut out, &format!("{p}.mlp.up_proj"), FFN, HIDDEN);
    matrix(&mut out, &format!("{p}.mlp.down_proj"), HIDDEN, FFN);
    for norm in [format!("{p}.input_layernorm.weight"), format!("{p}.post_attention_layernorm.weight"), "model.norm.weight".into()] {
        out.push((norm, "BF16", vec![HIDDEN], bf16s((0..HIDDEN).map(|_| 1.0))));
    }
    out
}

fn config(quantized: bool) -> String {
    let mut c = serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": FFN, "vocab_size": VOCAB, "eos_token_id": 3,
        "max_position_embeddings": 64, "tie_word_embeddings": true
    });
    if quantized {
        c["quantization"] = serde_json::json!({"group_size": 32, "bits": 4});
    }
    c.to_string()
}

const TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 3, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
  "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "c": 2, "</s>": 3}, "unk_token": "a"}}"#;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlx-serving-dir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_dir(dir: &Path, config: &str, weights: &[u8]) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
}

fn load(dir: &Path, format: WeightFormat) -> Result<LoadedModel> {
    super::super::load_model(dir, format)
}

fn logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let tokens = Array::from_slice(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, ids.len() as i32]);
    let mut cache = KvCache::new(m.model.layers());
    let out = m.model.forward(&tokens, &mut cache).unwrap().as_dtype(mlx_rs::Dtype::Float32).unwrap();
    out.as_slice::<f32>().to_vec()
}

#[test]
fn a_tiny_directory_loads_float_and_quantized_and_runs() {
    let mut rng = StdRng::seed_from_u64(7);
    for quantized in [false, true] {
        let dir = temp_dir(if quantized { "q4" } else { "bf16" });
        write_dir(&dir, &config(quantized), &safetensors(&tensors(quantized, &mut rng)));
        let m = load(&dir, WeightFormat::Quantized).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.info.format, if quantized { "mlx" } else { "safetensors" });
        assert_eq!(m.info.quantization, if quantized { "4-bit g32" } else { "bf16" });
        assert_eq!(m.info.architecture, "llama");
        let matrices = (VOCAB * HIDDEN + 2 * HIDDEN * HIDDEN + HIDDEN * HIDDEN + 3 * FFN * HIDDEN) as u64;
        assert_eq!(m.info.parameters, matrices + 3 * HIDDEN as u64);
        assert!(m.tokenizer.is_end(3));
        assert_eq!(m.tokenizer.encode("a b c").unwrap(), [0, 1, 2]);
        let out = logits(&m, &[0, 1, 2]);
        assert_eq!(out.len(), VOCAB);
        assert!(out.iter().all(|x| x.is_finite()));
        // Quantized weights kept packed and multiplied by our kernel give the
        // logits of the same weights dequantized at load.
        let dense = logits(&load(&dir, WeightFormat::Dense).unwrap(), &[0, 1, 2]);
        for (a, b) in out.iter().zip(&dense) {
            assert!((a - b).abs() < 2e-2 * (1.0 + b.abs()), "{out:?} vs {dense:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Loads `weights` (as model.safetensors) beside a valid config and tokenizer;
/// the error's message, asserting it is `MODEL_LOAD_FAILED` and that the
/// Rust allocations stayed within a small multiple of the file.
fn refused(dir: &Path, config: &str, weights: &[u8]) -> Option<String> {
    write_dir(dir, config, weights);
    let (result, peak) = super::super::hostile_tests::peak_allocation(|| load(dir, WeightFormat::Quantized));
    assert!(peak < 64 * weights.len() + (8 << 20), "allocated {peak} bytes for a {}-byte file", weights.len());
    match result {
        Ok(_) => None,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::ModelLoadFailed, "{e}");
            Some(e.message)
        }
    }
}

#[test]
fn forged_safetensors_headers_are_refused() {
    let dir = temp_dir("forged");
    let mut rng = StdRng::seed_from_u64(1);
    let valid = tensors(true, &mut rng);
    let config = config(true);
    let expect = |weights: &[u8], why: &str| {
        let e = refused(&dir, &config, weights).unwrap_or_else(|| panic!("loaded, expected '{why}'"));
        assert!(e.contains(why), "'{e}' does not say '{why}'");
    };
    let file = safetensors(&valid);
    // Header lengths: absurd, past the end, and zero.
    for n in [u64::MAX, 1 << 40, file.len() as u64, 0] {
        let mut f = file.clone();
        f[..8].copy_from_slice(&n.to_le_bytes());
        expect(&f, "not a valid safetensors file");
    }
    expect(&file[..file.len() - 1], "not a valid safetensors file");
    expect(&file[..5], "not a valid safetensors file");
    // Offsets: overlapping, out of the file.
    let header_of = |entries: &[Entry], edit: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let f = safetensors(entries);
        let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        let mut h: serde_json::Value = serde_json::from_slice(&f[8..8 + n]).unwrap();
        edit(&mut h);
        let h = serde_json::to_string(&h).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&f[8 + n..]);
        out
    };
    let first = valid[0].0.clone();
    expect(&header_of(&valid, &|h| h[&first]["data_offsets"] = serde_json::json!([0u64, 1u64 << 40])), "not a valid safetensors file");
    expect(&header_of(&valid, &|h| h[&first]["data_offsets"] = serde_json::json!([4, 4 + valid[0].3.len()])), "not a valid safetensors file");
    expect(&header_of(&valid, &|h| h[&first]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40])), "not a valid safetensors file");
    expect(&header_of(&valid, &|h| h[&first]["dtype"] = serde_json::json!("Q4")), "not a valid safetensors file");
    // Valid containers, wrong contents: dtype, shape, a missing tensor.
    let mut wrong = valid.clone();
    let norm = wrong.iter().position(|e| e.0.ends_with("input_layernorm.weight")).unwrap();
    wrong[norm].1 = "I16";
    expect(&safetensors(&wrong), "dtype I16, expected F32, F16 or BF16");
    let mut wrong = valid.clone();
    wrong[0].1 = "F32";
    expect(&safetensors(&wrong), "dtype F32, expected U32");
    let mut wrong = valid.clone();
    wrong[0].2 = vec![VOCAB / 2, HIDDEN / 4];
    expect(&safetensors(&wrong), "has shape [2, 8], expected [4, 4]");
    let missing: Vec<Entry> = valid.iter().filter(|e| !e.0.ends_with("o_proj.biases")).cloned().collect();
    expect(&safetensors(&missing), "tensor model.layers.0.self_attn.o_proj.biases is missing");
    // A config claiming far more than the file holds is refused before allocating.
    let huge = config.replace(&format!("\"hidden_size\":{HIDDEN}"), "\"hidden_size\":2000000000");
    assert_ne!(huge, config);
    let e = refused(&dir, &huge, &file).expect("refused");
    assert!(e.contains("has shape"), "{e}");
    let many = config.replace("\"num_hidden_layers\":1", "\"num_hidden_layers\":1000000");
    let e = refused(&dir, &many, &file).expect("refused");
    assert!(e.contains("only"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_header_mutations_are_errors_or_loads_never_panics() {
    let dir = temp_dir("mutations");
    let mut rng = StdRng::seed_from_u64(2);
    let file = safetensors(&tensors(true, &mut rng));
    let config = config(true);
    let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let (mut failed, mut loaded) = (0, 0);
    for _ in 0..300 {
        let mut f = file.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..header_end);
            // Digits and JSON punctuation make mutations that still parse more often.
            f[at] = if rng.random_bool(0.5) { b"0123456789[],:\"{}"[rng.random_range(0..17)] } else { rng.random() };
        }
        match refused(&dir, &config, &f) {
            Some(_) => failed += 1,
            None => loaded += 1,
        }
    }
    assert!(failed > 200, "{failed} failed, {loaded} loaded");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shard_index_names_only_files_of_the_directory() {
    for bad in ["../x.safetensors", "/etc/passwd", "a/b.safetensors", ".hidden.safetensors", "model.bin"] {
        let json = format!(r#"{{"weight_map": {{"model.norm.weight": "{bad}"}}}}"#);
        assert!(safetensors_file::index(&json).is_err(), "{bad}");
    }
    let ok = safetensors_file::index(r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}"#).unwrap();
    assert_eq!(ok["a"], "model-00001-of-00002.safetensors");
}

#[test]
fn fingerprint_follows_config_and_headers_not_the_path() {
    let mut rng = StdRng::seed_from_u64(3);
    let (a, b) = (temp_dir("fp-a"), temp_dir("fp-b"));
    let file = safetensors(&tensors(false, &mut rng));
    write_dir(&a, &config(false), &file);
    write_dir(&b, &config(false), &file);
    assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
    std::fs::write(b.join("config.json"), config(false).replace("\"max_position_embeddings\":64", "\"max_position_embeddings\":65")).unwrap();
    assert_ne!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}
