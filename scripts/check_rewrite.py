#!/usr/bin/env python3
"""Interop check: `mnnq rewrite` must not change what the real MNN computes.

For every fixture model (models/*.mnn and mnn_int8/*/KL_MAX_ABS.mnn): rewrite it with the given
mnnq binary into a temporary folder, run the original and the rewritten file in MNN
(`MNN.Interpreter`, CPU backend, 1 thread, precision normal) on the golden inputs
(golden/<model>/input_*.bin, shapes from the manifest) and require bit-identical outputs.
It also reports how the original's outputs compare with the stored references (MNN's goldens).

Usage: check_rewrite.py MNNQ_BINARY   (fixtures from $MNNQ_FIXTURES, default ../shared/fixtures)
Run it with the venv interpreter that has `mnn` installed, e.g. /work/venv/bin/python.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import MNN

MODELS = ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"]


def fixtures_dir():
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
    return Path(os.environ.get("MNNQ_FIXTURES", default))


def run_mnn(model_path, input_name, inputs, outputs):
    """Runs `model_path` once per input array; returns {sample: {output name: array}}."""
    interpreter = MNN.Interpreter(str(model_path))
    session = interpreter.createSession({"backend": "CPU", "numThread": 1, "precision": "normal"})
    results = []
    for data, wanted in zip(inputs, outputs):
        tensor = interpreter.getSessionInput(session, input_name)
        host = MNN.Tensor(list(data.shape), MNN.Halide_Type_Float, data, MNN.Tensor_DimensionType_Caffe)
        tensor.copyFrom(host)
        interpreter.runSession(session)
        sample = {}
        for name, shape in wanted:
            out = interpreter.getSessionOutput(session, name)
            copy = MNN.Tensor(out.getShape(), MNN.Halide_Type_Float,
                              np.zeros(out.getShape(), dtype=np.float32), MNN.Tensor_DimensionType_Caffe)
            out.copyToHostTensor(copy)
            sample[name] = np.array(copy.getNumpyData(), dtype=np.float32).reshape(shape)
        results.append(sample)
    return results


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    mnnq = Path(sys.argv[1]).resolve()
    root = fixtures_dir()
    if not root.is_dir():
        print(f"SKIPPED: fixtures not found at {root}")
        return 0
    failures = 0
    checked = 0
    with tempfile.TemporaryDirectory(prefix="mnnq-rewrite-") as tmp:
        for model in MODELS:
            golden = root / "golden" / model
            manifest = json.loads((golden / "manifest.json").read_text())
            inputs = [np.fromfile(golden / s["input"]["file"], dtype="<f4").reshape(s["input"]["shape"])
                      for s in manifest["samples"]]
            wanted = [[(o["name"], o["shape"]) for o in s["outputs"]] for s in manifest["samples"]]
            references = {
                root / "models" / f"{model}.mnn":
                    [[golden / o["file"] for o in s["outputs"]] for s in manifest["samples"]],
            }
            int8_dir = root / "mnn_int8" / model
            quant_manifest = json.loads((int8_dir / "quant_outputs_manifest.json").read_text())
            references[int8_dir / "KL_MAX_ABS.mnn"] = [
                [int8_dir / o["file"] for o in s["outputs"]] for s in quant_manifest["samples"]]
            for original, reference_files in references.items():
                rewritten = Path(tmp) / f"{model}-{original.stem}.mnn"
                done = subprocess.run([str(mnnq), "rewrite", str(original), str(rewritten)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"FAIL {original}: mnnq rewrite failed: {done.stderr.strip()}")
                    failures += 1
                    continue
                before = run_mnn(original, manifest["input_name"], inputs, wanted)
                after = run_mnn(rewritten, manifest["input_name"], inputs, wanted)
                for index, (a, b, files) in enumerate(zip(before, after, reference_files)):
                    for (name, _), file in zip(wanted[index], files):
                        checked += 1
                        reference = np.fromfile(file, dtype="<f4").reshape(a[name].shape)
                        vs_reference = float(np.max(np.abs(a[name] - reference)))
                        if a[name].tobytes() == b[name].tobytes():
                            print(f"ok   {original.relative_to(root)} sample {index} {name}: bit-identical "
                                  f"(original vs stored reference: max |diff| {vs_reference:.3g})")
                        else:
                            diff = float(np.max(np.abs(a[name] - b[name])))
                            print(f"FAIL {original.relative_to(root)} sample {index} {name}: "
                                  f"rewritten output differs, max |diff| {diff:.3g}")
                            failures += 1
    print(f"{checked} outputs checked, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
