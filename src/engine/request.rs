//! A generation request: validated parameters, its deadline, and the one
//! channel its events travel on. Whoever ends a request (worker, watchdog,
//! timer, abort) ends it exactly once; after that no token can be sent.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{lock, output::OutputPlan};
use crate::{
    constraint::ResponseFormat,
    error::{Error, ErrorCode},
    sampling::SamplingParams,
    tokenizer::ChatMessage,
    tools::{ToolCall, ToolCallDelta, ToolUse},
};

/// What to complete: raw text, or messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Messages(Vec<ChatMessage>),
}

/// What a request asks of the worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Action {
    /// Stream a completion of the prompt.
    #[default]
    Generate,
    /// Prefill the prompt and write its keys and values to this file.
    SaveCache(std::path::PathBuf),
    /// Read a file written by `SaveCache` into the prefix cache.
    LoadCache(std::path::PathBuf),
    /// Embed texts with an embedding model ([`super::embed`]); ends with
    /// [`Event::Embedded`].
    Embed(EmbedParams),
}

/// Validated parameters of one `embed` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedParams {
    /// The texts, one vector each (at least one).
    pub inputs: Vec<String>,
    /// Keep the first this many dimensions (Matryoshka truncation).
    pub dimensions: Option<usize>,
    /// What goes before each text.
    pub prompt: EmbedPrompt,
    /// L2-normalize the vectors; `None`: as the model does (its Normalize module).
    pub normalize: Option<bool>,
    /// Truncate inputs longer than the model reads (else CONTEXT_OVERFLOW).
    pub truncate: bool,
}

/// The prompt put before each text of an `embed` call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmbedPrompt {
    /// The model's default prompt, if it names one.
    #[default]
    Default,
    /// One of the model's named prompts (`query`, `document`, ...).
    Named(String),
    /// This text.
    Text(String),
}

/// Validated parameters of one `generate` call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub model: String,
    pub prompt: Prompt,
    /// `None`: until an end token or the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub timeout: Option<Duration>,
    pub action: Action,
    /// What the output must match (JSON schema, regex, grammar).
    pub response_format: Option<ResponseFormat>,
    /// Tools the model may or must call.
    pub tools: Option<ToolUse>,
    /// How the next tokens are guessed and verified several at a time, if at
    /// all; resolved by [`super::Engine::generate`] to `On` or `Off`.
    pub speculative: super::speculative::Speculative,
}

/// Why a generation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `maxTokens` reached, or the context is full.
    Length,
    /// The model called tools (the end event lists the calls).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Tokens guessed by speculative decoding, and how many of them were right.
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// From the call to the first token.
    pub ttft_ms: f64,
    /// Completion tokens after the first, per second of decoding.
    pub tokens_per_second: f64,
    pub total_ms: f64,
    /// Time spent waiting for a batch slot (and for the model to load).
    pub queued_ms: f64,
}

/// What a request's channel carries: tokens, then exactly one terminal event.
/// With tools, a token's text is content only; the calls stream as deltas
/// and end up complete in the end event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token { text: String, ids: Vec<u32>, tool_calls: Vec<ToolCallDelta> },
    End { finish_reason: FinishReason, usage: Usage, timings: Timings, tool_calls: Vec<ToolCall> },
    /// The end of an `embed` call: one vector per input, in order, and the
    /// tokens read (prompts and special tokens included).
    Embedded { embeddings: Vec<Vec<f32>>, prompt_tokens: usize },
    Error(Error),
}

/// One request, shared by the stream that reads it, the worker that serves
/// it and the watchdog that may have to end it.
pub struct Request {
    pub id: u64,
    pub params: GenerateParams,
    pub created: Instant,
    pub deadline: Option<Instant>,
    sender: Mutex<Option<UnboundedSender<Event>>>,
    pub span: tracing::Span,
    /// The output rules, compiled at submission (or at admission when the
    /// model was not ready then); unset for free text.
    output: OnceLock<Option<Arc<OutputPlan>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("id", &self.id).field("ended", &self.is_ended()).finish()
    }
}

impl Request {
    /// A request and the receiving end of its event channel.
    pub fn new(id: u64, params: GenerateParams) -> (Request, UnboundedReceiver<Event>) {
        let (tx, rx) = unbounded_channel();
        let created = Instant::now();
        let deadline = params.timeout.map(|t| created + t);
        let span = tracing::info_span!("request", id, model = %params.model);
        let request = Request { id, params, created, deadline, sender: Mutex::new(Some(tx)), span, output: OnceLock::new() };
        (request, rx)
    }

    /// The output rules, once compiled (`Some(None)`: free text).
    pub fn output(&self) -> Option<Option<Arc<OutputPlan>>> {
        self.output.get().cloned()
    }

    /// Sets the compiled output rules (once).
    pub fn set_output(&self, plan: Option<OutputPlan>) {
        let _ = self.output.set(plan.map(Arc::new));
    }

    /// Sends a token. Returns false when the request has already ended (the
    /// caller must then drop the sequence): tokens never follow the end.
    pub fn send_token(&self, text: String, ids: Vec<u32>, tool_calls: Vec<ToolCallDelta>) -> bool {
        let guard = lock(&self.sender);
        match guard.as_ref() {
            Some(tx) => {
                let _ = tx.send(Event::Token { text, ids, tool_calls });
                true
            }
            None => false,
        }
    }

    /// Ends the request with `event` unless it already ended. Returns whether
    /// this call was the one that ended it.
    pub fn end(&self, event: Event) -> bool {
        debug_assert!(!matches!(event, Event::Token { .. }), "a token is not an end");
        let taken = lock(&self.sender).take();
        match taken {
            Some(tx) => {
                match &event {
                    Event::Error(e) => tracing::debug!(parent: &self.span, code = %e.code, "request ended: {}", e.message),
                    Event::End { finish_reason, usage, .. } => tracing::debug!(
                        parent: &self.span,
                        finish = finish_reason.as_str(),
                        completion_tokens = usage.completion_tokens,
                        "request finished"
                    ),
                    Event::Embedded { embeddings, prompt_tokens } => {
                        tracing::debug!(parent: &self.span, inputs = embeddings.len(), prompt_tokens, "request embedded")
                    }
                    Event::Token { .. } => {}
                }
                let _ = tx.send(event);
                true
            }
            None => false,
        }
    }

    /// Ends the request without generating: `prompt_tokens` were read (and
    /// prefilled, or loaded), none completed (`maxTokens: 0`, cache files).
    pub fn end_without_tokens(&self, prompt_tokens: usize) -> bool {
        let total_ms = self.created.elapsed().as_secs_f64() * 1000.0;
        self.end(Event::End {
            finish_reason: FinishReason::Length,
            usage: Usage { prompt_tokens, ..Default::default() },
            timings: Timings { total_ms, ..Default::default() },
            tool_calls: Vec::new(),
        })
    }

    pub fn fail(&self, code: ErrorCode, message: impl Into<String>) -> bool {
        self.end(Event::Error(Error::new(code, message)))
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.sender).is_none()
    }

    pub fn deadline_passed(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Ends the request with TIMEOUT if its deadline passed; true if it did.
    pub fn expire_if_due(&self, now: Instant) -> bool {
        if self.deadline_passed(now) {
            self.fail(ErrorCode::Timeout, format!("timed out after {} ms", self.params.timeout.unwrap_or_default().as_millis()));
            true
        } else {
            false
        }
    }

    /// True if the request has ended, or ends now because its deadline passed.
    pub fn is_over(&self, now: Instant) -> bool {
        self.is_ended() || self.expire_if_due(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> (Request, UnboundedReceiver<Event>) {
        let params = GenerateParams {
            model: "m".into(),
            prompt: Prompt::Text("hi".into()),
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: vec![],
            timeout: None,
            action: Action::Generate,
            response_format: None,
            tools: None,
            speculative: Default::default(),
        };
        Request::new(1, params)
    }

    #[test]
    fn ends_exactly_once_and_refuses_tokens_after() {
        let (r, mut rx) = request();
        assert!(r.send_token("a".into(), vec![1], vec![]));
        assert!(r.fail(ErrorCode::Aborted, "x"));
        assert!(!r.fail(ErrorCode::Timeout, "y"));
        assert!(!r.send_token("b".into(), vec![2], vec![]));
        assert!(matches!(rx.try_recv(), Ok(Event::Token { .. })));
        assert!(matches!(rx.try_recv(), Ok(Event::Error(e)) if e.code == ErrorCode::Aborted));
        assert!(rx.try_recv().is_err());
    }
}
