//! GGML block types: a straightforward reference dequantizer per type (the
//! GGUF's own meaning of its bytes, written from the GGML format) and the
//! conversion of each quantized type into MLX's affine layout.
//!
//! MLX's affine layout (what `mlx.core.quantize` makes and `dequantize` /
//! `quantized_matmul` read): a matrix `[rows, cols]` becomes
//! - `weight`: uint32 `[rows, cols * bits / 32]`, the codes of each row packed
//!   as one little-endian bit stream (code `i` in bits `i*bits..(i+1)*bits`,
//!   so for 4 and 8 bits the first code sits in the lowest bits of the first
//!   word);
//! - `scales`, `biases`: `[rows, cols / group_size]`, one pair per group of
//!   `group_size` consecutive codes of a row; `w = scale * code + bias`.
//!
//! Scales and biases are kept in f32: a K-quant's group scale is `d * sc`, an
//! f16 times a 6-bit integer, which needs up to 17 significant bits (f16 has
//! 11, bf16 8), so only f32 keeps those conversions exact.
//!
//! | GGUF type | MLX form | exact? | error vs the GGUF's dequantization |
//! | --- | --- | --- | --- |
//! | Q4_0, Q4_1 | 4-bit, group 32 | yes, bitwise | 0 |
//! | Q5_0, Q5_1 | 5-bit, group 32 | yes, bitwise | 0 |
//! | Q8_0 | 8-bit, group 32 | yes, bitwise | 0 |
//! | Q4_K | 4-bit, group 32 | yes, bitwise | 0 |
//! | Q5_K | 5-bit, group 32 | yes, bitwise | 0 |
//! | Q3_K | 8-bit, group 128 | yes, bitwise (see [`q3_k_affine`]) | 0 |
//! | Q6_K | 8-bit, group 32 | where a group's two sub-scales share a fine enough grid; else requantized | see [`q6_k_affine`] |
//! | Q2_K | 4-bit, group 32 | where a group's two sub-blocks share scale and min; else requantized | see [`q2_k_affine`] |
//! | F32, F16, BF16 | dense | yes | 0 |

use half::{bf16, f16};

/// The GGML tensor types this loader reads.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Every supported type, for messages and tests.
pub const SUPPORTED: [BlockType; 13] = [
    BlockType::F32,
    BlockType::F16,
    BlockType::BF16,
    BlockType::Q4_0,
    BlockType::Q4_1,
    BlockType::Q5_0,
    BlockType::Q5_1,
    BlockType::Q8_0,
    BlockType::Q2_K,
    BlockType::Q3_K,
    BlockType::Q4_K,
    BlockType::Q5_K,
    BlockType::Q6_K,
];

/// Names of GGML types we know of but do not read (for error messages).
pub fn unsupported_name(code: u32) -> Option<&'static str> {
    Some(match code {
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

impl BlockType {
    /// The type of a GGUF tensor-info type code, if supported.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => BlockType::F32,
            1 => BlockType::F16,
            2 => BlockType::Q4_0,
            3 => BlockType::Q4_1,
            6 => BlockType::Q5_0,
            7 => BlockType::Q5_1,
            8 => BlockType::Q8_0,
            10 => BlockType::Q2_K,
            11 => BlockType::Q3_K,
            12 => BlockType::Q4_K,
            13 => BlockType::Q5_K,
            14 => BlockType::Q6_K,
            30 => BlockType::BF16,
            _ => return None,
        })
    }

    /// The GGUF type code.
    pub fn code(self) -> u32 {
        match self {
            BlockType::F32 => 0,
            BlockType::F16 => 1,
            BlockType::Q4_0 => 2,
            BlockType::Q4_1 => 3,
            BlockType::Q5_0 => 6,
            BlockType::Q5_1 => 7,
            BlockType::Q8_0 => 8,
            BlockType::Q2_K => 10,
            BlockType::Q3_K => 11,
            BlockType::Q4_K => 12,
            BlockType::Q5_K => 13,
            BlockType::Q6_K => 14,
            BlockType::BF16 => 30,
        }
    }

    /// The name llama.cpp uses, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        match self {
            BlockType::F32 => "F32",
            BlockType::F16 => "F16",
            BlockType::BF16 => "BF16",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q5_1 => "Q5_1",
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q2_K => "Q2_K",
            BlockType::Q3_K => "Q3_K",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q5_K => "Q5_K",
            BlockType::Q6_K => "Q6_K",
        }
    }

    /// Elements per block (a row's length must be a multiple of it).
    pub fn block_elements(self) -> u64 {
        match self {
            BlockType::F32 | BlockType::F16 | BlockType::BF16 => 1,
            BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q5_0 | BlockType::Q5_1 | BlockType::Q8_0 => 32,
            BlockType::Q2_K | BlockType::Q3_K | BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => QK_K as u64,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            BlockType::F32 => 4,
            BlockType::F16 | BlockType::BF16 => 2,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q8_0 => 34,
            BlockType::Q2_K => 84,
            BlockType::Q3_K => 110,
            BlockType::Q4_K => 144,
            BlockType::Q5_K => 176,
            BlockType::Q6_K => 210,
        }
    }

    /// Whether the type is quantized (has an affine MLX form) rather than dense floats.
    pub fn is_quantized(self) -> bool {
        self.affine_form().is_some()
    }

    /// `(bits, group_size)` of the MLX affine form, `None` for float types.
    pub fn affine_form(self) -> Option<(i32, i32)> {
        Some(match self {
            BlockType::F32 | BlockType::F16 | BlockType::BF16 => return None,
            BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q4_K | BlockType::Q2_K => (4, 32),
            BlockType::Q5_0 | BlockType::Q5_1 | BlockType::Q5_K => (5, 32),
            BlockType::Q8_0 | BlockType::Q6_K => (8, 32),
            BlockType::Q3_K => (8, 128),
        })
    }

    /// Dequantizes `bytes` (whole blocks) to f32, exactly as GGML does.
    /// Panics if `bytes` is not a whole number of blocks (the reader checks sizes).
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        let (n, size) = (self.block_elements() as usize, self.block_bytes() as usize);
        assert_eq!(bytes.len() % size, 0, "whole blocks");
        let mut out = vec![0f32; bytes.len() / size * n];
        for (block, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(n)) {
            match self {
                BlockType::F32 => y[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
                BlockType::F16 => y[0] = half16(block, 0),
                BlockType::BF16 => y[0] = bf16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32(),
                BlockType::Q4_0 => {
                    let d = half16(block, 0);
                    for (e, v) in y.iter_mut().enumerate() {
                        *v = (nibble(&block[2..18], e) as i32 - 8) as f32 * d;
                    }
                }
                BlockType::Q4_1 => {
                    let (d, m) = (half16(block, 0), half16(block, 2));
                    for (e, v) in y.iter_mut().enumerate() {
                        *v = nibble(&block[4..20], e) as f32 * d + m;
                    }
                }
                BlockType::Q5_0 => {
                    let d = half16(block, 0);
                    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                    for (e, v) in y.iter_mut().enumerate() {
                        *v = (five(&block[6..22], qh, e) as i32 - 16) as f32 * d;
                    }
                }
                BlockType::Q5_1 => {
                    let (d, m) = (half16(block, 0), half16(block, 2));
                    let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                    for (e, v) in y.iter_mut().enumerate() {
                        *v = five(&block[8..24], qh, e) as f32 * d + m;
                    }
                }
                BlockType::Q8_0 => {
                    let d = half16(block, 0);
                    for (e, v) in y.iter_mut().enumerate() {
                        *v = block[2 + e] as i8 as f32 * d;
                    }
                }
                BlockType::Q2_K => {
                    let (d, dmin) = (half16(block, 80), half16(block, 82));
                    for (e, v) in y.iter_mut().enumerate() {
                        let sc = block[e / 16];
                        let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                        *v = dl * q2_k_code(block, e) as f32 - ml;
                    }
                }
                BlockType::Q3_K => {
                    let d = half16(block, 108);
                    let scales = q3_k_scales(&block[96..108]);
                    for (e, v) in y.iter_mut().enumerate() {
                        let dl = d * scales[e / 16] as f32;
                        *v = dl * q3_k_code(block, e) as f32;
                    }
                }
                BlockType::Q4_K | BlockType::Q5_K => {
                    let (d, dmin) = (half16(block, 0), half16(block, 2));
                    for (e, v) in y.iter_mut().enumerate() {
                        let (sc, m) = k4_scale_min(&block[4..16], e / 32);
                        let (dl, ml) = (d * sc as f32, dmin * m as f32);
                        *v = dl * k_code(self, block, e) as f32 - ml;
                    }
                }
                BlockType::Q6_K => {
                    let d = half16(block, 208);
                    for (e, v) in y.iter_mut().enumerate() {
                        let sc = block[192 + e / 16] as i8;
                        *v = d * sc as f32 * q6_k_code(block, e) as f32;
                    }
                }
            }
        }
        out
    }

    /// Converts the rows of a quantized matrix (`bytes`, whole rows of
    /// `cols` elements) into MLX's affine layout. `None` for float types.
    pub fn to_affine(self, bytes: &[u8], cols: usize) -> Option<Affine> {
        let (bits, group) = self.affine_form()?;
        let (n, size) = (self.block_elements() as usize, self.block_bytes() as usize);
        let group = group as usize;
        assert!(cols % n == 0 && cols % group == 0 && bytes.len() % (cols / n * size) == 0, "whole rows");
        let rows = bytes.len() / (cols / n * size);
        let mut codes = vec![0u8; rows * cols];
        let mut scales = vec![0f32; rows * cols / group];
        let mut biases = vec![0f32; rows * cols / group];
        let groups_per_block = n.div_ceil(group);
        for (((block, codes), scales), biases) in bytes
            .chunks_exact(size)
            .zip(codes.chunks_exact_mut(n))
            .zip(scales.chunks_exact_mut(groups_per_block))
            .zip(biases.chunks_exact_mut(groups_per_block))
        {
            self.affine_block(block, codes, scales, biases);
        }
        let words_per_row = cols * bits as usize / 32;
        let mut weight = Vec::with_capacity(rows * words_per_row);
        for row in codes.chunks_exact(cols) {
            pack_row(row, bits as u32, &mut weight);
        }
        Some(Affine { weight, scales, biases, rows, cols, bits, group_size: group as i32 })
    }

    /// One block's codes and its groups' scales and biases.
    fn affine_block(self, block: &[u8], codes: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
        match self {
            BlockType::F32 | BlockType::F16 | BlockType::BF16 => unreachable!("float types have no affine form"),
            BlockType::Q4_0 => {
                let d = half16(block, 0);
                (scales[0], biases[0]) = (d, -8.0 * d);
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = nibble(&block[2..18], e));
            }
            BlockType::Q4_1 => {
                (scales[0], biases[0]) = (half16(block, 0), half16(block, 2));
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = nibble(&block[4..20], e));
            }
            BlockType::Q5_0 => {
                let d = half16(block, 0);
                (scales[0], biases[0]) = (d, -16.0 * d);
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = five(&block[6..22], qh, e));
            }
            BlockType::Q5_1 => {
                (scales[0], biases[0]) = (half16(block, 0), half16(block, 2));
                let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = five(&block[8..24], qh, e));
            }
            BlockType::Q8_0 => {
                let d = half16(block, 0);
                (scales[0], biases[0]) = (d, -128.0 * d);
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = (block[2 + e] as i8 as i16 + 128) as u8);
            }
            BlockType::Q4_K | BlockType::Q5_K => {
                let (d, dmin) = (half16(block, 0), half16(block, 2));
                for g in 0..8 {
                    let (sc, m) = k4_scale_min(&block[4..16], g);
                    (scales[g], biases[g]) = (d * sc as f32, -(dmin * m as f32));
                }
                codes.iter_mut().enumerate().for_each(|(e, c)| *c = k_code(self, block, e));
            }
            BlockType::Q3_K => q3_k_affine(block, codes, scales, biases),
            BlockType::Q6_K => q6_k_affine(block, codes, scales, biases),
            BlockType::Q2_K => q2_k_affine(block, codes, scales, biases),
        }
    }
}

/// A matrix in MLX's affine quantized layout (see the module docs).
#[derive(Debug, Clone)]
pub struct Affine {
    /// `[rows, cols * bits / 32]` packed codes.
    pub weight: Vec<u32>,
    /// `[rows, cols / group_size]`.
    pub scales: Vec<f32>,
    /// `[rows, cols / group_size]`.
    pub biases: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pub bits: i32,
    pub group_size: i32,
}

impl Affine {
    /// `scale * code + bias` for every element, as MLX's `dequantize` computes
    /// it (used by tests to check the packing without MLX, and by the error report).
    pub fn dequantize(&self) -> Vec<f32> {
        let bits = self.bits as usize;
        let words = self.cols * bits / 32;
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let row = &self.weight[r * words..(r + 1) * words];
            for i in 0..self.cols {
                let bit = i * bits;
                let (w, off) = (bit / 32, bit % 32);
                let mut v = (row[w] as u64) >> off;
                if off + bits > 32 {
                    v |= (row[w + 1] as u64) << (32 - off);
                }
                let code = (v & ((1 << bits) - 1)) as f32;
                let g = r * (self.cols / self.group_size as usize) + i / self.group_size as usize;
                out.push(self.scales[g] * code + self.biases[g]);
            }
        }
        out
    }
}

impl Affine {
    /// The code of element `i` of row `r`.
    fn code(&self, r: usize, i: usize) -> u8 {
        let bits = self.bits as usize;
        let row = &self.weight[r * (self.cols * bits / 32)..];
        let bit = i * bits;
        let (w, off) = (bit / 32, bit % 32);
        let mut v = (row[w] as u64) >> off;
        if off + bits > 32 {
            v |= (row[w + 1] as u64) << (32 - off);
        }
        (v & ((1 << bits) - 1)) as u8
    }

    /// The same matrix with its codes stored in `bits` (more than now) bits
    /// each: scales and biases are unchanged, so every value is exactly the
    /// same. (Our CPU kernel takes 4 and 8 bits; a 5-bit matrix would go to
    /// MLX's scalar `quantized_matmul`, tens of times slower.)
    pub fn widened(&self, bits: i32) -> Affine {
        assert!(bits >= self.bits && bits <= 8, "widening {} bits to {bits}", self.bits);
        let mut weight = Vec::with_capacity(self.rows * self.cols * bits as usize / 32);
        let mut codes = Vec::with_capacity(self.cols);
        for r in 0..self.rows {
            codes.clear();
            codes.extend((0..self.cols).map(|i| self.code(r, i)));
            pack_row(&codes, bits as u32, &mut weight);
        }
        Affine { weight, bits, ..self.clone() }
    }
}

/// 256 elements per K-quant super-block.
const QK_K: usize = 256;

fn half16(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// Element `e` of a 32-element block of nibbles: low nibbles are elements 0..16, high 16..32.
fn nibble(qs: &[u8], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 0xF
    } else {
        qs[e - 16] >> 4
    }
}

/// Element `e` of a Q5_0/Q5_1 block: its nibble plus bit `e` of `qh` as the fifth bit.
fn five(qs: &[u8], qh: u32, e: usize) -> u8 {
    nibble(qs, e) | ((((qh >> e) & 1) as u8) << 4)
}

/// Scale and min `j` (0..8) of a Q4_K/Q5_K super-block, 6 bits each, from its 12 scale bytes.
fn k4_scale_min(q: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Code of element `e` of a Q4_K (4 bits) or Q5_K (5 bits) super-block.
/// Elements come in chunks of 64: 32 low nibbles, then 32 high nibbles of the same bytes.
fn k_code(ty: BlockType, block: &[u8], e: usize) -> u8 {
    let (chunk, r) = (e / 64, e % 64);
    let l = r % 32;
    if ty == BlockType::Q4_K {
        let b = block[16 + 32 * chunk + l];
        if r < 32 {
            b & 0xF
        } else {
            b >> 4
        }
    } else {
        let b = block[48 + 32 * chunk + l];
        let low = if r < 32 { b & 0xF } else { b >> 4 };
        let high = (block[16 + l] >> (e / 32)) & 1;
        low | (high << 4)
    }
}

/// Code (0..4) of element `e` of a Q2_K super-block: chunks of 128 elements
/// over 32 bytes, each byte giving four elements 32 apart (2 bits each).
fn q2_k_code(block: &[u8], e: usize) -> u8 {
    let (chunk, r) = (e / 128, e % 128);
    (block[16 + 32 * chunk + r % 32] >> (2 * (r / 32))) & 3
}

/// The 16 signed 6-bit sub-block scales (already minus 32) of a Q3_K super-block.
fn q3_k_scales(b: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for i in 0..4 {
        let high = b[8 + i];
        s[i] = ((b[i] & 0xF) | ((high & 3) << 4)) as i8 - 32;
        s[4 + i] = ((b[4 + i] & 0xF) | (((high >> 2) & 3) << 4)) as i8 - 32;
        s[8 + i] = ((b[i] >> 4) | (((high >> 4) & 3) << 4)) as i8 - 32;
        s[12 + i] = ((b[4 + i] >> 4) | (((high >> 6) & 3) << 4)) as i8 - 32;
    }
    s
}

/// Signed code (-4..=3) of element `e` of a Q3_K super-block: two low bits as
/// in Q2_K, and a high bit from `hmask` whose absence subtracts 4.
fn q3_k_code(block: &[u8], e: usize) -> i8 {
    let (chunk, r) = (e / 128, e % 128);
    let l = r % 32;
    let low = (block[32 + 32 * chunk + l] >> (2 * (r / 32))) & 3;
    let high = (block[l] >> (4 * chunk + r / 32)) & 1;
    low as i8 - if high == 1 { 0 } else { 4 }
}

/// Signed code (-32..=31) of element `e` of a Q6_K super-block.
fn q6_k_code(block: &[u8], e: usize) -> i8 {
    let (chunk, r) = (e / 128, e % 128);
    let (quarter, l) = (r / 32, r % 32);
    let (ql, qh) = (&block[64 * chunk..], block[128 + 32 * chunk + l]);
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    (low | (((qh >> (2 * quarter)) & 3) << 4)) as i8 - 32
}

/// Q3_K as 8-bit codes, groups of 128: exact.
///
/// A Q3_K value is `d * s * q` with `s` in -32..=31 and `q` in -4..=3, so the
/// integer `k = s * q` lies in -124..=128 for every element of the super-block:
/// codes `k - kmin` (at most 252) with scale `d` and bias `d * kmin` give back
/// `d * k`, which f32 holds exactly (11 + 8 significant bits), as does GGML's
/// `(d * s) * q`. The cost is memory: 8.5 bits per weight (with f32 scales)
/// instead of 3.44.
fn q3_k_affine(block: &[u8], codes: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
    let d = half16(block, 108);
    let sub = q3_k_scales(&block[96..108]);
    let k: Vec<i32> = (0..QK_K).map(|e| sub[e / 16] as i32 * q3_k_code(block, e) as i32).collect();
    for (g, ks) in k.chunks_exact(128).enumerate() {
        let kmin = ks.iter().copied().min().unwrap_or(0);
        (scales[g], biases[g]) = (d, d * kmin as f32);
        for (c, &k) in codes[g * 128..(g + 1) * 128].iter_mut().zip(ks) {
            *c = (k - kmin) as u8;
        }
    }
}

/// Q6_K as 8-bit codes, groups of 32 (two of Q6_K's 16-element sub-blocks).
///
/// A Q6_K value is `d * s * q` (`s` an i8 sub-block scale, `q` in -32..=31).
/// Where the integers `k = s * q` of a group, on the grid `gcd(s1, s2)`, span
/// at most 255 steps, the group is exact (scale `d * gcd`, bias `d * kmin`):
/// always when the two sub-scales are equal. Otherwise the group is
/// requantized from its exact values to 256 levels between its minimum and
/// maximum, an error of at most 1/510 of the group's range.
/// Measured against GGML's dequantization (`q6_k_and_q2_k_requantization_error`,
/// random blocks with sub-scales uniform over the whole i8 range, a worse
/// case than real models): max error 0.196% of a group's range, relative RMS
/// error 0.40%, 5% of groups exact.
fn q6_k_affine(block: &[u8], codes: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
    let d = half16(block, 208);
    for g in 0..QK_K / 32 {
        let (s1, s2) = (block[192 + 2 * g] as i8 as i32, block[192 + 2 * g + 1] as i8 as i32);
        let k: Vec<i32> = (32 * g..32 * (g + 1)).map(|e| if e % 32 < 16 { s1 } else { s2 } * q6_k_code(block, e) as i32).collect();
        let out = &mut codes[32 * g..32 * (g + 1)];
        let grid = gcd(s1.unsigned_abs(), s2.unsigned_abs()).max(1) as i32;
        let (kmin, kmax) = (k.iter().copied().min().unwrap_or(0), k.iter().copied().max().unwrap_or(0));
        if (kmax - kmin) / grid <= 255 {
            (scales[g], biases[g]) = (d * grid as f32, d * kmin as f32);
            for (c, &k) in out.iter_mut().zip(&k) {
                *c = ((k - kmin) / grid) as u8;
            }
        } else {
            let values: Vec<f32> = k.iter().map(|&k| d * k as f32).collect();
            (scales[g], biases[g]) = requantize(&values, 255, out);
        }
    }
}

/// Q2_K as 4-bit codes, groups of 32 (two of Q2_K's 16-element sub-blocks).
///
/// A Q2_K value is `d * a * q - dmin * m` (`a`, `m` 4-bit per sub-block, `q`
/// 0..=3). Where both sub-blocks of a group share `a` and `m` the group is
/// exact (scale `d * a`, bias `-dmin * m`); otherwise it is requantized from its
/// exact values to 16 levels between its minimum and maximum, an error of at
/// most 1/30 of the group's range. Measured on random blocks: max error 3.3%
/// of a group's range, relative RMS error 2.8%, 2% of groups exact. 8 bits
/// would be 17x closer but take 10 bits per weight instead of Q2_K's 2.6.
fn q2_k_affine(block: &[u8], codes: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
    let (d, dmin) = (half16(block, 80), half16(block, 82));
    for g in 0..QK_K / 32 {
        let (sc1, sc2) = (block[2 * g], block[2 * g + 1]);
        let out = &mut codes[32 * g..32 * (g + 1)];
        if sc1 == sc2 {
            (scales[g], biases[g]) = (d * (sc1 & 0xF) as f32, -(dmin * (sc1 >> 4) as f32));
            for (i, c) in out.iter_mut().enumerate() {
                *c = q2_k_code(block, 32 * g + i);
            }
        } else {
            let values: Vec<f32> = (32 * g..32 * (g + 1))
                .map(|e| {
                    let sc = block[e / 16];
                    d * (sc & 0xF) as f32 * q2_k_code(block, e) as f32 - dmin * (sc >> 4) as f32
                })
                .collect();
            (scales[g], biases[g]) = requantize(&values, 15, out);
        }
    }
}

/// Min/max affine quantization of `values` to `0..=levels` codes; returns (scale, bias).
fn requantize(values: &[f32], levels: u32, codes: &mut [u8]) -> (f32, f32) {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = (hi - lo) / levels as f32;
    if !(scale > 0.0) || !scale.is_finite() {
        codes.iter_mut().for_each(|c| *c = 0);
        return (0.0, if lo.is_finite() { lo } else { 0.0 });
    }
    for (c, &v) in codes.iter_mut().zip(values) {
        *c = ((v - lo) / scale).round().clamp(0.0, levels as f32) as u8;
    }
    (scale, lo)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Appends `codes` (each below `2^bits`) as one little-endian bit stream of u32 words.
fn pack_row(codes: &[u8], bits: u32, out: &mut Vec<u32>) {
    let mut acc: u64 = 0;
    let mut filled = 0u32;
    for &c in codes {
        acc |= (c as u64) << filled;
        filled += bits;
        if filled >= 32 {
            out.push(acc as u32);
            acc >>= 32;
            filled -= 32;
        }
    }
    debug_assert_eq!(filled, 0, "rows are whole words");
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;
