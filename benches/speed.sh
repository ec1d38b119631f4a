#!/usr/bin/env bash
# Speed against the peers, side by side in one run, on the same texts, vectors and threads:
#   1. MiniLM encoding, sentences/s: freshen vs sentence-transformers, batch 32 and 128
#   2. one training step (32 queries × 8 targets, forward + backward + AdamW): freshen vs PyTorch
#   3. exact top-10 of 64 queries over 200,000 × 384 vectors: freshen's `sample` kernel vs
#      numpy and FAISS IndexFlatIP
#   4. passages of 64, 128 and 256 word pieces (LENGTHS): encoding at batch 32 and 128 and
#      with freshen's batching, and a training step (32 × 8) at 128 and 256 (STEP_LENGTHS)
#      against PyTorch; BEFORE=<binary> adds an older build's encoding beside this one;
#      ROUNDS=N measures the passage encodings N times over, taking turns
# Prints one Markdown table of ratios (freshen / peer; > 1 means freshen is faster) and
# keeps every raw JSON in $OUT.
#
#   benches/peers/setup.sh && scripts/fetch-model.sh all-MiniLM-L6-v2
#   benches/speed.sh                 # THREADS=2 OUT=out/speed
#
# Run it on an otherwise idle machine: a concurrent build halves every number.
#
# Results: the cells of BENCHMARKS.md's tables `speed-encode`, `speed-step` and
# `speed-topk` are appended as JSON lines to benches/results/speed.jsonl (RESULTS), with
# the command, machine and commit; then `python3 benches/report.py` rewrites the tables.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
OUT=${OUT:-out/speed}
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
P=${PYTHON:-.venv-peers/bin/python}
[ -n "${BIN:-}" ] || cargo build --release --quiet
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/freshen}
[ -x "$P" ] || { echo "speed: $P missing: run benches/peers/setup.sh" >&2; exit 1; }
[ -f "$MODEL/model.safetensors" ] || { echo "speed: $MODEL missing: run scripts/fetch-model.sh all-MiniLM-L6-v2" >&2; exit 1; }
export RAYON_NUM_THREADS=$THREADS
LENGTHS=${LENGTHS:-"64 128 256"}
STEP_LENGTHS=${STEP_LENGTHS:-"128 256"}
PASSAGE_LIMIT=${PASSAGE_LIMIT:-500}
PASSAGE_REPEATS=${PASSAGE_REPEATS:-2}
# ROUNDS: the passage cells measured this many times over, the engines taking turns in each
# round, and each engine's best round kept (a slow minute of the machine then costs one
# round, not one engine's figure); every round's figure is printed beside the table.
ROUNDS=${ROUNDS:-1}
# BEFORE: another freshen binary (an older build) measured beside this one on the passages.
BEFORE=${BEFORE:-}
RESULTS=${RESULTS:-benches/results/speed.jsonl}
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"

mkdir -p "$OUT"
[ -f "$OUT/glosses.txt" ] || $P benches/peers/texts.py --source queries --n 2000 --out "$OUT/glosses.txt"
[ -f "$OUT/targets.txt" ] || $P benches/peers/texts.py --source corpus --n 2000 --out "$OUT/targets.txt"
[ -f "$OUT/vec/vectors.f32" ] || $P benches/peers/make_vectors.py --n 200000 --dim 384 --queries 64 --seed 0 --out "$OUT/vec"

# keep_best name: of name-r1.json, name-r2.json, ... (the rounds), the one with the most
# sentences a second becomes name.json; every round's figure stays in name.rounds.
keep_best() {
  ls "$OUT/$1"-r*.json >/dev/null 2>&1 || return 0
  python3 - "$OUT" "$1" <<'PY'
import glob, json, sys
out, name = sys.argv[1], sys.argv[2]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{name}-r*.json"))]
json.dump(max(runs, key=lambda r: r["sent_per_s"]), open(f"{out}/{name}.json", "w"))
open(f"{out}/{name}.rounds", "w").write(" ".join(f"{r['sent_per_s']:.1f}" for r in runs) + "\n")
PY
}

run() { # name command...: runs, saves $OUT/name.json, echoes progress
  local name=$1; shift
  echo "speed: $name" >&2
  "$@" 2>"$OUT/$name.log" >"$OUT/$name.json" || { cat "$OUT/$name.log" >&2; exit 1; }
}

for b in 32 128; do
  run "st-encode-$b" $P benches/peers/encode.py --model "$MODEL" --texts "$OUT/glosses.txt" --batch $b --threads "$THREADS" --repeats 3
  run "freshen-encode-$b" "$BIN" bench encode --model "$MODEL" --texts "$OUT/glosses.txt" --batch $b --repeats 3
  [ -z "$BEFORE" ] || run "before-encode-$b" "$BEFORE" bench encode --model "$MODEL" --texts "$OUT/glosses.txt" --batch $b --repeats 3
done
# freshen's own batching (its default token budget of 4,096, at most 256 texts), for reference.
run "freshen-encode-default" "$BIN" bench encode --model "$MODEL" --texts "$OUT/glosses.txt" --batch 256 --batch-tokens 4096 --repeats 3
run "torch-train-step" $P benches/peers/train_step.py --model "$MODEL" --texts "$OUT/targets.txt" --queries 32 --targets-per-query 8 --steps 4 --threads "$THREADS"
run "freshen-train-step" "$BIN" bench train-step --model "$MODEL" --texts "$OUT/targets.txt" --queries 32 --targets-per-query 8 --steps 4
run "peers-topk" $P benches/peers/topk.py --vectors "$OUT/vec/vectors.f32" --queries "$OUT/vec/queries.f32" --dim 384 --k 10 --threads "$THREADS" --repeats 5
run "freshen-topk" "$BIN" bench topk --vectors "$OUT/vec/vectors.f32" --queries "$OUT/vec/queries.f32" --dim 384 --k 10 --repeats 5

# Passages of 64, 128 and 256 word pieces (benches/peers/passages.py, from CPython's
# docstrings): encoding at batch 32 and 128 and with freshen's own batching, and one
# training step of 32 queries × 8 passages at 128 and 256 pieces.
for L in $LENGTHS; do
  [ -f "$OUT/passages-$L.txt" ] || $P benches/peers/passages.py --tokens "$L" --n "$PASSAGE_LIMIT" --out "$OUT/passages-$L.txt" >&2
  rm -f "$OUT"/*-passages-"$L"-*-r*.json
  for r in $(seq 1 "$ROUNDS"); do
    for b in 32 128; do
      run "st-passages-$L-$b-r$r" $P benches/peers/encode.py --model "$MODEL" --texts "$OUT/passages-$L.txt" --batch $b --threads "$THREADS" --repeats "$PASSAGE_REPEATS"
      run "freshen-passages-$L-$b-r$r" "$BIN" bench encode --model "$MODEL" --texts "$OUT/passages-$L.txt" --batch $b --repeats "$PASSAGE_REPEATS"
      [ -z "$BEFORE" ] || run "before-passages-$L-$b-r$r" "$BEFORE" bench encode --model "$MODEL" --texts "$OUT/passages-$L.txt" --batch $b --repeats "$PASSAGE_REPEATS"
    done
    run "freshen-passages-$L-default-r$r" "$BIN" bench encode --model "$MODEL" --texts "$OUT/passages-$L.txt" --batch 256 --batch-tokens 4096 --repeats "$PASSAGE_REPEATS"
  done
  for b in 32 128 default; do
    for e in st freshen before; do keep_best "$e-passages-$L-$b"; done
  done
done
for L in $STEP_LENGTHS; do
  run "torch-step-$L" $P benches/peers/train_step.py --model "$MODEL" --texts "$OUT/passages-$L.txt" --queries 32 --targets-per-query 8 --steps 3 --threads "$THREADS"
  run "freshen-step-$L" "$BIN" bench train-step --model "$MODEL" --texts "$OUT/passages-$L.txt" --queries 32 --targets-per-query 8 --steps 3
done

python3 - "$OUT" "$LENGTHS" "$STEP_LENGTHS" "$BEFORE" <<'PY'
import json, os, sys
out, lengths, step_lengths, before = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
def j(n):
    try:
        return json.load(open(f"{out}/{n}.json"))
    except (OSError, ValueError):
        return {}
print(f"\nPassages ({', '.join(lengths)} word pieces); freshen / sentence-transformers (> 1: freshen faster)"
      + (f"; 'before' is {before}" if before else ""))
print("| passages | batch | sentence-transformers (sent/s) | freshen (sent/s) | freshen tokens/s | freshen / ST |" + (" before (sent/s) | after / before |" if before else ""))
print("|---|---|---:|---:|---:|---:|" + ("---:|---:|" if before else ""))
if before:
    for b in ("32", "128"):
        f, s, bf = j(f"freshen-encode-{b}"), j(f"st-encode-{b}"), j(f"before-encode-{b}")
        if f and s and bf:
            print(f"| glosses | {b} | {s['sent_per_s']:.1f} | {f['sent_per_s']:.1f} | — | **{f['sent_per_s'] / s['sent_per_s']:.2f}x** | {bf['sent_per_s']:.1f} | {f['sent_per_s'] / bf['sent_per_s']:.2f}x |")
for L in lengths:
    for b in ("32", "128", "default"):
        f, s = j(f"freshen-passages-{L}-{b}"), j(f"st-passages-{L}-{'32' if b == 'default' else b}")
        if not f or not s:
            continue
        label = "freshen's budget (vs ST b32)" if b == "default" else b
        row = f"| {L} | {label} | {s['sent_per_s']:.1f} | {f['sent_per_s']:.1f} | {f['sent_per_s'] * int(L):,.0f} | **{f['sent_per_s'] / s['sent_per_s']:.2f}x** |"
        bf = j(f"before-passages-{L}-{b}")
        if before:
            row += f" {bf['sent_per_s']:.1f} | {f['sent_per_s'] / bf['sent_per_s']:.2f}x |" if bf else " — | — |"
        print(row)
rounds = []
for L in lengths:
    for b in ("32", "128", "default"):
        for e in ("st", "freshen", "before"):
            try:
                rounds.append(f"{e} {L}/{b}: " + open(f"{out}/{e}-passages-{L}-{b}.rounds").read().strip())
            except OSError:
                pass
if rounds:
    print("\nEvery round (sent/s): " + "; ".join(rounds))
print("\n| training step, 32 q × 8 passages | PyTorch (s) | freshen (s) | PyTorch / freshen | peak MB PyTorch / freshen |\n|---|---:|---:|---:|---|")
for L in step_lengths:
    f, t = j(f"freshen-step-{L}"), j(f"torch-step-{L}")
    if f and t:
        print(f"| {L} pieces | {t['step_s']:.2f} | {f['step_s']:.2f} | **{t['step_s'] / f['step_s']:.2f}x** | {t['peak_rss_mb']:.0f} / {f['peak_rss_mb']:.0f} |")
PY

python3 - "$OUT" "$THREADS" <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2]
j = lambda n: json.load(open(f"{out}/{n}.json"))
rows = []
for b in (32, 128):
    f, s = j(f"freshen-encode-{b}"), j(f"st-encode-{b}")
    rows.append((f"MiniLM encode, batch {b} (sent/s)", f["sent_per_s"], "sentence-transformers", s["sent_per_s"], f["sent_per_s"] / s["sent_per_s"]))
d = j("freshen-encode-default")
s = j("st-encode-32")
rows.append(("MiniLM encode, freshen's token budget (sent/s)", d["sent_per_s"], "sentence-transformers b32", s["sent_per_s"], d["sent_per_s"] / s["sent_per_s"]))
f, t = j("freshen-train-step"), j("torch-train-step")
losses = (f["losses"], t["losses"])
same = all(abs(a - b) < 1e-3 for a, b in zip(*losses))
rows.append(("training step, 32 q × 8 t (s/step)", f["step_s"], "PyTorch", t["step_s"], t["step_s"] / f["step_s"]))
for part in ("forward_s", "backward_s", "adamw_s"):
    rows.append((f"  {part[:-2]} (s)", f[part], "PyTorch", t[part], t[part] / f[part]))
f, p = j("freshen-topk"), j("peers-topk")
agree = f["ids_first"] == p["ids_first"]
for peer, key in (("numpy", "numpy"), ("FAISS IndexFlatIP", "faiss_flat")):
    rows.append((f"top-10, 64 q × 200k × 384 (q/s)", f["queries_per_s"], peer, p[key]["queries_per_s"], f["queries_per_s"] / p[key]["queries_per_s"]))
print(f"threads {threads}; training losses freshen {losses[0]} vs PyTorch {losses[1]} (equal to 1e-3: {same}); top-10 ids of the first two queries agree: {agree}")
print("| measurement | freshen | peer | peer value | freshen / peer |")
print("|---|---:|---|---:|---:|")
for name, fv, peer, pv, r in rows:
    print(f"| {name} | {fv:.3g} | {peer} | {pv:.3g} | **{r:.2f}x** |")
PY

# The result lines (benches/report.py renders them).
python3 - "$OUT" "$LENGTHS" "$STEP_LENGTHS" "$RESULTS" "$MACHINE" "$COMMIT" \
  "THREADS=$THREADS LENGTHS=\"$LENGTHS\" PASSAGE_LIMIT=$PASSAGE_LIMIT PASSAGE_REPEATS=$PASSAGE_REPEATS ROUNDS=$ROUNDS benches/speed.sh" <<'PY'
import json, sys
out, lengths, step_lengths, results, machine, commit, command = sys.argv[1:]
def j(n):
    try:
        return json.load(open(f"{out}/{n}.json"))
    except (OSError, ValueError):
        return {}
def rounds(name, value):
    try:
        return f"{value:.1f} (" + ", ".join(open(f"{out}/{name}.rounds").read().split()) + ")"
    except OSError:
        return f"{value:.1f}"
lines = []
def add(table, **row):
    lines.append({"table": table, **row, "command": command, "machine": machine, "commit": commit})
budget = "freshen's budget (vs ST b32)"
for b, fname, sname in (("32", "freshen-encode-32", "st-encode-32"), ("128", "freshen-encode-128", "st-encode-128"),
                        (budget, "freshen-encode-default", "st-encode-32")):
    f, s = j(fname), j(sname)
    if f and s:
        add("speed-encode", passages="glosses", batch=b, st_sent_per_s=f"{s['sent_per_s']:.1f}",
            freshen_sent_per_s=f"{f['sent_per_s']:.1f}", freshen_tokens_per_s="—",
            ratio=f"**{f['sent_per_s'] / s['sent_per_s']:.2f}x**")
for L in lengths.split():
    for b in ("32", "128", "default"):
        fn, sn = f"freshen-passages-{L}-{b}", f"st-passages-{L}-{'32' if b == 'default' else b}"
        f, s = j(fn), j(sn)
        if f and s:
            add("speed-encode", passages=L, batch=budget if b == "default" else b,
                st_sent_per_s=rounds(sn, s["sent_per_s"]) if b != "default" else f"{s['sent_per_s']:.1f}",
                freshen_sent_per_s=rounds(fn, f["sent_per_s"]), freshen_tokens_per_s=f"{f['sent_per_s'] * int(L):,.0f}",
                ratio=f"**{f['sent_per_s'] / s['sent_per_s']:.2f}x**")
steps = [(f"passages of {L} pieces", f"freshen-step-{L}", f"torch-step-{L}") for L in step_lengths.split()]
for label, fn, tn in steps + [("WordNet targets (short)", "freshen-train-step", "torch-train-step")]:
    f, t = j(fn), j(tn)
    if f and t:
        peak = f"{t['peak_rss_mb']:.0f} / {f['peak_rss_mb']:.0f}" if "peak_rss_mb" in t and "peak_rss_mb" in f else "—"
        add("speed-step", texts=label, torch_step_s=f"{t['step_s']:.2f}", freshen_step_s=f"{f['step_s']:.2f}",
            ratio=f"**{t['step_s'] / f['step_s']:.2f}x**", peak_mb=peak)
f, p = j("freshen-topk"), j("peers-topk")
for peer, key in (("numpy", "numpy"), ("FAISS IndexFlatIP", "faiss_flat")):
    if f and p.get(key):
        add("speed-topk", peer=peer, peer_q_per_s=f"{p[key]['queries_per_s']:.0f}", freshen_q_per_s=f"{f['queries_per_s']:.0f}",
            ratio=f"**{f['queries_per_s'] / p[key]['queries_per_s']:.2f}x**")
with open(results, "a") as r:
    for line in lines:
        r.write(json.dumps(line, ensure_ascii=False) + "\n")
print(f"speed: {len(lines)} lines appended to {results} (python3 benches/report.py renders them)", file=sys.stderr)
PY
