//! Real chat templates rendered by us and by jinja2 as Hugging Face configures
//! it must agree byte for byte, or both refuse the conversation.
//!
//! The templates (llama.cpp's `models/templates`, from the llama-cpp-python
//! sdist) and the jinja2 renderings (`scripts/chat_template_reference.py`) are
//! fetched by `scripts/setup.sh --tokenizer-data`; without them these tests
//! say so and pass.

use std::path::PathBuf;

use serde::Deserialize;

use super::*;
use crate::tokenizer::llama_cpp_data;

#[derive(Deserialize)]
struct Reference {
    now: i64,
    bos_token: String,
    eos_token: String,
    conversations: std::collections::BTreeMap<String, Vec<ChatMessage>>,
    templates: std::collections::BTreeMap<String, TemplateReference>,
    /// Tools in Hugging Face's shape, and conversations with calls and results.
    #[serde(default)]
    tools: serde_json::Value,
    #[serde(default)]
    tool_conversations: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct TemplateReference {
    compile_error: Option<String>,
    #[serde(default)]
    renders: std::collections::BTreeMap<String, Rendered>,
    #[serde(default)]
    tool_renders: std::collections::BTreeMap<String, Rendered>,
}

#[derive(Deserialize)]
struct Rendered {
    output: Option<String>,
    error: Option<String>,
}

/// The first differing line of two renderings, with a few lines of context.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.split('\n').collect(), actual.split('\n').collect());
    let at = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    let from = at.saturating_sub(2);
    let show = |lines: &[&str], sign: char| {
        lines.iter().enumerate().skip(from).take(at + 3 - from).map(|(i, l)| format!("  {sign}{:>4} {l:?}\n", i + 1)).collect::<String>()
    };
    format!("first difference at line {}:\n jinja2:\n{} ours:\n{}", at + 1, show(&e, '-'), show(&a, '+'))
}

fn reference() -> Option<(PathBuf, Reference)> {
    let dir = llama_cpp_data()?;
    let json = std::fs::read_to_string(dir.join("chat_templates.json")).expect("chat_templates.json");
    Some((dir, serde_json::from_str(&json).expect("chat_templates.json parses")))
}

#[test]
fn real_chat_templates_render_as_jinja2_does() {
    let Some((dir, reference)) = reference() else { return };
    assert_eq!(reference.templates.len(), 25, "the sdist ships 25 templates");
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut matched_templates = 0;
    for (name, expected) in &reference.templates {
        let source = std::fs::read_to_string(dir.join("templates").join(name)).expect("template file");
        let template = ChatTemplate::with_clock(&source, reference.bos_token.clone(), reference.eos_token.clone(), Clock::Fixed(reference.now));
        let template = match (template, &expected.compile_error) {
            (Ok(t), None) => t,
            (Err(_), Some(_)) => {
                matched_templates += 1;
                continue;
            }
            (Ok(_), Some(e)) => {
                failures.push(format!("{name}: jinja2 does not compile it ({e}) but we do"));
                continue;
            }
            (Err(e), None) => {
                failures.push(format!("{name}: we do not compile it: {e}"));
                continue;
            }
        };
        let before = failures.len();
        for (conversation, rendered) in &expected.renders {
            compared += 1;
            let ours = template.render(&reference.conversations[conversation]);
            match (&rendered.output, &rendered.error, ours) {
                (Some(want), _, Ok(got)) if *want == got => {}
                (Some(want), _, Ok(got)) => failures.push(format!("{name} / {conversation}: {}", diff(want, &got))),
                (Some(_), _, Err(e)) => failures.push(format!("{name} / {conversation}: jinja2 renders it, we fail: {e}")),
                (None, Some(_), Err(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument, "{name} / {conversation}: {e}"),
                (None, Some(want), Ok(got)) => {
                    failures.push(format!("{name} / {conversation}: jinja2 fails ({want}), we render {got:?}"))
                }
                (None, None, _) => panic!("{name} / {conversation}: reference has neither output nor error"),
            }
        }
        if failures.len() == before {
            matched_templates += 1;
        }
    }
    crate::tokenizer::say(&format!("chat templates: {matched_templates}/{} agree with jinja2 on all of {compared} renders", reference.templates.len()));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Real templates stay far inside [`TEMPLATE_FUEL`]: prints what each uses for
/// a short and a long conversation, and requires a 100x margin for the long one.
#[test]
fn real_chat_templates_stay_well_within_the_fuel_bound() {
    let Some((dir, reference)) = reference() else { return };
    let long = &reference.conversations["long"];
    let short = &reference.conversations["system_user"];
    let mut most = (0u64, String::new());
    for name in reference.templates.keys() {
        let source = std::fs::read_to_string(dir.join("templates").join(name)).expect("template file");
        let Ok(t) = ChatTemplate::with_clock(&source, String::new(), String::new(), Clock::Fixed(reference.now)) else { continue };
        let (Ok((_, a)), Ok((_, b))) = (t.render_measured(short, None), t.render_measured(long, None)) else { continue };
        let per_message = (b.saturating_sub(a)) / (long.len() - short.len()) as u64;
        eprintln!("fuel {name}: {a} for {} messages, {b} for {} ({per_message} per message)", short.len(), long.len());
        if b > most.0 {
            most = (b, name.clone());
        }
    }
    assert!(most.0 > 0, "no template rendered");
    assert!(most.0 * 100 < TEMPLATE_FUEL, "{} uses {} fuel for {} messages", most.1, most.0, long.len());
}

/// A message of the reference's tool conversations (Hugging Face's shape:
/// `content` may be null, calls as `{"id", "function": {"name", "arguments"}}`).
fn tool_message(m: &serde_json::Value) -> ChatMessage {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    ChatMessage {
        role: text(&m["role"]),
        content: text(&m["content"]),
        tool_calls: m["tool_calls"]
            .as_array()
            .map(|calls| {
                calls.iter().map(|c| ToolCall { id: text(&c["id"]), name: text(&c["function"]["name"]), arguments: text(&c["function"]["arguments"]) }).collect()
            })
            .unwrap_or_default(),
        tool_call_id: m["tool_call_id"].as_str().map(String::from),
    }
}

/// Templates whose renderings with tools differ from jinja2's through a
/// jinja2 behaviour no template means to rely on, and why.
const KNOWN_TOOL_DIFFERENCES: [(&str, &str); 2] = [
    // `tools | map(...) | tojson`: jinja2's `map` is a generator, which its
    // json.dumps refuses; ours is a list (llama.cpp, whose template this is,
    // renders it as we do).
    ("llama-cpp-deepseek-r1.jinja", "jinja2 cannot serialize map()'s generator"),
    // `"..."|safe + name + "..."|safe + t | tojson()`: jinja2 HTML-escapes the
    // JSON it concatenates to a safe string (`&#34;`); we keep it as written.
    ("meetkai-functionary-medium-v3.1.jinja", "jinja2 HTML-escapes the tools' JSON"),
];

/// With tools, past calls and tool results, real templates render what
/// jinja2 renders with them as Hugging Face passes them (or both refuse).
#[test]
fn real_chat_templates_render_tools_as_jinja2_does() {
    let Some((dir, reference)) = reference() else { return };
    if reference.tool_conversations.is_empty() {
        crate::tokenizer::say("SKIPPED: the chat-template reference has no tool conversations; run scripts/setup.sh --tokenizer-data");
        return;
    }
    let mut failures = Vec::new();
    let (mut compared, mut rendered, mut skipped) = (0, 0, 0);
    for (name, expected) in &reference.templates {
        let source = std::fs::read_to_string(dir.join("templates").join(name)).expect("template file");
        let Ok(template) = ChatTemplate::with_clock(&source, reference.bos_token.clone(), reference.eos_token.clone(), Clock::Fixed(reference.now)) else { continue };
        for (conversation, want) in &expected.tool_renders {
            if let Some(why) = KNOWN_TOOL_DIFFERENCES.iter().find(|(t, _)| t == name).map(|(_, why)| why) {
                crate::tokenizer::say(&format!("{name} / {conversation}: not compared ({why})"));
                skipped += 1;
                continue;
            }
            compared += 1;
            let messages: Vec<ChatMessage> = reference.tool_conversations[conversation].iter().map(tool_message).collect();
            match (&want.output, template.render_with_tools(&messages, &reference.tools)) {
                (Some(want), Ok(got)) if *want == got => rendered += 1,
                (Some(want), Ok(got)) => failures.push(format!("{name} / {conversation}: {}", diff(want, &got))),
                (Some(_), Err(e)) => failures.push(format!("{name} / {conversation}: jinja2 renders it, we fail: {e}")),
                (None, Err(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument, "{name} / {conversation}: {e}"),
                (None, Ok(got)) => failures.push(format!("{name} / {conversation}: jinja2 fails ({:?}), we render {got:?}", want.error)),
            }
        }
    }
    crate::tokenizer::say(&format!(
        "chat templates with tools: {compared} renders compared, {rendered} rendered alike, the rest refused by both; {skipped} not compared"
    ));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
