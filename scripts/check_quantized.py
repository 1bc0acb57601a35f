#!/usr/bin/env python3
"""Loads a quantized .mnn in the real MNN (Interpreter, CPU, 1 thread) and runs it on a
deterministic input; exits non-zero if it cannot be loaded or any output is NaN/inf.
With --mnnq BIN, also runs the same input through `BIN run` (our int8 runtime) and fails
when the two runtimes' outputs differ by more than --tolerance times the largest |output|
of MNN's (both runtimes run the same int8 arithmetic; float ops may differ in rounding).

  /work/venv/bin/python scripts/check_quantized.py OURS.mnn [--mnnq target/release/mnnq]
Prints one line per output: name, shape, min, max (and the runtimes' largest difference).
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import MNN


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--mnnq", help="our binary: compare its int8 runtime's outputs")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    path = args.model
    interpreter = MNN.Interpreter(path)
    session = interpreter.createSession({"numThread": 1})
    inputs = interpreter.getSessionInputAll(session)
    if not inputs:
        print(f"{path}: no inputs", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    fed = {}
    for name, tensor in inputs.items():
        shape = tuple(tensor.getShape())
        data = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        fed[name] = data
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, data, MNN.Tensor_DimensionType_Caffe)
        tensor.copyFrom(host)
    interpreter.runSession(session)
    ours = {}
    if args.mnnq:
        work = Path(tempfile.mkdtemp())
        command = [args.mnnq, "run", path, "--output-dir", str(work / "out"), "--threads", "1"]
        for name, data in fed.items():
            file = work / (name.replace("/", "_") + ".npy")
            np.save(file, data)
            command += ["--input", f"{name}={file}"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        ours = {p.stem: np.load(p) for p in (work / "out").glob("*.npy")}
    bad = False
    for name, tensor in interpreter.getSessionOutputAll(session).items():
        shape = tuple(tensor.getShape())
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
        tensor.copyToHostTensor(host)
        values = np.array(host.getData(), dtype=np.float32).reshape(shape)
        finite = bool(np.isfinite(values).all())
        bad |= not finite
        line = f"{name} {shape} min {values.min():.6g} max {values.max():.6g} finite {finite}"
        if args.mnnq:
            mine = ours.get(name.replace("/", "_"))
            if mine is None or mine.size != values.size:
                print(f"{line}; our runtime wrote no output of that size", file=sys.stderr)
                bad = True
                continue
            difference = float(np.abs(mine.reshape(-1) - values.reshape(-1)).max())
            bound = args.tolerance * float(np.abs(values).max())
            agree = difference <= bound
            bad |= not agree
            line += f"; our runtime: max difference {difference:.3g} (bound {bound:.3g}) {'ok' if agree else 'DIFFERENT'}"
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
