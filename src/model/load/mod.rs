//! Loading models from files. GGUF is read by our own reader ([`gguf`]) and
//! its block types decoded by our own code ([`blocks`]), so every check and
//! every conversion is ours: every failure is `MODEL_LOAD_FAILED` with the
//! reason.

pub mod blocks;
pub mod dir;
pub mod gguf;
mod safetensors_file;
pub mod sentence_transformers;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use mlx_rs::Array;

use self::{
    blocks::BlockType,
    gguf::{ArrayValue, Gguf, TensorInfo, Value},
};
pub(crate) use super::arch::{HyperParameters, Tensors};
use super::{
    arch::{self, gemma3, Architecture, Model},
    cache::KvCache,
    linear::{Linear, QuantizedWeight, WeightFormat},
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
    /// The format: `"gguf"`, `"mlx"` (a directory of MLX-quantized
    /// safetensors) or `"safetensors"` (a directory of float weights).
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
    /// Width of one attention head (keys and values).
    pub head_dim: usize,
    /// Block types present in the file, e.g. `["F32", "Q4_K", "Q6_K"]`.
    pub tensor_types: Vec<String>,
    /// What the model serves: generation, or embeddings.
    pub kind: ModelKind,
    /// An embedding model's output and input limits.
    pub embedding: Option<EmbeddingInfo>,
    pub weight_format: WeightFormat,
    /// The dtype the model computes in (its activations and KV cache): f32 on
    /// the CPU, f16 on a GPU by default ([`crate::device::compute_dtype`]).
    pub dtype: mlx_rs::Dtype,
    pub has_chat_template: bool,
    /// Loading in all, the GPU warm-up included.
    pub load_ms: f64,
    /// Of that, the GPU warm-up's kernel compilation ([`warm_up`]); 0 on the CPU.
    pub warm_up_ms: f64,
}

/// What a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Text generation (`generate`).
    Generation,
    /// Sentence embeddings (`embed`): a sentence-transformers directory.
    Embedding,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Generation => "generation",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// What an embedding model produces and reads.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingInfo {
    /// Width of its vectors.
    pub dimensions: usize,
    /// Longest input in tokens (special tokens included); longer ones are truncated.
    pub max_tokens: usize,
    /// Pooling of token states (`"mean"`, `"cls"`, ...).
    pub pooling: String,
    /// Whether its vectors are L2-normalized by default.
    pub normalized: bool,
    /// Its named prompts (`config_sentence_transformers.json`), name and text.
    pub prompts: Vec<(String, String)>,
    /// The prompt used when a request names none.
    pub default_prompt: Option<String>,
}

/// A model ready to run: the network, its tokenizer and chat template.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    /// The chat template's source, as found in the GGUF.
    pub template_source: Option<String>,
    pub info: ModelInfo,
}

pub(crate) fn load_failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ModelLoadFailed, format!("{}: {why}", path.display()))
}

/// Loads a model from `path`: a directory in the Hugging Face / MLX layout
/// (config.json, safetensors weights, tokenizer.json; see [`dir`]) or a GGUF
/// file. Every failure is `MODEL_LOAD_FAILED` with the reason.
pub fn load_model(path: &Path, format: WeightFormat) -> Result<LoadedModel> {
    load_model_tracked(path, format, &Arc::default())
}

/// [`load_model`], counting the tensor bytes read in `progress`. The model
/// computes in this device's dtype ([`crate::device::compute_dtype`]); on a GPU
/// it is warmed up before it counts as loaded ([`warm_up`]).
pub fn load_model_tracked(path: &Path, format: WeightFormat, progress: &Arc<LoadProgress>) -> Result<LoadedModel> {
    let started = Instant::now();
    let dtype = crate::device::compute_dtype().map_err(|e| load_failed(path, e))?;
    let mut loaded = if path.is_dir() { dir::load_dir_tracked(path, format, progress)? } else { load_gguf_tracked(path, format, progress)? };
    loaded.model.cast(dtype).map_err(|e| load_failed(path, e))?;
    loaded.model.pack().map_err(|e| load_failed(path, e))?;
    loaded.info.dtype = dtype;
    if crate::device::backend().is_gpu() {
        let warming = Instant::now();
        warm_up(&loaded.model).map_err(|e| load_failed(path, format!("warm-up: {e}")))?;
        loaded.info.warm_up_ms = warming.elapsed().as_secs_f64() * 1000.0;
    }
    loaded.info.load_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(loaded)
}

/// A model of either kind, as a worker loads it.
pub enum Loaded {
    Generator(LoadedModel),
    Embedder(sentence_transformers::LoadedEmbedder),
}

/// Loads what `path` holds: a sentence-transformers directory (it has
/// `modules.json`) as an embedding model, anything else as [`load_model_tracked`] does.
pub fn load_tracked(path: &Path, format: WeightFormat, progress: &Arc<LoadProgress>) -> Result<Loaded> {
    if sentence_transformers::is_sentence_transformers(path) {
        return sentence_transformers::load(path, progress).map(Loaded::Embedder);
    }
    load_model_tracked(path, format, progress).map(Loaded::Generator)
}

/// Runs the shapes of a worker's first steps once: a prompt's prefill, two
/// prompts prefilled side by side (the masked path) and a decode step of each;
/// then every variant of our CUDA tensor-core matmul that the model's packed
/// matrices use (each 8-row bucket up to 64 rows, and the widening kernel of
/// longer products: `kernels::cuda_qmm::warm_up`).
/// MLX's CUDA backend compiles each kernel on its first use (NVRTC; 66-72 s
/// for SmolLM2 in f16 on a fresh H200, and a chat prompt of another length
/// still compiled for a minute after it); done here, that time
/// is part of loading, where no request waits on it and the hang watchdog
/// does not count it (a worker is only watched while it holds requests).
pub fn warm_up(model: &Model) -> Result<()> {
    let tokens = |rows: i32, len: i32| Array::from_slice(&vec![1i32; (rows * len) as usize], &[rows, len]);
    for pads in [vec![0], vec![0, 3]] {
        let rows = pads.len() as i32;
        let mut cache = KvCache::with_rows(model.layers(), pads);
        model.forward(&tokens(rows, 8), &mut cache)?.eval()?;
        model.forward(&tokens(rows, 1), &mut cache)?.eval()?;
    }
    if crate::device::backend() == crate::device::Backend::Cuda {
        let compiled = crate::kernels::cuda_qmm::warm_up()?;
        tracing::debug!(compiled, "tensor-core matmul variants compiled");
    }
    Ok(())
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
    let Some(architecture) = arch::by_name(&arch) else {
        let names: Vec<&str> = arch::ARCHITECTURES.iter().flat_map(|a| std::iter::once(a.name).chain(a.gguf_aliases.iter().copied())).collect();
        return Err(fail(format!("architecture '{arch}' is not supported ({})", names.join(", "))));
    };
    let spec = tokenizer_spec(&meta).map_err(fail)?;
    let tokenizer = Tokenizer::from_spec(&spec).map_err(|e| load_failed(path, e))?;
    let template_source = meta.string("tokenizer.chat_template").map_err(fail)?;
    let template = match &template_source {
        Some(source) => Some(Arc::new(
            ChatTemplate::new(source, tokenizer.bos_text(), tokenizer.eos_text()).map_err(|e| load_failed(path, e))?,
        )),
        None => None,
    };

    let mut hp = gguf_hyper_parameters(&meta, &arch, architecture, &gguf, tokenizer.vocab_size()).map_err(fail)?;
    gguf_rope_and_window(&gguf, &meta, &arch, &mut hp).map_err(fail)?;
    let mut weights = Weights { gguf: &gguf, format, parameters: 0 };
    let mut model = (architecture.build)(&mut weights, &hp).map_err(fail)?;
    // In f32 as loaded, with each matrix in the layout its kernels read here.
    model.cast(mlx_rs::Dtype::Float32).map_err(|e| fail(e.to_string()))?;
    let info = ModelInfo {
        format: "gguf".into(),
        quantization: quantization(&gguf),
        architecture: arch,
        parameters: weights.parameters,
        context_length: hp.context_length,
        vocab_size: hp.vocab_size,
        layers: hp.layers,
        hidden_size: hp.hidden as usize,
        heads: hp.heads as usize,
        kv_heads: hp.kv_heads as usize,
        head_dim: hp.head_dim as usize,
        tensor_types: tensor_types(&gguf),
        kind: ModelKind::Generation,
        embedding: None,
        weight_format: format,
        dtype: mlx_rs::Dtype::Float32,
        has_chat_template: template.is_some(),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        warm_up_ms: 0.0,
    };
    Ok(LoadedModel { model, tokenizer: Arc::new(tokenizer), template, template_source, info })
}

/// The fingerprint of a model (what a prompt-cache file must match): for a
/// GGUF file, SHA-256 of its size and of every byte before the tensor data
/// (metadata, vocabulary, tensor names, types, shapes and offsets); for a
/// directory, see [`dir::fingerprint`]. Failures are `MODEL_LOAD_FAILED`.
pub fn fingerprint(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let fail = |why: String| load_failed(path, why);
    if path.is_dir() {
        return dir::fingerprint(path).map_err(fail);
    }
    let data_start = Gguf::open(path).map_err(fail)?.data_start;
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut header = Vec::new();
    file.take(data_start).read_to_end(&mut header).map_err(|e| fail(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    h.update(&header);
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes` (digests in fingerprints and cache files).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `{arch}.*` metadata every architecture here reads.
fn gguf_hyper_parameters(meta: &Metadata, arch: &str, architecture: &Architecture, gguf: &Gguf, vocab_size: usize) -> Result<HyperParameters, String> {
    let tensors = gguf.tensors().len();
    let count = |key: &str| -> Result<usize, String> {
        let v = meta.number(&format!("{arch}.{key}"))?.ok_or_else(|| format!("metadata {arch}.{key} is missing"))?;
        if !(v >= 1.0 && v <= i32::MAX as f64 && v.fract() == 0.0) {
            return Err(format!("metadata {arch}.{key} = {v} is out of range"));
        }
        Ok(v as usize)
    };
    let optional = |key: &str| -> Result<Option<usize>, String> {
        Ok(match meta.number(&format!("{arch}.{key}"))? {
            Some(_) => Some(count(key)?),
            None => None,
        })
    };
    let hidden = count("embedding_length")? as i32;
    let heads = count("attention.head_count")? as i32;
    let kv_heads = optional("attention.head_count_kv")?.map_or(heads, |n| n as i32);
    // Heads may be narrower or wider than hidden / heads (gemma3, qwen3).
    let head_dim = match optional("attention.key_length")? {
        Some(n) => n as i32,
        None if hidden % heads == 0 => hidden / heads,
        None => return Err("inconsistent attention head counts".into()),
    };
    if heads % kv_heads != 0 || optional("attention.value_length")?.is_some_and(|v| v as i32 != head_dim) {
        return Err("inconsistent attention head counts".into());
    }
    let layers = count("block_count")?;
    if layers > tensors {
        return Err(format!("{arch}.block_count = {layers} but the file has only {tensors} tensors"));
    }
    Ok(HyperParameters {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim,
        ffn: match (optional("feed_forward_length")?, gguf.tensor("blk.0.ffn_down.weight")) {
            (Some(n), _) => n as i32,
            (None, Some(t)) if t.dims.len() == 2 => t.dims[0] as i32,
            _ => return Err("tensor blk.0.ffn_down.weight is missing or not a matrix".into()),
        },
        rope_base: meta.number(&format!("{arch}.rope.freq_base"))?.unwrap_or(10000.0) as f32,
        rms_eps: meta.number(&format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
        context_length: count("context_length")?,
        vocab_size,
        rope_dims: match optional("rope.dimension_count")? {
            Some(n) if n as i32 <= head_dim && n % 2 == 0 => n as i32,
            Some(n) => return Err(format!("metadata {arch}.rope.dimension_count = {n} does not fit heads of {head_dim}")),
            None => head_dim,
        },
        rope_traditional: architecture.gguf_rope_pairs,
        rope_scale: 1.0,
        rope_periods: None,
        sliding_window: None,
        rope_local_base: gemma3::LOCAL_ROPE_BASE,
        attention_scale: None,
        embedding_scale: None,
    })
}

/// Reads weights of the file, counting the parameters taken.
struct Weights<'a> {
    gguf: &'a Gguf,
    format: WeightFormat,
    parameters: u64,
}

impl Tensors for Weights<'_> {
    fn linear(&mut self, name: &str, rows: i32, cols: i32) -> Result<Linear, String> {
        let t = tensor(self.gguf, &format!("{name}.weight"), &[rows, cols])?;
        self.parameters += t.elements;
        linear(self.gguf, t, self.format)
    }

    fn vector(&mut self, name: &str, len: i32) -> Result<Array, String> {
        self.parameters += len as u64;
        norm(self.gguf, name, len)
    }

    fn has(&self, name: &str) -> bool {
        self.gguf.tensor(name).is_some()
    }
}

/// RoPE scaling: `{arch}.rope.scaling.type = linear` (positions divided by
/// `rope.scaling.factor`), and llama 3's `rope_freqs` tensor (one factor per
/// rotated pair, dividing its frequency, as llama.cpp's `freq_factors`);
/// Gemma 3's sliding window.
fn gguf_rope_and_window(gguf: &Gguf, meta: &Metadata, arch: &str, hp: &mut HyperParameters) -> Result<(), String> {
    let kind = meta.string(&format!("{arch}.rope.scaling.type"))?;
    let factor = meta.number(&format!("{arch}.rope.scaling.factor"))?;
    match (kind.as_deref(), factor) {
        (None | Some("none"), None) => {}
        (None | Some("linear"), Some(f)) if f >= 1.0 && f.is_finite() => hp.rope_scale = 1.0 / f as f32,
        (None | Some("linear"), Some(f)) => return Err(format!("metadata {arch}.rope.scaling.factor = {f} is out of range")),
        (Some(other), _) => return Err(format!("RoPE scaling '{other}' is not supported (linear, llama 3's rope_freqs)")),
    }
    if gguf.tensor("rope_freqs.weight").is_some() {
        let pairs = hp.rope_dims / 2;
        let t = tensor(gguf, "rope_freqs.weight", &[pairs])?;
        let factors = gguf.dequantize(t)?;
        if factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err("tensor rope_freqs.weight holds a factor that is not a positive number".into());
        }
        // MLX's `freqs` are periods: base^(2i/dims), each times its factor.
        let periods: Vec<f32> =
            factors.iter().enumerate().map(|(i, f)| hp.rope_base.powf(2.0 * i as f32 / hp.rope_dims as f32) * f).collect();
        hp.rope_periods = Some(Array::from_slice(&periods, &[pairs]));
    }
    if arch == "gemma3" {
        let window = meta.number("gemma3.attention.sliding_window")?.ok_or("metadata gemma3.attention.sliding_window is missing")?;
        if !(window >= 1.0 && window <= i32::MAX as f64 && window.fract() == 0.0) {
            return Err(format!("metadata gemma3.attention.sliding_window = {window} is out of range"));
        }
        hp.sliding_window = Some(window as i32);
    }
    Ok(())
}

/// What a GGUF's `tokenizer.ggml.*` metadata says about its tokenizer.
fn tokenizer_spec(meta: &Metadata) -> Result<TokenizerSpec, String> {
    Ok(TokenizerSpec {
        model: meta.string("tokenizer.ggml.model")?.unwrap_or_default(),
        pre: meta.string("tokenizer.ggml.pre")?.unwrap_or_default(),
        tokens: meta.strings("tokenizer.ggml.tokens")?.unwrap_or_default(),
        merges: meta.strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        scores: meta.floats("tokenizer.ggml.scores")?.unwrap_or_default(),
        token_types: meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default(),
        // llama.cpp's default for SentencePiece vocabularies that do not say.
        add_space_prefix: meta.number("tokenizer.ggml.add_space_prefix")?.is_none_or(|v| v != 0.0),
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
        if let Some(mut q) = gguf.affine(t)? {
            if cfg!(not(target_os = "macos")) && q.bits == 5 {
                q = q.widened(8);
            }
            let (rows, cols) = (q.rows as i32, q.cols as i32);
            let weight = Array::from_slice(&q.weight, &[rows, cols * q.bits / 32]);
            let scales = Array::from_slice(&q.scales, &[rows, cols / q.group_size]);
            let biases = Array::from_slice(&q.biases, &[rows, cols / q.group_size]);
            for a in [&weight, &scales, &biases] {
                a.eval().map_err(mlx)?;
            }
            let activations = Activations::from_env();
            return Ok(Linear::Quantized(QuantizedWeight::new(weight, scales, biases, q.group_size, q.bits, activations)));
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

    fn floats(&self, key: &str) -> Result<Option<Vec<f32>>, String> {
        match self.gguf.get(key) {
            None => Ok(None),
            Some(Value::Array(ArrayValue::F32(v))) => Ok(Some(v.clone())),
            Some(Value::Array(a)) if a.is_empty() => Ok(Some(Vec::new())),
            Some(_) => Err(format!("metadata {key} is not an array of f32")),
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
mod arch_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod mlx_lm_tests;
