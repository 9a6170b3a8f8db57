//! napi-rs setup, plus on Linux: find MLX's runtime in the project-local prefix
//! without LD_LIBRARY_PATH, route MLX's BLAS calls to OpenBLAS, and compile our
//! quantized-matmul MLX primitive (src/kernels/*.cpp) against MLX's headers.

use std::{env, path::PathBuf};

fn main() {
    napi_build::setup();
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        link_linux_runtime();
        build_kernels();
    }
}

fn link_linux_runtime() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let mlx_lib = root.join(".mlx/mlx/lib");
    // In a clone, the addon (`mlx-serving.*.node`) sits in the package root next
    // to `.mlx/`; in the npm platform package (scripts/pack.sh), next to
    // `runtime/`, which also carries OpenBLAS and its Fortran runtime. Old-style
    // RPATH (not RUNPATH) so that it also serves the libraries' own
    // dependencies (OpenBLAS's libgfortran).
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/.mlx/mlx/lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/runtime/mlx/lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/runtime/lib");
    // Test, bench and example binaries live under target/. (Cargo has no
    // instruction for the lib's unit-test binary alone, so the addon carries
    // this path too; elsewhere it names nothing and is skipped.)
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", mlx_lib.display());
    // libmlx from the wheel needs cblas/lapack symbols and carries the reference
    // BLAS for them. A direct dependency of ours is searched before libmlx's own
    // dependencies, so OpenBLAS serves those calls.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-lopenblas");
}

/// The primitive (baseline CPU) and its SIMD kernels, each kernel set in its own
/// translation unit with its own target flags; qmm.cpp calls one only after
/// checking the CPU at run time. `DEP_MLX_INCLUDE` comes from mlx-sys: MLX's
/// headers (the ones libmlx.so was built from) and mlx-c's.
fn build_kernels() {
    let includes = env::var_os("DEP_MLX_INCLUDE").expect("mlx-sys publishes MLX's include directories");
    let includes: Vec<PathBuf> = env::split_paths(&includes).collect();
    for file in [
        "qmm.cpp",
        "qmm_api.h",
        "qmm_kernels.h",
        "qmm_avx2.cpp",
        "qmm_avx512.cpp",
        "qmm_avxvnni.cpp",
        "attention.cpp",
        "attention_api.h",
        "attention_avx2.cpp",
        "arrays.h",
        "glu.cpp",
        "dense.cpp",
        "dense_api.h",
        "dense_avx512.cpp",
        "glu_api.h",
        "glu_avx2.cpp",
        "simd.h",
    ] {
        println!("cargo:rerun-if-changed=src/kernels/{file}");
    }
    let build = |files: &[&str], flags: &[&str], name: &str| {
        let mut b = cc::Build::new();
        b.cpp(true).std("c++20").opt_level(3).warnings(true);
        // No fused multiply-adds the source does not write: a row's result
        // must not depend on which instantiation (rows per tile) computed it.
        b.flag("-ffp-contract=off");
        for dir in &includes {
            // -isystem: MLX's headers are not ours to warn about.
            b.flag(format!("-isystem{}", dir.display()));
        }
        for f in files {
            b.file(format!("src/kernels/{f}"));
        }
        for f in flags {
            b.flag(*f);
        }
        b.compile(name);
    };
    build(&["qmm.cpp", "attention.cpp", "glu.cpp", "dense.cpp"], &[], "mlx_serving_qmm");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build(&["qmm_avx2.cpp", "attention_avx2.cpp", "glu_avx2.cpp"], &["-mavx2", "-mfma", "-mf16c"], "mlx_serving_qmm_avx2");
        build(
            &["qmm_avx512.cpp", "dense_avx512.cpp"],
            &["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
            "mlx_serving_qmm_avx512",
        );
        build(&["qmm_avxvnni.cpp"], &["-mavx2", "-mfma", "-mf16c", "-mavxvnni"], "mlx_serving_qmm_avxvnni");
    }
}
