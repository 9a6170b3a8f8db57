//! Our CUDA quantized matmul for 1-64 rows (`cuda_qmm.cu`) and the tile
//! layout it reads, as MLX custom kernels ([`CudaKernel`]).
//!
//! Why: a decode step multiplies every matrix by one row per sequence. Past a
//! few rows MLX 0.32's CUDA kernels either re-read the 4-bit weights per row
//! (its matrix-vector kernel) or were slower than widening the matrix to f16
//! for cuBLAS, which writes and reads 4 bytes per weight each step (15 GB a
//! step at 8B). Ours reads each 4-bit code once per product, widens it in
//! registers and feeds the tensor cores (`mma.sync` m16n8k16, f32 sums), so
//! a product of up to 64 rows costs about what one row costs: the weights'
//! bytes.
//!
//! - **Layout** ([`Tiles`], made at load by [`pack`] from MLX's affine form
//!   with MLX ops): the codes of each 16-row tile and 64-column step as one
//!   512-byte run, 16 bytes per lane in the order its tensor-core fragments
//!   want, and scale/bias pairs per 16-row tile and group. The same bytes as
//!   MLX's layout; the model keeps only this one (no second copy).
//! - **Shapes** ([`Blocks`]): each warp takes `NT` 16-column tiles and every
//!   `WK`-th 64-column step, `WK` warps sum their parts in shared memory in a
//!   fixed order, so a result never depends on timing.
//! - **Variants**: MLX compiles a kernel per set of template constants: the
//!   dtype, group size, 8-row tile count (`MT`, 1-8) and block shape. Each
//!   packed matrix records the variants it will need, and [`warm_up`]
//!   compiles them at load, so that no request waits for NVRTC.
//! - **More rows** (prefill past 64 rows): [`dequantize`] widens the tiles to
//!   the dtype for one dense matmul (the matrix of the product in flight only).

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use mlx_rs::{ops::stack, Array, Dtype};

use super::cuda_kernel::{CudaKernel, Launch};
use crate::{
    device::{self, Backend},
    error::{Error, Result},
};

/// The most rows [`matmul`] takes (8 tiles of 8 rows).
pub const MAX_ROWS: usize = 64;

/// A 4-bit matrix `[N, K]` in `cuda_qmm.cu`'s layout.
pub struct Tiles {
    /// uint32 `[N, K / 8]`: per 16-row tile and 64-column step, 32 lanes of 16 bytes.
    pub weight: Array,
    /// The dtype's `[N, 2 K / group_size]`: per 16-row tile and group, for
    /// each of 8 lanes' rows `g`, the scale and bias of row `g` and of `g + 8`.
    pub sb: Array,
    pub group_size: i32,
}

impl Tiles {
    /// Output features (rows of the matrix).
    pub fn n(&self) -> i32 {
        self.weight.dim(0)
    }

    /// Input features.
    pub fn k(&self) -> i32 {
        self.weight.dim(1) * 8
    }

    pub fn dtype(&self) -> Dtype {
        self.sb.dtype()
    }
}

/// Matrices of fewer weights than this stay in MLX's layout by default: their
/// products are bound by the host, where launching a custom kernel costs more
/// than MLX's op.
pub const DEFAULT_FLOOR: usize = 1 << 22;

/// Models with fewer weights than this in quantized matrices pack none by
/// default. Measured on an H100 (`bench/ab.cjs`, f16, alternated;
/// `bench/results/h100-2026-12-07-359467e-qmm-ab.log`): the 8B shape (7.5B) gains
/// at every row count (one stream 221-225 -> 264-280 tok/s, 8 streams 342 ->
/// 1291-1331, 32 streams 1284 -> 3694-3706, 64 streams 2442 -> 5496); the 1B
/// shape (1.2B), whose step is bound by the host, gains in batches (8 streams
/// 1550-1561 -> 2634-2732, 32 streams 5555-5675 -> 10034-10296) but loses a
/// lone stream (749 -> 543-556). A packed matrix has no MLX layout left to
/// serve one row otherwise, so small models keep MLX's kernels unless
/// `MLX_SERVING_CUDA_QMM` asks.
pub const LARGE_MODEL: usize = 1 << 32;

/// The smallest matrix, in weights, that a model holding `model_weights`
/// weights in quantized matrices moves into [`Tiles`] (`usize::MAX`: none).
/// `MLX_SERVING_CUDA_QMM=0` packs none, `N` every 4-bit matrix of `N`
/// weights and more in any model; unset, [`DEFAULT_FLOOR`] for models of
/// [`LARGE_MODEL`] weights and more, none below.
pub fn floor(model_weights: usize) -> usize {
    static ASKED: OnceLock<Option<usize>> = OnceLock::new();
    let asked = *ASKED.get_or_init(|| std::env::var("MLX_SERVING_CUDA_QMM").ok().and_then(|v| v.parse::<usize>().ok()));
    match asked {
        Some(0) => usize::MAX,
        Some(n) => n,
        None if model_weights >= LARGE_MODEL => DEFAULT_FLOOR,
        None => usize::MAX,
    }
}

/// Whether a quantized matrix in MLX's affine layout should be kept as
/// [`Tiles`]: on CUDA, 4 bits, groups of 32, 64 or 128, scales and biases in
/// f16 or bf16 (the model computes in that dtype), rows a multiple of 16 and
/// columns of 64, and at least `floor` weights ([`floor`]).
pub fn packs(weight: &Array, scales: &Array, biases: &Array, group_size: i32, bits: i32, floor: usize) -> bool {
    device::backend() == Backend::Cuda && fits(weight, scales, biases, group_size, bits) && weight.dim(0) as usize * weight.dim(1) as usize * 8 >= floor
}

/// The layout's own conditions (any device): see [`packs`].
fn fits(weight: &Array, scales: &Array, biases: &Array, group_size: i32, bits: i32) -> bool {
    let dtype = scales.dtype();
    bits == 4
        && matches!(group_size, 32 | 64 | 128)
        && matches!(dtype, Dtype::Float16 | Dtype::Bfloat16)
        && biases.dtype() == dtype
        && weight.dtype() == Dtype::Uint32
        && weight.ndim() == 2
        && weight.dim(0) % 16 == 0
        && weight.dim(1) % 8 == 0
        && scales.shape() == [weight.dim(0), weight.dim(1) * 8 / group_size]
        && biases.shape() == scales.shape()
}

/// MLX's affine 4-bit form (codes uint32 `[N, K / 8]`, lowest bits first;
/// scales and biases `[N, K / group_size]`) in the tile layout, by MLX ops on
/// the default device. Lane `4 g + t` of tile `T`, step `kt` holds four words
/// `j`; word `j`'s nibble `4 e + 2 p + h` is the code of row `16 T + 8 h + g`
/// at column `64 kt + 16 t + 4 j + 2 p + e`. Returned evaluated.
pub fn pack(weight: &Array, scales: &Array, biases: &Array, group_size: i32) -> Result<Tiles> {
    let (n, k) = (weight.dim(0), weight.dim(1) * 8);
    if !fits(weight, scales, biases, group_size, 4) || k % 64 != 0 {
        return Err(Error::internal(format!("a {n} x {k} matrix (groups of {group_size}) has no tile layout")));
    }
    let powers: Vec<u32> = (0..8).map(|i| 1u32 << (4 * i)).collect();
    let powers = Array::from_slice(&powers, &[8]);
    let sixteen = Array::from_slice(&[16u32], &[1]);
    let codes = weight.expand_dims(-1)?.floor_divide(&powers)?.remainder(&sixteen)?.as_dtype(Dtype::Uint8)?;
    // [tile, h, g, kt, t, j, p, e] -> [tile, kt, g, t, j, e, p, h]
    let codes = codes.reshape(&[n / 16, 2, 8, k / 64, 4, 4, 2, 2])?.transpose_axes(&[0, 3, 2, 4, 5, 7, 6, 1])?.reshape(&[-1, 8])?;
    let words = codes.as_dtype(Dtype::Uint32)?.multiply(&powers)?.sum_axis(-1, false)?.as_dtype(Dtype::Uint32)?.reshape(&[n, k / 8])?;
    let groups = k / group_size;
    let sb = stack(&[scales, biases], -1)?.reshape(&[n / 16, 2, 8, groups, 2])?.transpose_axes(&[0, 3, 2, 1, 4])?.reshape(&[n, 2 * groups])?;
    words.eval()?;
    sb.eval()?;
    let tiles = Tiles { weight: words, sb, group_size };
    if device::backend() == Backend::Cuda {
        record_variants(&tiles);
    }
    Ok(tiles)
}

/// How a product's blocks are shaped (`cuda_qmm.cu`'s constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocks {
    /// 16-column tiles per warp.
    pub nt: i32,
    /// Warps per block along the columns.
    pub wn: i32,
    /// Warps per block along k (a power of two).
    pub wk: i32,
    /// Blocks along k; above 1 the partial sums are added by MLX after.
    pub split: i32,
}

/// The block shape for `mt` 8-row tiles of an `n` x `k` matrix (the rule
/// `bench/qmm_layout.py`'s `qmm_config` mirrors for the benchmarks): up to 32
/// rows a warp per 16 columns and 8 warps along k; past them two 16-column
/// tiles a warp (each load of x feeds twice the tensor-core work) and 4 warps.
/// Chosen from a sweep of 10 block shapes over 9 matrices on an H200
/// (`bench/cuda_qmm_cupy.py sweep`, `bench/results/h200-2026-12-07-d743bf1-qmm.md`):
/// summed over an 8B layer's four matrices the first is within 2% of each
/// matrix's best shape up to 16 rows and 11% at 32; at 64 rows it was 54%
/// over (252 us against 164), the second 7% (174 us).
///
/// A row's result does not depend on the rows beside it as long as the
/// split along k stays: each output sums the same k steps in the same order
/// in the same warps (a tensor-core product computes each output from its own
/// row and column). So it is the same, bit for bit, in any batch of 1-32 rows,
/// and in any of 33-64.
pub fn blocks(_n: i32, _k: i32, mt: i32) -> Blocks {
    if mt <= 4 {
        Blocks { nt: 1, wn: 1, wk: 8, split: 1 }
    } else {
        Blocks { nt: 2, wn: 1, wk: 4, split: 1 }
    }
}

/// `x @ W^T` for `x` `[..., K]` of 1 to [`MAX_ROWS`] rows in the tiles' dtype.
pub fn matmul(x: &Array, tiles: &Tiles) -> Result<Array> {
    let (n, k) = (tiles.n(), tiles.k());
    let rows = (x.size() / k.max(1) as usize) as i32;
    if x.dim(-1) != k || !(1..=MAX_ROWS as i32).contains(&rows) || x.dtype() != tiles.dtype() {
        return Err(Error::internal(format!("the tensor-core matmul takes 1-{MAX_ROWS} rows of {k} in {:?}, not {:?}", tiles.dtype(), x.shape())));
    }
    let mt = (rows + 7) / 8;
    let y = run(x.reshape(&[rows, k])?, tiles, rows, mt, blocks(n, k, mt))?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    Ok(y.reshape(&shape)?)
}

/// The matmul kernel on `x` `[rows, K]` with block shape `b`.
fn run(x: Array, tiles: &Tiles, rows: i32, mt: i32, b: Blocks) -> Result<Array> {
    let (n, dtype) = (tiles.n(), tiles.dtype());
    let threads = 32 * b.wn * b.wk;
    let columns = (n / 16 + b.nt * b.wn - 1) / (b.nt * b.wn);
    let (shape, out_dtype) = if b.split > 1 { (vec![b.split, rows, n], Dtype::Float32) } else { (vec![rows, n], dtype) };
    let y = kernels()?.0.apply(
        &[&x, &tiles.weight, &tiles.sb],
        &Launch {
            output: &shape,
            output_dtype: out_dtype,
            grid: (columns * threads, b.split, 1),
            threadgroup: (threads, 1, 1),
            types: &[("T", dtype)],
            ints: &[("GS", tiles.group_size), ("MT", mt), ("NT", b.nt), ("WN", b.wn), ("WK", b.wk), ("SPLIT", b.split)],
        },
    )?;
    Ok(if b.split > 1 { y.sum_axis(0, false)?.as_dtype(dtype)? } else { y })
}

/// The matrix widened to its dtype, `[N, K]` (scale * code + bias rounded
/// once, as MLX's dequantize).
pub fn dequantize(tiles: &Tiles) -> Result<Array> {
    const THREADS: i32 = 256;
    let (n, k, dtype) = (tiles.n(), tiles.k(), tiles.dtype());
    let words = n / 16 * (k / 64) * 32;
    kernels()?.1.apply(
        &[&tiles.weight, &tiles.sb],
        &Launch {
            output: &[n, k],
            output_dtype: dtype,
            grid: ((words + THREADS - 1) / THREADS * THREADS, 1, 1),
            threadgroup: (THREADS, 1, 1),
            types: &[("T", dtype)],
            ints: &[("GS", tiles.group_size)],
        },
    )
}

/// The matmul and dequantize kernels, made once per process.
fn kernels() -> Result<&'static (CudaKernel, CudaKernel)> {
    static KERNELS: OnceLock<Option<(CudaKernel, CudaKernel)>> = OnceLock::new();
    KERNELS
        .get_or_init(|| {
            let header = include_str!("cuda_qmm_header.cuh");
            let matmul = CudaKernel::new("mlx_serving_qmm", &["x", "w", "sb"], &["y"], include_str!("cuda_qmm.cu"), header)?;
            let dequantize = CudaKernel::new("mlx_serving_qmm_dequantize", &["w", "sb"], &["y"], include_str!("cuda_qmm_dequantize.cu"), header)?;
            Some((matmul, dequantize))
        })
        .as_ref()
        .ok_or_else(|| Error::internal("MLX could not make the CUDA tensor-core matmul kernels"))
}

/// One compiled form of the kernels: what MLX compiles once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Variant {
    Matmul { dtype: Dtype, group_size: i32, mt: i32, blocks: Blocks },
    Dequantize { dtype: Dtype, group_size: i32 },
}

/// Variants packed matrices will use, and those already run once.
fn registry() -> &'static Mutex<(HashSet<Variant>, HashSet<Variant>)> {
    static REGISTRY: OnceLock<Mutex<(HashSet<Variant>, HashSet<Variant>)>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn record_variants(tiles: &Tiles) {
    let (dtype, group_size) = (tiles.dtype(), tiles.group_size);
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    for mt in 1..=(MAX_ROWS as i32 / 8) {
        let v = Variant::Matmul { dtype, group_size, mt, blocks: blocks(tiles.n(), tiles.k(), mt) };
        if !r.1.contains(&v) {
            r.0.insert(v);
        }
    }
    let v = Variant::Dequantize { dtype, group_size };
    if !r.1.contains(&v) {
        r.0.insert(v);
    }
}

/// Compiles (by running once, on small inputs) every variant that matrices
/// packed so far will use and that has not run yet: every row count up to
/// [`MAX_ROWS`] and the dequantize kernel, per dtype and group size. A model
/// calls it as it loads, so that no request waits for NVRTC. Returns how many
/// variants it compiled.
pub fn warm_up() -> Result<usize> {
    let pending: Vec<Variant> = {
        let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
        r.0.drain().collect()
    };
    for v in &pending {
        let out = match *v {
            // The constants, not the sizes, make a variant: the smallest
            // matrix that gives every warp of a block a tile, 128 columns
            // (a group even of 128).
            Variant::Matmul { dtype, group_size, mt, blocks: b } => {
                let x = Array::ones::<f32>(&[8 * mt, 128])?.as_dtype(dtype)?;
                run(x, &dummy(16 * b.nt * b.wn, dtype, group_size)?, 8 * mt, mt, b)?
            }
            Variant::Dequantize { dtype, group_size } => dequantize(&dummy(16, dtype, group_size)?)?,
        };
        out.eval()?;
    }
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.1.extend(pending.iter().copied());
    Ok(pending.len())
}

fn dummy(n: i32, dtype: Dtype, group_size: i32) -> Result<Tiles> {
    let weight = Array::zeros::<u32>(&[n, 16])?;
    let sb = Array::zeros::<f32>(&[n, 2 * 128 / group_size])?.as_dtype(dtype)?;
    Ok(Tiles { weight, sb, group_size })
}

#[cfg(test)]
mod tests {
    use mlx_rs::{
        ops::{dequantize as mlx_dequantize, indexing::IndexOp, matmul as dense, quantize},
        random::normal,
    };

    use super::*;

    /// A deterministic stream of codes 0-15.
    fn codes(count: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..count)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 60) as u8
            })
            .collect()
    }

    /// The packing is a permutation of the codes into the order the
    /// kernel's lanes read them, with scale/bias pairs beside: every code and
    /// pair checked against the layout's definition (on any device).
    #[test]
    fn pack_places_each_code_where_the_kernel_reads_it() {
        let (n, k, group_size) = (32usize, 256usize, 64usize);
        let q = codes(n * k, 7);
        let words: Vec<u32> = q.chunks(8).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &v)| w | (v as u32) << (4 * i))).collect();
        let groups = k / group_size;
        let scales: Vec<f32> = (0..n * groups).map(|i| 0.5 + i as f32).collect();
        let biases: Vec<f32> = (0..n * groups).map(|i| -(i as f32)).collect();
        let weight = Array::from_slice(&words, &[n as i32, (k / 8) as i32]);
        let s = Array::from_slice(&scales, &[n as i32, groups as i32]).as_dtype(Dtype::Float16).unwrap();
        let b = Array::from_slice(&biases, &[n as i32, groups as i32]).as_dtype(Dtype::Float16).unwrap();
        let tiles = pack(&weight, &s, &b, group_size as i32).unwrap();
        assert_eq!((tiles.n(), tiles.k(), tiles.dtype()), (n as i32, k as i32, Dtype::Float16));
        let packed = tiles.weight.as_slice::<u32>();
        let (kt_count, mut checked) = (k / 64, 0);
        for tile in 0..n / 16 {
            for kt in 0..kt_count {
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    for j in 0..4 {
                        let word = packed[((tile * kt_count + kt) * 32 + lane) * 4 + j];
                        for (i, (e, p, h)) in (0..2).flat_map(|e| (0..2).flat_map(move |p| (0..2).map(move |h| (e, p, h)))).enumerate() {
                            let (row, col) = (16 * tile + 8 * h + g, 64 * kt + 16 * t + 4 * j + 2 * p + e);
                            assert_eq!((word >> (4 * i)) & 15, q[row * k + col] as u32, "tile {tile} step {kt} lane {lane} word {j} nibble {i}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, n * k);
        let sb = tiles.sb.as_dtype(Dtype::Float32).unwrap();
        let sb = sb.as_slice::<f32>();
        for tile in 0..n / 16 {
            for group in 0..groups {
                for g in 0..8 {
                    for h in 0..2 {
                        let at = ((tile * groups + group) * 8 + g) * 4 + 2 * h;
                        let row = 16 * tile + 8 * h + g;
                        assert_eq!((sb[at], sb[at + 1]), (scales[row * groups + group], biases[row * groups + group]));
                    }
                }
            }
        }
    }

    /// Unless `MLX_SERVING_CUDA_QMM` says otherwise, only a large model packs
    /// (its matrices of 2^22 weights and more).
    #[test]
    fn only_large_models_pack_by_default() {
        if std::env::var_os("MLX_SERVING_CUDA_QMM").is_some() {
            return;
        }
        assert_eq!(floor(LARGE_MODEL), DEFAULT_FLOOR);
        assert_eq!(floor(7_500_000_000), DEFAULT_FLOOR);
        assert_eq!(floor(1_240_000_000), usize::MAX);
        assert_eq!(floor(0), usize::MAX);
    }

    /// Against the float product of MLX's dequantized matrix on the same
    /// device, and MLX's quantized matmul at 2 and 64 rows (groups of 32; each
    /// of its variants is a compile on CUDA): f16 and bf16,
    /// groups of 32, 64 and 128, every 8-row bucket's edges (1-64 rows), a
    /// column count that leaves a block's last warps idle, k steps not a
    /// multiple of a block's warps; the widening kernel against MLX's
    /// dequantize; the warm-up compiles each variant once. Where the default
    /// device is not CUDA no matrix is packed.
    #[test]
    fn tensor_core_matmul_matches_quantized_matmul() {
        let w = normal::<f32>(&[48, 1536], None, None, None).unwrap();
        let (weight, scales, biases) = quantize(&w, 32, 4).unwrap();
        let (s16, b16) = (scales.as_dtype(Dtype::Float16).unwrap(), biases.as_dtype(Dtype::Float16).unwrap());
        if device::backend() != Backend::Cuda {
            assert!(!packs(&weight, &s16, &b16, 32, 4, 1));
            return;
        }
        assert!(fits(&weight, &s16, &b16, 32, 4) && !fits(&weight, &s16, &b16, 32, 8));
        let x_all = normal::<f32>(&[64, 1536], None, None, None).unwrap();
        for dtype in [Dtype::Float16, Dtype::Bfloat16] {
            for group_size in [32, 64, 128] {
                let (weight, scales, biases) = quantize(&w, group_size, 4).unwrap();
                let (scales, biases) = (scales.as_dtype(dtype).unwrap(), biases.as_dtype(dtype).unwrap());
                let tiles = pack(&weight, &scales, &biases, group_size).unwrap();
                let dense_w = mlx_dequantize(&weight, &scales, &biases, group_size, 4).unwrap();
                let widened = super::dequantize(&tiles).unwrap();
                let (d, o) = (dense_w.as_dtype(Dtype::Float32).unwrap(), widened.as_dtype(Dtype::Float32).unwrap());
                let gap = d.subtract(&o).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
                let scale = d.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                // Both round scale * code + bias once to the dtype.
                assert!(gap <= scale * 2f32.powi(-7), "{dtype:?} g{group_size}: widened matrices differ by {gap}");
                let w_t = d.transpose_axes(&[1, 0]).unwrap();
                for rows in [1, 2, 7, 8, 9, 16, 17, 33, 40, 64] {
                    let x = x_all.index(..rows).as_dtype(dtype).unwrap();
                    let got = matmul(&x, &tiles).unwrap();
                    assert_eq!((got.shape(), got.dtype()), (&[rows, 48][..], dtype));
                    let got = got.as_dtype(Dtype::Float32).unwrap();
                    let xf = x.as_dtype(Dtype::Float32).unwrap();
                    let want = dense(&xf, &w_t).unwrap();
                    let magnitude = dense(xf.abs().unwrap(), w_t.abs().unwrap()).unwrap();
                    let mut checks = vec![("float", want)];
                    if group_size == 32 && (rows == 2 || rows == 64) {
                        checks.push(("MLX's op", mlx_rs::ops::quantized_matmul(&x, &weight, &scales, &biases, true, group_size, 4).unwrap().as_dtype(Dtype::Float32).unwrap()));
                    }
                    for (what, want) in checks {
                        let worst = got.subtract(&want).unwrap().abs().unwrap().divide(&magnitude).unwrap().max(None).unwrap().item_exact::<f32>();
                        // f32 sums; the output rounds to the dtype (bf16: 2^-8 of it).
                        assert!(worst < 2f32.powi(-7), "{dtype:?} g{group_size} {rows} rows vs {what}: off by {worst} of the terms' magnitude");
                    }
                }
            }
        }
        // Every variant the matrices above use ran already: none is left.
        warm_up().unwrap();
        let _ = pack(&weight, &s16, &b16, 32).unwrap();
        assert_eq!(warm_up().unwrap(), 0);
    }

    /// A row's result is the same, bit for bit, alone and in any batch of up
    /// to 32 rows, and in any batch of 33-64 rows (where the block shape, and
    /// with it the split along k, is the same: [`blocks`]), in f16 and bf16.
    /// Only on CUDA.
    #[test]
    fn a_row_gets_the_same_bits_in_any_batch() {
        if device::backend() != Backend::Cuda {
            return;
        }
        let w = normal::<f32>(&[256, 2048], None, None, None).unwrap();
        let (weight, scales, biases) = quantize(&w, 32, 4).unwrap();
        for dtype in [Dtype::Float16, Dtype::Bfloat16] {
            let tiles = pack(&weight, &scales.as_dtype(dtype).unwrap(), &biases.as_dtype(dtype).unwrap(), 32).unwrap();
            let x = normal::<f32>(&[64, 2048], None, None, None).unwrap().as_dtype(dtype).unwrap();
            for (batch, row_counts) in [(32, [1, 7, 8, 9, 17]), (64, [33, 40, 48, 56, 63])] {
                let all = matmul(&x.index(..batch), &tiles).unwrap().as_dtype(Dtype::Float32).unwrap();
                for rows in row_counts {
                    let some = matmul(&x.index(..rows), &tiles).unwrap().as_dtype(Dtype::Float32).unwrap();
                    let same = some.eq_values(&all.index(..rows)).unwrap();
                    assert!(same, "{dtype:?}: the first {rows} rows differ from the same rows in a batch of {batch}");
                }
            }
        }
    }
}
