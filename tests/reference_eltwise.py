"""Pure-numpy int64 reference of the elementwise contract (used only by tests).

Written from the TFLite sources, independently of the C core: QuantizeMultiplier
(quantization_util.cc), MultiplyByQuantizedMultiplier double / single rounding
(common.h), int8 ADD (kernels/add.cc + reference_integer_ops AddFunc) and MUL
(kernels/mul.cc + reference_integer_ops MulElementwise); the fp32 mode as
docs/arithmetic.md states it.
"""
import math

import numpy as np

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier on a Python float: (multiplier, shift)."""
    if real == 0.0:
        return 0, 0
    q, e = math.frexp(real)
    qf = int(math.floor(abs(q) * 2.0**31 + 0.5))  # std::round: half away from zero (q > 0)
    if qf == 2**31:
        qf //= 2
        e += 1
    if e < -31:
        return 0, 0
    return qf, e


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    q = np.where(num >= 0, num // (1 << 31), -((-num) // (1 << 31)))  # C division truncates
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, q)


def rdbpot(x, e):
    x = np.asarray(x, np.int64)
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mbqm_double(x, m, shift):
    left, right = max(shift, 0), max(-shift, 0)
    xs = np.clip(np.asarray(x, np.int64) * (1 << left), I32_MIN, I32_MAX)
    return rdbpot(srdhm(xs, m), right)


def mbqm_single(x, m, shift):
    total = 31 - shift
    r = (np.asarray(x, np.int64) * m + (1 << (total - 1))) >> total
    return np.clip(r, I32_MIN, I32_MAX)


def add_multipliers(sa, sb, so):
    """(ma, sha), (mb, shb), (mo, sho) of TFLite int8 ADD, reals in double from the float32 scales."""
    sa, sb, so = float(np.float32(sa)), float(np.float32(sb)), float(np.float32(so))
    tm = 2.0 * max(sa, sb)
    return (quantize_multiplier(sa / tm), quantize_multiplier(sb / tm),
            quantize_multiplier(tm / (2.0**20 * so)))


def mul_multiplier(sa, sb, so):
    sa, sb, so = float(np.float32(sa)), float(np.float32(sb)), float(np.float32(so))
    return quantize_multiplier(sa * sb / so)


def _clamp_round_f32(f, zo, lo, hi):
    f = np.minimum(np.maximum(f, np.float32(lo - zo)), np.float32(hi - zo))
    return np.rint(f).astype(np.int64) + zo  # rint: half to even


def eltwise(op, a, b, sa, za, sb, zb, so, zo, lo, hi, rounding):
    """The contract on broadcast int arrays; returns int64."""
    va = np.asarray(a, np.int64) - za
    vb = np.asarray(b, np.int64) - zb
    va, vb = np.broadcast_arrays(va, vb)
    if rounding == "fp32":
        fa = va.astype(np.float32) * np.float32(sa)
        fb = vb.astype(np.float32) * np.float32(sb)
        f = (fa + fb if op == "add" else fa * fb) / np.float32(so)
        return _clamp_round_f32(f, zo, lo, hi)
    mbqm = mbqm_double if rounding == "double" else mbqm_single
    if op == "add":
        (ma, sha), (mb, shb), (mo, sho) = add_multipliers(sa, sb, so)
        x = mbqm(va << 20, ma, sha) + mbqm(vb << 20, mb, shb)
    else:
        mo, sho = mul_multiplier(sa, sb, so)
        x = va * vb
    return np.clip(mbqm(x, mo, sho) + zo, lo, hi)
