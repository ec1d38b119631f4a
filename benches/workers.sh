#!/usr/bin/env bash
# One worker against several: the quickstart training with -w 1 and -w N for each seed,
# side by side in one table (`freshen compare`: mean ± std over seeds, and seconds).
# Several workers train a different (equally valid) run, not a reordering of one worker's:
# docs/workers.md says what differs and why; this measures by how much, next to the
# spread between seeds of one worker count.
#
#   benches/workers.sh                       # seeds 1 2 3, -w 1 and -w 2
#   SEEDS="1 2" WORKERS="1 2 4" benches/workers.sh
#
# Settings (environment): DATA, OUT, SEEDS ("1 2 3"), WORKERS ("1 2"), PIPELINE, BIN.
# Finished runs (a summary.parquet in their folder) are skipped, so the script resumes.
# Every run shares one store, so the starting cache is embedded once, by the first run.
# Results: one JSON line per worker count is appended to benches/results/workers.jsonl
# (table `workers` of BENCHMARKS.md; RESULTS, TABLE to change), with the command, machine
# and commit; then `python3 benches/report.py` rewrites the table.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/wordnet-sample}
OUT=${OUT:-out/bench/workers}
SEEDS=${SEEDS:-"1 2 3"}
WORKERS=${WORKERS:-"1 2"}
PIPELINE=${PIPELINE:-pipelines/quickstart.yaml}
RESULTS=${RESULTS:-benches/results/workers.jsonl}
TABLE=${TABLE:-workers}
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
# Built (or found up to date) first, so a stale binary is never measured.
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}

dirs=()
for w in $WORKERS; do
  for seed in $SEEDS; do
    dirs+=("$OUT/w$w-s$seed")
  done
done
for seed in $SEEDS; do
  for w in $WORKERS; do
    dir="$OUT/w$w-s$seed"
    if [ -f "$dir/summary.parquet" ]; then continue; fi
    echo "== -w $w, seed $seed" >&2
    mkdir -p "$OUT"
    "$BIN" run "$PIPELINE" -w "$w" \
      --set seed="$seed" --set vars.data="$DATA" --set vars.out="$dir" \
      --set nodes.cache.path="$OUT/store" > "$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    # Outputs are links into their version folders (.versions/N): both go.
    rm -rf "$dir/checkpoint" "$dir"/.versions/*/checkpoint "$dir/embeddings.parquet" "$dir"/.versions/*/embeddings.parquet
  done
done
"$BIN" compare "${dirs[@]}" --out "$OUT/compare.parquet"
python3 benches/compare_lines.py "$OUT/compare.parquet" "$RESULTS" "$TABLE" \
  "DATA=$DATA SEEDS=\"$SEEDS\" WORKERS=\"$WORKERS\" benches/workers.sh" "$MACHINE" "$COMMIT"
