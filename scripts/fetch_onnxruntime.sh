#!/usr/bin/env bash
# Installs the npm package onnxruntime-node (pinned below) into a cache directory, so
# tests/onnx/ort_check.js can run ONNX files written by backprop through ONNX Runtime.
# Idempotent: an install of the pinned version that loads is left alone.
#
# The package's postinstall script is skipped (--ignore-scripts): it only downloads
# optional GPU (CUDA/TensorRT) libraries from a host outside the npm registry; the CPU
# library (bin/napi-v3/<os>/<arch>/libonnxruntime.so.*) ships inside the package itself.
# 1.20.1 is tested with Node 20 on linux-x64.
#
# Usage: scripts/fetch_onnxruntime.sh [DIR]
#   DIR defaults to <repo>/.cache/onnxruntime. Prints DIR/node_modules (the NODE_PATH to
#   use) on the last line, e.g.
#     NODE_PATH="$(scripts/fetch_onnxruntime.sh | tail -n1)" node tests/onnx/ort_check.js OUT
set -euo pipefail

readonly VERSION="1.20.1"
readonly PACKAGE="onnxruntime-node@$VERSION"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/.cache/onnxruntime}"
modules="$dest/node_modules"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: node and npm are required to install $PACKAGE; install them" >&2
  echo "       (e.g. 'sudo apt-get install nodejs npm') and run this script again." >&2
  exit 1
fi

installed_ok() {  # the pinned version is there and loads
  local v
  v="$(NODE_PATH="$modules" node -e \
        "process.stdout.write(require('onnxruntime-node/package.json').version)" \
        2>/dev/null)" || return 1
  [[ "$v" == "$VERSION" ]] || return 1
  NODE_PATH="$modules" node -e "require('onnxruntime-node')" >/dev/null 2>&1
}

if installed_ok; then
  echo "$PACKAGE is already installed in $dest and loads; nothing to do."
  echo "$modules"
  exit 0
fi

mkdir -p "$dest"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "Installing $PACKAGE from the npm registry into $dest ..."
if ! npm install --prefix "$dest" --ignore-scripts --no-audit --no-fund \
       --loglevel=error --fetch-retries=1 "$PACKAGE" >"$log" 2>&1; then
  reason="$(grep -m1 -oE '(FetchError|Error): .*' "$log" || true)"
  [[ -n "$reason" ]] || reason="$(grep -v '^$' "$log" | head -n 3 | tr '\n' ' ' || true)"
  echo "error: could not install $PACKAGE: ${reason:-npm install failed}" >&2
  exit 1
fi

if ! installed_ok; then
  echo "error: $PACKAGE was installed into $dest but does not load:" >&2
  NODE_PATH="$modules" node -e "require('onnxruntime-node')" 2>&1 | grep -v '^\s*at ' \
    | head -n 5 >&2 || true
  echo "(onnxruntime-node ships CPU binaries for linux/darwin/win32 x64 and arm64 only)" >&2
  exit 1
fi

echo "$PACKAGE is ready in $dest"
echo "$modules"
