//! Loading a GGUF file: a header check of our own (so a truncated or corrupt
//! file is a typed error, not a crash inside native code), then weights and
//! metadata through `mlx_rs::io::GgufFile`.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    path::Path,
    sync::Arc,
    time::Instant,
};

use mlx_rs::{io::GgufFile, Array, Dtype};

use super::{
    linear::{Linear, Projections, WeightFormat},
    llama::{Block, Llama, LlamaConfig},
};
use crate::{
    error::{Error, ErrorCode, Result},
    tokenizer::{ChatTemplate, Tokenizer, TokenizerSpec},
};

/// What callers learn about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    pub parameters: u64,
    pub context_length: usize,
    pub vocab_size: usize,
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
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

fn load_failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ModelLoadFailed, format!("{}: {why}", path.display()))
}

/// Loads a GGUF model. Every failure is `MODEL_LOAD_FAILED` with the reason.
pub fn load_gguf(path: &Path, format: WeightFormat) -> Result<LoadedModel> {
    let started = Instant::now();
    crate::kernels::check_runtime().map_err(|e| load_failed(path, e))?;
    let tensor_types = check_header(path).map_err(|e| load_failed(path, e))?;
    let gguf = GgufFile::load(path).map_err(|e| load_failed(path, e))?;
    let meta = Metadata { gguf: &gguf, path };

    let arch = meta.string("general.architecture")?.unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "mistral" | "smollm") {
        return Err(load_failed(path, format!("architecture '{arch}' is not supported (llama family only)")));
    }
    let spec = TokenizerSpec {
        model: meta.string("tokenizer.ggml.model")?.unwrap_or_default(),
        pre: meta.string("tokenizer.ggml.pre")?.unwrap_or_default(),
        tokens: meta.strings("tokenizer.ggml.tokens")?.unwrap_or_default(),
        merges: meta.strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        token_types: meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default(),
        bos: meta.number("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
        eos: meta.number("tokenizer.ggml.eos_token_id")?.map(|v| v as u32),
        eot: meta.number("tokenizer.ggml.eot_token_id")?.map(|v| v as u32),
        add_bos: meta.number("tokenizer.ggml.add_bos_token")?.is_some_and(|v| v != 0.0),
    };
    let tokenizer = Tokenizer::from_spec(&spec).map_err(|e| load_failed(path, e))?;
    let template_source = meta.string("tokenizer.chat_template")?;
    let template = match &template_source {
        Some(source) => Some(Arc::new(
            ChatTemplate::new(source, tokenizer.bos_text(), tokenizer.eos_text()).map_err(|e| load_failed(path, e))?,
        )),
        None => None,
    };

    let require = |key: &str| -> Result<f64> {
        meta.number(&format!("{arch}.{key}"))?.ok_or_else(|| load_failed(path, format!("metadata {arch}.{key} is missing")))
    };
    let hidden = require("embedding_length")? as i32;
    let heads = require("attention.head_count")? as i32;
    let kv_heads = meta.number(&format!("{arch}.attention.head_count_kv"))?.map_or(heads, |v| v as i32);
    if heads <= 0 || kv_heads <= 0 || hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(load_failed(path, "inconsistent attention head counts"));
    }
    let config = LlamaConfig {
        layers: require("block_count")? as usize,
        hidden,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        rope_base: meta.number(&format!("{arch}.rope.freq_base"))?.unwrap_or(10000.0) as f32,
        rms_eps: meta.number(&format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
        context_length: require("context_length")? as usize,
        vocab_size: tokenizer.vocab_size(),
    };

    let mut tensors = gguf.arrays().map_err(|e| load_failed(path, e))?;
    drop(gguf);
    let tied = !tensors.contains_key("output.weight");
    let mut parameters = 0u64;
    let mut take = |name: &str| -> Result<Linear> {
        let weight = tensors.remove(&format!("{name}.weight")).ok_or_else(|| load_failed(path, format!("tensor {name}.weight is missing")))?;
        let quant = match (tensors.remove(&format!("{name}.scales")), tensors.remove(&format!("{name}.biases"))) {
            (Some(s), Some(b)) => Some((s, b)),
            _ => None,
        };
        parameters += match &quant {
            Some((s, _)) => (s.size() * 32) as u64,
            None => weight.size() as u64,
        };
        Linear::from_parts(weight, quant, format)
    };
    let embed = take("token_embd")?;
    let output = if tied { None } else { Some(take("output")?) };
    let mut blocks = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        let p = format!("blk.{i}");
        blocks.push(Block {
            attn_norm: Array::from_f32(0.0),
            qkv: Projections::new(vec![take(&format!("{p}.attn_q"))?, take(&format!("{p}.attn_k"))?, take(&format!("{p}.attn_v"))?])?,
            wo: take(&format!("{p}.attn_output"))?,
            ffn_norm: Array::from_f32(0.0),
            gate_up: Projections::new(vec![take(&format!("{p}.ffn_gate"))?, take(&format!("{p}.ffn_up"))?])?,
            down: take(&format!("{p}.ffn_down"))?,
        });
    }
    let mut norm = |name: &str| -> Result<Array> {
        let w = tensors.remove(name).ok_or_else(|| load_failed(path, format!("tensor {name} is missing")))?.as_dtype(Dtype::Float32)?;
        w.eval()?;
        Ok(w)
    };
    for (i, block) in blocks.iter_mut().enumerate() {
        block.attn_norm = norm(&format!("blk.{i}.attn_norm.weight"))?;
        block.ffn_norm = norm(&format!("blk.{i}.ffn_norm.weight"))?;
    }
    let final_norm = norm("output_norm.weight")?;
    let info = ModelInfo {
        architecture: arch,
        parameters,
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        layers: config.layers,
        hidden_size: config.hidden as usize,
        heads: config.heads as usize,
        kv_heads: config.kv_heads as usize,
        tensor_types,
        weight_format: format,
        has_chat_template: template.is_some(),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let model = Llama { config, embed, blocks, norm: final_norm, output };
    Ok(LoadedModel { model, tokenizer: Arc::new(tokenizer), template, template_source, info })
}

struct Metadata<'a> {
    gguf: &'a GgufFile,
    path: &'a Path,
}

impl Metadata<'_> {
    fn fail(&self, key: &str, e: impl std::fmt::Display) -> Error {
        load_failed(self.path, format!("metadata {key}: {e}"))
    }
    fn string(&self, key: &str) -> Result<Option<String>> {
        self.gguf.get_metadata_string(key).map_err(|e| self.fail(key, e))
    }
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.gguf.get_metadata_strings(key).map_err(|e| self.fail(key, e))
    }
    fn array(&self, key: &str) -> Result<Option<Array>> {
        self.gguf.get_metadata_array(key).map_err(|e| self.fail(key, e))
    }
    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.array(key)? {
            Some(a) if a.size() == 1 => Ok(Some(a.as_dtype(Dtype::Float32).map_err(|e| self.fail(key, e))?.item_exact::<f32>() as f64)),
            Some(_) => Err(self.fail(key, "expected a single number")),
            None => Ok(None),
        }
    }
    fn ints(&self, key: &str) -> Result<Option<Vec<i32>>> {
        match self.array(key)? {
            Some(a) => {
                let a = a.as_dtype(Dtype::Int32).map_err(|e| self.fail(key, e))?;
                a.eval().map_err(|e| self.fail(key, e))?;
                Ok(Some(a.as_slice::<i32>().to_vec()))
            }
            None => Ok(None),
        }
    }
}

/// GGUF tensor types MLX loads, with (elements per block, bytes per block).
fn tensor_type(code: u32) -> Option<(&'static str, u64, u64)> {
    Some(match code {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        8 => ("Q8_0", 32, 34),
        _ => return None,
    })
}

/// Walks the GGUF header and tensor table and checks that every tensor is of a
/// supported type and lies inside the file. Returns the tensor types present.
fn check_header(path: &Path) -> std::result::Result<Vec<String>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut r = Reader { inner: BufReader::new(file), pos: 0, len };
    if r.bytes(4)? != b"GGUF" {
        return Err("not a GGUF file (bad magic)".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported"));
    }
    let tensors = r.u64()?;
    let kvs = r.u64()?;
    if tensors > 1 << 20 || kvs > 1 << 20 {
        return Err("implausible tensor or metadata count (corrupt header)".into());
    }
    let mut alignment = 32u64;
    for _ in 0..kvs {
        let key = r.string()?;
        let ty = r.u32()?;
        if key == "general.alignment" && ty == 4 {
            alignment = r.u32()? as u64;
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err("invalid general.alignment".into());
            }
        } else {
            r.skip_value(ty)?;
        }
    }
    let mut spans = Vec::with_capacity(tensors as usize);
    let mut types: HashMap<&'static str, ()> = HashMap::new();
    for _ in 0..tensors {
        let name = r.string()?;
        let dims = r.u32()?;
        if dims == 0 || dims > 4 {
            return Err(format!("tensor {name}: {dims} dimensions"));
        }
        let mut elements = 1u64;
        for _ in 0..dims {
            elements = elements.checked_mul(r.u64()?).ok_or("tensor size overflows")?;
        }
        let code = r.u32()?;
        let (ty, block, bytes) = tensor_type(code).ok_or_else(|| format!("tensor {name}: GGUF type {code} is not supported (F32, F16, Q4_0, Q4_1, Q8_0)"))?;
        types.insert(ty, ());
        if elements % block != 0 {
            return Err(format!("tensor {name}: {elements} elements do not fill {ty} blocks"));
        }
        let offset = r.u64()?;
        spans.push((name, offset, elements / block * bytes));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    for (name, offset, size) in spans {
        let end = data_start.checked_add(offset).and_then(|o| o.checked_add(size)).ok_or("tensor offset overflows")?;
        if end > len {
            return Err(format!("tensor {name} ends at byte {end} but the file has {len} (truncated?)"));
        }
    }
    let mut types: Vec<String> = types.into_keys().map(String::from).collect();
    types.sort();
    Ok(types)
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        if self.pos + n > self.len {
            return Err("file ends inside the header (truncated?)".into());
        }
        let mut buf = vec![0; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| format!("reading header: {e}"))?;
        self.pos += n;
        Ok(buf)
    }
    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        if self.pos + n > self.len {
            return Err("file ends inside the header (truncated?)".into());
        }
        self.inner.seek(SeekFrom::Current(n as i64)).map_err(|e| e.to_string())?;
        self.pos += n;
        Ok(())
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()?;
        String::from_utf8(self.bytes(n)?).map_err(|_| "header string is not UTF-8".into())
    }
    fn skip_value(&mut self, ty: u32) -> std::result::Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.u64()?;
                self.skip(n)
            }
            9 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                match inner {
                    0 | 1 | 7 => self.skip(n),
                    2 | 3 => self.skip(n.checked_mul(2).ok_or("array too large")?),
                    4..=6 => self.skip(n.checked_mul(4).ok_or("array too large")?),
                    10..=12 => self.skip(n.checked_mul(8).ok_or("array too large")?),
                    8 => (0..n).try_for_each(|_| {
                        let len = self.u64()?;
                        self.skip(len)
                    }),
                    _ => Err(format!("metadata array of unknown type {inner}")),
                }
            }
            _ => Err(format!("metadata value of unknown type {ty}")),
        }
    }
}
