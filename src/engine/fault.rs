//! Fault switch for recovery tests (cargo feature `fault-injection`).
//!
//! `MLX_SERVING_FAULT=panic:N` panics at the N-th decode step of the process;
//! `hang:N` blocks that step forever. Builds without the feature ignore it.

#[cfg(feature = "fault-injection")]
pub fn before_decode_step() {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    };
    static STEPS: AtomicU64 = AtomicU64::new(0);
    static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| {
        let spec = std::env::var("MLX_SERVING_FAULT").ok()?;
        let (kind, n) = spec.split_once(':')?;
        Some((kind.to_string(), n.trim().parse().ok()?))
    });
    let step = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    match fault {
        Some((kind, n)) if *n == step && kind == "panic" => panic!("injected fault: panic at decode step {step}"),
        Some((kind, n)) if *n == step && kind == "hang" => loop {
            std::thread::park();
        },
        _ => {}
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn before_decode_step() {}
