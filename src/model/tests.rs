//! The batch cache against the real model: prompts prefilled side by side
//! (padded on the left) and decoded together must match each prompt alone.

use std::path::PathBuf;

use mlx_rs::Array;

use super::{load_gguf, KvCache, Llama, WeightFormat};

fn model() -> Llama {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    load_gguf(&path, WeightFormat::for_platform()).expect("the default model loads").model
}

fn rows(logits: &Array) -> Vec<Vec<f32>> {
    let vocab = logits.dim(1) as usize;
    logits.as_slice::<f32>().chunks(vocab).map(|r| r.to_vec()).collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff < 2e-3, "{what}: logits differ by {diff}");
    assert_eq!(crate::sampling::argmax(a), crate::sampling::argmax(b), "{what}: greedy token differs");
}

/// Alone: prefill, then `steps` greedy decode steps; every step's logits.
fn alone(model: &Llama, prompt: &[i32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(model.config.layers);
    let mut out = vec![rows(&model.forward(&Array::from_slice(prompt, &[1, prompt.len() as i32]), &mut cache).unwrap()).remove(0)];
    for _ in 0..steps {
        let token = crate::sampling::argmax(out.last().unwrap()) as i32;
        out.push(rows(&model.forward(&Array::from_slice(&[token], &[1, 1]), &mut cache).unwrap()).remove(0));
    }
    out
}

#[test]
fn padded_prefill_and_batched_decode_match_each_prompt_alone() {
    let model = model();
    let layers = model.config.layers;
    let prompts: Vec<Vec<i32>> = vec![(1..=9).collect(), (200..203).collect(), (40..60).collect()];
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

#[test]
fn joining_empty_caches_changes_nothing() {
    let mut batch = KvCache::batch(2);
    batch.join(vec![KvCache::batch(2), KvCache::with_rows(2, vec![])]).unwrap();
    assert_eq!(batch.rows(), 0);
    batch.retain(&[]).unwrap();
    assert_eq!(batch.rows(), 0);
}
