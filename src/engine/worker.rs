//! The worker thread of a model slot. It owns every MLX object of its model
//! and runs the scheduler loop: admit queued requests at step boundaries,
//! prefill them, run one batched decode step for all active sequences,
//! sample per request, send events, retire finished ones, beat the heart.
//!
//! A prompt longer than one chunk is not prefilled in one go: each tick runs
//! one chunk of it and then the batch's decode step, so running streams keep
//! flowing while it prefills (chunks are smaller while a batch decodes).
//! Where the model is batch-invariant (the CPU's int8 kernels) the chunk
//! rides in the decode step's own forward pass ([`mixing`]).
//!
//! While a greedy batch decodes with nothing else to do, each step is queued
//! on the device before the previous one's tokens are read (see
//! [`InFlight`]): the host builds step n+1's graph while the device runs
//! step n.
//!
//! Constrained rows (see `output.rs`) take their token masks in
//! [`Worker::constrain`], computed on this thread while the step's forward
//! pass runs on MLX's and applied to the logits before the picks; a step
//! without such rows is built as before.

use std::{
    collections::VecDeque,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    thread::JoinHandle,
    time::Instant,
};

use mlx_rs::{ops::indexing::take_axis, transforms::async_eval, Array};

use super::{
    cache_file::{self, ModelIdentity},
    drafter::{self, Drafter},
    fault,
    heartbeat::Heartbeat,
    lock,
    mixing,
    prefix::{PrefixCache, PrefixStats},
    output::{self, OutputState},
    request::{Action, Event, Prompt, Request},
    sequence::{Progress, Sequence},
    slot::{ActiveSet, ModelSlot, Served, WorkerRef},
    speculative::{Speculation, StepCosts},
};
use crate::{
    constraint::{Compiler, MaskRows},
    error::{Error, ErrorCode, Result},
    model::{load_tracked, KvCache, LoadProgress, Loaded, LoadedModel, Logits, Segment},
    sampling::{Picks, Sampler, Verdict},
};

/// Prompts are prefilled in chunks of this many tokens on the CPU. Attention
/// computes each chunk against everything before it and masks the rest, so
/// smaller chunks waste less on the causal mask while larger ones keep matmuls
/// efficient; 256 was fastest on CPU (`examples/steps.rs`, `STEPS_CHUNK`).
const PREFILL_CHUNK: usize = 256;

/// The chunk on a GPU, where each chunk pays kernel launches and widens the
/// large quantized matrices once: a 4096-token prompt's first token came 3x
/// sooner than with 256 on an H200 (`MLX_SERVING_PREFILL_CHUNK=256|1024|2048
/// node bench/ab.cjs`, docs/gpu.md). mlx-lm prefills 2048 at a time too.
const PREFILL_CHUNK_GPU: usize = 2048;

/// The prefill chunk in tokens: by device, or `MLX_SERVING_PREFILL_CHUNK`
/// (16 to 8192; for comparisons, read once).
fn prefill_chunk_tokens() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        let default = if crate::device::backend().is_gpu() { PREFILL_CHUNK_GPU } else { PREFILL_CHUNK };
        std::env::var("MLX_SERVING_PREFILL_CHUNK").ok().and_then(|v| v.parse().ok()).map_or(default, |n: usize| n.clamp(16, 8192))
    })
}

/// Short prompts admitted together are prefilled side by side, up to this
/// many tokens (padding included) per forward pass.
const PREFILL_GROUP_TOKENS: usize = 2048;

/// While other sequences decode, a long prompt advances between their steps
/// by a token budget sized so that a chunk takes about as long as one decode
/// step (from the measured cost of both), within these bounds: each running
/// stream's next token is then delayed by about one step, not by a full chunk.
const INTERLEAVED_CHUNK_MIN: usize = 4;
const INTERLEAVED_CHUNK_FIRST: usize = 16;

/// The largest chunk size of the form 2^k or 3 * 2^k within `tokens` (at
/// least the minimum): few distinct shapes, whose kernels a GPU compiles once
/// (13 from 4 to 256 tokens).
fn chunk_shape(tokens: usize) -> usize {
    let tokens = tokens.max(INTERLEAVED_CHUNK_MIN);
    let pow = 1usize << (usize::BITS - 1 - tokens.leading_zeros());
    if tokens >= pow / 2 * 3 { pow / 2 * 3 } else { pow }
}

/// The next interleaved chunk on a GPU, from the last one's columns and
/// cost. A GPU's forward pass costs about the same for 4 tokens as for 100
/// (launches and host work, not arithmetic), so the average cost per token
/// would keep chunks at the minimum. The chunk doubles while it costs no
/// more than `target` (the cheapest chunk seen plus one decode step), halves
/// when it costs over twice that, and otherwise stays; sizes are rounded to
/// few shapes, as a GPU compiles kernels per shape.
fn gpu_chunk((columns, cost): (usize, std::time::Duration), target: std::time::Duration, at_once: usize) -> usize {
    let next = if cost <= target {
        columns * 2
    } else if cost > target * 2 {
        columns / 2
    } else {
        columns
    };
    chunk_shape(next.clamp(INTERLEAVED_CHUNK_MIN, at_once))
}

pub fn spawn(slot: Arc<ModelSlot>, generation: u64, w: &WorkerRef) -> JoinHandle<()> {
    let (heartbeat, active, progress, prefix) = (w.heartbeat.clone(), w.active.clone(), w.progress.clone(), w.prefix.clone());
    std::thread::Builder::new()
        .name(format!("mlx-serving:{}#{generation}", slot.id))
        .spawn(move || run(slot, generation, heartbeat, active, progress, prefix))
        .expect("spawning a worker thread")
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn run(slot: Arc<ModelSlot>, generation: u64, heartbeat: Arc<Heartbeat>, active: ActiveSet, progress: Arc<LoadProgress>, prefix: Arc<PrefixStats>) {
    let span = tracing::info_span!("worker", model = %slot.id, generation);
    let _enter = span.enter();
    let loaded = match catch_unwind(AssertUnwindSafe(|| load_tracked(&slot.path, slot.options.format, &progress))) {
        Ok(Ok(Loaded::Generator(loaded))) => loaded,
        Ok(Ok(Loaded::Embedder(loaded))) => return super::embed::serve(slot, generation, heartbeat, active, loaded),
        Ok(Err(e)) => return slot.set_failed(generation, &e),
        Err(panic) => {
            let e = Error::new(ErrorCode::ModelLoadFailed, format!("loading panicked: {}", panic_message(&*panic)));
            return slot.set_failed(generation, &e);
        }
    };
    tracing::info!(load_ms = loaded.info.load_ms, "model ready");
    let LoadedModel { model, tokenizer, template, info, .. } = loaded;
    let grammars = Arc::new(Compiler::new(tokenizer.clone(), info.vocab_size));
    warm_up_in_background(&grammars);
    slot.set_ready(generation, Served { tokenizer: tokenizer.clone(), template: template.clone(), info: info.clone(), grammars: Some(grammars) });
    let cache = KvCache::batch(model.layers());
    let mixes = mixing::enabled() && model.batch_invariant();
    // Never more than half of what MLX may allocate.
    let limit = mlx_rs::memory::memory_limit().unwrap_or(usize::MAX) / 2;
    let prefix = PrefixCache::new(slot.options.prefix_cache_bytes.min(limit), prefix);
    let mut worker = Worker {
        slot: slot.clone(),
        generation,
        heartbeat,
        active,
        model: Some(model),
        tokenizer,
        template,
        info,
        seqs: Vec::new(),
        cache,
        long: VecDeque::new(),
        in_flight: None,
        last_step: None,
        last_finish: Instant::now(),
        prefill_per_token: None,
        last_chunk: None,
        cheapest_chunk: None,
        mixes,
        budget: mixing::Budget::new(crate::kernels::Isa::in_use().int8_tile_rows()),
        prefix,
        identity: None,
        step_costs: StepCosts::default(),
        drafter: None,
    };
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
    for job in worker.long.drain(..) {
        job.fail(ErrorCode::ShuttingDown, "the model was unloaded");
    }
    worker.model = None;
    let _ = mlx_rs::memory::clear_cache();
    tracing::info!("worker stopped, MLX cache cleared");
}

/// Builds a model's grammar compiler ahead of its first constrained request,
/// on a thread of its own (the first request then finds it ready).
fn warm_up_in_background(grammars: &Arc<Compiler>) {
    let grammars = grammars.clone();
    let _ = std::thread::Builder::new().name("mlx-serving:grammars".into()).spawn(move || grammars.warm_up());
}

/// A request tokenized and checked, waiting for its prefill.
struct Pending {
    request: Arc<Request>,
    ids: Vec<u32>,
    max_tokens: usize,
    admitted: Instant,
    /// Its place in its output rules, where it has some.
    output: Option<OutputState>,
}

/// Prompts being prefilled side by side (shorter ones padded on the left),
/// chunk by chunk, into a cache of their own that joins the batch at the end.
struct PrefillJob {
    group: Vec<Pending>,
    pads: Vec<usize>,
    longest: usize,
    cache: KvCache,
    /// Tokens (of the longest prompt, padding included) prefilled so far.
    done: usize,
    /// The last chunk's logits: each prompt's next-token distribution once `done == longest`.
    logits: Option<Array>,
}

impl PrefillJob {
    fn new(group: Vec<Pending>, layers: usize) -> Self {
        let longest = group.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let pads: Vec<usize> = group.iter().map(|p| longest - p.ids.len()).collect();
        let mut cache = KvCache::with_rows(layers, pads.iter().map(|&p| p as i32).collect());
        cache.reserve(longest as i32);
        PrefillJob { group, pads, longest, cache, done: 0, logits: None }
    }

    /// One prompt, starting after its first `hit.tokens` tokens, whose keys
    /// and values come from the prefix cache.
    fn resumed(p: Pending, hit: crate::engine::prefix::Hit) -> Self {
        let longest = p.ids.len();
        let mut cache = KvCache::from_prefix(hit.layers, hit.tokens as i32);
        cache.reserve(longest as i32);
        PrefillJob { group: vec![p], pads: vec![0], longest, cache, done: hit.tokens, logits: None }
    }

    fn is_complete(&self) -> bool {
        self.done >= self.longest
    }

    /// Columns `start..end` of every prompt (left padding as token 0): [prompts, end - start].
    fn tokens(&self, start: usize, end: usize) -> Array {
        let tokens: Vec<i32> = self
            .group
            .iter()
            .zip(&self.pads)
            .flat_map(|(p, &pad)| (start..end).map(move |c| if c < pad { 0 } else { p.ids[c - pad] as i32 }))
            .collect();
        Array::from_slice(&tokens, &[self.group.len() as i32, (end - start) as i32])
    }

    /// A job of one request whose request ended elsewhere (abort, timeout) is abandoned.
    fn is_abandoned(&self) -> bool {
        self.group.len() == 1 && self.group[0].request.is_over(Instant::now())
    }

    fn fail(&self, code: ErrorCode, message: &str) {
        for p in &self.group {
            p.request.fail(code, message.to_string());
        }
    }
}

struct Worker {
    slot: Arc<ModelSlot>,
    generation: u64,
    heartbeat: Arc<Heartbeat>,
    active: ActiveSet,
    model: Option<crate::model::Model>,
    tokenizer: Arc<crate::tokenizer::Tokenizer>,
    template: Option<Arc<crate::tokenizer::ChatTemplate>>,
    info: crate::model::ModelInfo,
    /// The sequences being decoded, in the order of `cache`'s rows.
    seqs: Vec<Sequence>,
    cache: KvCache,
    /// Prompts longer than a chunk, prefilled a chunk per tick, oldest first.
    long: VecDeque<PrefillJob>,
    /// The next decode step, queued on the device, its tokens not yet read.
    in_flight: Option<InFlight>,
    /// How long the last decode step took, and the measured prefill cost per
    /// token (smoothed): together they size interleaved prefill chunks.
    last_step: Option<std::time::Duration>,
    /// When the last decode step's tokens were read.
    last_finish: Instant,
    prefill_per_token: Option<std::time::Duration>,
    /// The last prefill chunk's columns and cost, and the cheapest chunk's
    /// cost: on a GPU they size the next chunk.
    last_chunk: Option<(usize, std::time::Duration)>,
    cheapest_chunk: Option<std::time::Duration>,
    /// Whether long prompts' chunks ride in decode steps ([`mixing`]), and
    /// what sizes those chunks.
    mixes: bool,
    budget: mixing::Budget,
    /// Keys and values of recent sequences, for prompts that start the same way.
    prefix: PrefixCache,
    /// What a cache file must match; computed on first use.
    identity: Option<ModelIdentity>,
    /// Measured cost of one sequence's passes by tokens: what speculative
    /// decoding weighs its guesses against.
    step_costs: StepCosts,
    /// The draft model of the last request that asked for one.
    drafter: Option<Drafter>,
}

impl Worker {
    /// One scheduler iteration. Returns false when the worker must stop.
    fn tick(&mut self) -> bool {
        if !self.slot.is_current(self.generation) {
            return false;
        }
        self.retire_ended();
        let busy = self.seqs.len() + self.long.len();
        if busy == 0 && self.heartbeat.is_busy() {
            // Idle after work (busy until the wait below finds nothing): the
            // buffers that work freed go back to the system.
            crate::platform::release_free_memory();
        }
        let room = self.slot.options.max_batch_size.saturating_sub(busy);
        let Some(admitted) = self.slot.take_queued(room, busy == 0) else {
            return false;
        };
        if !admitted.is_empty() {
            // New rows join the batch (or a long prompt starts, whose chunks
            // run between steps; none is queued while one prefills): the step
            // already queued is completed first.
            if let Some(step) = self.in_flight.take() {
                self.finish(step);
            }
        }
        if busy == 0 && admitted.is_empty() {
            self.heartbeat.set_busy(false);
            return true;
        }
        self.heartbeat.set_busy(true);
        self.admit(admitted);
        if self.mixes && !self.seqs.is_empty() && !self.long.is_empty() {
            self.mixed_step();
            self.heartbeat.touch();
        } else {
            self.advance_long_prefill();
            if !self.seqs.is_empty() {
                self.decode_step();
                self.heartbeat.touch();
            }
        }
        true
    }

    /// One forward pass for the decode step of every sequence and the next
    /// chunk of the oldest long prompt ([`mixing`]); the prompt joins the
    /// batch once its last chunk is in. Until a decode step of the batch has
    /// been measured (to size the chunk), a decode step alone. A failed pass
    /// ends the streams and the prompt, as a failed decode step ends the
    /// streams.
    fn mixed_step(&mut self) {
        let Some(chunk) = self.budget.next_chunk(self.seqs.len(), self.at_once()) else {
            return self.decode_step();
        };
        let Some(mut job) = self.long.pop_front() else { return };
        let (start, end) = (job.done, (job.done + chunk).min(job.longest));
        match self.issue_mixed(&mut job, start, end) {
            Ok((step, logits)) => {
                self.finish(step);
                tracing::debug!(tokens = end - start, done = end, "prefill chunk in a decode step");
                job.logits = logits;
                job.done = end;
                if job.is_complete() {
                    self.join(job);
                } else {
                    self.long.push_front(job);
                }
            }
            Err(e) => {
                self.fail_job(&job, e.clone());
                self.fail_all(&format!("decode step failed: {}", e.message));
            }
        }
    }

    /// Runs one chunk of the oldest long prompt; when it is complete, its
    /// sequence joins the batch.
    fn advance_long_prefill(&mut self) {
        let Some(mut job) = self.long.pop_front() else { return };
        let chunk = self.interleaved_budget();
        let outcome = self.prefill_chunk(&mut job, chunk);
        match outcome {
            Ok(()) if job.is_complete() => self.join(job),
            Ok(()) => self.long.push_front(job),
            Err(e) => self.fail_job(&job, e),
        }
    }

    /// Removes the sequences at `indices` and their cache rows.
    fn retire(&mut self, indices: &[usize]) {
        if indices.is_empty() {
            return;
        }
        for &i in indices {
            self.remember(i);
        }
        let mut kept_rows = Vec::with_capacity(self.seqs.len());
        let mut active = lock(&self.active);
        for (i, seq) in std::mem::take(&mut self.seqs).into_iter().enumerate() {
            if indices.contains(&i) {
                active.remove(&seq.request.id);
            } else {
                kept_rows.push(i);
                self.seqs.push(seq);
            }
        }
        drop(active);
        if let Some(step) = &mut self.in_flight {
            step.rows = kept_rows.iter().map(|&i| step.rows[i]).collect();
        }
        if self.seqs.is_empty() {
            self.in_flight = None;
        }
        if let Err(e) = self.cache.retain(&kept_rows) {
            self.fail_all(&format!("compacting the cache failed: {}", e.message));
        }
    }

    /// Keeps batch row `i`'s keys and values (its sequence is retiring) for prefix reuse.
    fn remember(&mut self, i: usize) {
        if !self.prefix.is_enabled() {
            return;
        }
        let len = self.cache.len(i) as usize;
        if len < crate::engine::prefix::MIN_TOKENS {
            return;
        }
        let tokens = self.seqs[i].tokens[..len].to_vec();
        if let Err(e) = self.cache.row(i).and_then(|layers| self.prefix.insert(tokens, layers)) {
            tracing::warn!("keeping a finished sequence for reuse failed: {}", e.message);
        }
    }

    /// Ends every sequence with an internal error and empties the batch.
    fn fail_all(&mut self, message: &str) {
        tracing::error!("{message}");
        let mut active = lock(&self.active);
        for seq in self.seqs.drain(..) {
            seq.request.fail(ErrorCode::Internal, message.to_string());
            active.remove(&seq.request.id);
        }
        drop(active);
        self.in_flight = None;
        self.cache = KvCache::batch(self.cache_layers());
    }

    fn cache_layers(&self) -> usize {
        self.model.as_ref().map_or(0, |m| m.layers())
    }

    /// The most prompt tokens prefilled in one go now: a device's chunk when
    /// nothing decodes, and at most a CPU-sized chunk while streams decode,
    /// whose next tokens would otherwise wait for the whole prompt (a GPU's
    /// 2048-token chunk is several decode steps).
    fn at_once(&self) -> usize {
        if self.seqs.is_empty() {
            prefill_chunk_tokens()
        } else {
            PREFILL_CHUNK.min(prefill_chunk_tokens())
        }
    }

    /// Tokens of a long prompt to prefill before the next decode step.
    fn interleaved_budget(&self) -> usize {
        if self.seqs.is_empty() {
            return self.at_once();
        }
        if crate::device::backend().is_gpu() {
            return self.gpu_budget();
        }
        match (self.last_step, self.prefill_per_token) {
            (Some(step), Some(per_token)) if !per_token.is_zero() => {
                ((step.as_secs_f64() / per_token.as_secs_f64()) as usize).clamp(INTERLEAVED_CHUNK_MIN, self.at_once())
            }
            _ => INTERLEAVED_CHUNK_FIRST,
        }
    }

    fn gpu_budget(&self) -> usize {
        match (self.last_step, self.last_chunk, self.cheapest_chunk) {
            (Some(step), Some(last), Some(cheapest)) => gpu_chunk(last, step + cheapest, self.at_once()),
            _ => INTERLEAVED_CHUNK_FIRST,
        }
    }

    /// Drops sequences and long prefills whose request ended elsewhere (abort, timeout, return()).
    fn retire_ended(&mut self) {
        let now = Instant::now();
        let ended: Vec<usize> = (0..self.seqs.len()).filter(|&i| self.seqs[i].request.is_over(now)).collect();
        self.retire(&ended);
        let (abandoned, kept): (Vec<PrefillJob>, Vec<PrefillJob>) = self.long.drain(..).partition(|job| job.is_abandoned());
        self.long = kept.into();
        for job in abandoned {
            self.forget(&job.group[0].request);
        }
    }

    /// Prefills newly admitted requests and adds those that go on to decode
    /// to the batch. Prompts that fit in one chunk are prefilled now, in
    /// groups of similar length, one forward pass per group; longer ones are
    /// queued for `advance_long_prefill`, one chunk per tick.
    fn admit(&mut self, admitted: Vec<Arc<Request>>) {
        let now = Instant::now();
        let mut short = Vec::new();
        for request in admitted {
            lock(&self.active).insert(request.id, request.clone());
            if let Err(e) = super::embed::check(&request.params.action, &self.info, &self.slot.id) {
                request.end(Event::Error(e));
                self.forget(&request);
                continue;
            }
            if let Action::LoadCache(path) = &request.params.action {
                self.load_cache_file(&request, path);
                self.forget(&request);
                self.heartbeat.touch();
                continue;
            }
            match self.prepare(&request, now) {
                Ok(Some(p)) => {
                    if let Some(p) = self.start_alone(p) {
                        short.push(p);
                    }
                }
                Ok(None) => self.forget(&request),
                Err(e) => {
                    request.end(Event::Error(e));
                    self.forget(&request);
                }
            }
            self.heartbeat.touch();
        }
        // Shortest first; a group closes before padding would double its work.
        short.sort_by_key(|p| p.ids.len());
        let mut group: Vec<Pending> = Vec::new();
        for p in short {
            let padded = (group.len() + 1) * p.ids.len();
            let real = group.iter().map(|g| g.ids.len()).sum::<usize>() + p.ids.len();
            if !group.is_empty() && (padded > 2 * real || padded > PREFILL_GROUP_TOKENS) {
                self.prefill(std::mem::take(&mut group));
            }
            group.push(p);
        }
        if !group.is_empty() {
            self.prefill(group);
        }
    }

    /// Starts a prompt that is not prefilled with others: one that reuses a
    /// cached prefix, a cache file to write, or one longer than a chunk (queued
    /// for `advance_long_prefill`). Gives back a short prompt to group.
    fn start_alone(&mut self, p: Pending) -> Option<Pending> {
        let hit = self.prefix.lookup(&p.ids);
        let saving = matches!(p.request.params.action, Action::SaveCache(_));
        let job = match hit {
            Some(hit) => {
                tracing::debug!(parent: &p.request.span, reused = hit.tokens, prompt_tokens = p.ids.len(), "prefix reused");
                PrefillJob::resumed(p, hit)
            }
            None if saving || p.ids.len() > self.at_once() => PrefillJob::new(vec![p], self.cache_layers()),
            None => return Some(p),
        };
        if job.longest - job.done <= self.at_once() {
            self.run_job(job);
        } else {
            self.long.push_back(job);
        }
        None
    }

    /// Reads a cache file into the prefix cache and ends the request with
    /// the number of tokens it holds.
    fn load_cache_file(&mut self, request: &Arc<Request>, path: &std::path::Path) {
        let _enter = request.span.enter();
        let outcome = self.identity().and_then(|identity| {
            if !self.prefix.is_enabled() {
                return Err(Error::invalid("prefixCacheMb", "the prefix cache is off (0), so a cache file has nowhere to go"));
            }
            let budget = self.slot.options.prefix_cache_bytes as u64;
            // Headroom for the file's header and token ids beyond the tensors.
            cache_file::load(path, &identity, budget + (1 << 20))
        });
        match outcome {
            Ok((tokens, layers)) => {
                let n = tokens.len();
                // A file written where the model computes in another dtype (a CPU's
                // f32 read on a GPU) joins this model's cache in its dtype.
                let dtype = self.info.dtype;
                let layers = layers.into_iter().map(|(k, v)| Ok((k.as_dtype(dtype)?, v.as_dtype(dtype)?))).collect::<Result<Vec<_>>>();
                match layers.and_then(|layers| self.prefix.insert(tokens, layers)) {
                    Ok(()) => request.end_without_tokens(n),
                    Err(e) => request.end(Event::Error(e)),
                };
            }
            Err(e) => {
                request.end(Event::Error(e));
            }
        }
    }

    /// The model's identity for cache files (its fingerprint costs a read of the file's header).
    fn identity(&mut self) -> Result<ModelIdentity> {
        if let Some(identity) = &self.identity {
            return Ok(identity.clone());
        }
        let fingerprint = crate::model::load::fingerprint(&self.slot.path)?;
        let info = &self.info;
        let identity = ModelIdentity {
            fingerprint,
            tokenizer: cache_file::vocabulary_digest(&self.tokenizer),
            layers: info.layers,
            kv_heads: info.kv_heads,
            head_dim: info.head_dim,
            context_length: info.context_length,
            vocab_size: info.vocab_size,
        };
        self.identity = Some(identity.clone());
        Ok(identity)
    }

    fn forget(&self, request: &Request) {
        lock(&self.active).remove(&request.id);
    }

    /// Tokenizes and checks a request. `None` when it is already finished.
    fn prepare(&self, request: &Arc<Request>, admitted: Instant) -> Result<Option<Pending>> {
        let _enter = request.span.enter();
        let params = &request.params;
        let text = match &params.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Messages(m) => match &self.template {
                Some(t) => output::render(t, m, params.tools.as_ref())?,
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
            request.end_without_tokens(ids.len());
            return Ok(None);
        }
        let output = self.output_plan(request)?.map(|plan| plan.start());
        Ok(Some(Pending { request: request.clone(), ids, max_tokens, admitted, output }))
    }

    /// The request's output rules: compiled at submission, or now when the
    /// model was not ready then.
    fn output_plan(&self, request: &Request) -> Result<Option<Arc<output::OutputPlan>>> {
        if let Some(plan) = request.output() {
            return Ok(plan);
        }
        let served = self.slot.served().ok_or_else(|| Error::internal("a ready worker's model has no grammar compiler"))?;
        let grammars = served.grammars.as_ref().ok_or_else(|| Error::internal("a generating model has no grammar compiler"))?;
        let plan = output::OutputPlan::compile(&request.params, grammars, self.template.as_deref(), &self.tokenizer)?;
        request.set_output(plan);
        Ok(request.output().flatten())
    }

    /// Prefills `group` side by side now, samples each one's first token and
    /// joins those that go on to the batch. A failure ends every request of
    /// the group, and no other.
    fn prefill(&mut self, group: Vec<Pending>) {
        let (over, group): (Vec<Pending>, Vec<Pending>) = group.into_iter().partition(|p| p.request.is_over(Instant::now()));
        for p in over {
            self.forget(&p.request);
        }
        self.run_job(PrefillJob::new(group, self.cache_layers()));
    }

    /// Prefills the whole job now, then joins it.
    fn run_job(&mut self, mut job: PrefillJob) {
        let mut outcome = Ok(());
        while outcome.is_ok() && !job.is_complete() {
            outcome = self.prefill_chunk(&mut job, prefill_chunk_tokens());
        }
        match outcome {
            Ok(()) => self.join(job),
            Err(e) => self.fail_job(&job, e),
        }
    }

    /// Ends every request of a job whose prefill failed; no other request is touched.
    fn fail_job(&self, job: &PrefillJob, e: Error) {
        for p in &job.group {
            p.request.end(Event::Error(e.clone()));
            self.forget(&p.request);
        }
    }

    /// Runs the job's next chunk of at most `chunk` tokens through the model.
    fn prefill_chunk(&mut self, job: &mut PrefillJob, chunk: usize) -> Result<()> {
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let (start, end) = (job.done, (job.done + chunk).min(job.longest));
        let x = job.tokens(start, end);
        let started = Instant::now();
        let out = model.forward(&x, &mut job.cache)?;
        out.eval()?;
        let elapsed = started.elapsed();
        tracing::debug!(tokens = end - start, done = end, ms = elapsed.as_secs_f64() * 1e3, "prefill chunk");
        let per_token = elapsed / (x.size().max(1) as u32);
        // Later chunks attend to more context and cost more: follow the latest closely.
        self.prefill_per_token = Some(match self.prefill_per_token {
            Some(prev) => (prev + per_token * 3) / 4,
            None => per_token,
        });
        self.last_chunk = Some((end - start, elapsed));
        // The cheapest chunk is about a forward pass's fixed cost; it may rise slowly.
        self.cheapest_chunk = Some(self.cheapest_chunk.map_or(elapsed, |c| elapsed.min(c + (elapsed.saturating_sub(c)) / 16)));
        job.logits = Some(out);
        job.done = end;
        self.heartbeat.touch();
        Ok(())
    }

    /// A complete job: samples each prompt's first token and joins the
    /// sequences that go on into the batch. Whatever does not join has ended.
    fn join(&mut self, job: PrefillJob) {
        // Copies of the prompts' keys and values for reuse, made (evaluated)
        // once the first tokens went out.
        let mut keep = Vec::new();
        if self.prefix.is_enabled() {
            for (row, p) in job.group.iter().enumerate() {
                if p.ids.len() >= crate::engine::prefix::MIN_TOKENS {
                    match job.cache.row(row) {
                        Ok(layers) => keep.push((p.ids.clone(), layers)),
                        Err(e) => tracing::warn!("keeping a prompt for reuse failed: {}", e.message),
                    }
                }
            }
        }
        if let Some(Action::SaveCache(path)) = job.group.first().map(|p| p.request.params.action.clone()) {
            self.save_cache_file(job, path);
        } else {
            self.join_batch(job);
        }
        for (ids, layers) in keep {
            if let Err(e) = self.prefix.insert(ids, layers) {
                tracing::warn!("keeping a prompt for reuse failed: {}", e.message);
            }
        }
    }

    fn join_batch(&mut self, job: PrefillJob) {
        debug_assert!(self.in_flight.is_none(), "rows join while a step is queued");
        let requests: Vec<Arc<Request>> = job.group.iter().map(|p| p.request.clone()).collect();
        let outcome = self.first_tokens(job).and_then(|(seqs, cache)| {
            self.cache.join(vec![cache])?;
            self.seqs.extend(seqs);
            Ok(())
        });
        if let Err(e) = outcome {
            for request in &requests {
                request.end(Event::Error(e.clone()));
            }
        }
        let mut active = lock(&self.active);
        for request in requests.iter().filter(|r| r.is_ended()) {
            active.remove(&request.id);
        }
    }

    /// Writes a prefilled prompt's keys and values to `path` and ends its
    /// request with the prompt's token count; nothing is sampled.
    fn save_cache_file(&mut self, job: PrefillJob, path: std::path::PathBuf) {
        let p = &job.group[0];
        let _enter = p.request.span.enter();
        let outcome = self.identity().and_then(|identity| {
            let layers = job.cache.row(0)?;
            cache_file::save(&path, &identity, &p.ids, &layers)
        });
        match outcome {
            Ok(bytes) => {
                tracing::debug!(bytes, tokens = p.ids.len(), "cache file written");
                p.request.end_without_tokens(p.ids.len());
            }
            Err(e) => {
                p.request.end(Event::Error(e));
            }
        }
        self.forget(&p.request);
        self.heartbeat.touch();
    }

    fn first_tokens(&mut self, job: PrefillJob) -> Result<(Vec<Sequence>, KvCache)> {
        let PrefillJob { mut group, mut cache, logits, .. } = job;
        let Some(logits) = logits else {
            return Ok((Vec::new(), KvCache::batch(self.cache_layers())));
        };
        let logits = if group.iter().any(|p| p.output.as_ref().is_some_and(OutputState::masks)) {
            let mut masks = MaskRows::new(group.len(), logits.dim(-1) as usize);
            let mut masked = 0;
            for (row, p) in group.iter_mut().enumerate() {
                match p.output.as_mut().filter(|o| o.masks()).map(|o| o.mask_into(masks.row_mut(row))) {
                    Some(Ok(wrote)) => masked += usize::from(wrote),
                    Some(Err(e)) => {
                        p.request.end(Event::Error(e));
                    }
                    None => {}
                }
            }
            if masked > 0 { masks.apply(&logits)? } else { logits }
        } else {
            logits
        };
        let mut samplers: Vec<Sampler> = group.iter().map(|p| Sampler::new(p.request.params.sampling.clone(), &p.ids)).collect();
        let every_row: Vec<usize> = (0..group.len()).collect();
        let tokens = Picks::new(logits, samplers.iter())?.tokens(&every_row, samplers.iter_mut())?;
        let (mut seqs, mut rows, size) = (Vec::new(), Vec::new(), group.len());
        for (row, ((p, sampler), token)) in group.into_iter().zip(samplers).zip(tokens).enumerate() {
            let span = p.request.span.clone();
            let _enter = span.enter();
            let prompt_tokens = p.ids.len();
            let mut seq = Sequence::new(p.request.clone(), sampler, p.ids, p.max_tokens, p.admitted);
            seq.output = p.output;
            tracing::debug!(prompt_tokens, group = size, "prefilled");
            // Counted before delivery, so stats never lag behind what a caller saw.
            self.slot.throughput.record(1);
            if seq.accept(token, &self.tokenizer) == Progress::Continue {
                seqs.push(seq);
                rows.push(row);
            }
        }
        cache.retain(&rows)?;
        Ok((seqs, cache))
    }

    /// One decode step for every active sequence, batched: the one already
    /// queued, if any, else one issued now from the last tokens. When the
    /// batch is greedy (its tokens are ids on the device) and no sequence is
    /// at its last token, the following step is queued on those ids before
    /// this one's are read, so the device never waits for the host between
    /// steps. A sequence that ends meanwhile has its row of that step dropped.
    fn decode_step(&mut self) {
        if self.in_flight.is_none() && self.speculating() && self.speculative_step() {
            return;
        }
        let step = match self.in_flight.take().map_or_else(|| self.issue(None), Ok).and_then(|step| self.constrain(step)) {
            Ok(step) => step,
            Err(e) => return self.fail_all(&format!("decode step failed: {}", e.message)),
        };
        let ahead = lookahead()
            && matches!(step.picks, Picks::Argmax(_))
            && self.long.is_empty()
            && !self.seqs.iter().any(Sequence::is_at_last_token)
            && !self.speculating();
        if ahead {
            match self.issue(Some(&step)) {
                Ok(next) => self.in_flight = Some(next),
                Err(e) => return self.fail_all(&format!("decode step failed: {}", e.message)),
            }
        }
        self.finish(step);
    }

    /// Whether the next step is the batch's only sequence guessing its next
    /// tokens ahead (a batch of several rows decodes plainly: see
    /// [`super::speculative`]). While guessing does not pay it pauses for a
    /// few plain steps, which may then be queued ahead.
    fn speculating(&self) -> bool {
        matches!(self.seqs.as_slice(), [seq] if seq.speculation().is_some() && seq.output.as_ref().is_none_or(OutputState::speculates) && seq.paused == 0)
    }

    /// One step of the batch's only sequence with guesses: proposes tokens,
    /// verifies them with one pass of the model over all of them, delivers
    /// the accepted ones and the token after them, and forgets the rest's
    /// keys and values. False when no guess is worth verifying now (a plain
    /// step follows).
    fn speculative_step(&mut self) -> bool {
        const PAUSE: usize = 4;
        let round_started = Instant::now();
        let seq = &mut self.seqs[0];
        let Some(spec) = seq.speculation().cloned() else { return false };
        let room = seq.room_after_next().min(self.info.context_length.saturating_sub(seq.tokens.len() + 1));
        let proposal = match &spec {
            Speculation::PromptLookup { max_draft, ngram } => {
                let found = seq.lookup.propose(&seq.tokens, *ngram, (*max_draft).min(room));
                let n = seq.tuner.draft_len(found.len(), &self.step_costs, std::time::Duration::ZERO);
                Ok(found[..n].to_vec())
            }
            Speculation::Draft { model, path, max_draft } => self.propose_with_draft(model, path, (*max_draft).min(room)),
        };
        // Under output rules, the guesses the rules allow, and each position's mask.
        let proposal = proposal.and_then(|p| self.masks_ahead(p));
        let (proposal, masks) = match proposal {
            Ok((p, masks)) if !p.is_empty() => (p, masks),
            Ok(_) => {
                // Nothing in the text to guess from: a few plain steps
                // (queued ahead) before looking again. A draft model that
                // doubts its first guess costs one plain step.
                if matches!(spec, Speculation::PromptLookup { .. }) {
                    self.seqs[0].paused = PAUSE;
                }
                return false;
            }
            Err(e) => {
                self.seqs[0].request.end(Event::Error(e));
                self.retire(&[0]);
                return true;
            }
        };
        match self.verify(&proposal, masks, round_started) {
            Ok(()) => {}
            Err(e) => self.fail_all(&format!("decode step failed: {}", e.message)),
        }
        true
    }

    /// Guesses with the request's draft model, loading it into this worker
    /// first if another (or none) is loaded.
    fn propose_with_draft(&mut self, model: &str, path: &std::path::Path, room: usize) -> Result<Vec<u32>> {
        if self.drafter.as_ref().is_none_or(|d| d.path() != path) {
            self.drafter = None;
            let loaded = Drafter::load(path, self.slot.options.format, &self.tokenizer)
                .map_err(|e| drafter::unavailable(model, &e.message))?;
            self.drafter = Some(loaded);
        }
        let drafter = self.drafter.as_mut().expect("loaded above");
        let seq = &mut self.seqs[0];
        if !drafter.has_room(seq.tokens.len(), room + 1) {
            return Ok(Vec::new());
        }
        let n = seq.tuner.draft_len(room, &self.step_costs, drafter.cost_per_token());
        drafter.propose(seq.request.id, seq.sampler.clone(), &seq.tokens, n).inspect_err(|_| drafter.reset())
    }

    /// The guesses of the batch's only sequence that its output rules allow
    /// in a row, and the masks of the verifying pass's positions (`None`
    /// without rules). Computed before the pass: which positions it has
    /// depends on them.
    fn masks_ahead(&mut self, mut drafts: Vec<u32>) -> Result<(Vec<u32>, Option<MaskRows>)> {
        let seq = &mut self.seqs[0];
        let Some(output) = seq.output.as_mut().filter(|o| o.masks()) else { return Ok((drafts, None)) };
        let vocab = self.info.vocab_size;
        let mut masks = MaskRows::new(drafts.len() + 1, vocab);
        let started = Instant::now();
        let allowed = output.masks_ahead(&drafts, &mut masks)?;
        self.slot.masks.record(allowed as u64 + 1, started.elapsed());
        drafts.truncate(allowed);
        masks.truncate(allowed + 1);
        Ok((drafts, Some(masks)))
    }

    /// Verifies `drafts` for the batch's only sequence in one pass (its
    /// positions' logits under `masks`, where output rules apply) and
    /// delivers what it gives. `round_started`: when proposing the drafts began.
    fn verify(&mut self, drafts: &[u32], masks: Option<MaskRows>, round_started: Instant) -> Result<()> {
        fault::before_decode_step();
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let drafted = drafts.len();
        let seq = &mut self.seqs[0];
        let input: Vec<i32> = std::iter::once(seq.last_token).chain(drafts.iter().copied()).map(|t| t as i32).collect();
        let started = Instant::now();
        let logits = model.forward_logits(&Array::from_slice(&input, &[1, input.len() as i32]), &mut self.cache, Logits::Every)?;
        let logits = match &masks {
            Some(masks) => masks.apply(&logits.reshape(&[input.len() as i32, -1])?)?.reshape(&[1, input.len() as i32, -1])?,
            None => logits,
        };
        let verdict = if seq.sampler.is_greedy() {
            // The model's own picks, read as ids: the drafts it agrees with, then its next.
            let picks = mlx_rs::ops::indexing::argmax_axis(&logits, -1, None)?;
            picks.eval()?;
            let picks = picks.as_slice::<u32>();
            let accepted = drafts.iter().zip(picks).take_while(|(d, p)| d == p).count();
            seq.sampler.remember_all(&picks[..=accepted]);
            Verdict { accepted, next: picks[accepted] }
        } else {
            logits.eval()?;
            let vocab = logits.dim(-1) as usize;
            let data = logits.as_slice::<f32>();
            let rows: Vec<&[f32]> = data.chunks(vocab).collect();
            seq.sampler.verify(&rows, drafts)
        };
        self.step_costs.record(input.len(), started.elapsed());
        self.last_step = Some(started.elapsed());
        self.last_finish = Instant::now();
        seq.tuner.record(drafted, verdict.accepted);
        seq.lookup.settle(drafted, verdict.accepted);
        seq.drafted += drafted;
        seq.accepted += verdict.accepted;
        self.slot.speculation.record(drafted, verdict.accepted);
        if matches!(seq.speculation(), Some(Speculation::Draft { .. })) {
            // A draft model's round is measured whole (its doubts, its catching
            // up, which the expected rate leaves out); prompt lookup's guesses
            // cost next to nothing to make.
            seq.tuner.record_round(round_started.elapsed(), verdict.accepted + 1);
            if let Some(d) = self.drafter.as_mut() {
                d.settle(seq.tokens.len(), verdict.accepted);
            }
        }
        // Delivered one by one, as plain steps would: any may end the request.
        let mut delivered = 0;
        let mut retire = false;
        for &token in drafts[..verdict.accepted].iter().chain(std::iter::once(&verdict.next)) {
            delivered += 1;
            self.slot.throughput.record(1);
            if seq.accept(token, &self.tokenizer) == Progress::Retire {
                retire = true;
                break;
            }
        }
        tracing::debug!(drafted, accepted = verdict.accepted, delivered, ms = started.elapsed().as_secs_f64() * 1e3, "speculative step");
        // The pass stored every input; the cache keeps what precedes the last delivered token.
        self.cache.truncate((input.len() - delivered) as i32);
        if retire {
            self.retire(&[0]);
        }
        Ok(())
    }

    /// Builds a decode step for every sequence and queues it on the device:
    /// on the host's last tokens, or on the ids `after` picked for them.
    /// The cache takes the step's keys and values now.
    fn issue(&mut self, after: Option<&InFlight>) -> Result<InFlight> {
        fault::before_decode_step();
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let batch = self.seqs.len() as i32;
        let x = match after {
            None => {
                let tokens: Vec<i32> = self.seqs.iter().map(|s| s.last_token as i32).collect();
                Array::from_slice(&tokens, &[batch, 1])
            }
            // The embedding takes the u32 ids as they are; rows are
            // selected only where some have left (any row, the last ones too).
            Some(prev) if prev.keeps_every_row() => prev.picks.array().reshape(&[batch, 1])?,
            Some(prev) => {
                let rows: Vec<i32> = prev.rows.iter().map(|&r| r as i32).collect();
                take_axis(prev.picks.array(), Array::from_slice(&rows, &[batch]), 0)?.reshape(&[batch, 1])?
            }
        };
        let started = Instant::now();
        let logits = model.forward(&x, &mut self.cache)?;
        let rows = (0..batch as usize).collect();
        if self.seqs.iter().any(Sequence::masks) {
            // The forward pass runs while `constrain` computes the masks.
            async_eval([&logits])?;
            return Ok(InFlight { picks: Picks::Logits(logits), awaits_masks: true, rows, issued: batch as usize, started, chunk: 0 });
        }
        let picks = Picks::new(logits, self.seqs.iter().map(|s| &s.sampler))?;
        async_eval([picks.array()])?;
        Ok(InFlight { picks, awaits_masks: false, rows, issued: batch as usize, started, chunk: 0 })
    }

    /// [`Worker::issue`] with columns `start..end` of a long prompt in the
    /// same pass; also the prompt's logits when `end` is its last column.
    fn issue_mixed(&mut self, job: &mut PrefillJob, start: usize, end: usize) -> Result<(InFlight, Option<Array>)> {
        fault::before_decode_step();
        let model = self.model.as_ref().expect("model is loaded while the worker runs");
        let batch = self.seqs.len() as i32;
        let tokens: Vec<i32> = self.seqs.iter().map(|s| s.last_token as i32).collect();
        let started = Instant::now();
        let mut parts = [
            Segment { tokens: Array::from_slice(&tokens, &[batch, 1]), cache: &mut self.cache, logits: Some(Logits::Last) },
            Segment { tokens: job.tokens(start, end), cache: &mut job.cache, logits: (end == job.longest).then_some(Logits::Last) },
        ];
        let mut out = model.forward_segments(&mut parts)?;
        let prompt = out.pop().flatten();
        let logits = out.pop().flatten().ok_or_else(|| Error::internal("a mixed step gave no logits for its streams"))?;
        let (rows, chunk) = ((0..batch as usize).collect(), end - start);
        if self.seqs.iter().any(Sequence::masks) {
            // As in `issue`: the pass runs while `constrain` computes the masks.
            async_eval(std::iter::once(&logits).chain(prompt.as_ref()))?;
            let step = InFlight { picks: Picks::Logits(logits), awaits_masks: true, rows, issued: batch as usize, started, chunk };
            return Ok((step, prompt));
        }
        let picks = Picks::new(logits, self.seqs.iter().map(|s| &s.sampler))?;
        async_eval(std::iter::once(picks.array()).chain(prompt.as_ref()))?;
        let step = InFlight { picks, awaits_masks: false, rows, issued: batch as usize, started, chunk };
        Ok((step, prompt))
    }

    /// Folds the masks of a step's constrained rows into its logits and
    /// queues its picks; a step that awaits no masks is returned as it is.
    /// The masks are computed here, on the worker thread, while the step's
    /// forward pass runs on MLX's; they depend on every token before, so a
    /// step queued ahead ([`InFlight`]) issues its forward pass early but is
    /// constrained only here, after the previous step's tokens were read. A
    /// row whose grammar fails (past a limit) ends its request alone.
    fn constrain(&mut self, mut step: InFlight) -> Result<InFlight> {
        if !step.awaits_masks {
            return Ok(step);
        }
        let Picks::Logits(logits) = &step.picks else { unreachable!("a step awaiting masks holds its logits") };
        let mut masks = MaskRows::new(step.issued, logits.dim(-1) as usize);
        let started = Instant::now();
        let mut masked = 0;
        for (seq, &row) in self.seqs.iter_mut().zip(&step.rows) {
            match seq.output.as_mut().filter(|o| o.masks()).map(|o| o.mask_into(masks.row_mut(row))) {
                Some(Ok(wrote)) => masked += u64::from(wrote),
                Some(Err(e)) => {
                    seq.request.end(Event::Error(e));
                }
                None => {}
            }
        }
        self.slot.masks.record(masked, started.elapsed());
        // Rows that may yet start a grammar but have none now leave the logits as they are.
        let logits = if masked > 0 { masks.apply(logits)? } else { logits.clone() };
        step.picks = Picks::new(logits, self.seqs.iter().map(|s| &s.sampler))?;
        async_eval([step.picks.array()])?;
        step.awaits_masks = false;
        Ok(step)
    }

    /// Reads a step's tokens and delivers them; retires the sequences that ended.
    fn finish(&mut self, step: InFlight) {
        let step = match self.constrain(step) {
            Ok(step) => step,
            Err(e) => return self.fail_all(&format!("decode step failed: {}", e.message)),
        };
        let result = step.picks.tokens(&step.rows, self.seqs.iter_mut().map(|s| &mut s.sampler));
        let now = Instant::now();
        // A queued step's time is counted from when the device could start it.
        let elapsed = now.duration_since(step.started.max(self.last_finish));
        self.last_finish = now;
        self.last_step = Some(elapsed);
        if step.chunk == 0 && step.issued == 1 {
            // A plain step of one row: what a guess must beat (speculation's tuner).
            self.step_costs.record(1, elapsed);
        }
        match step.chunk {
            0 => self.budget.decode_step(step.issued, elapsed),
            chunk => self.budget.mixed_step(step.issued, chunk, elapsed),
        }
        let batch = step.rows.len();
        tracing::debug!(rows = batch, columns = self.cache.columns(), ms = elapsed.as_secs_f64() * 1e3, "decode step");
        let tokens = match result {
            Ok(tokens) => tokens,
            Err(e) => return self.fail_all(&format!("decode step failed: {}", e.message)),
        };
        // Counted before delivery, so stats never lag behind what a caller saw.
        self.slot.throughput.record(batch as u64);
        let mut retired = Vec::new();
        for (i, (seq, token)) in self.seqs.iter_mut().zip(tokens).enumerate() {
            seq.paused = seq.paused.saturating_sub(1);
            if seq.accept(token, &self.tokenizer) == Progress::Retire {
                retired.push(i);
            }
        }
        self.retire(&retired);
    }
}

/// Whether a decode step may be queued before the previous one's tokens are
/// read ([`Worker::decode_step`]); `MLX_SERVING_LOOKAHEAD=0` turns it off
/// (for comparisons; read once).
fn lookahead() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLX_SERVING_LOOKAHEAD").map_or(true, |v| v != "0"))
}

/// A decode step queued on the device whose tokens are not yet read.
struct InFlight {
    picks: Picks,
    /// `picks` holds the step's raw logits until [`Worker::constrain`] folds
    /// its constrained rows' masks in.
    awaits_masks: bool,
    /// The row of `picks` of each sequence in [`Worker::seqs`], in order
    /// (sequences retired since the step was issued have none).
    rows: Vec<usize>,
    /// How many rows the step was issued with.
    issued: usize,
    started: Instant,
    /// Tokens of a long prompt's chunk in the step's pass (0: none).
    chunk: usize,
}

impl InFlight {
    /// Whether every row the step was issued with still has its sequence,
    /// in order: only then are its picks the next step's input as they are.
    /// Rows that left from the end (the last sequences retired) count too.
    fn keeps_every_row(&self) -> bool {
        self.rows.len() == self.issued && self.rows.iter().enumerate().all(|(i, &r)| i == r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_chunk_grows_while_cheap_and_shrinks_when_dear() {
        let ms = std::time::Duration::from_millis;
        // A forward pass of 6 ms whatever its size, decode steps of 3 ms: the
        // chunk doubles up to what is allowed at once.
        let mut chunk = INTERLEAVED_CHUNK_FIRST;
        let mut sizes = vec![chunk];
        while chunk < 256 {
            chunk = gpu_chunk((chunk, ms(6)), ms(9), 256);
            sizes.push(chunk);
        }
        assert_eq!(sizes, [16, 32, 64, 128, 256]);
        assert_eq!(gpu_chunk((256, ms(6)), ms(9), 256), 256);
        // Between the target and twice it, the chunk stays; above, it halves.
        assert_eq!(gpu_chunk((128, ms(12)), ms(9), 256), 128);
        assert_eq!(gpu_chunk((128, ms(19)), ms(9), 256), 64);
        assert_eq!(gpu_chunk((4, ms(500)), ms(9), 256), INTERLEAVED_CHUNK_MIN);
        // A partial last chunk (90 columns) or a whole prompt (2005) gives a shape within bounds.
        assert_eq!(gpu_chunk((90, ms(12)), ms(9), 256), 64);
        assert_eq!(gpu_chunk((2005, ms(25)), ms(9), 256), 256);
    }

    #[test]
    fn chunk_shapes_are_few_and_never_above_the_budget() {
        assert_eq!((1..=8).map(chunk_shape).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 6, 6, 8]);
        assert_eq!([12, 13, 16, 23, 24, 200, 255, 256].map(chunk_shape), [12, 12, 16, 16, 24, 192, 192, 256]);
        let shapes: std::collections::BTreeSet<usize> = (INTERLEAVED_CHUNK_MIN..=PREFILL_CHUNK).map(chunk_shape).collect();
        assert_eq!(shapes.len(), 13);
        assert!((INTERLEAVED_CHUNK_MIN..=4096).all(|n| chunk_shape(n) <= n && chunk_shape(n) * 3 > n * 2));
    }
}
