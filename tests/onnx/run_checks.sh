#!/usr/bin/env bash
# The "onnx.runtime" test: backprop exports its models (onnx_models), the ONNX checker
# accepts them and PyTorch's fixtures, and ONNX Runtime gives backprop's outputs.
# Usage: run_checks.sh ONNX_MODELS OUT_DIR MNIST_DIR FIXTURE_DIR NODE_PATH NODE PYTHON
set -euo pipefail
exporter=$1 out=$2 mnist=$3 fixtures=$4 node_path=$5 node=$6 python=$7
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
echo "== backprop exports (onnx_models)"
"$exporter" "$out" "$mnist" "$fixtures"
echo "== ONNX checker, full_check: the exported models"
"$python" "$here/onnx_check.py" "$out"
echo "== ONNX checker, full_check: the PyTorch fixtures"
"$python" "$here/onnx_check.py" "$fixtures"
echo "== ONNX Runtime"
NODE_PATH="$node_path" "$node" "$here/ort_check.js" "$out"
