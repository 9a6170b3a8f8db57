//! Small shims for running mlx-rs off Apple platforms.

/// mlx-rs seeds its default random state with Mach's `mach_approximate_time`,
/// which only exists on Apple systems. Elsewhere we provide it: nanoseconds
/// since the Unix epoch serve equally well as a seed.
#[cfg(not(target_vendor = "apple"))]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
