//! Qwen3 (dense): llama with an RMS norm over each query and key head
//! before RoPE, no biases, RoPE over halves, and heads that may be narrower
//! or wider than hidden / heads (`head_dim`, GGUF's `attention.key_length`).

use super::{
    llama::{build, Layout},
    Architecture, Model,
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "qwen3",
    gguf_aliases: &[],
    model_types: &["qwen3"],
    gguf_rope_pairs: false,
    default_rope_theta: 1_000_000.0,
    hf_modules: &[],
    hf_norms_plus_one: false,
    build: |w, hp| Ok(Model::Llama(build(w, hp, &Layout { qk_norm: true, ..Layout::default() })?)),
};
