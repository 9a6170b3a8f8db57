//! The worker loop of an embedding model's slot. Requests come through the
//! slot's queue like generations (admission, deadlines, abort, shutdown,
//! recovery and stats are the slot's), as [`Action::Embed`]. Each tick the
//! worker admits what is queued (tokenizing every input), then runs one
//! forward pass over a batch of inputs of similar length drawn from all the
//! requests it holds, right-padded to the longest (one row per input,
//! padding hidden from attention), and ends each request once all its inputs
//! are done. The batch is built around the next input of the request that
//! has waited longest since it was last served, so a short query that
//! arrives during a large `embedMany` waits about one forward pass, not the
//! whole job.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::Instant,
};

use super::{
    fault,
    heartbeat::Heartbeat,
    lock,
    request::{Action, EmbedParams, EmbedPrompt, Event, Request},
    slot::{ActiveSet, ModelSlot, Served},
};
use crate::{
    error::{Error, ErrorCode, Result},
    model::{
        embedding::{finish, Embedder},
        LoadedEmbedder, ModelInfo, ModelKind,
    },
    tokenizer::Tokenizer,
};

/// At most this many padded tokens per forward pass (on a GPU four times
/// as many): large enough that the matrix products run at full speed, small
/// enough that attention's scores stay small.
const BATCH_TOKENS: usize = 4096;
/// A pass is sized (from the measured cost of passes, [`PassCost`]) to take
/// about this long, so that a waiting query is served soon: within the
/// device's [`bounds`], and never below one input of the model's maximum length.
const PASS_SECONDS: f64 = 0.5;
/// At most this many inputs per forward pass (on a GPU four times as many).
const BATCH_ROWS: usize = 128;
/// A batch takes inputs of other lengths while its padding stays within this
/// share of its real tokens (plus a few tokens per row), or within what one
/// pass costs whatever its size (padding that costs less than that is
/// cheaper than a second pass: on a GPU, where a small pass is all launch
/// and transfer, a call's inputs share one pass).
const PADDING_SLACK: f64 = 0.25;
/// A pass expected to take this long is evaluated layer by layer (before any
/// pass was measured: one of at least [`LAYERWISE_TOKENS`] padded tokens).
const LAYERWISE_SECONDS: f64 = 0.25;
const LAYERWISE_TOKENS: usize = 1024;
/// How much each measured pass discounts the ones before it in [`PassCost`].
const COST_MEMORY: f64 = 0.9;
/// Requests taken from the queue per tick.
const ADMIT: usize = 1024;

/// Checks a request against the model that serves it, before any work:
/// generation and cache calls need a generation model; `embed` needs an
/// embedding model (a generation model defines no pooling), a width it has
/// and a prompt it names. INVALID_ARGUMENT otherwise.
pub fn check(action: &Action, info: &ModelInfo, model: &str) -> Result<()> {
    match (action, info.kind, &info.embedding) {
        (Action::Embed(p), ModelKind::Embedding, Some(e)) => {
            if let Some(d) = p.dimensions {
                if d == 0 || d > e.dimensions {
                    return Err(Error::invalid("dimensions", format!("model '{model}' makes {}-dimensional vectors; ask for 1 to {}", e.dimensions, e.dimensions)));
                }
            }
            if let EmbedPrompt::Named(name) = &p.prompt {
                if !e.prompts.iter().any(|(n, _)| n == name) {
                    let names: Vec<&str> = e.prompts.iter().map(|(n, _)| n.as_str()).collect();
                    let known = if names.is_empty() { "it has none".to_string() } else { format!("it has {}", names.join(", ")) };
                    return Err(Error::invalid("prompt", format!("model '{model}' has no prompt named '{name}' ({known})")));
                }
            }
            Ok(())
        }
        (Action::Embed(_), _, _) => Err(Error::invalid(
            "model",
            format!("model '{model}' is a generation model and defines no pooling for embeddings; load an embedding model (a sentence-transformers directory)"),
        )),
        (_, ModelKind::Embedding, _) => {
            Err(Error::invalid("model", format!("model '{model}' is an embedding model; it does not generate (use embed)")))
        }
        _ => Ok(()),
    }
}

/// Serves an embedding model until the slot stops or replaces this worker.
pub fn serve(slot: Arc<ModelSlot>, generation: u64, heartbeat: Arc<Heartbeat>, active: ActiveSet, loaded: LoadedEmbedder) {
    let LoadedEmbedder { embedder, tokenizer, info } = loaded;
    tracing::info!(load_ms = info.load_ms, dimensions = embedder.dimensions, "embedding model ready");
    slot.set_ready(generation, Served { tokenizer: tokenizer.clone(), template: None, info: info.clone(), grammars: None });
    let mut worker = EmbedWorker { slot: slot.clone(), generation, heartbeat, active, embedder: Some(embedder), tokenizer, info, jobs: Vec::new(), cost: PassCost::default() };
    loop {
        match catch_unwind(AssertUnwindSafe(|| worker.tick())) {
            Ok(true) => {}
            Ok(false) => break,
            Err(panic) => {
                let message = format!("worker panicked: {}", super::worker::panic_message(&*panic));
                worker.jobs.clear();
                slot.replace_worker(generation, ErrorCode::WorkerCrashed, &message);
                return;
            }
        }
    }
    for job in worker.jobs.drain(..) {
        job.request.fail(ErrorCode::ShuttingDown, "the model was unloaded");
    }
    worker.embedder = None;
    let _ = mlx_rs::memory::clear_cache();
    tracing::info!("worker stopped, MLX cache cleared");
}

/// An admitted request: its inputs' token ids and what is done of them.
struct Job {
    request: Arc<Request>,
    inputs: Vec<Vec<u32>>,
    /// Leading tokens of every input left out of pooling (the prompt's, where
    /// the model does not pool them).
    skip: usize,
    /// Inputs not yet embedded, longest first (the next is the last).
    pending: Vec<usize>,
    vectors: Vec<Vec<f32>>,
    dimensions: Option<usize>,
    normalize: bool,
    /// Since when the job waits for a forward pass: its admission, then the end of its last pass.
    waiting_since: Instant,
}

impl Job {
    fn tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }
}

struct EmbedWorker {
    slot: Arc<ModelSlot>,
    generation: u64,
    heartbeat: Arc<Heartbeat>,
    active: ActiveSet,
    embedder: Option<Embedder>,
    tokenizer: Arc<Tokenizer>,
    info: ModelInfo,
    jobs: Vec<Job>,
    /// What recent passes cost.
    cost: PassCost,
}

/// The cost of a forward pass as a line fitted to recent passes: seconds =
/// `fixed + per_token x padded tokens` (least squares, each pass weighing
/// [`COST_MEMORY`] times the one after it).
#[derive(Debug, Default, Clone)]
struct PassCost {
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

impl PassCost {
    fn record(&mut self, padded: usize, seconds: f64) {
        let x = padded as f64;
        self.w = self.w * COST_MEMORY + 1.0;
        self.x = self.x * COST_MEMORY + x;
        self.y = self.y * COST_MEMORY + seconds;
        self.xx = self.xx * COST_MEMORY + x * x;
        self.xy = self.xy * COST_MEMORY + x * seconds;
    }

    /// (fixed seconds, seconds per padded token) once a pass was measured.
    /// Passes of about one size say nothing of the fixed part, nor does a fit
    /// whose slope noise made flat: then it is all per token.
    fn model(&self) -> Option<(f64, f64)> {
        if self.w <= 0.0 || self.x <= 0.0 {
            return None;
        }
        let (mx, my) = (self.x / self.w, self.y / self.w);
        let variance = self.xx / self.w - mx * mx;
        let all_per_token = (0.0, my / mx);
        if variance <= (0.1 * mx) * (0.1 * mx) {
            return Some(all_per_token);
        }
        let slope = (self.xy / self.w - mx * my) / variance;
        let fixed = my - slope * mx;
        if slope <= 0.0 || fixed < 0.0 {
            return Some(all_per_token);
        }
        Some((fixed, slope))
    }
}

/// (padded tokens, rows) a pass may hold on this device.
fn bounds() -> (usize, usize) {
    if crate::device::backend().is_gpu() {
        (4 * BATCH_TOKENS, 4 * BATCH_ROWS)
    } else {
        (BATCH_TOKENS, BATCH_ROWS)
    }
}

/// One input of a batch: (job index, input index, tokens).
type Slot = (usize, usize, usize);

impl EmbedWorker {
    /// One iteration. Returns false when the worker must stop.
    fn tick(&mut self) -> bool {
        if !self.slot.is_current(self.generation) {
            return false;
        }
        self.drop_ended();
        if self.jobs.is_empty() && self.heartbeat.is_busy() {
            // Idle after work (busy until the wait below finds nothing): the
            // buffers that work freed go back to the system.
            crate::platform::release_free_memory();
        }
        let Some(admitted) = self.slot.take_queued(ADMIT, self.jobs.is_empty()) else {
            return false;
        };
        if self.jobs.is_empty() && admitted.is_empty() {
            self.heartbeat.set_busy(false);
            return true;
        }
        self.heartbeat.set_busy(true);
        for request in admitted {
            lock(&self.active).insert(request.id, request.clone());
            match self.prepare(&request) {
                Ok(job) => self.jobs.push(job),
                Err(e) => {
                    request.end(Event::Error(e));
                    self.forget(&request);
                }
            }
            self.heartbeat.touch();
        }
        if let Some(batch) = self.next_batch() {
            self.run(batch);
        }
        self.heartbeat.touch();
        true
    }

    fn forget(&self, request: &Request) {
        lock(&self.active).remove(&request.id);
    }

    /// Drops the jobs whose request ended elsewhere (abort, timeout).
    fn drop_ended(&mut self) {
        let now = Instant::now();
        let (ended, kept): (Vec<Job>, Vec<Job>) = self.jobs.drain(..).partition(|j| j.request.is_over(now));
        self.jobs = kept;
        for job in ended {
            self.forget(&job.request);
        }
    }

    /// Tokenizes and checks a request's inputs.
    fn prepare(&self, request: &Arc<Request>) -> Result<Job> {
        let _enter = request.span.enter();
        let model = &self.slot.id;
        check(&request.params.action, &self.info, model)?;
        let Action::Embed(p) = &request.params.action else {
            return Err(Error::internal("a generation request reached an embedding worker"));
        };
        let embedder = self.embedder.as_ref().expect("the model is loaded while the worker runs");
        let prompt = self.prompt_text(p);
        let skip = match (&prompt, embedder.include_prompt) {
            (Some(text), false) => self.tokenizer.encode_for_embedding(text)?.0.len().saturating_sub(1),
            _ => 0,
        };
        let vocab = embedder.encoder.vocab_size();
        let mut inputs = Vec::with_capacity(p.inputs.len());
        for (i, text) in p.inputs.iter().enumerate() {
            let field = if p.inputs.len() == 1 { "input".to_string() } else { format!("input[{i}]") };
            let full;
            let text = match &prompt {
                Some(prefix) => {
                    full = format!("{prefix}{text}");
                    full.as_str()
                }
                None => text.as_str(),
            };
            let (ids, truncated) = self.tokenizer.encode_for_embedding(text)?;
            if truncated && !p.truncate {
                return Err(Error::new(
                    ErrorCode::ContextOverflow,
                    format!("{field}: longer than the {} tokens model '{model}' reads (truncate: true cuts it there)", embedder.max_tokens),
                ));
            }
            if ids.is_empty() {
                return Err(Error::invalid(&field, "has no tokens"));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::invalid(&field, format!("token {bad} ({:?}) has no embedding in model '{model}'", self.tokenizer.decode(&[bad]).unwrap_or_default())));
            }
            inputs.push(ids);
        }
        let mut pending: Vec<usize> = (0..inputs.len()).collect();
        pending.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len()));
        let n = inputs.len();
        tracing::debug!(inputs = n, tokens = inputs.iter().map(Vec::len).sum::<usize>(), "embed request admitted");
        Ok(Job {
            request: request.clone(),
            inputs,
            skip,
            pending,
            vectors: vec![Vec::new(); n],
            dimensions: p.dimensions,
            normalize: p.normalize.unwrap_or(embedder.normalize),
            waiting_since: Instant::now(),
        })
    }

    /// The text put before each input: the named prompt, the given text, or the model's default.
    fn prompt_text(&self, p: &EmbedParams) -> Option<String> {
        let e = self.info.embedding.as_ref()?;
        let named = |name: &str| e.prompts.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone());
        match &p.prompt {
            EmbedPrompt::Text(t) => Some(t.clone()),
            EmbedPrompt::Named(name) => named(name),
            EmbedPrompt::Default => e.default_prompt.as_deref().and_then(named),
        }
        .filter(|t| !t.is_empty())
    }

    /// The inputs of the next forward pass: the next input of the job that
    /// waited longest, and pending inputs of any job whose lengths keep the
    /// batch's padding small, within the batch's bounds.
    fn next_batch(&self) -> Option<Vec<Slot>> {
        let anchor_job = (0..self.jobs.len()).filter(|&j| !self.jobs[j].pending.is_empty()).min_by_key(|&j| self.jobs[j].waiting_since)?;
        let mut all: Vec<Slot> = self
            .jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| job.pending.iter().map(move |&i| (j, i, job.inputs[i].len())))
            .collect();
        all.sort_by_key(|&(j, i, len)| (len, j, i));
        let anchor_input = *self.jobs[anchor_job].pending.last().expect("a job with pending inputs");
        let at = all.iter().position(|&(j, i, _)| j == anchor_job && i == anchor_input).expect("the anchor is pending");
        let (mut lo, mut hi) = (at, at + 1);
        let (mut real, mut longest) = (all[at].2, all[at].2);
        let budget = self.batch_tokens();
        let max_rows = bounds().1;
        let free_padding = match self.cost.model() {
            Some((fixed, per_token)) => fixed / per_token,
            None => 0.0,
        };
        let fits = |rows: usize, real: usize, longest: usize| {
            let padded = rows * longest;
            let padding = (padded - real) as f64;
            rows <= max_rows
                && padded <= budget.max(longest)
                && padding <= (real as f64 * PADDING_SLACK + 4.0 * rows as f64).max(free_padding)
        };
        loop {
            let rows = hi - lo;
            // Shorter inputs cost no extra padding beyond their own; take them first.
            if lo > 0 && fits(rows + 1, real + all[lo - 1].2, longest) {
                lo -= 1;
                real += all[lo].2;
            } else if hi < all.len() && fits(rows + 1, real + all[hi].2, all[hi].2.max(longest)) {
                longest = longest.max(all[hi].2);
                real += all[hi].2;
                hi += 1;
            } else {
                break;
            }
        }
        Some(all[lo..hi].to_vec())
    }

    /// Padded tokens per pass: what takes about [`PASS_SECONDS`] at the
    /// measured cost, within the device's bound.
    fn batch_tokens(&self) -> usize {
        match self.cost.model() {
            Some((fixed, per_token)) if per_token > 0.0 => {
                (((PASS_SECONDS - fixed).max(0.0) / per_token) as usize).clamp(64, bounds().0)
            }
            _ => 512,
        }
    }

    /// Runs one forward pass over `batch` and ends the jobs it completes.
    fn run(&mut self, batch: Vec<Slot>) {
        fault::before_decode_step();
        let embedder = self.embedder.as_ref().expect("the model is loaded while the worker runs");
        let inputs: Vec<&[u32]> = batch.iter().map(|&(j, i, _)| self.jobs[j].inputs[i].as_slice()).collect();
        let skip: Vec<usize> = batch.iter().map(|&(j, _, _)| self.jobs[j].skip).collect();
        let tokens: usize = inputs.iter().map(|t| t.len()).sum();
        let padded = batch.len() * batch.iter().map(|s| s.2).max().unwrap_or(0);
        let started = Instant::now();
        let heartbeat = self.heartbeat.clone();
        // A pass expected to take long is evaluated layer by layer, touching
        // the heartbeat after each: the watchdog sees it advance.
        let layerwise = match self.cost.model() {
            Some((fixed, per_token)) => fixed + per_token * padded as f64 >= LAYERWISE_SECONDS,
            None => padded >= LAYERWISE_TOKENS,
        };
        let mut touch = || heartbeat.touch();
        let outcome = embedder.embed(&inputs, &skip, if layerwise { Some(&mut touch) } else { None });
        let elapsed = started.elapsed().as_secs_f64();
        let ms = elapsed * 1e3;
        self.cost.record(padded, elapsed);
        let (fixed_ms, per_token_us) = self.cost.model().map_or((0.0, 0.0), |(f, t)| (f * 1e3, t * 1e6));
        tracing::debug!(rows = batch.len(), tokens, columns = batch.iter().map(|s| s.2).max().unwrap_or(0), ms, fixed_ms, per_token_us, "embed pass");
        self.slot.throughput.record(tokens as u64);
        let now = Instant::now();
        match outcome {
            Ok(vectors) => {
                for (&(j, i, _), v) in batch.iter().zip(vectors) {
                    let job = &mut self.jobs[j];
                    job.vectors[i] = finish(v, job.dimensions, job.normalize);
                    job.pending.retain(|&p| p != i);
                    job.waiting_since = now;
                }
            }
            Err(e) => {
                // The pass failed: every request with an input in it ends, no other.
                for &(j, _, _) in &batch {
                    self.jobs[j].request.end(Event::Error(e.clone()));
                }
            }
        }
        let (done, kept): (Vec<Job>, Vec<Job>) = self.jobs.drain(..).partition(|j| j.pending.is_empty() || j.request.is_ended());
        self.jobs = kept;
        for job in done {
            if !job.request.is_ended() {
                let prompt_tokens = job.tokens();
                job.request.end(Event::Embedded { embeddings: job.vectors, prompt_tokens });
            }
            self.forget(&job.request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EmbeddingInfo;

    fn info(kind: ModelKind) -> ModelInfo {
        ModelInfo {
            format: String::new(),
            quantization: String::new(),
            architecture: String::new(),
            parameters: 0,
            context_length: 8,
            vocab_size: 8,
            layers: 1,
            hidden_size: 4,
            heads: 1,
            kv_heads: 1,
            head_dim: 4,
            tensor_types: Vec::new(),
            kind,
            embedding: (kind == ModelKind::Embedding).then(|| EmbeddingInfo {
                dimensions: 4,
                max_tokens: 8,
                pooling: "mean".into(),
                normalized: true,
                prompts: vec![("query".into(), "q: ".into())],
                default_prompt: None,
            }),
            weight_format: crate::model::WeightFormat::Dense,
            dtype: mlx_rs::Dtype::Float32,
            has_chat_template: false,
            load_ms: 0.0,
            warm_up_ms: 0.0,
        }
    }

    fn embed(dimensions: Option<usize>, prompt: EmbedPrompt) -> Action {
        Action::Embed(EmbedParams { inputs: vec!["x".into()], dimensions, prompt, normalize: None, truncate: true })
    }

    #[test]
    fn each_kind_of_model_takes_only_its_kind_of_request() {
        let code = |r: Result<()>| r.err().map(|e| e.code);
        assert_eq!(code(check(&embed(None, EmbedPrompt::Default), &info(ModelKind::Embedding), "e")), None);
        assert_eq!(code(check(&embed(None, EmbedPrompt::Default), &info(ModelKind::Generation), "g")), Some(ErrorCode::InvalidArgument));
        assert_eq!(code(check(&Action::Generate, &info(ModelKind::Embedding), "e")), Some(ErrorCode::InvalidArgument));
        assert_eq!(code(check(&Action::Generate, &info(ModelKind::Generation), "g")), None);
    }

    #[test]
    fn pass_cost_separates_the_fixed_part_from_the_part_per_token() {
        assert_eq!(PassCost::default().model(), None);
        let mut c = PassCost::default();
        for (padded, ms) in [(100, 5.0 + 1.0), (1000, 5.0 + 10.0), (400, 5.0 + 4.0), (2000, 5.0 + 20.0)] {
            c.record(padded, ms / 1e3);
        }
        let (fixed, per_token) = c.model().unwrap();
        assert!((fixed - 5e-3).abs() < 1e-9 && (per_token - 1e-5).abs() < 1e-12, "{fixed} {per_token}");
        // Passes of one size: no fixed part can be told apart; the latest weighs most.
        let mut c = PassCost::default();
        c.record(512, 0.01);
        c.record(512, 0.012);
        let (fixed, per_token) = c.model().unwrap();
        assert_eq!(fixed, 0.0);
        assert!((per_token - (0.9 * 0.01 + 0.012) / 1.9 / 512.0).abs() < 1e-12);
        // Noise that makes larger passes look cheaper is not believed.
        let mut c = PassCost::default();
        c.record(100, 0.02);
        c.record(1000, 0.01);
        assert_eq!(c.model().unwrap().0, 0.0);
    }

    #[test]
    fn dimensions_and_prompts_must_be_the_models() {
        let e = info(ModelKind::Embedding);
        assert!(check(&embed(Some(4), EmbedPrompt::Default), &e, "e").is_ok());
        assert!(check(&embed(Some(5), EmbedPrompt::Default), &e, "e").unwrap_err().message.starts_with("dimensions:"));
        assert!(check(&embed(Some(0), EmbedPrompt::Default), &e, "e").is_err());
        assert!(check(&embed(None, EmbedPrompt::Named("query".into())), &e, "e").is_ok());
        let err = check(&embed(None, EmbedPrompt::Named("passage".into())), &e, "e").unwrap_err();
        assert!(err.message.contains("query"), "{}", err.message);
    }
}
