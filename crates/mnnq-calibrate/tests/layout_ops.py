"""Pooling ops of the fixture models as MNN's runtime reports them (one forward, MNN Session
API), with input/output tensor indices from MNN's scale report. Run once
(`/work/venv/bin/python layout_ops.py`); writes data/<model>_layout_ops.json for the Rust
test that applies our unification to real scales. (Raster ops are left out: the scale report
does not list them, so their tensor indices are unknown here.)
"""
import json, os
import numpy as np
import MNN

from input_values import FIX


def run(model):
    report = json.load(open(os.path.join(FIX, "mnn_int8", model, "KL_MAX_ABS.mnn.json")))
    by_name = {op["name"]: op for op in report}
    interp = MNN.Interpreter(os.path.join(FIX, "models", model + ".mnn"))
    session = interp.createSession({"numThread": 1})
    ops = []

    def end(tensors, info):
        op = by_name.get(info.getName())
        if info.getType() == "Pooling" and op is not None:
            ops.append({"name": info.getName(), "kind": "Pooling",
                        "inputs": [t["tensorIndex"] for t in op.get("inputs", [])],
                        "output": op["outputs"][0]["tensorIndex"]})
        return True

    interp.runSessionWithCallBackInfo(session, lambda t, i: True, end)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "data", model + "_layout_ops.json"), "w") as fh:
        json.dump(ops, fh, indent=1)
    print(model, len(ops), "pooling ops")


if __name__ == "__main__":
    for m in ["efficientnet_lite0", "ppocr_cls_v2", "ppocr_det_v4"]:
        run(m)
