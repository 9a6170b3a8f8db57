//! sentence-transformers directories: `modules.json` lists the modules in
//! order — a Transformer (the encoder: its `config.json`, safetensors weights,
//! `tokenizer.json` and `sentence_bert_config.json`), a Pooling module
//! (`1_Pooling/config.json`), optional Dense modules (`2_Dense/config.json`
//! and `model.safetensors`) and an optional Normalize. The named prompts come
//! from `config_sentence_transformers.json`.
//!
//! Encoders: BERT (`model_type: bert`) and Gemma 3 with bidirectional
//! attention (`gemma3_text`, `use_bidirectional_attention: true`:
//! EmbeddingGemma). Weights stay f32 (float checkpoints are widened), the
//! dtype sentence-transformers' references compute in.

use std::{collections::HashMap, path::Path, sync::Arc, time::Instant};

use mlx_rs::Array;
use serde_json::Value;

use super::{
    dir::{self, Config, EmbeddingScale},
    load_failed,
    safetensors_file::Shard,
    EmbeddingInfo, LoadProgress, ModelInfo, ModelKind,
};
use crate::{
    error::Result,
    model::{
        arch::{
            bert::{self, BertConfig, Checkpoint},
            Model,
        },
        embedding::{Activation, Dense, Embedder, Encoder, Pooling},
        linear::WeightFormat,
    },
    tokenizer::Tokenizer,
};

/// JSON files read whole are at most this large.
const MAX_JSON: u64 = 256 << 20;

/// An embedding model ready to run.
pub struct LoadedEmbedder {
    pub embedder: Embedder,
    /// Tokenizes as the model reads text: special tokens added, truncated at `max_tokens`.
    pub tokenizer: Arc<Tokenizer>,
    pub info: ModelInfo,
}

/// Whether `path` is a sentence-transformers directory (it has `modules.json`).
pub fn is_sentence_transformers(path: &Path) -> bool {
    path.is_dir() && path.join("modules.json").is_file()
}

/// One entry of modules.json.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Module {
    Transformer(String),
    Pooling(String),
    Dense(String),
    Normalize,
}

fn read_json(dir: &Path, name: &str) -> Result<Option<Value>, String> {
    let path = dir.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if meta.len() > MAX_JSON {
        return Err(format!("{name} is {} bytes, more than {MAX_JSON}", meta.len()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
    serde_json::from_str(&text).map(Some).map_err(|e| format!("{name}: {e}"))
}

/// A module directory named in modules.json, which must stay inside the model's directory.
fn module_dir(path: &str) -> Result<String, String> {
    if path.split(['/', '\\']).any(|p| p == "..") || path.starts_with('/') {
        return Err(format!("modules.json: module path '{path}' leaves the model's directory"));
    }
    Ok(path.to_string())
}

fn modules(v: &Value) -> Result<Vec<Module>, String> {
    let list = v.as_array().ok_or("modules.json is not a list")?;
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let path = module_dir(m.get("path").and_then(Value::as_str).unwrap_or_default())?;
        let name = kind.rsplit('.').next().unwrap_or_default();
        out.push(match name {
            "Transformer" => Module::Transformer(path),
            "Pooling" => Module::Pooling(path),
            "Dense" => Module::Dense(path),
            "Normalize" => Module::Normalize,
            _ => return Err(format!("modules.json: module type '{kind}' is not supported (Transformer, Pooling, Dense, Normalize)")),
        });
    }
    match out.as_slice() {
        [Module::Transformer(_), Module::Pooling(_), rest @ ..]
            if rest.iter().all(|m| matches!(m, Module::Dense(_) | Module::Normalize))
                && rest.iter().position(|m| *m == Module::Normalize).is_none_or(|i| i == rest.len() - 1) =>
        {
            Ok(out)
        }
        _ => Err("modules.json: expected a Transformer, a Pooling module, then Dense modules and an optional Normalize last".into()),
    }
}

/// The pooling mode of `1_Pooling/config.json` (its `pooling_mode` string, or
/// the `pooling_mode_*` flags), and `include_prompt`.
fn pooling(v: &Value) -> Result<(Pooling, bool), String> {
    let by_name = |name: &str| -> Option<Pooling> {
        Some(match name {
            "mean" | "mean_tokens" => Pooling::Mean,
            "cls" | "cls_token" => Pooling::Cls,
            "max" | "max_tokens" => Pooling::Max,
            "mean_sqrt_len_tokens" | "mean_sqrt_len" => Pooling::MeanSqrtLen,
            "weightedmean" | "weightedmean_tokens" | "weighted_mean" => Pooling::WeightedMean,
            "lasttoken" | "last_token" => Pooling::LastToken,
            _ => return None,
        })
    };
    let include_prompt = v.get("include_prompt").and_then(Value::as_bool).unwrap_or(true);
    if let Some(name) = v.get("pooling_mode").and_then(Value::as_str) {
        return by_name(name).map(|p| (p, include_prompt)).ok_or_else(|| format!("1_Pooling/config.json: pooling_mode '{name}' is not supported"));
    }
    let on: Vec<Pooling> = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"]
        .iter()
        .filter(|k| v.get(format!("pooling_mode_{k}")).and_then(Value::as_bool) == Some(true))
        .filter_map(|k| by_name(k))
        .collect();
    match on.as_slice() {
        [one] => Ok((*one, include_prompt)),
        [] => Err("1_Pooling/config.json: no pooling mode is on".into()),
        _ => Err("1_Pooling/config.json: several pooling modes at once (concatenated) are not supported".into()),
    }
}

/// Tensors of one safetensors file, read as f32.
struct File {
    shard: Shard,
    progress: Arc<LoadProgress>,
}

impl Checkpoint for File {
    fn tensor(&mut self, name: &str, shape: &[i32]) -> Result<Array, String> {
        let view = self.shard.get(name).ok_or_else(|| format!("tensor {name} is missing"))?;
        let want: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        view.expect(name, &want)?;
        let values = view.floats(name)?;
        self.progress.advance(view.data.len() as u64);
        let a = Array::from_slice(&values, shape);
        a.eval().map_err(|e| format!("tensor {name}: {e}"))?;
        Ok(a)
    }

    fn has(&self, name: &str) -> bool {
        self.shard.get(name).is_some()
    }
}

fn dense(dir: &Path, path: &str, progress: &Arc<LoadProgress>) -> Result<(Dense, usize, usize), String> {
    let at = dir.join(path);
    let v = read_json(&at, "config.json")?.ok_or_else(|| format!("{path}/config.json is missing"))?;
    let count = |k: &str| {
        v.get(k).and_then(Value::as_u64).filter(|&n| n >= 1 && n <= i32::MAX as u64).map(|n| n as usize).ok_or_else(|| format!("{path}/config.json: {k} is missing or not a count"))
    };
    let (input, output) = (count("in_features")?, count("out_features")?);
    let activation = match v.get("activation_function").and_then(Value::as_str).unwrap_or("torch.nn.modules.activation.Tanh") {
        a if a.ends_with(".Identity") => Activation::Identity,
        a if a.ends_with(".Tanh") => Activation::Tanh,
        a => return Err(format!("{path}/config.json: activation_function '{a}' is not supported (Identity, Tanh)")),
    };
    let file = at.join("model.safetensors");
    if !file.is_file() {
        return Err(format!("{path}/model.safetensors is missing (PyTorch .bin weights are not read)"));
    }
    let mut f = File { shard: Shard::read(&file)?, progress: progress.clone() };
    let weight = f.tensor("linear.weight", &[output as i32, input as i32])?;
    let weight_t = weight.transpose_axes(&[1, 0]).and_then(|w| w.contiguous()).map_err(|e| format!("{path}: {e}"))?;
    weight_t.eval().map_err(|e| format!("{path}: {e}"))?;
    let bias = match v.get("bias").and_then(Value::as_bool).unwrap_or(true) {
        true => Some(f.tensor("linear.bias", &[output as i32])?),
        false => None,
    };
    Ok((Dense { weight_t, bias, activation }, input, output))
}

/// Loads a sentence-transformers directory; every failure is
/// `MODEL_LOAD_FAILED` with the reason.
pub fn load(path: &Path, progress: &Arc<LoadProgress>) -> Result<LoadedEmbedder> {
    let started = Instant::now();
    crate::kernels::check_runtime().map_err(|e| load_failed(path, e))?;
    load_inner(path, progress, started).map_err(|e| load_failed(path, e))
}

fn load_inner(path: &Path, progress: &Arc<LoadProgress>, started: Instant) -> Result<LoadedEmbedder, String> {
    let list = modules(&read_json(path, "modules.json")?.ok_or("modules.json is missing")?)?;
    let Module::Transformer(t) = &list[0] else { unreachable!("checked by modules()") };
    let tdir = path.join(t);
    let config_json = read_json(&tdir, "config.json")?.ok_or("config.json of the Transformer module is missing")?;
    let st = read_json(&tdir, "sentence_bert_config.json")?.unwrap_or(Value::Null);
    let model_type = config_json.get("model_type").and_then(Value::as_str).unwrap_or_default().to_string();

    // The encoder.
    let (encoder, parameters, tensor_types, hidden, layers, heads, kv_heads, head_dim, positions, vocab_size, architecture) = match model_type.as_str() {
        "bert" => {
            let c = BertConfig::parse(&config_json)?;
            let file = tdir.join("model.safetensors");
            if !file.is_file() {
                return Err("model.safetensors is missing (PyTorch .bin weights are not read)".into());
            }
            progress.start(std::fs::metadata(&file).map_err(|e| e.to_string())?.len().max(1));
            let mut f = File { shard: Shard::read(&file)?, progress: progress.clone() };
            let bert = bert::build(&mut f, &c)?;
            let params = (c.vocab_size + c.max_positions + 2) as u64 * c.hidden as u64
                + c.layers as u64 * (4 * (c.hidden as u64).pow(2) + 2 * c.hidden as u64 * c.ffn as u64);
            let (h, heads) = (c.hidden as usize, c.heads as usize);
            (Encoder::Bert(bert), params, vec!["F32".to_string()], h, c.layers, heads, heads, h / heads, c.max_positions, c.vocab_size, "bert")
        }
        "gemma3_text" => {
            if config_json.get("use_bidirectional_attention").and_then(Value::as_bool) != Some(true) {
                return Err("a gemma3_text encoder needs use_bidirectional_attention: true (a causal Gemma 3 is a generation model)".into());
            }
            let config = Config::parse(&config_json.to_string())?;
            if config.quantization.is_some() {
                return Err("quantized encoders are not supported (float weights only)".into());
            }
            let built = dir::build_transformer(&tdir, &config, WeightFormat::Dense, progress, EmbeddingScale::WeightDtype)?;
            let Model::Gemma3(g) = built.model else { return Err("gemma3_text did not build a Gemma 3 model".into()) };
            let c = &config;
            (
                Encoder::Gemma3(g),
                built.parameters,
                built.tensor_types,
                c.hidden as usize,
                c.layers,
                c.heads as usize,
                c.kv_heads as usize,
                c.head_dim as usize,
                c.context_length,
                c.vocab_size,
                "gemma3",
            )
        }
        other => return Err(format!("model_type '{other}' is not supported as an embedding encoder (bert, gemma3_text)")),
    };

    // Limits and the tokenizer.
    let tokenizer_json = std::fs::read_to_string(tdir.join("tokenizer.json")).map_err(|e| format!("tokenizer.json: {e}"))?;
    let max_tokens = match st.get("max_seq_length").and_then(Value::as_u64) {
        Some(n) if n >= 2 => (n as usize).min(positions),
        Some(n) => return Err(format!("sentence_bert_config.json: max_seq_length {n} is too small")),
        None => positions,
    };
    let lowercase = st.get("do_lower_case").and_then(Value::as_bool).unwrap_or(false);
    let tokenizer = Tokenizer::for_embeddings(&tokenizer_json, max_tokens, lowercase).map_err(|e| e.message)?;

    // Pooling, dense modules, normalization.
    let Module::Pooling(p) = &list[1] else { unreachable!("checked by modules()") };
    let pool_json = read_json(&path.join(p), "config.json")?.ok_or_else(|| format!("{p}/config.json is missing"))?;
    let (pooling, include_prompt) = pooling(&pool_json)?;
    if let Some(width) = pool_json.get("word_embedding_dimension").and_then(Value::as_u64) {
        if width as usize != hidden {
            return Err(format!("{p}/config.json: word_embedding_dimension {width} is not the encoder's width {hidden}"));
        }
    }
    let mut width = hidden;
    let mut denses = Vec::new();
    let mut parameters = parameters;
    for m in &list[2..] {
        if let Module::Dense(d) = m {
            let (layer, input, output) = dense(path, d, progress)?;
            if input != width {
                return Err(format!("{d}: in_features {input} does not follow the previous module's {width} outputs"));
            }
            parameters += (input * output) as u64;
            width = output;
            denses.push(layer);
        }
    }
    let normalize = list.last() == Some(&Module::Normalize);

    // Prompts.
    let st_config = read_json(path, "config_sentence_transformers.json")?.unwrap_or(Value::Null);
    let mut prompts: Vec<(String, String)> = match st_config.get("prompts") {
        Some(Value::Object(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|t| (k.clone(), t.to_string()))).collect(),
        _ => Vec::new(),
    };
    prompts.sort();
    let prompt_names: HashMap<&str, &str> = prompts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let default_prompt = st_config.get("default_prompt_name").and_then(Value::as_str).map(str::to_string);
    if let Some(d) = &default_prompt {
        if !prompt_names.contains_key(d.as_str()) {
            return Err(format!("config_sentence_transformers.json: default_prompt_name '{d}' names no prompt"));
        }
    }

    let embedder = Embedder { encoder, pooling, dense: denses, normalize, dimensions: width, max_tokens, include_prompt };
    let info = ModelInfo {
        format: "sentence-transformers".into(),
        quantization: tensor_types.first().map_or_else(|| "f32".into(), |t| t.to_lowercase()),
        architecture: architecture.into(),
        parameters,
        context_length: max_tokens,
        vocab_size,
        layers,
        hidden_size: hidden,
        heads,
        kv_heads,
        head_dim,
        tensor_types,
        kind: ModelKind::Embedding,
        embedding: Some(EmbeddingInfo {
            dimensions: width,
            max_tokens,
            pooling: pooling.name().into(),
            normalized: normalize,
            prompts,
            default_prompt,
        }),
        weight_format: WeightFormat::Dense,
        dtype: mlx_rs::Dtype::Float32,
        has_chat_template: false,
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        warm_up_ms: 0.0,
    };
    Ok(LoadedEmbedder { embedder, tokenizer: Arc::new(tokenizer), info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_must_be_transformer_pooling_dense_normalize() {
        let t = |ty: &str, path: &str| serde_json::json!({"type": format!("sentence_transformers.models.{ty}"), "path": path});
        let ok = serde_json::json!([t("Transformer", ""), t("Pooling", "1_Pooling"), t("Dense", "2_Dense"), t("Normalize", "3_Normalize")]);
        assert_eq!(
            modules(&ok).unwrap(),
            [Module::Transformer("".into()), Module::Pooling("1_Pooling".into()), Module::Dense("2_Dense".into()), Module::Normalize]
        );
        let normalize_first = serde_json::json!([t("Transformer", ""), t("Pooling", "1_Pooling"), t("Normalize", "2"), t("Dense", "3")]);
        assert!(modules(&normalize_first).is_err());
        let escaping = serde_json::json!([t("Transformer", ""), t("Pooling", "../../etc")]);
        assert!(modules(&escaping).unwrap_err().contains("leaves"));
        let unknown = serde_json::json!([t("Transformer", ""), t("Pooling", "1"), t("LayerNorm", "2")]);
        assert!(modules(&unknown).unwrap_err().contains("LayerNorm"));
    }

    #[test]
    fn pooling_reads_the_mode_flags_or_name() {
        let flags = serde_json::json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false});
        assert_eq!(pooling(&flags).unwrap(), (Pooling::Mean, true));
        let named = serde_json::json!({"pooling_mode": "lasttoken", "include_prompt": false});
        assert_eq!(pooling(&named).unwrap(), (Pooling::LastToken, false));
        assert!(pooling(&serde_json::json!({"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true})).is_err());
        assert!(pooling(&serde_json::json!({})).is_err());
    }
}
