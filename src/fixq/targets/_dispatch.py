"""The recipe table of every runtime module, and the functions that check their arguments and run a
(target, op)'s recipe: fixq's kernels for the recipes that are one of their modes, the runtime
module's numpy arithmetic for the others."""
import numpy as np

from ..arith import quantize_multiplier, requantize as _requantize
from .._validate import INT_RANGES, axis_arg, dtype_arg, per_channel, scalar_zero_point_arg, zero_point_arg
from . import gemmlowp, onnxruntime, tflite, xnnpack
from ._common import f32, into, out_range

TARGETS = ("gemmlowp", "tflite", "tflite-reference", "xnnpack", "onnxruntime")
# "matmul" is FULLY_CONNECTED / MatMul / QLinearMatMul; conv and depthwise_conv requantize their int32
# accumulators like matmul but some runtimes treat them differently.
OPS = ("matmul", "conv", "depthwise_conv", "add", "mul", "quantize")
_MORE_RECIPES = ("quantize_per_axis", "activation")
_GEMM_OPS = ("matmul", "conv", "depthwise_conv")
_RECIPES = {**gemmlowp.RECIPES, **tflite.RECIPES, **xnnpack.RECIPES, **onnxruntime.RECIPES}
# The float range of each fused activation (None: unbounded), as TFLite's and XNNPACK's
# ConvertActivationToOutputRange give it.
_ACTIVATION_BOUNDS = {"none": (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}
ACTIVATIONS = tuple(_ACTIVATION_BOUNDS)


def target_arg(target):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    return target


def recipe(target, op):
    """The :class:`Recipe` that `target` uses for `op`: one of :data:`OPS`, ``"quantize_per_axis"``
    (QUANTIZE with one scale per index of an axis, which some runtimes compute with another kernel)
    or ``"activation"`` (how the bounds of a fused activation are quantized, :func:`activation_range`)."""
    target_arg(target)
    if op not in OPS and op not in _MORE_RECIPES:
        raise ValueError(f"op must be one of {list(OPS + _MORE_RECIPES)}, got {op!r}")
    return _RECIPES[target][op]


def mean_stage(target, in_scale, out_scale, count):
    """The output stage (``rounding`` plus ``scale``) with which `target` requantizes the int32 sum of
    (q - zp_in) over a global average pool's `count` values, or None where fixq has no recipe of
    `target`'s for it (the model's own requantization of ``s_in / (s_out * count)`` applies; TFLite's
    MEAN is not emulated yet)."""
    rc = _RECIPES[target_arg(target)].get("global_avgpool")
    if rc is None:
        return None
    return dict(rounding=rc.rounding, scale=np.array([rc.compute(in_scale, out_scale, count)], np.float32))


def _gemm_recipe(target, op):
    rc = recipe(target, op)
    if op not in _GEMM_OPS:
        raise ValueError(f"op must be one of {list(_GEMM_OPS)} here, got {op!r}")
    return rc


def _real_multiplier(rc, in_scale, w_scale, out_scale):
    """The runtime's real multiplier / scale: float64 or float32 arithmetic, per channel where w_scale is."""
    s_in, s_w, s_out = f32(in_scale, "in_scale"), f32(w_scale, "w_scale"), f32(out_scale, "out_scale")
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


def real_multiplier(target, op, in_scale, w_scale, out_scale):
    """`target`'s real multiplier for the GEMM op `op` (matmul, conv, depthwise_conv), computed in float64
    or float32 as that runtime computes it, per channel where `w_scale` is, and checked as its output
    stage checks it."""
    rc = _gemm_recipe(target, op)
    real = _real_multiplier(rc, in_scale, w_scale, out_scale)
    _check_real(target, op, rc, real)
    return real


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
    lo, hi = out_range(out_min, out_max, dt)
    a = np.asarray(acc)
    stage = gemm_out_stage(target, op, in_scale, w_scale, out_scale)
    if stage is not None:
        return _requantize(a, zero_point=out_zero_point, qmin=lo, qmax=hi, dtype=dt, axis=axis, **stage)
    real = _real_multiplier(rc, in_scale, w_scale, out_scale)
    per_channel = np.size(real) > 1
    x = np.moveaxis(a.astype(np.int64), axis, -1) if per_channel else a.astype(np.int64)
    y = np.clip(rc.compute(x, real) + int(out_zero_point), lo, hi).astype(dt)
    return np.moveaxis(y, -1, axis) if per_channel else y


def qgemm(fn, a, b, *, target, scales, op="matmul", out=None, **kwargs):
    """``fn`` (:func:`fixq.qmatmul`, :func:`fixq.qlinear`, :func:`fixq.qconv2d` or their kernels in
    fixq.gemm / fixq.conv) with the output stage of `target` for `op`: ``scales = (a_scale, b_scale,
    out_scale)`` with ``b_scale`` per tensor or per output column (channel)."""
    for k in ("multiplier", "shift", "scale", "rounding"):
        if kwargs.get(k) is not None:
            raise ValueError(f"target={target!r} derives {k} from scales=(a_scale, b_scale, out_scale); leave {k} out")
        kwargs.pop(k, None)
    in_scale, w_scale, out_scale = scales_arg(scales)
    stage = gemm_out_stage(target, op, in_scale, w_scale, out_scale)
    if stage is not None:
        return fn(a, b, out=out, **kwargs, **stage)
    head = {k: kwargs.pop(k) for k in ("out_zero_point", "out_min", "out_max", "out_dtype") if k in kwargs}
    acc = fn(a, b, out_dtype=np.int32, **kwargs)
    y = requantize(acc, target, op, in_scale, w_scale, out_scale, head.get("out_zero_point", 0),
                   out_min=head.get("out_min"), out_max=head.get("out_max"), dtype=head.get("out_dtype", np.int8))
    return into(y, out)


def scales_arg(scales):
    """``(a_scale, b_scale, out_scale)`` of the ``scales=`` a GEMM with ``target=`` takes."""
    try:
        in_scale, w_scale, out_scale = scales
    except (TypeError, ValueError):
        raise ValueError(f"target= needs scales=(a_scale, b_scale, out_scale), got {scales!r}") from None
    return in_scale, w_scale, out_scale


def add(a, b, target, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
        out_min=None, out_max=None, out_dtype=np.int8, out=None):
    """Quantized ADD exactly as `target` computes it (numpy broadcasting)."""
    return recipe(target, "add").compute(
        a, b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point,
        out_scale=out_scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype,
        out=out)


def mul(a, b, target, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
        out_min=None, out_max=None, out_dtype=np.int8, out=None):
    """Quantized MUL exactly as `target` computes it (numpy broadcasting)."""
    return recipe(target, "mul").compute(
        a, b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point,
        out_scale=out_scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype,
        out=out)


def quantize(x, target, scale, zero_point=0, dtype=np.int8, axis=None):
    """QUANTIZE / QuantizeLinear of float32 `x` exactly as `target` computes it: per tensor, or with
    ``axis`` one scale and zero point per index of that axis (ONNX QuantizeLinear's ``axis``, TFLite's
    per-channel ``quantized_dimension``).  Parameters of length 1 along an axis are per tensor, as both
    runtimes take them."""
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    xf = np.asarray(x, np.float32)
    if np.isnan(xf).any():
        raise ValueError("x contains NaN")
    if axis is None:
        s = f32(scale, "scale")
        if s.size != 1 or (type(zero_point) is not int and np.size(zero_point) != 1):
            raise ValueError("quantize(target=...): one scale and zero point per index of an axis need axis=")
        zp = scalar_zero_point_arg(zero_point, dt, "zero_point")
        return recipe(target, "quantize").compute(xf, s.reshape(-1)[0], zp, dt, None)
    if xf.ndim == 0:
        raise ValueError("axis= needs an array with at least one dimension")
    ax = axis_arg(axis, xf.ndim)
    if np.size(scale) == 1 and np.size(zero_point) == 1:
        return quantize(xf, target, scale, zero_point, dt)
    channels = xf.shape[ax]
    s = f32(per_channel(scale, channels, "scale", np.float64), "scale")
    zp = zero_point_arg(zero_point, channels, dt)
    if channels == 0:
        return np.empty(xf.shape, dt)
    return recipe(target, "quantize_per_axis").compute(xf, s, zp, dt, ax)


def activation_range(activation, out_scale, out_zero_point, out_dtype=np.int8, target=None):
    """``(lo, hi)``, Python ints: the output clamp of a fused `activation` (``"none"`` or None,
    ``"relu"``, ``"relu6"``, ``"relu_n1_to_1"``) on an output with `out_scale` and `out_zero_point`.

    `target` quantizes the activation's bounds its own way (``recipe(target, "activation")``; TFLite:
    ``zp + std::round(6.0f / s)``, float32 division, ties away from zero).  ``target=None`` is fixq's
    own rule, ``zp + round(6.0 / s)`` in float64 with Python's round (ties to even).  Both are then
    clamped to the range of `out_dtype`.  ``out_scale`` may be None for ``"none"`` and ``"relu"``,
    whose bounds do not depend on it."""
    bounds = _ACTIVATION_BOUNDS.get("none" if activation is None else activation) \
        if activation is None or isinstance(activation, str) else None
    if bounds is None:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)} or None, got {activation!r}")
    dt = dtype_arg(out_dtype, (np.int8, np.uint8, np.int16), "out_dtype")
    qmin, qmax = INT_RANGES[dt]
    zp = scalar_zero_point_arg(out_zero_point, dt, "out_zero_point")
    bound = _fixq_bound if target is None else recipe(target, "activation").compute
    if out_scale is None:
        if any(bounds):  # a bound other than 0 (which every rule quantizes to the zero point)
            raise ValueError(f"activation={activation!r} needs out_scale: its bounds are quantized with it")
    elif np.ndim(out_scale):
        raise ValueError(f"out_scale must be a scalar (a per-tensor output), got shape {np.shape(out_scale)}")
    else:
        f32(out_scale, "out_scale")

    def q(v, unbounded):
        if v is None:
            return unbounded
        return min(max(zp, qmin), qmax) if v == 0.0 else bound(v, out_scale, zp, qmin, qmax)
    return q(bounds[0], qmin), q(bounds[1], qmax)


def _fixq_bound(value, scale, zero_point, qmin, qmax):
    """fixq's own rule (its engine's since the first release): zp + round(f / s), the division in
    float64 on the scale as given, Python's round (ties to even)."""
    return min(max(zero_point + round(value / float(scale)), qmin), qmax)
