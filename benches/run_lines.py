"""Result lines for BENCHMARKS.md from finished training runs: one JSON line per run
folder (`<arm>-s<seed>`, as benches/arms.sh names them) appended to a result file, for
`python3 benches/report.py` to render.

    python3 benches/run_lines.py RESULTS TABLE COMMAND MACHINE COMMIT RUN_DIR...

Each line holds the arm, the seed, the dev-selected step and its dev and test Recall@20
(in %), test R@1, the training forwards (the ledger's total less `eval`), the wall
seconds, and the dev Recall@20 at every evaluated step (`dev_by_step`). The steps are
numbered from 1, as `freshen run` prints them, whatever build wrote the run.
"""
import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq


def line(run, table, command, machine, commit):
    """The result line of one run folder, or None if it has not finished."""
    summary = run / "summary.parquet"
    m = re.fullmatch(r"(.+)-s(\d+)", run.name)
    if not summary.exists() or not m:
        return None
    s = pq.read_table(summary).to_pylist()[0]
    metrics = pq.read_table(run / "metrics.parquet", columns=["step", "dev_recall_at_20"])
    dev = [(r["step"], r["dev_recall_at_20"]) for r in metrics.to_pylist()
           if r["dev_recall_at_20"] is not None]
    # Builds before the starting model's evaluation numbered steps from 0 and had no
    # step-0 row: shift them so that the last step is `steps`.
    shift = 1 if dev and max(st for st, _ in dev) == s["steps"] - 1 else 0
    best = s["best_step"] + shift
    pct = lambda x: f"{100 * x:.1f}"
    return {
        "table": table, "arm": m.group(1), "seed": int(m.group(2)), "steps": s["steps"],
        "best_step": best, "dev_r20": pct(s["best_dev"]),
        "test_r20": pct(s["test_recall_at_20"]), "test_r1": pct(s["test_recall_at_1"]),
        "training_fwd": s["forwards_total"] - s["forwards_eval"],
        "seconds": round(s["seconds"]),
        "dev_by_step": " ".join(f"{st + shift}:{pct(v)}" for st, v in dev),
        "command": command, "machine": machine, "commit": commit,
    }


def main():
    results, table, command, machine, commit, *runs = sys.argv[1:]
    out = [l for r in runs if (l := line(Path(r), table, command, machine, commit))]
    with open(results, "a") as f:
        for l in out:
            f.write(json.dumps(l, ensure_ascii=False) + "\n")
    print(f"run_lines: {len(out)} lines for table {table} appended to {results}", file=sys.stderr)


if __name__ == "__main__":
    main()
