//! Generated text to content and tool calls, as it streams. Text before a
//! format's first marker is content; from the marker on it is the calls'
//! region, parsed again as it grows (calls are short) into calls whose name
//! and arguments stream out as deltas. The arguments of a call are the JSON
//! text the model wrote, byte for byte.

use super::{
    format::{Shape, Start, ToolFormat},
    ToolCall, ToolCallDelta,
};

/// What a piece of generated text became.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// Content to show (never part of a call).
    pub text: String,
    pub deltas: Vec<ToolCallDelta>,
    /// Set on the piece in which a call began: which of the format's
    /// variants ([`ToolFormat::variants`]) it is written in, and the
    /// region's text so far (a constraint that starts there replays it).
    pub began: Option<(usize, String)>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Content; text that may begin a call is held back.
    Text,
    /// The calls' region.
    Calls,
}

/// One request's parser.
pub struct CallStream {
    /// The format the calls are written in: the family's first variant until
    /// a call begins, then the one it began in.
    format: ToolFormat,
    variants: Vec<ToolFormat>,
    /// The offered tools' names: an answer that is a call must name one.
    names: Vec<String>,
    /// Whether content was shown already (a call that is the whole answer can no longer begin).
    shown: bool,
    state: State,
    held: String,
    region: String,
    /// Per call seen: its id, and the bytes of its arguments sent so far
    /// (`None` until its name was sent).
    sent: Vec<(String, Option<usize>)>,
}

impl CallStream {
    /// A parser for calls in `format` to the tools `names` (any name where empty).
    pub fn new(format: ToolFormat, names: Vec<String>) -> Self {
        CallStream { format, variants: format.variants(), names, shown: false, state: State::Text, held: String::new(), region: String::new(), sent: Vec::new() }
    }

    /// Whether the calls' region has begun.
    pub fn in_calls(&self) -> bool {
        self.state == State::Calls
    }

    /// Takes the next piece of generated text.
    pub fn push(&mut self, text: &str) -> Piece {
        let mut piece = Piece::default();
        if self.state == State::Calls {
            self.region.push_str(text);
            piece.deltas = self.deltas();
            return piece;
        }
        self.held.push_str(text);
        // Where a call begins (the earliest), else how much may still begin one.
        let mut begins: Option<(usize, usize)> = None;
        let mut keep_from = self.held.len();
        for (v, variant) in self.variants.iter().enumerate() {
            let (at, hold) = match variant.start {
                Start::Marker => {
                    let trigger = variant.trigger();
                    match self.held.find(trigger) {
                        Some(at) => (Some(at), at),
                        None => (None, self.held.len() - partial_suffix(&self.held, trigger)),
                    }
                }
                Start::Answer { .. } if self.shown => (None, self.held.len()),
                Start::Answer { fence } => match answer_opening(&self.held, fence, variant.name_key().unwrap_or("name"), &self.names) {
                    Opening::Is(at) => (Some(at), at),
                    Opening::Maybe => (None, 0),
                    Opening::Not => (None, self.held.len()),
                },
            };
            if let Some(at) = at {
                if begins.is_none_or(|(b, _)| at < b) {
                    begins = Some((at, v));
                }
            }
            keep_from = keep_from.min(hold);
        }
        match begins {
            Some((at, v)) => {
                piece.text = self.held[..at].to_string();
                self.format = self.variants[v];
                self.region = self.held[at..].to_string();
                self.held.clear();
                self.state = State::Calls;
                piece.began = Some((v, self.region.clone()));
                piece.deltas = self.deltas();
            }
            None => {
                piece.text = self.held[..keep_from].to_string();
                self.held.drain(..keep_from);
            }
        }
        self.shown |= !piece.text.trim().is_empty();
        piece
    }

    /// The end of the text: content still held back, and the complete calls.
    /// A region in which no call was recognised (none streamed a name) is
    /// given back as content: it was text that only began like a call.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let mut text = std::mem::take(&mut self.held);
        if self.state != State::Calls {
            return (text, Vec::new());
        }
        let calls: Vec<ToolCall> = parse(&self.format, &self.region)
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.complete)
            .filter_map(|(i, c)| {
                let name = c.name?;
                let arguments = self.region[c.args.0..c.args.1?].to_string();
                let id = self.sent.get(i).map(|s| s.0.clone()).unwrap_or_else(|| self.format.new_id());
                Some(ToolCall { id, name, arguments })
            })
            .collect();
        if calls.is_empty() && self.sent.iter().all(|(_, sent)| sent.is_none()) {
            text.push_str(&std::mem::take(&mut self.region));
        }
        (text, calls)
    }

    /// Deltas for what the region shows now beyond what was sent.
    fn deltas(&mut self) -> Vec<ToolCallDelta> {
        let mut out = Vec::new();
        for (index, call) in parse(&self.format, &self.region).into_iter().enumerate() {
            if index == self.sent.len() {
                self.sent.push((self.format.new_id(), None));
            }
            let Some(name) = call.name else { break };
            let (id, sent) = &mut self.sent[index];
            if sent.is_none() {
                out.push(ToolCallDelta { index, id: Some(id.clone()), name: Some(name), arguments: String::new() });
                *sent = Some(0);
            }
            let end = call.args.1.unwrap_or(self.region.len());
            let done = sent.expect("set above");
            if call.args.0 + done < end {
                let from = call.args.0 + done;
                out.push(ToolCallDelta { index, id: None, name: None, arguments: self.region[from..end].to_string() });
                *sent = Some(end - call.args.0);
            }
        }
        out
    }
}

enum Opening {
    /// A call that is the whole answer begins at this offset.
    Is(usize),
    /// It may yet: hold the text.
    Maybe,
    Not,
}

/// Whether `s`, the answer so far, opens a call written as the answer:
/// whitespace, `fence` (where set), whitespace, `{`, whitespace, the name's
/// key and one of `names` (any, where empty) as its value. A JSON answer
/// whose first key is only called the same stays text.
fn answer_opening(s: &str, fence: Option<&str>, name_key: &str, names: &[String]) -> Opening {
    let body = s.trim_start();
    let at = s.len() - body.len();
    let mut rest = body;
    if let Some(fence) = fence {
        if let Some(r) = rest.strip_prefix(fence) {
            rest = r;
        } else {
            return if fence.starts_with(rest) { Opening::Maybe } else { Opening::Not };
        }
    }
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix('{') else {
        return if rest.is_empty() { Opening::Maybe } else { Opening::Not };
    };
    let rest = rest.trim_start();
    let key = format!("\"{name_key}\"");
    let Some(rest) = rest.strip_prefix(&key) else {
        return if key.starts_with(rest) { Opening::Maybe } else { Opening::Not };
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return if rest.is_empty() { Opening::Maybe } else { Opening::Not };
    };
    let rest = rest.trim_start();
    let Some(value) = rest.strip_prefix('"') else {
        return if rest.is_empty() { Opening::Maybe } else { Opening::Not };
    };
    let any = names.is_empty();
    match value.find(['"', '\\']) {
        Some(end) if value.as_bytes()[end] == b'"' => {
            if any || names.iter().any(|n| n == &value[..end]) {
                Opening::Is(at)
            } else {
                Opening::Not
            }
        }
        Some(_) => Opening::Not,
        None if any || names.iter().any(|n| n.starts_with(value)) => Opening::Maybe,
        None => Opening::Not,
    }
}

/// The longest end of `s` that begins `trigger` (without being all of it),
/// on a character boundary.
fn partial_suffix(s: &str, trigger: &str) -> usize {
    (1..trigger.len().min(s.len() + 1))
        .rev()
        .find(|&k| s.is_char_boundary(s.len() - k) && trigger.is_char_boundary(k) && s.ends_with(&trigger[..k]))
        .unwrap_or(0)
}

/// A call as far as the region shows it.
#[derive(Debug, PartialEq, Eq)]
struct Partial {
    name: Option<String>,
    /// Where its arguments start, and end once they are complete; the
    /// start is the region's end while unknown.
    args: (usize, Option<usize>),
    /// Its arguments and closing marker are there.
    complete: bool,
}

/// The calls in a region (the last one possibly partial). Text that breaks
/// the format ends the parse.
fn parse(f: &ToolFormat, s: &str) -> Vec<Partial> {
    let mut calls = Vec::new();
    let mut pos = 0;
    if !expect(s, &mut pos, f.section_open) {
        return calls;
    }
    loop {
        if !calls.is_empty() && !expect(s, &mut pos, f.separator) {
            break;
        }
        if !expect(s, &mut pos, f.call_open) {
            break;
        }
        let (mut call, end) = match f.shape {
            Shape::Object { name_key, args_key, .. } => object_call(s, pos, name_key, args_key),
            Shape::Named { after_name, numbered } => named_call(s, pos, after_name, numbered),
        };
        let Some(mut end) = end else {
            calls.push(call);
            break;
        };
        call.complete = expect(s, &mut end, f.call_close);
        let complete = call.complete;
        calls.push(call);
        if !complete {
            break;
        }
        pos = end;
    }
    calls
}

/// Advances past `marker` if `s` has it at `pos`.
fn expect(s: &str, pos: &mut usize, marker: &str) -> bool {
    if s[*pos..].starts_with(marker) {
        *pos += marker.len();
        true
    } else {
        false
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// A call written as a JSON object at `pos`: its name, its arguments' span
/// and the object's end.
fn object_call(s: &str, pos: usize, name_key: &str, args_key: &str) -> (Partial, Option<usize>) {
    let b = s.as_bytes();
    let mut call = Partial { name: None, args: (s.len(), None), complete: false };
    let mut i = skip_ws(b, pos);
    if b.get(i) != Some(&b'{') {
        return (call, None);
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'}') => return (call, Some(i + 1)),
            Some(b',') => i = skip_ws(b, i + 1),
            Some(_) => {}
            None => return (call, None),
        }
        let Some(key_end) = scan_value(b, i) else { return (call, None) };
        let key: Option<String> = serde_json::from_str(&s[i..key_end]).ok();
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return (call, None);
        }
        i = skip_ws(b, i + 1);
        if i >= b.len() {
            return (call, None);
        }
        let end = scan_value(b, i);
        match key.as_deref() {
            Some(k) if k == name_key => call.name = end.and_then(|e| serde_json::from_str(&s[i..e]).ok()),
            // A model may use the other common name for the arguments.
            Some(k) if k == args_key || (call.args.1.is_none() && matches!(k, "arguments" | "parameters")) => call.args = (i, end),
            _ => {}
        }
        match end {
            Some(e) => i = e,
            None => return (call, None),
        }
    }
}

/// A call written as its name, `after_name` and the JSON arguments.
fn named_call(s: &str, pos: usize, after_name: &str, numbered: bool) -> (Partial, Option<usize>) {
    let mut call = Partial { name: None, args: (s.len(), None), complete: false };
    let Some(marker) = s[pos..].find(after_name).map(|m| pos + m) else { return (call, None) };
    let mut name = &s[pos..marker];
    if numbered {
        match name.rsplit_once(':') {
            Some((n, index)) if !index.is_empty() && index.bytes().all(|c| c.is_ascii_digit()) => name = n,
            _ => return (call, None),
        }
    }
    call.name = Some(name.to_string());
    let start = marker + after_name.len();
    let end = scan_value(s.as_bytes(), start);
    call.args = (start, end);
    (call, end)
}

/// The end of the JSON value starting at `i`, once all of it is there.
fn scan_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
            None
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = scan_value(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number or a literal: complete once something follows it.
            let j = i + b[i..].iter().position(|c| !matches!(c, b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'))?;
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::format::*;

    /// Feeds `text` in pieces of `n` bytes (on character boundaries).
    fn run(format: ToolFormat, text: &str, n: usize) -> (String, Vec<ToolCallDelta>, Vec<ToolCall>) {
        let mut stream = CallStream::new(format, Vec::new());
        let (mut content, mut deltas) = (String::new(), Vec::new());
        let mut rest = text;
        while !rest.is_empty() {
            let mut k = n.min(rest.len());
            while !rest.is_char_boundary(k) {
                k += 1;
            }
            let piece = stream.push(&rest[..k]);
            content.push_str(&piece.text);
            deltas.extend(piece.deltas);
            rest = &rest[k..];
        }
        let (tail, calls) = stream.finish();
        content.push_str(&tail);
        (content, deltas, calls)
    }

    /// The deltas of each call, put back together: (id, name, arguments).
    fn joined(deltas: &[ToolCallDelta]) -> Vec<(String, String, String)> {
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for d in deltas {
            if d.index == calls.len() {
                calls.push((d.id.clone().expect("first delta has the id"), d.name.clone().expect("and the name"), String::new()));
            } else {
                assert!(d.id.is_none() && d.name.is_none());
            }
            calls[d.index].2.push_str(&d.arguments);
        }
        calls
    }

    fn check(format: ToolFormat, text: &str, content: &str, want: &[(&str, &str)]) {
        for n in [1, 2, 3, 7, 1000] {
            let (got, deltas, calls) = run(format, text, n);
            assert_eq!(got, content, "{} in pieces of {n}", format.family);
            let got: Vec<(&str, &str)> = calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect();
            assert_eq!(got, want, "{} in pieces of {n}", format.family);
            let streamed = joined(&deltas);
            assert!(streamed.len() >= calls.len(), "every call streamed");
            for (s, c) in streamed.iter().zip(&calls) {
                assert_eq!((&s.0, &s.1, &s.2), (&c.id, &c.name, &c.arguments), "deltas add up to the call");
            }
        }
    }

    #[test]
    fn hermes_calls_after_some_text() {
        check(
            HERMES,
            "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris \\\"}\\\" ü\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
            "Let me look.\n",
            &[("get_weather", r#"{"city": "Paris \"}\" ü"}"#), ("now", "{}")],
        );
    }

    #[test]
    fn text_that_only_looks_like_a_marker_is_content() {
        check(HERMES, "a <tool_ca b <tool and < done", "a <tool_ca b <tool and < done", &[]);
        // A region in which no call was recognised is given back as content;
        // a call cut short (maxTokens) streamed its deltas and is not complete.
        check(HERMES, "x <tool_call>\nnot a call", "x <tool_call>\nnot a call", &[]);
        check(HERMES, "x <tool_call>\n{\"name\": \"f\", \"argu", "x ", &[]);
    }

    #[test]
    fn llama3_answers_that_are_a_json_object_are_calls() {
        check(LLAMA3, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": 3}}", " ", &[("get_weather", r#"{"city": "Oslo", "days": 3}"#)]);
        check(LLAMA3, "The answer is {x}.", "The answer is {x}.", &[]);
        check(LLAMA3, "{\"city\": \"Oslo\"}", "{\"city\": \"Oslo\"}", &[]);
    }

    #[test]
    fn hermes_calls_written_as_the_answer_or_its_fenced_block() {
        let pretty = "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\n    \"city\": \"Paris\"\n  }\n}\n```";
        check(HERMES, pretty, "", &[("get_weather", "{\n    \"city\": \"Paris\"\n  }")]);
        check(HERMES, "{\"name\": \"now\", \"arguments\": {}}", "", &[("now", "{}")]);
        // JSON or code that is not a call stays content.
        check(HERMES, "```json\n{\"a\": 1}\n```", "```json\n{\"a\": 1}\n```", &[]);
        check(HERMES, "```python\nprint(1)\n```", "```python\nprint(1)\n```", &[]);
        // Once content was shown, only the marked form begins a call.
        check(HERMES, "Sure: {\"name\": \"now\", \"arguments\": {}}", "Sure: {\"name\": \"now\", \"arguments\": {}}", &[]);
    }

    #[test]
    fn a_json_answer_is_a_call_only_when_it_names_an_offered_tool() {
        let run = |text: &str| {
            let mut s = CallStream::new(HERMES, vec!["get_weather".into(), "now".into()]);
            let mut content = String::new();
            for c in text.chars() {
                content.push_str(&s.push(&c.to_string()).text);
            }
            let (rest, calls) = s.finish();
            (content + &rest, calls.len())
        };
        assert_eq!(run("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}"), (String::new(), 1));
        let person = "{\"name\": \"John\", \"age\": 30}";
        assert_eq!(run(person), (person.to_string(), 0));
        let fenced = "```json\n{\"name\": \"nowhere\"}\n```";
        assert_eq!(run(fenced), (fenced.to_string(), 0));
    }

    #[test]
    fn mistral_lists_and_named_calls() {
        check(
            MISTRAL,
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": null}]}}, {\"name\": \"b\", \"arguments\": {}}]",
            "",
            &[("a", r#"{"x": [1, {"y": null}]}"#), ("b", "{}")],
        );
        check(MISTRAL_ARGS, "[TOOL_CALLS]a[ARGS]{\"x\": 1}[TOOL_CALLS]b[ARGS]{}", "", &[("a", r#"{"x": 1}"#), ("b", "{}")]);
        check(COMMAND_R7B, "<|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"f\", \"parameters\": {\"q\": true}}\n]<|END_ACTION|>", "", &[("f", r#"{"q": true}"#)]);
    }

    #[test]
    fn named_formats_with_markers_around_names() {
        check(FUNCTIONARY, "<function=get_time>{\"tz\": \"UTC\"}</function>", "", &[("get_time", r#"{"tz": "UTC"}"#)]);
        check(
            DEEPSEEK_R1,
            "ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "ok",
            &[("f", r#"{"a": 1}"#)],
        );
        check(
            KIMI_K2,
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|><|tool_call_begin|>functions.g:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>",
            "",
            &[("f", r#"{"a": 1}"#), ("g", "{}")],
        );
    }

    #[test]
    fn the_region_begins_once_and_reports_its_text() {
        let mut s = CallStream::new(HERMES, Vec::new());
        assert_eq!(s.push("Hi <tool").text, "Hi ");
        let p = s.push("_call>\n{");
        assert_eq!(p.began, Some((0, "<tool_call>\n{".to_string())));
        assert!(s.in_calls());
        assert_eq!(s.push("\"name\"").began, None);
    }
}
