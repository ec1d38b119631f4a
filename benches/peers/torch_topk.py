#!/usr/bin/env python3
"""Exact top-k by inner product in PyTorch: torch.topk of a matmul, on a GPU or
the CPU (the GPU peer of `freshen bench topk`).

  python benches/peers/torch_topk.py --vectors DIR/vectors.f32 --queries DIR/queries.f32 \
      --dim 384 --k 10 [--device cuda] [--chunk 65536] [--repeats 5]

Inputs are raw little-endian float32, row-major (see make_vectors.py), moved to
the device once (not timed). Timed: for each chunk of --chunk corpus rows,
S = Q @ C[chunk].T and torch.topk(S, k); the chunks' candidates are merged by
one more topk; the ids are copied to the host. The chunking bounds memory as
freshen's does (the whole S of 1,024 queries over 1M rows would be 4 GB; pass
--chunk 0 for one matmul over everything). Best of --repeats. Prints one JSON
object on stdout; ids_first is the top-k of the first two queries.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, log, read_f32_matrix, set_thread_env  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    set_thread_env(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    def load(path):
        return torch.from_numpy(read_f32_matrix(path, args.dim)).to(dev)

    C, Q, k = load(args.vectors), load(args.queries), args.k
    n = C.shape[0]
    chunk = args.chunk or n
    log(f"torch_topk: corpus {tuple(C.shape)}, queries {tuple(Q.shape)}, k={k}, device {dev}, chunk {chunk}")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def topk():
        scores, ids = [], []
        for start in range(0, n, chunk):
            s, i = torch.topk(Q @ C[start:start + chunk].T, min(k, min(chunk, n - start)), dim=1)
            scores.append(s)
            ids.append(i + start)
        s, pos = torch.topk(torch.cat(scores, 1), k, dim=1)
        return torch.gather(torch.cat(ids, 1), 1, pos).cpu()

    topk()  # warm-up (kernel selection)
    best, out = float("inf"), None
    for r in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        out = topk()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        log(f"  repeat {r}: {dt:.4f}s")
    nq = Q.shape[0]
    emit({
        "engine": "torch", "device": args.device, "n": int(n), "dim": args.dim, "n_queries": int(nq),
        "k": k, "chunk": chunk, "seconds": round(best, 6), "queries_per_s": round(nq / best, 1),
        "ids_first": out[:2].tolist(), "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
