//! The worker thread of a model slot. It owns every MLX object of its model
//! and runs the scheduler loop: admit queued requests at step boundaries,
//! prefill them, run one batched decode step for all active sequences,
//! sample per request, send events, retire finished ones, beat the heart.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    thread::JoinHandle,
    time::Instant,
};

use mlx_rs::Array;

use super::{
    fault,
    heartbeat::Heartbeat,
    lock,
    request::{Event, FinishReason, Prompt, Request, Timings, Usage},
    sequence::{Progress, Sequence},
    slot::{ActiveSet, ModelSlot, Served},
};
use crate::{
    error::{Error, ErrorCode, Result},
    model::{load_gguf, KvCache, LoadedModel},
    sampling::Sampler,
};

/// Prompts are prefilled in chunks of this many tokens.
const PREFILL_CHUNK: usize = 512;

pub fn spawn(slot: Arc<ModelSlot>, generation: u64, heartbeat: Arc<Heartbeat>, active: ActiveSet) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("mlx-serving:{}#{generation}", slot.id))
        .spawn(move || run(slot, generation, heartbeat, active))
        .expect("spawning a worker thread")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn run(slot: Arc<ModelSlot>, generation: u64, heartbeat: Arc<Heartbeat>, active: ActiveSet) {
    let span = tracing::info_span!("worker", model = %slot.id, generation);
    let _enter = span.enter();
    let loaded = match catch_unwind(AssertUnwindSafe(|| load_gguf(&slot.path, slot.options.format))) {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => return slot.set_failed(generation, &e),
        Err(panic) => {
            let e = Error::new(ErrorCode::ModelLoadFailed, format!("loading panicked: {}", panic_message(&*panic)));
            return slot.set_failed(generation, &e);
        }
    };
    tracing::info!(load_ms = loaded.info.load_ms, "model ready");
    let LoadedModel { model, tokenizer, template, info, .. } = loaded;
    slot.set_ready(generation, Served { tokenizer: tokenizer.clone(), template: template.clone(), info: info.clone() });
    let mut worker = Worker { slot: slot.clone(), generation, heartbeat, active, model: Some(model), tokenizer, template, info, seqs: Vec::new() };
    loop {
        match catch_unwind(AssertUnwindSafe(|| worker.tick())) {
            Ok(true) => {}
            Ok(false) => break,
            Err(panic) => {
                let message = format!("worker panicked: {}", panic_message(&*panic));
                worker.seqs.clear();
                slot.replace_worker(generation, ErrorCode::WorkerCrashed, &message);
                return;
            }
        }
    }
    for seq in worker.seqs.drain(..) {
        seq.request.fail(ErrorCode::ShuttingDown, "the model was unloaded");
    }
    worker.model = None;
    let _ = mlx_rs::memory::clear_cache();
    tracing::info!("worker stopped, MLX cache cleared");
}

struct Worker {
    slot: Arc<ModelSlot>,
    generation: u64,
    heartbeat: Arc<Heartbeat>,
    active: ActiveSet,
    model: Option<crate::model::Llama>,
    tokenizer: Arc<crate::tokenizer::Tokenizer>,
    template: Option<Arc<crate::tokenizer::ChatTemplate>>,
    info: crate::model::ModelInfo,
    seqs: Vec<Sequence>,
}

impl Worker {
    /// One scheduler iteration. Returns false when the worker must stop.
    fn tick(&mut self) -> bool {
        if !self.slot.is_current(self.generation) {
            return false;
        }
        self.retire_ended();
        let room = self.slot.options.max_batch_size.saturating_sub(self.seqs.len());
        let Some(admitted) = self.slot.take_queued(room, self.seqs.is_empty()) else {
            return false;
        };
        if self.seqs.is_empty() && admitted.is_empty() {
            self.heartbeat.set_busy(false);
            return true;
        }
        self.heartbeat.set_busy(true);
        for request in admitted {
            self.admit(request);
            self.heartbeat.touch();
        }
        if !self.seqs.is_empty() {
            self.decode_step();
            self.heartbeat.touch();
        }
        true
    }

    fn retire(&mut self, index: usize) {
        let seq = self.seqs.swap_remove(index);
        lock(&self.active).remove(&seq.request.id);
    }

    /// Drops sequences whose request ended elsewhere (abort, timeout, return()).
    fn retire_ended(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.seqs.len() {
            let r = &self.seqs[i].request;
            if r.is_ended() || r.expire_if_due(now) {
                self.retire(i);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self, request: Arc<Request>) {
        let now = Instant::now();
        lock(&self.active).insert(request.id, request.clone());
        match self.prefill(&request, now) {
            Ok(Some(seq)) => self.seqs.push(seq),
            outcome => {
                if let Err(e) = outcome {
                    request.end(Event::Error(e));
                }
                lock(&self.active).remove(&request.id);
            }
        }
    }

    /// Tokenizes and prefills the prompt and samples the first token. `None`
    /// when the request already finished or ended.
    fn prefill(&mut self, request: &Arc<Request>, admitted: Instant) -> Result<Option<Sequence>> {
        let _enter = request.span.enter();
        let params = &request.params;
        let text = match &params.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Messages(m) => match &self.template {
                Some(t) => t.render(m)?,
                None => return Err(Error::invalid("messages", format!("model '{}' has no chat template; pass a prompt", self.slot.id))),
            },
        };
        let ids = self.tokenizer.encode(&text)?;
        let context = self.info.context_length;
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "is empty (no tokens)"));
        }
        if ids.len() >= context {
            return Err(Error::new(ErrorCode::ContextOverflow, format!("the prompt has {} tokens; the context holds {context}", ids.len())));
        }
        let room = context - ids.len();
        if let Some(m) = params.max_tokens {
            if m > room {
                return Err(Error::new(
                    ErrorCode::ContextOverflow,
                    format!("{} prompt tokens + maxTokens {m} exceed the context of {context}", ids.len()),
                ));
            }
        }
        let max_tokens = params.max_tokens.unwrap_or(room);
        if max_tokens == 0 {
            let now = Instant::now();
            request.end(Event::End {
                finish_reason: FinishReason::Length,
                usage: Usage { prompt_tokens: ids.len(), completion_tokens: 0 },
                timings: Timings { total_ms: now.duration_since(request.created).as_secs_f64() * 1000.0, ..Default::default() },
            });
            return Ok(None);
        }
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let mut cache = KvCache::new(model.config.layers);
        let mut logits = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            if request.is_ended() || request.expire_if_due(Instant::now()) {
                return Ok(None);
            }
            let tokens: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
            let x = Array::from_slice(&tokens, &[1, tokens.len() as i32]);
            let out = model.forward(&x, &mut [&mut cache])?;
            out.eval()?;
            logits = Some(out);
            self.heartbeat.touch();
        }
        let logits = logits.expect("prompt has at least one chunk");
        let mut sampler = Sampler::new(params.sampling.clone(), &ids);
        let token = sampler.sample(logits.as_slice::<f32>());
        let mut seq = Sequence::new(request.clone(), cache, sampler, ids.len(), max_tokens, admitted);
        tracing::debug!(prompt_tokens = ids.len(), "prefilled");
        // Counted before delivery, so stats never lag behind what a caller saw.
        self.slot.throughput.record(1);
        Ok(match seq.accept(token, &self.tokenizer) {
            Progress::Continue => Some(seq),
            Progress::Retire => None,
        })
    }

    /// One decode step for every active sequence, batched.
    fn decode_step(&mut self) {
        fault::before_decode_step();
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let tokens: Vec<i32> = self.seqs.iter().map(|s| s.last_token as i32).collect();
        let batch = tokens.len() as i32;
        let x = Array::from_slice(&tokens, &[batch, 1]);
        let result = {
            let mut caches: Vec<&mut KvCache> = self.seqs.iter_mut().map(|s| &mut s.cache).collect();
            model.forward(&x, &mut caches).and_then(|logits| {
                logits.eval()?;
                Ok(logits)
            })
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("decode step failed: {}", e.message);
                while !self.seqs.is_empty() {
                    self.seqs[0].request.fail(ErrorCode::Internal, format!("decode step failed: {}", e.message));
                    self.retire(0);
                }
                return;
            }
        };
        let vocab = logits.dim(1) as usize;
        let data = logits.as_slice::<f32>();
        let tokens: Vec<u32> = self.seqs.iter_mut().enumerate().map(|(i, seq)| seq.sampler.sample(&data[i * vocab..(i + 1) * vocab])).collect();
        // Counted before delivery, so stats never lag behind what a caller saw.
        self.slot.throughput.record(batch as u64);
        let mut retired = Vec::new();
        for (i, (seq, token)) in self.seqs.iter_mut().zip(tokens).enumerate() {
            if seq.accept(token, &self.tokenizer) == Progress::Retire {
                retired.push(i);
            }
        }
        for i in retired.into_iter().rev() {
            self.retire(i);
        }
    }
}
