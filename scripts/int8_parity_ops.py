#!/usr/bin/env python3
"""Op-by-op int8 codes of MNN's runtime against ours, for one input (docs/int8-parity.md).

MNN side: every op output of an int8 model, captured with runSessionWithCallBackInfo and copied
to a float host tensor (MNN dequantizes int8 tensors: x = q * s). Our side: the folder written by
`cargo run --release -p mnnq-engine --example dump MODEL INPUT.bin DIR` (every tensor as raw f32,
with index.txt). Tensors are matched by the name of the op's first output; for tensors with an
int8 scale the codes round(x / s) are compared, else only the cosine.

Usage: int8_parity_ops.py MODEL.mnn INPUT.bin OURS_DIR [--all]
(INPUT.bin: raw f32 in the model's input shape, e.g. golden/<model>/input_0.bin; --all also
prints the tensors that agree.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import (  # noqa: E402
    MnnSession,
    OracleError,
    captured_native_output,
    fixtures_dir,
)


def resolve(path: str) -> Path:
    p = Path(path)
    if not p.exists() and not p.is_absolute() and (fixtures_dir() / p).exists():
        return fixtures_dir() / p
    if not p.exists():
        raise OracleError(f"not found: {path}")
    return p


def net_json(model: Path) -> dict:
    """The Net as JSON from MNN's converter; NaN weight scales are printed as `nan`."""
    import _tools

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "net.json"
        with captured_native_output() as log:
            _tools.mnnconvert(["mnnconvert", "-f", "MNN", "--modelFile", str(model),
                               "--JsonFile", str(out)])
        if not out.is_file():
            raise OracleError(f"cannot dump {model} to JSON:\n{log[0].strip()[-2000:]}")
        text = re.sub(r"-?\bnan\b", "NaN", out.read_text(encoding="utf-8"))
        text = re.sub(r"\binf\b", "Infinity", text)
        return json.loads(text)


def mnn_op_outputs(model: Path, x: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(op name, op type as MNN reports it, first output) for every executed op, in order."""
    import MNN

    session = MnnSession(model)
    session.set_inputs({session.input_names[0]: x})
    results = []

    def before(_tensors, _op):
        return True

    def after(tensors, op):
        if tensors:
            t = tensors[0]
            shape = t.getShape()
            host = MNN.Tensor(shape, MNN.Halide_Type_Float, MNN.Tensor_DimensionType_Caffe)
            t.copyToHostTensor(host)
            results.append((op.getName(), op.getType(),
                            np.array(host.getData(), dtype=np.float32).ravel().copy()))
        return True

    session.interpreter.runSessionWithCallBackInfo(session.session, before, after)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("ours")
    parser.add_argument("--all", action="store_true", help="also print agreeing tensors")
    args = parser.parse_args()
    try:
        model = resolve(args.model)
        net = net_json(model)
        names = net["tensorName"]
        scales = {names[d.get("index", 0)]: d["quantInfo"]["scale"]
                  for d in net.get("extraTensorDescribe", []) if "quantInfo" in d}
        first_output = {op["name"]: names[op["outputIndexes"][0]]
                        for op in net["oplists"] if op.get("outputIndexes")}
        session = MnnSession(model)
        shape = session.input_shape(session.input_names[0])
        raw = np.fromfile(resolve(args.input), dtype=np.float32)
        if raw.size != int(np.prod(shape)):
            raise OracleError(f"{args.input}: {raw.size} floats, the model input {shape} needs "
                              f"{int(np.prod(shape))}")
        index = Path(args.ours) / "index.txt"
        if not index.is_file():
            raise OracleError(f"{index} missing: run the engine's dump example first")
        ours = {}
        for line in index.read_text(encoding="utf-8").splitlines():
            file, name, _shape = line.split("\t")
            ours[name] = np.fromfile(Path(args.ours) / file, dtype=np.float32)
        compared = differing = 0
        for op_name, op_type, mnn in mnn_op_outputs(model, raw.reshape(shape)):
            tensor = first_output.get(op_name)
            if tensor not in ours or ours[tensor].size != mnn.size:
                continue
            mine = ours[tensor]
            compared += 1
            denom = np.sqrt(float((mnn.astype(np.float64) ** 2).sum())
                            * float((mine.astype(np.float64) ** 2).sum()))
            cosine = float((mnn.astype(np.float64) * mine).sum()) / denom if denom > 0 else float("nan")
            scale = scales.get(tensor)
            if scale:
                diff = np.round(mnn / scale).astype(np.int64) - np.round(mine / scale).astype(np.int64)
                share, worst = float(np.mean(diff != 0)), int(np.abs(diff).max())
                line = f"{tensor[:48]:48s} {op_type[:26]:26s} cos {cosine:.6f} codes differ {share * 100:7.3f}% max {worst}"
                bad = worst != 0
            else:
                line = f"{tensor[:48]:48s} {op_type[:26]:26s} cos {cosine:.6f} (float)"
                bad = not np.array_equal(mnn, mine)
            differing += bad
            if bad or args.all:
                print(line)
        print(f"{compared} tensors compared, {differing} differ")
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
