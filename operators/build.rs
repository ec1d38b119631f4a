//! With `--features cuda`, compiles `kernels/*.cu` to PTX in `OUT_DIR` (the way
//! candle-kernels builds its own), which `backend::cuda` embeds. nvcc is found through
//! `NVCC`, then `CUDA_HOME/bin/nvcc`, then `PATH`; the architecture is
//! `CUDA_COMPUTE_CAP` (default 90). Without the feature nothing is compiled.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel sources, compiled one PTX module each.
const SOURCES: &[&str] = &["train"];

fn main() {
    for name in SOURCES {
        println!("cargo:rerun-if-changed=kernels/{name}.cu");
    }
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = nvcc();
    for name in SOURCES {
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "--fmad=false",
                &format!("-arch=sm_{cap}"),
                "-o",
            ])
            .arg(&ptx)
            .arg(Path::new("kernels").join(format!("{name}.cu")))
            .status()
            .unwrap_or_else(|e| panic!("cannot run nvcc ({}): {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on kernels/{name}.cu");
    }
}

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin/nvcc");
        if p.exists() {
            return p;
        }
    }
    "nvcc".into()
}
