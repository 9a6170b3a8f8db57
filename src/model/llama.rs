//! The llama architecture (also SmolLM, Mistral-style GQA models), built from
//! GGUF weights. A model is data plus `forward`; it knows nothing of requests.

use mlx_rs::{
    fast::{rms_norm, rope, scaled_dot_product_attention, ScaledDotProductAttentionMask},
    ops::{concatenate, indexing::TryIndexOp, sigmoid},
    Array,
};

use super::{
    cache::KvCache,
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
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
}

pub struct Block {
    pub attn_norm: Array,
    /// Query, key and value projections.
    pub qkv: Projections,
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
    /// Runs `tokens` ([batch, len], one row per sequence, all of equal length)
    /// through the model, appending to each sequence's cache, and returns the
    /// logits of each row's last position: [batch, vocab].
    pub fn forward(&self, tokens: &Array, caches: &mut [&mut KvCache]) -> Result<Array> {
        let (batch, len) = (tokens.dim(0), tokens.dim(1));
        debug_assert_eq!(batch as usize, caches.len());
        let c = &self.config;
        let mut x = self.embed.rows(tokens)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, Some(&block.attn_norm), c.rms_eps)?;
            let split = |a: Array, heads: i32| a.reshape(&[batch, len, heads, c.head_dim])?.transpose_axes(&[0, 2, 1, 3]);
            let [q, k, v]: [Array; 3] = block.qkv.forward(&h)?.try_into().expect("three projections");
            let q = split(q, c.heads)?;
            let k = split(k, c.kv_heads)?;
            let v = split(v, c.kv_heads)?;
            let mut outs = Vec::with_capacity(caches.len());
            for (i, cache) in caches.iter_mut().enumerate() {
                let row = i as i32..i as i32 + 1;
                let (qi, ki, vi) = if batch == 1 {
                    (q.clone(), k.clone(), v.clone())
                } else {
                    (q.try_index(row.clone())?, k.try_index(row.clone())?, v.try_index(row)?)
                };
                let offset = cache.offset();
                let qi = rope(&qi, c.head_dim, true, c.rope_base, 1.0, offset, None)?;
                let ki = rope(&ki, c.head_dim, true, c.rope_base, 1.0, offset, None)?;
                let (keys, values) = cache.update(layer, &ki, &vi)?;
                let scale = 1.0 / (c.head_dim as f32).sqrt();
                let mask = (len > 1).then_some(ScaledDotProductAttentionMask::Causal);
                outs.push(scaled_dot_product_attention(&qi, &keys, &values, scale, mask, None)?);
            }
            let attn = if outs.len() == 1 { outs.pop().unwrap() } else { concatenate(&outs, 0)? };
            let attn = attn.transpose_axes(&[0, 2, 1, 3])?.reshape(&[batch, len, c.heads * c.head_dim])?;
            x = x.add(block.wo.forward(&attn)?)?;

            let h = rms_norm(&x, Some(&block.ffn_norm), c.rms_eps)?;
            let [gate, up]: [Array; 2] = block.gate_up.forward(&h)?.try_into().expect("two projections");
            let act = gate.multiply(sigmoid(&gate)?)?.multiply(up)?;
            x = x.add(block.down.forward(&act)?)?;
        }
        for cache in caches.iter_mut() {
            cache.advance(len);
        }
        let last = if len == 1 { x } else { x.try_index((.., len - 1..len, ..))? };
        let last = rms_norm(&last, Some(&self.norm), c.rms_eps)?;
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let logits = head.forward(&last)?;
        Ok(logits.reshape(&[batch, -1])?)
    }
}
