//! Grammars on a real vocabulary (SmolLM2's, read from its GGUF): what the
//! masks allow, how outputs end, compile errors, the cache, tool-call
//! grammars of every format, and the limits.

use std::{path::PathBuf, sync::Arc};

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::{
    error::ErrorCode,
    tokenizer::Tokenizer,
    tools::{calls_grammar, Tool},
};

fn smol() -> Arc<Tokenizer> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    Arc::new(crate::model::load::tokenizer_from_gguf(&path).expect("SmolLM2's tokenizer (scripts/setup.sh)").1)
}

fn compiler() -> (Compiler, Arc<Tokenizer>) {
    let t = smol();
    (Compiler::new(t.clone(), t.vocab_size()), t)
}

/// Walks a grammar with random allowed tokens (seeded) until it completes or
/// an end token is drawn; returns the text. Every drawn token was allowed.
fn walk(grammar: &Grammar, tokenizer: &Tokenizer, seed: u64, limit: usize) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = grammar.start();
    let vocab = tokenizer.vocab_size();
    let mut masks = MaskRows::new(1, vocab);
    let mut ids = Vec::new();
    for _ in 0..limit {
        c.mask_into(masks.row_mut(0)).unwrap();
        let allowed: Vec<usize> = (0..vocab).filter(|&t| masks.allows(0, t)).collect();
        assert!(!allowed.is_empty(), "a mask allows something");
        // Prefer short tokens and the end, so that walks end.
        let ends: Vec<usize> = allowed.iter().copied().filter(|&t| tokenizer.is_end(t as u32)).collect();
        let t = if !ends.is_empty() && rng.random_bool(0.3) { ends[0] } else { allowed[rng.random_range(0..allowed.len())] };
        if tokenizer.is_end(t as u32) {
            assert!(c.is_accepting(), "the end is allowed only where the grammar accepts");
            break;
        }
        ids.push(t as u32);
        if c.advance(t as u32).unwrap() == Advance::Complete {
            break;
        }
    }
    tokenizer.decode(&ids).unwrap()
}

#[test]
fn masks_keep_json_valid_under_its_schema() {
    let (compiler, t) = compiler();
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3}}, "required": ["name", "age", "tags"], "additionalProperties": false}"#;
    let g = compiler.response_format(&ResponseFormat::JsonSchema { schema: schema.into(), name: None }, "responseFormat").unwrap();
    for seed in 0..5 {
        let text = walk(&g, &t, seed, 200);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let age = v["age"].as_i64().unwrap();
        assert!((0..=120).contains(&age) && v["name"].as_str().unwrap().chars().count() <= 8, "{text}");
        let tags = v["tags"].as_array().unwrap();
        assert!((1..=3).contains(&tags.len()) && v.as_object().unwrap().len() == 3, "{text}");
        assert!(text.contains("\": ") && !text.contains('\n'), "one line, `: ` separators: {text}");
    }
}

#[test]
fn regexes_and_lark_grammars_constrain_the_whole_output() {
    let (compiler, t) = compiler();
    let g = compiler.response_format(&ResponseFormat::Regex(r"[0-9]{3}-[a-z]{2}".into()), "responseFormat").unwrap();
    for seed in 0..5 {
        let text = walk(&g, &t, seed, 50);
        assert!(text.len() == 6 && text.as_bytes()[3] == b'-', "{text:?}");
    }
    let lark = "start: \"yes\" | \"no\" | \"maybe \" NUM\nNUM: /[1-9]/";
    let g = compiler.response_format(&ResponseFormat::Lark(lark.into()), "responseFormat").unwrap();
    for seed in 0..8 {
        let text = walk(&g, &t, seed, 50);
        assert!(text == "yes" || text == "no" || (text.starts_with("maybe ") && text.len() == 7), "{text:?}");
    }
}

#[test]
fn the_end_token_is_allowed_only_where_the_grammar_accepts() {
    let (compiler, t) = compiler();
    let g = compiler.response_format(&ResponseFormat::Regex("a+".into()), "responseFormat").unwrap();
    let end = t.end_tokens()[0] as usize;
    let mut c = g.start();
    let mut masks = MaskRows::new(1, t.vocab_size());
    c.mask_into(masks.row_mut(0)).unwrap();
    assert!(!masks.allows(0, end), "nothing written yet: no end");
    let a = t.encode_continuation("a").unwrap()[0];
    assert_eq!(c.advance(a).unwrap(), Advance::Open);
    c.mask_into(masks.row_mut(0)).unwrap();
    assert!(masks.allows(0, end) && masks.allows(0, a as usize));
    // A grammar that cannot grow ends the output without an end token.
    let g = compiler.response_format(&ResponseFormat::Regex("ab".into()), "responseFormat").unwrap();
    let mut c = g.start();
    let ab = t.encode_continuation("ab").unwrap();
    let last = ab.len() - 1;
    for (i, &id) in ab.iter().enumerate() {
        assert_eq!(c.advance(id).unwrap(), if i == last { Advance::Complete } else { Advance::Open });
    }
}

#[test]
fn bad_grammars_are_invalid_arguments_naming_the_field() {
    let (compiler, _) = compiler();
    let cases = [
        (ResponseFormat::JsonSchema { schema: "{not json".into(), name: None }, "responseFormat.schema: is not JSON"),
        (ResponseFormat::JsonSchema { schema: "[1]".into(), name: None }, "responseFormat.schema: must be a JSON schema"),
        (ResponseFormat::JsonSchema { schema: r#"{"type": "object", "if": {}}"#.into(), name: None }, "if"),
        (ResponseFormat::JsonSchema { schema: r#"{"type": "wat"}"#.into(), name: None }, "responseFormat.schema"),
        (ResponseFormat::JsonSchema { schema: r##"{"$ref": "#/$defs/missing"}"##.into(), name: None }, "responseFormat.schema"),
        (ResponseFormat::Regex("(unclosed".into()), "responseFormat.pattern"),
        (ResponseFormat::Lark("start: undefined_rule".into()), "responseFormat.lark"),
        (ResponseFormat::Lark("this is not lark".into()), "responseFormat.lark"),
    ];
    for (format, want) in cases {
        let e = compiler.response_format(&format, "responseFormat").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{format:?}: {e:?}");
        assert!(e.message.contains(want), "{format:?}: {}", e.message);
    }
    // Nothing failed is cached; a good one is, once.
    assert_eq!(compiler.cached(), 0);
    let f = ResponseFormat::JsonObject;
    let a = compiler.response_format(&f, "responseFormat").unwrap();
    let b = compiler.response_format(&f, "responseFormat").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(compiler.cached(), 1);
}

/// An ambiguous grammar (every split of the text is a parse) stays within
/// llguidance's per-step bounds for a while, each token dearer than the last;
/// the per-token time limit ([`MASK_TIME_LIMIT`]; or first, the Earley row
/// limit) ends it with a typed error, never a hang.
#[test]
fn a_grammar_too_expensive_to_follow_fails_with_a_typed_error() {
    let (compiler, t) = compiler();
    let g = compiler.response_format(&ResponseFormat::Lark("start: s\ns: s s | \"a\" | \"b\"".into()), "responseFormat").unwrap();
    let mut c = g.start();
    let mut masks = MaskRows::new(1, t.vocab_size());
    let mut rng = StdRng::seed_from_u64(1);
    let started = std::time::Instant::now();
    let (mut slowest, mut steps) = (std::time::Duration::ZERO, 0);
    let error = (0..5000).find_map(|_| {
        let step = std::time::Instant::now();
        if let Err(e) = c.mask_into(masks.row_mut(0)) {
            return Some(e);
        }
        let allowed: Vec<usize> = (0..t.vocab_size()).filter(|&i| masks.allows(0, i) && !t.is_end(i as u32)).collect();
        let e = c.advance(allowed[rng.random_range(0..allowed.len())] as u32).err();
        slowest = slowest.max(step.elapsed());
        steps += 1;
        e
    });
    let e = error.expect("a limit is reached");
    assert_eq!(e.code, ErrorCode::GrammarTooComplex, "{e:?}");
    crate::tokenizer::say(&format!("too complex after {steps} tokens, {:?}; slowest token {slowest:?}: {}", started.elapsed(), e.message));
    assert!(started.elapsed().as_secs() < 300, "bounded: {:?}", started.elapsed());
}

#[test]
fn tool_call_grammars_accept_the_calls_their_format_writes() {
    let (compiler, t) = compiler();
    let tools = vec![
        Tool { name: "get_weather".into(), description: None, parameters: r#"{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}"#.into() },
        Tool { name: "now".into(), description: None, parameters: r#"{"type": "object", "properties": {}}"#.into() },
    ];
    use crate::tools::format_examples;
    for (format, calls) in format_examples() {
        let lark = calls_grammar(&format, &tools, true, &t, "tools").unwrap();
        let g = compiler.lark(&lark, "tools").unwrap_or_else(|e| panic!("{}: {e:?}\n{lark}", format.family));
        let mut c = g.start();
        let ids = t.encode_continuation(&calls).unwrap();
        assert!(c.replay(&ids), "{}: {calls:?} follows\n{lark}", format.family);
        assert!(c.is_accepting(), "{}: complete after {calls:?}", format.family);
        // An unknown tool or arguments outside the schema do not.
        let wrong = calls.replace("get_weather", "get_wether");
        assert!(!g.start().replay(&t.encode_continuation(&wrong).unwrap()), "{}: {wrong:?}", format.family);
        let wrong = calls.replace("\"city\"", "\"town\"");
        assert!(!g.start().replay(&t.encode_continuation(&wrong).unwrap()), "{}: {wrong:?}", format.family);
    }
}
