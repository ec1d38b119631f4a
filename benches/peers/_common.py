"""Helpers shared by the peer benchmark scripts (standard library only, so that
they can run before numpy/torch/faiss are imported)."""
import json
import os
import resource
import sys


def set_thread_env(n: int) -> None:
    """Pin the native thread pools to n threads. Must run before numpy, torch
    or faiss is imported: OpenMP, MKL and OpenBLAS read these at start-up."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports
    ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        peak /= 1024
    return round(peak / 1024, 1)


def read_f32_matrix(path: str, dim: int):
    """A raw little-endian float32 row-major file (make_vectors.py) as a contiguous
    (rows, dim) numpy array; exits naming the file when its size is not whole rows."""
    import numpy as np

    a = np.fromfile(path, dtype="<f4")
    if a.size % dim:
        sys.exit(f"{path} holds {a.size} floats, not a multiple of --dim {dim}")
    return np.ascontiguousarray(a.reshape(-1, dim), dtype=np.float32)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def emit(obj) -> None:
    """The one JSON object a script prints on stdout."""
    print(json.dumps(obj), flush=True)


def read_lines(path: str, limit=None):
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    texts = [t for t in texts if t.strip()]
    return texts[:limit] if limit else texts
