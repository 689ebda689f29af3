"""TEMPORARY stand-ins for kernels not merged yet (removed once gemm/eltwise/quant land)."""
import types
from dataclasses import dataclass

import numpy as np

import fixq
from engine_reference import eltwise

RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@dataclass
class QParams:
    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    qmin: int
    qmax: int
    axis: object = None

    def quantize(self, x):
        return fixq.quantize(x, self.scale, self.zero_point, self.dtype, self.axis, qmin=self.qmin, qmax=self.qmax)


def choose_qparams(min, max, dtype=np.int8, symmetric=False, narrow_range=False, reduce_range=False, axis=None):
    dt = np.dtype(dtype)
    lo, hi = RANGES[dt]
    rmin = np.minimum(np.asarray(min, np.float64), 0)
    rmax = np.maximum(np.asarray(max, np.float64), 0)
    if symmetric:
        lo = lo + 1 if dt == np.int8 else lo
        am = np.maximum(-rmin, rmax)
        scale = np.where(am > 0, am / ((hi - lo) / 2), 1.0)
        zp = np.full(scale.shape, (lo + hi) // 2)
    else:
        scale = np.where(rmax > rmin, (rmax - rmin) / (hi - lo), 1.0)
        zp = np.clip(np.round(lo - rmin / scale), lo, hi)
    return QParams(scale.astype(np.float32), zp.astype(np.int32), dt, lo, hi, axis)


def quantize_bias(bias, input_scale, weight_scale):
    scale = np.float32(input_scale) * np.asarray(weight_scale, np.float32)
    return np.round(bias.astype(np.float64) / scale).astype(np.int32), scale


class _MinMax:
    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, b):
        self.lo, self.hi = min(self.lo, float(b.min())), max(self.hi, float(b.max()))

    def range(self):
        return self.lo, self.hi


calibrate = types.SimpleNamespace(make=lambda method, **o: _MinMax())


def _elt(op):
    def f(a, b, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min=None,
          out_max=None, out_dtype=np.int8, rounding="double", out=None):
        lo, hi = RANGES[np.dtype(out_dtype)]
        lo = lo if out_min is None else out_min
        hi = hi if out_max is None else out_max
        return eltwise(op, a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, lo, hi,
                       rounding).astype(out_dtype)
    return f


def install():
    for name, v in (("QParams", QParams), ("choose_qparams", choose_qparams), ("quantize_bias", quantize_bias),
                    ("calibrate", calibrate), ("qadd", _elt("add")), ("qmul", _elt("mul"))):
        if not hasattr(fixq, name):
            setattr(fixq, name, v)
