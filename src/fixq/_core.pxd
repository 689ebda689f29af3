# Declarations of fixq's public C API (include/fixq/fixq.h).
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

    # low-bit weights (issue 5)
    size_t fixq_f16_packed_size(size_t n, size_t k)
    fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed)
    fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                                const float *bias, float *y)
    size_t fixq_bgemm_packed_size(size_t rows, size_t k)
    fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed)
    fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k, int32_t *y)

cdef int check_status(fixq_status st, str what) except -1
