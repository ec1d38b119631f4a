#!/usr/bin/env bash
# The synthetic study (BENCHMARKS.md "The synthetic study"): pipelines/synthetic.yaml
# swept over h's size and the fraction of targets it trains on, at two staleness levels,
# several seeds each, then `freshen study` for the table and the plots.
#
#   benches/synthetic.sh                       # the BENCHMARKS.md sweep (~8 minutes)
#   LOSS=softmax WIDTHS="16 64" benches/synthetic.sh   # h trained on the softmax instead
#   DIM=16 WIDTHS="16 64 256" benches/synthetic.sh     # on the sphere of 16 dimensions
#   LOSS=procrustes DEPTH=0 WIDTHS=1 benches/synthetic.sh  # the orthogonal Procrustes fit
#   SEEDS="1" FRACTIONS="0.1 1" benches/synthetic.sh
#
# Every run trains h for the pipeline's 1,000 full-batch steps (no setting is chosen on
# the held-out queries: there is nothing to select); KL(P‖P_h) is h's after its last
# step, on 500 held-out queries over all 1,000 targets.
# Settings (environment): DIM (2), AMPLITUDES ("0.25 1.0"), WIDTHS ("4 16 64 256"),
# FRACTIONS ("0.01 0.03 0.1 0.3 1"), SEEDS ("1 2 3"), LOSS (drift), DEPTH (1), OUT, DOCS,
# BIN, RESULTS.
# Results: one JSON line per h size and staleness (KL(P‖P_h), mean ± std, at each training
# fraction) is appended to benches/results/synthetic.jsonl, table `synthetic` for the
# default sweep (`synthetic-d<DIM>-<LOSS>` otherwise), with the command, machine and
# commit; then `python3 benches/report.py` rewrites BENCHMARKS.md's table.
set -euo pipefail
cd "$(dirname "$0")/.."

DIM=${DIM:-2}
AMPLITUDES=${AMPLITUDES:-"0.25 1.0"}
WIDTHS=${WIDTHS:-"4 16 64 256"}
FRACTIONS=${FRACTIONS:-"0.01 0.03 0.1 0.3 1"}
SEEDS=${SEEDS:-"1 2 3"}
LOSS=${LOSS:-drift}
DEPTH=${DEPTH:-1}
OUT=${OUT:-out/bench/synthetic-d$DIM-$LOSS-depth$DEPTH}
DOCS=${DOCS:-docs/bench}
RESULTS=${RESULTS:-benches/results/synthetic.jsonl}
TABLE=synthetic
[ "$DIM-$LOSS-$DEPTH" = 2-drift-1 ] || TABLE=synthetic-d$DIM-$LOSS
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}

runs=()
for a in $AMPLITUDES; do
  for w in $WIDTHS; do
    for f in $FRACTIONS; do
      for s in $SEEDS; do
        dir="$OUT/a$a-w$w-f$f-s$s"
        runs+=("$dir")
        [ -f "$dir/metrics.parquet" ] && continue
        "$BIN" run pipelines/synthetic.yaml --set seed="$s" --set vars.out="$dir" \
          --set nodes.world.dim="$DIM" --set nodes.world.drift.amplitude="$a" \
          --set models.h.width="$w" --set nodes.fit.train.fraction="$f" \
          --set nodes.fit.train.loss="$LOSS" --set models.h.depth="$DEPTH" > /dev/null 2>&1 \
          || { echo "failed: $dir" >&2; exit 1; }
      done
    done
  done
done
mkdir -p "$DOCS"
plot="$DOCS/synthetic-d$DIM-$LOSS.png"
[ "$DEPTH" = 1 ] || plot="$DOCS/synthetic-d$DIM-$LOSS-depth$DEPTH.png"
"$BIN" study "${runs[@]}" --out "$OUT/study.parquet" --plot "$plot"
python3 - "$OUT/study.parquet" "$RESULTS" "$TABLE" \
  "DIM=$DIM LOSS=$LOSS DEPTH=$DEPTH WIDTHS=\"$WIDTHS\" SEEDS=\"$SEEDS\" benches/synthetic.sh" "$MACHINE" "$COMMIT" <<'PY'
import json, math, sys
import pyarrow.parquet as pq
src, results, table, command, machine, commit = sys.argv[1:]
def pm(m, s):  # three significant digits, as BENCHMARKS.md writes them
    d = max(0, 2 - math.floor(math.log10(abs(m)))) if m else 1
    return f"{m:.{d}f} ± {s:.{d}f}"
rows = {}
for r in pq.read_table(src).to_pylist():
    key = (f"{int(r['params']):,}", f"{r['amplitude']:g}")
    row = rows.setdefault(key, {"table": table, "parameters": key[0], "amplitude": key[1]})
    row[f"kl_{int(r['train_targets'])}"] = pm(r["kl_corrected_mean"], r["kl_corrected_std"])
with open(results, "a") as out:
    for row in rows.values():
        row.update(command=command, machine=machine, commit=commit)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
PY
# The toy picture (on the circle only): the largest staleness, h of width 64, a tenth of
# the targets, seed 1.
[ "$DIM" = 2 ] || exit 0
set -- $AMPLITUDES
toy="$OUT/toy"
[ -f "$toy/metrics.parquet" ] || "$BIN" run pipelines/synthetic.yaml --set seed=1 \
  --set vars.out="$toy" --set nodes.world.dim="$DIM" --set nodes.world.drift.amplitude="${!#}" \
  --set models.h.width=64 --set nodes.fit.train.loss="$LOSS" --set models.h.depth="$DEPTH" \
  > /dev/null 2>&1
[ "$LOSS" = drift ] || exit 0
"$BIN" study --picture "$toy" --picture-out "$DOCS/synthetic-toy-d$DIM-$LOSS.png"
