#!/usr/bin/env python3
"""`freshen compare`'s table as JSON lines for benches/report.py: one line per arm of a
compare.parquet (mean ± std over seeds, as `freshen compare` prints them: recall in %),
its forwards, and the command, machine and commit that made it; appended to RESULTS.
Used by benches/arms.sh and benches/workers.sh.

    python3 benches/compare_lines.py COMPARE.parquet RESULTS TABLE COMMAND MACHINE COMMIT
"""
import json, sys
import pyarrow.parquet as pq
src, results, table, command, machine, commit = sys.argv[1:]
def pm(r, k, scale=100, d=1):
    m, s = r.get(f"{k}_mean"), r.get(f"{k}_std") or 0.0
    return None if m is None else f"{scale * m:.{d}f} ± {scale * s:.{d}f}"
def n(r, k):
    v = r.get(f"{k}_mean")
    return None if v is None else f"{round(v):,}"
with open(results, "a") as out:
    for r in pq.read_table(src).to_pylist():
        line = {"table": table, "arm": r["arm"], "runs": r["runs"]}
        for f, k in (("r1", "test_recall_at_1"), ("r5", "test_recall_at_5"), ("r20", "test_recall_at_20"),
                     ("r100", "test_recall_at_100"), ("mrr10", "test_mrr_at_10"), ("em", "test_exact_match")):
            line[f] = pm(r, k)
        line["answer_nll"] = pm(r, "test_answer_nll", 1, 3)
        for f, k in (("refresh_fwd", "forwards_refresh"), ("touched_fwd", "forwards_touched"), ("subset_fwd", "forwards_subset"),
                     ("eval_fwd", "forwards_eval"), ("total_fwd", "forwards_total")):
            line[f] = n(r, k)
        if r.get("forwards_total_mean") is not None and r.get("forwards_eval_mean") is not None:
            line["training_fwd"] = f"{round(r['forwards_total_mean'] - r['forwards_eval_mean']):,}"
        line["refresh_s"] = None if r.get("seconds_refresh_mean") is None else f"{r['seconds_refresh_mean']:.0f}"
        line["seconds"] = pm(r, "seconds", 1, 0)
        line.update(command=command, machine=machine, commit=commit)
        out.write(json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False) + "\n")
