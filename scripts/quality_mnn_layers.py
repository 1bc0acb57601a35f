"""Per-op output cosine of an int8 MNN model vs its float model, both run in MNN.

Usage: python quality_mnn_layers.py FLOAT.mnn QUANT.mnn CONFIG.json IMAGE_DIR [N_IMAGES]
"""
import sys, numpy as np
from pathlib import Path as _P
sys.path.insert(0, str(_P(__file__).resolve().parent.parent / 'scripts'))
from oracle_common import MnnSession, QuantizerPreprocess, load_quant_config
import MNN
fl, qu, cfg, img = sys.argv[1:5]
def dump(path, x):
    s = MnnSession(path)
    s.set_inputs({s.input_names[0]: x})
    out = {}
    order = []
    def begin(ts, op): return True
    def end(ts, op):
        for i, t in enumerate(ts):
            try:
                shape = t.getShape()
                host = MNN.Tensor(shape, MNN.Halide_Type_Float, MNN.Tensor_DimensionType_Caffe)
                t.copyToHostTensor(host)
                key = op.getName() + ':' + str(i)
                out[key] = np.array(host.getData(), dtype=np.float32).ravel().copy()
                if key not in order: order.append((key, op.getType()))
            except Exception as e:
                pass
        return True
    s.interpreter.runSessionWithCallBackInfo(s.session, begin, end)
    return out, order
c = load_quant_config(cfg)
pp = QuantizerPreprocess(c)
from pathlib import Path
imgs = sorted(Path(img).iterdir())[:int(sys.argv[5]) if len(sys.argv) > 5 else 6]
acc = {}
orders = None
for p in imgs:
    x = pp(p)
    f, order = dump(fl, x)
    q, _ = dump(qu, x)
    orders = order
    for key, ty in order:
        if key in f and key in q and f[key].size == q[key].size:
            a, b = f[key].astype(np.float64), q[key].astype(np.float64)
            d = acc.setdefault(key, [0, 0, 0, ty, 0, 0, 0])
            sa, sb = np.sort(a), np.sort(b); d[4] += (sa*sb).sum(); d[5] += (sa*sa).sum(); d[6] += (sb*sb).sum()
            d[0] += (a*b).sum(); d[1] += (a*a).sum(); d[2] += (b*b).sum()
print("op-output  type  cosine (MNN int8 run vs MNN float run, accumulated over images)")
for key, ty in orders:
    if key in acc:
        ab, aa, bb, ty, sab, saa, sbb = acc[key]
        cos = ab / np.sqrt(aa*bb) if aa > 0 and bb > 0 else float('nan')
        print(f"{key:50s} {ty:22s} {cos:.4f}  sorted-values cosine {sab/np.sqrt(saa*sbb):.4f}")
