"""TFLite (LiteRT) on x86: ``tflite-reference`` (the reference kernels, BUILTIN_REF) and ``tflite``
(the optimized builtin kernels: ruy for FULLY_CONNECTED and CONV_2D).  The numpy arithmetic here is
what fixq's kernels do not have: ruy's x86 epilogue, the reference FULLY_CONNECTED's float64
rounding, the round-half-away QUANTIZE and the activation range."""
import numpy as np

from ..arith import quantize_multiplier
from ..eltwise import qadd, qmul
from ._common import AFTER, SAT, Recipe, along, quantize_reciprocal, round_away


def _ruy_x86(acc, real):
    """ruy's AVX2 / AVX-512 kernel epilogue: both steps round ties toward +inf, nothing saturates."""
    m, s = quantize_multiplier(real)
    m64, s64 = np.asarray(m, np.int64), np.asarray(s, np.int64)
    left, right = np.maximum(s64, 0), np.maximum(-s64, 0)
    t = ((acc << left) * m64 + (1 << 30)) >> 31
    return (t + ((np.int64(1) << right) >> 1)) >> right


def _float64_away(acc, real):
    """The reference FULLY_CONNECTED: std::round((double)acc * scale)."""
    return round_away(acc.astype(np.float64) * real)


def _add(a, b, **kw):
    return qadd(a, b, rounding="double", **kw)


def _mul(a, b, **kw):
    return qmul(a, b, rounding="double", **kw)


def _quantize_divide_away(x, scale, zero_point, dtype, axis):
    """AffineQuantize (reference) / PerChannelQuantize: (int32)std::round(x / scale) + zp, clamped."""
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    q = (x / along(scale, axis, x.ndim)).astype(np.float32)
    zp = along(np.asarray(zero_point, np.int64), axis, x.ndim)
    return np.clip(round_away(np.clip(q, -2.0**31, 2.0**31)) + zp, lo, hi).astype(dtype)


def activation_bound(value, scale, zero_point, qmin, qmax):
    """CalculateActivationRangeQuantized's quantize(f): zero_point + (int32)std::round(f / scale),
    the division in float32, ties away from zero; then max(qmin, .) / min(qmax, .)."""
    q = round_away(np.float32(value) / np.float32(scale))
    return min(max(zero_point + int(np.clip(q, -2.0**31, 2.0**31)), qmin), qmax)


DOUBLE_GEMM = Recipe(
    "double", "double", AFTER, SAT, "fixq",
    "RDBPOT(SRDHM(acc << max(s,0), M), max(-s,0)): SRDHM ties to +inf, RDBPOT ties away from 0; "
    "M, s = QuantizeMultiplier((double)s_in * (double)s_w[c] / (double)s_out)")
RUY_X86 = Recipe(
    "double", "ruy-x86", AFTER, SAT, "numpy",
    "t = ((acc << max(s,0)) * M + 2^30) >> 31; t = (t + 2^(r-1)) >> r with r = max(-s,0): "
    "both steps ties to +inf, no saturation (ruy AVX2/AVX-512 kernel epilogue)", _ruy_x86)
FLOAT64_AWAY = Recipe(
    "double", "float64-away", AFTER, SAT, "numpy",
    "round((double)acc * ((double)s_in * (double)s_w[c] / (double)s_out)), std::round: ties away from 0",
    _float64_away)
ADD = Recipe(
    "double", "double", AFTER, SAT, "fixq",
    "TFLite ADD: left_shift 20, M_a = s_a/(2 max(s_a,s_b)), M_b likewise, M_out = 2 max(s_a,s_b)/(2^20 s_out) "
    "(float64), each via QuantizeMultiplier and applied with double rounding", _add)
MUL = Recipe(
    "double", "double", AFTER, SAT, "fixq",
    "TFLite MUL: MBQM((a - za)(b - zb), M, s), M, s = QuantizeMultiplier((double)s_a * s_b / s_out)", _mul)
QUANTIZE_RECIPROCAL_EVEN = Recipe(
    "float32", "recip-even", AFTER, SAT, "fixq",
    "rne(x * (1.0f / scale)) + zp in float32 (TFLite optimized AffineQuantize)", quantize_reciprocal)
QUANTIZE_DIVIDE_AWAY = Recipe(
    "-", "div-away", AFTER, SAT, "numpy",
    "std::round(x / scale[c]) + zp[c] in float32: ties away from 0 (TFLite reference AffineQuantize; "
    "PerChannelQuantize, which every kernel set runs for per-channel QUANTIZE)", _quantize_divide_away)
ACTIVATION = Recipe(
    "-", "away", AFTER, "max(qmin, q(lo)), min(qmax, q(hi))", "numpy",
    "CalculateActivationRangeQuantized: q(f) = zp + (int32)std::round(f / s_out) in float32, ties away "
    "from 0; relu [q(0), qmax], relu6 [q(0), q(6)], relu_n1_to_1 [q(-1), q(1)]", activation_bound)

RECIPES = {
    "tflite": dict(matmul=RUY_X86, conv=RUY_X86, depthwise_conv=DOUBLE_GEMM, add=ADD, mul=MUL,
                   quantize=QUANTIZE_RECIPROCAL_EVEN, quantize_per_axis=QUANTIZE_DIVIDE_AWAY, activation=ACTIVATION),
    "tflite-reference": dict(matmul=FLOAT64_AWAY, conv=DOUBLE_GEMM, depthwise_conv=DOUBLE_GEMM, add=ADD, mul=MUL,
                             quantize=QUANTIZE_DIVIDE_AWAY, quantize_per_axis=QUANTIZE_DIVIDE_AWAY,
                             activation=ACTIVATION),
}
