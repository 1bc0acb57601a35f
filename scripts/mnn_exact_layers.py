"""Per-op bit-exactness of our float engine against the real MNN (issue #5, MNN-exact mode).

Usage: python mnn_exact_layers.py MODEL.mnn INPUT.bin OUR_DUMP_DIR [--save-mnn DIR]

OUR_DUMP_DIR is written by `cargo run --release -p mnnq-engine --example dump MODEL INPUT.bin DIR`
(run it with the environment of the mode under test, e.g. MNNQ_MNN_EXACT=1). The script runs MNN
with a per-op callback, copies every op output to the host in NCHW order, maps op names to tensor
names through the model's JSON, and prints, in MNN's execution order, each tensor's max abs
difference, the number of differing elements and the ulp distance; the first tensor that is not
bit-identical is marked.
"""
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_common import MnnSession, dump_mnn_json  # noqa: E402


def mnn_op_outputs(model: Path, x: np.ndarray):
    net = dump_mnn_json(model)
    names = net["tensorName"]
    op_outputs = {op.get("name", ""): [names[i] for i in op.get("outputIndexes", [])]
                  for op in net["oplists"]}
    s = MnnSession(model)
    s.set_inputs({s.input_names[0]: x})
    mnn = s.mnn
    got, order = {}, []

    def begin(_ts, _op):
        return True

    def end(ts, op):
        # MNN's geometry pass renames some ops (`<name>_raster_0`); a broadcast Raster in front
        # of a BinaryOp then shares the BinaryOp's name, and the later (real) output wins.
        outs = op_outputs.get(re.sub(r"_raster_\d+$", "", op.getName()), [])
        for i, t in enumerate(ts):
            if i >= len(outs):
                break
            try:
                shape = t.getShape()
                host = mnn.Tensor(shape, mnn.Halide_Type_Float,
                                  np.zeros(shape, np.float32), mnn.Tensor_DimensionType_Caffe)
                t.copyToHostTensor(host)
                got[outs[i]] = np.array(host.getNumpyData(), dtype=np.float32).reshape(shape).copy()
                order[:] = [entry for entry in order if entry[0] != outs[i]]
                order.append((outs[i], op.getType()))
            except Exception:  # non-float tensors
                pass
        return True

    s.interpreter.runSessionWithCallBackInfo(s.session, begin, end)
    return got, order


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int(np.abs(ia - ib).max()) if ia.size else 0


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    model, inp, ours = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    save = Path(sys.argv[sys.argv.index("--save-mnn") + 1]) if "--save-mnn" in sys.argv else None
    index = ours / "index.txt"
    if not index.is_file():
        sys.exit(f"{index}: not found (write it with the engine's `dump` example)")
    mine = {}
    for line in index.read_text().splitlines():
        f, name, shape = line.split("\t")
        shape = tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
        mine[name] = (ours / f, shape)
    # The dump lists the model input first.
    input_shape = next(iter(mine.values()))[1]
    x = np.fromfile(inp, dtype=np.float32)
    if x.size != int(np.prod(input_shape)):
        sys.exit(f"{inp}: {x.size} floats, the model input {input_shape} needs {np.prod(input_shape)}")
    x = x.reshape(input_shape)
    got, order = mnn_op_outputs(model, x)
    first = None
    print(f"{'tensor':40s} {'op':22s} {'max|d|':>10s} {'differ':>9s} {'ulps':>8s} {'max|ref|':>9s}")
    for name, ty in order:
        if name not in mine:
            print(f"{name:40s} {ty:22s} (not dumped by us)")
            continue
        ref = got[name].ravel()
        a = np.fromfile(mine[name][0], dtype=np.float32)
        if a.size != ref.size:
            print(f"{name:40s} {ty:22s} size {a.size} vs {ref.size}")
            continue
        differ = int((a.view(np.int32) != ref.view(np.int32)).sum())
        d = float(np.abs(a.astype(np.float64) - ref).max())
        mark = ""
        if differ and first is None:
            first = name
            mark = "  <== first divergence"
        print(f"{name:40s} {ty:22s} {d:10.3e} {differ:9d} {ulp_distance(a, ref):8d} "
              f"{float(np.abs(ref).max()):9.3g}{mark}")
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            ref.astype(np.float32).tofile(save / (name.replace("/", "_") + ".bin"))
    print("first divergent tensor:", first)


if __name__ == "__main__":
    main()
