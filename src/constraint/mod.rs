//! Constrained decoding with llguidance: a request's output must match a
//! JSON schema, a regular expression or a Lark grammar (its own, or one this
//! library derives from tools). Grammars are compiled once per model and
//! text ([`Compiler`]); each constrained sequence follows its grammar with a
//! [`Constraint`], which says which tokens may come next ([`MaskRows`]
//! carries a batch's masks to its logits) and advances with each token.

mod budget;
mod compiler;
mod mask;
mod matcher;
mod vocabulary;

use std::sync::{Mutex, MutexGuard};

pub use budget::MASK_TIME_LIMIT;
pub use compiler::{with_json_options, with_loose_json_options, Compiler, Grammar, MAX_GRAMMAR_BYTES};
pub use mask::MaskRows;
pub use matcher::{Advance, Constraint};

/// What a request's output must match (`generate({ responseFormat })`).
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// JSON valid under this schema (its JSON text); `name` is the caller's label.
    JsonSchema { schema: String, name: Option<String> },
    /// Any JSON object.
    JsonObject,
    /// Text matching this regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// Text in the language of this Lark grammar (llguidance's dialect).
    Lark(String),
}

/// Locks `m`, also after a panic poisoned it (the guarded caches stay consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
