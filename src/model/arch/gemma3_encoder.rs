//! Gemma 3 as an encoder (EmbeddingGemma, `use_bidirectional_attention`):
//! the layers of [`super::gemma3`], run over whole inputs without a KV cache,
//! with bidirectional attention. A global layer sees every real token of its
//! input; a sliding-window layer sees the tokens less than `window / 2 + 1`
//! positions away on either side (Hugging Face's bidirectional window, which
//! halves config.json's `sliding_window`). Every row starts at position 0;
//! padding follows the real tokens and is hidden from attention.

use mlx_rs::{
    fast::rms_norm,
    ops::indexing::{Ellipsis, TryIndexOp},
    Array,
};

use super::{
    common::{attention, gated, heads, heads_first, Gate},
    gemma3::Gemma3,
};
use crate::{
    error::Result,
    model::{
        cache::{Mask, Positions},
        linear::{Linear, Projections},
    },
};

impl Gemma3 {
    /// The final hidden state (after the last norm) of every position:
    /// `tokens` [rows, len], `lengths` the real tokens per row. Returns
    /// [rows, len, hidden]; padding positions hold finite values that mean
    /// nothing. `after_layer` sees each layer's output (to evaluate a large
    /// pass layer by layer and report progress).
    pub fn encode(&self, tokens: &Array, lengths: &[i32], after_layer: &mut dyn FnMut(&Array) -> Result<()>) -> Result<Array> {
        let c = &self.config;
        let len = tokens.dim(1);
        let global = Mask::Rows(bidirectional_mask(lengths, len, None));
        let local = Mask::Rows(bidirectional_mask(lengths, len, Some(c.sliding_window / 2 + 1)));
        let positions = Positions::Single(0);
        let x = self.embed.rows(tokens)?;
        let mut x = x.multiply(Array::from_f32(c.embedding_scale).as_dtype(x.dtype())?)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let (rope, mask) = if c.is_global(layer) { (&c.rope_global, &global) } else { (&c.rope_local, &local) };
            let [q, k, v]: [Array; 3] = projections(&block.qkv, &rms_norm(&x, Some(&block.attn_norm), c.rms_eps)?)?.try_into().expect("three projections");
            let q = rms_norm(&heads(&q, c.heads, c.head_dim)?, Some(&block.q_norm), c.rms_eps)?;
            let k = rms_norm(&heads(&k, c.kv_heads, c.head_dim)?, Some(&block.k_norm), c.rms_eps)?;
            let q = positions.rope(&heads_first(&q)?, rope)?;
            let k = positions.rope(&heads_first(&k)?, rope)?;
            let v = heads_first(&heads(&v, c.kv_heads, c.head_dim)?)?;
            let attn = attention(&q, &k, &v, c.attention_scale, mask)?;
            let out = rms_norm(&product(&block.wo, &attn)?, Some(&block.post_attn_norm), c.rms_eps)?;
            x = x.add(out)?;
            let act = match &block.gate_up {
                Projections::Stacked { weight: w @ Linear::Dense(_), .. } => {
                    let y = product(w, &rms_norm(&x, Some(&block.ffn_norm), c.rms_eps)?)?;
                    match crate::kernels::glu(&y, None, Gate::GeluTanh)? {
                        Some(act) => act,
                        None => gated(&block.gate_up, &x, (&block.ffn_norm, c.rms_eps), Gate::GeluTanh)?,
                    }
                }
                _ => gated(&block.gate_up, &x, (&block.ffn_norm, c.rms_eps), Gate::GeluTanh)?,
            };
            let out = rms_norm(&product(&block.down, &act)?, Some(&block.post_ffn_norm), c.rms_eps)?;
            x = x.add(out)?;
            after_layer(&x)?;
        }
        Ok(rms_norm(&x, Some(&self.norm), c.rms_eps)?)
    }
}

/// `x @ W^T`: a dense f32 matrix through the kernels' pool
/// ([`crate::kernels::dense_matmul`]; the encoder's weights are dense), else as the layer computes it.
fn product(l: &Linear, x: &Array) -> Result<Array> {
    if let Linear::Dense(w) = l {
        if let Some(y) = crate::kernels::dense_matmul(x, w, None, true)? {
            return Ok(y);
        }
    }
    l.forward(x)
}

/// Each projection of `x` (already normalized), as [`Projections::forward`] gives them.
fn projections(p: &Projections, x: &Array) -> Result<Vec<Array>> {
    match p {
        Projections::Stacked { weight, outputs } => {
            let y = product(weight, x)?;
            let mut start = 0;
            let mut out = Vec::with_capacity(outputs.len());
            for &n in outputs {
                out.push(y.try_index((Ellipsis, start..start + n))?);
                start += n;
            }
            Ok(out)
        }
        Projections::Separate(parts) => parts.iter().map(|l| product(l, x)).collect(),
    }
}

/// [rows, 1, len, len]: a real query sees the real tokens of its row that are
/// fewer than `reach` positions away (all of them without a reach); a padding
/// query sees the whole row, so no softmax is empty.
fn bidirectional_mask(lengths: &[i32], len: i32, reach: Option<i32>) -> Array {
    let reach = reach.unwrap_or(i32::MAX);
    let mut allowed = Vec::with_capacity(lengths.len() * (len * len) as usize);
    for &n in lengths {
        for q in 0..len {
            allowed.extend((0..len).map(|k| q >= n || (k < n && (q - k).abs() < reach)));
        }
    }
    Array::from_slice(&allowed, &[lengths.len() as i32, 1, len, len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reaches_both_ways_and_padding_stays_hidden() {
        // One row of 4 real tokens padded to 5, a reach of 2 (|q - k| < 2).
        let m = bidirectional_mask(&[4], 5, Some(2));
        let got: Vec<bool> = m.as_slice::<bool>().to_vec();
        #[rustfmt::skip]
        let want = [
            true,  true,  false, false, false,
            true,  true,  true,  false, false,
            false, true,  true,  true,  false,
            false, false, true,  true,  false,
            true,  true,  true,  true,  true,
        ];
        assert_eq!(got, want);
    }
}
