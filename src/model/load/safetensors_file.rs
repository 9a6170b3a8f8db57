//! Safetensors shards of a model directory, read with the `safetensors`
//! crate (which checks the header's length, that offsets are in order,
//! contiguous, inside the file and match each tensor's dtype and shape).
//! Everything a caller takes out is checked again here against the shape the
//! model's config implies, before anything is converted or allocated.

use std::{collections::HashMap, fs::File, io::Read, path::Path};

use half::{bf16, f16};
use safetensors::{tensor::Metadata, Dtype, SafeTensors};

/// The header's length word plus at most this much JSON.
const MAX_HEADER: u64 = 100_000_000;

/// One shard: its bytes and its parsed header.
pub struct Shard {
    pub name: String,
    bytes: Vec<u8>,
    /// Where tensor data starts in `bytes`.
    data_start: usize,
    metadata: Metadata,
}

/// A tensor as the header gives it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl Shard {
    /// Reads and checks the whole shard (the allocation is the file's size).
    pub fn read(path: &Path) -> Result<Shard, String> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
        Shard::parse(name, bytes)
    }

    pub fn parse(name: String, bytes: Vec<u8>) -> Result<Shard, String> {
        let (header, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("{name}: not a valid safetensors file: {e}"))?;
        Ok(Shard { name, data_start: 8 + header, bytes, metadata })
    }

    pub fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    pub fn get(&self, tensor: &str) -> Option<View<'_>> {
        let info = self.metadata.info(tensor)?;
        let (start, end) = info.data_offsets;
        // `read_metadata` checked that the offsets are in order and end with the file.
        let data = self.bytes.get(self.data_start + start..self.data_start + end)?;
        Some(View { dtype: info.dtype, shape: &info.shape, data })
    }
}

/// The size of a shard and its header's bytes (for fingerprints), reading at
/// most the header.
pub fn header(path: &Path) -> Result<(u64, Vec<u8>), String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    let mut word = [0u8; 8];
    file.read_exact(&mut word).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = u64::from_le_bytes(word);
    if n > MAX_HEADER || n > size - 8 {
        return Err(format!("{}: safetensors header length {n} is out of range", path.display()));
    }
    let mut header = Vec::with_capacity(n as usize);
    file.take(n).read_to_end(&mut header).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((size, header))
}

impl View<'_> {
    /// Float elements (F32, F16, BF16) as f32.
    pub fn floats(&self, name: &str) -> Result<Vec<f32>, String> {
        let d = self.data;
        Ok(match self.dtype {
            Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(format!("tensor {name} has dtype {other:?}, expected F32, F16 or BF16")),
        })
    }

    /// U32 elements (MLX's packed quantized codes).
    pub fn words(&self, name: &str) -> Result<Vec<u32>, String> {
        match self.dtype {
            Dtype::U32 => Ok(self.data.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            other => Err(format!("tensor {name} has dtype {other:?}, expected U32 (packed codes)")),
        }
    }

    /// Checks the shape against the expected one.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<(), String> {
        if self.shape != shape {
            return Err(format!("tensor {name} has shape {:?}, expected {shape:?}", self.shape));
        }
        Ok(())
    }
}

/// The shard holding each tensor, from `model.safetensors.index.json`'s
/// `weight_map`. Shard names must be plain file names in the directory.
pub fn index(json: &str) -> Result<HashMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("model.safetensors.index.json: {e}"))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or("model.safetensors.index.json has no weight_map object")?;
    let mut out = HashMap::with_capacity(map.len());
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| format!("model.safetensors.index.json: the shard of {tensor} is not a string"))?;
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') || !file.ends_with(".safetensors") {
            return Err(format!("model.safetensors.index.json: shard name '{file}' is not a .safetensors file of the directory"));
        }
        out.insert(tensor.clone(), file.to_string());
    }
    Ok(out)
}
