//! Our own GGUF reader. Model files come from the internet, so every count,
//! length, offset, shape and size is checked against the file before
//! anything is allocated for it, with overflow-checked arithmetic: a hostile
//! header is an error naming what is wrong, never a panic, a hang or an
//! allocation larger than the file.
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor
//! count u64, metadata count u64; the metadata (key string, type u32, value);
//! the tensor infos (name, dimension count u32, dimensions u64 innermost
//! first, type u32, offset u64 relative to the data section); padding to
//! `general.alignment` (default 32); the tensor data.
//!
//! Tensor data is read with positioned reads rather than a memory map: a
//! file truncated while mapped would kill the process with SIGBUS, while a
//! short read is an ordinary error.

use std::{collections::HashMap, fs::File, path::Path};

use super::blocks::{self, Affine, BlockType};

/// Why a file cannot be read; the loader turns it into `MODEL_LOAD_FAILED`.
pub type Why = String;

/// Bytes a reader can fetch from any position: a file, or memory in tests.
pub trait Source {
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the source ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(self, &mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(ArrayValue),
}

/// A metadata array, stored by element type (so a long array of bytes costs
/// bytes, not one enum per element).
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayValue {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<ArrayValue>),
}

impl Value {
    /// A scalar number (integers, floats and booleans), as f64.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::U8(v) => v as f64,
            Value::I8(v) => v as f64,
            Value::U16(v) => v as f64,
            Value::I16(v) => v as f64,
            Value::U32(v) => v as f64,
            Value::I32(v) => v as f64,
            Value::U64(v) => v as f64,
            Value::I64(v) => v as f64,
            Value::F32(v) => v as f64,
            Value::F64(v) => v,
            Value::Bool(v) => v as u8 as f64,
            Value::String(_) | Value::Array(_) => return None,
        })
    }
}

impl ArrayValue {
    /// Integer elements as i64 (`None` for floats, strings and nested arrays).
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        fn all<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            ArrayValue::U8(v) => all(v),
            ArrayValue::I8(v) => all(v),
            ArrayValue::U16(v) => all(v),
            ArrayValue::I16(v) => all(v),
            ArrayValue::U32(v) => all(v),
            ArrayValue::I32(v) => all(v),
            ArrayValue::I64(v) => v.clone(),
            ArrayValue::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<_>>()?,
            ArrayValue::Bool(v) => v.iter().map(|&b| b as i64).collect(),
            _ => return None,
        })
    }

    pub fn len(&self) -> usize {
        match self {
            ArrayValue::U8(v) => v.len(),
            ArrayValue::I8(v) => v.len(),
            ArrayValue::U16(v) => v.len(),
            ArrayValue::I16(v) => v.len(),
            ArrayValue::U32(v) => v.len(),
            ArrayValue::I32(v) => v.len(),
            ArrayValue::U64(v) => v.len(),
            ArrayValue::I64(v) => v.len(),
            ArrayValue::F32(v) => v.len(),
            ArrayValue::F64(v) => v.len(),
            ArrayValue::Bool(v) => v.len(),
            ArrayValue::String(v) => v.len(),
            ArrayValue::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a tensor lies and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (row length) first.
    pub dims: Vec<u64>,
    pub ty: BlockType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
    pub elements: u64,
}

impl TensorInfo {
    /// The shape as MLX orders it (outermost first), e.g. `[rows, cols]`.
    /// Every dimension fits an i32 (checked when the header is read).
    pub fn shape(&self) -> Vec<i32> {
        self.dims.iter().rev().map(|&d| d as i32).collect()
    }

    /// Row length (the innermost dimension).
    pub fn cols(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (every dimension but the innermost).
    pub fn rows(&self) -> u64 {
        self.elements / self.dims[0]
    }
}

/// GGUF versions we read.
const VERSIONS: std::ops::RangeInclusive<u32> = 2..=3;
/// GGML's limit on tensor dimensions.
const MAX_DIMS: u32 = 4;
/// Nesting depth of metadata arrays (llama.cpp writes none nested).
const MAX_ARRAY_DEPTH: u32 = 3;
/// Longest key or tensor name accepted.
const MAX_NAME: u64 = 65_535;
/// Smallest encodings, used to bound counts by the bytes left before
/// anything is allocated: a key/value pair (key length, 1-byte key, type,
/// 1-byte value) and a tensor info (name length, 1-byte name, dimension
/// count, one dimension, type, offset).
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// A parsed GGUF file: metadata and tensor infos in memory, tensor data read on demand.
pub struct Gguf<S: Source = File> {
    source: S,
    /// Where reads are counted, when someone watches the load.
    progress: Option<std::sync::Arc<super::LoadProgress>>,
    pub version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_start: u64,
}

impl Gguf<File> {
    /// Opens and parses `path`.
    pub fn open(path: &Path) -> Result<Self, Why> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("cannot open: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        Gguf::parse(file)
    }
}

impl<S: Source> Gguf<S> {
    /// Parses the header of `source`, checking every tensor against its size.
    pub fn parse(source: S) -> Result<Self, Why> {
        let len = source.len();
        let mut r = Cursor::new(&source, len);
        if r.take(4)? != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !VERSIONS.contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if kv_count > r.left() / MIN_KV_BYTES {
            return Err(format!("header claims {kv_count} metadata entries, more than the file can hold (corrupt or truncated)"));
        }
        let mut metadata = HashMap::with_capacity(prealloc(kv_count));
        for _ in 0..kv_count {
            let key = r.name("metadata key")?;
            let ty = r.u32()?;
            let value = r.value(ty, 0).map_err(|e| format!("metadata {key}: {e}"))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(format!("metadata {key} appears twice"));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
            Some(v) => return Err(format!("general.alignment must be a power of two (u32), not {v:?}")),
        };

        if tensor_count > r.left() / MIN_TENSOR_INFO_BYTES {
            return Err(format!("header claims {tensor_count} tensors, more than the file can hold (corrupt or truncated)"));
        }
        let mut raw = Vec::with_capacity(prealloc(tensor_count));
        for _ in 0..tensor_count {
            let name = r.name("tensor name")?;
            let why = |e: String| format!("tensor {name}: {e}");
            let n_dims = r.u32()?;
            if !(1..=MAX_DIMS).contains(&n_dims) {
                return Err(why(format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64()?;
                if d == 0 || d > i32::MAX as u64 {
                    return Err(why(format!("dimension {d} is out of range")));
                }
                dims.push(d);
            }
            let code = r.u32()?;
            let ty = BlockType::from_code(code).ok_or_else(|| {
                let known = blocks::unsupported_name(code).map_or_else(|| format!("unknown GGUF type {code}"), |n| format!("GGUF type {n}"));
                let supported: Vec<&str> = blocks::SUPPORTED.iter().map(|t| t.name()).collect();
                why(format!("{known} is not supported (supported: {})", supported.join(", ")))
            })?;
            let offset = r.u64()?;
            raw.push((name, dims, ty, offset));
        }
        let mut data_start = align(r.pos, alignment).ok_or("data offset overflows")?;
        // A file without tensors (a vocab-only GGUF) may end right after its
        // metadata, without the padding to the (empty) data section.
        if raw.is_empty() && r.pos <= len {
            data_start = data_start.min(len);
        }
        if data_start > len {
            return Err(format!("the tensor data would start at byte {data_start} but the file has {len} (truncated?)"));
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::with_capacity(raw.len());
        for (name, dims, ty, offset) in raw {
            let why = |e: String| format!("tensor {name}: {e}");
            let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(|| why("size overflows".into()))?;
            let block = ty.block_elements();
            if dims[0] % block != 0 {
                return Err(why(format!("rows of {} elements do not fill {} blocks of {block}", dims[0], ty.name())));
            }
            let bytes = (elements / block).checked_mul(ty.block_bytes()).ok_or_else(|| why("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(why(format!("offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = data_start.checked_add(offset).ok_or_else(|| why("offset overflows".into()))?;
            let end = start.checked_add(bytes).ok_or_else(|| why("offset overflows".into()))?;
            if end > len {
                return Err(why(format!("ends at byte {end} but the file has {len} (truncated?)")));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(format!("tensor {name} appears twice"));
            }
            tensors.push(TensorInfo { name, dims, ty, offset: start, bytes, elements });
        }
        let mut spans: Vec<(u64, u64, &str)> = tensors.iter().map(|t| (t.offset, t.offset + t.bytes, t.name.as_str())).collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(format!("tensors {} and {} overlap", pair[0].2, pair[1].2));
            }
        }
        Ok(Gguf { source, progress: None, version, metadata, tensors, index, alignment, data_start })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Counts the bytes of every tensor read from now on in `progress`.
    pub fn report_to(&mut self, progress: std::sync::Arc<super::LoadProgress>) {
        progress.start(self.tensors.iter().map(|t| t.bytes).sum());
        self.progress = Some(progress);
    }

    /// The raw bytes of a tensor.
    pub fn read(&self, t: &TensorInfo) -> Result<Vec<u8>, Why> {
        let len = usize::try_from(t.bytes).map_err(|_| format!("tensor {} is too large for this machine", t.name))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| format!("tensor {}: cannot allocate {len} bytes", t.name))?;
        buf.resize(len, 0);
        self.source.read_at(t.offset, &mut buf).map_err(|e| format!("tensor {}: reading its data: {e} (truncated?)", t.name))?;
        if let Some(progress) = &self.progress {
            progress.advance(t.bytes);
        }
        Ok(buf)
    }

    /// A tensor dequantized to f32 exactly as GGML does (every supported type).
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>, Why> {
        Ok(t.ty.dequantize(&self.read(t)?))
    }

    /// A quantized tensor in MLX's affine layout, `None` for float types.
    pub fn affine(&self, t: &TensorInfo) -> Result<Option<Affine>, Why> {
        let Some((_, group)) = t.ty.affine_form() else { return Ok(None) };
        if t.cols() % group as u64 != 0 {
            return Err(format!("tensor {}: rows of {} elements do not fill groups of {group}", t.name, t.cols()));
        }
        Ok(t.ty.to_affine(&self.read(t)?, t.cols() as usize))
    }
}

/// Room reserved up front for `n` parsed entries: a count from the file is
/// already bounded by the bytes left, but an entry in memory (a `String`, a
/// map slot) is larger than its smallest encoding, so beyond a few thousand
/// the collection grows only as entries are actually parsed.
fn prealloc(n: u64) -> usize {
    n.min(4096) as usize
}

fn align(pos: u64, alignment: u64) -> Option<u64> {
    pos.checked_add(alignment - 1).map(|p| p / alignment * alignment)
}

/// Sequential reads through the header, buffered, never past `len`.
struct Cursor<'a, S: Source> {
    source: &'a S,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
}

const CHUNK: u64 = 1 << 16;

impl<'a, S: Source> Cursor<'a, S> {
    fn new(source: &'a S, len: u64) -> Self {
        Cursor { source, len, pos: 0, buf: Vec::new(), buf_at: 0 }
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn truncated(&self) -> Why {
        format!("file ends inside the header at byte {} (truncated?)", self.len)
    }

    /// The next `n` bytes; `n` is checked against the bytes left first.
    fn take(&mut self, n: u64) -> Result<Vec<u8>, Why> {
        if n > self.left() {
            return Err(self.truncated());
        }
        let mut out = Vec::with_capacity(n as usize);
        let mut want = n;
        while want > 0 {
            let in_buf = self.buf_at + self.buf.len() as u64;
            if self.pos >= self.buf_at && self.pos < in_buf {
                let from = (self.pos - self.buf_at) as usize;
                let k = (want.min(in_buf - self.pos)) as usize;
                out.extend_from_slice(&self.buf[from..from + k]);
                self.pos += k as u64;
                want -= k as u64;
            } else {
                let k = CHUNK.min(self.len - self.pos) as usize;
                self.buf.resize(k, 0);
                self.source.read_at(self.pos, &mut self.buf).map_err(|e| format!("reading the header: {e} (truncated?)"))?;
                self.buf_at = self.pos;
            }
        }
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Why> {
        let v = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, Why> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Why> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, Why> {
        let n = self.u64()?;
        let bytes = self.take(n)?;
        Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// A key or tensor name: non-empty, bounded, valid UTF-8.
    fn name(&mut self, what: &str) -> Result<String, Why> {
        let n = self.u64()?;
        if n == 0 || n > MAX_NAME {
            return Err(format!("{what} of {n} bytes (corrupt header)"));
        }
        String::from_utf8(self.take(n)?).map_err(|_| format!("{what} is not UTF-8 (corrupt header)"))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, Why> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("boolean of value {b}")),
            },
            8 => Value::String(self.string()?),
            9 => Value::Array(self.array_value(depth)?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            _ => return Err(format!("value of unknown type {ty}")),
        })
    }

    fn array_value(&mut self, depth: u32) -> Result<ArrayValue, Why> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
        }
        let ty = self.u32()?;
        let n = self.u64()?;
        // The smallest encoding of one element bounds the count by the bytes left.
        let min_size: u64 = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8,
            9 => 12,
            _ => return Err(format!("array of unknown type {ty}")),
        };
        if n > self.left() / min_size {
            return Err(format!("array of {n} elements is larger than the file (corrupt or truncated)"));
        }
        let n = n as usize;
        fn fixed<T, const N: usize>(c: &mut Cursor<'_, impl Source>, n: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>, Why> {
            let bytes = c.take((n * N) as u64)?;
            Ok(bytes.chunks_exact(N).map(|b| f(b.try_into().unwrap_or([0; N]))).collect())
        }
        Ok(match ty {
            0 => ArrayValue::U8(self.take(n as u64)?),
            1 => ArrayValue::I8(fixed(self, n, |b: [u8; 1]| b[0] as i8)?),
            2 => ArrayValue::U16(fixed(self, n, u16::from_le_bytes)?),
            3 => ArrayValue::I16(fixed(self, n, i16::from_le_bytes)?),
            4 => ArrayValue::U32(fixed(self, n, u32::from_le_bytes)?),
            5 => ArrayValue::I32(fixed(self, n, i32::from_le_bytes)?),
            6 => ArrayValue::F32(fixed(self, n, f32::from_le_bytes)?),
            7 => {
                let bytes = self.take(n as u64)?;
                ArrayValue::Bool(bytes.iter().map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    b => Err(format!("boolean of value {b}")),
                }).collect::<Result<_, _>>()?)
            }
            8 => {
                let mut v = Vec::with_capacity(prealloc(n as u64));
                for _ in 0..n {
                    v.push(self.string()?);
                }
                ArrayValue::String(v)
            }
            9 => {
                let mut v = Vec::with_capacity(prealloc(n as u64));
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                ArrayValue::Array(v)
            }
            10 => ArrayValue::U64(fixed(self, n, u64::from_le_bytes)?),
            11 => ArrayValue::I64(fixed(self, n, i64::from_le_bytes)?),
            _ => ArrayValue::F64(fixed(self, n, f64::from_le_bytes)?),
        })
    }
}
