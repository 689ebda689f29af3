/*
 * fixq: exact int8 inference kernels.  Public C API.
 *
 * Every entry point is reentrant, never aborts and never prints: it returns a
 * fixq_status.  Integer results are defined by the scalar code (the contract,
 * docs/arithmetic.md); SIMD paths are bit-identical to it.  Call fixq_init()
 * once before anything else (the Python module does it at import).
 */
#ifndef FIXQ_FIXQ_H_
#define FIXQ_FIXQ_H_

#include <stddef.h>
#include <stdint.h>

#define FIXQ_VERSION_MAJOR 0
#define FIXQ_VERSION_MINOR 1
#define FIXQ_VERSION_PATCH 0
#define FIXQ_VERSION_STRING "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  FIXQ_OK = 0,
  FIXQ_ERR_INVALID_ARGUMENT = 1, /* a size, pointer or parameter out of range */
  FIXQ_ERR_OVERFLOW = 2,         /* int32 accumulation could overflow */
  FIXQ_ERR_NAN = 3,              /* a NaN reached quantization */
  FIXQ_ERR_OUT_OF_MEMORY = 4,
  FIXQ_ERR_UNSUPPORTED = 5       /* ISA not compiled in or not supported by this CPU */
} fixq_status;

typedef enum { FIXQ_ISA_SCALAR = 0, FIXQ_ISA_AVX2 = 1, FIXQ_ISA_COUNT = 2 } fixq_isa;

/* How a real multiplier is applied (docs/arithmetic.md). */
typedef enum {
  FIXQ_ROUND_DOUBLE = 0, /* gemmlowp SRDHM then RoundingDivideByPOT (TFLite default) */
  FIXQ_ROUND_SINGLE = 1, /* (x*M + 2^(30-shift)) >> (31-shift), ties toward +inf */
  FIXQ_ROUND_FP32 = 2    /* (float)x * scale, round half to even (XNNPACK, ORT, fbgemm) */
} fixq_rounding;

typedef enum { FIXQ_INT8 = 0, FIXQ_UINT8 = 1, FIXQ_INT16 = 2, FIXQ_INT32 = 3 } fixq_dtype;

/* ---- CPU dispatch --------------------------------------------------------- */
/* Reads FIXQ_ISA (scalar|avx2; unset = best supported).  Idempotent. */
fixq_status fixq_init(void);
fixq_isa fixq_selected_isa(void);
int fixq_isa_compiled(fixq_isa isa);
int fixq_isa_supported(fixq_isa isa); /* compiled and this CPU/OS can run it */
const char *fixq_isa_name(fixq_isa isa);
/* Switch the selected path (tests and benchmarks).  Not thread-safe with
 * concurrent kernel calls. */
fixq_status fixq_select_isa(fixq_isa isa);

/* ---- fixed-point primitives (scalar, the contract) ------------------------- */
int32_t fixq_srdhm(int32_t a, int32_t b);                    /* SaturatingRoundingDoublingHighMul */
int32_t fixq_rounding_divide_by_pot(int32_t x, int exponent); /* 0 <= exponent <= 31 */
/* TFLite QuantizeMultiplier: real >= 0, finite.  real ~ m * 2^(shift-31). */
fixq_status fixq_quantize_multiplier(double real, int32_t *multiplier, int *shift);
/* rounding DOUBLE or SINGLE; 0 <= m <= INT32_MAX, -31 <= shift <= 30. */
int32_t fixq_multiply_by_quantized_multiplier(int32_t x, int32_t m, int shift, fixq_rounding rounding);

/* ---- requantization -------------------------------------------------------
 * A tensor is viewed as [rows][channels][inner]; per-channel parameters are
 * arrays of length `channels` (use channels == 1 for per-tensor).
 */
typedef struct {
  fixq_rounding rounding;
  const int32_t *multiplier; /* DOUBLE/SINGLE: [channels], 0..INT32_MAX */
  const int32_t *shift;      /* DOUBLE/SINGLE: [channels], -31..30 */
  const float *scale;        /* FP32: [channels], finite, > 0 */
  const int32_t *zero_point; /* [channels], inside [qmin, qmax] */
  int32_t qmin, qmax;        /* clamp, inside the output dtype */
} fixq_requant;

/* int32 -> int8/uint8/int16/int32: multiplier, then zero point, then clamp. */
fixq_status fixq_requantize_s32(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                size_t channels, size_t inner, const fixq_requant *p);
/* float32 -> int8/uint8/int16: round_half_even(x / scale) + zero_point, saturated to
 * [qmin, qmax].  Returns FIXQ_ERR_NAN (output unspecified) when x holds a NaN. */
fixq_status fixq_quantize_f32(const float *x, void *y, fixq_dtype y_dtype, size_t rows,
                              size_t channels, size_t inner, const float *scale,
                              const int32_t *zero_point, int32_t qmin, int32_t qmax);
/* int8/uint8/int16/int32 -> float32: (float)(q - zero_point) * scale. */
fixq_status fixq_dequantize(const void *q, fixq_dtype q_dtype, float *y, size_t rows, size_t channels,
                            size_t inner, const float *scale, const int32_t *zero_point);

/* ---- matmul (issue 3) ------------------------------------------------------ */

/* ---- elementwise (issue 4) ------------------------------------------------- */

/* ---- low-bit weights (issue 5) ---------------------------------------------
 * fp16 weights: w[n][k] as IEEE binary16 bits, packed by fixq_f16_pack into
 * ceil(n/16) panels; panel p is [k][16] and holds columns 16p..16p+15 (zero
 * padded).  fixq_f16_linear computes y[m][n] = sum_k x[m][k] * w[n][k]
 * (+ bias[n]) in fp32; the summation order is fixed (for each block of 256
 * values of k, an fmaf chain from +0.0f; blocks added in order; then the bias),
 * so every CPU path returns the same bits. */
size_t fixq_f16_packed_size(size_t n, size_t k); /* in uint16_t elements */
fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed);
/* x [m][k], y [m][n] (row-major, contiguous); bias [n] or NULL; k >= 1. */
fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                            const float *bias, float *y);
/* XOR-popcount GEMM on +-1 vectors stored as sign bits (bit 1 = -1; element i
 * of a row is bit i % 8 of byte i / 8; rows of ceil(k / 8) bytes).
 * fixq_bgemm_pack turns rows of bits into the kernel's layout: per 256-bit
 * chunk, the 32 low nibbles then the 32 high nibbles, bits >= k cleared
 * (fixq_bgemm_packed_size(rows, k) bytes).  fixq_bgemm on two packed operands,
 * a [m] rows and b [n] rows of the same k: y[i][j] = k - 2 * popcount(a[i] XOR
 * b[j]), the dot product of the +-1 vectors.  1 <= k <= 2^31 - 1. */
size_t fixq_bgemm_packed_size(size_t rows, size_t k);
fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed);
fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k, int32_t *y);


#ifdef __cplusplus
}
#endif
#endif /* FIXQ_FIXQ_H_ */
