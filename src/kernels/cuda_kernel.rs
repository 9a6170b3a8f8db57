//! One of our CUDA kernels as an MLX custom kernel
//! (`mlx::core::fast::cuda_kernel`): MLX compiles the body with NVRTC on the
//! first call of each set of template constants, caches it for the process,
//! and runs it on the thread's stream like its own kernels. Nothing is built
//! here, so the addon stays one binary for the CPU and CUDA runtimes.

use std::ffi::{c_char, CString};

use mlx_rs::{Array, Dtype, Stream};

use crate::error::{Error, Result};

/// The kernel object MLX made from a body and header.
pub(crate) struct CudaKernel {
    raw: mlx_sys::mlx_fast_cuda_kernel,
    name: &'static str,
}

// SAFETY: the handle wraps a `std::function` that only reads what it captured
// (name, source, argument names); MLX calls it from any thread.
unsafe impl Send for CudaKernel {}
unsafe impl Sync for CudaKernel {}

/// What one call computes: its output, launch shape and template constants.
pub(crate) struct Launch<'a> {
    pub output: &'a [i32],
    pub output_dtype: Dtype,
    /// Threads in all (MLX's convention), per axis.
    pub grid: (i32, i32, i32),
    pub threadgroup: (i32, i32, i32),
    pub types: &'a [(&'a str, Dtype)],
    pub ints: &'a [(&'a str, i32)],
}

impl CudaKernel {
    /// MLX's kernel `name` over `source` (the body) and `header`, with inputs
    /// and outputs named as the body uses them (inputs row-contiguous).
    /// `None` where MLX could not make it.
    pub fn new(name: &'static str, inputs: &[&str], outputs: &[&str], source: &str, header: &str) -> Option<Self> {
        let strings = |names: &[&str]| {
            let owned: Vec<CString> = names.iter().map(|n| CString::new(*n).unwrap()).collect();
            let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
            // SAFETY: mlx-c copies the strings into its vector.
            unsafe { mlx_sys::mlx_vector_string_new_data(ptrs.as_ptr() as *mut *const c_char, ptrs.len()) }
        };
        let (ins, outs) = (strings(inputs), strings(outputs));
        let c_name = CString::new(name).unwrap();
        let source = CString::new(source).unwrap();
        let header = CString::new(header).unwrap();
        // SAFETY: all arguments are live for the call; mlx-c copies them.
        let raw = unsafe { mlx_sys::mlx_fast_cuda_kernel_new(c_name.as_ptr(), ins, outs, source.as_ptr(), header.as_ptr(), true, 0) };
        // SAFETY: the vectors were made above and are not used again.
        unsafe {
            mlx_sys::mlx_vector_string_free(ins);
            mlx_sys::mlx_vector_string_free(outs);
        }
        (!raw.ctx.is_null()).then_some(CudaKernel { raw, name })
    }

    /// The kernel's one output for `inputs`, lazily (an MLX array).
    pub fn apply(&self, inputs: &[&Array], launch: &Launch) -> Result<Array> {
        let handles: Vec<mlx_sys::mlx_array> = inputs.iter().map(|a| a.as_ptr()).collect();
        let stream = Stream::new();
        let key = |s: &str| CString::new(s).unwrap();
        // SAFETY: every handle passed is live for the call (the arrays are
        // borrowed, the config and vectors are freed below, once); on success
        // `outs` holds one new array whose reference we take over.
        unsafe {
            let config = mlx_sys::mlx_fast_cuda_kernel_config_new();
            mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(config, launch.output.as_ptr(), launch.output.len(), launch.output_dtype as mlx_sys::mlx_dtype);
            let (gx, gy, gz) = launch.grid;
            mlx_sys::mlx_fast_cuda_kernel_config_set_grid(config, gx, gy, gz);
            let (tx, ty, tz) = launch.threadgroup;
            mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(config, tx, ty, tz);
            for &(name, dtype) in launch.types {
                let name = key(name);
                mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_dtype(config, name.as_ptr(), dtype as mlx_sys::mlx_dtype);
            }
            for &(name, value) in launch.ints {
                let name = key(name);
                mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(config, name.as_ptr(), value);
            }
            let ins = mlx_sys::mlx_vector_array_new_data(handles.as_ptr(), handles.len());
            let mut outs = mlx_sys::mlx_vector_array_new();
            let rc = mlx_sys::mlx_fast_cuda_kernel_apply(&mut outs, self.raw, ins, config, stream.as_ptr());
            mlx_sys::mlx_vector_array_free(ins);
            mlx_sys::mlx_fast_cuda_kernel_config_free(config);
            let result = if rc == 0 && mlx_sys::mlx_vector_array_size(outs) == 1 {
                let mut y = mlx_sys::mlx_array_new();
                mlx_sys::mlx_vector_array_get(&mut y, outs, 0);
                Ok(Array::from_ptr(y))
            } else {
                Err(Error::internal(format!("the CUDA kernel {} failed", self.name)))
            };
            mlx_sys::mlx_vector_array_free(outs);
            result
        }
    }
}
