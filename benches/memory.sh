#!/usr/bin/env bash
# The memory estimate against the measured peak: every shipped pipeline is checked
# (`freshen check --costs`: the estimate in bytes) and run once with a fresh output folder
# and store, under `/usr/bin/time -v` (its "Maximum resident set size" is the peak). One
# JSON line per pipeline goes to benches/results/memory.jsonl (pipeline, estimate_bytes,
# peak_bytes, ratio = estimate / peak, commit, machine, command, the steps run), and a
# table to stdout; then `python3 benches/report.py` rewrites BENCHMARKS.md's table.
# A benchmark, not a test: it runs every pipeline (minutes; the MiniLM ones need
# models/all-MiniLM-L6-v2, scripts/fetch-model.sh).
#
#   benches/memory.sh                        # every pipeline
#   PIPELINES="quickstart rlm" benches/memory.sh
#
# Settings (environment): PIPELINES (names in pipelines/, default all), OUT (/tmp/mem),
# BIN, RESULTS (benches/results/memory.jsonl; appended to), MINILM_STEPS (20: the MiniLM
# pipelines train this many steps and evaluate on dev at the last; the evaluation is
# usually the peak), RLM_DATA (where `freshen data rlm` writes rlm.yaml's data; made once).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/mem}
PIPELINES=${PIPELINES:-"embed embed-minilm eval quickstart rlm synthetic wordnet-minilm wordnet-minilm-drift"}
RESULTS=${RESULTS:-benches/results/memory.jsonl}
MINILM_STEPS=${MINILM_STEPS:-20}
RLM_DATA=${RLM_DATA:-$OUT/rlm-data}
# Built (or found up to date) first, so a stale binary is never measured.
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"

# The settings of a pipeline's run: its output folder, its store, fewer steps where it
# trains long (with the dev evaluation at the last step), and a resumable checkpoint
# after the last step: a run writes one every 10 minutes and after the last step of over
# a minute of training, so a long run's peak includes one.
sets() {
  local name=$1
  echo "--set vars.out=$OUT/$name"
  case $name in
    embed | embed-minilm | eval) echo "--set nodes.store.path=$OUT/$name-store" ;;
    synthetic) ;;
    *) echo "--set nodes.cache.path=$OUT/$name-store" ;;
  esac
  case $name in
    quickstart) echo "--set nodes.update.resume_every=500" ;;
    rlm) echo "--set vars.data=$RLM_DATA --set nodes.update.resume_every=500" ;;
    wordnet-minilm*)
      echo "--set nodes.pairs.steps=$MINILM_STEPS --set nodes.evaluate.every=$MINILM_STEPS"
      echo "--set nodes.update.resume_every=$MINILM_STEPS" ;;
  esac
}

mkdir -p "$OUT" "$(dirname "$RESULTS")"
case " $PIPELINES " in
  *" rlm "*) [ -f "$RLM_DATA/corpus.parquet" ] || "$BIN" data rlm --out "$RLM_DATA" >&2 ;;
esac
rows=()
for name in $PIPELINES; do
  file=pipelines/$name.yaml
  # shellcheck disable=SC2046
  set -- $(sets "$name")
  estimate=$("$BIN" check "$file" "$@" --costs | sed -n 's/^memory estimate: \([0-9]*\) bytes.*/\1/p')
  rm -rf "${OUT:?}/$name" "$OUT/$name-store"
  echo "== $name" >&2
  /usr/bin/time -v "$BIN" run "$file" "$@" > "$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log" >&2; exit 1; }
  kb=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\)/\1/p' "$OUT/$name.log")
  peak=$((kb * 1024))
  line=$(jq -cn --arg p "$name" --argjson e "$estimate" --argjson m "$peak" --arg c "$COMMIT" \
    --arg s "$*" --arg mc "$MACHINE" --arg cmd "PIPELINES=\"$PIPELINES\" benches/memory.sh" \
    '{pipeline: $p, estimate_bytes: $e, peak_bytes: $m,
      ratio: (($e / $m) * 1000 | round / 1000), commit: $c, settings: $s, command: $cmd, machine: $mc}')
  echo "$line" >> "$RESULTS"
  rows+=("$line")
done

printf '%-22s %12s %12s %7s\n' pipeline "estimate MB" "peak MB" ratio
for line in "${rows[@]}"; do
  jq -r '[.pipeline, (.estimate_bytes / 1048576 | round), (.peak_bytes / 1048576 | round), .ratio]
    | @tsv' <<< "$line" | awk -F'\t' '{printf "%-22s %12s %12s %7s\n", $1, $2, $3, $4}'
done
