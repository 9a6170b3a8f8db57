//! Counters a model slot keeps for `Engine::stats`.

use super::lock;
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// Throughput is averaged over this window.
const WINDOW: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Throughput {
    total: AtomicU64,
    recent: Mutex<VecDeque<(Instant, u64)>>,
}

impl Throughput {
    pub fn record(&self, tokens: u64) {
        self.total.fetch_add(tokens, Ordering::Relaxed);
        let now = Instant::now();
        let mut recent = lock(&self.recent);
        recent.push_back((now, tokens));
        while recent.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            recent.pop_front();
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Tokens per second over the last few seconds (0 when idle).
    pub fn per_second(&self) -> f64 {
        let now = Instant::now();
        let recent = lock(&self.recent);
        let tokens: u64 = recent.iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW).map(|(_, n)| n).sum();
        tokens as f64 / WINDOW.as_secs_f64()
    }
}

/// Token masks of constrained rows: how many were computed and the worker
/// time they took (computed while the forward pass runs, so they cost a step
/// only where they outlast it).
#[derive(Default)]
pub struct MaskCounters {
    masks: AtomicU64,
    nanos: AtomicU64,
}

impl MaskCounters {
    /// One step's masks: `rows` of them, computed in `took`.
    pub fn record(&self, rows: u64, took: Duration) {
        if rows > 0 {
            self.masks.fetch_add(rows, Ordering::Relaxed);
            self.nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> MaskStats {
        MaskStats { masks: self.masks.load(Ordering::Relaxed), total_ms: self.nanos.load(Ordering::Relaxed) as f64 / 1e6 }
    }
}

/// Token masks computed for constrained rows since the model was loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskStats {
    pub masks: u64,
    pub total_ms: f64,
}

/// Speculative decoding's tokens: guessed, and accepted by the model.
#[derive(Default)]
pub struct Speculation {
    drafted: AtomicU64,
    accepted: AtomicU64,
}

impl Speculation {
    pub fn record(&self, drafted: usize, accepted: usize) {
        self.drafted.fetch_add(drafted as u64, Ordering::Relaxed);
        self.accepted.fetch_add(accepted as u64, Ordering::Relaxed);
    }

    /// `(drafted, accepted)` so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.drafted.load(Ordering::Relaxed), self.accepted.load(Ordering::Relaxed))
    }
}

/// A snapshot of one model, as `stats()` reports it.
#[derive(Debug, Clone)]
pub struct ModelStats {
    pub id: String,
    pub state: String,
    pub active_requests: usize,
    pub queued_requests: usize,
    pub restarts: u32,
    pub abandoned_workers: u32,
    pub tokens_generated: u64,
    pub tokens_per_second: f64,
    pub last_heartbeat_ms_ago: u64,
    /// `(bytes read, bytes in all)` of the weights by the current worker's load.
    pub load_progress: Option<(u64, u64)>,
    /// The current worker's prefix cache.
    pub prefix_cache: super::prefix::PrefixSnapshot,
    /// Token masks of constrained decoding (decode steps; a prompt's first
    /// token's mask is not counted).
    pub masks: MaskStats,
    /// Tokens guessed by speculative decoding, and accepted, since the load.
    pub drafted_tokens: u64,
    pub accepted_tokens: u64,
}

/// MLX allocator figures, in bytes: device memory on a GPU (CUDA, Metal),
/// host memory on the CPU.
#[derive(Debug, Clone, Default)]
pub struct MemoryStats {
    pub active_bytes: u64,
    pub peak_bytes: u64,
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct EngineStats {
    pub models: Vec<ModelStats>,
    pub memory: MemoryStats,
    pub device: DeviceStats,
}

/// The device the models run on, as `stats()` reports it.
#[derive(Debug, Clone)]
pub struct DeviceStats {
    pub backend: crate::device::Backend,
    pub name: String,
    /// The GPU's memory (0 on the CPU).
    pub total_bytes: u64,
}

impl DeviceStats {
    pub fn read() -> Self {
        let d = crate::device::current();
        DeviceStats { backend: d.backend, name: d.name.clone(), total_bytes: d.total_memory }
    }
}

impl MemoryStats {
    pub fn read() -> Self {
        MemoryStats {
            active_bytes: mlx_rs::memory::active_memory().unwrap_or(0) as u64,
            peak_bytes: mlx_rs::memory::peak_memory().unwrap_or(0) as u64,
            cache_bytes: mlx_rs::memory::cache_memory().unwrap_or(0) as u64,
        }
    }
}
