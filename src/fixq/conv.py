"""Exact int8 2-D convolution of NHWC tensors: im2col padded with the input zero point (the real
value 0, as TFLite and ONNX QLinearConv pad) and fixq's GEMM with the output stage of
:func:`fixq.qlinear`, one GEMM per group (a depthwise conv is groups == C)."""
import numbers

import numpy as np

from . import layout as L
from .gemm import _qgemm
from ._validate import dtype_arg, int_array, out_arg, scalar_zero_point_arg

__all__ = ["qconv2d"]

_PER_CHANNEL = ("bias", "b_zero_point", "multiplier", "shift", "scale", "out_zero_point")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _channels(v, oc, o):
    """`v`, or its slice `oc` when it holds one value per output channel."""
    return np.asarray(v)[oc] if v is not None and np.shape(v) == (o,) and o > 1 else v


def _pair(v, name):
    """(h, w) of an integer >= 1 or a pair of them."""
    vals = (v, v) if _is_int(v) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(vals) != 2 or not all(_is_int(u) and u >= 1 for u in vals):
        raise ValueError(f"qconv2d: {name} must be an integer >= 1 or a pair of them, got {v!r}")
    return int(vals[0]), int(vals[1])


def _pads(padding, in_hw, kernel, stride, dilation):
    """((top, bottom), (left, right)) of `padding`."""
    if isinstance(padding, str) and padding in ("valid", "same"):
        if padding == "valid":
            return (0, 0), (0, 0)
        pads = []
        for n, k, s, d in zip(in_hw, kernel, stride, dilation):  # TF SAME / ONNX SAME_UPPER: the odd one after
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if _is_int(padding) and padding >= 0:
        return (int(padding),) * 2, (int(padding),) * 2
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = [(p, p) if _is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else () for p in padding]
        if all(len(p) == 2 and all(_is_int(u) and u >= 0 for u in p) for p in pads):
            return tuple((int(a), int(b)) for a, b in pads)
    raise ValueError(f"qconv2d: padding must be 'valid', 'same', an integer >= 0, (pad_h, pad_w) or "
                     f"((top, bottom), (left, right)), got {padding!r}")


def qconv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, a_zero_point=0, b_zero_point=0,
            multiplier=None, shift=None, scale=None, out_zero_point=0, out_min=None, out_max=None,
            out_dtype=np.int8, rounding="double", threads=1, out=None):
    """2-D convolution of NHWC int8/uint8 ``x [N, H, W, C]`` with ``w [O, kH, kW, C / groups]``,
    exact in int32, with :func:`fixq.qlinear`'s output stage per output channel.  The kernel of
    :func:`fixq.qconv2d`, which documents the arguments and adds ``target=`` and ``activation=``."""
    xa = int_array(x, (np.int8, np.uint8), "x")
    wa = int_array(w, (np.int8, np.uint8), "w")
    if xa.ndim != 4:
        raise ValueError(f"qconv2d: x must be NHWC [N, H, W, C], got shape {xa.shape}")
    if wa.ndim != 4:
        raise ValueError(f"qconv2d: w must be [O, kH, kW, C / groups] (from PyTorch's or ONNX's [O, C / groups, "
                         f"kH, kW]: w.transpose(0, 2, 3, 1)), got shape {wa.shape}")
    n, h, wd, c = xa.shape
    o, kh, kw, cg = wa.shape
    if not _is_int(groups) or groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ValueError(f"qconv2d: groups={groups!r} must be an integer >= 1 dividing C = {c} and O = {o}, with "
                         f"w.shape[3] = C / groups (w has shape {wa.shape})")
    groups = int(groups)
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    (pt, pb), (pl, pr) = _pads(padding, (h, wd), (kh, kw), (sh, sw), (dh, dw))
    oh, ow = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1, (wd + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"qconv2d: the {kh}x{kw} kernel (dilation {dh}x{dw}) is larger than the padded input "
                         f"{h + pt + pb}x{wd + pl + pr}")
    per_channel = dict(bias=bias, b_zero_point=b_zero_point, multiplier=multiplier, shift=shift, scale=scale,
                       out_zero_point=out_zero_point)
    for name in _PER_CHANNEL:
        if np.ndim(per_channel[name]) > 1 or np.shape(per_channel[name])[:1] not in ((), (1,), (o,)):
            raise ValueError(f"qconv2d: {name} must be a scalar or 1-D with one value per output channel (O = {o}), "
                             f"got shape {np.shape(per_channel[name])}")
    zp = scalar_zero_point_arg(a_zero_point, xa.dtype, "a_zero_point")
    xp = xa if not (pt or pb or pl or pr) else np.pad(xa, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=zp)
    geometry = ((kh, kw), (sh, sw), (0, 0), (dh, dw), zp)
    if groups == 1:
        y = None if out is None else out_arg(out, (n, oh, ow, o), dtype_arg(
            out_dtype, (np.int8, np.uint8, np.int16, np.int32), "out_dtype")).reshape(n * oh * ow, o)
        y = _qgemm("qconv2d", "x", "w", "linear", L.im2col(xp, *geometry)[0], wa.reshape(o, -1), zp, b_zero_point,
                   bias, multiplier, shift, scale, out_zero_point, out_min, out_max, out_dtype, rounding, threads, y)
        return y.reshape(n, oh, ow, o) if out is None else out
    dt = dtype_arg(out_dtype, (np.int8, np.uint8, np.int16, np.int32), "out_dtype")
    y = out_arg(out, (n, oh, ow, o), dt)
    og = o // groups
    for g in range(groups):
        cols, oc = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        p = {k: _channels(v, oc, o) for k, v in per_channel.items()}
        y[..., oc] = _qgemm("qconv2d", "x", "w", "linear", L.im2col(xp[..., cols], *geometry)[0],
                            wa[oc].reshape(og, -1), zp, p["b_zero_point"], p["bias"], p["multiplier"], p["shift"],
                            p["scale"], p["out_zero_point"], out_min, out_max, dt, rounding, threads,
                            None).reshape(n, oh, ow, og)
    return y
