#!/usr/bin/env python3
"""Time our `mnnq bench` against the real MNN and ONNX Runtime in one run.

For every thread count this times
  MNN     MNN.Interpreter session on the CPU backend (numThread = N, precision normal), input
          copied in once, `runSession` timed
  ORT     one onnxruntime.InferenceSession per model (intra_op_num_threads = N, inter_op 1, all
          graph optimisations), inputs and outputs bound once with IOBinding, `run_with_iobinding`
          timed
  mnnq    `BINARY bench MODEL --threads N --json --iterations RUNS` (it prints JSON with
          `median_ms`); if that fails (not built, not implemented yet) the table says so and the
          others are still timed
Each timing does at least --warmup-seconds of untimed runs first, then RUNS timed runs; the table
shows medians in ms and the ratios ours/MNN and ours/ORT (below 1 = we are faster).

Modes:
  bench_peers.py [--mnnq BIN] MODEL.mnn [--onnx M.onnx] [--ort-int8 Q.onnx] [--threads 1,2]
  bench_peers.py [--mnnq BIN] --pair FLOAT.mnn INT8.mnn [--onnx M.onnx] [--ort-int8 Q.onnx]
In --pair mode the float row compares with ORT on the float ONNX model and the int8 row with ORT
on its int8 peer. Models inside the fixtures folder find their peers by themselves:
models/<m>.onnx (float) and peers/<m>_ort_int8.onnx (ONNX Runtime's own int8 QDQ model); an MNN
model under mnn_int8/<m>/ counts as int8. In single-model mode an int8 ORT peer, if known, gets a
row of its own ("ORT int8 peer").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import REPO_ROOT, MnnSession, OracleError, fixtures_dir  # noqa: E402

DEFAULT_MNNQ = REPO_ROOT / "target" / "release" / "mnnq"


def timed_runs(run_once, warmup_seconds: float, runs: int) -> list[float]:
    """Warm up for at least warmup_seconds (and 3 runs), then time `runs` calls; ms each."""
    start = time.perf_counter()
    done = 0
    while done < 3 or time.perf_counter() - start < warmup_seconds:
        run_once()
        done += 1
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def model_inputs(session: MnnSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded values in [-1, 1] in the model's declared input shapes (what images normalise to)."""
    rng = np.random.RandomState(seed)
    feeds = {}
    for name in session.input_names:
        shape = session.input_shape(name)
        if any(d <= 0 for d in shape):
            raise OracleError(f"{session.path}: input {name!r} has no fixed shape {shape}; "
                              "benchmarks need fixed input shapes")
        feeds[name] = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def time_mnn(model: Path, threads: int, warmup: float, runs: int) -> dict:
    session = MnnSession(model, threads=threads)
    session.set_inputs(model_inputs(session))
    times = timed_runs(session.run, warmup, runs)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def time_ort(model: Path, threads: int, warmup: float, runs: int, feeds_like: dict) -> dict:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise OracleError(f"cannot import onnxruntime ({err}); run scripts/setup-venv.sh") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several exception types
        raise OracleError(f"ONNX Runtime cannot load {model}: {err}") from err
    ort_inputs = session.get_inputs()
    mnn_values = list(feeds_like.values())
    feeds = {}
    for index, spec in enumerate(ort_inputs):
        value = feeds_like.get(spec.name)
        if value is None and index < len(mnn_values):
            value = mnn_values[index]  # same position, other name
        shape = [d if isinstance(d, int) else None for d in spec.shape]
        if value is None or (None not in shape and list(value.shape) != shape):
            raise OracleError(f"{model}: input {spec.name!r} {spec.shape} does not match the MNN "
                              f"model's inputs {[(k, v.shape) for k, v in feeds_like.items()]}")
        feeds[spec.name] = value
    output_names = [o.name for o in session.get_outputs()]
    first = session.run(output_names, feeds)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    kept_outputs = [np.empty_like(o) for o in first]
    for name, buffer in zip(output_names, kept_outputs):
        binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
    times = timed_runs(lambda: session.run_with_iobinding(binding), warmup, runs)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def time_mnnq(binary: Path | None, model: Path, threads: int, runs: int) -> dict:
    """Our own bench; returns {'median_ms': ...} or {'error': why}."""
    if binary is None:
        return {"error": "no mnnq binary (build it: cargo build --release -p mnnq-cli, or pass --mnnq)"}
    command = [str(binary), "bench", str(model), "--threads", str(threads), "--json",
               "--iterations", str(runs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 and "--iterations" in done.stderr:
            # an mnnq without --iterations: fall back to the documented minimum
            done = subprocess.run(command[:-2], capture_output=True, text=True, timeout=1800)
    except OSError as err:
        return {"error": f"cannot run {binary}: {err}"}
    except subprocess.TimeoutExpired:
        return {"error": "mnnq bench took longer than 30 minutes"}
    report = None
    for line in reversed(done.stdout.strip().splitlines() or [""]):
        try:
            candidate = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(candidate, dict) and "median_ms" in candidate:
            report = candidate
            break
    if report is None:
        try:  # the whole stdout may be one pretty-printed JSON object
            candidate = json.loads(done.stdout)
            if isinstance(candidate, dict) and "median_ms" in candidate:
                report = candidate
        except json.JSONDecodeError:
            pass
    if done.returncode != 0 or report is None:
        why = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}")
        return {"error": f"`mnnq bench` gave no median_ms: {why.splitlines()[-1][:200]}"}
    figures = {"median_ms": float(report["median_ms"]), "report": report}
    if isinstance(report.get("min_ms"), (int, float)):
        figures["min_ms"] = float(report["min_ms"])
    return figures


def fixture_peers(model: Path) -> tuple[str, Path | None, Path | None]:
    """(precision, float ONNX peer, int8 ORT peer) for a model inside the fixtures folder."""
    fixtures = fixtures_dir().resolve()
    path = model.resolve()
    precision = "float"
    stem = path.stem
    try:
        relative = path.relative_to(fixtures)
    except ValueError:
        relative = None
    if relative is not None and relative.parts[0] == "mnn_int8" and len(relative.parts) >= 3:
        precision = "int8"
        stem = relative.parts[1]
    float_peer = fixtures / "models" / f"{stem}.onnx"
    int8_peer = fixtures / "peers" / f"{stem}_ort_int8.onnx"
    if relative is None:  # outside the fixtures: peers next to the model, if any
        float_peer = path.with_suffix(".onnx")
        int8_peer = path.with_name(f"{stem}_ort_int8.onnx")
    return (precision, float_peer if float_peer.is_file() else None,
            int8_peer if int8_peer.is_file() else None)


def ratio(ours, theirs):
    if ours is None or theirs is None:
        return None
    return ours / theirs


def cell(value, spec="8.2f"):
    return format(value, spec) if isinstance(value, float) else format("-", ">" + spec.split(".")[0])


def existing(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        alt = fixtures_dir() / path
        if not p.is_absolute() and alt.is_file():
            return alt
        raise OracleError(f"{what} not found: {path}")
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", metavar="MODEL.mnn", help="the model to time")
    parser.add_argument("--pair", nargs=2, metavar=("FLOAT.mnn", "INT8.mnn"),
                        help="time a float model and its int8 model side by side")
    parser.add_argument("--mnnq", metavar="BINARY",
                        help=f"our mnnq binary (default {DEFAULT_MNNQ.relative_to(REPO_ROOT)} if built)")
    parser.add_argument("--onnx", metavar="MODEL.onnx", help="the float ONNX peer for ONNX Runtime")
    parser.add_argument("--ort-int8", metavar="MODEL.onnx", help="an int8 ONNX peer for ONNX Runtime")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement (default 50)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0,
                        help="untimed warm-up per measurement, at least 1 s (default 1.0)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="what the table shows (default median; min is steadier on a busy machine, "
                        "mnnq's JSON is read for min_ms when present)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    if bool(args.model) == bool(args.pair):
        parser.error("give either MODEL.mnn or --pair FLOAT.mnn INT8.mnn")
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads {args.threads!r}: expected numbers like 1,2")
    if not threads or min(threads) < 1:
        parser.error("--threads needs positive thread counts")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup_seconds < 1.0:
        parser.error("--warmup-seconds must be at least 1 (ONNX Runtime needs it to settle)")
    if args.json and str(Path(args.json).resolve()).startswith("/work/shared"):
        parser.error("refusing to write into /work/shared (read-only fixtures)")

    sys.stdout.reconfigure(line_buffering=True)  # keep the table and stderr progress in order
    try:
        if args.mnnq:
            mnnq = Path(args.mnnq)
            if not mnnq.is_file():
                found = shutil.which(args.mnnq)
                if not found:
                    raise OracleError(f"--mnnq {args.mnnq}: no such file")
                mnnq = Path(found)
        else:
            mnnq = DEFAULT_MNNQ if DEFAULT_MNNQ.is_file() else None

        # rows: (label, mnn model or None, ort model or None)
        rows = []
        if args.pair:
            float_mnn = existing(args.pair[0], "float model")
            int8_mnn = existing(args.pair[1], "int8 model")
            _, float_peer, int8_peer = fixture_peers(float_mnn)
            _, _, int8_peer_of_int8 = fixture_peers(int8_mnn)
            float_peer = existing(args.onnx, "ONNX model") or float_peer
            int8_peer = existing(args.ort_int8, "ONNX int8 model") or int8_peer or int8_peer_of_int8
            rows = [("float", float_mnn, float_peer), ("int8", int8_mnn, int8_peer)]
        else:
            model = existing(args.model, "model")
            precision, float_peer, int8_peer = fixture_peers(model)
            float_peer = existing(args.onnx, "ONNX model") or float_peer
            int8_peer = existing(args.ort_int8, "ONNX int8 model") or int8_peer
            if precision == "int8":
                rows = [("int8", model, int8_peer)]
            else:
                rows = [("float", model, float_peer)]
                if int8_peer is not None:
                    rows.append(("ORT int8 peer", None, int8_peer))

        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs "
              f"(other jobs on the machine skew timings)")
        print(f"mnnq: {mnnq if mnnq else 'not built'}")
        for label, mnn_model, ort_model in rows:
            print(f"{label:>13}: MNN {mnn_model or '-'} | ORT {ort_model or '-'}")
        results = []
        mnnq_notes = set()
        for label, mnn_model, ort_model in rows:
            inputs_like = None
            for n in threads:
                entry = {"variant": label, "threads": n, "mnn_model": str(mnn_model) if mnn_model else None,
                         "ort_model": str(ort_model) if ort_model else None}
                if mnn_model is not None:
                    entry["mnn"] = time_mnn(mnn_model, n, args.warmup_seconds, args.runs)
                    ours = time_mnnq(mnnq, mnn_model, n, args.runs)
                    entry["mnnq"] = ours
                    if "error" in ours:
                        mnnq_notes.add(ours["error"])
                    if inputs_like is None:
                        inputs_like = model_inputs(MnnSession(mnn_model, threads=1))
                if ort_model is not None:
                    if inputs_like is None:  # ORT-only row: take shapes from the float MNN model
                        inputs_like = model_inputs(MnnSession(rows[0][1], threads=1))
                    entry["ort"] = time_ort(ort_model, n, args.warmup_seconds, args.runs, inputs_like)
                results.append(entry)
                print(f"  timed {label} with {n} thread(s)", file=sys.stderr, flush=True)
    except OracleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    key = f"{args.stat}_ms"
    header = f"{'variant':>13} {'threads':>7} {'MNN ms':>8} {'ORT ms':>8} {'mnnq ms':>8} {'mnnq/MNN':>9} {'mnnq/ORT':>9}"
    print()
    print(header)
    print("-" * len(header))
    for entry in results:
        mnn_ms = entry.get("mnn", {}).get(key)
        ort_ms = entry.get("ort", {}).get(key)
        ours_ms = entry.get("mnnq", {}).get(key)
        print(f"{entry['variant']:>13} {entry['threads']:>7} {cell(mnn_ms)} {cell(ort_ms)} {cell(ours_ms)} "
              f"{cell(ratio(ours_ms, mnn_ms), '9.2f')} {cell(ratio(ours_ms, ort_ms), '9.2f')}")
    for note in sorted(mnnq_notes):
        print(f"mnnq not timed: {note}")
    print(f"({args.stat}s of {args.runs} runs after >= {args.warmup_seconds:g} s warm-up; ratio < 1 means mnnq is faster)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"runs": args.runs, "warmup_seconds": args.warmup_seconds, "load_average": load,
                       "results": results}, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
