#!/usr/bin/env bash
# The paper's claim, measured: train every arm of the benchmark with several seeds, then
# print one table (mean ± std over seeds) and draw test Recall@20 against target forwards.
#
#   benches/arms.sh                                   # the shipped sample, 3 seeds
#   ARMS="corrector corrector-subset-1024 corrector-rescore" benches/arms.sh   # the corrector's levers
#   DATA=data/full/wordnet OUT=out/bench/full EVERY=100 benches/arms.sh
#   PIPELINE=pipelines/wordnet-minilm.yaml DATA=data/full/wordnet-20k OUT=out/bench/minilm \
#     SEEDS="1 2" STEPS=60 EVERY=60 ARMS="inbatch stale corrector refresh-10 refresh-20 refresh-30" \
#     SHARED_STORE=1 benches/arms.sh
#   PIPELINE=pipelines/rlm.yaml DATA=data/rlm-sample OUT=out/bench/rlm SEEDS="1 2" \
#     ARMS="reader-alone frozen-retriever stale refresh-50 refresh-100 corrector" benches/arms.sh
#
# Settings (environment): DATA, OUT, SEEDS ("1 2 3"), ARMS (see arm_sets), STEPS (500),
# EVERY (dev evaluation interval, 50), EXTRA (more --set flags for every run).
# RUNS ("arm:seed arm:seed ..."): exactly these runs instead of every arm with every seed
# (a second seed for some arms only, as a short GPU loan allows).
# PIPELINE (pipelines/quickstart.yaml): the training pipeline the arms are made from.
# Finished runs (a summary.parquet in their folder) are skipped and killed ones resumed
# (`--resume`), so the script continues where it stopped.
# Each run builds its own starting cache, so every arm pays (and counts) the same
# initial forwards; with SHARED_STORE=1 the runs share one store instead, so only the
# first run embeds the starting cache (it is the same for every arm: the untrained g).
# STORE: the shared store's folder ($OUT/store), for grids that share one starting cache.
# JOBS=N runs N at once (a GPU that one run leaves mostly idle; each run gets its own
# store, as a store is locked by the run using it, and RAYON_NUM_THREADS a share of the
# cores); a run's figures are the same as alone, its seconds are not.
#
# Results: one JSON line per arm is appended to $RESULTS (benches/results/arms.jsonl),
# for BENCHMARKS.md's table $TABLE (e.g. TABLE=claim-full; default arms-<OUT's name>),
# with the command, machine and commit; then `python3 benches/report.py` rewrites it.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data/wordnet-sample}
OUT=${OUT:-out/bench/sample}
SEEDS=${SEEDS:-"1 2 3"}
ARMS=${ARMS:-"inbatch stale refresh-50 refresh-100 refresh-250 corrector"}
STEPS=${STEPS:-500}
EVERY=${EVERY:-50}
EXTRA=${EXTRA:-}
PIPELINE=${PIPELINE:-pipelines/quickstart.yaml}
SHARED_STORE=${SHARED_STORE:-}
JOBS=${JOBS:-1}
RESULTS=${RESULTS:-benches/results/arms.jsonl}
TABLE=${TABLE:-arms-$(basename "$OUT")}
COMMAND="${ARMS_COMMAND:-DATA=$DATA OUT=$OUT SEEDS=\"$SEEDS\" ARMS=\"$ARMS\" STEPS=$STEPS EVERY=$EVERY PIPELINE=$PIPELINE${RUNS:+ RUNS=\"$RUNS\"}${EXTRA:+ EXTRA=\"$EXTRA\"} benches/arms.sh}"
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
if [ "$JOBS" -gt 1 ] && [ -n "$SHARED_STORE" ]; then
  echo "arms: SHARED_STORE=1 needs JOBS=1 (a store is locked by the run that uses it)" >&2
  exit 2
fi
if [ "$JOBS" -gt 1 ] && [ -z "${RAYON_NUM_THREADS:-}" ]; then
  cores=$(nproc)
  RAYON_NUM_THREADS=$(( cores / JOBS > 1 ? cores / JOBS : 1 ))
  export RAYON_NUM_THREADS
fi
# Built (or found up to date) first, so a stale binary is never measured.
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}

# The --set flags that turn the quickstart pipeline into each arm.
arm_sets() {
  case "$1" in
    # The recipe grid's regimes, as prefixes of any arm: the false-negative guard (drop
    # candidates within 0.05 of the positive's score), the guard on the stale scores too,
    # and Gumbel sampling from softmax(beta * score) over the pool with the guard.
    guard-both-*) echo "--set nodes.negatives.margin=0.05 --set nodes.negatives.margin_on=both $(arm_sets "${1#guard-both-}")" ;;
    guard-*) echo "--set nodes.negatives.margin=0.05 $(arm_sets "${1#guard-}")" ;;
    # Plain top-k with no guard (the drift pipeline ships the guard on).
    topk-*) echo "--set nodes.negatives.margin=null $(arm_sets "${1#topk-}")" ;;
    gumbel-*) echo "--set nodes.negatives.margin=0.05 --set nodes.negatives.strategy=gumbel $(arm_sets "${1#gumbel-}")" ;;
    corrector) echo "" ;;
    stale) echo "--set models.h.frozen=true" ;;
    inbatch) echo "--set nodes.negatives.k=0" ;;
    query-side) echo "--set models.g.frozen=true" ;;
    frozen-retriever) echo "--set models.f.frozen=true --set models.g.frozen=true" ;;
    reader-alone) echo "--set nodes.read.context=question --set nodes.evaluate.answer_context=question --set models.f.frozen=true --set models.g.frozen=true --set models.h.frozen=true" ;;
    oracle) echo "--set nodes.cache.refresh_every=1" ;;
    # The corrector's levers (docs/baselines.md): a training subset of N targets a
    # step, the pool re-scored with the current h, h applied to the whole cache every step.
    corrector-subset-*) echo "--set nodes.negatives.subset=${1#corrector-subset-}" ;;
    corrector-rescore) echo "--set nodes.negatives.inputs.stale=cache --set nodes.negatives.rescore=true" ;;
    # The pool not re-scored (the MiniLM drift pipeline ships the re-scoring on).
    corrector-norescore) echo "--set nodes.negatives.inputs.stale=null --set nodes.negatives.rescore=false" ;;
    corrector-c1) echo "--set nodes.corrected.apply_every=1" ;;
    # The drift MSE alone (the paper's objective; pipelines that ship another, as the
    # MiniLM drift pipeline ships listwise, are measured against it with this arm).
    corrector-mse) echo "--set nodes.loss.corrector=mse" ;;
    # h trained on the ranking's top too: the drift MSE plus W × KL(P_g ‖ P_h) over the
    # step's queries and touched targets (corrector-listwise: W = 1).
    corrector-listwise) echo "--set nodes.loss.corrector={\"listwise\":{\"weight\":1.0}}" ;;
    corrector-listwise-rescore) echo "--set nodes.loss.corrector={\"listwise\":{\"weight\":1.0}} --set nodes.negatives.inputs=[queries,corrected,pairs,cache] --set nodes.negatives.rescore=true" ;;
    corrector-listwise-*) echo "--set nodes.loss.corrector={\"listwise\":{\"weight\":${1#corrector-listwise-}}}" ;;
    corrector-linear) echo "--set models.h.depth=0 --set models.h.norm=none" ;;
    # The drift adapters' map as they fit it: linear, on the embeddings' squared error alone
    # (the MiniLM drift pipeline ships the listwise objective).
    corrector-linear-mse) echo "--set models.h.depth=0 --set models.h.norm=none --set nodes.loss.corrector=mse" ;;
    corrector-procrustes) echo "--set models.h.depth=0 --set models.h.norm=none --set nodes.loss.corrector={\"procrustes\":{}}" ;;
    refresh-*) echo "--set nodes.cache.refresh_every=${1#refresh-}" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}

# The runs, seed-major (so a partial run already has every arm once): "arm:seed" each.
RUNS=${RUNS:-}
if [ -z "$RUNS" ]; then
  for seed in $SEEDS; do
    for arm in $ARMS; do RUNS="$RUNS $arm:$seed"; done
  done
fi
dirs=()
for r in $RUNS; do
  case "$r" in *:*) ;; *) echo "arms: RUNS wants arm:seed, got $r" >&2; exit 2 ;; esac
  arm_sets "${r%:*}" >/dev/null
  dirs+=("$OUT/${r%:*}-s${r##*:}")
done
# One run (arm, seed) to the end; its log is $OUT/arm-sSEED.log.
run_arm() {
  local arm=$1 seed=$2
  local dir="$OUT/$arm-s$seed"
  local store="$dir/cache"
  if [ -n "$SHARED_STORE" ]; then store="${STORE:-$OUT/store}"; fi
  # A run killed part-way continues from its newest resume checkpoint.
  local resume=""
  if [ -d "$dir/.freshen/resume" ]; then resume="--resume"; fi
  # shellcheck disable=SC2046
  "$BIN" run "$PIPELINE" $resume \
    --set seed="$seed" --set vars.data="$DATA" --set vars.out="$dir" \
    --set nodes.cache.path="$store" --set nodes.pairs.steps="$STEPS" \
    --set nodes.evaluate.every="$EVERY" \
    $(arm_sets "$arm") $EXTRA >> "$dir.log" 2>&1 || { echo "== $arm, seed $seed failed:" >&2; tail -20 "$dir.log" >&2; return 1; }
  # Outputs are links into their version folders (.versions/N): both go.
  rm -rf "$dir/cache" "$dir/checkpoint" "$dir"/.versions/*/checkpoint "$dir/embeddings.parquet" "$dir"/.versions/*/embeddings.parquet
}
# Stopped (INT or TERM, as `timeout` sends), the runs in flight stop too.
stop_runs() {
  for p in $(jobs -pr); do pkill -TERM -P "$p" 2>/dev/null || true; done
  wait
  exit 130
}
trap stop_runs INT TERM
mkdir -p "$OUT"
for r in $RUNS; do
  arm=${r%:*} seed=${r##*:}
  if [ -f "$OUT/$arm-s$seed/summary.parquet" ]; then continue; fi
  echo "== $arm, seed $seed" >&2
  if [ "$JOBS" -le 1 ]; then
    run_arm "$arm" "$seed" || exit 1
    continue
  fi
  run_arm "$arm" "$seed" &
  while [ "$(jobs -pr | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
done
wait
# Every run has its summary, or one failed (its log's end is above).
for dir in "${dirs[@]}"; do
  [ -f "$dir/summary.parquet" ] || { echo "arms: $dir has no summary (see $dir.log)" >&2; exit 1; }
done
"$BIN" compare "${dirs[@]}" --out "$OUT/compare.parquet"
# The table's lines for benches/report.py: each arm's mean ± std as `freshen compare`
# prints them (recall in %), the forwards, and where the run was made.
python3 benches/compare_lines.py "$OUT/compare.parquet" "$RESULTS" "$TABLE" "$COMMAND" "$MACHINE" "$COMMIT"
echo "arms: lines for table $TABLE appended to $RESULTS (python3 benches/report.py renders them)" >&2
# The plot needs a TrueType font (FRESHEN_FONT or DejaVu Sans); a machine without one still
# gets the table.
"$BIN" compare "${dirs[@]}" --out "$OUT/compare.parquet" --plot "$OUT/recall20-vs-forwards.png" >/dev/null ||
  echo "arms: no plot (the table above stands)" >&2
