//! Linear layers over GGUF weights: dense (dequantized at load) or quantized
//! (kept 4-bit / 8-bit in memory, multiplied by [`crate::kernels`] on CPU, by
//! MLX's own kernels on a GPU, on CUDA by our tensor-core kernel for large
//! 4-bit matrices), the conversion of a model's parameters to the dtype it
//! computes in ([`Cast`]) and the CUDA tile layout's repacking ([`Pack`]).

use std::sync::OnceLock;

use mlx_rs::{
    ops::{
        concatenate, dequantize,
        indexing::{Ellipsis, TryIndexOp},
        matmul,
    },
    Array, Dtype,
};

use crate::{
    device::{self, Backend},
    error::{Error, Result},
    kernels::{
        self, cuda,
        cuda_qmm::{self, Tiles},
        quantized_matmul, Activations, Fuse, Isa, Layout, Matrix,
    },
};

/// Whether a product of `rows` rows (tokens of a prefill, sequences of a
/// decode step) with a quantized matrix of `weights` weights in MLX's layout
/// (8-bit ones, and 4-bit ones the tensor-core kernel does not take: see
/// [`Pack`]) goes through a dequantized copy of the matrix on CUDA rather
/// than MLX's quantized kernel: from 8 rows
/// (`MLX_SERVING_CUDA_DEQUANTIZE_ROWS`) for matrices of at least 2^22 weights
/// (2048 x 2048). MLX 0.32's CUDA quantized matmul is fast for a
/// row or a few (its matrix-vector kernel) and slow past them on large
/// matrices, where widening the matrix to f16 for one cuBLAS product costs
/// less. Measured on an H200 (`bench/gpu.mjs`; docs/gpu.md): on a
/// 1B-shaped model (matrices of 4-34M weights) 32 streams went from 1077 to
/// 2868 tok/s and a 4096-token prefill from 204 to 117 ms, one stream level;
/// on SmolLM2-135M (matrices under 2M weights but its 28M output projection)
/// dequantizing every matrix lost (8 streams 1143 -> 646 tok/s), hence the
/// size floor. The weights stay quantized in memory; only the matrix of the
/// product in flight is widened, and freed after it.
fn cuda_dequantizes(rows: usize, weights: usize) -> bool {
    static ROWS: OnceLock<usize> = OnceLock::new();
    let min_rows = *ROWS.get_or_init(|| std::env::var("MLX_SERVING_CUDA_DEQUANTIZE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(8));
    device::backend() == Backend::Cuda && rows >= min_rows && weights >= 1 << 22
}

/// How weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantize every tensor to f32 at load (multiplied by BLAS's sgemm).
    Dense,
    /// Keep quantized tensors as MLX affine-quantized arrays: on CPU multiplied
    /// by our kernels ([`crate::kernels`]), on a GPU (Metal, CUDA) by MLX's.
    Quantized,
}

impl WeightFormat {
    /// Quantized everywhere; `MLX_SERVING_WEIGHTS=dense|quantized` overrides.
    pub fn for_platform() -> Self {
        match std::env::var("MLX_SERVING_WEIGHTS").as_deref() {
            Ok("dense") => WeightFormat::Dense,
            _ => WeightFormat::Quantized,
        }
    }
}

/// An affine-quantized matrix `[out, in]`: MLX's layout as loaded; on a CPU
/// whose int8 kernels serve it, in their panels once the model is cast
/// ([`Cast`], [`kernels::pack`]); on CUDA, in the tensor-core kernel's tiles
/// ([`Pack`]).
pub struct QuantizedWeight {
    /// MLX's layout; empty once `tiles` holds the codes.
    pub weight: Array,
    pub scales: Array,
    pub biases: Array,
    pub layout: Layout,
    pub group_size: i32,
    pub bits: i32,
    pub activations: Activations,
    /// The codes in [`cuda_qmm`]'s layout (CUDA, 4-bit, f16/bf16), which then
    /// serves every product.
    pub tiles: Option<Tiles>,
}

impl QuantizedWeight {
    /// A matrix in MLX's layout.
    pub fn new(weight: Array, scales: Array, biases: Array, group_size: i32, bits: i32, activations: Activations) -> Self {
        QuantizedWeight { weight, scales, biases, layout: Layout::Rows, group_size, bits, activations, tiles: None }
    }

    /// Rows of the matrix (output features).
    pub fn out_features(&self) -> i32 {
        match self.layout {
            Layout::Rows => self.weight.dim(0),
            Layout::Panels { rows } => rows,
        }
    }

    /// Columns of the matrix (input features).
    fn in_features(&self) -> i32 {
        self.weight.dim(1) * 32 / self.bits
    }

    fn matrix(&self) -> Matrix<'_> {
        Matrix { weight: &self.weight, scales: &self.scales, biases: &self.biases, layout: self.layout }
    }

    fn forward(&self, x: &Array, fuse: Fuse) -> Result<Array> {
        let q = self;
        let rows = x.size() / x.dim(-1).max(1) as usize;
        if let Some(tiles) = &q.tiles {
            return composed(x, fuse, |x| tiled_product(x, tiles, rows));
        }
        let weights = q.out_features() as usize * x.dim(-1) as usize;
        // Panels are a CPU layout: a GPU's matrices stay in MLX's.
        if q.layout == Layout::Rows {
            if cuda_dequantizes(rows, weights) {
                return composed(x, fuse, |x| q.dequantized_product(x));
            }
            if cuda::preferred(weights) && cuda::serves(x, &q.weight, &q.scales, &q.biases, q.group_size, q.bits) {
                return composed(x, fuse, |x| cuda::quantized_matvec(x, &q.weight, &q.scales, &q.biases, q.group_size, q.bits));
            }
        }
        quantized_matmul(x, q.matrix(), q.group_size, q.bits, q.activations, Isa::Auto, fuse)
    }

    /// `x @ dequantize(W)^T`: the matrix widened to the scales' dtype for this
    /// one product (a temporary MLX frees after it), then a dense matmul.
    fn dequantized_product(&self, x: &Array) -> Result<Array> {
        let w = dequantize(&self.weight, &self.scales, &self.biases, self.group_size, self.bits)?;
        Ok(matmul(x, w.transpose_axes(&[1, 0])?)?)
    }

    /// Puts the matrix in panels (`true`) or MLX's layout, evaluated: the
    /// other layout's arrays are freed.
    fn set_panels(&mut self, panels: bool) -> Result<()> {
        let (weight, scales, biases) = match (self.layout, panels) {
            (Layout::Rows, true) => kernels::pack(&self.weight, &self.scales, &self.biases)?,
            (Layout::Panels { rows }, false) => kernels::unpack(&self.weight, &self.scales, &self.biases, rows)?,
            _ => return Ok(()),
        };
        for a in [&weight, &scales, &biases] {
            a.eval()?;
        }
        self.layout = if panels { Layout::Panels { rows: self.out_features() } } else { Layout::Rows };
        (self.weight, self.scales, self.biases) = (weight, scales, biases);
        Ok(())
    }

    /// Several matrices of one kind and width stacked along the output axis
    /// (in MLX's layout, as loaded).
    fn stack(parts: &[&QuantizedWeight]) -> Result<Option<QuantizedWeight>> {
        let first = parts[0];
        if parts.iter().any(|p| {
            p.tiles.is_some() || p.bits != first.bits || p.group_size != first.group_size || p.weight.dim(1) != first.weight.dim(1) || p.layout != Layout::Rows
        }) {
            return Ok(None);
        }
        let cat = |f: fn(&QuantizedWeight) -> &Array| -> Result<Array> {
            let a = concatenate(&parts.iter().map(|p| f(p)).collect::<Vec<_>>(), 0)?;
            a.eval()?;
            Ok(a)
        };
        Ok(Some(QuantizedWeight::new(
            cat(|p| &p.weight)?,
            cat(|p| &p.scales)?,
            cat(|p| &p.biases)?,
            first.group_size,
            first.bits,
            first.activations,
        )))
    }
}

/// `x @ W^T` from the tiles: the tensor-core kernel for up to
/// [`cuda_qmm::MAX_ROWS`] rows, past them a dense product with the matrix
/// widened for it. In the tiles' dtype (the model's); other activations are
/// converted to it and the result back.
fn tiled_product(x: &Array, tiles: &Tiles, rows: usize) -> Result<Array> {
    let dtype = tiles.dtype();
    let converted;
    let xt = if x.dtype() == dtype {
        x
    } else {
        converted = x.as_dtype(dtype)?;
        &converted
    };
    let y = if rows <= cuda_qmm::MAX_ROWS { cuda_qmm::matmul(xt, tiles)? } else { matmul(xt, cuda_qmm::dequantize(tiles)?.transpose_axes(&[1, 0])?)? };
    Ok(if x.dtype() == dtype { y } else { y.as_dtype(x.dtype())? })
}

/// Converts a model's floating-point parameters to the dtype it computes in
/// ([`crate::device::compute_dtype`]): dense matrices, the scales and biases of
/// quantized ones (which stay packed), norm weights, biases. Integer arrays
/// are left alone. Each converted array is evaluated, so the f32 original is
/// freed as the model is walked. Quantized matrices also take the layout their
/// kernels read in that dtype: panels where the int8 kernels serve them
/// (f32 on an x86 CPU), MLX's layout otherwise.
pub trait Cast {
    fn cast(&mut self, dtype: Dtype) -> Result<()>;
}

impl Cast for Array {
    fn cast(&mut self, dtype: Dtype) -> Result<()> {
        if self.dtype() != dtype && matches!(self.dtype(), Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16) {
            *self = self.as_dtype(dtype)?;
            self.eval()?;
        }
        Ok(())
    }
}

impl<T: Cast> Cast for Option<T> {
    fn cast(&mut self, dtype: Dtype) -> Result<()> {
        self.iter_mut().try_for_each(|x| x.cast(dtype))
    }
}

impl<T: Cast, const N: usize> Cast for [T; N] {
    fn cast(&mut self, dtype: Dtype) -> Result<()> {
        self.iter_mut().try_for_each(|x| x.cast(dtype))
    }
}

impl Cast for Linear {
    fn cast(&mut self, dtype: Dtype) -> Result<()> {
        match self {
            Linear::Dense(w) => w.cast(dtype),
            Linear::Quantized(q) => {
                let panels = dtype == Dtype::Float32
                    && q.activations == Activations::Int8
                    && kernels::int8_kernels_serve(q.bits, q.group_size, q.in_features());
                q.set_panels(panels)?;
                q.scales.cast(dtype)?;
                q.biases.cast(dtype)?;
                match &mut q.tiles {
                    Some(t) if matches!(dtype, Dtype::Float16 | Dtype::Bfloat16) => t.sb.cast(dtype),
                    Some(_) => Err(Error::internal("a matrix in the CUDA tile layout computes in f16 or bf16")),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Cast for Projections {
    fn cast(&mut self, dtype: Dtype) -> Result<()> {
        match self {
            Projections::Stacked { weight, .. } => weight.cast(dtype),
            Projections::Separate(parts) => parts.iter_mut().try_for_each(|p| p.cast(dtype)),
        }
    }
}

/// Moves a model's 4-bit matrices that [`cuda_qmm::packs`] takes into the
/// CUDA tensor-core kernel's layout, once they are in the dtype the model
/// computes in ([`Cast`]): the MLX-layout arrays are dropped, so the codes are
/// held once. Models call it on every projection but the embedding, whose
/// rows are looked up (`rows`); a head tied to the embedding stays as it is.
/// `floor`: the smallest matrix to pack, in weights ([`cuda_qmm::floor`]).
pub trait Pack {
    fn pack(&mut self, floor: usize) -> Result<()>;
}

impl Pack for Linear {
    fn pack(&mut self, floor: usize) -> Result<()> {
        if let Linear::Quantized(q) = self {
            if q.tiles.is_none() && cuda_qmm::packs(&q.weight, &q.scales, &q.biases, q.group_size, q.bits, floor) {
                q.tiles = Some(cuda_qmm::pack(&q.weight, &q.scales, &q.biases, q.group_size)?);
                let dtype = q.scales.dtype();
                q.weight = Array::from_slice::<u32>(&[], &[0]);
                q.scales = Array::from_slice::<f32>(&[], &[0]).as_dtype(dtype)?;
                q.biases = q.scales.clone();
            }
        }
        Ok(())
    }
}

impl Pack for Projections {
    fn pack(&mut self, floor: usize) -> Result<()> {
        match self {
            Projections::Stacked { weight, .. } => weight.pack(floor),
            Projections::Separate(parts) => parts.iter_mut().try_for_each(|p| p.pack(floor)),
        }
    }
}

impl<T: Pack> Pack for Option<T> {
    fn pack(&mut self, floor: usize) -> Result<()> {
        self.iter_mut().try_for_each(|x| x.pack(floor))
    }
}

/// A weight matrix `[out, in]`, applied as `x @ W^T`.
pub enum Linear {
    /// `[out, in]`, f32 as loaded; the model's compute dtype after [`Cast`].
    Dense(Array),
    /// MLX's affine layout; the loader sets `group_size` and `bits` from the
    /// block type's conversion (`load::blocks`).
    Quantized(QuantizedWeight),
}

impl Linear {
    /// Makes a quantized matrix take activations as `activations` says from
    /// now on, in the layout those kernels read for `dtype`.
    pub fn set_activations(&mut self, activations: Activations, dtype: Dtype) -> Result<()> {
        if let Linear::Quantized(q) = self {
            q.activations = activations;
            self.cast(dtype)?;
        }
        Ok(())
    }

    /// Weights of a quantized matrix in MLX's affine layout (0 otherwise).
    pub fn quantized_weights(&self) -> usize {
        match self {
            Linear::Quantized(q) if q.weight.ndim() == 2 && q.weight.dtype() == Dtype::Uint32 => {
                q.weight.dim(0) as usize * q.weight.dim(1) as usize * 32 / q.bits as usize
            }
            _ => 0,
        }
    }

    /// Whether a row's product does not depend on the rows beside it: a
    /// quantized matrix in the int8 kernels' panels.
    pub fn batch_invariant(&self) -> bool {
        matches!(self, Linear::Quantized(q) if matches!(q.layout, Layout::Panels { .. }) && q.activations == Activations::Int8)
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_fused(x, Fuse::default())
    }

    /// `fuse.add + rms_norm(x) @ W^T`, the parts `fuse` names: one op where our
    /// quantized kernel serves (CPU), composed otherwise.
    pub fn forward_fused(&self, x: &Array, fuse: Fuse) -> Result<Array> {
        match self {
            Linear::Dense(w) => composed(x, fuse, |x| Ok(matmul(x, w.transpose_axes(&[1, 0])?)?)),
            Linear::Quantized(q) => q.forward(x, fuse),
        }
    }

    /// Rows of the matrix (an embedding lookup), in the weights' dtype (the
    /// scales' for quantized ones: [`Cast`]). Not for a packed matrix
    /// (embeddings are never packed: [`Pack`]).
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Linear::Quantized(q) if q.tiles.is_some() => return Err(Error::internal("rows of a matrix in the CUDA tile layout")),
            Linear::Dense(w) => w.try_index(ids)?,
            Linear::Quantized(q) if q.layout != Layout::Rows => {
                let (w, s, b) = kernels::panel_rows(&q.weight, &q.scales, &q.biases, ids)?;
                dequantize(&w, &s, &b, q.group_size, q.bits)?
            }
            Linear::Quantized(q) => dequantize(
                q.weight.try_index(ids)?,
                q.scales.try_index(ids)?,
                &q.biases.try_index(ids)?,
                q.group_size,
                q.bits,
            )?,
        })
    }
}

/// Several linear layers applied to the same input (q/k/v, gate/up). When they
/// are all dense, or all quantized alike, they are stacked into one matrix, so
/// one matmul serves all of them (and, quantized, the input is quantized once).
pub enum Projections {
    Stacked { weight: Linear, outputs: Vec<i32> },
    Separate(Vec<Linear>),
}

impl Projections {
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let outputs: Vec<i32> = parts
            .iter()
            .map(|p| match p {
                Linear::Dense(w) => w.dim(0),
                Linear::Quantized(q) => q.out_features(),
            })
            .collect();
        let dense: Vec<&Array> = parts.iter().filter_map(|p| if let Linear::Dense(w) = p { Some(w) } else { None }).collect();
        if dense.len() == parts.len() {
            let weight = concatenate(&dense, 0)?;
            weight.eval()?;
            return Ok(Projections::Stacked { weight: Linear::Dense(weight), outputs });
        }
        let quantized: Vec<&QuantizedWeight> =
            parts.iter().filter_map(|p| if let Linear::Quantized(q) = p { Some(q) } else { None }).collect();
        if quantized.len() == parts.len() {
            if let Some(stacked) = QuantizedWeight::stack(&quantized)? {
                return Ok(Projections::Stacked { weight: Linear::Quantized(stacked), outputs });
            }
        }
        Ok(Projections::Separate(parts))
    }

    /// The matrices, stacked or not.
    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            Projections::Stacked { weight, .. } => vec![weight],
            Projections::Separate(parts) => parts.iter().collect(),
        }
    }

    /// The matrices, stacked or not.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Projections::Stacked { weight, .. } => vec![weight],
            Projections::Separate(parts) => parts.iter_mut().collect(),
        }
    }

    /// One output per layer, in order.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        self.forward_normed(x, None)
    }

    /// One output per layer of `rms_norm(x, weight, eps)` (`norm`), or of `x`.
    /// Stacked, the norm is part of the matmul's op ([`Linear::forward_fused`]).
    pub fn forward_normed(&self, x: &Array, norm: Option<(&Array, f32)>) -> Result<Vec<Array>> {
        match self {
            Projections::Separate(parts) => {
                let x = normed(x, norm)?;
                parts.iter().map(|p| p.forward(&x)).collect()
            }
            Projections::Stacked { weight, outputs } => {
                let y = weight.forward_fused(x, Fuse { norm, add: None })?;
                let mut start = 0;
                let mut out = Vec::with_capacity(outputs.len());
                for &n in outputs {
                    out.push(y.try_index((Ellipsis, start..start + n))?);
                    start += n;
                }
                Ok(out)
            }
        }
    }
}

/// `fuse.add + product(rms_norm(x))` from MLX's ops, for a product that takes
/// no norm or addend in itself.
fn composed(x: &Array, fuse: Fuse, product: impl FnOnce(&Array) -> Result<Array>) -> Result<Array> {
    let y = product(&normed(x, fuse.norm)?)?;
    Ok(match fuse.add {
        Some(a) => a.add(&y)?,
        None => y,
    })
}

/// `rms_norm(x, weight, eps)` where `norm` is given, else `x`.
fn normed(x: &Array, norm: Option<(&Array, f32)>) -> Result<Array> {
    Ok(match norm {
        Some((w, eps)) => mlx_rs::fast::rms_norm(x, Some(w), eps)?,
        None => x.clone(),
    })
}

#[cfg(test)]
mod tests {
    use mlx_rs::{ops::quantize, random::normal};

    use super::*;

    /// On CUDA a large 4-bit f16 matrix is packed for the tensor-core kernel,
    /// drops its MLX-layout arrays, and serves a decode-sized product (the
    /// kernel) and a prefill-sized one (the widened tiles) as the same matrix
    /// in MLX's layout does; elsewhere nothing is packed.
    #[test]
    fn packed_matrix_serves_every_row_count() {
        let w = normal::<f32>(&[4096, 1024], None, None, None).unwrap();
        let (weight, scales, biases) = quantize(&w, 32, 4).unwrap();
        let (scales, biases) = (scales.as_dtype(Dtype::Float16).unwrap(), biases.as_dtype(Dtype::Float16).unwrap());
        let make = || {
            Linear::Quantized(QuantizedWeight::new(weight.clone(), scales.clone(), biases.clone(), 32, 4, Activations::F32))
        };
        let (plain, mut packed) = (make(), make());
        packed.pack(cuda_qmm::DEFAULT_FLOOR).unwrap();
        let Linear::Quantized(q) = &packed else { unreachable!() };
        if device::backend() != Backend::Cuda {
            assert!(q.tiles.is_none());
            return;
        }
        assert!(q.tiles.is_some() && q.weight.size() == 0);
        for rows in [3, 100] {
            let x = normal::<f32>(&[1, rows, 1024], None, None, None).unwrap().as_dtype(Dtype::Float16).unwrap();
            let got = packed.forward(&x).unwrap().as_dtype(Dtype::Float32).unwrap();
            let want = plain.forward(&x).unwrap().as_dtype(Dtype::Float32).unwrap();
            assert_eq!(got.shape(), &[1, rows, 4096]);
            let dense = dequantize(&weight, &scales, &biases, 32, 4).unwrap().as_dtype(Dtype::Float32).unwrap();
            let magnitude = matmul(x.as_dtype(Dtype::Float32).unwrap().abs().unwrap(), dense.abs().unwrap().transpose_axes(&[1, 0]).unwrap()).unwrap();
            let worst = got.subtract(&want).unwrap().abs().unwrap().divide(&magnitude).unwrap().max(None).unwrap().item_exact::<f32>();
            assert!(worst < 2f32.powi(-7), "{rows} rows: packed and MLX-layout products differ by {worst} of the terms' magnitude");
        }
    }

    /// The CUDA path past a few rows (dequantize, then a dense product) against
    /// MLX's quantized matmul, in f32 and f16, 4 and 8 bits.
    #[test]
    fn dequantized_product_matches_quantized_matmul() {
        for (bits, dtype) in [(4, Dtype::Float32), (8, Dtype::Float32), (4, Dtype::Float16)] {
            let w = normal::<f32>(&[48, 128], None, None, None).unwrap();
            let (weight, scales, biases) = quantize(&w, 32, bits).unwrap();
            let mut q = QuantizedWeight::new(weight, scales, biases, 32, bits, Activations::F32);
            q.scales.cast(dtype).unwrap();
            q.biases.cast(dtype).unwrap();
            let x = normal::<f32>(&[2, 9, 128], None, None, None).unwrap().as_dtype(dtype).unwrap();
            let got = q.dequantized_product(&x).unwrap().as_dtype(Dtype::Float32).unwrap();
            let want = mlx_rs::ops::quantized_matmul(&x, &q.weight, &q.scales, &q.biases, true, 32, bits).unwrap().as_dtype(Dtype::Float32).unwrap();
            assert_eq!(got.shape(), &[2, 9, 48]);
            // Each output is held to the rounding its own terms allow: a
            // fraction of sum_k |x_k w_k|, in f32. Relative to the largest
            // output instead, an f16 product whose terms cancel failed one run
            // in some hundreds (the two products sum in different orders).
            let w = dequantize(&q.weight, &q.scales, &q.biases, 32, bits).unwrap().as_dtype(Dtype::Float32).unwrap();
            let x = x.as_dtype(Dtype::Float32).unwrap();
            let magnitude = matmul(x.abs().unwrap(), w.abs().unwrap().transpose_axes(&[1, 0]).unwrap()).unwrap();
            let (got, want, magnitude) = (got.as_slice::<f32>(), want.as_slice::<f32>(), magnitude.as_slice::<f32>());
            let worst = got.iter().zip(want).zip(magnitude).fold(0.0f32, |m, ((a, b), s)| m.max((a - b).abs() / s));
            // Measured over 300 runs on the CPU: f32 at most 3.1e-7, f16 2.2e-3
            // (its inputs, the dequantized weights and the output each round
            // at 2^-11). On CUDA cuBLAS's f32 GEMM may round its inputs to
            // TF32, the same 2^-11.
            let tolerance = if dtype == Dtype::Float32 && device::backend() != Backend::Cuda { 1e-5 } else { 2f32.powi(-7) };
            assert!(worst < tolerance, "{bits}-bit {dtype:?}: an output differs by {worst} of the sum of its terms' magnitudes");
        }
    }
}
