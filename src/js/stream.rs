//! `TokenStream`: the native half of a generation's async iterator.

use std::{sync::Arc, time::Instant};

use napi::bindgen_prelude::Float32Array;
use tokio::sync::{mpsc::UnboundedReceiver, Mutex};

use super::error::ErrorInfo;
use crate::{
    engine::{Event, Request},
    error::ErrorCode,
};

#[napi(object)]
pub struct UsageInfo {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Tokens guessed by speculative decoding, and of those accepted (0 without it).
    pub drafted_tokens: u32,
    pub accepted_tokens: u32,
}

#[napi(object)]
pub struct TimingsInfo {
    pub ttft_ms: f64,
    pub tokens_per_second: f64,
    pub total_ms: f64,
    pub queued_ms: f64,
}

/// A tool call as it streams (see `ToolCallDelta` in the package types).
#[napi(object)]
pub struct ToolCallDeltaInfo {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// A finished tool call; `arguments` is JSON text.
#[napi(object)]
pub struct ToolCallInfo {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One event of a stream: `kind` is "token", "end", "embeddings" or "error".
#[napi(object)]
pub struct StreamEvent {
    pub kind: String,
    /// An `embed` call's vectors, one per input.
    pub embeddings: Option<Vec<Float32Array>>,
    pub text: Option<String>,
    pub token_ids: Option<Vec<u32>>,
    /// A token's tool-call deltas (only when it has some).
    pub tool_call_deltas: Option<Vec<ToolCallDeltaInfo>>,
    pub finish_reason: Option<String>,
    pub usage: Option<UsageInfo>,
    pub timings: Option<TimingsInfo>,
    /// The end's tool calls (only when there are some).
    pub tool_calls: Option<Vec<ToolCallInfo>>,
    pub error: Option<ErrorInfo>,
}

impl From<Event> for StreamEvent {
    fn from(e: Event) -> Self {
        let empty = StreamEvent {
            kind: String::new(),
            embeddings: None,
            text: None,
            token_ids: None,
            tool_call_deltas: None,
            finish_reason: None,
            usage: None,
            timings: None,
            tool_calls: None,
            error: None,
        };
        match e {
            Event::Token { text, ids, tool_calls } => StreamEvent {
                kind: "token".into(),
                text: Some(text),
                token_ids: Some(ids),
                tool_call_deltas: (!tool_calls.is_empty()).then(|| {
                    tool_calls.into_iter().map(|d| ToolCallDeltaInfo { index: d.index as u32, id: d.id, name: d.name, arguments: d.arguments }).collect()
                }),
                ..empty
            },
            Event::End { finish_reason, usage, timings, tool_calls } => StreamEvent {
                kind: "end".into(),
                finish_reason: Some(finish_reason.as_str().into()),
                usage: Some(UsageInfo {
                    prompt_tokens: usage.prompt_tokens as u32,
                    completion_tokens: usage.completion_tokens as u32,
                    drafted_tokens: usage.drafted_tokens as u32,
                    accepted_tokens: usage.accepted_tokens as u32,
                }),
                timings: Some(TimingsInfo {
                    ttft_ms: timings.ttft_ms,
                    tokens_per_second: timings.tokens_per_second,
                    total_ms: timings.total_ms,
                    queued_ms: timings.queued_ms,
                }),
                tool_calls: (!tool_calls.is_empty())
                    .then(|| tool_calls.into_iter().map(|c| ToolCallInfo { id: c.id, name: c.name, arguments: c.arguments }).collect()),
                ..empty
            },
            Event::Embedded { embeddings, prompt_tokens } => StreamEvent {
                kind: "embeddings".into(),
                embeddings: Some(embeddings.into_iter().map(Float32Array::new).collect()),
                usage: Some(UsageInfo { prompt_tokens: prompt_tokens as u32, completion_tokens: 0, drafted_tokens: 0, accepted_tokens: 0 }),
                ..empty
            },
            Event::Error(e) => StreamEvent { kind: "error".into(), error: Some(e.into()), ..empty },
        }
    }
}

/// The events of one generation. `next()` resolves with tokens in order,
/// then exactly one "end" or "error". The call's deadline is enforced here
/// too, so a timeout fires on time even while the worker is busy.
#[napi]
pub struct TokenStream {
    request: Arc<Request>,
    events: Arc<Mutex<UnboundedReceiver<Event>>>,
}

impl TokenStream {
    pub fn new(request: Arc<Request>, events: UnboundedReceiver<Event>) -> Self {
        TokenStream { request, events: Arc::new(Mutex::new(events)) }
    }
}

#[napi]
impl TokenStream {
    /// The next event. Never rejects: errors arrive as `kind: "error"`.
    #[napi]
    pub async fn next(&self) -> StreamEvent {
        let request = self.request.clone();
        let mut events = self.events.lock().await;
        loop {
            let event = match request.deadline {
                Some(deadline) if !request.is_ended() => {
                    tokio::select! {
                        event = events.recv() => event,
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            request.expire_if_due(Instant::now());
                            continue;
                        }
                    }
                }
                _ => events.recv().await,
            };
            return match event {
                Some(event) => event.into(),
                None => Event::Error(crate::error::Error::internal("the stream closed without an end")).into(),
            };
        }
    }

    /// Ends the request now; the worker drops it at its next step.
    /// `reason`: "abort" (the caller's AbortSignal) or "close" (`return()` / `throw()`).
    #[napi]
    pub fn cancel(&self, reason: String) {
        let message = if reason == "abort" { "the operation was aborted" } else { "the stream was closed by its consumer" };
        self.request.fail(ErrorCode::Aborted, message);
    }

    /// The request id (as in tracing output).
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.request.id as f64
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        // Garbage-collected before its end: free the worker's slot.
        self.request.fail(ErrorCode::Aborted, "the stream was dropped before it ended");
    }
}
