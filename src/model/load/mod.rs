//! Loading models from files. GGUF is read by our own reader ([`gguf`]) and
//! its block types decoded by our own code ([`blocks`]), so every check and
//! every conversion is ours: every failure is `MODEL_LOAD_FAILED` with the
//! reason.

pub mod blocks;
pub mod gguf;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use mlx_rs::Array;

use self::{
    blocks::BlockType,
    gguf::{ArrayValue, Gguf, TensorInfo, Value},
};
use super::{
    linear::{Linear, Projections, QuantizedWeight, WeightFormat},
    llama::{Block, Llama, LlamaConfig},
};
use crate::{
    error::{Error, ErrorCode, Result},
    kernels::Activations,
    tokenizer::{ChatTemplate, Tokenizer, TokenizerSpec},
};

/// How much of a model's weights a load has read, for progress reports from
/// another thread.
#[derive(Debug, Default)]
pub struct LoadProgress {
    read: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl LoadProgress {
    /// `(bytes read, bytes in all)`; `None` before the file's tensors are known.
    pub fn get(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.total.load(Relaxed);
        (total > 0).then(|| (self.read.load(Relaxed).min(total), total))
    }

    pub(crate) fn start(&self, total: u64) {
        self.total.store(total, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn advance(&self, bytes: u64) {
        self.read.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What callers learn about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file format: `"gguf"`.
    pub format: String,
    /// The quantization as llama.cpp names it (`general.file_type`, e.g.
    /// `"Q4_K_M"`), else the block type holding most of the weights.
    pub quantization: String,
    pub architecture: String,
    pub parameters: u64,
    pub context_length: usize,
    pub vocab_size: usize,
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Block types present in the file, e.g. `["F32", "Q4_K", "Q6_K"]`.
    pub tensor_types: Vec<String>,
    pub weight_format: WeightFormat,
    pub has_chat_template: bool,
    pub load_ms: f64,
}

/// A model ready to run: the network, its tokenizer and chat template.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    /// The chat template's source, as found in the GGUF.
    pub template_source: Option<String>,
    pub info: ModelInfo,
}

pub(crate) fn load_failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ModelLoadFailed, format!("{}: {why}", path.display()))
}

/// Loads a GGUF model. Every failure is `MODEL_LOAD_FAILED` with the reason.
pub fn load_gguf(path: &Path, format: WeightFormat) -> Result<LoadedModel> {
    load_gguf_tracked(path, format, &Arc::default())
}

/// [`load_gguf`], counting the tensor bytes read in `progress` as the load goes.
pub fn load_gguf_tracked(path: &Path, format: WeightFormat, progress: &Arc<LoadProgress>) -> Result<LoadedModel> {
    let started = Instant::now();
    crate::kernels::check_runtime().map_err(|e| load_failed(path, e))?;
    let fail = |why: String| load_failed(path, why);
    let mut gguf = Gguf::open(path).map_err(fail)?;
    gguf.report_to(progress.clone());
    let meta = Metadata { gguf: &gguf };

    let arch = meta.string("general.architecture").map_err(fail)?.unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "mistral" | "smollm" | "qwen2") {
        return Err(fail(format!("architecture '{arch}' is not supported (llama, mistral, smollm, qwen2)")));
    }
    // llama.cpp's converter permutes llama's q/k rows for RoPE over adjacent
    // pairs; qwen2's are stored as trained, for RoPE over halves.
    let rope_traditional = arch != "qwen2";
    let spec = tokenizer_spec(&meta).map_err(fail)?;
    let tokenizer = Tokenizer::from_spec(&spec).map_err(|e| load_failed(path, e))?;
    let template_source = meta.string("tokenizer.chat_template").map_err(fail)?;
    let template = match &template_source {
        Some(source) => Some(Arc::new(
            ChatTemplate::new(source, tokenizer.bos_text(), tokenizer.eos_text()).map_err(|e| load_failed(path, e))?,
        )),
        None => None,
    };

    let count = |key: &str| -> Result<usize> {
        let v = meta.number(&format!("{arch}.{key}")).map_err(fail)?.ok_or_else(|| fail(format!("metadata {arch}.{key} is missing")))?;
        if !(v >= 1.0 && v <= i32::MAX as f64 && v.fract() == 0.0) {
            return Err(fail(format!("metadata {arch}.{key} = {v} is out of range")));
        }
        Ok(v as usize)
    };
    let hidden = count("embedding_length")? as i32;
    let heads = count("attention.head_count")? as i32;
    let kv_heads = match meta.number(&format!("{arch}.attention.head_count_kv")).map_err(fail)? {
        Some(_) => count("attention.head_count_kv")? as i32,
        None => heads,
    };
    if hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(fail("inconsistent attention head counts".into()));
    }
    let layers = count("block_count")?;
    if layers > gguf.tensors().len() {
        return Err(fail(format!("{arch}.block_count = {layers} but the file has only {} tensors", gguf.tensors().len())));
    }
    let config = LlamaConfig {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        rope_base: meta.number(&format!("{arch}.rope.freq_base")).map_err(fail)?.unwrap_or(10000.0) as f32,
        rope_traditional,
        rms_eps: meta.number(&format!("{arch}.attention.layer_norm_rms_epsilon")).map_err(fail)?.unwrap_or(1e-5) as f32,
        context_length: count("context_length")?,
        vocab_size: tokenizer.vocab_size(),
    };

    let tied = gguf.tensor("output.weight").is_none();
    let mut parameters = 0u64;
    let kv_dim = config.kv_heads * config.head_dim;
    let mut take = |name: &str, rows: i32, cols: i32| -> Result<Linear> {
        let t = tensor(&gguf, &format!("{name}.weight"), &[rows, cols]).map_err(fail)?;
        parameters += t.elements;
        linear(&gguf, t, format).map_err(fail)
    };
    let vocab = config.vocab_size as i32;
    let embed = take("token_embd", vocab, hidden)?;
    let output = if tied { None } else { Some(take("output", vocab, hidden)?) };
    let ffn = match gguf.tensor("blk.0.ffn_up.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1] as i32,
        _ => return Err(fail("tensor blk.0.ffn_up.weight is missing or not a matrix".into())),
    };
    let mut blocks = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        let p = format!("blk.{i}");
        blocks.push(Block {
            attn_norm: norm(&gguf, &format!("{p}.attn_norm.weight"), hidden).map_err(fail)?,
            qkv: Projections::new(vec![
                take(&format!("{p}.attn_q"), hidden, hidden)?,
                take(&format!("{p}.attn_k"), kv_dim, hidden)?,
                take(&format!("{p}.attn_v"), kv_dim, hidden)?,
            ])?,
            qkv_bias: match gguf.tensor(&format!("{p}.attn_q.bias")) {
                None => None,
                Some(_) => Some([
                    norm(&gguf, &format!("{p}.attn_q.bias"), hidden).map_err(fail)?,
                    norm(&gguf, &format!("{p}.attn_k.bias"), kv_dim).map_err(fail)?,
                    norm(&gguf, &format!("{p}.attn_v.bias"), kv_dim).map_err(fail)?,
                ]),
            },
            wo: take(&format!("{p}.attn_output"), hidden, hidden)?,
            ffn_norm: norm(&gguf, &format!("{p}.ffn_norm.weight"), hidden).map_err(fail)?,
            gate_up: Projections::new(vec![take(&format!("{p}.ffn_gate"), ffn, hidden)?, take(&format!("{p}.ffn_up"), ffn, hidden)?])?,
            down: take(&format!("{p}.ffn_down"), hidden, ffn)?,
        });
    }
    let final_norm = norm(&gguf, "output_norm.weight", hidden).map_err(fail)?;
    let info = ModelInfo {
        format: "gguf".into(),
        quantization: quantization(&gguf),
        architecture: arch,
        parameters,
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        layers: config.layers,
        hidden_size: config.hidden as usize,
        heads: config.heads as usize,
        kv_heads: config.kv_heads as usize,
        tensor_types: tensor_types(&gguf),
        weight_format: format,
        has_chat_template: template.is_some(),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let model = Llama { config, embed, blocks, norm: final_norm, output };
    Ok(LoadedModel { model, tokenizer: Arc::new(tokenizer), template, template_source, info })
}

/// What a GGUF's `tokenizer.ggml.*` metadata says about its tokenizer.
fn tokenizer_spec(meta: &Metadata) -> Result<TokenizerSpec, String> {
    Ok(TokenizerSpec {
        model: meta.string("tokenizer.ggml.model")?.unwrap_or_default(),
        pre: meta.string("tokenizer.ggml.pre")?.unwrap_or_default(),
        tokens: meta.strings("tokenizer.ggml.tokens")?.unwrap_or_default(),
        merges: meta.strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        token_types: meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default(),
        bos: meta.id("tokenizer.ggml.bos_token_id")?,
        eos: meta.id("tokenizer.ggml.eos_token_id")?,
        eot: meta.id("tokenizer.ggml.eot_token_id")?,
        add_bos: meta.number("tokenizer.ggml.add_bos_token")?.is_some_and(|v| v != 0.0),
    })
}

/// The tokenizer of a GGUF file, reading only its metadata (no tensors, no
/// MLX): for vocab-only files and tools. Failures are `MODEL_LOAD_FAILED`.
pub fn tokenizer_from_gguf(path: &Path) -> Result<(TokenizerSpec, Tokenizer)> {
    let fail = |why: String| load_failed(path, why);
    let gguf = Gguf::open(path).map_err(fail)?;
    let spec = tokenizer_spec(&Metadata { gguf: &gguf }).map_err(fail)?;
    let tokenizer = Tokenizer::from_spec(&spec).map_err(|e| load_failed(path, e))?;
    Ok((spec, tokenizer))
}

/// The tensor `name`, which must have `shape` (MLX order).
fn tensor<'a>(gguf: &'a Gguf, name: &str, shape: &[i32]) -> Result<&'a TensorInfo, String> {
    let t = gguf.tensor(name).ok_or_else(|| format!("tensor {name} is missing"))?;
    if t.shape() != shape {
        return Err(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape()));
    }
    Ok(t)
}

/// A vector (a norm's weight, a bias) as f32.
fn norm(gguf: &Gguf, name: &str, len: i32) -> Result<Array, String> {
    let t = tensor(gguf, name, &[len])?;
    let values = gguf.dequantize(t)?;
    let a = Array::from_slice(&values, &[len]);
    a.eval().map_err(|e| format!("tensor {name}: {e}"))?;
    Ok(a)
}

/// A weight matrix as a [`Linear`]: dense f32 (every type under
/// [`WeightFormat::Dense`], float types always), or in MLX's affine layout
/// with the bits and group size of its block type's conversion.
fn linear(gguf: &Gguf, t: &TensorInfo, format: WeightFormat) -> Result<Linear, String> {
    let shape = t.shape();
    let mlx = |e: mlx_rs::error::Exception| format!("tensor {}: {e}", t.name);
    if format == WeightFormat::Quantized {
        if let Some(q) = gguf.affine(t)? {
            let (rows, cols) = (q.rows as i32, q.cols as i32);
            let weight = Array::from_slice(&q.weight, &[rows, cols * q.bits / 32]);
            let scales = Array::from_slice(&q.scales, &[rows, cols / q.group_size]);
            let biases = Array::from_slice(&q.biases, &[rows, cols / q.group_size]);
            for a in [&weight, &scales, &biases] {
                a.eval().map_err(mlx)?;
            }
            let activations = Activations::from_env();
            return Ok(Linear::Quantized(QuantizedWeight { weight, scales, biases, group_size: q.group_size, bits: q.bits, activations }));
        }
    }
    let dense = Array::from_slice(&gguf.dequantize(t)?, &shape);
    dense.eval().map_err(mlx)?;
    Ok(Linear::Dense(dense))
}

fn tensor_types(gguf: &Gguf) -> Vec<String> {
    let mut types: Vec<BlockType> = gguf.tensors().iter().map(|t| t.ty).collect();
    types.sort();
    types.dedup();
    types.iter().map(|t| t.name().to_string()).collect()
}

/// llama.cpp's name for `general.file_type`, else the block type holding the most weights.
fn quantization(gguf: &Gguf) -> String {
    let named = gguf.get("general.file_type").and_then(Value::as_f64).and_then(|v| {
        Some(match v as i64 {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            7 => "Q8_0",
            8 => "Q5_0",
            9 => "Q5_1",
            10 => "Q2_K",
            11 => "Q3_K_S",
            12 => "Q3_K_M",
            13 => "Q3_K_L",
            14 => "Q4_K_S",
            15 => "Q4_K_M",
            16 => "Q5_K_S",
            17 => "Q5_K_M",
            18 => "Q6_K",
            32 => "BF16",
            _ => return None,
        })
    });
    if let Some(name) = named {
        return name.into();
    }
    let mut by_type: BTreeMap<BlockType, u64> = BTreeMap::new();
    for t in gguf.tensors().iter().filter(|t| t.dims.len() == 2) {
        *by_type.entry(t.ty).or_default() += t.elements;
    }
    by_type.into_iter().max_by_key(|&(_, n)| n).map_or_else(|| "unknown".into(), |(t, _)| t.name().into())
}

/// Typed access to metadata; a value of the wrong type is an error naming the key.
struct Metadata<'a> {
    gguf: &'a Gguf,
}

impl Metadata<'_> {
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("metadata {key} is not a string")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(Value::Array(ArrayValue::String(v))) => Ok(Some(v.clone())),
            Some(Value::Array(a)) if a.is_empty() => Ok(Some(Vec::new())),
            Some(_) => Err(format!("metadata {key} is not an array of strings")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("metadata {key} is not a number")),
        }
    }

    /// A token id: a whole number that fits a u32.
    fn id(&self, key: &str) -> Result<Option<u32>, String> {
        match self.number(key)? {
            None => Ok(None),
            Some(v) if v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0 => Ok(Some(v as u32)),
            Some(v) => Err(format!("metadata {key} = {v} is not a token id")),
        }
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i32>>, String> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                let v = a.as_i64s().ok_or_else(|| format!("metadata {key} is not an array of integers"))?;
                v.into_iter().map(|x| i32::try_from(x).map_err(|_| format!("metadata {key}: {x} is out of range"))).collect::<Result<_, _>>().map(Some)
            }
            Some(_) => Err(format!("metadata {key} is not an array")),
        }
    }
}

#[cfg(test)]
mod hostile_tests;
