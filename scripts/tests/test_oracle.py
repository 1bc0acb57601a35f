"""Checks of the oracle scripts against the fixtures and against figures worked out by hand.

Run: .venv/bin/python -m unittest discover -s scripts/tests -v
Tests that need the fixtures print a line starting with SKIPPED: and pass when they are missing.
"""

from __future__ import annotations

import json
import sys
import unittest
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SCRIPTS))

import fidelity  # noqa: E402
from oracle_common import REPO_ROOT, MnnSession, QuantizerPreprocess, fixtures_dir, load_quant_config  # noqa: E402

CONFORMANCE = REPO_ROOT / "crates" / "mnnq-engine" / "tests" / "conformance"


def fixtures_or_skip(test: unittest.TestCase) -> Path:
    root = fixtures_dir()
    if not (root / "README.md").is_file():
        print(f"SKIPPED: fixtures not found at {root} (set MNNQ_FIXTURES)")
        test.skipTest("fixtures missing")
    return root


class MetricsByHand(unittest.TestCase):
    def test_cosine_and_errors(self):
        a = np.array([[3.0, 4.0]], np.float32)
        b = np.array([[4.0, 3.0]], np.float32)
        record = fidelity.compare_outputs("y", a, b)
        self.assertAlmostEqual(record["cos"], 24.0 / 25.0, places=6)
        self.assertAlmostEqual(record["mean_abs_err"], 1.0)
        self.assertAlmostEqual(record["max_abs_err"], 1.0)
        self.assertEqual(record["float_top1"], 1)
        self.assertEqual(record["quant_top1"], 0)

    def test_all_zero_output_has_no_cosine(self):
        zeros = np.zeros((1, 1, 2, 2), np.float32)
        ones = np.ones((1, 1, 2, 2), np.float32)
        record = fidelity.compare_outputs("map", ones, zeros)
        self.assertIsNone(record["cos"])
        summary = fidelity.summarize("map", [record, fidelity.compare_outputs("map", ones, ones)])
        self.assertEqual(summary["images_without_cos"], 1)
        self.assertAlmostEqual(summary["mean_cos"], 1.0)

    def test_map_iou(self):
        float_map = np.array([[[[0.9, 0.9], [0.1, 0.0]]]], np.float32)
        quant_map = np.array([[[[0.9, 0.2], [0.5, 0.0]]]], np.float32)
        record = fidelity.compare_outputs("map", float_map, quant_map)
        # above 0.3: float {(0,0), (0,1)}, quant {(0,0), (1,0)} -> 1 shared of 3
        self.assertAlmostEqual(record["iou"], 1.0 / 3.0)
        empty = fidelity.compare_outputs("map", np.zeros_like(float_map), np.zeros_like(float_map))
        self.assertIsNone(empty["iou"])
        summary = fidelity.summarize("map", [record, empty])
        self.assertAlmostEqual(summary["iou_at_0.3"], 1.0 / 3.0)  # the empty image is left out

    def test_top5_overlap(self):
        f = np.arange(10, dtype=np.float32)[None, :]  # top-5 = 9, 8, 7, 6, 5
        q = f.copy()
        q[0, 5] = -1.0  # 5 drops out, 4 comes in
        q[0, 9] = 0.5  # the top-1 changes as well
        record = fidelity.compare_outputs("logits", f, q)
        summary = fidelity.summarize("classifier", [record])
        self.assertEqual(summary["top1_agreement_pct"], 0.0)
        self.assertAlmostEqual(summary["top5_overlap_mean"], 3.0 / 5.0)
        self.assertEqual(summary["float_top1_in_quant_top5_pct"], 0.0)


class AgainstFixtures(unittest.TestCase):
    def test_preprocess_reproduces_mnn_golden_samples(self):
        root = fixtures_or_skip(self)
        manifest = json.loads((root / "golden" / "preprocess" / "manifest.json").read_text())
        for entry in manifest:
            config = load_quant_config(root / entry["config"])
            tensor = QuantizerPreprocess(config)(root / entry["image"])
            channels = tensor.shape[1]
            mean = np.array((config["mean"] + [0.0] * 4)[:channels], np.float32).reshape(1, -1, 1, 1)
            normal = np.array((config["normal"] + [1.0] * 4)[:channels], np.float32).reshape(1, -1, 1, 1)
            samples = np.round(tensor / normal + mean)
            reference = np.load(root / entry["output"]).astype(np.float32)
            # the same MNN code made the reference, so every sample must agree
            np.testing.assert_array_equal(samples, reference, err_msg=entry["image"])

    def test_session_reproduces_golden_float_outputs(self):
        root = fixtures_or_skip(self)
        for model in ("efficientnet_lite0", "ppocr_cls_v2"):
            manifest = json.loads((root / "golden" / model / "manifest.json").read_text())
            session = MnnSession(root / manifest["model"], threads=1)
            for sample in manifest["samples"]:
                x = np.fromfile(root / "golden" / model / sample["input"]["file"], np.float32)
                outputs = session.infer({manifest["input_name"]: x.reshape(sample["input"]["shape"])})
                for out in sample["outputs"]:
                    ref = np.fromfile(root / "golden" / model / out["file"], np.float32).reshape(out["shape"])
                    np.testing.assert_allclose(outputs[out["name"]], ref, rtol=0, atol=1e-6)


class ConformanceData(unittest.TestCase):
    def test_cases_are_complete_and_reproduce_in_mnn(self):
        index_path = CONFORMANCE / "index.json"
        if not index_path.is_file():
            print(f"SKIPPED: no conformance cases at {CONFORMANCE}")
            self.skipTest("no cases")
        index = json.loads(index_path.read_text())
        self.assertGreater(len(index["cases"]), 300)
        names = sorted(index["cases"])
        for position, name in enumerate(names):
            case = json.loads((CONFORMANCE / name / "case.json").read_text())
            feeds = {}
            for spec in case["inputs"]:
                value = np.load(CONFORMANCE / name / spec["file"])
                self.assertEqual(list(value.shape), spec["shape"], name)
                self.assertEqual(value.dtype, np.float32, name)
                feeds[spec["name"]] = value
            expected = {}
            for spec in case["outputs"]:
                value = np.load(CONFORMANCE / name / spec["file"])
                self.assertEqual(list(value.shape), spec["shape"], name)
                expected[spec["name"]] = value
            # rerunning every case would be slow; every 7th session case is rerun bit-exactly
            if case["runner"] == "session" and position % 7 == 0:
                outputs = MnnSession(CONFORMANCE / name / "model.mnn").infer(feeds)
                for key, value in expected.items():
                    np.testing.assert_array_equal(outputs[key].astype(np.float32), value, err_msg=name)


if __name__ == "__main__":
    unittest.main()
