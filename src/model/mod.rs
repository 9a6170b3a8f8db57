//! Models on mlx-rs: weights loaded from GGUF, a KV cache, and architectures
//! as plain data plus `forward` ([`arch`]). Nothing here knows about requests
//! or threads.

pub mod arch;
mod cache;
pub mod embedding;
pub mod load;
mod linear;

pub use arch::{
    gemma3::{Gemma3, Gemma3Config},
    llama::{Llama, LlamaConfig},
    segments::Segment,
    Logits, Model,
};
pub use cache::KvCache;
pub use load::{
    load_gguf, load_gguf_tracked, load_model, load_model_tracked, load_tracked, sentence_transformers::LoadedEmbedder, EmbeddingInfo, LoadProgress,
    Loaded, LoadedModel, ModelInfo, ModelKind,
};
pub use linear::WeightFormat;

#[cfg(test)]
mod tests;
