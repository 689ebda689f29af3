"""Pure-numpy int64 simulation of a fixq.qmodel/1 archive (tests only).

Reads the archive with numpy alone (docs/engine.md) and runs every step in int64 with the TFLite /
gemmlowp formulas written out, so the engine's results can be compared bit for bit.
"""
import json

import numpy as np

from fixq import layout as L

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _trunc_div_pow2(x, e):
    """C integer division of int64 x by 2**e (truncation toward zero)."""
    q = np.abs(x) >> e
    return np.where(x < 0, -q, q)


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 holding int32 values."""
    a, b = np.int64(a) if np.ndim(a) == 0 else a.astype(np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    r = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, r)


def rdbpot(x, e):
    """gemmlowp RoundingDivideByPOT: round half away from zero."""
    e = np.asarray(e, np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mbqm(x, m, shift, rounding):
    x = np.asarray(x, np.int64)
    m = np.asarray(m, np.int64)
    shift = np.asarray(shift, np.int64)
    if rounding == "double":
        left = np.maximum(shift, 0)
        right = np.maximum(-shift, 0)
        return rdbpot(srdhm(x * (np.int64(1) << left), m), right)
    # TFLite single rounding: (x*M + 2^(30-shift)) >> (31-shift)
    total = 31 - shift
    return (x * m + (np.int64(1) << (total - 1))) >> total


def fp32_requant(acc, scale):
    """float32(acc) * float32 scale, rounded half to even (XNNPACK/ORT)."""
    return np.rint(acc.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.int64)


def requant(acc, a, name, rounding, zp, lo, hi):
    if rounding == "fp32":
        y = fp32_requant(acc, a[f"{name}:scale"])
    else:
        y = mbqm(acc, a[f"{name}:multiplier"], a[f"{name}:shift"], rounding)
    return np.clip(y + zp, lo, hi)


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier on one double."""
    import math
    if real == 0:
        return 0, 0
    q, shift = math.frexp(real)
    qf = round(q * (1 << 31)) if q * (1 << 31) % 1 != 0.5 else math.floor(q * (1 << 31)) + 1
    if qf == 1 << 31:
        qf //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(qf), int(shift)


def eltwise(op, x, y, sa, za, sb, zb, so, zo, lo, hi, rounding):
    x = x.astype(np.int64) - za
    y = y.astype(np.int64) - zb
    sa, sb, so = (float(np.float32(v)) for v in (sa, sb, so))
    if rounding == "fp32":
        if op == "add":
            f = x.astype(np.float32) * np.float32(sa) + y.astype(np.float32) * np.float32(sb)
        else:
            f = (x.astype(np.float32) * np.float32(sa)) * (y.astype(np.float32) * np.float32(sb))
        r = np.rint(f / np.float32(so)).astype(np.int64)
        return np.clip(r + zo, lo, hi)
    if op == "add":
        twice_max = 2 * max(sa, sb)
        m1, s1 = quantize_multiplier(sa / twice_max)
        m2, s2 = quantize_multiplier(sb / twice_max)
        mo, so_ = quantize_multiplier(twice_max / ((1 << 20) * so))
        acc = mbqm(x << 20, m1, s1, rounding) + mbqm(y << 20, m2, s2, rounding)
        r = mbqm(acc, mo, so_, rounding)
    else:
        m, s = quantize_multiplier(sa * sb / so)
        r = mbqm(x * y, m, s, rounding)
    return np.clip(r + zo, lo, hi)


def simulate(path, x, rounding=None):
    """The raw integer outputs of the archive at `path` for float input `x` (static mode)."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    meta = json.loads(str(a["__meta__"]))
    rounding = rounding or meta["options"]["rounding"]
    lo, hi = RANGES[meta["options"]["activations"]]

    def qp(t):
        return np.float32(a[f"t:{t}:scale"]), int(a[f"t:{t}:zero_point"])

    s_in, z_in = qp(meta["input"])
    xf = L.to_internal(np.asarray(x, np.float32))
    env = {meta["input"]: np.clip(np.rint(xf / s_in).astype(np.int64) + z_in, lo, hi)}
    for s in meta["steps"]:
        name, op = s["name"], s["op"]
        xs = [env[t] for t in s["inputs"]]
        so, zo = qp(s["output"])
        ql, qh = s.get("out_min", lo), s.get("out_max", hi)
        zi = [qp(t)[1] for t in s["inputs"]]
        if op == "linear":
            w = a[f"{name}:weight"].astype(np.int64) - a[f"{name}:weight_zero_point"].astype(np.int64)[:, None]
            acc = (xs[0] - zi[0]) @ w.T + a[f"{name}:bias"]
            y = requant(acc, a, name, rounding, zo, ql, qh)
        elif op == "conv2d":
            w = a[f"{name}:weight"].astype(np.int64)
            g, o = s["groups"], w.shape[0]
            xp = xs[0]
            c = xp.shape[3]
            v = L.windows(xp - zi[0], tuple(w.shape[2:]), tuple(s["stride"]), tuple(s["padding"]),
                          tuple(s["dilation"]))  # pads with 0 == (zp - zp)
            og, ig = o // g, c // g
            acc = np.zeros(v.shape[:3] + (o,), np.int64)
            for oc in range(o):
                k = oc // og
                acc[..., oc] = np.einsum("nhwijc,cij->nhw", v[..., k * ig:(k + 1) * ig], w[oc])
            acc += a[f"{name}:bias"]
            y = requant(acc, a, name, rounding, zo, ql, qh)
        elif op in ("add", "mul"):
            (sa, za), (sb, zb) = qp(s["inputs"][0]), qp(s["inputs"][1])
            y = eltwise(op, xs[0], xs[1], sa, za, sb, zb, so, zo, ql, qh, rounding)
        elif op == "concat":
            parts = []
            for i, (xi, t) in enumerate(zip(xs, s["inputs"])):
                if qp(t) == (so, zo):
                    parts.append(xi)
                elif rounding == "fp32":
                    parts.append(np.clip(fp32_requant(xi - zi[i], a[f"{name}:scale"][i]) + zo, lo, hi))
                else:
                    parts.append(np.clip(mbqm(xi - zi[i], a[f"{name}:multiplier"][i], a[f"{name}:shift"][i],
                                              rounding) + zo, lo, hi))
            y = np.concatenate(parts, axis=L.internal_axis(s["axis"], len(meta["tensors"][s["output"]])))
        elif op == "relu":
            y = np.maximum(xs[0], zo)
        elif op == "relu6":
            y = np.clip(xs[0], zo, min(hi, zo + round(6.0 / float(so))))
        elif op == "maxpool2d":
            y = L.windows(xs[0], tuple(s["kernel"]), tuple(s["stride"]), tuple(s["padding"]),
                          pad_value=lo).max(axis=(3, 4))
        elif op in ("avgpool2d", "global_avgpool"):
            if op == "avgpool2d":
                k = tuple(s["kernel"])
                acc = L.windows(xs[0], k, tuple(s["stride"]), tuple(s["padding"]),
                                pad_value=zo).sum(axis=(3, 4))
                n = k[0] * k[1]
            elif f"{name}:multiplier" in a:  # the mean requantized to the output's scale
                env[s["output"]] = requant((xs[0] - zi[0]).sum(axis=(1, 2)), a, name, rounding, zo, lo, hi)
                continue
            else:
                acc = xs[0].sum(axis=(1, 2))
                n = xs[0].shape[1] * xs[0].shape[2]
            q = (np.abs(acc) + n // 2) // n  # TFLite: round half away from zero
            y = np.where(acc < 0, -q, q)
        elif op == "flatten":
            y = L.to_external(xs[0]).reshape(xs[0].shape[0], -1)
        elif op in ("sigmoid", "tanh", "hardswish", "leaky_relu", "hardsigmoid"):  # the table, by the input's byte
            y = a[f"{name}:table"].astype(np.int64)[xs[0] & 0xFF]
        elif op == "softmax":  # float at the output: the simulation stops at its integer input
            y = xs[0]
        else:
            raise NotImplementedError(op)
        env[s["output"]] = y
    outs = [L.to_external(env[t]) for t in meta["outputs"]]
    return outs[0] if len(outs) == 1 else tuple(outs)
