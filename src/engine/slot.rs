//! A model slot: one loaded model id, its request queue, its lifecycle state
//! and its current worker. The slot outlives workers; a replacement worker
//! takes over the same queue.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Condvar, Mutex, RwLock,
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::watch;

use super::{
    heartbeat::Heartbeat,
    lock,
    prefix::PrefixStats,
    request::Request,
    stats::{MaskCounters, Throughput},
    worker,
};
use crate::{
    constraint::Compiler,
    error::{Error, ErrorCode, Result},
    model::{LoadProgress, ModelInfo, WeightFormat},
    tokenizer::{ChatTemplate, Tokenizer},
};

/// Lifecycle of a model: `Loading -> Ready -> Draining -> Unloaded`, or `Failed`.
/// After a worker crash or hang the slot goes back to `Loading` while a
/// replacement worker reloads the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Draining,
    Unloaded,
    Failed(String),
}

impl ModelState {
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Draining => "draining",
            ModelState::Unloaded => "unloaded",
            ModelState::Failed(_) => "failed",
        }
    }
}

/// What the JS thread may use without the worker: tokenizer, template,
/// info, and the grammar compiler for constrained requests.
pub struct Served {
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    pub info: ModelInfo,
    /// The grammar compiler of a generating model (an embedding model has none).
    pub grammars: Option<Arc<Compiler>>,
}

#[derive(Debug, Clone, Copy)]
pub struct SlotOptions {
    pub max_batch_size: usize,
    pub max_queued: usize,
    pub format: WeightFormat,
    /// Bytes of keys and values kept for prefix reuse (0: off).
    pub prefix_cache_bytes: usize,
}

/// Requests admitted by one worker, keyed by request id.
pub type ActiveSet = Arc<Mutex<HashMap<u64, Arc<Request>>>>;

/// The worker currently serving the slot.
pub struct WorkerRef {
    pub generation: u64,
    pub heartbeat: Arc<Heartbeat>,
    pub active: ActiveSet,
    /// The bytes of the model this worker's load has read.
    pub progress: Arc<LoadProgress>,
    /// This worker's prefix cache figures.
    pub prefix: Arc<PrefixStats>,
    thread: Option<JoinHandle<()>>,
}

struct Queue {
    items: VecDeque<Arc<Request>>,
    stopping: bool,
}

pub struct ModelSlot {
    pub id: String,
    pub path: PathBuf,
    pub options: SlotOptions,
    state: watch::Sender<ModelState>,
    served: RwLock<Option<Arc<Served>>>,
    queue: Mutex<Queue>,
    queued_cv: Condvar,
    worker: Mutex<WorkerRef>,
    restarts: AtomicU32,
    abandoned: AtomicU32,
    pub throughput: Throughput,
    pub masks: MaskCounters,
    pub speculation: super::stats::Speculation,
}

impl ModelSlot {
    /// Creates the slot and starts its first worker, which loads the model.
    pub fn start(id: String, path: PathBuf, options: SlotOptions) -> Arc<Self> {
        let slot = Arc::new(ModelSlot {
            id,
            path,
            options,
            state: watch::Sender::new(ModelState::Loading),
            served: RwLock::new(None),
            queue: Mutex::new(Queue { items: VecDeque::new(), stopping: false }),
            queued_cv: Condvar::new(),
            worker: Mutex::new(WorkerRef { generation: 0, heartbeat: Arc::default(), active: Arc::default(), progress: Arc::default(), prefix: Arc::default(), thread: None }),
            restarts: AtomicU32::new(0),
            abandoned: AtomicU32::new(0),
            throughput: Throughput::default(),
            masks: MaskCounters::default(),
            speculation: Default::default(),
        });
        let mut w = lock(&slot.worker);
        w.thread = Some(worker::spawn(slot.clone(), 0, &w));
        drop(w);
        slot
    }

    pub fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    pub fn served(&self) -> Option<Arc<Served>> {
        self.served.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_current(&self, generation: u64) -> bool {
        lock(&self.worker).generation == generation
    }

    /// Queues a request for the worker.
    pub fn submit(&self, request: Arc<Request>) -> Result<()> {
        match self.state() {
            ModelState::Failed(reason) => return Err(Error::new(ErrorCode::ModelLoadFailed, reason)),
            ModelState::Draining | ModelState::Unloaded => {
                return Err(Error::new(ErrorCode::ShuttingDown, format!("model '{}' is being unloaded", self.id)))
            }
            ModelState::Loading | ModelState::Ready => {}
        }
        let mut q = lock(&self.queue);
        q.items.retain(|r| !r.is_ended());
        if q.items.len() >= self.options.max_queued {
            return Err(Error::new(
                ErrorCode::QueueFull,
                format!("{} requests are already waiting for model '{}' (maxQueued)", q.items.len(), self.id),
            ));
        }
        q.items.push_back(request);
        drop(q);
        self.queued_cv.notify_one();
        Ok(())
    }

    /// Worker side: up to `room` queued requests that have not ended. With
    /// `block`, waits a little for work first. `None` tells the worker to stop.
    pub fn take_queued(&self, room: usize, block: bool) -> Option<Vec<Arc<Request>>> {
        let mut q = lock(&self.queue);
        if block && q.items.is_empty() && !q.stopping {
            q = self.queued_cv.wait_timeout(q, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
        if q.stopping {
            return None;
        }
        let mut taken = Vec::new();
        while taken.len() < room {
            match q.items.pop_front() {
                Some(r) if r.is_ended() => continue,
                Some(r) => taken.push(r),
                None => break,
            }
        }
        Some(taken)
    }

    /// Worker side: the model is loaded and serving.
    pub fn set_ready(&self, generation: u64, served: Served) {
        if !self.is_current(generation) {
            return;
        }
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(served));
        self.state.send_if_modified(|s| {
            if *s == ModelState::Loading {
                *s = ModelState::Ready;
                true
            } else {
                false
            }
        });
    }

    /// Worker side: loading failed; every waiting request ends with the reason.
    pub fn set_failed(&self, generation: u64, error: &Error) {
        if !self.is_current(generation) {
            return;
        }
        tracing::error!(model = %self.id, "model load failed: {}", error.message);
        self.state.send_replace(ModelState::Failed(error.message.clone()));
        self.end_queued(ErrorCode::ModelLoadFailed, &error.message);
    }

    /// Replaces worker `generation` (crashed or hung) with a fresh one that
    /// reloads the model. Its admitted requests end with `code`; queued ones
    /// wait for the replacement. A hung thread is abandoned, never reused.
    pub fn replace_worker(self: &Arc<Self>, generation: u64, code: ErrorCode, reason: &str) {
        let mut w = lock(&self.worker);
        if w.generation != generation || matches!(self.state(), ModelState::Unloaded) {
            return;
        }
        tracing::error!(model = %self.id, generation, code = %code, "replacing worker: {reason}");
        let old: Vec<_> = lock(&w.active).drain().map(|(_, r)| r).collect();
        for request in old {
            request.fail(code, format!("{reason}; the worker was replaced, retry the request"));
        }
        self.restarts.fetch_add(1, Ordering::Relaxed);
        if code == ErrorCode::WorkerHung {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        w.thread.take(); // detach: a hung thread cannot be joined
        w.generation += 1;
        w.heartbeat = Arc::default();
        w.active = Arc::default();
        w.progress = Arc::default();
        w.prefix = Arc::default();
        if !matches!(self.state(), ModelState::Draining) {
            self.state.send_replace(ModelState::Loading);
        }
        w.thread = Some(worker::spawn(self.clone(), w.generation, &w));
    }

    /// Watchdog side: is the current worker holding work without progress?
    pub fn check_hung(self: &Arc<Self>, hang_timeout: Duration) {
        let (generation, stalled_ms) = {
            let w = lock(&self.worker);
            (w.generation, if w.heartbeat.is_busy() { w.heartbeat.ms_ago() } else { 0 })
        };
        if stalled_ms > hang_timeout.as_millis() as u64 {
            self.replace_worker(generation, ErrorCode::WorkerHung, &format!("worker made no progress for {stalled_ms} ms"));
        }
    }

    /// Ends queued requests whose deadline passed, so they free their place.
    pub fn expire_queued(&self) {
        let now = std::time::Instant::now();
        let mut q = lock(&self.queue);
        q.items.retain(|r| !r.is_over(now));
    }

    pub fn end_queued(&self, code: ErrorCode, message: &str) {
        let drained: Vec<_> = lock(&self.queue).items.drain(..).collect();
        for r in drained {
            r.fail(code, message);
        }
    }

    /// Ends every queued and admitted request.
    pub fn end_all(&self, code: ErrorCode, message: &str) {
        self.end_queued(code, message);
        let active: Vec<_> = lock(&lock(&self.worker).active).values().cloned().collect();
        for r in active {
            r.fail(code, message);
        }
    }

    pub fn begin_drain(&self) {
        self.state.send_if_modified(|s| {
            if matches!(s, ModelState::Unloaded | ModelState::Draining) {
                false
            } else {
                *s = ModelState::Draining;
                true
            }
        });
    }

    /// (admitted, queued) requests that have not ended.
    pub fn load(&self) -> (usize, usize) {
        let queued = lock(&self.queue).items.iter().filter(|r| !r.is_ended()).count();
        let active = lock(&lock(&self.worker).active).values().filter(|r| !r.is_ended()).count();
        (active, queued)
    }

    /// Tells the worker to stop after its current step, without waiting.
    pub fn request_stop(&self) {
        lock(&self.queue).stopping = true;
        self.queued_cv.notify_all();
    }

    /// Stops the worker and waits up to `wait` for it to free the model. A
    /// worker that does not finish in time (hung inside a step) is detached
    /// and counted as abandoned, so shutdown itself can never hang.
    pub fn stop(&self, wait: Duration) {
        self.request_stop();
        let thread = lock(&self.worker).thread.take();
        if let Some(thread) = thread {
            let until = std::time::Instant::now() + wait;
            while !thread.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::error!(model = %self.id, "worker did not stop within {wait:?}; abandoning it");
                self.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.state.send_replace(ModelState::Unloaded);
    }

    pub fn stats(&self) -> super::stats::ModelStats {
        let (active, queued) = self.load();
        let (heartbeat_ms_ago, load_progress, prefix_cache) = {
            let w = lock(&self.worker);
            (w.heartbeat.ms_ago(), w.progress.get(), w.prefix.snapshot())
        };
        super::stats::ModelStats {
            id: self.id.clone(),
            state: self.state().name().to_string(),
            active_requests: active,
            queued_requests: queued,
            restarts: self.restarts.load(Ordering::Relaxed),
            abandoned_workers: self.abandoned.load(Ordering::Relaxed),
            tokens_generated: self.throughput.total(),
            tokens_per_second: self.throughput.per_second(),
            last_heartbeat_ms_ago: heartbeat_ms_ago,
            load_progress,
            prefix_cache,
            masks: self.masks.snapshot(),
            drafted_tokens: self.speculation.totals().0,
            accepted_tokens: self.speculation.totals().1,
        }
    }
}
