"""Emulation targets: the exact requantization each runtime applies, per op.

``target=`` names a runtime; each (target, op) maps to a :class:`Recipe` that
says how that runtime derives its multiplier (double or float32 arithmetic),
how it rounds (each step's tie rule), where it adds the zero point and how it
clamps.  The recipes were read off the runtimes themselves (golden vectors in
tests/conformance/, made by tests/conformance/generate.py) and checked against
their sources; docs/conformance.md has one table per target.

Where a recipe is one of fixq's kernel modes (``rounding="double"|"fp32"``,
float32 ``quantize``) the call goes through the C kernels.  Arithmetic that
fixq's kernels do not have (ruy's x86 epilogue, TFLite's float64 reference
FULLY_CONNECTED, XNNPACK's ADD, ONNX Runtime's float ADD/MUL, TFLite's
round-half-away QUANTIZE) runs as an exact numpy int64/float32/float64 path
here, operation for operation as the runtime does it.
"""
from dataclasses import dataclass

import numpy as np

from ._validate import INT_RANGES, dtype_arg, out_arg
from .arith import quantize as _quantize, quantize_multiplier, requantize as _rq

__all__ = ["TARGETS", "OPS", "Recipe", "recipe", "gemm_out_stage", "requantize", "qgemm", "add", "mul",
           "quantize"]

TARGETS = ("gemmlowp", "tflite", "tflite-reference", "xnnpack", "onnxruntime")
# "matmul" is FULLY_CONNECTED / MatMul / QLinearMatMul; conv and depthwise_conv requantize their int32
# accumulators like matmul but some runtimes treat them differently.
OPS = ("matmul", "conv", "depthwise_conv", "add", "mul", "quantize")


@dataclass(frozen=True)
class Recipe:
    """How one runtime requantizes one op.

    multiplier: ``"double"`` (real multiplier computed in float64 from the float32 scales, then TFLite
      QuantizeMultiplier), ``"float32"`` (the real multiplier or scale computed in float32, left to
      right as written in ``formula``) or ``"-"``.
    rounding: the rounding steps, named as in docs/conformance.md.
    zero_point: where the output zero point is added.
    clamp: how the result is brought into the output range.
    kernel: ``"fixq"`` when fixq's C kernels compute it, ``"numpy"`` for the exact numpy path here.
    """
    multiplier: str
    rounding: str
    zero_point: str
    clamp: str
    kernel: str
    formula: str


_AFTER = "integer, after rounding"
_SAT = "saturate to [qmin, qmax] (fused activation narrows it)"

_DOUBLE_GEMM = Recipe(
    "double", "double", _AFTER, _SAT, "fixq",
    "RDBPOT(SRDHM(acc << max(s,0), M), max(-s,0)): SRDHM ties to +inf, RDBPOT ties away from 0; "
    "M, s = QuantizeMultiplier((double)s_in * (double)s_w[c] / (double)s_out)")
_RUY_X86 = Recipe(
    "double", "ruy-x86", _AFTER, _SAT, "numpy",
    "t = ((acc << max(s,0)) * M + 2^30) >> 31; t = (t + 2^(r-1)) >> r with r = max(-s,0): "
    "both steps ties to +inf, no saturation (ruy AVX2/AVX-512 kernel epilogue)")
_FLOAT64_AWAY = Recipe(
    "double", "float64-away", _AFTER, _SAT, "numpy",
    "round((double)acc * ((double)s_in * (double)s_w[c] / (double)s_out)), std::round: ties away from 0")
_FP32_GEMM = Recipe(
    "float32", "fp32", _AFTER, "clamp in float to [qmin - zp, qmax - zp] before rounding (same result)",
    "fixq", "rne((float)acc * scale[c]) + zp, scale[c] = s_in * s_w[c] / s_out in float32, "
    "round half to even (cvtps2dq)")
_GEMMLOWP_GEMM = Recipe(
    "float32", "double", _AFTER, _SAT, "fixq",
    "OutputStageQuantizeDownInt32ByFixedPoint: RDBPOT(SRDHM(acc, M), -s) + offset; "
    "M, s = QuantizeMultiplierSmallerThanOne(s_in * s_w / s_out computed in float32)")
_TFLITE_ADD = Recipe(
    "double", "double", _AFTER, _SAT, "fixq",
    "TFLite ADD: left_shift 20, M_a = s_a/(2 max(s_a,s_b)), M_b likewise, M_out = 2 max(s_a,s_b)/(2^20 s_out) "
    "(float64), each via QuantizeMultiplier and applied with double rounding")
_TFLITE_MUL = Recipe(
    "double", "double", _AFTER, _SAT, "fixq",
    "TFLite MUL: MBQM((a - za)(b - zb), M, s), M, s = QuantizeMultiplier((double)s_a * s_b / s_out)")
_XNNPACK_ADD = Recipe(
    "float32", "xnnpack-add", "folded into the bias before the shift", _SAT, "numpy",
    "shift = 20 - exponent(max(s_a/s_out, s_b/s_out)); m_a = lrintf(s_a/s_out * 2^shift) (RNE), m_b likewise; "
    "bias = 2^(shift-1) - m_a za - m_b zb; out = ((bias + a m_a + b m_b) >> shift) + z_out: ties to +inf")
_XNNPACK_MUL = Recipe(
    "float32", "fp32", _AFTER, _SAT, "numpy",
    "rne((float)((a - za)(b - zb)) * (s_a * s_b / s_out in float32)) + z_out")
_ORT_ADD = Recipe(
    "float32", "fp32-add", "in float32, before rounding", "float clamp to [qmin - zp, qmax - zp] before adding zp",
    "numpy",
    "rne(clamp(((float)(a - za) * s_a + (float)(b - zb) * s_b) / s_out) + (float)z_out) (MLAS QLinearAdd "
    "as observed: the zero point is added in float, so odd zero points move ties); the fixed-point MLAS "
    "path is NEON-only")
_ORT_MUL = Recipe(
    "float32", "fp32-mul", "in float32, before rounding", "int32 -> int16 -> int8 saturating packs", "numpy",
    "rne((float)((a - za)(b - zb)) * (s_a * s_b / s_out in float32) + (float)z_out) (MLAS QLinearMul SSE2)")
_Q_DIV_EVEN = Recipe(
    "-", "div-even", _AFTER, _SAT, "fixq", "rne(x / scale) + zp in float32 (ONNX QuantizeLinear, MLAS vdivps)")
_Q_RECIP_EVEN = Recipe(
    "float32", "recip-even", _AFTER, _SAT, "fixq",
    "rne(x * (1.0f / scale)) + zp in float32 (TFLite optimized AffineQuantize / XNNPACK f32->qs8 convert)")
_Q_DIV_AWAY = Recipe(
    "-", "div-away", _AFTER, _SAT, "numpy", "std::round(x / scale) + zp in float32: ties away from 0 "
                                            "(TFLite reference AffineQuantize)")
_Q_GEMMLOWP = Recipe(
    "-", "zp-div-away", "in float32, before rounding", "clamp in float32 before rounding", "numpy",
    "std::round(clamp(zp + x / scale, qmin, qmax)) (gemmlowp doc/quantization_example.cc Quantize)")

_RECIPES = {
    "gemmlowp": dict(matmul=_GEMMLOWP_GEMM, conv=_GEMMLOWP_GEMM, depthwise_conv=_GEMMLOWP_GEMM,
                     add=_TFLITE_ADD, mul=_TFLITE_MUL, quantize=_Q_GEMMLOWP),
    "tflite": dict(matmul=_RUY_X86, conv=_RUY_X86, depthwise_conv=_DOUBLE_GEMM,
                   add=_TFLITE_ADD, mul=_TFLITE_MUL, quantize=_Q_RECIP_EVEN),
    "tflite-reference": dict(matmul=_FLOAT64_AWAY, conv=_DOUBLE_GEMM, depthwise_conv=_DOUBLE_GEMM,
                             add=_TFLITE_ADD, mul=_TFLITE_MUL, quantize=_Q_DIV_AWAY),
    "xnnpack": dict(matmul=_FP32_GEMM, conv=_FP32_GEMM, depthwise_conv=_FP32_GEMM,
                    add=_XNNPACK_ADD, mul=_XNNPACK_MUL, quantize=_Q_RECIP_EVEN),
    "onnxruntime": dict(matmul=_FP32_GEMM, conv=_FP32_GEMM, depthwise_conv=_FP32_GEMM,
                        add=_ORT_ADD, mul=_ORT_MUL, quantize=_Q_DIV_EVEN),
}


def target_arg(target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    return target


def recipe(target, op):
    """The :class:`Recipe` that `target` uses for `op` (one of :data:`OPS`)."""
    target_arg(target)
    if op not in OPS:
        raise ValueError(f"op must be one of {list(OPS)}, got {op!r}")
    return _RECIPES[target][op]


def _f32(v, name):
    a = np.asarray(v, dtype=np.float32)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return a


def _out_range(out_min, out_max, dt):
    lo, hi = INT_RANGES[dt]
    return (lo if out_min is None else int(out_min)), (hi if out_max is None else int(out_max))


def _round_away(v):
    """std::round: half away from zero (v - trunc(v) is exact, so no addition can round up)."""
    t = np.trunc(v)
    return t + np.copysign(1.0, v) * (np.abs(v - t) >= 0.5)


_GEMM_OPS = ("matmul", "conv", "depthwise_conv")


def _gemm_recipe(target, op):
    rc = recipe(target, op)
    if op not in _GEMM_OPS:
        raise ValueError(f"op must be one of {list(_GEMM_OPS)} here, got {op!r}")
    return rc


def _real_multiplier(rc, in_scale, w_scale, out_scale):
    """The runtime's real multiplier / scale: float64 or float32 arithmetic, per channel where w_scale is."""
    s_in, s_w, s_out = _f32(in_scale, "in_scale"), _f32(w_scale, "w_scale"), _f32(out_scale, "out_scale")
    if np.ndim(s_in) or np.ndim(s_out):
        raise ValueError("in_scale and out_scale must be scalars (per-tensor activations)")
    if np.ndim(s_w) > 1:
        raise ValueError(f"w_scale must be a scalar or 1-D (one per output channel), got shape {np.shape(s_w)}")
    if rc.multiplier == "double":
        return np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)
    return ((s_in * s_w).astype(np.float32) / s_out).astype(np.float32)


def gemm_out_stage(target, op, in_scale, w_scale, out_scale):
    """The output-stage arguments (``rounding`` plus ``multiplier``/``shift`` or ``scale``) with which
    :func:`fixq.qmatmul` / :func:`fixq.requantize` compute `target`'s requantization of `op`, or None
    when the target rounds in a way that is not one of fixq's kernel modes (then use :func:`requantize`
    on the int32 accumulators)."""
    rc = _gemm_recipe(target, op)
    real = _real_multiplier(rc, in_scale, w_scale, out_scale)
    _check_real(target, op, rc, real)
    if rc.rounding == "fp32":
        return dict(rounding="fp32", scale=real if np.ndim(real) else float(real))
    if rc.rounding == "double":
        m, s = quantize_multiplier(real)
        return dict(rounding="double", multiplier=m, shift=s)
    return None


def _check_real(target, op, rc, real):
    """Refuses a real multiplier a_scale * b_scale / out_scale that `target`'s output stage cannot hold:
    a float32 scale that is 0 or inf, or a Q31 multiplier needing a left shift beyond 30 (TFLite's
    ``x * (1 << left)`` overflows there, and fixq's kernels take shifts up to 30)."""
    if rc.rounding == "float64-away":
        return
    if rc.rounding == "fp32":
        bad = not np.all(np.isfinite(real) & (np.asarray(real) > 0))
        need = "a positive finite float32"
    else:
        bad = np.any(np.asarray(quantize_multiplier(real)[1]) > 30)
        need = "below 2**31 (a Q31 multiplier with a left shift of at most 30)"
    if bad:
        raise ValueError(f"target={target!r} ({op}): the requantization multiplier a_scale * b_scale / out_scale "
                         f"= {real!r} must be {need}; the scales= are too far apart for this runtime")


def requantize(acc, target, op, in_scale, w_scale, out_scale, out_zero_point=0, *, out_min=None, out_max=None,
               dtype=np.int8, axis=-1):
    """int32 accumulators (bias included) of a matmul / conv / depthwise conv requantized exactly as
    `target` does: ``w_scale`` is a scalar or one float32 per output channel along `axis`."""
    rc = _gemm_recipe(target, op)
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    lo, hi = _out_range(out_min, out_max, dt)
    a = np.asarray(acc)
    stage = gemm_out_stage(target, op, in_scale, w_scale, out_scale)
    if stage is not None:
        return _rq(a, zero_point=out_zero_point, qmin=lo, qmax=hi, dtype=dt, axis=axis, **stage)
    real = _real_multiplier(rc, in_scale, w_scale, out_scale)
    per_channel = np.size(real) > 1
    x = np.moveaxis(a.astype(np.int64), axis, -1) if per_channel else a.astype(np.int64)
    if rc.rounding == "ruy-x86":
        m, s = quantize_multiplier(real)
        m64, s64 = np.asarray(m, np.int64), np.asarray(s, np.int64)
        left, right = np.maximum(s64, 0), np.maximum(-s64, 0)
        t = ((x << left) * m64 + (1 << 30)) >> 31
        y = (t + ((np.int64(1) << right) >> 1)) >> right
    else:  # float64-away
        y = _round_away(x.astype(np.float64) * real)
    y = np.clip(y + int(out_zero_point), lo, hi).astype(dt)
    return np.moveaxis(y, -1, axis) if per_channel else y


def qgemm(fn, a, b, *, target, scales, op="matmul", out=None, **kwargs):
    """``fn`` (:func:`fixq.qmatmul` or :func:`fixq.qlinear`) with the output stage of `target`:
    ``scales = (a_scale, b_scale, out_scale)`` with ``b_scale`` per tensor or per output column."""
    for k in ("multiplier", "shift", "scale", "rounding"):
        if kwargs.get(k) is not None:
            raise ValueError(f"target={target!r} derives {k} from scales=(a_scale, b_scale, out_scale); leave {k} out")
        kwargs.pop(k, None)
    try:
        in_scale, w_scale, out_scale = scales
    except (TypeError, ValueError):
        raise ValueError(f"target= needs scales=(a_scale, b_scale, out_scale), got {scales!r}") from None
    stage = gemm_out_stage(target, op, in_scale, w_scale, out_scale)
    if stage is not None:
        return fn(a, b, out=out, **kwargs, **stage)
    head = {k: kwargs.pop(k) for k in ("out_zero_point", "out_min", "out_max", "out_dtype") if k in kwargs}
    acc = fn(a, b, out_dtype=np.int32, **kwargs)
    y = requantize(acc, target, op, in_scale, w_scale, out_scale, head.get("out_zero_point", 0),
                   out_min=head.get("out_min"), out_max=head.get("out_max"), dtype=head.get("out_dtype", np.int8))
    return _into(y, out)


def _binary_args(a, b, a_zero_point, b_zero_point, out_zero_point, out_dtype, out_min, out_max):
    a, b = np.asarray(a), np.asarray(b)
    for v, name in ((a, "a"), (b, "b")):
        if v.dtype not in (np.int8, np.uint8):
            raise TypeError(f"{name} must be int8 or uint8, got {v.dtype}")
    dt = dtype_arg(out_dtype, (np.int8, np.uint8), "out_dtype")
    lo, hi = _out_range(out_min, out_max, dt)
    return (a.astype(np.int64) - int(a_zero_point), b.astype(np.int64) - int(b_zero_point),
            int(out_zero_point), dt, lo, hi)


def _into(y, out):
    """`y`, or `y` copied into `out`, checked as fixq.qmatmul / fixq.qadd check theirs."""
    if out is None:
        return y
    out_arg(out, y.shape, y.dtype)[...] = y
    return out


def add(a, b, target, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
        out_min=None, out_max=None, out_dtype=np.int8, out=None):
    """Quantized ADD exactly as `target` computes it (numpy broadcasting)."""
    rc = recipe(target, "add")
    kw = dict(a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point,
              out_scale=out_scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max,
              out_dtype=out_dtype)
    if rc is _TFLITE_ADD:
        from .eltwise import qadd
        return qadd(a, b, rounding="double", out=out, **kw)
    da, db, zo, dt, lo, hi = _binary_args(a, b, a_zero_point, b_zero_point, out_zero_point, out_dtype,
                                          out_min, out_max)
    sa, sb, so = _f32(a_scale, "a_scale"), _f32(b_scale, "b_scale"), _f32(out_scale, "out_scale")
    if rc is _XNNPACK_ADD:
        ra, rb = np.float32(sa / so), np.float32(sb / so)
        exponent = int((np.array(max(ra, rb), np.float32).view(np.uint32) >> 23) & 0xFF) - 127
        shift = 20 - exponent
        if not 0 < shift < 32:
            raise ValueError(f"XNNPACK ADD cannot represent scale ratios {float(ra)!r}, {float(rb)!r} (shift {shift})")
        pot = np.float32(2.0 ** shift)
        m_a, m_b = int(np.rint(np.float32(ra * pot))), int(np.rint(np.float32(rb * pot)))
        za, zb = int(a_zero_point), int(b_zero_point)
        bias = (1 << (shift - 1)) - m_a * za - m_b * zb
        acc = bias + (da + za) * m_a + (db + zb) * m_b
        return _into(np.clip((acc >> shift) + zo, lo, hi).astype(dt), out)
    # onnxruntime: float32 dequantize-add, divide, clamp, + zero point in float, round half to even
    fa = (da.astype(np.float32) * sa).astype(np.float32)
    fb = (db.astype(np.float32) * sb).astype(np.float32)
    v = np.clip(((fa + fb).astype(np.float32) / so).astype(np.float32), lo - zo, hi - zo).astype(np.float32)
    return _into(np.rint((v + np.float32(zo)).astype(np.float32)).astype(dt), out)


def mul(a, b, target, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
        out_min=None, out_max=None, out_dtype=np.int8, out=None):
    """Quantized MUL exactly as `target` computes it (numpy broadcasting)."""
    rc = recipe(target, "mul")
    if rc is _TFLITE_MUL:
        from .eltwise import qmul
        return qmul(a, b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point,
                    out_scale=out_scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max,
                    out_dtype=out_dtype, rounding="double", out=out)
    da, db, zo, dt, lo, hi = _binary_args(a, b, a_zero_point, b_zero_point, out_zero_point, out_dtype,
                                          out_min, out_max)
    sa, sb, so = _f32(a_scale, "a_scale"), _f32(b_scale, "b_scale"), _f32(out_scale, "out_scale")
    scale = np.float32(np.float32(sa * sb) / so)
    v = ((da * db).astype(np.float32) * scale).astype(np.float32)
    if rc is _ORT_MUL:
        v = np.rint((v + np.float32(zo)).astype(np.float32))
        return _into(np.clip(v, lo, hi).astype(dt), out)
    return _into(np.clip(np.rint(v).astype(np.int64) + zo, lo, hi).astype(dt), out)


def quantize(x, target, scale, zero_point=0, dtype=np.int8):
    """QUANTIZE / QuantizeLinear of float32 `x` (per-tensor) exactly as `target` computes it."""
    rc = recipe(target, "quantize")
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    s = _f32(scale, "scale")
    xf = np.asarray(x, np.float32)
    if np.isnan(xf).any():
        raise ValueError("x contains NaN")
    lo, hi = INT_RANGES[dt]
    zp = int(zero_point)
    if rc is _Q_DIV_EVEN:
        return _quantize(xf, float(s), zp, dtype=dt)
    if rc is _Q_RECIP_EVEN:
        return _quantize((xf * (np.float32(1.0) / s)).astype(np.float32), 1.0, zp, dtype=dt)
    q = (xf / s).astype(np.float32)
    if rc is _Q_GEMMLOWP:
        v = np.clip((np.float32(zp) + q).astype(np.float32), lo, hi)
        return _round_away(v).astype(dt)
    return np.clip(_round_away(np.clip(q, -2.0**31, 2.0**31)) + zp, lo, hi).astype(dt)
