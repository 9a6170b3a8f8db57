//! The engine: a registry of model slots, request submission, lifecycle
//! (load, unload, shutdown), a watchdog and statistics. Pure Rust; the napi
//! layer in `crate::js` is one client, the bench binary another.

mod cache_file;
mod drafter;
mod embed;
mod fault;
mod heartbeat;
mod mixing;
mod output;
mod prefix;
mod request;
mod sequence;
mod slot;
pub mod speculative;
mod stats;
mod watchdog;
mod worker;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

pub use request::{Action, EmbedParams, EmbedPrompt, Event, FinishReason, GenerateParams, Prompt, Request, Timings, Usage};
pub use slot::ModelState;
pub use prefix::PrefixSnapshot;
pub use stats::{DeviceStats, EngineStats, MaskStats, MemoryStats, ModelStats};
use slot::{ModelSlot, SlotOptions};
use speculative::{Speculation, Speculative};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    error::{Error, ErrorCode, Result},
    model::{ModelInfo, WeightFormat},
    tokenizer::ChatMessage,
};

/// Locks `m`, also after a panic on another thread poisoned it: every
/// structure guarded here stays consistent between statements, and a worker
/// panic must not take the engine down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Engine settings. `Default` gives values that work for one local model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Sequences decoded together in one step (continuous batching). Default 8.
    pub max_batch_size: usize,
    /// Requests that may wait for a batch slot per model. Default 256.
    pub max_queued: usize,
    /// Deadline for calls that give no `timeoutMs`. Default: none.
    pub default_timeout: Option<Duration>,
    /// A worker with work that finishes no step for this long is declared
    /// hung and replaced. Default 30 s.
    pub hang_timeout: Duration,
    /// Dense or quantized weights; default per platform (see `WeightFormat`).
    pub weight_format: WeightFormat,
    /// Bytes of keys and values each model keeps for prefix reuse (0 turns
    /// it off), within half of MLX's memory limit. Default 256 MiB.
    pub prefix_cache_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch_size: 8,
            max_queued: 256,
            default_timeout: None,
            // On a GPU a step of a shape not seen before waits for MLX to
            // compile its kernels (seconds each; the warm-up at load takes the
            // common ones), which must not pass for a hang.
            hang_timeout: Duration::from_secs(if crate::device::backend().is_gpu() { 120 } else { 30 }),
            weight_format: WeightFormat::for_platform(),
            prefix_cache_bytes: 256 << 20,
        }
    }
}

pub(crate) struct Shared {
    options: EngineOptions,
    models: Mutex<HashMap<String, Arc<ModelSlot>>>,
    /// Set as soon as shutdown is asked for: no new work from then on.
    shutting_down: AtomicBool,
    /// Per model id: how its requests decode speculatively unless they say.
    speculative_defaults: Mutex<HashMap<String, Speculation>>,
    next_id: AtomicU64,
}

/// The inference engine. Cheap to share behind an `Arc`; every method may be
/// called from any thread. MLX work happens only on the per-model workers.
pub struct Engine {
    shared: Arc<Shared>,
    watchdog: Mutex<Option<watchdog::Watchdog>>,
    shutdown_started: AtomicBool,
    shutdown_done: tokio::sync::watch::Sender<bool>,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Result<Self> {
        if options.max_batch_size == 0 {
            return Err(Error::invalid("maxBatchSize", "must be at least 1"));
        }
        crate::platform::tune_allocator();
        let shared = Arc::new(Shared {
            options,
            models: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            speculative_defaults: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let watchdog = watchdog::Watchdog::start(shared.clone());
        Ok(Engine {
            shared,
            watchdog: Mutex::new(Some(watchdog)),
            shutdown_started: AtomicBool::new(false),
            shutdown_done: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn options(&self) -> &EngineOptions {
        &self.shared.options
    }

    fn check_running(&self) -> Result<()> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            Err(Error::new(ErrorCode::ShuttingDown, "the engine is shutting down"))
        } else {
            Ok(())
        }
    }

    fn slot(&self, id: &str) -> Result<Arc<ModelSlot>> {
        lock(&self.shared.models)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::ModelNotFound, format!("no model '{id}' is loaded")))
    }

    /// Loads a model under `id` and resolves once it is ready. Concurrent
    /// loads of one id share one load; loading an id again from the same
    /// path returns the loaded model.
    pub async fn load_model(&self, id: &str, path: &Path) -> Result<ModelInfo> {
        self.start_load(id, path)?;
        self.wait_ready(id).await
    }

    /// Registers the model and starts loading it on its worker, without
    /// waiting. From here on, `generate` for `id` queues until it is ready.
    pub fn start_load(&self, id: &str, path: &Path) -> Result<()> {
        self.check_running()?;
        let mut models = lock(&self.shared.models);
        match models.get(id) {
            Some(slot) if !matches!(slot.state(), ModelState::Failed(_) | ModelState::Unloaded) => {
                if slot.path != path {
                    return Err(Error::invalid(
                        "id",
                        format!("model '{id}' is already loaded from {}; unload it first", slot.path.display()),
                    ));
                }
            }
            _ => {
                let options = SlotOptions {
                    max_batch_size: self.shared.options.max_batch_size,
                    max_queued: self.shared.options.max_queued,
                    format: self.shared.options.weight_format,
                    prefix_cache_bytes: self.shared.options.prefix_cache_bytes,
                };
                models.insert(id.to_string(), ModelSlot::start(id.to_string(), PathBuf::from(path), options));
            }
        }
        Ok(())
    }

    /// Resolves once model `id` is ready (or its load failed).
    pub async fn wait_ready(&self, id: &str) -> Result<ModelInfo> {
        let slot = self.slot(id)?;
        let mut state = slot.subscribe();
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                ModelState::Ready => break,
                ModelState::Failed(reason) => return Err(Error::new(ErrorCode::ModelLoadFailed, reason)),
                ModelState::Draining | ModelState::Unloaded => {
                    return Err(Error::new(ErrorCode::ShuttingDown, format!("model '{id}' was unloaded while loading")))
                }
                ModelState::Loading => {}
            }
            if state.changed().await.is_err() {
                return Err(Error::internal("model state channel closed"));
            }
        }
        slot.served().map(|s| s.info.clone()).ok_or_else(|| Error::internal("ready model has no tokenizer"))
    }

    /// The file a model was loaded from.
    pub fn model_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.slot(id)?.path.clone())
    }

    /// Queues a generation. Errors here (before any work): SHUTTING_DOWN,
    /// MODEL_NOT_FOUND, MODEL_LOAD_FAILED, QUEUE_FULL. Everything after arrives
    /// on the returned channel: tokens, then exactly one end.
    pub fn generate(&self, mut params: GenerateParams) -> Result<(Arc<Request>, UnboundedReceiver<Event>)> {
        self.check_running()?;
        let slot = self.slot(&params.model)?;
        if let Some(served) = slot.served() {
            embed::check(&params.action, &served.info, &params.model)?;
        }
        if params.timeout.is_none() {
            params.timeout = self.shared.options.default_timeout;
        }
        params.speculative = self.resolve_speculation(&params.model, std::mem::take(&mut params.speculative))?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (request, rx) = Request::new(id, params);
        // Output rules compile here, before anything is queued, where the
        // model is ready (else when the worker admits the request).
        if request.params.response_format.is_none() && request.params.tools.is_none() {
            request.set_output(None);
        } else if let Some(served) = slot.served() {
            let p = &request.params;
            let grammars = served.grammars.as_ref().ok_or_else(|| Error::internal("a generating model has no grammar compiler"))?;
            request.set_output(output::OutputPlan::compile(p, grammars, served.template.as_deref(), &served.tokenizer)?);
        }
        let request = Arc::new(request);
        slot.submit(request.clone())?;
        tracing::debug!(parent: &request.span, "queued");
        Ok((request, rx))
    }

    /// Makes `speculative` the default of model `id`'s requests (`None`: plain
    /// decoding). A draft model it names is checked when a request uses it.
    pub fn set_speculative_default(&self, id: &str, speculative: Option<Speculation>) -> Result<()> {
        self.slot(id)?;
        let mut defaults = lock(&self.shared.speculative_defaults);
        match speculative {
            Some(s) => defaults.insert(id.to_string(), s),
            None => defaults.remove(id),
        };
        Ok(())
    }

    /// A request's speculation as the worker runs it: its own or its model's
    /// default, with a draft model's file found and its vocabulary checked
    /// against the model's (INVALID_ARGUMENT when it differs or the draft
    /// model is not loaded).
    fn resolve_speculation(&self, model: &str, asked: Speculative) -> Result<Speculative> {
        let chosen = match asked {
            Speculative::Off => return Ok(Speculative::Off),
            Speculative::On(s) => s,
            Speculative::ModelDefault => match lock(&self.shared.speculative_defaults).get(model) {
                Some(s) => s.clone(),
                None => return Ok(Speculative::Off),
            },
        };
        Ok(Speculative::On(match chosen {
            Speculation::Draft { model: draft, max_draft, .. } => {
                let unavailable = |why: String| Error::invalid("speculative.model", format!("draft model '{draft}': {why}"));
                if draft == model {
                    return Err(unavailable("is the model itself".into()));
                }
                let slot = self.slot(&draft).map_err(|_| unavailable("is not loaded".into()))?;
                let served = slot.served().ok_or_else(|| unavailable(format!("is not ready ({})", slot.state().name())))?;
                // Compared here when the model is ready, else by its worker on first use.
                if let Ok(target) = self.served(model) {
                    if cache_file::vocabulary_digest(&served.tokenizer) != cache_file::vocabulary_digest(&target.tokenizer) {
                        return Err(unavailable(format!("its vocabulary differs from model '{model}''s")));
                    }
                }
                Speculation::Draft { model: draft, path: slot.path.clone(), max_draft }
            }
            lookup => lookup,
        }))
    }

    fn served(&self, model: &str) -> Result<Arc<slot::Served>> {
        let slot = self.slot(model)?;
        slot.served().ok_or_else(|| Error::new(ErrorCode::ModelNotFound, format!("model '{model}' is not ready ({})", slot.state().name())))
    }

    pub fn model_info(&self, model: &str) -> Result<ModelInfo> {
        Ok(self.served(model)?.info.clone())
    }

    pub fn tokenize(&self, model: &str, text: &str) -> Result<Vec<u32>> {
        self.served(model)?.tokenizer.encode(text)
    }

    pub fn detokenize(&self, model: &str, ids: &[u32]) -> Result<String> {
        self.served(model)?.tokenizer.decode(ids)
    }

    /// The prompt text of `messages` (with `tools`, as a request offering them renders it).
    pub fn apply_chat_template(&self, model: &str, messages: &[ChatMessage], tools: Option<&crate::tools::ToolUse>) -> Result<String> {
        let served = self.served(model)?;
        match &served.template {
            Some(t) => output::render(t, messages, tools),
            None => Err(Error::invalid("model", format!("model '{model}' has no chat template"))),
        }
    }

    /// Waits (up to `drain`) for `slots` to finish their requests, ends the
    /// rest with SHUTTING_DOWN, then stops their workers and frees MLX memory.
    async fn drain_and_stop(slots: Vec<Arc<ModelSlot>>, drain: Duration) {
        for slot in &slots {
            slot.begin_drain();
        }
        let until = Instant::now() + drain;
        while Instant::now() < until && slots.iter().any(|s| s.load() != (0, 0)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for slot in &slots {
            slot.end_all(ErrorCode::ShuttingDown, "the model is shutting down");
        }
        let _ = tokio::task::spawn_blocking(move || slots.iter().for_each(|s| s.stop(STOP_WAIT))).await;
    }

    /// Drains and unloads one model, then frees its MLX memory.
    pub async fn unload_model(&self, id: &str, drain: Duration) -> Result<()> {
        let slot = self.slot(id)?;
        Self::drain_and_stop(vec![slot.clone()], drain).await;
        let mut models = lock(&self.shared.models);
        if models.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            models.remove(id);
            lock(&self.shared.speculative_defaults).remove(id);
        }
        Ok(())
    }

    /// Refuses new work, lets in-flight requests finish for up to `drain`,
    /// ends the rest with SHUTTING_DOWN, unloads every model and joins the
    /// worker threads. A second call waits for the first and returns.
    pub async fn shutdown(&self, drain: Duration) {
        self.refuse_new_work();
        if self.shutdown_started.swap(true, Ordering::AcqRel) {
            let mut done = self.shutdown_done.subscribe();
            let _ = done.wait_for(|d| *d).await;
            return;
        }
        tracing::info!("shutting down");
        let slots: Vec<_> = lock(&self.shared.models).values().cloned().collect();
        Self::drain_and_stop(slots, drain).await;
        lock(&self.shared.models).clear();
        let watchdog = lock(&self.watchdog).take();
        if let Some(w) = watchdog {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
        let _ = mlx_rs::memory::clear_cache();
        self.shutdown_done.send_replace(true);
        tracing::info!("shut down");
    }

    /// The first, synchronous half of `shutdown`: from now on every new call
    /// fails with SHUTTING_DOWN.
    pub fn refuse_new_work(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shut_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> EngineStats {
        let slots: Vec<_> = lock(&self.shared.models).values().cloned().collect();
        let mut models: Vec<_> = slots.iter().map(|s| s.stats()).collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        EngineStats { models, memory: MemoryStats::read(), device: DeviceStats::read() }
    }
}

/// How long shutdown and unload wait for a worker to leave its current step.
const STOP_WAIT: Duration = Duration::from_secs(10);

impl Drop for Engine {
    /// Dropped without `shutdown` (e.g. garbage-collected): end everything and
    /// tell the workers to stop, without waiting for them on this thread.
    fn drop(&mut self) {
        if let Some(w) = lock(&self.watchdog).take() {
            w.stop();
        }
        let slots: Vec<_> = lock(&self.shared.models).drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.end_all(ErrorCode::ShuttingDown, "the engine was dropped");
            slot.request_stop();
        }
    }
}
