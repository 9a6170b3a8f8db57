//! Architectures no model file here exercises (phi3, qwen3, llama 3's RoPE
//! scaling), on tiny synthetic GGUF files with random f32 weights. Each is
//! checked against an equivalent file in a layout that is verified against
//! llama.cpp on real weights (qwen2, llama), or shown to take effect. What
//! this cannot show is that the real models mean the same by their tensors.

use std::path::PathBuf;

use mlx_rs::Array;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    blocks::BlockType,
    hostile_tests::{array, string, Builder},
    load_gguf,
};
use crate::model::{KvCache, Model, WeightFormat};

const HIDDEN: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const FFN: u64 = 96;
const LAYERS: usize = 2;
const VOCAB: u64 = 40;

/// A tensor as GGUF lists it: dims innermost first, values row-major.
struct T {
    name: String,
    dims: Vec<u64>,
    values: Vec<f32>,
}

fn random(rng: &mut StdRng, n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() - 0.5) * scale).collect()
}

/// Weights of a llama-layout model with `head_dim`-wide heads, split q/k/v and gate/up.
fn weights(seed: u64, head_dim: u64) -> Vec<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (q, kv) = (HEADS * head_dim, KV_HEADS * head_dim);
    let mut out = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, scale: f32, rng: &mut StdRng| {
        let n = dims.iter().product();
        let values = if name.ends_with("norm.weight") { random(rng, n, 0.2).iter().map(|v| v + 1.0).collect() } else { random(rng, n, scale) };
        out.push(T { name, dims, values });
    };
    add("token_embd.weight".into(), vec![HIDDEN, VOCAB], 2.0, &mut rng);
    add("output.weight".into(), vec![HIDDEN, VOCAB], 0.5, &mut rng);
    add("output_norm.weight".into(), vec![HIDDEN], 0.0, &mut rng);
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        add(format!("{p}.attn_norm.weight"), vec![HIDDEN], 0.0, &mut rng);
        add(format!("{p}.attn_q.weight"), vec![HIDDEN, q], 0.5, &mut rng);
        add(format!("{p}.attn_k.weight"), vec![HIDDEN, kv], 0.5, &mut rng);
        add(format!("{p}.attn_v.weight"), vec![HIDDEN, kv], 0.5, &mut rng);
        add(format!("{p}.attn_output.weight"), vec![q, HIDDEN], 0.5, &mut rng);
        add(format!("{p}.ffn_norm.weight"), vec![HIDDEN], 0.0, &mut rng);
        add(format!("{p}.ffn_gate.weight"), vec![HIDDEN, FFN], 0.5, &mut rng);
        add(format!("{p}.ffn_up.weight"), vec![HIDDEN, FFN], 0.5, &mut rng);
        add(format!("{p}.ffn_down.weight"), vec![FFN, HIDDEN], 0.5, &mut rng);
    }
    out
}

/// Replaces `parts` (same row width) by one tensor `name` of their rows in order.
fn fuse(ts: &mut Vec<T>, parts: &[String], name: String) {
    let mut values = Vec::new();
    let mut rows = 0;
    let width = ts.iter().find(|t| t.name == parts[0]).expect("part").dims[0];
    for part in parts {
        let at = ts.iter().position(|t| &t.name == part).expect("part");
        let t = ts.remove(at);
        rows += t.dims[1];
        values.extend(t.values);
    }
    ts.push(T { name, dims: vec![width, rows], values });
}

fn u32v(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn f32v(v: f32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Writes a model file of `arch` with `tensors` and extra metadata; returns its path.
fn file(label: &str, arch: &str, tensors: &[T], extra: Vec<(String, u32, Vec<u8>)>) -> PathBuf {
    let mut tokens = Vec::new();
    for i in 0..VOCAB {
        tokens.extend(string(&char::from(b'0' + i as u8).to_string()));
    }
    let mut b = Builder::new()
        .kv("general.architecture", 8, string(arch))
        .kv(&format!("{arch}.embedding_length"), 4, u32v(HIDDEN as u32))
        .kv(&format!("{arch}.block_count"), 4, u32v(LAYERS as u32))
        .kv(&format!("{arch}.attention.head_count"), 4, u32v(HEADS as u32))
        .kv(&format!("{arch}.attention.head_count_kv"), 4, u32v(KV_HEADS as u32))
        .kv(&format!("{arch}.feed_forward_length"), 4, u32v(FFN as u32))
        .kv(&format!("{arch}.context_length"), 4, u32v(256))
        .kv(&format!("{arch}.rope.freq_base"), 6, f32v(10000.0))
        .kv(&format!("{arch}.attention.layer_norm_rms_epsilon"), 6, f32v(1e-5))
        .kv("tokenizer.ggml.model", 8, string("gpt2"))
        .kv("tokenizer.ggml.tokens", 9, array(8, VOCAB, &tokens));
    for (key, ty, value) in extra {
        b = b.kv(&key, ty, value);
    }
    for t in tensors {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        b = b.tensor(&t.name, &t.dims, BlockType::F32, bytes);
    }
    let dir = std::env::temp_dir().join(format!("mlx-serving-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{label}.gguf"));
    std::fs::write(&path, b.build()).unwrap();
    path
}

fn load(path: &PathBuf) -> Model {
    let model = load_gguf(path, WeightFormat::Dense).unwrap_or_else(|e| panic!("{}: {e}", path.display())).model;
    std::fs::remove_file(path).unwrap();
    model
}

/// Logits of a 6-token prefill and then two decode steps, concatenated.
fn run(model: &Model) -> Vec<f32> {
    let mut cache = KvCache::new(model.layers());
    let mut out = Vec::new();
    let prompt = [1, 7, 13, 22, 5, 39];
    let logits = model.forward(&Array::from_slice(&prompt, &[1, 6]), &mut cache).unwrap();
    out.extend_from_slice(logits.as_slice::<f32>());
    for token in [3, 17] {
        let logits = model.forward(&Array::from_slice(&[token], &[1, 1]), &mut cache).unwrap();
        assert_eq!(logits.shape(), [1, VOCAB as i32]);
        out.extend_from_slice(logits.as_slice::<f32>());
    }
    assert!(out.iter().all(|v| v.is_finite()));
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn phi3_fused_tensors_equal_qwen2_split_ones() {
    let split = weights(1, HIDDEN / HEADS);
    let mut fused = weights(1, HIDDEN / HEADS);
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        fuse(&mut fused, &[format!("{p}.attn_q.weight"), format!("{p}.attn_k.weight"), format!("{p}.attn_v.weight")], format!("{p}.attn_qkv.weight"));
        fuse(&mut fused, &[format!("{p}.ffn_gate.weight"), format!("{p}.ffn_up.weight")], format!("{p}.ffn_up.weight"));
    }
    // qwen2 without biases is llama with RoPE over halves, as phi3 is.
    let reference = run(&load(&file("qwen2-split", "qwen2", &split, vec![])));
    let phi3 = run(&load(&file("phi3-fused", "phi3", &fused, vec![])));
    assert!(max_diff(&reference, &phi3) < 1e-4, "phi3 differs by {}", max_diff(&reference, &phi3));
}

#[test]
fn llama3_rope_freqs_divide_frequencies() {
    let ts = weights(2, HIDDEN / HEADS);
    let pairs = HIDDEN / HEADS / 2;
    let with_freqs = |label: &str, factor: f32| {
        let mut ts = weights(2, HIDDEN / HEADS);
        ts.push(T { name: "rope_freqs.weight".into(), dims: vec![pairs], values: vec![factor; pairs as usize] });
        run(&load(&file(label, "llama", &ts, vec![])))
    };
    let plain = run(&load(&file("llama-plain", "llama", &ts, vec![])));
    let linear = run(&load(&file(
        "llama-linear",
        "llama",
        &ts,
        vec![("llama.rope.scaling.type".into(), 8, string("linear")), ("llama.rope.scaling.factor".into(), 6, f32v(2.0))],
    )));
    // Factors of 1 change nothing; 2 on every pair is linear scaling by 2, which does change the logits.
    assert!(max_diff(&plain, &with_freqs("llama-freqs-1", 1.0)) < 1e-4);
    assert!(max_diff(&linear, &with_freqs("llama-freqs-2", 2.0)) < 1e-4);
    assert!(max_diff(&plain, &linear) > 1e-3, "linear scaling had no effect");
}

#[test]
fn unsupported_rope_scaling_is_refused() {
    let ts = weights(3, HIDDEN / HEADS);
    let path = file("llama-yarn", "llama", &ts, vec![("llama.rope.scaling.type".into(), 8, string("yarn")), ("llama.rope.scaling.factor".into(), 6, f32v(4.0))]);
    let err = load_gguf(&path, WeightFormat::Dense).err().expect("refused");
    std::fs::remove_file(&path).unwrap();
    assert!(err.message.contains("RoPE scaling 'yarn' is not supported"), "{}", err.message);
}

#[test]
fn qwen3_heads_narrower_than_hidden_over_heads_and_q_k_norms_take_effect() {
    // head_dim 8 while hidden / heads is 16: q and the attention output are 32 wide.
    let head_dim = 8u64;
    let with_norms = |label: &str, q_norm: f32| {
        let mut ts = weights(4, head_dim);
        for i in 0..LAYERS {
            ts.push(T { name: format!("blk.{i}.attn_q_norm.weight"), dims: vec![head_dim], values: vec![q_norm; head_dim as usize] });
            ts.push(T { name: format!("blk.{i}.attn_k_norm.weight"), dims: vec![head_dim], values: vec![1.0; head_dim as usize] });
        }
        let key_length = vec![("qwen3.attention.key_length".into(), 4, u32v(head_dim as u32)), ("qwen3.attention.value_length".into(), 4, u32v(head_dim as u32))];
        run(&load(&file(label, "qwen3", &ts, key_length)))
    };
    let a = with_norms("qwen3-a", 1.0);
    let b = with_norms("qwen3-b", 3.0);
    assert!(max_diff(&a, &b) > 1e-3, "the q norm had no effect");
}
