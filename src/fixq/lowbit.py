"""Weights below int8: fp16, ternary (TWN) and binary (XNOR-Net), each with its storage format and
compute path (docs/quantization.md).

- fp16: :func:`pack_fp16` stores ``[N, K]`` weights as float16 (half of fp32); :func:`fp16_linear`
  reads them and computes in fp32 (F16C conversion inside the C kernel).
- ternary: :func:`ternarize` (Ternary Weight Networks, Li et al. 2016): per output row
  ``delta = 0.7 * mean|w|``, codes {-1, 0, +1} packed 4 per byte, ``alpha = mean(|w| > delta)``.
- binary: :func:`binarize` (XNOR-Net, Rastegari et al. 2016): per row ``alpha = mean|w|``, signs
  with sign(0) = +1 packed 8 per byte.
- :func:`lowbit_qlinear` runs ternary/binary weights against int8 activations through the exact int8
  kernel (``fixq.qlinear``) with alpha folded into the output scale; :func:`popcount_linear` runs
  binary activations against binary weights through the XOR-popcount GEMM;
  :func:`binary_linear` is the XNOR-Net layer on float input.
- :func:`storage_report` gives each precision's storage ratio against fp32 and its SQNR.

Every format has ``to_arrays()`` / ``from_arrays()``: plain numpy arrays (no pickle) for archives.
"""
import numbers

import numpy as np

from . import _core
from .arith import dequantize
from .gemm import pack_weights, qlinear
from .qparams import choose_qparams, quantize_bias

__all__ = ["Fp16Weights", "TernaryWeights", "BinaryWeights", "pack_fp16", "fp16_linear", "ternarize",
           "binarize", "popcount_linear", "binary_linear", "lowbit_qlinear", "sqnr", "storage_report"]

_F16_MAX = float(np.finfo(np.float16).max)


def _weights_2d(w, name="w"):
    a = np.asarray(w)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array [N, K], got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [N, K] (Linear layout), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(a)  # row sums in one order for every layout (alpha, SQNR)


def _meta_k(arrays, name):
    k = np.asarray(arrays["k"])
    if k.shape != () or k.dtype.kind not in "iu" or int(k) < 1:
        raise ValueError(f"{name} arrays: 'k' must be a positive integer scalar, got {k!r}")
    return int(k)


def _alpha_arg(alpha, n, name):
    a = np.asarray(alpha)
    if a.shape != (n,) or a.dtype != np.float32 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} arrays: 'alpha' must be float32 [{n}], finite and >= 0")
    return np.ascontiguousarray(a)


# ---- fp16 -------------------------------------------------------------------------------------

class Fp16Weights:
    """``[N, K]`` weights stored as float16, kept packed in 16-column panels for the kernel."""

    def __init__(self, w16):
        self.weights = np.ascontiguousarray(w16, dtype=np.float16)
        n, k = self.weights.shape
        self.shape = (n, k)
        self._packed = np.empty(_core.f16_packed_size(n, k), np.uint16)
        _core.f16_pack_raw(self.weights.view(np.uint16), self._packed)

    @property
    def nbytes(self):
        return self.weights.nbytes

    def dequantize(self):
        return self.weights.astype(np.float32)

    def to_arrays(self):
        """``{"w": float16 [N, K]}`` (the kernel's panels are rebuilt on load)."""
        return {"w": self.weights.copy()}

    @classmethod
    def from_arrays(cls, arrays):
        w = np.asarray(arrays["w"])
        if w.dtype != np.float16 or w.ndim != 2 or 0 in w.shape or not np.all(np.isfinite(w)):
            raise ValueError(f"fp16 arrays: 'w' must be a finite float16 [N, K] array, got {w.dtype} {w.shape}")
        return cls(w)


def pack_fp16(w):
    """``[N, K]`` float weights to :class:`Fp16Weights` (round to nearest even).  Values beyond
    float16's range (|w| > 65504) are an error rather than a silent infinity."""
    a = _weights_2d(w)
    if np.abs(a).max() > _F16_MAX:
        raise ValueError(f"w has values beyond the float16 range (|w| <= {_F16_MAX:g}); scale the layer first")
    return Fp16Weights(a.astype(np.float16))


def fp16_linear(x, w, bias=None):
    """``y = x @ w.T (+ bias)`` in fp32 with fp16 weights: ``x`` float32 ``[..., K]``, ``w`` an
    :class:`Fp16Weights` (or a float16 ``[N, K]`` array, packed on the fly), ``bias`` float32 ``[N]``.

    The summation order is fixed (docs/quantization.md), so every CPU path returns the same bits.
    """
    if not isinstance(w, Fp16Weights):
        wa = np.asarray(w)
        if wa.dtype != np.float16:
            raise TypeError(f"w must be Fp16Weights (fixq.pack_fp16) or a float16 array, got {type(w).__name__} "
                            f"{getattr(wa, 'dtype', '')}")
        w = Fp16Weights.from_arrays({"w": wa})
    n, k = w.shape
    xa = np.asarray(x)
    if xa.dtype != np.float32:
        raise TypeError(f"x must be float32, got dtype {xa.dtype}; convert it explicitly (x.astype(np.float32))")
    if xa.ndim == 0 or xa.shape[-1] != k:
        raise ValueError(f"x must have shape [..., {k}] to match w of shape {w.shape}, got {xa.shape}")
    b = None
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype != np.float32 or b.shape != (n,):
            raise ValueError(f"bias must be float32 of shape ({n},), got {b.dtype} {b.shape}")
        b = np.ascontiguousarray(b)
    x2 = np.ascontiguousarray(xa.reshape(-1, k))
    y = np.empty((x2.shape[0], n), np.float32)
    _core.f16_linear_raw(x2, w._packed, n, b, y)
    return y.reshape(xa.shape[:-1] + (n,))


# ---- ternary ----------------------------------------------------------------------------------

class TernaryWeights:
    """Codes {-1, 0, +1} of an ``[N, K]`` matrix, 2 bits each (0b00 = 0, 0b01 = +1, 0b11 = -1; value j
    of a row in bits 2*(j % 4) of byte j // 4), and ``alpha`` float32 ``[N]``: ``w ~ alpha[:, None] * t``."""

    def __init__(self, codes, alpha, k):
        self.codes, self.alpha, self.k = codes, alpha, k
        self.shape = (codes.shape[0], k)
        self._int8 = None
        self._int8_packed = None

    @property
    def nbytes(self):
        return self.codes.nbytes + self.alpha.nbytes

    def unpack(self):
        """int8 ``[N, K]`` in {-1, 0, +1}."""
        if self._int8 is None:
            c = (self.codes[:, :, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
            t = np.where(c == 3, -1, c.astype(np.int8)).astype(np.int8).reshape(self.codes.shape[0], -1)
            self._int8 = np.ascontiguousarray(t[:, :self.k])
        return self._int8

    def dequantize(self):
        return self.alpha[:, None] * self.unpack().astype(np.float32)

    def to_arrays(self):
        return {"codes": self.codes.copy(), "alpha": self.alpha.copy(), "k": np.array(self.k, np.int64)}

    @classmethod
    def from_arrays(cls, arrays):
        k = _meta_k(arrays, "ternary")
        codes = np.asarray(arrays["codes"])
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != (k + 3) // 4 or codes.shape[0] == 0:
            raise ValueError(f"ternary arrays: 'codes' must be uint8 [N, {(k + 3) // 4}], got {codes.dtype} "
                             f"{codes.shape}")
        fields = (codes[:, :, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
        if np.any(fields == 2):
            raise ValueError("ternary arrays: 'codes' holds the invalid 2-bit code 0b10")
        if np.any(fields.reshape(codes.shape[0], -1)[:, k:]):
            raise ValueError("ternary arrays: padding codes after column k must be 0")
        return cls(np.ascontiguousarray(codes), _alpha_arg(arrays["alpha"], codes.shape[0], "ternary"), k)


def ternarize(w, delta_factor=0.7):
    """Ternary Weight Networks: per row ``delta = delta_factor * mean|w|``; ``t = sign(w)`` where
    ``|w| > delta`` else 0; ``alpha = mean(|w|)`` over ``|w| > delta`` (0 for an all-zero row)."""
    a = _weights_2d(w).astype(np.float64)
    if isinstance(delta_factor, (bool, np.bool_)) or not (isinstance(delta_factor, numbers.Real)
                                                          and 0.0 <= delta_factor < 1.0):
        raise ValueError(f"delta_factor must be a number in [0, 1), got {delta_factor!r}")
    n, k = a.shape
    mag = np.abs(a)
    delta = delta_factor * mag.mean(axis=1, keepdims=True)
    keep = mag > delta
    t = np.where(keep, np.where(a > 0, 1, -1), 0).astype(np.int8)
    cnt = keep.sum(axis=1)
    alpha = np.where(cnt > 0, (mag * keep).sum(axis=1) / np.maximum(cnt, 1), 0.0).astype(np.float32)
    padded = np.zeros((n, (k + 3) // 4 * 4), np.uint8)
    padded[:, :k] = t.view(np.uint8) & 3
    q = padded.reshape(n, -1, 4)
    codes = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    out = TernaryWeights(np.ascontiguousarray(codes), alpha, k)
    out._int8 = t
    return out


# ---- binary -----------------------------------------------------------------------------------

class BinaryWeights:
    """Signs of an ``[N, K]`` matrix, 1 bit each (1 = -1; value j of a row in bit j % 8 of byte
    j // 8), and ``alpha`` float32 ``[N]``: ``w ~ alpha[:, None] * s``.  Also used for binarized
    activations (then ``alpha`` is XNOR-Net's per-row beta)."""

    def __init__(self, bits, alpha, k):
        self.bits, self.alpha, self.k = bits, alpha, k
        self.shape = (bits.shape[0], k)
        self._packed = np.empty(_core.bgemm_packed_size(bits.shape[0], k), np.uint8)   # kernel layout
        _core.bgemm_pack_raw(bits, k, self._packed)
        self._int8 = None
        self._int8_packed = None

    @property
    def nbytes(self):
        return self.bits.nbytes + self.alpha.nbytes

    def unpack(self):
        """int8 ``[N, K]`` in {-1, +1}."""
        if self._int8 is None:
            b = np.unpackbits(self.bits, axis=1, count=self.k, bitorder="little")
            self._int8 = np.ascontiguousarray((1 - 2 * b.astype(np.int8)).astype(np.int8))
        return self._int8

    def dequantize(self):
        return self.alpha[:, None] * self.unpack().astype(np.float32)

    def to_arrays(self):
        return {"bits": self.bits.copy(), "alpha": self.alpha.copy(), "k": np.array(self.k, np.int64)}

    @classmethod
    def from_arrays(cls, arrays):
        k = _meta_k(arrays, "binary")
        bits = np.asarray(arrays["bits"])
        if bits.dtype != np.uint8 or bits.ndim != 2 or bits.shape[1] != (k + 7) // 8 or bits.shape[0] == 0:
            raise ValueError(f"binary arrays: 'bits' must be uint8 [N, {(k + 7) // 8}], got {bits.dtype} {bits.shape}")
        if k % 8 and np.any(bits[:, -1] >> (k % 8)):
            raise ValueError("binary arrays: padding bits after column k must be 0")
        return cls(np.ascontiguousarray(bits), _alpha_arg(arrays["alpha"], bits.shape[0], "binary"), k)


def binarize(w):
    """XNOR-Net binarization of each row of ``[N, K]``: ``alpha = mean|w|``, signs with sign(0) = +1."""
    a = _weights_2d(w)
    alpha = np.abs(a.astype(np.float64)).mean(axis=1).astype(np.float32)
    bits = np.packbits(a < 0, axis=1, bitorder="little")
    return BinaryWeights(np.ascontiguousarray(bits), alpha, a.shape[1])


def popcount_linear(a, w):
    """Exact ``a_signs @ w_signs.T`` for binary ``a`` ``[M, K]`` and ``w`` ``[N, K]`` (both
    :class:`BinaryWeights`): int32 ``K - 2 * popcount(a XOR w)`` per pair (XOR-popcount GEMM)."""
    for v, name in ((a, "a"), (w, "w")):
        if not isinstance(v, BinaryWeights):
            raise TypeError(f"{name} must be BinaryWeights (fixq.lowbit.binarize), got {type(v).__name__}")
    if a.k != w.k:
        raise ValueError(f"a has K={a.k} but w has K={w.k}; they must match")
    y = np.empty((a.shape[0], w.shape[0]), np.int32)
    _core.bgemm_raw(a._packed, a.shape[0], w._packed, w.shape[0], a.k, y)
    return y


def binary_linear(x, w):
    """XNOR-Net fully connected layer: ``x`` float ``[M, K]`` binarized per row (beta = mean|x|),
    then ``popcount_linear * beta[:, None] * alpha[None, :]`` as float32 ``[M, N]``."""
    if not isinstance(w, BinaryWeights):
        raise TypeError(f"w must be BinaryWeights (fixq.lowbit.binarize), got {type(w).__name__}")
    if not isinstance(x, BinaryWeights):
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[0] == 0 and x.dtype.kind == "f":
            if x.shape[1] != w.k:
                raise ValueError(f"x has K={x.shape[1]} but w has K={w.k}; they must match")
            return np.zeros((0, w.shape[0]), np.float32)  # an empty batch (binarize takes non-empty rows)
        x = binarize(_weights_2d(x, "x"))  # its checks name x
    if x.k != w.k:
        raise ValueError(f"x has K={x.k} but w has K={w.k}; they must match")
    return popcount_linear(x, w).astype(np.float32) * x.alpha[:, None] * w.alpha[None, :]


def lowbit_qlinear(x, w, x_scale, x_zero_point=0, *, bias=None, out_scale=None, out_zero_point=0,
                   out_dtype=np.int8):
    """int8/uint8 activations ``x`` ``[M, K]`` (scale ``x_scale``, zero point ``x_zero_point``) against
    ternary or binary weights, through the exact int8 kernel ``fixq.qlinear``.

    The weights enter as int8 {-1, 0, +1}; alpha is folded into the per-column output scale
    ``x_scale * alpha / out_scale`` (rows with alpha = 0 use 1.0: their accumulators are 0).  ``bias`` is
    float32 ``[N]``, quantized with :func:`fixq.quantize_bias` at ``x_scale * alpha``.
    ``out_dtype=np.int32`` returns the exact accumulators; ``np.float32`` returns them dequantized;
    int8/uint8 requantize with ``out_scale``/``out_zero_point`` (round half to even, as ORT).
    """
    if not isinstance(w, (TernaryWeights, BinaryWeights)):
        raise TypeError(f"w must be TernaryWeights or BinaryWeights, got {type(w).__name__}")
    dt = np.dtype(out_dtype)
    alpha = np.where(w.alpha > 0, w.alpha, np.float32(1.0)).astype(np.float32)
    s_acc = np.float32(x_scale) * alpha
    bias_q = None if bias is None else quantize_bias(bias, x_scale, alpha)[0]
    if w._int8_packed is None:   # packed once per weight, as fixq.pack_weights intends
        w._int8_packed = pack_weights(w.unpack())
    if dt in (np.dtype(np.int32), np.dtype(np.float32)):
        acc = qlinear(x, w._int8_packed, bias=bias_q, a_zero_point=x_zero_point, out_dtype=np.int32)
        return acc if dt == np.int32 else dequantize(acc, s_acc, 0, axis=acc.ndim - 1)
    if out_scale is None:
        raise ValueError("out_scale is required for int8/uint8 output")
    return qlinear(x, w._int8_packed, bias=bias_q, a_zero_point=x_zero_point,
                        scale=s_acc / np.float32(out_scale), out_zero_point=out_zero_point, out_dtype=dt,
                        rounding="fp32")


# ---- reports ----------------------------------------------------------------------------------

def sqnr(ref, approx):
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum ref^2 / sum (ref - approx)^2)``
    (``inf`` when exact)."""
    r = np.asarray(ref, np.float64)
    e = r - np.asarray(approx, np.float64)
    noise = float(np.sum(e * e))
    return float("inf") if noise == 0 else float(10.0 * np.log10(float(np.sum(r * r)) / noise))


def storage_report(w):
    """Storage against fp32 and SQNR for ``[N, K]`` weights in each precision fixq offers:
    fp16, int8 (per-row symmetric, TFLite spec), ternary (TWN) and binary (XNOR-Net).

    Returns a list of dicts ``{"precision", "bytes", "ratio_vs_fp32", "sqnr_db"}`` (bytes include the
    per-row scales; ``ratio_vs_fp32`` is stored size / fp32 size)."""
    a = _weights_2d(w).astype(np.float32)
    fp32 = a.nbytes
    rows = [("fp32", fp32, a)]
    f16 = pack_fp16(a)
    rows.append(("fp16", f16.nbytes, f16.dequantize()))
    qp = choose_qparams(a.min(axis=1), a.max(axis=1), np.int8, symmetric=True, axis=0)
    q = qp.quantize(a)
    rows.append(("int8", q.nbytes + qp.scale.nbytes, qp.dequantize(q)))
    t = ternarize(a)
    rows.append(("ternary", t.nbytes, t.dequantize()))
    b = binarize(a)
    rows.append(("binary", b.nbytes, b.dequantize()))
    return [{"precision": p, "bytes": int(nb), "ratio_vs_fp32": nb / fp32, "sqnr_db": sqnr(a, d)}
            for p, nb, d in rows]
