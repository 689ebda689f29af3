"""Float kernels of a transformer encoder, and its dynamic-int8 linear layer.

``layer_norm``, ``softmax`` (over the last axis), ``gelu`` and ``attention``
run fixq's C kernels on float32 arrays; ``dynamic_linear`` quantizes float activations to
uint8 at run time (per row or per tensor, as ONNX DynamicQuantizeLinear) and
runs fixq's exact int8 GEMM on weights packed by :func:`fixq.pack_weights`,
dequantizing in the GEMM's epilogue; docs/arithmetic.md ("Float kernels and
the dynamic linear layer") states every rule and error bound.  ``matmul`` is
numpy's (BLAS); ``qmatmul_dynamic`` quantizes both operands at run time.

Inputs are float32 and C-contiguous (no silent copies or casts); ``out``, where
taken, may be ``x`` itself.  ``threads`` splits rows over fixq's worker pool.
"""
import math
import numbers

import numpy as np

from . import _core
from ._core import PackedWeights
from .gemm import pack_weights
from ._validate import THREADS_MAX, threads_arg

__all__ = ["layer_norm", "gelu", "softmax", "attention", "dynamic_linear", "matmul", "qmatmul_dynamic", "quantize_rows",
           "gather_rows", "embed_sum", "masked_mean"]

_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)
_GELU_FORMS = ("none", "tanh")
_GRANULARITIES = ("row", "tensor")
_DYN_ACTS = (None, "gelu", "gelu_tanh")


def _f32(x, name, fn):
    """x itself: a C-contiguous float32 numpy array."""
    if type(x) is np.ndarray and x.dtype is _F32 and x.flags.c_contiguous:
        return x
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{fn}: {name} must be a numpy float32 array, got {type(x).__name__}")
    if x.dtype != _F32:
        raise ValueError(f"{fn}: {name} must be float32, got {x.dtype}; convert it with {name}.astype(np.float32)")
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous; pass np.ascontiguousarray({name})")
    return x


def _threads(threads, fn):
    if type(threads) is int and 0 < threads <= THREADS_MAX:
        return threads
    return threads_arg(threads, fn)


def _out(out, x, fn):
    """A float32 array of x's shape to write: new, x itself, or an `out` that does not overlap x."""
    if out is None:
        return np.empty_like(x)
    out = _f32(out, "out", fn)
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    if out is x:
        return out
    if out.shape != x.shape:
        raise ValueError(f"{fn}: out must have the shape of x {x.shape}, got {out.shape}")
    if np.may_share_memory(out, x) and out.__array_interface__["data"][0] != x.__array_interface__["data"][0]:
        raise ValueError(f"{fn}: out overlaps x without being x; pass out=x or a separate array")
    return out


def _rows(x, fn):
    """(rows, n) of x viewed as rows of its last axis."""
    if x.ndim == 0:
        raise ValueError(f"{fn}: x must have at least one dimension, got a 0-d array")
    n = x.shape[-1]
    return (x.size // n if n else 0), n


def layer_norm(x, weight, bias, eps, out=None, threads=1):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (var biased, as
    torch.nn.functional.layer_norm); weight and bias float32 of shape (x.shape[-1],)."""
    fn = "layer_norm"
    x = _f32(x, "x", fn)
    rows, n = _rows(x, fn)
    weight, bias = _f32(weight, "weight", fn), _f32(bias, "bias", fn)
    if weight.shape != (n,) or bias.shape != (n,):
        raise ValueError(f"{fn}: weight and bias must have shape ({n},) (x.shape[-1]), got {weight.shape} and "
                         f"{bias.shape}")
    e = eps if type(eps) is float else None if isinstance(eps, (bool, np.bool_)) or \
        not isinstance(eps, numbers.Real) else float(eps)
    if e is None or not 0 <= e <= _F32_MAX:
        raise ValueError(f"{fn}: eps must be a number in [0, {_F32_MAX:g}] (finite in float32), got {eps!r}")
    y = _out(out, x, fn)
    _core.layer_norm_raw(x, weight, bias, e, y, rows, n, _threads(threads, fn))
    return y


def softmax(x, out=None, threads=1, *, bias=None):
    """``exp(x - max) / sum(exp(x - max))`` over the last axis; with `bias`, the softmax of ``x + bias``
    (numpy broadcasting, the sum rounded to float32 first: the bits of the add, then the softmax) for a
    float32 bias of shape ``(B, 1, ..., 1, x.shape[-1])``, B 1 or ``x.shape[0]`` (an attention mask's bias
    on the scores), read once per row while the row is in cache."""
    fn = "softmax"
    x = _f32(x, "x", fn)
    rows, n = _rows(x, fn)
    y = _out(out, x, fn)
    if bias is None:
        _core.softmax_raw(x, y, rows, n, _threads(threads, fn))
        return y
    bias = _f32(bias, "bias", fn)
    if bias.ndim != x.ndim or bias.shape[0] not in (1, x.shape[0]) or bias.shape[-1] != n \
            or any(d != 1 for d in bias.shape[1:-1]):
        raise ValueError(f"{fn}: bias must have shape (1 or {x.shape[0]}, 1, ..., 1, {n}) for x of shape {x.shape}, "
                         f"got {bias.shape}")
    if np.may_share_memory(bias, y):
        raise ValueError(f"{fn}: bias overlaps out; pass a separate array")
    if rows:
        _core.softmax_bias_raw(x, bias, y, rows, n, bias.shape[0], _threads(threads, fn))
    return y


def _heads(x, name, fn):
    """x itself: a float32 [N, tokens, H, D] array whose last axis is contiguous (any other strides)."""
    if type(x) is not np.ndarray:
        raise ValueError(f"{fn}: {name} must be a numpy float32 array, got {type(x).__name__}")
    if x.dtype != _F32:
        raise ValueError(f"{fn}: {name} must be float32, got {x.dtype}; convert it with {name}.astype(np.float32)")
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must be [batch, tokens, heads, head size], got shape {x.shape}")
    if x.size and x.shape[-1] > 1 and x.strides[-1] != 4:  # an empty array may have zero strides
        raise ValueError(f"{fn}: {name}'s last axis must be contiguous; pass np.ascontiguousarray({name})")
    return x


def _seq_offsets(offsets, t, fn):
    """offsets as a C-contiguous uintp array: S + 1 values rising strictly from 0 to t."""
    if type(offsets) is np.ndarray and offsets.dtype == np.uintp and offsets.ndim == 1 and offsets.flags.c_contiguous:
        o = offsets
    else:
        o = np.asarray(offsets)
        if o.dtype.kind not in "iu" or o.ndim != 1:
            raise ValueError(f"{fn}: seq_offsets must be a 1-D integer array, got {o.dtype} of shape {o.shape}")
    if o.size < 2 or o[0] != 0 or o[-1] != t or not (o[1:] > o[:-1]).all():
        raise ValueError(f"{fn}: seq_offsets must rise strictly from 0 to the {t} packed tokens, got {o!r:.200}")
    return np.ascontiguousarray(o, dtype=np.uintp)


def attention(q, k, v, scale, bias=None, out=None, threads=1, *, seq_offsets=None):
    """Multi-head attention in one pass per head, the context in merged-heads layout: for every batch n and
    head h, ``softmax(scale * q[n, :, h] @ k[n, :, h].T + bias[n]) @ v[n, :, h]`` (``scale * q`` rounded to
    float32 first, then the dot products; the softmax's numerics are :func:`softmax`'s with ``bias=``).
    `q` ``[N, M, H, D]``, `k` and `v` ``[N, L, H, D]``: float32, the last axis contiguous, any other strides
    (a linear's output ``[N, L, H * D]`` reshaped: no transposes or copies); `bias` ``(1 or N, 1, 1, L)``
    (an attention mask's bias) or None; returns `out`, C-contiguous ``[N, M, H, D]`` (its reshape to
    ``[N, M, H * D]`` is the merged heads).  A query whose keys are all masked (bias float32 min everywhere)
    gets the mean of its values, as the add-then-softmax does.  `threads` splits blocks of query rows of
    the heads over fixq's worker pool.

    With `seq_offsets` (S + 1 integers rising strictly from 0 to T), `q`, `k` and `v` are ``[1, T, H, D]``: S
    sequences packed one after another (a padded batch's real tokens), `bias` None or ``(1, 1, 1, T)``; the
    tokens ``seq_offsets[s]:seq_offsets[s + 1]`` attend to each other alone, each sequence the bits of its own
    call with N = 1."""
    fn = "attention"
    q, k, v = _heads(q, "q", fn), _heads(k, "k", fn), _heads(v, "v", fn)
    n, m, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != n or k.shape[2:] != (h, d):
        raise ValueError(f"{fn}: k and v must be [{n}, L, {h}, {d}] for q of shape {q.shape}, got {k.shape} and "
                         f"{v.shape}")
    l = k.shape[1]
    if seq_offsets is not None:
        if n != 1 or l != m:
            raise ValueError(f"{fn}: with seq_offsets q, k and v must be [1, T, {h}, {d}] (one batch of the packed "
                             f"tokens), got {q.shape} and {k.shape}")
        seq_offsets = _seq_offsets(seq_offsets, m, fn)
    s = float(scale) if isinstance(scale, numbers.Real) and not isinstance(scale, (bool, np.bool_)) else None
    if s is None or not abs(s) <= _F32_MAX:
        raise ValueError(f"{fn}: scale must be a finite number, got {scale!r}")
    threads = _threads(threads, fn)
    if bias is not None:
        bias = _f32(bias, "bias", fn)
        if bias.shape not in ((1, 1, 1, l), (n, 1, 1, l)):
            batch = "1" if n == 1 else f"1 or {n}"
            raise ValueError(f"{fn}: bias must have shape ({batch}, 1, 1, {l}) for k of shape {k.shape}, "
                             f"got {bias.shape}")
    if out is None:
        out = np.empty(q.shape, _F32)
    else:
        out = _f32(out, "out", fn)
        if out.shape != q.shape or not out.flags.writeable:
            raise ValueError(f"{fn}: out must be a writeable array of q's shape {q.shape}, got {out.shape}")
        if any(x is not None and np.may_share_memory(out, x) for x in (q, k, v, bias)):
            raise ValueError(f"{fn}: out overlaps an input; pass a separate array")
    if out.size == 0:
        return out
    if l == 0:
        raise ValueError(f"{fn}: k and v hold no keys (L = 0): the softmax over them is undefined")
    _core.attention_raw(q, k, v, s, None if bias is None else bias.reshape(-1),
                        l if bias is not None and bias.shape[0] > 1 else 0, out, threads, seq_offsets)
    return out


def gelu(x, approximate="none", out=None, threads=1):
    """GELU: ``approximate="none"``: ``0.5 x (1 + erf(x / sqrt 2))``; ``"tanh"``:
    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`` (torch.nn.functional.gelu's forms)."""
    fn = "gelu"
    x = _f32(x, "x", fn)
    if not isinstance(approximate, str) or approximate not in _GELU_FORMS:
        raise ValueError(f"{fn}: approximate must be 'none' or 'tanh', got {approximate!r}")
    y = _out(out, x, fn)
    _core.gelu_raw(x, approximate, y, x.size, _threads(threads, fn))
    return y


def _weight_scale(weight_scale, n, fn):
    """weight_scale as a 1-D C-contiguous float32 array of length 1 or n."""
    if type(weight_scale) is np.ndarray and weight_scale.dtype is _F32 and weight_scale.shape == (n,) \
            and weight_scale.flags.c_contiguous:
        return weight_scale
    if isinstance(weight_scale, (bool, np.bool_)):
        raise ValueError(f"{fn}: weight_scale must be a number or an array of shape ({n},), got {weight_scale!r}")
    try:
        ws = np.asarray(weight_scale, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: weight_scale must be a number or an array of shape ({n},), "
                         f"got {weight_scale!r}") from None
    if ws.shape not in ((), (1,), (n,)):
        raise ValueError(f"{fn}: weight_scale must be a scalar or have shape ({n},) (one per output column), "
                         f"got shape {ws.shape}")
    return np.ascontiguousarray(ws.reshape(-1), dtype=np.float32)


def dynamic_linear(x, packed, weight_scale, bias=None, granularity="row", threads=1, *, residual=None, act=None,
                   out=None):
    """``x @ w.T * weight_scale + bias`` in int8: float32 ``x (..., K)`` quantized to uint8 at run time
    (``granularity="row"``: each row of K values its own scale and zero point; ``"tensor"``: one for all),
    int8/uint8 weights packed by :func:`fixq.pack_weights` (any zero points) with ``weight_scale`` per
    output column (shape (N,)) or per tensor, exact int32 accumulators, float32 ``(..., N)`` out.

    Fused after it, in the GEMM's epilogue while each block of y is in L1 (the bits of the separate ops):
    ``residual``, a float32 array of y's shape, added (numpy's float32 add), then ``act``: None, ``"gelu"``
    (:func:`gelu`, ``approximate="none"``) or ``"gelu_tanh"`` (``approximate="tanh"``).  ``out``: the
    C-contiguous float32 array of y's shape to write (it may be ``residual`` itself: a residual add in
    place), else a new one.  When x holds NaN or infinity the call raises ValueError; with ``granularity="row"``
    rows are checked as their tiles are quantized, so ``out`` (``residual`` too, when it is ``out``) may by then
    hold some rows' results: keep a copy if it must survive a failed call."""
    fn = "dynamic_linear"
    x = _f32(x, "x", fn)
    if type(packed) is not PackedWeights:
        raise ValueError(f"{fn}: packed must be fixq.pack_weights(w) (int8 weights [N, K]), "
                         f"got {type(packed).__name__}")
    k, n = packed.k, packed.n
    if x.ndim == 0 or x.shape[-1] != k:
        raise ValueError(f"{fn}: x's last dimension must be K = {k} (packed weights {packed.shape}), "
                         f"got x of shape {x.shape}")
    ws = _weight_scale(weight_scale, n, fn)
    if bias is not None:
        bias = _f32(bias, "bias", fn)
        if bias.shape != (n,):
            raise ValueError(f"{fn}: bias must have shape ({n},) (one per output column), got {bias.shape}")
    if not isinstance(granularity, str) or granularity not in _GRANULARITIES:
        raise ValueError(f"{fn}: granularity must be 'row' or 'tensor', got {granularity!r}")
    if not (act is None or isinstance(act, str) and act in _DYN_ACTS):
        raise ValueError(f"{fn}: act must be None, 'gelu' or 'gelu_tanh', got {act!r}")
    shape = x.shape[:-1] + (n,)
    if residual is not None:
        residual = _f32(residual, "residual", fn)
        if residual.shape != shape:
            raise ValueError(f"{fn}: residual must have y's shape {shape}, got {residual.shape}")
    if out is None:
        y = np.empty(shape, _F32)
    else:
        y = _f32(out, "out", fn)
        if y.shape != shape or not y.flags.writeable:
            raise ValueError(f"{fn}: out must be a writeable array of y's shape {shape}, got {y.shape}")
        same = residual is not None and (y is residual or
                                         y.__array_interface__["data"][0] == residual.__array_interface__["data"][0])
        if np.may_share_memory(y, x) or (residual is not None and not same and np.may_share_memory(y, residual)):
            raise ValueError(f"{fn}: out overlaps x or residual; pass residual itself or a separate array")
    m = math.prod(x.shape[:-1])
    _core.dynamic_linear_raw(x, m, packed, ws, bias, granularity, y, _threads(threads, fn), residual, act)
    return y


def _batched(a, b, fn):
    a, b = _f32(a, "a", fn), _f32(b, "b", fn)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{fn}: shapes {a.shape} and {b.shape} do not match: a must be (..., M, K) and "
                         f"b (..., K, N)")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"{fn}: the batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
    return a, b, batch


def matmul(a, b, threads=1):
    """Batched float32 ``a (..., M, K) @ b (..., K, N)`` (batch dimensions broadcast): numpy's matmul, which
    calls BLAS (faster than a fixq kernel would be); ``threads`` is checked, and BLAS uses its own thread
    count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)."""
    fn = "matmul"
    a, b, _ = _batched(a, b, fn)
    _threads(threads, fn)
    return np.matmul(a, b)


def quantize_rows(table):
    """float32 table [R, D] -> (int8 [R, D], float32 scale [R]): symmetric per row, scale = max|row| / 127
    (1 for a zero row), q = round_half_even(row / scale) within [-127, 127] (ORT's quantize_dynamic quantizes
    a Gather's table per tensor; a row each is finer at the same size)."""
    table = _f32(table, "table", "quantize_rows")
    if table.ndim != 2:
        raise ValueError(f"quantize_rows: table must be [rows, D], got shape {table.shape}")
    return _quantize_symmetric(table, -1)


def gather_rows(q, scale, ids, count=None):
    """Rows `ids` of a table quantized by :func:`quantize_rows`, float32 ``scale[id] * q[id, :]`` (one float32
    product each, the same bits on every CPU); with `count`, rows 0..count-1 instead (position tables)."""
    if count is not None:
        return np.multiply(q[:count], scale[:count, None], dtype=np.float32)
    return np.multiply(q.take(ids, axis=0), scale.take(ids)[..., None], dtype=np.float32)


def embed_sum(tables, ids, layer_norm=None, threads=1):
    """``gather_rows(q_0, scale_0, ids[0]) + gather_rows(q_1, scale_1, ids[1]) + ...`` (added left to right, each
    sum rounded to float32: the bits of the separate gathers and adds), then, with `layer_norm` ``(weight, bias,
    eps)``, :func:`layer_norm` of it: one pass over the tokens, split over `threads`.  `tables`: 1 to 8 pairs
    ``(q, scale)`` of :func:`quantize_rows` (int8 [R, D], float32 [R], one D); `ids`: one integer array per
    table, all of one shape, each id inside its table.  Returns float32 ``ids[0].shape + (D,)``."""
    fn = "embed_sum"
    if not isinstance(tables, (list, tuple)) or not 1 <= len(tables) <= _core.EMBED_TABLES_MAX \
            or not isinstance(ids, (list, tuple)) or len(ids) != len(tables):
        raise ValueError(f"{fn}: tables must be 1 to {_core.EMBED_TABLES_MAX} (q, scale) pairs and ids one integer "
                         f"array per table")
    shape, d, args = np.shape(ids[0]), None, []
    for k, ((q, scale), i) in enumerate(zip(tables, ids)):
        if type(q) is not np.ndarray or q.dtype != np.int8 or q.ndim != 2 or not q.flags.c_contiguous:
            raise ValueError(f"{fn}: table {k} must be a C-contiguous int8 [rows, D] array (quantize_rows)")
        scale = _f32(scale, f"table {k}'s scale", fn)
        d = q.shape[1] if d is None else d
        if q.shape[1] != d or scale.shape != q.shape[:1]:
            raise ValueError(f"{fn}: table {k} must be [rows, {d}] with a scale of shape (rows,), got {q.shape} "
                             f"and {scale.shape}")
        i = np.asarray(i)
        if i.dtype.kind not in "iu" or i.shape != shape:
            raise ValueError(f"{fn}: ids must be integer arrays of one shape {shape}, got {i.dtype} {i.shape}")
        if i.size and (i.min() < 0 or i.max() >= q.shape[0]):
            raise ValueError(f"{fn}: ids[{k}] must lie in [0, {q.shape[0]}) (table {k}'s rows)")
        args.append((q, scale, np.ascontiguousarray(i, dtype=np.int64).reshape(-1)))
    w = b = None
    eps = 0.0
    if layer_norm is not None:
        w, b, eps = layer_norm
        w, b = _f32(w, "layer_norm weight", fn), _f32(b, "layer_norm bias", fn)
        if w.shape != (d,) or b.shape != (d,) or isinstance(eps, (bool, np.bool_)) or \
                not isinstance(eps, numbers.Real) or not 0 <= eps <= _F32_MAX:
            raise ValueError(f"{fn}: layer_norm must be (weight ({d},), bias ({d},), eps in [0, {_F32_MAX:g}])")
    y = np.empty(shape + (d,), _F32)
    if y.size:
        _core.embed_sum_raw(args, y.reshape(-1, d), w, b, float(eps), _threads(threads, fn))
    return y


def masked_mean(x, mask, threads=1, *, seq_offsets=None):
    """``sum(x * mask) / max(sum(mask), 1e-9)`` over the tokens: x float32 ``[N, L, D]``, its 0/1 `mask`
    ``[N, L]`` (any numbers whose sums are exact), float32 ``[N, D]`` out: the products rounded, added row after
    row to +0, one division each; for D >= 2 numpy's bits for ``(x * m[..., None]).sum(axis=1) /
    np.maximum(m.sum(axis=1)[..., None], 1e-9)`` (over D = 1 numpy sums pairwise).  With `seq_offsets` (S + 1 integers rising from 0 to T), x is ``[1, T, D]`` and mask
    ``[1, T]``: S sequences packed one after another, ``[S, D]`` out.  `threads` splits the sequences."""
    fn = "masked_mean"
    x = _f32(x, "x", fn)
    mask = np.asarray(mask)
    if x.ndim != 3 or mask.shape != x.shape[:2] or mask.dtype.kind not in "biuf":
        raise ValueError(f"{fn}: x must be [N, L, D] and mask [N, L] numbers, got {x.shape} and {mask.shape}")
    n, length, d = x.shape
    if seq_offsets is None:
        offsets = np.arange(0, (n + 1) * length, length, dtype=np.uintp) if length else np.zeros(n + 1, np.uintp)
    elif n != 1:
        raise ValueError(f"{fn}: with seq_offsets x must be [1, T, D] (one batch of the packed tokens), got {x.shape}")
    else:
        offsets = np.asarray(seq_offsets)
        if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or \
                offsets[-1] != length or (offsets[1:] < offsets[:-1]).any():
            raise ValueError(f"{fn}: seq_offsets must rise from 0 to the {length} packed tokens, got {offsets!r:.200}")
        offsets = np.ascontiguousarray(offsets, dtype=np.uintp)
    y = np.zeros((offsets.size - 1, d), _F32)  # no token: 0 / 1e-9
    if y.size and length:
        m = np.ascontiguousarray(mask, dtype=_F32).reshape(-1)
        _core.masked_mean_raw(x.reshape(-1, d), m, offsets, y, _threads(threads, fn))
    return y


def _quantize_symmetric(b, axis):
    """b float32 -> (int8 of b's shape, float32 scale over the other axes): symmetric along `axis`,
    scale = max|b| / 127 (1 for all zeros), q = round_half_even(b / scale) (within [-127, 127])."""
    amax = np.max(np.abs(b), axis=axis, initial=0)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(b / np.expand_dims(scale, axis)), -127, 127).astype(np.int8), scale


def qmatmul_dynamic(a, b, threads=1):
    """Batched ``a (..., M, K) @ b (..., K, N)`` with both operands quantized at run time: a per row to uint8
    (:func:`dynamic_linear`'s ``granularity="row"``), b per column to symmetric int8; exact int32
    accumulators, float32 out (the int8 option for attention's two matmuls)."""
    fn = "qmatmul_dynamic"
    a, b, batch = _batched(a, b, fn)
    threads = _threads(threads, fn)
    if not np.isfinite(b).all():
        raise ValueError(f"{fn}: b holds NaN or infinity; replace or mask them first")
    m, n = a.shape[-2], b.shape[-1]
    a_full = np.broadcast_to(a, batch + a.shape[-2:])
    qb, scale = _quantize_symmetric(b, -2)
    qb, scale = np.broadcast_to(qb, batch + qb.shape[-2:]), np.broadcast_to(scale, batch + (n,))
    out = np.empty(batch + (m, n), _F32)
    for i in np.ndindex(*batch):
        out[i] = dynamic_linear(np.ascontiguousarray(a_full[i]), pack_weights(qb[i], layout="matmul"),
                                np.ascontiguousarray(scale[i]), threads=threads)
    return out
