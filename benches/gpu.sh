#!/usr/bin/env bash
# Every measurement of BENCHMARKS.md's GPU section, in one go, writing its tables to $OUT:
#   0. the CUDA kernels against the CPU's (the CUDA test binary, dist/operators-cuda-tests)
#   1. correctness on the device: the parity fixture (f32, bf16) against sentence-transformers
#      and the CPU; one training step's loss against the CPU's; weights without a gradient;
#      the same step twice (determinism)
#   2. speed against the peers on the same device, side by side: MiniLM encoding (batch 32
#      and 256, f32 and bf16, glosses and 200-piece passages) against sentence-transformers;
#      one training step (32 × 8 and 128 × 8) against PyTorch; exact top-10 of 1,024 queries
#      over 1,000,000 × 384 against torch.topk of a matmul
#   3. the claim at GPU speed: one run of the drift pipeline alone (its step time), then the
#      drift regime's arms (pipelines/wordnet-minilm-drift.yaml through benches/arms.sh,
#      JOBS at once) on $DATA, stopped after CLAIM_SECONDS; $OUT/arms.tar.gz holds the
#      runs' summaries, metrics and logs, $OUT/arms-table.md the table of those finished
# The GPU machine is lent now and then for minutes, so this must work the first time: it
# is tested here with `DEVICE=cpu SMALL=1 benches/gpu.sh` (the same steps at toy sizes).
#
#   scripts/build-cuda.sh && benches/gpu-pack.sh   # here: dist/pack
#   benches/gpu.sh   # there, with dist/pack carried (run's carry)
#
# Settings (environment): DEVICE (cuda), BIN, MODEL (models/all-MiniLM-L6-v2, or the packed
# fp16 folder dist/minilm-f16 when present), OUT (out/gpu), PYTHON (python3 there, with
# torch and sentence-transformers), DATA (data/wordnet-sample), CLAIM (1: run the arms),
# SMALL (1: toy sizes, for testing the script), MEASURE (1: steps 1 and 2), IN (where the
# text inputs are, or are written: $OUT), WORK (bulky files, the top-k vectors and the
# arms' runs: $OUT; the runs' small files come back in $OUT/arms.tar.gz), CELL_SECONDS
# (stop one measurement after this long: 120), CLAIM_SECONDS (stop the arms after this
# long; a stopped run resumes next time), SOLO_STEPS and SOLO_SECONDS (the run alone), and
# the arms' STEPS, EVERY, ARMS, SEEDS (or RUNS="arm:seed ...": those runs only), JOBS (7:
# measured on one H200, 1.6 times one run's steps a second in all), PIPELINE. On the CPU, PyTorch's bf16 autocast fails in
# layer_norm (torch 2.15), so that peer's cell stays empty there.
#
# Results: each cell of the measurements is appended as a JSON line to
# benches/results/gpu.jsonl (RESULTS): the speed cells with `work`, `peer_s`, `freshen_s`
# (the figure, in `unit`: sent/s or s), `ratio`, `device`, `commit` (table `gpu-speed`),
# the checks with `check` and `figure` (table `gpu-correctness`), each with `machine`
# (nvidia-smi's name and driver) and `command`. Bring the file back with the run's
# outputs, then `python3 benches/report.py` rewrites BENCHMARKS.md's GPU tables.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
OUT=${OUT:-out/gpu}
P=${PYTHON:-python3}
DATA=${DATA:-data/wordnet-sample}
CLAIM=${CLAIM:-1}
MEASURE=${MEASURE:-1}
WORK=${WORK:-$OUT}
RESULTS=${RESULTS:-benches/results/gpu.jsonl}
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# What benches/gpu-pack.sh packed here, unpacked once.
if [ -d dist/pack ] && [ ! -x dist/freshen-cuda ]; then
  xz -dc dist/pack/binaries.tar.xz | tar -C dist -xf -
  xz -dc dist/pack/minilm-f16.tar.xz | tar -C dist -xf -
  xz -dc dist/pack/inputs.tar.xz | tar -C dist -xf -
  [ ! -f dist/pack/data.tar.xz ] || xz -dc dist/pack/data.tar.xz | tar -xf -
fi
if [ -z "${IN:-}" ]; then
  IN=$OUT
  [ ! -f dist/gpu-in/passages.txt ] || IN=dist/gpu-in
fi
if [ -z "${MODEL:-}" ]; then
  MODEL=models/all-MiniLM-L6-v2
  [ -f dist/minilm-f16/model.safetensors ] && MODEL=dist/minilm-f16
fi
if [ -z "${BIN:-}" ]; then
  BIN=dist/freshen-cuda
  [ -x "$BIN" ] || { [ -f "$BIN.xz" ] && xz -dkf "$BIN.xz" && chmod +x "$BIN"; }
fi
[ -x "$BIN" ] || { echo "gpu: no binary at $BIN (scripts/build-cuda.sh)" >&2; exit 1; }
if [ "$DEVICE" != cpu ]; then
  # The CUDA libraries of the pip packages (nvidia is a namespace package).
  NV=$($P -c 'import nvidia; print(list(nvidia.__path__)[0])')
  LIBS=$(find "$NV" -maxdepth 3 -type d -name lib | tr '\n' ':')
  export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi
mkdir -p "$OUT"
# Testing here (DEVICE=cpu on a machine without the driver): the CUDA binaries load
# against the libcuda stub they were linked with (it never travels) and the build's CUDA
# libraries, through wrappers, so that the peers' Python keeps its own libraries.
STUB=$(realpath -m "$OUT/stub")
here() { # binary: a wrapper of it that loads here
  mkdir -p "$STUB" && ln -sf "$PWD/.cuda/link/libcuda.so" "$STUB/libcuda.so.1"
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$STUB:$PWD/.cuda/py/nvidia/cu13/lib" "$(realpath "$1")" >"$STUB/$(basename "$1")"
  chmod +x "$STUB/$(basename "$1")" && echo "$STUB/$(basename "$1")"
}
TESTS=${TESTS:-dist/operators-cuda-tests}
if [ "$DEVICE" = cpu ] && ldd "$BIN" 2>/dev/null | grep 'libcuda.so.1 => not found' >/dev/null; then
  BIN=$(here "$BIN")
  [ ! -x "$TESTS" ] || TESTS=$(here "$TESTS")
fi
exec 2> >(tee -a "$OUT/gpu.log" >&2)
echo "gpu: device $DEVICE, binary $BIN, model $MODEL, out $OUT, small $SMALL" >&2
start=$SECONDS

if [ "$SMALL" = 1 ]; then
  TEXTS=200; PASSAGES=40; BATCHES="8 32"; STEP_SHAPES="4x4"; TOPK_N=20000; TOPK_Q=64; REPEATS=1
else
  TEXTS=4000; PASSAGES=1000; BATCHES="32 256"; STEP_SHAPES="32x8 128x8"; TOPK_N=1000000; TOPK_Q=1024; REPEATS=3
fi

run() { # name command...: saves $OUT/name.json and $OUT/name.log; stops it after CELL_SECONDS
  local name=$1; shift
  echo "gpu: $name ($((SECONDS - start)) s)" >&2
  timeout "${CELL_SECONDS:-120}" "$@" 2>"$OUT/$name.log" >"$OUT/$name.json" || { tail -5 "$OUT/$name.log" >&2; echo '{}' >"$OUT/$name.json"; return 0; }
}

# Inputs: glosses, passages of 200 word pieces (benches/peers/passages.py), the corpus's
# texts (the training step's targets), vectors.
mkdir -p "$IN" "$WORK"
[ -f "$IN/glosses.txt" ] || $P benches/peers/texts.py --source queries --n "$TEXTS" --out "$IN/glosses.txt" >&2
[ -f "$IN/targets.txt" ] || $P benches/peers/texts.py --source corpus --n "$TEXTS" --out "$IN/targets.txt" >&2
[ -f "$IN/passages.txt" ] || $P benches/peers/passages.py --tokens 200 --n "$PASSAGES" --model "$MODEL" --out "$IN/passages.txt" >&2
if [ "$MEASURE" = 1 ]; then # to "measurements done"
[ -f "$WORK/vec/vectors.f32" ] || $P benches/peers/make_vectors.py --n "$TOPK_N" --dim 384 --queries "$TOPK_Q" --seed 0 --out "$WORK/vec" >&2

# 0. The CUDA kernels against the CPU's: the operators' CUDA test binary
# (scripts/build-cuda.sh), before any figure. A failure is reported in the correctness
# table and the figures are still taken. On the CPU (DEVICE=cpu, testing this script) the
# tests are only listed: they need a device.
if [ -x "$TESTS" ]; then
  echo "gpu: the CUDA kernels' tests ($((SECONDS - start)) s)" >&2
  if [ "$DEVICE" = cpu ]; then
    "$TESTS" backend::cuda:: --list >"$OUT/cuda-tests.log" 2>&1 || true
  else
    timeout "${CELL_SECONDS:-120}" "$TESTS" backend::cuda:: --test-threads=1 >"$OUT/cuda-tests.log" 2>&1 || true
  fi
  tail -15 "$OUT/cuda-tests.log" >&2
  # The tables' one-line summary: the test harness's result, or how many were listed.
  summary=$(grep -m1 '^test result:' "$OUT/cuda-tests.log" | sed 's/^test result: //; s/; [0-9]* ignored.*//' || true)
  [ -n "$summary" ] || summary="$(grep -c ': test$' "$OUT/cuda-tests.log" || true) listed, not run"
  printf '{"figure": "%s"}\n' "$summary" >"$OUT/cuda-tests.json"
else
  echo "gpu: no CUDA test binary at $TESTS (scripts/build-cuda.sh)" >&2
fi

# 1. Correctness.
for dt in f32 bf16; do
  run "parity-$dt" "$BIN" bench parity --model "$MODEL" --device "$DEVICE" --dtype "$dt"
done
for dev in cpu "$DEVICE"; do
  run "step-loss-$dev" "$BIN" bench train-step --model "$MODEL" --texts "$IN/targets.txt" --queries 8 --targets-per-query 4 --steps 2 --device "$dev"
done
run "step-loss-again" "$BIN" bench train-step --model "$MODEL" --texts "$IN/targets.txt" --queries 8 --targets-per-query 4 --steps 2 --device "$DEVICE"

# 2. Speed, each pair back to back.
for texts in glosses passages; do
  for dt in f32 bf16; do
    for b in $BATCHES; do
      run "st-$texts-$dt-$b" $P benches/peers/encode.py --model "$MODEL" --texts "$IN/$texts.txt" --batch "$b" --device "$DEVICE" --dtype "$dt" --repeats "$REPEATS"
      run "freshen-$texts-$dt-$b" "$BIN" bench encode --model "$MODEL" --texts "$IN/$texts.txt" --batch "$b" --device "$DEVICE" --dtype "$dt" --repeats "$REPEATS"
    done
  done
done
for shape in $STEP_SHAPES; do
  q=${shape%x*}; t=${shape#*x}
  for dt in f32 bf16; do
    run "torch-step-$shape-$dt" $P benches/peers/train_step.py --model "$MODEL" --texts "$IN/targets.txt" --queries "$q" --targets-per-query "$t" --steps 4 --device "$DEVICE" --dtype "$dt"
    run "freshen-step-$shape-$dt" "$BIN" bench train-step --model "$MODEL" --texts "$IN/targets.txt" --queries "$q" --targets-per-query "$t" --steps 4 --device "$DEVICE" --dtype "$dt"
  done
done
run "torch-topk" $P benches/peers/torch_topk.py --vectors "$WORK/vec/vectors.f32" --queries "$WORK/vec/queries.f32" --dim 384 --k 10 --device "$DEVICE" --repeats "$REPEATS"
run "freshen-topk" "$BIN" bench topk --vectors "$WORK/vec/vectors.f32" --queries "$WORK/vec/queries.f32" --dim 384 --k 10 --chunk 65536 --device "$DEVICE" --repeats "$REPEATS"

# The tables (also written to $OUT/tables.md).
$P - "$OUT" "$DEVICE" "$BATCHES" "$STEP_SHAPES" <<'PY' | tee "$OUT/tables.md"
import json, os, sys
out, device, batches, shapes = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
def j(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return {}
def f(x, d=4):
    return "—" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))
def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "—"
print(f"### Correctness on `{device}`\n")
print("| check | figure |\n|---|---|")
print(f"| CUDA kernels against the CPU's (backend::cuda tests) | {j('cuda-tests').get('figure', 'not run')} |")
for dt in ("f32", "bf16"):
    p = j(f"parity-{dt}")
    print(f"| parity fixture, {dt}: lowest cosine vs sentence-transformers | {f(p.get('lowest_cosine_vs_st'), 7)} |")
    print(f"| parity fixture, {dt}: lowest cosine vs this binary on the CPU (f32) | {f(p.get('lowest_cosine_vs_cpu_f32'), 7)} |")
cpu, dev, again = j("step-loss-cpu"), j(f"step-loss-{device}"), j("step-loss-again")
lc, ld = (cpu.get("losses") or [None])[0], (dev.get("losses") or [None])[0]
print(f"| first training step's loss: CPU / {device} | {f(lc, 6)} / {f(ld, 6)} |")
missing = dev.get("params_without_gradient")
print(f"| trainable weight tensors without a gradient on {device} | {'—' if missing is None else (len(missing) or 'none')} {' '.join(missing or [])} |")
print(f"| the same two steps twice on {device}: losses equal | {dev.get('losses') == again.get('losses') and bool(dev)} |")
print(f"\n### Speed on `{device}` (freshen / peer; > 1 means freshen is faster)\n")
print("| work | peer | freshen | ratio |\n|---|---|---|---|")
for texts in ("glosses", "passages"):
    for dt in ("f32", "bf16"):
        for b in batches:
            s, r = j(f"st-{texts}-{dt}-{b}"), j(f"freshen-{texts}-{dt}-{b}")
            print(f"| encode {texts}, {dt}, batch {b} (sent/s) | {f(s.get('sent_per_s'), 1)} | {f(r.get('sent_per_s'), 1)} | {ratio(r.get('sent_per_s'), s.get('sent_per_s'))} |")
for shape in shapes:
    for dt in ("f32", "bf16"):
        t, r = j(f"torch-step-{shape}-{dt}"), j(f"freshen-step-{shape}-{dt}")
        print(f"| training step {shape}, {dt} (s) | {f(t.get('step_s'))} | {f(r.get('step_s'))} | {ratio(t.get('step_s'), r.get('step_s'))} |")
t, r = j("torch-topk"), j("freshen-topk")
print(f"| top-10, {t.get('n_queries', '?')} queries × {t.get('n', '?')} rows (s) | {f(t.get('seconds'))} | {f(r.get('seconds'))} | {ratio(t.get('seconds'), r.get('seconds'))} |")
same = bool(t) and bool(r) and t.get("ids_first") == r.get("ids_first")
print(f"\nTop-k ids of the first two queries equal to torch's: {same}.")
PY
# The result lines (BENCHMARKS.md's tables gpu-correctness and gpu-speed).
MACHINE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 | sed 's/, / (driver /; s/$/)/' || true)
mkdir -p "$(dirname "$RESULTS")"
$P - "$OUT" "$DEVICE" "$BATCHES" "$STEP_SHAPES" "$RESULTS" "${MACHINE:-$DEVICE}" "$COMMIT" "DATA=$DATA SMALL=$SMALL benches/gpu.sh" <<'PY'
import json, os, sys
out, device, batches, shapes, results, machine, commit, command = sys.argv[1:]
def j(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except (OSError, ValueError):
        return {}
lines = []
def add(**row):
    lines.append({**row, "device": device, "command": command, "machine": machine, "commit": commit})
def cell(work, unit, peer, freshen, faster_is_larger):
    ratio = None
    if peer and freshen:
        ratio = round(freshen / peer if faster_is_larger else peer / freshen, 2)
    rnd = (lambda v: None if v is None else round(v)) if unit == "sent/s" else (lambda v: None if v is None else round(v, 4))
    add(table="gpu-speed", work=work, unit=unit, peer_s=rnd(peer), freshen_s=rnd(freshen), ratio=ratio)
add(table="gpu-correctness", check="CUDA kernels against the CPU's (backend::cuda tests)", figure=j("cuda-tests").get("figure"))
for dt in ("f32", "bf16"):
    p = j(f"parity-{dt}")
    for key, what in (("lowest_cosine_vs_st", "sentence-transformers"), ("lowest_cosine_vs_cpu_f32", "this binary on the CPU (f32)")):
        v = p.get(key)
        add(table="gpu-correctness", check=f"parity fixture, {dt}: lowest cosine vs {what}",
            figure=None if v is None else f"{v:.7f}")
cpu, dev, again = j("step-loss-cpu"), j(f"step-loss-{device}"), j("step-loss-again")
lc, ld = (cpu.get("losses") or [None])[0], (dev.get("losses") or [None])[0]
add(table="gpu-correctness", check=f"first training step's loss: CPU / {device}",
    figure=f"{lc:.6f} / {ld:.6f}" if lc is not None and ld is not None else None)
missing = dev.get("params_without_gradient")
add(table="gpu-correctness", check=f"trainable weight tensors without a gradient on {device}",
    figure=None if missing is None else (" ".join(missing) or "none"))
add(table="gpu-correctness", check=f"the same two steps twice on {device}: losses equal",
    figure=str(bool(dev) and dev.get("losses") == again.get("losses")).lower())
for texts in ("glosses", "passages"):
    for dt in ("f32", "bf16"):
        for b in batches.split():
            s, r = j(f"st-{texts}-{dt}-{b}"), j(f"freshen-{texts}-{dt}-{b}")
            cell(f"encode {texts}, {dt}, batch {b} (sent/s)", "sent/s", s.get("sent_per_s"), r.get("sent_per_s"), True)
for shape in shapes.split():
    q, t = shape.split("x")
    for dt in ("f32", "bf16"):
        tt, r = j(f"torch-step-{shape}-{dt}"), j(f"freshen-step-{shape}-{dt}")
        cell(f"training step {q} × {t}, {dt} (s)", "s", tt.get("step_s"), r.get("step_s"), False)
t, r = j("torch-topk"), j("freshen-topk")
n_q, n = t.get("n_queries"), t.get("n")
work = f"exact top-10, {n_q:,} queries × {n:,} × 384 (s)" if n_q and n else "exact top-10 (s)"
cell(work, "s", t.get("seconds"), r.get("seconds"), False)
with open(results, "a") as f:
    for line in lines:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
print(f"gpu: {len(lines)} lines appended to {results}", file=sys.stderr)
PY
echo "gpu: measurements done in $((SECONDS - start)) s" >&2
fi

# 3. The claim at GPU speed: the drift regime (every layer trainable, lr 1e-4, plain top-k).
# First one run alone for SOLO_STEPS steps (the pipeline's step time on the device, in its
# metrics.parquet), then the arms, JOBS at a time: one run leaves the GPU mostly idle
# (its step is launch- and host-bound), so the arms share it; each has its own store.
if [ "$CLAIM" = 1 ]; then
  if [ "$SMALL" = 1 ]; then
    STEPS=${STEPS:-4}; EVERY=${EVERY:-2}; ARMS=${ARMS:-"stale corrector refresh-2"}; SEEDS=${SEEDS:-1}
    SOLO_STEPS=${SOLO_STEPS:-3}; JOBS=${JOBS:-3}
  else
    STEPS=${STEPS:-100}; EVERY=${EVERY:-50}; SEEDS=${SEEDS:-"1 2"}; SOLO_STEPS=${SOLO_STEPS:-30}
    ARMS=${ARMS:-"inbatch stale corrector corrector-mse corrector-subset-1024 refresh-25 refresh-50"}
    JOBS=${JOBS:-7}
  fi
  sets="--set vars.model=$MODEL"
  for m in f g h; do sets="$sets --set models.$m.device=$DEVICE"; done
  PIPELINE=${PIPELINE:-pipelines/wordnet-minilm-drift.yaml}
  # The runs' small files (summaries, metrics, logs: not the stores, checkpoints, rankings
  # or embeddings, which stay in $WORK) come back as one archive, and the table is printed.
  pack_arms() {
    [ -d "$WORK/arms" ] || return 0
    (cd "$WORK/arms" && find . \( -name '*.log' -o -name 'summary.parquet' -o -name 'metrics.parquet' -o -name 'compare.parquet' \) -size -8M -print0 \
      | tar --null -czf - -T -) >"$OUT/arms.tar.gz" || true
    local done=()
    for d in "$WORK"/arms/*-s*/; do [ -f "$d/summary.parquet" ] && done+=("$d"); done
    [ "${#done[@]}" = 0 ] || "$BIN" compare "${done[@]}" --out "$WORK/compare-all.parquet" | tee "$OUT/arms-table.md" || true
  }
  trap pack_arms EXIT
  echo "gpu: one run alone, $SOLO_STEPS steps ($((SECONDS - start)) s)" >&2
  PIPELINE="$PIPELINE" DATA="$DATA" OUT="$WORK/arms/solo" STEPS="$SOLO_STEPS" EVERY="$SOLO_STEPS" \
    ARMS=corrector SEEDS=1 RUNS= BIN="$BIN" EXTRA="$sets ${EXTRA:-}" \
    timeout --signal=INT "${SOLO_SECONDS:-150}" benches/arms.sh >"$OUT/solo.md" || echo "gpu: the run alone ended with $?" >&2
  echo "gpu: the arms (${RUNS:-$ARMS; seeds $SEEDS}; $STEPS steps; $JOBS at once; ${CLAIM_SECONDS:-no} s limit) ($((SECONDS - start)) s)" >&2
  rc=0
  PIPELINE="$PIPELINE" DATA="$DATA" OUT="$WORK/arms" STEPS="$STEPS" EVERY="$EVERY" JOBS="$JOBS" \
    ARMS="$ARMS" SEEDS="$SEEDS" RUNS="${RUNS:-}" BIN="$BIN" EXTRA="$sets ${EXTRA:-}" \
    timeout --signal=INT "${CLAIM_SECONDS:-1000000}" benches/arms.sh >"$OUT/arms.md" || rc=$?
  echo "gpu: the arms ended with $rc ($((SECONDS - start)) s)" >&2
fi
echo "gpu: all done in $((SECONDS - start)) s" >&2
