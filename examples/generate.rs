use std::time::Instant;
use mlx_rs::Array;
use mlx_serving::{model::{load_gguf, KvCache, WeightFormat}, sampling::argmax, tokenizer::ChatMessage};

fn main() {
    let path = std::env::args().nth(1).unwrap_or("models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let t = Instant::now();
    let m = load_gguf(path.as_ref(), WeightFormat::for_platform()).unwrap();
    eprintln!("loaded in {:?}: {:?}", t.elapsed(), m.info);
    let prompt = m.template.as_ref().unwrap().render(&[ChatMessage::new("user", "What is the capital of France?")]).unwrap();
    let ids = m.tokenizer.encode(&prompt).unwrap();
    eprintln!("prompt {} tokens: {:?}", ids.len(), ids);
    let mut cache = KvCache::new(m.model.layers());
    let t = Instant::now();
    let x = Array::from_slice(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, ids.len() as i32]);
    let logits = m.model.forward(&x, &mut cache).unwrap();
    logits.eval().unwrap();
    let mut tok = argmax(logits.as_slice::<f32>());
    eprintln!("ttft {:?}", t.elapsed());
    let mut out = vec![tok];
    let t = Instant::now();
    for _ in 0..40 {
        if m.tokenizer.is_end(tok) { break; }
        let x = Array::from_slice(&[tok as i32], &[1, 1]);
        let logits = m.model.forward(&x, &mut cache).unwrap();
        logits.eval().unwrap();
        tok = argmax(logits.as_slice::<f32>());
        out.push(tok);
    }
    eprintln!("{} tokens in {:?} = {:.1} tok/s", out.len() - 1, t.elapsed(), (out.len() - 1) as f64 / t.elapsed().as_secs_f64());
    println!("{:?}\n{}", out, m.tokenizer.decode(&out).unwrap());
}
