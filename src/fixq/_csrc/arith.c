/* Public scalar primitives and the requantize / quantize / dequantize entry
 * points (argument checks, then the selected micro-kernel). */
#include <math.h>

#include "fixq_internal.h"

int32_t fixq_srdhm(int32_t a, int32_t b) { return fixq__srdhm(a, b); }

int32_t fixq_rounding_divide_by_pot(int32_t x, int exponent) {
  if (exponent < 0) exponent = 0;
  if (exponent > 31) exponent = 31;
  return fixq__rdbpot(x, exponent);
}

/* tensorflow/lite/kernels/internal/quantization_util.cc QuantizeMultiplier:
 * frexp, round half away from zero (std::round), the 2^31 correction, and
 * frexp exponents below -31 flushed to zero: reals below 2^-32, except those
 * in [2^-32 - 2^-64, 2^-32) that round up to (2^30, -31). */
fixq_status fixq_quantize_multiplier(double real, int32_t *multiplier, int *shift) {
  if (!(real >= 0.0) || isinf(real) || multiplier == NULL || shift == NULL)
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return FIXQ_OK;
  }
  int e;
  const double q = frexp(real, &e);
  int64_t q_fixed = (int64_t)round(q * (double)(INT64_C(1) << 31));
  if (q_fixed == (INT64_C(1) << 31)) {
    q_fixed /= 2;
    ++e;
  }
  if (e < -31) {
    e = 0;
    q_fixed = 0;
  }
  *multiplier = (int32_t)q_fixed;
  *shift = e;
  return FIXQ_OK;
}

int32_t fixq_multiply_by_quantized_multiplier(int32_t x, int32_t m, int shift, fixq_rounding rounding) {
  if (m < 0) m = 0;
  if (shift < -31) shift = -31;
  if (shift > 30) shift = 30;
  return rounding == FIXQ_ROUND_SINGLE ? fixq__mbqm_single(x, m, shift) : fixq__mbqm_double(x, m, shift);
}

static int dtype_range(fixq_dtype dt, int32_t *lo, int32_t *hi) {
  switch (dt) {
    case FIXQ_INT8: *lo = INT8_MIN; *hi = INT8_MAX; return 1;
    case FIXQ_UINT8: *lo = 0; *hi = UINT8_MAX; return 1;
    case FIXQ_INT16: *lo = INT16_MIN; *hi = INT16_MAX; return 1;
    case FIXQ_INT32: *lo = INT32_MIN; *hi = INT32_MAX; return 1;
    default: return 0;
  }
}

static int check_scales(const float *scale, size_t channels) {
  if (scale == NULL) return 0;
  for (size_t c = 0; c < channels; c++)
    if (!(scale[c] > 0.0f) || isinf(scale[c])) return 0;
  return 1;
}

static int check_zero_points(const int32_t *zp, size_t channels, int32_t lo, int32_t hi) {
  if (zp == NULL) return 0;
  for (size_t c = 0; c < channels; c++)
    if (zp[c] < lo || zp[c] > hi) return 0;
  return 1;
}

/* [rows][channels][inner] elements of 4 bytes (the int32 or float32 side) and
 * the per-channel arrays: every count and byte count an array can have. */
static int tensor_sizes_ok(size_t rows, size_t channels, size_t inner) {
  size_t n;
  return fixq__mul_size(channels, sizeof(int32_t), &n) && fixq__mul_size(rows, channels, &n) &&
         fixq__mul_size(n, inner, &n) && fixq__mul_size(n, sizeof(int32_t), &n);
}

fixq_status fixq__check_requant(const fixq_requant *p, size_t channels, fixq_dtype y_dtype) {
  int32_t lo, hi;
  if (p == NULL || channels == 0 || !dtype_range(y_dtype, &lo, &hi)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (p->qmin < lo || p->qmax > hi || p->qmin > p->qmax) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!check_zero_points(p->zero_point, channels, lo, hi)) return FIXQ_ERR_INVALID_ARGUMENT;
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE:
    case FIXQ_ROUND_SINGLE:
      if (p->multiplier == NULL || p->shift == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
      for (size_t c = 0; c < channels; c++)
        if (p->multiplier[c] < 0 || p->shift[c] < -31 || p->shift[c] > 30) return FIXQ_ERR_INVALID_ARGUMENT;
      if (y_dtype == FIXQ_INT32)
        for (size_t c = 0; c < channels; c++)
          if (p->zero_point[c] != 0) return FIXQ_ERR_INVALID_ARGUMENT;
      return FIXQ_OK;
    case FIXQ_ROUND_FP32:
      if (y_dtype == FIXQ_INT32 || !check_scales(p->scale, channels)) return FIXQ_ERR_INVALID_ARGUMENT;
      return FIXQ_OK;
    default:
      return FIXQ_ERR_INVALID_ARGUMENT;
  }
}

static const fixq_requant_ukernel requant_table[FIXQ_ISA_COUNT] = {
    fixq_requant_s32__scalar, FIXQ__AVX2(fixq_requant_s32__avx2),
    FIXQ__AVX512VNNI(fixq_requant_s32__avx512vnni), FIXQ__NEON(fixq_requant_s32__neon),
    FIXQ__DOTPROD(fixq_requant_s32__neon), FIXQ__I8MM(fixq_requant_s32__neon)};
static const fixq_quantize_ukernel quantize_table[FIXQ_ISA_COUNT] = {
    fixq_quantize_f32__scalar, FIXQ__AVX2(fixq_quantize_f32__avx2),
    FIXQ__AVX512VNNI(fixq_quantize_f32__avx2), FIXQ__NEON(fixq_quantize_f32__neon),
    FIXQ__DOTPROD(fixq_quantize_f32__neon), FIXQ__I8MM(fixq_quantize_f32__neon)};
static const fixq_dequantize_ukernel dequantize_table[FIXQ_ISA_COUNT] = {
    fixq_dequantize__scalar, FIXQ__AVX2(fixq_dequantize__avx2),
    FIXQ__AVX512VNNI(fixq_dequantize__avx2), FIXQ__NEON(fixq_dequantize__neon),
    FIXQ__DOTPROD(fixq_dequantize__neon), FIXQ__I8MM(fixq_dequantize__neon)};

fixq_requant_ukernel fixq__requant_ukernel(void) { return requant_table[fixq__isa]; }

fixq_status fixq_requantize_s32(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                size_t channels, size_t inner, const fixq_requant *p) {
  if (!tensor_sizes_ok(rows, channels, inner)) return FIXQ_ERR_INVALID_ARGUMENT;
  const fixq_status st = fixq__check_requant(p, channels, y_dtype);
  if (st != FIXQ_OK) return st;
  if (rows == 0 || inner == 0) return FIXQ_OK;
  if (x == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  requant_table[fixq__isa](rows, channels, inner, x, channels * inner, y, channels * inner, y_dtype, p);
  return FIXQ_OK;
}

fixq_status fixq_quantize_f32(const float *x, void *y, fixq_dtype y_dtype, size_t rows, size_t channels,
                              size_t inner, const float *scale, const int32_t *zero_point, int32_t qmin,
                              int32_t qmax) {
  int32_t lo, hi;
  if (!tensor_sizes_ok(rows, channels, inner)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (channels == 0 || y_dtype == FIXQ_INT32 || !dtype_range(y_dtype, &lo, &hi)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (qmin < lo || qmax > hi || qmin > qmax) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!check_scales(scale, channels) || !check_zero_points(zero_point, channels, lo, hi))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (rows == 0 || inner == 0) return FIXQ_OK;
  if (x == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  return quantize_table[fixq__isa](rows, channels, inner, x, y, y_dtype, scale, zero_point, qmin, qmax)
             ? FIXQ_ERR_NAN
             : FIXQ_OK;
}

fixq_status fixq_dequantize(const void *q, fixq_dtype q_dtype, float *y, size_t rows, size_t channels,
                            size_t inner, const float *scale, const int32_t *zero_point) {
  int32_t lo, hi;
  if (!tensor_sizes_ok(rows, channels, inner)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (channels == 0 || !dtype_range(q_dtype, &lo, &hi)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!check_scales(scale, channels) || !check_zero_points(zero_point, channels, lo, hi))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (rows == 0 || inner == 0) return FIXQ_OK;
  if (q == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  dequantize_table[fixq__isa](rows, channels, inner, q, q_dtype, y, scale, zero_point);
  return FIXQ_OK;
}
