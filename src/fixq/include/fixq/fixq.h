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
/* Quantized int8/uint8 add and multiply (TFLite int8 ADD / MUL, or float32),
 * docs/arithmetic.md "Elementwise add and mul".  Fill a fixq_eltwise once with
 * fixq_eltwise_init (it derives the multipliers from the scales), then call
 * fixq_eltwise_nd any number of times, from any number of threads. */
typedef enum { FIXQ_OP_ADD = 0, FIXQ_OP_MUL = 1 } fixq_eltwise_op;

typedef struct {
  fixq_eltwise_op op;
  fixq_rounding rounding;
  fixq_dtype a_dtype, b_dtype, y_dtype; /* FIXQ_INT8 or FIXQ_UINT8 */
  int32_t a_zero_point, b_zero_point, y_zero_point;
  int32_t qmin, qmax;                   /* output clamp (fused ReLU/ReLU6) */
  float a_scale, b_scale, y_scale;      /* the scales (FP32 rounding uses them directly) */
  /* DOUBLE/SINGLE: ADD applies a_/b_ multipliers to (x - zp) << 20 and the
   * y_ multiplier to their sum; MUL applies the y_ multiplier to
   * (a - a_zp) * (b - b_zp).  TFLite QuantizeMultiplier of reals derived in
   * double from the float scales. */
  int32_t a_multiplier, a_shift, b_multiplier, b_shift, y_multiplier, y_shift;
  /* Linear plan for SIMD paths (init finds one for ADD): when lin_k > 0,
   * every output equals clamp((n + (n < lin_t ? lin_neg : 0)) >> lin_k) with
   * n = a'*lin_ra + b'*lin_rb + lin_u, a', b' and the clamp in the int8
   * domain (uint8 values minus 128); lin_neg <= 0 shifts values below zero
   * (double rounding rounds them differently).  init checks this on all 65536 input pairs.  lin_k == 0: none. */
  int32_t lin_ra, lin_rb, lin_u, lin_k, lin_t, lin_neg;
} fixq_eltwise;

/* Validates dtypes, scales (finite, > 0), zero points and the clamp, and
 * derives the multipliers (and, for ADD, the SIMD plan: tens of
 * microseconds; init once per parameter set).  FIXQ_ERR_INVALID_ARGUMENT for bad arguments;
 * FIXQ_ERR_UNSUPPORTED when a fixed-point multiplier cannot represent its real
 * ratio (quantize_multiplier flushes it to zero, or needs shift > 30): the
 * struct is still filled so the caller can report which; use FP32 there. */
fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                              fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                              fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                              fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                              int32_t qmin, int32_t qmax);

/* y = op(a, b) over an ndim-dimensional broadcast: shape[d] elements along
 * dimension d; strides are in elements (0 broadcasts).  The innermost a/b
 * strides must be 0 or 1 and y's innermost stride 1.  y may be a or b itself
 * (same pointer and strides); any other overlap is undefined.  ndim >= 1. */
fixq_status fixq_eltwise_nd(const fixq_eltwise *p, size_t ndim, const size_t *shape,
                            const void *a, const ptrdiff_t *a_strides, const void *b,
                            const ptrdiff_t *b_strides, void *y, const ptrdiff_t *y_strides);

/* int8/uint8 -> int8/uint8 requantization, per tensor: the same result as
 * fixq_requantize_s32 on (x - x_zero_point); channels == 1 in p.  Runs on
 * the elementwise multiply kernels. */
fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                               fixq_dtype y_dtype, size_t n, const fixq_requant *p);

#ifdef __cplusplus
}
#endif
#endif /* FIXQ_FIXQ_H_ */
