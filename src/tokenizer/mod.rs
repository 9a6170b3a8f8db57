//! Tokenization: a byte-level BPE (`bpe`) or SentencePiece vocabulary (`spm`)
//! built from GGUF metadata, chat templates (`template`) and incremental,
//! UTF-8-safe detokenization with stop strings (`stream`).

mod bpe;
mod spm;
mod stream;
mod template;

pub use bpe::{Tokenizer, TokenizerSpec};
pub use stream::{StopMatcher, Utf8Stream};
pub use template::{ChatMessage, ChatTemplate, ToolCall, ToolSupport};

#[cfg(test)]
mod vocab_tests;

/// Where `scripts/setup.sh --tokenizer-data` puts llama.cpp's test data (chat
/// templates, vocab-only GGUFs); `None`, said on stderr, when it is not there.
#[cfg(test)]
pub(crate) fn llama_cpp_data() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".data/llama.cpp-0.3.16");
    if dir.join("complete").exists() {
        Some(dir)
    } else {
        say(&format!("SKIPPED: {} is missing; run scripts/setup.sh --tokenizer-data", dir.display()));
        None
    }
}

/// Writes a line to the real stderr, past libtest's capture, so that skips and
/// pass counts show in `cargo test` / `npm test` output.
#[cfg(test)]
pub(crate) fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
