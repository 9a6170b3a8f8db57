//! Model directories in the Hugging Face / MLX layout: `config.json`,
//! weights in `model.safetensors` (or shards named by
//! `model.safetensors.index.json`), `tokenizer.json`, and optionally
//! `tokenizer_config.json`, `chat_template.jinja`, `generation_config.json`.
//!
//! Weights are float (F32, F16, BF16) or MLX affine-quantized linears:
//! `<name>.weight` (U32, packed codes), `<name>.scales` and `<name>.biases`,
//! with bits and group size from config.json's `quantization` section (and
//! its per-layer overrides). They feed the same builders as GGUF
//! ([`super::Tensors`]), under GGUF's names mapped to HF's here. Two
//! conventions differ from GGUF: HF keeps llama's q/k rows as trained (RoPE
//! over halves, not llama.cpp's permuted pairs), and Gemma's norm weights
//! are stored without the `+1` of `x * (1 + w)` (added at load here).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
    time::Instant,
};

use mlx_rs::Array;
use serde_json::Value;

use super::{
    blocks::Affine,
    load_failed,
    safetensors_file::{self, Shard, View},
    HyperParameters, LoadProgress, LoadedModel, ModelInfo, Tensors,
};
use crate::{
    error::Result,
    kernels::Activations,
    model::{
        arch::{self, common::hf_module, Model},
        linear::{Linear, QuantizedWeight, WeightFormat},
    },
    tokenizer::{ChatTemplate, Tokenizer},
};

/// JSON files read whole are at most this large (tokenizer.json of a 256k
/// vocabulary is ~33 MB).
const MAX_JSON: u64 = 256 << 20;

/// config.json, as far as the supported architectures need it.
#[derive(Debug, Clone)]
pub struct Config {
    pub model_type: String,
    /// Our builder's architecture name (GGUF's).
    pub arch: &'static str,
    pub hidden: i32,
    pub layers: usize,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    /// Leading dimensions of each head that RoPE rotates
    /// (`partial_rotary_factor` times `head_dim`).
    pub rope_dims: i32,
    pub ffn: i32,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Linear RoPE scaling's factor.
    pub rope_factor: Option<f32>,
    /// llama 3's RoPE scaling: per-pair periods.
    pub rope_periods: Option<Vec<f32>>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub sliding_window: Option<i32>,
    pub rope_local_base: f32,
    pub query_pre_attn_scalar: Option<f32>,
    pub quantization: Option<Quantization>,
    pub eos: Vec<u32>,
    pub bos: Option<u32>,
}

/// config.json's `quantization`: the default and per-layer overrides (keyed
/// by module path, e.g. `model.layers.0.mlp.down_proj`; `None`: kept float).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    pub group_size: i32,
    pub bits: i32,
    pub layers: HashMap<String, Option<(i32, i32)>>,
}

impl Quantization {
    /// `(group_size, bits)` of the module `path`, `None` when not quantized.
    pub fn of(&self, path: &str) -> Option<(i32, i32)> {
        match self.layers.get(path) {
            Some(over) => *over,
            None => Some((self.group_size, self.bits)),
        }
    }

    fn parse(v: &Value) -> Result<Quantization, String> {
        let obj = v.as_object().ok_or("config.json: quantization is not an object")?;
        let pair = |o: &serde_json::Map<String, Value>, at: &str| -> Result<(i32, i32), String> {
            if let Some(mode) = o.get("mode") {
                if mode.as_str() != Some("affine") {
                    return Err(format!("config.json: quantization mode {mode} of {at} is not supported (affine)"));
                }
            }
            let g = o.get("group_size").and_then(Value::as_u64).ok_or_else(|| format!("config.json: {at} has no integer group_size"))?;
            let b = o.get("bits").and_then(Value::as_u64).ok_or_else(|| format!("config.json: {at} has no integer bits"))?;
            if !matches!(g, 32 | 64 | 128) || !matches!(b, 2 | 3 | 4 | 5 | 6 | 8) {
                return Err(format!("config.json: {at}: {b}-bit, group {g} is not supported (2, 3, 4, 5, 6, 8 bits; groups 32, 64, 128)"));
            }
            Ok((g as i32, b as i32))
        };
        let (group_size, bits) = pair(obj, "quantization")?;
        let mut layers = HashMap::new();
        for (k, v) in obj {
            match v {
                Value::Object(o) => {
                    layers.insert(k.clone(), Some(pair(o, k)?));
                }
                Value::Bool(false) => {
                    layers.insert(k.clone(), None);
                }
                Value::Bool(true) => {
                    layers.insert(k.clone(), Some((group_size, bits)));
                }
                _ => {}
            }
        }
        Ok(Quantization { group_size, bits, layers })
    }
}

/// A whole number in 1..=i32::MAX.
fn count(v: &Value, key: &str) -> Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) if n >= 1 && n <= i32::MAX as u64 => Ok(Some(n as usize)),
            _ => Err(format!("config.json: {key} = {x} is not a count")),
        },
    }
}

fn required(v: &Value, key: &str) -> Result<usize, String> {
    count(v, key)?.ok_or_else(|| format!("config.json: {key} is missing"))
}

fn float(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_f64() {
            Some(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
            _ => Err(format!("config.json: {key} = {x} is not a positive number")),
        },
    }
}

/// A token id or a list of them.
pub(crate) fn ids(v: Option<&Value>, what: &str) -> Result<Vec<u32>, String> {
    let one = |x: &Value| x.as_u64().filter(|&n| n <= u32::MAX as u64).map(|n| n as u32).ok_or_else(|| format!("{what}: {x} is not a token id"));
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(one).collect(),
        Some(x) => Ok(vec![one(x)?]),
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("config.json: {e}"))?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(architecture) = arch::by_model_type(&model_type) else {
            let names: Vec<&str> = arch::ARCHITECTURES.iter().flat_map(|a| a.model_types.iter().copied()).collect();
            return Err(format!("model_type '{model_type}' is not supported ({})", names.join(", ")));
        };
        let arch = architecture.name;
        let hidden = required(&v, "hidden_size")? as i32;
        let heads = required(&v, "num_attention_heads")? as i32;
        let kv_heads = count(&v, "num_key_value_heads")?.map_or(heads, |n| n as i32);
        let head_dim = match count(&v, "head_dim")? {
            Some(n) => n as i32,
            None if hidden % heads == 0 => hidden / heads,
            None => return Err("config.json: hidden_size is not a multiple of num_attention_heads".into()),
        };
        if heads % kv_heads != 0 || head_dim % 2 != 0 {
            return Err("config.json: inconsistent attention head counts".into());
        }
        let layers = required(&v, "num_hidden_layers")?;
        let gemma = arch == "gemma3";
        let rope_theta = float(&v, "rope_theta")?.unwrap_or(architecture.default_rope_theta as f64) as f32;
        // mlx-lm rotates int(head_dim * factor) leading dimensions.
        let rope_dims = match float(&v, "partial_rotary_factor")? {
            None => head_dim,
            Some(f) if f <= 1.0 && (head_dim as f64 * f) as i32 >= 2 => ((head_dim as f64 * f) as i32) & !1,
            Some(f) => return Err(format!("config.json: partial_rotary_factor = {f} is out of range")),
        };
        let (rope_factor, rope_periods) = rope_scaling(v.get("rope_scaling"), rope_theta, rope_dims)?;
        let mut sliding_window = None;
        if gemma {
            sliding_window = Some(count(&v, "sliding_window")?.unwrap_or(512) as i32);
            let pattern = count(&v, "sliding_window_pattern")?.unwrap_or(super::gemma3::GLOBAL_EVERY);
            if pattern != super::gemma3::GLOBAL_EVERY {
                return Err(format!("config.json: sliding_window_pattern {pattern} is not supported (6)"));
            }
            if let Some(types) = v.get("layer_types").filter(|t| !t.is_null()) {
                let types = types.as_array().ok_or("config.json: layer_types is not a list")?;
                let ok = types.len() == layers
                    && types.iter().enumerate().all(|(i, t)| {
                        t.as_str() == Some(if (i + 1) % pattern == 0 { "full_attention" } else { "sliding_attention" })
                    });
                if !ok {
                    return Err("config.json: layer_types is not one full-attention layer in every 6 (the only layout supported)".into());
                }
            }
        }
        Ok(Config {
            model_type,
            arch,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            rope_dims,
            ffn: required(&v, "intermediate_size")? as i32,
            rms_eps: float(&v, "rms_norm_eps")?.unwrap_or(if gemma { 1e-6 } else { 1e-5 }) as f32,
            rope_theta,
            rope_factor,
            rope_periods,
            context_length: count(&v, "max_position_embeddings")?.unwrap_or(if gemma { 32768 } else { 4096 }),
            vocab_size: required(&v, "vocab_size")?,
            sliding_window,
            rope_local_base: float(&v, "rope_local_base_freq")?.unwrap_or(10_000.0) as f32,
            query_pre_attn_scalar: float(&v, "query_pre_attn_scalar")?.map(|f| f as f32),
            quantization: match v.get("quantization").or_else(|| v.get("quantization_config")) {
                None | Some(Value::Null) => None,
                Some(q) => Some(Quantization::parse(q)?),
            },
            eos: ids(v.get("eos_token_id"), "config.json: eos_token_id")?,
            bos: ids(v.get("bos_token_id"), "config.json: bos_token_id")?.first().copied(),
        })
    }
}

/// `rope_scaling`: none/default, `linear` (a factor), or `llama3` (per-pair
/// periods, computed as HF's and mlx-lm's llama 3 RoPE do).
fn rope_scaling(v: Option<&Value>, base: f32, dims: i32) -> Result<(Option<f32>, Option<Vec<f32>>), String> {
    let Some(s) = v.filter(|s| !s.is_null()) else { return Ok((None, None)) };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |k: &str| -> Result<f32, String> {
        s.get(k)
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| f as f32)
            .ok_or_else(|| format!("config.json: rope_scaling.{k} is missing or not a positive number"))
    };
    match kind {
        "default" => Ok((None, None)),
        "linear" => {
            let f = num("factor")?;
            if f < 1.0 {
                return Err(format!("config.json: rope_scaling.factor = {f} is out of range"));
            }
            Ok((Some(f), None))
        }
        "llama3" => {
            let (factor, low, high, old) = (num("factor")?, num("low_freq_factor")?, num("high_freq_factor")?, num("original_max_position_embeddings")?);
            if high <= low {
                return Err("config.json: rope_scaling.high_freq_factor must exceed low_freq_factor".into());
            }
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            let periods = (0..dims / 2)
                .map(|i| {
                    let period = base.powf(2.0 * i as f32 / dims as f32);
                    let wavelen = 2.0 * std::f32::consts::PI * period;
                    if wavelen > low_wavelen {
                        period * factor
                    } else if wavelen < high_wavelen {
                        period
                    } else {
                        // Between the two: blend the scaled and unscaled frequency.
                        let smooth = (old / wavelen - low) / (high - low);
                        period / ((1.0 - smooth) / factor + smooth)
                    }
                })
                .collect();
            Ok((None, Some(periods)))
        }
        other => Err(format!("config.json: RoPE scaling '{other}' is not supported (linear, llama3)")),
    }
}

/// The HF name of a GGUF-named tensor (without `.weight`/`.bias`, or
/// with) in a checkpoint of architecture `arch` (our name): the common
/// mapping ([`hf_module`]) but where the architecture names a module otherwise.
pub fn hf_name(name: &str, arch: &str) -> String {
    let (base, suffix) = match name.rsplit_once('.') {
        Some((b, s @ ("weight" | "bias"))) => (b, Some(s)),
        _ => (name, None),
    };
    let exceptions = arch::by_name(arch).map_or(&[][..], |a| a.hf_modules);
    let mapped = match base {
        "token_embd" => "model.embed_tokens".to_string(),
        "output" => "lm_head".to_string(),
        "output_norm" => "model.norm".to_string(),
        _ => match base.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((layer, part)) => {
                let module = exceptions.iter().find(|(p, _)| *p == part).map(|&(_, m)| m).or_else(|| hf_module(part)).unwrap_or(part);
                format!("model.layers.{layer}.{module}")
            }
            None => base.to_string(),
        },
    };
    match suffix {
        Some(s) => format!("{mapped}.{s}"),
        None => mapped,
    }
}

/// The directory's tensors, by HF name, in their shards.
struct DirWeights<'a> {
    shards: &'a [Shard],
    /// Tensor name → index into `shards`.
    at: HashMap<String, usize>,
    config: &'a Config,
    format: WeightFormat,
    parameters: u64,
    progress: &'a LoadProgress,
    /// The checkpoint names its tensors without the `model.` prefix.
    bare: bool,
}

impl DirWeights<'_> {
    /// The checkpoint's name of an HF-named tensor.
    fn stored(&self, hf: String) -> String {
        match hf.strip_prefix("model.") {
            Some(rest) if self.bare => rest.to_string(),
            _ => hf,
        }
    }

    fn view(&self, name: &str) -> Result<View<'_>, String> {
        let &i = self.at.get(name).ok_or_else(|| format!("tensor {name} is missing"))?;
        self.shards[i].get(name).ok_or_else(|| format!("tensor {name} is missing from {}", self.shards[i].name))
    }

    fn quantized(&mut self, module: &str, rows: usize, cols: usize, group_size: i32, bits: i32) -> Result<Linear, String> {
        let (g, b) = (group_size as usize, bits as usize);
        if cols % g != 0 || (cols * b) % 32 != 0 {
            return Err(format!("{module}: {cols} columns do not split into groups of {g} / words of {b}-bit codes"));
        }
        let (wn, sn, bn) = (format!("{module}.weight"), format!("{module}.scales"), format!("{module}.biases"));
        let (w, s, bi) = (self.view(&wn)?, self.view(&sn)?, self.view(&bn)?);
        w.expect(&wn, &[rows, cols * b / 32])?;
        s.expect(&sn, &[rows, cols / g])?;
        bi.expect(&bn, &[rows, cols / g])?;
        let q = Affine { weight: w.words(&wn)?, scales: s.floats(&sn)?, biases: bi.floats(&bn)?, rows, cols, bits, group_size };
        self.progress.advance((w.data.len() + s.data.len() + bi.data.len()) as u64);
        let mlx = |e: mlx_rs::error::Exception| format!("tensor {wn}: {e}");
        if self.format == WeightFormat::Dense {
            let dense = Array::from_slice(&q.dequantize(), &[rows as i32, cols as i32]);
            dense.eval().map_err(mlx)?;
            return Ok(Linear::Dense(dense));
        }
        // Our CPU kernel multiplies 4- and 8-bit codes; other widths are
        // widened exactly (same scales and biases, codes re-packed).
        let q = match bits {
            4 | 8 => q,
            2 => q.widened(4),
            _ => q.widened(8),
        };
        let (r, c) = (rows as i32, cols as i32);
        let weight = Array::from_slice(&q.weight, &[r, c * q.bits / 32]);
        let scales = Array::from_slice(&q.scales, &[r, c / group_size]);
        let biases = Array::from_slice(&q.biases, &[r, c / group_size]);
        for a in [&weight, &scales, &biases] {
            a.eval().map_err(mlx)?;
        }
        Ok(Linear::Quantized(QuantizedWeight::new(weight, scales, biases, group_size, q.bits, Activations::from_env())))
    }
}

impl Tensors for DirWeights<'_> {
    fn linear(&mut self, name: &str, rows: i32, cols: i32) -> Result<Linear, String> {
        let module = self.stored(hf_name(name, self.config.arch));
        let (r, c) = (rows as usize, cols as usize);
        self.parameters += (r as u64) * (c as u64);
        if self.at.contains_key(&format!("{module}.scales")) {
            let (g, b) = self
                .config
                .quantization
                .as_ref()
                .and_then(|q| q.of(&module))
                .ok_or_else(|| format!("{module} is quantized but config.json's quantization does not say how"))?;
            return self.quantized(&module, r, c, g, b);
        }
        let wn = format!("{module}.weight");
        let w = self.view(&wn)?;
        w.expect(&wn, &[r, c])?;
        let values = w.floats(&wn)?;
        self.progress.advance(w.data.len() as u64);
        let dense = Array::from_slice(&values, &[rows, cols]);
        dense.eval().map_err(|e| format!("tensor {wn}: {e}"))?;
        Ok(Linear::Dense(dense))
    }

    fn vector(&mut self, name: &str, len: i32) -> Result<Array, String> {
        let hf = self.stored(hf_name(name, self.config.arch));
        let v = self.view(&hf)?;
        v.expect(&hf, &[len as usize])?;
        let mut values = v.floats(&hf)?;
        self.progress.advance(v.data.len() as u64);
        self.parameters += len as u64;
        // Gemma's RMS norms scale by 1 + w; the builder applies w as stored (GGUF's form).
        if arch::by_name(self.config.arch).is_some_and(|a| a.hf_norms_plus_one) && hf.ends_with("norm.weight") {
            values.iter_mut().for_each(|x| *x += 1.0);
        }
        let a = Array::from_slice(&values, &[len]);
        a.eval().map_err(|e| format!("tensor {hf}: {e}"))?;
        Ok(a)
    }

    fn has(&self, name: &str) -> bool {
        self.at.contains_key(&self.stored(hf_name(name, self.config.arch)))
    }
}

/// A JSON file of the directory, if present, read with a size cap.
fn read_json_file(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let path = dir.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if meta.len() > MAX_JSON {
        return Err(format!("{name} is {} bytes, more than {MAX_JSON}", meta.len()));
    }
    std::fs::read_to_string(&path).map(Some).map_err(|e| format!("{name}: {e}"))
}

/// The shard files of a directory: those `model.safetensors.index.json`
/// names, else `model.safetensors`. With the index, tensor → shard.
pub(crate) fn shard_files(dir: &Path) -> Result<(Vec<String>, Option<HashMap<String, String>>), String> {
    match read_json_file(dir, "model.safetensors.index.json")? {
        Some(json) => {
            let map = safetensors_file::index(&json)?;
            let mut files: Vec<String> = map.values().cloned().collect();
            files.sort();
            files.dedup();
            Ok((files, Some(map)))
        }
        None if dir.join("model.safetensors").is_file() => Ok((vec!["model.safetensors".into()], None)),
        None => Err("no model.safetensors or model.safetensors.index.json".into()),
    }
}

/// The template source: tokenizer_config.json's `chat_template` (a string,
/// or a list of named templates: the one named `default`), else `chat_template.jinja`.
fn chat_template(dir: &Path, tokenizer_config: Option<&Value>) -> Result<Option<String>, String> {
    match tokenizer_config.and_then(|c| c.get("chat_template")) {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let default = list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            if let Some(t) = default.and_then(|t| t.get("template")).and_then(Value::as_str) {
                return Ok(Some(t.to_string()));
            }
        }
        _ => {}
    }
    read_json_file(dir, "chat_template.jinja")
}

/// A special token as tokenizer_config.json writes it: a string or `{content}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Loads a model directory; every failure is `MODEL_LOAD_FAILED` with the reason.
pub fn load_dir_tracked(dir: &Path, format: WeightFormat, progress: &Arc<LoadProgress>) -> Result<LoadedModel> {
    let started = Instant::now();
    crate::kernels::check_runtime().map_err(|e| load_failed(dir, e))?;
    let fail = |why: String| load_failed(dir, why);
    let config = Config::parse(&read_json_file(dir, "config.json").map_err(fail)?.ok_or_else(|| {
        fail("a directory without config.json is not a model directory (give a GGUF file or a Hugging Face / MLX model directory)".into())
    })?)
        .map_err(fail)?;

    // Tokenizer, template, special tokens.
    let tokenizer_json = read_json_file(dir, "tokenizer.json").map_err(fail)?.ok_or_else(|| fail("tokenizer.json is missing".into()))?;
    let tokenizer_config: Option<Value> = match read_json_file(dir, "tokenizer_config.json").map_err(fail)? {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| fail(format!("tokenizer_config.json: {e}")))?),
        None => None,
    };
    let generation: Option<Value> = match read_json_file(dir, "generation_config.json").map_err(fail)? {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| fail(format!("generation_config.json: {e}")))?),
        None => None,
    };
    let tc = tokenizer_config.as_ref();
    let mut ends = config.eos.clone();
    ends.extend(ids(generation.as_ref().and_then(|g| g.get("eos_token_id")), "generation_config.json: eos_token_id").map_err(fail)?);
    let tokenizer = Tokenizer::from_json(
        &tokenizer_json,
        token_text(tc.and_then(|c| c.get("bos_token"))),
        token_text(tc.and_then(|c| c.get("eos_token"))),
        config.bos,
        tc.and_then(|c| c.get("add_bos_token")).and_then(Value::as_bool),
        &ends,
    )
    .map_err(|e| load_failed(dir, e))?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(fail(format!("tokenizer.json has {} tokens, config.json's vocab_size is {}", tokenizer.vocab_size(), config.vocab_size)));
    }
    let template_source = chat_template(dir, tc).map_err(fail)?;
    let template = match &template_source {
        Some(source) => Some(Arc::new(ChatTemplate::new(source, tokenizer.bos_text(), tokenizer.eos_text()).map_err(|e| load_failed(dir, e))?)),
        None => None,
    };

    let built = build_transformer(dir, &config, format, progress, EmbeddingScale::Bf16).map_err(fail)?;
    let (model, parameters, tensor_types) = (built.model, built.parameters, built.tensor_types);
    let shards_dominant = built.dominant_float;
    let (format_name, quantization) = match &config.quantization {
        Some(q) => ("mlx", format!("{}-bit g{}", q.bits, q.group_size)),
        None => ("safetensors", shards_dominant.to_lowercase()),
    };
    let info = ModelInfo {
        format: format_name.into(),
        quantization,
        architecture: config.arch.into(),
        parameters,
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        layers: config.layers,
        hidden_size: config.hidden as usize,
        heads: config.heads as usize,
        kv_heads: config.kv_heads as usize,
        head_dim: config.head_dim as usize,
        tensor_types,
        kind: super::ModelKind::Generation,
        embedding: None,
        weight_format: format,
        dtype: mlx_rs::Dtype::Float32,
        has_chat_template: template.is_some(),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        warm_up_ms: 0.0,
    };
    Ok(LoadedModel { model, tokenizer: Arc::new(tokenizer), template, template_source, info })
}

/// How Gemma's embeddings are scaled by `sqrt(hidden)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbeddingScale {
    /// Rounded to bf16, as mlx-lm (and Hugging Face for bf16 checkpoints) compute it.
    Bf16,
    /// In the dtype of the stored embedding matrix, as Hugging Face computes it
    /// (`embed_scale.to(weight.dtype)`): exact in f32 for an f32 checkpoint.
    WeightDtype,
}

/// A directory's transformer, built from its safetensors shards.
pub(crate) struct Built {
    pub model: Model,
    pub parameters: u64,
    /// The dtypes of the tensors read.
    pub tensor_types: Vec<String>,
    /// The float dtype holding the most elements of matrices.
    pub dominant_float: String,
}

/// Reads `dir`'s shards and builds the architecture `config` names. Tensors
/// are looked up under Hugging Face's names, with or without the `model.`
/// prefix (a checkpoint of the bare text model, as sentence-transformers saves
/// Gemma 3, has none).
pub(crate) fn build_transformer(dir: &Path, config: &Config, format: WeightFormat, progress: &Arc<LoadProgress>, scale: EmbeddingScale) -> Result<Built, String> {
    let (files, index) = shard_files(dir)?;
    let mut sizes = 0u64;
    for f in &files {
        sizes += std::fs::metadata(dir.join(f)).map_err(|e| format!("{f}: {e}"))?.len();
    }
    progress.start(sizes.max(1));
    let mut shards = Vec::with_capacity(files.len());
    let mut at = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let shard = Shard::read(&dir.join(f))?;
        for name in shard.names() {
            if let Some(map) = &index {
                if map.get(&name) != Some(f) {
                    continue;
                }
            }
            if at.insert(name.clone(), i).is_some() {
                return Err(format!("tensor {name} is in more than one shard"));
            }
        }
        shards.push(shard);
    }
    if let Some(map) = &index {
        if let Some(missing) = map.keys().find(|k| !at.contains_key(*k)) {
            return Err(format!("tensor {missing} is not in its shard {}", map[missing]));
        }
    }
    if config.layers > at.len() {
        return Err(format!("num_hidden_layers = {} but the directory has only {} tensors", config.layers, at.len()));
    }
    let bare = !at.contains_key("model.embed_tokens.weight") && at.contains_key("embed_tokens.weight");
    let sqrt_hidden = (config.hidden as f32).sqrt();
    let embedding_scale = match scale {
        EmbeddingScale::Bf16 => half::bf16::from_f32(sqrt_hidden).to_f32(),
        EmbeddingScale::WeightDtype => {
            let name = if bare { "embed_tokens.weight" } else { "model.embed_tokens.weight" };
            match at.get(name).and_then(|&i| shards[i].get(name)).map(|v| v.dtype) {
                Some(safetensors::Dtype::BF16) => half::bf16::from_f32(sqrt_hidden).to_f32(),
                Some(safetensors::Dtype::F16) => half::f16::from_f32(sqrt_hidden).to_f32(),
                _ => sqrt_hidden,
            }
        }
    };
    let hp = HyperParameters {
        layers: config.layers,
        hidden: config.hidden,
        heads: config.heads,
        kv_heads: config.kv_heads,
        head_dim: config.head_dim,
        ffn: config.ffn,
        rope_base: config.rope_theta,
        rope_dims: config.rope_dims,
        rms_eps: config.rms_eps,
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        rope_traditional: false,
        rope_scale: config.rope_factor.map_or(1.0, |f| 1.0 / f),
        rope_periods: config.rope_periods.as_ref().map(|p| Array::from_slice(p, &[p.len() as i32])),
        sliding_window: config.sliding_window,
        rope_local_base: config.rope_local_base,
        attention_scale: config.query_pre_attn_scalar.map(|s| 1.0 / s.sqrt()),
        embedding_scale: Some(embedding_scale),
    };
    let mut weights = DirWeights { shards: &shards, at, config, format, parameters: 0, progress, bare };
    let architecture = arch::by_name(config.arch).expect("config.arch names an architecture");
    let mut model = (architecture.build)(&mut weights, &hp)?;
    // In f32 as loaded, with each matrix in the layout its kernels read here.
    model.cast(mlx_rs::Dtype::Float32).map_err(|e| e.to_string())?;
    let parameters = weights.parameters;
    let tensor_types = tensor_types(&shards, &weights.at);
    Ok(Built { model, parameters, tensor_types, dominant_float: dominant_float(&shards) })
}

fn dtype_name(d: safetensors::Dtype) -> String {
    format!("{d:?}")
}

fn tensor_types(shards: &[Shard], at: &HashMap<String, usize>) -> Vec<String> {
    let mut types: Vec<String> = at.iter().filter_map(|(n, &i)| shards[i].get(n)).map(|v| dtype_name(v.dtype)).collect();
    types.sort();
    types.dedup();
    types
}

/// The float dtype holding the most elements of matrices.
fn dominant_float(shards: &[Shard]) -> String {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for s in shards {
        for n in s.names() {
            if let Some(v) = s.get(&n).filter(|v| v.shape.len() == 2) {
                *by.entry(dtype_name(v.dtype)).or_default() += v.data.len() as u64;
            }
        }
    }
    by.into_iter().max_by_key(|&(_, n)| n).map_or_else(|| "unknown".into(), |(t, _)| t)
}

/// SHA-256 of config.json and of every shard's size and header (names,
/// dtypes, shapes, offsets), for prompt-cache files.
pub fn fingerprint(dir: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let config = read_json_file(dir, "config.json")?.ok_or("config.json is missing")?;
    h.update((config.len() as u64).to_le_bytes());
    h.update(config.as_bytes());
    let (files, _) = shard_files(dir)?;
    for f in files {
        let (size, header) = safetensors_file::header(&dir.join(&f))?;
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
        h.update(size.to_le_bytes());
        h.update((header.len() as u64).to_le_bytes());
        h.update(&header);
    }
    Ok(super::hex(&h.finalize()))
}

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
