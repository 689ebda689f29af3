"""Streaming calibration: observers that see batches one at a time in constant memory.

``make(method, **options)`` returns an observer; feed it with ``.update(batch)``
and read ``.range()`` (a ``(min, max)`` pair) or ``.qparams(...)``
(``fixq.choose_qparams`` on that range).  Methods and their published sources
are in docs/quantization.md:

- ``minmax``: running min/max.
- ``moving_average``: ``v += c * (batch_v - v)`` (PyTorch MovingAverageMinMaxObserver, ORT MinMax).
- ``per_channel_minmax``: min/max per index of ``axis`` (weights).
- ``percentile``: the ``percentile`` of |x| (``symmetric=True``) or ``(100 - p)/2`` percent cut from each side.
- ``entropy``: TensorRT's KL-divergence threshold search (NVIDIA pytorch-quantization histogram.py).
- ``mse``: the threshold minimising the histogram's expected squared quantization error
  (same file, ``_compute_amax_mse``).

Histogram observers keep two count arrays of ``bins`` bins over ``[0, W]`` (one for
x >= 0, one for x < 0, by |x|); when a batch exceeds ``W`` the range doubles by
adding bin pairs, which re-bins exactly (see :class:`_Histogram`).

Observers merge: ``a.merge(b)`` leaves ``a`` as if ``b``'s batches had followed
``a``'s, so shards observed apart (processes, machines) and merged in order give
the range of one pass over their batches, bit for bit.  Observers pickle (plain
numbers and numpy arrays).
"""
import array
import math
import numbers

import numpy as np

from .qparams import choose_qparams

__all__ = ["make", "METHODS", "Observer"]


def _batch(batch, shape_seen, axis=None):
    x = np.asarray(batch)
    if x.dtype.kind != "f":
        raise TypeError(f"batch must be a float array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"batch is empty (shape {x.shape}); calibration needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("batch contains NaN or Inf; calibration data must be finite")
    if shape_seen is not None:
        _check_shape(x.shape, shape_seen, axis, "batch", "earlier batches")
    return x


def _check_shape(shape, shape_seen, axis, what, seen):
    same_tail = len(shape) == len(shape_seen) and shape[1:] == shape_seen[1:]
    same_channels = axis is None or axis % len(shape) != 0 or shape[0] == shape_seen[0]
    if not (same_tail and same_channels):
        raise ValueError(f"{what} has shape {shape} but {seen} had shape {shape_seen}; only the "
                         "leading (batch) dimension may change between updates"
                         + ("" if axis is None else f" (and not when it is the channel axis {axis})"))


def _number(v, name, lo, hi, lo_open=False, integer=False):
    ok_type = isinstance(v, numbers.Integral) if integer else isinstance(v, numbers.Real)
    if isinstance(v, bool) or not ok_type:
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}")
    below = v <= lo if lo_open else v < lo
    if below or v > hi or v != v:
        raise ValueError(f"{name}={v!r} is out of range; expected {'(' if lo_open else '['}{lo}, {hi}]")
    return v


class Observer:
    """Common part: ``update``, ``merge``, ``range``, ``qparams``."""
    method = None
    axis = None
    options = ()   # the names of the constructor's options; merged observers must agree on them

    def __init__(self):
        self._shape = None

    def update(self, batch):
        """Observe one batch (any shape; later batches may change only the leading dimension)."""
        x = _batch(batch, self._shape, self.axis)
        if self.axis is not None:
            if x.ndim == 0 or not -x.ndim <= self.axis < x.ndim:
                raise ValueError(f"axis={self.axis} is out of range for a batch with {x.ndim} dimension(s)")
        self._observe(x)
        self._shape = x.shape
        return self

    def merge(self, other):
        """Add what observer `other` saw, as if its batches had come after this observer's own.

        `other` must come from ``make`` with the same method and options.  Observing shards apart
        and merging them in shard order gives the range of one pass over all their batches in that
        order, bit for bit (for ``moving_average`` the order matters; for the others it does not).
        `other` is left as it was."""
        if type(other) is not type(self):
            what = repr(other.method) if isinstance(other, Observer) else type(other).__name__
            raise TypeError(f"cannot merge {what} into a {self.method!r} observer; "
                            "both must come from make() with the same method")
        mine, theirs = self._option_values(), other._option_values()
        if mine != theirs:
            raise ValueError(f"cannot merge a {self.method} observer with options {theirs} into one with {mine}; "
                             "make both with the same options")
        if other._shape is None:
            return self
        if self._shape is not None:
            _check_shape(other._shape, self._shape, self.axis, "the merged observer's data", "this observer's")
        self._merge(other)
        self._shape = other._shape
        return self

    def _option_values(self):
        return {name: getattr(self, name) for name in self.options}

    def range(self):
        """``(min, max)`` as Python floats (per-channel: float64 arrays)."""
        if self._shape is None:
            raise ValueError(f"{self.method} observer has seen no data; call update(batch) first")
        return self._range()

    def qparams(self, dtype=np.int8, symmetric=False, narrow_range=False, reduce_range=False, *,
                convention="tflite"):
        """``fixq.choose_qparams`` on :meth:`range` (per-channel observers pass their axis)."""
        lo, hi = self.range()
        return choose_qparams(lo, hi, dtype, symmetric, narrow_range, reduce_range, axis=self._qaxis(),
                              convention=convention)

    def _qaxis(self):
        return None


class MinMax(Observer):
    method = "minmax"

    def __init__(self):
        super().__init__()
        self._lo = self._hi = None

    def _observe(self, x):
        self._extend(float(x.min()), float(x.max()))

    def _extend(self, lo, hi):
        self._lo = lo if self._lo is None else min(self._lo, lo)
        self._hi = hi if self._hi is None else max(self._hi, hi)

    def _merge(self, other):
        self._extend(other._lo, other._hi)

    def _range(self):
        return self._lo, self._hi


class MovingAverage(Observer):
    """torch MovingAverageMinMaxObserver: the first batch sets min/max, then ``v += c * (v_batch - v)``.

    Each batch's min and max are kept (16 bytes a batch) and the average is run over them when the
    range is asked for: merging appends the other observer's batches, so the average over shards
    merged in order is the one a single pass over their batches computes, bit for bit."""
    method = "moving_average"
    options = ("averaging_constant",)

    def __init__(self, averaging_constant=0.01):
        super().__init__()
        self.averaging_constant = _number(averaging_constant, "averaging_constant", 0.0, 1.0, lo_open=True)
        self._lows = array.array("d")
        self._highs = array.array("d")

    def _observe(self, x):
        self._lows.append(float(x.min()))
        self._highs.append(float(x.max()))

    def _merge(self, other):
        self._lows.extend(other._lows)
        self._highs.extend(other._highs)

    def _range(self):
        c = self.averaging_constant
        lo, hi = self._lows[0], self._highs[0]
        for i in range(1, len(self._lows)):
            lo += c * (self._lows[i] - lo)
            hi += c * (self._highs[i] - hi)
        return lo, hi


class PerChannelMinMax(Observer):
    """torch PerChannelMinMaxObserver: min/max over every axis but ``axis``."""
    method = "per_channel_minmax"
    options = ("axis",)

    def __init__(self, axis=0):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis must be an integer, got {axis!r}")
        self.axis = int(axis)
        self._lo = self._hi = None

    def _observe(self, x):
        ax = self.axis % x.ndim
        others = tuple(i for i in range(x.ndim) if i != ax)
        self._extend(x.min(axis=others).astype(np.float64), x.max(axis=others).astype(np.float64), x.ndim)

    def _extend(self, lo, hi, ndim):
        self._lo = lo.copy() if self._lo is None else np.minimum(self._lo, lo)
        self._hi = hi.copy() if self._hi is None else np.maximum(self._hi, hi)
        self._ndim = ndim

    def _merge(self, other):
        self._extend(other._lo, other._hi, other._ndim)

    def _range(self):
        return self._lo.copy(), self._hi.copy()

    def _qaxis(self):
        return self.axis % self._ndim


class _Histogram:
    """Counts of |x| in ``bins`` bins of width ``W / bins`` over ``[0, W]``, split by sign.

    Bin ``j`` holds ``j*W/bins < |x| <= (j+1)*W/bins`` (bin 0 also holds 0), i.e.
    ``j = max(ceil(|x| * bins / W) - 1, 0)``, and ``W`` is the smallest power of
    two >= max|x|.  ``|x| * bins`` is rounded once (exactly for float32 data) and
    dividing by the power of two ``W`` is exact, so the quotient over ``2W`` is
    exactly half the quotient over ``W``.  When a batch exceeds ``W``, ``W`` doubles and bin pairs
    ``(2j, 2j+1)`` merge into ``j``; since ``ceil(ceil(y) / 2) == ceil(y / 2)``
    that puts every value where a histogram built directly over ``2W`` would.
    So the counts depend only on the values seen, not on how they were split
    into batches or in what order, and two histograms merge exactly: the one
    with the smaller ``W`` doubles up to the other's, then the counts add.
    Memory stays ``2 * bins`` counts; the data occupies between half and all of
    the bins.
    """

    def __init__(self, bins):
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)   # x >= 0
        self.neg = np.zeros(bins, np.int64)   # x < 0
        self.width = 0.0                      # W; 0 until a nonzero value is seen
        self.lo = self.hi = None              # observed min and max

    def _widen(self, width):
        """Re-bin onto ``[0, width]`` (a power of two >= W)."""
        if self.width == 0.0:   # only zeros so far: they belong to bin 0 whatever W becomes
            self.width = width
        while self.width < width:
            for h in (self.pos, self.neg):
                merged = h[0::2].copy()
                merged[:h.shape[0] // 2] += h[1::2]
                h[:] = 0
                h[:merged.shape[0]] = merged
            self.width *= 2.0

    def _extend(self, lo, hi):
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def add(self, x):
        a = np.abs(x.astype(np.float64, copy=False)).reshape(-1)
        neg = x.reshape(-1) < 0
        amax = float(a.max())
        self._extend(float(x.min()), float(x.max()))
        if amax > self.width:
            m, e = math.frexp(amax)
            self._widen(math.ldexp(1.0, e - 1 if m == 0.5 else e))
        if self.width == 0.0:
            self.pos[0] += a.shape[0]
            return
        idx = np.maximum(np.ceil(a * self.bins / self.width).astype(np.int64) - 1, 0)
        np.minimum(idx, self.bins - 1, out=idx)   # float64 data beyond float32 precision may round up at W
        self.pos += np.bincount(idx[~neg], minlength=self.bins)
        self.neg += np.bincount(idx[neg], minlength=self.bins)

    def merge(self, other):
        self._extend(other.lo, other.hi)
        pos, neg = other.pos, other.neg
        if other.width < self.width:
            o = _Histogram(self.bins)
            o.pos, o.neg, o.width = pos.copy(), neg.copy(), other.width
            o._widen(self.width)
            pos, neg = o.pos, o.neg
        elif other.width > self.width:
            self._widen(other.width)
        self.pos += pos
        self.neg += neg

    def edges(self):
        return np.arange(self.bins + 1, dtype=np.float64) * (self.width / self.bins)


def _upper_edge_at(counts, edges, target):
    """Upper edge of the first bin where the running count reaches ``target``."""
    idx = int(np.searchsorted(np.cumsum(counts), target, side="left"))
    return float(edges[min(idx, counts.shape[0] - 1) + 1])


class _HistogramObserver(Observer):
    def __init__(self, bins):
        super().__init__()
        self.bins = _number(bins, "bins", 128, 1 << 24, integer=True)
        self.hist = _Histogram(self.bins)

    def _observe(self, x):
        self.hist.add(x)

    def _merge(self, other):
        self.hist.merge(other.hist)

    def _symmetric(self, t):
        """``[-t, t]`` clipped to the observed [min, max] (ORT calibrate.py does the same)."""
        h = self.hist
        return max(-t, h.lo), min(t, h.hi)


class Percentile(_HistogramObserver):
    """NVIDIA pytorch-quantization ``_compute_amax_percentile`` on |x| (``symmetric=True``), or
    ``(100 - percentile)/2`` percent of all values cut from each side (ORT's asymmetric rule).

    The threshold is the *upper* edge of the bin where the cumulative count
    reaches the percentile (so at least that share of the data lies inside),
    clipped to the observed range; pytorch-quantization and ORT report that
    bin's lower edge, one bin width less.
    """
    method = "percentile"
    options = ("percentile", "symmetric", "bins")

    def __init__(self, percentile=99.99, symmetric=True, bins=2048):
        super().__init__(bins)
        self.percentile = _number(percentile, "percentile", 0.0, 100.0, lo_open=True)
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
        self.symmetric = symmetric

    def _range(self):
        h = self.hist
        edges = h.edges()
        total = int(h.pos.sum() + h.neg.sum())
        p = self.percentile / 100.0
        if self.symmetric:
            return self._symmetric(_upper_edge_at(h.pos + h.neg, edges, p * total))
        cut = (1.0 - p) / 2.0 * total   # values allowed beyond each threshold
        hi = _upper_edge_at(h.pos, edges, h.pos.sum() - cut) if h.pos.sum() > cut else 0.0
        lo = _upper_edge_at(h.neg, edges, h.neg.sum() - cut) if h.neg.sum() > cut else 0.0
        return max(-lo, h.lo), min(hi, h.hi)


def kl_divergence(p, q):
    """``sum p*log(p/q)`` of the normalised distributions (scipy.stats.entropy(p, q));
    ``inf`` where p > 0 and q == 0."""
    p = p / p.sum()
    q = q / q.sum()
    nz = p > 0
    if np.any(q[nz] == 0):
        return np.inf
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def entropy_threshold_bin(counts, num_quantized_bins=128, start_bin=128, stride=1):
    """NVIDIA pytorch-quantization histogram.py ``_compute_amax_entropy``: returns the
    candidate ``i`` (threshold = upper edge of bin ``i - 1``) of least KL(P||Q).

    ``bins[0] = bins[1]``; for ``i`` in ``start_bin .. len(bins)``: P is
    ``bins[:i]`` with every count from ``i`` on added to its last bin; Q maps
    bins ``[0, i)`` onto ``num_quantized_bins`` levels (bin j -> level
    ``floor(j * levels / i)``, which is ``np.digitize`` on ``linspace(0, i,
    levels + 1)`` exactly), spreads each level's mass evenly over that level's
    *nonzero* bins and leaves empty bins empty.  The last minimum wins.
    """
    bins = counts.astype(np.float64)
    bins[0] = bins[1]
    n = bins.shape[0]
    nz_all = bins != 0
    tail = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])   # tail[i] = sum(bins[i:])
    best_i, best = start_bin, np.inf
    for i in range(start_bin, n + 1, stride):
        levels = (np.arange(i) * num_quantized_bins) // i
        nz = nz_all[:i]
        mass = np.bincount(levels[nz], weights=bins[:i][nz], minlength=num_quantized_bins)
        count = np.bincount(levels[nz], minlength=num_quantized_bins)
        q = np.where(nz, mass[levels] / np.maximum(count[levels], 1), 0.0)
        p = bins[:i].copy()
        p[-1] += tail[i]
        d = kl_divergence(p, q) if q.sum() > 0 else np.inf
        if d <= best:
            best_i, best = i, d
    return best_i


def mse_threshold_bin(counts, edges, num_bits=8, unsigned=False, start_bin=128, stride=1):
    """NVIDIA pytorch-quantization histogram.py ``_compute_amax_mse``: the bin ``i`` whose
    centre, used as amax, minimises ``mean((fake_quant(centres, amax) - centres)**2 * counts)``.

    ``fake_quant`` is pytorch-quantization's ``fake_tensor_quant``: ``round(x * s) / s`` with
    ``s = (2**(num_bits - 1 + unsigned) - 1) / amax``, clamped to the top level, round half to even.
    Candidates run over ``start_bin .. len(centres) - 1`` (the last centre excluded, as there); the
    first minimum wins.
    """
    c = counts.astype(np.float64)
    centres = (edges[1:] + edges[:-1]) / 2.0
    bound = float(2 ** (num_bits - 1 + int(unsigned)) - 1)
    best_i, best = None, np.inf
    for i in range(start_bin, centres.shape[0], stride):
        amax = centres[i]
        s = bound / amax
        qc = np.minimum(np.round(centres * s), bound) / s
        err = float(np.mean((qc - centres) ** 2 * c))
        if err < best:
            best_i, best = i, err
    return best_i


class Entropy(_HistogramObserver):
    """TensorRT entropy calibration (IInt8EntropyCalibrator2) as implemented in NVIDIA
    pytorch-quantization: a histogram of |x|, ``num_quantized_bins`` levels, candidates from
    ``start_bin`` up; the range is ``[-T, T]`` clipped to the observed [min, max]."""
    method = "entropy"
    options = ("bins", "num_quantized_bins", "start_bin", "stride")

    def __init__(self, bins=2048, num_quantized_bins=128, start_bin=128, stride=1):
        super().__init__(bins)
        self.num_quantized_bins = _number(num_quantized_bins, "num_quantized_bins", 2, self.bins, integer=True)
        self.start_bin = _number(start_bin, "start_bin", self.num_quantized_bins, self.bins, integer=True)
        self.stride = _number(stride, "stride", 1, self.bins, integer=True)

    def _range(self):
        h = self.hist
        if h.width == 0.0:
            return self._symmetric(0.0)
        i = entropy_threshold_bin(h.pos + h.neg, self.num_quantized_bins, self.start_bin, self.stride)
        return self._symmetric(float(h.edges()[i]))


class MSE(_HistogramObserver):
    """pytorch-quantization MSE calibration on the |x| histogram; range ``[-T, T]`` clipped to
    the observed [min, max]."""
    method = "mse"
    options = ("bins", "num_bits", "unsigned", "start_bin", "stride")

    def __init__(self, bins=2048, num_bits=8, unsigned=False, start_bin=128, stride=1):
        super().__init__(bins)
        self.num_bits = _number(num_bits, "num_bits", 2, 16, integer=True)
        if not isinstance(unsigned, bool):
            raise TypeError(f"unsigned must be True or False, got {unsigned!r}")
        self.unsigned = unsigned
        self.start_bin = _number(start_bin, "start_bin", 0, self.bins - 1, integer=True)
        self.stride = _number(stride, "stride", 1, self.bins, integer=True)

    def _range(self):
        h = self.hist
        if h.width == 0.0:
            return self._symmetric(0.0)
        edges = h.edges()
        i = mse_threshold_bin(h.pos + h.neg, edges, self.num_bits, self.unsigned, self.start_bin, self.stride)
        return self._symmetric(float((edges[i] + edges[i + 1]) / 2.0))


METHODS = {cls.method: cls for cls in (MinMax, MovingAverage, PerChannelMinMax, Percentile, Entropy, MSE)}


def make(method, **options):
    """A new observer for ``method`` (one of ``METHODS``) with its options.

    Options: ``moving_average(averaging_constant=0.01)``, ``per_channel_minmax(axis=0)``,
    ``percentile(percentile=99.99, symmetric=True, bins=2048)``,
    ``entropy(bins=2048, num_quantized_bins=128, start_bin=128, stride=1)``,
    ``mse(bins=2048, num_bits=8, unsigned=False, start_bin=128, stride=1)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    try:
        return cls(**options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            import inspect
            allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
            raise TypeError(f"unknown option for method {method!r}: {sorted(set(options) - set(allowed))}; "
                            f"allowed: {allowed}") from None
        raise
