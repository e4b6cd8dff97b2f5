#!/usr/bin/env bash
# Provides Fashion-MNIST (the four gzip-compressed IDX files) from the Debian package
# dataset-fashion-mnist, copied into a cache directory and checked against SHA-256 sums.
# The package uses the same file names as MNIST, so load_mnist reads the directory as is.
# Idempotent: verified files are left alone.
#
# Usage: scripts/fetch_fashion_mnist.sh [DIR]
#   DIR defaults to $BACKPROP_DATA_DIR/fashion-mnist if BACKPROP_DATA_DIR is set, else
#   <repo>/.cache/data/fashion-mnist. Prints the directory on the last line.
set -euo pipefail

readonly PACKAGE="dataset-fashion-mnist"
readonly SRC="/usr/share/datasets/fashion-mnist"
readonly FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
                t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
declare -A SHA256=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 1 ]]; then
  dest="$1"
elif [[ -n "${BACKPROP_DATA_DIR:-}" ]]; then
  dest="$BACKPROP_DATA_DIR/fashion-mnist"
else
  dest="$repo/.cache/data/fashion-mnist"
fi

sum_ok() {  # FILE EXPECTED
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

all_in() {  # DIR
  local f
  for f in "${FILES[@]}"; do
    sum_ok "$1/$f" "${SHA256[$f]}" || return 1
  done
}

if all_in "$dest"; then
  echo "Fashion-MNIST is already in $dest (sha256 verified); nothing to do."
  echo "$dest"
  exit 0
fi

missing_src=0
for f in "${FILES[@]}"; do
  [[ -f "$SRC/$f" ]] || missing_src=1
done
if [[ $missing_src -eq 1 ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "Installing the Debian package $PACKAGE ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$PACKAGE" >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y "$PACKAGE" >/dev/null
    fi
  else
    echo "error: $SRC is missing; install the Debian package $PACKAGE" >&2
    echo "       (e.g. 'sudo apt-get install $PACKAGE') and run this script again." >&2
    exit 1
  fi
fi

mkdir -p "$dest"
for f in "${FILES[@]}"; do
  if ! sum_ok "$SRC/$f" "${SHA256[$f]}"; then
    echo "error: $SRC/$f is missing or has an unexpected sha256:" >&2
    sha256sum "$SRC/$f" >&2 || true
    exit 1
  fi
  # Copy (not symlink) so the cache survives removal of the package; move into place
  # atomically so an interrupted run never leaves a partial file.
  cp "$SRC/$f" "$dest/.$f.part"
  mv -f "$dest/.$f.part" "$dest/$f"
  echo "  $f  ok"
done

echo "Fashion-MNIST is ready in $dest"
echo "$dest"
