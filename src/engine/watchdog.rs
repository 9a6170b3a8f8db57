//! The watchdog thread: replaces workers that hold work without progress
//! and ends queued requests whose deadline passed.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{lock, Shared};

pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    pub fn start(shared: Arc<Shared>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let hang_timeout = shared.options.hang_timeout;
        let period = (hang_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let thread = std::thread::Builder::new()
            .name("mlx-serving:watchdog".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(period);
                    let slots: Vec<_> = lock(&shared.models).values().cloned().collect();
                    for slot in slots {
                        slot.expire_queued();
                        slot.check_hung(hang_timeout);
                    }
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog { stop, thread }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}
