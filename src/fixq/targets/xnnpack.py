"""XNNPACK as TFLite's default delegate (BUILTIN).  The numpy arithmetic here is XNNPACK's own: its
one-rounding fixed-point ADD, its float32 MUL and how it quantizes an activation's bounds.  Per-channel
QUANTIZE is not delegated (the delegate takes per-tensor quantized tensors only), so TFLite's kernel
computes it."""
import numpy as np

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
