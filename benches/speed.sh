#!/usr/bin/env bash
# Speed against the peers, side by side in one run, on the same texts, vectors and threads:
#   1. MiniLM encoding, sentences/s: freshen vs sentence-transformers, batch 32 and 128
#   2. one training step (32 queries × 8 targets, forward + backward + AdamW): freshen vs PyTorch
#   3. exact top-10 of 64 queries over 200,000 × 384 vectors: freshen's `sample` kernel vs
#      numpy and FAISS IndexFlatIP
# Prints one Markdown table of ratios (freshen / peer; > 1 means freshen is faster) and
# keeps every raw JSON in $OUT.
#
#   benches/peers/setup.sh && scripts/fetch-model.sh all-MiniLM-L6-v2
#   benches/speed.sh                 # THREADS=2 OUT=out/speed
#
# Run it on an otherwise idle machine: a concurrent build halves every number.
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

mkdir -p "$OUT"
[ -f "$OUT/glosses.txt" ] || $P benches/peers/texts.py --source queries --n 2000 --out "$OUT/glosses.txt"
[ -f "$OUT/targets.txt" ] || $P benches/peers/texts.py --source corpus --n 2000 --out "$OUT/targets.txt"
[ -f "$OUT/vec/vectors.f32" ] || $P benches/peers/make_vectors.py --n 200000 --dim 384 --queries 64 --seed 0 --out "$OUT/vec"

run() { # name command...: runs, saves $OUT/name.json, echoes progress
  local name=$1; shift
  echo "speed: $name" >&2
  "$@" 2>"$OUT/$name.log" >"$OUT/$name.json" || { cat "$OUT/$name.log" >&2; exit 1; }
}

for b in 32 128; do
  run "st-encode-$b" $P benches/peers/encode.py --model "$MODEL" --texts "$OUT/glosses.txt" --batch $b --threads "$THREADS" --repeats 3
  run "freshen-encode-$b" "$BIN" bench encode --model "$MODEL" --texts "$OUT/glosses.txt" --batch $b --repeats 3
done
# freshen's own batching (a token budget of 1,024, at most 256 texts), for reference.
run "freshen-encode-default" "$BIN" bench encode --model "$MODEL" --texts "$OUT/glosses.txt" --batch 256 --batch-tokens 1024 --repeats 3
run "torch-train-step" $P benches/peers/train_step.py --model "$MODEL" --texts "$OUT/targets.txt" --queries 32 --targets-per-query 8 --steps 4 --threads "$THREADS"
run "freshen-train-step" "$BIN" bench train-step --model "$MODEL" --texts "$OUT/targets.txt" --queries 32 --targets-per-query 8 --steps 4
run "peers-topk" $P benches/peers/topk.py --vectors "$OUT/vec/vectors.f32" --queries "$OUT/vec/queries.f32" --dim 384 --k 10 --threads "$THREADS" --repeats 5
run "freshen-topk" "$BIN" bench topk --vectors "$OUT/vec/vectors.f32" --queries "$OUT/vec/queries.f32" --dim 384 --k 10 --repeats 5

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
