//! Our CUDA matrix-vector kernel for quantized weights (`qmv.cu`), run as an
//! MLX custom kernel ([`CudaKernel`]).
//!
//! Why: decode multiplies each quantized matrix by one row per sequence, and
//! MLX 0.32's CUDA kernel for that streams the weights at about a quarter of
//! an H200's bandwidth (an Nsight Compute trace; docs/gpu.md). Ours gives
//! each output column 8 to 32 threads that read the row's codes 16 bytes at
//! a time and never convert a code by I2F (see `qmv.cu`).
//! Large 4-bit matrices go to the tensor-core kernel instead, for any row
//! count up to 64 ([`super::cuda_qmm`]); this one serves the rest (8-bit ones).

use std::sync::OnceLock;

use mlx_rs::{Array, Dtype};

use super::cuda_kernel::{CudaKernel, Launch};
use crate::{
    device::{self, Backend},
    error::{Error, Result},
};

/// The most rows one call takes (the kernel is instantiated per row count).
const MAX_ROWS: usize = 7;

/// Whether the model should use [`quantized_matvec`] for a matrix of
/// `weights` weights rather than MLX's kernel: for matrices of more than 2^25
/// weights (the MLP of an 8B model). Measured on an H200, one stream, tokens/s
/// of the whole model, the choices alternated on one machine
/// (`MLX_SERVING_CUDA_QMV=0|N node bench/ab.cjs`; docs/gpu.md): an 8B shape 147-155 with ours
/// (on these matrices or on all) vs 122-129 with MLX's; a 1B shape 322-335
/// with ours on all its matrices or on its MLP's vs 375-407 with MLX's;
/// SmolLM2-135M and Qwen2.5-0.5B lose with ours everywhere (191 vs 280, 286 vs
/// 331). Per byte ours is the faster on large matrices (`bench/cuda_qmv.py`);
/// on small ones a step is bound by the host, where the custom kernel's
/// launch costs more than MLX's own (not profiled further).
/// `MLX_SERVING_CUDA_QMV=0` uses MLX's everywhere, `1` ours wherever it
/// serves, a larger number ours from matrices of that many weights.
pub fn preferred(weights: usize) -> bool {
    static FLOOR: OnceLock<usize> = OnceLock::new();
    let floor = *FLOOR.get_or_init(|| match std::env::var("MLX_SERVING_CUDA_QMV").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => (1 << 25) + 1,
    });
    weights >= floor
}

/// Whether [`quantized_matvec`] serves these inputs: a CUDA device, `x`
/// [..., K] of 1-[`MAX_ROWS`] rows in f16 or bf16 (the scales' dtype), `w`
/// [N, K * bits / 32] uint32 in MLX's affine layout with 4 or 8 bits, groups
/// of 32, 64 or 128, scales and biases [N, K / group]. Elsewhere MLX's op.
pub fn serves(x: &Array, w: &Array, scales: &Array, biases: &Array, group_size: i32, bits: i32) -> bool {
    let k = *x.shape().last().unwrap_or(&0);
    let rows = if k > 0 { x.size() / k as usize } else { 0 };
    let dtype = x.dtype();
    device::backend() == Backend::Cuda
        && (1..=MAX_ROWS).contains(&rows)
        && matches!(bits, 4 | 8)
        && matches!(group_size, 32 | 64 | 128)
        && matches!(dtype, Dtype::Float16 | Dtype::Bfloat16)
        && scales.dtype() == dtype
        && biases.dtype() == dtype
        && w.dtype() == Dtype::Uint32
        && w.ndim() == 2
        && k % group_size == 0
        && w.dim(1) as i64 * (32 / bits) as i64 == k as i64
        && scales.shape() == [w.dim(0), k / group_size]
        && biases.shape() == scales.shape()
}

/// `x @ dequantize(w)^T` by our kernel, for inputs it [`serves`].
pub fn quantized_matvec(x: &Array, w: &Array, scales: &Array, biases: &Array, group_size: i32, bits: i32) -> Result<Array> {
    let k = x.dim(-1);
    let rows = (x.size() / k as usize) as i32;
    let n = w.dim(0);
    let y = apply(kernel()?, &[&x.reshape(&[rows, k])?, w, scales, biases], rows, n, x.dtype(), bits, group_size)?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    Ok(y.reshape(&shape)?)
}

/// Threads per output column of a matrix `[n, k]` of `bits`-bit codes:
/// about four 16-byte chunks each, from 8 to 32; then, while the matrix has
/// fewer than 4096 warps' worth of columns (an H200 holds 8448 warps) and its
/// rows have a chunk for each, twice as many, up to a warp. (More than a warp
/// a column, with the warps' sums met in shared memory, was not kept: it
/// could not be checked on a GPU.)
fn lanes(n: i32, k: i32, bits: i32) -> i32 {
    let chunks = k * bits / 128;
    let wanted = (chunks / 4).clamp(8, 32);
    let mut lanes = 1 << (31 - wanted.leading_zeros()); // the power of two at or below
    while lanes < 32 && n * lanes / 32 < 4096 && lanes * 2 <= chunks {
        lanes *= 2;
    }
    lanes
}

/// The kernel object MLX made from `qmv.cu`, made once per process.
fn kernel() -> Result<&'static CudaKernel> {
    static KERNEL: OnceLock<Option<CudaKernel>> = OnceLock::new();
    KERNEL
        .get_or_init(|| CudaKernel::new("mlx_serving_qmv", &["x", "w", "scales", "biases"], &["y"], include_str!("qmv.cu"), include_str!("qmv_header.cuh")))
        .as_ref()
        .ok_or_else(|| Error::internal("MLX could not make the CUDA matrix-vector kernel"))
}

fn apply(kernel: &CudaKernel, inputs: &[&Array], rows: i32, n: i32, dtype: Dtype, bits: i32, group_size: i32) -> Result<Array> {
    const THREADS: i32 = 128;
    let lanes = lanes(n, inputs[0].dim(-1), bits);
    // Whole blocks; threads past the last column store nothing.
    let threads = (n * lanes + THREADS - 1) / THREADS * THREADS;
    kernel.apply(
        inputs,
        &Launch {
            output: &[rows, n],
            output_dtype: dtype,
            grid: (threads, 1, 1),
            threadgroup: (THREADS, 1, 1),
            types: &[("T", dtype)],
            ints: &[("BITS", bits), ("GS", group_size), ("M", rows), ("LANES", lanes)],
        },
    )
}

#[cfg(test)]
mod tests {
    use mlx_rs::{
        ops::{indexing::IndexOp, quantize},
        random::normal,
    };

    use super::*;

    #[test]
    fn lanes_follow_the_shape() {
        let cases = [
            ((1152, 896, 4), 16),    // Qwen2.5-0.5B's q, k, v: short rows
            ((151_936, 896, 8), 8),  // its output projection: many columns
            ((896, 4864, 4), 32),    // its MLP's down projection: few columns
            ((16_384, 2048, 4), 16), // Llama-3.2-1B's gate and up
            ((3072, 2048, 4), 32),   // its q, k, v
            ((4096, 14_336, 4), 32), // Llama-3.1-8B's down projection
            ((100, 512, 4), 16),
            ((16_400, 256, 8), 8),
        ];
        for ((n, k, bits), want) in cases {
            assert_eq!(lanes(n, k, bits), want, "{n} x {k}, {bits} bits");
        }
    }

    /// Against MLX's quantized matmul on the same device: 4 and 8 bits, every
    /// group size, f16 and bf16, 1-7 rows, column counts that leave a block's
    /// last threads idle, 8 to 32 threads a column, rows longer than one pass
    /// of them. Where the default device is not CUDA the kernel must decline.
    #[test]
    fn cuda_matvec_matches_quantized_matmul() {
        if device::backend() != Backend::Cuda {
            let w = normal::<f32>(&[100, 1536], None, None, None).unwrap();
            let (weight, scales, biases) = quantize(&w, 32, 4).unwrap();
            let x = normal::<f32>(&[1, 1536], None, None, None).unwrap().as_dtype(Dtype::Float16).unwrap();
            let (scales, biases) = (scales.as_dtype(Dtype::Float16).unwrap(), biases.as_dtype(Dtype::Float16).unwrap());
            assert!(!serves(&x, &weight, &scales, &biases, 32, 4));
            return;
        }
        // Every kind of weights (bits, group, dtype) on one shape, at 1 and 7
        // rows; 4- and 8-bit f16 on shapes of 8, 16 and 32 threads a column
        // (`lanes_follow_the_shape`), at 1 and 3 rows. Each combination is a
        // kernel MLX compiles, hence not the whole product.
        let mut cases = Vec::new();
        for bits in [4, 8] {
            for group_size in [32, 64, 128] {
                for dtype in [Dtype::Float16, Dtype::Bfloat16] {
                    cases.push(((100, 1536), bits, group_size, dtype, [1, 7]));
                }
            }
            for shape in [(100, 512), (16_400, 256)] {
                cases.push((shape, bits, 64, Dtype::Float16, [1, 3]));
            }
        }
        for ((n, k), bits, group_size, dtype, row_counts) in cases {
            let w = normal::<f32>(&[n, k], None, None, None).unwrap();
            let x = normal::<f32>(&[7, k], None, None, None).unwrap();
            let (weight, scales, biases) = quantize(&w, group_size, bits).unwrap();
            let (scales, biases) = (scales.as_dtype(dtype).unwrap(), biases.as_dtype(dtype).unwrap());
            for rows in row_counts {
                let x = x.index(..rows).as_dtype(dtype).unwrap();
                assert!(serves(&x, &weight, &scales, &biases, group_size, bits));
                let got = quantized_matvec(&x, &weight, &scales, &biases, group_size, bits).unwrap();
                let want = mlx_rs::ops::quantized_matmul(&x, &weight, &scales, &biases, true, group_size, bits).unwrap();
                assert_eq!(got.shape(), &[rows, n]);
                let (got, want) = (got.as_dtype(Dtype::Float32).unwrap(), want.as_dtype(Dtype::Float32).unwrap());
                let (got, want) = (got.as_slice::<f32>(), want.as_slice::<f32>());
                let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                // Both sum in f32 and round the result to the dtype (bf16: 2^-8).
                let tolerance = if dtype == Dtype::Float16 { 4e-3 } else { 2e-2 };
                assert!(diff < tolerance * largest, "{n} x {k} {bits}-bit g{group_size} {dtype:?} {rows} rows: differs by {diff} (largest {largest})");
            }
        }
    }
}
