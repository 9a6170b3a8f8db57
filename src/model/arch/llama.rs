//! The llama architecture (also SmolLM), and the forward pass of the
//! architectures that are llama with other tensors: mistral, qwen2 (q/k/v
//! biases), qwen3 (per-head q/k norms), phi3 (fused projections). A model is
//! data plus `forward`; it knows nothing of requests.

use mlx_rs::{fast::rms_norm, Array, Dtype};

use super::{
    common::{attention, composed_prefill_attention, gated, heads, heads_first, refuse_unused_biases, split_gate_up, split_qkv, Gate},
    segments::{Segment, Segments},
    Architecture, HyperParameters, Logits, Model, Tensors,
};
use crate::{
    error::Result,
    kernels::Fuse,
    model::{
        cache::{KvCache, Mask, Rope},
        linear::{Cast, Linear, Pack, Projections},
    },
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "llama",
    gguf_aliases: &["smollm"],
    model_types: &["llama"],
    gguf_rope_pairs: true,
    default_rope_theta: 10_000.0,
    hf_modules: &[],
    hf_norms_plus_one: false,
    build: |w, hp| Ok(Model::Llama(build(w, hp, &Layout::default())?)),
};

/// How a llama-family checkpoint lays out its attention and MLP tensors.
#[derive(Debug, Default)]
pub struct Layout {
    /// Q, k and v in one tensor `attn_qkv` (rows in that order), gate and up
    /// in one `ffn_up` (gate rows first): phi3.
    pub fused: bool,
    /// Per-head RMS norms of queries and keys before RoPE: qwen3.
    pub qk_norm: bool,
}

/// Builds a llama-family model of `layout` from `w`. Q/k/v biases are taken
/// where the checkpoint has them (qwen2's).
pub fn build(w: &mut dyn Tensors, hp: &HyperParameters, layout: &Layout) -> Result<Llama, String> {
    let (hidden, ffn) = (hp.hidden, hp.ffn);
    let (q_dim, kv_dim) = hp.attention_widths();
    refuse_unused_biases(w, hp.layers)?;
    let embed = w.linear("token_embd", hp.vocab_size as i32, hidden)?;
    let output = if w.has("output.weight") { Some(w.linear("output", hp.vocab_size as i32, hidden)?) } else { None };
    let mut blocks = Vec::with_capacity(hp.layers);
    for i in 0..hp.layers {
        let p = format!("blk.{i}");
        blocks.push(Block {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"), hidden)?,
            qkv: match layout.fused {
                true => Projections::Stacked { weight: w.linear(&format!("{p}.attn_qkv"), q_dim + 2 * kv_dim, hidden)?, outputs: vec![q_dim, kv_dim, kv_dim] },
                false => split_qkv(w, &p, hp)?,
            },
            qkv_bias: match w.has(&format!("{p}.attn_q.bias")) {
                false => None,
                true => Some([
                    w.vector(&format!("{p}.attn_q.bias"), q_dim)?,
                    w.vector(&format!("{p}.attn_k.bias"), kv_dim)?,
                    w.vector(&format!("{p}.attn_v.bias"), kv_dim)?,
                ]),
            },
            qk_norm: match layout.qk_norm {
                true => Some([w.vector(&format!("{p}.attn_q_norm.weight"), hp.head_dim)?, w.vector(&format!("{p}.attn_k_norm.weight"), hp.head_dim)?]),
                false => None,
            },
            wo: w.linear(&format!("{p}.attn_output"), hidden, q_dim)?,
            ffn_norm: w.vector(&format!("{p}.ffn_norm.weight"), hidden)?,
            gate_up: match layout.fused {
                true => Projections::Stacked { weight: w.linear(&format!("{p}.ffn_up"), 2 * ffn, hidden)?, outputs: vec![ffn, ffn] },
                false => split_gate_up(w, &p, hp)?,
            },
            down: w.linear(&format!("{p}.ffn_down"), hidden, ffn)?,
        });
    }
    let config = LlamaConfig {
        layers: hp.layers,
        hidden,
        heads: hp.heads,
        kv_heads: hp.kv_heads,
        head_dim: hp.head_dim,
        rope: hp.rope(hp.rope_base, true),
        rms_eps: hp.rms_eps,
        context_length: hp.context_length,
        vocab_size: hp.vocab_size,
    };
    Ok(Llama { config, embed, blocks, norm: w.vector("output_norm.weight", hidden)?, output })
}

/// Hyper-parameters of the forward pass.
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
    /// (one row per sequence), and returns the logits `logits` asks for:
    /// each row's last position [rows, vocab], or every position [rows,
    /// len, vocab]. Several tokens per row are a single sequence's prefill
    /// (or drafted tokens to verify); a batch decodes one token per row.
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache, logits: Logits) -> Result<Array> {
        let mut parts = [Segment { tokens: tokens.clone(), cache, logits: Some(logits) }];
        Ok(self.forward_segments(&mut parts)?.remove(0).expect("logits were asked for"))
    }

    /// Runs several segments' tokens through the model in one pass, each
    /// appended to its own cache ([`Segments`]); the logits of each row's last
    /// position [rows, vocab] of each segment that asks for them.
    pub fn forward_segments(&self, parts: &mut [Segment]) -> Result<Vec<Option<Array>>> {
        let c = &self.config;
        let mut seg = Segments::new(parts);
        let masks: Vec<Mask> = (0..seg.len())
            .map(|i| {
                let len = seg.shape(i).1;
                seg.cache(i).mask(len, composed_prefill_attention() && len > 1)
            })
            .collect();
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let mut x = seg.embed(|tokens| self.embed.rows(tokens))?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let [mut q, mut k, mut v]: [Array; 3] =
                block.qkv.forward_normed(&x, Some((&block.attn_norm, c.rms_eps)))?.try_into().expect("three projections");
            if let Some([bq, bk, bv]) = &block.qkv_bias {
                (q, k, v) = (q.add(bq)?, k.add(bk)?, v.add(bv)?);
            }
            let attn = seg.each(&[&q, &k, &v], |i, cache, positions, qkv| {
                let (mut q, mut k) = (heads(&qkv[0], c.heads, c.head_dim)?, heads(&qkv[1], c.kv_heads, c.head_dim)?);
                if let Some([qn, kn]) = &block.qk_norm {
                    (q, k) = (rms_norm(&q, Some(qn), c.rms_eps)?, rms_norm(&k, Some(kn), c.rms_eps)?);
                }
                let q = positions.rope(&heads_first(&q)?, &c.rope)?;
                let k = positions.rope(&heads_first(&k)?, &c.rope)?;
                let (keys, values) = cache.update(layer, &k, &heads_first(&heads(&qkv[2], c.kv_heads, c.head_dim)?)?)?;
                attention(&q, &keys, &values, scale, &masks[i])
            })?;
            // The residual adds and the norms are parts of the matmuls' ops (`Fuse`).
            x = block.wo.forward_fused(&attn, Fuse { norm: None, add: Some(&x) })?;
            let act = gated(&block.gate_up, &x, (&block.ffn_norm, c.rms_eps), Gate::Silu)?;
            x = block.down.forward_fused(&act, Fuse { norm: None, add: Some(&x) })?;
        }
        let logits = match seg.finish(&x)? {
            Some(last) => {
                let last = rms_norm(&last, Some(&self.norm), c.rms_eps)?;
                let logits = self.output.as_ref().unwrap_or(&self.embed).forward(&last)?;
                Some(logits.reshape(&seg.logits_shape(&last))?.as_dtype(Dtype::Float32)?)
            }
            None => None,
        };
        seg.split(logits)
    }

    /// Every matrix of the model.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = vec![&mut self.embed];
        all.extend(self.output.as_mut());
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
        all.extend(self.output.as_ref());
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
        self.output.pack(floor)?;
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
        self.output.cast(dtype)?;
        self.norm.cast(dtype)?;
        for b in &mut self.blocks {
            b.attn_norm.cast(dtype)?;
            b.qkv.cast(dtype)?;
            b.qkv_bias.cast(dtype)?;
            b.qk_norm.cast(dtype)?;
            b.wo.cast(dtype)?;
            b.ffn_norm.cast(dtype)?;
            b.gate_up.cast(dtype)?;
            b.down.cast(dtype)?;
        }
        Ok(())
    }
}
