//! Option objects as napi sees them, validated into core types. Every
//! failure is INVALID_ARGUMENT naming the field.

use std::time::Duration;

use crate::{
    constraint::{ResponseFormat, MAX_GRAMMAR_BYTES},
    engine::{
        speculative::{Speculation, Speculative, DEFAULT_LOOKUP_DRAFT, DEFAULT_MODEL_DRAFT, DEFAULT_NGRAM, MAX_DRAFT},
        Action, EmbedParams, EmbedPrompt, EngineOptions, GenerateParams, Prompt,
    },
    error::{Error, Result},
    sampling::SamplingParams,
    tokenizer::{ChatMessage, ToolCall},
    tools::{Tool, ToolChoice, ToolUse},
};

/// Longest accepted model id.
const MAX_ID_LEN: usize = 256;
/// Most stop strings per request, and longest stop string.
const MAX_STOPS: usize = 256;
const MAX_STOP_LEN: usize = 1024;

#[napi(object)]
pub struct EngineOptionsInput {
    pub max_batch_size: Option<f64>,
    pub max_queued: Option<f64>,
    pub default_timeout_ms: Option<f64>,
    pub hang_timeout_ms: Option<f64>,
    pub prefix_cache_mb: Option<f64>,
}

/// Most tools per request, and the longest tool name.
const MAX_TOOLS: usize = 128;
const MAX_TOOL_NAME: usize = 256;

#[napi(object)]
pub struct MessageInput {
    pub role: String,
    pub content: String,
    /// An assistant message's calls.
    pub tool_calls: Option<Vec<ToolCallInput>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

#[napi(object)]
pub struct ToolCallInput {
    pub id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// `responseFormat`: `type` is "json_schema" (with `schema`, JSON text),
/// "json_object", "regex" (with `pattern`) or "grammar" (with `lark`).
#[napi(object)]
pub struct ResponseFormatInput {
    #[napi(js_name = "type")]
    pub kind: String,
    pub schema: Option<String>,
    pub name: Option<String>,
    pub pattern: Option<String>,
    pub lark: Option<String>,
}

#[napi(object)]
pub struct ToolInput {
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON schema (JSON text); default: an object of no set properties.
    pub parameters: Option<String>,
}

#[napi(object)]
pub struct GenerateInput {
    pub model: String,
    pub prompt: Option<String>,
    pub messages: Option<Vec<MessageInput>>,
    pub max_tokens: Option<f64>,
    pub temperature: Option<f64>,
    pub top_k: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<f64>,
    pub stop: Option<Vec<String>>,
    pub timeout_ms: Option<f64>,
    /// Prefill the prompt and write its cache to this file instead of generating.
    pub save_cache: Option<String>,
    /// Read this cache file into the model's prefix cache (no prompt).
    pub load_cache: Option<String>,
    pub response_format: Option<ResponseFormatInput>,
    pub tools: Option<Vec<ToolInput>>,
    /// "auto", "none", "required", or "named" (with `toolChoiceName`).
    pub tool_choice: Option<String>,
    pub tool_choice_name: Option<String>,
    pub parallel_tool_calls: Option<bool>,
    pub speculative: Option<SpeculativeInput>,
}

/// Speculative decoding: `type` is "prompt_lookup", "draft" or "none".
#[napi(object)]
pub struct SpeculativeInput {
    #[napi(js_name = "type")]
    pub kind: String,
    pub max_draft: Option<f64>,
    pub ngram: Option<f64>,
    pub model: Option<String>,
}

impl SpeculativeInput {
    /// `None` for "none" (plain decoding).
    pub fn validate(self) -> Result<Option<Speculation>> {
        let max_draft = |default: usize| -> Result<usize> {
            self.max_draft.map_or(Ok(default), |v| count("speculative.maxDraft", v, 1.0, MAX_DRAFT as f64))
        };
        let refuse = |field: &str, present: bool| -> Result<()> {
            if present {
                return Err(Error::invalid(&format!("speculative.{field}"), format!("does not apply to type '{}'", self.kind)));
            }
            Ok(())
        };
        match self.kind.as_str() {
            "none" => {
                refuse("maxDraft", self.max_draft.is_some())?;
                refuse("ngram", self.ngram.is_some())?;
                refuse("model", self.model.is_some())?;
                Ok(None)
            }
            "prompt_lookup" => {
                refuse("model", self.model.is_some())?;
                let ngram = self.ngram.map_or(Ok(DEFAULT_NGRAM), |v| count("speculative.ngram", v, 1.0, 16.0))?;
                Ok(Some(Speculation::PromptLookup { max_draft: max_draft(DEFAULT_LOOKUP_DRAFT)?, ngram }))
            }
            "draft" => {
                refuse("ngram", self.ngram.is_some())?;
                let model = self.model.clone().ok_or_else(|| Error::invalid("speculative.model", "a draft needs the id of a loaded model"))?;
                validate_model_id("speculative.model", &model)?;
                Ok(Some(Speculation::Draft { model, path: Default::default(), max_draft: max_draft(DEFAULT_MODEL_DRAFT)? }))
            }
            other => Err(Error::invalid("speculative.type", format!("must be 'prompt_lookup', 'draft' or 'none', got '{other}'"))),
        }
    }
}

/// Most texts in one `embed` call.
const MAX_EMBED_INPUTS: usize = 65_536;

#[napi(object)]
pub struct EmbedInput {
    pub model: String,
    /// The texts to embed (the JS layer turns one string into a list of one).
    pub input: Vec<String>,
    /// Keep the first this many dimensions (Matryoshka truncation).
    pub dimensions: Option<f64>,
    /// One of the model's named prompts (e.g. "query", "document").
    pub prompt: Option<String>,
    /// Text put before every input instead of a named prompt.
    pub prompt_text: Option<String>,
    /// L2-normalize the vectors (default: as the model does).
    pub normalize: Option<bool>,
    /// Truncate inputs longer than the model reads (default true); false: CONTEXT_OVERFLOW.
    pub truncate: Option<bool>,
    pub timeout_ms: Option<f64>,
}

impl EmbedInput {
    pub fn validate(self) -> Result<GenerateParams> {
        validate_model_id("model", &self.model)?;
        if self.input.is_empty() {
            return Err(Error::invalid("input", "must hold at least one text"));
        }
        if self.input.len() > MAX_EMBED_INPUTS {
            return Err(Error::invalid("input", format!("at most {MAX_EMBED_INPUTS} texts per call, got {}", self.input.len())));
        }
        if let Some(i) = self.input.iter().position(String::is_empty) {
            let field = if self.input.len() == 1 { "input".to_string() } else { format!("input[{i}]") };
            return Err(Error::invalid(&field, "must not be empty"));
        }
        let prompt = match (self.prompt, self.prompt_text) {
            (None, None) => EmbedPrompt::Default,
            (Some(name), None) if !name.is_empty() => EmbedPrompt::Named(name),
            (Some(_), None) => return Err(Error::invalid("prompt", "must name one of the model's prompts")),
            (None, Some(text)) => EmbedPrompt::Text(text),
            (Some(_), Some(_)) => return Err(Error::invalid("prompt", "give prompt or promptText, not both")),
        };
        Ok(GenerateParams {
            model: self.model,
            prompt: Prompt::Text(String::new()),
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            timeout: self.timeout_ms.map(|v| millis("timeoutMs", v)).transpose()?,
            response_format: None,
            tools: None,
            action: Action::Embed(EmbedParams {
                inputs: self.input,
                dimensions: self.dimensions.map(|v| count("dimensions", v, 1.0, 1e6)).transpose()?,
                prompt,
                normalize: self.normalize,
                truncate: self.truncate.unwrap_or(true),
            }),
            speculative: Speculative::Off,
        })
    }
}

fn count(field: &str, v: f64, min: f64, max: f64) -> Result<usize> {
    if !v.is_finite() || v.fract() != 0.0 || v < min || v > max {
        return Err(Error::invalid(field, format!("must be an integer in [{min}, {max}], got {v}")));
    }
    Ok(v as usize)
}

fn millis(field: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 1e10 {
        return Err(Error::invalid(field, format!("must be a positive number of milliseconds, got {v}")));
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

pub fn validate_model_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("must be a non-empty string of at most {MAX_ID_LEN} printable characters")));
    }
    Ok(())
}

impl EngineOptionsInput {
    pub fn validate(self) -> Result<EngineOptions> {
        let mut o = EngineOptions::default();
        if let Some(v) = self.max_batch_size {
            o.max_batch_size = count("maxBatchSize", v, 1.0, 256.0)?;
        }
        if let Some(v) = self.max_queued {
            o.max_queued = count("maxQueued", v, 0.0, 1e6)?;
        }
        if let Some(v) = self.default_timeout_ms {
            o.default_timeout = Some(millis("defaultTimeoutMs", v)?);
        }
        if let Some(v) = self.hang_timeout_ms {
            o.hang_timeout = millis("hangTimeoutMs", v)?;
        }
        if let Some(v) = self.prefix_cache_mb {
            o.prefix_cache_bytes = count("prefixCacheMb", v, 0.0, 1048576.0)? << 20;
        }
        Ok(o)
    }
}

impl GenerateInput {
    pub fn validate(self) -> Result<GenerateParams> {
        validate_model_id("model", &self.model)?;
        let path = |field: &str, p: String| -> Result<std::path::PathBuf> {
            if p.is_empty() || p.contains('\0') {
                return Err(Error::invalid(field, "must be a non-empty path"));
            }
            Ok(p.into())
        };
        let action = match (self.save_cache, self.load_cache) {
            (None, None) => Action::Generate,
            (Some(p), None) => Action::SaveCache(path("path", p)?),
            (None, Some(p)) => {
                if self.prompt.is_some() || self.messages.is_some() {
                    return Err(Error::invalid("prompt", "loading a cache file takes no prompt"));
                }
                return Ok(GenerateParams {
                    model: self.model,
                    prompt: Prompt::Text(String::new()),
                    max_tokens: None,
                    sampling: SamplingParams::default(),
                    stop: Vec::new(),
                    timeout: self.timeout_ms.map(|v| millis("timeoutMs", v)).transpose()?,
                    action: Action::LoadCache(path("path", p)?),
                    response_format: None,
                    tools: None,
                    speculative: Speculative::Off,
                });
            }
            (Some(_), Some(_)) => return Err(Error::invalid("path", "save or load, not both")),
        };
        let prompt = match (self.prompt, self.messages) {
            (Some(p), None) => Prompt::Text(p),
            (None, Some(m)) => {
                if m.is_empty() {
                    return Err(Error::invalid("messages", "must not be empty"));
                }
                Prompt::Messages(m.into_iter().enumerate().map(|(i, m)| m.validate(i)).collect::<Result<_>>()?)
            }
            (Some(_), Some(_)) => return Err(Error::invalid("prompt", "give either prompt or messages, not both")),
            (None, None) => return Err(Error::invalid("prompt", "give either prompt or messages")),
        };
        let mut s = SamplingParams::default();
        if let Some(v) = self.temperature {
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err(Error::invalid("temperature", format!("must be a number in [0, 100], got {v}")));
            }
            s.temperature = v as f32;
        }
        if let Some(v) = self.top_k {
            s.top_k = count("topK", v, 0.0, 1e9)?;
        }
        if let Some(v) = self.top_p {
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::invalid("topP", format!("must be in (0, 1], got {v}")));
            }
            s.top_p = v as f32;
        }
        if let Some(v) = self.min_p {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid("minP", format!("must be in [0, 1], got {v}")));
            }
            s.min_p = v as f32;
        }
        if let Some(v) = self.repetition_penalty {
            if !v.is_finite() || v <= 0.0 || v > 100.0 {
                return Err(Error::invalid("repetitionPenalty", format!("must be a number in (0, 100], got {v}")));
            }
            s.repetition_penalty = v as f32;
        }
        if let Some(v) = self.seed {
            s.seed = Some(count("seed", v, 0.0, 9_007_199_254_740_991.0)? as u64);
        }
        let stop = self.stop.unwrap_or_default();
        if stop.len() > MAX_STOPS {
            return Err(Error::invalid("stop", format!("at most {MAX_STOPS} stop strings, got {}", stop.len())));
        }
        for (i, s) in stop.iter().enumerate() {
            if s.is_empty() || s.len() > MAX_STOP_LEN {
                return Err(Error::invalid(&format!("stop[{i}]"), format!("must be a non-empty string of at most {MAX_STOP_LEN} bytes")));
            }
        }
        let response_format = self.response_format.map(ResponseFormatInput::validate).transpose()?;
        let tools = tool_use(self.tools, self.tool_choice, self.tool_choice_name, self.parallel_tool_calls)?;
        if response_format.is_some() && tools.as_ref().is_some_and(ToolUse::offers_calls) {
            return Err(Error::invalid("responseFormat", "cannot be combined with tools the model may call (use toolChoice 'none', or give the call's schema as responseFormat)"));
        }
        Ok(GenerateParams {
            model: self.model,
            prompt,
            response_format,
            tools,
            max_tokens: self.max_tokens.map(|v| count("maxTokens", v, 0.0, 1e9)).transpose()?,
            sampling: s,
            stop,
            timeout: self.timeout_ms.map(|v| millis("timeoutMs", v)).transpose()?,
            speculative: match self.speculative.map(SpeculativeInput::validate).transpose()? {
                None => Speculative::ModelDefault,
                Some(None) => Speculative::Off,
                Some(Some(s)) => Speculative::On(s),
            },
            action,
        })
    }
}

impl MessageInput {
    pub fn validate(self, i: usize) -> Result<ChatMessage> {
        let calls = self.tool_calls.unwrap_or_default();
        for (j, c) in calls.iter().enumerate() {
            if c.name.is_empty() {
                return Err(Error::invalid(&format!("messages[{i}].toolCalls[{j}].name"), "must be a non-empty string"));
            }
        }
        Ok(ChatMessage {
            role: self.role,
            content: self.content,
            tool_calls: calls.into_iter().map(|c| ToolCall { id: c.id, name: c.name, arguments: c.arguments }).collect(),
            tool_call_id: self.tool_call_id,
        })
    }
}

impl ResponseFormatInput {
    fn validate(self) -> Result<ResponseFormat> {
        let text = |field: &str, v: Option<String>| -> Result<String> {
            match v {
                Some(v) if !v.is_empty() && v.len() <= MAX_GRAMMAR_BYTES => Ok(v),
                Some(v) if !v.is_empty() => Err(Error::invalid(field, format!("is longer than {MAX_GRAMMAR_BYTES} bytes"))),
                _ => Err(Error::invalid(field, format!("is required for type '{}'", self.kind))),
            }
        };
        Ok(match self.kind.as_str() {
            "json_schema" => ResponseFormat::JsonSchema { schema: text("responseFormat.schema", self.schema.clone())?, name: self.name.clone() },
            "json_object" => ResponseFormat::JsonObject,
            "regex" => ResponseFormat::Regex(text("responseFormat.pattern", self.pattern.clone())?),
            "grammar" => ResponseFormat::Lark(text("responseFormat.lark", self.lark.clone())?),
            other => {
                return Err(Error::invalid("responseFormat.type", format!("must be 'json_schema', 'json_object', 'regex' or 'grammar', got '{other}'")))
            }
        })
    }
}

/// The request's tools, checked: names present, unique and printable,
/// parameters a JSON object, a choice that names one of them.
pub fn tool_use(tools: Option<Vec<ToolInput>>, choice: Option<String>, name: Option<String>, parallel: Option<bool>) -> Result<Option<ToolUse>> {
    let Some(tools) = tools else {
        if choice.is_some() {
            return Err(Error::invalid("toolChoice", "needs tools"));
        }
        return Ok(None);
    };
    if tools.len() > MAX_TOOLS {
        return Err(Error::invalid("tools", format!("at most {MAX_TOOLS} tools, got {}", tools.len())));
    }
    let mut checked: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        if t.name.is_empty() || t.name.len() > MAX_TOOL_NAME || t.name.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(&format!("tools[{i}].name"), format!("must be a non-empty string of at most {MAX_TOOL_NAME} printable characters")));
        }
        if checked.iter().any(|c| c.name == t.name) {
            return Err(Error::invalid(&format!("tools[{i}].name"), format!("'{}' names two tools", t.name)));
        }
        let parameters = t.parameters.unwrap_or_else(|| r#"{"type": "object", "properties": {}}"#.into());
        if parameters.len() > MAX_GRAMMAR_BYTES {
            return Err(Error::invalid(&format!("tools[{i}].parameters"), format!("is longer than {MAX_GRAMMAR_BYTES} bytes")));
        }
        match serde_json::from_str::<serde_json::Value>(&parameters) {
            Ok(v) if v.is_object() => {}
            Ok(_) => return Err(Error::invalid(&format!("tools[{i}].parameters"), "must be a JSON schema (an object)")),
            Err(e) => return Err(Error::invalid(&format!("tools[{i}].parameters"), format!("is not JSON: {e}"))),
        }
        checked.push(Tool { name: t.name, description: t.description, parameters });
    }
    let choice = match (choice.as_deref(), name) {
        (None | Some("auto"), None) => ToolChoice::Auto,
        (Some("none"), None) => ToolChoice::None,
        (Some("required"), None) => ToolChoice::Required,
        (Some("named"), Some(name)) => {
            if !checked.iter().any(|t| t.name == name) {
                return Err(Error::invalid("toolChoice.name", format!("'{name}' is not one of the tools")));
            }
            ToolChoice::Named(name)
        }
        (other, _) => return Err(Error::invalid("toolChoice", format!("must be 'auto', 'none', 'required' or {{ name }}, got {other:?}"))),
    };
    if checked.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(Error::invalid("toolChoice", "needs at least one tool"));
    }
    Ok(Some(ToolUse { tools: checked, choice, parallel: parallel.unwrap_or(true) }))
}
