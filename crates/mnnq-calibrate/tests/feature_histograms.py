"""Real feature-map histograms of the fixture models, binned exactly as MNN's quantized.out does.

Run once (`/work/venv/bin/python feature_histograms.py [model ...]`); writes
data/<model>_feature_histograms.json. For every non-Raster op output that MNN's scale report
(mnn_int8/<model>/KL_MAX_ABS.mnn.json) lists, over all calibration images of the model's
config: pass 1 the global min/max (first visit per image), pass 2 the 2048-bin |x| histogram
with MNN's rules (skip |x| <= 1e-6 in double; bin = int(f32(|x|) * f32(2048 / maxAbs)), capped
at 2047), and whether MNN's small-tensor rule (width * height < 100) applies. The float model
runs in MNN's own Session API (1 thread), inputs come from input_values.preprocess (MNN's image
pipeline). The Rust test computes the KL scales from these counts and compares them with MNN's
report: that checks our KL search on real distributions before our executor exists.
"""
import json, os, sys
import numpy as np
import MNN

from input_values import FIX, preprocess


def run(model):
    cfg = json.load(open(os.path.join(FIX, "configs", model + ".json")))
    report = json.load(open(os.path.join(FIX, "mnn_int8", model, "KL_MAX_ABS.mnn.json")))
    index_of = {op["name"]: [t["tensorIndex"] for t in op.get("outputs", [])] for op in report}
    folder = os.path.join(FIX, cfg["path"])
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if not f.startswith("."))
    interp = MNN.Interpreter(os.path.join(FIX, "models", model + ".mnn"))
    session = interp.createSession({"numThread": 1})
    net_input = interp.getSessionInput(session)
    mean = (cfg["mean"] + [0.0] * 4)[:4]
    normal = (cfg["normal"] + [1.0] * 4)[:4]
    stats = {}  # tensor index -> dict

    def visit(tensors, info, fn, seen):
        for k, tensor in enumerate(tensors):
            ids = index_of.get(info.getName())
            if ids is None or k >= len(ids) or ids[k] in seen:
                continue
            seen.add(ids[k])
            host = MNN.Tensor(tensor, MNN.Tensor_DimensionType_Caffe)
            tensor.copyToHostTensor(host)
            data = np.array(host.getData(), dtype=np.float32).ravel()
            fn(ids[k], data, tensor.getShape())
        return True

    def range_pass(i, data, shape):
        s = stats.setdefault(i, {"min": np.float32(1e5), "max": np.float32(-1e5), "shape": list(shape)})
        s["min"] = min(s["min"], data.min())
        s["max"] = max(s["max"], data.max())

    def hist_pass(i, data, shape):
        s = stats[i]
        if "counts" not in s:
            return
        a = np.abs(data)
        a = a[a.astype(np.float64) > 1e-6]
        bins = np.minimum((a * s["interval"]).astype(np.int64), 2047)
        s["counts"] += np.bincount(bins, minlength=2048).astype(np.uint64)

    for pass_fn in (range_pass, hist_pass):
        if pass_fn is hist_pass:
            for s in stats.values():
                max_abs = np.float32(max(abs(s["min"]), abs(s["max"])))
                if max_abs > np.float32(1e-5):
                    s["max_abs"] = max_abs
                    s["interval"] = np.float32(np.float32(2048) / max_abs)
                    s["counts"] = np.zeros(2048, np.uint64)
        for f in files:
            x = preprocess(f, cfg, mean, normal)
            net_input.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
            seen = set()
            interp.runSessionWithCallBackInfo(session, lambda t, i: True,
                                              lambda t, i: visit(t, i, pass_fn, seen))
    out = []
    for i, s in sorted(stats.items()):
        entry = {"tensorIndex": i, "shape": s["shape"], "min": float(s["min"]), "max": float(s["max"])}
        if "counts" in s:
            nz = np.nonzero(s["counts"])[0]
            entry["max_abs"] = float(s["max_abs"])
            entry["bins"] = nz.tolist()
            entry["counts"] = s["counts"][nz].tolist()
        out.append(entry)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "data", model + "_feature_histograms.json"), "w") as fh:
        json.dump({"model": model, "images": len(files), "tensors": out}, fh)
    print(model, len(files), "images,", len(out), "tensors")


if __name__ == "__main__":
    for m in sys.argv[1:] or ["efficientnet_lite0", "ppocr_cls_v2"]:
        run(m)
