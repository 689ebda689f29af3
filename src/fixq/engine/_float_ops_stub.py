"""numpy stand-ins for ``fixq.float_ops`` (the float and dynamic-int8 kernels of sequence models), with its
signatures, used by fixq.engine.sequence until that module is built; removing this file is the whole swap."""
import numpy as np

from .. import gemm

# erf(x) = x P(x^2) / Q(x^2) on [-4, 4] (Eigen's float32 erf; max error 6.5e-8 against math.erf), +-1 outside
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def _out(out, y):
    if out is None:
        return y
    out[...] = y
    return out


def layer_norm(x, weight, bias, eps, out=None, threads=1):
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = np.einsum("...i,...i->...", d, d)[..., None] / np.float32(x.shape[-1])
    y = d * (1.0 / np.sqrt(var + np.float32(eps))) * weight
    return _out(out, y + bias if bias is not None else y)


def gelu(x, approximate="none", out=None, threads=1):
    if approximate == "tanh":
        c = np.float32(np.sqrt(2.0 / np.pi))
        return _out(out, np.float32(0.5) * x * (np.float32(1) + np.tanh(c * (x + np.float32(0.044715) * x * x * x))))
    v = np.clip(x * np.float32(1 / np.sqrt(2.0)), -4, 4)
    v2 = v * v
    p = np.full(x.shape, _ERF_P[0], np.float32)
    for c in _ERF_P[1:]:
        p = p * v2 + np.float32(c)
    q = np.full(x.shape, _ERF_Q[0], np.float32)
    for c in _ERF_Q[1:]:
        q = q * v2 + np.float32(c)
    return _out(out, np.float32(0.5) * x * (np.float32(1) + v * p / q))


def softmax(x, out=None, threads=1):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return _out(out, e)


def _quantize_rows(x2):
    """Symmetric int8 per row: (q, scale per row)."""
    s = np.abs(x2).max(axis=1, keepdims=True) / np.float32(127)
    s[s == 0] = 1
    return np.rint(x2 / s).astype(np.int8), s


def dynamic_linear(x, packed, weight_scale, bias=None, granularity="row", threads=1):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if granularity == "row":
        q, s = _quantize_rows(x2)
        acc = gemm.qlinear(q, packed, out_dtype=np.int32, threads=threads)
    else:  # asymmetric uint8-range int8 per tensor, as ONNX Runtime's DynamicQuantizeLinear
        lo, hi = min(float(x2.min(initial=0)), 0.0), max(float(x2.max(initial=0)), 0.0)
        s = np.float32((hi - lo) / 255 or 1.0)
        zp = int(np.clip(np.rint(-128 - lo / s), -128, 127))
        q = np.clip(np.rint(x2 / s) + zp, -128, 127).astype(np.int8)
        acc = gemm.qlinear(q, packed, a_zero_point=zp, out_dtype=np.int32, threads=threads)
    y = acc.astype(np.float32) * (s * np.asarray(weight_scale, np.float32))
    if bias is not None:
        y += bias
    return y.reshape(lead + (y.shape[-1],))


def matmul(a, b, threads=1):
    return np.matmul(a, b)


def qmatmul_dynamic(a, b, threads=1):
    """int8 a (per row) times int8 b (per column), both symmetric, exact integer sums (in float64), rescaled."""
    sa = np.abs(a).max(axis=-1, keepdims=True) / np.float32(127)
    sb = np.abs(b).max(axis=-2, keepdims=True) / np.float32(127)
    sa[sa == 0] = 1
    sb[sb == 0] = 1
    qa = np.rint(a / sa)
    qb = np.rint(b / sb)
    return (np.matmul(qa.astype(np.float64), qb.astype(np.float64)).astype(np.float32) * sa) * sb
