"""What the runtime modules of fixq.targets share: the :class:`Recipe` record, the argument checks
of their numpy paths, and the two float32 quantize recipes that fixq's quantize kernel computes."""
from dataclasses import dataclass, field

import numpy as np

from ..arith import quantize as _quantize
from .._validate import INT_RANGES, dtype_arg, out_arg

AFTER = "integer, after rounding"
SAT = "saturate to [qmin, qmax] (fused activation narrows it)"


@dataclass(frozen=True)
class Recipe:
    """How one runtime requantizes one op.

    multiplier: ``"double"`` (real multiplier computed in float64 from the float32 scales, then TFLite
      QuantizeMultiplier), ``"float32"`` (the real multiplier or scale computed in float32, left to
      right as written in ``formula``) or ``"-"``.
    rounding: the rounding steps, named as in docs/conformance.md.
    zero_point: where the output zero point is added.
    clamp: how the result is brought into the output range.
    kernel: ``"fixq"`` when fixq's C kernels compute it, ``"numpy"`` for an exact numpy path.
    compute: the function that computes it, called by fixq.targets with arguments already checked;
      None for a GEMM output stage that is one of fixq's kernel modes (``rounding`` ``"double"`` or
      ``"fp32"``: :func:`fixq.targets.gemm_out_stage` gives its arguments).  Its arguments by op:
      GEMM ``(acc, real)``: int64 accumulators (channels on the last axis) and the real multiplier,
      returning int64 results before the zero point; add/mul: those of :func:`fixq.targets.add`;
      quantize ``(x, scale, zero_point, dtype, axis)``: float32 ``x``, float32 scale and int zero point
      per tensor (``axis`` None) or 1-D per index of ``axis``; activation ``(value, scale, zero_point,
      qmin, qmax)``: the int a bound of the activation (6.0 for relu6) quantizes to, inside [qmin, qmax].
    """
    multiplier: str
    rounding: str
    zero_point: str
    clamp: str
    kernel: str
    formula: str
    compute: object = field(default=None, repr=False, compare=False)


def f32(v, name):
    """`v` as float32, every value finite and > 0 (the scales a runtime holds)."""
    a = np.asarray(v, dtype=np.float32)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return a


def out_range(out_min, out_max, dt):
    lo, hi = INT_RANGES[dt]
    return (lo if out_min is None else int(out_min)), (hi if out_max is None else int(out_max))


def round_away(v):
    """std::round: half away from zero (v - trunc(v) is exact, so no addition can round up)."""
    t = np.trunc(v)
    return t + np.copysign(1.0, v) * (np.abs(v - t) >= 0.5)


def along(v, axis, ndim):
    """`v` (per tensor, or 1-D with one value per index of `axis`) shaped to broadcast against an
    array of `ndim` dimensions."""
    return v if axis is None else np.reshape(v, (-1,) + (1,) * (ndim - 1 - axis))


def into(y, out):
    """`y`, or `y` copied into `out`, checked as fixq.qmatmul / fixq.qadd check theirs."""
    if out is None:
        return y
    out_arg(out, y.shape, y.dtype)[...] = y
    return out


def binary_args(a, b, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min,
                out_max, out_dtype):
    """What a numpy add/mul path computes with: the operands less their zero points (int64), the three
    float32 scales, and the output's zero point, dtype and clamp."""
    a, b = np.asarray(a), np.asarray(b)
    for v, name in ((a, "a"), (b, "b")):
        if v.dtype not in (np.int8, np.uint8):
            raise TypeError(f"{name} must be int8 or uint8, got {v.dtype}")
    dt = dtype_arg(out_dtype, (np.int8, np.uint8), "out_dtype")
    lo, hi = out_range(out_min, out_max, dt)
    scales = f32(a_scale, "a_scale"), f32(b_scale, "b_scale"), f32(out_scale, "out_scale")
    return (a.astype(np.int64) - int(a_zero_point), b.astype(np.int64) - int(b_zero_point), *scales,
            int(out_zero_point), dt, lo, hi)


def product_scale(a_scale, b_scale, out_scale):
    """``s_a * s_b / s_out`` in float32, left to right: the scale XNNPACK's and MLAS's MUL multiply the
    integer product by."""
    sa, sb, so = f32(a_scale, "a_scale"), f32(b_scale, "b_scale"), f32(out_scale, "out_scale")
    return np.float32(np.float32(sa * sb) / so)


def float32_product(a, b, **kw):
    """``(float)((a - za)(b - zb)) * scale`` with :func:`product_scale` (XNNPACK's and MLAS's MUL before
    they round), and the output's zero point, dtype and clamp."""
    da, db, sa, sb, so, zo, dt, lo, hi = binary_args(a, b, **kw)
    scale = product_scale(sa, sb, so)
    return ((da * db).astype(np.float32) * scale).astype(np.float32), zo, dt, lo, hi


def quantize_divide(x, scale, zero_point, dtype, axis):
    """``rne(x / scale) + zp`` in float32: fixq's quantize kernel as it is (a per-tensor scale as a
    Python float, which its argument cache takes)."""
    return _quantize(x, float(scale) if axis is None else scale, zero_point, dtype, axis)


def quantize_reciprocal(x, scale, zero_point, dtype, axis):
    """``rne(x * (1.0f / scale)) + zp``: the float32 product, then fixq's quantize kernel with scale 1."""
    inv = (np.float32(1.0) / along(scale, axis, x.ndim)).astype(np.float32)
    return _quantize((x * inv).astype(np.float32), 1.0, zero_point, dtype, axis)
