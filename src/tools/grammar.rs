//! The Lark grammar of a format's calls to given tools: the markers as the
//! model writes them (control tokens by id, so that only the token itself
//! matches, never its name spelled out in text), each call's tool name one
//! of the offered ones and its arguments valid under that tool's parameters
//! schema. The same grammar serves a call the caller requires (from the
//! first token) and one the model chooses to make (from its first marker on).

use serde_json::{json, Value};

use super::{format::Shape, Tool, ToolFormat};
use crate::{
    constraint::{with_json_options, with_loose_json_options},
    error::{Error, Result},
    tokenizer::Tokenizer,
};

/// The grammar of one or more (`several`) calls of `tools` in `format`.
/// `field` names the tools in errors (a parameters schema that is not JSON).
pub fn calls_grammar(format: &ToolFormat, tools: &[Tool], several: bool, tokenizer: &Tokenizer, field: &str) -> Result<String> {
    let text = |s: &str| atoms(s, tokenizer);
    let layout = |schema: Value| if format.loose_json { with_loose_json_options(schema) } else { with_json_options(schema) };
    let mut lark = String::new();
    let several = several && format.parallel;
    let calls = if several { format!("call ({} call)*", text(format.separator)) } else { "call".to_string() };
    lark.push_str(&format!("start: {} {} {}\n", text(format.section_open), calls, text(format.section_close)));
    let schemas = tools
        .iter()
        .enumerate()
        .map(|(i, t)| parameters(t).map_err(|e| Error::invalid(&format!("{field}[{i}].parameters"), e)))
        .collect::<Result<Vec<Value>>>()?;
    match format.shape {
        Shape::Object { name_key, args_key, id_key } => {
            let objects: Vec<Value> = tools
                .iter()
                .zip(&schemas)
                .map(|(t, params)| {
                    let mut properties = serde_json::Map::new();
                    let mut required = Vec::new();
                    if let Some(id) = id_key {
                        properties.insert(id.into(), json!({ "type": "string", "pattern": "^[0-9]{1,3}$" }));
                        required.push(id);
                    }
                    properties.insert(name_key.into(), json!({ "const": t.name }));
                    properties.insert(args_key.into(), params.clone());
                    required.extend([name_key, args_key]);
                    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
                })
                .collect();
            let body = if objects.len() == 1 { objects.into_iter().next().expect("one") } else { json!({ "anyOf": objects }) };
            lark.push_str(&format!("call: {} %json {} {}\n", text(format.call_open), layout(body), text(format.call_close)));
        }
        Shape::Named { after_name, numbered } => {
            let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
            lark.push_str(&format!("call: {}\n", alternatives.join(" | ")));
            for (i, (t, params)) in tools.iter().zip(&schemas).enumerate() {
                let index = if numbered { r#"":" /[0-9]{1,3}/"# } else { "" };
                lark.push_str(&format!(
                    "call_{i}: {} {} {index} {} %json {} {}\n",
                    text(format.call_open),
                    quote(&t.name),
                    text(after_name),
                    layout(params.clone()),
                    text(format.call_close)
                ));
            }
        }
    }
    Ok(lark)
}

/// A tool's parameters schema as JSON; an object without parameters takes `{}`.
fn parameters(tool: &Tool) -> std::result::Result<Value, String> {
    let v: Value = serde_json::from_str(&tool.parameters).map_err(|e| format!("is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("must be a JSON schema (an object)".into());
    }
    Ok(v)
}

/// `s` as Lark atoms: control tokens by id (`<[id]>`), text as quoted strings.
fn atoms(s: &str, tokenizer: &Tokenizer) -> String {
    if s.is_empty() {
        return String::new();
    }
    let ids = tokenizer.encode_continuation(s).unwrap_or_default();
    let mut out = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    let mut spelled = 0;
    let flush = |text: &mut Vec<u8>, out: &mut Vec<String>| {
        if !text.is_empty() {
            out.push(quote(&String::from_utf8_lossy(text)));
            text.clear();
        }
    };
    for &id in &ids {
        let bytes = tokenizer.token_bytes(id).unwrap_or(&[]);
        spelled += bytes.len();
        if tokenizer.is_special(id) {
            flush(&mut text, &mut out);
            out.push(format!("<[{id}]>"));
        } else {
            text.extend_from_slice(bytes);
        }
    }
    if spelled != s.len() {
        // The tokenizer did not spell `s` back exactly (a SentencePiece space
        // prefix): the text as it is.
        return quote(s);
    }
    flush(&mut text, &mut out);
    out.join(" ")
}

/// A Lark string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
