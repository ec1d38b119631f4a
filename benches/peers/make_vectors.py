#!/usr/bin/env python3
"""Write random unit-norm float32 vectors for the top-k benchmark.

  python benches/peers/make_vectors.py --n 200000 --dim 384 --queries 64 --seed 0 --out DIR

DIR/vectors.f32 (n x dim) and DIR/queries.f32 (queries x dim) are raw
little-endian float32, row-major, no header. Rows are standard Gaussian draws
from numpy's default_rng(seed) (PCG64), the corpus first in chunks of 65,536
rows and then the queries, each row divided by its L2 norm. Prints one JSON
object on stdout.
"""
import argparse
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import json
    import numpy as np

    rng = np.random.default_rng(args.seed)
    le = np.dtype("<f4")

    def unit_rows(count):
        x = rng.standard_normal((count, args.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(le, copy=False)

    os.makedirs(args.out, exist_ok=True)
    vec_path = os.path.join(args.out, "vectors.f32")
    q_path = os.path.join(args.out, "queries.f32")
    chunk = 65536
    with open(vec_path + ".tmp", "wb") as f:
        for start in range(0, args.n, chunk):
            unit_rows(min(chunk, args.n - start)).tofile(f)
    os.replace(vec_path + ".tmp", vec_path)
    with open(q_path + ".tmp", "wb") as f:
        unit_rows(args.queries).tofile(f)
    os.replace(q_path + ".tmp", q_path)
    print(json.dumps({"vectors": vec_path, "queries": q_path, "n": args.n, "dim": args.dim,
                      "n_queries": args.queries, "seed": args.seed,
                      "bytes": os.path.getsize(vec_path) + os.path.getsize(q_path)}))


if __name__ == "__main__":
    main()
