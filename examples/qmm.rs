//! Times one quantized matmul (our primitive, both activation modes) against
//! f32 `matmul` through BLAS and MLX's own `quantized_matmul`, at several row
//! counts. For tuning `src/kernels` (e.g. `MLX_SERVING_QMM_SGEMM_ROWS`).
//!
//!   cargo run --release --example qmm -- [N] [K] [bits] [rows,rows,..]

use std::time::Instant;

use mlx_rs::{
    ops::{dequantize, matmul, quantize, quantized_matmul as mlx_qmm},
    random::{key, normal},
    Array,
};
use mlx_serving::kernels::{pack, quantized_matmul, Activations, Fuse, Isa, Layout, Matrix};

fn median_us(mut f: impl FnMut() -> Array) -> f64 {
    let mut times: Vec<f64> = (0..25)
        .map(|_| {
            let t = Instant::now();
            f().eval().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: i32 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1536);
    let k: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(576);
    let bits: i32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let rows: Vec<i32> = args.get(3).map_or(vec![1, 2, 4, 8, 16, 32, 64, 128, 256], |s| s.split(',').map(|r| r.parse().unwrap()).collect());
    let with_mlx = std::env::var_os("QMM_WITH_MLX").is_some();
    let w = normal::<f32>(&[n, k], None, None, &key(1).unwrap()).unwrap();
    let (wq, scales, biases) = quantize(&w, 32, bits).unwrap();
    let dense = dequantize(&wq, &scales, &biases, 32, bits).unwrap().transpose_axes(&[1, 0]).unwrap();
    dense.eval().unwrap();
    // The int8 kernels' layout, as a model keeps its matrices.
    let (pw, ps, pb) = pack(&wq, &scales, &biases).unwrap();
    for a in [&pw, &ps, &pb] {
        a.eval().unwrap();
    }
    let panels = Matrix { weight: &pw, scales: &ps, biases: &pb, layout: Layout::Panels { rows: n } };
    println!("N {n} K {k} bits {bits}, kernels {:?}; median us per call", Isa::in_use());
    println!("{:>5} {:>10} {:>10} {:>10} {:>10}", "rows", "int8", "f32", "sgemm", "mlx qmm");
    for m in rows {
        let x = normal::<f32>(&[m, k], None, None, &key(2).unwrap()).unwrap();
        x.eval().unwrap();
        let int8 = median_us(|| quantized_matmul(&x, panels, 32, bits, Activations::Int8, Isa::Auto, Fuse::default()).unwrap());
        let f32 = median_us(|| quantized_matmul(&x, Matrix::rows(&wq, &scales, &biases), 32, bits, Activations::F32, Isa::Auto, Fuse::default()).unwrap());
        let sgemm = median_us(|| matmul(&x, &dense).unwrap());
        let mlx = if with_mlx { median_us(|| mlx_qmm(&x, &wq, &scales, &biases, true, 32, bits).unwrap()) } else { f64::NAN };
        println!("{m:>5} {int8:>10.1} {f32:>10.1} {sgemm:>10.1} {mlx:>10.1}");
    }
}
