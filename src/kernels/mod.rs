//! Our CPU quantized matmul, an MLX primitive: `x @ dequantize(w)^T` for affine
//! 4-bit and 8-bit weights (group sizes 32, 64, 128) kept quantized in memory
//! (MLX's own layout, or regrouped in panels for the int8 kernels), so that
//! decode reads 4 or 8 bits per weight.
//!
//! # Design notes
//!
//! - **Why**: MLX's CPU `quantized_matmul` is scalar and single-threaded off
//!   Apple (about 2 GFLOP/s, flat with batch size), and upstream takes no CPU
//!   SIMD work for now. So we ship the kernel as an MLX extension the way MLX
//!   documents them: a `UnaryPrimitive` (`src/kernels/qmm.cpp`) whose
//!   `eval_cpu` enqueues our kernel on MLX's CPU stream, built by `build.rs`
//!   with the `cc` crate against the headers of the installed MLX runtime
//!   (`DEP_MLX_INCLUDE`, published by mlx-sys). The result is a lazy MLX array
//!   like any other; it crosses to Rust as an `mlx_array` handle.
//! - **Layout**: MLX's affine layout as loaded from GGUF (uint32 `[N, K*bits/32]`,
//!   little end first; scales and biases `[N, K/group]`, kept as f32).
//!   Q4_0/Q4_1/Q8_0 all arrive in this form. The f32 mode reads it in place;
//!   the int8 mode reads the same words regrouped at load in panels of 8 rows
//!   ([`pack`], [`Layout::Panels`]: word `u` of rows 8p..8p+7 side by side),
//!   the model's only copy (an embedding lookup reads its rows back from
//!   the panels: [`panel_rows`]).
//! - **Int8 mode** ([`Activations::Int8`], the default): each activation row is
//!   quantized to int8 per block of 32 (scale `max|x|/127`, llama.cpp's Q8
//!   scheme). One 256-bit load of a panel is one 32-bit word of 8 weight
//!   rows (8 values of 4-bit weights after masking each nibble, 4 of 8-bit
//!   ones); four activation bytes broadcast to every lane and one `vpdpbusd`
//!   (AVX-512 VNNI, AVX-VNNI) or `maddubs` + `madd` (AVX2) give 8 rows' partial
//!   sums in the lanes of one register. Per block of 32 the integer sums are
//!   scaled by weight scale x block scale and added to a float accumulator per
//!   lane; per group, the biases times the exact f32 sum of the group's
//!   activations (the affine offset, so only `scale * q` sees the activation
//!   rounding). A tile is one panel x up to 8 activation rows (AVX-512's 32
//!   registers; 4 with AVX2's 16), so each weight load and nibble unpack serves
//!   every row of the tile, and there are no horizontal sums. Batch-invariant
//!   by construction: every output is summed lane by lane in block order
//!   whatever the tile's row count, so a row's result is bit-identical
//!   whatever rows share its product (a decode batch, a prefill chunk of any
//!   size, a chunk beside decode rows), and one kernel serves every row count,
//!   prefill included (no sgemm). The integer sums are exact on every
//!   instruction set (AVX2 sums 4-bit products in 16 bits over a block, at most
//!   8 * 2 * 15 * 127 < 2^15, and takes 8-bit weights as `q - 128` with
//!   `abs`/`sign` so that `maddubs` cannot saturate), so AVX2, AVX-VNNI and
//!   AVX-512 give the same bits.
//! - **Exact mode** ([`Activations::F32`], `MLX_SERVING_ACTIVATIONS=f32`):
//!   f32 activations, weights widened to f32 eight at a time; agrees with
//!   MLX's op to float rounding. Tiles of 4 activation rows x 1-4 weight rows
//!   below `MLX_SERVING_QMM_SGEMM_ROWS` rows (48), batch-invariant there; from
//!   that many rows on, a tile of about 1 MiB of weights is dequantized to f32
//!   at a time and multiplied by OpenBLAS's `sgemm`, whose sums differ from
//!   the tile kernels' in the last bits. So the exact mode guarantees a row's
//!   bits only in products under 48 rows (decode batches); a prompt
//!   prefilled in chunks, or grouped with others, may differ from its lone
//!   run by float rounding (within 2e-3 in logits), and the worker does not
//!   mix prefill chunks into decode steps in this mode.
//! - **Threads**: a persistent pool sized by the CPU affinity mask
//!   (`MLX_SERVING_THREADS` overrides); MLX's stream thread takes part, work is
//!   handed out in chunks of weight rows, and the caller waits only for chunks
//!   a worker has started, never for a worker's wake-up. Workers sleep on a
//!   futex right after a job: spinning for the next one took a core from the
//!   thread that builds and dispatches MLX's graph (batch-1 decode 11% slower
//!   with 100 us of spin on 2 cores; `MLX_SERVING_QMM_SPIN_US` sets it).
//! - **Fused neighbours** ([`quantized_matmul`]'s [`Fuse`]): the layer's
//!   RMS norm before a projection and the residual add after it run inside
//!   the matmul's op, and the MLP's gated activation is one op ([`glu`],
//!   `glu.cpp`) reading the stacked gate/up output; attention writes its heads
//!   merged. At decode every op works on a few thousand floats, so what a node
//!   costs is its fixed part (graph walk, an output buffer, a task handed to
//!   MLX's stream thread): a llama layer went from ~35 nodes (19 that compute)
//!   to ~24 (10), and `examples/steps.rs` runs of 250 batch-1 steps took 19%
//!   less time, of 40 steps at 8 and 16 rows 14% less (2 cores, alternating).
//! - **Dispatch**: the kernels are compiled in their own translation units with
//!   target flags (`qmm_avx2.cpp`: AVX2+FMA; `qmm_avx512.cpp`: AVX-512 VNNI;
//!   `qmm_avxvnni.cpp`: AVX-VNNI) and called only after a run-time CPU check;
//!   the tests run every set the CPU has. Anything else (other bits or group
//!   sizes, no AVX2, non-x86, a GPU default device) goes to MLX's own
//!   `quantized_matmul`. `MLX_SERVING_QMM_ISA=avx2|mlx` forces a choice.
//! - **Versions**: a primitive compiled against one MLX's headers may crash on
//!   another's runtime, so [`check_runtime`] compares them before a model loads.
//! - **Prefill**: the int8 kernels' tiles serve it too, the weights of a few
//!   panels staying in cache while every tile of rows passes over them (a
//!   256-row product of a 3072x576 4-bit matrix: ~6x faster than the exact
//!   mode's sgemm path on 2 cores). In the exact mode, from
//!   `MLX_SERVING_QMM_SGEMM_ROWS` rows the weight tiles are spread over the
//!   pool, each thread dequantizing its own and calling sgemm; OpenBLAS is set
//!   to one thread when the pool starts, since its own threads would only
//!   compete with ours for the same cores.
//!
//! # Attention ([`attention`], `attention.cpp`, `attention_avx2.cpp`)
//!
//! MLX's CPU attention is composed of ops: two matmuls and element-wise passes
//! over the whole score matrix (mask, max, subtract, a scalar `exp`, sum,
//! divide), which at a few thousand tokens of context cost more than the
//! matmuls (a 16-token chunk after 2000 tokens took ~1 s; 2058 tokens cold,
//! 26 s). Our primitive takes a tile of up to 16 query rows of one key/value
//! head (the query heads sharing it, as grouped-query attention does), finds
//! each row's allowed range of keys from the mask (the causal future, a sliding
//! window's past and a row's left padding fall outside it), computes the
//! scores block by block, a softmax with a vector polynomial `exp` (Taylor to
//! the 7th power after range reduction, ~1e-7 relative), and the weighted sum
//! of the values, reading the cache's keys and values in place. Tiles are
//! spread over the same pool. The test compares it with attention composed
//! from MLX's ops (1e-5 relative) for decode, chunks after a context, padded
//! rows, windows, holes in the mask and head sizes 32 to 256.

use crate::error::{Error, ErrorCode, Result};
use mlx_rs::Array;

pub mod cuda;
mod cuda_kernel;
pub mod cuda_qmm;

/// How activations enter the quantized matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Quantized to int8 per block of 32 (llama.cpp's Q8 scheme) and
    /// multiplied with integer dot products on weights kept in panels: fast,
    /// and a row's result is bit-identical whatever rows share its product.
    /// The result differs from the f32 product by up to ~1e-2 of its largest
    /// value. The default.
    #[default]
    Int8,
    /// Kept in f32: agrees with MLX's own `quantized_matmul` to float rounding.
    /// Batch-invariant below `MLX_SERVING_QMM_SGEMM_ROWS` rows (48); larger
    /// products (prefill) go through sgemm, whose sums differ in the last bits.
    F32,
}

impl Activations {
    /// `MLX_SERVING_ACTIVATIONS=f32` selects the exact mode; int8 otherwise.
    pub fn from_env() -> Self {
        match std::env::var("MLX_SERVING_ACTIVATIONS").as_deref() {
            Ok("f32") => Activations::F32,
            _ => Activations::Int8,
        }
    }
}

/// Which kernels serve the matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The best this CPU runs.
    Auto = 0,
    /// AVX2 + FMA.
    Avx2 = 1,
    /// AVX-512 with VNNI.
    Avx512 = 2,
    /// MLX's own `quantized_matmul` (scalar on x86).
    Mlx = 3,
    /// AVX2 with AVX-VNNI (the VEX-encoded int8 dot product).
    AvxVnni = 4,
}

impl Isa {
    /// Whether this CPU runs these kernels ([`Isa::Mlx`] always; [`Isa::Auto`] too).
    pub fn available(self) -> bool {
        imp::isa_available(self)
    }

    /// The kernels [`Isa::Auto`] resolves to here.
    pub fn in_use() -> Isa {
        imp::isa_in_use()
    }

    /// Activation rows these kernels' int8 mode multiplies per weight load
    /// (`kTileRows` in qmm_kernels.h): 8 with AVX-512's 32 vector registers,
    /// 4 with AVX2's 16.
    pub fn int8_tile_rows(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            _ => 4,
        }
    }
}

/// How a quantized matrix's three arrays (words, scales, biases) are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MLX's affine layout: `weight` uint32 `[N, K * bits / 32]`,
    /// `scales`/`biases` `[N, K / group_size]`; what MLX's ops and the f32
    /// mode's kernels read.
    Rows,
    /// Panels of 8 rows ([`pack`]): `[ceil(N / 8), K * bits / 32, 8]` and
    /// `[ceil(N / 8), K / group_size, 8]`, `rows` = N; what the int8 mode's
    /// kernels read.
    Panels { rows: i32 },
}

/// A quantized matrix: its three arrays and how they are laid out.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub weight: &'a Array,
    pub scales: &'a Array,
    pub biases: &'a Array,
    pub layout: Layout,
}

impl<'a> Matrix<'a> {
    /// A matrix in MLX's layout.
    pub fn rows(weight: &'a Array, scales: &'a Array, biases: &'a Array) -> Self {
        Matrix { weight, scales, biases, layout: Layout::Rows }
    }
}

/// `x @ dequantize(weight, scales, biases)^T` for an MLX affine-quantized
/// matrix in either [`Layout`], with `x` `[..., K]`; the result is `[..., N]`,
/// lazy like any MLX op: f32 from our kernel (f32 `x` on an x86 CPU), else in
/// the dtype MLX's op gives. The int8 mode reads panels and the f32 mode
/// MLX's layout; a matrix in the other one is regrouped (lazily) for the call.
/// With `fuse`, `fuse.add + rms_norm(x) @ ...`: the parts it names are one op
/// with the product where our kernel serves, composed from MLX's ops where not.
///
/// ```no_run
/// # use mlx_rs::{ops::quantize, random::normal, Array};
/// # use mlx_serving::kernels::{quantized_matmul, Activations, Fuse, Isa, Matrix};
/// let w = normal::<f32>(&[64, 128], None, None, None).unwrap();
/// let (wq, scales, biases) = quantize(&w, 32, 4).unwrap();
/// let x = normal::<f32>(&[3, 128], None, None, None).unwrap();
/// let y = quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), 32, 4, Activations::Int8, Isa::Auto, Fuse::default()).unwrap();
/// assert_eq!(y.shape(), &[3, 64]);
/// ```
pub fn quantized_matmul(x: &Array, m: Matrix, group_size: i32, bits: i32, activations: Activations, isa: Isa, fuse: Fuse) -> Result<Array> {
    imp::quantized_matmul(x, m, group_size, bits, activations, isa, fuse)
}

/// A matrix in MLX's layout regrouped in panels of 8 rows, the int8 kernels'
/// layout: row `n`'s 32-bit word `u` goes to `[n / 8, u, n % 8]` (so one
/// 256-bit load holds a word of 8 rows), scales and biases likewise; zero rows
/// pad the last panel. Lazy; the arrays are as large as the originals (plus
/// the padding).
pub fn pack(weight: &Array, scales: &Array, biases: &Array) -> Result<(Array, Array, Array)> {
    imp::layout(weight, scales, biases, 0, 0, None)
}

/// Panels of `rows` rows ([`pack`]) back in MLX's layout; lazy.
pub fn unpack(weight: &Array, scales: &Array, biases: &Array, rows: i32) -> Result<(Array, Array, Array)> {
    imp::layout(weight, scales, biases, 1, rows, None)
}

/// Rows `ids` (integers of any shape) of a matrix in panels, in MLX's layout:
/// words `[..ids, K * bits / 32]`, scales and biases `[..ids, K / group]`
/// (an embedding lookup); lazy.
pub fn panel_rows(weight: &Array, scales: &Array, biases: &Array, ids: &Array) -> Result<(Array, Array, Array)> {
    imp::layout(weight, scales, biases, 2, 0, Some(ids))
}

/// Whether the int8 kernels serve a matrix of `bits`, `group_size` and `k`
/// columns here (an x86 CPU with AVX2 while MLX computes on the CPU): the
/// matrices worth keeping in panels.
pub fn int8_kernels_serve(bits: i32, group_size: i32, k: i32) -> bool {
    Isa::in_use() != Isa::Mlx
        && !crate::device::backend().is_gpu()
        && matches!(bits, 4 | 8)
        && matches!(group_size, 32 | 64 | 128)
        && k % group_size == 0
}

/// The neighbours of a matmul that [`quantized_matmul`] takes in, so that they
/// cost no graph node of their own (at decode a node's fixed cost, not its
/// arithmetic, is what such small ops spend).
#[derive(Default, Clone, Copy)]
pub struct Fuse<'a> {
    /// `rms_norm(x, weight, eps)` before the product.
    pub norm: Option<(&'a Array, f32)>,
    /// Added to the product (the residual stream), of the output's shape.
    pub add: Option<&'a Array>,
}

/// `softmax(scale * q k^T, mask) v` by our CPU kernel (`attention.cpp`), with
/// the heads merged as the output projection takes them: [rows, len, heads *
/// head_dim] (one op fewer per layer than transposing afterwards). `q`
/// [rows, heads, len, head_dim], `keys`/`values` [rows, kv_heads, columns,
/// head_dim] (views of the cache are read in place), `mask` bool [rows or 1, 1,
/// len or 1, columns] (true where a query may attend) or, without one,
/// `causal` (query `i` sees columns up to `columns - len + i`) or nothing
/// hidden. `None` where the kernel does not serve these inputs (no AVX2, a GPU,
/// odd shapes): compose attention from MLX's ops instead.
pub fn attention(q: &Array, keys: &Array, values: &Array, mask: Option<&Array>, causal: bool, scale: f32) -> Result<Option<Array>> {
    imp::attention(q, keys, values, mask, causal, scale)
}

/// A gated MLP activation ([`glu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `silu(gate) * up` (SwiGLU: llama, qwen, mistral, phi3).
    Silu = 0,
    /// `gelu(gate) * up` with GELU's tanh approximation (GeGLU: gemma).
    GeluTanh = 1,
}

/// `act(gate) * up` by our CPU kernel (`glu.cpp`) as one op: with `up` `None`,
/// `gate` is the stacked gate/up projection's output [..., 2 * width] (gate
/// first); otherwise `gate` and `up` have the same shape. f32 only. `None`
/// where the kernel does not serve (no AVX2, a GPU, other dtypes): compose the
/// activation from MLX's ops instead.
pub fn glu(gate: &Array, up: Option<&Array>, kind: Gate) -> Result<Option<Array>> {
    imp::glu(gate, up, kind)
}

/// The exact GELU, `x * (1 + erf(x / sqrt 2)) / 2` (BERT), by the same CPU
/// kernel as one op (MLX's CPU `erf` and `exp` are scalar). f32 only; `None`
/// where the kernel does not serve: compose it from MLX's ops instead.
pub fn gelu_erf(x: &Array) -> Result<Option<Array>> {
    imp::gelu_erf(x)
}

/// `x @ w + bias` in f32 on the CPU, split over the kernels' pool, each thread
/// multiplying a tile of the output's columns (`dense.cpp`: our AVX-512
/// kernel where the CPU has it, else OpenBLAS's sgemm): `w` [K, N], or with
/// `transposed` [N, K] (`x @ w^T`). `None`
/// where it does not serve (not f32, a GPU, shapes that do not fit): use
/// MLX's matmul instead. The dense models (the embedding encoders) need it:
/// the pool keeps OpenBLAS to one thread of its own.
pub fn dense_matmul(x: &Array, w: &Array, bias: Option<&Array>, transposed: bool) -> Result<Option<Array>> {
    imp::dense_matmul(x, w, bias, transposed)
}

/// Fails with a clear error when the MLX runtime loaded is not the one whose
/// headers the primitive was compiled against (a mismatch may crash instead).
pub fn check_runtime() -> Result<()> {
    let (headers, runtime) = imp::versions();
    // Dev builds append ".devYYYYMMDD+hash"; the release number must match.
    if runtime == headers || runtime.starts_with(&format!("{headers}.dev")) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::ModelLoadFailed,
        format!(
            "the MLX runtime is {runtime} but mlx-serving was built against MLX {headers}; \
             install the matching runtime (scripts/setup.sh) or rebuild"
        ),
    ))
}

/// The MLX versions: (headers built against, runtime loaded).
pub fn mlx_versions() -> (String, String) {
    imp::versions()
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::{c_char, c_int, c_void, CStr};

    use mlx_rs::Array;

    use super::{Activations, Fuse, Gate, Isa, Layout, Matrix};
    use crate::error::{Error, Result};

    extern "C" {
        fn mlx_serving_qmm(
            out: *mut *mut c_void,
            x: *mut c_void,
            w: *mut c_void,
            scales: *mut c_void,
            biases: *mut c_void,
            panels: c_int,
            group: c_int,
            bits: c_int,
            mode: c_int,
            isa: c_int,
            norm: *mut c_void,
            eps: f32,
            add: *mut c_void,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        fn mlx_serving_qmm_isa(isa: c_int) -> c_int;
        fn mlx_serving_qmm_layout(
            out: *mut *mut c_void,
            w: *mut c_void,
            scales: *mut c_void,
            biases: *mut c_void,
            op: c_int,
            rows: c_int,
            ids: *mut c_void,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        fn mlx_serving_attention(
            out: *mut *mut c_void,
            q: *mut c_void,
            k: *mut c_void,
            v: *mut c_void,
            mask: *mut c_void,
            scale: f32,
            causal: c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        fn mlx_serving_glu(out: *mut *mut c_void, gate: *mut c_void, up: *mut c_void, kind: c_int, err: *mut c_char, err_len: usize) -> c_int;
        fn mlx_serving_dense(out: *mut *mut c_void, x: *mut c_void, w: *mut c_void, bias: *mut c_void, transposed: c_int, err: *mut c_char, err_len: usize) -> c_int;
        fn mlx_serving_mlx_header_version() -> *const c_char;
        fn mlx_serving_mlx_runtime_version() -> *const c_char;
    }

    pub fn quantized_matmul(x: &Array, m: Matrix, group_size: i32, bits: i32, activations: Activations, isa: Isa, fuse: Fuse) -> Result<Array> {
        let mut out: *mut c_void = std::ptr::null_mut();
        let (norm, eps) = fuse.norm.map_or((std::ptr::null_mut(), 0.0), |(w, eps)| (w.as_ptr().ctx, eps));
        let add = fuse.add.map_or(std::ptr::null_mut(), |a| a.as_ptr().ctx);
        let mut err = [0 as c_char; 512];
        let mode = match activations {
            Activations::Int8 => 0,
            Activations::F32 => 1,
        };
        // SAFETY: the four handles are live MLX arrays (`ctx` of an mlx_array is
        // a heap `mlx::core::array`), borrowed for the call; on success `out` is
        // a new heap array that we own from here on, as mlx-c's functions return.
        let rc = unsafe {
            mlx_serving_qmm(
                &mut out,
                x.as_ptr().ctx,
                m.weight.as_ptr().ctx,
                m.scales.as_ptr().ctx,
                m.biases.as_ptr().ctx,
                match m.layout {
                    Layout::Rows => 0,
                    Layout::Panels { rows } => rows,
                },
                group_size,
                bits,
                mode,
                isa as c_int,
                norm,
                eps,
                add,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        made(rc, out, &err, "quantized_matmul")?.ok_or_else(|| Error::internal("quantized_matmul: no array made"))
    }

    pub fn layout(weight: &Array, scales: &Array, biases: &Array, op: c_int, rows: i32, ids: Option<&Array>) -> Result<(Array, Array, Array)> {
        let mut out: [*mut c_void; 3] = [std::ptr::null_mut(); 3];
        let mut err = [0 as c_char; 512];
        let ids = ids.map_or(std::ptr::null_mut(), |a| a.as_ptr().ctx);
        // SAFETY: live borrowed handles in; on 0, three owned heap arrays out.
        let rc = unsafe {
            mlx_serving_qmm_layout(
                out.as_mut_ptr(),
                weight.as_ptr().ctx,
                scales.as_ptr().ctx,
                biases.as_ptr().ctx,
                op,
                rows,
                ids,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the C side wrote a NUL-terminated message (snprintf).
            let why = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            return Err(Error::internal(format!("quantized matrix layout: {why}")));
        }
        // SAFETY: on 0 each is an owned heap mlx::core::array.
        let [w, s, b] = out.map(|p| unsafe { Array::from_ptr(mlx_sys::mlx_array { ctx: p }) });
        Ok((w, s, b))
    }

    /// What one of our C entry points returned: the array it made (0), `None`
    /// where its kernel does not cover the inputs (2), or the error it wrote
    /// into `err` (1).
    fn made(rc: c_int, out: *mut c_void, err: &[c_char], what: &str) -> Result<Option<Array>> {
        match rc {
            2 => Ok(None),
            // SAFETY: on 0 `out` is an owned heap mlx::core::array, the representation of mlx_array.
            0 if !out.is_null() => Ok(Some(unsafe { Array::from_ptr(mlx_sys::mlx_array { ctx: out }) })),
            _ => {
                // SAFETY: the C side wrote a NUL-terminated message (snprintf).
                let why = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
                Err(Error::internal(format!("{what}: {why}")))
            }
        }
    }

    pub fn attention(q: &Array, keys: &Array, values: &Array, mask: Option<&Array>, causal: bool, scale: f32) -> Result<Option<Array>> {
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = [0 as c_char; 512];
        let mask = mask.map_or(std::ptr::null_mut(), |m| m.as_ptr().ctx);
        // SAFETY: as in `quantized_matmul`: live borrowed handles in, an owned
        // heap array out on success (0); 2 means "not covered", nothing made.
        let rc = unsafe {
            mlx_serving_attention(
                &mut out,
                q.as_ptr().ctx,
                keys.as_ptr().ctx,
                values.as_ptr().ctx,
                mask,
                scale,
                causal as c_int,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        made(rc, out, &err, "attention")
    }

    pub fn glu(gate: &Array, up: Option<&Array>, kind: Gate) -> Result<Option<Array>> {
        activation(gate, up, kind as c_int)
    }

    pub fn gelu_erf(x: &Array) -> Result<Option<Array>> {
        // glu_api.h's kGeluErf: not gated.
        activation(x, None, 2)
    }

    fn activation(gate: &Array, up: Option<&Array>, kind: c_int) -> Result<Option<Array>> {
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = [0 as c_char; 512];
        let up = up.map_or(std::ptr::null_mut(), |u| u.as_ptr().ctx);
        // SAFETY: as in `attention`.
        let rc = unsafe { mlx_serving_glu(&mut out, gate.as_ptr().ctx, up, kind, err.as_mut_ptr(), err.len()) };
        made(rc, out, &err, "glu")
    }

    pub fn dense_matmul(x: &Array, w: &Array, bias: Option<&Array>, transposed: bool) -> Result<Option<Array>> {
        let mut out: *mut c_void = std::ptr::null_mut();
        let mut err = [0 as c_char; 512];
        let bias = bias.map_or(std::ptr::null_mut(), |b| b.as_ptr().ctx);
        // SAFETY: as in `attention`.
        let rc = unsafe { mlx_serving_dense(&mut out, x.as_ptr().ctx, w.as_ptr().ctx, bias, transposed as c_int, err.as_mut_ptr(), err.len()) };
        made(rc, out, &err, "dense_matmul")
    }

    pub fn isa_available(isa: Isa) -> bool {
        isa == Isa::Auto || unsafe { mlx_serving_qmm_isa(isa as c_int) } == 1
    }

    pub fn isa_in_use() -> Isa {
        match unsafe { mlx_serving_qmm_isa(0) } {
            1 => Isa::Avx2,
            2 => Isa::Avx512,
            4 => Isa::AvxVnni,
            _ => Isa::Mlx,
        }
    }

    pub fn versions() -> (String, String) {
        // SAFETY: both return static NUL-terminated strings.
        let get = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        unsafe { (get(mlx_serving_mlx_header_version()), get(mlx_serving_mlx_runtime_version())) }
    }
}

/// Off Linux (macOS: Metal), MLX's own op serves every call.
#[cfg(not(target_os = "linux"))]
mod imp {
    use mlx_rs::{ops, Array};

    use super::{Activations, Fuse, Gate, Isa, Layout, Matrix};
    use crate::error::{Error, Result};

    pub fn quantized_matmul(x: &Array, m: Matrix, group_size: i32, bits: i32, _activations: Activations, _isa: Isa, fuse: Fuse) -> Result<Array> {
        if m.layout != Layout::Rows {
            return Err(Error::internal("quantized_matmul: panels are an x86 layout"));
        }
        let normed;
        let x = match fuse.norm {
            Some((w, eps)) => {
                normed = mlx_rs::fast::rms_norm(x, Some(w), eps)?;
                &normed
            }
            None => x,
        };
        let y = ops::quantized_matmul(x, m.weight, m.scales, m.biases, true, group_size, bits)?;
        Ok(match fuse.add {
            Some(a) => a.add(&y)?,
            None => y,
        })
    }

    pub fn layout(_w: &Array, _s: &Array, _b: &Array, _op: i32, _rows: i32, _ids: Option<&Array>) -> Result<(Array, Array, Array)> {
        Err(Error::internal("panels are an x86 layout"))
    }

    pub fn attention(_q: &Array, _k: &Array, _v: &Array, _mask: Option<&Array>, _causal: bool, _scale: f32) -> Result<Option<Array>> {
        Ok(None)
    }

    pub fn glu(_gate: &Array, _up: Option<&Array>, _kind: Gate) -> Result<Option<Array>> {
        Ok(None)
    }

    pub fn gelu_erf(_x: &Array) -> Result<Option<Array>> {
        Ok(None)
    }

    pub fn dense_matmul(_x: &Array, _w: &Array, _bias: Option<&Array>, _transposed: bool) -> Result<Option<Array>> {
        Ok(None)
    }

    pub fn isa_available(isa: Isa) -> bool {
        matches!(isa, Isa::Auto | Isa::Mlx)
    }

    pub fn isa_in_use() -> Isa {
        Isa::Mlx
    }

    /// MLX is linked statically here: headers and runtime are one build.
    pub fn versions() -> (String, String) {
        ("static".into(), "static".into())
    }
}

#[cfg(test)]
mod tests;
