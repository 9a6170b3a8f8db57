//! Building blocks the architectures share: attention over the cache, the
//! gated MLP activations, head reshaping and the last position's hidden
//! state; and for the builders, the common tensor layouts and names.

use mlx_rs::{
    fast::scaled_dot_product_attention,
    ops::{
        indexing::{Ellipsis, TryIndexOp},
        matmul, power, select, sigmoid, softmax_axis,
    },
    Array,
};

use super::{HyperParameters, Tensors};
pub use crate::kernels::Gate;
use crate::{
    device,
    error::{Error, Result},
    kernels::{self, Fuse},
    model::{cache::Mask, linear::Projections},
};

/// The gated MLP's activation of `rms_norm(x)` (`norm`: weight and epsilon)
/// through `gate_up`: `act(gate) * up`. On an x86 CPU the norm is part of the
/// matmul's op and one op of ours ([`crate::kernels::glu`]) reads gate and up
/// from the stacked projection's output; otherwise the activation is composed
/// ([`swiglu`], [`geglu`]).
pub fn gated(gate_up: &Projections, x: &Array, norm: (&Array, f32), gate: Gate) -> Result<Array> {
    let (g, u) = match gate_up {
        Projections::Stacked { weight, outputs } if outputs.len() == 2 && outputs[0] == outputs[1] => {
            let y = weight.forward_fused(x, Fuse { norm: Some(norm), add: None })?;
            if let Some(out) = kernels::glu(&y, None, gate)? {
                return Ok(out);
            }
            let n = outputs[0];
            (y.try_index((Ellipsis, ..n))?, y.try_index((Ellipsis, n..))?)
        }
        _ => {
            let [g, u]: [Array; 2] = gate_up.forward_normed(x, Some(norm))?.try_into().map_err(|_| Error::internal("gate/up: two projections expected"))?;
            if let Some(out) = kernels::glu(&g, Some(&u), gate)? {
                return Ok(out);
            }
            (g, u)
        }
    };
    match gate {
        Gate::Silu => swiglu(&g, &u),
        Gate::GeluTanh => geglu(&g, &u),
    }
}

/// `silu(gate) * up`. On MLX's CPU backend off Apple, `exp` (inside
/// `sigmoid`) is a scalar polynomial that calls libm's `fmaf` per term, about
/// 3x slower than `pow`; so there `e^-g` is computed as `2^(-g * log2 e)`,
/// which cut the MLP's element-wise time by half in prefill
/// (`examples/steps.rs`). A GPU (CUDA, Metal) takes MLX's own form.
fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    if native_exp() {
        return Ok(gate.multiply(sigmoid(gate)?)?.multiply(up)?);
    }
    let neg_exp = power(Array::from_f32(2.0), gate.multiply(Array::from_f32(-std::f32::consts::LOG2_E))?)?;
    Ok(gate.multiply(up)?.divide(neg_exp.add(Array::from_f32(1.0))?)?)
}

/// `gelu(gate) * up` with GELU's tanh approximation (GeGLU: Gemma). Since
/// `(1 + tanh(z)) / 2 = sigmoid(2z)`, this is `gate * sigmoid(2z) * up` with
/// `z = sqrt(2/pi) * (g + 0.044715 g^3)`; the sigmoid's exponential is taken
/// as a power of two as in [`swiglu`].
fn geglu(gate: &Array, up: &Array) -> Result<Array> {
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    let cubic = gate.multiply(gate)?.multiply(gate)?.multiply(Array::from_f32(0.044715))?;
    let z2 = gate.add(cubic)?.multiply(Array::from_f32(TWO_SQRT_2_OVER_PI))?;
    let neg_exp = if native_exp() {
        z2.negative()?.exp()?
    } else {
        power(Array::from_f32(2.0), z2.multiply(Array::from_f32(-std::f32::consts::LOG2_E))?)?
    };
    Ok(gate.multiply(up)?.divide(neg_exp.add(Array::from_f32(1.0))?)?)
}

/// Whether MLX's own `exp` (and `sigmoid`) serve: on Apple and on a GPU.
fn native_exp() -> bool {
    cfg!(target_os = "macos") || device::backend().is_gpu()
}

/// [rows, len, heads * dim] → [rows, len, heads, dim] (before per-head norms).
pub fn heads(x: &Array, heads: i32, dim: i32) -> Result<Array> {
    Ok(x.reshape(&[x.dim(0), x.dim(1), heads, dim])?)
}

/// [rows, len, heads, dim] → [rows, heads, len, dim], the layout of attention and the cache.
pub fn heads_first(x: &Array) -> Result<Array> {
    Ok(x.transpose_axes(&[0, 2, 1, 3])?)
}

/// Attention's output [rows, heads, len, dim] back to [rows, len, heads * dim].
fn merge_heads(x: &Array) -> Result<Array> {
    let (rows, heads, len, dim) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    Ok(x.transpose_axes(&[0, 2, 1, 3])?.reshape(&[rows, len, heads * dim])?)
}

/// Whether prefill attention is composed here rather than by MLX's
/// `scaled_dot_product_attention`: on MLX's CPU backend off Apple, and on
/// CUDA; see [`attention`].
pub fn composed_prefill_attention() -> bool {
    !native_exp() || device::backend() == device::Backend::Cuda
}

/// Attention of `q` [rows, heads, len, head_dim] over `keys`/`values`
/// [rows, kv_heads, columns, head_dim], with the heads merged: [rows, len,
/// heads * head_dim]. On an x86 CPU our kernel serves it
/// ([`crate::kernels::attention`]). Otherwise MLX's `scaled_dot_product_attention`,
/// except for prefill off Apple, composed here from matmuls and a softmax:
/// - on MLX's CPU backend, MLX composes it too, with a softmax whose `exp` is
///   the slow scalar one (see [`swiglu`]); here `2^x` serves;
/// - on CUDA, MLX's prefill attention is cuDNN's, which builds a graph for
///   each new shape (queries x keys: every prompt length, every chunk of a
///   long prompt), about 80 ms each on an H200, and keeps 256: a 4-token
///   chunk cost as much as a 2000-token prompt, and a long prompt prefilled
///   beside a running stream took 100 s. Composed, the shapes only choose
///   cuBLAS kernels. The softmax is MLX's precise one (f32 inside), as in
///   MLX's own composed attention.
pub fn attention(q: &Array, keys: &Array, values: &Array, scale: f32, mask: &Mask) -> Result<Array> {
    let (allowed, causal) = match mask {
        Mask::None => (None, false),
        Mask::Causal => (None, true),
        Mask::Rows(allowed) => (Some(allowed), false),
    };
    if let Some(out) = crate::kernels::attention(q, keys, values, allowed, causal, scale)? {
        return Ok(out);
    }
    let allowed = match mask {
        Mask::Rows(allowed) if composed_prefill_attention() && q.dim(2) > 1 => allowed,
        _ => return merge_heads(&scaled_dot_product_attention(q, keys, values, scale, mask.as_sdpa(), None)?),
    };
    composed_attention(q, keys, values, scale, allowed, native_exp())
}

/// Attention from matmuls and a softmax, `allowed` [rows, 1, len, columns]
/// masking the scores; in `q`'s dtype throughout (the scalars too, so an f16
/// model's activations stay f16). `native_exp`: MLX's precise softmax, else
/// one with `2^x`.
fn composed_attention(q: &Array, keys: &Array, values: &Array, scale: f32, allowed: &Array, native_exp: bool) -> Result<Array> {
    let (rows, heads, len, dim) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let (kv_heads, columns) = (keys.dim(1), keys.dim(2));
    let scalar = |x: f32| Array::from_f32(x).as_dtype(q.dtype());
    // Query heads sharing a key/value head are grouped: [rows, kv_heads, group, len, dim].
    let q = q.multiply(scalar(scale)?)?.reshape(&[rows, kv_heads, heads / kv_heads, len, dim])?;
    let keys = keys.expand_dims(2)?;
    let values = values.expand_dims(2)?;
    let scores = matmul(&q, keys.swap_axes(-1, -2)?)?;
    let allowed = allowed.reshape(&[rows, 1, 1, len, columns])?;
    let scores = select(&allowed, &scores, scalar(f32::NEG_INFINITY)?)?;
    let weights = if native_exp {
        softmax_axis(&scores, -1, true)?
    } else {
        let shifted = scores.subtract(scores.max_axis(-1, true)?)?;
        let weights = power(scalar(2.0)?, shifted.multiply(scalar(std::f32::consts::LOG2_E)?)?)?;
        weights.divide(weights.sum_axis(-1, true)?)?
    };
    merge_heads(&matmul(&weights, &values)?.reshape(&[rows, heads, len, dim])?)
}

/// The Hugging Face module of GGUF's layer part `part` (`blk.N.<part>`) as
/// most architectures name it; [`super::Architecture::hf_modules`] lists
/// an architecture's exceptions.
pub fn hf_module(part: &str) -> Option<&'static str> {
    Some(match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    })
}

/// Query, key and value projections of layer prefix `p` (`blk.N`), as three tensors.
pub fn split_qkv(w: &mut dyn Tensors, p: &str, hp: &HyperParameters) -> Result<Projections, String> {
    let (q_dim, kv_dim) = hp.attention_widths();
    Projections::new(vec![
        w.linear(&format!("{p}.attn_q"), q_dim, hp.hidden)?,
        w.linear(&format!("{p}.attn_k"), kv_dim, hp.hidden)?,
        w.linear(&format!("{p}.attn_v"), kv_dim, hp.hidden)?,
    ])
    .map_err(|e| e.to_string())
}

/// Gate and up projections of the MLP of layer prefix `p`, as two tensors.
pub fn split_gate_up(w: &mut dyn Tensors, p: &str, hp: &HyperParameters) -> Result<Projections, String> {
    Projections::new(vec![w.linear(&format!("{p}.ffn_gate"), hp.ffn, hp.hidden)?, w.linear(&format!("{p}.ffn_up"), hp.ffn, hp.hidden)?])
        .map_err(|e| e.to_string())
}

/// Refuses biases that no builder applies (on the attention output or the
/// MLP: llama's `attention_bias` / `mlp_bias`), rather than dropping them.
pub fn refuse_unused_biases(w: &dyn Tensors, layers: usize) -> Result<(), String> {
    for i in 0..layers {
        for part in ["attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            let name = format!("blk.{i}.{part}.bias");
            if w.has(&name) {
                return Err(format!("tensor {name}: biases on the attention output and the MLP are not supported"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::{fast::ScaledDotProductAttentionMask, random, Dtype};

    #[test]
    fn composed_attention_matches_mlx_and_keeps_the_dtype() {
        // A prefill chunk of 5 queries after 7 columns of context, grouped heads,
        // two rows with the second padded by 3 columns.
        let (rows, heads, kv_heads, len, columns, dim) = (2, 6, 2, 5, 12, 16);
        let normal = |shape: &[i32], seed: u64| random::normal::<f32>(shape, None, None, Some(&random::key(seed).unwrap())).unwrap();
        let q = normal(&[rows, heads, len, dim], 7);
        let k = normal(&[rows, kv_heads, columns, dim], 8);
        let v = normal(&[rows, kv_heads, columns, dim], 9);
        let allowed: Vec<bool> = [0, 3]
            .iter()
            .flat_map(|&pad| (0..len).flat_map(move |i| (0..columns).map(move |c| c == 7 + i || (c <= 7 + i && c >= pad))))
            .collect();
        let allowed = Array::from_slice(&allowed, &[rows, 1, len, columns]);
        let scale = 0.25;
        let reference = merge_heads(
            &scaled_dot_product_attention(&q, &k, &v, scale, Some(ScaledDotProductAttentionMask::Array(&allowed)), None).unwrap(),
        )
        .unwrap();
        for (dtype, tolerance) in [(Dtype::Float32, 1e-5), (Dtype::Float16, 2e-2), (Dtype::Bfloat16, 5e-2)] {
            for native in [true, false] {
                let cast = |a: &Array| a.as_dtype(dtype).unwrap();
                let out = composed_attention(&cast(&q), &cast(&k), &cast(&v), scale, &allowed, native).unwrap();
                assert_eq!(out.dtype(), dtype, "native softmax {native}");
                assert_eq!(out.shape(), reference.shape());
                let out = out.as_dtype(Dtype::Float32).unwrap();
                let error = out.as_slice::<f32>().iter().zip(reference.as_slice::<f32>()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(error < tolerance, "{dtype:?}, native softmax {native}: {error}");
            }
        }
    }
}
