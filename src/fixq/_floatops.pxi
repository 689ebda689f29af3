# Float kernels of a transformer encoder (layer norm, softmax, GELU) and the
# dynamic-int8 linear layer.  fixq.float_ops checks the arguments and passes
# flat C-contiguous float32 views; the functions here check every size handed
# to C, then call it with the GIL released.

cdef extern from "fixq_floatops.h" nogil:
    ctypedef enum fixq_gelu_form:
        FIXQ_GELU_ERF
        FIXQ_GELU_TANH
    ctypedef enum fixq_dyn_granularity:
        FIXQ_DYN_ROW
        FIXQ_DYN_TENSOR
    fixq_status fixq_layer_norm_f32(const float *x, size_t rows, size_t n, const float *weight, const float *bias,
                                    float eps, float *y, int threads)
    fixq_status fixq_softmax_f32(const float *x, size_t rows, size_t n, float *y, int threads)
    fixq_status fixq_gelu_f32(const float *x, size_t count, fixq_gelu_form form, float *y, int threads)
    fixq_status fixq_dynamic_linear(const float *x, size_t m, const fixq_packed_b *b, const float *w_scale,
                                    size_t w_scale_count, const float *bias, fixq_dyn_granularity granularity,
                                    float *y, int threads)

_GELU_FORMS = {"none": FIXQ_GELU_ERF, "tanh": FIXQ_GELU_TANH}
_GRANULARITIES = {"row": FIXQ_DYN_ROW, "tensor": FIXQ_DYN_TENSOR}


cdef int _rows_check(Py_ssize_t xlen, Py_ssize_t ylen, Py_ssize_t rows, Py_ssize_t n) except -1:
    if rows < 0 or n < 0 or xlen != rows * n or ylen != xlen:
        raise ValueError("buffer sizes do not match rows * n")
    return 0


def layer_norm_raw(const float[::1] x, const float[::1] weight, const float[::1] bias, float eps, float[::1] y,
                   Py_ssize_t rows, Py_ssize_t n, int threads):
    cdef fixq_status st
    _rows_check(x.shape[0], y.shape[0], rows, n)
    if weight.shape[0] != n or bias.shape[0] != n:
        raise ValueError("weight and bias must have length n")
    if rows * n == 0:
        return
    with nogil:
        st = fixq_layer_norm_f32(&x[0], rows, n, &weight[0], &bias[0], eps, &y[0], threads)
    check_status(st, "layer_norm")


def softmax_raw(const float[::1] x, float[::1] y, Py_ssize_t rows, Py_ssize_t n, int threads):
    cdef fixq_status st
    _rows_check(x.shape[0], y.shape[0], rows, n)
    if rows * n == 0:
        return
    with nogil:
        st = fixq_softmax_f32(&x[0], rows, n, &y[0], threads)
    check_status(st, "softmax")


def gelu_raw(const float[::1] x, str approximate, float[::1] y, int threads):
    cdef fixq_status st
    cdef fixq_gelu_form form = _GELU_FORMS[approximate]
    _rows_check(x.shape[0], y.shape[0], x.shape[0], 1)
    if x.shape[0] == 0:
        return
    with nogil:
        st = fixq_gelu_f32(&x[0], x.shape[0], form, &y[0], threads)
    check_status(st, "gelu")


def dynamic_linear_raw(const float[::1] x, Py_ssize_t m, PackedWeights b, const float[::1] w_scale,
                       const float[::1] bias, str granularity, float[::1] y, int threads):
    """y [m * N] = the dynamic-int8 product of x [m * K] and b."""
    cdef fixq_status st
    cdef fixq_dyn_granularity g = _GRANULARITIES[granularity]
    cdef size_t k = b.pb.k, n = b.pb.n
    cdef const float *xp = NULL
    cdef const float *bp = NULL
    if m < 0 or <size_t>x.shape[0] != <size_t>m * k or <size_t>y.shape[0] != <size_t>m * n:
        raise ValueError("buffer sizes do not match m * K and m * N")
    if w_scale.shape[0] != 1 and <size_t>w_scale.shape[0] != n:
        raise ValueError("w_scale must have length 1 or N")
    if bias is not None:
        if <size_t>bias.shape[0] != n:
            raise ValueError("bias must have length N")
        if n > 0:
            bp = &bias[0]
    if x.shape[0] > 0:
        xp = &x[0]
    if m == 0 or n == 0:
        return
    with nogil:
        st = fixq_dynamic_linear(xp, m, &b.pb, &w_scale[0], w_scale.shape[0], bp, g, &y[0], threads)
    if st == FIXQ_ERR_NAN:
        raise ValueError("dynamic_linear: x holds NaN or infinity (or values whose range max - min passes float32); "
                         "replace or mask them before the layer")
    if st == FIXQ_ERR_OVERFLOW:  # |q - zp| <= 255
        raise OverflowError(_overflow_message("dynamic_linear", FIXQ_UINT8, 0, b, None))
    if st == FIXQ_ERR_INVALID_ARGUMENT:
        raise ValueError(f"dynamic_linear: weight_scale must hold finite values > 0, got {_np.asarray(w_scale)!r}")
    check_status(st, "dynamic_linear")
