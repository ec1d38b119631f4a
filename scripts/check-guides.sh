#!/usr/bin/env bash
# Runs every ```sh block of README.md and docs/*.md, so that the commands the documents
# show keep working.
#
#   scripts/check-guides.sh                     # every document
#   scripts/check-guides.sh docs/workers.md     # some of them
#
# A block whose first line is a comment containing `no-check` is skipped (GPU-only,
# multi-hour or network commands). Each document runs in a fresh scratch copy of the
# repository root: its entries are links to the repository's, but `out/`, `.freshen/`
# and new datasets under `data/` are the scratch's own, so no run touches the
# repository's outputs or cache. A document's blocks run in order, each in its own
# `bash -euo pipefail` with no input. `freshen` is the release build, on PATH, and
# `cargo run --release -- ARGS` runs it too. The first failure stops the script, naming
# the document and the command; the last line is `N passed, 0 failed`.
set -euo pipefail
trap 'echo "check-guides: stopped at line $LINENO (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
ROOT=$PWD

cargo build --release --quiet
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[ -x "$BIN_DIR/freshen" ] || { echo "check-guides: no binary at $BIN_DIR/freshen" >&2; exit 1; }
export PATH="$BIN_DIR:$PATH" ROOT

# `cargo run --release -- ARGS` as the documents write it: the binary just built.
cargo() {
  if [ "${1:-}" = run ] && [ "${2:-}" = --release ] && [ "${3:-}" = -- ]; then
    shift 3
    freshen "$@"
  else
    (cd "$ROOT" && command cargo "$@")
  fi
}
export -f cargo

docs=("$@")
[ ${#docs[@]} -gt 0 ] || docs=(README.md docs/*.md)

# The ```sh blocks of file $1, each ended by a NUL byte.
blocks() {
  awk '
    /^```sh[[:space:]]*$/ { inside = 1; block = ""; next }
    inside && /^```[[:space:]]*$/ { inside = 0; printf "%s%c", block, 0; next }
    inside { block = block $0 "\n" }
  ' "$1"
}

# A fresh scratch root: links to the repository's entries, its own out/, .freshen/, data/.
scratch_root() {
  local dir entry name
  dir=$(mktemp -d "${TMPDIR:-/tmp}/check-guides.XXXXXX")
  for entry in "$ROOT"/* "$ROOT"/.ci; do
    name=$(basename "$entry")
    case "$name" in out | data) ;; *) ln -s "$entry" "$dir/$name" ;; esac
  done
  mkdir -p "$dir/data"
  for entry in "$ROOT"/data/*; do ln -s "$entry" "$dir/data/$(basename "$entry")"; done
  echo "$dir"
}

passed=0
skipped=0
start=$SECONDS
for doc in "${docs[@]}"; do
  scratch=$(scratch_root)
  n=0
  while IFS= read -r -d '' block; do
    n=$((n + 1))
    first=${block%%$'\n'*}
    if [[ "$first" =~ ^[[:space:]]*#.*no-check ]]; then
      skipped=$((skipped + 1))
      continue
    fi
    printf '== %s, block %d: %s\n' "$doc" "$n" "$first"
    t=$SECONDS
    if ! (cd "$scratch" && bash -euo pipefail -c "$block" </dev/null); then
      printf '\ncheck-guides: %s, block %d failed (scratch root %s):\n%s\n' \
        "$doc" "$n" "$scratch" "$block" >&2
      echo "$passed passed, 1 failed"
      exit 1
    fi
    printf '   ok (%ds)\n' $((SECONDS - t))
    passed=$((passed + 1))
  done < <(blocks "$doc")
  rm -rf "$scratch"
done
echo "($skipped blocks marked no-check skipped; $((SECONDS - start))s)"
echo "$passed passed, 0 failed"
