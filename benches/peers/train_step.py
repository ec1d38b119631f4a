#!/usr/bin/env python3
"""Cost of one dual-encoder training step in PyTorch on CPU, split into
forward, backward and AdamW.

  python benches/peers/train_step.py --model models/all-MiniLM-L6-v2 --texts FILE \
      --queries 32 --targets-per-query 8 --steps 4 [--threads 2]

The batch (fixed, the same at every step):
  texts     = the lines of FILE (blank lines skipped), in order
  queries   = the first 3 whitespace-separated words of texts[0..Q)
  targets   = texts[0..Q*T)                  (Q = --queries, T = --targets-per-query)
  positive  = query i's label is target i*T; softmax over all Q*T targets
The model is transformers' AutoModel loaded from the sentence-transformers
folder (BertModel for MiniLM), one set of weights for both towers, put in
eval() mode so dropout is off, with gradients on. Embedding = mean of the last
hidden states over the attention mask, then L2-normalised (what ST's Pooling +
Normalize do). Loss = cross-entropy over 20 * cos(q, t). Optimiser: torch
AdamW, lr 2e-5, weight_decay 0.01, betas (0.9, 0.999), eps 1e-8. Tokenisation
(once, before the steps, not timed): the model's fast tokenizer, padding to
the longest in each of the two batches, truncation at --max-length 256.

Timed per step: forward (both towers + scores + loss), backward, adamw
(optimizer.step and zero_grad), and their total. Reported: the median over
steps after the first (the first when --steps is 1), every step's loss, and
peak RSS. Prints one JSON object on stdout.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, log, peak_rss_mb, read_lines, set_thread_env  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--texts", required=True)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--targets-per-query", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"],
                    help="bf16/f16: torch.autocast over the forward (f32 weights and AdamW state)")
    args = ap.parse_args()
    set_thread_env(args.threads)

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    nq, per = args.queries, args.targets_per_query
    texts = read_lines(args.texts)
    if len(texts) < nq * per:
        sys.exit(f"train_step: need {nq * per} texts, {args.texts} has {len(texts)}")
    queries = [" ".join(t.split()[:3]) for t in texts[:nq]]
    targets = texts[: nq * per]
    dev = torch.device(args.device)
    labels = (torch.arange(nq) * per).to(dev)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(dev)
    model.eval()  # dropout off; autograd is still on
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def batch(items):
        return tok(items, padding="longest", truncation=True, max_length=args.max_length, return_tensors="pt")

    qb, tb = batch(queries).to(dev), batch(targets).to(dev)
    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.dtype)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    log(f"train_step: {type(model).__name__}, {sum(p.numel() for p in params):,} params, "
        f"queries {tuple(qb['input_ids'].shape)}, targets {tuple(tb['input_ids'].shape)}, "
        f"threads {torch.get_num_threads()}")

    def embed(b):
        with torch.autocast(dev.type, dtype=half, enabled=half is not None):
            hidden = model(**b).last_hidden_state.float()
        mask = b["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    rows = []
    for step in range(args.steps):
        sync()
        t0 = time.perf_counter()
        q, t = embed(qb), embed(tb)
        loss = F.cross_entropy(args.scale * q @ t.T, labels)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, loss.item()))
        log(f"  step {step}: loss {loss.item():.6f} forward {t1 - t0:.3f}s backward {t2 - t1:.3f}s "
            f"adamw {t3 - t2:.3f}s total {t3 - t0:.3f}s")

    timed = rows[1:] or rows

    def med(i):
        return round(statistics.median(r[i] for r in timed), 4)

    emit({
        "engine": "pytorch", "model": args.model, "queries": nq, "targets": nq * per,
        "device": args.device, "dtype": args.dtype,
        "query_tokens": int(qb["input_ids"].shape[1]), "target_tokens": int(tb["input_ids"].shape[1]),
        "threads": args.threads, "steps": args.steps, "timed_steps": len(timed),
        "forward_s": med(0), "backward_s": med(1), "adamw_s": med(2), "step_s": med(3),
        "losses": [round(r[4], 6) for r in rows],
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__, "transformers": transformers.__version__,
    })


if __name__ == "__main__":
    main()
