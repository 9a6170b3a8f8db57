//! `EngineCore`: the native engine as JS sees it. The friendly `Engine`
//! class in `lib/index.js` wraps it (AbortSignal, async iteration, errors).

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::{
    error::{to_js, Code, ErrorInfo},
    options::{tool_use, validate_model_id, EmbedInput, EngineOptionsInput, GenerateInput, MessageInput, SpeculativeInput, ToolInput},
    stream::TokenStream,
};
use crate::{
    engine::Engine,
    error::Error,
    model::{ModelInfo, WeightFormat},
    tokenizer::ChatMessage,
};

const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

#[napi(object)]
pub struct ModelInfoJs {
    pub id: String,
    pub path: String,
    /// The file format: "gguf".
    pub format: String,
    /// The quantization as llama.cpp names it (e.g. "Q4_K_M"), else the block
    /// type holding most of the weights.
    pub quantization: String,
    pub architecture: String,
    pub parameters: f64,
    pub context_length: u32,
    pub vocab_size: u32,
    pub layers: u32,
    pub hidden_size: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub tensor_types: Vec<String>,
    /// "dense" (dequantized at load) or "quantized".
    pub weight_format: String,
    /// The dtype the model computes in: "float32" on the CPU, "float16" on a GPU.
    pub dtype: String,
    pub has_chat_template: bool,
    /// Loading in all; on a GPU it includes `warmUpMs`.
    pub load_ms: f64,
    /// Compiling the GPU's kernels at load (0 on the CPU).
    pub warm_up_ms: f64,
    /// Where the model runs: "cpu", "cuda" or "metal".
    pub backend: String,
    /// "generation" or "embedding".
    pub kind: String,
    /// An embedding model's vector width.
    pub dimensions: Option<u32>,
    /// An embedding model's longest input in tokens (longer ones are truncated).
    pub max_tokens: Option<u32>,
    /// An embedding model's pooling ("mean", "cls", "max", "mean_sqrt_len", "weighted_mean", "last_token").
    pub pooling: Option<String>,
    /// Whether an embedding model's vectors are L2-normalized by default.
    pub normalized: Option<bool>,
    /// An embedding model's named prompts.
    pub prompts: Option<Vec<PromptJs>>,
    /// The prompt an embedding model uses when a call names none.
    pub default_prompt: Option<String>,
}

/// A named prompt of an embedding model.
#[napi(object)]
pub struct PromptJs {
    pub name: String,
    pub text: String,
}

fn info_js(id: &str, path: &str, i: ModelInfo) -> ModelInfoJs {
    let e = i.embedding.clone();
    ModelInfoJs {
        kind: i.kind.name().into(),
        dimensions: e.as_ref().map(|e| e.dimensions as u32),
        max_tokens: e.as_ref().map(|e| e.max_tokens as u32),
        pooling: e.as_ref().map(|e| e.pooling.clone()),
        normalized: e.as_ref().map(|e| e.normalized),
        prompts: e.as_ref().map(|e| e.prompts.iter().map(|(name, text)| PromptJs { name: name.clone(), text: text.clone() }).collect()),
        default_prompt: e.and_then(|e| e.default_prompt),
        id: id.to_string(),
        path: path.to_string(),
        format: i.format,
        quantization: i.quantization,
        architecture: i.architecture,
        parameters: i.parameters as f64,
        context_length: i.context_length as u32,
        vocab_size: i.vocab_size as u32,
        layers: i.layers as u32,
        hidden_size: i.hidden_size as u32,
        heads: i.heads as u32,
        kv_heads: i.kv_heads as u32,
        tensor_types: i.tensor_types,
        weight_format: match i.weight_format {
            WeightFormat::Dense => "dense".into(),
            WeightFormat::Quantized => "quantized".into(),
        },
        dtype: crate::device::dtype_name(i.dtype).into(),
        has_chat_template: i.has_chat_template,
        load_ms: i.load_ms,
        warm_up_ms: i.warm_up_ms,
        backend: crate::device::backend().name().into(),
    }
}

/// The outcome of an async call: `error` set, or `info` (when there is one).
#[napi(object)]
pub struct Outcome {
    pub info: Option<ModelInfoJs>,
    pub error: Option<ErrorInfo>,
}

impl Outcome {
    fn err(e: Error) -> Self {
        Outcome { info: None, error: Some(e.into()) }
    }
}

#[napi(object)]
pub struct ModelStatsJs {
    pub id: String,
    pub state: String,
    pub active_requests: u32,
    pub queued_requests: u32,
    pub restarts: u32,
    pub abandoned_workers: u32,
    pub tokens_generated: f64,
    pub tokens_per_second: f64,
    pub last_heartbeat_ms_ago: f64,
    /// How much of its weights the current worker's load has read (complete once ready).
    pub load_progress: Option<LoadProgressJs>,
    /// Keys and values kept for prefix reuse by the current worker.
    pub prefix_cache: PrefixCacheStatsJs,
    /// Token masks computed for constrained rows.
    pub constraint_masks: ConstraintMasksJs,
    /// Speculative decoding since the model loaded.
    pub speculative: SpeculativeStatsJs,
}

#[napi(object)]
pub struct ConstraintMasksJs {
    /// Masks computed (one per constrained row and decode step).
    pub masks: f64,
    /// Worker time they took, in all.
    pub total_ms: f64,
}

#[napi(object)]
pub struct SpeculativeStatsJs {
    /// Tokens guessed (looked up in the text or drafted by a draft model) and verified.
    pub drafted_tokens: f64,
    /// Of those, tokens the model agreed with.
    pub accepted_tokens: f64,
    /// `acceptedTokens / draftedTokens` (0 before any guess).
    pub acceptance_rate: f64,
}

#[napi(object)]
pub struct PrefixCacheStatsJs {
    /// Sequences held.
    pub entries: u32,
    /// Tokens held, over all entries.
    pub cached_tokens: f64,
    pub bytes: f64,
    /// Prompts that started from a cached prefix.
    pub hits: f64,
    /// Prompts that found no cached prefix (of at least 32 tokens).
    pub misses: f64,
    /// Prompt tokens not prefilled thanks to hits.
    pub tokens_reused: f64,
    /// Entries dropped to stay within the budget.
    pub evictions: f64,
}

#[napi(object)]
pub struct LoadProgressJs {
    pub bytes_read: f64,
    pub total_bytes: f64,
}

#[napi(object)]
pub struct MemoryStatsJs {
    pub active_bytes: f64,
    pub peak_bytes: f64,
    pub cache_bytes: f64,
}

/// The device the models run on.
#[napi(object)]
pub struct DeviceStatsJs {
    /// "cpu", "cuda" or "metal".
    pub backend: String,
    /// The GPU's name (e.g. "NVIDIA H100 80GB HBM3"); "cpu" on the CPU.
    pub name: String,
    /// The GPU's memory in bytes (0 on the CPU).
    pub total_bytes: f64,
}

#[napi(object)]
pub struct EngineStatsJs {
    pub models: Vec<ModelStatsJs>,
    /// MLX's allocator: device memory on a GPU, host memory on the CPU.
    pub memory: MemoryStatsJs,
    pub device: DeviceStatsJs,
}

fn drain(ms: Option<f64>) -> Result<Duration, Error> {
    match ms {
        None => Ok(DEFAULT_DRAIN),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Duration::from_secs_f64(v / 1000.0)),
        Some(v) => Err(Error::invalid("drainTimeoutMs", format!("must be a non-negative number, got {v}"))),
    }
}

/// Turns on `tracing` output (stderr) when `MLX_SERVING_LOG` is set, e.g.
/// `MLX_SERVING_LOG=mlx_serving=debug`.
fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("MLX_SERVING_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
    });
}

/// The native engine. Use the `Engine` class from the package instead.
#[napi]
pub struct EngineCore {
    engine: Arc<Engine>,
}

#[napi]
impl EngineCore {
    #[napi(constructor)]
    pub fn new(options: Option<EngineOptionsInput>) -> napi::Result<Self, Code> {
        init_tracing();
        let options = match options {
            Some(o) => o.validate().map_err(to_js)?,
            None => Default::default(),
        };
        Ok(EngineCore { engine: Arc::new(Engine::new(options).map_err(to_js)?) })
    }

    /// Registers a GGUF model under `id` and starts loading it (returns at once).
    #[napi]
    pub fn start_load(&self, id: String, path: String) -> napi::Result<(), Code> {
        validate_model_id("id", &id).map_err(to_js)?;
        if path.is_empty() {
            return Err(to_js(Error::invalid("path", "must be a non-empty string")));
        }
        self.engine.start_load(&id, &PathBuf::from(path)).map_err(to_js)
    }

    /// Sets how model `id`'s requests decode speculatively unless they say
    /// (`{ type: 'none' }`: plainly).
    #[napi]
    pub fn set_speculative_default(&self, id: String, speculative: SpeculativeInput) -> napi::Result<(), Code> {
        let speculative = speculative.validate().map_err(to_js)?;
        self.engine.set_speculative_default(&id, speculative).map_err(to_js)
    }

    /// Resolves once model `id` is ready, with its info, or with the load error.
    #[napi]
    pub async fn wait_ready(&self, id: String) -> Outcome {
        let engine = self.engine.clone();
        match engine.wait_ready(&id).await {
            Ok(info) => {
                let path = engine.model_path(&id).map(|p| p.display().to_string()).unwrap_or_default();
                Outcome { info: Some(info_js(&id, &path, info)), error: None }
            }
            Err(e) => Outcome::err(e),
        }
    }

    #[napi]
    pub fn model_info(&self, id: String) -> napi::Result<ModelInfoJs, Code> {
        let info = self.engine.model_info(&id).map_err(to_js)?;
        let path = self.engine.model_path(&id).map_err(to_js)?;
        Ok(info_js(&id, &path.display().to_string(), info))
    }

    /// Starts a generation; errors found before any work are thrown here.
    #[napi]
    pub fn generate(&self, input: GenerateInput) -> napi::Result<TokenStream, Code> {
        let params = input.validate().map_err(to_js)?;
        let (request, events) = self.engine.generate(params).map_err(to_js)?;
        Ok(TokenStream::new(request, events))
    }

    /// Starts an `embed` call; errors found before any work are thrown here.
    /// Its stream ends with one "embeddings" event (or an error).
    #[napi]
    pub fn embed(&self, input: EmbedInput) -> napi::Result<TokenStream, Code> {
        let params = input.validate().map_err(to_js)?;
        let (request, events) = self.engine.generate(params).map_err(to_js)?;
        Ok(TokenStream::new(request, events))
    }

    #[napi]
    pub fn tokenize(&self, model: String, text: String) -> napi::Result<Vec<u32>, Code> {
        self.engine.tokenize(&model, &text).map_err(to_js)
    }

    #[napi]
    pub fn detokenize(&self, model: String, ids: Vec<u32>) -> napi::Result<String, Code> {
        self.engine.detokenize(&model, &ids).map_err(to_js)
    }

    #[napi]
    pub fn apply_chat_template(&self, model: String, messages: Vec<MessageInput>, tools: Option<Vec<ToolInput>>) -> napi::Result<String, Code> {
        let messages: Vec<ChatMessage> = messages.into_iter().enumerate().map(|(i, m)| m.validate(i)).collect::<Result<_, _>>().map_err(to_js)?;
        let tools = tool_use(tools, None, None, None).map_err(to_js)?;
        self.engine.apply_chat_template(&model, &messages, tools.as_ref()).map_err(to_js)
    }

    /// Drains and unloads a model, then frees its memory.
    #[napi]
    pub async fn unload_model(&self, id: String, drain_timeout_ms: Option<f64>) -> Outcome {
        let engine = self.engine.clone();
        let result = match drain(drain_timeout_ms) {
            Ok(d) => engine.unload_model(&id, d).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Outcome { info: None, error: None },
            Err(e) => Outcome::err(e),
        }
    }

    /// Refuses new work from now on (the synchronous start of `shutdown`).
    #[napi]
    pub fn refuse_new_work(&self) {
        self.engine.refuse_new_work();
    }

    /// Graceful shutdown; see `Engine.shutdown` in the package docs.
    #[napi]
    pub async fn shutdown(&self, drain_timeout_ms: Option<f64>) -> Outcome {
        let engine = self.engine.clone();
        match drain(drain_timeout_ms) {
            Ok(d) => {
                engine.shutdown(d).await;
                Outcome { info: None, error: None }
            }
            Err(e) => Outcome::err(e),
        }
    }

    #[napi]
    pub fn stats(&self) -> EngineStatsJs {
        let s = self.engine.stats();
        EngineStatsJs {
            models: s
                .models
                .into_iter()
                .map(|m| ModelStatsJs {
                    id: m.id,
                    state: m.state,
                    active_requests: m.active_requests as u32,
                    queued_requests: m.queued_requests as u32,
                    restarts: m.restarts,
                    abandoned_workers: m.abandoned_workers,
                    tokens_generated: m.tokens_generated as f64,
                    tokens_per_second: m.tokens_per_second,
                    last_heartbeat_ms_ago: m.last_heartbeat_ms_ago as f64,
                    load_progress: m.load_progress.map(|(read, total)| LoadProgressJs { bytes_read: read as f64, total_bytes: total as f64 }),
                    constraint_masks: ConstraintMasksJs { masks: m.masks.masks as f64, total_ms: m.masks.total_ms },
                    prefix_cache: PrefixCacheStatsJs {
                        entries: m.prefix_cache.entries as u32,
                        cached_tokens: m.prefix_cache.cached_tokens as f64,
                        bytes: m.prefix_cache.bytes as f64,
                        hits: m.prefix_cache.hits as f64,
                        misses: m.prefix_cache.misses as f64,
                        tokens_reused: m.prefix_cache.tokens_reused as f64,
                        evictions: m.prefix_cache.evictions as f64,
                    },
                    speculative: SpeculativeStatsJs {
                        drafted_tokens: m.drafted_tokens as f64,
                        accepted_tokens: m.accepted_tokens as f64,
                        acceptance_rate: if m.drafted_tokens > 0 { m.accepted_tokens as f64 / m.drafted_tokens as f64 } else { 0.0 },
                    },
                })
                .collect(),
            memory: MemoryStatsJs {
                active_bytes: s.memory.active_bytes as f64,
                peak_bytes: s.memory.peak_bytes as f64,
                cache_bytes: s.memory.cache_bytes as f64,
            },
            device: DeviceStatsJs {
                backend: s.device.backend.name().into(),
                name: s.device.name,
                total_bytes: s.device.total_bytes as f64,
            },
        }
    }
}
