//! A batch's token masks and their application to its logits where the
//! logits are, so that a greedy batch still picks its tokens on the device
//! and reads back ids only. Each constrained row's mask is a bitmask (one bit
//! per token, as llguidance computes it); the batch's masks reach the device
//! as one boolean per logit, expanded on the host word by word (a JSON
//! mask's words are mostly all clear), so the device masks the logits in one
//! pass rather than unpacking bits in several.

use mlx_rs::{ops::select, Array};

use crate::error::Result;

/// One bitmask row per logits row (`words` u32 each, token `t` at bit
/// `t % 32` of word `t / 32`); a row without a constraint allows every token.
pub struct MaskRows {
    rows: usize,
    words: usize,
    vocab: usize,
    data: Vec<u32>,
    /// Rows handed out to be filled (the others allow everything).
    written: Vec<bool>,
}

impl MaskRows {
    /// Masks for `rows` rows of `vocab` logits, each allowing everything.
    pub fn new(rows: usize, vocab: usize) -> Self {
        let words = vocab.div_ceil(32);
        MaskRows { rows, words, vocab, data: vec![u32::MAX; rows * words], written: vec![false; rows] }
    }

    /// Row `r`'s bitmask, to be filled by its constraint.
    pub fn row_mut(&mut self, r: usize) -> &mut [u32] {
        self.written[r] = true;
        &mut self.data[r * self.words..(r + 1) * self.words]
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        self.rows = self.rows.min(rows);
        self.data.truncate(self.rows * self.words);
        self.written.truncate(self.rows);
    }

    /// Whether row `r` allows token `t`.
    pub fn allows(&self, r: usize, t: usize) -> bool {
        t < self.vocab && self.data[r * self.words + t / 32] & (1 << (t % 32)) != 0
    }

    /// `logits` (`[rows, vocab]`) with every token a row does not allow at
    /// -inf; lazily, like the logits. Columns past the masks' vocabulary
    /// (an output projection wider than the tokenizer) are never allowed in
    /// a masked row.
    pub fn apply(&self, logits: &Array) -> Result<Array> {
        let width = logits.dim(-1) as usize;
        let vocab = self.vocab.min(width);
        let mut allowed = vec![true; self.rows * width];
        for r in (0..self.rows).filter(|&r| self.written[r]) {
            let row = &mut allowed[r * width..(r + 1) * width];
            row[vocab..].fill(false);
            for (w, &bits) in self.data[r * self.words..(r + 1) * self.words].iter().enumerate() {
                if w * 32 >= vocab {
                    break;
                }
                let cells = &mut row[w * 32..((w + 1) * 32).min(vocab)];
                match bits {
                    u32::MAX => {}
                    0 => cells.fill(false),
                    _ => cells.iter_mut().enumerate().for_each(|(b, cell)| *cell = bits >> b & 1 != 0),
                }
            }
        }
        let allowed = Array::from_slice(&allowed, &[self.rows as i32, width as i32]);
        let forbidden = Array::from_f32(f32::NEG_INFINITY).as_dtype(logits.dtype())?;
        Ok(select(&allowed, logits, &forbidden)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_tokens_are_never_the_maximum_and_free_rows_are_untouched() {
        // A vocabulary that is not a multiple of 32, three rows: one free,
        // one allowing two tokens (neither the row's maximum), one allowing
        // only the last token.
        let vocab = 70;
        let logits: Vec<f32> = (0..3 * vocab).map(|i| ((i * 37) % 101) as f32).collect();
        let mut masks = MaskRows::new(3, vocab);
        let row = masks.row_mut(1);
        row.fill(0);
        row[0] |= 1 << 5;
        row[1] |= 1 << (40 - 32);
        masks.row_mut(2).fill(0);
        masks.row_mut(2)[69 / 32] = 1 << (69 % 32);
        assert!(masks.allows(0, 69) && masks.allows(1, 40) && !masks.allows(1, 41) && masks.allows(2, 69) && !masks.allows(2, 0));
        let out = masks.apply(&Array::from_slice(&logits, &[3, vocab as i32])).unwrap();
        out.eval().unwrap();
        let out = out.as_slice::<f32>();
        assert_eq!(&out[..vocab], &logits[..vocab], "a free row is unchanged");
        for t in 0..vocab {
            let want = if t == 5 || t == 40 { logits[vocab + t] } else { f32::NEG_INFINITY };
            assert_eq!(out[vocab + t], want, "row 1, token {t}");
            let want = if t == 69 { logits[2 * vocab + t] } else { f32::NEG_INFINITY };
            assert_eq!(out[2 * vocab + t], want, "row 2, token {t}");
        }
        let picks = mlx_rs::ops::indexing::argmax_axis(Array::from_slice(out, &[3, vocab as i32]), -1, None).unwrap();
        let best = logits[vocab + 5].max(logits[vocab + 40]);
        assert_eq!(picks.as_slice::<u32>()[1], if logits[vocab + 5] == best { 5 } else { 40 });
        assert_eq!(picks.as_slice::<u32>()[2], 69);
    }
}
