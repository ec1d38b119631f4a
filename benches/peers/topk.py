#!/usr/bin/env python3
"""Exact top-k by inner product over a flat float32 matrix: numpy against
faiss IndexFlatIP.

  python benches/peers/topk.py --vectors DIR/vectors.f32 --queries DIR/queries.f32 \
      --dim 384 --k 10 [--threads 2] [--repeats 5]

Inputs are raw little-endian float32, row-major (see make_vectors.py).
numpy: S = Q @ C.T, argpartition for the k largest per row, then those k
sorted by descending score (ties: lower id first). faiss: IndexFlatIP built
once (not timed), then index.search(Q, k). Each engine's time is the best of
--repeats runs over all queries at once. Prints one JSON object on stdout;
ids_first is numpy's top-k for the first two queries, and agree says whether
numpy and faiss returned the same id sets for every query.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, log, peak_rss_mb, read_f32_matrix, set_thread_env  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    set_thread_env(args.threads)

    import numpy as np
    import faiss

    faiss.omp_set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(args.threads)
        blas = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')}" for p in threadpool_info()
                if p.get("user_api") == "blas"]
    except ImportError:
        blas = []

    C = read_f32_matrix(args.vectors, args.dim)
    Q = read_f32_matrix(args.queries, args.dim)
    k = args.k
    log(f"topk: corpus {C.shape}, queries {Q.shape}, k={k}, threads={args.threads}, blas={blas}")

    def numpy_topk():
        S = Q @ C.T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(S, part, axis=1)
        order = np.lexsort((part, -scores), axis=1)
        return np.take_along_axis(part, order, axis=1)

    def best_of(fn):
        best, out = float("inf"), None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            best = min(best, dt)
            log(f"  repeat {r}: {dt:.4f}s")
        return best, out

    log("numpy:")
    np_s, np_ids = best_of(numpy_topk)

    index = faiss.IndexFlatIP(args.dim)
    index.add(C)
    log("faiss IndexFlatIP:")
    fa_s, (_, fa_ids) = best_of(lambda: index.search(Q, k))

    agree = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(np_ids, fa_ids))
    nq = Q.shape[0]
    emit({
        "n": int(C.shape[0]), "dim": args.dim, "n_queries": int(nq), "k": k, "threads": args.threads,
        "numpy": {"seconds": round(np_s, 6), "queries_per_s": round(nq / np_s, 1)},
        "faiss_flat": {"seconds": round(fa_s, 6), "queries_per_s": round(nq / fa_s, 1)},
        "ids_first": np_ids[:2].tolist(),
        "agree": bool(agree),
        "numpy_version": np.__version__, "faiss_version": faiss.__version__, "blas": blas,
        "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
