//! Our quantized matmul against MLX's own `quantized_matmul`, on random weights
//! of every supported bits / group size and on shapes that fill no tile evenly.

use mlx_rs::{
    ops::{quantize, quantized_matmul as mlx_qmm},
    random::{key, normal},
    Array,
};

use super::{quantized_matmul, Activations, Isa};

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

fn check(activations: Activations, tolerance: f32) {
    let mut seed = 0;
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            for (n, k) in [(37, 384), (75, 640)] {
                seed += 1;
                let w = normal::<f32>(&[n, k], None, None, &key(seed).unwrap()).unwrap();
                let (wq, scales, biases) = quantize(&w, group, bits).unwrap();
                for m in [1, 3, 17, 64, 257] {
                    // An offset, so that the groups' sums (which carry the biases) are not near zero.
                    let x = normal::<f32>(&[m, k], 0.3, None, &key(1000 + seed).unwrap()).unwrap();
                    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, group, bits).unwrap();
                    for isa in isas() {
                        let got = quantized_matmul(&x, &wq, &scales, &biases, group, bits, activations, isa).unwrap();
                        assert_eq!(got.shape(), &[m, n]);
                        let err = relative_error(&got, &expected);
                        assert!(
                            err <= tolerance,
                            "{activations:?} {isa:?}: bits {bits}, group {group}, M {m}, N {n}, K {k}: relative error {err}"
                        );
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
    let got = quantized_matmul(&x, &wq, &scales, &biases, 64, 4, Activations::F32, Isa::Auto).unwrap();
    assert_eq!(got.shape(), &[2, 3, 40]);
    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, 64, 4).unwrap();
    assert!(relative_error(&got, &expected) <= 1e-5);
}

#[test]
fn unsupported_bits_fall_back_to_mlx() {
    let w = normal::<f32>(&[16, 128], None, None, &key(9).unwrap()).unwrap();
    let (wq, scales, biases) = quantize(&w, 64, 2).unwrap();
    let x = normal::<f32>(&[2, 128], None, None, &key(10).unwrap()).unwrap();
    let got = quantized_matmul(&x, &wq, &scales, &biases, 64, 2, Activations::Int8, Isa::Auto).unwrap();
    let expected = mlx_qmm(&x, &wq, &scales, &biases, true, 64, 2).unwrap();
    assert_eq!(relative_error(&got, &expected), 0.0);
}

#[test]
fn the_runtime_matches_the_headers() {
    super::check_runtime().unwrap();
}
