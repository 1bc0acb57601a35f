#!/usr/bin/env bash
# Issue #4's fidelity table: each shared model quantized by mnnq with MNN's methods only
# (KL+MAX_ABS, KL+ADMM, ADMM+MAX_ABS; mnnq's quality keys off: feature_range_method KL, no bias
# correction, no float head), then judged in the real MNN by scripts/fidelity.py on the
# evaluation images the calibration does not use.
#
#   scripts/fidelity_mnn_methods.sh [PYTHON] [MNNQ]     (defaults: .venv/bin/python, target/release/mnnq)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-$repo/.venv/bin/python}"
mnnq="$(realpath "${2:-$repo/target/release/mnnq}")"
fixtures="${MNNQ_FIXTURES:-$repo/../shared/fixtures}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$fixtures"
for pair in efficientnet_lite0:eval_photo ppocr_cls_v2:eval_textline ppocr_det_v4:eval_text; do
  model=${pair%%:*}
  images=${pair##*:}
  for methods in KL:MAX_ABS KL:ADMM ADMM:MAX_ABS; do
    feature=${methods%%:*}
    weight=${methods##*:}
    config="$work/${model}_${feature}_${weight}.json"
    "$python" - "$fixtures" "configs/$model.json" "$config" "$feature" "$weight" <<'PY'
import json, sys
fixtures, source, target, feature, weight = sys.argv[1:]
config = json.load(open(source))
config["path"] = f"{fixtures}/{config['path']}"
config.update(feature_quantize_method=feature, weight_quantize_method=weight,
              feature_range_method="KL", bias_correction=False, float_outputs=False)
json.dump(config, open(target, "w"), indent=1)
PY
    quant="$work/${model}_${feature}_${weight}.mnn"
    "$mnnq" quantize "models/$model.mnn" "$quant" "$config" > "$work/quantize.log" 2>&1 \
      || { cat "$work/quantize.log"; exit 1; }
    echo "== $model $feature+$weight"
    "$python" "$repo/scripts/fidelity.py" --float "models/$model.mnn" --quant "$quant" \
      --config "configs/$model.json" --images "images/$images" | grep -E "cosine mean|top-1|IoU"
  done
done
