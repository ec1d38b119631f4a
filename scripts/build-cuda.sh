#!/usr/bin/env bash
# Builds freshen's CUDA binary on a machine with no GPU and no system CUDA, from NVIDIA's
# CUDA 13.0 wheels on PyPI installed into a folder of the project's (never system-wide).
# This script is the recipe; ../shared/notes/gpu.md records how it was found.
#
#   scripts/build-cuda.sh            # -> dist/freshen-cuda.xz (and dist/freshen-cuda), and
#                                    #    dist/operators-cuda-tests (the CUDA test binary)
#
# Why each piece:
# - The wheels are pinned to 13.0, the GPU machine's driver: candle's kernels are PTX that
#   the driver compiles when they load, and PTX from a newer nvcc fails there with
#   CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
# - cudarc's build script reads the CUDA version from CUDARC_CUDA_VERSION; candle-kernels
#   finds nvcc through NVCC and the architecture through CUDA_COMPUTE_CAP (it would ask
#   nvidia-smi otherwise). 90 is the H200's (sm_90).
# - The wheels ship versioned libraries only (libcublas.so.13): the linker gets unversioned
#   links in a folder of ours. libcuda comes with the driver, not with any wheel: we link
#   against a stub with the driver's soname (libcuda.so.1) that defines every function
#   cuda.h declares, and the stub stays here; on the GPU machine the real driver is found.
# - On the GPU machine, LD_LIBRARY_PATH must name the pip packages' nvidia/cu13/lib
#   (benches/gpu.sh does it).
#
# Settings (environment): FRESHEN_CUDA_DIR (default .cuda), CUDA_COMPUTE_CAP (90),
# CARGO_TARGET_DIR (default $HOME/.cache/freshen-cuda-target: the CUDA build's features and
# flags differ from the CPU build's, so it keeps its own).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="$(realpath -m "${FRESHEN_CUDA_DIR:-.cuda}")"
CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freshen-cuda-target}"
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

step() { printf '[build-cuda] %s\n' "$*" >&2; }

# 1. The wheels, into our folder; a marker holding the pin list makes this a no-op later.
PY="$DIR/py"
if [[ "$(cat "$DIR/wheels.txt" 2>/dev/null)" != "${WHEELS[*]}" ]]; then
  step "installing ${#WHEELS[@]} CUDA 13.0 wheels into $PY"
  rm -rf "$PY" "$DIR/wheels.txt"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$PY" "${WHEELS[@]}"
  echo "${WHEELS[*]}" >"$DIR/wheels.txt"
fi
CUDA_HOME="$PY/nvidia/cu13"
[[ -x "$CUDA_HOME/bin/nvcc" ]] || { echo "build-cuda: no nvcc at $CUDA_HOME/bin/nvcc" >&2; exit 1; }
# nvcc looks for cicc under ../nvvm/bin relative to itself; the nvvm wheel puts it there.
[[ -x "$CUDA_HOME/nvvm/bin/cicc" ]] || { echo "build-cuda: no cicc at $CUDA_HOME/nvvm/bin" >&2; exit 1; }

# 2. Unversioned library names and the libcuda stub, in a folder of ours.
LINK="$DIR/link"
mkdir -p "$LINK"
for lib in cublas cublasLt curand nvrtc cudart; do
  real="$(ls "$CUDA_HOME"/lib/lib$lib.so.* 2>/dev/null | sort | head -1 || true)"
  [[ -n "$real" ]] || { echo "build-cuda: no lib$lib.so.* under $CUDA_HOME/lib" >&2; exit 1; }
  ln -sf "$real" "$LINK/lib$lib.so"
done
# Every stub function returns CUDA_ERROR_NO_DEVICE (100), so a test run here that loads
# the stub (LD_LIBRARY_PATH, never shipped) gets "no device" instead of undefined behaviour.
step "writing the libcuda stub (soname libcuda.so.1) from cuda.h"
gcc -E -P -I"$CUDA_HOME/include" -x c "$CUDA_HOME/include/cuda.h" \
  | grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u \
  | sed 's/.*/int &(void) { return 100; }/' >"$LINK/cuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/cuda-stub.c"

# 3. The build.
export CUDA_HOME CUDA_PATH="$CUDA_HOME" CUDA_ROOT="$CUDA_HOME"
export NVCC="$CUDA_HOME/bin/nvcc" PATH="$CUDA_HOME/bin:$PATH"
export CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP="$CAP"
export LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK"
step "cargo build --release --features cuda (target $CARGO_TARGET_DIR)"
start=$SECONDS
cargo build --release --features cuda --bin freshen
step "built in $((SECONDS - start)) s"
# The CUDA test binary: the operators' unit tests with the CUDA kernels' parity tests
# (backend::cuda::tests), which benches/gpu.sh runs on the device before measuring.
step "cargo test --release -p freshen-operators --features cuda --lib --no-run"
tests=$(cargo test --release -p freshen-operators --features cuda --lib --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "freshen_operators" and m["profile"]["test"]:
        print(m["executable"])' | tail -1)
[[ -x "$tests" ]] || { echo "build-cuda: the CUDA test binary was not built" >&2; exit 1; }

# 4. A stripped, compressed binary that travels (the GPU machine takes 64 MiB at a time).
mkdir -p dist
strip -o dist/freshen-cuda "$CARGO_TARGET_DIR/release/freshen"
strip -o dist/operators-cuda-tests "$tests"
if readelf -d dist/freshen-cuda | grep -q 'RUNPATH\|RPATH'; then
  echo "build-cuda: the binary carries a library path; it must find the GPU machine's driver" >&2
  exit 1
fi
xz -T0 -6 -kf dist/freshen-cuda
ls -l dist/freshen-cuda dist/freshen-cuda.xz >&2
