//! The architectures, one file each, over shared building blocks
//! ([`common`]). [`Model`] is what the engine runs.

pub mod common;
pub mod gemma3;
pub mod llama;

use mlx_rs::Array;

use super::cache::KvCache;
use crate::error::Result;

/// A loaded network of any supported architecture.
pub enum Model {
    /// llama, mistral, smollm, qwen2, qwen3.
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

impl Model {
    /// Runs `tokens` ([rows, len]) through the model, appending to `cache`
    /// (one row per sequence), and returns the logits of each row's last
    /// position: [rows, vocab].
    pub fn forward(&self, tokens: &Array, cache: &mut KvCache) -> Result<Array> {
        match self {
            Model::Llama(m) => m.forward(tokens, cache),
            Model::Gemma3(m) => m.forward(tokens, cache),
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
