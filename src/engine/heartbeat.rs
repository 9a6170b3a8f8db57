//! A worker's heartbeat: when it last finished a step and whether it has work.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Instant,
};

pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
    busy: AtomicBool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { origin: Instant::now(), last_ms: AtomicU64::new(0), busy: AtomicBool::new(false) }
    }
}

impl Heartbeat {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// A step finished (or the worker is alive and idle).
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The worker starts (true) or stops (false) holding work. Starting work
    /// counts as a beat, so time spent idle is never held against it.
    pub fn set_busy(&self, busy: bool) {
        self.touch();
        self.busy.store(busy, Ordering::Release);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Milliseconds since the last beat.
    pub fn ms_ago(&self) -> u64 {
        self.now_ms().saturating_sub(self.last_ms.load(Ordering::Acquire))
    }
}
