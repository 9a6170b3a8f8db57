//! Tokenizers built from the `tokenizer.ggml.*` metadata of a GGUF file with
//! the `tokenizers` crate: GPT-2 style byte-level BPE here, SentencePiece
//! vocabularies in [`super::spm`].

use std::collections::HashSet;

use tokenizers::{
    models::bpe::{Vocab, BPE},
    pre_tokenizers::{
        byte_level::ByteLevel,
        sequence::Sequence,
        split::{Split, SplitPattern},
    },
    SplitDelimiterBehavior,
    AddedToken, PreTokenizerWrapper,
};

use crate::error::{Error, ErrorCode, Result};

/// GGUF token types (`tokenizer.ggml.token_type`).
pub(super) const TOKEN_TYPE_CONTROL: i32 = 3;
/// `<0xNN>`, the byte fallback of SentencePiece vocabularies.
pub(super) const TOKEN_TYPE_BYTE: i32 = 6;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`, the pre-tokenizer flavour.
    pub pre: String,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores` (SentencePiece: a piece's merge priority).
    pub scores: Vec<f32>,
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
    /// Control tokens: markup such as `<|im_start|>`, never text.
    special: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Set for an embedding model's tokenizer ([`Tokenizer::for_embeddings`]).
    embedding: Option<EmbeddingInput>,
}

/// How an embedding model's tokenizer reads text.
#[derive(Debug, Clone, Copy)]
struct EmbeddingInput {
    /// Most ids per input, special tokens included.
    max_tokens: usize,
    /// Lower-case the text first (sentence-transformers' `do_lower_case`).
    lowercase: bool,
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

        // Control tokens (`<|im_start|>`) are recognised in text unless
        // `parse_special` is off; user-defined ones always are, as in llama.cpp.
        let added = |ty: i32, special: bool| -> Vec<AddedToken> {
            (0..spec.tokens.len())
                .filter(|&i| spec.token_types.get(i) == Some(&ty))
                .map(|i| AddedToken::from(spec.tokens[i].clone(), special).normalized(false))
                .collect()
        };
        inner.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
        inner.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

        let mut end_tokens: HashSet<u32> = spec.eos.into_iter().chain(spec.eot).collect();
        for (i, t) in spec.tokens.iter().enumerate() {
            let control = spec.token_types.get(i) == Some(&TOKEN_TYPE_CONTROL);
            if control && matches!(t.as_str(), "<|im_end|>" | "<|eot_id|>" | "<|end|>" | "<end_of_turn>" | "<|endoftext|>") {
                end_tokens.insert(i as u32);
            }
        }
        let special = (0..spec.tokens.len() as u32).filter(|&i| spec.token_types.get(i as usize) == Some(&TOKEN_TYPE_CONTROL)).collect();
        Ok(Tokenizer { inner, token_bytes, end_tokens, special, bos: spec.bos, eos: spec.eos, add_bos: spec.add_bos, embedding: None })
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
        Ok(Tokenizer { inner, token_bytes, end_tokens, special: specials, bos, eos, add_bos: add_bos && bos.is_some(), embedding: None })
    }

    /// An embedding model's `tokenizer.json`, reading text as
    /// sentence-transformers feeds it to the model: the post-processor's
    /// special tokens added (`[CLS] .. [SEP]`, `<bos> .. <eos>`), at most
    /// `max_tokens` ids (a longer text loses its end, as Hugging Face
    /// truncates it: the special tokens stay), no padding (the file's own
    /// padding and truncation settings are replaced).
    pub fn for_embeddings(json: &str, max_tokens: usize, lowercase: bool) -> Result<Self> {
        let mut t = Tokenizer::from_json(json, None, None, None, Some(false), &[])?;
        t.inner.with_padding(None);
        let truncation = tokenizers::TruncationParams { max_length: max_tokens, ..Default::default() };
        t.inner.with_truncation(Some(truncation)).map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
        t.embedding = Some(EmbeddingInput { max_tokens, lowercase });
        Ok(t)
    }

    /// An embedding model's ids of `text` ([`Tokenizer::for_embeddings`]) and
    /// whether it was truncated to fit.
    pub fn encode_for_embedding(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let Some(e) = self.embedding else {
            return Err(Error::internal("not an embedding model's tokenizer"));
        };
        let lowered;
        let text = if e.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let encoding = self.inner.encode_fast(text, true).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        let truncated = !encoding.get_overflowing().is_empty();
        debug_assert!(encoding.len() <= e.max_tokens);
        Ok((encoding.get_ids().to_vec(), truncated))
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if self.embedding.is_some() {
            return self.encode_for_embedding(text).map(|(ids, _)| ids);
        }
        let encoding = self.inner.encode_fast(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Token ids of `text` as a continuation (no BOS).
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Whether [`encode`](Self::encode) recognises control tokens written in
    /// the text (on by default; llama.cpp's `parse_special`).
    pub fn set_parse_special(&mut self, on: bool) {
        self.inner.set_encode_special_tokens(!on);
    }

    /// Whether [`encode`](Self::encode) starts with BOS (the GGUF's `tokenizer.ggml.add_bos_token`).
    pub fn set_add_bos(&mut self, on: bool) {
        self.add_bos = on;
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

    /// The tokens that end a generation, in id order.
    pub fn end_tokens(&self) -> Vec<u32> {
        let mut ends: Vec<u32> = self.end_tokens.iter().copied().collect();
        ends.sort_unstable();
        ends
    }

    /// Whether the token is a control token (markup such as `<|im_start|>`,
    /// which text never spells).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
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
    let flavour = pre_tokenizer_of(&spec.pre)
        .ok_or_else(|| unsupported(format!("pre-tokenizer '{}' (tokenizer.ggml.pre) is not supported", spec.pre)))?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(flavour.ignore_merges)
        .build()
        .map_err(|e| unsupported(format!("building BPE: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer(&flavour)?));
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

/// GPT-2's split pattern (what `ByteLevel` splits with when `use_regex` is on).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's: case-insensitive contractions, a letter run with at most one
/// leading non-letter, digits in threes, punctuation runs taking their
/// trailing newlines.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's: Llama 3's with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken: upper-then-lower letter runs, single digits, `/` kept with punctuation.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (and Llama 4's): Tekken's letter runs with contractions attached, digits in threes.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// BLOOM's (and Poro's): a word is everything up to whitespace or sentence punctuation.
const BLOOM: &str = r" ?[^(\s|[.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C}])]+";

/// CJK ideographs, the blocks up to them, and Hangul, as one run (DeepSeek).
const CJK_RUN: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

/// DeepSeek LLM's letter runs: the Latin, Greek, Cyrillic, Armenian,
/// Georgian, Cherokee, Glagolitic, Coptic... letter ranges its tokenizer lists.
const DEEPSEEK_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";

/// How a `tokenizer.ggml.pre` flavour cuts text before BPE: regexes applied
/// in turn (each match and each gap between matches becomes a piece), then
/// GPT-2's byte-to-character mapping, with or without GPT-2's own split.
struct PreTokenizer {
    splits: &'static [&'static str],
    gpt2_split: bool,
    /// Whole pieces found in the vocabulary are taken as they are, without merging (Llama 3).
    ignore_merges: bool,
}

/// The flavours, named as llama.cpp's converter names them (`tokenizer.ggml.pre`).
fn pre_tokenizer_of(pre: &str) -> Option<PreTokenizer> {
    let p = |splits: &'static [&'static str], gpt2_split: bool| PreTokenizer { splits, gpt2_split, ignore_merges: false };
    Some(match pre {
        // No flavour named: llama.cpp's fallback for old conversions.
        "" | "default" => p(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
            PreTokenizer { splits: &[LLAMA3], gpt2_split: false, ignore_merges: true }
        }
        "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => p(&[LLAMA3], false),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => p(&[QWEN2], false),
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "jina-es" | "jina-de" | "jina-v2-es" | "jina-v2-de" | "gigachat"
        | "a.x-4.0" | "mellum" | "exaone4" | "roberta-bpe" | "jina-v1-en" | "jina-v2-code" => p(&[], true),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "minerva" => p(&[r"\p{N}"], true),
        "falcon" => p(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], false),
        "deepseek-llm" => p(&["[\r\n]", DEEPSEEK_LETTERS, r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+", r"\s+$", CJK_RUN, r"\p{N}+"], false),
        "deepseek-coder" => p(&["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_RUN, r"\p{N}"], false),
        "deepseek-v3" | "hunyuan-dense" => p(
            &[
                r"\p{N}{1,3}",
                r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
                r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
            ],
            false,
        ),
        "poro-chat" | "bloom" | "gpt3-finnish" => p(&[BLOOM], false),
        "viking" => p(&[BLOOM, r"\p{N}"], false),
        "tekken" => PreTokenizer { splits: &[TEKKEN], gpt2_split: false, ignore_merges: true },
        "gpt-4o" | "llama4" => p(&[GPT4O], false),
        "seed-coder" => p(&[r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"], false),
        "bailingmoe" => p(&[r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"], false),
        _ => return None,
    })
}

/// The `tokenizers` pre-tokenizer for a flavour.
fn pre_tokenizer(flavour: &PreTokenizer) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(flavour.splits.len() + 1);
    for pattern in flavour.splits {
        let split = Split::new(SplitPattern::Regex((*pattern).into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::internal(format!("split pattern {pattern:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, flavour.gpt2_split).into());
    Ok(if steps.len() == 1 { steps.pop().unwrap() } else { Sequence::new(steps).into() })
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
