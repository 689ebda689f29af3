"""TFLite (LiteRT) on x86: ``tflite-reference`` (the reference kernels, BUILTIN_REF) and ``tflite``
(the optimized builtin kernels: ruy for FULLY_CONNECTED and CONV_2D).  The numpy arithmetic here is
what fixq's kernels do not have: ruy's x86 epilogue, the reference FULLY_CONNECTED's float64
rounding, the round-half-away QUANTIZE and the activation range."""
import numpy as np

from .. import _core
from ..arith import multiply_by_quantized_multiplier, quantize_multiplier
from ..eltwise import qadd, qmul
from ._common import AFTER, SAT, Recipe, along, quantize_reciprocal, round_away
from ._fixedpoint import exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1, rdbpot, sat_shift_left, sdhm, srdhm, wrap


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


# ---------------------------------------------------------------- the int8 / uint8 activations
#
# Each is a function of one 8-bit value, so it is computed here on all 256 inputs: a table indexed by the
# input's byte, exact by construction.  tflite and tflite-reference build the same tables on x86 (the
# optimized LOGISTIC / TANH are the reference's LUT, HARD_SWISH's optimized kernel is NEON-only, and both
# kernel sets run the reference QuantizeLeakyRelu for 8-bit types).

def _inputs(dtype):
    """The 256 values of `dtype` in byte order (int8: byte k holds k - 256 for k >= 128), as int64."""
    return np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).astype(np.int64)


def _lut_populate(transform, in_scale, in_zp, out_scale, out_zp, dtype):
    """LUTPopulateInt8 (kernels/internal/common.h): ``dequantized = s_in * (float)(q - zp_in)``, the
    float32 transform, ``std::round(t * (1.0f / s_out))`` (ties away), ``+ zp_out`` in float, saturated."""
    info = np.iinfo(dtype)
    f32 = np.float32
    deq = (f32(in_scale) * (_inputs(dtype) - int(in_zp)).astype(f32)).astype(f32)
    inverse = f32(1.0) / f32(out_scale)
    rescaled = round_away((transform(deq) * inverse).astype(f32))
    q = (rescaled + f32(out_zp)).astype(f32)
    return np.clip(np.clip(q, -2.0**31, 2.0**31 - 128).astype(np.int64), info.min, info.max).astype(dtype)


def _logistic_f32(v):
    """``1.0f / (1.0f + std::exp(-value))`` with the C library's expf."""
    return (np.float32(1.0) / (np.float32(1.0) + _core.libm("expf", -v)).astype(np.float32)).astype(np.float32)


def logistic_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    return _lut_populate(_logistic_f32, in_scale, in_zp, out_scale, out_zp, dtype)


def tanh_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    return _lut_populate(lambda v: _core.libm("tanhf", v), in_scale, in_zp, out_scale, out_zp, dtype)


def _int16_multiplier(real):
    """QuantizeMultiplier(real), then DownScaleInt32ToInt16Multiplier: ``(m + 2^15) >> 16``, saturated."""
    m, e = quantize_multiplier(float(real))
    m16 = 32767 if int(m) >= 2**31 - 1 - 2**15 else (int(m) + 2**15) >> 16
    return m16, int(e)


def hard_swish_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    """reference_ops::HardSwish (hard_swish.h) with HardSwishPrepare's parameters (scales in float32):
    int16 fixed point, SRDHM for the rescalings, SaturatingDoublingHighMul (truncating) for the product."""
    f32 = np.float32
    hires_scale = f32(f32(1.0 / 128.0) * f32(in_scale))
    out_m, out_e = _int16_multiplier(f32(hires_scale / f32(out_scale)))
    if out_e > 0:
        raise ValueError(f"HARD_SWISH needs s_in / (128 s_out) < 1, got s_in {in_scale!r}, s_out {out_scale!r}")
    relu_m, relu_e = _int16_multiplier(f32(hires_scale / f32(3.0 / 32768.0)))
    hires = wrap((_inputs(dtype) - int(in_zp)) * 128, 16)
    pre_out = srdhm(hires, out_m, 16)
    r = hires
    if relu_e > 0:
        r = sat_shift_left(r, relu_e - 1, 16)
    r = srdhm(r, relu_m, 16)
    if relu_e > 0:
        r = sat_shift_left(r, 1, 16)
    if relu_e < 0:
        r = rdbpot(r, -relu_e)
    r = wrap((r + 2**15) >> 1, 16)
    y = wrap(rdbpot(sdhm(r, pre_out, 16), -out_e) + int(out_zp), 16)
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def leaky_relu_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    """reference_ops::QuantizeLeakyRelu: MBQM of (q - zp_in) by s_in/s_out (q >= zp_in) or by
    s_in*alpha/s_out, both computed in float32 (LeakyReluPrepare) before QuantizeMultiplier."""
    f32 = np.float32
    alpha = f32(attrs.get("alpha", 0.01))
    if not alpha > 0:
        raise ValueError(f"leaky_relu alpha must be > 0 here, got {float(alpha)!r}")
    m_a, s_a = quantize_multiplier(float(f32(f32(f32(in_scale) * alpha) / f32(out_scale))))
    m_i, s_i = quantize_multiplier(float(f32(f32(in_scale) / f32(out_scale))))
    v = _inputs(dtype) - int(in_zp)
    pos = multiply_by_quantized_multiplier(v, int(m_i), int(s_i)).astype(np.int64)
    neg = multiply_by_quantized_multiplier(v, int(m_a), int(s_a)).astype(np.int64)
    info = np.iinfo(dtype)
    return np.clip(np.where(v >= 0, pos, neg) + int(out_zp), info.min, info.max).astype(dtype)


TABLES = {"sigmoid": logistic_table, "tanh": tanh_table, "hardswish": hard_swish_table,
          "leaky_relu": leaky_relu_table}


# ---------------------------------------------------------------- SOFTMAX, 8-bit in and out

def _clz32(v):
    """CountLeadingZeros of positive int32 values."""
    return 32 - np.floor(np.log2(v.astype(np.float64))).astype(np.int64) - 1


def softmax_reference_params(in_scale, beta):
    """PreprocessSoftmaxScaling's (multiplier, left shift) of beta * s_in into Q5.26, and
    CalculateInputRadius's diff_min."""
    m, left = quantize_multiplier(min(float(beta) * float(in_scale) * 2.0**26, 2.0**31 - 1.0))
    m, left = int(m), int(left)
    return m, left, -int(np.floor(31.0 * 2.0**26 / 2.0**left))


def softmax_table(in_scale, beta):
    """PopulateSoftmaxLookupTable: ``table[d] = expf(-s_in*beta * d)`` for d in 0..255, float32."""
    f32 = np.float32
    return _core.libm("expf", (f32(-f32(in_scale) * f32(beta)) * np.arange(256, dtype=f32)).astype(f32))


def softmax_reference(x, in_scale, beta, dtype):
    """reference_ops::Softmax for 8-bit input and output (softmax.h): the input difference to the row's
    max scaled by PreprocessSoftmaxScaling's multiplier into Q5.26, gemmlowp's exp_on_negative_values,
    the Q12.19 sum, GetReciprocal's 1/(1+x) and a RoundingDivideByPOT; differences below diff_min give
    the output's minimum.  The output scale is 1/256 and its zero point the dtype's minimum (TFLite
    requires both), so neither enters."""
    m, left, diff_min = softmax_reference_params(in_scale, beta)
    x = np.asarray(x).astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    keep = diff >= diff_min
    exp = exp_on_negative_values(srdhm(np.where(keep, diff, 0) << left, m), 5)
    total = np.where(keep, rdbpot(exp, 12), 0).sum(axis=-1, keepdims=True)
    headroom = _clz32(total)
    num_bits_over_unit = 12 - headroom
    shifted_minus_one = wrap((total << headroom) - (np.int64(1) << 31), 32)
    scale = one_over_one_plus_x_for_x_in_0_1(shifted_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    info = np.iinfo(dtype)
    unsat = rdbpot_per_row(srdhm(scale, exp), exponent)
    return np.where(keep, np.clip(unsat + info.min, info.min, info.max), info.min).astype(dtype)


def rdbpot_per_row(x, exponent):
    """RoundingDivideByPOT with one exponent per row (an array broadcasting against x)."""
    mask = (np.int64(1) << exponent) - 1
    return (x >> exponent) + ((x & mask) > ((mask >> 1) + (x < 0)))


def softmax_optimized(x, in_scale, beta, out_scale, out_zero_point, dtype):
    """optimized_ops::Softmax for 8-bit input and output on x86 (PopulateSoftmaxLookupTable): ``table[d] =
    expf(-s_in*beta * d)`` (C library expf) for d = max - q, the float32 sum over the row in order,
    ``1.0f / (sum * s_out)``, each ``table[d] * inv`` rounded by std::round (int8) or ``(int)(p + 0.5f)``
    (uint8), plus the zero point, saturated."""
    f32 = np.float32
    table = softmax_table(in_scale, beta)
    x = np.asarray(x).astype(np.int64)
    e = table[x.max(axis=-1, keepdims=True) - x]
    total = np.zeros(x.shape[:-1] + (1,), f32)
    for j in range(x.shape[-1]):  # std::accumulate order: float additions do not reassociate
        total = (total + e[..., j:j + 1]).astype(f32)
    inv = (f32(1.0) / (total * f32(out_scale)).astype(f32)).astype(f32)
    p = (e * inv).astype(f32)
    if np.dtype(dtype) == np.uint8:
        q = np.floor((p + f32(0.5)).astype(f32))
    else:
        q = round_away(p)
    info = np.iinfo(dtype)
    return np.clip(q.astype(np.int64) + int(out_zero_point), info.min, info.max).astype(dtype)


# ---------------------------------------------------------------- MEAN over H, W and AVERAGE_POOL_2D

def mean_reference_multiplier(count, in_scale, out_scale):
    """QuantizedMeanOrSum's (M', s'): QuantizeMultiplier((double)s_in / s_out) with 1/count folded in as
    ``M' = (M << k) / count``, ``s' = s - k``, k = floor(log2 count) (at most 32 and 31 + s)."""
    m, s = quantize_multiplier(float(np.float64(np.float32(in_scale)) / np.float64(np.float32(out_scale))))
    k = min(int(count).bit_length() - 1, 32, 31 + int(s))
    return (int(m) << k) // int(count), int(s) - k


def mean_reference(sums, count, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """reference_ops::QuantizedMeanOrSum of int32 `sums` of the raw inputs over `count` values: M, s =
    QuantizeMultiplier((double)s_in / s_out), folded with 1/count as ``M' = (M << k) / count``, ``s' = s -
    k`` (k = floor(log2 count), at most 32 and 31 + s), then MBQM(sum - zp_in*count, M', s') + zp_out."""
    m, s = mean_reference_multiplier(count, in_scale, out_scale)
    acc = np.asarray(sums, np.int64) - int(in_zero_point) * int(count)
    y = multiply_by_quantized_multiplier(acc, m, s).astype(np.int64) + int(out_zero_point)
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def mean_optimized_params(count, in_scale, in_zero_point, out_scale, out_zero_point):
    """optimized_integer_ops::Mean's (multiplier, shift, bias) (int8, keep_dims, 4-D over H and W):
    M, s = QuantizeMultiplier(s_in / ((float)count * s_out)) in float32; bias = zp_out -
    (int)(zp_in * s_in / s_out +- 0.5f) (float32, truncated)."""
    f32 = np.float32
    temp = f32(f32(f32(int(in_zero_point)) * f32(in_scale)) / f32(out_scale))
    temp = f32(temp + f32(0.5)) if temp > 0 else f32(temp - f32(0.5))
    bias = int(out_zero_point) - int(np.trunc(temp))
    m, s = quantize_multiplier(float(f32(f32(in_scale) / f32(f32(count) * f32(out_scale)))))
    return int(m), int(s), bias


def mean_optimized(sums, count, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """optimized_integer_ops::Mean (int8, one thread): MBQM(sum of the raw inputs, M, s) + bias, saturated
    (the zero point enters only through the float bias); `sums` has channels on its last axis, of which
    the NEON loop takes whole groups of 16 (:func:`neon_mbqm`) and the scalar loop the rest."""
    m, s, bias = mean_optimized_params(count, in_scale, in_zero_point, out_scale, out_zero_point)
    sums = np.asarray(sums, np.int64)
    n = _neon_split(sums.shape[-1])
    y = multiply_by_quantized_multiplier(sums, m, s).astype(np.int64)
    y[..., :n] = neon_mbqm(sums[..., :n], m, s)
    info = np.iinfo(dtype)
    return np.clip(y + bias, info.min, info.max).astype(dtype)


# ---------------------------------------------------------------- the NEON forms the x86 build runs
#
# The x86 wheel is built with SSE4.1, where kernels/internal/optimized/neon_check.h defines USE_NEON and
# includes NEON_2_SSE.h: the optimized kernels' NEON loops run on x86 too, translated to SSE.  Their
# MultiplyByQuantizedMultiplier4Rows rounds differently from the scalar MultiplyByQuantizedMultiplier
# that the same kernels use for the elements left over after the last whole vector.

def neon_mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier4Rows (double-rounding build): vqrdmulh of ``x << left`` (wrapping),
    then vrshl by ``-right``: both steps round ties toward +inf (the scalar form rounds the second away
    from zero)."""
    left, right = max(int(shift), 0), max(-int(shift), 0)
    t = srdhm(wrap(np.asarray(x, np.int64) << left, 32), int(multiplier))
    return (t + ((np.int64(1) << right) >> 1)) >> right


def _neon_split(n, width=16):
    """How many of `n` elements a NEON loop of `width` lanes takes before the scalar tail."""
    return n - n % width


def requantize_multiplier(in_scale, out_scale):
    """QuantizeMultiplier((double)s_in / (double)s_out): QUANTIZE's 8-bit requantization (quantize.cc)."""
    m, s = quantize_multiplier(float(np.float64(np.float32(in_scale)) / np.float64(np.float32(out_scale))))
    return int(m), int(s)


def requantize_reference(q, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """reference_ops::Requantize: MBQM(q - zp_in, M, s) + zp_out, saturated (its q ^ 0x80 fast path for a
    pure int8 <-> uint8 shift gives the same bytes)."""
    m, s = requantize_multiplier(in_scale, out_scale)
    v = np.asarray(q).astype(np.int64) - int(in_zero_point)
    info = np.iinfo(dtype)
    y = multiply_by_quantized_multiplier(v, m, s).astype(np.int64) + int(out_zero_point)
    return np.clip(y, info.min, info.max).astype(dtype)


def requantize_optimized(q, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """optimized_ops::Requantize for 8-bit to 8-bit: the NEON loop (:func:`neon_mbqm`) over whole groups of
    16 elements in memory order, the scalar MBQM on the rest."""
    q = np.asarray(q)
    y = requantize_reference(q, in_scale, in_zero_point, out_scale, out_zero_point, dtype).reshape(-1)
    n = _neon_split(q.size)
    m, s = requantize_multiplier(in_scale, out_scale)
    v = q.reshape(-1)[:n].astype(np.int64) - int(in_zero_point)
    info = np.iinfo(dtype)
    y[:n] = np.clip(neon_mbqm(v, m, s) + int(out_zero_point), info.min, info.max)
    return y.reshape(q.shape)


# ---------------------------------------------------------------- SUB

def sub_multipliers(a_scale, b_scale, out_scale):
    """PrepareGeneralSubOp's ((M_a, s_a), (M_b, s_b), (M_out, s_out)) for 8-bit SUB, ADD's derivation:
    left shift 20, ``2 max(s_a, s_b)`` (float32, exact), the three quotients in double."""
    f32 = np.float32
    twice = np.float64(2 * max(f32(a_scale), f32(b_scale)))
    reals = (np.float64(f32(a_scale)) / twice, np.float64(f32(b_scale)) / twice,
             twice / np.float64(f32(2**20) * f32(out_scale)))
    return tuple((int(m), int(s)) for m, s in (quantize_multiplier(float(r)) for r in reals))


def _add_sub_reference(da, db, sign, multipliers, out_zero_point, lo, hi):
    """AddFunc / SubElementwise on the offset inputs `da`, `db`: ``MBQM(MBQM(da << 20, M_a) +- MBQM(db << 20,
    M_b), M_out) + zp_out``, double rounding, clamped to [lo, hi] (int64)."""
    (ma, sa), (mb, sb), (mo, so) = multipliers
    raw = (multiply_by_quantized_multiplier(da << 20, ma, sa).astype(np.int64)
           + sign * multiply_by_quantized_multiplier(db << 20, mb, sb).astype(np.int64))
    return np.clip(multiply_by_quantized_multiplier(raw, mo, so).astype(np.int64) + int(out_zero_point), lo, hi)


def sub(a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi, dtype):
    """reference_ops::SubElementwise / BroadcastQuantSubSlow (every kernel set's 8-bit SUB; numpy
    broadcasting): ``MBQM(MBQM((a - za) << 20, M_a) - MBQM((b - zb) << 20, M_b), M_out) + zp_out``, double
    rounding, clamped to [lo, hi]."""
    da = np.asarray(a).astype(np.int64) - int(a_zero_point)
    db = np.asarray(b).astype(np.int64) - int(b_zero_point)
    return _add_sub_reference(da, db, -1, sub_multipliers(a_scale, b_scale, out_scale), out_zero_point, lo,
                              hi).astype(dtype)


# ---------------------------------------------------------------- ADD and MUL of the optimized kernels
#
# optimized_integer_ops::Add / Mul (AddElementwiseInt8, MulElementwise) and, where the shapes broadcast,
# BroadcastAddDispatch / BroadcastMulDispatch: BinaryBroadcastFiveFold runs the elementwise function on
# runs of y4 outputs, or (y4 == 1) the scalar-broadcast one (AddScalarBroadcast, MulSimpleBroadcast) on runs
# of y3; a broadcast no fivefold loop fits runs the reference BroadcastAdd6DSlow / BroadcastMul6DSlow.
# Each function's NEON loop (NEON_2_SSE on x86) takes whole groups of its width at the start of a run and
# the scalar loop the rest, and the NEON forms round differently.

def fivefold(shape_a, shape_b):
    """ProcessBroadcastShapes (reference/process_broadcast_shapes.h) of one invocation's input shapes: None
    where the extended shapes are equal (no broadcast), ``"generic"`` where no fivefold loop fits, else
    ``[y0, y1, y2, y3, y4]``."""
    n = max(len(shape_a), len(shape_b))
    a = (1,) * (n - len(shape_a)) + tuple(shape_a)
    b = (1,) * (n - len(shape_b)) + tuple(shape_b)
    if a == b:
        return None
    first = None
    for i in reversed(range(n)):
        if a[i] != b[i]:
            if a[i] != 1 and b[i] != 1:
                return "generic"
            first = a[i] == 1
            break
    sa, sb = (a, b) if first else (b, a)  # shape_a: the input that broadcasts fast
    y, i = [1] * 5, n - 1
    for k, test in ((4, lambda i: sa[i] == sb[i]), (3, lambda i: sa[i] == 1), (2, lambda i: sa[i] == sb[i]),
                    (1, lambda i: sb[i] == 1), (0, lambda i: sa[i] == sb[i])):
        while i >= 0 and test(i):
            y[k] *= sb[i] if k in (4, 3, 0) else sa[i]
            i -= 1
    return "generic" if i >= 0 else y


def neon_runs(shape_a, shape_b, widths):
    """(scalar_broadcast, run, split): whether one invocation of the optimized ADD / MUL on inputs of `shape_a`
    and `shape_b` runs the scalar-broadcast function, and its outputs (flat, in memory order) in runs of `run`
    whose first `split` a NEON loop computes; `widths` = (elementwise, scalar-broadcast) NEON widths (ADD: 16,
    8; MUL: 16, 16)."""
    size = int(np.prod(np.broadcast_shapes(tuple(shape_a), tuple(shape_b))))
    y = fivefold(shape_a, shape_b)
    if y == "generic":
        return False, size, 0
    run, scalar = (size, False) if y is None else (y[4], False) if y[4] > 1 else (y[3], True)
    width = widths[scalar]
    return scalar, run, width * (run // width)


def neon_lanes(shape_a, shape_b, widths):
    """(scalar_broadcast, mask) of :func:`neon_runs`: which outputs a NEON loop computes."""
    scalar, run, split = neon_runs(shape_a, shape_b, widths)
    size = int(np.prod(np.broadcast_shapes(tuple(shape_a), tuple(shape_b))))
    return scalar, np.arange(size) % run < split


def _vshl(x, n):
    """vshlq_s32 by a constant: left shift (wrapping to int32), or for a negative count an arithmetic,
    truncating right shift."""
    return wrap(x << n, 32) if n >= 0 else x >> -n


def _narrow(y, zero_point, lo, hi, saturate16):
    """The NEON loops' narrowing: to int16 (vqmovn_s32 saturating, vmovn_s32 wrapping), the zero point added
    in int16 (wrapping), vqmovn_s16 to int8, then the activation clamp."""
    y16 = np.clip(y, -2**15, 2**15 - 1) if saturate16 else wrap(y, 16)
    return np.clip(np.clip(wrap(y16 + int(zero_point), 16), -128, 127), lo, hi)


def _per_sample(a, b, lanes, neon, scalar):
    """`neon` where one invocation's NEON loop computes an output (:func:`neon_lanes`), `scalar` elsewhere:
    a and b hold the batch on axis 0 (one invocation per sample)."""
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    is_scalar, mask = neon_lanes((1,) + a.shape[1:], (1,) + b.shape[1:], lanes)
    mask = np.broadcast_to(mask.reshape((1,) + out_shape[1:]), out_shape)
    return np.where(mask, neon(is_scalar), scalar)


def add_optimized(a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi, dtype):
    """optimized_integer_ops::Add / BroadcastAddDispatch for int8 (numpy broadcasting; axis 0 the batch).
    Scalar loop: the reference arithmetic (:func:`sub`'s with a sum).  AddElementwiseInt8's NEON loop: each
    input ``vqrdmulh((q + off) << (20 + s_i), M_i)`` (one rounding, ties up), AddScalarBroadcast's:
    ``vqrdmulh((q + off) << 20, M_i) >> -s_i`` (truncating); then ``vqrdmulh(sum, M_out)``, gemmlowp's
    RoundingDivideByPOT (ties away) and :func:`_narrow` (vmovn: wrapping)."""
    (ma, sa), (mb, sb), (mo, so) = sub_multipliers(a_scale, b_scale, out_scale)
    da = np.asarray(a).astype(np.int64) - int(a_zero_point)
    db = np.asarray(b).astype(np.int64) - int(b_zero_point)
    ref = _add_sub_reference(da, db, 1, ((ma, sa), (mb, sb), (mo, so)), out_zero_point, lo, hi)

    def neon(is_scalar):
        if is_scalar:
            xa, xb = (srdhm(wrap(d << 20, 32), m) >> -s for d, m, s in ((da, ma, sa), (db, mb, sb)))
        else:
            xa, xb = (srdhm(_vshl(d, 20 + s), m) for d, m, s in ((da, ma, sa), (db, mb, sb)))
        return _narrow(rdbpot(srdhm(wrap(xa + xb, 32), mo), -so), out_zero_point, lo, hi, False)
    return _per_sample(da, db, (16, 8), neon, ref).astype(dtype)


def mul_multiplier(a_scale, b_scale, out_scale):
    """mul.cc's QuantizeMultiplier((double)s_a * (double)s_b / (double)s_out)."""
    m, s = quantize_multiplier(float(np.float64(np.float32(a_scale)) * np.float64(np.float32(b_scale))
                                     / np.float64(np.float32(out_scale))))
    return int(m), int(s)


def mul_optimized(a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi, dtype):
    """optimized_integer_ops::Mul / BroadcastMulDispatch for int8 (numpy broadcasting; axis 0 the batch): the
    scalar loop is the reference ``MBQM((a - za)(b - zb), M, s) + zp_out``; the NEON loops (MulElementwise,
    MulSimpleBroadcast, 16 wide) round alike and differ only in :func:`_narrow` (vqmovn: saturating)."""
    m, s = mul_multiplier(a_scale, b_scale, out_scale)
    p = (np.asarray(a).astype(np.int64) - int(a_zero_point)) * (np.asarray(b).astype(np.int64) - int(b_zero_point))
    ref = np.clip(multiply_by_quantized_multiplier(p, m, s).astype(np.int64) + int(out_zero_point), lo, hi)

    def neon(is_scalar):
        return _narrow(rdbpot(srdhm(_vshl(p, max(s, 0)), m), max(-s, 0)), out_zero_point, lo, hi, True)
    return _per_sample(np.asarray(a), np.asarray(b), (16, 16), neon, ref).astype(dtype)


def neon_agrees(op, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi):
    """Whether the optimized int8 ADD / MUL (`op` "add" / "mul") of equal shapes gives every input pair the
    same output in its NEON loop (AddElementwiseInt8, MulElementwise) as in its scalar (reference) loop, for
    these parameters: then the reference arithmetic computes it on every element.  Exhaustive over the 65536
    pairs: the two ADD forms scale each input's 256 values, and only pairs where a scaled value differs can
    differ; :func:`_narrow` is the identity wherever the (monotonic) result before it stays in int16."""
    d = np.arange(-128, 128, dtype=np.int64)
    da, db = d - int(a_zero_point), d - int(b_zero_point)
    if op == "add":
        (ma, sa), (mb, sb), (mo, so) = sub_multipliers(a_scale, b_scale, out_scale)
        (an, ar), (bn, br) = ((srdhm(_vshl(v, 20 + s), m), rdbpot(srdhm(v << 20, m), -s))
                              for v, m, s in ((da, ma, sa), (db, mb, sb)))
        ia, ib, every = np.nonzero(an != ar)[0], np.nonzero(bn != br)[0], np.arange(256)
        i = np.concatenate([np.repeat(ia, 256), np.tile(every, ib.size)])
        j = np.concatenate([np.tile(every, ia.size), np.repeat(ib, 256)])

        def stage(raw):
            return rdbpot(srdhm(wrap(raw, 32), mo), -so)
        if not np.array_equal(stage(an[i] + bn[j]), stage(ar[i] + br[j])):
            return False
        ends = stage(np.array([ar.min() + br.min(), ar.max() + br.max(), an.min() + bn.min(), an.max() + bn.max()]))
    else:
        m, s = mul_multiplier(a_scale, b_scale, out_scale)
        p = np.outer(da[[0, -1]], db[[0, -1]]).reshape(-1)
        ends = multiply_by_quantized_multiplier(p, m, s).astype(np.int64)
    z = int(out_zero_point)
    return bool(np.all((np.abs(ends) <= 2**15 - 1) & (np.abs(ends + z) <= 2**15 - 1)))
