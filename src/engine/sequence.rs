//! One admitted request inside the worker: its sampler and the text
//! pipeline (UTF-8 assembly, tool calls, stop strings) between sampled
//! tokens and events, and its place in its output rules ([`OutputState`]).

use std::{sync::Arc, time::Instant};

use super::{
    output::OutputState,
    request::{Event, FinishReason, Request, Timings, Usage},
    speculative::{Lookup, Speculation, Speculative, Tuner},
};
use crate::{
    constraint::Advance,
    sampling::Sampler,
    tokenizer::{StopMatcher, Tokenizer, Utf8Stream},
    tools::{ToolCall, ToolCallDelta},
};

pub struct Sequence {
    pub request: Arc<Request>,
    pub sampler: Sampler,
    pub last_token: u32,
    /// The prompt's ids and every token sampled since: what the cache row
    /// holds, plus the last token unless a step queued on the device has
    /// taken it already.
    pub tokens: Vec<u32>,
    utf8: Utf8Stream,
    stops: StopMatcher,
    prompt_tokens: usize,
    generated: usize,
    max_tokens: usize,
    admitted: Instant,
    first_token: Option<Instant>,
    /// The grammar the output follows and its tool calls, where the request has rules.
    pub output: Option<OutputState>,
    /// Speculative decoding: what the guesses have shown, tokens guessed
    /// and accepted, and plain steps left before guessing is tried again.
    pub tuner: Tuner,
    pub lookup: Lookup,
    pub drafted: usize,
    pub accepted: usize,
    pub paused: usize,
}

/// What happened to a sequence after a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Continue,
    /// The request ended (finished, or ended elsewhere): retire the sequence.
    Retire,
}

impl Sequence {
    pub fn new(request: Arc<Request>, sampler: Sampler, prompt: Vec<u32>, max_tokens: usize, admitted: Instant) -> Self {
        let stops = StopMatcher::new(request.params.stop.clone());
        let prompt_tokens = prompt.len();
        Sequence {
            request,
            sampler,
            last_token: 0,
            tokens: prompt,
            utf8: Utf8Stream::default(),
            stops,
            prompt_tokens,
            generated: 0,
            max_tokens,
            admitted,
            first_token: None,
            output: None,
            tuner: Tuner::default(),
            lookup: Lookup::default(),
            drafted: 0,
            accepted: 0,
            paused: 0,
        }
    }

    /// Whether the next token may need a mask ([`OutputState::masks`]).
    pub fn masks(&self) -> bool {
        self.output.as_ref().is_some_and(OutputState::masks)
    }

    /// How this sequence's tokens are guessed ahead, if they are.
    pub fn speculation(&self) -> Option<&Speculation> {
        match &self.request.params.speculative {
            Speculative::On(s) => Some(s),
            _ => None,
        }
    }

    /// Tokens still to come at most, beyond the one the next step gives.
    pub fn room_after_next(&self) -> usize {
        self.max_tokens.saturating_sub(self.generated + 1)
    }

    /// Delivers a sampled token: its text (never a split character, never
    /// part of a stop string; with tools, content only, calls as deltas) and
    /// id, then the end if this token finishes it: an end token, a stop
    /// string, `maxTokens`, or a grammar that is complete.
    pub fn accept(&mut self, token: u32, tokenizer: &Tokenizer) -> Progress {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = token;
        self.tokens.push(token);
        let complete = match self.output.as_mut().map(|o| o.advance(token)) {
            Some(Err(e)) => {
                self.request.end(Event::Error(e));
                return Progress::Retire;
            }
            Some(Ok(advance)) => advance == Advance::Complete,
            None => false,
        };
        if tokenizer.is_end(token) {
            let (rest, _, calls, deltas) = self.flush(tokenizer);
            if !(rest.is_empty() && deltas.is_empty()) && !self.request.send_token(rest, Vec::new(), deltas) {
                return Progress::Retire;
            }
            self.finish(FinishReason::Stop, now, calls);
            return Progress::Retire;
        }
        self.generated += 1;
        let bytes = tokenizer.token_bytes(token).unwrap_or(&[]);
        let piece = self.utf8.push(bytes);
        let (piece, mut deltas) = self.content(&piece, tokenizer);
        let scan = self.stops.push(&piece);
        let mut text = scan.text;
        let mut finish = scan.stopped.then_some(FinishReason::Stop);
        let mut calls = Vec::new();
        if finish.is_none() && (complete || self.generated >= self.max_tokens) {
            let (rest, stopped, done, more) = self.flush(tokenizer);
            text.push_str(&rest);
            deltas.extend(more);
            calls = done;
            finish = Some(if stopped || complete { FinishReason::Stop } else { FinishReason::Length });
        }
        if !self.request.send_token(text, vec![token], deltas) {
            return Progress::Retire;
        }
        match finish {
            Some(reason) => {
                self.finish(reason, now, calls);
                Progress::Retire
            }
            None => Progress::Continue,
        }
    }

    /// Text through the tool-call parser: the content in it, and call deltas.
    fn content(&mut self, text: &str, tokenizer: &Tokenizer) -> (String, Vec<ToolCallDelta>) {
        match &mut self.output {
            Some(output) => {
                let piece = output.text(text, tokenizer);
                (piece.text, piece.deltas)
            }
            None => (text.to_string(), Vec::new()),
        }
    }

    /// Whether the next token is the last `max_tokens` allows.
    pub fn is_at_last_token(&self) -> bool {
        self.generated + 1 >= self.max_tokens
    }

    /// Text still held back at the end, whether it completed a stop string,
    /// and the tool calls (with their last deltas).
    fn flush(&mut self, tokenizer: &Tokenizer) -> (String, bool, Vec<ToolCall>, Vec<ToolCallDelta>) {
        let tail = self.utf8.finish();
        let (mut content, deltas) = self.content(&tail, tokenizer);
        let (held, calls) = self.output.as_mut().map(OutputState::finish).unwrap_or_default();
        content.push_str(&held);
        let scan = self.stops.push(&content);
        if scan.stopped {
            (scan.text, true, calls, deltas)
        } else {
            (scan.text + &self.stops.finish(), false, calls, deltas)
        }
    }

    fn finish(&mut self, reason: FinishReason, now: Instant, tool_calls: Vec<ToolCall>) {
        let created = self.request.created;
        let first = self.first_token.unwrap_or(now);
        let decode_secs = now.duration_since(first).as_secs_f64();
        let timings = Timings {
            ttft_ms: first.duration_since(created).as_secs_f64() * 1000.0,
            tokens_per_second: if decode_secs > 0.0 { self.generated.saturating_sub(1) as f64 / decode_secs } else { 0.0 },
            total_ms: now.duration_since(created).as_secs_f64() * 1000.0,
            queued_ms: self.admitted.duration_since(created).as_secs_f64() * 1000.0,
        };
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
            drafted_tokens: self.drafted,
            accepted_tokens: self.accepted,
        };
        // Calls end an answer that ended by itself; one cut by maxTokens stays 'length'.
        let finish_reason = if reason == FinishReason::Stop && !tool_calls.is_empty() { FinishReason::ToolCalls } else { reason };
        self.request.end(Event::End { finish_reason, usage, timings, tool_calls });
    }
}
