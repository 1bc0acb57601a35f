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


# --------------------------------------------------------------------------------------------
# Preprocessing exactly as MNN's quantization tool does it (quantized.out)
# --------------------------------------------------------------------------------------------

QUANT_CONFIG_CHANNELS = {"RGB": 3, "BGR": 3, "GRAY": 1, "RGBA": 4, "BGRA": 4}


def load_quant_config(path: str | Path) -> dict:
    """Reads a quantized.out config and checks the fields the preprocessing needs."""
    p = require_file(path, "config")
    try:
        with open(p, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise OracleError(f"{p}: not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise OracleError(f"{p}: expected a JSON object")
    fmt = config.get("format", "BGR")
    if fmt not in QUANT_CONFIG_CHANNELS:
        # quantized.out silently falls back to BGR; we would rather say so
        raise OracleError(f"{p}: format {fmt!r} is not one of {sorted(QUANT_CONFIG_CHANNELS)}")
    for key in ("width", "height"):
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise OracleError(f"{p}: '{key}' must be a positive integer")
    for key in ("mean", "normal"):
        value = config.get(key, [0.0] * 4 if key == "mean" else [1.0] * 4)
        if not isinstance(value, list) or not value or len(value) > 4:
            raise OracleError(f"{p}: '{key}' must be a list of 1 to 4 numbers")
    return config


class QuantizerPreprocess:
    """Turns an image file into the network input the way quantized.out does: decode to RGBA,
    corner-aligned bilinear stretch to width x height (setPolyToPoly, no aspect ratio kept, no
    crop unless center_crop_* is set), RGBA -> format, (v - mean) * normal, NCHW float32."""

    def __init__(self, config: dict):
        mnn = import_mnn()
        self.mnn = mnn
        self.width = config["width"]
        self.height = config["height"]
        self.format = config.get("format", "BGR")
        self.channels = QUANT_CONFIG_CHANNELS[self.format]
        self.crop_h = float(config.get("center_crop_h", 1.0))
        self.crop_w = float(config.get("center_crop_w", 1.0))
        mean = [float(v) for v in config.get("mean", [])] + [0.0] * 4
        normal = [float(v) for v in config.get("normal", [])] + [1.0] * 4
        self.process = mnn.CVImageProcess({
            "filterType": mnn.CV_Filter_BILINEAL,
            "sourceFormat": mnn.CV_ImageFormat_RGBA,
            "destFormat": getattr(mnn, f"CV_ImageFormat_{self.format}"),
            "mean": tuple(mean[:4]),
            "normal": tuple(normal[:4]),
            "wrap": mnn.CV_Wrap_CLAMP_TO_EDGE,
        })

    def decode_rgba(self, image_path: Path) -> np.ndarray:
        """8-bit RGBA pixels from MNN's own stb_image-based decoder (gray expands to R=G=B)."""
        cv = self.mnn.cv
        with captured_native_output():
            image = cv.imread(str(image_path))
        pixels = np.array(image.read(), dtype=np.uint8) if image is not None else None
        if pixels is None or pixels.ndim != 3 or pixels.size == 0:
            raise OracleError(f"{image_path}: MNN cannot decode this image")
        bgr = pixels[:, :, :3]
        alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
        return np.ascontiguousarray(np.concatenate([bgr[:, :, ::-1], alpha], axis=2))

    def __call__(self, image_path: str | Path) -> np.ndarray:
        mnn = self.mnn
        rgba = self.decode_rgba(Path(image_path))
        src_h, src_w = rgba.shape[:2]
        crop_h, crop_w = int(src_h * self.crop_h), int(src_w * self.crop_w)
        y0, x0 = (src_h - crop_h) // 2, (src_w - crop_w) // 2
        y1, x1 = y0 + crop_h, x0 + crop_w
        ow, oh = self.width, self.height
        # the matrix maps destination pixel centres onto source pixel centres, corners to corners
        destination = [0.0, 0.0, 0.0, oh - 1.0, ow - 1.0, 0.0, ow - 1.0, oh - 1.0]
        source = [float(x0), float(y0), float(x0), y1 - 1.0, x1 - 1.0, float(y0), x1 - 1.0, y1 - 1.0]
        matrix = mnn.CVMatrix()
        matrix.setPolyToPoly(destination, source)
        self.process.setMatrix(matrix)
        shape = (1, self.channels, oh, ow)
        tensor = mnn.Tensor(shape, mnn.Halide_Type_Float, np.zeros(shape, np.float32),
                            mnn.Tensor_DimensionType_Caffe)
        # MNN's Python binding insists the source array holds at least as many elements as the
        # destination tensor (a sanity check meant for same-size copies); pad the flat buffer,
        # the stride (4 * width) keeps the padding out of reach
        needed = max(rgba.size, int(np.prod(shape)))
        flat = np.zeros(needed, np.uint8)
        flat[:rgba.size] = rgba.reshape(-1)
        code = self.process.convert(flat, src_w, src_h, 4 * src_w, tensor)
        if code not in (0, None):
            raise OracleError(f"{image_path}: MNN ImageProcess.convert failed (code {code})")
        return np.array(tensor.getNumpyData(), dtype=np.float32).reshape(shape)
