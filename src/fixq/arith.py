"""Fixed-point arithmetic: multipliers, requantization, quantize/dequantize.

The integer semantics are those of the C core (docs/arithmetic.md); these
functions normalise numpy arguments and call it.
"""

import numpy as np

from . import _core
from ._validate import (as_bytes, axis_arg, c_column, c_zero_points, channel_count, check_alias,
                        clamp_args, dtype_arg, fast_out, int_array, out_arg, per_channel, remember, rounding_arg, seen_args,
                        scalar_scale_arg, scalar_zero_point_arg, scale_arg, split_shape, zero_point_arg)

_Q8_NAMES = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}
_INT_NAMES = {np.dtype(t): np.dtype(t).name for t in (np.int8, np.uint8, np.int16, np.int32)}
_I32, _F32 = np.dtype(np.int32), np.dtype(np.float32)

# Per-tensor calls of quantize, dequantize and requantize (int32 acc) seen before (seen_args): what the
# checks made of their scalar arguments, the C call's parameters.  Only calls that passed every check
# are recorded, so a hit skips checks that would give the same answer; the data array and `out` are
# still checked on every call.
_QUANTIZE_SEEN, _DEQUANTIZE_SEEN, _REQUANTIZE_SEEN = {}, {}, {}


def _fast_y(out, x, shape, dtype):
    """fast_out, with a given `out` also writeable, C-contiguous and apart from the data array x: the
    raw calls below raise on the first two (eltwise_flat, behind qadd's fast path, declines them)."""
    y = fast_out(out, shape, dtype)
    if y is None or out is None:
        return y
    flags = y.flags
    return y if flags.c_contiguous and flags.writeable and not np.may_share_memory(x, y) else None


def quantize_multiplier(real):
    """TFLite QuantizeMultiplier: ``real ~= multiplier * 2**(shift - 31)``.

    Returns ``(multiplier, shift)``: Python ints for a scalar, int32 arrays for
    an array.  ``shift > 0`` is a left shift.  Multipliers below 2**-32 flush
    to ``(0, 0)``, but those in ``[2**-32 - 2**-64, 2**-32)``, which round up
    to ``(2**30, -31)``.
    """
    scalar = np.ndim(real) == 0
    r = np.asarray(real)
    if r.dtype.kind not in "iuf":
        raise TypeError(f"real must be a real number or array, got dtype {r.dtype}")
    r = np.ascontiguousarray(r, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"real multiplier must be finite and >= 0, got {real!r}")
    m = np.empty(r.shape, np.int32)
    s = np.empty(r.shape, np.int32)
    _core.quantize_multiplier_array(r, m, s)
    if scalar:
        return int(m[0]), int(s[0])
    shape = np.shape(real)
    return m.reshape(shape), s.reshape(shape)


def _multiplier_shift(multiplier, shift, channels):
    if (channels == 1 and isinstance(multiplier, (int, np.integer)) and isinstance(shift, (int, np.integer))
            and not isinstance(multiplier, bool) and not isinstance(shift, bool)
            and 0 <= multiplier <= 2**31 - 1 and -31 <= shift <= 30):  # fast path: one pair of Python ints
        return np.array([multiplier], np.int32), np.array([shift], np.int32)
    m = per_channel(multiplier, channels, "multiplier", np.int32)
    s = per_channel(shift, channels, "shift", np.int32)
    if np.any(m < 0):
        raise ValueError(f"multiplier must be in [0, 2**31 - 1] (a Q31 value from quantize_multiplier), "
                         f"got {multiplier!r}")
    if np.any(s < -31) or np.any(s > 30):
        raise ValueError(f"shift must be in [-31, 30], got {shift!r}")
    return m, s


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding="double"):
    """TFLite MultiplyByQuantizedMultiplier on int32 values, elementwise with
    numpy broadcasting.  ``rounding="double"``: gemmlowp SRDHM then
    RoundingDivideByPOT; ``"single"``: ``(x*M + 2**(30-shift)) >> (31-shift)``."""
    rounding_arg(rounding, ("double", "single"))
    xa = np.asarray(x)
    if xa.dtype.kind not in "iu":
        raise TypeError(f"x must be an integer array, got dtype {xa.dtype}")
    if xa.size and (xa.min() < -(2**31) or xa.max() > 2**31 - 1):
        raise ValueError("x must fit in int32")
    ma, sa = np.asarray(multiplier), np.asarray(shift)
    for v, name in ((ma, "multiplier"), (sa, "shift")):
        if v.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer or integer array, got dtype {v.dtype}")
    try:
        xb, mb, sb = np.broadcast_arrays(xa, ma, sa)
    except ValueError:
        raise ValueError(f"x, multiplier and shift do not broadcast: shapes {xa.shape}, {ma.shape}, {sa.shape}") from None
    n = xb.size
    y = np.empty(xb.shape, np.int32)
    if n == 0:
        return y
    xi = np.ascontiguousarray(xb, dtype=np.int32).reshape(-1)
    if ma.ndim == 0 and sa.ndim == 0:  # one multiplier for every element: one channel
        m, s = _multiplier_shift(int(ma), int(sa), 1)
        channels, inner = 1, n
    else:
        m, s = _multiplier_shift(mb.reshape(-1), sb.reshape(-1), n)
        channels, inner = n, 1
    _core.requantize_raw(xi, as_bytes(y), "int32", 1, channels, inner, rounding, m, s, None,
                         np.zeros(channels, np.int32), -(2**31), 2**31 - 1)
    return int(y) if y.ndim == 0 else y


def requantize(acc, multiplier=None, shift=None, zero_point=0, *, scale=None, qmin=None, qmax=None,
               dtype=np.int8, rounding="double", axis=-1, out=None, input_zero_point=0):
    """int32 accumulators to int8/uint8/int16 (or int32), or an int8/uint8
    tensor to a new scale and zero point.

    Fixed-point modes (``rounding="double"|"single"``) take ``multiplier`` and
    ``shift`` (from :func:`quantize_multiplier`); ``rounding="fp32"`` takes a
    float32 ``scale`` and rounds half to even.  Each parameter is a scalar
    (per-tensor) or a 1-D array with one value per index of ``axis``
    (per-channel).  Then the zero point is added and the result clamped to
    ``[qmin, qmax]`` (default: the range of ``dtype``).

    ``acc`` may also be int8/uint8 with its own ``input_zero_point``: the
    result is that of ``requantize(acc.astype(np.int32) - input_zero_point, ...)``
    (TFLite's int8 QUANTIZE/Requantize with the multiplier of
    ``in_scale / out_scale``).  Per-tensor int8/uint8 -> int8/uint8 runs on the
    elementwise kernels, at the speed of :func:`fixq.qadd`.
    """
    key = None
    if type(acc) is np.ndarray and acc.dtype in _Q8_NAMES:
        key = (acc.dtype, multiplier, shift, zero_point, scale, qmin, qmax, dtype, rounding, axis, input_zero_point,
               type(multiplier), type(shift), type(zero_point), type(scale), type(qmin), type(qmax), type(dtype),
               type(rounding), type(axis), type(input_zero_point))
        try:
            seen = _Q8_SEEN.get(key)
        except TypeError:  # an unhashable argument: the checked path
            seen = key = None
        if seen is not None:
            params, dt = seen
            y = fast_out(out, acc.shape, dt)
            if y is not None and _core.eltwise_flat(params, acc, _ONE, y):
                return y
    rkey = None
    if type(acc) is np.ndarray and acc.dtype is _I32:
        rkey, seen = seen_args(_REQUANTIZE_SEEN, multiplier, shift, zero_point, scale, qmin, qmax, dtype, rounding,
                               input_zero_point)
        if seen is not None:
            dt, name, stage = seen
            y = _fast_y(out, acc, acc.shape, dt)
            if y is not None:
                _core.requantize_raw(acc.ravel(), as_bytes(y), name, 1, 1, acc.size, *stage)  # ravel: contiguous
                return y
    a = int_array(acc, (np.int32, np.int8, np.uint8), "acc")
    if a.dtype != np.int32:
        zx = scalar_zero_point_arg(input_zero_point, a.dtype, "input_zero_point")
        return _requantize_q8(a, zx, multiplier, shift, zero_point, scale, qmin, qmax, dtype, rounding, axis,
                              out, key)
    if np.any(np.asarray(input_zero_point) != 0):
        raise ValueError("input_zero_point applies to int8/uint8 input; for int32 acc it must be 0")
    dt = dtype_arg(dtype, (np.int8, np.uint8, np.int16, np.int32), "dtype")
    rounding_arg(rounding)
    if rounding == "fp32":
        if scale is None or multiplier is not None or shift is not None:
            raise ValueError('rounding="fp32" takes scale= (and not multiplier/shift)')
        if dt == np.int32:
            raise ValueError('rounding="fp32" outputs int8, uint8 or int16')
        params = (scale, zero_point)
        names = ("scale", "zero_point")
    else:
        if multiplier is None or shift is None or scale is not None:
            raise ValueError(f'rounding="{rounding}" takes multiplier= and shift= (and not scale=); '
                             'use rounding="fp32" for a float scale')
        params = (multiplier, shift, zero_point)
        names = ("multiplier", "shift", "zero_point")
    if dt == np.int32 and np.any(np.asarray(zero_point) != 0):
        raise ValueError("zero_point must be 0 for int32 output")
    channels = channel_count(params, names)
    if channels != 1:  # 0 too: per-channel along an axis of length 0
        if a.ndim == 0:
            raise ValueError("per-channel parameters need an array with at least one dimension")
        ax = axis_arg(axis, a.ndim)
        if a.shape[ax] != channels:
            raise ValueError(f"per-channel parameters have length {channels} but acc.shape[{axis}] is "
                             f"{a.shape[ax]} (shape {a.shape})")
        rows, channels, inner = split_shape(a.shape, ax)
    else:
        rows, channels, inner = split_shape(a.shape, None)
    lo, hi = clamp_args(qmin, qmax, dt)
    y = out_arg(out, a.shape, dt)
    zp = c_zero_points(zero_point, channels) if channels > 1 else None
    if rounding == "fp32":
        m = s = None
        sc = scale if c_column(scale, channels, _F32) else None
        checked = zp is None or sc is None
    else:
        m, s, sc = multiplier, shift, None
        checked = zp is None or not (c_column(m, channels, _I32) and c_column(s, channels, _I32))

    def checked_stage():
        sc_, m_, s_ = (scale_arg(scale, channels), None, None) if rounding == "fp32" else \
            (None, *_multiplier_shift(multiplier, shift, channels))
        return rounding, m_, s_, sc_, zero_point_arg(zero_point, channels, dt), lo, hi

    stage = checked_stage() if checked else (rounding, m, s, sc, zp, lo, hi)  # unchecked: c_column arrays
    if channels == 0:  # an empty axis of channels: nothing to compute
        return y
    x = np.ascontiguousarray(a)
    check_alias(x, "acc", y)
    try:
        _core.requantize_raw(x.reshape(-1), as_bytes(y), _INT_NAMES[dt], rows, channels, inner, *stage)
    except _core.FixqError:  # a parameter value it refused: the checks say which
        if not checked:
            checked_stage()
        raise
    if rkey is not None and channels == 1:
        remember(_REQUANTIZE_SEEN, rkey, (dt, _INT_NAMES[dt], stage))
    return y


# Per-tensor int8/uint8 requantize calls seen before, with their argument types (1, 1.0 and True are
# equal keys of different checks): (planned parameter block, output dtype).  Only calls that passed every
# check of _requantize_q8 are recorded, so a hit skips checks that would give the same answer.
_Q8_SEEN = {}
_ONE = np.ones(1, np.int8)  # the kernels' b operand: (x - x_zp) * 1


def _requantize_q8(x, zx, multiplier, shift, zero_point, scale, qmin, qmax, dtype, rounding, axis, out, key):
    dt = dtype_arg(dtype, (np.int8, np.uint8, np.int16, np.int32), "dtype")
    rounding_arg(rounding)
    per_tensor = channel_count((multiplier, shift, scale, zero_point),
                               ("multiplier", "shift", "scale", "zero_point")) == 1
    # the 8-bit map takes a scale s with 255 * s finite in float32 (eltwise.c scale_ok); a larger one
    # saturates every nonzero x - zx, as the int32 form does
    huge = rounding == "fp32" and per_tensor and scale is not None and multiplier is None and \
        np.all(np.isfinite(np.asarray(scale, np.float64))) and np.all(np.abs(np.asarray(scale, np.float64)) * 255.0 >
                                                                      float(np.finfo(np.float32).max))
    if not per_tensor or dt not in (np.int8, np.uint8) or huge:
        wide = x.astype(np.int32) - np.int32(zx)
        return requantize(wide, multiplier, shift, zero_point, scale=scale, qmin=qmin, qmax=qmax, dtype=dt,
                          rounding=rounding, axis=axis, out=out)
    if rounding == "fp32":
        if scale is None or multiplier is not None or shift is not None:
            raise ValueError('rounding="fp32" takes scale= (and not multiplier/shift)')
        m = s = None
        sc = np.array([scalar_scale_arg(scale, "scale")], np.float32)
    else:
        if multiplier is None or shift is None or scale is not None:
            raise ValueError(f'rounding="{rounding}" takes multiplier= and shift= (and not scale=); '
                             'use rounding="fp32" for a float scale')
        m, s = _multiplier_shift(multiplier, shift, 1)
        sc = None
    zp = np.array([scalar_zero_point_arg(zero_point, dt, "zero_point")], np.int32)
    lo, hi = clamp_args(qmin, qmax, dt)
    y = out_arg(out, x.shape, dt)
    xc = np.ascontiguousarray(x)
    check_alias(xc, "acc", y)
    params = _core.requantize_q8_params(_Q8_NAMES[x.dtype], zx, _Q8_NAMES[dt], rounding, m, s, sc, zp, lo, hi,
                                        key is not None or x.size >= 1024)
    if key is not None:
        if len(_Q8_SEEN) >= 512:
            _Q8_SEEN.clear()
        _Q8_SEEN[key] = (params, dt)
    if y.size:
        _core.eltwise_flat(params, xc, _ONE, y)  # contiguous, and y is xc itself or apart from it (checked above)
    return y


def _params_along(x, scale, zero_point, axis, dtype, check=False):
    """(rows, channels, inner, scale, zero_point, checked): per-channel parameters that are already
    what the C calls take (c_column) come back unchecked (checked False) unless `check`."""
    if axis is None:
        channels = channel_count((scale, zero_point), ("scale", "zero_point"))
        if channels != 1:
            raise ValueError("per-channel scale/zero_point need axis=")
        rows, channels, inner = split_shape(x.shape, None)
    else:
        if x.ndim == 0:
            raise ValueError("axis= needs an array with at least one dimension")
        ax = axis_arg(axis, x.ndim)
        rows, channels, inner = split_shape(x.shape, ax)
    if not check and channels > 1 and c_column(scale, channels, _F32):
        zp = c_zero_points(zero_point, channels)
        if zp is not None:
            return rows, channels, inner, scale, zp, False
    return rows, channels, inner, scale_arg(scale, channels), zero_point_arg(zero_point, channels, dtype), True


def quantize(x, scale, zero_point=0, dtype=np.int8, axis=None, qmin=None, qmax=None, out=None):
    """Float to int8/uint8/int16: ``saturate(round_half_even(x / scale) + zero_point)``,
    computed in float32 (ONNX QuantizeLinear).  Per-tensor, or per index of
    ``axis``.  NaN is an error.  The kernel of :func:`fixq.quantize`, which
    documents the arguments and adds ``target=``."""
    key = None
    if axis is None and type(x) is np.ndarray and x.dtype is _F32:
        key, seen = seen_args(_QUANTIZE_SEEN, scale, zero_point, dtype, qmin, qmax)
        if seen is not None:
            dt, name, sc, zp, lo, hi = seen
            y = np.empty(x.shape, dt) if out is None else _fast_y(out, x, x.shape, dt)
            if y is not None:
                _core.quantize_raw(x.ravel(), as_bytes(y), name, 1, 1, x.size, sc, zp, lo, hi)
                return y
    xa = np.asarray(x)
    if xa.dtype.kind != "f":
        raise TypeError(f"x must be a float array, got dtype {xa.dtype}")
    dt = dtype_arg(dtype, (np.int8, np.uint8, np.int16), "dtype")
    rows, channels, inner, sc, zp, checked = _params_along(xa, scale, zero_point, axis, dt)
    lo, hi = clamp_args(qmin, qmax, dt)
    y = out_arg(out, xa.shape, dt)
    if channels == 0:  # per-channel along an axis of length 0: nothing to compute
        return y
    xf = np.ascontiguousarray(xa, dtype=np.float32)
    check_alias(xf, "x", y)
    try:
        _core.quantize_raw(xf.reshape(-1), as_bytes(y), _INT_NAMES[dt], rows, channels, inner, sc, zp, lo, hi)
    except _core.FixqError:  # a parameter value it refused: the checks say which
        if not checked:
            _params_along(xa, scale, zero_point, axis, dt, check=True)
        raise
    if key is not None:
        remember(_QUANTIZE_SEEN, key, (dt, _INT_NAMES[dt], sc, zp, lo, hi))
    return y


def dequantize(q, scale, zero_point=0, axis=None, *, out=None):
    """Integer to float32: ``(q - zero_point) * scale`` (ONNX DequantizeLinear)."""
    key = None
    if axis is None and type(q) is np.ndarray and q.dtype in _INT_NAMES:
        key, seen = seen_args(_DEQUANTIZE_SEEN, q.dtype, scale, zero_point)
        if seen is not None:
            sc, zp = seen
            y = _fast_y(out, q, q.shape, _F32)
            if y is not None:
                _core.dequantize_raw(q.ravel().view(np.uint8), _INT_NAMES[q.dtype], y.reshape(-1), 1, 1, q.size, sc, zp)
                return y
    qa = int_array(q, (np.int8, np.uint8, np.int16, np.int32), "q")
    rows, channels, inner, sc, zp, checked = _params_along(qa, scale, zero_point, axis, qa.dtype)
    y = out_arg(out, qa.shape, np.float32)
    if channels == 0:  # per-channel along an axis of length 0: nothing to compute
        return y
    qc = np.ascontiguousarray(qa)
    check_alias(qc, "q", y)
    try:
        _core.dequantize_raw(as_bytes(qc), qa.dtype.name, y.reshape(-1), rows, channels, inner, sc, zp)
    except _core.FixqError:  # a parameter value it refused: the checks say which
        if not checked:
            _params_along(qa, scale, zero_point, axis, qa.dtype, check=True)
        raise
    if key is not None:
        remember(_DEQUANTIZE_SEEN, key, (sc, zp))
    return y
