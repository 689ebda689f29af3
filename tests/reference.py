"""Pure-numpy int64 reference of fixq's arithmetic, used only by tests.

Written from the published formulas (gemmlowp fixedpoint.h, TFLite
quantization_util.cc / common.h, ONNX QuantizeLinear), independently of the C
core.
"""
import math

import numpy as np

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def sat32(v):
    return np.clip(v, I32_MIN, I32_MAX)


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = ab + nudge
    r = np.where(q >= 0, q // (1 << 31), -((-q) // (1 << 31)))  # C division truncates toward zero
    return np.where((a == b) & (a == I32_MIN), I32_MAX, r)


def rdbpot(x, e):
    """gemmlowp RoundingDivideByPOT: round to nearest, ties away from zero."""
    x = np.asarray(x, np.int64)
    e = np.asarray(e, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def mbqm_double(x, m, shift):
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rdbpot(srdhm(sat32(x * (np.int64(1) << left)), m), right)


def mbqm_single(x, m, shift):
    x = np.asarray(x, np.int64)
    total = 31 - np.asarray(shift, np.int64)
    return sat32((x * np.asarray(m, np.int64) + (np.int64(1) << (total - 1))) >> total)


def requant_fixed(acc, m, shift, zp, qmin, qmax, rounding):
    f = mbqm_double if rounding == "double" else mbqm_single
    return np.clip(f(acc, m, shift) + np.asarray(zp, np.int64), qmin, qmax)


def requant_fp32(acc, scale, zp, qmin, qmax):
    """XNNPACK fp32 requantization: float32 product, round half to even."""
    with np.errstate(over="ignore"):
        f = np.asarray(acc).astype(np.float32) * np.asarray(scale, np.float32)
    f = np.clip(f, -3e9, 3e9)  # saturates anyway; keeps the int64 cast defined
    return np.clip(np.rint(f).astype(np.int64) + np.asarray(zp, np.int64), qmin, qmax)


def quantize(x, scale, zp, qmin, qmax):
    """ONNX QuantizeLinear in float32."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f = np.asarray(x, np.float32) / np.asarray(scale, np.float32)
        f = np.clip(f, -3e9, 3e9)
    return np.clip(np.rint(f).astype(np.int64) + np.asarray(zp, np.int64), qmin, qmax)


def dequantize(q, scale, zp):
    d = np.asarray(q, np.int64) - np.asarray(zp, np.int64)
    return d.astype(np.float32) * np.asarray(scale, np.float32)


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier in plain Python floats."""
    if real == 0.0:
        return 0, 0
    q, e = math.frexp(real)
    q_fixed = math.floor(q * 2**31 + 0.5)  # std::round for positive values
    if q_fixed == 2**31:
        q_fixed //= 2
        e += 1
    if e < -31:
        return 0, 0
    return q_fixed, e
