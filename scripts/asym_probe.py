#!/usr/bin/env python3
"""Does MNN 3.6.1's CPU int8 runtime honour non-zero feature zero points? (docs/int8-parity.md)

Builds a small ONNX model (conv+ReLU6 -> depthwise+ReLU6 with padding -> 3x3 conv; avg pool with padding
and max pool of the depthwise output, add, concat), converts it with MNN's converter, quantizes it with
`mnnq quantize` (bias correction and float head off, so the arithmetic is plain), rewrites the
ReLU/ReLU6 outputs and the tensors that share their quantization to asymmetric codes with the
`asym_probe` example (zero point -128, scale = range/255), runs it in MNN with a callback that
captures every op's inputs and output, and checks each int8 op against a numpy computation from
MNN's own input codes:
  conv/depthwise: y = conv((q_in - z_in) s_in, w_q) + b, q = clamp(round(y/s_out) + z_out, lo, 127)
                  (w_q = MAX_ABS per-channel weights, padding = the value 0 = code z_in, lo = z_out
                  with a fused ReLU/ReLU6 else -128)
  avg pool:       (sum of the valid stored codes q+128) * floor(2^24/n) >> 24, minus 128
  max pool:       max of the valid codes
  concat:         copy of the codes
  add:            q = round(((q0 - z0) s0 + (q1 - z1) s1) / s_out) + z_out
Prints, per op, the share of codes that differ and the largest difference (1 LSB is f32 rounding).

Usage: /work/venv/bin/python scripts/asym_probe.py [--mnnq target/release/mnnq] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import (  # noqa: E402
    REPO_ROOT,
    MnnSession,
    OracleError,
    convert_onnx_to_mnn,
    dump_mnn_json,
    import_mnn,
)

import_mnn()  # before onnx: the other order crashes the converter (illegal instruction)
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C_IN, C_MID, H = 8, 16, 12


def build_onnx(path: Path, rng: np.random.Generator) -> dict:
    w = {
        "w1": rng.normal(0, 0.3, (C_MID, C_IN, 3, 3)).astype(np.float32),
        "b1": rng.normal(0.5, 0.5, C_MID).astype(np.float32),
        "w2": rng.normal(0, 0.4, (C_MID, 1, 3, 3)).astype(np.float32),
        "b2": rng.normal(0.3, 0.5, C_MID).astype(np.float32),
        "w3": rng.normal(0, 0.1, (C_IN, C_MID, 3, 3)).astype(np.float32),
        "b3": rng.normal(0, 0.2, C_IN).astype(np.float32),
    }
    lo, hi = numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(
        np.array(6, np.float32), "hi")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6_1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=C_MID,
                         name="dw"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6_2"),
        helper.make_node("AveragePool", ["r2"], ["avg"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                         count_include_pad=0, name="avgpool"),
        helper.make_node("MaxPool", ["r2"], ["mx"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                         name="maxpool"),
        helper.make_node("Add", ["avg", "r1"], ["sum"], name="add"),
        # The concat ties its inputs to its output's quantization: it reads the Add and the last
        # conv, so the max pool keeps its input's quantization (and runs int8 in MNN).
        helper.make_node("Concat", ["sum", "y"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], pads=[1, 1, 1, 1], name="conv3"),
    ]
    graph = helper.make_graph(
        nodes, "asym_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, H, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C_IN, H, H]),
         helper.make_tensor_value_info("cat", TensorProto.FLOAT, [1, C_MID + C_IN, H, H]),
         helper.make_tensor_value_info("mx", TensorProto.FLOAT, [1, C_MID, H, H])],
        [numpy_helper.from_array(v, k) for k, v in w.items()] + [lo, hi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def max_abs_weights(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / 127.0
    return (np.round(flat / scale[:, None]) * scale[:, None]).reshape(w.shape)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, group: int) -> np.ndarray:
    c_in, hh, ww = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    c_out, cg, kh, kw = w.shape
    out = np.zeros((c_out, hh + 2 * pad - kh + 1, ww + 2 * pad - kw + 1), np.float64)
    per_group = c_out // group
    for o in range(c_out):
        g = o // per_group
        src = xp[g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                out[o] += np.tensordot(w[o, :, i, j], src[:, i:i + out.shape[1], j:j + out.shape[2]],
                                       axes=(0, 0))
    return out + b[:, None, None]


def pool(codes: np.ndarray, reduce) -> np.ndarray:
    c, hh, ww = codes.shape
    out = np.zeros_like(codes)
    for y in range(hh):
        for x in range(ww):
            win = codes[:, max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(c, -1)
            out[:, y, x] = reduce(win)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnnq", default=str(REPO_ROOT / "target" / "release" / "mnnq"))
    parser.add_argument("--keep", help="keep the models in this folder")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        weights = build_onnx(tmp / "m.onnx", rng)
        convert_onnx_to_mnn(tmp / "m.onnx", tmp / "float.mnn")
        calib = tmp / "calib"
        calib.mkdir(exist_ok=True)
        for i in range(8):
            np.save(calib / f"{i}.npy", rng.normal(0, 1, (1, C_IN, H, H)).astype(np.float32))
        (tmp / "cfg.json").write_text(json.dumps({
            "path": str(calib), "input_type": "sequence", "feature_quantize_method": "KL",
            "weight_quantize_method": "MAX_ABS", "bias_correction": False,
            "float_outputs": False}))
        subprocess.run([args.mnnq, "quantize", str(tmp / "float.mnn"), str(tmp / "sym.mnn"),
                        str(tmp / "cfg.json")], check=True, capture_output=True)
        subprocess.run(["cargo", "run", "--release", "-q", "-p", "mnnq-quantize", "--example",
                        "asym_probe", str(tmp / "sym.mnn"), str(tmp / "asym.mnn")],
                       check=True, cwd=REPO_ROOT)
        x = rng.normal(0, 1, (1, C_IN, H, H)).astype(np.float32)
        for variant in ("sym", "asym"):
            print(f"== {variant}")
            check(tmp / f"{variant}.mnn", tmp / "float.mnn", x, weights)
    return 0


def check(model: Path, float_model: Path, x: np.ndarray, weights: dict) -> None:
    import MNN

    net = dump_mnn_json(model)
    names = net["tensorName"]
    quant = {names[d.get("index", 0)]: d["quantInfo"]
             for d in net.get("extraTensorDescribe", []) if "quantInfo" in d}
    for name in ("r1", "r2", "avg", "mx", "sum", "cat"):
        q = quant.get(name)
        if q:
            print(f"  {name:4s} scale {q['scale']:.6f} zero {q.get('zero', 0):5.0f} "
                  f"min {q.get('min', 0):5.0f} max {q.get('max', 0):5.0f}")
    session = MnnSession(model)
    session.set_inputs({"x": x})
    seen = {}

    def to_host(t):
        host = MNN.Tensor(t.getShape(), MNN.Halide_Type_Float, MNN.Tensor_DimensionType_Caffe)
        t.copyToHostTensor(host)
        return np.array(host.getData(), dtype=np.float64).reshape(t.getShape())

    def before(tensors, op):
        seen[op.getName()] = {"type": op.getType(), "in": [to_host(t) for t in tensors]}
        return True

    def after(tensors, op):
        seen[op.getName()]["out"] = to_host(tensors[0])
        return True

    session.interpreter.runSessionWithCallBackInfo(session.session, before, after)
    float_out = MnnSession(float_model).infer({"x": x})
    int8_out = session.outputs()
    for key in float_out:
        a, b = float_out[key].ravel(), int8_out[key].ravel()
        print(f"  output {key}: cosine vs MNN float {np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b):.5f}")

    def codes(values, name):
        q = quant[name]
        raw = values / q["scale"] + q.get("zero", 0)
        off = float(np.abs(raw - np.round(raw)).max())
        if off > 1e-2:
            print(f"    ({name}: host values are not (q - z)*s, max off-grid {off:.3f})")
        return np.round(raw).astype(np.int64)

    def expect_conv(x_codes, in_name, out_name, w, b, group, relu):
        qi, qo = quant[in_name], quant[out_name]
        xin = (x_codes - qi.get("zero", 0)) * qi["scale"]
        y = conv2d(xin[0], max_abs_weights(w), b, 1 if w.shape[2] == 3 else 0, group)
        lo = qo.get("zero", 0) if relu else qo.get("min", -127)
        return np.clip(np.round(y / qo["scale"]) + qo.get("zero", 0), lo, qo.get("max", 127))[None]

    def report(label, got, want):
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        print(f"  {label:34s} codes differ {np.mean(diff != 0) * 100:6.2f}%  max {int(diff.max())}")

    by_type = {}
    for name, rec in seen.items():
        by_type.setdefault(rec["type"], []).append((name, rec))
    for name, rec in seen.items():
        print(f"  op {name:24s} {rec['type']}")
    # Identify ops by their output tensors' values: match by the ONNX names MNN keeps.
    rec = {n: r for n, r in seen.items()}
    inputs_codes = {}
    if "c1" in rec and "r1" in quant:
        xin_q = quant.get("x")
        if xin_q and "x" in quant:
            pass
    # conv1 reads the runtime-quantized input; take its codes from the callback.
    if "c1" in rec:
        c_in = codes(rec["c1"]["in"][0], "x")
        report("conv1 (dense, relu6, pad 1)", codes(rec["c1"]["out"], "r1"),
               expect_conv(c_in, "x", "r1", weights["w1"], weights["b1"], 1, True))
    if "c2" in rec:
        c_in = codes(rec["c2"]["in"][0], "r1")
        inputs_codes["r1"] = c_in
        report("dw (depthwise, relu6, pad 1)", codes(rec["c2"]["out"], "r2"),
               expect_conv(c_in, "r1", "r2", weights["w2"], weights["b2"], C_MID, True))
    if "avg" in rec:
        c_in = codes(rec["avg"]["in"][0], "r2")
        # x86: codes stored as q + 128 (uint8), sum * floor(2^24 / n) >> 24, back to q.
        want = pool(c_in[0] + 128, lambda w: (w.sum(axis=1) * ((1 << 24) // w.shape[1])) >> 24)
        want = want[None] - 128
        report("avgpool 3x3 pad 1 (valid only)", codes(rec["avg"]["out"], "avg"), want)
    if "mx" in rec:
        c_in = codes(rec["mx"]["in"][0], "r2")
        got = codes(rec["mx"]["out"], "mx")
        report("maxpool 3x3 pad 1", got, pool(c_in[0], lambda w: w.max(axis=1))[None])
        # MNN x86 compares the stored bytes q + 128 as signed int8 (docs/int8-parity.md).
        as_signed = c_in[0] + 128 - 256 * (c_in[0] >= 0)
        stored_max = pool(as_signed, lambda w: w.max(axis=1))
        bug = (stored_max - 128 + 256 * (stored_max < 0))[None]
        report("maxpool vs max of bytes as int8", got, bug)
    if "sum" in rec:
        a = codes(rec["sum"]["in"][0], "avg")
        b = codes(rec["sum"]["in"][1], "r1")
        qa, qb, qo = quant["avg"], quant["r1"], quant["sum"]
        v = (a - qa.get("zero", 0)) * qa["scale"] + (b - qb.get("zero", 0)) * qb["scale"]
        want = np.clip(np.round(v / qo["scale"]) + qo.get("zero", 0), qo.get("min", -127),
                       qo.get("max", 127))
        report("add (BinaryOp int8)", codes(rec["sum"]["out"], "sum"), want)
    if "concat" in rec:
        got = codes(rec["concat"]["out"], "cat")
        want = np.concatenate([codes(rec["concat"]["in"][0], "sum"),
                               codes(rec["concat"]["in"][1], "y")], axis=1)
        report("concat", got, want)
    if "y" in rec:
        c_in = codes(rec["y"]["in"][0], "r2")
        qo = quant.get("y")
        if qo:
            report("conv3 (dense 3x3 pad 1, no act)", codes(rec["y"]["out"], "y"),
                   expect_conv(c_in, "r2", "y", weights["w3"], weights["b3"], 1, False))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
