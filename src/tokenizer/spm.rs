//! SentencePiece-style tokenizers (`tokenizer.ggml.model = llama`: Llama 1/2,
//! Gemma, Mistral v1), rebuilt from GGUF metadata with the `tokenizers`
//! crate as a BPE over characters with byte fallback.
//!
//! GGUF keeps such a vocabulary as pieces with scores, not merges. llama.cpp
//! tokenizes it by repeatedly joining the adjacent pair of symbols whose
//! concatenation is a piece with the highest score (leftmost on a tie), then
//! spelling any character left outside the vocabulary as `<0xNN>` byte
//! tokens. A BPE whose merges are every split of every piece into two
//! pieces, ranked by the joined piece's score, makes the same choices, so
//! that is what is built here. Spaces are written as `▁` (U+2581) in pieces.

use tokenizers::{
    decoders::{byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DecoderSequence, strip::Strip},
    models::bpe::{Vocab, BPE},
    normalizers::{prepend::Prepend, replace::Replace, utils::Sequence as NormalizerSequence},
    DecoderWrapper, NormalizerWrapper,
};

use super::bpe::{unsupported, TokenizerSpec, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL};
use crate::error::Result;

/// The space marker of SentencePiece pieces.
const SPACE: char = '\u{2581}';

/// The model (BPE over characters with byte fallback, merges derived from
/// scores), normalizer and decoder of `spec`, plus each token's raw bytes.
pub(super) fn build(spec: &TokenizerSpec) -> Result<(tokenizers::Tokenizer, Vec<Vec<u8>>)> {
    if spec.scores.len() != spec.tokens.len() {
        return Err(unsupported(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            spec.scores.len(),
            spec.tokens.len()
        )));
    }
    let ty = |i: usize| spec.token_types.get(i).copied().unwrap_or(1);
    let mut vocab = Vocab::default();
    for (i, t) in spec.tokens.iter().enumerate() {
        // A duplicated piece keeps its first id, as llama.cpp's text-to-id map does.
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.clone(), merges(spec, &vocab))
        .byte_fallback(true)
        .build()
        .map_err(|e| unsupported(format!("building the SentencePiece tokenizer: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);

    let space = Replace::new(" ", SPACE.to_string()).map_err(|e| unsupported(format!("space normalizer: {e}")))?;
    let normalizer: NormalizerWrapper = if spec.add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE.to_string()).into(), space.into()]).into()
    } else {
        space.into()
    };
    inner.with_normalizer(Some(normalizer));
    let unspace = Replace::new(SPACE.to_string(), " ").map_err(|e| unsupported(format!("space decoder: {e}")))?;
    let mut decoders: Vec<DecoderWrapper> = vec![unspace.into(), ByteFallback::new().into(), Fuse::new().into()];
    if spec.add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));

    let token_bytes = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| match ty(i) {
            TOKEN_TYPE_BYTE => byte_token(t).map(|b| vec![b]).unwrap_or_else(|| t.as_bytes().to_vec()),
            TOKEN_TYPE_CONTROL => t.as_bytes().to_vec(),
            _ => t.replace(SPACE, " ").into_bytes(),
        })
        .collect();
    Ok((inner, token_bytes))
}

/// Every split of a piece into two pieces, ranked by the whole piece's score
/// (highest first; for equal scores, lower ids first). Control and byte
/// tokens are never the result of a merge.
fn merges(spec: &TokenizerSpec, vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, usize)> = Vec::new();
    for (i, piece) in spec.tokens.iter().enumerate() {
        if matches!(spec.token_types.get(i), Some(&TOKEN_TYPE_CONTROL | &TOKEN_TYPE_BYTE)) || vocab.get(piece) != Some(&(i as u32)) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            if vocab.contains_key(&piece[..at]) && vocab.contains_key(&piece[at..]) {
                ranked.push((spec.scores[i], i as u32, at));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, id, at)| {
            let piece = &spec.tokens[id as usize];
            (piece[..at].to_string(), piece[at..].to_string())
        })
        .collect()
}

/// The byte of a `<0xNN>` token.
pub(super) fn byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    /// Pieces with scores where greedy-by-score and "longest first" disagree:
    /// "▁ab" outranks "bc", so "▁abc" is "▁ab" + "c", not "▁a" + "bc".
    fn spec(add_space_prefix: bool) -> TokenizerSpec {
        let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "▁a", "bc", "▁ab", "<start>", "\n"].map(String::from).to_vec();
        let mut scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -7.0, -6.0, 0.0, 0.0];
        let mut token_types = vec![2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 4];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            token_types.push(TOKEN_TYPE_BYTE);
        }
        TokenizerSpec { model: "llama".into(), tokens, scores, token_types, bos: Some(1), eos: Some(2), add_bos: true, add_space_prefix, ..Default::default() }
    }

    #[test]
    fn merges_follow_scores_and_unknown_characters_fall_back_to_bytes() {
        let t = Tokenizer::from_spec(&spec(false)).unwrap();
        // "abc": a+b is no piece; b+c is. " abc": ▁+a → ▁a, then ▁a+b → ▁ab outranks b+c.
        assert_eq!(t.encode("abc abc").unwrap(), vec![1, 4, 8, 9, 6]);
        // é is not in the vocabulary: its two UTF-8 bytes.
        let e = 12 + 0xC3;
        let e2 = 12 + 0xA9;
        assert_eq!(t.encode("é").unwrap(), vec![1, e, e2]);
        assert_eq!(t.decode(&[4, 8, 9, 6, e, e2]).unwrap(), "abc abcé");
        // Control and user-defined tokens are matched in the raw text.
        assert_eq!(t.encode("a<start>\nb").unwrap(), vec![1, 4, 10, 11, 5]);
    }

    #[test]
    fn serialized_tokenizer_encodes_alike() {
        // `to_json` hands the tokenizer to other engines (the benchmark's mlx-lm).
        let t = Tokenizer::from_spec(&spec(false)).unwrap();
        let back: tokenizers::Tokenizer = t.to_json().unwrap().parse().unwrap();
        for text in ["abc abc", "é a<start>\nb", "  c"] {
            let ours = t.encode(text).unwrap();
            assert_eq!(back.encode(text, false).unwrap().get_ids(), &ours[1..], "{text:?}");
        }
    }

    #[test]
    fn from_its_tokenizer_json_a_byte_fallback_vocabulary_has_the_same_ids_and_bytes() {
        let t = Tokenizer::from_spec(&spec(false)).unwrap();
        let back = Tokenizer::from_json(&t.to_json().unwrap(), None, None, Some(1), Some(true), &[2]).unwrap();
        for id in 0..t.vocab_size() as u32 {
            assert_eq!(back.token_bytes(id).unwrap(), t.token_bytes(id).unwrap(), "token {id}");
        }
        for text in ["abc abcé", "a<start>\nb"] {
            assert_eq!(back.encode(text).unwrap(), t.encode(text).unwrap(), "{text:?}");
        }
        assert!(back.is_end(2));
    }

    #[test]
    fn llama_style_prefix_space() {
        let t = Tokenizer::from_spec(&spec(true)).unwrap();
        assert_eq!(t.encode("ab").unwrap(), vec![1, 9]);
    }

    #[test]
    fn scores_must_match_tokens() {
        let mut s = spec(false);
        s.scores.pop();
        assert!(Tokenizer::from_spec(&s).unwrap_err().to_string().contains("scores"));
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(byte_token("<0x0A>"), Some(10));
        assert_eq!(byte_token("<0xff>"), Some(255));
        assert_eq!(byte_token("<0x1>"), None);
        assert_eq!(byte_token("0x41"), None);
    }

    /// Gemma 3's vocabulary (262144 pieces) against ids llama.cpp gave for the
    /// same texts (node-llama-cpp `model.tokenize(text, true)`, plus BOS).
    #[test]
    fn gemma3_tokenizes_like_llama_cpp() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf");
        if !path.exists() {
            eprintln!("skipped: {} is missing (scripts/setup.sh --gemma3)", path.display());
            return;
        }
        let t = crate::model::load::tokenizer_from_gguf(&path).unwrap().1;
        let cases: [(&str, &[u32]); 6] = [
            ("The capital of France is", &[818, 5279, 529, 7001, 563]),
            ("  leading  spaces   and\n\nnewlines\n", &[138, 26016, 138, 35220, 139, 624, 108, 208697, 107]),
            (
                "def f(x):\n    return x**2  # 12345\n\n\tI'll say Grüße, 日本語, 😀 DON'T",
                &[
                    2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 1018, 236778, 138, 236865, 236743, 236770, 236778, 236800, 236812,
                    236810, 108, 255968, 236777, 236789, 859, 1879, 212270, 236764, 33375, 238582, 236764, 163543, 52402, 236789, 236774,
                ],
            ),
            ("aaaaaaaaaa", &[128820, 9236]),
            ("<start_of_turn>user\nhi<end_of_turn>", &[105, 2364, 107, 2202, 106]),
            ("\u{1}\u{2} x", &[249732, 241247, 1123]),
        ];
        for (text, ids) in cases {
            let expected: Vec<u32> = std::iter::once(2).chain(ids.iter().copied()).collect();
            assert_eq!(t.encode(text).unwrap(), expected, "{text:?}");
            assert_eq!(t.decode(ids).unwrap(), text);
        }
    }
}
