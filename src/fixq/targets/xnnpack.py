"""XNNPACK as TFLite's default delegate (BUILTIN).  The numpy arithmetic here is XNNPACK's own: its
one-rounding fixed-point ADD, its float32 MUL and how it quantizes an activation's bounds.  Per-channel
QUANTIZE is not delegated (the delegate takes per-tensor quantized tensors only), so TFLite's kernel
computes it."""
import numpy as np

from .. import _core
from . import tflite
from ._common import AFTER, SAT, Recipe, binary_args, float32_product, into, quantize_reciprocal


def add_params(a_scale, b_scale, out_scale, a_zero_point, b_zero_point):
    """XNNPACK's qs8/qu8 vadd parameters ``(m_a, m_b, shift, bias)``: ``shift = 20 - exponent(max(s_a/s_out,
    s_b/s_out))``, ``m = lrintf(s/s_out * 2^shift)`` (ties to even), ``bias = 2^(shift-1) - m_a za - m_b zb``."""
    ra, rb = np.float32(a_scale / out_scale), np.float32(b_scale / out_scale)
    exponent = int((np.array(max(ra, rb), np.float32).view(np.uint32) >> 23) & 0xFF) - 127
    shift = 20 - exponent
    if not 0 < shift < 32:
        raise ValueError(f"XNNPACK ADD cannot represent scale ratios {float(ra)!r}, {float(rb)!r} (shift {shift})")
    pot = np.float32(2.0 ** shift)
    m_a, m_b = int(np.rint(np.float32(ra * pot))), int(np.rint(np.float32(rb * pot)))
    return m_a, m_b, shift, (1 << (shift - 1)) - m_a * int(a_zero_point) - m_b * int(b_zero_point)


def _add(a, b, *, out, **kw):
    """XNNPACK qs8/qu8 vadd: one fixed-point rounding, ties toward +inf."""
    da, db, sa, sb, so, zo, dt, lo, hi = binary_args(a, b, **kw)
    za, zb = int(kw["a_zero_point"]), int(kw["b_zero_point"])
    m_a, m_b, shift, bias = add_params(sa, sb, so, za, zb)
    acc = bias + (da + za) * m_a + (db + zb) * m_b
    return into(np.clip((acc >> shift) + zo, lo, hi).astype(dt), out)


def _mul(a, b, *, out, **kw):
    """XNNPACK qs8/qu8 vmul (fp32 requantization): rne((float)product * scale) + zp."""
    v, zo, dt, lo, hi = float32_product(a, b, **kw)
    # the clip to 2^40 keeps a product past int64 saturating (the C plan's float_to_i64), not wrapping
    return into(np.clip(np.clip(np.rint(v), -2.0**40, 2.0**40).astype(np.int64) + zo, lo, hi).astype(dt), out)


def activation_bound(value, scale, zero_point, qmin, qmax):
    """xnn_qs8_quantize / xnn_qu8_quantize: lrintf(clamp(f / scale + (float)zp, qmin, qmax)), all in
    float32: the zero point is added before rounding, ties to even."""
    v = np.float32(value) / np.float32(scale) + np.float32(zero_point)
    return int(np.rint(min(max(v, np.float32(qmin)), np.float32(qmax))))


GEMM = Recipe(
    "float32", "fp32", AFTER, "clamp in float to [qmin - zp, qmax - zp] before rounding (same result)",
    "fixq", "rne((float)acc * scale[c]) + zp, scale[c] = s_in * s_w[c] / s_out in float32 (XNNPACK "
    "requantization_scale), round half to even (cvtps2dq)")
ADD = Recipe(
    "float32", "xnnpack-add", "folded into the bias before the shift", SAT, "numpy",
    "shift = 20 - exponent(max(s_a/s_out, s_b/s_out)); m_a = lrintf(s_a/s_out * 2^shift) (RNE), m_b likewise; "
    "bias = 2^(shift-1) - m_a za - m_b zb; out = ((bias + a m_a + b m_b) >> shift) + z_out: ties to +inf", _add)
MUL = Recipe(
    "float32", "fp32", AFTER, SAT, "numpy",
    "rne((float)((a - za)(b - zb)) * (s_a * s_b / s_out in float32)) + z_out", _mul)
QUANTIZE = Recipe(
    "float32", "recip-even", AFTER, SAT, "fixq",
    "rne(x * (1.0f / scale)) + zp in float32 (XNNPACK f32->qs8 convert)", quantize_reciprocal)
ACTIVATION = Recipe(
    "-", "zp-even", "in float32, before rounding", "float clamp to [qmin, qmax] before rounding", "numpy",
    "xnn_qs8_quantize(f) = lrintf(clamp(f / s_out + (float)zp, qmin, qmax)) of the delegate's float range: "
    "relu [0, +inf], relu6 [0, 6], relu_n1_to_1 [-1, 1]", activation_bound)

RECIPES = {
    "xnnpack": dict(matmul=GEMM, conv=GEMM, depthwise_conv=GEMM, add=ADD, mul=MUL, quantize=QUANTIZE,
                    quantize_per_axis=tflite.QUANTIZE_DIVIDE_AWAY, activation=ACTIVATION),
}


# ---------------------------------------------------------------- the int8 activations
#
# The delegate takes LOGISTIC, TANH and LEAKY_RELU on int8 (not HARD_SWISH, and no uint8 op with its
# default flags): those run as TFLite's builtin kernel (:data:`TABLES` falls back to tflite's).

def _reference_unary(transform, in_scale, in_zp, out_scale, out_zp, dtype):
    """XNNPACK's reference unary kernel, run on all 256 inputs to fill the operator's LUT
    (src/operators/unary-elementwise-nc.c): ``x = ((float)q - (float)zp_in) * s_in``, the float transform,
    ``nearbyint(y * (1.0f / s_out) + (float)zp_out)`` (ties to even), saturated."""
    f32 = np.float32
    q = np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).astype(f32)
    x = ((q - f32(in_zp)).astype(f32) * f32(in_scale)).astype(f32)
    y = transform(x)
    v = ((y * (f32(1.0) / f32(out_scale))).astype(f32) + f32(out_zp)).astype(f32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(v), info.min, info.max).astype(dtype)


def _sigmoid(x):
    """XNNPACK's reference SigmoidOp: 1 above 100, 0 below -100, else ``(float)(e / (1 + e))`` with
    ``e = exp((double)x)``, in double."""
    e = _core.libm("exp", np.clip(x, -100, 100).astype(np.float64))
    y = (e / (1.0 + e)).astype(np.float32)
    return np.where(x > 100, np.float32(1), np.where(x < -100, np.float32(0), y))


def _lrelu_multipliers(in_scale, out_scale, alpha):
    """xnn_init_qs8_lrelu_scalar_params: ``lrintf(256 * s_in/s_out)`` and ``lrintf(256 * (s_in/s_out) *
    alpha)`` in float32, or None where the delegate refuses the node (either scale outside [2^-8, 2^7])."""
    f32 = np.float32
    pos = f32(f32(in_scale) / f32(out_scale))
    neg = f32(pos * f32(alpha))
    if not (2.0**-8 <= pos <= 128.0 and -127.99609375 <= neg <= 128.0 and abs(neg) >= 2.0**-8):
        return None
    return int(np.rint(f32(256.0) * pos)), int(np.rint(f32(f32(256.0) * neg)))


def _delegated(dtype):
    return np.dtype(dtype) == np.int8


def logistic_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    if not _delegated(dtype):
        return tflite.logistic_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype)
    return _reference_unary(_sigmoid, in_scale, in_zp, out_scale, out_zp, dtype)


def tanh_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    if not _delegated(dtype):
        return tflite.tanh_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype)
    return _reference_unary(lambda v: _core.libm("tanhf", v), in_scale, in_zp, out_scale, out_zp, dtype)


def leaky_relu_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype):
    """qs8-vlrelu: ``((q - zp_in) * m + 128) >> 8`` (arithmetic), ``m`` the positive multiplier where
    q >= zp_in, + zp_out, saturated (the scalar and AVX2 kernels agree: vpmulhrsw on (zp - q) << 7)."""
    ms = _lrelu_multipliers(in_scale, out_scale, attrs.get("alpha", 0.01)) if _delegated(dtype) else None
    if ms is None:
        return tflite.leaky_relu_table(attrs, in_scale, in_zp, out_scale, out_zp, dtype)
    v = np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).astype(np.int64) - int(in_zp)
    y = ((v * np.where(v >= 0, ms[0], ms[1]) + 128) >> 8) + int(out_zp)
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


TABLES = {"sigmoid": logistic_table, "tanh": tanh_table, "hardswish": tflite.hard_swish_table,
          "leaky_relu": leaky_relu_table}


# ---------------------------------------------------------------- QUANTIZE 8-bit -> 8-bit and MEAN

def requantize(q, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """qs8-vcvt (QUANTIZE int8 -> int8): ``(((q - zp_in) * m + 128) >> 8) + zp_out``, ``m = lrintf(256 *
    (s_in / s_out))`` in float32, saturated; uint8 ends and scale ratios outside [2^-8, 2^7] are not
    delegated, so TFLite's optimized kernel runs them."""
    q = np.asarray(q)
    ratio = np.float32(np.float32(in_scale) / np.float32(out_scale))
    if not (q.dtype == np.int8 and np.dtype(dtype) == np.int8 and 2.0**-8 <= ratio <= 128.0):
        return tflite.requantize_optimized(q, in_scale, in_zero_point, out_scale, out_zero_point, dtype)
    m = int(np.rint(np.float32(256.0) * ratio))
    y = (((q.astype(np.int64) - int(in_zero_point)) * m + 128) >> 8) + int(out_zero_point)
    return np.clip(y, -128, 127).astype(np.int8)


def mean(sums, count, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """The static-reduce mean (src/operators/reduce-nd.c): qs8 rsum of the raw inputs into int32, then
    the reference int32 -> qs8 convert with its scale and zero point folded: ``nearbyint((float)sum *
    inv + zp)``, ``inv = (s_in / s_out) * (1.0f / count)``, ``zp = (float)zp_out - (float)(count *
    zp_in) * inv``, all float32, saturated.  uint8 is not delegated: TFLite's reference MEAN runs it."""
    if np.dtype(dtype) != np.int8:
        return tflite.mean_reference(sums, count, in_scale, in_zero_point, out_scale, out_zero_point, dtype)
    f32 = np.float32
    inv = f32(f32(f32(in_scale) / f32(out_scale)) * f32(f32(1.0) / f32(count)))
    zp = f32(f32(out_zero_point) - f32(f32(int(count) * int(in_zero_point)) * inv))
    v = (np.asarray(sums, np.int64).astype(f32) * inv).astype(f32)
    return np.clip(np.rint((v + zp).astype(f32)), -128, 127).astype(np.int8)


def sub_params(a_scale, b_scale, out_scale, a_zero_point, b_zero_point):
    """XNNPACK's SUB: its ADD (:func:`add_params`) with b's scale negated, so b's multiplier is ``-m_b``
    and the bias ``2^(shift-1) - m_a za + m_b zb``."""
    m_a, m_b, shift, _ = add_params(a_scale, b_scale, out_scale, a_zero_point, b_zero_point)
    return m_a, -m_b, shift, (1 << (shift - 1)) - m_a * int(a_zero_point) + m_b * int(b_zero_point)


def sub(a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi, dtype):
    """qs8 vadd with b's multiplier negated: ``((bias + a m_a - b m_b) >> shift) + zp_out``, ties up; uint8
    is not delegated (TFLite's SUB)."""
    if np.dtype(dtype) != np.int8:
        return tflite.sub(a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi, dtype)
    m_a, m_b, shift, bias = sub_params(np.float32(a_scale), np.float32(b_scale), np.float32(out_scale),
                                       a_zero_point, b_zero_point)
    acc = bias + np.asarray(a).astype(np.int64) * m_a + np.asarray(b).astype(np.int64) * m_b
    return np.clip((acc >> shift) + int(out_zero_point), lo, hi).astype(dtype)


def binary_delegated(op, a_scale, b_scale, out_scale):
    """Whether the delegate takes an int8 ADD / SUB / MUL (VisitBinaryNode, any broadcast): ``s_a / s_out``
    and ``s_b / s_out`` in [2^-10, 2^8) for ADD and SUB, ``s_a * s_b / s_out`` in [2^-16, 2^8) for MUL, all
    float32; else TFLite's optimized kernel runs it."""
    f32 = np.float32
    if op == "mul":
        ratios, low = [f32(f32(f32(a_scale) * f32(b_scale)) / f32(out_scale))], 2.0**-16
    else:
        ratios, low = [f32(f32(a_scale) / f32(out_scale)), f32(f32(b_scale) / f32(out_scale))], 2.0**-10
    return all(low <= r < 256.0 for r in ratios)
