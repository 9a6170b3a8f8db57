//! Several sequences' tokens in one forward pass, each with its own rows and
//! KV cache: the decode batch (one token a row) beside a prompt's prefill
//! chunk (many tokens, its own cache), as vLLM's chunked prefill mixes them.
//! Every per-token op (the matmuls, norms, activations, residual adds) runs
//! once over all the tokens, so the weights are read once for both; only
//! what reads a cache (RoPE positions, the cache update, attention and its
//! mask) runs per segment. With one segment the pass is the plain one.
//!
//! The token-wise ops compute each row on its own, so a segment's results do
//! not depend on the segments beside it wherever the matmuls are
//! batch-invariant (the CPU's int8 mode: [`crate::kernels::Activations`]).

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp},
    Array,
};

use super::Logits;
use crate::{
    error::{Error, Result},
    model::cache::{KvCache, Positions},
};

/// One part of a forward pass: `tokens` [rows, len] appended to `cache`
/// (whose rows they are).
pub struct Segment<'a> {
    pub tokens: Array,
    pub cache: &'a mut KvCache,
    /// Which of this segment's logits the caller reads: none (a prefill
    /// chunk before the prompt's last: its last position skips the output
    /// projection), each row's last position's, or every position's (drafted
    /// tokens to verify; a lone segment only).
    pub logits: Option<Logits>,
}

/// The segments of a pass while it runs: where each one's tokens sit among
/// all of them, and the positions its new tokens take.
pub struct Segments<'s, 'a> {
    parts: &'s mut [Segment<'a>],
    /// Per segment: rows, tokens per row.
    shapes: Vec<(i32, i32)>,
    positions: Vec<Positions>,
}

impl<'s, 'a> Segments<'s, 'a> {
    pub fn new(parts: &'s mut [Segment<'a>]) -> Self {
        let shapes = parts.iter().map(|p| (p.tokens.dim(0), p.tokens.dim(1))).collect();
        let positions = parts.iter().map(|p| p.cache.positions()).collect();
        Segments { parts, shapes, positions }
    }

    /// Segment `i`'s rows and tokens per row.
    pub fn shape(&self, i: usize) -> (i32, i32) {
        self.shapes[i]
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Segment `i`'s cache.
    pub fn cache(&self, i: usize) -> &KvCache {
        self.parts[i].cache
    }

    /// `f` of each segment's tokens ([rows, len] → [rows, len, width]), laid
    /// out as the pass's activations: [rows, len, width] for one segment,
    /// every segment's tokens in a row [1, tokens, width] for several.
    pub fn embed(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<Array> {
        if let [only] = &*self.parts {
            return f(&only.tokens);
        }
        let parts = self.parts.iter().map(|p| f(&p.tokens)).collect::<Result<Vec<_>>>()?;
        self.join(parts)
    }

    /// Applies `f` to each segment's share of `arrays` (each in the pass's
    /// layout, seen as [rows, len, width] for the segment) with its index,
    /// cache and positions, and lays the results ([rows, len, width]) out as
    /// the pass's activations.
    pub fn each(&mut self, arrays: &[&Array], mut f: impl FnMut(usize, &mut KvCache, &Positions, &[Array]) -> Result<Array>) -> Result<Array> {
        if self.parts.len() == 1 {
            let own: Vec<Array> = arrays.iter().map(|a| (*a).clone()).collect();
            return f(0, self.parts[0].cache, &self.positions[0], &own);
        }
        let mut out = Vec::with_capacity(self.parts.len());
        let mut start = 0;
        for i in 0..self.parts.len() {
            let (rows, len) = self.shapes[i];
            let end = start + rows * len;
            let share = arrays
                .iter()
                .map(|a| Ok(a.try_index((.., start..end, ..))?.reshape(&[rows, len, -1])?))
                .collect::<Result<Vec<_>>>()?;
            out.push(f(i, self.parts[i].cache, &self.positions[i], &share)?);
            start = end;
        }
        self.join(out)
    }

    /// Marks every segment's tokens as stored in its cache (after every
    /// layer was updated) and gives the hidden states whose logits are read:
    /// of the last position of each row of the segments that ask for them,
    /// [rows, 1, width] (their rows in order), or of a lone segment's every
    /// position, [rows, len, width]; `None` where none are read.
    pub fn finish(&mut self, x: &Array) -> Result<Option<Array>> {
        for (part, &(_, len)) in self.parts.iter_mut().zip(&self.shapes) {
            part.cache.advance(len);
        }
        if let [only] = &*self.parts {
            return match only.logits {
                None => Ok(None),
                Some(Logits::Last) => Ok(Some(last_position(x)?)),
                Some(Logits::Every) => Ok(Some(x.clone())),
            };
        }
        if self.parts.iter().any(|p| p.logits == Some(Logits::Every)) {
            return Err(Error::internal("every position's logits are given for a lone segment only"));
        }
        let mut lasts = Vec::new();
        let mut start = 0;
        for (part, &(rows, len)) in self.parts.iter().zip(&self.shapes) {
            let end = start + rows * len;
            if part.logits.is_some() {
                let rows_of = x.try_index((.., start..end, ..))?.reshape(&[rows, len, -1])?;
                lasts.push(last_position(&rows_of)?);
            }
            start = end;
        }
        Ok(match lasts.len() {
            0 => None,
            1 => lasts.pop(),
            _ => Some(concatenate(&lasts, 0)?),
        })
    }

    /// The shape of the logits of the hidden states `h` that [`Segments::finish`]
    /// gave: [rows, len, vocab] for every position, else [rows, vocab].
    pub fn logits_shape(&self, h: &Array) -> Vec<i32> {
        match &*self.parts {
            [only] if only.logits == Some(Logits::Every) => vec![h.dim(0), h.dim(1), -1],
            _ => vec![h.dim(0), -1],
        }
    }

    /// The logits of the segments whose logits are read, split back from
    /// their rows in order ([rows, vocab] each), `None` for the others.
    pub fn split(&self, logits: Option<Array>) -> Result<Vec<Option<Array>>> {
        let mut out = Vec::with_capacity(self.parts.len());
        let mut row = 0;
        for (part, &(rows, _)) in self.parts.iter().zip(&self.shapes) {
            out.push(match (&logits, part.logits.is_some()) {
                (Some(all), true) if self.parts.len() == 1 => Some(all.clone()),
                (Some(all), true) => {
                    row += rows;
                    Some(all.try_index(row - rows..row)?)
                }
                _ => None,
            });
        }
        Ok(out)
    }

    /// Per-segment activations [rows, len, width] as one [1, tokens, width].
    fn join(&self, parts: Vec<Array>) -> Result<Array> {
        let flat = parts.iter().map(|a| Ok(a.reshape(&[1, -1, a.dim(-1)])?)).collect::<Result<Vec<_>>>()?;
        Ok(concatenate(&flat, 1)?)
    }
}

/// The hidden state of each row's last position: [rows, 1, hidden].
fn last_position(x: &Array) -> Result<Array> {
    let len = x.dim(1);
    Ok(if len == 1 { x.clone() } else { x.try_index((.., len - 1..len, ..))? })
}
