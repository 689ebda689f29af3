# cython: language_level=3
"""Thin wrappers over fixq's C core.

The Python API (fixq.arith, fixq.gemm, ...) normalises arguments; the functions
here check that buffer sizes agree with the sizes handed to C (so no call can
read or write out of bounds), release the GIL, and map C status codes to
Python exceptions.
"""
from libc.math cimport exp, expf, isfinite, tanhf
from libc.stdint cimport int32_t
cimport numpy as _cnp

_cnp.import_array()  # numpy's C API: the engine runner's input checks and output arrays without a Python call

_DTYPE_CODES = {"int8": FIXQ_INT8, "uint8": FIXQ_UINT8, "int16": FIXQ_INT16, "int32": FIXQ_INT32}
_ROUNDING_CODES = {"double": FIXQ_ROUND_DOUBLE, "single": FIXQ_ROUND_SINGLE, "fp32": FIXQ_ROUND_FP32}

VERSION = FIXQ_VERSION_STRING.decode()


class FixqError(RuntimeError):
    """A C kernel refused its arguments (a bug in fixq's own checks)."""


cdef int check_status(fixq_status st, str what) except -1:
    if st == FIXQ_OK:
        return 0
    if st == FIXQ_ERR_NAN:
        raise ValueError(f"{what}: input contains NaN; replace or mask NaNs before quantizing")
    if st == FIXQ_ERR_OVERFLOW:
        raise OverflowError(f"{what}: int32 accumulation could overflow")
    if st == FIXQ_ERR_OUT_OF_MEMORY:
        raise MemoryError(f"{what}: out of memory")
    if st == FIXQ_ERR_UNSUPPORTED:
        raise RuntimeError(f"{what}: this CPU path is not available here")
    raise FixqError(f"{what}: invalid argument (status {<int>st})")


def _init():
    st = fixq_init()
    if st == FIXQ_ERR_INVALID_ARGUMENT:
        import os
        raise ImportError(f"FIXQ_ISA={os.environ.get('FIXQ_ISA')!r} is not a known CPU path; "
                          f"use one of: {', '.join(isa_names())} (or unset it)")
    if st == FIXQ_ERR_UNSUPPORTED:
        import os
        raise ImportError(f"FIXQ_ISA={os.environ.get('FIXQ_ISA')!r} is not supported on this "
                          f"machine; supported: {', '.join(supported_isas())} (or unset FIXQ_ISA)")


def isa_names():
    return [fixq_isa_name(<fixq_isa>i).decode() for i in range(<int>FIXQ_ISA_COUNT)]


def compiled_isas():
    return [fixq_isa_name(<fixq_isa>i).decode() for i in range(<int>FIXQ_ISA_COUNT)
            if fixq_isa_compiled(<fixq_isa>i)]


def supported_isas():
    return [fixq_isa_name(<fixq_isa>i).decode() for i in range(<int>FIXQ_ISA_COUNT)
            if fixq_isa_supported(<fixq_isa>i)]


def selected_isa():
    return fixq_isa_name(fixq_selected_isa()).decode()


def select_isa(str name):
    names = isa_names()
    if name not in names:
        raise ValueError(f"unknown CPU path {name!r}; expected one of {names}")
    cdef int idx = names.index(name)
    if fixq_select_isa(<fixq_isa>idx) != FIXQ_OK:
        raise ValueError(f"CPU path {name!r} is not supported here; supported: {supported_isas()}")


def srdhm(int32_t a, int32_t b):
    return fixq_srdhm(a, b)


def rounding_divide_by_pot(int32_t x, int exponent):
    if not 0 <= exponent <= 31:
        raise ValueError(f"exponent must be in [0, 31], got {exponent}")
    return fixq_rounding_divide_by_pot(x, exponent)


def quantize_multiplier_array(const double[::1] real, int32_t[::1] multiplier, int32_t[::1] shift):
    cdef Py_ssize_t i, n = real.shape[0]
    cdef int s
    cdef int32_t m
    if multiplier.shape[0] != n or shift.shape[0] != n:
        raise ValueError("output arrays must match the input length")
    for i in range(n):
        if fixq_quantize_multiplier(real[i], &m, &s) != FIXQ_OK:
            raise ValueError(f"real multiplier must be finite and >= 0, got {real[i]!r}")
        multiplier[i] = m
        shift[i] = s


cdef int _fill_requant(fixq_requant *p, str rounding, const int32_t[::1] multiplier,
                       const int32_t[::1] shift, const float[::1] scale,
                       const int32_t[::1] zero_point, Py_ssize_t channels,
                       int32_t qmin, int32_t qmax) except -1:
    if rounding not in _ROUNDING_CODES:
        raise ValueError(f"rounding must be one of {list(_ROUNDING_CODES)}, got {rounding!r}")
    p.rounding = _ROUNDING_CODES[rounding]
    if zero_point.shape[0] != channels:
        raise ValueError("zero_point length does not match the channel count")
    p.zero_point = &zero_point[0]
    p.multiplier = NULL
    p.shift = NULL
    p.scale = NULL
    if p.rounding == FIXQ_ROUND_FP32:
        if scale is None or scale.shape[0] != channels:
            raise ValueError("scale length does not match the channel count")
        p.scale = &scale[0]
    else:
        if multiplier is None or shift is None or multiplier.shape[0] != channels or shift.shape[0] != channels:
            raise ValueError("multiplier/shift length does not match the channel count")
        p.multiplier = &multiplier[0]
        p.shift = &shift[0]
    p.qmin = qmin
    p.qmax = qmax
    return 0


def requantize_raw(const int32_t[::1] x, unsigned char[::1] y, str dtype, Py_ssize_t rows,
                   Py_ssize_t channels, Py_ssize_t inner, str rounding,
                   const int32_t[::1] multiplier, const int32_t[::1] shift,
                   const float[::1] scale, const int32_t[::1] zero_point,
                   int32_t qmin, int32_t qmax):
    """x: rows*channels*inner int32 values; y: the output's bytes."""
    cdef fixq_requant p
    cdef fixq_dtype dt = _DTYPE_CODES[dtype]
    cdef fixq_status st
    cdef Py_ssize_t n = rows * channels * inner
    cdef Py_ssize_t esize = 1 if dt in (FIXQ_INT8, FIXQ_UINT8) else (2 if dt == FIXQ_INT16 else 4)
    if rows < 0 or channels < 1 or inner < 0 or x.shape[0] != n or y.shape[0] != n * esize:
        raise ValueError("buffer sizes do not match rows*channels*inner")
    _fill_requant(&p, rounding, multiplier, shift, scale, zero_point, channels, qmin, qmax)
    if n == 0:
        return
    with nogil:
        st = fixq_requantize_s32(&x[0], &y[0], dt, rows, channels, inner, &p)
    check_status(st, "requantize")


def quantize_raw(const float[::1] x, unsigned char[::1] y, str dtype, Py_ssize_t rows,
                 Py_ssize_t channels, Py_ssize_t inner, const float[::1] scale,
                 const int32_t[::1] zero_point, int32_t qmin, int32_t qmax):
    cdef fixq_dtype dt = _DTYPE_CODES[dtype]
    cdef fixq_status st
    cdef Py_ssize_t n = rows * channels * inner
    cdef Py_ssize_t esize = 1 if dt in (FIXQ_INT8, FIXQ_UINT8) else 2
    if dt == FIXQ_INT32:
        raise ValueError("quantize outputs int8, uint8 or int16")
    if rows < 0 or channels < 1 or inner < 0 or x.shape[0] != n or y.shape[0] != n * esize:
        raise ValueError("buffer sizes do not match rows*channels*inner")
    if scale.shape[0] != channels or zero_point.shape[0] != channels:
        raise ValueError("scale/zero_point length does not match the channel count")
    if n == 0:
        return
    with nogil:
        st = fixq_quantize_f32(&x[0], &y[0], dt, rows, channels, inner, &scale[0], &zero_point[0], qmin, qmax)
    check_status(st, "quantize")


def dequantize_raw(const unsigned char[::1] q, str dtype, float[::1] y, Py_ssize_t rows,
                   Py_ssize_t channels, Py_ssize_t inner, const float[::1] scale,
                   const int32_t[::1] zero_point):
    cdef fixq_dtype dt = _DTYPE_CODES[dtype]
    cdef fixq_status st
    cdef Py_ssize_t n = rows * channels * inner
    cdef Py_ssize_t esize = 1 if dt in (FIXQ_INT8, FIXQ_UINT8) else (2 if dt == FIXQ_INT16 else 4)
    if rows < 0 or channels < 1 or inner < 0 or y.shape[0] != n or q.shape[0] != n * esize:
        raise ValueError("buffer sizes do not match rows*channels*inner")
    if scale.shape[0] != channels or zero_point.shape[0] != channels:
        raise ValueError("scale/zero_point length does not match the channel count")
    if n == 0:
        return
    with nogil:
        st = fixq_dequantize(&q[0], dt, &y[0], rows, channels, inner, &scale[0], &zero_point[0])
    check_status(st, "dequantize")


_init()

def libm(str name, x):
    """``name(x)`` elementwise through the C library's own function: ``"expf"`` and ``"tanhf"`` on float32,
    ``"exp"`` on float64.  The tables of TFLite's and XNNPACK's LUT-based int8 activations are built by
    these functions (results differ between C libraries by an ulp here and there, which moves a table
    entry when it lands near a rounding tie), so fixq builds them with the same ones."""
    import numpy as np
    cdef Py_ssize_t i, n
    cdef float[::1] xf, yf
    cdef double[::1] xd, yd
    if name == "exp":
        a = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        out = np.empty_like(a)
        xd, yd = a, out
        n = a.shape[0]
        with nogil:
            for i in range(n):
                yd[i] = exp(xd[i])
        return out.reshape(np.shape(x))
    if name not in ("expf", "tanhf"):
        raise ValueError(f"name must be 'expf', 'tanhf' or 'exp', got {name!r}")
    a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(a)
    xf, yf = a, out
    n = a.shape[0]
    if name == "expf":
        with nogil:
            for i in range(n):
                yf[i] = expf(xf[i])
    else:
        with nogil:
            for i in range(n):
                yf[i] = tanhf(xf[i])
    return out.reshape(np.shape(x))


cdef class ParallelBurst:
    """``with ParallelBurst(threads):`` the kernels' parallel regions inside are one burst (parallel.c's
    ``fixq__parallel_hold``): the kept workers poll for the next region between them instead of sleeping,
    released at the exit whatever raised.  Nests, from any thread; threads <= 1 does nothing."""
    cdef int threads

    def __cinit__(self, int threads):
        self.threads = threads

    def __enter__(self):
        fixq__parallel_hold(self.threads)
        return self

    def __exit__(self, *exc):
        fixq__parallel_release(self.threads)
        return False


def parallel_holds():
    """How many ParallelBurst holds are open in this process (parallel.c)."""
    return fixq__parallel_holds()


include "_gemm.pxi"
include "_eltwise.pxi"
include "_lowbit.pxi"
include "_floatops.pxi"
include "_capi.pxi"
include "_engine.pxi"
