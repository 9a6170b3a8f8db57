//! Tokenizers built from the `tokenizer.ggml.*` metadata of a GGUF file with
//! the `tokenizers` crate: GPT-2 style byte-level BPE here, SentencePiece
//! vocabularies in [`super::spm`].

use std::collections::HashSet;

use tokenizers::{
    models::bpe::{Vocab, BPE},
    pre_tokenizers::{
        byte_level::ByteLevel,
        digits::Digits,
        sequence::Sequence,
        split::{Split, SplitPattern},
    },
    SplitDelimiterBehavior,
    AddedToken, PreTokenizerWrapper,
};

use crate::error::{Error, ErrorCode, Result};

/// GGUF token types (`tokenizer.ggml.token_type`).
pub(super) const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// `<0xNN>`, the byte fallback of SentencePiece vocabularies.
pub(super) const TOKEN_TYPE_BYTE: i32 = 6;

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`, the pre-tokenizer flavour.
    pub pre: String,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece: a piece's merge priority).
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: a `▁` before the text).
    pub add_space_prefix: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
}

/// A tokenizer plus what generation needs: raw bytes per token and the
/// tokens that end a generation.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    end_tokens: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.token_bytes.len()).finish()
    }
}

pub(super) fn unsupported(what: String) -> Error {
    Error::new(ErrorCode::ModelLoadFailed, what)
}

impl Tokenizer {
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self> {
        if !matches!(spec.model.as_str(), "gpt2" | "llama") {
            return Err(unsupported(format!(
                "tokenizer model '{}' is not supported (gpt2 byte-level BPE, llama SentencePiece)",
                spec.model
            )));
        }
        if spec.tokens.is_empty() {
            return Err(unsupported("GGUF has no tokenizer.ggml.tokens".into()));
        }
        let is_special = |i: usize| matches!(spec.token_types.get(i), Some(&TOKEN_TYPE_CONTROL | &TOKEN_TYPE_USER_DEFINED));
        let (mut inner, token_bytes) = match spec.model.as_str() {
            "llama" => super::spm::build(spec)?,
            _ => byte_level_bpe(spec, is_special)?,
        };
        let specials: Vec<AddedToken> = (0..spec.tokens.len())
            .filter(|&i| is_special(i))
            .map(|i| AddedToken::from(spec.tokens[i].clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);

        let mut end_tokens: HashSet<u32> = spec.eos.into_iter().chain(spec.eot).collect();
        for (i, t) in spec.tokens.iter().enumerate() {
            let control = spec.token_types.get(i) == Some(&TOKEN_TYPE_CONTROL);
            if control && matches!(t.as_str(), "<|im_end|>" | "<|eot_id|>" | "<|end|>" | "<end_of_turn>" | "<|endoftext|>") {
                end_tokens.insert(i as u32);
            }
        }
        Ok(Tokenizer { inner, token_bytes, end_tokens, bos: spec.bos, eos: spec.eos, add_bos: spec.add_bos })
    }

    /// A Hugging Face `tokenizer.json` (a model directory's), with the
    /// special tokens the directory's other files name: `bos`/`eos` as text
    /// (tokenizer_config.json) or `bos_id`, and the ids that end a generation
    /// (config.json's and generation_config.json's `eos_token_id`).
    /// `add_bos`: tokenizer_config.json's `add_bos_token`; when it does not
    /// say, a BOS is added where tokenizer.json's post-processor template
    /// starts with a special token (as transformers writes it).
    pub fn from_json(json: &str, bos: Option<String>, eos: Option<String>, bos_id: Option<u32>, add_bos: Option<bool>, ends: &[u32]) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
        // How pieces spell bytes: SentencePiece-style `<0xNN>` byte fallback
        // and `▁` for spaces, GPT-2's byte-to-character map, or plain text.
        let byte_fallback = v["model"]["byte_fallback"].as_bool() == Some(true);
        let byte_level = !byte_fallback && json_mentions(&v["decoder"], "ByteLevel");
        let specials: HashSet<u32> = v["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter(|t| t["special"].as_bool() == Some(true)).filter_map(|t| t["id"].as_u64()).map(|i| i as u32).collect())
            .unwrap_or_default();
        let n = inner.get_vocab_size(true);
        if n == 0 || n > 1 << 24 {
            return Err(unsupported(format!("tokenizer.json has {n} tokens")));
        }
        let added: HashSet<u32> = inner.get_added_tokens_decoder().keys().copied().collect();
        let byte_of = byte_decoder();
        let token_bytes: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let Some(t) = inner.id_to_token(id) else { return Vec::new() };
                if added.contains(&id) {
                    t.into_bytes()
                } else if byte_fallback {
                    match super::spm::byte_token(&t) {
                        Some(b) => vec![b],
                        None => t.replace('\u{2581}', " ").into_bytes(),
                    }
                } else if byte_level {
                    t.chars().map(|c| byte_of(c).unwrap_or(b'?')).collect()
                } else {
                    t.into_bytes()
                }
            })
            .collect();
        let template_bos = template_first_special(&v["post_processor"]);
        let add_bos = add_bos.unwrap_or(template_bos.is_some());
        let bos = bos_id.or_else(|| bos.and_then(|t| inner.token_to_id(&t))).or(template_bos);
        let eos = eos.and_then(|t| inner.token_to_id(&t)).or_else(|| ends.first().copied());
        let mut end_tokens: HashSet<u32> = ends.iter().copied().chain(eos).filter(|&i| (i as usize) < n).collect();
        for &id in &specials {
            if let Some(t) = inner.id_to_token(id) {
                if matches!(t.as_str(), "<|im_end|>" | "<|eot_id|>" | "<|end|>" | "<end_of_turn>" | "<|endoftext|>") {
                    end_tokens.insert(id);
                }
            }
        }
        Ok(Tokenizer { inner, token_bytes, end_tokens, bos, eos, add_bos: add_bos && bos.is_some() })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The raw bytes a token stands for.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::invalid("tokenIds", format!("token id {id} is outside the vocabulary ({})", self.token_bytes.len())))
    }

    /// Whether generating this token ends the generation (EOS, end of turn).
    pub fn is_end(&self, id: u32) -> bool {
        self.end_tokens.contains(&id)
    }

    /// The tokenizer in Hugging Face `tokenizer.json` form (for other engines
    /// that should tokenize exactly as we do, e.g. the benchmark's mlx-lm).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::internal(format!("serializing the tokenizer: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn bos_text(&self) -> String {
        self.bos.and_then(|id| self.token_bytes.get(id as usize)).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
    }

    pub fn eos_text(&self) -> String {
        self.eos.and_then(|id| self.token_bytes.get(id as usize)).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
    }
}

/// The model, pre-tokenizer and decoder of a GPT-2 style byte-level BPE, plus
/// each token's raw bytes.
fn byte_level_bpe(spec: &TokenizerSpec, is_special: impl Fn(usize) -> bool) -> Result<(tokenizers::Tokenizer, Vec<Vec<u8>>)> {
    let vocab: Vocab = spec.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = spec
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| unsupported(format!("malformed BPE merge '{m}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| unsupported(format!("building BPE: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer(&spec.pre)?));
    inner.with_decoder(Some(ByteLevel::default()));

    let byte_of = byte_decoder();
    let token_bytes = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if is_special(i) {
                t.as_bytes().to_vec()
            } else {
                t.chars().map(|c| byte_of(c).unwrap_or(b'?')).collect()
            }
        })
        .collect();

    Ok((inner, token_bytes))
}

/// Qwen2's split pattern (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`): GPT-2's,
/// with case-insensitive contractions, single digits, and punctuation runs
/// taking their trailing newlines.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer for a `tokenizer.ggml.pre` flavour. Most supported
/// flavours split with the GPT-2 pattern, some first isolating each digit;
/// qwen2 has its own pattern.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, false, true);
    Ok(match pre {
        "qwen2" => {
            let split = Split::new(SplitPattern::Regex(QWEN2_PATTERN.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| Error::internal(format!("qwen2 split pattern: {e}")))?;
            Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
        }
        "smollm" | "starcoder" | "refact" | "codeshell" | "minerva" | "exaone" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        _ => byte_level.into(),
    })
}

/// The id of the special token a post-processor's single-sequence template
/// starts with (`TemplateProcessing`, alone or in a `Sequence`), if any.
fn template_first_special(v: &serde_json::Value) -> Option<u32> {
    match v["type"].as_str()? {
        "TemplateProcessing" => {
            let name = v["single"].get(0)?.get("SpecialToken")?.get("id")?.as_str()?;
            v["special_tokens"][name]["ids"].get(0)?.as_u64().map(|i| i as u32)
        }
        "Sequence" => v["processors"].as_array()?.iter().find_map(template_first_special),
        _ => None,
    }
}

/// Whether `v` (a tokenizer.json component) has a part of type `kind`.
fn json_mentions(v: &serde_json::Value, kind: &str) -> bool {
    match v {
        serde_json::Value::Object(o) => o.get("type").and_then(|t| t.as_str()) == Some(kind) || o.values().any(|x| json_mentions(x, kind)),
        serde_json::Value::Array(a) => a.iter().any(|x| json_mentions(x, kind)),
        _ => false,
    }
}

/// Inverse of GPT-2's `bytes_to_unicode`: the byte a vocabulary character stands for.
fn byte_decoder() -> impl Fn(char) -> Option<u8> {
    let mut table = std::collections::HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..=255 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table.insert(char::from_u32(c).unwrap(), b as u8);
    }
    move |c| table.get(&c).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_its_tokenizer_json_a_byte_level_bpe_has_the_same_ids_bytes_and_ends() {
        let t = tiny();
        let back = Tokenizer::from_json(&t.to_json().unwrap(), None, None, None, None, &[]).unwrap();
        assert_eq!(back.vocab_size(), t.vocab_size());
        for id in 0..t.vocab_size() as u32 {
            assert_eq!(back.token_bytes(id).unwrap(), t.token_bytes(id).unwrap(), "token {id}");
        }
        assert_eq!(back.encode("ab ab<|end|>12").unwrap(), t.encode("ab ab<|end|>12").unwrap());
        assert!(back.is_end(0), "<|end|> is a special end-of-turn token");
        assert!(!back.add_bos);
    }

    #[test]
    fn a_bos_in_the_post_processor_template_is_added() {
        let mut v: serde_json::Value = serde_json::from_str(&tiny().to_json().unwrap()).unwrap();
        let single = serde_json::json!([{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]);
        let pair = serde_json::json!([{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}]);
        v["post_processor"] = serde_json::json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [0], "tokens": ["<|end|>"]}}}]});
        let t = Tokenizer::from_json(&v.to_string(), None, None, None, None, &[]).unwrap();
        assert_eq!(t.encode("ab").unwrap(), [0, 4]);
        // tokenizer_config.json's add_bos_token decides when it says.
        let t = Tokenizer::from_json(&v.to_string(), None, None, None, Some(false), &[]).unwrap();
        assert_eq!(t.encode("ab").unwrap(), [4]);
    }

    fn tiny() -> Tokenizer {
        // bytes 'a', 'b', ' ' (as 'Ġ') plus merges "a b" -> "ab", "Ġ ab" -> "Ġab"
        let tokens = ["<|end|>", "a", "b", "Ġ", "ab", "Ġab", "1", "2"].map(String::from).to_vec();
        let spec = TokenizerSpec {
            model: "gpt2".into(),
            pre: "smollm".into(),
            token_types: vec![3, 1, 1, 1, 1, 1, 1, 1],
            merges: vec!["a b".into(), "Ġ ab".into()],
            tokens,
            eos: Some(0),
            ..Default::default()
        };
        Tokenizer::from_spec(&spec).unwrap()
    }

    #[test]
    fn merges_and_special_tokens() {
        let t = tiny();
        assert_eq!(t.encode("ab ab<|end|>12").unwrap(), vec![4, 5, 0, 6, 7]);
        assert_eq!(t.decode(&[4, 5, 0]).unwrap(), "ab ab<|end|>");
        assert!(t.is_end(0));
    }

    #[test]
    fn byte_decoder_inverts_gpt2_mapping() {
        let d = byte_decoder();
        assert_eq!(d('Ġ'), Some(b' '));
        assert_eq!(d('Ċ'), Some(b'\n'));
        assert_eq!(d('a'), Some(b'a'));
    }
}
