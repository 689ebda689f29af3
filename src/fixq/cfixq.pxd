# fixq's public C API for other Cython modules, called through the installed
# fixq's capsule (include/fixq/fixq_capsule.h): nothing to link.
#
#     from fixq cimport cfixq
#     cfixq.import_fixq()          # once, at module level
#     with nogil:
#         st = cfixq.fixq_requantize_s32(...)
#
# Build with include_dirs=[fixq.get_include()].  See docs/embedding.md.
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t

cdef extern from "fixq/fixq_capsule.h" nogil:
    const int FIXQ_VERSION_MAJOR
    const int FIXQ_VERSION_MINOR
    const int FIXQ_VERSION_PATCH
    const char *FIXQ_VERSION_STRING
    const int FIXQ_API_VERSION

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

    ctypedef struct fixq_requant:
        fixq_rounding rounding
        const int32_t *multiplier
        const int32_t *shift
        const float *scale
        const int32_t *zero_point
        int32_t qmin
        int32_t qmax

    const char *fixq_status_string(fixq_status status) noexcept
    fixq_isa fixq_selected_isa() noexcept
    int fixq_isa_compiled(fixq_isa isa) noexcept
    int fixq_isa_supported(fixq_isa isa) noexcept
    const char *fixq_isa_name(fixq_isa isa) noexcept

    int32_t fixq_srdhm(int32_t a, int32_t b) noexcept
    int32_t fixq_rounding_divide_by_pot(int32_t x, int exponent) noexcept
    fixq_status fixq_quantize_multiplier(double real, int32_t *multiplier, int *shift) noexcept
    int32_t fixq_multiply_by_quantized_multiplier(int32_t x, int32_t m, int shift,
                                                  fixq_rounding rounding) noexcept

    fixq_status fixq_requantize_s32(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                    size_t channels, size_t inner, const fixq_requant *p) noexcept
    fixq_status fixq_quantize_f32(const float *x, void *y, fixq_dtype y_dtype, size_t rows,
                                  size_t channels, size_t inner, const float *scale,
                                  const int32_t *zero_point, int32_t qmin, int32_t qmax) noexcept
    fixq_status fixq_dequantize(const void *q, fixq_dtype q_dtype, float *y, size_t rows,
                                size_t channels, size_t inner, const float *scale,
                                const int32_t *zero_point) noexcept

    # matmul with packed weights and the fused output stage (fixq.h: fixq_packed_b)
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

    void fixq_packed_b_init(fixq_packed_b *pb, size_t k, size_t n) noexcept
    fixq_status fixq_pack_b(const void *b, fixq_dtype b_dtype, ptrdiff_t stride_k, ptrdiff_t stride_n,
                            const int32_t *zero_point, size_t zp_count, fixq_packed_b *pb) noexcept
    fixq_status fixq_packed_b_finish(fixq_packed_b *pb) noexcept
    fixq_status fixq_qgemm(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                           const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                           size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy,
                           int threads) noexcept

    # elementwise add and mul (TFLite int8 ADD / MUL, or float32)
    ctypedef enum fixq_eltwise_op:
        FIXQ_OP_ADD
        FIXQ_OP_MUL

    ctypedef struct fixq_eltwise:
        fixq_eltwise_op op
        fixq_rounding rounding
        fixq_dtype a_dtype, b_dtype, y_dtype
        int32_t a_zero_point, b_zero_point, y_zero_point
        int32_t qmin, qmax
        float a_scale, b_scale, y_scale
        int32_t a_multiplier, a_shift, b_multiplier, b_shift, y_multiplier, y_shift

    fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                                  fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                                  fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                                  fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                                  int32_t qmin, int32_t qmax) noexcept
    fixq_status fixq_eltwise_nd(const fixq_eltwise *p, size_t ndim, const size_t *shape,
                                const void *a, const ptrdiff_t *a_strides, const void *b,
                                const ptrdiff_t *b_strides, void *y,
                                const ptrdiff_t *y_strides) noexcept
    fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                                   fixq_dtype y_dtype, size_t n, const fixq_requant *p) noexcept

    # low-bit weights: fp16 Linear, XOR-popcount GEMM on +-1 bits
    size_t fixq_f16_packed_size(size_t n, size_t k) noexcept
    fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed) noexcept
    fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                                const float *bias, float *y) noexcept
    size_t fixq_bgemm_packed_size(size_t rows, size_t k) noexcept
    fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed) noexcept
    fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k,
                           int32_t *y) noexcept

cdef extern from "fixq/fixq_capsule.h":
    # Imports fixq._core and checks its C API version; raises ImportError on a mismatch.
    int import_fixq() except -1
