# Declarations of fixq's public C API (include/fixq/fixq.h).
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t, int64_t, uint32_t, uint64_t

cdef extern from "fixq/fixq.h" nogil:
    ctypedef enum fixq_status:
        FIXQ_OK
        FIXQ_ERR_INVALID_ARGUMENT
        FIXQ_ERR_OVERFLOW
        FIXQ_ERR_NAN
        FIXQ_ERR_OUT_OF_MEMORY
        FIXQ_ERR_UNSUPPORTED

    ctypedef enum fixq_isa:
        FIXQ_ISA_SCALAR
        FIXQ_ISA_AVX2
        FIXQ_ISA_AVX512VNNI
        FIXQ_ISA_NEON
        FIXQ_ISA_DOTPROD
        FIXQ_ISA_I8MM
        FIXQ_ISA_COUNT

    ctypedef enum fixq_rounding:
        FIXQ_ROUND_DOUBLE
        FIXQ_ROUND_SINGLE
        FIXQ_ROUND_FP32

    ctypedef enum fixq_dtype:
        FIXQ_INT8
        FIXQ_UINT8
        FIXQ_INT16
        FIXQ_INT32

    const char *FIXQ_VERSION_STRING

    fixq_status fixq_init()
    fixq_isa fixq_selected_isa()
    int fixq_isa_compiled(fixq_isa isa)
    int fixq_isa_supported(fixq_isa isa)
    const char *fixq_isa_name(fixq_isa isa)
    fixq_status fixq_select_isa(fixq_isa isa)

    int32_t fixq_srdhm(int32_t a, int32_t b)
    int32_t fixq_rounding_divide_by_pot(int32_t x, int exponent)
    fixq_status fixq_quantize_multiplier(double real, int32_t *multiplier, int *shift)
    int32_t fixq_multiply_by_quantized_multiplier(int32_t x, int32_t m, int shift, fixq_rounding rounding)

    ctypedef struct fixq_requant:
        fixq_rounding rounding
        const int32_t *multiplier
        const int32_t *shift
        const float *scale
        const int32_t *zero_point
        int32_t qmin
        int32_t qmax

    fixq_status fixq_requantize_s32(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                    size_t channels, size_t inner, const fixq_requant *p)
    fixq_status fixq_quantize_f32(const float *x, void *y, fixq_dtype y_dtype, size_t rows,
                                  size_t channels, size_t inner, const float *scale,
                                  const int32_t *zero_point, int32_t qmin, int32_t qmax)
    fixq_status fixq_dequantize(const void *q, fixq_dtype q_dtype, float *y, size_t rows,
                                size_t channels, size_t inner, const float *scale,
                                const int32_t *zero_point)

    # elementwise
    ctypedef enum fixq_eltwise_op:
        FIXQ_OP_ADD
        FIXQ_OP_MUL

    ctypedef struct fixq_eltwise:
        fixq_eltwise_op op
        fixq_rounding rounding
        fixq_dtype a_dtype
        fixq_dtype b_dtype
        fixq_dtype y_dtype
        int32_t a_zero_point
        int32_t b_zero_point
        int32_t y_zero_point
        int32_t qmin
        int32_t qmax
        float a_scale
        float b_scale
        float y_scale
        int32_t a_multiplier
        int32_t a_shift
        int32_t b_multiplier
        int32_t b_shift
        int32_t y_multiplier
        int32_t y_shift
        int32_t lin_ra
        int32_t lin_rb
        int32_t lin_u
        int32_t lin_k
        int32_t lin_t
        int32_t lin_neg

    fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                                  fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                                  fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                                  fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                                  int32_t qmin, int32_t qmax)
    fixq_status fixq_eltwise_nd(const fixq_eltwise *p, size_t ndim, const size_t *shape,
                                const void *a, const ptrdiff_t *a_strides, const void *b,
                                const ptrdiff_t *b_strides, void *y, const ptrdiff_t *y_strides)
    fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                                   fixq_dtype y_dtype, size_t n, const fixq_requant *p)
    # low-bit weights
    size_t fixq_f16_packed_size(size_t n, size_t k)
    fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed)
    fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                                const float *bias, float *y)
    size_t fixq_bgemm_packed_size(size_t rows, size_t k)
    fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed)
    fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k, int32_t *y)

cdef int check_status(fixq_status st, str what) except -1

# ---- matmul ----
cdef extern from "fixq/fixq.h" nogil:
    const int FIXQ_GEMM_NR

    ctypedef enum fixq_gemm_kernel:
        FIXQ_GEMM_S8
        FIXQ_GEMM_S16

    ctypedef struct fixq_packed_b:
        size_t k
        size_t n
        size_t k_padded
        size_t n_padded
        fixq_dtype dtype
        fixq_gemm_kernel kernel
        int zero_point_nonzero
        int64_t col_abs_max
        int8_t *panels
        int32_t *zero_point
        int32_t *col_sum
        int64_t *col_abs

    void fixq_packed_b_init(fixq_packed_b *pb, size_t k, size_t n)
    fixq_status fixq_pack_b(const void *b, fixq_dtype b_dtype, Py_ssize_t stride_k, Py_ssize_t stride_n,
                            const int32_t *zero_point, size_t zp_count, fixq_packed_b *pb)
    fixq_status fixq_packed_b_finish(fixq_packed_b *pb)
    fixq_status fixq_qgemm(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                           const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                           size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads)


cdef extern from "fixq_internal.h" nogil:
    int FIXQ__MUL_BIAS
    void fixq__parallel_hold(int threads)
    void fixq__parallel_release(int threads)
    int fixq__parallel_holds()
    fixq_status fixq__eltwise_setup(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                                    fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                                    fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                                    fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                                    int32_t qmin, int32_t qmax)
    void fixq__eltwise_plan(fixq_eltwise *p)
    fixq_status fixq__requantize_q8_params(fixq_eltwise *e, fixq_dtype x_dtype, int32_t x_zero_point,
                                           fixq_dtype y_dtype, const fixq_requant *p, int plan)
