//! Mistral: llama's tensors and forward pass. Mistral 7B v0.1's sliding
//! window (4096) is ignored, as llama.cpp and mlx-lm ignore it; later
//! versions have none. Heads may be wider than hidden / heads (Nemo's
//! `head_dim` 128), which the shared builder takes from the config.

use super::{
    llama::{build, Layout},
    Architecture, Model,
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "mistral",
    gguf_aliases: &[],
    model_types: &["mistral"],
    gguf_rope_pairs: true,
    default_rope_theta: 10_000.0,
    hf_modules: &[],
    hf_norms_plus_one: false,
    build: |w, hp| Ok(Model::Llama(build(w, hp, &Layout::default())?)),
};
