//! Grammars compiled once per model and text. A model's [`Compiler`] holds
//! llguidance's parser factory over the model's vocabulary (built once, it
//! slices the token trie for fast masks) and the grammars compiled so far,
//! keyed by their text: agents send the same schema over and over, and a
//! request whose grammar is cached starts from a clone of the compiled one.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock},
};

use llguidance::{api::TopLevelGrammar, Matcher, ParserFactory, TokenParser};

use super::{lock, matcher::Constraint, vocabulary::Vocabulary, ResponseFormat};
use crate::{
    error::{Error, Result},
    tokenizer::Tokenizer,
};

/// Compiled grammars kept per model; the least recently used goes first.
const CACHED_GRAMMARS: usize = 64;

/// The longest schema, pattern or grammar text accepted (llguidance's own
/// limits bound what it compiles to; this bounds what it is asked to read).
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;

/// How JSON is written under a schema unless the schema's `x-guidance` says
/// otherwise: on one line, with the separators models write (`", "` and
/// `": "`), so that a model can neither pad the output with whitespace
/// forever nor be pushed off the spacing it was trained on; `oneOf` read as
/// `anyOf` (exact for the discriminated unions schema libraries produce).
fn json_options() -> serde_json::Value {
    serde_json::json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": true })
}

/// A JSON schema with our JSON layout, unless it chose its own.
pub fn with_json_options(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance").or_insert_with(json_options);
    }
    schema
}

/// A JSON schema whose JSON may be laid out in any way (pretty-printed
/// over lines, as a model writes it where it chose the layout itself).
pub fn with_loose_json_options(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance").or_insert_with(|| serde_json::json!({ "whitespace_flexible": true, "coerce_one_of": true }));
    }
    schema
}

/// A grammar compiled for one model: every request that uses it starts from
/// a clone of this parser (clones share its lexer's cache of states).
pub struct Grammar {
    prototype: Mutex<TokenParser>,
}

impl Grammar {
    /// A fresh matcher at the grammar's start.
    pub fn start(&self) -> Constraint {
        Constraint::new(Matcher::new(Ok(lock(&self.prototype).clone())))
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammar")
    }
}

/// Compiles and caches grammars for one model.
pub struct Compiler {
    tokenizer: Arc<Tokenizer>,
    /// The model's output rows (at least its tokenizer's vocabulary).
    rows: usize,
    /// llguidance's factory over the vocabulary, built on first use.
    factory: OnceLock<std::result::Result<ParserFactory, Error>>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    grammars: HashMap<String, Arc<Grammar>>,
    /// Keys, least recently used first.
    order: VecDeque<String>,
}

impl Cache {
    fn get(&mut self, key: &str) -> Option<Arc<Grammar>> {
        let grammar = self.grammars.get(key)?.clone();
        if let Some(i) = self.order.iter().position(|k| k == key) {
            let k = self.order.remove(i).expect("position is in range");
            self.order.push_back(k);
        }
        Some(grammar)
    }

    fn insert(&mut self, key: String, grammar: Arc<Grammar>) {
        if self.grammars.insert(key.clone(), grammar).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHED_GRAMMARS {
            if let Some(old) = self.order.pop_front() {
                self.grammars.remove(&old);
            }
        }
    }
}

impl Compiler {
    /// The compiler of a model with this tokenizer and `rows` output rows
    /// (logits per token). Cheap: the vocabulary's trie is built on first
    /// use, or ahead of it by [`warm_up`](Self::warm_up).
    pub fn new(tokenizer: Arc<Tokenizer>, rows: usize) -> Self {
        Compiler { tokenizer, rows, factory: OnceLock::new(), cache: Mutex::new(Cache::default()) }
    }

    /// Builds the vocabulary's trie and slices it for fast masks (tens of
    /// ms for a 150k-token vocabulary), unless done: call it on a thread that
    /// may wait.
    pub fn warm_up(&self) {
        let _ = self.factory();
    }

    fn factory(&self) -> Result<&ParserFactory> {
        self.factory
            .get_or_init(|| {
                let started = std::time::Instant::now();
                let env = Vocabulary::env(self.tokenizer.clone(), self.rows);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::internal(format!("building the grammar compiler: {e}")))?;
                factory.quiet();
                factory.limits_mut().verbose_errors = false;
                tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "grammar compiler ready");
                Ok(factory)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The vocabulary's size as masks count it.
    pub fn vocab(&self) -> usize {
        self.tokenizer.vocab_size().max(self.rows)
    }

    /// The compiled grammar of a response format; `field` names it in errors
    /// (INVALID_ARGUMENT: not JSON, an invalid schema, regex or grammar, an
    /// unsupported schema keyword, past a compile limit).
    pub fn response_format(&self, format: &ResponseFormat, field: &str) -> Result<Arc<Grammar>> {
        match format {
            ResponseFormat::JsonObject => self.compile("json_object", field, || Ok(TopLevelGrammar::from_json_schema(with_json_options(serde_json::json!({ "type": "object" }))))),
            ResponseFormat::JsonSchema { schema, .. } => self.compile(&format!("json_schema\n{schema}"), &format!("{field}.schema"), || {
                let value: serde_json::Value = serde_json::from_str(schema).map_err(|e| format!("is not JSON: {e}"))?;
                if !(value.is_object() || value.is_boolean()) {
                    return Err("must be a JSON schema (an object)".into());
                }
                Ok(TopLevelGrammar::from_json_schema(with_json_options(value)))
            }),
            ResponseFormat::Regex(pattern) => {
                self.compile(&format!("regex\n{pattern}"), &format!("{field}.pattern"), || Ok(TopLevelGrammar::from_regex(pattern)))
            }
            ResponseFormat::Lark(lark) => {
                self.compile(&format!("lark\n{lark}"), &format!("{field}.lark"), || Ok(TopLevelGrammar::from_lark(lark.clone())))
            }
        }
    }

    /// The compiled grammar of a Lark text this library wrote (tool calls).
    pub fn lark(&self, lark: &str, field: &str) -> Result<Arc<Grammar>> {
        self.compile(&format!("lark\n{lark}"), field, || Ok(TopLevelGrammar::from_lark(lark.to_string())))
    }

    fn compile(&self, key: &str, field: &str, grammar: impl FnOnce() -> std::result::Result<TopLevelGrammar, String>) -> Result<Arc<Grammar>> {
        if key.len() > MAX_GRAMMAR_BYTES {
            return Err(Error::invalid(field, format!("is longer than {MAX_GRAMMAR_BYTES} bytes")));
        }
        if let Some(g) = lock(&self.cache).get(key) {
            return Ok(g);
        }
        let started = std::time::Instant::now();
        let grammar = grammar().map_err(|e| Error::invalid(field, e))?;
        let parser = self.factory()?.create_parser(grammar).map_err(|e| Error::invalid(field, describe(&e.to_string())))?;
        tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "grammar compiled");
        let compiled = Arc::new(Grammar { prototype: Mutex::new(parser) });
        lock(&self.cache).insert(key.to_string(), compiled.clone());
        Ok(compiled)
    }

    /// How many grammars are cached (for tests).
    pub fn cached(&self) -> usize {
        lock(&self.cache).grammars.len()
    }
}

/// llguidance's compile error, without its internal prefixes.
fn describe(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("failed to compile JSON schema: ").unwrap_or(m);
    format!("cannot be compiled: {m}")
}
