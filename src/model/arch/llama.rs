//! The llama architecture (also SmolLM, Mistral-style GQA models, qwen2:
//! llama plus q/k/v biases and NeoX-style RoPE, and qwen3: NeoX RoPE and
//! per-head q/k norms), built from GGUF weights. A model is data plus
//! `forward`; it knows nothing of requests.

use mlx_rs::{fast::rms_norm, Array};

use super::common::{attention, composed_prefill_attention, heads, heads_first, last_position, merge_heads, swiglu};
use crate::{
    error::Result,
    model::{
        cache::{KvCache, Rope},
        linear::{Linear, Projections},
    },
};

/// Hyper-parameters read from GGUF metadata (`{arch}.*` keys).
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub layers: usize,
    pub hidden: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    pub rope: Rope,
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
    /// RMS norms of each query and key head before RoPE (qwen3), if any.
    pub qk_norm: Option<[Array; 2]>,
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
        let mask = cache.mask(len, composed_prefill_attention() && len > 1);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let mut x = self.embed.rows(tokens)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, Some(&block.attn_norm), c.rms_eps)?;
            let [mut q, mut k, mut v]: [Array; 3] = block.qkv.forward(&h)?.try_into().expect("three projections");
            if let Some([bq, bk, bv]) = &block.qkv_bias {
                (q, k, v) = (q.add(bq)?, k.add(bk)?, v.add(bv)?);
            }
            let (mut q, mut k) = (heads(&q, c.heads, c.head_dim)?, heads(&k, c.kv_heads, c.head_dim)?);
            if let Some([qn, kn]) = &block.qk_norm {
                (q, k) = (rms_norm(&q, Some(qn), c.rms_eps)?, rms_norm(&k, Some(kn), c.rms_eps)?);
            }
            let q = positions.rope(&heads_first(&q)?, &c.rope)?;
            let k = positions.rope(&heads_first(&k)?, &c.rope)?;
            let (keys, values) = cache.update(layer, &k, &heads_first(&heads(&v, c.kv_heads, c.head_dim)?)?)?;
            let attn = merge_heads(&attention(&q, &keys, &values, scale, &mask)?)?;
            x = x.add(block.wo.forward(&attn)?)?;

            let h = rms_norm(&x, Some(&block.ffn_norm), c.rms_eps)?;
            let [gate, up]: [Array; 2] = block.gate_up.forward(&h)?.try_into().expect("two projections");
            let act = swiglu(&gate, &up)?;
            x = x.add(block.down.forward(&act)?)?;
        }
        cache.advance(len);
        let last = rms_norm(&last_position(x)?, Some(&self.norm), c.rms_eps)?;
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let logits = head.forward(&last)?;
        Ok(logits.reshape(&[batch, -1])?)
    }
}
