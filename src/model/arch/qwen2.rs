//! Qwen2 (Qwen2.5): llama with biases on the query, key and value
//! projections (taken where present, as the shared builder does), RoPE over
//! halves also in GGUF files (llama.cpp's converter does not permute its
//! q/k rows), and usually an untied output projection.

use super::{
    llama::{build, Layout},
    Architecture, Model,
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "qwen2",
    gguf_aliases: &[],
    model_types: &["qwen2"],
    gguf_rope_pairs: false,
    // mlx-lm's default (Hugging Face's Qwen2Config says 10000; checkpoints say 1e6).
    default_rope_theta: 1_000_000.0,
    hf_modules: &[],
    hf_norms_plus_one: false,
    build: |w, hp| Ok(Model::Llama(build(w, hp, &Layout::default())?)),
};
