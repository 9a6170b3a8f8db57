//! Speculative decoding: guesses of a sequence's next tokens, verified by one
//! forward pass of the model over all of them (a pass over a few tokens
//! costs little more than over one where reading the weights dominates).
//!
//! Guesses come from the sequence's own text ([`Lookup`]: the text it is
//! copying, found by the tokens that followed the latest earlier occurrence
//! of its last few tokens, which is right most of the time where an answer
//! quotes or rewrites its prompt) or
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

/// The longest `n` (from `ngram` down to 1) whose last `n` tokens occurred
/// before, and where the latest such occurrence was followed from.
fn longest_match(tokens: &[u32], ngram: usize) -> Option<(usize, usize)> {
    let len = tokens.len();
    (1..=ngram.min(len.saturating_sub(1))).rev().find_map(|n| {
        let pattern = &tokens[len - n..];
        // The occurrence ending latest, excluding the pattern itself.
        (0..len - n).rev().find(|&s| &tokens[s..s + n] == pattern).map(|start| (n, start + n))
    })
}

/// Prompt lookup for one sequence: where its guesses are copied from, kept
/// from pass to pass so that a copy survives an edit.
///
/// A sequence that rewrites its prompt with a change (a renamed identifier)
/// copies until the change, writes its own token(s), then copies on from just
/// past the source's replaced token. Right after the change the last tokens
/// occur nowhere in the text, or elsewhere (an earlier line already
/// rewritten, the instruction naming the new identifier), so an n-gram finds
/// nothing or the wrong place; the copy's place (the cursor) guesses right
/// there. So the cursor goes first, and the n-gram finds a new place only
/// where there is none: at the start, or after the cursor's guesses failed
/// at once [`CURSOR_MISSES`] times in a row (the change was not a
/// replacement).
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Position in the sequence's tokens of the source token expected next,
    /// and the sequence's length it was expected at.
    cursor: Option<(usize, usize)>,
    /// The last proposal: where it was copied from, whether from the
    /// cursor, and the sequence's length then.
    last: Option<(usize, bool, usize)>,
    /// The cursor's guesses rejected at their first token in a row.
    misses: usize,
}

/// A cursor whose first guess failed this many passes in a row is dropped.
const CURSOR_MISSES: usize = 2;

impl Lookup {
    /// Guesses for the tokens after `tokens`: at most `max`, copied from the
    /// cursor, else from after the latest occurrence of the longest n-gram
    /// (up to `ngram` tokens); empty when there is none.
    pub fn propose<'a>(&mut self, tokens: &'a [u32], ngram: usize, max: usize) -> &'a [u32] {
        let len = tokens.len();
        // Tokens decoded plainly since the cursor was set move it on while
        // they follow the source, and lose it where they do not.
        if let Some((c, at)) = self.cursor {
            let k = len.saturating_sub(at);
            self.cursor = (at <= len && c + k <= at && tokens[at..] == tokens[c..c + k]).then_some((c + k, len));
        }
        let found = longest_match(tokens, ngram);
        let (from, cursor) = match (self.cursor.map(|(c, _)| c), found) {
            (Some(c), _) if c < len => (c, true),
            (_, Some((_, from))) => (from, false),
            _ => {
                self.last = None;
                return &[];
            }
        };
        self.last = Some((from, cursor, len));
        tracing::trace!(from, cursor, matched = found.map_or(0, |(n, _)| n), "looked up");
        &tokens[from..(from + max).min(len)]
    }

    /// After a pass that verified `drafted` guesses of the last proposal and
    /// accepted `accepted`: the model's own next token takes the place of
    /// the source token after them, and the copy goes on past it. A guess
    /// from the cursor that failed at once keeps the cursor (a change may
    /// take several tokens) until it fails [`CURSOR_MISSES`] times.
    pub fn settle(&mut self, drafted: usize, accepted: usize) {
        let Some((from, cursor, len)) = self.last.take() else { return };
        if drafted == 0 {
            return;
        }
        if cursor && accepted == 0 {
            self.misses += 1;
            if self.misses < CURSOR_MISSES {
                self.cursor = Some((from, len + 1));
            } else {
                (self.cursor, self.misses) = (None, 0);
            }
            return;
        }
        self.misses = 0;
        self.cursor = Some((from + accepted + 1, len + accepted + 1));
    }
}

/// Whether every guess available is verified, whatever it is expected to
/// pay (`MLX_SERVING_SPECULATE=always`: for tests and comparisons; read once).
fn always() -> bool {
    static ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALWAYS.get_or_init(|| std::env::var("MLX_SERVING_SPECULATE").is_ok_and(|v| v == "always"))
}

/// What a sequence's guesses and the machine's passes have shown so far,
/// and the draft length that follows from them.
///
/// Guesses are right in runs: text copied from the prompt is guessed right
/// for many tokens in a row, then a change breaks the run. So the chance of
/// a guess is estimated per position in the pass, given the guesses before
/// it were right (the first guess is the doubtful one; deeper ones, once
/// reached, are mostly right), and a position not yet seen takes the
/// estimate of the one before it.
#[derive(Debug, Clone)]
pub struct Tuner {
    /// Per position of a pass: discounted counts of passes that verified a
    /// guess there with every guess before it accepted, and of those that
    /// accepted it too.
    reached: [f64; MAX_DRAFT],
    accepted: [f64; MAX_DRAFT],
    /// Plain steps since the last guess, while guessing did not pay.
    idle: usize,
    /// Plain steps between probes: doubles while probes show guessing does
    /// not pay, so that a sequence that never quotes costs next to nothing.
    probe_every: usize,
    /// Measured seconds per delivered token of recent rounds with a draft
    /// model's guesses (proposing and verifying), smoothed. The expected
    /// rate is a model; this is what it gave (the draft's doubts, its
    /// catching up).
    round: Option<f64>,
}

/// Each pass's counts weigh this much less than the next one's.
const DISCOUNT: f64 = 0.9;
/// While guessing does not pay, a short guess every this many plain steps
/// (at first; then up to [`PROBE_EVERY_MAX`]) keeps the estimate current (a
/// sequence may start quoting its prompt).
const PROBE_EVERY: usize = 8;
const PROBE_EVERY_MAX: usize = 64;
/// Weight of the previous position's estimate in a position's (pseudo-passes).
const SHRINK: f64 = 1.0;

impl Default for Tuner {
    fn default() -> Self {
        // A prior of two accepted first guesses in three passes.
        let mut reached = [0.0; MAX_DRAFT];
        let mut accepted = [0.0; MAX_DRAFT];
        (reached[0], accepted[0]) = (3.0, 2.0);
        Tuner { reached, accepted, idle: 0, probe_every: PROBE_EVERY, round: None }
    }
}

impl Tuner {
    /// The estimated chance that the next drafted token is accepted.
    pub fn acceptance(&self) -> f64 {
        self.accepted[0] / self.reached[0].max(f64::MIN_POSITIVE)
    }

    /// The estimated chance of a guess at each position, given the guesses
    /// before it were accepted.
    fn chances(&self) -> [f64; MAX_DRAFT] {
        let mut p = [0.0; MAX_DRAFT];
        p[0] = self.acceptance();
        for i in 1..MAX_DRAFT {
            p[i] = (self.accepted[i] + SHRINK * p[i - 1]) / (self.reached[i] + SHRINK);
        }
        p
    }

    /// Records a pass that verified `drafted` tokens and accepted `accepted`.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        for i in 0..MAX_DRAFT {
            self.reached[i] *= DISCOUNT;
            self.accepted[i] *= DISCOUNT;
        }
        for i in 0..drafted.min(accepted + 1).min(MAX_DRAFT) {
            self.reached[i] += 1.0;
            if i < accepted {
                self.accepted[i] += 1.0;
            }
        }
        self.idle = 0;
    }

    /// Records what a round with guesses took in all (proposing them and the
    /// verifying pass) and the tokens it delivered.
    pub fn record_round(&mut self, took: Duration, delivered: usize) {
        let t = took.as_secs_f64() / delivered.max(1) as f64;
        self.round = Some(self.round.map_or(t, |r| r * 0.75 + t * 0.25));
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
        let chances = self.chances();
        let plain = costs.cost(1);
        let mut best = (0, 1.0 / plain);
        // Rounds that delivered tokens slower than plain steps: plain steps,
        // with a probe now and then (the text may turn to quoting).
        let measured_slower = self.round.is_some_and(|r| r > plain);
        let (mut expected, mut all_right) = (1.0, 1.0);
        for d in 1..=available {
            all_right *= chances[d - 1];
            expected += all_right;
            let rate = expected / (costs.cost(d + 1) + d as f64 * draft_cost.as_secs_f64());
            if rate > best.1 {
                best = (d, rate);
            }
        }
        if best.0 > 0 && !measured_slower {
            self.probe_every = PROBE_EVERY;
            return best.0;
        }
        self.idle += 1;
        if self.idle >= self.probe_every {
            self.idle = 0;
            self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
            return available.min(2);
        }
        0
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

    /// A fresh [`Lookup`] (no cursor yet): the plain n-gram lookup.
    fn look_up(tokens: &[u32], ngram: usize, max: usize) -> &[u32] {
        Lookup::default().propose(tokens, ngram, max)
    }

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
    fn a_copy_goes_on_past_a_replaced_token() {
        // The prompt "1 2 3 4 5 6 7 8"; the answer copies it with 4 replaced by 40.
        let prompt = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut tokens = prompt.to_vec();
        tokens.extend([1, 2]);
        let mut lookup = Lookup::default();
        // "1 2" occurred: copy "3 4 5 6"; the model accepts 3, then writes 40.
        assert_eq!(lookup.propose(&tokens, 3, 4), &[3, 4, 5, 6]);
        lookup.settle(4, 1);
        tokens.extend([3, 40]);
        // "2 3 40" and "3 40" and "40" occur nowhere: plain lookup has nothing,
        // the cursor copies on after the replaced 4.
        assert!(look_up(&tokens, 3, 4).is_empty());
        assert_eq!(lookup.propose(&tokens, 3, 4), &[5, 6, 7, 8]);
        lookup.settle(4, 4);
        // The copy went on to the end of the prompt: the cursor is at the
        // answer's start, which repeats the prompt.
        tokens.extend([5, 6, 7, 8, 1]);
        assert_eq!(lookup.propose(&tokens, 3, 4), &tokens[9..13]);
    }

    #[test]
    fn plain_steps_between_passes_move_the_cursor_on() {
        let mut tokens = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2];
        let mut lookup = Lookup::default();
        assert_eq!(lookup.propose(&tokens, 3, 2), &[3, 4]);
        lookup.settle(2, 0);
        // 3 replaced by 30, then two plain steps that follow the source (4 5).
        tokens.extend([30, 4, 5]);
        assert_eq!(lookup.propose(&tokens, 3, 2), &[6, 7]);
        // Plain steps that leave the source lose the cursor.
        let mut other = Lookup::default();
        let mut t = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2];
        other.propose(&t, 3, 2);
        other.settle(2, 0);
        t.extend([30, 70, 71]);
        assert!(other.propose(&t, 3, 2).is_empty());
    }

    #[test]
    fn a_change_of_several_tokens_keeps_the_cursor_then_drops_it() {
        let mut tokens = vec![1, 2, 3, 4, 5, 6, 7, 8, 1, 2];
        let mut lookup = Lookup::default();
        assert_eq!(lookup.propose(&tokens, 3, 4), &[3, 4, 5, 6]);
        lookup.settle(4, 1);
        // 4 becomes "40 41": the cursor's first guess (5) fails once, then holds.
        tokens.extend([3, 40]);
        assert_eq!(lookup.propose(&tokens, 3, 2), &[5, 6]);
        lookup.settle(2, 0);
        tokens.push(41);
        assert_eq!(lookup.propose(&tokens, 3, 2), &[5, 6]);
        lookup.settle(2, 2);
        // A cursor that keeps failing at once is dropped.
        tokens.extend([5, 6, 90]);
        assert_eq!(lookup.propose(&tokens, 3, 2), &[8, 1]);
        lookup.settle(2, 0);
        tokens.push(91);
        assert_eq!(lookup.propose(&tokens, 3, 2), &[8, 1]);
        lookup.settle(2, 0);
        tokens.push(92);
        assert!(lookup.propose(&tokens, 3, 2).is_empty());
    }

    #[test]
    fn drafting_stops_where_it_does_not_pay() {
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
        // A probe that shows guessing still does not pay: the next comes later.
        tuner.record(2, 0);
        let mut waited = 0;
        while tuner.draft_len(8, &cheap, ms(2.0)) == 0 {
            waited += 1;
        }
        assert_eq!(waited, 2 * PROBE_EVERY - 1);
        // Accepted again, it drafts again.
        for _ in 0..10 {
            tuner.record(4, 4);
        }
        assert!(tuner.draft_len(8, &cheap, Duration::ZERO) >= 4);
    }

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    /// A CPU at a few rows: a step of 50 ms, each further token a fifth of it.
    fn cpu_costs() -> StepCosts {
        let mut costs = StepCosts::default();
        costs.record(1, ms(50.0));
        costs.record(5, ms(90.0));
        costs
    }

    #[test]
    fn rounds_measured_slower_than_plain_steps_stop_drafting() {
        let costs = cpu_costs();
        let mut tuner = Tuner::default();
        for _ in 0..10 {
            tuner.record(4, 4);
        }
        // The model of the rate says a cheap draft pays.
        assert!(tuner.draft_len(8, &costs, ms(5.0)) > 0);
        // Rounds that took 60 ms a token against 50 for a plain step: no.
        for _ in 0..4 {
            tuner.record_round(ms(180.0), 3);
        }
        let lens: Vec<usize> = (0..PROBE_EVERY).map(|_| tuner.draft_len(8, &costs, ms(5.0))).collect();
        assert_eq!(lens[..PROBE_EVERY - 1], vec![0; PROBE_EVERY - 1][..]);
        assert_eq!(lens[PROBE_EVERY - 1], 2, "a probe keeps the measure current");
        // Rounds that beat plain steps again: drafting resumes.
        for _ in 0..8 {
            tuner.record_round(ms(90.0), 4);
        }
        assert!(tuner.draft_len(8, &costs, ms(5.0)) > 0);
    }

    #[test]
    fn guesses_right_in_runs_get_longer_drafts() {
        let costs = cpu_costs();
        // Copying: the first guess is right two times in three, and once it
        // is, the rest of the pass is right.
        let mut runs = Tuner::default();
        for i in 0..30 {
            if i % 3 == 0 { runs.record(6, 0) } else { runs.record(6, 6) }
        }
        // The same share of guesses accepted, spread evenly over positions.
        let mut even = Tuner::default();
        for i in 0..30 {
            even.record(6, [2, 3, 4][i % 3]);
        }
        let (long, short) = (runs.draft_len(16, &costs, Duration::ZERO), even.draft_len(16, &costs, Duration::ZERO));
        assert!(long > short, "runs {long}, even {short}");
        assert!(long >= 8, "runs {long}");
    }
}
