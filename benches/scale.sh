#!/usr/bin/env bash
# Step time and memory against corpus size: the quickstart's training (hashed encoder,
# corrector, 64 queries a step) on synthetic corpora of 100k, 1M and 4M targets
# (`freshen data synthetic`), with 1 and 2 workers, in one table. Each run trains STEPS
# steps and evaluates once, after the last (1,000 dev and 1,000 test queries).
#
#   benches/scale.sh                                # 100k 1M 4M, -w 1 and -w 2
#   SIZES="100000 1000000" WORKERS="1" STEPS=20 benches/scale.sh
#
# Columns: median seconds per training step (the steps with neither the initial cache
# nor an evaluation in them), the rows of worker 0's shard, the bytes the workers hold
# in tables (shards, and on worker 0 the evaluation's corpus and cache), the process's
# peak resident memory, and the whole run's seconds. Run it on an idle machine: the
# seconds are wall time.
# Settings (environment): SIZES, WORKERS ("1 2"), STEPS (30), OUT, BIN, RESULTS.
# Results: one JSON line per size and worker count is appended to
# benches/results/scale.jsonl (table `scale` of BENCHMARKS.md), with the command, machine
# and commit; then `python3 benches/report.py` rewrites the table.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"100000 1000000 4000000"}
WORKERS=${WORKERS:-"1 2"}
STEPS=${STEPS:-30}
OUT=${OUT:-out/bench/scale}
RESULTS=${RESULTS:-benches/results/scale.jsonl}
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}

mkdir -p "$OUT"
runs=()
for n in $SIZES; do
  data="data/full/synthetic-$n"
  # 10,000 queries whatever the size: 8,000 to train on, 1,000 dev, 1,000 test.
  [ -f "$data/corpus.parquet" ] || "$BIN" data synthetic --targets "$n" --every $((n / 10000)) --out "$data" >&2
  for w in $WORKERS; do
    dir="$OUT/n$n-w$w"
    runs+=("$n $w $dir")
    [ -f "$dir/summary.parquet" ] && continue
    echo "== $n targets, -w $w" >&2
    rm -rf "$dir"
    sets=(--set vars.data="$data" --set vars.out="$dir" --set nodes.cache.path="$dir/cache"
      --set nodes.pairs.steps="$STEPS" --set nodes.evaluate.every=100000
      --set nodes.evaluate.diagnostics=false)
    # What `check` estimates for the run, beside what it measures (no memory limit: the
    # estimate is the figure here, not a refusal).
    "$BIN" check pipelines/quickstart.yaml -w "$w" --max-memory 1T "${sets[@]}" > "$dir.check" 2>&1 || true
    "$BIN" run pipelines/quickstart.yaml -w "$w" "${sets[@]}" > "$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    # Outputs are links into their version folders (.versions/N): both go.
    rm -rf "$dir/cache" "$dir/checkpoint" "$dir"/.versions/*/checkpoint "$dir/embeddings.parquet" "$dir"/.versions/*/embeddings.parquet "$dir/run.trec" "$dir"/.versions/*/run.trec "$dir/rankings.parquet" "$dir"/.versions/*/rankings.parquet
  done
done

python3 - "$RESULTS" "SIZES=\"$SIZES\" WORKERS=\"$WORKERS\" STEPS=$STEPS benches/scale.sh" "$MACHINE" "$COMMIT" "${runs[@]}" <<'EOF'
import json, statistics, sys
import pyarrow.parquet as pq
results, command, machine, commit = sys.argv[1:5]
lines = open(results, "a")

import re
print("| targets | workers | s / step | shard rows (worker 0) | held GB (per worker) | peak GB (per process) | check's estimate GB | run s |")
print("|---|---|---|---|---|---|---|---|")
for run in sys.argv[5:]:
    n, w, d = run.split()
    steps = pq.read_table(f"{d}/metrics.parquet").to_pylist()
    # Step 0 waits for the initial cache; the last step runs the evaluation.
    inner = [r["seconds"] for r in steps[1:-1]]
    s = pq.read_table(f"{d}/summary.parquet").to_pylist()[0]
    gb = lambda xs: " / ".join(f"{x / 2**30:.2f}" for x in xs)
    m = re.search(r"peak memory about ([0-9.]+) (GB|MB)", open(f"{d}.check").read())
    est = "?" if not m else f"{float(m[1]) / (1024 if m[2] == 'MB' else 1):.1f}"
    row = {"targets": f"{int(n):,}", "workers": w, "s_per_step": f"{statistics.median(inner):.3f}",
           "shard_rows": f"{s['shard_rows'][0]:,}", "held_gb": gb(s['held_bytes']), "peak_gb": gb(s['peak_bytes']),
           "estimate_gb": est, "run_s": f"{s['seconds']:.0f}"}
    print("| " + " | ".join(row.values()) + " |")
    lines.write(json.dumps({"table": "scale", **row, "command": command, "machine": machine, "commit": commit},
                           ensure_ascii=False) + "\n")
EOF
