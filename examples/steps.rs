//! Model-level timings without the engine: decode step time at several batch
//! sizes and prefill time at several prompt lengths. For profiling changes to
//! `model/` (run it under `perf record`).
//!
//!   cargo run --release --example steps -- [model.gguf] [batch,batch,..] [steps]

use std::time::Instant;

use mlx_rs::Array;
use mlx_serving::model::{load_gguf, KvCache, WeightFormat};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().cloned().unwrap_or("models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let batches: Vec<usize> = args.get(1).map_or(vec![1, 4, 8, 16], |s| s.split(',').map(|b| b.parse().unwrap()).collect());
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let model = load_gguf(path.as_ref(), WeightFormat::for_platform()).expect("load").model;
    let layers = model.layers();

    let prefills: &[usize] = if std::env::var_os("STEPS_DECODE_ONLY").is_some() { &[] } else { &[32, 128, 512] };
    let prefills: Vec<usize> = std::env::var("STEPS_PREFILL").ok().map_or(prefills.to_vec(), |s| s.split(',').map(|b| b.parse().unwrap()).collect());
    for &len in &prefills {
        let ids: Vec<i32> = (0..len as i32).map(|i| 100 + i * 7 % 5000).collect();
        let mut best = f64::MAX;
        let repeats: usize = std::env::var("STEPS_REPEATS").ok().and_then(|c| c.parse().ok()).unwrap_or(3);
        for _ in 0..repeats {
            let mut cache = KvCache::new(layers);
            let t = Instant::now();
            let chunk: usize = std::env::var("STEPS_CHUNK").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
            for part in ids.chunks(chunk) {
                let x = Array::from_slice(part, &[1, part.len() as i32]);
                model.forward(&x, &mut cache).unwrap().eval().unwrap();
            }
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!("prefill {len:4} tokens: {best:8.1} ms ({:.0} tok/s)", len as f64 / best * 1000.0);
    }

    for &batch in &batches {
        // Prompts of different lengths, as in serving.
        let prefilled: Vec<KvCache> = (0..batch)
            .map(|i| {
                let len = 16 + 5 * i as i32;
                let ids: Vec<i32> = (0..len).map(|j| 200 + j * 13 % 3000).collect();
                let mut cache = KvCache::new(layers);
                model.forward(&Array::from_slice(&ids, &[1, len]), &mut cache).unwrap().eval().unwrap();
                cache
            })
            .collect();
        let mut cache = KvCache::batch(layers);
        cache.join(prefilled).unwrap();
        let tokens: Vec<i32> = (0..batch as i32).map(|i| 300 + i).collect();
        let (mut times, mut builds) = (Vec::new(), Vec::new());
        for _ in 0..steps {
            let t = Instant::now();
            let x = Array::from_slice(&tokens, &[batch as i32, 1]);
            let logits = model.forward(&x, &mut cache).unwrap();
            builds.push(t.elapsed().as_secs_f64() * 1000.0);
            logits.eval().unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        builds.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let build = builds[builds.len() / 2];
        println!("decode batch {batch:2}: {median:7.2} ms/step ({build:.2} ms building the graph), {:7.1} tok/s", batch as f64 / median * 1000.0);
    }
}
