//! Linear layers over GGUF weights: dense (dequantized at load) or quantized
//! (kept 4-bit / 8-bit in memory, multiplied by [`crate::kernels`] on CPU, by
//! MLX's own kernels on a GPU).

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
    device,
    error::Result,
    kernels::{quantized_matmul, Activations, Fuse, Isa},
};

/// The dtype activations enter quantized matmuls in on a GPU: f32 by default,
/// as everywhere; `MLX_SERVING_GPU_MATMUL=bf16|f16` tries 16 bits (MLX's CUDA
/// quantized matmul takes its naive kernel for f32 inputs). Experimental: on
/// an H100 (2026-11-26) bf16 changed SmolLM2's greedy answer from the first
/// token and doubled the kernels' first-use compile time (44 s); its speed was
/// not measured. `None` on the CPU, where our kernels take f32.
fn gpu_matmul_dtype() -> Option<Dtype> {
    static DTYPE: OnceLock<Option<Dtype>> = OnceLock::new();
    *DTYPE.get_or_init(|| {
        if !device::backend().is_gpu() {
            return None;
        }
        match std::env::var("MLX_SERVING_GPU_MATMUL").as_deref() {
            Ok("bf16") => Some(Dtype::Bfloat16),
            Ok("f16") => Some(Dtype::Float16),
            _ => None,
        }
    })
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

/// An affine-quantized matrix `[out, in]` in MLX's layout.
pub struct QuantizedWeight {
    pub weight: Array,
    pub scales: Array,
    pub biases: Array,
    pub group_size: i32,
    pub bits: i32,
    pub activations: Activations,
}

impl QuantizedWeight {
    /// A quantized matrix as the loaders read it (scales and biases in f32). On a
    /// GPU with `MLX_SERVING_GPU_MATMUL` set, scales and biases are kept in that
    /// dtype ([`gpu_matmul_dtype`]).
    pub fn new(weight: Array, scales: Array, biases: Array, group_size: i32, bits: i32, activations: Activations) -> Result<Self> {
        let (scales, biases) = match gpu_matmul_dtype() {
            Some(dtype) => {
                let (s, b) = (scales.as_dtype(dtype)?, biases.as_dtype(dtype)?);
                s.eval()?;
                b.eval()?;
                (s, b)
            }
            None => (scales, biases),
        };
        Ok(QuantizedWeight { weight, scales, biases, group_size, bits, activations })
    }

    fn forward(&self, x: &Array, fuse: Fuse) -> Result<Array> {
        let q = self;
        if let Some(dtype) = gpu_matmul_dtype().filter(|&d| q.scales.dtype() == d) {
            // MLX's kernel in 16 bits; the rest of the model stays f32.
            return composed(x, fuse, |x| {
                let y = mlx_rs::ops::quantized_matmul(&x.as_dtype(dtype)?, &q.weight, &q.scales, &q.biases, true, q.group_size, q.bits)?;
                Ok(y.as_dtype(Dtype::Float32)?)
            });
        }
        quantized_matmul(x, &q.weight, &q.scales, &q.biases, q.group_size, q.bits, q.activations, Isa::Auto, fuse)
    }

    /// Several matrices of one kind and width stacked along the output axis.
    fn stack(parts: &[&QuantizedWeight]) -> Result<Option<QuantizedWeight>> {
        let first = parts[0];
        if parts.iter().any(|p| p.bits != first.bits || p.group_size != first.group_size || p.weight.dim(1) != first.weight.dim(1)) {
            return Ok(None);
        }
        let cat = |f: fn(&QuantizedWeight) -> &Array| -> Result<Array> {
            let a = concatenate(&parts.iter().map(|p| f(p)).collect::<Vec<_>>(), 0)?;
            a.eval()?;
            Ok(a)
        };
        Ok(Some(QuantizedWeight {
            weight: cat(|p| &p.weight)?,
            scales: cat(|p| &p.scales)?,
            biases: cat(|p| &p.biases)?,
            group_size: first.group_size,
            bits: first.bits,
            activations: first.activations,
        }))
    }
}

/// A weight matrix `[out, in]`, applied as `x @ W^T`.
pub enum Linear {
    /// f32 `[out, in]`.
    Dense(Array),
    /// MLX's affine layout; the loader sets `group_size` and `bits` from the
    /// block type's conversion (`load::blocks`).
    Quantized(QuantizedWeight),
}

impl Linear {
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

    /// Rows of the matrix (an embedding lookup), as f32.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Linear::Dense(w) => w.try_index(ids)?,
            Linear::Quantized(q) => dequantize(
                q.weight.try_index(ids)?,
                q.scales.try_index(ids)?,
                &q.biases.try_index(ids)?,
                q.group_size,
                q.bits,
            )?
            .as_dtype(Dtype::Float32)?,
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
                Linear::Quantized(q) => q.weight.dim(0),
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
