#!/usr/bin/env bash
# Packs what benches/gpu.sh needs beside the working tree on the GPU machine, which takes
# 64 MiB at a time and has no model weights: dist/freshen-cuda.xz (scripts/build-cuda.sh)
# and dist/minilm-f16, all-MiniLM-L6-v2 with its weights stored as f16 (both engines load
# them into f32, so they compare on the same rounded weights). Prints the sizes.
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
du -ab dist/freshen-cuda.xz "$DST" 2>/dev/null | sort -n >&2
total=$(du -cb dist/freshen-cuda.xz "$DST" 2>/dev/null | tail -1 | cut -f1)
echo "gpu-pack: $((total / 1048576)) MiB to carry (the limit is 64 MiB with the tree)" >&2
