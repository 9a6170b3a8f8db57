//! The engine without Node: the same single-stream workload as the Node
//! benchmark, for the binding-overhead ratio and for profiling.
//!
//!   cargo bench --bench engine -- <model.gguf> <prompt token ids, comma-separated> <tokens> <repeats>

use std::{path::PathBuf, time::Instant};

use mlx_serving::{
    engine::{Engine, EngineOptions, Event, GenerateParams, Prompt},
    sampling::SamplingParams,
};

async fn run(engine: &Engine, prompt: &str, max_tokens: usize) -> (f64, f64) {
    let params = GenerateParams {
        model: "m".into(),
        prompt: Prompt::Text(prompt.to_string()),
        max_tokens: Some(max_tokens),
        sampling: SamplingParams::default(),
        stop: vec![],
        timeout: None,
        action: Default::default(),
        response_format: None,
        tools: None,
        speculative: Default::default(),
    };
    let started = Instant::now();
    let (_request, mut events) = engine.generate(params).expect("generate");
    let (mut first, mut last, mut n) = (None, started, 0usize);
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { ids, .. } => {
                n += ids.len();
                last = Instant::now();
                first.get_or_insert(last);
            }
            Event::End { .. } => break,
            Event::Error(e) => panic!("{}", e.message),
            Event::Embedded { .. } => unreachable!("a generation request gets no embeddings"),
        }
    }
    let first = first.expect("a token");
    let ttft_ms = first.duration_since(started).as_secs_f64() * 1000.0;
    let tps = if n > 1 { (n - 1) as f64 / last.duration_since(first).as_secs_f64() } else { 0.0 };
    (ttft_ms, tps)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let model = PathBuf::from(args.first().cloned().unwrap_or("models/SmolLM2-135M-Instruct.Q4_1.gguf".into()));
    let prompt = args.get(1).cloned().unwrap_or("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,".into());
    let tokens: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let engine = Engine::new(EngineOptions::default()).unwrap();
        engine.load_model("m", &model).await.expect("load");
        run(&engine, &prompt, 8).await;
        let mut rates = Vec::new();
        for _ in 0..repeats {
            rates.push(run(&engine, &prompt, tokens).await.1);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("{}", serde_json::json!({ "decodeTps": median, "runs": rates }));
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    });
}
