"""Pure-numpy int64 reference of the GEMM and its output stage (used only by tests)."""
import numpy as np

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _trunc_div_pot(v, e):
    """v / 2**e rounded toward zero (C division), int64."""
    d = np.int64(1) << np.int64(e)
    return np.where(v >= 0, v // d, -((-v) // d))


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    r = _trunc_div_pot(ab + nudge, 31)
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, r)


def rdbpot(x, e):
    """gemmlowp RoundingDivideByPOT: ties away from zero."""
    x, e = np.asarray(x, np.int64), np.asarray(e, np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mbqm(x, m, shift, rounding):
    x, m, shift = (np.asarray(v, np.int64) for v in (x, m, shift))
    if rounding == "double":
        left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
        return rdbpot(srdhm(np.clip(x << left, I32_MIN, I32_MAX), m), right)
    total = 31 - shift
    return np.clip((x * m + (np.int64(1) << (total - 1))) >> total, I32_MIN, I32_MAX)


def requantize(acc, rounding, multiplier=None, shift=None, scale=None, zero_point=0, qmin=-128, qmax=127):
    """int64 array of the requantized values; parameters broadcast along the last axis."""
    acc = np.asarray(acc, np.int64)
    zp = np.asarray(zero_point, np.int64)
    if rounding == "fp32":
        f = acc.astype(np.float32) * np.asarray(scale, np.float32)
        f = np.minimum(np.maximum(f, (qmin - zp).astype(np.float32)), (qmax - zp).astype(np.float32))
        return np.rint(f).astype(np.int64) + zp
    return np.clip(mbqm(acc, multiplier, shift, rounding) + zp, qmin, qmax)


def qmatmul_acc(a, b, a_zero_point=0, b_zero_point=0, bias=None):
    """Exact sum_k (a - a_zp)(b - b_zp[n]) + bias[n] in int64, a [..., K], b [K, N]."""
    acc = (np.asarray(a, np.int64) - a_zero_point) @ (np.asarray(b, np.int64) - np.asarray(b_zero_point, np.int64))
    return acc if bias is None else acc + np.asarray(bias, np.int64)
