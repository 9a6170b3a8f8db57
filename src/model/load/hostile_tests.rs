//! Hostile GGUF files: forged headers, random mutations and truncation at
//! every byte of a small valid file. Each must be an error (which the loader
//! reports as `MODEL_LOAD_FAILED`), never a panic, a hang or an allocation out
//! of proportion to the file: this test binary counts every allocation each
//! thread makes, and the reader may allocate at most a small multiple of the
//! file's size.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use half::f16;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    blocks::BlockType,
    gguf::{ArrayValue, Gguf, Value},
};
use crate::{error::ErrorCode, model::WeightFormat};

// ---- allocation accounting (this test binary only) ----

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes this thread allocated (beyond what it held before) while running `f`.
pub(crate) fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(|p| p.get());
    (out, (peak - base).max(0) as usize)
}

/// Parses `bytes` and, if that succeeds, reads and converts every tensor, as
/// the loader would. Returns the first error; asserts the allocation bound.
fn open_all(bytes: &[u8]) -> Result<(), String> {
    let len = bytes.len();
    let (result, peak) = peak_allocation(|| {
        let gguf = Gguf::parse(bytes.to_vec())?;
        for t in gguf.tensors() {
            gguf.dequantize(t)?;
            gguf.affine(t)?;
        }
        Ok(())
    });
    // The copy of the file, plus parsed metadata (a few times its encoding)
    // and one tensor's f32 values (8x a Q4 tensor's bytes) at a time.
    let bound = 64 * len + (1 << 16);
    assert!(peak <= bound, "reading a {len}-byte file allocated {peak} bytes at its peak");
    result
}

// ---- a tiny GGUF writer ----

#[derive(Clone)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
    /// Written instead of the computed offset, to forge one.
    offset: Option<u64>,
}

#[derive(Clone)]
pub(super) struct Builder {
    version: u32,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<Tensor>,
    alignment: u64,
    /// Written instead of the real counts, to forge them.
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
}

pub(super) fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

pub(super) fn array(ty: u32, n: u64, items: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(items);
    v
}

impl Builder {
    pub(super) fn new() -> Self {
        Builder { version: 3, kvs: Vec::new(), tensors: Vec::new(), alignment: 32, tensor_count: None, kv_count: None }
    }

    pub(super) fn kv(mut self, key: &str, ty: u32, value: Vec<u8>) -> Self {
        self.kvs.push((key.to_string(), ty, value));
        self
    }

    pub(super) fn tensor(mut self, name: &str, dims: &[u64], ty: BlockType, data: Vec<u8>) -> Self {
        self.tensors.push(Tensor { name: name.into(), dims: dims.to_vec(), ty: ty.code(), data, offset: None });
        self
    }

    pub(super) fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (key, ty, value) in &self.kvs {
            out.extend_from_slice(&string(key));
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            out.extend_from_slice(&string(&t.name));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(offset).to_le_bytes());
            offsets.push(offset);
            offset += (t.data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        for (t, at) in self.tensors.iter().zip(offsets) {
            while out.len() as u64 % self.alignment != 0 {
                out.push(0);
            }
            let start = out.len();
            let _ = at;
            out.extend_from_slice(&t.data);
            debug_assert!(start % self.alignment as usize == 0);
        }
        out
    }
}

fn blocks(ty: BlockType, elements: usize, rng: &mut StdRng) -> Vec<u8> {
    let size = ty.block_bytes() as usize;
    let mut bytes: Vec<u8> = (0..elements / ty.block_elements() as usize * size).map(|_| rng.random()).collect();
    let halves: &[usize] = match ty {
        BlockType::Q4_0 | BlockType::Q8_0 | BlockType::Q5_0 => &[0],
        BlockType::Q4_1 | BlockType::Q4_K | BlockType::Q5_K | BlockType::Q5_1 => &[0, 2],
        BlockType::Q6_K => &[208],
        BlockType::Q3_K => &[108],
        BlockType::Q2_K => &[80, 82],
        BlockType::F32 | BlockType::F16 | BlockType::BF16 => &[],
    };
    for block in bytes.chunks_exact_mut(size) {
        for &at in halves {
            block[at..at + 2].copy_from_slice(&f16::from_f32(0.01).to_bits().to_le_bytes());
        }
    }
    if ty == BlockType::F32 {
        for v in bytes.chunks_exact_mut(4) {
            v.copy_from_slice(&0.5f32.to_le_bytes());
        }
    }
    bytes
}

/// A small valid file with every metadata type and a few tensor types.
fn valid() -> Builder {
    let mut rng = StdRng::seed_from_u64(1);
    let nested = {
        let mut items = array(1, 2, &[1, 2]);
        items.extend(array(1, 1, &[0xFF]));
        array(9, 2, &items)
    };
    let mut strings = string("alpha");
    strings.extend(string("βeta"));
    Builder::new()
        .kv("general.architecture", 8, string("llama"))
        .kv("general.alignment", 4, 32u32.to_le_bytes().to_vec())
        .kv("k.u8", 0, vec![7])
        .kv("k.i8", 1, vec![0xFE])
        .kv("k.u16", 2, 513u16.to_le_bytes().to_vec())
        .kv("k.i16", 3, (-2i16).to_le_bytes().to_vec())
        .kv("k.i32", 5, (-3i32).to_le_bytes().to_vec())
        .kv("k.f32", 6, 1.5f32.to_le_bytes().to_vec())
        .kv("k.bool", 7, vec![1])
        .kv("k.u64", 10, (1u64 << 40).to_le_bytes().to_vec())
        .kv("k.i64", 11, (-5i64).to_le_bytes().to_vec())
        .kv("k.f64", 12, 2.25f64.to_le_bytes().to_vec())
        .kv("k.ints", 9, array(5, 3, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]))
        .kv("k.strings", 9, array(8, 2, &strings))
        .kv("k.nested", 9, nested)
        .tensor("norm", &[8], BlockType::F32, blocks(BlockType::F32, 8, &mut rng))
        .tensor("q4", &[32, 2], BlockType::Q4_0, blocks(BlockType::Q4_0, 64, &mut rng))
        .tensor("k4", &[256, 1], BlockType::Q4_K, blocks(BlockType::Q4_K, 256, &mut rng))
        .tensor("k6", &[256, 1], BlockType::Q6_K, blocks(BlockType::Q6_K, 256, &mut rng))
}

// ---- the tests ----

#[test]
fn a_valid_file_reads_back_every_value_type_and_tensor() {
    let gguf = Gguf::parse(valid().build()).expect("valid");
    assert_eq!(gguf.get("k.u8"), Some(&Value::U8(7)));
    assert_eq!(gguf.get("k.i8"), Some(&Value::I8(-2)));
    assert_eq!(gguf.get("k.u16"), Some(&Value::U16(513)));
    assert_eq!(gguf.get("k.i16"), Some(&Value::I16(-2)));
    assert_eq!(gguf.get("k.i32"), Some(&Value::I32(-3)));
    assert_eq!(gguf.get("k.f32"), Some(&Value::F32(1.5)));
    assert_eq!(gguf.get("k.bool"), Some(&Value::Bool(true)));
    assert_eq!(gguf.get("k.u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(gguf.get("k.i64"), Some(&Value::I64(-5)));
    assert_eq!(gguf.get("k.f64"), Some(&Value::F64(2.25)));
    assert_eq!(gguf.get("k.ints"), Some(&Value::Array(ArrayValue::I32(vec![1, 2, 3]))));
    assert_eq!(gguf.get("k.strings"), Some(&Value::Array(ArrayValue::String(vec!["alpha".into(), "βeta".into()]))));
    assert_eq!(
        gguf.get("k.nested"),
        Some(&Value::Array(ArrayValue::Array(vec![ArrayValue::I8(vec![1, 2]), ArrayValue::I8(vec![-1])])))
    );
    let names: Vec<&str> = gguf.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["norm", "q4", "k4", "k6"]);
    let q4 = gguf.tensor("q4").unwrap();
    assert_eq!((q4.shape(), q4.ty, q4.bytes), (vec![2, 32], BlockType::Q4_0, 36));
    assert_eq!(gguf.dequantize(gguf.tensor("norm").unwrap()).unwrap(), vec![0.5; 8]);
    open_all(&valid().build()).expect("every tensor converts");
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = valid().build();
    for n in 0..bytes.len() {
        assert!(open_all(&bytes[..n]).is_err(), "a file cut to {n} of {} bytes was accepted", bytes.len());
    }
}

#[test]
fn a_file_without_tensors_may_end_after_its_metadata_but_not_inside_it() {
    // Vocab-only GGUFs (llama.cpp's ggml-vocab-*) stop right after their metadata.
    let bytes = Builder::new().kv("general.name", 8, string("vocab")).build();
    assert_ne!(bytes.len() % 32, 0, "the file must end off the alignment for this test");
    let gguf = Gguf::parse(bytes.clone()).expect("a tensorless file without padding opens");
    assert!(gguf.tensors().is_empty());
    for n in 0..bytes.len() {
        assert!(Gguf::parse(bytes[..n].to_vec()).is_err(), "a tensorless file cut to {n} of {} bytes was accepted", bytes.len());
    }
}

/// Each forged header must be refused, with a reason mentioning `why`.
fn refused(b: &Builder, why: &str) {
    match open_all(&b.build()) {
        Ok(()) => panic!("accepted a file with {why}"),
        Err(e) => assert!(e.contains(why), "a file with {why} failed with '{e}'"),
    }
}

#[test]
fn forged_counts_and_lengths_are_refused_before_allocating() {
    for count in [u64::MAX, 1 << 40, 1 << 20] {
        refused(&Builder { tensor_count: Some(count), ..valid() }, "tensors, more than the file can hold");
        refused(&Builder { kv_count: Some(count), ..valid() }, "metadata entries, more than the file can hold");
        let mut huge_string = (count).to_le_bytes().to_vec();
        huge_string.extend_from_slice(b"x");
        refused(&valid().kv("k.huge", 8, huge_string), "truncated");
        refused(&valid().kv("k.huge_array", 9, array(4, count, &[0; 16])), "larger than the file");
        refused(&valid().kv("k.huge_strings", 9, array(8, count, &string("a"))), "larger than the file");
        refused(&valid().kv("k.huge_nested", 9, array(9, count, &array(0, 1, &[0]))), "larger than the file");
    }
    let mut key = valid();
    key.kvs[0].0 = String::new();
    refused(&key, "metadata key of 0 bytes");
    // Arrays nested far deeper than any model writes.
    let mut deep = array(0, 1, &[0]);
    for _ in 0..100 {
        deep = array(9, 1, &deep);
    }
    refused(&valid().kv("k.deep", 9, deep), "nested deeper");
}

#[test]
fn forged_types_and_values_are_refused() {
    refused(&valid().kv("k.bad", 13, vec![0; 8]), "value of unknown type 13");
    refused(&valid().kv("k.bad", 9, array(42, 1, &[0; 8])), "array of unknown type 42");
    refused(&valid().kv("k.bool", 7, vec![2]), "boolean of value 2");
    refused(&valid().kv("k.u8", 0, vec![1]), "appears twice");
    refused(&Builder { version: 1, ..valid() }, "version 1");
    refused(&Builder { version: 4, ..valid() }, "version 4");
    let mut magic = valid().build();
    magic[0] = b'X';
    assert!(open_all(&magic).unwrap_err().contains("bad magic"));
    for (ty, value) in [(4u32, 0u32.to_le_bytes().to_vec()), (4, 48u32.to_le_bytes().to_vec()), (8, string("32"))] {
        let mut b = valid();
        b.kvs[1] = ("general.alignment".into(), ty, value);
        refused(&b, "general.alignment must be a power of two");
    }
}

#[test]
fn forged_tensor_infos_are_refused() {
    let with = |f: &dyn Fn(&mut Builder)| {
        let mut b = valid();
        f(&mut b);
        b
    };
    refused(&with(&|b| b.tensors[1].ty = 99), "unknown GGUF type 99");
    refused(&with(&|b| b.tensors[1].ty = 15), "GGUF type Q8_K is not supported");
    refused(&with(&|b| b.tensors[1].ty = 20), "GGUF type IQ4_NL is not supported");
    // A wrong type whose blocks no longer match the data's size.
    refused(&with(&|b| b.tensors[3].ty = BlockType::F32.code()), "ends at byte");
    refused(&with(&|b| b.tensors[1].dims = vec![]), "0 dimensions");
    refused(&with(&|b| b.tensors[1].dims = vec![32, 1, 1, 1, 2]), "5 dimensions");
    refused(&with(&|b| b.tensors[1].dims = vec![32, 0]), "dimension 0 is out of range");
    refused(&with(&|b| b.tensors[1].dims = vec![32, u64::MAX]), "out of range");
    refused(&with(&|b| b.tensors[1].dims = vec![1 << 30, 1 << 30, 1 << 30, 1 << 30]), "size overflows");
    refused(&with(&|b| b.tensors[1].dims = vec![32, 1 << 30]), "ends at byte");
    refused(&with(&|b| b.tensors[1].dims = vec![33, 2]), "do not fill Q4_0 blocks");
    refused(&with(&|b| b.tensors[2].offset = Some(0)), "overlap");
    refused(&with(&|b| b.tensors[2].offset = Some(8)), "not a multiple of the alignment");
    refused(&with(&|b| b.tensors[2].offset = Some(1 << 40)), "ends at byte");
    refused(&with(&|b| b.tensors[2].offset = Some(u64::MAX - 31)), "overflows");
    refused(&with(&|b| b.tensors[2].name = "q4".into()), "appears twice");
}

#[test]
fn random_mutations_are_errors_or_valid_files_never_panics() {
    let original = valid().build();
    let mut rng = StdRng::seed_from_u64(424242);
    let specials: [u64; 8] = [0, 1, 31, 32, 255, u32::MAX as u64, 1 << 40, u64::MAX];
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..5) {
                0 => bytes[at] ^= 1 << rng.random_range(0..8),
                1 => bytes[at] = rng.random(),
                2 => {
                    let v = specials[rng.random_range(0..specials.len())].to_le_bytes();
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
                3 => {
                    let n = rng.random_range(1..16).min(bytes.len() - at);
                    bytes.drain(at..at + n);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        match open_all(&bytes) {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 1000, "only {refused} of 3000 mutations refused");
    eprintln!("random mutations: {accepted} still valid files (e.g. a changed value or tensor byte), {refused} refused");
}

#[test]
fn the_loader_reports_hostile_files_as_model_load_failed() {
    let dir = std::env::temp_dir().join(format!("mlx-serving-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Builder { tensor_count: Some(u64::MAX), ..valid() }.build(), "more than the file can hold"),
        (valid().build()[..200].to_vec(), "truncated"),
        // A valid container that is not a model: no tokenizer, no weights.
        (valid().build(), "is not supported"),
        (valid().kv("general.architecture", 8, string("llama")).build(), "appears twice"),
    ];
    for (i, (bytes, why)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let err = match super::load_gguf(&path, WeightFormat::Dense) {
            Ok(_) => panic!("case {i} loaded"),
            Err(e) => e,
        };
        assert_eq!(err.code, ErrorCode::ModelLoadFailed, "case {i}: {err}");
        assert!(err.message.contains(why), "case {i}: '{}' does not say '{why}'", err.message);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
