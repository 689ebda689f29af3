"""Exact int8 matrix products with a fused output stage.

``acc[m, n] = sum_k (a[m, k] - a_zero_point) * (b[k, n] - b_zero_point[n]) + bias[n]``
is computed exactly in int32 (an up-front check proves it fits), then
requantized exactly like :func:`fixq.requantize` (or returned as int32).
"""
import numbers

import numpy as np

from . import _core
from ._core import PackedWeights
from ._validate import (INT_RANGES, c_column, c_zero_points, channel_count, clamp_args, dtype_arg, int_array,
                        per_channel, rounding_arg, scale_arg, threads_arg, zero_point_arg, THREADS_MAX)

__all__ = ["qmatmul", "qlinear", "pack_weights", "PackedWeights"]

_I8, _U8, _I16, _I32, _F32 = (np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32, np.float32))
_OUT_DTYPES = {t: np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32)}
_OUT_DTYPES.update({d: d for d in (_I8, _U8, _I16, _I32)})
_LAYOUTS = {"linear": "[N, K]", "matmul": "[K, N]"}


def pack_weights(w, zero_point=0, *, layout="linear"):
    """Pack constant weights once for :func:`qlinear` / :func:`qmatmul`.

    ``w`` is int8 or uint8, ``[N, K]`` for ``layout="linear"`` (a Linear/FC
    weight, as :func:`qlinear` takes it) or ``[K, N]`` for ``layout="matmul"``
    (as :func:`qmatmul` takes ``b``).  ``zero_point`` is a scalar or one value
    per output column.  ``fixq.pack_weights(**packed.to_arrays())`` rebuilds a
    packed weight from its plain arrays.
    """
    if isinstance(layout, (str, np.ndarray)) and np.ndim(layout) == 0:  # np.str_ and 0-d arrays too
        layout = str(layout)
    if not isinstance(layout, str) or layout not in _LAYOUTS:  # a 1-D array would be unhashable
        raise ValueError(f"layout must be 'linear' ([N, K]) or 'matmul' ([K, N]), got {layout!r}")
    return _pack(w, zero_point, layout, "w", "zero_point")


def _pack(w, zero_point, layout, name, zp_name):
    wa = int_array(w, (np.int8, np.uint8), name)
    if wa.ndim != 2:
        raise ValueError(f"{name} must be 2-D {_LAYOUTS[layout]}, got shape {wa.shape}")
    n = wa.shape[0] if layout == "linear" else wa.shape[1]
    lo, hi = INT_RANGES[wa.dtype]
    if type(zero_point) is int and lo <= zero_point <= hi:
        zp = np.array([zero_point], np.int32)
    else:
        zp = zero_point_arg(zero_point, 1 if np.ndim(zero_point) == 0 else n, wa.dtype, zp_name)
    return _core.pack(np.ascontiguousarray(wa).view(np.uint8), "int8" if wa.dtype == _I8 else "uint8", zp, layout)


def qmatmul(a, b, *, a_zero_point=0, b_zero_point=0, bias=None, multiplier=None, shift=None, scale=None,
            out_zero_point=0, out_min=None, out_max=None, out_dtype=np.int8, rounding="double", threads=1,
            out=None):
    """``a @ b`` for int8/uint8 ``a [..., M, K]`` and ``b [K, N]`` (or :class:`PackedWeights`), exact in
    int32, with a fused output stage: the kernel of :func:`fixq.qmatmul`, which documents the arguments
    and adds ``target=`` and ``activation=``."""
    return _qgemm("qmatmul", "a", "b", "matmul", a, b, a_zero_point, b_zero_point, bias, multiplier, shift, scale,
                  out_zero_point, out_min, out_max, out_dtype, rounding, threads, out)


def qlinear(x, w, bias=None, *, a_zero_point=0, b_zero_point=0, multiplier=None, shift=None, scale=None,
            out_zero_point=0, out_min=None, out_max=None, out_dtype=np.int8, rounding="double", threads=1,
            out=None):
    """A Linear/FC layer: :func:`qmatmul` with ``w`` in ``[N, K]`` layout (``y = x @ w.T + bias``).
    The kernel of :func:`fixq.qlinear`."""
    return _qgemm("qlinear", "x", "w", "linear", x, w, a_zero_point, b_zero_point, bias, multiplier, shift, scale,
                  out_zero_point, out_min, out_max, out_dtype, rounding, threads, out)


def _int(v, name, fn):
    if type(v) is int:
        return v
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":  # as per_channel takes zero points
        return int(v)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    raise TypeError(f"{fn}: {name} must be an integer, got {v!r}")


def _qgemm(fn, aname, bname, layout, a, b, a_zero_point, b_zero_point, bias, multiplier, shift, scale,
           out_zero_point, out_min, out_max, out_dtype, rounding, threads, out):
    if type(b) is not PackedWeights:
        b = _pack(b, b_zero_point, layout, bname, "b_zero_point")
    elif not (type(b_zero_point) is int and b_zero_point == 0):
        zp = np.asarray(b_zero_point)
        if zp.shape not in ((), (b.n,)) or np.any(zp != b.zero_point):
            raise ValueError(f"{fn}: b_zero_point={b_zero_point!r} differs from the zero point the weights were "
                             "packed with; pass it to pack_weights(zero_point=...) and leave b_zero_point out")
    if type(a) is not np.ndarray or (a.dtype is not _I8 and a.dtype is not _U8):
        a = int_array(a, (np.int8, np.uint8), aname)
    lo, hi = INT_RANGES[a.dtype]
    if type(a_zero_point) is not int:
        a_zero_point = _int(a_zero_point, "a_zero_point", fn)
    if not lo <= a_zero_point <= hi:
        raise ValueError(f"{fn}: a_zero_point={a_zero_point} is outside {a.dtype.name} range [{lo}, {hi}]")
    n = b.n
    if bias is not None and not (type(bias) is np.ndarray and bias.dtype is _I32 and bias.shape == (n,)):
        bias = int_array(bias, (np.int32,), "bias")
        if bias.shape != (n,):
            raise ValueError(f"{fn}: bias must have shape ({n},) (one value per output column), got {bias.shape}")
    if type(threads) is not int or not 0 < threads <= THREADS_MAX:
        threads = threads_arg(threads, fn)
    dt = _OUT_DTYPES.get(out_dtype) if isinstance(out_dtype, type) or isinstance(out_dtype, np.dtype) else None
    if dt is None:
        dt = dtype_arg(out_dtype, (np.int8, np.uint8, np.int16, np.int32), "out_dtype")
    if dt is _I32:
        if multiplier is not None or shift is not None or scale is not None or out_min is not None \
                or out_max is not None or not (type(out_zero_point) is int and out_zero_point == 0):
            raise ValueError(f"{fn}: out_dtype=int32 returns the raw accumulators (ONNX MatMulInteger): leave out "
                             "multiplier, shift, scale, out_zero_point, out_min and out_max")
        return _core.qgemm(fn, aname, a, b, a_zero_point, bias, "double", None, None, None, 0, 0, 0, dt, threads,
                           out)
    stage = None
    if type(multiplier) is np.ndarray or type(scale) is np.ndarray:  # per-tensor ints skip this
        stage = _column_arrays(dt, rounding, multiplier, shift, scale, out_zero_point, out_min, out_max, n)
    if stage is not None:
        try:  # fixq_qgemm checks their values (fixq__check_requant) before any work
            return _core.qgemm(fn, aname, a, b, a_zero_point, bias, *stage, dt, threads, out)
        except _core.FixqError:  # a value it refused: _out_stage's checks say which
            _out_stage(fn, dt, rounding, multiplier, shift, scale, out_zero_point, out_min, out_max, n)
            raise
    return _core.qgemm(fn, aname, a, b, a_zero_point, bias,
                       *_out_stage(fn, dt, rounding, multiplier, shift, scale, out_zero_point, out_min, out_max, n),
                       dt, threads, out)


def _column_arrays(dt, rounding, multiplier, shift, scale, zero_point, out_min, out_max, n):
    """_out_stage's result for per-column parameters that are already what the C call takes
    (c_column), without checking their values; None otherwise."""
    if out_min is not None or out_max is not None or n < 2:
        return None
    if rounding == "fp32":
        if not (multiplier is None and shift is None and c_column(scale, n, _F32)):
            return None
    elif not (scale is None and c_column(multiplier, n, _I32) and c_column(shift, n, _I32)
              and (rounding == "double" or rounding == "single")):
        return None
    zero_point = c_zero_points(zero_point, n)
    if zero_point is None:
        return None
    lo, hi = INT_RANGES[dt]
    return rounding, multiplier, shift, scale, zero_point, lo, hi


def _out_stage(fn, dt, rounding, multiplier, shift, scale, zero_point, out_min, out_max, n):
    """(rounding, multiplier, shift, scale, zero_point, qmin, qmax): Python scalars per tensor,
    contiguous arrays of length n per column."""
    if rounding == "fp32":
        if scale is None or multiplier is not None or shift is not None:
            raise ValueError(f'{fn}: rounding="fp32" takes scale= (and not multiplier/shift)')
    elif rounding == "double" or rounding == "single":
        if multiplier is None or shift is None or scale is not None:
            raise ValueError(f'{fn}: rounding="{rounding}" takes multiplier= and shift= (and not scale=); use '
                             f'rounding="fp32" for a float scale, or out_dtype=np.int32 for the raw accumulators')
    else:
        rounding_arg(rounding)
    lo, hi = INT_RANGES[dt]
    if out_min is None and out_max is None:
        qmin, qmax = lo, hi
    else:
        qmin, qmax = clamp_args(out_min, out_max, dt, ("out_min", "out_max"))
    if rounding != "fp32" and type(multiplier) is int and type(shift) is int and type(zero_point) is int:
        if 0 <= multiplier <= 2**31 - 1 and -31 <= shift <= 30 and lo <= zero_point <= hi:
            return rounding, multiplier, shift, None, zero_point, qmin, qmax
    params = (multiplier, shift, zero_point) if rounding != "fp32" else (scale, zero_point)
    names = ("multiplier", "shift", "out_zero_point") if rounding != "fp32" else ("scale", "out_zero_point")
    channels = channel_count(params, names)
    if channels not in (1, n):
        raise ValueError(f"{fn}: per-column output parameters must have length N = {n}, got {channels}")
    zp = zero_point_arg(zero_point, channels, dt, "out_zero_point")
    if rounding == "fp32":
        sc = scale_arg(scale, channels)
        m = s = None
    else:
        m = per_channel(multiplier, channels, "multiplier", np.int32)
        s = per_channel(shift, channels, "shift", np.int32)
        if np.any(m < 0):
            raise ValueError(f"{fn}: multiplier must be in [0, 2**31 - 1] (a Q31 value from quantize_multiplier)")
        if np.any(s < -31) or np.any(s > 30):
            raise ValueError(f"{fn}: shift must be in [-31, 30], got {shift!r}")
        sc = None
    if n == 0:  # per-column arrays of length 0: the result is empty, as numpy's matmul gives it
        fp32 = rounding == "fp32"
        return rounding, None if fp32 else 0, None if fp32 else 0, 1.0 if fp32 else None, 0, qmin, qmax
    if channels == 1 or n == 1:
        return (rounding, None if m is None else int(m[0]), None if s is None else int(s[0]),
                None if sc is None else float(sc[0]), int(zp[0]), qmin, qmax)
    return rounding, m, s, sc, zp, qmin, qmax
