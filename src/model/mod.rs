//! Models on mlx-rs: weights loaded from GGUF, a KV cache, and architectures
//! as plain data plus `forward`. Nothing here knows about requests or threads.

mod cache;
pub mod load;
mod linear;
mod llama;

pub use cache::KvCache;
pub use load::{load_gguf, load_gguf_tracked, LoadProgress, LoadedModel, ModelInfo};
pub use linear::WeightFormat;
pub use llama::{Llama, LlamaConfig};

#[cfg(test)]
mod tests;
