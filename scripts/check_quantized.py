#!/usr/bin/env python3
"""Loads a quantized .mnn in the real MNN (Interpreter, CPU, 1 thread) and runs it on a
deterministic input; exits non-zero if it cannot be loaded or any output is NaN/inf.

  /work/venv/bin/python scripts/check_quantized.py OURS.mnn
Prints one line per output: name, shape, min, max.
"""

import sys

import numpy as np
import MNN


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    interpreter = MNN.Interpreter(path)
    session = interpreter.createSession({"numThread": 1})
    inputs = interpreter.getSessionInputAll(session)
    if not inputs:
        print(f"{path}: no inputs", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    for name, tensor in inputs.items():
        shape = tuple(tensor.getShape())
        data = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, data, MNN.Tensor_DimensionType_Caffe)
        tensor.copyFrom(host)
    interpreter.runSession(session)
    bad = False
    for name, tensor in interpreter.getSessionOutputAll(session).items():
        shape = tuple(tensor.getShape())
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
        tensor.copyToHostTensor(host)
        values = np.array(host.getData(), dtype=np.float32).reshape(shape)
        finite = bool(np.isfinite(values).all())
        bad |= not finite
        print(f"{name} {shape} min {values.min():.6g} max {values.max():.6g} finite {finite}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
