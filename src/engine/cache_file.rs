//! Prompt caches on disk: the keys and values of a prompt as a safetensors
//! file, with what it takes to refuse it where it does not belong.
//!
//! Metadata: a format name and version, the fingerprint of the model that
//! made it (a digest of the GGUF header: architecture, hyper-parameters,
//! vocabulary, tensor layout), a digest of its vocabulary, the model's
//! cache geometry, and a SHA-256 of
//! the token ids and every tensor's bytes. Tensors: `tokens` (U32 [n]) and
//! `layers.{i}.keys` / `layers.{i}.values` ([kv_heads, n, head_dim]).
//!
//! Writing goes to a temporary file in the same directory, which is synced
//! and renamed over the target, so a crash leaves the old file or the new
//! one, never half of one. Reading checks everything before building an
//! array: a file of another model, another version, a truncated or altered
//! one is `CACHE_INVALID`, and nothing larger than the caller's bound is read.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use mlx_rs::{Array, Dtype};
use safetensors::{tensor::TensorView, Dtype as StDtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::prefix::LayerKv;
use crate::{
    error::{Error, ErrorCode, Result},
    model::load::hex,
};

const FORMAT: &str = "mlx-serving-prompt-cache";
const VERSION: &str = "1";

/// What a cache file must match to be used with a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    /// Hex SHA-256 of the model file's header.
    pub fingerprint: String,
    /// Hex SHA-256 of the vocabulary (every token's bytes, in id order).
    pub tokenizer: String,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context_length: usize,
    pub vocab_size: usize,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::CacheInvalid, format!("cache file {}: {why}", path.display()))
}

fn write_failed(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::CacheWriteFailed, format!("cannot write cache file {}: {why}", path.display()))
}

fn dtype_of(a: &Array) -> Result<StDtype> {
    Ok(match a.dtype() {
        Dtype::Float32 => StDtype::F32,
        Dtype::Float16 => StDtype::F16,
        Dtype::Bfloat16 => StDtype::BF16,
        other => return Err(Error::internal(format!("a KV cache of dtype {other:?} cannot be saved"))),
    })
}

/// The little-endian bytes of an evaluated, row-contiguous array.
fn bytes_of(a: &Array) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = match a.dtype() {
        Dtype::Float32 => a.try_as_slice::<f32>().map_err(|e| Error::internal(e.to_string()))?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::Float16 => a.try_as_slice::<half::f16>().map_err(|e| Error::internal(e.to_string()))?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::Bfloat16 => a.try_as_slice::<half::bf16>().map_err(|e| Error::internal(e.to_string()))?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        other => return Err(Error::internal(format!("a KV cache of dtype {other:?} cannot be saved"))),
    };
    Ok(bytes)
}

fn array_of(view: &TensorView<'_>, shape: &[i32]) -> Array {
    let data = view.data();
    match view.dtype() {
        StDtype::F16 => {
            let v: Vec<half::f16> = data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect();
            Array::from_slice(&v, shape)
        }
        StDtype::BF16 => {
            let v: Vec<half::bf16> = data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]])).collect();
            Array::from_slice(&v, shape)
        }
        _ => {
            let v: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Array::from_slice(&v, shape)
        }
    }
}

fn digest<'a>(tokens: &[u8], tensors: impl Iterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    h.update(tokens);
    for t in tensors {
        h.update(t);
    }
    hex(&h.finalize())
}

fn layer_names(i: usize) -> (String, String) {
    (format!("layers.{i}.keys"), format!("layers.{i}.values"))
}

/// Writes `tokens` and their keys and values (per layer [1, kv_heads, n,
/// head_dim], evaluated) to `path`, replacing it atomically. Returns the
/// file's size.
pub fn save(path: &Path, model: &ModelIdentity, tokens: &[u32], layers: &LayerKv) -> Result<u64> {
    let n = tokens.len();
    let token_bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut tensors: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(2 * layers.len() + 1);
    for (i, (k, v)) in layers.iter().enumerate() {
        let (kn, vn) = layer_names(i);
        for (name, a) in [(kn, k), (vn, v)] {
            let shape = vec![model.kv_heads, n, model.head_dim];
            if a.shape() != [1, model.kv_heads as i32, n as i32, model.head_dim as i32] {
                return Err(Error::internal(format!("{name} has shape {:?}, expected [1, {shape:?}]", a.shape())));
            }
            tensors.push((name, dtype_of(a)?, shape, bytes_of(a)?));
        }
    }
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("version".to_string(), VERSION.to_string());
    metadata.insert("model_fingerprint".to_string(), model.fingerprint.clone());
    metadata.insert("tokenizer".to_string(), model.tokenizer.clone());
    metadata.insert("layers".to_string(), model.layers.to_string());
    metadata.insert("kv_heads".to_string(), model.kv_heads.to_string());
    metadata.insert("head_dim".to_string(), model.head_dim.to_string());
    metadata.insert("tokens".to_string(), n.to_string());
    metadata.insert("sha256".to_string(), digest(&token_bytes, tensors.iter().map(|t| t.3.as_slice())));
    let mut views = Vec::with_capacity(tensors.len() + 1);
    views.push(("tokens".to_string(), TensorView::new(StDtype::U32, vec![n], &token_bytes).map_err(|e| Error::internal(e.to_string()))?));
    for (name, dtype, shape, data) in &tensors {
        views.push((name.clone(), TensorView::new(*dtype, shape.clone(), data).map_err(|e| Error::internal(e.to_string()))?));
    }
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::internal(e.to_string()))?;
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it, renames it
/// over `path` and syncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| write_failed(path, "the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.{}-{}.tmp", name.to_string_lossy(), std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_failed(path, e)
    })
}

/// Reads and checks a cache file for `model`; refuses files over `max_bytes`.
pub fn load(path: &Path, model: &ModelIdentity, max_bytes: u64) -> Result<(Vec<u32>, LayerKv)> {
    let file = File::open(path).map_err(|e| invalid(path, format!("cannot open: {e}")))?;
    let size = file.metadata().map_err(|e| invalid(path, e))?.len();
    if size > max_bytes {
        return Err(invalid(path, format!("{size} bytes is more than the prefix cache may hold ({max_bytes}; see prefixCacheMb)")));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| invalid(path, format!("cannot read: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(path, format!("not a valid safetensors file (truncated or corrupt): {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| meta.get(key).map(String::as_str).ok_or_else(|| invalid(path, format!("metadata '{key}' is missing")));
    if field("format")? != FORMAT {
        return Err(invalid(path, format!("not a prompt cache of this library (format '{}')", field("format")?)));
    }
    if field("version")? != VERSION {
        return Err(invalid(path, format!("format version {} is not supported (this build reads version {VERSION})", field("version")?)));
    }
    if field("model_fingerprint")? != model.fingerprint {
        return Err(invalid(path, "it was made by another model (fingerprints differ)"));
    }
    if field("tokenizer")? != model.tokenizer {
        return Err(invalid(path, "it was made with another tokenizer (vocabulary digests differ)"));
    }
    let geometry = [("layers", model.layers), ("kv_heads", model.kv_heads), ("head_dim", model.head_dim)];
    for (key, want) in geometry {
        if field(key)? != want.to_string() {
            return Err(invalid(path, format!("{key} = {} but the model has {want}", field(key)?)));
        }
    }
    let tokens_view = st.tensor("tokens").map_err(|e| invalid(path, e))?;
    if tokens_view.dtype() != StDtype::U32 || tokens_view.shape().len() != 1 {
        return Err(invalid(path, "tensor 'tokens' must be U32 of one dimension"));
    }
    let n = tokens_view.shape()[0];
    if n == 0 || n >= model.context_length || field("tokens")? != n.to_string() {
        return Err(invalid(path, format!("holds {n} tokens; expected 1..{} and as many as its metadata says", model.context_length)));
    }
    let tokens: Vec<u32> = tokens_view.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let want = [model.kv_heads, n, model.head_dim];
    let mut views = Vec::with_capacity(2 * model.layers);
    for i in 0..model.layers {
        let (kn, vn) = layer_names(i);
        for name in [kn, vn] {
            let view = st.tensor(&name).map_err(|e| invalid(path, e))?;
            if !matches!(view.dtype(), StDtype::F32 | StDtype::F16 | StDtype::BF16) || view.shape() != want {
                return Err(invalid(path, format!("{name} is {:?} {:?}; expected a float tensor {want:?}", view.dtype(), view.shape())));
            }
            views.push(view);
        }
    }
    if st.len() != views.len() + 1 {
        return Err(invalid(path, format!("holds {} tensors; expected {}", st.len(), views.len() + 1)));
    }
    if digest(tokens_view.data(), views.iter().map(|v| v.data())) != field("sha256")? {
        return Err(invalid(path, "its contents do not match their checksum (altered or damaged)"));
    }
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= model.vocab_size) {
        return Err(invalid(path, format!("token id {t} is outside the vocabulary")));
    }
    let shape = [1, model.kv_heads as i32, n as i32, model.head_dim as i32];
    let layers = views.chunks_exact(2).map(|kv| (array_of(&kv[0], &shape), array_of(&kv[1], &shape))).collect();
    Ok((tokens, layers))
}

/// The digest of a vocabulary: each token's length and bytes, in id order.
pub fn vocabulary_digest(tokenizer: &crate::tokenizer::Tokenizer) -> String {
    let mut h = Sha256::new();
    for id in 0..tokenizer.vocab_size() as u32 {
        let bytes = tokenizer.token_bytes(id).unwrap_or(&[]);
        h.update((bytes.len() as u32).to_le_bytes());
        h.update(bytes);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ModelIdentity {
        ModelIdentity { fingerprint: "ab".repeat(32), tokenizer: "ef".repeat(32), layers: 2, kv_heads: 2, head_dim: 4, context_length: 4096, vocab_size: 1000 }
    }

    fn layers(n: i32) -> LayerKv {
        (0..2)
            .map(|l| {
                let k = Array::from_iter((0..2 * n * 4).map(|i| (i + 100 * l) as f32), &[1, 2, n, 4]);
                let v = Array::from_iter((0..2 * n * 4).map(|i| -(i + 100 * l) as f32), &[1, 2, n, 4]);
                (k, v)
            })
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlx-serving-cache-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trips_and_refuses_what_does_not_belong() {
        let path = temp("a.safetensors");
        let tokens: Vec<u32> = (0..5).collect();
        let size = save(&path, &identity(), &tokens, &layers(5)).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let (back, kv) = load(&path, &identity(), 1 << 20).unwrap();
        assert_eq!(back, tokens);
        assert_eq!(kv[1].1.as_slice::<f32>(), layers(5)[1].1.as_slice::<f32>());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let code = |r: Result<(Vec<u32>, LayerKv)>| r.err().map(|e| (e.code, e.message));
        let other = ModelIdentity { fingerprint: "cd".repeat(32), ..identity() };
        let (c, m) = code(load(&path, &other, 1 << 20)).unwrap();
        assert_eq!(c, ErrorCode::CacheInvalid);
        assert!(m.contains("another model"), "{m}");
        let other = ModelIdentity { tokenizer: "cd".repeat(32), ..identity() };
        let (_, m) = code(load(&path, &other, 1 << 20)).unwrap();
        assert!(m.contains("another tokenizer"), "{m}");
        let other = ModelIdentity { kv_heads: 3, ..identity() };
        let (_, m) = code(load(&path, &other, 1 << 20)).unwrap();
        assert!(m.contains("kv_heads"), "{m}");
        let (_, m) = code(load(&path, &identity(), 100)).unwrap();
        assert!(m.contains("more than the prefix cache may hold"), "{m}");

        let original = std::fs::read(&path).unwrap();
        let altered = temp("altered.safetensors");
        let mut bytes = original.clone();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(&altered, &bytes).unwrap();
        let (c, m) = code(load(&altered, &identity(), 1 << 20)).unwrap();
        assert_eq!(c, ErrorCode::CacheInvalid);
        assert!(m.contains("checksum"), "{m}");

        for cut in [0, 7, 8, 100, original.len() - 1] {
            std::fs::write(&altered, &original[..cut]).unwrap();
            let (c, _) = code(load(&altered, &identity(), 1 << 20)).unwrap();
            assert_eq!(c, ErrorCode::CacheInvalid, "truncated to {cut} bytes");
        }
        let missing = code(load(&temp("missing.safetensors"), &identity(), 1 << 20)).unwrap();
        assert_eq!(missing.0, ErrorCode::CacheInvalid);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_path_and_leaves_nothing() {
        let e = save(Path::new("/nonexistent-dir/x.safetensors"), &identity(), &[1, 2], &layers(2)).unwrap_err();
        assert_eq!(e.code, ErrorCode::CacheWriteFailed);
        assert!(e.message.contains("/nonexistent-dir/x.safetensors"));
    }
}
