# Float kernels of a transformer encoder (layer norm, softmax, GELU, attention) and the
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
    ctypedef enum fixq_dyn_act:
        FIXQ_DYN_ACT_NONE
        FIXQ_DYN_ACT_GELU_ERF
        FIXQ_DYN_ACT_GELU_TANH
    fixq_status fixq_layer_norm_f32(const float *x, size_t rows, size_t n, const float *weight, const float *bias,
                                    float eps, float *y, int threads)
    fixq_status fixq_softmax_f32(const float *x, size_t rows, size_t n, float *y, int threads)
    fixq_status fixq_softmax_bias_f32(const float *x, size_t rows, size_t n, const float *bias, size_t bias_rows,
                                      float *y, int threads)
    ctypedef struct fixq_attention_args:
        size_t n, h, m, l, d
        const float *q
        const float *k
        const float *v
        ptrdiff_t q_stride[3]
        ptrdiff_t k_stride[3]
        ptrdiff_t v_stride[3]
        const float *bias
        size_t bias_stride
        float scale
        float *o
        const size_t *seq_offsets
    fixq_status fixq_attention_f32(const fixq_attention_args *a, int threads)
    fixq_status fixq_gelu_f32(const float *x, size_t count, fixq_gelu_form form, float *y, int threads)
    fixq_status fixq_dynamic_linear(const float *x, size_t m, const fixq_packed_b *b, const float *w_scale,
                                    size_t w_scale_count, const float *bias, fixq_dyn_granularity granularity,
                                    const float *residual, fixq_dyn_act act, float *y, int threads)
    int fixq__dyn_qparams(float lo, float hi, float *scale, int32_t *zp)
    ctypedef struct fixq_embed_table:
        const int8_t *q
        const float *scale
        size_t rows
        const int64_t *ids
    fixq_status fixq_embed_sum_f32(const fixq_embed_table *tables, size_t count, size_t rows, size_t d,
                                   const float *ln_weight, const float *ln_bias, float eps, float *y, int threads)
    fixq_status fixq_masked_mean_f32(const float *x, const float *mask, const size_t *offsets, size_t n, size_t d,
                                     float *y, int threads)

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

_GELU_FORMS = {"none": FIXQ_GELU_ERF, "tanh": FIXQ_GELU_TANH}
_GRANULARITIES = {"row": FIXQ_DYN_ROW, "tensor": FIXQ_DYN_TENSOR}
EMBED_TABLES_MAX = 8  # the size of embed_sum_raw's table array
_DYN_ACTS = {None: FIXQ_DYN_ACT_NONE, "gelu": FIXQ_DYN_ACT_GELU_ERF, "gelu_tanh": FIXQ_DYN_ACT_GELU_TANH}


cdef struct _Buffers:
    Py_buffer view[5]
    int count


cdef int _float_buffer(_Buffers *b, object arr, bint writable, size_t count, const char *name,
                       float **data) except -1:
    """data = the start of arr's C-contiguous buffer, which must hold `count` float32 values; b releases it."""
    if count > <size_t>PY_SSIZE_T_MAX // sizeof(float):
        raise ValueError(f"{name.decode()}: too many values")
    PyObject_GetBuffer(arr, &b.view[b.count], PyBUF_C_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
    b.count += 1
    if <size_t>b.view[b.count - 1].len != count * sizeof(float):
        raise ValueError(f"{name.decode()} must hold {count} float32 values, got {b.view[b.count - 1].len} bytes")
    data[0] = <float *>b.view[b.count - 1].buf
    return 0


cdef size_t _product(size_t a, size_t b) except? 0:
    """a * b, or ValueError when it passes size_t."""
    if b != 0 and a > (<size_t>-1) // b:
        raise ValueError("sizes overflow")
    return a * b


cdef void _release(_Buffers *b) noexcept:
    cdef int i
    for i in range(b.count):
        PyBuffer_Release(&b.view[i])
    b.count = 0


def layer_norm_raw(x, weight, bias, float eps, y, size_t rows, size_t n, int threads):
    """x, y: rows * n float32 values (y may be x); weight, bias: n."""
    cdef _Buffers b
    cdef float *xp
    cdef float *wp
    cdef float *bp
    cdef float *yp
    cdef fixq_status st = FIXQ_OK
    b.count = 0
    try:
        _float_buffer(&b, x, False, _product(rows, n), "x", &xp)
        _float_buffer(&b, weight, False, n, "weight", &wp)
        _float_buffer(&b, bias, False, n, "bias", &bp)
        _float_buffer(&b, y, True, _product(rows, n), "y", &yp)
        with nogil:
            st = fixq_layer_norm_f32(xp, rows, n, wp, bp, eps, yp, threads)
    finally:
        _release(&b)
    check_status(st, "layer_norm")


def softmax_raw(x, y, size_t rows, size_t n, int threads):
    """x, y: rows * n float32 values (y may be x)."""
    cdef _Buffers b
    cdef float *xp
    cdef float *yp
    cdef fixq_status st = FIXQ_OK
    b.count = 0
    try:
        _float_buffer(&b, x, False, _product(rows, n), "x", &xp)
        _float_buffer(&b, y, True, _product(rows, n), "y", &yp)
        with nogil:
            st = fixq_softmax_f32(xp, rows, n, yp, threads)
    finally:
        _release(&b)
    check_status(st, "softmax")


def softmax_bias_raw(x, bias, y, size_t rows, size_t n, size_t bias_rows, int threads):
    """x, y: rows * n float32 values (y may be x); bias: bias_rows * n, bias_rows dividing rows."""
    cdef _Buffers b
    cdef float *xp
    cdef float *bp
    cdef float *yp
    cdef fixq_status st = FIXQ_OK
    if bias_rows == 0 or rows % bias_rows != 0:
        raise ValueError(f"softmax: {bias_rows} bias rows do not divide {rows} rows")
    b.count = 0
    try:
        _float_buffer(&b, x, False, _product(rows, n), "x", &xp)
        _float_buffer(&b, bias, False, _product(bias_rows, n), "bias", &bp)
        _float_buffer(&b, y, True, _product(rows, n), "y", &yp)
        with nogil:
            st = fixq_softmax_bias_f32(xp, rows, n, bp, bias_rows, yp, threads)
    finally:
        _release(&b)
    check_status(st, "softmax")


cdef int _strides(const float[:, :, :, :] x, ptrdiff_t *s, str name) except -1:
    """s = x's batch, token and head strides in floats; its rows of D must be contiguous."""
    cdef int i
    if x.shape[3] > 1 and x.strides[3] != sizeof(float):
        raise ValueError(f"attention: {name}'s last axis must be contiguous; pass np.ascontiguousarray({name})")
    for i in range(3):
        if x.strides[i] % <Py_ssize_t>sizeof(float):
            raise ValueError(f"attention: {name}'s strides must be multiples of 4 bytes, got {x.strides[i]}; "
                             f"pass np.ascontiguousarray({name})")
        s[i] = x.strides[i] // <Py_ssize_t>sizeof(float)
    return 0


def attention_raw(const float[:, :, :, :] q, const float[:, :, :, :] k, const float[:, :, :, :] v,
                  float scale, const float[::1] bias, size_t bias_stride, float[:, :, :, ::1] out, int threads,
                  const size_t[::1] seq_offsets=None):
    """out [N, M, H, D] (C-contiguous) = the attention of q [N, M, H, D] over k, v [N, L, H, D] (strided, rows
    of D contiguous); bias: None or N * L (bias_stride L) or L (bias_stride 0) values.  Every size nonzero.
    With seq_offsets (S + 1 values, 0 up to T), N = 1 and M = L = T: S sequences packed (fixq_attention_f32)."""
    cdef fixq_attention_args a
    cdef fixq_status st
    a.n, a.m, a.h, a.d, a.l = q.shape[0], q.shape[1], q.shape[2], q.shape[3], k.shape[1]
    a.seq_offsets = NULL
    if seq_offsets is not None:
        if a.n != 1 or a.m != a.l or bias_stride != 0 or seq_offsets.shape[0] < 2:
            raise ValueError("attention: packed sequences need q, k, v of one batch of T tokens and T bias values")
        a.seq_offsets = &seq_offsets[0]
    if (<size_t>k.shape[0] != a.n or <size_t>v.shape[0] != a.n or <size_t>v.shape[1] != a.l
            or <size_t>k.shape[2] != a.h or <size_t>v.shape[2] != a.h or <size_t>k.shape[3] != a.d
            or <size_t>v.shape[3] != a.d or <size_t>out.shape[0] != a.n or <size_t>out.shape[1] != a.m
            or <size_t>out.shape[2] != a.h or <size_t>out.shape[3] != a.d
            or not (a.n and a.m and a.h and a.d and a.l)):
        raise ValueError("attention: shapes do not agree")
    if bias is not None and (bias_stride not in (0, a.l)
                             or <size_t>bias.shape[0] != (a.n * a.l if bias_stride else a.l)):
        raise ValueError("attention: bias must hold L or N * L values")
    _strides(q, a.q_stride, "q")
    _strides(k, a.k_stride, "k")
    _strides(v, a.v_stride, "v")
    a.q, a.k, a.v, a.o = &q[0, 0, 0, 0], &k[0, 0, 0, 0], &v[0, 0, 0, 0], &out[0, 0, 0, 0]
    a.bias = NULL
    if bias is not None:
        a.bias = &bias[0]
    a.bias_stride = bias_stride
    a.scale = scale
    if seq_offsets is not None:
        a.n = seq_offsets.shape[0] - 1
    with nogil:
        st = fixq_attention_f32(&a, threads)
    check_status(st, "attention")


def gelu_raw(x, str approximate, y, size_t count, int threads):
    """x, y: count float32 values (y may be x)."""
    cdef _Buffers b
    cdef float *xp
    cdef float *yp
    cdef fixq_status st = FIXQ_OK
    cdef fixq_gelu_form form = _GELU_FORMS[approximate]
    b.count = 0
    try:
        _float_buffer(&b, x, False, count, "x", &xp)
        _float_buffer(&b, y, True, count, "y", &yp)
        with nogil:
            st = fixq_gelu_f32(xp, count, form, yp, threads)
    finally:
        _release(&b)
    check_status(st, "gelu")


def dynamic_qparams_raw(float lo, float hi):
    """(scale, zero point) of x's range [lo, hi] quantized to uint8 as the dynamic linear layer does (onnxruntime
    DynamicQuantizeLinear); the scale a float holding a float32."""
    cdef float scale
    cdef int32_t zp
    if not (isfinite(lo) and isfinite(hi) and fixq__dyn_qparams(lo, hi, &scale, &zp)):
        raise ValueError("x holds NaN or infinity, or a range beyond float32; DynamicQuantizeLinear has no scale "
                         "for it")
    return scale, zp


def dynamic_linear_raw(x, size_t m, PackedWeights w, w_scale, bias, str granularity, y, int threads, residual=None,
                       act=None):
    """y [m * N] = the dynamic-int8 product of x [m * K] and w; w_scale: 1 or N float32 values, bias N or None;
    then + residual [m * N] (None: none; it may be y) and the activation `act` (None, "gelu", "gelu_tanh")."""
    cdef _Buffers b
    cdef float *xp
    cdef float *sp
    cdef float *bp = NULL
    cdef float *rp = NULL
    cdef float *yp
    cdef fixq_status st = FIXQ_OK
    cdef fixq_dyn_granularity g = _GRANULARITIES[granularity]
    cdef fixq_dyn_act a = _DYN_ACTS[act]
    cdef size_t k = w.pb.k, n = w.pb.n, scales = 1 if len(w_scale) == 1 else n
    b.count = 0
    try:
        _float_buffer(&b, x, False, _product(m, k), "x", &xp)
        _float_buffer(&b, w_scale, False, scales, "weight_scale", &sp)
        if bias is not None:
            _float_buffer(&b, bias, False, n, "bias", &bp)
        if residual is not None:
            _float_buffer(&b, residual, False, _product(m, n), "residual", &rp)
        _float_buffer(&b, y, True, _product(m, n), "y", &yp)
        with nogil:
            st = fixq_dynamic_linear(xp, m, &w.pb, sp, scales, bp, g, rp, a, yp, threads)
    finally:
        _release(&b)
    if st == FIXQ_ERR_NAN:
        raise ValueError("dynamic_linear: x holds NaN or infinity (or values whose range max - min passes float32); "
                         "replace or mask them before the layer")
    if st == FIXQ_ERR_OVERFLOW:  # |q - zp| <= 255
        raise OverflowError(_overflow_message("dynamic_linear", FIXQ_UINT8, 0, w, None))
    if st == FIXQ_ERR_INVALID_ARGUMENT:
        raise ValueError(f"dynamic_linear: weight_scale must hold finite values > 0, got {w_scale!r}")
    check_status(st, "dynamic_linear")


def embed_sum_raw(list tables, float[:, ::1] y, const float[::1] ln_weight, const float[::1] ln_bias, float eps,
                  int threads):
    """y [T, D] = the float32 sum of the rows (q [R, D] int8, scale [R] float32, ids [T] int64) of each of
    `tables` (1 to EMBED_TABLES_MAX triples), then its layer norm when ln_weight and ln_bias ([D]) are given."""
    cdef fixq_embed_table t[8]
    cdef const int8_t[:, ::1] q
    cdef const float[::1] sc
    cdef const int64_t[::1] ids
    cdef size_t count = len(tables), rows = y.shape[0], d = y.shape[1], k
    cdef const float *wp = NULL
    cdef const float *bp = NULL
    cdef fixq_status st
    if not 1 <= count <= EMBED_TABLES_MAX:
        raise ValueError(f"embed_sum: 1 to {EMBED_TABLES_MAX} tables, got {count}")
    for k in range(count):
        q, sc, ids = tables[k]
        if <size_t>q.shape[1] != d or sc.shape[0] != q.shape[0] or <size_t>ids.shape[0] != rows or rows == 0:
            raise ValueError("embed_sum: the tables, their scales, the ids and y do not agree")
        t[k].q, t[k].scale, t[k].rows, t[k].ids = &q[0, 0], &sc[0], q.shape[0], &ids[0]
    if ln_weight is not None:
        if ln_bias is None or <size_t>ln_weight.shape[0] != d or <size_t>ln_bias.shape[0] != d:
            raise ValueError(f"embed_sum: the layer norm's weight and bias must hold {d} values")
        wp, bp = &ln_weight[0], &ln_bias[0]
    with nogil:
        st = fixq_embed_sum_f32(t, count, rows, d, wp, bp, eps, &y[0, 0], threads)
    if st == FIXQ_ERR_INVALID_ARGUMENT:
        raise ValueError("embed_sum: an id is outside its table (or eps is not a finite number >= 0)")
    check_status(st, "embed_sum")


def masked_mean_raw(const float[:, ::1] x, const float[::1] mask, const size_t[::1] offsets, float[:, ::1] y,
                    int threads):
    """y [S, D] = the masked mean of x's rows [T, D] (mask [T]) over the S sequences offsets[s]:offsets[s + 1]
    (S + 1 offsets rising from 0 to T)."""
    cdef size_t n = offsets.shape[0] - 1, d = x.shape[1], b
    cdef fixq_status st
    if offsets.shape[0] < 2 or <size_t>y.shape[0] != n or <size_t>y.shape[1] != d or mask.shape[0] != x.shape[0] \
            or offsets[0] != 0 or offsets[n] != <size_t>x.shape[0]:
        raise ValueError("masked_mean: x, mask, offsets and y do not agree")
    for b in range(n):
        if offsets[b + 1] < offsets[b]:
            raise ValueError("masked_mean: offsets must not fall")
    if n == 0 or d == 0 or x.shape[0] == 0:
        raise ValueError("masked_mean: x, offsets and y must not be empty")
    with nogil:
        st = fixq_masked_mean_f32(&x[0, 0], &mask[0], &offsets[0], n, d, &y[0, 0], threads)
    check_status(st, "masked_mean")
