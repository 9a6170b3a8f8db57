//! Mixed steps: while sequences decode, a long prompt's next prefill chunk
//! rides in the decode step's forward pass (one pass, the batch's rows and
//! the chunk's tokens: [`crate::model::Segment`]) instead of a pass of its
//! own before the step, as vLLM's chunked prefill does. The weights are read
//! once for both and the pass's fixed costs are paid once, so the prompt
//! costs the running streams one somewhat larger step.
//!
//! The chunk is sized so that a mixed step takes about [`STEP_RATIO`] times
//! a decode step of the same batch alone: from the measured cost of decode
//! steps (per batch size) and of a chunk's tokens in mixed steps (what a
//! mixed step took beyond the decode step it carried, per token; later
//! chunks attend to more context and cost more, so the estimate follows the
//! latest closely).
//!
//! The int8 kernels multiply activation rows in tiles
//! ([`crate::kernels::Isa::int8_tile_rows`]), each
//! tile reading and unpacking the weights once: tokens that complete the
//! decode rows' last tile cost a fraction of those that open a new one. When
//! the room leaves less than that, the chunk still fills the tile (a chunk
//! of a few tokens would pay nearly a tile's cost and move the prompt on by
//! little, and each chunk also reads the prompt's whole context).
//!
//! Only where a row's result does not depend on the rows beside it (the
//! CPU's int8 kernels: [`crate::model::Model::batch_invariant`]), so that a
//! stream's answer is the same whether or not a prompt rides in its step.

use std::time::Duration;

/// A mixed step's target, in decode steps of the same batch alone. With a
/// chunk costing `(r - 1)` decode steps, a prompt whose prefill alone takes
/// `T` takes about `T * r / (r - 1)` beside the streams (the streams' steps
/// are the rest of the time), and their inter-token gaps grow `r` times:
/// 1.75 keeps the gaps under twice their usual length with some room for
/// the estimate's error, and the prompt's first token within ~2.3x.
pub const STEP_RATIO: f64 = 1.75;

/// The fewest tokens a chunk has, and the first chunk's size before any cost is known.
pub const CHUNK_MIN: usize = 4;
pub const CHUNK_FIRST: usize = 16;

/// Whether mixed steps are on: `MLX_SERVING_MIXED_STEPS=0` turns them off
/// (a long prompt's chunks then run as passes of their own, for
/// comparisons; read once).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLX_SERVING_MIXED_STEPS").map_or(true, |v| v != "0"))
}

/// What decode steps and chunks in mixed steps have cost, and the chunk size that follows.
pub struct Budget {
    /// Rows the kernels multiply per weight load: a chunk fills its last tile.
    tile: usize,
    /// Per batch size: a decode step's cost (smoothed).
    decode: Vec<Option<Duration>>,
    /// A chunk token's cost in a mixed step (smoothed).
    per_token: Option<Duration>,
    /// The last mixed step's chunk.
    last_chunk: usize,
}

impl Budget {
    /// A budget for kernels that multiply `tile` rows per weight load.
    pub fn new(tile: usize) -> Self {
        Budget { tile: tile.max(1), decode: Vec::new(), per_token: None, last_chunk: 0 }
    }

    /// A decode step of `rows` rows, alone, took `cost`.
    pub fn decode_step(&mut self, rows: usize, cost: Duration) {
        if rows >= self.decode.len() {
            self.decode.resize(rows + 1, None);
        }
        let slot = &mut self.decode[rows];
        *slot = Some(slot.map_or(cost, |prev| (prev + cost) / 2));
    }

    /// A mixed step of `rows` decode rows and a chunk of `chunk` tokens took `cost`.
    pub fn mixed_step(&mut self, rows: usize, chunk: usize, cost: Duration) {
        self.last_chunk = chunk;
        let Some(decode) = self.decode_cost(rows) else { return };
        // What the chunk added; a step measured faster than a decode step
        // alone (noise) says the chunk was cheap, not free.
        let added = cost.saturating_sub(decode).max(decode / 20);
        let per_token = added / chunk.max(1) as u32;
        self.per_token = Some(match self.per_token {
            Some(prev) => (prev + per_token * 3) / 4,
            None => per_token,
        });
    }

    /// A decode step's cost at `rows` rows: measured at that size, or
    /// scaled from the nearest size measured.
    fn decode_cost(&self, rows: usize) -> Option<Duration> {
        if let Some(Some(cost)) = self.decode.get(rows) {
            return Some(*cost);
        }
        let (near, cost) = self.decode.iter().enumerate().filter_map(|(r, c)| c.map(|c| (r, c))).min_by_key(|&(r, _)| r.abs_diff(rows))?;
        // Steps grow with rows, but slower than in proportion (fixed costs).
        Some(cost.mul_f64(((rows.max(1) as f64) / (near.max(1) as f64)).sqrt()))
    }

    /// The next mixed step's chunk for a batch of `rows`, at most `at_once`
    /// tokens: what keeps the step within [`STEP_RATIO`] decode steps, at
    /// most twice the last chunk, but at least what completes the rows' last
    /// tile; `None` while no decode step has been measured (run one alone
    /// first).
    pub fn next_chunk(&self, rows: usize, at_once: usize) -> Option<usize> {
        let decode = self.decode_cost(rows)?;
        let tokens = match self.per_token {
            Some(per_token) if !per_token.is_zero() => {
                let room = decode.mul_f64(STEP_RATIO - 1.0);
                let fit = (room.as_secs_f64() / per_token.as_secs_f64()) as usize;
                fit.min(self.last_chunk.max(CHUNK_FIRST) * 2)
            }
            _ => CHUNK_FIRST,
        };
        // Up to the end of the tile that the chunk's last token falls in.
        let tokens = (rows + tokens.max(CHUNK_MIN)).div_ceil(self.tile) * self.tile - rows;
        Some(tokens.min(at_once.max(CHUNK_MIN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn no_chunk_rides_before_a_decode_step_was_measured() {
        assert_eq!(Budget::new(1).next_chunk(8, 256), None);
    }

    #[test]
    fn a_chunk_fills_the_room_a_decode_step_leaves() {
        let mut b = Budget::new(1);
        b.decode_step(8, MS(40));
        assert_eq!(b.next_chunk(8, 256), Some(CHUNK_FIRST));
        // 16 tokens added 20 ms: 1.25 ms a token, and 0.75 * 40 ms of room is 24 tokens.
        b.mixed_step(8, 16, MS(60));
        assert_eq!(b.next_chunk(8, 256), Some(24));
        // Never more than twice the last chunk, nor more than at once.
        b.mixed_step(8, 4, MS(41));
        assert_eq!(b.next_chunk(8, 256), Some(CHUNK_FIRST * 2));
        assert!(b.next_chunk(8, 20).unwrap() <= 20);
    }

    #[test]
    fn dearer_chunks_shrink_the_next() {
        let mut b = Budget::new(1);
        b.decode_step(4, MS(30));
        b.mixed_step(4, 16, MS(50));
        let first = b.next_chunk(4, 256).unwrap();
        // Later chunks attend to more context: 16 tokens now add 60 ms.
        b.mixed_step(4, 16, MS(90));
        let next = b.next_chunk(4, 256).unwrap();
        assert!(next < first, "{next} < {first}");
        assert!(next >= CHUNK_MIN);
    }

    #[test]
    fn a_chunk_fills_its_last_tile() {
        // Dear tokens: the room (12 ms) holds 1 of them, and the chunk still
        // fills the tile after the decode rows.
        let measured = |tile| {
            let mut b = Budget::new(tile);
            b.decode_step(8, MS(16));
            b.mixed_step(8, 8, MS(100));
            b
        };
        let (eight, four, one) = (measured(8), measured(4), measured(1));
        assert_eq!(eight.next_chunk(8, 256), Some(8));
        assert_eq!(eight.next_chunk(5, 256), Some(11));
        assert_eq!(four.next_chunk(6, 256), Some(6));
        assert_eq!(one.next_chunk(8, 256), Some(CHUNK_MIN));
        // Never more than the prompt has left.
        assert_eq!(eight.next_chunk(8, 5), Some(5));
        // Cheap tokens: what the room holds, rounded up to the tile's end.
        let mut eight = eight;
        eight.mixed_step(8, 8, MS(17));
        let n = eight.next_chunk(8, 256).unwrap();
        assert_eq!((8 + n) % 8, 0, "{n}");
    }

    #[test]
    fn a_batch_size_not_measured_takes_the_nearest_scaled() {
        let mut b = Budget::new(1);
        b.decode_step(8, MS(40));
        let at_two = b.decode_cost(2).unwrap();
        assert!(at_two < MS(40) && at_two > MS(10), "{at_two:?}");
        assert_eq!(b.decode_cost(8), Some(MS(40)));
    }
}
