#!/usr/bin/env python3
"""Do two float MNN models compute the same function? (checks `mnnq rewrite --fold-affine`)

Runs ORIGINAL and REWRITTEN on every image of DIR (preprocessed as MNN's quantization tool does)
in the real MNN and, with --mnnq BIN, also in mnnq's float engine (`mnnq run`), and prints per
output the minimum cosine over the images (10 digits) and the largest absolute difference.
As a yardstick it also prints the same figures for ORIGINAL in MNN against ORIGINAL in mnnq
(two correct float engines differ by that much). Exits 1 when a cosine is below --min-cosine.

Example (from the fixtures folder):
  python scripts/float_equivalence.py models/ppocr_det_v4.mnn /tmp/det_fold.mnn \\
      --config configs/ppocr_det_v4.json --images images/eval_text --mnnq target/release/mnnq
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import cosine, list_images, resolve  # noqa: E402
from oracle_common import MnnSession, OracleError, QuantizerPreprocess, load_quant_config  # noqa: E402


def mnnq_outputs(binary: str, model: Path, input_name: str, x: np.ndarray, work: Path) -> dict:
    """Every output of `model` for input x, from `mnnq run`."""
    feed = work / "input.npy"
    np.save(feed, x)
    out_dir = work / f"out_{model.stem}"
    out_dir.mkdir(exist_ok=True)
    subprocess.run([binary, "run", str(model), "--input", f"{input_name}={feed}",
                    "--output-dir", str(out_dir), "--threads", "1"],
                   check=True, capture_output=True)
    return {p.stem: np.load(p) for p in out_dir.glob("*.npy")}


class Worst:
    def __init__(self):
        self.min_cos = 1.0
        self.max_abs = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        c = cosine(a, b)
        if c is not None:
            self.min_cos = min(self.min_cos, c)
        self.max_abs = max(self.max_abs, float(np.max(np.abs(a.astype(np.float64) - b))))

    def line(self, label: str) -> str:
        return f"  {label:<44} cosine min {self.min_cos:.10f}  max abs diff {self.max_abs:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("rewritten")
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--mnnq", help="mnnq binary: also compare in mnnq's float engine")
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    args = parser.parse_args()

    original = resolve(args.original, "model")
    rewritten = resolve(args.rewritten, "model")
    config = load_quant_config(resolve(args.config, "config"))
    images = list_images(resolve(args.images, "image folder", want_dir=True))
    preprocess = QuantizerPreprocess(config)
    mnn_a, mnn_b = MnnSession(original), MnnSession(rewritten)
    (input_name,) = mnn_a.input_names
    rows = {}

    def worst(key: str) -> Worst:
        return rows.setdefault(key, Worst())

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for image in images:
            x = preprocess(image)
            a = mnn_a.infer({input_name: x})
            b = mnn_b.infer({input_name: x})
            for name in a:
                worst(f"{name}: MNN original vs rewritten").add(a[name], b[name])
            if args.mnnq:
                qa = mnnq_outputs(args.mnnq, original, input_name, x, work)
                qb = mnnq_outputs(args.mnnq, rewritten, input_name, x, work)
                for name in a:
                    key = name.replace("/", "_")
                    worst(f"{name}: mnnq original vs rewritten").add(qa[key], qb[key])
                    worst(f"{name}: original, MNN vs mnnq (yardstick)").add(a[name], qa[key])
    print(f"{original.name} vs {rewritten.name} on {len(images)} image(s) of {args.images}")
    failed = False
    for label, w in rows.items():
        print(w.line(label))
        if "yardstick" not in label and w.min_cos < args.min_cosine:
            failed = True
    if failed:
        print(f"FAILED: a cosine is below {args.min_cosine}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
