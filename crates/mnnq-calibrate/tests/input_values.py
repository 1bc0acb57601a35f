"""Graph-input value counts of the three fixture models, as MNN's quantized.out sees them.

Run once (`/work/venv/bin/python input_values.py`); writes data/<model>_input_values.json:
the distinct float32 values of the preprocessed input tensor over all calibration images
(with how many elements have each value), from which the Rust test rebuilds the exact tensor
stream. Preprocessing is MNN's own: MNN.cv.imread (stb, like quantized.out's stbi_load),
RGBA source, bilinear CVImageProcess with the corner-aligned setPolyToPoly the tool uses,
mean/normal from the config. It reproduces fixtures/golden/preprocess exactly (checked below).
"""
import json, os
import numpy as np
import MNN
import MNN.cv as cv

FIX = os.environ.get("MNNQ_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../shared/fixtures"))
FMT = {"RGB": MNN.CV_ImageFormat_RGB, "BGR": MNN.CV_ImageFormat_BGR, "GRAY": MNN.CV_ImageFormat_GRAY}


def rgba(path):
    v = cv.imread(path)
    bgr = np.asarray(v.read(), dtype=np.uint8).reshape(v.shape)
    out = np.empty(bgr.shape[:2] + (4,), np.uint8)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = bgr[..., 2], bgr[..., 1], bgr[..., 0], 255
    return np.ascontiguousarray(out)


def preprocess(path, cfg, mean, normal):
    img = rgba(path)
    h, w, _ = img.shape
    ow, oh = cfg["width"], cfg["height"]
    proc = MNN.CVImageProcess({"sourceFormat": MNN.CV_ImageFormat_RGBA, "destFormat": FMT[cfg["format"]],
                               "mean": tuple(mean), "normal": tuple(normal), "filterType": MNN.CV_Filter_BILINEAL})
    m = MNN.CVMatrix()
    m.setPolyToPoly([0., 0., 0., oh - 1., ow - 1., 0., ow - 1., oh - 1.],
                    [0., 0., 0., h - 1., w - 1., 0., w - 1., h - 1.])
    proc.setMatrix(m)
    shape = (1, 3, oh, ow)
    t = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
    proc.convert(img.ctypes.data, w, h, 0, t)
    return np.array(t.getData(), np.float32).reshape(shape)


def main():
    for e in json.load(open(os.path.join(FIX, "golden/preprocess/manifest.json"))):
        cfg = json.load(open(os.path.join(FIX, e["config"])))
        got = preprocess(os.path.join(FIX, e["image"]), cfg, [0] * 4, [1] * 4)
        assert np.array_equal(got, np.load(os.path.join(FIX, e["output"])).astype(np.float32)), e["image"]
    here = os.path.dirname(os.path.abspath(__file__))
    for model in ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"]:
        cfg = json.load(open(os.path.join(FIX, "configs", model + ".json")))
        folder = os.path.join(FIX, cfg["path"])  # relative to the fixtures folder
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if not f.startswith("."))
        values = {}
        for f in files:
            x = preprocess(f, cfg, (cfg["mean"] + [0.0] * 4)[:4], (cfg["normal"] + [1.0] * 4)[:4])
            u, c = np.unique(x, return_counts=True)
            for v, n in zip(u.tolist(), c.tolist()):
                values[v] = values.get(v, 0) + n
        items = sorted(values.items())
        out = {"model": model, "images": len(files), "values": [v for v, _ in items], "counts": [n for _, n in items]}
        with open(os.path.join(here, "data", model + "_input_values.json"), "w") as fh:
            json.dump(out, fh)
        print(model, len(files), "images,", len(items), "distinct values, min", items[0][0], "max", items[-1][0])


if __name__ == "__main__":
    main()
