//! The time one token's mask may take. llguidance bounds the work of a step
//! (lexer fuel, Earley items), but an ambiguous grammar can stay under those
//! bounds while each step costs a second, stalling every row of the batch.
//! A mask that runs past [`MASK_TIME_LIMIT`] is cancelled (llguidance checks
//! for cancellation inside its parser, lexer and trie walks) and its request
//! fails with GRAMMAR_TOO_COMPLEX.

use std::{
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

use llguidance::CancellationHandle;

use super::lock;

/// The longest one token's mask may take. Real JSON schemas and tool-call
/// grammars take microseconds to a few milliseconds.
pub const MASK_TIME_LIMIT: Duration = Duration::from_millis(100);

/// The masks being computed, with their deadlines, watched by one thread.
struct Timer {
    armed: Mutex<Vec<(u64, Instant, CancellationHandle)>>,
    changed: Condvar,
}

fn timer() -> &'static Arc<Timer> {
    static TIMER: OnceLock<Arc<Timer>> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer = Arc::new(Timer { armed: Mutex::new(Vec::new()), changed: Condvar::new() });
        let watched = timer.clone();
        std::thread::Builder::new()
            .name("mlx-serving:mask-timer".into())
            .spawn(move || watched.run())
            .expect("spawning the mask timer thread");
        timer
    })
}

impl Timer {
    fn run(&self) {
        let mut armed = lock(&self.armed);
        loop {
            let now = Instant::now();
            armed.retain(|(_, deadline, handle)| {
                if *deadline <= now {
                    handle.cancel();
                    false
                } else {
                    true
                }
            });
            let wait = armed.iter().map(|(_, d, _)| d.saturating_duration_since(now)).min().unwrap_or(Duration::from_secs(3600));
            armed = self.changed.wait_timeout(armed, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// A mask's deadline; dropping it disarms the timer.
pub struct Armed {
    id: u64,
}

/// Cancels `handle` if the returned guard is still alive after `limit`.
pub fn arm(handle: CancellationHandle, limit: Duration) -> Armed {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = timer();
    lock(&t.armed).push((id, Instant::now() + limit, handle));
    t.changed.notify_one();
    Armed { id }
}

impl Drop for Armed {
    fn drop(&mut self) {
        lock(&timer().armed).retain(|(id, _, _)| *id != self.id);
    }
}
