#!/usr/bin/env python3
"""Inference throughput of sentence-transformers on CPU.

  python benches/peers/encode.py --model models/all-MiniLM-L6-v2 --texts FILE \
      --batch 32 [--limit N] [--threads 2] [--repeats 3]

Encodes the texts (one per line, blank lines skipped) with
SentenceTransformer.encode(batch_size=--batch). Normalisation follows the
model: when its pipeline has a Normalize module (all-MiniLM-L6-v2 does) the
embeddings come out unit-length from it; otherwise normalize_embeddings=True
is passed. One warm-up batch is encoded first; then the whole list is encoded
--repeats times and the best wall time is reported. Note that ST sorts the
texts by length before batching, so batches hold similar lengths and padding
(to the longest in the batch, at most max_seq_length) is small. Tokenisation
is included in the time (and the copy of the vectors to the host on a GPU).
--device cuda and --dtype bf16|f16 run it on a GPU in half precision. Prints
one JSON object on stdout.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, log, peak_rss_mb, read_lines, set_thread_env  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--texts", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"],
                    help="the model's weights and compute (bf16/f16: model.to(dtype), as ST users do)")
    args = ap.parse_args()
    set_thread_env(args.threads)

    import numpy as np
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.set_num_threads(args.threads)
    texts = read_lines(args.texts, args.limit)
    model = SentenceTransformer(args.model, device=args.device)
    if args.dtype != "f32":
        model.to({"bf16": torch.bfloat16, "f16": torch.float16}[args.dtype])
    model.eval()
    has_norm = any(isinstance(m, Normalize) for m in model)
    log(f"encode: {len(texts)} texts, batch {args.batch}, threads {torch.get_num_threads()}, "
        f"max_seq_length {model.max_seq_length}, Normalize in pipeline: {has_norm}")

    def run(items):
        return model.encode(items, batch_size=args.batch, show_progress_bar=False,
                            convert_to_numpy=True, normalize_embeddings=not has_norm)

    with torch.inference_mode():
        run(texts[: args.batch])  # warm-up
        best, emb = float("inf"), None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            emb = run(texts)
            dt = time.perf_counter() - t0
            best = min(best, dt)
            log(f"  repeat {r}: {dt:.3f}s ({len(texts) / dt:.1f} sent/s)")

    norms = np.linalg.norm(emb, axis=1)
    emit({
        "engine": "sentence-transformers", "model": args.model, "batch": args.batch, "texts": len(texts),
        "device": args.device, "dtype": args.dtype,
        "threads": args.threads, "repeats": args.repeats,
        "seconds": round(best, 4), "sent_per_s": round(len(texts) / best, 1),
        "dim": int(emb.shape[1]), "max_norm_error": float(np.abs(norms - 1).max()),
        "peak_rss_mb": peak_rss_mb(),
        "sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
