#!/usr/bin/env python3
"""Generate the op conformance suite: one-op ONNX models converted by MNN's converter and run by MNN.

For every case this writes `<out>/<case>/` with
  model.mnn            the model as MNN's converter wrote it
  input_<name>.npy     float32 inputs (seeded random, in ranges that keep every op in its domain)
  output_<name>.npy    MNN 3.6.1's outputs (CPU, 1 thread, precision normal), stored as float32
  case.json            the ONNX op and parameters, input/output names, shapes and dtypes, the MNN ops
                       the converter produced (with their scalar parameters), the ops the MNN session
                       executed, and the max abs difference between MNN and ONNX Runtime
and an `index.json` listing every case plus the ones MNN could not convert or run.

Usage: .venv/bin/python scripts/conformance/generate.py [--out DIR] [--only REGEX] [--list]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from oracle_common import (  # noqa: E402
    REPO_ROOT,
    MnnSession,
    OracleError,
    captured_native_output,
    convert_onnx_to_mnn,
    dump_mnn_json,
    import_mnn,
)

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as import_error:  # pragma: no cover - environment problem
    sys.exit(f"error: cannot import onnx ({import_error}); run scripts/setup-venv.sh")

DEFAULT_OUT = REPO_ROOT / "crates" / "mnnq-engine" / "tests" / "conformance"
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
# MNN vs ONNX Runtime: a max abs difference above this (times max(1, max |reference|)) means MNN
# computes something else than the ONNX op (not rounding noise)
DISAGREEMENT_TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------------
# Case description
# --------------------------------------------------------------------------------------------

@dataclass
class Input:
    name: str
    shape: tuple
    low: float = -2.0
    high: float = 2.0
    integer: bool = False  # integer-valued floats (for comparisons that need ties)


@dataclass
class Case:
    name: str
    onnx_op: str
    params: dict
    inputs: list
    nodes: list
    outputs: list  # (name, onnx elem type)
    initializers: list = field(default_factory=list)
    opset: int = 13
    note: str = ""
    # MNN op types the ONNX converter never emits: the Net is written directly (MNN's JSON form,
    # converted with `-f JSON`, which keeps every op as written). `mnn_ops` holds the ops with
    # `inputs` / `outputs` as tensor names; `reference` computes the expected outputs with numpy
    # from the feeds (in place of ONNX Runtime)
    mnn_ops: list = None
    reference: object = None


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


class Weights:
    """Seeded constants for one case, so a case's weights do not depend on the other cases."""

    def __init__(self, case_name: str):
        self.rng = np.random.RandomState(seed_of("weights/" + case_name))
        self.tensors = []
        self.count = 0

    def _add(self, array, name):
        if name is None:
            self.count += 1
            name = f"c{self.count}"
        self.tensors.append(numpy_helper.from_array(array, name))
        return name

    def normal(self, shape, scale=0.5, name=None):
        return self._add((self.rng.randn(*shape) * scale).astype(np.float32), name)

    def uniform(self, shape, low, high, name=None):
        return self._add(self.rng.uniform(low, high, size=shape).astype(np.float32), name)

    def ints(self, values, name=None):
        return self._add(np.array(values, dtype=np.int64), name)

    def floats(self, values, name=None):
        return self._add(np.array(values, dtype=np.float32), name)


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL


def single(name, op, inputs, params=None, attrs=None, const_inputs=None, opset=13, out_type=FLOAT,
           weights=None, extra_inputs_after=None, note=""):
    """A case made of exactly one ONNX node fed by graph inputs, then constant inputs."""
    attrs = attrs or {}
    node_inputs = [i.name for i in inputs] + list(const_inputs or []) + list(extra_inputs_after or [])
    return Case(name, op, params if params is not None else dict(attrs), inputs,
                [node(op, node_inputs, ["y"], **attrs)], [("y", out_type)],
                weights.tensors if weights else [], opset, note)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

def conv_cases():
    cases = []

    def conv(name, cin, cout, k, hw=(9, 9), stride=1, pads=None, dilation=1, group=1, bias=True,
             act=None, auto_pad=None, batch=1):
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        w = Weights(name)
        wname = w.normal((cout, cin // group, kh, kw), scale=0.3)
        ins = ["x", wname]
        if bias:
            ins.append(w.normal((cout,), scale=0.5))
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dilation, dilation], group=group)
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = pads if pads is not None else [0, 0, 0, 0]
        conv_out = "y" if act is None else "conv_out"
        nodes = [node("Conv", ins, [conv_out], **attrs)]
        act_desc = None
        if act == "relu":
            nodes.append(node("Relu", [conv_out], ["y"]))
            act_desc = "Relu"
        elif act is not None:
            lo, hi = act
            nodes.append(node("Clip", [conv_out, w.floats(lo), w.floats(hi)], ["y"]))
            act_desc = f"Clip({lo}, {hi})"
        params = dict(attrs, input_channels=cin, output_channels=cout, bias=bias, activation=act_desc)
        cases.append(Case(name, "Conv", params, [Input("x", (batch, cin) + tuple(hw))], nodes,
                          [("y", FLOAT)], w.tensors))

    conv("conv_k1_s1_bias", 8, 6, 1)
    conv("conv_k1_s2_nobias", 4, 8, 1, stride=2, bias=False)
    conv("conv_k3_s1_p1_bias", 3, 8, 3, pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p0_nobias", 5, 4, 3, bias=False)
    conv("conv_k3_s2_p1_bias", 4, 8, 3, stride=2, pads=[1, 1, 1, 1])
    conv("conv_k3_s2_p1_even_input", 4, 4, 3, hw=(10, 10), stride=2, pads=[1, 1, 1, 1])
    conv("conv_k5_s1_p2_bias", 3, 4, 5, pads=[2, 2, 2, 2])
    conv("conv_k5_s2_p2_bias", 4, 6, 5, hw=(11, 11), stride=2, pads=[2, 2, 2, 2])
    conv("conv_k3_dilation2_p2", 4, 4, 3, dilation=2, pads=[2, 2, 2, 2])
    conv("conv_k3_dilation3_p0", 3, 4, 3, hw=(12, 12), dilation=3)
    conv("conv_k3_pads_asymmetric", 4, 5, 3, pads=[0, 1, 2, 1])
    conv("conv_k3_s2_pads_asymmetric", 4, 5, 3, hw=(10, 10), stride=2, pads=[0, 0, 1, 1])
    conv("conv_k1x3_s1x2_rect", 4, 6, (1, 3), hw=(7, 11), stride=(1, 2), pads=[0, 1, 0, 1])
    conv("conv_k3x1_rect_input", 3, 4, (3, 1), hw=(9, 5), pads=[1, 0, 1, 0])
    conv("conv_k3_same_upper", 4, 4, 3, hw=(8, 8), stride=2, auto_pad="SAME_UPPER")
    conv("conv_k3_same_lower", 4, 4, 3, hw=(8, 8), stride=2, auto_pad="SAME_LOWER")
    conv("conv_k3_groups2", 4, 6, 3, pads=[1, 1, 1, 1], group=2)
    conv("conv_k1_groups4", 8, 8, 1, group=4)
    conv("conv_k3_relu", 4, 8, 3, pads=[1, 1, 1, 1], act="relu")
    conv("conv_k3_clip0_6", 4, 8, 3, pads=[1, 1, 1, 1], act=(0.0, 6.0))
    conv("conv_k3_clip_m1_1", 4, 8, 3, pads=[1, 1, 1, 1], act=(-1.0, 1.0))
    conv("conv_k3_batch2", 3, 4, 3, pads=[1, 1, 1, 1], batch=2)
    conv("conv_k3_wide_channels", 24, 20, 3, hw=(5, 5), pads=[1, 1, 1, 1])
    # 3x3 stride-1 convolutions with >= 4 input channels run as Winograd in MNN's CPU backend: its
    # fp32 outputs then differ from a direct convolution by up to ~1e-3 (see the README)
    conv("conv_k3_s1_p1_winograd_8ch_6x6", 8, 8, 3, hw=(6, 6), pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p1_winograd_16ch_12x12", 16, 16, 3, hw=(12, 12), pads=[1, 1, 1, 1])
    # Winograd tile batches: MNN transforms 24 tiles at a time (a full batch takes another code
    # path than the last partial one, and a lone last tile another GEMM kernel); 25 tiles of F(6,3)
    # and of F(4,3), PP-OCR det's 96 -> 24 channels at 40x40 (49 tiles) and at 20x20 (F(4,3))
    conv("conv_k3_s1_p1_winograd_16ch_30x30", 16, 16, 3, hw=(30, 30), pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p1_winograd_16to24_30x30", 16, 24, 3, hw=(30, 30), pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p1_winograd_96to24_40x40", 96, 24, 3, hw=(40, 40), pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p1_winograd_96to24_20x20", 96, 24, 3, hw=(20, 20), pads=[1, 1, 1, 1])
    conv("conv_k3_s1_p1_winograd_96to16_40x40", 96, 16, 3, hw=(40, 40), pads=[1, 1, 1, 1])
    # depthwise: group == input channels == output channels
    conv("convdw_k3_s1_p1", 8, 8, 3, pads=[1, 1, 1, 1], group=8)
    conv("convdw_k3_s2_p1_nobias", 8, 8, 3, stride=2, pads=[1, 1, 1, 1], group=8, bias=False)
    conv("convdw_k5_s1_p2_relu6", 6, 6, 5, pads=[2, 2, 2, 2], group=6, act=(0.0, 6.0))
    conv("convdw_k5_s2_p2", 6, 6, 5, hw=(10, 10), stride=2, pads=[2, 2, 2, 2], group=6)
    conv("convdw_k3_dilation2", 4, 4, 3, pads=[2, 2, 2, 2], dilation=2, group=4)
    conv("convdw_k3_pads_asymmetric", 4, 4, 3, pads=[1, 0, 0, 1], group=4)
    conv("convdw_multiplier2", 4, 8, 3, pads=[1, 1, 1, 1], group=4)

    # 1-D and 3-D convolutions
    w = Weights("conv1d_k3_s1_p1")
    cases.append(Case("conv1d_k3_s1_p1", "Conv", dict(kernel_shape=[3], pads=[1, 1], dims=1),
                      [Input("x", (1, 4, 12))],
                      [node("Conv", ["x", w.normal((6, 4, 3), 0.3), w.normal((6,))], ["y"],
                            kernel_shape=[3], pads=[1, 1])], [("y", FLOAT)], w.tensors))
    w = Weights("conv3d_k3_s1_p1")
    cases.append(Case("conv3d_k3_s1_p1", "Conv", dict(kernel_shape=[3, 3, 3], pads=[1] * 6, dims=3),
                      [Input("x", (1, 3, 4, 6, 6))],
                      [node("Conv", ["x", w.normal((4, 3, 3, 3, 3), 0.3), w.normal((4,))], ["y"],
                            kernel_shape=[3, 3, 3], pads=[1] * 6)], [("y", FLOAT)], w.tensors))
    return cases


def deconv_cases():
    cases = []

    def deconv(name, cin, cout, k, hw=(6, 6), stride=1, pads=None, output_padding=None, group=1,
               dilation=1, bias=True, output_shape=None, act=None):
        w = Weights(name)
        ins = ["x", w.normal((cin, cout // group, k, k), scale=0.3)]
        if bias:
            ins.append(w.normal((cout,), 0.5))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], group=group,
                     dilations=[dilation, dilation])
        if pads is not None:
            attrs["pads"] = pads
        if output_padding is not None:
            attrs["output_padding"] = output_padding
        if output_shape is not None:
            attrs["output_shape"] = output_shape
        out = "y" if act is None else "deconv_out"
        nodes = [node("ConvTranspose", ins, [out], **attrs)]
        if act == "relu":
            nodes.append(node("Relu", [out], ["y"]))
        params = dict(attrs, input_channels=cin, output_channels=cout, bias=bias, activation=act)
        cases.append(Case(name, "ConvTranspose", params, [Input("x", (1, cin) + hw)], nodes,
                          [("y", FLOAT)], w.tensors))

    deconv("deconv_k3_s1_p1", 4, 6, 3, pads=[1, 1, 1, 1])
    deconv("deconv_k2_s2", 4, 4, 2, stride=2)
    deconv("deconv_k3_s2_nobias", 3, 5, 3, stride=2, bias=False)
    deconv("deconv_k3_s2_p1_outpad1", 4, 4, 3, stride=2, pads=[1, 1, 1, 1], output_padding=[1, 1])
    deconv("deconv_k4_s2_p1", 4, 6, 4, stride=2, pads=[1, 1, 1, 1])
    deconv("deconv_k3_s2_pads_asymmetric", 4, 4, 3, stride=2, pads=[0, 1, 1, 0])
    deconv("deconv_k3_dilation2", 3, 4, 3, dilation=2, pads=[1, 1, 1, 1])
    deconv("deconv_k3_groups2", 4, 6, 3, stride=2, pads=[1, 1, 1, 1], group=2)
    deconv("deconv_depthwise_k2_s2", 6, 6, 2, stride=2, group=6)
    deconv("deconv_depthwise_k4_s2_p1", 4, 4, 4, stride=2, pads=[1, 1, 1, 1], group=4)
    deconv("deconv_depthwise_k3_s2_p1_outpad1", 4, 4, 3, stride=2, pads=[1, 1, 1, 1],
           output_padding=[1, 1], group=4)
    deconv("deconv_k2_s2_relu", 4, 4, 2, stride=2, act="relu")
    deconv("deconv_k3_s2_output_shape", 4, 4, 3, stride=2, output_shape=[12, 12])
    return cases


def pool_cases():
    cases = []

    def pool(name, op, k, hw=(9, 9), c=4, **attrs):
        if k is not None:
            attrs["kernel_shape"] = [k, k] if isinstance(k, int) else list(k)
        cases.append(single(name, op, [Input("x", (1, c) + hw)], attrs=attrs))

    pool("maxpool_k2_s2", "MaxPool", 2, hw=(8, 8), strides=[2, 2])
    pool("maxpool_k3_s2_p1", "MaxPool", 3, strides=[2, 2], pads=[1, 1, 1, 1])
    pool("maxpool_k3_s1_p1", "MaxPool", 3, strides=[1, 1], pads=[1, 1, 1, 1])
    pool("maxpool_k3_s2_ceil", "MaxPool", 3, hw=(8, 8), strides=[2, 2], ceil_mode=1)
    pool("maxpool_k2_s2_ceil_odd", "MaxPool", 2, hw=(9, 9), strides=[2, 2], ceil_mode=1)
    pool("maxpool_k3_s2_pads_asymmetric", "MaxPool", 3, hw=(8, 8), strides=[2, 2], pads=[0, 0, 1, 1])
    pool("maxpool_k3_same_upper", "MaxPool", 3, hw=(8, 8), strides=[2, 2], auto_pad="SAME_UPPER")
    pool("maxpool_k2x3_rect", "MaxPool", (2, 3), hw=(8, 9), strides=[2, 3])
    pool("maxpool_k5_s1_p2", "MaxPool", 5, strides=[1, 1], pads=[2, 2, 2, 2])
    pool("avgpool_k2_s2", "AveragePool", 2, hw=(8, 8), strides=[2, 2])
    pool("avgpool_k3_s2_p1_exclude_pad", "AveragePool", 3, strides=[2, 2], pads=[1, 1, 1, 1],
         count_include_pad=0)
    pool("avgpool_k3_s2_p1_include_pad", "AveragePool", 3, strides=[2, 2], pads=[1, 1, 1, 1],
         count_include_pad=1)
    pool("avgpool_k3_s1_p1_include_pad", "AveragePool", 3, strides=[1, 1], pads=[1, 1, 1, 1],
         count_include_pad=1)
    pool("avgpool_k3_s2_ceil", "AveragePool", 3, hw=(8, 8), strides=[2, 2], ceil_mode=1)
    pool("avgpool_k3_s2_ceil_p1_include_pad", "AveragePool", 3, hw=(8, 8), strides=[2, 2],
         pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)
    pool("avgpool_k3_s2_pads_asymmetric", "AveragePool", 3, hw=(8, 8), strides=[2, 2],
         pads=[0, 0, 1, 1])
    pool("avgpool_k3_same_upper", "AveragePool", 3, hw=(8, 8), strides=[2, 2], auto_pad="SAME_UPPER")
    pool("globalavgpool", "GlobalAveragePool", None, hw=(7, 7), c=8)
    pool("globalavgpool_rect", "GlobalAveragePool", None, hw=(5, 9), c=6)
    pool("globalmaxpool", "GlobalMaxPool", None, hw=(7, 7), c=8)
    cases.append(single("maxpool3d_k2_s2", "MaxPool", [Input("x", (1, 2, 4, 6, 6))],
                        attrs=dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2])))
    cases.append(single("avgpool3d_k3_s1_p1", "AveragePool", [Input("x", (1, 2, 4, 6, 6))],
                        attrs=dict(kernel_shape=[3, 3, 3], strides=[1, 1, 1], pads=[1] * 6)))
    cases.append(single("avgpool1d_k3_s2", "AveragePool", [Input("x", (1, 4, 11))],
                        attrs=dict(kernel_shape=[3], strides=[2])))
    return cases


BINARY_OPS = {
    # op: (range of a, range of b, integer-valued inputs, output type)
    "Add": ((-2, 2), (-2, 2), False, FLOAT),
    "Sub": ((-2, 2), (-2, 2), False, FLOAT),
    "Mul": ((-2, 2), (-2, 2), False, FLOAT),
    "Div": ((-2, 2), (0.5, 2), False, FLOAT),
    "Pow": ((0.5, 2), (-2, 2), False, FLOAT),
    "Max": ((-2, 2), (-2, 2), False, FLOAT),
    "Min": ((-2, 2), (-2, 2), False, FLOAT),
    "Equal": ((-2, 2), (-2, 2), True, BOOL),
    "Greater": ((-2, 2), (-2, 2), True, BOOL),
    "Less": ((-2, 2), (-2, 2), True, BOOL),
    "GreaterOrEqual": ((-2, 2), (-2, 2), True, BOOL),
    "LessOrEqual": ((-2, 2), (-2, 2), True, BOOL),
}


def binary_cases():
    cases = []
    shape = (1, 4, 5, 6)
    for op, ((alo, ahi), (blo, bhi), integer, out_type) in BINARY_OPS.items():
        base = op.lower()
        opset = 16 if op in ("GreaterOrEqual", "LessOrEqual") else 13

        def ins(b_shape, a_shape=shape):
            return [Input("a", a_shape, alo, ahi, integer), Input("b", b_shape, blo, bhi, integer)]

        cases.append(single(f"{base}_same_shape", op, ins(shape), params=dict(broadcast="none"),
                            opset=opset, out_type=out_type))
        cases.append(single(f"{base}_row_input", op, ins((6,)), params=dict(broadcast="row [W] input"),
                            opset=opset, out_type=out_type))
        cases.append(single(f"{base}_bcast_both", op, ins((1, 1, 5, 1), (2, 4, 1, 6)),
                            params=dict(broadcast="[2,4,1,6] op [1,1,5,1]"), opset=opset,
                            out_type=out_type))
        # constant second operand: scalar and per-channel
        for kind, cshape in (("scalar_const", ()), ("channel_const", (4, 1, 1))):
            w = Weights(f"{base}_{kind}")
            rng = w.rng
            value = rng.uniform(blo, bhi, size=cshape)
            if integer:
                value = np.round(value)
            cname = w.floats(value.astype(np.float32))
            cases.append(single(f"{base}_{kind}", op, [Input("a", shape, alo, ahi, integer)],
                                params=dict(broadcast=kind, constant=np.asarray(value).tolist()),
                                const_inputs=[cname], weights=w, opset=opset, out_type=out_type))
    # constant as the first operand
    w = Weights("sub_const_first")
    cases.append(single("sub_const_first", "Sub", [], params=dict(broadcast="channel const first"),
                        const_inputs=[w.normal((4, 1, 1))], extra_inputs_after=["a"], weights=w))
    cases[-1].inputs = [Input("a", shape)]
    w = Weights("div_const_first")
    cases.append(single("div_const_first", "Div", [], params=dict(broadcast="scalar const first"),
                        const_inputs=[w.floats(1.5)], extra_inputs_after=["a"], weights=w))
    cases[-1].inputs = [Input("a", shape, 0.5, 2.0)]
    cases.append(single("mod_fmod", "Mod", [Input("a", shape, -5, 5), Input("b", shape, 0.5, 2)],
                        attrs=dict(fmod=1)))
    # MNN packs the inputs of variadic Sum/Max into one tensor, so only equal shapes have a route
    # (with broadcasting MNN 3.6.1 reads garbage); Mean of two inputs converts into a lone Div that
    # the session never runs, so it has no working route either.
    cases.append(single("sum_three_inputs", "Sum", [Input("a", shape), Input("b", shape), Input("c", shape)]))
    cases.append(single("max_three_inputs", "Max", [Input("a", shape), Input("b", shape), Input("c", shape)]))
    cases.append(single("min_three_inputs", "Min", [Input("a", shape), Input("b", shape), Input("c", shape)]))
    return cases


UNARY_OPS = [
    # op, low, high, opset, attrs
    ("Abs", -3, 3, 13, {}),
    ("Neg", -3, 3, 13, {}),
    ("Floor", -3, 3, 13, {}),
    ("Ceil", -3, 3, 13, {}),
    ("Round", -3, 3, 13, {}),
    ("Sign", -3, 3, 13, {}),
    ("Sqrt", 0.01, 4, 13, {}),
    ("Reciprocal", 0.25, 4, 13, {}),
    ("Exp", -3, 3, 13, {}),
    ("Log", 0.01, 5, 13, {}),
    ("Sin", -4, 4, 13, {}),
    ("Cos", -4, 4, 13, {}),
    ("Tan", -1.2, 1.2, 13, {}),
    ("Asin", -0.99, 0.99, 13, {}),
    ("Acos", -0.99, 0.99, 13, {}),
    ("Atan", -4, 4, 13, {}),
    ("Sinh", -3, 3, 13, {}),
    ("Cosh", -3, 3, 13, {}),
    ("Asinh", -3, 3, 13, {}),
    ("Acosh", 1.01, 4, 13, {}),
    ("Atanh", -0.95, 0.95, 13, {}),
    ("Tanh", -4, 4, 13, {}),
    ("Sigmoid", -6, 6, 13, {}),
    ("Erf", -3, 3, 13, {}),
    ("HardSwish", -5, 5, 14, {}),
    ("HardSigmoid", -5, 5, 13, {}),
    ("HardSigmoid", -5, 5, 13, {"alpha": 0.25, "beta": 0.4}),
    ("Softplus", -5, 5, 13, {}),
    ("Softsign", -5, 5, 13, {}),
    ("Relu", -3, 3, 13, {}),
    ("LeakyRelu", -3, 3, 13, {}),
    ("LeakyRelu", -3, 3, 13, {"alpha": 0.1}),
    ("Elu", -3, 3, 13, {}),
    ("Elu", -3, 3, 13, {"alpha": 0.5}),
    ("Selu", -3, 3, 13, {}),
    ("Celu", -3, 3, 13, {"alpha": 1.5}),
    ("ThresholdedRelu", -3, 3, 13, {"alpha": 0.5}),
    ("Mish", -4, 4, 18, {}),
    ("Gelu", -4, 4, 20, {}),
    ("Gelu", -4, 4, 20, {"approximate": "tanh"}),
]


def unary_cases():
    cases = []
    for op, lo, hi, opset, attrs in UNARY_OPS:
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
        suffix = "".join(f"_{k}{v}" for k, v in attrs.items()).replace(".", "p")
        name = f"unary_{base}{suffix}"
        cases.append(single(name, op, [Input("x", (1, 3, 4, 5), lo, hi)], attrs=dict(attrs),
                            params=dict(attrs, input_range=[lo, hi]), opset=opset))
    return cases


def activation_cases():
    cases = []
    shape = (1, 4, 5, 6)
    for name, lo, hi in (("clip_0_6", 0.0, 6.0), ("clip_m1_1", -1.0, 1.0), ("clip_m0p5_2", -0.5, 2.0)):
        w = Weights(name)
        cases.append(single(name, "Clip", [Input("x", shape, -8, 8)], params=dict(min=lo, max=hi),
                            const_inputs=[w.floats(lo), w.floats(hi)], weights=w))
    w = Weights("clip_min_only_0")
    cases.append(single("clip_min_only_0", "Clip", [Input("x", shape, -8, 8)], params=dict(min=0.0),
                        const_inputs=[w.floats(0.0)], weights=w))
    w = Weights("clip_max_only_3")
    cases.append(single("clip_max_only_3", "Clip", [Input("x", shape, -8, 8)], params=dict(max=3.0),
                        const_inputs=["", w.floats(3.0)], weights=w))
    w = Weights("prelu_per_channel")
    cases.append(single("prelu_per_channel", "PRelu", [Input("x", shape)],
                        params=dict(slope="per channel [4,1,1]"),
                        const_inputs=[w.uniform((4, 1, 1), 0.05, 0.5)], weights=w))
    w = Weights("prelu_scalar")
    cases.append(single("prelu_scalar", "PRelu", [Input("x", shape)], params=dict(slope="scalar [1]"),
                        const_inputs=[w.floats([0.2])], weights=w))
    name = "conv_then_prelu"
    w = Weights(name)
    cases.append(Case(name, "Conv+PRelu", dict(slope="per channel [6,1,1]"), [Input("x", (1, 4, 6, 6))],
                      [node("Conv", ["x", w.normal((6, 4, 3, 3), 0.3), w.normal((6,))], ["t"],
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                       node("PRelu", ["t", w.uniform((6, 1, 1), 0.05, 0.5)], ["y"])],
                      [("y", FLOAT)], w.tensors))
    cases.append(single("prelu_slope_input", "PRelu", [Input("x", shape), Input("slope", (4, 1, 1), 0, 0.5)],
                        params=dict(slope="graph input [4,1,1]")))
    return cases


def layout_cases():
    cases = []
    # Concat on every axis of a 4-D tensor, and a 3-input one with a constant
    base = (2, 3, 4, 5)
    for axis in (0, 1, 2, 3, -1):
        b_shape = list(base)
        b_shape[axis] = base[axis] + 1
        tag = f"m{-axis}" if axis < 0 else str(axis)
        cases.append(single(f"concat_axis{tag}", "Concat", [Input("a", base), Input("b", tuple(b_shape))],
                            attrs=dict(axis=axis)))
    w = Weights("concat_three_with_const")
    cases.append(single("concat_three_with_const", "Concat",
                        [Input("a", (1, 3, 4, 4)), Input("b", (1, 2, 4, 4))], attrs=dict(axis=1),
                        const_inputs=[w.normal((1, 1, 4, 4))], weights=w))
    cases.append(single("concat_axis1_2d", "Concat", [Input("a", (3, 4)), Input("b", (3, 2))],
                        attrs=dict(axis=1)))

    def with_shape(name, op, x_shape, shape_values, **attrs):
        w = Weights(name)
        cases.append(single(name, op, [Input("x", x_shape)],
                            params=dict(attrs, shape=list(shape_values)),
                            const_inputs=[w.ints(shape_values)], weights=w, attrs=attrs))

    with_shape("reshape_4d_to_3d", "Reshape", (1, 4, 6, 6), [1, 4, 36])
    with_shape("reshape_zero_and_minus1", "Reshape", (2, 4, 3, 3), [0, -1])
    with_shape("reshape_to_5d", "Reshape", (1, 8, 3, 4), [1, 2, 4, 3, 4])
    with_shape("reshape_2d_to_4d", "Reshape", (6, 8), [2, 3, 2, 4])
    for axis in (0, 1, 2, 3):
        cases.append(single(f"flatten_axis{axis}", "Flatten", [Input("x", (2, 3, 4, 5))],
                            attrs=dict(axis=axis)))
    with_shape("squeeze_axis0", "Squeeze", (1, 4, 1, 5), [0])
    with_shape("squeeze_axes_0_2", "Squeeze", (1, 4, 1, 5), [0, 2])
    with_shape("squeeze_negative_axis", "Squeeze", (2, 4, 5, 1), [-1])
    cases.append(single("squeeze_all", "Squeeze", [Input("x", (1, 4, 1, 5))], params=dict(axes=None)))
    with_shape("unsqueeze_axis0", "Unsqueeze", (4, 5), [0])
    with_shape("unsqueeze_axis_m1", "Unsqueeze", (2, 4, 5), [-1])
    with_shape("unsqueeze_axes_1_3", "Unsqueeze", (4, 5), [1, 3])
    for perm in ((0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0), (1, 0, 2, 3), (0, 1, 3, 2)):
        cases.append(single("transpose_" + "".join(map(str, perm)), "Transpose",
                            [Input("x", (2, 3, 4, 5))], attrs=dict(perm=list(perm))))
    cases.append(single("transpose_3d_021", "Transpose", [Input("x", (3, 4, 5))], attrs=dict(perm=[0, 2, 1])))
    cases.append(single("transpose_default_reverse", "Transpose", [Input("x", (2, 3, 4))],
                        params=dict(perm=None)))
    cases.append(single("transpose_5d_02143", "Transpose", [Input("x", (1, 2, 3, 4, 2))],
                        attrs=dict(perm=[0, 2, 1, 4, 3])))
    cases.append(single("shape_4d", "Shape", [Input("x", (2, 3, 4, 5))], out_type=INT64))
    cases.append(single("shape_start1_endm1", "Shape", [Input("x", (2, 3, 4, 5))],
                        attrs=dict(start=1, end=-1), opset=15, out_type=INT64))
    cases.append(single("size_4d", "Size", [Input("x", (2, 3, 4, 5))], out_type=INT64))
    # DepthToSpace / SpaceToDepth are layout ops MNN has too
    cases.append(single("depth_to_space_dcr", "DepthToSpace", [Input("x", (1, 8, 3, 3))],
                        attrs=dict(blocksize=2, mode="DCR")))
    cases.append(single("depth_to_space_crd", "DepthToSpace", [Input("x", (1, 8, 3, 3))],
                        attrs=dict(blocksize=2, mode="CRD")))
    cases.append(single("space_to_depth_2", "SpaceToDepth", [Input("x", (1, 2, 4, 6))],
                        attrs=dict(blocksize=2)))
    # Split with two outputs
    w = Weights("split_axis1_uneven")
    cases.append(Case("split_axis1_uneven", "Split", dict(axis=1, split=[1, 3]),
                      [Input("x", (1, 4, 3, 3))],
                      [node("Split", ["x", w.ints([1, 3])], ["y0", "y1"], axis=1)],
                      [("y0", FLOAT), ("y1", FLOAT)], w.tensors))
    return cases


def slice_gather_pad_cases():
    cases = []

    def slice_case(name, x_shape, starts, ends, axes, steps=None):
        w = Weights(name)
        consts = [w.ints(starts), w.ints(ends), w.ints(axes)]
        if steps is not None:
            consts.append(w.ints(steps))
        params = dict(starts=starts, ends=ends, axes=axes, steps=steps)
        cases.append(single(name, "Slice", [Input("x", x_shape)], params=params, const_inputs=consts,
                            weights=w))

    slice_case("slice_axis2_basic", (1, 3, 8, 6), [1], [5], [2])
    slice_case("slice_axis3_step2", (1, 3, 4, 9), [0], [9], [3], [2])
    slice_case("slice_negative_indices", (1, 3, 8, 8), [-6], [-1], [2])
    slice_case("slice_negative_step_reverse", (1, 3, 4, 7), [-1], [INT64_MIN], [3], [-1])
    slice_case("slice_negative_step2", (1, 2, 9, 4), [7], [0], [2], [-2])
    slice_case("slice_multi_axes", (2, 6, 8, 8), [0, 1, 2], [1, 5, 7], [0, 1, 3], [1, 2, 3])
    slice_case("slice_end_int64max", (1, 4, 6, 6), [2], [INT64_MAX], [1])
    slice_case("slice_channel_axis", (1, 8, 4, 4), [2], [6], [1])

    def gather_case(name, x_shape, indices, axis):
        w = Weights(name)
        idx = w.ints(indices)
        cases.append(single(name, "Gather", [Input("x", x_shape)],
                            params=dict(axis=axis, indices=np.asarray(indices).tolist()),
                            attrs=dict(axis=axis), const_inputs=[idx], weights=w))

    gather_case("gather_axis0_2d_indices", (5, 4), [[0, 2], [4, 1]], 0)
    gather_case("gather_axis1_channels", (1, 6, 4, 4), [5, 0, 2], 1)
    gather_case("gather_negative_index", (6, 5), [-1, 0, -3], 0)
    gather_case("gather_scalar_index_axis2", (2, 3, 5, 4), 3, 2)
    gather_case("gather_axis_m1", (2, 3, 6), [1, 1, 4], -1)

    def pad_case(name, x_shape, pads, mode, value=None):
        w = Weights(name)
        consts = [w.ints(pads)]
        if value is not None:
            consts.append(w.floats(value))
        cases.append(single(name, "Pad", [Input("x", x_shape)],
                            params=dict(mode=mode, pads=pads, constant_value=value),
                            attrs=dict(mode=mode), const_inputs=consts, weights=w))

    pad_case("pad_constant_zero", (1, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1], "constant")
    pad_case("pad_constant_value", (1, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1], "constant", 0.5)
    pad_case("pad_constant_channels", (1, 3, 4, 4), [0, 1, 0, 0, 0, 2, 0, 0], "constant", -1.0)
    pad_case("pad_reflect", (1, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1], "reflect")
    pad_case("pad_edge", (1, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1], "edge")
    pad_case("pad_reflect_2d", (5, 6), [2, 1, 1, 3], "reflect")
    return cases


def resize_cases():
    cases = []

    def resize(name, x_shape, mode, ctm, scales=None, sizes=None, **attrs):
        w = Weights(name)
        consts = ["", w.floats(scales) if scales is not None else ""]
        if sizes is not None:
            consts.append(w.ints(sizes))
        params = dict(attrs, mode=mode, coordinate_transformation_mode=ctm, scales=scales, sizes=sizes)
        cases.append(single(name, "Resize", [Input("x", x_shape)], params=params,
                            attrs=dict(attrs, mode=mode, coordinate_transformation_mode=ctm),
                            const_inputs=consts, weights=w))

    s2 = [1.0, 1.0, 2.0, 2.0]
    resize("resize_nearest_asymmetric_floor_x2", (1, 3, 4, 5), "nearest", "asymmetric", s2,
           nearest_mode="floor")
    resize("resize_nearest_half_pixel_round_prefer_floor_x2", (1, 3, 4, 5), "nearest", "half_pixel", s2)
    resize("resize_nearest_half_pixel_round_prefer_ceil_x2", (1, 3, 4, 5), "nearest", "half_pixel", s2,
           nearest_mode="round_prefer_ceil")
    resize("resize_nearest_asymmetric_sizes_13x11", (1, 3, 5, 4), "nearest", "asymmetric",
           sizes=[1, 3, 13, 11], nearest_mode="floor")
    resize("resize_nearest_x3_int", (1, 2, 3, 3), "nearest", "asymmetric", [1.0, 1.0, 3.0, 3.0],
           nearest_mode="floor")
    resize("resize_nearest_down_half", (1, 2, 8, 8), "nearest", "asymmetric", [1.0, 1.0, 0.5, 0.5],
           nearest_mode="floor")
    resize("resize_linear_align_corners_x2", (1, 3, 4, 5), "linear", "align_corners", s2)
    resize("resize_linear_half_pixel_x2", (1, 3, 4, 5), "linear", "half_pixel", s2)
    resize("resize_linear_asymmetric_x2", (1, 3, 4, 5), "linear", "asymmetric", s2)
    resize("resize_linear_pytorch_half_pixel_x2", (1, 3, 4, 5), "linear", "pytorch_half_pixel", s2)
    resize("resize_linear_half_pixel_sizes_13x11", (1, 3, 5, 4), "linear", "half_pixel",
           sizes=[1, 3, 13, 11])
    resize("resize_linear_align_corners_sizes_9x7", (1, 2, 5, 4), "linear", "align_corners",
           sizes=[1, 2, 9, 7])
    resize("resize_linear_half_pixel_down_half", (1, 2, 8, 8), "linear", "half_pixel",
           [1.0, 1.0, 0.5, 0.5])
    resize("resize_cubic_half_pixel_x2", (1, 2, 4, 5), "cubic", "half_pixel", s2)
    resize("resize_cubic_align_corners_x2_a_m0p5", (1, 2, 4, 5), "cubic", "align_corners", s2,
           cubic_coeff_a=-0.5)
    resize("resize_cubic_asymmetric_x2", (1, 2, 4, 5), "cubic", "asymmetric", s2)
    resize("resize_cubic_pytorch_half_pixel_sizes_9x7", (1, 2, 5, 4), "cubic", "pytorch_half_pixel",
           sizes=[1, 2, 9, 7])
    # Upsample (deprecated, opset 9) is what old exporters wrote
    w = Weights("upsample_nearest_x2_opset9")
    cases.append(single("upsample_nearest_x2_opset9", "Upsample", [Input("x", (1, 3, 4, 5))],
                        attrs=dict(mode="nearest"), const_inputs=[w.floats(s2)], weights=w, opset=9))
    return cases


def norm_softmax_cases():
    cases = []
    for axis, shape, opset in ((1, (1, 5, 3, 4), 13), (-1, (2, 3, 7), 13), (2, (1, 3, 6, 4), 13),
                               (0, (4, 6), 13), (1, (1, 5, 3, 4), 11)):
        tag = f"m{-axis}" if axis < 0 else str(axis)
        cases.append(single(f"softmax_axis{tag}_opset{opset}", "Softmax", [Input("x", shape, -4, 4)],
                            attrs=dict(axis=axis), opset=opset))
    cases.append(single("logsoftmax_axis_m1", "LogSoftmax", [Input("x", (2, 3, 7), -4, 4)],
                        attrs=dict(axis=-1)))

    def layernorm(name, shape, axis, bias=True, epsilon=1e-5):
        w = Weights(name)
        norm_shape = shape[axis:]
        consts = [w.uniform(norm_shape, 0.5, 1.5)]
        if bias:
            consts.append(w.normal(norm_shape, 0.5))
        cases.append(single(name, "LayerNormalization", [Input("x", shape, -3, 3)],
                            params=dict(axis=axis, epsilon=epsilon, bias=bias),
                            attrs=dict(axis=axis, epsilon=epsilon), const_inputs=consts, weights=w,
                            opset=17))

    layernorm("layernorm_axis_m1", (2, 5, 8), -1)
    layernorm("layernorm_axis_m2", (2, 4, 6), -2)
    layernorm("layernorm_no_bias_eps1e-3", (1, 3, 16), -1, bias=False, epsilon=1e-3)
    layernorm("layernorm_4d_axis_m1", (1, 3, 4, 8), -1)

    w = Weights("batchnorm_4d")
    c = 6
    cases.append(single("batchnorm_4d", "BatchNormalization", [Input("x", (1, c, 5, 5))],
                        params=dict(epsilon=1e-5),
                        const_inputs=[w.uniform((c,), 0.5, 1.5), w.normal((c,)), w.normal((c,)),
                                      w.uniform((c,), 0.2, 2.0)], weights=w, attrs=dict(epsilon=1e-5)))
    w = Weights("batchnorm_2d")
    cases.append(single("batchnorm_2d_input", "BatchNormalization", [Input("x", (3, c))],
                        params=dict(epsilon=1e-3),
                        const_inputs=[w.uniform((c,), 0.5, 1.5), w.normal((c,)), w.normal((c,)),
                                      w.uniform((c,), 0.2, 2.0)], weights=w, attrs=dict(epsilon=1e-3)))
    # Conv followed by BatchNormalization: the converter should fold the BN into the conv
    name = "conv_then_batchnorm"
    w = Weights(name)
    nodes = [node("Conv", ["x", w.normal((c, 4, 3, 3), 0.3), w.normal((c,))], ["t"], kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["t", w.uniform((c,), 0.5, 1.5), w.normal((c,)), w.normal((c,)),
                                         w.uniform((c,), 0.2, 2.0)], ["y"])]
    cases.append(Case(name, "Conv+BatchNormalization", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                      [Input("x", (1, 4, 6, 6))], nodes, [("y", FLOAT)], w.tensors))

    w = Weights("instancenorm")
    cases.append(single("instancenorm", "InstanceNormalization", [Input("x", (1, 4, 5, 6), -3, 3)],
                        params=dict(epsilon=1e-5), attrs=dict(epsilon=1e-5),
                        const_inputs=[w.uniform((4,), 0.5, 1.5), w.normal((4,))], weights=w))
    w = Weights("instancenorm_batch2")
    cases.append(single("instancenorm_batch2", "InstanceNormalization", [Input("x", (2, 3, 4, 4), -3, 3)],
                        params=dict(epsilon=1e-3), attrs=dict(epsilon=1e-3),
                        const_inputs=[w.uniform((3,), 0.5, 1.5), w.normal((3,))], weights=w))
    cases.append(single("lpnorm_p2_axis1", "LpNormalization", [Input("x", (1, 4, 3, 3))],
                        attrs=dict(axis=1, p=2)))
    cases.append(single("lpnorm_p2_axis_m1", "LpNormalization", [Input("x", (2, 3, 8))],
                        attrs=dict(axis=-1, p=2)))
    cases.append(single("lpnorm_p1_axis1", "LpNormalization", [Input("x", (1, 4, 3, 3))],
                        attrs=dict(axis=1, p=1)))
    w = Weights("groupnorm_2groups")
    cases.append(single("groupnorm_2groups", "GroupNormalization", [Input("x", (1, 4, 3, 3), -3, 3)],
                        params=dict(num_groups=2, epsilon=1e-5), attrs=dict(num_groups=2, epsilon=1e-5),
                        const_inputs=[w.uniform((4,), 0.5, 1.5), w.normal((4,))], weights=w, opset=21))
    return cases


def matmul_gemm_cases():
    cases = []

    def mm_const_b(name, a_shape, b_shape):
        w = Weights(name)
        cases.append(single(name, "MatMul", [Input("a", a_shape)],
                            params=dict(a=list(a_shape), b=list(b_shape), b_constant=True),
                            const_inputs=[w.normal(b_shape, 0.4)], weights=w))

    mm_const_b("matmul_2d_const_b", (3, 16), (16, 5))
    mm_const_b("matmul_3d_const_b", (2, 3, 8), (8, 6))
    mm_const_b("matmul_4d_const_b", (1, 2, 3, 8), (8, 6))
    mm_const_b("matmul_batched_const_b", (2, 3, 8), (2, 8, 4))
    mm_const_b("matmul_vector_const_b", (8,), (8, 3))
    cases.append(single("matmul_2d_inputs", "MatMul", [Input("a", (3, 8)), Input("b", (8, 5))]))
    cases.append(single("matmul_batched_3d", "MatMul", [Input("a", (2, 3, 8)), Input("b", (2, 8, 4))]))
    cases.append(single("matmul_batched_broadcast", "MatMul",
                        [Input("a", (2, 1, 3, 4)), Input("b", (1, 3, 4, 5))]))
    cases.append(single("matmul_3d_by_2d_input", "MatMul", [Input("a", (2, 3, 8)), Input("b", (8, 4))]))
    w = Weights("matmul_const_a")
    cases.append(single("matmul_const_a", "MatMul", [], params=dict(a_constant=True),
                        const_inputs=[w.normal((5, 3), 0.4)], extra_inputs_after=["b"], weights=w))
    cases[-1].inputs = [Input("b", (3, 4))]

    def gemm(name, a_shape, b_shape, c_shape=None, b_input=False, **attrs):
        w = Weights(name)
        inputs = [Input("a", a_shape)]
        consts = []
        if b_input:
            inputs.append(Input("b", b_shape))
        else:
            consts.append(w.normal(b_shape, 0.4))
        if c_shape is not None:
            consts.append(w.normal(c_shape, 0.5))
        params = dict(attrs, a=list(a_shape), b=list(b_shape), c=c_shape, b_constant=not b_input)
        cases.append(single(name, "Gemm", inputs, params=params, attrs=attrs, const_inputs=consts,
                            weights=w))

    gemm("gemm_transb_bias", (2, 16), (10, 16), (10,), transB=1)
    gemm("gemm_nobias", (3, 12), (12, 7))
    gemm("gemm_alpha_beta_bias_row", (2, 8), (8, 5), (1, 5), alpha=0.5, beta=2.0)
    gemm("gemm_transa_input_b", (8, 3), (8, 4), None, b_input=True, transA=1)
    gemm("gemm_bias_matrix", (2, 6), (4, 6), (2, 4), transB=1)
    return cases


def reduce_misc_cases():
    cases = []
    shape = (2, 3, 4, 5)
    for op, lo, hi in (("ReduceSum", -2, 2), ("ReduceMean", -2, 2), ("ReduceMax", -2, 2),
                       ("ReduceMin", -2, 2), ("ReduceProd", 0.6, 1.4), ("ReduceL2", -2, 2),
                       ("ReduceSumSquare", -2, 2), ("ReduceLogSumExp", -2, 2), ("ReduceL1", -2, 2)):
        base = op[len("Reduce"):].lower()
        variants = [([1], 1), ([2, 3], 0), (None, 1), ([-1], 0), ([0, 2], 1)]
        if op in ("ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL1"):
            variants = variants[:2]
        for axes, keep in variants:
            axes_tag = "all" if axes is None else "_".join(f"m{-a}" if a < 0 else str(a) for a in axes)
            name = f"reduce_{base}_axes{axes_tag}_keep{keep}"
            w = Weights(name)
            attrs = dict(keepdims=keep)
            consts = []
            if axes is not None:
                if op == "ReduceSum":  # opset 13 moved ReduceSum's axes to an input
                    consts.append(w.ints(axes))
                else:
                    attrs["axes"] = axes
            cases.append(single(name, op, [Input("x", shape, lo, hi)],
                                params=dict(keepdims=keep, axes=axes), attrs=attrs, const_inputs=consts,
                                weights=w))
    for op, axis, keep in (("ArgMax", 1, 1), ("ArgMax", -1, 0), ("ArgMin", 2, 1), ("ArgMax", 0, 0)):
        tag = f"m{-axis}" if axis < 0 else str(axis)
        cases.append(single(f"{op.lower()}_axis{tag}_keep{keep}", op, [Input("x", shape)],
                            attrs=dict(axis=axis, keepdims=keep), out_type=INT64))

    def with_ints(name, op, x_shape, values, key):
        w = Weights(name)
        cases.append(single(name, op, [Input("x", x_shape)], params={key: values},
                            const_inputs=[w.ints(values)], weights=w))

    with_ints("tile_1_2_3_1", "Tile", (1, 3, 4, 5), [1, 2, 3, 1], "repeats")
    with_ints("tile_2d_2_1", "Tile", (3, 4), [2, 1], "repeats")
    with_ints("expand_3x1_to_2x3x4", "Expand", (3, 1), [2, 3, 4], "shape")
    with_ints("expand_channel_to_4d", "Expand", (1, 4, 1, 1), [1, 4, 5, 6], "shape")
    with_ints("expand_smaller_target", "Expand", (2, 1, 5), [3, 1], "shape")

    # Cast
    cases.append(single("cast_to_int32", "Cast", [Input("x", (2, 3, 4), -5, 5)], attrs=dict(to=INT32),
                        params=dict(to="INT32"), out_type=INT32))
    cases.append(Case("cast_to_int32_and_back", "Cast", dict(to=["INT32", "FLOAT"]),
                      [Input("x", (2, 3, 4), -5, 5)],
                      [node("Cast", ["x"], ["t"], to=INT32), node("Cast", ["t"], ["y"], to=FLOAT)],
                      [("y", FLOAT)]))
    cases.append(single("cast_to_int64", "Cast", [Input("x", (2, 5), -5, 5)], attrs=dict(to=INT64),
                        params=dict(to="INT64"), out_type=INT64))

    # ConstantOfShape fed by Shape (so the shape is not folded away)
    value = numpy_helper.from_array(np.array([1.5], np.float32), "value")
    cases.append(Case("constant_of_shape_from_shape", "ConstantOfShape", dict(value=1.5),
                      [Input("x", (2, 3, 4))],
                      [node("Shape", ["x"], ["s"]), node("ConstantOfShape", ["s"], ["y"], value=value)],
                      [("y", FLOAT)]))

    # Range over scalar inputs: MNN needs the inputs' values to know the output shape
    def range_case(name, start, limit, delta):
        ins = [Input("start", (), start, start), Input("limit", (), limit, limit),
               Input("delta", (), delta, delta)]
        cases.append(single(name, "Range", ins, params=dict(start=start, limit=limit, delta=delta)))

    range_case("range_float_positive_step", 0.5, 7.3, 1.5)
    range_case("range_float_negative_step", 4.0, -2.0, -0.75)

    # Where: condition computed in the graph, and a constant condition with broadcasting
    cases.append(Case("where_cond_from_greater", "Where", dict(condition="Greater(a, b)"),
                      [Input("a", (1, 3, 4, 5)), Input("b", (1, 3, 4, 5)), Input("c", (1, 3, 4, 5))],
                      [node("Greater", ["a", "b"], ["cond"]), node("Where", ["cond", "a", "c"], ["y"])],
                      [("y", FLOAT)]))
    w = Weights("where_const_cond_broadcast")
    cond = numpy_helper.from_array(w.rng.rand(4, 1) > 0.5, "cond")
    w.tensors.append(cond)
    cases.append(single("where_const_cond_broadcast", "Where", [], params=dict(condition="const [4,1]"),
                        const_inputs=["cond"], extra_inputs_after=["a", "b"], weights=w))
    cases[-1].inputs = [Input("a", (2, 4, 5)), Input("b", (2, 4, 5))]
    # (Where with a broadcast value input, e.g. b of shape [5], is left out: MNN 3.6.1's Select reads
    # past the end of the smaller input, so its output changes from run to run.)
    return cases


def mnn_json_cases():
    """Ops MNN runs but its ONNX converter never writes (see the README)."""
    cases = []

    def case(name, op_type, params, inputs, ops, reference, note=""):
        cases.append(Case(name, op_type, params, inputs, [], [("y", FLOAT)], mnn_ops=ops,
                          reference=reference, note=note))

    def op(type_, name, inputs, outputs, main_type=None, main=None):
        o = {"type": type_, "name": name, "inputs": inputs, "outputs": outputs}
        if main_type:
            o["main_type"], o["main"] = main_type, main
        return o

    def to_c4(src, dst):
        return op("ConvertTensor", dst, [src], [dst], "TensorConvertInfo",
                  {"source": "NCHW", "dest": "NC4HW4"})

    def to_nchw(src, dst):
        return op("ConvertTensor", dst, [src], [dst], "TensorConvertInfo",
                  {"source": "NC4HW4", "dest": "NCHW"})

    x4 = [Input("x", (1, 4, 5, 6))]
    sig = lambda f: 1.0 / (1.0 + np.exp(-f["x"].astype(np.float64)))  # noqa: E731
    case("sigmoid_op", "Sigmoid", {}, [Input("x", (1, 4, 5, 6), -6.0, 6.0)],
         [op("Sigmoid", "y", ["x"], ["y"])], lambda f: {"y": sig(f)})
    case("tanh_op", "TanH", {}, [Input("x", (1, 4, 5, 6), -3.0, 3.0)],
         [op("TanH", "y", ["x"], ["y"])], lambda f: {"y": np.tanh(f["x"].astype(np.float64))})

    slopes = [0.1, -0.2, 0.3, 0.5]
    case("prelu_op_per_channel", "PReLU", {"slope": slopes}, x4,
         [to_c4("x", "xc"), op("PReLU", "p", ["xc"], ["p"], "PRelu",
                               {"slopeCount": 4, "slope": slopes}), to_nchw("p", "y")],
         lambda f: {"y": np.where(f["x"] < 0, f["x"] * np.array(slopes).reshape(1, 4, 1, 1),
                                  f["x"])})

    rng = np.random.RandomState(seed_of("weights/batchnorm_op"))
    g, b = rng.uniform(0.5, 1.5, 4), rng.uniform(-0.5, 0.5, 4)
    mean, var = rng.uniform(-0.5, 0.5, 4), rng.uniform(0.5, 2.0, 4)
    eps = 1e-3
    bn = {"channels": 4, "slopeData": g.tolist(), "meanData": mean.tolist(),
          "varData": var.tolist(), "biasData": b.tolist(), "epsilon": eps}
    bshape = (1, 4, 1, 1)
    case("batchnorm_op", "BatchNorm", bn, x4,
         [to_c4("x", "xc"), op("BatchNorm", "n", ["xc"], ["n"], "BatchNorm", bn),
          to_nchw("n", "y")],
         lambda f: {"y": (f["x"] - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
                    * g.reshape(bshape) + b.reshape(bshape)})

    rng = np.random.RandomState(seed_of("weights/innerproduct_op"))
    w = rng.randn(5, 8).astype(np.float32) * 0.5
    bias = rng.randn(5).astype(np.float32) * 0.5
    ip = {"outputCount": 5, "biasTerm": 1, "weightSize": 40, "weight": w.ravel().tolist(),
          "bias": bias.tolist(), "axis": 1, "transpose": False}
    case("innerproduct_op", "InnerProduct", {k: v for k, v in ip.items() if k not in ("weight", "bias")},
         [Input("x", (3, 8))], [op("InnerProduct", "y", ["x"], ["y"], "InnerProduct", ip)],
         lambda f: {"y": f["x"].astype(np.float64) @ w.T.astype(np.float64) + bias})

    for adj_x, adj_y in [(False, False), (False, True), (True, False)]:
        a_shape = (2, 4, 3) if adj_x else (2, 3, 4)
        b_shape = (2, 5, 4) if adj_y else (2, 4, 5)
        ref = (lambda ax, ay: lambda f: {"y": np.matmul(
            np.swapaxes(f["a"], 1, 2) if ax else f["a"],
            np.swapaxes(f["b"], 1, 2) if ay else f["b"])})(adj_x, adj_y)
        case(f"batchmatmul_op_adjx{int(adj_x)}_adjy{int(adj_y)}", "BatchMatMul",
             {"adjX": adj_x, "adjY": adj_y}, [Input("a", a_shape), Input("b", b_shape)],
             [op("BatchMatMul", "y", ["a", "b"], ["y"], "BatchMatMulParam",
                 {"adjX": adj_x, "adjY": adj_y})], ref)

    case("crop_op_axis2", "Crop", {"axis": 2, "offset": [1, 2]},
         [Input("x", (1, 4, 8, 8)), Input("shape_like", (1, 4, 5, 4))],
         [to_c4("x", "xc"), to_c4("shape_like", "sc"),
          op("Crop", "c", ["xc", "sc"], ["c"], "Crop", {"axis": 2, "offset": [1, 2]}),
          to_nchw("c", "y")],
         lambda f: {"y": f["x"][:, :, 1:6, 2:6]})

    scale = [0.5, 1.0, 1.5, 2.0]
    for across, shared in [(0, 0), (1, 0), (0, 1)]:
        def norm_ref(f, across=across, shared=shared):
            x = f["x"].astype(np.float64)
            axes = (1, 2, 3) if across else (1,)
            n = x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + 1e-5)
            s = np.array(scale[:1] if shared else scale).reshape(1, -1, 1, 1)
            return {"y": n * s}
        params = {"acrossSpatial": across, "channelShared": shared, "eps": 1e-5,
                  "scale": scale[:1] if shared else scale}
        case(f"normalize_op_across{across}_shared{shared}", "Normalize", params, x4,
             [op("Normalize", "y", ["x"], ["y"], "Normalize", params)], norm_ref)

    case("expanddims_op_axis1", "ExpandDims", {"axis": 1}, [Input("x", (2, 3, 4))],
         [op("ExpandDims", "y", ["x"], ["y"], "ExpandDims", {"axis": 1})],
         lambda f: {"y": f["x"][:, None]})

    # BinaryOp operations the ONNX converter has no route to (MNN's JSON needs the enum names)
    binary = [
        ("max_temp", "MAX_TEMP", lambda a, b: np.maximum(a, b), False),
        ("min_temp", "MIN_TEMP", lambda a, b: np.minimum(a, b), False),
        ("realdiv", "REALDIV", lambda a, b: a / b, False),
        ("floordiv", "FLOORDIV", lambda a, b: np.floor(a / b), False),
        ("squared_difference", "SquaredDifference", lambda a, b: (a - b) ** 2, False),
        ("floormod", "FLOORMOD", lambda a, b: np.mod(a, b), False),
        ("mod", "MOD", lambda a, b: np.fmod(a, b), False),
        ("atan2", "ATAN2", lambda a, b: np.arctan2(a, b), False),
        ("logicalor", "LOGICALOR", lambda a, b: ((a != 0) | (b != 0)).astype(np.int32), True),
        ("notequal", "NOTEQUAL", lambda a, b: (a != b).astype(np.int32), True),
    ]
    for label, code, fn, integer in binary:
        low, high = (-2.0, 2.0) if integer else (-3.0, 3.0)
        inputs = [Input("a", (2, 3, 4, 5), low, high, integer),
                  Input("b", (2, 3, 4, 5), 0.5 if not integer else low, high, integer)]
        case(f"binary_op_{label}", "BinaryOp", {"opType": code}, inputs,
             [op("BinaryOp", "y", ["a", "b"], ["y"], "BinaryOp", {"opType": code, "T": "DT_FLOAT"})],
             (lambda fn: lambda f: {"y": fn(f["a"].astype(np.float64), f["b"].astype(np.float64))})(fn))

    indices = [2, 0, 1, 2]
    case("gather_op_axis0", "Gather", {"indices": indices}, [Input("x", (4, 3, 5))],
         [op("Const", "idx", [], ["idx"], "Blob", {"dims": [4], "dataFormat": "NCHW",
                                                  "dataType": "DT_INT32", "int32s": indices}),
          op("Gather", "y", ["x", "idx"], ["y"])],
         lambda f: {"y": f["x"][indices]})
    return cases


def mnn_net_json(case: Case) -> dict:
    """MNN's JSON form of a Net from ops naming their tensors."""
    names = []

    def index(name):
        if name not in names:
            names.append(name)
        return names.index(name)

    oplists = []
    for spec in case.inputs:
        oplists.append({"type": "Input", "name": spec.name, "outputIndexes": [index(spec.name)],
                        "main_type": "Input",
                        "main": {"dims": list(spec.shape), "dtype": "DT_FLOAT", "dformat": "NCHW"}})
    for o in case.mnn_ops:
        entry = {"type": o["type"], "name": o["name"],
                 "inputIndexes": [index(n) for n in o["inputs"]],
                 "outputIndexes": [index(n) for n in o["outputs"]]}
        if "main_type" in o:
            entry["main_type"], entry["main"] = o["main_type"], o["main"]
        if not entry["inputIndexes"]:
            del entry["inputIndexes"]
        oplists.append(entry)
    return {"oplists": oplists, "tensorName": names, "outputName": [n for n, _ in case.outputs],
            "sourceType": "ONNX", "usage": "INFERENCE", "preferForwardType": "CPU"}


def write_mnn_from_json(case: Case, mnn_path: Path):
    import _tools

    json_path = mnn_path.with_suffix(".json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(mnn_net_json(case), f)
    with captured_native_output() as log:
        ok = _tools.mnnconvert(["mnnconvert", "-f", "JSON", "--modelFile", str(json_path),
                                "--MNNModel", str(mnn_path), "--bizCode", "mnnq"])
    if not ok or not mnn_path.is_file():
        raise OracleError(f"MNN converter failed on {json_path}:\n{log[0].strip()[-2000:]}")


def all_cases():
    cases = (conv_cases() + deconv_cases() + pool_cases() + binary_cases() + unary_cases()
             + activation_cases() + layout_cases() + slice_gather_pad_cases() + resize_cases()
             + norm_softmax_cases() + matmul_gemm_cases() + reduce_misc_cases()
             + mnn_json_cases())
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise OracleError(f"duplicate case names: {sorted(duplicates)}")
    return cases


# --------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------

def build_onnx(case: Case):
    inputs = [helper.make_tensor_value_info(i.name, FLOAT, list(i.shape)) for i in case.inputs]
    outputs = [helper.make_tensor_value_info(n, t, None) for n, t in case.outputs]
    graph = helper.make_graph(case.nodes, case.name, inputs, outputs, case.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)],
                              producer_name="mnnq-conformance")
    model.ir_version = min(model.ir_version, 9)  # keep onnxruntime happy
    # no onnx.checker here: outputs are declared without shapes on purpose (ONNX Runtime infers them)
    return model


def make_inputs(case: Case) -> dict:
    rng = np.random.RandomState(seed_of("inputs/" + case.name))
    feeds = {}
    for spec in case.inputs:
        if spec.low == spec.high:
            value = np.full(spec.shape, spec.low, np.float32)
        elif spec.integer:
            value = rng.randint(int(spec.low), int(spec.high) + 1, size=spec.shape).astype(np.float32)
        else:
            value = rng.uniform(spec.low, spec.high, size=spec.shape).astype(np.float32)
        feeds[spec.name] = np.asarray(value, np.float32)
    return feeds


def short_params(main):
    """The scalar and short-list fields of an op's parameter table (weights left out)."""
    if not isinstance(main, dict):
        return main
    kept = {}
    for key, value in main.items():
        if isinstance(value, dict):
            kept[key] = short_params(value)
        elif isinstance(value, list):
            if len(value) <= 16:
                kept[key] = value
            else:
                kept[key] = f"<{len(value)} values>"
        else:
            kept[key] = value
    return kept


def run_mnn_module(mnn, model_path: Path, feeds: dict, output_names: list):
    """MNN's Module API, for models whose output shape depends on input values (the Interpreter
    session refuses those)."""
    expr = mnn.expr
    runtime = mnn.nn.create_runtime_manager(({"backend": "CPU", "numThread": 1, "precision": "normal"},))
    module = mnn.nn.load_module_from_file(str(model_path), list(feeds.keys()), output_names,
                                          runtime_manager=runtime)
    args = [expr.const(v, list(v.shape), expr.NCHW) for v in feeds.values()]
    results = module.forward(args)
    out = {}
    for name, var in zip(output_names, results):
        data = np.array(var.read())
        out[name] = data.astype(np.int32) if data.dtype.kind in "iub" else data.astype(np.float32)
    return out


def run_mnn(mnn, mnn_path: Path, feeds: dict, output_names: list):
    """Runs the model once in a fresh MNN session; returns (runner, executed op types, outputs)."""
    try:
        with captured_native_output() as log:
            try:
                session = MnnSession(mnn_path, threads=1)
                session.set_inputs(feeds)
                executed = session.run_with_op_trace()
                results = session.outputs()
                session_error = None
            except OracleError as err:
                session_error = err
        if session_error is not None:
            raise session_error
        return "session", executed, results
    except OracleError as err:
        if "need input content" not in str(err) + log[0]:
            raise
    with captured_native_output():
        return "module", None, run_mnn_module(mnn, mnn_path, feeds, output_names)


def run_case(case: Case, out_dir: Path, tmp: Path, mnn) -> dict:
    import onnxruntime as ort

    onnx_path = tmp / f"{case.name}.onnx"
    mnn_path = tmp / f"{case.name}.mnn"
    if case.mnn_ops is None:
        onnx.save(build_onnx(case), str(onnx_path))
        convert_onnx_to_mnn(onnx_path, mnn_path)
    else:
        write_mnn_from_json(case, mnn_path)
    net = dump_mnn_json(mnn_path)
    mnn_ops = [dict(type=op["type"], name=op.get("name", ""), params=short_params(op.get("main")))
               for op in net.get("oplists", [])]
    op_counts = {}
    for op in mnn_ops:
        op_counts[op["type"]] = op_counts.get(op["type"], 0) + 1

    feeds = make_inputs(case)
    output_names = [n for n, _ in case.outputs]
    runner, executed, results = run_mnn(mnn, mnn_path, feeds, output_names)
    # A second, fresh run must give the same bytes: MNN reads uninitialised memory on a few
    # unsupported broadcasts, and such outputs are no reference
    _, _, again = run_mnn(mnn, mnn_path, feeds, output_names)
    for name in output_names:
        if name in results and not np.array_equal(results[name], again.get(name), equal_nan=True):
            raise OracleError(f"MNN output {name} differs between two runs (reads uninitialised memory)")

    missing = [n for n in output_names if n not in results]
    if missing:
        raise OracleError(f"MNN model has no output(s) {missing}; it has {sorted(results)}")

    if case.mnn_ops is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        ort_session = ort.InferenceSession(str(onnx_path), options,
                                           providers=["CPUExecutionProvider"])
        ort_results = dict(zip(output_names, ort_session.run(output_names, feeds)))
    else:
        ort_results = {k: np.asarray(v) for k, v in case.reference(feeds).items()}

    case_dir = out_dir / case.name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    shutil.copyfile(mnn_path, case_dir / "model.mnn")
    input_records, output_records = [], []
    for spec in case.inputs:
        file = f"input_{spec.name.replace('/', '_')}.npy"
        np.save(case_dir / file, feeds[spec.name])
        input_records.append(dict(name=spec.name, file=file, shape=list(spec.shape), dtype="float32",
                                  range=[spec.low, spec.high], integer_valued=spec.integer))
    worst = 0.0
    shape_mismatches = {}
    for name in output_names:
        value = results[name]
        file = f"output_{name.replace('/', '_')}.npy"
        np.save(case_dir / file, value.astype(np.float32))
        reference = np.asarray(ort_results[name])
        if reference.shape != value.shape:
            # MNN's own shape is what our engine must reproduce; keep it, but flag the difference
            if reference.size != value.size:
                raise OracleError(f"output {name}: MNN shape {value.shape} but ONNX Runtime "
                                  f"{reference.shape} (different element counts)")
            shape_mismatches[name] = list(reference.shape)
            reference = reference.reshape(value.shape)
        output_record = dict(name=name, file=file, shape=list(value.shape), mnn_dtype=str(value.dtype),
                             stored_dtype="float32", matches_onnxruntime=True)
        if value.size:
            diff = np.abs(value.astype(np.float64) - reference.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)))
            scale = max(1.0, float(np.max(np.abs(reference.astype(np.float64)))))
            if not float(np.nanmax(diff)) <= DISAGREEMENT_TOLERANCE * scale:
                # MNN departs from the ONNX definition here: keep ONNX Runtime's answer too, so a
                # reader can tell which behaviour a test expects
                ort_file = f"onnxruntime_output_{name.replace('/', '_')}.npy"
                np.save(case_dir / ort_file, reference.astype(np.float32))
                output_record.update(matches_onnxruntime=False, onnxruntime_file=ort_file)
        output_records.append(output_record)
    record = dict(
        case=case.name, onnx_op=case.onnx_op, opset=case.opset, params=jsonable(case.params),
        onnx_nodes=[n.op_type for n in case.nodes], inputs=input_records, outputs=output_records,
        mnn_op_types=op_counts, mnn_ops=mnn_ops, mnn_executed_ops=executed, runner=runner,
        mnn_vs_onnxruntime_max_abs_diff=worst,
        mnn_matches_onnxruntime=all(o["matches_onnxruntime"] for o in output_records), seed=seed_of("inputs/" + case.name),
        mnn_version=getattr(mnn, "version", lambda: "?")(),
    )
    if shape_mismatches:
        record["onnxruntime_output_shapes_differ"] = shape_mismatches
    if case.note:
        record["note"] = case.note
    with open(case_dir / "case.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


def jsonable(value):
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, int) and value in (INT64_MAX, INT64_MIN):
        return int(value)
    return value


def run_worker(case_names, out_dir: Path, keep_onnx: bool) -> int:
    """Runs the named cases in this process, printing one JSON line per finished case. MNN can
    crash the process on some models; the parent then restarts a worker after the crashing case."""
    by_name = {c.name: c for c in all_cases()}
    mnn = import_mnn()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in case_names:
            case = by_name[name]
            print(json.dumps({"started": name}), flush=True)
            try:
                record = run_case(case, out_dir, tmp, mnn)
            except Exception as err:  # report every failing case, keep going
                lines = [m for m in str(err).strip().splitlines() if m.strip()]
                result = {"case": name, "error": " | ".join(lines)[-600:]}
            else:
                if keep_onnx and (tmp / f"{name}.onnx").is_file():
                    shutil.copyfile(tmp / f"{name}.onnx", out_dir / name / "model.onnx")
                result = {"case": name, "record": {k: record[k] for k in (
                    "mnn_op_types", "runner", "mnn_vs_onnxruntime_max_abs_diff",
                    "mnn_matches_onnxruntime")}}
            print(json.dumps(result), flush=True)
    return 0


def run_cases_isolated(cases, out_dir: Path, keep_onnx: bool):
    """Yields (case, record or None, error or None) for every case, running them in worker
    processes so that a crash inside MNN fails one case instead of the whole run."""
    import subprocess

    pending = [c.name for c in cases]
    by_name = {c.name: c for c in cases}
    while pending:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out_dir)]
        if keep_onnx:
            command.append("--keep-onnx")
        command += ["--case=" + n for n in pending]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        current = None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # native library chatter
            if "started" in message:
                current = message["started"]
                continue
            name = message["case"]
            pending.remove(name)
            current = None
            yield by_name[name], message.get("record"), message.get("error")
        code = process.wait()
        if current is not None:
            pending.remove(current)
            yield by_name[current], None, f"MNN crashed the process (exit status {code})"
        elif pending:
            raise OracleError(f"worker exited with status {code} before running {pending[0]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Cases that MNN cannot convert or run are listed in index.json.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--only", metavar="REGEX", help="only cases whose name matches REGEX "
                        "(other existing case folders are kept)")
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    parser.add_argument("--keep-onnx", action="store_true", help="also write model.onnx into each case")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args.case, args.out.resolve(), args.keep_onnx)

    try:
        cases = all_cases()
    except OracleError as err:
        sys.exit(f"error: {err}")
    if args.only:
        try:
            pattern = re.compile(args.only)
        except re.error as err:
            sys.exit(f"error: --only {args.only!r} is not a valid regex: {err}")
        cases = [c for c in cases if pattern.search(c.name)]
        if not cases:
            sys.exit(f"error: no case matches {args.only!r}")
    if args.list:
        for c in cases:
            print(c.name)
        return 0
    try:
        import_mnn()
    except OracleError as err:
        sys.exit(f"error: {err}")
    out_dir = args.out.resolve()
    if str(out_dir).startswith("/work/shared"):
        sys.exit("error: refusing to write into /work/shared (read-only fixtures)")
    out_dir.mkdir(parents=True, exist_ok=True)

    index_path = out_dir / "index.json"
    index = {"cases": {}, "failed": {}}
    if args.only and index_path.is_file():
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    for case, record, error in run_cases_isolated(cases, out_dir, args.keep_onnx):
        if error is not None:
            index["failed"][case.name] = dict(onnx_op=case.onnx_op, reason=error)
            index["cases"].pop(case.name, None)
            stale = out_dir / case.name
            if stale.is_dir():
                shutil.rmtree(stale)
            print(f"FAILED  {case.name}: {error[:300]}", flush=True)
            continue
        index["failed"].pop(case.name, None)
        index["cases"][case.name] = dict(onnx_op=case.onnx_op, mnn_op_types=record["mnn_op_types"],
                                         runner=record["runner"],
                                         mnn_matches_onnxruntime=record["mnn_matches_onnxruntime"],
                                         max_abs_diff_vs_onnxruntime=record[
                                             "mnn_vs_onnxruntime_max_abs_diff"])
        kinds = ",".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(record["mnn_op_types"].items())
                         if k not in ("Input", "Const"))
        status = "ok     " if record["mnn_matches_onnxruntime"] else "DIFFERS"
        print(f"{status} {case.name:48s} {kinds}  (vs ORT {record['mnn_vs_onnxruntime_max_abs_diff']:.2e})",
              flush=True)

    if not args.only:
        # a full run owns the folder: remove case folders of cases that no longer exist
        for child in out_dir.iterdir():
            if child.is_dir() and (child / "case.json").is_file() and child.name not in index["cases"]:
                shutil.rmtree(child)
    index["cases"] = dict(sorted(index["cases"].items()))
    index["failed"] = dict(sorted(index["failed"].items()))
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    print(f"{len(index['cases'])} cases written to {out_dir}, {len(index['failed'])} failed "
          f"(see index.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
