#!/usr/bin/env bash
# Create (or update) the Python environment for the peer benchmarks and the
# parity fixture: .venv-peers/ at the repo root, with the pinned packages of
# benches/peers/requirements.txt. Re-running it is cheap when nothing changed.
#
#   benches/peers/setup.sh            # uses python3 (3.10+; made with 3.11)
#   PYTHON=python3.11 benches/peers/setup.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYTHON=${PYTHON:-python3}
VENV=.venv-peers

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r benches/peers/requirements.txt
"$VENV/bin/python" - <<'PY'
import faiss, numpy, psutil, pyarrow, sentence_transformers, torch, transformers
print(f"setup: .venv-peers ready: torch {torch.__version__}, sentence-transformers "
      f"{sentence_transformers.__version__}, transformers {transformers.__version__}, faiss "
      f"{faiss.__version__}, numpy {numpy.__version__}, psutil {psutil.__version__}, pyarrow {pyarrow.__version__}")
PY
