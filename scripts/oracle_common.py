"""Shared helpers for the scripts that drive the real MNN (our oracle) from Python.

Rules these helpers enforce for every script:
- MNN's converter and quantizer are called through `_tools` (never the console scripts, which call a
  telemetry client);
- models run with `MNN.Interpreter` sessions on the CPU backend, precision "normal" (fp32 here);
- MNN's C++ code prints to the process's stdout/stderr directly, so noisy calls are wrapped in
  `captured_native_output()`, which keeps the text for error messages instead of flooding the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = REPO_ROOT.parent.parent / "shared" / "fixtures"


class OracleError(RuntimeError):
    """A problem the user can fix (missing file, bad argument, MNN refusing a model)."""


def fixtures_dir() -> Path:
    """The read-only fixtures folder: $MNNQ_FIXTURES, else ../shared/fixtures next to the workspace."""
    env = os.environ.get("MNNQ_FIXTURES")
    if env:
        return Path(env)
    for candidate in (DEFAULT_FIXTURES, Path("/work/shared/fixtures")):
        if candidate.is_dir():
            return candidate
    return DEFAULT_FIXTURES


def import_mnn():
    """Import the MNN Python package with an error that says how to get it."""
    try:
        with captured_native_output():  # MNN prints its CPU feature line on import
            import MNN  # noqa: N813 (package name)
    except ImportError as err:
        raise OracleError(
            f"cannot import MNN ({err}); run scripts/setup-venv.sh and use .venv/bin/python"
        ) from err
    return MNN


@contextlib.contextmanager
def captured_native_output():
    """Redirect file descriptors 1 and 2 (C++ prints) into a temp file; yields a list that receives
    the captured text when the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    captured: list[str] = []
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise OracleError(f"{what} not found: {p}")
    return p


def convert_onnx_to_mnn(onnx_path: Path, mnn_path: Path) -> str:
    """Run MNN's converter in-process; returns its log. Raises OracleError when it fails."""
    with captured_native_output():  # the native library prints its CPU feature line on load
        import _tools  # installed with the mnn wheel

    args = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path),
            "--MNNModel", str(mnn_path), "--bizCode", "mnnq"]
    with captured_native_output() as log:
        ok = _tools.mnnconvert(args)
    text = log[0]
    if not ok or not mnn_path.is_file() or "Converted Success" not in text:
        raise OracleError(f"MNN converter failed on {onnx_path}:\n{text.strip()[-2000:]}")
    return text


def dump_mnn_json(mnn_path: Path) -> dict:
    """The whole Net as JSON, written by MNN's converter (-f MNN --JsonFile)."""
    import _tools

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "net.json"
        with captured_native_output() as log:
            _tools.mnnconvert(["mnnconvert", "-f", "MNN", "--modelFile", str(mnn_path),
                               "--JsonFile", str(out)])
        if not out.is_file():
            raise OracleError(f"cannot dump {mnn_path} to JSON:\n{log[0].strip()[-2000:]}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


class MnnSession:
    """One MNN Interpreter + Session on the CPU backend (precision normal, fp32 here)."""

    def __init__(self, model_path: str | Path, threads: int = 1):
        mnn = import_mnn()
        self.mnn = mnn
        self.path = require_file(model_path, "MNN model")
        with captured_native_output() as log:
            try:
                self.interpreter = mnn.Interpreter(str(self.path))
                self.session = self.interpreter.createSession(
                    {"backend": "CPU", "numThread": threads, "precision": "normal"})
            except Exception as err:  # MNN raises plain Exception
                failure = err
            else:
                failure = None
        if failure is not None:
            raise OracleError(f"MNN cannot open {self.path}: {failure}\n{log[0].strip()[-1000:]}")
        self.input_names = list(self.interpreter.getSessionInputAll(self.session).keys())
        self.output_names = list(self.interpreter.getSessionOutputAll(self.session).keys())

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.interpreter.getSessionInput(self.session, name).getShape())

    def set_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        """Resize the inputs to the given arrays' shapes (if needed) and copy the data in."""
        mnn = self.mnn
        resized = False
        for name, value in feeds.items():
            if name not in self.input_names:
                raise OracleError(f"{self.path}: no input named {name!r} (inputs: {self.input_names})")
            tensor = self.interpreter.getSessionInput(self.session, name)
            if tuple(tensor.getShape()) != tuple(value.shape):
                self.interpreter.resizeTensor(tensor, tuple(value.shape))
                resized = True
        if resized:
            self.interpreter.resizeSession(self.session)
        for name, value in feeds.items():
            tensor = self.interpreter.getSessionInput(self.session, name)
            host = mnn.Tensor(tuple(value.shape), mnn.Halide_Type_Float,
                              np.ascontiguousarray(value, dtype=np.float32),
                              mnn.Tensor_DimensionType_Caffe)
            tensor.copyFrom(host)

    def run(self) -> None:
        self.interpreter.runSession(self.session)

    def run_with_op_trace(self) -> list[str]:
        """Run once and return the op types MNN executed (after its geometry transform)."""
        executed: list[str] = []

        def before(_tensors, info):
            executed.append(info.getType())
            return True

        def after(_tensors, _info):
            return True

        self.interpreter.runSessionWithCallBackInfo(self.session, before, after)
        return executed

    def outputs(self) -> dict[str, np.ndarray]:
        """Every output copied to the host in NCHW (Caffe) order, int outputs as int32."""
        mnn = self.mnn
        result = {}
        for name in self.output_names:
            tensor = self.interpreter.getSessionOutput(self.session, name)
            shape = tuple(tensor.getShape())
            dtype_code = tensor.getDataType()
            if dtype_code == mnn.Halide_Type_Float:
                halide, np_dtype = mnn.Halide_Type_Float, np.float32
            elif dtype_code == mnn.Halide_Type_Uint8:
                halide, np_dtype = mnn.Halide_Type_Uint8, np.uint8
            else:
                halide, np_dtype = mnn.Halide_Type_Int, np.int32
            host = mnn.Tensor(shape, halide, np.zeros(shape, np_dtype), mnn.Tensor_DimensionType_Caffe)
            tensor.copyToHostTensor(host)
            result[name] = np.array(host.getNumpyData(), dtype=np_dtype).reshape(shape)
        return result

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.set_inputs(feeds)
        self.run()
        return self.outputs()
