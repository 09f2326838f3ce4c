//! With the `cuda` feature, compiles the CUDA kernels of the fast ops
//! (`src/ops/kernels.cu`) to PTX with nvcc (`NVCC`, else `nvcc` on PATH), for
//! the compute capability in `CUDA_COMPUTE_CAP` (default 90: H100/H200).
//! Without it there is nothing to build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/ops/kernels.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("kernels.ptx");
    // The source beside its PTX, for src/ops/cuda.rs to check that they match.
    std::fs::copy("src/ops/kernels.cu", out_dir.join("kernels.cu"))
        .unwrap_or_else(|e| panic!("copying src/ops/kernels.cu into {}: {e}", out_dir.display()));
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("--gpu-architecture=compute_{cap}"), "src/ops/kernels.cu", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {nvcc} for src/ops/kernels.cu: {e} (set NVCC or put nvcc on PATH)"));
    assert!(status.success(), "{nvcc} failed on src/ops/kernels.cu ({status})");
}
