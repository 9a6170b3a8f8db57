//! Tool calls: the tools a request offers, how the model's family writes a
//! call ([`ToolFormat`], recognised from its chat template), the grammar that
//! makes a call parse ([`calls_grammar`]), and the streaming parser that
//! turns generated text into content and calls ([`CallStream`]).

mod format;
mod grammar;
mod parser;

#[cfg(test)]
pub use format::format_examples;
pub use format::{IdStyle, Shape, ToolFormat, HERMES};
pub use grammar::calls_grammar;
pub use parser::{CallStream, Piece};

/// A finished call (`arguments`: the JSON text the model wrote); the same
/// type carries past calls back to the model in messages.
pub use crate::tokenizer::ToolCall;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments (JSON text).
    pub parameters: String,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Text or calls, as the model chooses.
    #[default]
    Auto,
    /// No call: the tools are not shown to the model.
    None,
    /// At least one call, of any tool.
    Required,
    /// One call of this tool.
    Named(String),
}

/// A request's tools and how they may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Whether one answer may hold several calls (where the format allows it).
    pub parallel: bool,
}

/// Part of a call as it streams: the first delta of call `index` carries
/// its `id` and `name`, later ones pieces of `arguments` (concatenated in
/// order they are the call's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

impl ToolUse {
    /// Whether the model may (or must) call a tool.
    pub fn offers_calls(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The tools in Hugging Face's shape, as chat templates take them:
    /// `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
    pub fn template_value(&self) -> serde_json::Value {
        let tools = self.tools.iter().map(|t| {
            let mut function = serde_json::Map::new();
            function.insert("name".into(), t.name.clone().into());
            if let Some(d) = &t.description {
                function.insert("description".into(), d.clone().into());
            }
            let parameters = serde_json::from_str(&t.parameters).unwrap_or(serde_json::Value::Null);
            function.insert("parameters".into(), parameters);
            serde_json::json!({ "type": "function", "function": function })
        });
        serde_json::Value::Array(tools.collect())
    }

    /// What a model whose template does not show tools is told about them:
    /// the tools and the default (Hermes) call format, as a system prompt.
    pub fn describe(&self) -> String {
        let mut text = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        if let serde_json::Value::Array(tools) = self.template_value() {
            for tool in tools {
                text.push('\n');
                text.push_str(&tool.to_string());
            }
        }
        text.push_str("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        text
    }
}
