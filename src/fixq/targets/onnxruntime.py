"""ONNX Runtime's CPU execution provider (MLAS).  The numpy arithmetic here is its float32
QLinearAdd / QLinearMul, which add the output zero point in float before rounding, and the
QuantizeLinear of an activation's bounds (ONNX has no fused activation: Relu / Clip run on the
dequantized values and the next QuantizeLinear rounds their bounds)."""
import math

import numpy as np

from .. import _core, arith
from ._common import AFTER, SAT, Recipe, binary_args, float32_product, into, quantize_divide


def _add(a, b, *, out, **kw):
    """MLAS QLinearAdd as the x86 build runs it: float32 dequantize-add, divide, clamp, + zero point in
    float, round half to even."""
    da, db, sa, sb, so, zo, dt, lo, hi = binary_args(a, b, **kw)
    fa = (da.astype(np.float32) * sa).astype(np.float32)
    fb = (db.astype(np.float32) * sb).astype(np.float32)
    v = np.clip(((fa + fb).astype(np.float32) / so).astype(np.float32), lo - zo, hi - zo).astype(np.float32)
    return into(np.rint((v + np.float32(zo)).astype(np.float32)).astype(dt), out)


def _mul(a, b, *, out, **kw):
    """MLAS QLinearMul (SSE2 kernel): rne((float)product * scale + (float)zp), saturating packs."""
    v, zo, dt, lo, hi = float32_product(a, b, **kw)
    v = np.rint((v + np.float32(zo)).astype(np.float32))
    return into(np.clip(v, lo, hi).astype(dt), out)


def activation_bound(value, scale, zero_point, qmin, qmax):
    """QuantizeLinear(f): saturate(rne(f / scale) + zp), the division in float32."""
    q = np.rint(np.float32(value) / np.float32(scale))
    return min(max(zero_point + int(np.clip(q, -2.0**31, 2.0**31)), qmin), qmax)


GEMM = Recipe(
    "float32", "fp32", AFTER, "float clamp to [qmin - zp, qmax - zp] before rounding (same result)", "fixq",
    "rne((float)acc * scale[c]) + zp, scale[c] = s_a * s_b[c] / s_y in float32 (MlasRequantizeOutput), "
    "round half to even")
ADD = Recipe(
    "float32", "fp32-add", "in float32, before rounding", "float clamp to [qmin - zp, qmax - zp] before adding zp",
    "numpy",
    "rne(clamp(((float)(a - za) * s_a + (float)(b - zb) * s_b) / s_out) + (float)z_out) (MLAS QLinearAdd "
    "as observed: the zero point is added in float, so odd zero points move ties); the fixed-point MLAS "
    "path is NEON-only", _add)
MUL = Recipe(
    "float32", "fp32-mul", "in float32, before rounding", "int32 -> int16 -> int8 saturating packs", "numpy",
    "rne((float)((a - za)(b - zb)) * (s_a * s_b / s_out in float32) + (float)z_out) (MLAS QLinearMul SSE2)", _mul)
QUANTIZE = Recipe(
    "-", "div-even", AFTER, SAT, "fixq",
    "rne(x / scale[c]) + zp[c] in float32 (ONNX QuantizeLinear, MLAS vdivps; per axis the same per channel)",
    quantize_divide)
ACTIVATION = Recipe(
    "-", "div-even", AFTER, SAT, "numpy",
    "QuantizeLinear of the bound: zp + rne(f / s_y) in float32, saturated (Relu: [zp, qmax], "
    "Clip(0, 6): [zp, q(6)], Clip(-1, 1): [q(-1), q(1)])", activation_bound)

def qlinear_avgpool(x, kernel, stride, padding, in_scale, in_zp, out_scale, out_zp, dtype, as_uint8=False):
    """ORT QLinearAveragePool (contrib_ops/cpu/quantization/qlinear_pool.cc), count_include_pad=1, on NHWC
    `x`: each input dequantized as x_scale * (int)(q - zp) in float32, each window summed in float32 row
    by row (padding adds nothing), divided by the kernel area, then
    saturate(nearbyintf(y / y_scale + (float)y_zero_point)): the zero point added before rounding, ties
    to even.  A window over the whole image without padding is QLinearGlobalAveragePool's arithmetic
    (the kernel's fallback): the int32 sum of (q - zp) times mean_scale, rounded half to even, + zp.
    `as_uint8`: int8 `x` runs as ORT runs a QDQ int8 model, on uint8 values with zero points + 128
    (QDQS8ToU8Transformer), which moves the ties of the float zero-point addition."""
    if as_uint8 and np.dtype(dtype) == np.int8:
        u = qlinear_avgpool((x.astype(np.int16) + 128).astype(np.uint8), kernel, stride, padding, in_scale,
                            in_zp + 128, out_scale, out_zp + 128, np.uint8)
        return (u.astype(np.int16) - 128).astype(np.int8)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    if (kh, kw) == (h, w) and (ph, pw) == (0, 0):
        acc = x.sum(axis=(1, 2), dtype=np.int32, keepdims=True) - np.int32(in_zp * h * w)
        v = np.rint((acc.astype(np.float32) * mean_scale(in_scale, out_scale, h * w)).astype(np.float32))
        return np.clip(v + out_zp, lo, hi).astype(dtype)
    f = (np.float32(in_scale) * (x.astype(np.int32) - in_zp).astype(np.float32)).astype(np.float32)
    f = np.pad(f, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    acc = np.zeros((n, oh, ow, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            acc += f[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
    y = (acc / np.float32(kh * kw)).astype(np.float32)
    v = np.rint(((y / np.float32(out_scale)).astype(np.float32) + np.float32(out_zp)).astype(np.float32))
    return np.clip(v, lo, hi).astype(dtype)


def concat_table(in_scale, in_zp, out_scale, out_zp, dtype):
    """ORT QLinearConcat's table of an input at another scale or zero point (QlinearBuildLookupTable of the
    identity): for each input byte, saturate(rne(x_scale * (q - x_zp) / y_scale) + y_zp), float32
    (MlasQuantizeLinear), indexed by the input's byte."""
    q = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int32)
    x = (np.float32(in_scale) * (q - in_zp).astype(np.float32)).astype(np.float32)
    v = np.rint((x / np.float32(out_scale)).astype(np.float32)) + out_zp
    return np.clip(v, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


def concat_scale(in_scale, in_zp, out_scale, out_zp, dtype):
    """A float32 scale whose fixq output stage (``rounding="fp32"``: rne((float)(q - x_zp) * scale) + y_zp)
    gives :func:`concat_table` on all 256 inputs (the float32 ratio or a neighbour), so that the C plan runs
    ORT's concat; None when none does."""
    table = concat_table(in_scale, in_zp, out_scale, out_zp, dtype)
    d = (np.arange(256, dtype=np.uint8).view(dtype).astype(np.int32) - in_zp).astype(np.int32)
    c = np.float32(np.float64(in_scale) / np.float64(out_scale))
    for cand in (c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(0))):
        got = arith.requantize(d, scale=cand, zero_point=out_zp, dtype=dtype, rounding="fp32")
        if np.array_equal(got, table):
            return np.float32(cand)
    return None


def dynamic_qparams(x):
    """ORT DynamicQuantizeLinear's uint8 parameters of float32 `x` (GetQuantizationParameter), all in float32:
    the range widened to hold 0, scale = (hi - lo) / 255 (1 where that is 0), zero point =
    round_half_even(clamp(0 - lo / scale, 0, 255)), the C rule of float_ops.dynamic_linear.  (scale, zero point);
    a ValueError for NaN or infinity."""
    x = np.asarray(x, np.float32)
    scale, zp = _core.dynamic_qparams_raw(*((x.min(), x.max()) if x.size else (0, 0)))
    return np.float32(scale), zp


def qlinear_softmax_table(in_scale, d):
    """ORT QLinearSoftmax's float32 table for rows of `d` values (QlinearBuildLookupTableUint32 as onnxruntime 1.32's
    x86-64 build computes it): shift = max(0, (double)logf(FLT_MAX / d) - 5) / x_scale, then entry i =
    (float)exp(((double)i - 255 + shift) * x_scale), the entry of a value 255 - i below its row's maximum.
    logf is taken as the float32 rounding of the double log (glibc's logf differs from it for 3 row lengths
    below 200000: 60594, 96962 and 141948)."""
    s = float(np.float32(in_scale))
    big = float(np.float32(np.finfo(np.float32).max) / np.float32(d))
    shift = max(0.0, float(np.float32(math.log(big))) - 5.0) / s
    return np.array([math.exp((i - 255 + shift) * s) for i in range(256)], np.float32)


def qlinear_softmax(x, in_scale, out_scale, out_zero_point, dtype):
    """ORT QLinearSoftmax (com.microsoft; onnxruntime 1.32's QlinearSoftmaxCPU) over the last axis of uint8 / int8
    `x`: each value's table entry by its distance to the row's maximum, their float32 sum from first to last,
    then saturate(nearbyint((double)entry * (double)floorf(1.0f / y_scale) / (double)sum) + y_zero_point), the
    product, quotient and rounding in double, ties to even."""
    dt = np.dtype(dtype)
    xi = np.asarray(x).astype(np.int32)
    if xi.size == 0:
        return np.empty(xi.shape, dt)
    e = qlinear_softmax_table(in_scale, xi.shape[-1])[xi - xi.max(axis=-1, keepdims=True) + 255]
    total = np.cumsum(e, axis=-1, dtype=np.float32)[..., -1:]  # sequential float32 sum (np.sum is pairwise)
    y_scale = float(np.floor(np.float32(1) / np.float32(out_scale)))
    v = np.rint(e.astype(np.float64) * y_scale / total.astype(np.float64)) + int(out_zero_point)
    info = np.iinfo(dt)
    return np.clip(v, info.min, info.max).astype(dt)


def mean_scale(in_scale, out_scale, count):
    """MLAS QLinearGlobalAveragePool's scale: ScaleInput / (ScaleOutput * (float)ImageSize) in float32."""
    return np.float32(np.float32(in_scale) / np.float32(np.float32(out_scale) * np.float32(count)))


MEAN = Recipe(
    "float32", "fp32", AFTER, SAT, "fixq",
    "rne((float)(sum of (q - zp_in)) * scale) + zp, scale = s_in / (s_out * (float)(H*W)) in float32 "
    "(MLAS QLinearGlobalAveragePool)", mean_scale)

RECIPES = {
    "onnxruntime": dict(matmul=GEMM, conv=GEMM, depthwise_conv=GEMM, add=ADD, mul=MUL, quantize=QUANTIZE,
                        quantize_per_axis=QUANTIZE, activation=ACTIVATION, global_avgpool=MEAN),
}
