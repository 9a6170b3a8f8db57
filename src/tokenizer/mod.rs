//! Tokenization: a byte-level BPE (`bpe`) or SentencePiece vocabulary (`spm`)
//! built from GGUF metadata, chat templates (`template`) and incremental,
//! UTF-8-safe detokenization with stop strings (`stream`).

mod bpe;
mod spm;
mod stream;
mod template;

pub use bpe::{Tokenizer, TokenizerSpec};
pub use stream::{StopMatcher, Utf8Stream};
pub use template::{ChatMessage, ChatTemplate};
