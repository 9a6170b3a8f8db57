//! mlx-serving: local LLM inference on MLX for Node.js.
//!
//! Layers, top to bottom (imports point down only):
//! - [`js`]: the napi surface (the only module that knows about Node);
//! - [`engine`]: model slots, workers, scheduling, deadlines, watchdog, stats;
//! - [`model`], [`tokenizer`], [`sampling`], [`constraint`] (constrained
//!   decoding), [`tools`] (tool-call formats and parsing): building blocks;
//! - [`kernels`]: our CPU quantized-matmul MLX primitive, used by [`model`];
//! - [`device`]: the backend MLX runs on (CPU, CUDA, Metal), asked by [`model`] and [`engine`].

pub mod constraint;
pub mod device;
pub mod engine;
pub mod error;
pub mod kernels;
#[cfg(feature = "napi")]
mod js;

#[cfg(feature = "napi")]
#[macro_use]
extern crate napi_derive;
pub mod model;
pub(crate) mod platform;
pub mod sampling;
pub mod tokenizer;
pub mod tools;
