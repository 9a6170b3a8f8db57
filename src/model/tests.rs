//! The batch cache against real models: prompts prefilled side by side
//! (padded on the left) and decoded together must match each prompt alone.
//! SmolLM2 (llama) always; Gemma 3 (sliding-window layers) when
//! `scripts/setup.sh --gemma3` has fetched it.

use std::path::PathBuf;

use mlx_rs::Array;

use super::{load_gguf, KvCache, Model, WeightFormat};

fn model() -> Model {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    load_gguf(&path, WeightFormat::for_platform()).expect("the default model loads").model
}

/// Gemma 3 270M, or `None` (with a note) when it was not fetched.
fn gemma3() -> Option<Model> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!("skipped: {} is missing (scripts/setup.sh --gemma3)", path.display());
        return None;
    }
    Some(load_gguf(&path, WeightFormat::for_platform()).expect("gemma3 loads").model)
}

fn rows(logits: &Array) -> Vec<Vec<f32>> {
    let vocab = logits.dim(1) as usize;
    logits.as_slice::<f32>().chunks(vocab).map(|r| r.to_vec()).collect()
}

/// Whether a row's logits must be bit-identical whatever rows share its
/// forward pass: on the CPU with int8 activations (the default), whose
/// kernels each sum a row's values in an order that does not depend on the
/// rows beside it (matmuls, attention, norms, activations).
fn batch_invariant() -> bool {
    !crate::device::backend().is_gpu() && crate::kernels::Activations::from_env() == crate::kernels::Activations::Int8
}

/// Bit for bit where [`batch_invariant`]. Otherwise, in f32 (the CPU's exact
/// mode) a row's logits hardly depend on its batch: within 2e-3, the same
/// greedy token. In 16 bits (a GPU) a batch and a lone row take different
/// kernels, each rounding to 2^-11 of its values: within 4e-3 of the largest
/// logit (measured on an H200 in f16: Gemma 3 up to 2.8e-2), and the greedy
/// token may differ only between tokens that close.
fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    if batch_invariant() {
        assert!(a == b, "{what}: logits differ by {diff} (they must be bit-identical)");
        return;
    }
    let sixteen_bit = crate::device::compute_dtype().unwrap() != mlx_rs::Dtype::Float32;
    let bound = if sixteen_bit { 4e-3 * b.iter().fold(1.0f32, |m, x| m.max(x.abs())) } else { 2e-3 };
    assert!(diff < bound, "{what}: logits differ by {diff} (bound {bound})");
    let (ta, tb) = (crate::sampling::argmax(a) as usize, crate::sampling::argmax(b) as usize);
    assert!(ta == tb || (sixteen_bit && (b[ta] - b[tb]).abs() < bound), "{what}: greedy token differs ({ta} vs {tb})");
}

/// Alone: prefill, then `steps` greedy decode steps; every step's logits.
fn alone(model: &Model, prompt: &[i32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(model.layers());
    let mut out = vec![rows(&model.forward(&Array::from_slice(prompt, &[1, prompt.len() as i32]), &mut cache).unwrap()).remove(0)];
    for _ in 0..steps {
        let token = crate::sampling::argmax(out.last().unwrap()) as i32;
        out.push(rows(&model.forward(&Array::from_slice(&[token], &[1, 1]), &mut cache).unwrap()).remove(0));
    }
    out
}

#[test]
fn padded_prefill_and_batched_decode_match_each_prompt_alone() {
    batched_matches_alone(&model(), 0);
}

#[test]
fn gemma3_batched_matches_alone() {
    if let Some(model) = gemma3() {
        batched_matches_alone(&model, 1000);
    }
}

/// Gemma 3 with its sliding window narrowed to 8 positions, so that the
/// window hides columns in padded prefill, in batched decode and after a
/// row leaves the batch.
#[test]
fn gemma3_narrow_window_batched_matches_alone() {
    let Some(mut model) = gemma3() else { return };
    let Model::Gemma3(g) = &mut model else { panic!("gemma3 loads as Gemma3") };
    g.config.sliding_window = 8;
    batched_matches_alone(&model, 1000);
}

/// Three prompts (token ids from `base`) of 9, 3 and 20 tokens.
fn batched_matches_alone(model: &Model, base: i32) {
    let layers = model.layers();
    let prompts: Vec<Vec<i32>> = vec![(base + 1..=base + 9).collect(), (base + 200..base + 203).collect(), (base + 40..base + 60).collect()];
    let steps = 6;
    let expected: Vec<Vec<Vec<f32>>> = prompts.iter().map(|p| alone(&model, p, steps)).collect();

    // The first two prompts prefilled side by side, the third alone; all three
    // then join one decode batch (right-aligned, so two rows are padded).
    let longest = 9;
    let mut pair = KvCache::with_rows(layers, vec![0, longest - 3]);
    let mut tokens: Vec<i32> = prompts[0].clone();
    tokens.extend(std::iter::repeat_n(0, (longest - 3) as usize).chain(prompts[1].iter().copied()));
    let first = rows(&model.forward(&Array::from_slice(&tokens, &[2, longest]), &mut pair).unwrap());
    assert_close(&first[0], &expected[0][0], "prompt 0 prefilled beside prompt 1");
    assert_close(&first[1], &expected[1][0], "prompt 1 prefilled beside prompt 0 (padded)");

    let mut third = KvCache::new(layers);
    model.forward(&Array::from_slice(&prompts[2], &[1, 20]), &mut third).unwrap().eval().unwrap();
    let mut batch = KvCache::batch(layers);
    batch.join(vec![pair]).unwrap();
    batch.join(vec![third]).unwrap();
    assert_eq!(batch.rows(), 3);
    assert_eq!((0..3).map(|r| batch.len(r)).collect::<Vec<_>>(), [9, 3, 20]);

    let mut live = vec![0, 1, 2];
    for step in 1..=steps {
        if step == 4 {
            // The longest row leaves; the others decode on from a trimmed cache.
            batch.retain(&[0, 1]).unwrap();
            live.truncate(2);
            assert_eq!((0..2).map(|r| batch.len(r)).collect::<Vec<_>>(), [12, 6]);
        }
        let next: Vec<i32> = live.iter().map(|&p| crate::sampling::argmax(&expected[p][step - 1]) as i32).collect();
        let logits = rows(&model.forward(&Array::from_slice(&next, &[live.len() as i32, 1]), &mut batch).unwrap());
        for (row, got) in logits.iter().enumerate() {
            assert_close(got, &expected[live[row]][step], &format!("prompt {}, decode step {step}", live[row]));
        }
    }
}

/// A prompt prefilled in chunks of any size (as it is beside running
/// streams) gives the logits it gives in one pass.
#[test]
fn chunked_prefill_matches_one_pass() {
    chunked_matches_one_pass(&model());
}

/// The same with Gemma 3's sliding window narrowed to 8 positions, so that
/// the window hides columns within and across chunks.
#[test]
fn gemma3_narrow_window_chunked_prefill_matches_one_pass() {
    let Some(mut model) = gemma3() else { return };
    let Model::Gemma3(g) = &mut model else { panic!("gemma3 loads as Gemma3") };
    g.config.sliding_window = 8;
    chunked_matches_one_pass(&model);
}

fn chunked_matches_one_pass(model: &Model) {
    let prompt: Vec<i32> = (0..70).map(|i| 300 + (i * 37) % 4000).collect();
    let whole = alone(model, &prompt, 2);
    for chunks in [vec![70], vec![1, 69], vec![16, 16, 16, 22], vec![5, 4, 61], vec![48, 22]] {
        let mut cache = KvCache::new(model.layers());
        let mut start = 0;
        let mut logits = Vec::new();
        for n in chunks.iter().copied() {
            let part = &prompt[start..start + n];
            logits = rows(&model.forward(&Array::from_slice(part, &[1, n as i32]), &mut cache).unwrap()).remove(0);
            start += n;
        }
        assert_close(&logits, &whole[0], &format!("prefilled in chunks {chunks:?}"));
        for step in 1..=2 {
            let token = crate::sampling::argmax(&whole[step - 1]) as i32;
            let next = rows(&model.forward(&Array::from_slice(&[token], &[1, 1]), &mut cache).unwrap()).remove(0);
            assert_close(&next, &whole[step], &format!("decode step {step} after chunks {chunks:?}"));
        }
    }
}

#[test]
fn a_mixed_pass_matches_separate_passes() {
    mixed_matches_separate(&model(), 0);
}

#[test]
fn gemma3_mixed_pass_matches_separate_passes() {
    if let Some(model) = gemma3() {
        mixed_matches_separate(&model, 1000);
    }
}

/// Two streams decoding side by side (one padded) while a 44-token prompt is
/// prefilled in chunks of 16, 20 and 8: each step once as two passes (the
/// batch's, then the chunk's) and once as one pass of both segments. The
/// streams' logits at every step and the prompt's at its end must agree,
/// and a chunk that asks for no logits gets none.
fn mixed_matches_separate(model: &Model, base: i32) {
    use super::{Logits, Segment};
    let layers = model.layers();
    let streams: Vec<Vec<i32>> = vec![(base + 1..=base + 9).collect(), (base + 200..base + 203).collect()];
    let prompt: Vec<i32> = (0..44).map(|i| base + 500 + (i * 13) % 700).collect();
    let chunks = [16, 20, 8];
    let batch = || {
        let mut batch = KvCache::batch(layers);
        for p in &streams {
            let mut cache = KvCache::new(layers);
            model.forward(&Array::from_slice(p, &[1, p.len() as i32]), &mut cache).unwrap().eval().unwrap();
            batch.join(vec![cache]).unwrap();
        }
        batch
    };
    let next = |logits: &[Vec<f32>]| -> Array {
        let ids: Vec<i32> = logits.iter().map(|l| crate::sampling::argmax(l) as i32).collect();
        Array::from_slice(&ids, &[ids.len() as i32, 1])
    };
    let (mut apart, mut together) = ((batch(), KvCache::new(layers)), (batch(), KvCache::new(layers)));
    let (mut tokens_apart, mut tokens_together) = (Array::from_slice(&[base + 300, base + 301], &[2, 1]), Array::from_slice(&[base + 300, base + 301], &[2, 1]));
    let mut start = 0;
    for (step, &n) in chunks.iter().enumerate() {
        let chunk = Array::from_slice(&prompt[start..start + n], &[1, n as i32]);
        start += n;
        let last = step + 1 == chunks.len();
        let decoded = rows(&model.forward(&tokens_apart, &mut apart.0).unwrap());
        let prefilled = rows(&model.forward(&chunk, &mut apart.1).unwrap());
        let mut parts = [Segment { tokens: tokens_together.clone(), cache: &mut together.0, logits: Some(Logits::Last) }, Segment { tokens: chunk, cache: &mut together.1, logits: last.then_some(Logits::Last) }];
        let out = model.forward_segments(&mut parts).unwrap();
        assert_eq!(out[1].is_some(), last, "step {step}: the chunk's logits are there only when asked for");
        let mixed = rows(out[0].as_ref().unwrap());
        for row in 0..2 {
            assert_close(&mixed[row], &decoded[row], &format!("stream {row} at step {step}, beside a chunk of {n}"));
        }
        if let Some(logits) = &out[1] {
            assert_close(&rows(logits)[0], &prefilled[0], "the prompt's logits after its last chunk");
        }
        (tokens_apart, tokens_together) = (next(&decoded), next(&mixed));
    }
    assert_eq!((together.0.columns(), together.1.columns()), (apart.0.columns(), apart.1.columns()));
    assert_eq!(together.1.len(0), 44);
}

#[test]
fn joining_empty_caches_changes_nothing() {
    let mut batch = KvCache::batch(2);
    batch.join(vec![KvCache::batch(2), KvCache::with_rows(2, vec![])]).unwrap();
    assert_eq!(batch.rows(), 0);
    batch.retain(&[]).unwrap();
    assert_eq!(batch.rows(), 0);
}

#[test]
fn window_mask_hides_columns_beyond_the_window() {
    use super::cache::Mask;
    let allowed = |mask: Mask| -> Vec<bool> {
        match mask {
            Mask::Rows(a) => a.as_slice::<bool>().to_vec(),
            _ => panic!("expected an explicit mask"),
        }
    };
    // Two rows of a prefill, the second padded by one column; 3 tokens, window 2.
    let cache = KvCache::with_rows(1, vec![0, 1]);
    let got = allowed(cache.window_mask(3, true, Some(2)));
    #[rustfmt::skip]
    let expected = [
        true, false, false,   true, true, false,   false, true, true,
        true, false, false,   false, true, false,  false, true, true,
    ];
    assert_eq!(got, expected);
    // A window wider than every row changes nothing: the plain causal mask.
    assert!(matches!(cache.window_mask(3, false, Some(8)), Mask::Rows(_)));
    assert!(matches!(KvCache::new(1).window_mask(3, false, Some(3)), Mask::Causal));
    assert!(matches!(KvCache::new(1).window_mask(4, false, Some(3)), Mask::Rows(_)));
}

/// The model in 16 bits (the GPU's default, here on MLX's CPU ops: our
/// kernels take f32 and step aside) against f32: after a prefill and decode
/// steps, each step's logits close to f32's (f16 keeps GGUF's scales exactly;
/// the activations round to 11 bits) and the same greedy token at every step.
#[test]
fn float16_model_agrees_with_float32() {
    // Both in the exact mode (f32 activations): what differs is the dtype.
    let mut reference = model();
    reference.set_activations(crate::kernels::Activations::F32, mlx_rs::Dtype::Float32).unwrap();
    let mut half = model();
    half.set_activations(crate::kernels::Activations::F32, mlx_rs::Dtype::Float16).unwrap();
    half.cast(mlx_rs::Dtype::Float16).unwrap();
    let prompt: Vec<i32> = (100..140).collect();
    let expected = alone(&reference, &prompt, 8);
    let got = alone(&half, &prompt, 8);
    let mut largest = 0.0f32;
    for (step, (g, e)) in got.iter().zip(&expected).enumerate() {
        let spread = e.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = g.iter().zip(e).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("step {step}: f16 logits within {diff} of f32's (largest logit {spread})");
        assert!(diff < 0.01 * spread, "step {step}: f16 logits differ by {diff} (largest logit {spread})");
        largest = largest.max(diff);
        assert_eq!(crate::sampling::argmax(g), crate::sampling::argmax(e), "step {step}: greedy token differs");
    }
    assert!(largest > 0.0, "the f16 model computed in f32");
    // The warm-up a GPU load runs (prefill, side-by-side prefill, decode) runs on any device.
    super::load::warm_up(&half).unwrap();
}

#[test]
fn the_device_built_mask_is_the_host_built_one() {
    use super::cache::{allowed_on_device, allowed_on_host};
    for (pads, end, len, window) in [
        (vec![0], 0, 5, None),
        (vec![0], 7, 4, None),
        (vec![0, 3], 7, 5, None),
        (vec![0, 1], 0, 3, Some(2)),
        (vec![2, 0, 5], 9, 6, Some(4)),
        (vec![0], 300, 1, Some(256)),
    ] {
        let device = allowed_on_device(&pads, end, len, window).unwrap();
        assert_eq!(device.shape(), [pads.len() as i32, 1, len, end + len]);
        assert_eq!(device.as_slice::<bool>(), allowed_on_host(&pads, end, len, window), "{pads:?} {end} {len} {window:?}");
    }
}

