#!/usr/bin/python3
"""Runs the ONNX checker and strict shape inference on every DIR/*.onnx.

Usage: /usr/bin/python3 tests/onnx/onnx_check.py DIR
  (Debian's python3, with python3-onnx.) For each file: onnx.checker.check_model(model,
  full_check=True), then onnx.shape_inference.infer_shapes(model, check_type=True,
  strict_mode=True). Prints "NAME.onnx: checker ok (ir_version X, opset Y)" per file, or
  an error naming the file and the checker's message; exits 1 if any file failed, or if
  DIR has no .onnx file.
  Note: onnx 1.12 does not catch everything ONNX Runtime refuses (e.g. a Gemm whose
  weight's inner dimension does not match its input passes both checks here).
"""

import glob
import os
import sys

try:
    import onnx
    import onnx.checker
    import onnx.shape_inference
except ImportError as e:
    sys.exit(f"error: cannot import onnx ({e}); run this with /usr/bin/python3 "
             "(Debian's python3-onnx)")


def opset_of(model):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_check.py DIR")
    d = sys.argv[1]
    if not os.path.isdir(d):
        sys.exit(f"error: {d} is not a directory")
    paths = sorted(glob.glob(os.path.join(d, "*.onnx")))
    if not paths:
        sys.exit(f"error: no .onnx file in {d}")
    failed = 0
    for path in paths:
        name = os.path.basename(path)
        stage = "load"
        try:
            model = onnx.load(path)
            stage = "checker"
            onnx.checker.check_model(model, full_check=True)
            stage = "shape inference"
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except Exception as e:  # the checker raises ValidationError, inference InferenceError
            msg = str(e).strip() or type(e).__name__
            print(f"error: {name}: {stage} failed: {msg}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: checker ok (ir_version {model.ir_version}, opset {opset_of(model)})")
    if failed:
        sys.exit(f"error: {failed} of {len(paths)} file(s) failed the ONNX checker")


if __name__ == "__main__":
    main()
