//! Block types against two references outside this module: llama.cpp's own
//! Python dequantizer (PyPI `gguf`, through the committed fixture made by
//! `scripts/gguf_blocks_fixture.py`) and MLX's `quantize` / `dequantize`.

use std::path::PathBuf;

use mlx_rs::{
    ops::{dequantize, quantize},
    Array, Dtype,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::model::load::gguf::Gguf;

/// The quantized block types: every supported one but the float types.
fn quantized() -> impl Iterator<Item = BlockType> {
    SUPPORTED.into_iter().filter(|t| !matches!(t, BlockType::F32 | BlockType::F16 | BlockType::BF16))
}

/// Byte offsets of the f16 scale fields of a block.
fn half_fields(ty: BlockType) -> &'static [usize] {
    match ty {
        BlockType::Q4_0 | BlockType::Q5_0 | BlockType::Q8_0 => &[0],
        BlockType::Q4_1 | BlockType::Q5_1 | BlockType::Q4_K | BlockType::Q5_K => &[0, 2],
        BlockType::Q2_K => &[80, 82],
        BlockType::Q3_K => &[108],
        BlockType::Q6_K => &[208],
        BlockType::F32 | BlockType::F16 | BlockType::BF16 => &[],
    }
}

/// `rows` rows of `cols` elements of random blocks: random bytes, with the
/// f16 scales drawn from ±0.05 (random bits would give NaN and infinities).
fn random_rows(ty: BlockType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let size = ty.block_bytes() as usize;
    let blocks = rows * cols / ty.block_elements() as usize;
    let mut bytes: Vec<u8> = (0..blocks * size).map(|_| rng.random()).collect();
    for block in bytes.chunks_exact_mut(size) {
        for &at in half_fields(ty) {
            let d = f16::from_f32(rng.random_range(-0.05f32..0.05)).to_bits().to_le_bytes();
            block[at..at + 2].copy_from_slice(&d);
        }
    }
    bytes
}

/// MLX's own dequantization of an affine matrix.
fn mlx_dequantize(a: &Affine) -> Vec<f32> {
    let (rows, cols) = (a.rows as i32, a.cols as i32);
    let w = Array::from_slice(&a.weight, &[rows, cols * a.bits / 32]);
    let s = Array::from_slice(&a.scales, &[rows, cols / a.group_size]);
    let b = Array::from_slice(&a.biases, &[rows, cols / a.group_size]);
    // On the CPU stream whatever MLX's default device: the reference is MLX's
    // definition of the layout, bit for bit (a GPU kernel may fuse the
    // multiply-add and round once, 1 ulp away).
    let out = mlx_rs::with_device(mlx_rs::Device::cpu(), || dequantize(&w, &s, &b, a.group_size, a.bits)).expect("MLX dequantizes");
    out.eval().expect("MLX evaluates");
    assert_eq!(out.dtype(), Dtype::Float32);
    out.as_slice::<f32>().to_vec()
}

fn fixture() -> Gguf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/model/load/testdata/blocks.gguf");
    Gguf::open(&path).expect("the fixture parses")
}

/// The first element where `a` and `b` differ as f32 values (bit for bit,
/// except that +0 and -0 are equal: GGML's `(q - 8) * d` gives -0 where
/// `d * q + bias` gives +0).
fn bitwise_eq(a: &[f32], b: &[f32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits() && !(*x == 0.0 && *y == 0.0))
}

#[test]
fn every_block_type_dequantizes_like_the_gguf_package() {
    let gguf = fixture();
    for ty in SUPPORTED {
        let t = gguf.tensor(ty.name()).unwrap_or_else(|| panic!("fixture has {}", ty.name()));
        assert_eq!(t.ty, ty);
        let expected = gguf.tensor(&format!("{}.expected", ty.name())).expect("expected values");
        let (ours, theirs) = (gguf.dequantize(t).unwrap(), gguf.dequantize(expected).unwrap());
        if let Some(i) = bitwise_eq(&ours, &theirs) {
            panic!("{}: element {i} is {} here, {} in the gguf package", ty.name(), ours[i], theirs[i]);
        }
    }
}

#[test]
fn mlx_quantize_packs_codes_as_our_layout_says() {
    // MLX quantizes a random matrix; reading its packed words with our layout
    // (little-endian bit stream per row) must give what MLX dequantizes to.
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, cols) = (4, 256);
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let w = Array::from_slice(&values, &[rows as i32, cols as i32]);
    for bits in [2, 3, 4, 5, 6, 8] {
        for group_size in [32, 64, 128] {
            let (q, s, b) = quantize(&w, group_size, bits).expect("MLX quantizes");
            let theirs = dequantize(&q, &s, &b, group_size, bits).unwrap();
            let (s, b) = (s.as_dtype(Dtype::Float32).unwrap(), b.as_dtype(Dtype::Float32).unwrap());
            for a in [&q, &s, &b, &theirs] {
                a.eval().unwrap();
            }
            assert_eq!(q.dim(1) as usize, cols * bits as usize / 32, "{bits}-bit words per row");
            let ours = Affine {
                weight: q.as_slice::<u32>().to_vec(),
                scales: s.as_slice::<f32>().to_vec(),
                biases: b.as_slice::<f32>().to_vec(),
                rows,
                cols,
                bits,
                group_size,
            }
            .dequantize();
            let theirs = theirs.as_dtype(Dtype::Float32).unwrap();
            let theirs = theirs.as_slice::<f32>();
            let diff = ours.iter().zip(theirs).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            // MLX keeps the scales in the input's dtype (f32 here); only the order of operations may differ.
            assert!(diff <= 1e-6, "{bits}-bit, group {group_size}: our reading of MLX's packing differs by {diff}");
        }
    }
}

#[test]
fn exact_block_types_convert_bitwise_into_mlx_affine() {
    let mut rng = StdRng::seed_from_u64(20261126);
    for ty in [
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
        BlockType::Q3_K,
        BlockType::Q4_K,
        BlockType::Q5_K,
    ] {
        let (rows, cols) = (8, 512);
        let bytes = random_rows(ty, rows, cols, &mut rng);
        let reference = ty.dequantize(&bytes);
        let affine = ty.to_affine(&bytes, cols).expect("quantized type");
        assert_eq!((affine.bits, affine.group_size), ty.affine_form().unwrap());
        assert_eq!(affine.weight.len(), rows * cols * affine.bits as usize / 32);
        let mlx = mlx_dequantize(&affine);
        if let Some(i) = bitwise_eq(&mlx, &reference) {
            panic!("{}: element {i} is {} through MLX, {} in GGML's dequantization", ty.name(), mlx[i], reference[i]);
        }
    }
}

#[test]
fn the_fixture_converts_into_mlx_affine_like_the_gguf_package_dequantizes() {
    let gguf = fixture();
    for ty in quantized() {
        let t = gguf.tensor(ty.name()).unwrap();
        let expected = gguf.dequantize(gguf.tensor(&format!("{}.expected", ty.name())).unwrap()).unwrap();
        let mlx = mlx_dequantize(&gguf.affine(t).unwrap().expect("quantized"));
        let range = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = mlx.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        match ty {
            BlockType::Q2_K | BlockType::Q6_K => assert!(diff <= range / 10.0, "{}: off by {diff}", ty.name()),
            _ => assert_eq!(diff, 0.0, "{}: MLX's dequantization differs from the gguf package's", ty.name()),
        }
    }
}

#[test]
fn our_reading_of_the_affine_layout_matches_mlx_for_every_type() {
    let mut rng = StdRng::seed_from_u64(3);
    for ty in quantized() {
        let bytes = random_rows(ty, 3, 256, &mut rng);
        let affine = ty.to_affine(&bytes, 256).unwrap();
        assert_eq!(bitwise_eq(&affine.dequantize(), &mlx_dequantize(&affine)), None, "{}", ty.name());
    }
}

/// Error of the requantized types against GGML's own dequantization, on
/// random blocks whose sub-scales are uniform over their whole range (a
/// worse case than real models, whose sub-scales within a super-block are
/// similar). Run with `--nocapture` to see the numbers; the bounds asserted
/// are the analytic ones (1/510 and 1/30 of a group's range).
#[test]
fn q6_k_and_q2_k_requantization_error() {
    let mut rng = StdRng::seed_from_u64(11);
    for (ty, levels) in [(BlockType::Q6_K, 255.0f32), (BlockType::Q2_K, 15.0)] {
        let (rows, cols) = (64, 1024);
        let bytes = random_rows(ty, rows, cols, &mut rng);
        let reference = ty.dequantize(&bytes);
        let affine = ty.to_affine(&bytes, cols).unwrap();
        let mlx = mlx_dequantize(&affine);
        let (mut worst, mut sum_err, mut sum_abs, mut sum_sq_err, mut sum_sq, mut exact_groups) = (0.0f32, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0);
        for (g, (want, got)) in reference.chunks(32).zip(mlx.chunks(32)).enumerate() {
            let (lo, hi) = want.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let range = hi - lo;
            let err = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err <= range / (2.0 * levels) * 1.0001 + 1e-9, "{} group {g}: error {err} over a range of {range}", ty.name());
            if err == 0.0 {
                exact_groups += 1;
            }
            if range > 0.0 {
                worst = worst.max(err / range);
            }
            for (a, b) in want.iter().zip(got) {
                let e = (a - b) as f64;
                sum_err += e.abs();
                sum_abs += a.abs() as f64;
                sum_sq_err += e * e;
                sum_sq += (*a as f64) * (*a as f64);
            }
        }
        let groups = reference.len() / 32;
        eprintln!(
            "{}: max error {:.4}% of a group's range, mean |error| {:.4}% of mean |w|, relative RMS error {:.4}%, {exact_groups}/{groups} groups exact",
            ty.name(),
            worst * 100.0,
            sum_err / sum_abs * 100.0,
            (sum_sq_err / sum_sq).sqrt() * 100.0,
        );
    }
}

#[test]
fn q3_k_stays_exact_at_the_widest_span_of_its_scales() {
    // Sub-scales -32 (elements 0..64) and +31 (64..128) in one group of 128,
    // every code -4: values 128*d and -124*d, the widest span (252 steps) the
    // 8-bit form must hold.
    let d = 0.0123f32;
    let mut block = vec![0u8; 110];
    block[108..110].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    for i in 0..4 {
        block[100 + i] = 0x0F; // low nibbles of sub-scales 4..8
        block[104 + i] = 0x0C; // their high bits; sub-scales 0..4 stay 0 (-32)
    }
    let scales = q3_k_scales(&block[96..108]);
    assert_eq!((scales[0], scales[4]), (-32, 31));
    let reference = BlockType::Q3_K.dequantize(&block);
    let d = f16::from_f32(d).to_f32();
    assert_eq!((reference[0], reference[64]), (128.0 * d, -124.0 * d));
    let affine = BlockType::Q3_K.to_affine(&block, 256).unwrap();
    assert_eq!(bitwise_eq(&mlx_dequantize(&affine), &reference), None);
}

/// MLX's own GGUF loader (which reads Q4_0, Q4_1 and Q8_0) and ours give the
/// default model's weights bit for bit.
#[test]
fn the_default_model_reads_like_mlx_s_own_gguf_loader() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let ours = Gguf::open(&path).expect("our reader");
    let theirs = mlx_rs::io::GgufFile::load(&path).expect("MLX's reader").arrays().expect("MLX's arrays");
    let mut checked = 0;
    for t in ours.tensors() {
        let values = ours.dequantize(t).unwrap();
        let mlx = match (theirs.get(&t.name), t.name.strip_suffix(".weight")) {
            (Some(w), _) if !t.ty.is_quantized() => w.as_dtype(Dtype::Float32).unwrap(),
            (_, Some(base)) => {
                let w = &theirs[&format!("{base}.weight")];
                let s = theirs[&format!("{base}.scales")].as_dtype(Dtype::Float32).unwrap();
                let b = theirs[&format!("{base}.biases")].as_dtype(Dtype::Float32).unwrap();
                let bits = w.dim(-1) * 32 / (s.dim(-1) * 32);
                dequantize(w, &s, &b, 32, bits).unwrap()
            }
            _ => panic!("MLX has no {}", t.name),
        };
        mlx.eval().unwrap();
        assert_eq!(mlx.shape(), t.shape().as_slice(), "{}", t.name);
        assert_eq!(bitwise_eq(mlx.as_slice::<f32>(), &values), None, "{} ({})", t.name, t.ty.name());
        checked += 1;
    }
    assert_eq!(checked, ours.tensors().len());
}

#[test]
fn widening_five_bit_codes_to_eight_keeps_every_value() {
    // Two rows of 64 elements (two groups each), codes 0..32 in a pattern.
    let (rows, cols) = (2usize, 64usize);
    let codes: Vec<u8> = (0..rows * cols).map(|i| ((i * 7 + i / 5) % 32) as u8).collect();
    let mut weight = Vec::new();
    for r in 0..rows {
        pack_row(&codes[r * cols..(r + 1) * cols], 5, &mut weight);
    }
    let five = Affine { weight, scales: vec![0.5, -0.25, 1.5, 0.125], biases: vec![-8.0, 3.0, 0.0, -1.0], rows, cols, bits: 5, group_size: 32 };
    let eight = five.widened(8);
    assert_eq!(eight.bits, 8);
    assert_eq!(eight.weight.len(), rows * cols / 4);
    assert_eq!(eight.dequantize(), five.dequantize());
    assert_eq!(eight.weight[0] & 0xFF, codes[0] as u32);
}
