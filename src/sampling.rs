//! Token sampling: repetition penalty, greedy, temperature, top-k, top-p,
//! min-p, with a seeded generator per request, on the host; a batch whose
//! every request is greedy takes its argmax where the logits are ([`Picks`]).

use mlx_rs::{ops::indexing::argmax_axis, Array};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::Result;

/// How many recent tokens the repetition penalty looks at (llama.cpp's default).
pub const PENALTY_WINDOW: usize = 64;

/// Validated sampling parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the penalty.
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: None }
    }
}

/// Per-request sampler state: parameters, its random generator and recent
/// tokens. A clone continues with the same draws (a draft model's guesses).
#[derive(Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, context: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let start = context.len().saturating_sub(PENALTY_WINDOW);
        Sampler { params, rng, recent: context[start..].to_vec() }
    }

    /// Whether the next token is the logits' first maximum whatever came
    /// before (temperature 0, no repetition penalty): one the device can pick.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && self.params.repetition_penalty == 1.0
    }

    /// Picks the next token from one row of logits and remembers it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = if self.params.repetition_penalty != 1.0 {
            let mut penalized = logits.to_vec();
            apply_repetition_penalty(&mut penalized, &self.recent, self.params.repetition_penalty);
            self.pick(&penalized)
        } else {
            self.pick(logits)
        };
        self.remember(token);
        token
    }

    /// Verifies drafted tokens against the model's logits: `rows[j]` is its
    /// next-token logits after the drafts before `drafts[j]`, and
    /// `rows[drafts.len()]` after all of them. Each row is sampled as plain
    /// decoding would sample it, in order (the same penalty window, the same
    /// draws of the generator); a draft is accepted while it is the token
    /// drawn, and the first token drawn that differs from its draft (or the
    /// one after every draft) comes next. So the tokens are exactly plain
    /// decoding's with this sampler's seed, greedy or not; a guess is right
    /// as often as the model would have drawn it.
    pub fn verify(&mut self, rows: &[&[f32]], drafts: &[u32]) -> Verdict {
        debug_assert_eq!(rows.len(), drafts.len() + 1);
        for (j, row) in rows.iter().enumerate() {
            let token = self.sample(row);
            if drafts.get(j) != Some(&token) {
                return Verdict { accepted: j, next: token };
            }
        }
        unreachable!("the last row has no draft")
    }

    /// Remembers tokens picked elsewhere (a verification's on the device).
    pub fn remember_all(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.remember(t);
        }
    }

    /// Remembers a token picked elsewhere ([`Picks`]).
    fn remember(&mut self, token: u32) {
        self.recent.push(token);
        if self.recent.len() > PENALTY_WINDOW {
            self.recent.remove(0);
        }
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut candidates = filter_candidates(logits, p.temperature, p.top_k, p.top_p, p.min_p);
        let total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for &(id, prob) in &candidates {
            if r < prob {
                return id;
            }
            r -= prob;
        }
        candidates.pop().map(|c| c.0).unwrap_or_else(|| argmax(logits))
    }
}

/// What verifying drafted tokens gave ([`Sampler::verify`]): how many were
/// accepted, and the token that follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: u32,
}

/// What a step reads back from the device to pick its tokens from logits
/// `[rows, vocab]` (f32), row `i` for the `i`-th sampler: where every sampler
/// is greedy, the rows' argmax, taken where the logits are, so only the ids
/// cross to the host; otherwise the logits, sampled here. On CUDA this is most
/// of a batched step on a large vocabulary: MLX's device memory is managed,
/// so a host read of `rows x vocab` floats migrates their pages, and the next
/// step's write to the recycled buffer faults them back (the f32 logits cast
/// of one 49k-token row took ~180 us of a ~2 ms step in an Nsight Compute trace; docs/gpu.md).
pub enum Picks {
    /// The first maximum of each row, `[rows]` (u32).
    Argmax(Array),
    Logits(Array),
}

impl Picks {
    /// Lazily (nothing evaluated yet).
    pub fn new<'a>(logits: Array, mut samplers: impl Iterator<Item = &'a Sampler>) -> Result<Picks> {
        Ok(if samplers.all(Sampler::is_greedy) { Picks::Argmax(argmax_axis(&logits, -1, None)?) } else { Picks::Logits(logits) })
    }

    /// The array to evaluate.
    pub fn array(&self) -> &Array {
        match self {
            Picks::Argmax(a) | Picks::Logits(a) => a,
        }
    }

    /// The tokens of `rows` (evaluating what is not yet), the `i`-th row's
    /// picked for and remembered by the `i`-th sampler.
    pub fn tokens<'a>(&self, rows: &[usize], samplers: impl Iterator<Item = &'a mut Sampler>) -> Result<Vec<u32>> {
        self.array().eval()?;
        Ok(match self {
            Picks::Argmax(ids) => {
                let ids = ids.as_slice::<u32>();
                rows.iter().zip(samplers).map(|(&row, s)| {
                    s.remember(ids[row]);
                    ids[row]
                }).collect()
            }
            Picks::Logits(logits) => {
                let vocab = logits.dim(-1) as usize;
                let data = logits.as_slice::<f32>();
                rows.iter().zip(samplers).map(|(&row, s)| s.sample(&data[row * vocab..(row + 1) * vocab])).collect()
            }
        })
    }
}

/// Index of the largest logit; the first one on ties (as llama.cpp does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Divides positive and multiplies negative logits of recently seen tokens.
pub fn apply_repetition_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    let mut seen = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(v) = logits.get_mut(id as usize) {
            *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
        }
    }
}

/// Candidates `(token, probability)` after temperature, top-k, top-p and min-p,
/// sorted by descending probability. Probabilities are not renormalized.
pub fn filter_candidates(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> Vec<(u32, f32)> {
    let mut candidates: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, v / temperature)).collect();
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if top_k > 0 && top_k < candidates.len() {
        candidates.select_nth_unstable_by(top_k - 1, by_logit);
        candidates.truncate(top_k);
    }
    candidates.sort_unstable_by(by_logit);
    let max = candidates[0].1;
    let mut sum = 0.0;
    for c in candidates.iter_mut() {
        c.1 = (c.1 - max).exp();
        sum += c.1;
    }
    for c in candidates.iter_mut() {
        c.1 /= sum;
    }
    if top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = candidates.len();
        for (i, c) in candidates.iter().enumerate() {
            acc += c.1;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        candidates.truncate(keep);
    }
    if min_p > 0.0 {
        let threshold = candidates[0].1 * min_p;
        candidates.retain(|c| c.1 >= threshold);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, seed: Some(7), ..Default::default() }
    }

    #[test]
    fn greedy_picks_the_first_maximum() {
        let mut s = Sampler::new(params(0.0), &[]);
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn a_greedy_batch_is_picked_where_the_logits_are_as_the_host_would() {
        // Ties (the first maximum wins), a row whose maximum is last, and the
        // width of a real vocabulary (which MLX reduces in several blocks).
        let vocab = 49_152;
        let mut rows = vec![0.0f32; 3 * vocab];
        rows[7] = 2.0;
        rows[9] = 2.0;
        rows[vocab + vocab - 1] = 1.0;
        for (i, v) in rows[2 * vocab..].iter_mut().enumerate() {
            *v = ((i * 7919) % 10_007) as f32 * 1e-3;
        }
        let host: Vec<u32> = rows.chunks(vocab).map(argmax).collect();
        let logits = || Array::from_slice(&rows, &[3, vocab as i32]);
        let mut samplers: Vec<Sampler> = (0..3).map(|_| Sampler::new(params(0.0), &[])).collect();
        let picks = Picks::new(logits(), samplers.iter()).unwrap();
        assert!(matches!(picks, Picks::Argmax(_)));
        assert_eq!(picks.tokens(&[0, 1, 2], samplers.iter_mut()).unwrap(), host);
        assert_eq!(host[..2], [7, vocab as u32 - 1]);
        assert!(samplers.iter().zip(&host).all(|(s, &t)| s.recent == [t]), "each sampler remembers its token");
        // One sampling request (or a repetition penalty) reads every row on the host.
        for other in [params(0.7), SamplingParams { repetition_penalty: 1.1, ..params(0.0) }] {
            let mut samplers = vec![Sampler::new(params(0.0), &[]), Sampler::new(other, &[]), Sampler::new(params(0.0), &[])];
            let picks = Picks::new(logits(), samplers.iter()).unwrap();
            assert!(matches!(picks, Picks::Logits(_)));
            let tokens = picks.tokens(&[0, 1, 2], samplers.iter_mut()).unwrap();
            assert_eq!((tokens[0], tokens[2]), (host[0], host[2]));
        }
        // A subset of the rows, in the order given (a step whose sequences
        // retired while it ran).
        let mut samplers: Vec<Sampler> = (0..2).map(|_| Sampler::new(params(0.0), &[])).collect();
        let picks = Picks::new(logits(), samplers.iter()).unwrap();
        assert_eq!(picks.tokens(&[2, 0], samplers.iter_mut()).unwrap(), [host[2], host[0]]);
    }

    #[test]
    fn same_seed_gives_the_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = || {
            let mut s = Sampler::new(params(1.0), &[]);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut other = Sampler::new(SamplingParams { seed: Some(8), ..params(1.0) }, &[]);
        let other: Vec<_> = (0..50).map(|_| other.sample(&logits)).collect();
        assert_ne!(run(), other);
    }

    #[test]
    fn verified_tokens_are_plain_samplings_whatever_the_drafts() {
        // Logits of a few positions, sampled plainly with a seed, then
        // verified against drafts that are right, wrong, or right then wrong:
        // the tokens are plain sampling's every time.
        let rows: Vec<Vec<f32>> = (0..6).map(|j| (0..50).map(|i| (((i * 31 + j * 17) % 23) as f32) * 0.2).collect()).collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        for params in [params(0.0), params(1.0), SamplingParams { top_k: 5, top_p: 0.9, ..params(0.7) }, SamplingParams { repetition_penalty: 1.3, ..params(0.0) }] {
            let mut plain = Sampler::new(params.clone(), &[3, 4]);
            let expected: Vec<u32> = refs.iter().map(|r| plain.sample(r)).collect();
            for wrong_at in 0..=5 {
                let drafts: Vec<u32> = (0..5).map(|j| if j == wrong_at { (expected[j] + 1) % 50 } else { expected[j] }).collect();
                let mut s = Sampler::new(params.clone(), &[3, 4]);
                let mut got = Vec::new();
                let mut at = 0;
                while got.len() < 6 {
                    let n = (5 - at).min(drafts.len() - at.min(drafts.len()));
                    let v = s.verify(&refs[at..at + n + 1], &drafts[at..at + n]);
                    got.extend_from_slice(&drafts[at..at + v.accepted]);
                    got.push(v.next);
                    at += v.accepted + 1;
                }
                assert_eq!(got[..6], expected[..], "{params:?}, draft {wrong_at} wrong");
                assert_eq!(s.recent, plain.recent, "{params:?}: the penalty window follows the same tokens");
            }
        }
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let c = filter_candidates(&[1.0, 5.0, 3.0, 4.0], 1.0, 2, 1.0, 0.0);
        assert_eq!(c.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities ~ [0.665, 0.245, 0.090]
        let c = filter_candidates(&[2.0, 1.0, 0.0], 1.0, 0, 0.8, 0.0);
        assert_eq!(c.len(), 2);
        let c = filter_candidates(&[2.0, 1.0, 0.0], 1.0, 0, 0.5, 0.0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        let c = filter_candidates(&[2.0, 1.0, 0.0], 1.0, 0, 1.0, 0.3);
        // 0.245 / 0.665 = 0.37 stays, 0.09 / 0.665 = 0.14 goes
        assert_eq!(c.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn low_temperature_sharpens_and_samples_only_candidates() {
        let mut s = Sampler::new(SamplingParams { top_k: 2, ..params(0.7) }, &[]);
        for _ in 0..200 {
            assert!([1, 3].contains(&s.sample(&[1.0, 5.0, 3.0, 4.0])));
        }
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut logits = vec![2.0, -1.0, 1.9];
        apply_repetition_penalty(&mut logits, &[0, 1, 0], 2.0);
        assert_eq!(logits, vec![1.0, -2.0, 1.9]);
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..params(0.0) }, &[0]);
        assert_eq!(s.sample(&[2.0, -1.0, 1.9]), 2);
    }
}
