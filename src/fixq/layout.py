"""NCHW/NHWC layout and window helpers in numpy, shared by the float reference (fixq.graph), the
int8 engine's numpy steps and the tests.  fixq's tensors are NCHW outside (as PyTorch and ONNX give
them) and NHWC inside (channels last, as the kernels read them)."""
import math

import numpy as np

__all__ = ["to_internal", "to_external", "flatten", "internal_axis", "windows", "padded", "window_reduce", "im2col",
           "conv_weight_hwc", "broadcast_operand"]



def to_internal(x):
    """NCHW -> NHWC (4-D); other ranks unchanged."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_external(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def flatten(x):
    """The flatten op: [N, ...] (internal layout) to [N, features] in the external (NCHW) order; N = 0 too."""
    y = to_external(x)
    return y.reshape(y.shape[0], math.prod(y.shape[1:]))


def broadcast_operand(x, ndim):
    """An [N, F] operand of a broadcasting add / mul / sub on [N, H, W, C] tensors as [N, 1, 1, F] (internal
    layout): fixq's NCHW [N, F, 1, 1], TFLite's [1, F] extended to [1, 1, 1, F]."""
    return x.reshape(x.shape[0], 1, 1, x.shape[1]) if x.ndim == 2 and ndim == 4 else x


def internal_axis(axis, ndim):
    """The NHWC axis of NCHW `axis` for a rank-`ndim` tensor."""
    return {1: 3, 2: 1, 3: 2}[axis] if ndim == 4 else axis


def windows(x, kernel, stride, padding, dilation=(1, 1), pad_value=0):
    """[N, OH, OW, kH, kW, C] strided view of padded NHWC `x` (a copy only for the padding)."""
    n, h, w, c = x.shape
    ph, pw = padding
    if ph or pw:
        xp = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, dtype=x.dtype)
        xp[:, ph:ph + h, pw:pw + w, :] = x
        x = xp
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)


def padded(x, padding, pad_value):
    """(x, padding) for :func:`window_reduce`: a pair as it is, four values [top, left, bottom, right]
    applied here with `pad_value` (then (0, 0))."""
    if len(padding) == 2:
        return x, tuple(padding)
    t, left, b, r = padding
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=pad_value), (0, 0)


def window_reduce(x, kernel, stride, padding, pad_value, ufunc, dtype=None):
    """``ufunc.reduce`` over each kH x kW window of NHWC `x` (as `dtype`), one tap at a time: elementwise
    ufuncs on strided views beat a reduction over two strided axes."""
    v = windows(x, kernel, stride, padding, pad_value=pad_value)
    out = v[:, :, :, 0, 0].astype(dtype or x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                ufunc(out, v[:, :, :, i, j], out=out)
    return out


def im2col(x, kernel, stride, padding, dilation, pad_value=0):
    """NHWC `x` -> ([N*OH*OW, kH*kW*C] patches, (N, OH, OW)); weights must be [O, kH, kW, C]."""
    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return x.reshape(-1, x.shape[3]), x.shape[:3]
    v = windows(x, kernel, stride, padding, dilation, pad_value)
    return v.reshape(-1, kernel[0] * kernel[1] * x.shape[3]), v.shape[:3]


def conv_weight_hwc(w):
    """[O, I, kH, kW] -> [O, kH*kW*I] matching :func:`im2col`'s patch order."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))
