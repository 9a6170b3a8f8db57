//! A draft model run by a target model's worker: it guesses the next tokens
//! of the sequence the worker decodes alone, for the target to verify.
//!
//! The worker loads the draft model's file itself (so no MLX array crosses
//! threads; the draft slot's own worker keeps serving its requests) and keeps
//! one cache, for the sequence it follows. After a verification the cache
//! drops what the target rejected and later catches up on what it lacks.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mlx_rs::{
    ops::{indexing::argmax_axis, softmax_axis},
    Array,
};

use crate::{
    error::{Error, ErrorCode, Result},
    model::{load_model, KvCache, Model, WeightFormat},
    sampling::Sampler,
    tokenizer::Tokenizer,
};

/// Tokens of a sequence the draft model takes in one pass when it catches up
/// (its prompt, the first time).
const CATCH_UP_CHUNK: usize = 256;

pub struct Drafter {
    path: PathBuf,
    model: Model,
    context_length: usize,
    /// The request whose sequence the cache holds, and how many of its tokens.
    following: Option<u64>,
    cache: KvCache,
    synced: usize,
    /// Smoothed time of one drafted token.
    per_token: Option<Duration>,
}


impl Drafter {
    /// Loads the draft model at `path`, checking that it reads text as
    /// `tokenizer` does (the same vocabulary: a drafted id must mean the
    /// same token to both).
    pub fn load(path: &Path, format: WeightFormat, tokenizer: &Tokenizer) -> Result<Drafter> {
        let loaded = load_model(path, format)?;
        if super::cache_file::vocabulary_digest(&loaded.tokenizer) != super::cache_file::vocabulary_digest(tokenizer) {
            return Err(Error::invalid("speculative.model", "the draft model's vocabulary differs from the model's"));
        }
        let layers = loaded.model.layers();
        Ok(Drafter {
            path: path.to_path_buf(),
            model: loaded.model,
            context_length: loaded.info.context_length,
            following: None,
            cache: KvCache::new(layers),
            synced: 0,
            per_token: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Smoothed time one drafted token has taken (zero before the first).
    pub fn cost_per_token(&self) -> Duration {
        self.per_token.unwrap_or_default()
    }

    /// Whether the draft model's context has room for `tokens` more.
    pub fn has_room(&self, sequence: usize, tokens: usize) -> bool {
        sequence + tokens < self.context_length
    }

    /// Guesses the `n` tokens that follow `tokens` (the sequence of request
    /// `request`): each one what `sampler` (a copy of the request's, so the
    /// same penalty window and the same coming draws of its generator) picks
    /// from the draft model's logits. Where the two models agree on the
    /// distribution the guess is the token the request will draw.
    pub fn propose(&mut self, request: u64, mut sampler: Sampler, tokens: &[u32], n: usize) -> Result<Vec<u32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.following != Some(request) {
            self.following = Some(request);
            self.cache = KvCache::new(self.model.layers());
            self.synced = 0;
        }
        let started = Instant::now();
        let greedy = sampler.is_greedy();
        let mut guesses = Vec::with_capacity(n);
        let mut input = &tokens[self.synced.min(tokens.len())..];
        // Catch up on all but the last chunk of what the cache lacks.
        while input.len() > CATCH_UP_CHUNK {
            let (chunk, rest) = input.split_at(CATCH_UP_CHUNK);
            self.model.forward(&ids(chunk), &mut self.cache)?.eval()?;
            input = rest;
        }
        let mut next = input.to_vec();
        let mut fed = 0;
        // Time of the passes over one token: a drafted token's cost. A pass
        // that also catches up (after plain steps, the tokens decoded since)
        // is left out: once drafting pays, the draft stays current.
        let (mut single, mut single_passes) = (Duration::ZERO, 0u32);
        while guesses.len() < n {
            let pass_started = Instant::now();
            let one = next.len() == 1;
            let logits = self.model.forward(&ids(&next), &mut self.cache)?;
            fed += 1;
            let (token, confidence) = if greedy {
                let pick = argmax_axis(&logits, -1, None)?;
                let top = softmax_axis(&logits, -1, true)?.max_axis(-1, None)?;
                mlx_rs::transforms::eval([&pick, &top])?;
                (pick.as_slice::<u32>()[0], top.as_slice::<f32>()[0])
            } else {
                logits.eval()?;
                let row = logits.as_slice::<f32>();
                (sampler.sample(row), top_probability(row))
            };
            if one {
                single += pass_started.elapsed();
                single_passes += 1;
            }
            // A guess the draft model itself doubts is seldom right: stop here.
            if confidence < MIN_CONFIDENCE {
                break;
            }
            guesses.push(token);
            next = vec![token];
        }
        // The cache holds the sequence and every guess fed back: all but the last.
        self.synced = tokens.len() + fed - 1;
        let elapsed = started.elapsed();
        tracing::debug!(fed, guesses = guesses.len(), ms = elapsed.as_secs_f64() * 1e3, "drafted");
        if single_passes > 0 {
            let took = single / single_passes;
            self.per_token = Some(self.per_token.map_or(took, |t| (t * 3 + took) / 4));
        }
        Ok(guesses)
    }

    /// After a verification that accepted `accepted` guesses of those
    /// proposed for a sequence of `before` tokens: the cache keeps the
    /// sequence and the accepted guesses it holds.
    pub fn settle(&mut self, before: usize, accepted: usize) {
        let keep = (before + accepted).min(self.synced);
        self.cache.truncate((self.synced - keep) as i32);
        self.synced = keep;
    }

    /// Forgets the sequence it follows (its cache, after an error).
    pub fn reset(&mut self) {
        self.following = None;
    }
}

/// Guesses are made while the draft model gives its pick at least this probability.
const MIN_CONFIDENCE: f32 = 0.5;

/// The largest probability of a row of logits (softmax at temperature 1).
fn top_probability(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    1.0 / logits.iter().map(|&l| (l - max).exp()).sum::<f32>()
}

fn ids(tokens: &[u32]) -> Array {
    let tokens: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    Array::from_slice(&tokens, &[1, tokens.len() as i32])
}

/// The error a request gets when its draft model cannot serve.
pub fn unavailable(model: &str, why: &str) -> Error {
    Error::new(ErrorCode::InvalidArgument, format!("speculative.model: draft model '{model}' cannot be used: {why}"))
}
