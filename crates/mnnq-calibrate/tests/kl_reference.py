"""Independent f32 reference for MNN's KL threshold search (doc mnn-quantization.md §4.3-4.5).

Run once with numpy (`/work/venv/bin/python kl_reference.py`); the printed thresholds and
scales are pasted into kl_cases.rs. Written from the doc's description, not from Rust code:
every quantity is a numpy float32 scalar, sums run in MNN's order.
"""
import numpy as np

F = np.float32
BINS, TARGET = 2048, 128


def mnn_bins(counts):
    # A bin starts at 1e-7f and gets +1.0f per element: 1e-7, 1.0000001, then 2, 3, ... (exact)
    # and saturates at 2^24.
    out = []
    for n in counts:
        v = F(1e-7)
        for _ in range(min(n, 3)):
            v = F(v + F(1.0))
        if n > 3:
            v = F(min(int(v) + (n - 3), 1 << 24))
        out.append(v)
    return out


def normalise(bins):
    s = F(0)
    for b in bins:
        s = F(s + b)
    return [F(b / s) for b in bins]


def threshold(p, q_from_folded=False):
    """q_from_folded=True is the TensorRT variant (Q merged from the folded P): printed to show
    the cases tell the two apart."""
    best, min_kl = TARGET, F(10000)
    tail = F(0)
    for v in p[TARGET:]:
        tail = F(tail + v)
    for i in range(TARGET, BINS):
        P = list(p[:i])
        P[i - 1] = F(P[i - 1] + tail)
        tail = F(tail - p[i])
        w = F(F(i) / F(TARGET))
        src = P + [F(0)] if q_from_folded else p
        Q = [F(0)] * TARGET
        for j in range(TARGET):
            s = F(F(j) * w); e = F(s + w)
            L = int(np.ceil(s)); R = int(np.floor(e))
            if F(L) > s: Q[j] = F(Q[j] + F(F(F(L) - s) * src[L - 1]))
            if F(R) < e: Q[j] = F(Q[j] + F(F(e - F(R)) * src[R]))
            for k in range(L, R): Q[j] = F(Q[j] + src[k])
        E = [F(0)] * i
        for j in range(TARGET):
            s = F(F(j) * w); e = F(s + w)
            L = int(np.ceil(s)); R = int(np.floor(e))
            ls = F(F(L) - s) if F(L) > s else F(0)
            rs = F(e - F(R)) if F(R) < e else F(0)
            lu = F(L) > s and p[L - 1] != 0
            ru = F(R) < e and p[R] != 0
            c = F(0)
            if lu: c = F(c + ls)
            if ru: c = F(c + rs)
            for k in range(L, R):
                if p[k] != 0: c = F(c + F(1))
            if c == 0: continue
            v = F(Q[j] / c)
            if lu: E[L - 1] = F(E[L - 1] + F(v * ls))
            if ru and R < i: E[R] = F(E[R] + F(v * rs))
            for k in range(L, R):
                if p[k] != 0: E[k] = F(E[k] + v)
        kl = F(0)
        for k in range(i):
            if P[k] != 0:
                kl = F(kl + F(1)) if E[k] == 0 else F(kl + F(P[k] * np.log(F(P[k] / E[k]))))
        if kl < min_kl:
            min_kl, best = kl, i
    return best


def scale(t, max_abs, clamp=127.0):
    interval = F(F(BINS) / F(max_abs))
    return float(F((float(t) + 0.5) / float(interval) / float(clamp)))


def case(name, counts, max_abs):
    p = normalise(mnn_bins(counts))
    t = threshold(p)
    print(f"{name}: threshold {t}, scale {scale(t, max_abs)!r} (TensorRT variant: {threshold(p, True)})")


if __name__ == "__main__":
    # 1. Mass in three bins only.
    c = [0] * BINS; c[10] = 5000; c[500] = 300; c[1500] = 7
    case("three_spikes", c, 3.0)
    # 2. Exponential decay, the usual post-ReLU shape.
    case("exponential", [int(100000 * np.exp(-b / 150.0)) for b in range(BINS)], 6.0)
    # 3. Everything below bin 128 except a thin far tail.
    c = [0] * BINS
    for b in range(100): c[b] = 1000 - 7 * b
    c[2047] = 3
    case("head_and_far_tail", c, 1.5)
    # 4. Flat.
    case("flat", [50] * BINS, 0.75)
    # 5. Two Gaussian bumps.
    case("two_bumps", [int(2000 * np.exp(-((b - 400) / 120.0) ** 2) + 300 * np.exp(-((b - 1200) / 200.0) ** 2))
                       for b in range(BINS)], 4.0)
    # 6. Half-normal, the |x| of a zero-mean Gaussian feature.
    case("half_normal", [int(50000 * np.exp(-((b / 500.0) ** 2) / 2)) for b in range(BINS)], 2.5)
