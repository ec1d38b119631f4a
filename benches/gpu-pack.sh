#!/usr/bin/env bash
# Packs what benches/gpu.sh needs beside the working tree on the GPU machine, which takes
# 64 MiB at a time (the tree included) and has no model weights, into dist/pack, all of it
# xz-compressed (benches/gpu.sh unpacks it there):
#   - binaries.tar.xz: the CUDA binary and the CUDA kernels' test binary, run there first
#     (scripts/build-cuda.sh), with xz's x86 filter;
#   - minilm-f16.tar.xz: all-MiniLM-L6-v2 with its weights stored as f16 (both engines load
#     them into f32, so they compare on the same rounded weights; f16 weights compress by
#     a tenth, 45 MB to 41 MB);
#   - inputs.tar.xz: the speed benchmark's texts (glosses, targets, 200-piece passages),
#     made here so the GPU machine spends no device time on them;
#   - data.tar.xz (when DATA is set): a dataset folder for the claim's arms, unpacked there
#     to the same path (the full WordNet set, 10.3 MB, packs to 7.4 MB). With the model
#     and both binaries it passes the limit: the claim then runs on the shipped sample,
#     or the data travels in a second run that follows at once.
# Prints the sizes and fails when the pack and the tree pass 64 MiB.
#
#   scripts/fetch-model.sh all-MiniLM-L6-v2 && scripts/build-cuda.sh && benches/gpu-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${MODEL:-models/all-MiniLM-L6-v2}
DST=dist/minilm-f16
[ -f "$SRC/model.safetensors" ] || { echo "gpu-pack: $SRC missing (scripts/fetch-model.sh all-MiniLM-L6-v2)" >&2; exit 1; }
rm -rf "$DST" && mkdir -p "$DST"
# The folder's small files (the model's configuration and tokenizer), not its other
# weight formats.
(cd "$SRC" && find . -type f \( -name '*.json' -o -name '*.txt' \) -size -4M) | while read -r f; do
  mkdir -p "$DST/$(dirname "$f")" && cp "$SRC/$f" "$DST/$f"
done
python3 - "$SRC/model.safetensors" "$DST/model.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1])
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in w.items()}, sys.argv[2])
PY

# The speed benchmark's inputs (benches/gpu.sh's sizes; python3 with pyarrow and tokenizers).
IN=dist/gpu-in
mkdir -p "$IN"
[ -f "$IN/glosses.txt" ] || python3 benches/peers/texts.py --source queries --n 4000 --out "$IN/glosses.txt" >&2
[ -f "$IN/targets.txt" ] || python3 benches/peers/texts.py --source corpus --n 4000 --out "$IN/targets.txt" >&2
[ -f "$IN/passages.txt" ] || python3 benches/peers/passages.py --tokens 200 --n 1000 --model "$SRC" --out "$IN/passages.txt" >&2

PACK=dist/pack
rm -rf "$PACK" && mkdir -p "$PACK"
[ -x dist/freshen-cuda ] || { echo "gpu-pack: dist/freshen-cuda missing (scripts/build-cuda.sh)" >&2; exit 1; }
[ -x dist/operators-cuda-tests ] || { echo "gpu-pack: dist/operators-cuda-tests missing (scripts/build-cuda.sh)" >&2; exit 1; }
# One stream for both binaries, with a window that spans them: they share most of their
# code (candle, arrow), so one stream packs them smaller than two.
tar -C dist -cf - freshen-cuda operators-cuda-tests | xz -9e --x86 --lzma2=preset=9e,dict=192MiB -T1 >"$PACK/binaries.tar.xz"
tar -C dist -cf - minilm-f16 | xz -6 -T0 >"$PACK/minilm-f16.tar.xz"
tar -C dist -cf - gpu-in | xz -9 -T0 >"$PACK/inputs.tar.xz"
if [ -n "${DATA:-}" ]; then
  [ -f "$DATA/corpus.parquet" ] || { echo "gpu-pack: no dataset at $DATA" >&2; exit 1; }
  tar -cf - "$DATA" | xz -9e -T0 >"$PACK/data.tar.xz"
fi
du -ab "$PACK" | sort -n >&2
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
total=$(( $(du -sb "$PACK" | cut -f1) + tree ))
echo "gpu-pack: $((total / 1024)) KiB to carry with the tree (the limit is 65536 KiB)" >&2
[ "$total" -le $((64 * 1048576)) ] || { echo "gpu-pack: over the limit" >&2; exit 1; }
