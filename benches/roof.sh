#!/usr/bin/env bash
# The machine's f32 roof, for reading the encoding figures of `benches/speed.sh`: the peak
# of fused multiply-adds the cores retire (a C loop of independent FMA chains, AVX-512 and
# AVX2, one thread and every core), and what the peers' matrix library reaches on
# MiniLM's own product shapes (PyTorch's `torch.mm`, 2 threads as speed.sh runs them).
# An encoder whose time is nearly all f32 products cannot run faster than the roof lets:
# at 64 word pieces a MiniLM text costs about 1.4 GFLOP (BENCHMARKS.md, issue 13).
#
#   benches/roof.sh                  # prints one table; about a minute, on an idle machine
#
# Settings (environment): THREADS (2: the cores speed.sh gives both engines), PYTHON (the
# peers' virtual environment, .venv-peers/bin/python, from benches/peers/setup.sh), RESULTS.
# Results: one JSON line per measurement and thread count is appended to
# benches/results/roof.jsonl (table `roof` of BENCHMARKS.md: GFLOP/s in the column of
# 1 thread or THREADS), with the command, machine and commit; then
# `python3 benches/report.py` rewrites the table.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
PY=${PYTHON:-.venv-peers/bin/python}
RESULTS=${RESULTS:-benches/results/roof.jsonl}
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src operators 2>/dev/null || echo "+dirty")
MACHINE="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
# line WHAT THREADS GFLOPS: appends one result line.
line() {
  local field=gflops_1thread
  [ "$2" = 1 ] || field=gflops_$2threads
  python3 -c 'import json, sys; w, f, g, c, m, k = sys.argv[1:]; print(json.dumps({"table": "roof", "what": w, f: g,
    "command": c, "machine": m, "commit": k}, ensure_ascii=False))' "$1" "$field" "$3" "benches/roof.sh" "$MACHINE" "$COMMIT" >>"$RESULTS"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/fma.c" <<'C'
// Independent FMA chains in named registers (12: more than latency × pipes on current
// x86, fewer than the 16 ymm registers), so the loop runs at the FMA units' throughput;
// prints GFLOP/s for a thread count and a vector width.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define ITERS 100000000L
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(i) V c##i = SET((float)i);
#define STEP(i) c##i = FMA(c##i, m, a);
#define SUM(i) sum = ADD(sum, c##i);
#define BODY                                                        \
  V m = SET(0.999999f), a = SET(1e-7f);                             \
  CHAINS(DECL)                                                      \
  for (long it = 0; it < ITERS; it++) {                             \
    CHAINS(STEP)                                                    \
    __asm__ volatile("" ::: "memory");                              \
  }                                                                 \
  V sum = SET(0.0f);                                                \
  CHAINS(SUM)                                                       \
  float out[sizeof(V) / 4], s = 0;                                  \
  memcpy(out, &sum, sizeof(V));                                     \
  for (unsigned j = 0; j < sizeof(V) / 4; j++) s += out[j];         \
  return s;

#define V __m512
#define SET _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
__attribute__((target("avx512f"))) static double run512(void) { BODY }
#undef V
#undef SET
#undef FMA
#undef ADD
#define V __m256
#define SET _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
__attribute__((target("avx2,fma"))) static double run256(void) { BODY }

int main(int argc, char **argv) {
  int threads = atoi(argv[1]), wide = atoi(argv[2]);
  double sink = 0, t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += wide == 512 ? run512() : run256();
  double dt = omp_get_wtime() - t0;
  // Each iteration: 12 FMAs of wide/32 lanes, 2 flops each.
  double flops = (double)threads * ITERS * 12 * (wide / 32) * 2.0;
  printf("%.1f %g\n", flops / dt / 1e9, sink);
  return 0;
}
C
gcc -O2 -fopenmp -o "$work/fma" "$work/fma.c"
avx512=0
grep -q avx512f /proc/cpuinfo && avx512=1
echo "| what | threads | GFLOP/s |"
echo "|---|---:|---:|"
for t in 1 "$THREADS"; do
  for w in 256 512; do
    [ "$w" = 512 ] && [ "$avx512" = 0 ] && continue
    best=0
    for _ in 1 2 3; do
      g=$("$work/fma" "$t" "$w" | cut -d' ' -f1)
      best=$(python3 -c "print(max($best, $g))")
    done
    echo "| FMA loop, ${w}-bit vectors (best of 3) | $t | $best |"
    line "FMA loop, ${w}-bit vectors (best of 3)" "$t" "$best"
  done
done
if [ -x "$PY" ]; then
  "$PY" - "$THREADS" "$RESULTS" "$MACHINE" "$COMMIT" <<'PY'
import json, sys, time, torch
results = open(sys.argv[2], "a")
torch.set_num_threads(int(sys.argv[1]))
# MiniLM's products for a batch of 32 texts of 64 pieces (2,048 rows): the attention's
# projections (384 × 384), the feed-forward's two (384 × 1,536 and back), and a square one.
for m, k, n, what in [(2048, 384, 384, "projection"), (2048, 384, 1536, "feed-forward up"),
                      (2048, 1536, 384, "feed-forward down"), (2048, 2048, 2048, "square")]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            torch.mm(a, b); reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    print(f"| torch.mm {m} × {k} × {n} ({what}), torch {torch.__version__} | {sys.argv[1]} | {best:.1f} |")
    t = int(sys.argv[1])
    field = "gflops_1thread" if t == 1 else f"gflops_{t}threads"
    results.write(json.dumps({"table": "roof", "what": f"`torch.mm` (MKL), {m:,} × {k:,} → {n:,}", field: f"{best:.1f}",
                              "torch": torch.__version__, "command": "benches/roof.sh", "machine": sys.argv[3],
                              "commit": sys.argv[4]}, ensure_ascii=False) + "\n")
PY
fi
