//! Speculative decoding: guesses of a sequence's next tokens, verified by one
//! forward pass of the model over all of them (a pass over a few tokens
//! costs little more than over one where reading the weights dominates).
//!
//! Guesses come from the sequence's own text ([`look_up`]: the tokens that
//! followed the latest earlier occurrence of its last few tokens, which is
//! right most of the time where an answer quotes or rewrites its prompt) or
//! from a smaller draft model of the same vocabulary (run by the worker in
//! [`super::worker`]). [`crate::sampling::Sampler::verify`] accepts a prefix
//! of them so that the answer is the one plain decoding gives: the same
//! tokens when greedy, the same distribution when sampled.
//!
//! Whether a guess pays depends on how often guesses are right and on what a
//! pass over more tokens costs on this machine: [`Tuner`] keeps both, measured
//! as the sequence runs, and drafts as many tokens as maximise the expected
//! tokens per unit of time, or none.

use std::time::Duration;

/// The longest draft one pass verifies.
pub const MAX_DRAFT: usize = 16;

/// How a request's next tokens are guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speculation {
    /// From the sequence's own tokens: the continuation of the latest earlier
    /// occurrence of its last `ngram` (down to 1) tokens, up to `max_draft`.
    PromptLookup { max_draft: usize, ngram: usize },
    /// From a draft model (another loaded model with the same vocabulary),
    /// up to `max_draft` tokens. `path` is the file the worker loads it from.
    Draft { model: String, path: std::path::PathBuf, max_draft: usize },
}

/// What a request asks of speculative decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Speculative {
    /// The model's default ([`crate::engine::Engine::set_speculative_default`]), if any.
    #[default]
    ModelDefault,
    /// Plain decoding.
    Off,
    On(Speculation),
}

/// Drafts verified per pass at most, by default: looked up in the text
/// (where a quoted span runs on, long guesses pay) and from a draft model.
pub const DEFAULT_LOOKUP_DRAFT: usize = 10;
pub const DEFAULT_MODEL_DRAFT: usize = 6;
/// Tokens matched to find a guess in the text, by default (then fewer).
pub const DEFAULT_NGRAM: usize = 3;

impl Speculation {
    pub fn max_draft(&self) -> usize {
        match self {
            Speculation::PromptLookup { max_draft, .. } | Speculation::Draft { max_draft, .. } => *max_draft,
        }
    }
}

/// The tokens that followed the latest earlier occurrence of the last `n`
/// tokens of `tokens`, for the longest `n` from `ngram` down to 1 that
/// occurred before: at most `max`, empty when none did.
pub fn look_up(tokens: &[u32], ngram: usize, max: usize) -> &[u32] {
    let len = tokens.len();
    for n in (1..=ngram.min(len.saturating_sub(1))).rev() {
        let pattern = &tokens[len - n..];
        // The occurrence ending latest, excluding the pattern itself.
        if let Some(start) = (0..len - n).rev().find(|&s| &tokens[s..s + n] == pattern) {
            let from = start + n;
            return &tokens[from..(from + max).min(len)];
        }
    }
    &[]
}

/// Whether every guess available is verified, whatever it is expected to
/// pay (`MLX_SERVING_SPECULATE=always`: for tests and comparisons; read once).
fn always() -> bool {
    static ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALWAYS.get_or_init(|| std::env::var("MLX_SERVING_SPECULATE").is_ok_and(|v| v == "always"))
}

/// What a sequence's guesses and the machine's passes have shown so far,
/// and the draft length that follows from them.
#[derive(Debug, Clone)]
pub struct Tuner {
    /// Discounted counts of drafted tokens accepted, and of rejections (a
    /// pass ends at its first rejected token): their ratio estimates the
    /// chance that the next drafted token is right, given the ones before it were.
    accepted: f64,
    rejected: f64,
    /// Plain steps since the last guess, while guessing did not pay.
    idle: usize,
}

/// Each pass's counts weigh this much less than the next one's.
const DISCOUNT: f64 = 0.9;
/// While guessing does not pay, a short guess every this many plain steps
/// keeps the estimate current (a sequence may start quoting its prompt).
const PROBE_EVERY: usize = 8;

impl Default for Tuner {
    fn default() -> Self {
        // A prior of two accepted tokens per rejection (two thirds).
        Tuner { accepted: 2.0, rejected: 1.0, idle: 0 }
    }
}

impl Tuner {
    /// The estimated chance that a drafted token is accepted.
    pub fn acceptance(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Records a pass that verified `drafted` tokens and accepted `accepted`.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        self.accepted = self.accepted * DISCOUNT + accepted as f64;
        self.rejected = self.rejected * DISCOUNT + if accepted < drafted { 1.0 } else { 0.0 };
        self.idle = 0;
    }

    /// How many tokens to draft now, at most `available` (what the proposer
    /// has, the request's room, [`MAX_DRAFT`]): the count whose expected
    /// tokens per unit of time beat a plain step's by the most, or 0 when
    /// none does. `draft_cost` is the proposer's time per drafted token.
    pub fn draft_len(&mut self, available: usize, costs: &StepCosts, draft_cost: Duration) -> usize {
        let available = available.min(MAX_DRAFT);
        if available == 0 || always() {
            return available;
        }
        let alpha = self.acceptance();
        let plain = costs.cost(1);
        let mut best = (0, 1.0 / plain);
        let mut expected = 1.0;
        for d in 1..=available {
            expected += alpha.powi(d as i32);
            let rate = expected / (costs.cost(d + 1) + d as f64 * draft_cost.as_secs_f64());
            if rate > best.1 {
                best = (d, rate);
            }
        }
        if best.0 == 0 {
            self.idle += 1;
            if self.idle >= PROBE_EVERY {
                self.idle = 0;
                return available.min(2);
            }
        }
        best.0
    }
}

/// The measured time of a forward pass over `n` tokens of one sequence, as
/// `base + per_token * (n - 1)`: a plain decode step, and what each further
/// token adds (each term smoothed over recent passes).
#[derive(Debug, Clone, Default)]
pub struct StepCosts {
    base: Option<f64>,
    per_token: Option<f64>,
}

/// Until a pass over several tokens is measured, each further token is
/// taken to cost this share of a plain step (about what a CPU's batched
/// matmul shows at a few rows).
const PRIOR_PER_TOKEN: f64 = 0.25;

impl StepCosts {
    /// Seconds a pass over `n` tokens is expected to take.
    pub fn cost(&self, n: usize) -> f64 {
        let base = self.base.unwrap_or(1e-3);
        base + self.per_token.unwrap_or(base * PRIOR_PER_TOKEN) * (n.saturating_sub(1)) as f64
    }

    /// Records a pass over `n` tokens that took `took`.
    pub fn record(&mut self, n: usize, took: Duration) {
        let t = took.as_secs_f64();
        let smooth = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o * 0.75 + new * 0.25));
        if n <= 1 {
            self.base = smooth(self.base, t);
        } else if let Some(base) = self.base {
            self.per_token = smooth(self.per_token, ((t - base) / (n - 1) as f64).max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_up_takes_the_latest_longest_match() {
        // "a b c d" then "a b" again: the continuation after the latest "a b".
        let t = [1, 2, 3, 4, 9, 1, 2, 5, 6, 1, 2];
        assert_eq!(look_up(&t, 2, 3), &[5, 6, 1]);
        assert_eq!(look_up(&t, 2, 1), &[5]);
        // The longest n that occurs wins: "9 1 2" does not recur, "1 2" does.
        assert_eq!(look_up(&t, 3, 8), &[5, 6, 1, 2]);
        // Falls back to one token, and to nothing.
        assert_eq!(look_up(&[7, 8, 7], 3, 4), &[8, 7]);
        assert!(look_up(&[1, 2, 3], 3, 4).is_empty());
        assert!(look_up(&[], 3, 4).is_empty());
        assert!(look_up(&[5], 3, 4).is_empty());
    }

    #[test]
    fn drafting_stops_where_it_does_not_pay() {
        let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
        // Passes over more tokens cost almost nothing more (a GPU, or a
        // memory-bound CPU step): draft as much as there is.
        let mut cheap = StepCosts::default();
        cheap.record(1, ms(10.0));
        cheap.record(9, ms(11.0));
        let mut tuner = Tuner::default();
        assert_eq!(tuner.draft_len(8, &cheap, Duration::ZERO), 8);
        // Every further token costs a whole step (compute-bound): never.
        let mut dear = StepCosts::default();
        dear.record(1, ms(10.0));
        dear.record(5, ms(50.0));
        assert_eq!(tuner.draft_len(8, &dear, Duration::ZERO), 0);
        // Guesses that keep failing stop paying, then a short probe comes back.
        for _ in 0..30 {
            tuner.record(4, 0);
        }
        assert!(tuner.acceptance() < 0.05);
        let mut lens = Vec::new();
        for _ in 0..PROBE_EVERY {
            lens.push(tuner.draft_len(8, &cheap, ms(2.0)));
        }
        assert_eq!(lens[..PROBE_EVERY - 1], vec![0; PROBE_EVERY - 1][..]);
        assert_eq!(lens[PROBE_EVERY - 1], 2);
        // Accepted again, it drafts again.
        for _ in 0..10 {
            tuner.record(4, 4);
        }
        assert!(tuner.draft_len(8, &cheap, Duration::ZERO) >= 4);
    }
}
