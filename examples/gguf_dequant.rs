//! Dumps our dequantization of a GGUF's tensors, for
//! `scripts/check_gguf_dequant.py` to compare with llama.cpp's Python reader
//! (PyPI `gguf`); prints, per tensor, the error of its MLX affine form
//! against the exact dequantization.
//!
//!   cargo run --release --example gguf_dequant -- model.gguf out_dir [tensors per type, default 3]
//!
//! Writes `out_dir/<tensor>.f32` (the exact dequantization) and, for quantized
//! types, `out_dir/<tensor>.affine.f32` (the MLX affine form, dequantized),
//! little-endian f32 in MLX's row-major order.

use std::{collections::HashMap, path::PathBuf};

use mlx_serving::model::load::gguf::Gguf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: gguf_dequant <model.gguf> <out_dir> [tensors per type]";
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let per_type: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    std::fs::create_dir_all(&out)?;
    let gguf = Gguf::open(&path)?;
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    for t in gguf.tensors() {
        let n = seen.entry(t.ty.name()).or_default();
        if *n >= per_type {
            continue;
        }
        *n += 1;
        let exact = gguf.dequantize(t)?;
        std::fs::write(out.join(format!("{}.f32", t.name)), bytes(&exact))?;
        let Some(affine) = gguf.affine(t)? else {
            println!("{{\"tensor\":\"{}\",\"type\":\"{}\",\"form\":\"dense\"}}", t.name, t.ty.name());
            continue;
        };
        let approx = affine.dequantize();
        std::fs::write(out.join(format!("{}.affine.f32", t.name)), bytes(&approx))?;
        let (mut max_err, mut sq_err, mut sq, mut exact_values) = (0f64, 0f64, 0f64, 0usize);
        for (a, b) in exact.iter().zip(&approx) {
            let e = (*a as f64 - *b as f64).abs();
            max_err = max_err.max(e);
            sq_err += e * e;
            sq += (*a as f64) * (*a as f64);
            exact_values += (a.to_bits() == b.to_bits()) as usize;
        }
        let max_abs = exact.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        println!(
            "{{\"tensor\":\"{}\",\"type\":\"{}\",\"bits\":{},\"group\":{},\"max_err\":{max_err:e},\"max_err_rel_to_max_abs\":{:e},\"rel_rms_err\":{:e},\"exact_fraction\":{}}}",
            t.name,
            t.ty.name(),
            affine.bits,
            affine.group_size,
            max_err / max_abs.max(f64::MIN_POSITIVE),
            (sq_err / sq.max(f64::MIN_POSITIVE)).sqrt(),
            exact_values as f64 / exact.len() as f64,
        );
    }
    Ok(())
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
