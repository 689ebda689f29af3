"""Quantization parameters: scale and zero point from a real range.

``choose_qparams`` follows one of three published conventions
(docs/quantization.md): ``"tflite"`` (the default; TFLite's
ChooseQuantizationParams and its int8 quantization spec), ``"onnxruntime"``
(onnxruntime/python/tools/quantization/quant_utils.py ``compute_scale_zp`` and
``get_qmin_qmax_for_qType``) and ``"pytorch"`` (torch/ao/quantization/observer.py
``_calculate_qparams`` and utils.py ``calculate_qmin_qmax``).  In every
convention the range is widened to contain 0.0, 0.0 maps exactly to the zero
point, and the scale is a positive finite float32.
"""
import numbers
from dataclasses import dataclass

import numpy as np

from . import arith
from ._validate import INT_RANGES, dtype_arg

__all__ = ["QParams", "choose_qparams", "quantize_bias", "CONVENTIONS"]

CONVENTIONS = ("tflite", "onnxruntime", "pytorch")
_F32_EPS = float(np.finfo(np.float32).eps)     # torch.finfo(torch.float32).eps, the observers' floor
_F32_TINY = float(np.finfo(np.float32).tiny)   # ORT: scale below finfo.tiny -> (1.0, 0)


@dataclass(frozen=True, eq=False)
class QParams:
    """Affine quantization ``real = scale * (q - zero_point)`` with ``q`` in ``[qmin, qmax]``.

    ``scale`` (float32) and ``zero_point`` (int32) are 0-d arrays for a
    per-tensor scheme (``axis is None``) or 1-D arrays with one value per index
    of ``axis``.
    """
    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    qmin: int
    qmax: int
    axis: object = None

    def quantize(self, x):
        """``clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` (fixq.quantize)."""
        return arith.quantize(x, self.scale, self.zero_point, self.dtype, self.axis, qmin=self.qmin, qmax=self.qmax)

    def dequantize(self, q):
        """``(q - zero_point) * scale`` as float32 (fixq.dequantize)."""
        return arith.dequantize(q, self.scale, self.zero_point, self.axis)

    def to_arrays(self):
        """Plain numpy arrays (for ``np.savez``; loads with ``allow_pickle=False``)."""
        return {"scale": self.scale.copy(), "zero_point": self.zero_point.copy(),
                "meta": np.array([INT_DTYPE_CODES[self.dtype], self.qmin, self.qmax,
                                  -1 if self.axis is None else self.axis], np.int64)}

    @classmethod
    def from_arrays(cls, arrays):
        """Inverse of :meth:`to_arrays`; checks every field."""
        meta = np.asarray(arrays["meta"])
        if meta.shape != (4,) or meta.dtype.kind not in "iu":
            raise ValueError(f"qparams meta must be 4 integers, got shape {meta.shape} dtype {meta.dtype}")
        code, qmin, qmax, axis = (int(v) for v in meta)
        if code not in DTYPE_OF_CODE:
            raise ValueError(f"qparams meta: unknown dtype code {code}")
        return _make(arrays["scale"], arrays["zero_point"], DTYPE_OF_CODE[code], qmin, qmax,
                     None if axis < 0 else axis)

    def __repr__(self):
        return (f"QParams(scale={self.scale!r}, zero_point={self.zero_point!r}, dtype={self.dtype.name}, "
                f"qmin={self.qmin}, qmax={self.qmax}, axis={self.axis})")


INT_DTYPE_CODES = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1}
DTYPE_OF_CODE = {v: k for k, v in INT_DTYPE_CODES.items()}


def _make(scale, zero_point, dtype, qmin, qmax, axis):
    s = np.asarray(scale)
    z = np.asarray(zero_point)
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    lo, hi = INT_RANGES[dt]
    if not lo <= qmin <= qmax <= hi:
        raise ValueError(f"qmin/qmax must satisfy {lo} <= qmin <= qmax <= {hi}, got {qmin}, {qmax}")
    want = 0 if axis is None else 1
    if s.ndim != want or z.shape != s.shape:
        raise ValueError(f"scale and zero_point must both be {'0-d' if want == 0 else '1-D'} arrays of one shape "
                         f"(axis={axis}), got shapes {s.shape} and {z.shape}")
    if s.dtype.kind != "f" or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError("scale must be finite, positive floats")
    if z.dtype.kind not in "iu" or np.any(z < qmin) or np.any(z > qmax):
        raise ValueError(f"zero_point must be integers inside [qmin, qmax] = [{qmin}, {qmax}]")
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis < 0):
        raise ValueError(f"axis must be None or a non-negative integer, got {axis!r}")
    return QParams(s.astype(np.float32), z.astype(np.int32), dt, int(qmin), int(qmax), axis)


def qrange(dtype, symmetric=False, narrow_range=False, reduce_range=False, convention="tflite"):
    """``(qmin, qmax)`` of a scheme (docs/quantization.md, "Integer ranges")."""
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    signed = dt == np.int8
    if convention == "onnxruntime":
        # quant_utils.py ONNX_INT_TYPE_REDUCED_RANGE / _SYMMETRIC_RANGE / _RANGE
        if reduce_range:
            lo, hi = (-64, 64) if signed else (0, 127)
        elif symmetric and signed:
            lo, hi = -127, 127
        else:
            lo, hi = INT_RANGES[dt]
    else:
        # torch calculate_qmin_qmax: reduce_range gives (-64, 63) / (0, 127)
        lo, hi = ((-64, 63) if signed else (0, 127)) if reduce_range else INT_RANGES[dt]
        # TFLite int8 spec: symmetric weights use [-127, 127]
        if convention == "tflite" and symmetric:
            narrow_range = True
    if narrow_range:   # TF FakeQuant narrow_range: the lowest code is unused
        lo += 1
    return lo, hi


def _as_bounds(v, name, axis):
    a = np.asarray(v)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number or array of them, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if axis is None and a.ndim != 0:
        raise ValueError(f"{name} must be a scalar for per-tensor qparams (axis=None), got shape {a.shape}; "
                         "pass axis= for per-channel qparams")
    if axis is not None and a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per channel) when axis={axis}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return a


def choose_qparams(min, max, dtype=np.int8, symmetric=False, narrow_range=False, reduce_range=False, axis=None,
                   *, convention="tflite"):
    """Scale and zero point covering the real range ``[min, max]`` (widened to include 0.0).

    ``min``/``max`` are scalars (per-tensor) or 1-D arrays with one value per
    index of ``axis`` (per-channel; ``axis`` is the tensor axis the parameters
    will be applied along).  ``symmetric`` uses ``[-absmax, absmax]`` with the
    zero point at the middle of the integer range; ``narrow_range`` drops the
    lowest integer code; ``reduce_range`` uses 7-bit ranges (for kernels whose
    ``vpmaddubsw`` would saturate).  ``convention`` picks whose formulas are
    used ("tflite", "onnxruntime" or "pytorch"; docs/quantization.md lists the
    differences).  A degenerate range (all zeros) gets a valid scale (1.0, or
    float32 eps for "pytorch"), never 0 or NaN.
    """
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis < 0):
        raise ValueError(f"axis must be None or a non-negative integer (the tensor axis the parameters apply "
                         f"along), got {axis!r}")
    lo_r = _as_bounds(min, "min", axis)
    hi_r = _as_bounds(max, "max", axis)
    if lo_r.shape != hi_r.shape:
        raise ValueError(f"min and max must have the same shape, got {lo_r.shape} and {hi_r.shape}")
    if lo_r.size == 0:
        raise ValueError("min and max must not be empty")
    if np.any(lo_r > hi_r):
        raise ValueError(f"min must not exceed max, got min={min!r}, max={max!r}")
    qmin, qmax = qrange(dtype, symmetric, narrow_range, reduce_range, convention)
    dt = np.dtype(dtype)
    rmin = np.minimum(lo_r, 0.0)
    rmax = np.maximum(hi_r, 0.0)
    if convention == "pytorch":
        scale, zp = _pytorch(rmin, rmax, qmin, qmax, symmetric)
    elif convention == "onnxruntime":
        scale, zp = _onnxruntime(rmin, rmax, qmin, qmax, symmetric)
    else:
        scale, zp = _tflite(rmin, rmax, qmin, qmax, symmetric)
    return _make(scale, zp, dt, qmin, qmax, axis)


def _tflite(rmin, rmax, qmin, qmax, symmetric):
    if symmetric:
        absmax = np.maximum(-rmin, rmax)
        scale = absmax / ((qmax - qmin) / 2.0)
        zp = np.full(rmin.shape, (qmin + qmax) // 2, np.int64)   # qmin + qmax is even: symmetric is narrow
    else:
        # tensorflow/lite/kernels/internal/quantization_util.h ChooseQuantizationParams (double)
        scale = (rmax - rmin) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zp_min = qmin - rmin / safe
        zp_max = qmax - rmax / safe
        err_min = abs(qmin) + np.abs(rmin / safe)
        err_max = abs(qmax) + np.abs(rmax / safe)
        zp_d = np.where(err_min < err_max, zp_min, zp_max)
        zp_r = np.sign(zp_d) * np.floor(np.abs(zp_d) + 0.5)        # TfLiteRound: half away from zero
        zp = np.clip(zp_r, qmin, qmax).astype(np.int64)
    s32 = scale.astype(np.float32)
    bad = ~(s32 > np.float32(0.0))       # degenerate range (or a scale below float32's range)
    return np.where(bad, np.float32(1.0), s32), np.where(bad, np.clip(0, qmin, qmax), zp)


def _onnxruntime(rmin, rmax, qmin, qmax, symmetric):
    # quant_utils.py compute_scale_zp: float64, numpy.round (half to even), scale cast to float32
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale = (rmax - rmin) / (float(qmax) - float(qmin))
    tiny = scale < _F32_TINY
    safe = np.where(tiny, 1.0, scale)
    if symmetric:
        zp = np.full(rmin.shape, np.round((qmin + qmax) / 2.0))
    else:
        zp = np.round(qmin - rmin / safe)
    return np.where(tiny, 1.0, scale).astype(np.float32), np.where(tiny, 0, zp).astype(np.int64)


def _pytorch(rmin, rmax, qmin, qmax, symmetric):
    # torch/ao/quantization/observer.py _calculate_qparams, in float32 like torch tensors
    rmin = rmin.astype(np.float32)
    rmax = rmax.astype(np.float32)
    eps = np.float32(_F32_EPS)
    if symmetric:
        absmax = np.maximum(-rmin, rmax)
        scale = np.maximum(absmax / np.float32((qmax - qmin) / 2.0), eps)
        # torch: 0 for qint8, 128 for quint8; (qmin + qmax + 1) // 2 gives both and stays inside
        # the reduced uint8 range [0, 127] (where torch would return 128)
        zp = np.full(rmin.shape, (qmin + qmax + 1) // 2, np.int64)
    else:
        scale = np.maximum((rmax - rmin) / np.float32(qmax - qmin), eps)
        zp = np.clip(qmin - np.round(rmin / scale).astype(np.int64), qmin, qmax)
    return scale.astype(np.float32), zp


def quantize_bias(bias, input_scale, weight_scale):
    """int32 bias at scale ``input_scale * weight_scale`` (computed in float32) with zero point 0.

    ``weight_scale`` may be per output channel (1-D, the length of ``bias``).
    Rounds half to even (ONNX Runtime ``quantize_bias_static``) and saturates
    to ``[-(2**31 - 1), 2**31 - 1]`` (TFLite ``SymmetricBiasQuantize``).
    Returns ``(q, scale)``: the int32 bias and its float32 scale.
    """
    b = np.asarray(bias)
    if b.dtype.kind != "f":
        raise TypeError(f"bias must be a float array, got dtype {b.dtype}")
    if b.ndim != 1:
        raise ValueError(f"bias must be 1-D (one value per output channel), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bias must be finite (it contains NaN or Inf)")
    si = np.asarray(input_scale, dtype=np.float64)
    sw = np.asarray(weight_scale, dtype=np.float64)
    if si.ndim != 0:
        raise ValueError(f"input_scale must be a scalar, got shape {si.shape}")
    if sw.ndim > 1 or (sw.ndim == 1 and sw.shape[0] not in (1, b.shape[0])):
        raise ValueError(f"weight_scale must be a scalar or 1-D of length {b.shape[0]} (len(bias)), got shape {sw.shape}")
    for v, name in ((si, "input_scale"), (sw, "weight_scale")):
        if not np.all(np.isfinite(v)) or not np.all(v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    scale = np.float32(si) * sw.astype(np.float32)
    if not np.all(scale > 0):
        raise ValueError("input_scale * weight_scale underflows float32; the bias scale must be > 0")
    q = np.round(b.astype(np.float64) / scale.astype(np.float64))
    lim = float(2**31 - 1)
    return np.clip(q, -lim, lim).astype(np.int32), scale.astype(np.float32)


def tensor_qparams(lo, hi, dtype):
    """(float32 scale, int32 zero point) of an activation tensor observed in [lo, hi]: asymmetric
    :func:`choose_qparams` per tensor, as the quantizer stores them and dynamic mode derives them."""
    qp = choose_qparams(np.float32(lo), np.float32(hi), dtype=dtype)
    return np.float32(np.asarray(qp.scale).reshape(())), np.int32(np.asarray(qp.zero_point).reshape(()))

