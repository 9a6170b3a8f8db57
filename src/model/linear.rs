//! Linear layers: dense (dequantized at load) or in MLX's affine quantized layout.

use mlx_rs::{
    ops::{
        concatenate, dequantize,
        indexing::{Ellipsis, TryIndexOp},
        matmul, quantized_matmul,
    },
    Array, Dtype,
};

use crate::error::Result;

/// How weights are kept in memory. On CPU, MLX's quantized matmul is slow and
/// does not speed up with batch size, while f32 matmul goes through an
/// optimized BLAS; on Metal, quantized kernels win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantize every tensor to f32 at load.
    Dense,
    /// Keep quantized tensors as MLX affine-quantized arrays.
    Quantized,
}

impl WeightFormat {
    /// The best format for this platform; `MLX_SERVING_WEIGHTS=dense|quantized` overrides.
    pub fn for_platform() -> Self {
        match std::env::var("MLX_SERVING_WEIGHTS").as_deref() {
            Ok("dense") => WeightFormat::Dense,
            Ok("quantized") => WeightFormat::Quantized,
            _ if cfg!(target_os = "macos") => WeightFormat::Quantized,
            _ => WeightFormat::Dense,
        }
    }
}

/// A weight matrix `[out, in]`, applied as `x @ W^T`.
pub enum Linear {
    /// f32 `[out, in]`.
    Dense(Array),
    /// MLX's affine layout: `weight` uint32 `[out, in * bits / 32]`, `scales`
    /// and `biases` `[out, in / group_size]`. The loader sets `group_size` and
    /// `bits` from the block type's conversion (`load::blocks`).
    Quantized { weight: Array, scales: Array, biases: Array, group_size: i32, bits: i32 },
}

impl Linear {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Linear::Dense(w) => matmul(x, w.transpose_axes(&[1, 0])?)?,
            Linear::Quantized { weight, scales, biases, group_size, bits } => {
                quantized_matmul(x, weight, scales, biases, true, *group_size, *bits)?
            }
        })
    }

    /// Rows of the matrix (an embedding lookup), as f32.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Linear::Dense(w) => w.try_index(ids)?,
            Linear::Quantized { weight, scales, biases, group_size, bits } => dequantize(
                weight.try_index(ids)?,
                scales.try_index(ids)?,
                &biases.try_index(ids)?,
                *group_size,
                *bits,
            )?
            .as_dtype(Dtype::Float32)?,
        })
    }
}


/// Several linear layers applied to the same input (q/k/v, gate/up). Dense
/// ones are stacked into one matrix, so one matmul serves all of them.
pub enum Projections {
    Stacked { weight: Array, outputs: Vec<i32> },
    Separate(Vec<Linear>),
}

impl Projections {
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let dense: Vec<&Array> = parts
            .iter()
            .filter_map(|p| match p {
                Linear::Dense(w) => Some(w),
                Linear::Quantized { .. } => None,
            })
            .collect();
        if dense.len() != parts.len() {
            return Ok(Projections::Separate(parts));
        }
        let outputs = dense.iter().map(|w| w.dim(0)).collect();
        let weight = concatenate(&dense, 0)?;
        weight.eval()?;
        Ok(Projections::Stacked { weight, outputs })
    }

    /// One output per layer, in order.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            Projections::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            Projections::Stacked { weight, outputs } => {
                let y = matmul(x, weight.transpose_axes(&[1, 0])?)?;
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
