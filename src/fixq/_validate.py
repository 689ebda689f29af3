"""Argument checks shared by the Python API.  Each raises TypeError/ValueError
naming the argument, what it got, and what is expected."""
import math
import numbers

import numpy as np

_I32, _F32 = np.dtype(np.int32), np.dtype(np.float32)
ROUNDINGS = ("double", "single", "fp32")
INT_RANGES = {
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.int32): (-(2**31), 2**31 - 1),
}


def dtype_arg(dtype, allowed, name):
    """np.dtype of `dtype`, which must be one of `allowed` (numpy dtypes)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    allowed = [np.dtype(a) for a in allowed]
    if dt not in allowed:
        raise TypeError(f"{name} must be one of {[a.name for a in allowed]}, got {dtype!r}")
    return dt


def int_array(x, allowed, name):
    """x as an array whose dtype is one of `allowed`; no silent casts."""
    a = np.asarray(x)
    if a.dtype not in [np.dtype(t) for t in allowed]:
        raise TypeError(f"{name} must have dtype in {[np.dtype(t).name for t in allowed]}, got {a.dtype}; "
                        f"convert it explicitly (e.g. {name}.astype(np.{np.dtype(allowed[0]).name}))")
    return a


def rounding_arg(rounding, allowed=ROUNDINGS):
    if rounding not in allowed:
        raise ValueError(f"rounding must be one of {list(allowed)}, got {rounding!r}")
    return rounding


def axis_arg(axis, ndim, name="axis"):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimension(s)")
    return int(axis) % ndim


def split_shape(shape, axis):
    """(rows, channels, inner) of `shape` around `axis` (None: per-tensor)."""
    if axis is None:
        return 1, 1, math.prod(shape)
    return math.prod(shape[:axis]), int(shape[axis]), math.prod(shape[axis + 1:])


def per_channel(value, channels, name, dtype):
    """`value` (scalar or 1-D of length 1 or `channels`) as a contiguous array of length `channels`."""
    if type(value) is int and np.dtype(dtype).kind in "iu" and not -2**63 <= value < 2**63:  # numpy: dtype object
        lo, hi = INT_RANGES[np.dtype(dtype)]
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")
    a = np.asarray(value)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, channels)):
        raise ValueError(f"{name} must be a scalar or a 1-D array of length {channels}, got shape {a.shape}")
    if a.dtype.kind not in "iuf" and a.dtype != np.bool_:
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    out = np.broadcast_to(a.reshape(-1), (channels,))
    if np.dtype(dtype).kind in "iu":
        if a.dtype.kind == "f" and not (np.all(np.isfinite(out)) and np.all(out == np.round(out))):
            raise TypeError(f"{name} must hold integers, got {value!r}")
        lo, hi = INT_RANGES[np.dtype(dtype)]
        if np.any(out < lo) or np.any(out > hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")
    return np.ascontiguousarray(out, dtype=dtype)


def channel_count(values, names):
    """The common per-channel length of several scalar-or-1-D arguments (1 if all scalar)."""
    n = 1
    for v, name in zip(values, names):
        if v is None:
            continue
        a = np.asarray(v)
        if a.ndim == 1 and a.shape[0] != 1:
            if n != 1 and a.shape[0] != n:
                raise ValueError(f"{name} has length {a.shape[0]} but another per-channel argument has length {n}")
            n = a.shape[0]
        elif a.ndim > 1:
            raise ValueError(f"{name} must be a scalar or 1-D, got shape {a.shape}")
    return n


def scale_arg(scale, channels, name="scale"):
    s = per_channel(scale, channels, name, np.float64)
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"{name} must be finite and > 0, got {scale!r}")
    with np.errstate(over="ignore"):  # a scale beyond float32 becomes inf: the error below names it
        s32 = s.astype(np.float32)
    if not np.all(np.isfinite(s32)) or not np.all(s32 > 0):
        raise ValueError(f"{name} must be representable as a positive finite float32, got {scale!r}")
    return s32


def zero_point_arg(zero_point, channels, dtype, name="zero_point"):
    """Per-channel int32 zero points, each inside the range of `dtype`."""
    return per_channel(zero_point, channels, name, dtype).astype(np.int32)


THREADS_MAX = 2**31 - 1  # the C core's int: more threads than parts of the work already run as the parts


def threads_arg(threads, fn=None):
    """`threads` as a Python int in [1, THREADS_MAX] (numpy integers too; larger counts are
    THREADS_MAX, since the work is split into at most that many parts); `fn` prefixes the message."""
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"{fn + ': ' if fn else ''}threads must be an integer >= 1, got {threads!r}")
    return min(int(threads), THREADS_MAX)


def clamp_args(qmin, qmax, dtype, names=("qmin", "qmax")):
    lo, hi = INT_RANGES[np.dtype(dtype)]
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    for v, name in ((qmin, names[0]), (qmax, names[1])):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{name}={v} is outside {np.dtype(dtype).name} range [{lo}, {hi}]")
    if qmin > qmax:
        raise ValueError(f"{names[0]}={qmin} must not exceed {names[1]}={qmax}")
    return int(qmin), int(qmax)


def out_arg(out, shape, dtype, name="out"):
    """A new C-contiguous array, or `out` checked to be a writable C-contiguous array of shape/dtype."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dtype).name}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    return out


def check_alias(src, name, y):
    """`src`, handed to an elementwise kernel writing `y` (both C-contiguous), may be `y` itself (the
    same elements, whatever the shape), never a shifted or broadcast view of it: the kernel would read
    values it has already overwritten."""
    if not np.may_share_memory(src, y):
        return
    same = (src.size == y.size and src.itemsize == y.itemsize and src.flags.c_contiguous
            and src.__array_interface__["data"][0] == y.__array_interface__["data"][0])
    if not same:
        raise ValueError(f"out overlaps {name} but is not the same array as {name} (an offset, reshaped or "
                         f"broadcast view); elementwise ops can only write in place over an input of the "
                         f"output's shape: pass out=None or {name}.copy()")


def as_bytes(a):
    """Flat uint8 view of a C-contiguous array (for the Cython wrappers)."""
    return a.reshape(-1).view(np.uint8)


def scalar_scale_arg(value, name):
    """One positive finite scale as a Python float holding its float32 value (fast path of scale_arg)."""
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
        f = float(np.float32(v)) if math.isfinite(v) else v
        if math.isfinite(v) and v > 0 and math.isfinite(f) and f > 0:
            return f
    return float(scale_arg(value, 1, name)[0])


def scalar_zero_point_arg(value, dtype, name):
    """One zero point inside the range of `dtype`, as a Python int (fast path of zero_point_arg)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        lo, hi = INT_RANGES[np.dtype(dtype)]
        if lo <= value <= hi:
            return int(value)
    return int(zero_point_arg(value, 1, dtype, name)[0])


def c_column(v, n, dtype):
    """`v` is already what the C calls take for n per-channel values: a C-contiguous ndarray of
    exactly `dtype` (int32 multipliers, shifts and zero points, float32 scales) and shape (n,).
    Such arrays go to the C core unchecked: it checks their values before any work, and a value it
    refuses is then explained by the Python checks."""
    return type(v) is np.ndarray and v.dtype is dtype and v.shape == (n,) and v.flags.c_contiguous


def c_zero_points(zero_point, n):
    """Zero points for n channels as the C calls take them: a c_column as is, a Python int
    broadcast; None for anything else (the checked path)."""
    if type(zero_point) is int:
        return np.full(n, zero_point, np.int32) if -2**31 <= zero_point < 2**31 else None
    return zero_point if c_column(zero_point, n, _I32) else None


def seen_args(cache, *args):
    """(key, value) for the argument fast paths (fixq.quantize, dequantize, requantize): the key of
    the scalar arguments, their values and their types (1, 1.0, True and np.int64(1) are equal keys
    of different checks), and what the checks made of them before (None: not seen); (None, None)
    when one is unhashable (an array: the checked path)."""
    key = args + tuple(map(type, args))
    try:
        return key, cache.get(key)
    except TypeError:
        return None, None


def remember(cache, key, value):
    """Records what the checks made of the arguments of `key` (bounded: cleared at 512 entries)."""
    if len(cache) >= 512:
        cache.clear()
    cache[key] = value


def fast_out(out, shape, dtype):
    """The output of an argument fast path (fixq.qadd, fixq.requantize on int8): a new array, `out`
    itself when it is exactly an ndarray of that shape and dtype, or None (the checked path decides)."""
    if out is None:
        return np.empty(shape, dtype)
    if type(out) is np.ndarray and out.shape == shape and out.dtype == dtype:
        return out
    return None
