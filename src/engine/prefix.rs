//! Prefix reuse: the keys and values of recent sequences, kept by the worker
//! within a byte budget, so that a prompt starting with a sequence seen
//! before (a conversation's history, a shared system prompt) prefills only
//! what is new.
//!
//! Position `p`'s keys and values depend on tokens `0..=p` alone, so the
//! first `n` columns of any cached sequence are exactly what a prefill of its
//! first `n` tokens computes: an entry serves every prompt that shares any
//! prefix with it, cut at any token. Entries are whole sequences; a lookup
//! takes the longest common prefix over all of them (a linear scan of token
//! ids: a few entries of a few thousand tokens cost microseconds next to a
//! forward pass). Least recently used entries go first when the budget is
//! exceeded.

use std::sync::atomic::{AtomicU64, Ordering};

use mlx_rs::{ops::indexing::IndexOp, Array};

/// Sequences shorter than this are not kept, and a shared prefix shorter than
/// this is not reused: prefilling a few dozen tokens costs about as much as
/// joining them, and each entry costs a copy.
pub const MIN_TOKENS: usize = 32;

/// Counters `stats()` reports, shared by the slot and its current worker.
#[derive(Default)]
pub struct PrefixStats {
    pub entries: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub bytes: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub tokens_reused: AtomicU64,
    pub evictions: AtomicU64,
}

/// A snapshot of [`PrefixStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixSnapshot {
    pub entries: u64,
    pub cached_tokens: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub tokens_reused: u64,
    pub evictions: u64,
}

impl PrefixStats {
    pub fn snapshot(&self) -> PrefixSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PrefixSnapshot {
            entries: get(&self.entries),
            cached_tokens: get(&self.cached_tokens),
            bytes: get(&self.bytes),
            hits: get(&self.hits),
            misses: get(&self.misses),
            tokens_reused: get(&self.tokens_reused),
            evictions: get(&self.evictions),
        }
    }
}

/// Per layer: keys and values of one sequence, each [1, kv_heads, len, head_dim].
pub type LayerKv = Vec<(Array, Array)>;

struct Entry {
    tokens: Vec<u32>,
    layers: LayerKv,
    bytes: usize,
    last_used: u64,
}

/// What a lookup found: how many leading tokens of the prompt are covered,
/// and their keys and values.
pub struct Hit {
    pub tokens: usize,
    pub layers: LayerKv,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    budget: usize,
    bytes: usize,
    clock: u64,
    stats: std::sync::Arc<PrefixStats>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// A cache of at most `budget` bytes (0 turns reuse off), reporting to `stats`.
    pub fn new(budget: usize, stats: std::sync::Arc<PrefixStats>) -> Self {
        let cache = PrefixCache { entries: Vec::new(), budget, bytes: 0, clock: 0, stats };
        cache.publish();
        cache
    }

    pub fn is_enabled(&self) -> bool {
        self.budget > 0
    }

    /// The longest cached prefix of `prompt`, leaving at least its last token
    /// to prefill (its logits give the first sampled token).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<Hit> {
        if !self.is_enabled() {
            return None;
        }
        let usable = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(usable)))
            .max_by_key(|&(_, n)| n);
        match best {
            Some((i, n)) if n >= MIN_TOKENS => {
                self.clock += 1;
                let entry = &mut self.entries[i];
                entry.last_used = self.clock;
                let cut = n as i32;
                let layers = entry.layers.iter().map(|(k, v)| (k.index((.., .., ..cut, ..)), v.index((.., .., ..cut, ..)))).collect();
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                self.stats.tokens_reused.fetch_add(n as u64, Ordering::Relaxed);
                Some(Hit { tokens: n, layers })
            }
            _ => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `tokens` with their keys and values (holding exactly those
    /// columns; a lazy copy is evaluated here, so callers may build it
    /// before other work and pay for it after). An entry that is a prefix of
    /// another is redundant: the shorter one is dropped, or the new one not kept.
    pub fn insert(&mut self, tokens: Vec<u32>, layers: LayerKv) -> crate::error::Result<()> {
        if !self.is_enabled() || tokens.len() < MIN_TOKENS {
            return Ok(());
        }
        let bytes: usize = layers.iter().map(|(k, v)| k.nbytes() + v.nbytes()).sum();
        if bytes > self.budget {
            return Ok(());
        }
        if self.entries.iter().any(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens)) {
            return Ok(());
        }
        mlx_rs::transforms::eval(layers.iter().flat_map(|(k, v)| [k, v]))?;
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry { tokens, layers, bytes, last_used: self.clock });
        self.recount();
        while self.bytes > self.budget {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used).expect("over budget means not empty");
            self.entries.swap_remove(oldest);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            self.recount();
        }
        Ok(())
    }

    fn recount(&mut self) {
        self.bytes = self.entries.iter().map(|e| e.bytes).sum();
        self.publish();
    }

    fn publish(&self) {
        self.stats.entries.store(self.entries.len() as u64, Ordering::Relaxed);
        self.stats.cached_tokens.store(self.entries.iter().map(|e| e.tokens.len() as u64).sum(), Ordering::Relaxed);
        self.stats.bytes.store(self.bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for PrefixCache {
    /// A worker that stops (unload, replacement) takes its entries with it.
    fn drop(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An entry of `len` tokens whose keys hold their position, 8 bytes per token and layer.
    fn kv(len: usize) -> LayerKv {
        let k = Array::from_iter((0..len).map(|p| p as f32), &[1, 1, len as i32, 1]);
        vec![(k.clone(), k)]
    }

    fn tokens(range: std::ops::Range<u32>) -> Vec<u32> {
        range.collect()
    }

    #[test]
    fn reuses_the_longest_shared_prefix_and_leaves_one_token() {
        let stats = Arc::new(PrefixStats::default());
        let mut cache = PrefixCache::new(1 << 20, stats.clone());
        cache.insert(tokens(0..100), kv(100)).unwrap();
        cache.insert(tokens(1000..1040), kv(40)).unwrap();

        let mut prompt = tokens(0..60);
        prompt.extend([7, 7, 7]);
        let hit = cache.lookup(&prompt).expect("shares 60 tokens");
        assert_eq!(hit.tokens, 60);
        assert_eq!(hit.layers[0].0.shape(), &[1, 1, 60, 1]);
        assert_eq!(hit.layers[0].0.as_slice::<f32>()[59], 59.0);

        // The whole prompt is cached: all but its last token are reused.
        assert_eq!(cache.lookup(&tokens(0..80)).unwrap().tokens, 79);
        // Too short a common prefix is a miss.
        assert!(cache.lookup(&tokens(1000..1010)).is_none());
        let s = stats.snapshot();
        assert_eq!((s.hits, s.misses, s.tokens_reused, s.entries, s.cached_tokens), (2, 1, 139, 2, 140));
    }

    #[test]
    fn evicts_least_recently_used_within_the_budget() {
        let stats = Arc::new(PrefixStats::default());
        // Room for 250 tokens of 8 bytes.
        let mut cache = PrefixCache::new(2000, stats.clone());
        cache.insert(tokens(0..100), kv(100)).unwrap();
        cache.insert(tokens(1000..1100), kv(100)).unwrap();
        assert!(cache.lookup(&tokens(0..50)).is_some()); // 0.. is now the most recent
        cache.insert(tokens(2000..2100), kv(100)).unwrap();
        assert!(cache.lookup(&tokens(1000..1050)).is_none(), "the least recently used entry went");
        assert!(cache.lookup(&tokens(0..50)).is_some());
        let s = stats.snapshot();
        assert_eq!((s.evictions, s.entries, s.bytes), (1, 2, 1600));
        // Bigger than the whole budget: not kept, nothing evicted for it.
        cache.insert(tokens(5000..5300), kv(300)).unwrap();
        assert_eq!(stats.snapshot().entries, 2);
    }

    #[test]
    fn keeps_the_longer_of_two_nested_sequences() {
        let stats = Arc::new(PrefixStats::default());
        let mut cache = PrefixCache::new(1 << 20, stats.clone());
        cache.insert(tokens(0..50), kv(50)).unwrap();
        cache.insert(tokens(0..90), kv(90)).unwrap();
        cache.insert(tokens(0..70), kv(70)).unwrap();
        let s = stats.snapshot();
        assert_eq!((s.entries, s.cached_tokens), (1, 90));
    }

    #[test]
    fn disabled_with_a_zero_budget() {
        let stats = Arc::new(PrefixStats::default());
        let mut cache = PrefixCache::new(0, stats.clone());
        cache.insert(tokens(0..100), kv(100)).unwrap();
        assert!(cache.lookup(&tokens(0..100)).is_none());
        assert_eq!(stats.snapshot(), PrefixSnapshot::default());
    }
}
