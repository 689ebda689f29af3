# GEMM: packed weights and the fused int8 matmul.  fixq.gemm
# normalises arguments; the functions here check every size handed to C, then
# run fixq_qgemm with the GIL released.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE
from libc.stdint cimport int8_t, int64_t

import numpy as _np

_GEMM_KERNEL_NAMES = {FIXQ_GEMM_S8: "s8", FIXQ_GEMM_S16: "s16"}


cdef void *_data(object arr, Py_buffer *view, bint writable) except? NULL:
    """Start of the C-contiguous buffer of `arr`; the caller releases `view`."""
    PyObject_GetBuffer(arr, view, PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    return view.buf


cdef bint _overlaps(const Py_buffer *x, const Py_buffer *y) noexcept:
    """The bytes of two acquired buffers intersect."""
    cdef const char *xp = <const char *>x.buf
    cdef const char *yp = <const char *>y.buf
    return xp < yp + y.len and yp < xp + x.len


cdef class PackedWeights:
    """Weights packed once for :func:`fixq.qmatmul` / :func:`fixq.qlinear`.

    Made by :func:`fixq.pack_weights`.  Holds the weights in the kernels'
    panel layout (``fixq.h``: ``fixq_packed_b``) with their column sums, so
    constant weights are packed once.  ``to_arrays()`` gives plain numpy
    arrays (for archives); ``fixq.pack_weights(**arrays)`` rebuilds it.
    """
    cdef fixq_packed_b pb
    cdef object _panels, _zero_point, _col_sum, _col_abs
    cdef readonly str layout
    cdef readonly object dtype

    def __init__(self):
        raise TypeError("use fixq.pack_weights(w, ...) to make PackedWeights")

    @property
    def shape(self):
        """Shape of the weights as given to pack_weights: (N, K) for layout "linear", (K, N) for "matmul"."""
        return (self.pb.n, self.pb.k) if self.layout == "linear" else (self.pb.k, self.pb.n)

    @property
    def k(self):
        return self.pb.k

    @property
    def n(self):
        return self.pb.n

    @property
    def zero_point(self):
        """Per-column zero points (int32 [N]), in the weights' own dtype range."""
        return self._zero_point[:self.pb.n] + (128 if self.pb.dtype == FIXQ_UINT8 else 0)

    @property
    def kernel(self):
        """The kernel these weights run on: "s8" when every weight (minus 128 for uint8) is in
        [-127, 127], "s16" (int16 products, slower) when one is -128."""
        return _GEMM_KERNEL_NAMES[self.pb.kernel]

    @property
    def col_abs(self):
        """sum_k |w - zero_point| per column (int64 [N]): bounds the accumulators."""
        return self._col_abs[:self.pb.n].copy()

    def weights(self):
        """The weights as given to pack_weights (a new array)."""
        cdef size_t kp = self.pb.k_padded, npad = self.pb.n_padded, nr = FIXQ_GEMM_NR
        p = self._panels.reshape(npad // nr, kp // 4, nr, 4).transpose(1, 3, 0, 2).reshape(kp, npad)
        b = p[:self.pb.k, :self.pb.n]
        if self.pb.dtype == FIXQ_UINT8:
            b = b.view(_np.uint8) ^ _np.uint8(0x80)
        return _np.ascontiguousarray(b.T if self.layout == "linear" else b)

    def to_arrays(self):
        """Plain arrays: {"w": weights as given, "zero_point": int32 [N], "layout": str array}."""
        return {"w": self.weights(), "zero_point": self.zero_point, "layout": _np.array(self.layout)}

    def __repr__(self):
        return (f"PackedWeights(shape={self.shape}, dtype={self.dtype.name}, layout={self.layout!r}, "
                f"kernel={self.kernel!r})")

    def __reduce__(self):
        raise TypeError("PackedWeights are not pickled; store to_arrays() and rebuild with from_arrays()")


def pack(const unsigned char[:, ::1] w, str dtype, const int32_t[::1] zero_point, str layout):
    """w: C-contiguous weights' bytes, [N, K] for layout "linear", [K, N] for "matmul"."""
    cdef PackedWeights self = PackedWeights.__new__(PackedWeights)
    cdef size_t k, n
    cdef Py_ssize_t stride_k, stride_n
    cdef fixq_dtype dt = _DTYPE_CODES[dtype]
    cdef fixq_status st
    cdef Py_buffer vw, vp, vz, vs, va, vzin
    if layout == "linear":
        n, k = w.shape[0], w.shape[1]
        stride_k, stride_n = 1, w.shape[1]
    else:
        k, n = w.shape[0], w.shape[1]
        stride_k, stride_n = w.shape[1], 1
    if zero_point.shape[0] not in (1, n):
        raise ValueError("zero_point length does not match the column count")
    fixq_packed_b_init(&self.pb, k, n)
    self.layout = layout
    self.dtype = _np.dtype(dtype)
    size = self.pb.n_padded * self.pb.k_padded
    buf = _np.empty(size + 64, _np.int8)  # panels start on a cache line: a 64-byte group of B is one line
    start = (-<size_t>_data(buf, &vp, True)) % 64
    PyBuffer_Release(&vp)  # buf keeps the memory
    self._panels = buf[start:start + size]
    self._zero_point = _np.empty(self.pb.n_padded, _np.int32)
    self._col_sum = _np.empty(self.pb.n_padded, _np.int32)
    self._col_abs = _np.empty(self.pb.n_padded, _np.int64)
    self.pb.panels = <int8_t *>_data(self._panels, &vp, True)
    self.pb.zero_point = <int32_t *>_data(self._zero_point, &vz, True)
    self.pb.col_sum = <int32_t *>_data(self._col_sum, &vs, True)
    self.pb.col_abs = <int64_t *>_data(self._col_abs, &va, True)
    cdef const void *wp = _data(w, &vw, False)
    cdef const int32_t *zp = <const int32_t *>_data(zero_point, &vzin, False)
    try:
        with nogil:
            st = fixq_pack_b(wp, dt, stride_k, stride_n, zp, zero_point.shape[0], &self.pb)
    finally:
        PyBuffer_Release(&vw)
        PyBuffer_Release(&vp)
        PyBuffer_Release(&vz)
        PyBuffer_Release(&vs)
        PyBuffer_Release(&va)
        PyBuffer_Release(&vzin)
    check_status(st, "pack_weights")
    for arr in (self._panels, self._zero_point, self._col_sum, self._col_abs):
        arr.flags.writeable = False
    return self


cdef inline int _range_check(const int32_t *v, Py_ssize_t n, int32_t lo, int32_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if v[i] < lo or v[i] > hi:
            return 0
    return 1


def qgemm(str fn, str aname, a, PackedWeights b, int32_t a_zero_point, bias, str rounding, multiplier, shift, scale,
          zero_point, int32_t qmin, int32_t qmax, out_dtype, int threads, out):
    """The product of a (int8/uint8 [..., K], C-contiguous) and packed b.

    Output stage: per tensor (Python int multiplier/shift/zero_point, float
    scale) or per column (contiguous int32/float32 arrays of length N), or
    none when out_dtype is int32 and multiplier, shift and scale are None.
    Returns the output array (`out` when given)."""
    cdef Py_buffer va, vy, vb, vm, vs, vf, vz
    cdef bint have_b = False, have_m = False, have_s = False, have_f = False, have_z = False
    cdef fixq_requant p
    cdef fixq_requant *pp = NULL
    cdef int32_t m1 = 0, s1 = 0, z1 = 0
    cdef float f1 = 0
    cdef size_t channels = 1, n = b.pb.n, k = b.pb.k, m
    cdef fixq_dtype adt, ydt = _GEMM_OUT_CODES[out_dtype]
    cdef fixq_status st
    cdef const void *ap
    cdef const int32_t *biasp = NULL
    cdef void *yp

    if a.dtype is _I8 or a.dtype == _I8:
        adt = FIXQ_INT8
    elif a.dtype is _U8 or a.dtype == _U8:
        adt = FIXQ_UINT8
    else:
        raise TypeError(f"{fn}: {aname} must be int8 or uint8, got {a.dtype}")
    shape = a.shape
    if len(shape) == 0 or shape[len(shape) - 1] != k:
        raise ValueError(f"{fn}: shapes {shape} and {b.shape} do not match: {aname}.shape[-1] must be "
                         f"K = {k}")
    out_shape = shape[:len(shape) - 1] + (n,)
    m = a.size // k if k else _np.prod(shape[:len(shape) - 1], dtype=_np.int64)
    if out is None:
        out = _np.empty(out_shape, out_dtype)
    elif not isinstance(out, _np.ndarray) or out.shape != out_shape or out.dtype != out_dtype:
        raise ValueError(f"{fn}: out must be a numpy array of shape {out_shape} and dtype {out_dtype.name}, "
                         f"got {getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
    if threads < 1:
        raise ValueError(f"{fn}: threads must be >= 1, got {threads}")

    if multiplier is not None or scale is not None:
        pp = &p
        p.rounding = _ROUNDING_CODES[rounding]
        p.qmin, p.qmax = qmin, qmax
        p.multiplier = p.shift = NULL
        p.scale = NULL
        for v in (multiplier, shift, scale, zero_point):
            if v is not None and type(v) is _np.ndarray:
                channels = n
        if channels > 1:
            for v, name, dt in ((multiplier, "multiplier", _I32), (shift, "shift", _I32), (scale, "scale", _F32),
                                (zero_point, "out_zero_point", _I32)):
                if v is not None and (type(v) is not _np.ndarray or v.shape != (n,) or v.dtype != dt):
                    raise ValueError(f"{fn}: per-column {name} must be a {dt.name} array of length N = {n}")
    try:
        ap = _data(a, &va, False)
    except (BufferError, ValueError):  # not C-contiguous
        a = _np.ascontiguousarray(a)
        ap = _data(a, &va, False)
    try:
        yp = _data(out, &vy, True)
    except (BufferError, ValueError):
        PyBuffer_Release(&va)
        raise ValueError(f"{fn}: out must be C-contiguous and writeable") from None
    try:
        if _overlaps(&va, &vy):  # the kernels read a while they write out
            PyBuffer_Release(&va)
            a = a.copy()
            ap = _data(a, &va, False)
        if bias is not None:
            if type(bias) is not _np.ndarray or bias.dtype != _I32 or bias.shape != (n,):
                raise ValueError(f"{fn}: bias must be an int32 array of shape ({n},)")
            try:
                biasp = <const int32_t *>_data(bias, &vb, False)
            except (BufferError, ValueError):  # not C-contiguous
                bias = _np.ascontiguousarray(bias)
                biasp = <const int32_t *>_data(bias, &vb, False)
            have_b = True
            if _overlaps(&vb, &vy):
                PyBuffer_Release(&vb)
                have_b = False
                bias = bias.copy()
                biasp = <const int32_t *>_data(bias, &vb, False)
                have_b = True
        if pp != NULL:
            if p.rounding == FIXQ_ROUND_FP32:
                if channels > 1:
                    p.scale = <const float *>_data(scale, &vf, False)
                    have_f = True
                else:
                    f1 = scale
                    p.scale = &f1
            elif channels > 1:
                p.multiplier = <const int32_t *>_data(multiplier, &vm, False)
                have_m = True
                p.shift = <const int32_t *>_data(shift, &vs, False)
                have_s = True
            else:
                m1, s1 = multiplier, shift
                p.multiplier, p.shift = &m1, &s1
            if channels > 1:
                p.zero_point = <const int32_t *>_data(zero_point, &vz, False)
                have_z = True
            else:
                z1 = zero_point
                p.zero_point = &z1
        with nogil:
            st = fixq_qgemm(m, ap, adt, k, a_zero_point, &b.pb, biasp, pp, channels, yp, ydt, n, threads)
    finally:
        PyBuffer_Release(&va)
        PyBuffer_Release(&vy)
        if have_b: PyBuffer_Release(&vb)
        if have_m: PyBuffer_Release(&vm)
        if have_s: PyBuffer_Release(&vs)
        if have_f: PyBuffer_Release(&vf)
        if have_z: PyBuffer_Release(&vz)
    if st == FIXQ_ERR_OVERFLOW:
        raise OverflowError(_overflow_message(fn, adt, a_zero_point, b, bias))
    check_status(st, fn)
    return out


_I8, _U8, _I32, _F32 = _np.dtype(_np.int8), _np.dtype(_np.uint8), _np.dtype(_np.int32), _np.dtype(_np.float32)
_GEMM_OUT_CODES = {_np.dtype(name): code for name, code in _DTYPE_CODES.items()}  # dtype.name is slow (~2 us)


def _overflow_message(fn, adt, a_zero_point, PackedWeights b, bias):
    lo, hi = (-128, 127) if adt == FIXQ_INT8 else (0, 255)
    span = max(a_zero_point - lo, hi - a_zero_point)
    reach = span * b.col_abs + (0 if bias is None else _np.abs(bias.astype(_np.int64)))
    col = int(_np.argmax(reach))
    return (f"{fn}: the int32 accumulator could overflow: with K = {b.k}, |a - a_zero_point| up to {span} "
            f"and sum_k |b - b_zero_point| = {int(b.col_abs[col])} in column {col}"
            f"{'' if bias is None else f' (bias {int(bias[col])})'}, |acc| can reach {int(reach[col])} > 2**31 - 1; "
            f"use weights in [-127, 127] with b_zero_point 0, a smaller K, or split the sum over K")
