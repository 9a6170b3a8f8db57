//! The architectures, one file each, over shared building blocks
//! ([`common`]). [`Model`] is what the engine runs.
//!
//! Each architecture file holds what is particular to it: which tensors it
//! reads and how they are laid out (biases, per-head norms, fused
//! projections), the defaults its config.json leaves out, and how its names
//! differ from the common Hugging Face mapping. [`llama`] and [`gemma3`]
//! hold the two forward passes; qwen2, qwen3, mistral and phi3 are llama's
//! forward with their own tensors. Weights come through [`Tensors`] under
//! GGUF's names, whichever format the file is ([`crate::model::load`]).

pub mod bert;
pub mod common;
pub mod gemma3;
mod gemma3_encoder;
pub mod llama;
pub mod mistral;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod segments;

use mlx_rs::Array;

use super::{
    cache::{KvCache, Rope},
    linear::Linear,
};
use crate::error::Result;

/// A loaded network of any supported architecture.
pub enum Model {
    /// llama, mistral, smollm, qwen2, qwen3, phi3: llama's forward pass.
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Each row's last position: [rows, vocab] (prefill, decode).
    Last,
    /// Every position: [rows, len, vocab] (verifying drafted tokens).
    Every,
}

impl Model {
    /// Runs `tokens` ([rows, len]) through the model, appending to `cache`
    /// (one row per sequence), and returns the logits of each row's last
    /// position: [rows, vocab].
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        self.forward_logits(tokens, cache, Logits::Last)
    }

    /// [`Model::forward`], returning the logits of the positions `logits` asks for.
    pub fn forward_logits(&self, tokens: &Array, cache: &mut KvCache, logits: Logits) -> Result<Array> {
        match self {
            Model::Llama(m) => m.forward(tokens, cache, logits),
            Model::Gemma3(m) => m.forward(tokens, cache, logits),
        }
    }

    /// Runs several segments through the model in one pass, each with its
    /// own rows and cache (the decode batch beside a prompt's chunk:
    /// [`segments`]); per segment, the logits of each row's last position
    /// [rows, vocab] where it asks for them.
    pub fn forward_segments(&self, parts: &mut [segments::Segment]) -> Result<Vec<Option<Array>>> {
        match self {
            Model::Llama(m) => m.forward_segments(parts),
            Model::Gemma3(m) => m.forward_segments(parts),
        }
    }

    /// Converts the parameters to the dtype the model computes in
    /// ([`crate::device::compute_dtype`]; f32 as loaded on the CPU).
    pub fn cast(&mut self, dtype: mlx_rs::Dtype) -> Result<()> {
        match self {
            Model::Llama(m) => m.cast(dtype),
            Model::Gemma3(m) => m.cast(dtype),
        }
    }

    /// Makes the quantized matrices take activations as `activations` says
    /// (on an x86 CPU: int8 or f32, [`crate::kernels::Activations`]) from now
    /// on, whatever `MLX_SERVING_ACTIVATIONS` said at load. The model computes
    /// in `dtype` (its [`Model::cast`]).
    pub fn set_activations(&mut self, activations: crate::kernels::Activations, dtype: mlx_rs::Dtype) -> Result<()> {
        let linears = match self {
            Model::Llama(m) => m.linears_mut(),
            Model::Gemma3(m) => m.linears_mut(),
        };
        linears.into_iter().try_for_each(|l| l.set_activations(activations, dtype))
    }

    /// Whether each row of a forward pass gets the same bits whatever rows
    /// share the pass (other sequences, other segments, chunks of another
    /// size): every matrix on the CPU's int8 kernels, beside our attention,
    /// norm and activation kernels, which compute each row on its own.
    pub fn batch_invariant(&self) -> bool {
        self.linears().iter().all(|l| l.batch_invariant())
    }

    /// Every matrix of the model.
    fn linears(&self) -> Vec<&Linear> {
        match self {
            Model::Llama(m) => m.linears(),
            Model::Gemma3(m) => m.linears(),
        }
    }

    /// Moves the large 4-bit projections into the CUDA tensor-core kernel's
    /// layout where it serves (`linear::Pack`; nothing elsewhere): in a model
    /// large enough that it pays ([`crate::kernels::cuda_qmm::floor`]).
    pub fn pack(&mut self) -> Result<()> {
        let floor = crate::kernels::cuda_qmm::floor(self.linears().iter().map(|l| l.quantized_weights()).sum());
        match self {
            Model::Llama(m) => m.pack(floor),
            Model::Gemma3(m) => m.pack(floor),
        }
    }

    /// Transformer blocks, i.e. KV cache layers.
    pub fn layers(&self) -> usize {
        match self {
            Model::Llama(m) => m.config.layers,
            Model::Gemma3(m) => m.config.layers,
        }
    }
}

/// What an architecture is to the loaders.
pub struct Architecture {
    /// Our name (GGUF's `general.architecture`, reported as `architecture`).
    pub name: &'static str,
    /// Other `general.architecture` values that are this architecture.
    pub gguf_aliases: &'static [&'static str],
    /// config.json `model_type` values that are this architecture.
    pub model_types: &'static [&'static str],
    /// In GGUF files, RoPE rotates adjacent pairs: llama.cpp's converter
    /// permutes llama's q/k rows for that. Directories keep the rows as
    /// trained, rotating halves, for every architecture.
    pub gguf_rope_pairs: bool,
    /// config.json's `rope_theta` when it has none (mlx-lm's default).
    pub default_rope_theta: f32,
    /// Layer parts (GGUF's `blk.N.<part>`) whose Hugging Face module this
    /// architecture names otherwise than [`common::hf_module`] does.
    pub hf_modules: &'static [(&'static str, &'static str)],
    /// Hugging Face checkpoints store this architecture's norm weights as
    /// `w` of `x * (1 + w)` (Gemma); GGUF stores `1 + w`, the builders' form.
    pub hf_norms_plus_one: bool,
    /// Builds the model from its tensors.
    pub build: fn(&mut dyn Tensors, &HyperParameters) -> Result<Model, String>,
}

/// Every architecture the loaders build.
pub const ARCHITECTURES: &[&Architecture] =
    &[&llama::ARCHITECTURE, &mistral::ARCHITECTURE, &qwen2::ARCHITECTURE, &qwen3::ARCHITECTURE, &phi3::ARCHITECTURE, &gemma3::ARCHITECTURE];

/// The architecture of our name `name` or GGUF alias.
pub fn by_name(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.name == name || a.gguf_aliases.contains(&name))
}

/// The architecture of a config.json `model_type`.
pub fn by_model_type(model_type: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.model_types.contains(&model_type))
}

/// Hyper-parameters of a model, read from GGUF metadata or config.json.
pub struct HyperParameters {
    pub layers: usize,
    pub hidden: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    /// The MLP's inner width.
    pub ffn: i32,
    pub rope_base: f32,
    /// Leading dimensions of each head that RoPE rotates (`head_dim` unless
    /// partial: phi3's `partial_rotary_factor`, GGUF's `rope.dimension_count`).
    pub rope_dims: i32,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
    /// RoPE over adjacent pairs (llama.cpp's permuted q/k rows) rather than
    /// over halves (as trained, the HF / MLX layout).
    pub rope_traditional: bool,
    /// Linear RoPE scaling: positions are multiplied by this.
    pub rope_scale: f32,
    /// Per-pair RoPE periods replacing `rope_base` (llama 3's scaling).
    pub rope_periods: Option<Array>,
    /// Gemma 3: the local layers' window, their RoPE base, the attention
    /// scale and the embedding scale (`None`: `sqrt(hidden)` in f32).
    pub sliding_window: Option<i32>,
    pub rope_local_base: f32,
    pub attention_scale: Option<f32>,
    pub embedding_scale: Option<f32>,
}

impl HyperParameters {
    /// A RoPE of these heads with `base`; `scaled`: with the model's scaling.
    pub fn rope(&self, base: f32, scaled: bool) -> Rope {
        let mut rope = Rope::new(self.rope_dims, base, self.rope_traditional);
        if scaled {
            rope.scale = self.rope_scale;
            rope.periods = self.rope_periods.clone();
        }
        rope
    }

    /// Query and key/value widths: `heads * head_dim`, `kv_heads * head_dim`.
    pub fn attention_widths(&self) -> (i32, i32) {
        (self.heads * self.head_dim, self.kv_heads * self.head_dim)
    }
}

/// Where the builders take weights from. Names are GGUF's (`blk.3.attn_q`,
/// `token_embd`); each format maps them onto its own.
pub trait Tensors {
    /// The matrix `{name}.weight` [rows, cols] as a [`Linear`].
    fn linear(&mut self, name: &str, rows: i32, cols: i32) -> Result<Linear, String>;
    /// The vector `name` (a norm's weight, a bias) as f32.
    fn vector(&mut self, name: &str, len: i32) -> Result<Array, String>;
    fn has(&self, name: &str) -> bool;
}
