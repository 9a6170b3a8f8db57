//! How model families write tool calls, as data: the markers around a list
//! of calls and around each call, and what a call is inside them (a JSON
//! object naming the tool, or the tool's name followed by its JSON
//! arguments). The grammar and the parser are both derived from it, so the
//! output a grammar allows is the output the parser reads.
//!
//! The family is recognised from the chat template's source: the template
//! shows the model (and renders past calls in) its own format.

/// What one call looks like between its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON object: `{"<name_key>": "get_weather", "<args_key>": {...}}`,
    /// with first, where `id_key` is set, `"<id_key>": "<call index>"`.
    Object { name_key: &'static str, args_key: &'static str, id_key: Option<&'static str> },
    /// The tool's name, then `after_name` (with `":<call index>"` before it
    /// where `numbered`), then the JSON arguments.
    Named { after_name: &'static str, numbered: bool },
}

/// How a call shows that it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its first marker (the section's, else the call's), anywhere in the answer.
    Marker,
    /// The answer itself is the call: it begins (after `fence`, where set)
    /// with a JSON object whose first key is the name's.
    Answer { fence: Option<&'static str> },
}

/// How a format's call ids look (templates that render past calls check them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStyle {
    /// `call_` and 24 letters or digits, as OpenAI writes them.
    OpenAi,
    /// 9 letters or digits (Mistral's templates refuse any other id).
    Nine,
}

/// A family's tool-call format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolFormat {
    /// The family, for logs and docs.
    pub family: &'static str,
    /// Before the first call, once (e.g. `[TOOL_CALLS][`).
    pub section_open: &'static str,
    /// After the last call, once.
    pub section_close: &'static str,
    /// Before each call (e.g. `<tool_call>\n`).
    pub call_open: &'static str,
    /// After each call.
    pub call_close: &'static str,
    /// Between two calls.
    pub separator: &'static str,
    pub shape: Shape,
    /// Several calls in one answer.
    pub parallel: bool,
    pub ids: IdStyle,
    pub start: Start,
    /// JSON in any layout (a model writes it pretty-printed), not on one line.
    pub loose_json: bool,
    /// Other ways models of the family write a call, recognised too (never
    /// asked for: a required call is written the first way).
    pub alternates: &'static [ToolFormat],
}

const fn object(name_key: &'static str, args_key: &'static str) -> Shape {
    Shape::Object { name_key, args_key, id_key: None }
}

/// Qwen2.5, Qwen3, QwQ, Hermes 2 Pro / Hermes 3; also the format used where
/// a template shows no tool format of its own (Hermes' is the most widely
/// trained one).
pub const HERMES: ToolFormat = ToolFormat {
    family: "hermes",
    section_open: "",
    section_close: "",
    call_open: "<tool_call>\n",
    call_close: "\n</tool_call>",
    separator: "\n",
    shape: object("name", "arguments"),
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[HERMES_ANSWER, HERMES_FENCED],
};

/// A Hermes-family call written as the whole answer: `{"name": ..., "arguments": ...}`
/// (small Qwen2.5 models often write their calls so).
const HERMES_ANSWER: ToolFormat = ToolFormat {
    family: "hermes",
    section_open: "",
    section_close: "",
    call_open: "",
    call_close: "",
    separator: "",
    shape: object("name", "arguments"),
    parallel: false,
    ids: IdStyle::OpenAi,
    start: Start::Answer { fence: None },
    loose_json: true,
    alternates: &[],
};

/// A Hermes-family call written as the answer's fenced JSON block.
const HERMES_FENCED: ToolFormat = ToolFormat {
    family: "hermes",
    section_open: "```json\n",
    section_close: "\n```",
    call_open: "",
    call_close: "",
    separator: "",
    shape: object("name", "arguments"),
    parallel: false,
    ids: IdStyle::OpenAi,
    start: Start::Answer { fence: Some("```json\n") },
    loose_json: true,
    alternates: &[],
};

/// Llama 3.1 / 3.2 / 3.3: the answer is one JSON object.
pub const LLAMA3: ToolFormat = ToolFormat {
    family: "llama3",
    section_open: "",
    section_close: "",
    call_open: "",
    call_close: "",
    separator: "",
    shape: object("name", "parameters"),
    parallel: false,
    ids: IdStyle::OpenAi,
    start: Start::Answer { fence: None },
    loose_json: false,
    alternates: &[],
};

/// Mistral Nemo and the v3 tokenizer family: a JSON list after `[TOOL_CALLS]`.
pub const MISTRAL: ToolFormat = ToolFormat {
    family: "mistral",
    section_open: "[TOOL_CALLS][",
    section_close: "]",
    call_open: "",
    call_close: "",
    separator: ", ",
    shape: object("name", "arguments"),
    parallel: true,
    ids: IdStyle::Nine,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// Mistral Small 3.2, Devstral, Magistral: `[TOOL_CALLS]name[ARGS]{...}` per call.
pub const MISTRAL_ARGS: ToolFormat = ToolFormat {
    family: "mistral-args",
    section_open: "",
    section_close: "",
    call_open: "[TOOL_CALLS]",
    call_close: "",
    separator: "",
    shape: Shape::Named { after_name: "[ARGS]", numbered: false },
    parallel: true,
    ids: IdStyle::Nine,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// IBM Granite 3.x: a JSON list after `<|tool_call|>`.
pub const GRANITE: ToolFormat = ToolFormat {
    family: "granite",
    section_open: "<|tool_call|>[",
    section_close: "]",
    call_open: "",
    call_close: "",
    separator: ", ",
    shape: object("name", "arguments"),
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// FireFunction v2: a JSON list after ` functools`.
pub const FIREFUNCTION: ToolFormat = ToolFormat {
    family: "firefunction",
    section_open: " functools[",
    section_close: "]",
    call_open: "",
    call_close: "",
    separator: ", ",
    shape: object("name", "arguments"),
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// Cohere Command R7B: a JSON list between `<|START_ACTION|>` and `<|END_ACTION|>`.
pub const COMMAND_R7B: ToolFormat = ToolFormat {
    family: "command-r7b",
    section_open: "<|START_ACTION|>[\n    ",
    section_close: "\n]<|END_ACTION|>",
    call_open: "",
    call_close: "",
    separator: ",\n    ",
    shape: Shape::Object { name_key: "tool_name", args_key: "parameters", id_key: Some("tool_call_id") },
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// Functionary v3.1 (Llama 3.1 based): `<function=name>{...}</function>`.
pub const FUNCTIONARY: ToolFormat = ToolFormat {
    family: "functionary-v3.1",
    section_open: "",
    section_close: "",
    call_open: "<function=",
    call_close: "</function>",
    separator: "",
    shape: Shape::Named { after_name: ">", numbered: false },
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// DeepSeek R1 (and its distills): calls between `<｜tool▁calls▁begin｜>` and
/// `<｜tool▁calls▁end｜>`, each a fenced JSON block after the name.
pub const DEEPSEEK_R1: ToolFormat = ToolFormat {
    family: "deepseek-r1",
    section_open: "<｜tool▁calls▁begin｜>",
    section_close: "<｜tool▁calls▁end｜>",
    call_open: "<｜tool▁call▁begin｜>function<｜tool▁sep｜>",
    call_close: "\n```<｜tool▁call▁end｜>",
    separator: "\n",
    shape: Shape::Named { after_name: "\n```json\n", numbered: false },
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

/// Kimi K2: `<|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{...}<|tool_call_end|>`.
pub const KIMI_K2: ToolFormat = ToolFormat {
    family: "kimi-k2",
    section_open: "<|tool_calls_section_begin|>",
    section_close: "<|tool_calls_section_end|>",
    call_open: "<|tool_call_begin|>functions.",
    call_close: "<|tool_call_end|>",
    separator: "",
    shape: Shape::Named { after_name: "<|tool_call_argument_begin|>", numbered: true },
    parallel: true,
    ids: IdStyle::OpenAi,
    start: Start::Marker,
    loose_json: false,
    alternates: &[],
};

impl ToolFormat {
    /// The format a chat template shows its model, or `None` when it shows
    /// none we know (then [`HERMES`] is used, and the tools are described to
    /// the model in a system message where the template ignores them).
    pub fn of_template(source: &str) -> Option<ToolFormat> {
        // The first marker the template holds decides (`[ARGS]` before
        // `[TOOL_CALLS]`: Mistral's newer format writes both).
        const MARKERS: [(&str, ToolFormat); 10] = [
            ("<tool_call>", HERMES),
            ("[ARGS]", MISTRAL_ARGS),
            ("[TOOL_CALLS]", MISTRAL),
            ("<|tool_call|>", GRANITE),
            ("functools[", FIREFUNCTION),
            ("<|START_ACTION|>", COMMAND_R7B),
            ("<function=", FUNCTIONARY),
            ("tool\u{2581}calls\u{2581}begin", DEEPSEEK_R1),
            ("<|tool_calls_section_begin|>", KIMI_K2),
            ("\"parameters\": dictionary of argument name", LLAMA3),
        ];
        MARKERS.iter().find(|(marker, _)| source.contains(marker)).map(|&(_, format)| format)
    }

    /// The text that shows a call has begun ([`Start::Marker`]): the
    /// section's opening marker, else the call's.
    pub fn trigger(&self) -> &'static str {
        if !self.section_open.is_empty() {
            self.section_open
        } else {
            self.call_open
        }
    }

    /// The format and its alternates, the format first.
    pub fn variants(&self) -> Vec<ToolFormat> {
        std::iter::once(*self).chain(self.alternates.iter().copied()).collect()
    }

    /// The name's key of an object-shaped call.
    pub fn name_key(&self) -> Option<&'static str> {
        match self.shape {
            Shape::Object { name_key, id_key: None, .. } => Some(name_key),
            Shape::Object { id_key: Some(id), .. } => Some(id),
            Shape::Named { .. } => None,
        }
    }

    /// A new call id in this format's style.
    pub fn new_id(&self) -> String {
        use rand::{distr::Alphanumeric, Rng};
        let random = |n: usize| rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect::<String>();
        match self.ids {
            IdStyle::OpenAi => format!("call_{}", random(24)),
            IdStyle::Nine => random(9),
        }
    }
}

/// Each format with two calls written in it (`get_weather` for Paris, then
/// `now` without arguments; one call where the format has no parallel calls).
#[cfg(test)]
pub fn format_examples() -> Vec<(ToolFormat, String)> {
    let weather = r#"{"city": "Paris"}"#;
    vec![
        (HERMES, format!("<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {weather}}}\n</tool_call>\n<tool_call>\n{{\"name\": \"now\", \"arguments\": {{}}}}\n</tool_call>")),
        (LLAMA3, format!("{{\"name\": \"get_weather\", \"parameters\": {weather}}}")),
        (MISTRAL, format!("[TOOL_CALLS][{{\"name\": \"get_weather\", \"arguments\": {weather}}}, {{\"name\": \"now\", \"arguments\": {{}}}}]")),
        (MISTRAL_ARGS, format!("[TOOL_CALLS]get_weather[ARGS]{weather}[TOOL_CALLS]now[ARGS]{{}}")),
        (GRANITE, format!("<|tool_call|>[{{\"name\": \"get_weather\", \"arguments\": {weather}}}, {{\"name\": \"now\", \"arguments\": {{}}}}]")),
        (FIREFUNCTION, format!(" functools[{{\"name\": \"get_weather\", \"arguments\": {weather}}}, {{\"name\": \"now\", \"arguments\": {{}}}}]")),
        (
            COMMAND_R7B,
            format!("<|START_ACTION|>[\n    {{\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {weather}}},\n    {{\"tool_call_id\": \"1\", \"tool_name\": \"now\", \"parameters\": {{}}}}\n]<|END_ACTION|>"),
        ),
        (FUNCTIONARY, format!("<function=get_weather>{weather}</function><function=now>{{}}</function>")),
        (
            DEEPSEEK_R1,
            format!("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{weather}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{{}}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        ),
        (
            KIMI_K2,
            format!("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{weather}<|tool_call_end|><|tool_call_begin|>functions.now:1<|tool_call_argument_begin|>{{}}<|tool_call_end|><|tool_calls_section_end|>"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser reads back what each format writes.
    #[test]
    fn every_format_parses_its_own_calls() {
        for (format, text) in format_examples() {
            let mut stream = crate::tools::CallStream::new(format, Vec::new());
            let piece = stream.push(&text);
            assert!(piece.text.is_empty(), "{}: {:?}", format.family, piece.text);
            let (rest, calls) = stream.finish();
            assert!(rest.is_empty(), "{}: {rest:?}", format.family);
            let got: Vec<(&str, &str)> = calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect();
            let mut want = vec![("get_weather", r#"{"city": "Paris"}"#), ("now", "{}")];
            want.truncate(if format.parallel { 2 } else { 1 });
            assert_eq!(got, want, "{}", format.family);
        }
    }

    #[test]
    fn ids_have_the_style_templates_check() {
        let id = MISTRAL.new_id();
        assert!(id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        let id = HERMES.new_id();
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
        assert_ne!(HERMES.new_id(), HERMES.new_id());
    }

    /// Every template we ship that takes tools is recognised as its family.
    #[test]
    fn the_shipped_templates_are_recognised() {
        let Some(dir) = crate::tokenizer::llama_cpp_data() else { return };
        let expect = [
            ("Qwen-Qwen2.5-7B-Instruct.jinja", Some("hermes")),
            ("Qwen-Qwen3-0.6B.jinja", Some("hermes")),
            ("Qwen-QwQ-32B.jinja", Some("hermes")),
            ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", Some("hermes")),
            ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", Some("hermes")),
            ("meta-llama-Llama-3.1-8B-Instruct.jinja", Some("llama3")),
            ("meta-llama-Llama-3.2-3B-Instruct.jinja", Some("llama3")),
            ("meta-llama-Llama-3.3-70B-Instruct.jinja", Some("llama3")),
            ("mistralai-Mistral-Nemo-Instruct-2407.jinja", Some("mistral")),
            ("Mistral-Small-3.2-24B-Instruct-2506.jinja", Some("mistral-args")),
            ("unsloth-mistral-Devstral-Small-2507.jinja", Some("mistral-args")),
            ("ibm-granite-granite-3.3-2B-Instruct.jinja", Some("granite")),
            ("fireworks-ai-llama-3-firefunction-v2.jinja", Some("firefunction")),
            ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", Some("command-r7b")),
            ("meetkai-functionary-medium-v3.1.jinja", Some("functionary-v3.1")),
            ("llama-cpp-deepseek-r1.jinja", Some("deepseek-r1")),
            ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", Some("deepseek-r1")),
            ("moonshotai-Kimi-K2.jinja", Some("kimi-k2")),
            ("google-gemma-2-2b-it.jinja", None),
            ("microsoft-Phi-3.5-mini-instruct.jinja", None),
        ];
        for (name, family) in expect {
            let source = std::fs::read_to_string(dir.join("templates").join(name)).expect(name);
            assert_eq!(ToolFormat::of_template(&source).map(|f| f.family), family, "{name}");
        }
    }
}
