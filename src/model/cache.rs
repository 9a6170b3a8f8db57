//! Keys and values of a batch of sequences, preallocated in steps and updated
//! in place.
//!
//! Rows are right-aligned: every row's newest position sits in column
//! `end - 1`, so one slice write per layer stores a decode step for the whole
//! batch, and attention runs once per layer rather than once per sequence. A
//! row shorter than the longest has `pad` unused columns on its left, which
//! the attention mask hides. Prompts are prefilled in a cache of their own
//! (one row, or several short prompts side by side), which then joins the
//! worker's decode batch.

use mlx_rs::{
    fast::{rope, rope_dynamic, ScaledDotProductAttentionMask},
    ops::{
        concatenate,
        indexing::{IndexOp, TryIndexMutOp},
        pad, zeros_dtype,
    },
    Array,
};

use crate::error::Result;

/// Columns are allocated in chunks of this many, so most steps only write.
const STEP: i32 = 256;

pub struct KvCache {
    /// Per layer: keys and values, each [rows, kv_heads, capacity, head_dim].
    layers: Vec<Option<(Array, Array)>>,
    /// Per row: leading columns that hold no position of that row.
    pads: Vec<i32>,
    /// Columns in use (the same for every row).
    end: i32,
    /// Columns to allocate at least, once any are (see [`KvCache::reserve`]).
    reserve: i32,
}

/// The mask a forward pass applies in attention.
pub enum Mask {
    None,
    Causal,
    /// [rows, 1, len, columns], true where a query may attend.
    Rows(Array),
}

impl Mask {
    pub fn as_sdpa(&self) -> Option<ScaledDotProductAttentionMask<'_>> {
        match self {
            Mask::None => None,
            Mask::Causal => Some(ScaledDotProductAttentionMask::Causal),
            Mask::Rows(mask) => Some(ScaledDotProductAttentionMask::Array(mask)),
        }
    }
}

/// [`KvCache::window_mask`]'s entries, [rows, 1, len, end + len] row-major: a
/// query at position `end + i` of a row padded by `pad` sees itself, and the
/// columns from `pad` up to it within `window`.
pub(crate) fn allowed_on_host(pads: &[i32], end: i32, len: i32, window: Option<i32>) -> Vec<bool> {
    let reach = window.unwrap_or(i32::MAX);
    let columns = end + len;
    let mut used = Vec::with_capacity(pads.len() * (len * columns) as usize);
    for &pad in pads {
        for i in 0..len {
            let position = end + i;
            used.extend((0..columns).map(|c| c == position || (c <= position && c >= pad && position - c < reach)));
        }
    }
    used
}

/// [`allowed_on_host`] as MLX ops, from the positions, columns and pads alone.
pub(crate) fn allowed_on_device(pads: &[i32], end: i32, len: i32, window: Option<i32>) -> Result<Array> {
    let columns: Vec<i32> = (0..end + len).collect();
    let positions: Vec<i32> = (end..end + len).collect();
    let c = Array::from_slice(&columns, &[1, 1, 1, end + len]);
    let p = Array::from_slice(&positions, &[1, 1, len, 1]);
    let pad = Array::from_slice(pads, &[pads.len() as i32, 1, 1, 1]);
    let mut seen = c.le(&p)?.logical_and(&c.ge(&pad)?)?;
    if let Some(reach) = window {
        seen = seen.logical_and(&p.subtract(&c)?.lt(Array::from_int(reach))?)?;
    }
    Ok(seen.logical_or(&c.eq(&p)?)?)
}

/// Where each row's new tokens go: one offset for a single row, or one per row.
pub enum Positions {
    Single(i32),
    PerRow(Array),
}

/// A rotary position embedding's parameters.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Leading dimensions of each head that rotate (all of them here).
    pub dims: i32,
    pub base: f32,
    /// Positions are multiplied by this (linear RoPE scaling: 1 / factor).
    pub scale: f32,
    /// Rotate adjacent pairs (llama in GGUF, whose q/k rows llama.cpp's
    /// converter permuted for it) rather than the two halves of each head
    /// (NeoX style: qwen2, gemma3).
    pub traditional: bool,
    /// Per-pair periods `base^(2i/dims)` already adjusted (llama 3's scaling
    /// by `rope_freqs`); they replace `base`.
    pub periods: Option<Array>,
}

impl Rope {
    pub fn new(dims: i32, base: f32, traditional: bool) -> Self {
        Rope { dims, base, scale: 1.0, traditional, periods: None }
    }
}

impl Positions {
    /// Rotary position embedding of `x` ([rows, heads, len, head_dim]).
    pub fn rope(&self, x: &Array, r: &Rope) -> Result<Array> {
        let base = if r.periods.is_some() { None } else { Some(r.base) };
        Ok(match self {
            Positions::Single(offset) => rope(x, r.dims, r.traditional, base, r.scale, *offset, r.periods.as_ref())?,
            Positions::PerRow(offsets) => rope_dynamic(x, r.dims, r.traditional, base, r.scale, offsets, r.periods.as_ref())?,
        })
    }
}

impl KvCache {
    /// An empty cache of one sequence, for its prefill.
    pub fn new(layers: usize) -> Self {
        KvCache::with_rows(layers, vec![0])
    }

    /// An empty cache for prompts prefilled side by side: row `i`'s prompt is
    /// `pads[i]` tokens shorter than the longest and starts that far right.
    pub fn with_rows(layers: usize, pads: Vec<i32>) -> Self {
        KvCache { layers: (0..layers).map(|_| None).collect(), pads, end: 0, reserve: 0 }
    }

    /// A one-row cache holding a sequence's first positions already: per
    /// layer, keys and values [1, kv_heads, len, head_dim] (a reused prefix).
    pub fn from_prefix(layers: Vec<(Array, Array)>, len: i32) -> Self {
        KvCache { layers: layers.into_iter().map(Some).collect(), pads: vec![0], end: len, reserve: 0 }
    }

    /// A copy of `row`'s positions, per layer: keys and values
    /// [1, kv_heads, len, head_dim], holding no other row's data. Lazy: the
    /// copy happens when the arrays are evaluated.
    pub fn row(&self, row: usize) -> Result<Vec<(Array, Array)>> {
        let (r, pad) = (row as i32, self.pads[row]);
        let mut out = Vec::with_capacity(self.layers.len());
        for slot in &self.layers {
            let (k, v) = slot.as_ref().ok_or_else(|| crate::error::Error::internal("copying a row of an unfilled cache"))?;
            let copy = |a: &Array| a.index((r..r + 1, .., pad..self.end, ..)).contiguous();
            out.push((copy(k)?, copy(v)?));
        }
        Ok(out)
    }

    /// Allocates room for `columns` in one step when the cache first grows, so
    /// a prompt prefilled chunk by chunk is never copied to a larger cache on
    /// the way (each copy would stall the batch's streams for its duration).
    pub fn reserve(&mut self, columns: i32) {
        self.reserve = columns;
    }

    /// An empty batch, which sequences join after their prefill.
    pub fn batch(layers: usize) -> Self {
        KvCache::with_rows(layers, Vec::new())
    }

    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Columns in use (the longest row's positions).
    pub fn columns(&self) -> i32 {
        self.end
    }

    /// Positions stored for `row`.
    pub fn len(&self, row: usize) -> i32 {
        self.end - self.pads[row]
    }

    /// Where each row's next tokens go: its own length so far.
    pub fn positions(&self) -> Positions {
        match self.pads.as_slice() {
            [pad] => Positions::Single(self.end - pad),
            pads => Positions::PerRow(Array::from_iter(pads.iter().map(|p| self.end - p), &[pads.len() as i32])),
        }
    }

    /// The attention mask for `len` new tokens in every row: causal, and
    /// hiding each row's padding. A padding position still sees itself, so
    /// no softmax row is empty (its output is never read). `explicit` asks
    /// for an array even where `Causal` would do.
    pub fn mask(&self, len: i32, explicit: bool) -> Mask {
        self.window_mask(len, explicit, None)
    }

    /// [`KvCache::mask`] for sliding-window attention: with `Some(window)`,
    /// a position also sees only itself and the `window - 1` positions
    /// before it.
    pub fn window_mask(&self, len: i32, explicit: bool, window: Option<i32>) -> Mask {
        let unpadded = self.pads.iter().all(|&p| p == 0);
        // The farthest a query looks back is `end + len - 1` columns.
        let window = window.filter(|&w| self.end + len > w);
        match (len, unpadded, window) {
            (1, true, None) => return Mask::None,
            (_, true, None) if self.rows() == 1 && !explicit => return Mask::Causal,
            _ => {}
        }
        // On a GPU the mask is computed there (a 2048-token chunk after 2048
        // columns is 8M entries, ~10 ms to write on the host and copy);
        // the host's copy serves our CPU kernel as it is.
        if crate::device::backend().is_gpu() {
            if let Ok(allowed) = allowed_on_device(&self.pads, self.end, len, window) {
                return Mask::Rows(allowed);
            }
        }
        let allowed = allowed_on_host(&self.pads, self.end, len, window);
        Mask::Rows(Array::from_slice(&allowed, &[self.rows() as i32, 1, len, self.end + len]))
    }

    /// Stores `keys`/`values` ([rows, kv_heads, n, head_dim]) in columns
    /// `end..end + n` of `layer` and returns every column in use for it.
    pub fn update(&mut self, layer: usize, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let (start, end) = (self.end, self.end + keys.dim(2));
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(0, |(k, _)| k.dim(2));
        if end > capacity {
            let target = end.max(self.reserve);
            let grow = ((target + STEP - 1) / STEP) * STEP - start;
            let grown = |old: Option<&Array>, like: &Array| -> Result<Array> {
                let fresh = zeros_dtype(&[like.dim(0), like.dim(1), grow, like.dim(3)], like.dtype())?;
                Ok(match old {
                    Some(old) => concatenate(&[old.index((.., .., ..start, ..)), fresh], 2)?,
                    None => fresh,
                })
            };
            let k = grown(slot.as_ref().map(|s| &s.0), keys)?;
            let v = grown(slot.as_ref().map(|s| &s.1), values)?;
            *slot = Some((k, v));
        }
        let (k, v) = slot.as_mut().expect("allocated above");
        k.try_index_mut((.., .., start..end, ..), keys)?;
        v.try_index_mut((.., .., start..end, ..), values)?;
        Ok((k.index((.., .., ..end, ..)), v.index((.., .., ..end, ..))))
    }

    /// Marks `n` more columns as used (after every layer was updated).
    pub fn advance(&mut self, n: i32) {
        self.end += n;
    }

    /// Forgets the last `n` columns of every row (positions a verification
    /// pass stored for drafted tokens that were rejected); the next update
    /// writes over them. At most what the shortest row holds.
    pub fn truncate(&mut self, n: i32) {
        let shortest = self.pads.iter().map(|&p| self.end - p).min().unwrap_or(0);
        debug_assert!(n >= 0 && n <= shortest, "truncating {n} of {shortest} positions");
        self.end -= n.clamp(0, shortest);
    }

    /// Appends the rows of `others` (prefilled caches) after this batch's rows,
    /// right-aligning everyone to the longest.
    pub fn join(&mut self, others: Vec<KvCache>) -> Result<()> {
        // Caches left empty (every sequence of a prefill group ended) add nothing.
        let mut others: Vec<KvCache> = others.into_iter().filter(|c| c.rows() > 0).collect();
        if others.is_empty() {
            return Ok(());
        }
        if self.rows() == 0 && others.len() == 1 {
            *self = others.pop().expect("one cache");
            return Ok(());
        }
        let parts: Vec<&KvCache> = std::iter::once(&*self).filter(|c| c.rows() > 0).chain(others.iter()).collect();
        let end = parts.iter().map(|c| c.end).max().unwrap_or(0);
        let capacity = ((end + STEP - 1) / STEP) * STEP;
        // Built aside and swapped in whole, so a failure leaves the batch as it was.
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in 0..self.layers.len() {
            let mut keys = Vec::with_capacity(parts.len());
            let mut values = Vec::with_capacity(parts.len());
            for cache in &parts {
                let (k, v) = cache.layers[layer].as_ref().expect("a joined cache holds every layer");
                // Shift right by the difference in length, cut to the new capacity.
                let shift = end - cache.end;
                let widths = [(0, 0), (0, 0), (shift, capacity - end), (0, 0)];
                keys.push(pad(k.index((.., .., ..cache.end, ..)), &widths, None, None)?);
                values.push(pad(v.index((.., .., ..cache.end, ..)), &widths, None, None)?);
            }
            layers.push(Some((concatenate(&keys, 0)?, concatenate(&values, 0)?)));
        }
        let pads: Vec<i32> = parts.iter().flat_map(|c| c.pads.iter().map(move |p| p + end - c.end)).collect();
        self.layers = layers;
        self.pads = pads;
        self.end = end;
        Ok(())
    }

    /// Keeps only the rows listed, in that order, and drops leading columns
    /// no remaining row uses.
    pub fn retain(&mut self, rows: &[usize]) -> Result<()> {
        if rows.len() == self.rows() && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(());
        }
        if rows.is_empty() {
            *self = KvCache::batch(self.layers.len());
            return Ok(());
        }
        let pads: Vec<i32> = rows.iter().map(|&r| self.pads[r]).collect();
        let trim = pads.iter().copied().min().unwrap_or(0);
        let index = Array::from_iter(rows.iter().map(|&r| r as i32), &[rows.len() as i32]);
        let keep = |a: &Array| -> Result<Array> { Ok(a.take_axis(&index, 0)?.index((.., .., trim.., ..))) };
        let mut layers = Vec::with_capacity(self.layers.len());
        for slot in &self.layers {
            layers.push(match slot {
                Some((k, v)) => Some((keep(k)?, keep(v)?)),
                None => None,
            });
        }
        self.layers = layers;
        self.pads = pads.into_iter().map(|p| p - trim).collect();
        self.end -= trim;
        Ok(())
    }
}
