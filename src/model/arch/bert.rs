//! BERT, the encoder (all-MiniLM, BGE, E5 and most sentence-transformers
//! models): learned absolute positions and token types added to the word
//! embeddings, then per layer bidirectional attention and a GELU MLP, each
//! followed by a residual add and LayerNorm (post-norm). No KV cache: every
//! position of every input is computed in one forward pass, and each row's
//! padding is hidden from attention.

use mlx_rs::{
    fast::layer_norm,
    ops::{addmm, erf, indexing::TryIndexOp},
    Array,
};

use super::common::{attention, heads, heads_first};
use crate::{error::Result, model::cache::Mask};

/// config.json of a BERT model, as far as the forward pass needs it.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub layers: usize,
    pub hidden: i32,
    pub heads: i32,
    pub ffn: i32,
    pub vocab_size: usize,
    /// Learned positions: the longest input the model reads.
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Parses config.json (`model_type: bert`); refuses what this forward pass
    /// does not compute (relative positions, other activations).
    pub fn parse(v: &serde_json::Value) -> Result<BertConfig, String> {
        let count = |key: &str| -> Result<usize, String> {
            v.get(key)
                .and_then(serde_json::Value::as_u64)
                .filter(|&n| n >= 1 && n <= i32::MAX as u64)
                .map(|n| n as usize)
                .ok_or_else(|| format!("config.json: {key} is missing or not a count"))
        };
        if let Some(kind) = v.get("position_embedding_type").and_then(serde_json::Value::as_str) {
            if kind != "absolute" {
                return Err(format!("config.json: position_embedding_type '{kind}' is not supported (absolute)"));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(serde_json::Value::as_str) {
            if act != "gelu" {
                return Err(format!("config.json: hidden_act '{act}' is not supported (gelu)"));
            }
        }
        let c = BertConfig {
            layers: count("num_hidden_layers")?,
            hidden: count("hidden_size")? as i32,
            heads: count("num_attention_heads")? as i32,
            ffn: count("intermediate_size")? as i32,
            vocab_size: count("vocab_size")?,
            max_positions: count("max_position_embeddings")?,
            type_vocab_size: count("type_vocab_size").unwrap_or(2),
            layer_norm_eps: v.get("layer_norm_eps").and_then(serde_json::Value::as_f64).unwrap_or(1e-12) as f32,
        };
        if c.hidden % c.heads != 0 {
            return Err("config.json: hidden_size is not a multiple of num_attention_heads".into());
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> i32 {
        self.hidden / self.heads
    }
}

/// A dense layer with its bias: `x @ weight^T + bias`.
pub struct Affine {
    /// [in, out]: stored transposed, so the product reads it as it lies.
    pub weight_t: Array,
    pub bias: Array,
}

impl Affine {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        if let Some(y) = crate::kernels::dense_matmul(x, &self.weight_t, Some(&self.bias), false)? {
            return Ok(y);
        }
        Ok(addmm(&self.bias, x, &self.weight_t, None, None)?)
    }
}

/// LayerNorm's weight and bias.
pub struct Norm {
    pub weight: Array,
    pub bias: Array,
}

pub struct BertLayer {
    /// Queries, keys and values in one product.
    pub qkv: Affine,
    pub attn_out: Affine,
    pub attn_norm: Norm,
    pub intermediate: Affine,
    pub out: Affine,
    pub out_norm: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    pub word: Array,
    pub position: Array,
    /// The embedding of token type 0 (every input is one segment).
    pub token_type: Array,
    pub embed_norm: Norm,
    pub layers: Vec<BertLayer>,
}

/// Where [`build`] reads tensors: by the checkpoint's own names, with their shapes.
pub trait Checkpoint {
    fn tensor(&mut self, name: &str, shape: &[i32]) -> Result<Array, String>;
    fn has(&self, name: &str) -> bool;
}

impl Bert {
    /// The hidden state of every position: `tokens` [rows, len] (each row's
    /// tokens first, then padding), `lengths` the real tokens per row.
    /// Returns [rows, len, hidden]; padding positions hold finite values that
    /// mean nothing. `after_layer` sees each layer's output (to evaluate a
    /// large pass layer by layer and report progress).
    pub fn encode(&self, tokens: &Array, lengths: &[i32], after_layer: &mut dyn FnMut(&Array) -> Result<()>) -> Result<Array> {
        let c = &self.config;
        let (rows, len) = (tokens.dim(0), tokens.dim(1));
        let eps = c.layer_norm_eps;
        let x = self.word.try_index(tokens)?.add(self.position.try_index(..len)?)?.add(&self.token_type)?;
        let mut x = layer_norm(&x, &self.embed_norm.weight, &self.embed_norm.bias, eps)?;
        let mask = Mask::Rows(key_mask(lengths, len));
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let part = |i: i32| -> Result<Array> {
                let p = qkv.try_index((.., .., i * c.hidden..(i + 1) * c.hidden))?;
                heads_first(&heads(&p, c.heads, c.head_dim())?)
            };
            let attn = attention(&part(0)?, &part(1)?, &part(2)?, scale, &mask)?;
            x = layer_norm(&x.add(layer.attn_out.forward(&attn)?)?, &layer.attn_norm.weight, &layer.attn_norm.bias, eps)?;
            let h = gelu(&layer.intermediate.forward(&x)?)?;
            x = layer_norm(&x.add(layer.out.forward(&h)?)?, &layer.out_norm.weight, &layer.out_norm.bias, eps)?;
            after_layer(&x)?;
        }
        debug_assert_eq!(x.shape(), &[rows, len, c.hidden]);
        Ok(x)
    }
}

/// GELU as BERT computes it: `x * (1 + erf(x / sqrt 2)) / 2` (not the tanh
/// approximation). On x86 CPUs our vector kernel (`glu.cpp`; MLX's CPU `erf`
/// and `exp` are scalar, ~40% of a MiniLM pass), else MLX's ops.
fn gelu(x: &Array) -> Result<Array> {
    if let Some(y) = crate::kernels::gelu_erf(x)? {
        return Ok(y);
    }
    let inner = erf(x.multiply(Array::from_f32(std::f32::consts::FRAC_1_SQRT_2))?)?;
    Ok(x.multiply(inner.add(Array::from_f32(1.0))?)?.multiply(Array::from_f32(0.5))?)
}

/// [rows, 1, len, len]: a query sees every real token of its row (keys
/// before `lengths[row]`); a padding query sees the whole row, so no
/// softmax is empty.
pub fn key_mask(lengths: &[i32], len: i32) -> Array {
    let mut allowed = Vec::with_capacity(lengths.len() * (len * len) as usize);
    for &n in lengths {
        for q in 0..len {
            allowed.extend((0..len).map(|k| k < n || q >= n));
        }
    }
    Array::from_slice(&allowed, &[lengths.len() as i32, 1, len, len])
}

/// Builds BERT from a checkpoint under Hugging Face's names (`BertModel`'s,
/// with or without the `bert.` prefix of `BertFor*` heads).
pub fn build(w: &mut dyn Checkpoint, c: &BertConfig) -> Result<Bert, String> {
    let prefix = if w.has("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
    let mut r = Reader { w, prefix };
    let h = c.hidden;
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let p = format!("encoder.layer.{i}");
        let q = r.affine(&format!("{p}.attention.self.query"), h, h)?;
        let k = r.affine(&format!("{p}.attention.self.key"), h, h)?;
        let v = r.affine(&format!("{p}.attention.self.value"), h, h)?;
        let cat = |parts: [&Array; 3], axis: i32| -> Result<Array, String> {
            let a = mlx_rs::ops::concatenate(&parts, axis).map_err(|e| format!("{p}: {e}"))?;
            a.eval().map_err(|e| format!("{p}: {e}"))?;
            Ok(a)
        };
        let qkv = Affine { weight_t: cat([&q.weight_t, &k.weight_t, &v.weight_t], 1)?, bias: cat([&q.bias, &k.bias, &v.bias], 0)? };
        layers.push(BertLayer {
            qkv,
            attn_out: r.affine(&format!("{p}.attention.output.dense"), h, h)?,
            attn_norm: r.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
            intermediate: r.affine(&format!("{p}.intermediate.dense"), c.ffn, h)?,
            out: r.affine(&format!("{p}.output.dense"), h, c.ffn)?,
            out_norm: r.norm(&format!("{p}.output.LayerNorm"), h)?,
        });
    }
    let token_types = r.tensor("embeddings.token_type_embeddings.weight", &[c.type_vocab_size as i32, h])?;
    let token_type = token_types.try_index(0).and_then(|a| a.contiguous()).map_err(|e| format!("token_type_embeddings: {e}"))?;
    token_type.eval().map_err(|e| format!("token_type_embeddings: {e}"))?;
    Ok(Bert {
        word: r.tensor("embeddings.word_embeddings.weight", &[c.vocab_size as i32, h])?,
        position: r.tensor("embeddings.position_embeddings.weight", &[c.max_positions as i32, h])?,
        token_type,
        embed_norm: r.norm("embeddings.LayerNorm", h)?,
        layers,
        config: c.clone(),
    })
}

/// Reads a checkpoint's tensors under a name prefix.
struct Reader<'a> {
    w: &'a mut dyn Checkpoint,
    prefix: &'static str,
}

impl Reader<'_> {
    fn tensor(&mut self, name: &str, shape: &[i32]) -> Result<Array, String> {
        self.w.tensor(&format!("{}{name}", self.prefix), shape)
    }

    fn affine(&mut self, name: &str, out: i32, input: i32) -> Result<Affine, String> {
        let weight = self.tensor(&format!("{name}.weight"), &[out, input])?;
        let bias = self.tensor(&format!("{name}.bias"), &[out])?;
        let weight_t = weight.transpose_axes(&[1, 0]).and_then(|w| w.contiguous()).map_err(|e| format!("{name}: {e}"))?;
        weight_t.eval().map_err(|e| format!("{name}: {e}"))?;
        Ok(Affine { weight_t, bias })
    }

    fn norm(&mut self, name: &str, len: i32) -> Result<Norm, String> {
        Ok(Norm { weight: self.tensor(&format!("{name}.weight"), &[len])?, bias: self.tensor(&format!("{name}.bias"), &[len])? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_sees_its_rows_real_tokens_and_a_padding_query_sees_all() {
        let m = key_mask(&[2, 3], 3);
        let got: Vec<bool> = m.as_slice::<bool>().to_vec();
        #[rustfmt::skip]
        let want = [
            true, true, false,  true, true, false,  true, true, true,
            true, true, true,   true, true, true,   true, true, true,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn gelu_is_the_erf_form() {
        let x = Array::from_slice(&[-2.0f32, -0.5, 0.0, 0.5, 2.0], &[5]);
        let y = gelu(&x).unwrap();
        // 0.5 * x * (1 + erf(x / sqrt 2)), from the error function's values.
        let want = [-0.045_500_26f32, -0.154_268_5, 0.0, 0.345_731_5, 1.954_499_7];
        for (a, b) in y.as_slice::<f32>().iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
