//! Phi-3 (and Phi-4-mini, `model_type` phi3): llama with the query, key
//! and value projections in one tensor (`qkv_proj`, GGUF `attn_qkv`) and
//! the MLP's gate and up in another (`gate_up_proj`, GGUF `ffn_up`), RoPE
//! over halves, possibly over only the leading part of each head
//! (`partial_rotary_factor`). LongRoPE (`rope_scaling` su/longrope, GGUF
//! `rope_factors_long/short`: the 128k-context models) is refused. Its
//! sliding window is ignored, as llama.cpp and mlx-lm do.

use super::{
    llama::{build, Layout},
    Architecture, HyperParameters, Model, Tensors,
};

pub const ARCHITECTURE: Architecture = Architecture {
    name: "phi3",
    gguf_aliases: &[],
    model_types: &["phi3"],
    gguf_rope_pairs: false,
    default_rope_theta: 10_000.0,
    hf_modules: &[("attn_qkv", "self_attn.qkv_proj"), ("ffn_up", "mlp.gate_up_proj")],
    hf_norms_plus_one: false,
    build: build_phi3,
};

fn build_phi3(w: &mut dyn Tensors, hp: &HyperParameters) -> Result<Model, String> {
    if w.has("rope_factors_long.weight") || w.has("rope_factors_short.weight") {
        return Err("LongRoPE (rope_factors_long/short, long-context phi3) is not supported".into());
    }
    Ok(Model::Llama(build(w, hp, &Layout { fused: true, ..Layout::default() })?))
}
