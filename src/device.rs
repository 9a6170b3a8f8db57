//! Which device runs the models: the CPU, or a GPU through MLX's CUDA or Metal
//! backend.
//!
//! The choice is the MLX runtime's, not the build's: the addon built against
//! the `mlx-cpu` headers loads the `mlx-cuda-13` libmlx of the same version
//! unchanged (the symbols it uses are the same; see docs/gpu.md), and
//! MLX's default device is then the GPU. The model code asks [`current`], not
//! the target OS: the workarounds for MLX's CPU backend (our quantized-matmul
//! kernels, the `2^x` form of `exp`) are for the CPU only.

use std::{
    ffi::{c_char, CStr, CString},
    sync::OnceLock,
};

/// MLX's backend for the default device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
    Metal,
}

impl Backend {
    /// "cpu", "cuda" or "metal", as `stats()` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    pub fn is_gpu(self) -> bool {
        self != Backend::Cpu
    }
}

/// The default device, read once from MLX.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub backend: Backend,
    /// The GPU's name as MLX reports it (e.g. "NVIDIA H100 80GB HBM3"); "cpu" on the CPU.
    pub name: String,
    /// The GPU's memory in bytes (0 on the CPU or when MLX does not say).
    pub total_memory: u64,
}

/// The device MLX runs on by default (the first call asks MLX; later calls
/// return the same answer).
pub fn current() -> &'static DeviceInfo {
    static INFO: OnceLock<DeviceInfo> = OnceLock::new();
    INFO.get_or_init(read)
}

/// MLX's CUDA backend keeps its compiled graphs (cuDNN attention, CUDA
/// graphs) in caches of a fixed size that count every miss over the process's
/// life and, past twice their size, throw on each further one ("Cache
/// thrashing is happening"): a server that has met a few hundred distinct
/// shapes would fail every request with a new one. A miss only costs a
/// rebuild, so the count is turned off (`MLX_ENABLE_CACHE_THRASHING_CHECK=0`,
/// read when the caches are made, on first use) unless the user set it.
fn disarm_cache_fuse() {
    const VAR: &str = "MLX_ENABLE_CACHE_THRASHING_CHECK";
    if std::env::var_os(VAR).is_none() {
        // Set with other threads running: this runs once, before
        // MLX's first device query, and nothing of ours reads the environment
        // concurrently; Node sets variables the same way (uv_os_setenv).
        std::env::set_var(VAR, "0");
    }
}

/// The backend of [`current`].
pub fn backend() -> Backend {
    current().backend
}

fn read() -> DeviceInfo {
    disarm_cache_fuse();
    let cpu = DeviceInfo {
        backend: Backend::Cpu,
        name: "cpu".into(),
        total_memory: 0,
    };
    // SAFETY: mlx-c calls with out-parameters we own; every device and info
    // object made here is freed before returning.
    unsafe {
        let mut dev = mlx_sys::mlx_device_new();
        let mut ty: mlx_sys::mlx_device_type = mlx_sys::mlx_device_type__MLX_CPU;
        let ok = mlx_sys::mlx_get_default_device(&mut dev) == 0
            && mlx_sys::mlx_device_get_type(&mut ty, dev) == 0;
        if !ok || ty != mlx_sys::mlx_device_type__MLX_GPU {
            mlx_sys::mlx_device_free(dev);
            return cpu;
        }
        let mut cuda = false;
        let mut metal = false;
        mlx_sys::mlx_cuda_is_available(&mut cuda);
        mlx_sys::mlx_metal_is_available(&mut metal);
        let backend = if cuda {
            Backend::Cuda
        } else if metal {
            Backend::Metal
        } else {
            mlx_sys::mlx_device_free(dev);
            return cpu;
        };
        let mut info = mlx_sys::mlx_device_info_new();
        let (mut name, mut total_memory) = (String::from("gpu"), 0u64);
        if mlx_sys::mlx_device_info_get(&mut info, dev) == 0 {
            let key = |k: &str| CString::new(k).expect("no NUL in a key");
            let mut s: *const c_char = std::ptr::null();
            if mlx_sys::mlx_device_info_get_string(&mut s, info, key("device_name").as_ptr()) == 0
                && !s.is_null()
            {
                name = CStr::from_ptr(s).to_string_lossy().into_owned();
            }
            for k in ["total_memory", "memory_size"] {
                let mut v: usize = 0;
                if mlx_sys::mlx_device_info_get_size(&mut v, info, key(k).as_ptr()) == 0 && v > 0 {
                    total_memory = v as u64;
                    break;
                }
            }
        }
        mlx_sys::mlx_device_info_free(info);
        mlx_sys::mlx_device_free(dev);
        DeviceInfo {
            backend,
            name,
            total_memory,
        }
    }
}

/// The dtype a model computes in on this device: f32 on the CPU (our kernels
/// take f32; MLX's CPU backend has no faster 16-bit path), f16 on a GPU, where
/// MLX's quantized kernels for 16-bit inputs use the tensor cores (for f32 its
/// CUDA backend takes a naive kernel). f16 holds the scales of GGUF's blocks
/// exactly (they are stored as f16); bf16 would round them.
/// `MLX_SERVING_DTYPE=f32|f16|bf16` overrides it, on any device; another
/// value is an error.
pub fn compute_dtype() -> Result<mlx_rs::Dtype, String> {
    use mlx_rs::Dtype;
    Ok(match std::env::var("MLX_SERVING_DTYPE").as_deref() {
        Ok("f32" | "float32") => Dtype::Float32,
        Ok("f16" | "float16") => Dtype::Float16,
        Ok("bf16" | "bfloat16") => Dtype::Bfloat16,
        Ok(other) if !other.is_empty() => return Err(format!("MLX_SERVING_DTYPE={other}: expected f32, f16 or bf16")),
        _ if backend().is_gpu() => Dtype::Float16,
        _ => Dtype::Float32,
    })
}

/// `dtype`'s name as MLX spells it ("float32", "float16", "bfloat16").
pub fn dtype_name(dtype: mlx_rs::Dtype) -> &'static str {
    use mlx_rs::Dtype;
    match dtype {
        Dtype::Float16 => "float16",
        Dtype::Bfloat16 => "bfloat16",
        _ => "float32",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reading_the_device_turns_off_mlx_cache_fuse() {
        super::current();
        // Set by the first device query unless the environment had it (CI does not).
        assert!(std::env::var_os("MLX_ENABLE_CACHE_THRASHING_CHECK").is_some());
    }
}
