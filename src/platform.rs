//! Small shims for running mlx-rs off Apple platforms.

/// mlx-rs seeds its default random state with Mach's `mach_approximate_time`,
/// which only exists on Apple systems. Elsewhere we provide it: nanoseconds
/// since the Unix epoch serve equally well as a seed.
#[cfg(not(target_vendor = "apple"))]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Large buffers are allocated with `malloc` on CPU (MLX's arrays, our
/// caches). Left to itself, glibc serves buffers of 128 KiB and up with
/// `mmap` until one is freed, then raises that threshold to the freed size;
/// the heap it serves them from instead keeps freed holes that a long-running
/// server cannot give back (in the soak test RSS grew ~17% over 300 requests
/// with nothing leaked). Every buffer mmapped instead (the threshold fixed at
/// 128 KiB) costs a page fault per 4 KiB each time an op writes a new output:
/// a 512-token prompt's first token took 610-690 ms in the engine against
/// 400-430 ms for the same forward passes in `examples/steps`, ~12% of its
/// time in the kernel's fault and unmap paths (`perf`).
///
/// So: buffers up to 32 MiB come from the heap and are reused without faults
/// while a worker is busy (freed memory is kept up to 512 MiB rather than
/// trimmed at every free), and a worker that goes idle hands the heap's free
/// pages back ([`release_free_memory`]), which bounds RSS as mmapping did.
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the environment
/// choose other values; we then leave that one alone.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters.
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) };
            }
            if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
                unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20) };
            }
        });
    }
}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`,
/// every arena): called by a worker that has gone idle ([`tune_allocator`]).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
