//! The model's own vocabulary as llguidance sees it: a token trie built from
//! our tokenizer's bytes per id (control tokens marked as special, so that
//! grammar text can never spell them), the tokens that end a generation as
//! its end-of-sequence set, and our tokenizer for the text a grammar forces.

use std::sync::Arc;

use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::tokenizer::Tokenizer;

/// A tokenizer environment over one model's [`Tokenizer`].
pub struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl Vocabulary {
    /// The trie of `tokenizer`, padded with empty (never allowed) tokens up
    /// to `rows` ids when the model's output rows outnumber its tokens.
    pub fn env(tokenizer: Arc<Tokenizer>, rows: usize) -> TokEnv {
        let n = tokenizer.vocab_size().max(rows);
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                Ok(bytes) if tokenizer.is_special(id) => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], bytes].concat(),
                Ok(bytes) => bytes.to_vec(),
                Err(_) => Vec::new(),
            })
            .collect();
        let ends = tokenizer.end_tokens();
        let info = TokRxInfo { tok_end_of_turn: ends.first().copied(), ..TokRxInfo::new(n as u32, ends.first().copied().unwrap_or(0)) };
        let mut trie = TokTrie::from(&info, &words);
        if !ends.is_empty() {
            trie = trie.with_eos_tokens(&ends);
        }
        Arc::new(Vocabulary { trie, tokenizer })
    }
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Text a grammar forces, tokenized as the model would write it; where
    /// that does not spell exactly these bytes (a SentencePiece space prefix,
    /// a control token's name, a split character), the trie's greedy tokens.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let Ok(text) = std::str::from_utf8(s) else { return self.trie.greedy_tokenize(s) };
        match self.tokenizer.encode_continuation(text) {
            Ok(ids) if self.trie.decode_raw(&ids) == s => ids,
            _ => self.trie.greedy_tokenize(s),
        }
    }
}
