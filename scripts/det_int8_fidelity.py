#!/usr/bin/env python3
"""How far OUR int8 runtime drifts from our float runtime on the PP-OCR det eval images.

Unlike `mnnq compare` (fake-quant inside the float engine) this runs the real int8 schedule:
every image of DIR is preprocessed with `mnnq preprocess`, then `mnnq run` runs the float and
the quantized model, and the 1x1xHxW maps are compared per image: cosine (an all-zero map gives
no cosine and is left out of the mean), mean abs error, and IoU of the maps thresholded at 0.3
(over images where either mask is non-empty), as in the fixtures README.

Example (from the fixtures folder):
  python scripts/det_int8_fidelity.py --mnnq target/release/mnnq \\
      --float models/ppocr_det_v4.mnn --quant /tmp/det_q.mnn \\
      --config configs/ppocr_det_v4.json --images images/eval_text
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def run_model(mnnq: str, model: str, input_name: str, npy: Path, out_dir: Path) -> np.ndarray:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [mnnq, "run", model, "--input", f"{input_name}={npy}", "--output-dir", str(out_dir),
         "--threads", "1"],
        check=True, capture_output=True, text=True,
    )
    outputs = sorted(out_dir.glob("*.npy"))
    if len(outputs) != 1:
        raise SystemExit(f"error: {model}: expected one output in {out_dir}, found {len(outputs)}")
    return np.load(outputs[0]).astype(np.float64).ravel()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnnq", required=True)
    ap.add_argument("--float", dest="float_model", required=True)
    ap.add_argument("--quant", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--input-name", default="x")
    args = ap.parse_args()

    images = sorted(p for p in Path(args.images).iterdir() if p.is_file())
    if not images:
        raise SystemExit(f"error: {args.images}: no images")
    cosines, maes, ious = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image in images:
            npy = tmp / f"{image.stem}.npy"
            subprocess.run(
                [args.mnnq, "preprocess", str(image), "--config", args.config, "-o", str(npy),
                 "--model", args.float_model],
                check=True, capture_output=True, text=True,
            )
            f = run_model(args.mnnq, args.float_model, args.input_name, npy, tmp / f"f_{image.stem}")
            q = run_model(args.mnnq, args.quant, args.input_name, npy, tmp / f"q_{image.stem}")
            nf, nq = np.linalg.norm(f), np.linalg.norm(q)
            cos = float(f @ q / (nf * nq)) if nf > 0 and nq > 0 else None
            mae = float(np.abs(f - q).mean())
            mf, mq = f > 0.3, q > 0.3
            union = int((mf | mq).sum())
            iou = float((mf & mq).sum() / union) if union else None
            if cos is not None:
                cosines.append(cos)
            maes.append(mae)
            if iou is not None:
                ious.append(iou)
            print(f"{image.name:24s} cosine {cos if cos is None else f'{cos:.4f}'}  "
                  f"mae {mae:.4f}  iou@0.3 {iou if iou is None else f'{iou:.4f}'}")
    print(f"images {len(images)}: cosine mean {np.mean(cosines):.4f} min {np.min(cosines):.4f} "
          f"({len(images) - len(cosines)} undefined); mae mean {np.mean(maes):.4f}; "
          f"iou@0.3 mean {np.mean(ious) if ious else float('nan'):.4f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(map(str, e.cmd))} failed: {e.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
