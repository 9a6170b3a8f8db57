//! Every architecture against mlx-lm's own implementation: tiny
//! random-weight checkpoints that mlx-lm's model classes made and saved
//! (`scripts/make_tiny_checkpoints.py`, run by `scripts/setup.sh
//! --mlx-dirs`), loaded here through our directory loader and run through
//! our model and KV cache on the same token ids, in the same steps (a
//! prefill, a second prefill onto the cache, decode steps). After every
//! step the last position's logits must equal mlx-lm's within a tolerance
//! relative to the spread of mlx-lm's logits at that step.
//!
//! Without the checkpoints these tests say SKIPPED and pass, unless
//! `MLX_SERVING_REQUIRE_TINY=1` (set by `scripts/test.sh`) makes that a failure.

use std::path::PathBuf;

use mlx_rs::Array;
use serde_json::Value;

use super::load_model;
use crate::{
    kernels::Activations,
    model::{KvCache, WeightFormat},
};

/// f32 weights, f32 arithmetic on both sides: only summation order differs
/// (measured: at most 4.2e-7 of the range). A misread detail is far above
/// this: Gemma's embedding scale unrounded to bf16 gave 4.9e-4.
const F32_TOLERANCE: f32 = 1e-5;
/// The same 4-bit codes, scales and biases on both sides; our kernel (in its
/// exact mode, f32 activations) and MLX's `quantized_matmul` also sum in
/// different orders (measured: at most 5.3e-7 of the range).
const Q4_TOLERANCE: f32 = 1e-5;
/// Where MLX's device is a GPU the model computes in f16 (`device::compute_dtype`)
/// against mlx-lm's f32 on the CPU: every op rounds to 2^-11 of its values
/// (measured on an H200: at most 1.1e-3 of the range).
const GPU_TOLERANCE: f32 = 5e-3;

/// The tolerances (f32 directory, 4-bit directory) for the device MLX runs on.
fn tolerances() -> (f32, f32) {
    if crate::device::backend().is_gpu() {
        (GPU_TOLERANCE, GPU_TOLERANCE)
    } else {
        (F32_TOLERANCE, Q4_TOLERANCE)
    }
}

struct Step {
    tokens: Vec<i32>,
    logits: Vec<f32>,
}

struct Case {
    name: String,
    steps: Vec<Step>,
}

/// The checkpoint directory `models/tiny/<name>`, or `None` when it was not made.
fn checkpoint(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny").join(name);
    if dir.join("mlx_lm_logits.json").exists() {
        return Some(dir);
    }
    let how = "bench/.venv/bin/python scripts/make_tiny_checkpoints.py (scripts/setup.sh --mlx-dirs)";
    if std::env::var("MLX_SERVING_REQUIRE_TINY").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run {how}", dir.display());
    }
    eprintln!("SKIPPED: {} is missing ({how})", dir.display());
    None
}

fn reference(dir: &PathBuf) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("mlx_lm_logits.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let numbers = |a: &Value| -> Vec<f64> { a.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            steps: c["steps"]
                .as_array()
                .unwrap()
                .iter()
                .zip(c["logits"].as_array().unwrap())
                .map(|(t, l)| Step {
                    tokens: numbers(t).into_iter().map(|x| x as i32).collect(),
                    logits: numbers(l).into_iter().map(|x| x as f32).collect(),
                })
                .collect(),
        })
        .collect()
}

/// Runs every case through our model and returns the worst relative
/// difference (max |ours - mlx-lm| / (max - min of mlx-lm's logits)) over
/// all steps, failing at once on a wrong shape or a non-finite logit.
fn worst_difference(dir: &PathBuf, format: WeightFormat) -> f32 {
    let failed = |e| panic!("{}: {e}", dir.display());
    let model = if crate::device::backend().is_gpu() && format == WeightFormat::Quantized {
        // In f16 on an H200 five of these 4-bit checkpoints (random weights,
        // bf16 scales) gave non-finite logits where their f32 twins, also run
        // in f16, did not (cause not established; the real 4-bit directories
        // of model-dirs.spec.ts run in f16 there), and in f32 MLX's quantized
        // kernel for sm_90 failed to compile with pip's CUDA headers
        // (`crt/mma.h` missing). So on a GPU the 4-bit layout is read and
        // widened at load (what this test checks), and the model runs in f32.
        let mut model = super::dir::load_dir_tracked(dir, WeightFormat::Dense, &Default::default()).unwrap_or_else(failed).model;
        model.cast(mlx_rs::Dtype::Float32).unwrap();
        model
    } else {
        // The exact mode: what is checked is the architecture, to float rounding.
        let mut model = load_model(dir, format).unwrap_or_else(failed).model;
        model.set_activations(Activations::F32, crate::device::compute_dtype().unwrap()).unwrap();
        model
    };
    let mut worst = 0.0f32;
    for case in reference(dir) {
        let mut cache = KvCache::new(model.layers());
        for (i, step) in case.steps.iter().enumerate() {
            let tokens = Array::from_slice(&step.tokens, &[1, step.tokens.len() as i32]);
            let logits = model.forward(&tokens, &mut cache).unwrap();
            assert_eq!(logits.shape(), [1, step.logits.len() as i32], "{}: {} step {i}", dir.display(), case.name);
            let ours = logits.as_slice::<f32>();
            assert!(ours.iter().all(|x| x.is_finite()), "{}: {} step {i}: non-finite logits", dir.display(), case.name);
            let spread = step.logits.iter().fold(f32::MIN, |a, &b| a.max(b)) - step.logits.iter().fold(f32::MAX, |a, &b| a.min(b));
            let diff = ours.iter().zip(&step.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let relative = diff / spread;
            if relative > worst {
                worst = relative;
            }
            eprintln!("{}: {} step {i} ({} tokens): max |diff| {diff:.2e}, {relative:.2e} of the logits' range", dir.display(), case.name, step.tokens.len());
        }
    }
    worst
}

/// The f32 directory (dense) and the MLX 4-bit one (kept quantized, on our
/// kernel) of `name`, each within its tolerance of mlx-lm.
fn agrees_with_mlx_lm(name: &str) {
    let (Some(f32_dir), Some(q4_dir)) = (checkpoint(&format!("{name}-f32")), checkpoint(&format!("{name}-mlx-4bit"))) else { return };
    let f32_worst = worst_difference(&f32_dir, WeightFormat::Dense);
    let q4_worst = worst_difference(&q4_dir, WeightFormat::Quantized);
    let (f32_tolerance, q4_tolerance) = tolerances();
    println!("{name} vs mlx-lm: f32 {f32_worst:.2e}, 4-bit {q4_worst:.2e} of the logits' range (tolerances {f32_tolerance:e}, {q4_tolerance:e})");
    assert!(f32_worst <= f32_tolerance, "{name} f32: logits differ from mlx-lm's by {f32_worst:.2e} of their range");
    assert!(q4_worst <= q4_tolerance, "{name} 4-bit: logits differ from mlx-lm's by {q4_worst:.2e} of their range");
}

#[test]
fn llama_matches_mlx_lm() {
    agrees_with_mlx_lm("llama");
}

#[test]
fn llama3_rope_scaling_matches_mlx_lm() {
    agrees_with_mlx_lm("llama3");
}

#[test]
fn mistral_matches_mlx_lm() {
    agrees_with_mlx_lm("mistral");
}

#[test]
fn qwen2_matches_mlx_lm() {
    agrees_with_mlx_lm("qwen2");
}

#[test]
fn qwen3_matches_mlx_lm() {
    agrees_with_mlx_lm("qwen3");
}

#[test]
fn phi3_matches_mlx_lm() {
    agrees_with_mlx_lm("phi3");
}

#[test]
fn phi3_partial_rope_matches_mlx_lm() {
    agrees_with_mlx_lm("phi3-partial-rope");
}

#[test]
fn gemma3_matches_mlx_lm() {
    agrees_with_mlx_lm("gemma3");
}
