//! Sentence embeddings: an encoder's hidden states pooled into one vector per
//! input, then sentence-transformers' Dense modules. Normalization and
//! Matryoshka truncation are per request, on the host ([`finish`]).

use mlx_rs::{
    ops::{addmm, indexing::TryIndexOp, matmul, select, tanh},
    Array, Dtype,
};

use super::arch::{bert::Bert, gemma3::Gemma3};
use crate::error::Result;

/// The transformer under the pooling: the architectures that run as encoders.
pub enum Encoder {
    Bert(Bert),
    Gemma3(Gemma3),
}

impl Encoder {
    /// Hidden states [rows, len, hidden] of right-padded `tokens` [rows, len];
    /// `after_layer` sees each layer's output.
    pub fn encode(&self, tokens: &Array, lengths: &[i32], after_layer: &mut dyn FnMut(&Array) -> Result<()>) -> Result<Array> {
        match self {
            Encoder::Bert(m) => m.encode(tokens, lengths, after_layer),
            Encoder::Gemma3(m) => m.encode(tokens, lengths, after_layer),
        }
    }

    /// Rows of the token embedding: ids at or past it have no embedding.
    pub fn vocab_size(&self) -> usize {
        match self {
            Encoder::Bert(m) => m.config.vocab_size,
            Encoder::Gemma3(m) => m.config.vocab_size,
        }
    }
}

/// How token states become one vector (sentence-transformers' `Pooling`
/// modes, `1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the pooled tokens.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The element-wise maximum over the pooled tokens.
    Max,
    /// The sum divided by the square root of the count.
    MeanSqrtLen,
    /// The mean weighted by position (1, 2, 3, ...).
    WeightedMean,
    /// The last real token's state.
    LastToken,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
            Pooling::WeightedMean => "weighted_mean",
            Pooling::LastToken => "last_token",
        }
    }
}

/// A Dense module: `activation(x @ weight^T + bias)`.
pub struct Dense {
    /// [in, out].
    pub weight_t: Array,
    pub bias: Option<Array>,
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Tanh,
}

impl Dense {
    fn forward(&self, x: &Array) -> Result<Array> {
        let y = match crate::kernels::dense_matmul(x, &self.weight_t, self.bias.as_ref(), false)? {
            Some(y) => y,
            None => self.affine(x)?,
        };
        Ok(match self.activation {
            Activation::Identity => y,
            Activation::Tanh => tanh(&y)?,
        })
    }

    fn affine(&self, x: &Array) -> Result<Array> {
        Ok(match &self.bias {
            Some(b) => addmm(b, x, &self.weight_t, None, None)?,
            None => matmul(x, &self.weight_t)?,
        })
    }
}

/// A sentence-transformers model: encoder, pooling, dense modules.
pub struct Embedder {
    pub encoder: Encoder,
    pub pooling: Pooling,
    pub dense: Vec<Dense>,
    /// Whether the model ends with a Normalize module (the default of `normalize`).
    pub normalize: bool,
    /// Width of the output vectors.
    pub dimensions: usize,
    /// Longest input in tokens, special tokens included (`max_seq_length`).
    pub max_tokens: usize,
    /// Whether a prompt's tokens are pooled with the text's (`include_prompt`).
    pub include_prompt: bool,
}

impl Embedder {
    /// The vectors of a batch, before normalization: `inputs` are token ids
    /// (each at most `max_tokens`), `skip[i]` leading tokens of input `i` left
    /// out of the pooling (a prompt, when the model does not pool it).
    /// Inputs are right-padded to the longest; one forward pass. With
    /// `progress` the pass is evaluated layer by layer, calling it after each
    /// layer (a long pass is seen to advance); without, as one graph (on a GPU
    /// each evaluation is a wait for the device).
    pub fn embed(&self, inputs: &[&[u32]], skip: &[usize], mut progress: Option<&mut dyn FnMut()>) -> Result<Vec<Vec<f32>>> {
        let rows = inputs.len();
        let len = inputs.iter().map(|t| t.len()).max().unwrap_or(0);
        if rows == 0 || len == 0 {
            return Ok(vec![Vec::new(); rows]);
        }
        let lengths: Vec<i32> = inputs.iter().map(|t| t.len() as i32).collect();
        let mut ids = vec![0i32; rows * len];
        for (r, t) in inputs.iter().enumerate() {
            for (c, &id) in t.iter().enumerate() {
                ids[r * len + c] = id as i32;
            }
        }
        let tokens = Array::from_slice(&ids, &[rows as i32, len as i32]);
        let mut after_layer = |x: &Array| -> Result<()> {
            if let Some(progress) = progress.as_mut() {
                x.eval()?;
                progress();
            }
            Ok(())
        };
        let states = self.encoder.encode(&tokens, &lengths, &mut after_layer)?;
        let mut x = self.pool(&states, &lengths, skip)?;
        for d in &self.dense {
            x = d.forward(&x)?;
        }
        let x = x.as_dtype(Dtype::Float32)?;
        x.eval()?;
        let flat = x.as_slice::<f32>();
        let width = x.dim(-1) as usize;
        Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
    }

    /// [rows, hidden] from [rows, len, hidden].
    fn pool(&self, states: &Array, lengths: &[i32], skip: &[usize]) -> Result<Array> {
        let (rows, len) = (states.dim(0), states.dim(1));
        let dtype = states.dtype();
        match self.pooling {
            Pooling::Cls => return Ok(states.try_index((.., 0, ..))?),
            Pooling::LastToken => {
                let last: Vec<i32> = lengths.iter().map(|&n| n - 1).collect();
                let index = Array::from_slice(&last, &[rows, 1, 1]);
                let picked = mlx_rs::ops::indexing::take_along_axis(states, &index, 1)?;
                return Ok(picked.squeeze_axes(&[1])?);
            }
            _ => {}
        }
        // Per row and position: whether it is pooled, and with what weight.
        let mut weights = vec![0f32; (rows * len) as usize];
        for (r, &n) in lengths.iter().enumerate() {
            let from = if self.include_prompt { 0 } else { skip.get(r).copied().unwrap_or(0).min(n as usize - 1) };
            for c in from..n as usize {
                weights[r * len as usize + c] = if self.pooling == Pooling::WeightedMean { (c + 1) as f32 } else { 1.0 };
            }
        }
        let w = Array::from_slice(&weights, &[rows, 1, len]);
        if self.pooling == Pooling::Max {
            let pooled = w.reshape(&[rows, len, 1])?.gt(Array::from_f32(0.0))?;
            let floor = Array::from_f32(-1e9).as_dtype(dtype)?;
            return Ok(select(&pooled, states, &floor)?.max_axis(1, false)?);
        }
        let total = w.sum_axis(-1, false)?;
        let sum = matmul(w.as_dtype(dtype)?, states)?.squeeze_axes(&[1])?.as_dtype(Dtype::Float32)?;
        let divisor = match self.pooling {
            Pooling::MeanSqrtLen => total.sqrt()?,
            _ => mlx_rs::ops::maximum(&total, Array::from_f32(1e-9))?,
        };
        Ok(sum.divide(divisor)?.as_dtype(dtype)?)
    }
}

/// An embedding as a caller asked for it: the first `dimensions` values
/// (Matryoshka truncation), L2-normalized when `normalize`.
pub fn finish(mut v: Vec<f32>, dimensions: Option<usize>, normalize: bool) -> Vec<f32> {
    if let Some(d) = dimensions {
        v.truncate(d);
    }
    if normalize {
        let norm = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_comes_before_normalization() {
        let v = finish(vec![3.0, 4.0, 12.0], Some(2), true);
        assert_eq!(v, [0.6, 0.8]);
        assert_eq!(finish(vec![3.0, 4.0, 12.0], None, false), [3.0, 4.0, 12.0]);
        let n = finish(vec![3.0, 4.0, 12.0], None, true);
        assert!((n.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
