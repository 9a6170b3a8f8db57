//! Per-sequence key/value cache, preallocated in steps and updated in place.

use mlx_rs::{
    ops::{
        concatenate,
        indexing::{IndexOp, TryIndexMutOp},
        zeros_dtype,
    },
    Array,
};

use crate::error::Result;

/// Positions are allocated in chunks of this many, so most steps only write.
const STEP: i32 = 256;

#[derive(Default)]
struct LayerKv {
    keys: Option<Array>,
    values: Option<Array>,
}

/// Keys and values of one sequence for every layer.
pub struct KvCache {
    layers: Vec<LayerKv>,
    offset: i32,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache { layers: (0..layers).map(|_| LayerKv::default()).collect(), offset: 0 }
    }

    /// Number of positions already stored.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Stores `keys`/`values` ([1, kv_heads, n, head_dim]) at the current offset
    /// for `layer` and returns everything stored so far for it.
    pub fn update(&mut self, layer: usize, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let n = keys.dim(2);
        let end = self.offset + n;
        let kv = &mut self.layers[layer];
        let capacity = kv.keys.as_ref().map_or(0, |k| k.dim(2));
        if end > capacity {
            let grow = ((end - capacity + STEP - 1) / STEP) * STEP;
            let grown = |old: &Option<Array>, like: &Array| -> Result<Array> {
                let shape = [1, like.dim(1), grow, like.dim(3)];
                let fresh = zeros_dtype(&shape, like.dtype())?;
                Ok(match old {
                    Some(old) => concatenate(&[old.index((.., .., ..self.offset, ..)), fresh], 2)?,
                    None => fresh,
                })
            };
            kv.keys = Some(grown(&kv.keys, keys)?);
            kv.values = Some(grown(&kv.values, values)?);
        }
        let (k, v) = (kv.keys.as_mut().unwrap(), kv.values.as_mut().unwrap());
        k.try_index_mut((.., .., self.offset..end, ..), keys)?;
        v.try_index_mut((.., .., self.offset..end, ..), values)?;
        Ok((k.index((.., .., ..end, ..)), v.index((.., .., ..end, ..))))
    }

    /// Marks `n` more positions as stored (after every layer was updated).
    pub fn advance(&mut self, n: i32) {
        self.offset += n;
    }
}
