#!/usr/bin/env python3
"""How far a quantized MNN model drifts from its float model, measured in the real MNN.

Both models run in MNN (Interpreter session, CPU, precision normal) on every image of DIR,
preprocessed exactly as MNN's quantization tool does (config format/mean/normal/size, MNN's own
decoder and ImageProcess with the corner-aligned stretch). Metrics follow the fixtures README
("Metric definitions"):
  cosine        per image between the flattened float and quantized outputs; mean and min over
                images; an all-zero output gives no cosine and is left out
  mean abs err  mean |float - quant| per image, then the mean over images; max abs err over all
  classifiers   (an output with exactly one non-batch dim): top-1 agreement, and for >= 5 classes
                top-5 overlap |top5_f & top5_q| / 5 and float top-1 within quant top-5
  1-channel maps (N x 1 x H x W): IoU of the maps thresholded at 0.3, per image, averaged over the
                images where either mask is non-empty

Example:
  .venv/bin/python scripts/fidelity.py --float models/efficientnet_lite0.mnn \\
      --quant mnn_int8/efficientnet_lite0/KL_MAX_ABS.mnn --config configs/efficientnet_lite0.json \\
      --images images/eval_photo
(relative paths are looked up in the current directory, then in the fixtures folder.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import (  # noqa: E402
    MnnSession,
    OracleError,
    QuantizerPreprocess,
    fixtures_dir,
    load_quant_config,
)

MAP_THRESHOLD = 0.3


def resolve(path: str, what: str, want_dir: bool = False) -> Path:
    """A path as given, or relative to the fixtures folder (so fixture-relative paths work)."""
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates.append(fixtures_dir() / path)
    for candidate in candidates:
        if (candidate.is_dir() if want_dir else candidate.is_file()):
            return candidate
    raise OracleError(f"{what} not found: {path} (also looked in {fixtures_dir()})")


def list_images(folder: Path) -> list[Path]:
    """Every non-hidden file of the folder, in byte-wise sorted order (as quantized.out sorts)."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.name.encode("utf-8"))
    if not files:
        raise OracleError(f"no image files in {folder}")
    return files


def load_labels(spec: str, images_dir: Path) -> dict[str, int]:
    """Known classes per image file name: from a JSON object {file name: class}, or from a
    fixtures-style manifest ({"files": [{"file": ..., "cls_label": ...}]}). 'auto' uses
    images/eval_manifest.json next to the image folder when it has labels for it."""
    if spec == "none":
        return {}
    if spec == "auto":
        manifest = images_dir.parent / "eval_manifest.json"
        if not manifest.is_file():
            return {}
        path = manifest
    else:
        path = Path(spec)
        if not path.is_file():
            raise OracleError(f"labels file not found: {spec}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise OracleError(f"{path}: not valid JSON: {err}") from err
    labels = {}
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        for entry in data["files"]:
            if isinstance(entry, dict) and "cls_label" in entry and "file" in entry:
                labels[Path(entry["file"]).name] = int(entry["cls_label"])
    elif isinstance(data, dict):
        labels = {Path(k).name: int(v) for k, v in data.items()}
    else:
        raise OracleError(f"{path}: expected {{file: class}} or a manifest with 'files'")
    if spec == "auto":
        present = {p.name for p in images_dir.iterdir()}
        labels = {k: v for k, v in labels.items() if k in present}
    return labels


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0 or not np.isfinite(na) or not np.isfinite(nb):
        return None
    return float(np.dot(a, b) / (na * nb))


def output_kind(shape: tuple) -> str:
    non_batch = [d for d in shape[1:]]
    if len(non_batch) == 1 and non_batch[0] > 1:
        return "classifier"
    if len(shape) == 4 and shape[1] == 1:
        return "map"
    return "tensor"


def compare_outputs(name: str, float_out: np.ndarray, quant_out: np.ndarray) -> dict:
    """Per-image figures for one output."""
    if float_out.shape != quant_out.shape:
        raise OracleError(f"output {name}: float shape {float_out.shape} but quantized {quant_out.shape}")
    diff = np.abs(float_out.astype(np.float64) - quant_out.astype(np.float64))
    record = {
        "cos": cosine(float_out, quant_out),
        "mean_abs_err": float(np.nanmean(diff)),
        "max_abs_err": float(np.nanmax(diff)),
        "nan_in_quant": int(np.isnan(quant_out).sum()),
    }
    kind = output_kind(float_out.shape)
    if kind == "classifier":
        f = float_out.reshape(-1)
        q = quant_out.reshape(-1)
        record["float_top1"] = int(np.argmax(f))
        record["quant_top1"] = int(np.argmax(q))
        if f.size >= 5:
            # int8 logits tie often; numpy's default sort order decides ties, as it did for the
            # reference figures in the fixtures README (a stable sort moves top-5 overlap by ~0.006)
            top_f = np.argsort(-f)[:5]
            top_q = np.argsort(-q)[:5]
            record["float_top5"] = top_f.tolist()
            record["quant_top5"] = top_q.tolist()
    elif kind == "map":
        mask_f = float_out > MAP_THRESHOLD
        mask_q = quant_out > MAP_THRESHOLD
        union = int(np.logical_or(mask_f, mask_q).sum())
        record["float_pixels_above"] = int(mask_f.sum())
        record["quant_pixels_above"] = int(mask_q.sum())
        record["iou"] = (float(np.logical_and(mask_f, mask_q).sum()) / union) if union else None
    return record


def summarize(kind: str, per_image: list[dict]) -> dict:
    cosines = [r["cos"] for r in per_image if r["cos"] is not None]
    summary = {
        "images": len(per_image),
        "mean_cos": float(np.mean(cosines)) if cosines else None,
        "min_cos": float(np.min(cosines)) if cosines else None,
        "images_without_cos": len(per_image) - len(cosines),
        "mean_abs_err": float(np.mean([r["mean_abs_err"] for r in per_image])),
        "max_abs_err": float(np.max([r["max_abs_err"] for r in per_image])),
        "nan_in_quant": int(sum(r["nan_in_quant"] for r in per_image)),
    }
    if kind == "classifier":
        agree = [r["float_top1"] == r["quant_top1"] for r in per_image]
        summary["top1_agreement_pct"] = 100.0 * float(np.mean(agree))
        if "float_top5" in per_image[0]:
            overlap = [len(set(r["float_top5"]) & set(r["quant_top5"])) / 5.0 for r in per_image]
            within = [r["float_top1"] in r["quant_top5"] for r in per_image]
            summary["top5_overlap_mean"] = float(np.mean(overlap))
            summary["float_top1_in_quant_top5_pct"] = 100.0 * float(np.mean(within))
        labelled = [r for r in per_image if "label" in r]
        if labelled:
            summary["labelled_images"] = len(labelled)
            summary["float_accuracy_pct"] = 100.0 * float(np.mean([r["float_top1"] == r["label"] for r in labelled]))
            summary["quant_accuracy_pct"] = 100.0 * float(np.mean([r["quant_top1"] == r["label"] for r in labelled]))
    elif kind == "map":
        ious = [r["iou"] for r in per_image if r["iou"] is not None]
        summary["iou_at_0.3"] = float(np.mean(ious)) if ious else None
        summary["images_with_iou"] = len(ious)
        summary["float_pixels_above_0.3"] = int(sum(r["float_pixels_above"] for r in per_image))
        summary["quant_pixels_above_0.3"] = int(sum(r["quant_pixels_above"] for r in per_image))
    return summary


def fmt(value, spec=".4f"):
    return "n/a" if value is None else format(value, spec)


def print_summary(name: str, kind: str, s: dict) -> None:
    print(f"  output {name!r} ({kind}, {s['images']} images)")
    no_cos = f" ({s['images_without_cos']} without a cosine: all-zero output)" if s["images_without_cos"] else ""
    print(f"    cosine mean {fmt(s['mean_cos'])}  min {fmt(s['min_cos'])}{no_cos}")
    print(f"    abs error mean {fmt(s['mean_abs_err'])}  max {fmt(s['max_abs_err'])}"
          + (f"  NaN in quant: {s['nan_in_quant']}" if s["nan_in_quant"] else ""))
    if kind == "classifier":
        line = f"    top-1 agreement {s['top1_agreement_pct']:.1f}%"
        if "top5_overlap_mean" in s:
            line += (f"  top-5 overlap {s['top5_overlap_mean']:.3f}"
                     f"  float top-1 in quant top-5 {s['float_top1_in_quant_top5_pct']:.1f}%")
        print(line)
        if "labelled_images" in s:
            print(f"    accuracy against known labels ({s['labelled_images']} images): float "
                  f"{s['float_accuracy_pct']:.1f}%, quant {s['quant_accuracy_pct']:.1f}%")
    elif kind == "map":
        print(f"    IoU@{MAP_THRESHOLD} {fmt(s['iou_at_0.3'], '.5f')} over {s['images_with_iou']} images;"
              f" pixels above {MAP_THRESHOLD}: float {s['float_pixels_above_0.3']},"
              f" quant {s['quant_pixels_above_0.3']}")


def run(args) -> dict:
    float_path = resolve(args.float, "float model")
    quant_path = resolve(args.quant, "quantized model")
    config_path = resolve(args.config, "config")
    images_dir = resolve(args.images, "image folder", want_dir=True)
    config = load_quant_config(config_path)
    preprocess = QuantizerPreprocess(config)
    float_model = MnnSession(float_path, threads=args.threads)
    quant_model = MnnSession(quant_path, threads=args.threads)
    if len(float_model.input_names) != 1:
        raise OracleError(f"{float_path}: expected one image input, found {float_model.input_names}")
    input_name = float_model.input_names[0]
    if quant_model.input_names != [input_name]:
        raise OracleError(f"{quant_path}: inputs {quant_model.input_names} differ from the float "
                          f"model's {[input_name]}")
    images = list_images(images_dir)
    labels = load_labels(args.labels, images_dir)
    if args.limit:
        images = images[:args.limit]

    per_output: dict[str, list] = {name: [] for name in float_model.output_names}
    kinds: dict[str, str] = {}
    skipped = []
    for image in images:
        try:
            tensor = preprocess(image)
        except OracleError as err:
            print(f"warning: skipping {image}: {err}", file=sys.stderr)
            skipped.append(image.name)
            continue
        float_out = float_model.infer({input_name: tensor})
        quant_out = quant_model.infer({input_name: tensor})
        for name in float_model.output_names:
            if name not in quant_out:
                raise OracleError(f"{quant_path}: no output named {name!r}")
            kinds.setdefault(name, output_kind(float_out[name].shape))
            record = compare_outputs(name, float_out[name], quant_out[name])
            record["file"] = image.name
            if kinds[name] == "classifier" and image.name in labels:
                record["label"] = labels[image.name]
            per_output[name].append(record)
    if not any(per_output.values()):
        raise OracleError(f"no image of {images_dir} could be used")

    result = {
        "float_model": str(float_path), "quant_model": str(quant_path), "config": str(config_path),
        "images_dir": str(images_dir), "threads": args.threads, "skipped_images": skipped,
        "outputs": {},
    }
    print(f"float {float_path}\nquant {quant_path}\nimages {images_dir} ({len(images) - len(skipped)} used)")
    for name, records in per_output.items():
        summary = summarize(kinds[name], records)
        print_summary(name, kinds[name], summary)
        result["outputs"][name] = {"kind": kinds[name], "summary": summary, "per_image": records}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--float", required=True, metavar="F.mnn", help="the float model")
    parser.add_argument("--quant", required=True, metavar="Q.mnn", help="the quantized model")
    parser.add_argument("--config", required=True, metavar="CONFIG.json",
                        help="quantized.out config (format, mean, normal, width, height)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of evaluation images")
    parser.add_argument("--json", metavar="OUT", help="also write summary and per-image figures here")
    parser.add_argument("--threads", type=int, default=1, help="MNN threads (default 1)")
    parser.add_argument("--labels", default="auto", metavar="auto|none|FILE.json",
                        help="known classes for classifier accuracy: a JSON {file: class} or a manifest "
                        "with files[].cls_label; auto = images/eval_manifest.json if it has labels")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.json and str(Path(args.json).resolve()).startswith("/work/shared"):
        parser.error("refusing to write into /work/shared (read-only fixtures)")
    try:
        result = run(args)
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
