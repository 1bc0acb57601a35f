#!/usr/bin/env python3
"""KL parity of two MNN scale files (`<QUANT>.json`, as quantized.out and mnnq write them):
the share of MNN's non-zero feature scales that ours matches within 1 % (issue #4's measure,
the same rule as `mnnq_calibrate::compare_scales`; MNN's zero scales are left out, mnnq never
writes one).

  python3 scripts/kl_parity.py OURS.mnn.json MNN.mnn.json
e.g. after `mnnq quantize --mnn models/M.mnn /tmp/M.mnn configs/M.json`:
  python3 scripts/kl_parity.py /tmp/M.mnn.json mnn_int8/M/KL_MAX_ABS.mnn.json
"""

import json
import sys


def scales(path):
    found = {}
    with open(path) as f:
        for op in json.load(f):
            for tensor in op.get("inputs", []) + op.get("outputs", []):
                found[tensor["tensorIndex"]] = tensor["scales"][0]
    return found


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ours, mnn = scales(sys.argv[1]), scales(sys.argv[2])
    compared = {t: s for t, s in mnn.items() if s != 0.0}
    within = [t for t, s in compared.items() if t in ours and abs(ours[t] - s) <= 0.01 * abs(s)]
    missing = sorted(t for t in compared if t not in ours)
    others = sorted(
        (t, ours[t], s) for t, s in compared.items() if t in ours and t not in within
    )
    share = 100.0 * len(within) / max(len(compared), 1)
    print(f"{len(within)}/{len(compared)} of MNN's non-zero scales within 1% ({share:.1f}%)")
    if missing:
        print(f"missing in ours: {missing}")
    for tensor, our_scale, mnn_scale in others:
        print(f"  tensor {tensor}: ours {our_scale:.6g}, MNN {mnn_scale:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
