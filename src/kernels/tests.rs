//! Our quantized matmul against MLX's own `quantized_matmul`, on random weights
//! of every supported bits / group size and on shapes that fill no tile evenly;
//! our attention against attention composed from MLX's ops.

use mlx_rs::{
    ops::{indexing::IndexOp, quantize, quantized_matmul as mlx_qmm},
    random::{key, normal},
    Array,
};

use super::{quantized_matmul, Activations, Fuse, Isa, Layout, Matrix};

/// Largest |a - b| relative to the largest |b|.
fn relative_error(a: &Array, b: &Array) -> f32 {
    let (a, b) = (a.as_slice::<f32>(), b.as_slice::<f32>());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) / scale
}

/// Kernels to check: every set this CPU runs.
fn isas() -> Vec<Isa> {
    [Isa::Auto, Isa::Avx2, Isa::Avx512, Isa::AvxVnni].into_iter().filter(|i| i.available()).collect()
}

/// Our kernels are CPU primitives: where MLX's device is a GPU the model
/// composes MLX's ops instead, and a primitive built on a GPU stream cannot run.
fn on_gpu() -> bool {
    let gpu = crate::device::backend().is_gpu();
    if gpu {
        eprintln!("skipped: our CPU kernels do not run where MLX's device is a GPU");
    }
    gpu
}

/// `wq`'s three arrays regrouped in panels, evaluated (as a model keeps them).
fn packed(wq: &Array, scales: &Array, biases: &Array) -> (Array, Array, Array) {
    let p = super::pack(wq, scales, biases).unwrap();
    for a in [&p.0, &p.1, &p.2] {
        a.eval().unwrap();
    }
    p
}

fn check(activations: Activations, tolerance: f32) {
    if on_gpu() {
        return;
    }
    let mut seed = 0;
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            for (n, k) in [(37, 384), (75, 640), (16, 128)] {
                seed += 1;
                let w = normal::<f32>(&[n, k], None, None, &key(seed).unwrap()).unwrap();
                let (wq, scales, biases) = quantize(&w, group, bits).unwrap();
                let (pw, ps, pb) = packed(&wq, &scales, &biases);
                // Either layout, whichever the mode reads (the other is regrouped for the call).
                let layouts = [Matrix::rows(&wq, &scales, &biases), Matrix { weight: &pw, scales: &ps, biases: &pb, layout: Layout::Panels { rows: n } }];
                for m in [1, 3, 9, 17, 64, 257] {
                    // An offset, so that the groups' sums (which carry the biases) are not near zero.
                    let x = normal::<f32>(&[m, k], 0.3, None, &key(1000 + seed).unwrap()).unwrap();
                    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, group, bits).unwrap();
                    for isa in isas() {
                        for matrix in layouts {
                            let got = quantized_matmul(&x, matrix, group, bits, activations, isa, Fuse::default()).unwrap();
                            assert_eq!(got.shape(), &[m, n]);
                            let err = relative_error(&got, &expected);
                            assert!(
                                err <= tolerance,
                                "{activations:?} {isa:?} {:?}: bits {bits}, group {group}, M {m}, N {n}, K {k}: relative error {err}",
                                matrix.layout
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn exact_mode_matches_mlx_quantized_matmul() {
    check(Activations::F32, 1e-5);
}

#[test]
fn int8_mode_matches_mlx_quantized_matmul_within_activation_rounding() {
    // Activations rounded to int8 per 32-block: up to 1/254 of each block's
    // largest |x| per element. With N(0, 1) weights the affine offset cancels
    // most of `scale * q`, whose rounding error is what remains: measured up
    // to ~1.5e-2 of the largest output (at M = 1, N = 75), typically 3e-3.
    check(Activations::Int8, 3e-2);
}

#[test]
fn batched_inputs_keep_their_leading_dimensions() {
    let w = normal::<f32>(&[40, 256], None, None, &key(7).unwrap()).unwrap();
    let (wq, scales, biases) = quantize(&w, 64, 4).unwrap();
    let x = normal::<f32>(&[2, 3, 256], None, None, &key(8).unwrap()).unwrap();
    let got = quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), 64, 4, Activations::F32, Isa::Auto, Fuse::default()).unwrap();
    assert_eq!(got.shape(), &[2, 3, 40]);
    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, 64, 4).unwrap();
    assert!(relative_error(&got, &expected) <= 1e-5);
}

#[test]
fn fused_norm_and_residual_match_composed_ops() {
    use mlx_rs::fast::rms_norm;
    // Decode rows (our kernel) and a prefill's rows (dequantized tiles + sgemm); 4 bits
    // (ours) and 2 bits (MLX's op composed with the norm and the add).
    for (seed, (rows, bits)) in [(1, 4), (5, 8), (64, 4), (3, 2)].into_iter().enumerate() {
        let seed = 40 + 10 * seed as u64;
        let w = normal::<f32>(&[96, 256], None, None, &key(seed).unwrap()).unwrap();
        let (wq, scales, biases) = quantize(&w, 64, bits).unwrap();
        let x = normal::<f32>(&[1, rows, 256], None, None, &key(seed + 1).unwrap()).unwrap().multiply(Array::from_f32(3.0)).unwrap();
        let norm = normal::<f32>(&[256], None, None, &key(seed + 2).unwrap()).unwrap();
        // A strided residual: the kernel gathers it.
        let residual = normal::<f32>(&[1, 96, rows], None, None, &key(seed + 3).unwrap()).unwrap().transpose_axes(&[0, 2, 1]).unwrap();
        let expected =
            residual.add(mlx_qmm(&rms_norm(&x, Some(&norm), 1e-5).unwrap(), &wq, &scales, &biases, true, 64, bits).unwrap()).unwrap();
        for activations in [Activations::F32, Activations::Int8] {
            let fuse = Fuse { norm: Some((&norm, 1e-5)), add: Some(&residual) };
            let got = quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), 64, bits, activations, Isa::Auto, fuse).unwrap();
            assert_eq!(got.shape(), expected.shape());
            let tolerance = if activations == Activations::F32 { 1e-5 } else { 3e-2 };
            let err = relative_error(&got, &expected);
            assert!(err <= tolerance, "rows {rows} bits {bits} {activations:?}: relative error {err}");
        }
    }
}

#[test]
fn a_rows_product_does_not_depend_on_the_rows_beside_it() {
    // Bit for bit: a prompt's logits must not change with how many rows share
    // a product (a prefill chunk's size, prompts grouped, a decode batch, a
    // prefill chunk beside decode rows). The int8 mode at every row count:
    // every remainder of the tiles of 4 and 8 rows and prefill-sized products;
    // the exact mode below the sgemm threshold (48 rows), where its tile
    // kernels serve.
    if on_gpu() {
        return;
    }
    let int8_sizes: Vec<i32> = (1..=17).chain([23, 64, 100, 257]).collect();
    for (bits, group) in [(4, 32), (8, 32), (4, 64), (8, 128)] {
        let w = normal::<f32>(&[75, 640], None, None, &key(70 + bits as u64 + group as u64).unwrap()).unwrap();
        let (wq, scales, biases) = quantize(&w, group, bits).unwrap();
        let (pw, ps, pb) = packed(&wq, &scales, &biases);
        let panels = Matrix { weight: &pw, scales: &ps, biases: &pb, layout: Layout::Panels { rows: 75 } };
        let x = normal::<f32>(&[257, 640], 0.3, None, &key(80 + bits as u64).unwrap()).unwrap();
        for isa in isas() {
            for (activations, sizes, matrix) in [
                (Activations::Int8, &int8_sizes[..], panels),
                (Activations::F32, &[1, 2, 3, 4, 5, 17, 47][..], Matrix::rows(&wq, &scales, &biases)),
            ] {
                let product = |rows: &Array| quantized_matmul(rows, matrix, group, bits, activations, isa, Fuse::default()).unwrap();
                // Every row alone, against the same row in products of every size,
                // starting at row 0 and (for the larger ones) further in.
                let alone: Vec<Array> = (0..257).map(|i| product(&x.index(i..i + 1))).collect();
                for &m in sizes {
                    for start in [0, 257 - m].into_iter().filter(|&s| s == 0 || m > 8) {
                        let together = product(&x.index(start..start + m));
                        for i in 0..m {
                            assert_eq!(
                                together.index(i..i + 1).as_slice::<f32>(),
                                alone[(start + i) as usize].as_slice::<f32>(),
                                "{activations:?} {isa:?} bits {bits} group {group}: row {} of {m} from {start} differs from the row alone",
                                start + i
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_int8_mode_gives_the_same_bits_on_every_instruction_set() {
    // The integer dot products are exact on every set (VNNI, or maddubs with
    // 16-bit sums that cannot overflow) and the float steps are the same
    // instructions, so a machine's answers do not depend on its CPU's extensions.
    if on_gpu() {
        return;
    }
    let sets: Vec<Isa> = [Isa::Avx2, Isa::Avx512, Isa::AvxVnni].into_iter().filter(|i| i.available()).collect();
    for (bits, group) in [(4, 32), (8, 32), (4, 128), (8, 64)] {
        let w = normal::<f32>(&[43, 512], None, None, &key(90 + bits as u64).unwrap()).unwrap();
        let (wq, scales, biases) = quantize(&w, group, bits).unwrap();
        // Large activations make the 16-bit sums of the AVX2 path as large as they get.
        let x = normal::<f32>(&[13, 512], 0.5, 4.0, &key(91).unwrap()).unwrap();
        let results: Vec<Array> = sets
            .iter()
            .map(|&isa| quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), group, bits, Activations::Int8, isa, Fuse::default()).unwrap())
            .collect();
        for (isa, got) in sets.iter().zip(&results).skip(1) {
            assert_eq!(got.as_slice::<f32>(), results[0].as_slice::<f32>(), "bits {bits} group {group}: {isa:?} differs from {:?}", sets[0]);
        }
    }
}

#[test]
fn panels_hold_the_matrix_and_give_back_its_rows() {
    use mlx_rs::ops::dequantize;
    for (n, bits, group) in [(40, 4, 32), (37, 8, 64), (3, 4, 128)] {
        let w = normal::<f32>(&[n, 256], None, None, &key(95).unwrap()).unwrap();
        let (wq, scales, biases) = quantize(&w, group, bits).unwrap();
        let (pw, ps, pb) = packed(&wq, &scales, &biases);
        let panels = (n + 7) / 8;
        assert_eq!(pw.shape(), &[panels, 256 * bits / 32, 8]);
        assert_eq!(ps.shape(), &[panels, 256 / group, 8]);
        let (uw, us, ub) = super::unpack(&pw, &ps, &pb, n).unwrap();
        assert_eq!(uw.as_slice::<u32>(), wq.as_slice::<u32>());
        assert_eq!(us.as_slice::<f32>(), scales.as_slice::<f32>());
        assert_eq!(ub.as_slice::<f32>(), biases.as_slice::<f32>());
        // An embedding lookup of ids [2, 3] from the panels: the rows themselves.
        let ids = Array::from_slice(&[0, n - 1, 1, n / 2, 0, 2], &[2, 3]);
        let (rw, rs, rb) = super::panel_rows(&pw, &ps, &pb, &ids).unwrap();
        let got = dequantize(&rw, &rs, &rb, group, bits).unwrap();
        let expected = dequantize(&wq.take_axis(&ids, 0).unwrap(), &scales.take_axis(&ids, 0).unwrap(), &biases.take_axis(&ids, 0).unwrap(), group, bits).unwrap();
        assert_eq!(got.shape(), &[2, 3, 256]);
        assert_eq!(got.as_slice::<f32>(), expected.as_slice::<f32>());
    }
}

#[test]
fn unsupported_bits_fall_back_to_mlx() {
    let w = normal::<f32>(&[16, 128], None, None, &key(9).unwrap()).unwrap();
    let (wq, scales, biases) = quantize(&w, 64, 2).unwrap();
    let x = normal::<f32>(&[2, 128], None, None, &key(10).unwrap()).unwrap();
    let got = quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), 64, 2, Activations::Int8, Isa::Auto, Fuse::default()).unwrap();
    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, 64, 2).unwrap();
    assert_eq!(relative_error(&got, &expected), 0.0);
}

#[test]
fn the_runtime_matches_the_headers() {
    super::check_runtime().unwrap();
}

/// Attention composed from MLX's ops, in f32: the reference for our kernel.
fn reference_attention(q: &Array, k: &Array, v: &Array, mask: &Array, scale: f32) -> Array {
    use mlx_rs::ops::{matmul, select, softmax_axis};
    let (heads, kv_heads) = (q.dim(1), k.dim(1));
    let repeat = |a: &Array| Array::repeat_axis::<f32>(a.clone(), heads / kv_heads, 1).unwrap();
    let scores = matmul(&q.multiply(Array::from_f32(scale)).unwrap(), repeat(k).swap_axes(-1, -2).unwrap()).unwrap();
    let scores = select(mask, &scores, Array::from_f32(f32::NEG_INFINITY)).unwrap();
    let out = matmul(softmax_axis(&scores, -1, true).unwrap(), repeat(v)).unwrap();
    // [rows, heads, len, dim] → [rows, len, heads * dim], the kernel's layout.
    let (rows, len, dim) = (q.dim(0), q.dim(2), q.dim(3));
    out.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[rows, len, heads * dim]).unwrap()
}

#[test]
fn attention_matches_composed_attention() {
    let mut seed = 100;
    // (rows, heads, kv_heads, len, columns, head_dim): decode, prefill chunks after a context, GQA and not.
    for (rows, heads, kv_heads, len, columns, dim) in
        [(1, 9, 3, 1, 300, 64), (4, 9, 3, 1, 77, 64), (1, 9, 3, 37, 261, 64), (2, 4, 4, 20, 20, 32), (3, 8, 2, 5, 140, 128), (1, 2, 1, 40, 1100, 256)]
    {
        seed += 1;
        let normal = |shape: &[i32], s: u64| normal::<f32>(shape, None, None, &key(s).unwrap()).unwrap();
        let q = normal(&[rows, heads, len, dim], seed);
        // The cache's layout: a view of the first `columns` of a larger capacity.
        let capacity = columns + 50;
        let k = normal(&[rows, kv_heads, capacity, dim], seed + 1000).index((.., .., ..columns, ..));
        let v = normal(&[rows, kv_heads, capacity, dim], seed + 2000).index((.., .., ..columns, ..));
        let scale = 1.0 / (dim as f32).sqrt();
        // Causal with per-row left padding and a sliding window, as the cache builds it,
        // plus one row of scattered holes (any mask must work).
        let mut allowed = Vec::new();
        for row in 0..rows {
            let pad = row * 3;
            for i in 0..len {
                let position = columns - len + i;
                for c in 0..columns {
                    let window = row != 1 || position - c < 24;
                    let hole = row == 2 && (c * 7 + i) % 5 == 0 && c != position;
                    allowed.push(c == position || (c <= position && c >= pad && window && !hole));
                }
            }
        }
        let mask = Array::from_slice(&allowed, &[rows, 1, len, columns]);
        let expected = reference_attention(&q, &k, &v, &mask, scale);
        let got = super::attention(&q, &k, &v, Some(&mask), false, scale).unwrap();
        let Some(got) = got else {
            assert!(!Isa::Avx2.available() || on_gpu(), "the kernel serves these shapes on an AVX2 CPU");
            return;
        };
        assert_eq!(got.shape(), expected.shape());
        let err = relative_error(&got, &expected);
        assert!(err <= 1e-5, "rows {rows} heads {heads}/{kv_heads} len {len} columns {columns} dim {dim}: relative error {err}");
        // Without a mask: causal, and nothing hidden.
        for causal in [true, false] {
            let allowed: Vec<bool> =
                (0..len).flat_map(|i| (0..columns).map(move |c| !causal || c <= columns - len + i)).collect();
            let mask = Array::from_slice(&allowed, &[1, 1, len, columns]);
            let expected = reference_attention(&q, &k, &v, &mask, scale);
            let got = super::attention(&q, &k, &v, None, causal, scale).unwrap().unwrap();
            let err = relative_error(&got, &expected);
            assert!(err <= 1e-5, "causal {causal}, rows {rows} len {len} columns {columns}: relative error {err}");
        }
    }
}

#[test]
fn an_attention_rows_output_does_not_depend_on_the_rows_beside_it() {
    // Bit for bit: a query row alone gives what it gives among other rows
    // (a prefill chunk of another size, a sliding window, padding), for
    // grouped heads of 64 and 256 dimensions.
    if on_gpu() || !Isa::Avx2.available() {
        return;
    }
    for (heads, kv_heads, dim, len, columns, window, pad) in [(9, 3, 64, 37, 300, None, 0), (4, 1, 256, 21, 60, Some(9), 3), (6, 2, 64, 16, 16, Some(5), 0)] {
        let normal = |shape: &[i32], s: u64| normal::<f32>(shape, None, None, &key(s).unwrap()).unwrap();
        let q = normal(&[1, heads, len, dim], 300 + dim as u64);
        let k = normal(&[1, kv_heads, columns, dim], 301);
        let v = normal(&[1, kv_heads, columns, dim], 302);
        let allowed = |i: i32, c: i32| {
            let position = columns - len + i;
            c == position || (c <= position && c >= pad && window.is_none_or(|w| position - c < w))
        };
        let mask: Vec<bool> = (0..len).flat_map(|i| (0..columns).map(move |c| allowed(i, c))).collect();
        let together = super::attention(&q, &k, &v, Some(&Array::from_slice(&mask, &[1, 1, len, columns])), false, 0.125).unwrap().unwrap();
        for i in 0..len {
            let row: Vec<bool> = (0..columns).map(|c| allowed(i, c)).collect();
            let alone = super::attention(&q.index((.., .., i..i + 1, ..)), &k, &v, Some(&Array::from_slice(&row, &[1, 1, 1, columns])), false, 0.125)
                .unwrap()
                .unwrap();
            assert_eq!(
                together.index((.., i..i + 1, ..)).as_slice::<f32>(),
                alone.as_slice::<f32>(),
                "heads {heads}/{kv_heads} dim {dim} window {window:?} pad {pad}: query {i} of {len} differs alone"
            );
        }
    }
}

/// `act(gate) * up` composed from MLX's ops with its own `sigmoid`:
/// the reference for our gated-activation kernel.
fn reference_glu(g: &Array, u: &Array, kind: super::Gate) -> Array {
    use mlx_rs::ops::sigmoid;
    let act = match kind {
        super::Gate::Silu => g.multiply(sigmoid(g).unwrap()).unwrap(),
        super::Gate::GeluTanh => {
            // (1 + tanh(z)) / 2 as sigmoid(2z): the same function without tanh's
            // cancellation near -1 (which would make the reference the less exact one).
            let inner = g.add(g.multiply(g).unwrap().multiply(g).unwrap().multiply(Array::from_f32(0.044715)).unwrap()).unwrap();
            g.multiply(sigmoid(&inner.multiply(Array::from_f32(2.0 * 0.797_884_6)).unwrap()).unwrap()).unwrap()
        }
    };
    act.multiply(u).unwrap()
}

#[test]
fn glu_matches_composed_activation() {
    use mlx_rs::ops::concatenate;
    // Decode rows, a prefill chunk split over the pool, widths that fill no vector evenly.
    for (seed, (rows, width)) in [(1, 1536), (4, 37), (300, 1536), (3, 8)].into_iter().enumerate() {
        let seed = seed as u64 * 10 + 500;
        let normal = |s: u64| normal::<f32>(&[1, rows, width], None, None, &key(s).unwrap()).unwrap().multiply(Array::from_f32(4.0)).unwrap();
        // Extremes where e^-g overflows or vanishes.
        let g = concatenate(&[normal(seed), Array::from_slice(&vec![-100.0f32; width as usize], &[1, 1, width])], 1).unwrap();
        let g = concatenate(&[g, Array::from_slice(&vec![90.0f32; width as usize], &[1, 1, width])], 1).unwrap();
        let u = concatenate(&[normal(seed + 1), Array::ones::<f32>(&[1, 2, width]).unwrap()], 1).unwrap();
        for kind in [super::Gate::Silu, super::Gate::GeluTanh] {
            let expected = reference_glu(&g, &u, kind);
            let stacked = concatenate(&[&g, &u], 2).unwrap();
            // Stacked (one projection's output), separate, and a non-contiguous view.
            let transposed = u.transpose_axes(&[0, 2, 1]).unwrap().contiguous().unwrap().transpose_axes(&[0, 2, 1]).unwrap();
            for (what, got) in [
                ("stacked", super::glu(&stacked, None, kind)),
                ("separate", super::glu(&g, Some(&u), kind)),
                ("strided", super::glu(&g, Some(&transposed), kind)),
            ] {
                let Some(got) = got.unwrap() else {
                    assert!(!Isa::Avx2.available() || on_gpu(), "the kernel serves f32 on an AVX2 CPU");
                    return;
                };
                assert_eq!(got.shape(), expected.shape(), "{what}");
                for (i, (a, b)) in got.as_slice::<f32>().iter().zip(expected.as_slice::<f32>()).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * b.abs() + 1e-6, "{kind:?} {what} rows {rows} width {width} element {i}: {a} vs {b}");
                }
            }
        }
    }
}

/// The pooled dense product (`dense.cpp`) against MLX's: `x @ w + bias`, and
/// `x @ w^T`, over batches of rows of several widths: tiles of rows and
/// panels of columns cut short, and inputs past one block (256) and not a
/// multiple of 16.
#[test]
fn dense_matmul_matches_mlx() {
    use mlx_rs::ops::addmm;
    let worst = |a: &Array, b: &Array| {
        let (a, b) = (a.as_slice::<f32>(), b.as_slice::<f32>());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
    };
    for (rows, k, n) in [(&[3, 7][..], 48, 100), (&[2, 13][..], 300, 70), (&[1][..], 16, 32), (&[40][..], 520, 384)] {
        let x = normal::<f32>(&[rows, &[k]].concat(), None, None, None).unwrap();
        let w = normal::<f32>(&[k, n], None, None, None).unwrap();
        let bias = normal::<f32>(&[n], None, None, None).unwrap();
        let Some(got) = super::dense_matmul(&x, &w, Some(&bias), false).unwrap() else {
            return crate::tokenizer::say("SKIPPED: dense_matmul does not serve on this platform");
        };
        let want = addmm(&bias, &x, &w, None, None).unwrap();
        assert_eq!(got.shape(), &[rows, &[n]].concat()[..]);
        let bound = 2e-6 * k as f32;
        assert!(worst(&got, &want) < bound, "{k} x {n} with bias: {}", worst(&got, &want));
        let wt = w.transpose_axes(&[1, 0]).unwrap().contiguous().unwrap();
        let got = super::dense_matmul(&x, &wt, None, true).unwrap().unwrap();
        let want = mlx_rs::ops::matmul(&x, &w).unwrap();
        assert!(worst(&got, &want) < bound, "{k} x {n} transposed: {}", worst(&got, &want));
        // Not served: a width that does not match, or another dtype.
        if k != n {
            assert!(super::dense_matmul(&x, &wt, None, false).unwrap().is_none());
        }
        assert!(super::dense_matmul(&x.as_dtype(mlx_rs::Dtype::Float16).unwrap(), &w, None, false).unwrap().is_none());
    }
}

#[test]
fn exact_gelu_matches_mlx_erf() {
    use mlx_rs::ops::erf;
    // Every 1/64 over [-10, 10] plus widths that fill no vector evenly.
    for n in [1281usize, 7, 1536] {
        let values: Vec<f32> = (0..n).map(|i| -10.0 + 20.0 * i as f32 / (n.max(2) - 1) as f32).collect();
        let x = Array::from_slice(&values, &[1, n as i32]);
        let Some(got) = super::gelu_erf(&x).unwrap() else {
            assert!(!Isa::Avx2.available() || on_gpu(), "the kernel serves f32 on an AVX2 CPU");
            return;
        };
        let inner = erf(x.multiply(Array::from_f32(std::f32::consts::FRAC_1_SQRT_2)).unwrap()).unwrap();
        let want = x.multiply(inner.add(Array::from_f32(1.0)).unwrap()).unwrap().multiply(Array::from_f32(0.5)).unwrap();
        for ((a, b), v) in got.as_slice::<f32>().iter().zip(want.as_slice::<f32>()).zip(&values) {
            assert!((a - b).abs() <= 1e-6 * v.abs().max(1.0), "gelu({v}): {a} vs {b}");
        }
    }
}
