/*
 * fixq: exact int8 inference kernels.  Public C API.
 *
 * Every entry point is reentrant, never aborts and never prints: it returns a
 * fixq_status.  Integer results are defined by the scalar code (the contract,
 * docs/arithmetic.md); SIMD paths are bit-identical to it.  Call fixq_init()
 * once before anything else (the Python module does it at import); after it
 * the library holds no mutable state, so any thread may call any entry point
 * (fixq_select_isa, a test hook, is the one exception).  This header is C89
 * and C++ clean; docs/embedding.md shows how to link the static library
 * (`make lib`) or call an installed fixq through its capsule (fixq_capsule.h).
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

/* A short English description of `status` ("invalid argument", ...); never NULL. */
const char *fixq_status_string(fixq_status status);

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

#ifdef __cplusplus
}
#endif
#endif /* FIXQ_FIXQ_H_ */
