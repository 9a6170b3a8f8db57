//! Chat templates (the GGUF's `tokenizer.chat_template`) rendered with
//! minijinja, configured to render what Hugging Face's `apply_chat_template`
//! renders with jinja2: blocks trimmed (`trim_blocks`, `lstrip_blocks`), the
//! same context variables (`tools` and `documents` present and none), the same
//! helpers (`raise_exception`, `strftime_now`) and a `tojson` that writes what
//! Python's `json.dumps` writes.
//!
//! Templates are untrusted text from model files, so rendering is bounded: a
//! budget of VM steps ([`TEMPLATE_FUEL`]), minijinja's recursion limit, and a
//! cap on the output's size ([`MAX_OUTPUT_BYTES`]). Not bounded: the memory of
//! values a template builds without writing them (a string doubled by `~` in
//! a loop of a few dozen steps); minijinja has no hook for that.

use std::{borrow::Cow, fmt::Write as _, io, sync::Arc, time::SystemTime};

use minijinja::{
    context, filters,
    value::{Kwargs, Object, ObjectRepr, Rest},
    Environment, Error as JinjaError, ErrorKind, State, Value,
};
use serde::Serialize;

use crate::error::{Error, ErrorCode, Result};

/// The VM steps one render may take. The 25 real templates we test against
/// (`template_tests.rs`) take at most 2,879 steps for a 42-message
/// conversation, 21 to 68 per message; this bound allows about 290,000
/// messages, yet a runaway loop stops within a second or two.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// The most bytes a render may write: the messages themselves plus this much.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;

/// One chat message. An assistant message may carry the calls it made
/// (`content` may then be empty), a `tool` message the id of the call it answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[cfg_attr(test, serde(default))]
    pub tool_calls: Vec<ToolCall>,
    #[cfg_attr(test, serde(default))]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of `role` with `content` and nothing else.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// A tool call: made by the model (`arguments` is the JSON text it wrote),
/// or carried back to it in an assistant message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
    /// How the template takes past calls' arguments and whether it shows
    /// tools at all; found by rendering probes, on first use.
    tool_use: std::sync::OnceLock<ToolSupport>,
}

/// What a template does with tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSupport {
    /// Whether the rendered prompt changes when tools are given.
    pub shows_tools: bool,
    /// Whether past calls' arguments go in as objects (Hugging Face's
    /// convention, for `| tojson`) rather than as their JSON text (for
    /// templates that concatenate them as strings).
    pub object_arguments: bool,
    /// Whether an assistant message that only calls tools has `content`
    /// None (OpenAI's null), rather than an empty string (for templates that
    /// use the content as a string).
    pub null_content: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

fn raise_exception(message: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// Python's `None`, which Hugging Face passes as `tools` and `documents` when
/// there are none. minijinja's own none iterates as an empty sequence where
/// jinja2 raises, so tool-use templates that loop over `tools` would render
/// for us what Hugging Face refuses. This one is falsy, `is none` (the test is
/// overridden to say so), prints `None`, is `null` to `tojson`, and is not
/// iterable.
#[derive(Debug)]
struct PyNone;

impl Object for PyNone {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn is_true(self: &Arc<Self>) -> bool {
        false
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("None")
    }
}

fn is_py_none(value: &Value) -> bool {
    value.downcast_object_ref::<PyNone>().is_some()
}

// jinja2's select/reject/selectattr/rejectattr/map give nothing for None
// (they test `if seq:` first); ours do the same for [`PyNone`].
type Filtered = std::result::Result<Vec<Value>, JinjaError>;

fn select(state: &State, v: Value, test: Option<Cow<'_, str>>, args: Rest<Value>) -> Filtered {
    if is_py_none(&v) {
        return Ok(Vec::new());
    }
    filters::select(state, v, test, args)
}

fn reject(state: &State, v: Value, test: Option<Cow<'_, str>>, args: Rest<Value>) -> Filtered {
    if is_py_none(&v) {
        return Ok(Vec::new());
    }
    filters::reject(state, v, test, args)
}

fn selectattr(state: &State, v: Value, attr: Cow<'_, str>, test: Option<Cow<'_, str>>, args: Rest<Value>) -> Filtered {
    if is_py_none(&v) {
        return Ok(Vec::new());
    }
    filters::selectattr(state, v, attr, test, args)
}

fn rejectattr(state: &State, v: Value, attr: Cow<'_, str>, test: Option<Cow<'_, str>>, args: Rest<Value>) -> Filtered {
    if is_py_none(&v) {
        return Ok(Vec::new());
    }
    filters::rejectattr(state, v, attr, test, args)
}

fn map(state: &State, v: Value, args: Rest<Value>) -> Filtered {
    if is_py_none(&v) {
        return Ok(Vec::new());
    }
    filters::map(state, v, args)
}

/// Where `strftime_now` reads the time.
#[derive(Clone, Copy)]
enum Clock {
    System,
    /// Fixed, in seconds since the Unix epoch (tests compare against a reference rendered at that time).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(i64),
}

impl Clock {
    fn unix_seconds(self) -> i64 {
        match self {
            Clock::System => SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
            Clock::Fixed(s) => s,
        }
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos: String, eos: String) -> Result<Self> {
        Self::with_clock(source, bos, eos, Clock::System)
    }

    fn with_clock(source: &str, bos: String, eos: String, clock: Clock) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Hugging Face compiles chat templates with these two on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", move |format: String| strftime(&format, clock.unix_seconds()));
        env.add_filter("tojson", tojson);
        env.add_test("none", |v: &Value| v.is_none() || is_py_none(v));
        env.add_filter("select", select);
        env.add_filter("reject", reject);
        env.add_filter("selectattr", selectattr);
        env.add_filter("rejectattr", rejectattr);
        env.add_filter("map", map);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::new(ErrorCode::ModelLoadFailed, format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, source: source.to_string(), bos, eos, tool_use: std::sync::OnceLock::new() })
    }

    /// Renders `messages`, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.render_measured(messages, None).map(|(text, _)| text)
    }

    /// Renders `messages` with `tools`, a list in Hugging Face's shape
    /// (`[{"type": "function", "function": {"name", "description", "parameters"}}]`),
    /// as `apply_chat_template(messages, tools=tools)` does.
    pub fn render_with_tools(&self, messages: &[ChatMessage], tools: &serde_json::Value) -> Result<String> {
        self.render_measured(messages, Some(tools)).map(|(text, _)| text)
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What the template does with tools (probed once).
    pub fn tool_support(&self) -> ToolSupport {
        *self.tool_use.get_or_init(|| {
            let user = ChatMessage::new("user", "What is the weather in Paris?");
            let tools = serde_json::json!([{ "type": "function", "function": {
                "name": "get_weather", "description": "The weather in a city.",
                "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
            let plain = self.render(std::slice::from_ref(&user)).ok();
            let shows_tools = self.render_with_tools(std::slice::from_ref(&user), &tools).ok().is_some_and(|t| Some(t) != plain);
            let call = ChatMessage {
                role: "assistant".into(),
                tool_calls: vec![ToolCall { id: "probe0001".into(), name: "get_weather".into(), arguments: r#"{"city": "Lyon"}"#.into() }],
                ..Default::default()
            };
            let result = ChatMessage { role: "tool".into(), content: "sunny".into(), tool_call_id: Some("probe0001".into()), ..Default::default() };
            // A whole round (the answer and the next question too): some
            // templates refuse a conversation that ends with a tool's result.
            let conversation = [user, call, result, ChatMessage::new("assistant", "It is sunny."), ChatMessage::new("user", "Thanks!")];
            // The first way of passing a past call that the template renders
            // with its arguments, in this order; else the first it renders
            // at all; else Hugging Face's.
            let ways = [(true, true), (false, true), (true, false), (false, false)];
            let rendered: Vec<Option<String>> = ways
                .iter()
                .map(|&(objects, null)| {
                    let template = self.env.get_template("chat").ok()?;
                    let ctx = self.context(&conversation, Some(&tools), ToolSupport { shows_tools, object_arguments: objects, null_content: null });
                    template.render(ctx).ok()
                })
                .collect();
            let way = rendered
                .iter()
                .position(|r| r.as_deref().is_some_and(|t| t.contains("\"Lyon\"")))
                .or_else(|| rendered.iter().position(Option::is_some))
                .unwrap_or(0);
            let (object_arguments, null_content) = ways[way];
            ToolSupport { shows_tools, object_arguments, null_content }
        })
    }

    /// The render context: messages in Hugging Face's shape, the special
    /// tokens, `tools` (Python's None without them) and `documents` (None).
    fn context(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>, calls: ToolSupport) -> Value {
        let messages: Vec<Value> = messages.iter().map(|m| message_value(m, calls)).collect();
        context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
            tools => tools.map_or_else(|| Value::from_object(PyNone), Value::from_serialize),
            documents => Value::from_object(PyNone),
        }
    }

    /// [`render`](Self::render), also returning the fuel the render used.
    fn render_measured(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<(String, u64)> {
        let template = self.env.get_template("chat").map_err(|e| Error::internal(e.to_string()))?;
        let size = |m: &ChatMessage| m.content.len() + m.role.len() + m.tool_calls.iter().map(|c| c.name.len() + c.arguments.len() + c.id.len()).sum::<usize>();
        let limit = MAX_OUTPUT_BYTES + messages.iter().map(size).sum::<usize>() + tools.map_or(0, |t| t.to_string().len());
        let mut out = CappedWriter { buf: Vec::new(), limit, overflowed: false };
        let calls = if messages.iter().all(|m| m.tool_calls.is_empty()) {
            ToolSupport { shows_tools: true, object_arguments: true, null_content: true }
        } else {
            self.tool_support()
        };
        let ctx = self.context(messages, tools, calls);
        let captured = template.render_captured_to(ctx, &mut out).map_err(|e| {
            Error::invalid(
                "messages",
                match e.kind() {
                    ErrorKind::OutOfFuel => format!("the chat template did not finish within {TEMPLATE_FUEL} steps (a runaway loop?)"),
                    ErrorKind::WriteFailure if out.overflowed => {
                        format!("the chat template's output exceeds {} bytes", out.limit)
                    }
                    _ => format!("the chat template rejected them: {e}"),
                },
            )
        })?;
        let used = captured.state().fuel_levels().map_or(0, |(used, _)| used);
        drop(captured);
        let text = String::from_utf8(out.buf).map_err(|_| Error::internal("chat template wrote invalid UTF-8"))?;
        Ok((text, used))
    }
}

/// A message as Hugging Face's templates see it: `role` and `content`
/// (for an assistant message that only calls tools, Python's None where the
/// template takes it, else an empty string), with
/// `tool_calls` (`[{"id", "type": "function", "function": {"name",
/// "arguments"}}]`) and `tool_call_id` only where the message has them, as
/// templates test for the keys themselves.
fn message_value(m: &ChatMessage, calls: ToolSupport) -> Value {
    let mut entries: Vec<(&str, Value)> = vec![("role", Value::from(m.role.as_str()))];
    let null = calls.null_content && m.content.is_empty() && !m.tool_calls.is_empty();
    let content = if null { Value::from_object(PyNone) } else { Value::from(m.content.as_str()) };
    entries.push(("content", content));
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = match serde_json::from_str::<serde_json::Value>(&c.arguments) {
                    Ok(v) if calls.object_arguments => Value::from_serialize(v),
                    _ => Value::from(c.arguments.as_str()),
                };
                let function = Value::from_iter([("name", Value::from(c.name.as_str())), ("arguments", arguments)]);
                Value::from_iter([("id", Value::from(c.id.as_str())), ("type", Value::from("function")), ("function", function)])
            })
            .collect();
        entries.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        entries.push(("tool_call_id", Value::from(id.as_str())));
    }
    Value::from_iter(entries)
}

/// Collects output, failing once it passes `limit` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("chat template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Python's `time.strftime` for the directives chat templates use, in UTC.
fn strftime(format: &str, unix_seconds: i64) -> std::result::Result<String, JinjaError> {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month_name = MONTHS[month as usize - 1];
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:>2}"),
            Some('B') => write!(out, "{month_name}"),
            Some('b') | Some('h') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{:02}", (hour + 11) % 12 + 1),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('F') => write!(out, "{year}-{month:02}-{day:02}"),
            Some('%') => write!(out, "%"),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{}", other.map(String::from).unwrap_or_default()),
                ))
            }
        };
    }
    Ok(out)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The `tojson` filter Hugging Face installs: Python's
/// `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let options = JsonOptions { indent, sort_keys: sort_keys.unwrap_or(false), ensure_ascii: ensure_ascii.unwrap_or(false) };
    let mut out = String::new();
    write_json(&mut out, &value, &options, 0)?;
    Ok(Value::from(out))
}

struct JsonOptions {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(out: &mut String, value: &Value, o: &JsonOptions, depth: usize) -> std::result::Result<(), JinjaError> {
    use minijinja::value::ValueKind;
    if depth > 100 {
        return Err(JinjaError::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = o.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    // Python's separators: ", " and ": " without indent, "," and ": " with it.
    let item_sep = if o.indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        _ if is_py_none(value) => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone()).unwrap_or(f64::NAN);
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => json_string(out, value.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, o, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    ValueKind::Number if key.is_integer() => key.to_string(),
                    ValueKind::Number => python_float(f64::try_from(key.clone()).unwrap_or(f64::NAN)),
                    _ => return Err(JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: keys must be str, int, float, bool or None, not {}", key.kind()))),
                };
                entries.push((key, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                json_string(out, key, o.ensure_ascii);
                out.push_str(": ");
                write_json(out, item, o, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        kind => return Err(JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: a {kind} is not JSON serializable"))),
    }
    Ok(())
}

/// A JSON string literal as Python's `json.dumps` writes it.
fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, `1.0` not `1`,
/// exponent form below 1e-4 and from 1e16.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust's `{:e}` gives e.g. "1e20" / "1.5e-7"; Python writes "1e+20" / "1.5e-07".
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
pub(crate) mod reference_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::new("user", text)
    }

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            String::new(),
            "<|im_end|>".into(),
        )
        .unwrap();
        let out = t.render(&[user(" hi ")]).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn blocks_are_trimmed_as_in_hugging_face() {
        let t = ChatTemplate::new("  {% for m in messages %}\n[{{ m.content }}]\n  {% endfor %}\n{% if tools is none %}none{% endif %}", String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[user("a"), user("b")]).unwrap(), "[a]\n[b]\nnone");
    }

    #[test]
    fn tools_are_python_none() {
        let t = ChatTemplate::new(
            "{% if not tools and tools is none and tools is defined and not (tools is not none) %}{{ tools }} {{ tools | tojson }}{% endif %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(t.render(&[]).unwrap(), "None null");
        // jinja2's select & co. give nothing for None; a loop over None fails.
        let t = ChatTemplate::new(
            "{{ tools | selectattr('type', 'equalto', 'x') | list | length }}{{ tools | rejectattr('a') | list }}{{ tools | map('upper') | list }}{{ tools | select | list }}{{ tools | reject | list }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(t.render(&[]).unwrap(), "0[][][][]");
        let t = ChatTemplate::new("{% for tool in tools %}{{ tool }}{% endfor %}", String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[]).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn raise_exception_becomes_an_invalid_argument() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", String::new(), String::new()).unwrap();
        let e = t.render(&[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("no system role"), "{}", e.message);
    }

    #[test]
    fn a_template_that_does_not_compile_fails_the_load() {
        let e = ChatTemplate::new("{% for m in messages %}", String::new(), String::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelLoadFailed);
    }

    #[test]
    fn an_endless_loop_runs_out_of_fuel() {
        // Each range stays under minijinja's 100,000-element cap; together they are 10^10 steps.
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = t.render(&[user("hi")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.starts_with("messages: ") && e.message.contains("steps"), "{}", e.message);
        assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
    }

    #[test]
    fn endless_recursion_is_stopped() {
        let t = ChatTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", String::new(), String::new()).unwrap();
        let e = t.render(&[user("hi")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("recursion"), "{}", e.message);
    }

    #[test]
    fn output_is_capped() {
        // 2,000 x 10 MB: few steps, far more output than allowed.
        let t = ChatTemplate::new("{% for i in range(2000) %}{{ 'x' * 10000000 }}{% endfor %}", String::new(), String::new()).unwrap();
        let e = t.render(&[user("hi")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("output exceeds"), "{}", e.message);
        // The cap grows with the messages, so long conversations still render.
        let echo = ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}", String::new(), String::new()).unwrap();
        let long = "y".repeat(MAX_OUTPUT_BYTES + 10);
        assert_eq!(echo.render(&[user(&long)]).unwrap().len(), long.len());
    }

    #[test]
    fn fuel_is_measured() {
        let t = ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}", String::new(), String::new()).unwrap();
        let (_, short) = t.render_measured(&[user("a")], None).unwrap();
        let (_, long) = t.render_measured(&vec![user("a"); 100], None).unwrap();
        assert!(short > 0 && long > short * 10, "{short} {long}");
    }

    #[test]
    fn strftime_matches_python() {
        // 2024-07-05 09:03:07 UTC, a Friday.
        let t = 1_720_170_187;
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "05 Jul 2024");
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %A %a %B %y %I%p %%", t).unwrap(), "2024-07-05 09:03:07 Friday Fri July 24 09AM %");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert!(strftime("%Q", t).is_err());
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ {'a': [1, 2.5, none, true], 'b': 'q\"\\\\é\n\u{1}', 'c': {}, 'd': 1.0} | tojson }}|{{ [1, {'x': 'y'}] | tojson(indent=2) }}|{{ 1e20 | tojson }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(
            t.render(&[]).unwrap(),
            "{\"a\": [1, 2.5, null, true], \"b\": \"q\\\"\\\\é\\n\\u0001\", \"c\": {}, \"d\": 1.0}|[\n  1,\n  {\n    \"x\": \"y\"\n  }\n]|1e+20"
        );
    }
}
