//! The llama architecture (also SmolLM, Mistral-style GQA models, and qwen2:
//! llama plus q/k/v biases and NeoX-style RoPE), built from GGUF weights. A
//! model is data plus `forward`; it knows nothing of requests.

use mlx_rs::{
    fast::{rms_norm, scaled_dot_product_attention},
    ops::{indexing::TryIndexOp, matmul, power, select, sigmoid},
    Array,
};

use super::{
    cache::{KvCache, Mask},
    linear::{Linear, Projections},
};
use crate::error::Result;

/// Hyper-parameters read from GGUF metadata (`{arch}.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub hidden: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    pub rope_base: f32,
    /// RoPE over adjacent pairs (llama in GGUF) rather than halves (qwen2).
    pub rope_traditional: bool,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
}

pub struct Block {
    pub attn_norm: Array,
    /// Query, key and value projections.
    pub qkv: Projections,
    /// Their biases (qwen2), if any.
    pub qkv_bias: Option<[Array; 3]>,
    pub wo: Linear,
    pub ffn_norm: Array,
    /// Gate and up projections of the MLP.
    pub gate_up: Projections,
    pub down: Linear,
}

pub struct Llama {
    pub config: LlamaConfig,
    pub embed: Linear,
    pub blocks: Vec<Block>,
    pub norm: Array,
    /// `None` when the output projection is tied to the embedding.
    pub output: Option<Linear>,
}

impl Llama {
    /// Runs `tokens` ([rows, len]) through the model, appending to `cache`
    /// (one row per sequence), and returns the logits of each row's last
    /// position: [rows, vocab]. Several tokens per row are a single
    /// sequence's prefill; a batch decodes one token per row.
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        let (batch, len) = (tokens.dim(0), tokens.dim(1));
        debug_assert_eq!(batch as usize, cache.rows());
        let c = &self.config;
        let positions = cache.positions();
        let mask = cache.mask(len, COMPOSED_PREFILL_ATTENTION && len > 1);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let mut x = self.embed.rows(tokens)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, Some(&block.attn_norm), c.rms_eps)?;
            let split = |a: Array, heads: i32| a.reshape(&[batch, len, heads, c.head_dim])?.transpose_axes(&[0, 2, 1, 3]);
            let [mut q, mut k, mut v]: [Array; 3] = block.qkv.forward(&h)?.try_into().expect("three projections");
            if let Some([bq, bk, bv]) = &block.qkv_bias {
                (q, k, v) = (q.add(bq)?, k.add(bk)?, v.add(bv)?);
            }
            let q = positions.rope(&split(q, c.heads)?, c.head_dim, c.rope_base, c.rope_traditional)?;
            let k = positions.rope(&split(k, c.kv_heads)?, c.head_dim, c.rope_base, c.rope_traditional)?;
            let (keys, values) = cache.update(layer, &k, &split(v, c.kv_heads)?)?;
            let attn = attention(&q, &keys, &values, scale, &mask)?;
            let attn = attn.transpose_axes(&[0, 2, 1, 3])?.reshape(&[batch, len, c.heads * c.head_dim])?;
            x = x.add(block.wo.forward(&attn)?)?;

            let h = rms_norm(&x, Some(&block.ffn_norm), c.rms_eps)?;
            let [gate, up]: [Array; 2] = block.gate_up.forward(&h)?.try_into().expect("two projections");
            let act = swiglu(&gate, &up)?;
            x = x.add(block.down.forward(&act)?)?;
        }
        cache.advance(len);
        let last = if len == 1 { x } else { x.try_index((.., len - 1..len, ..))? };
        let last = rms_norm(&last, Some(&self.norm), c.rms_eps)?;
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let logits = head.forward(&last)?;
        Ok(logits.reshape(&[batch, -1])?)
    }
}

/// `silu(gate) * up`. Off Apple, MLX's CPU `exp` (inside `sigmoid`) is a
/// scalar polynomial that calls libm's `fmaf` per term, about 3x slower than
/// `pow`; so there `e^-g` is computed as `2^(-g * log2 e)`, which cut the
/// MLP's element-wise time by half in prefill (`examples/steps.rs`).
fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    if cfg!(target_os = "macos") {
        return Ok(gate.multiply(sigmoid(gate)?)?.multiply(up)?);
    }
    let neg_exp = power(Array::from_f32(2.0), gate.multiply(Array::from_f32(-std::f32::consts::LOG2_E))?)?;
    Ok(gate.multiply(up)?.divide(neg_exp.add(Array::from_f32(1.0))?)?)
}

/// Whether prefill attention is composed here rather than by MLX's
/// `scaled_dot_product_attention`; see [`attention`].
const COMPOSED_PREFILL_ATTENTION: bool = !cfg!(target_os = "macos");

/// Attention of `q` [rows, heads, len, head_dim] over `keys`/`values`
/// [rows, kv_heads, columns, head_dim]. On CPU, MLX composes attention from
/// matmuls and a softmax whose `exp` is the slow scalar one (see [`swiglu`]);
/// for prefill, where the scores are large, the softmax here uses `2^x`.
fn attention(q: &Array, keys: &Array, values: &Array, scale: f32, mask: &Mask) -> Result<Array> {
    let (rows, heads, len, dim) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let allowed = match mask {
        Mask::Rows(allowed) if COMPOSED_PREFILL_ATTENTION && len > 1 => allowed,
        _ => return Ok(scaled_dot_product_attention(q, keys, values, scale, mask.as_sdpa(), None)?),
    };
    let (kv_heads, columns) = (keys.dim(1), keys.dim(2));
    // Query heads sharing a key/value head are grouped: [rows, kv_heads, group, len, dim].
    let q = q.multiply(Array::from_f32(scale))?.reshape(&[rows, kv_heads, heads / kv_heads, len, dim])?;
    let keys = keys.expand_dims(2)?;
    let values = values.expand_dims(2)?;
    let scores = matmul(&q, keys.swap_axes(-1, -2)?)?;
    let allowed = allowed.reshape(&[rows, 1, 1, len, columns])?;
    let scores = select(&allowed, &scores, Array::from_f32(f32::NEG_INFINITY))?;
    let shifted = scores.subtract(scores.max_axis(-1, true)?)?;
    let weights = power(Array::from_f32(2.0), shifted.multiply(Array::from_f32(std::f32::consts::LOG2_E))?)?;
    let weights = weights.divide(weights.sum_axis(-1, true)?)?;
    Ok(matmul(&weights, &values)?.reshape(&[rows, heads, len, dim])?)
}
