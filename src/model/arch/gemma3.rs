//! Gemma 3 (text). Against llama it differs in:
//! embeddings scaled by `sqrt(hidden)` (rounded to bf16 in Hugging Face's
//! and mlx-lm's implementations, not in llama.cpp's); RMS norms after attention and after
//! the MLP as well as before them; per-head RMS norms of queries and keys
//! before RoPE; a GeGLU MLP; an attention scale from
//! `attention.key_length`; and sliding-window attention on five layers of
//! every six (RoPE base 10000 there), full attention with
//! `rope.freq_base` on the sixth. Gemma's norms compute `x * (1 + w)`;
//! llama.cpp's converter stores `1 + w` in the GGUF, so every norm here is
//! a plain RMS norm with the stored weight (directories get their `+1`
//! at load).

use mlx_rs::{fast::rms_norm, Array, Dtype};

use super::{
    common::{attention, composed_prefill_attention, gated, heads, heads_first, refuse_unused_biases, split_gate_up, split_qkv, Gate},
    segments::{Segment, Segments},
    Architecture, HyperParameters, Logits, Model, Tensors,
};
use crate::{
    error::Result,
    model::{
        cache::{KvCache, Mask, Rope},
        linear::{Cast, Linear, Pack, Projections},
    },
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "gemma3",
    gguf_aliases: &[],
    model_types: &["gemma3_text"],
    gguf_rope_pairs: false,
    default_rope_theta: 1_000_000.0,
    hf_modules: &[
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
    hf_norms_plus_one: true,
    build: |w, hp| Ok(Model::Gemma3(build(w, hp)?)),
};

/// Every this many layers, one attends globally (the last of each group).
pub const GLOBAL_EVERY: usize = 6;
/// RoPE base of the sliding-window layers (not in the GGUF: llama.cpp and
/// mlx-lm fix it too).
pub const LOCAL_ROPE_BASE: f32 = 10_000.0;

#[derive(Debug, Clone)]
pub struct Gemma3Config {
    pub layers: usize,
    pub hidden: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    /// `attention.sliding_window`: how many positions a local layer sees
    /// (its own included).
    pub sliding_window: i32,
    pub rope_global: Rope,
    pub rope_local: Rope,
    /// Multiplies queries before attention: `key_length^-1/2`.
    pub attention_scale: f32,
    /// Multiplies the embeddings: `sqrt(hidden)`, or that rounded to bf16.
    pub embedding_scale: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl Gemma3Config {
    /// Whether layer `i` attends over the whole context.
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1) % GLOBAL_EVERY == 0
    }
}

pub struct Gemma3Block {
    pub attn_norm: Array,
    pub qkv: Projections,
    pub q_norm: Array,
    pub k_norm: Array,
    pub wo: Linear,
    pub post_attn_norm: Array,
    pub ffn_norm: Array,
    pub gate_up: Projections,
    pub down: Linear,
    pub post_ffn_norm: Array,
}

pub struct Gemma3 {
    pub config: Gemma3Config,
    /// Also the output projection (tied).
    pub embed: Linear,
    pub blocks: Vec<Gemma3Block>,
    pub norm: Array,
}

impl Gemma3 {
    /// As [`super::llama::Llama::forward`].
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache, logits: Logits) -> Result<Array> {
        let mut parts = [Segment { tokens: tokens.clone(), cache, logits: Some(logits) }];
        Ok(self.forward_segments(&mut parts)?.remove(0).expect("logits were asked for"))
    }

    /// As [`super::llama::Llama::forward_segments`].
    pub fn forward_segments(&self, parts: &mut [Segment]) -> Result<Vec<Option<Array>>> {
        let c = &self.config;
        let mut seg = Segments::new(parts);
        // Per segment: the global layers' mask and the local (sliding-window) layers'.
        let masks: Vec<(Mask, Mask)> = (0..seg.len())
            .map(|i| {
                let len = seg.shape(i).1;
                let explicit = composed_prefill_attention() && len > 1;
                let cache = seg.cache(i);
                (cache.mask(len, explicit), cache.window_mask(len, explicit, Some(c.sliding_window)))
            })
            .collect();
        let x = seg.embed(|tokens| self.embed.rows(tokens))?;
        let mut x = x.multiply(Array::from_f32(c.embedding_scale).as_dtype(x.dtype())?)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let global = c.is_global(layer);
            let rope: &Rope = if global { &c.rope_global } else { &c.rope_local };
            let [q, k, v]: [Array; 3] =
                block.qkv.forward_normed(&x, Some((&block.attn_norm, c.rms_eps)))?.try_into().expect("three projections");
            let attn = seg.each(&[&q, &k, &v], |i, cache, positions, qkv| {
                let q = rms_norm(&heads(&qkv[0], c.heads, c.head_dim)?, Some(&block.q_norm), c.rms_eps)?;
                let k = rms_norm(&heads(&qkv[1], c.kv_heads, c.head_dim)?, Some(&block.k_norm), c.rms_eps)?;
                let q = positions.rope(&heads_first(&q)?, rope)?;
                let k = positions.rope(&heads_first(&k)?, rope)?;
                let (keys, values) = cache.update(layer, &k, &heads_first(&heads(&qkv[2], c.kv_heads, c.head_dim)?)?)?;
                let mask = if global { &masks[i].0 } else { &masks[i].1 };
                attention(&q, &keys, &values, c.attention_scale, mask)
            })?;
            let out = rms_norm(&block.wo.forward(&attn)?, Some(&block.post_attn_norm), c.rms_eps)?;
            x = x.add(out)?;

            let act = gated(&block.gate_up, &x, (&block.ffn_norm, c.rms_eps), Gate::GeluTanh)?;
            let out = rms_norm(&block.down.forward(&act)?, Some(&block.post_ffn_norm), c.rms_eps)?;
            x = x.add(out)?;
        }
        let logits = match seg.finish(&x)? {
            Some(last) => {
                let last = rms_norm(&last, Some(&self.norm), c.rms_eps)?;
                let logits = self.embed.forward(&last)?;
                Some(logits.reshape(&seg.logits_shape(&last))?.as_dtype(Dtype::Float32)?)
            }
            None => None,
        };
        seg.split(logits)
    }

    /// Every matrix of the model.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = vec![&mut self.embed];
        for b in &mut self.blocks {
            all.extend(b.qkv.linears_mut());
            all.push(&mut b.wo);
            all.extend(b.gate_up.linears_mut());
            all.push(&mut b.down);
        }
        all
    }

    /// Every matrix of the model.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut all: Vec<&Linear> = vec![&self.embed];
        for b in &self.blocks {
            all.extend(b.qkv.linears());
            all.push(&b.wo);
            all.extend(b.gate_up.linears());
            all.push(&b.down);
        }
        all
    }

    /// Moves the projections (not the embedding) into the CUDA tile layout
    /// where it serves ([`Pack`]).
    pub fn pack(&mut self, floor: usize) -> Result<()> {
        for b in &mut self.blocks {
            b.qkv.pack(floor)?;
            b.wo.pack(floor)?;
            b.gate_up.pack(floor)?;
            b.down.pack(floor)?;
        }
        Ok(())
    }

    /// Converts the parameters to `dtype` ([`Cast`]).
    pub fn cast(&mut self, dtype: Dtype) -> Result<()> {
        self.embed.cast(dtype)?;
        self.norm.cast(dtype)?;
        for b in &mut self.blocks {
            for v in [&mut b.attn_norm, &mut b.q_norm, &mut b.k_norm, &mut b.post_attn_norm, &mut b.ffn_norm, &mut b.post_ffn_norm] {
                v.cast(dtype)?;
            }
            b.qkv.cast(dtype)?;
            b.wo.cast(dtype)?;
            b.gate_up.cast(dtype)?;
            b.down.cast(dtype)?;
        }
        Ok(())
    }
}

/// Builds Gemma 3's text model from `w`.
pub fn build(w: &mut dyn Tensors, hp: &HyperParameters) -> Result<Gemma3, String> {
    let hidden = hp.hidden;
    let (q_dim, _) = hp.attention_widths();
    let window = hp.sliding_window.ok_or("gemma3 needs a sliding window")?;
    refuse_unused_biases(w, hp.layers)?;
    let embed = w.linear("token_embd", hp.vocab_size as i32, hidden)?;
    let mut blocks = Vec::with_capacity(hp.layers);
    for i in 0..hp.layers {
        let p = format!("blk.{i}");
        blocks.push(Gemma3Block {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"), hidden)?,
            qkv: split_qkv(w, &p, hp)?,
            q_norm: w.vector(&format!("{p}.attn_q_norm.weight"), hp.head_dim)?,
            k_norm: w.vector(&format!("{p}.attn_k_norm.weight"), hp.head_dim)?,
            wo: w.linear(&format!("{p}.attn_output"), hidden, q_dim)?,
            post_attn_norm: w.vector(&format!("{p}.post_attention_norm.weight"), hidden)?,
            ffn_norm: w.vector(&format!("{p}.ffn_norm.weight"), hidden)?,
            gate_up: split_gate_up(w, &p, hp)?,
            down: w.linear(&format!("{p}.ffn_down"), hidden, hp.ffn)?,
            post_ffn_norm: w.vector(&format!("{p}.post_ffw_norm.weight"), hidden)?,
        });
    }
    let config = Gemma3Config {
        layers: hp.layers,
        hidden,
        heads: hp.heads,
        kv_heads: hp.kv_heads,
        head_dim: hp.head_dim,
        sliding_window: window,
        // Larger Gemma 3 models stretch the global layers' positions linearly.
        rope_global: hp.rope(hp.rope_base, true),
        rope_local: hp.rope(hp.rope_local_base, false),
        attention_scale: hp.attention_scale.unwrap_or(1.0 / (hp.head_dim as f32).sqrt()),
        embedding_scale: hp.embedding_scale.unwrap_or((hidden as f32).sqrt()),
        rms_eps: hp.rms_eps,
        context_length: hp.context_length,
        vocab_size: hp.vocab_size,
    };
    Ok(Gemma3 { config, embed, blocks, norm: w.vector("output_norm.weight", hidden)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let rope = Rope::new(4, 1.0, false);
        let c = Gemma3Config {
            layers: 18,
            hidden: 8,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            sliding_window: 4,
            rope_global: rope.clone(),
            rope_local: rope,
            attention_scale: 0.5,
            embedding_scale: 1.0,
            rms_eps: 1e-6,
            context_length: 64,
            vocab_size: 10,
        };
        let global: Vec<usize> = (0..c.layers).filter(|&i| c.is_global(i)).collect();
        assert_eq!(global, [5, 11, 17]);
    }
}
