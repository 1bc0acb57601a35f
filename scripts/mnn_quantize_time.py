#!/usr/bin/env python3
"""Time MNN's own quantization tool (quantized.out, via `_tools.mnnquant`) on a model and config.

The tool runs in-process with the config's folder as working directory, so the config's relative
image `path` resolves the way it does for quantized.out. (The shared fixtures' configs use paths
relative to the fixtures root, e.g. `images/calib/`; when the path does not exist next to the
config, the config folder's parent is used instead, or give --workdir.) The quantized model is
written to a temporary folder by absolute path and deleted afterwards unless --keep DIR is given;
nothing is written next to the inputs. Prints the wall time, the CPU time of this process during
the call, and the sha256 of the written model (and whether it equals a reference file).

Example (fixtures):
  .venv/bin/python scripts/mnn_quantize_time.py models/ppocr_cls_v2.mnn configs/ppocr_cls_v2.json \\
      --expect mnn_int8/ppocr_cls_v2/KL_MAX_ABS.mnn
(relative paths are looked up in the current directory, then in the fixtures folder.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import OracleError, captured_native_output, fixtures_dir, load_quant_config  # noqa: E402


def resolve_file(path: str, what: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p.resolve()
    alt = fixtures_dir() / path
    if not p.is_absolute() and alt.is_file():
        return alt.resolve()
    raise OracleError(f"{what} not found: {path} (also looked in {fixtures_dir()})")


def working_directory(config_path: Path, config: dict, override: str | None) -> Path:
    image_path = config.get("path")
    if not isinstance(image_path, str) or not image_path:
        raise OracleError(f"{config_path}: no image 'path' (quantized.out needs one)")
    if override:
        workdir = Path(override).resolve()
        if not (workdir / image_path).is_dir():
            raise OracleError(f"--workdir {workdir}: the config's path {image_path!r} is not a folder there")
        return workdir
    if Path(image_path).is_absolute():
        if not Path(image_path).is_dir():
            raise OracleError(f"{config_path}: image path {image_path} is not a folder")
        return config_path.parent
    for candidate in (config_path.parent, config_path.parent.parent):
        if (candidate / image_path).is_dir():
            return candidate
    raise OracleError(f"{config_path}: image path {image_path!r} is neither under {config_path.parent} "
                      f"nor under {config_path.parent.parent}; give --workdir")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def quantize_once(source: Path, config: Path, workdir: Path, destination: Path) -> tuple[float, float, str]:
    """Runs the tool once; returns (wall seconds, CPU seconds of this process, log)."""
    with captured_native_output():
        import _tools  # the mnn wheel's entry points; loading it prints a CPU feature line
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        with captured_native_output() as log:
            start = time.perf_counter()
            _tools.mnnquant(["quantized.out", str(source), str(destination), str(config)])
            wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.chdir(previous)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, log[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="SRC.mnn", help="the float model")
    parser.add_argument("config", metavar="CONFIG.json", help="quantized.out config")
    parser.add_argument("--workdir", help="working directory for the tool (default: see above)")
    parser.add_argument("--repeat", type=int, default=1, help="run the tool N times (default 1)")
    parser.add_argument("--keep", metavar="DIR", help="copy the quantized model (and its .json) into DIR")
    parser.add_argument("--expect", metavar="REF.mnn", help="compare the output bytes with this file")
    parser.add_argument("--log", action="store_true", help="print the tool's own output")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for option in (args.keep, args.json):
        if option and str(Path(option).resolve()).startswith("/work/shared"):
            parser.error("refusing to write into /work/shared (read-only fixtures)")

    try:
        source = resolve_file(args.model, "model")
        config_path = resolve_file(args.config, "config")
        config = load_quant_config(config_path)
        workdir = working_directory(config_path, config, args.workdir)
        expect = resolve_file(args.expect, "reference model") if args.expect else None
        images = workdir / config["path"]
        print(f"model   {source}\nconfig  {config_path} ({config.get('feature_quantize_method', 'KL')} + "
              f"{config.get('weight_quantize_method', 'MAX_ABS')}, {len(list(images.iterdir()))} entries in "
              f"{config['path']})\nworkdir {workdir}")
        walls, cpus, digests = [], [], []
        with tempfile.TemporaryDirectory(prefix="mnnquant-") as tmp:
            destination = Path(tmp) / "quantized.mnn"
            for attempt in range(args.repeat):
                if destination.exists():
                    destination.unlink()
                wall, cpu, log = quantize_once(source, config_path, workdir, destination)
                if args.log:
                    print(log.rstrip())
                if not destination.is_file() or destination.stat().st_size == 0:
                    tail = "\n".join(log.strip().splitlines()[-15:])
                    raise OracleError(f"quantized.out wrote no model (it exits 0 even on errors); "
                                      f"its output ended with:\n{tail}")
                walls.append(wall)
                cpus.append(cpu)
                digests.append(sha256(destination))
                print(f"run {attempt + 1}: wall {wall:.2f} s, CPU {cpu:.2f} s, "
                      f"{destination.stat().st_size} bytes, sha256 {digests[-1][:16]}")
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(destination, keep / f"{source.stem}_mnn_quant.mnn")
                scales = Path(str(destination) + ".json")
                if scales.is_file():
                    shutil.copyfile(scales, keep / f"{source.stem}_mnn_quant.mnn.json")
                print(f"kept in {keep}")
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    load = os.getloadavg()
    print(f"quantized.out wall time: median {statistics.median(walls):.2f} s (min {min(walls):.2f} s, "
          f"{len(walls)} run(s)); CPU {statistics.median(cpus):.2f} s; load average {load[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    identical = None
    if expect is not None:
        identical = all(d == sha256(expect) for d in digests)
        print(f"output {'is byte-identical to' if identical else 'DIFFERS from'} {expect}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": str(source), "config": str(config_path), "workdir": str(workdir),
                       "wall_seconds": walls, "cpu_seconds": cpus, "sha256": digests,
                       "identical_to_expected": identical, "load_average": load}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
