//! napi-rs setup, plus on Linux: find MLX's runtime in the project-local prefix
//! without LD_LIBRARY_PATH, and route MLX's BLAS calls to OpenBLAS.

use std::{env, path::PathBuf};

fn main() {
    napi_build::setup();
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        link_linux_runtime();
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
