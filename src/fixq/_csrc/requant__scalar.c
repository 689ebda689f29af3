/* Scalar requantize / quantize / dequantize: the contract every ISA matches. */
#include "fixq_internal.h"

void fixq_requant_s32__scalar(size_t rows, size_t channels, size_t inner, const int32_t *x,
                              size_t x_stride, void *y, size_t y_stride, fixq_dtype y_dtype,
                              const fixq_requant *p) {
  for (size_t r = 0; r < rows; r++) {
    const int32_t *xr = x + r * x_stride;
    const size_t yr = r * y_stride;
    for (size_t c = 0; c < channels; c++)
      for (size_t i = 0; i < inner; i++) {
        const size_t k = c * inner + i;
        fixq__store(y, y_dtype, yr + k, fixq__requant_one(xr[k], p, c));
      }
  }
}

/* ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), with
 * the division in float32.  Clamping before rounding gives the same integer
 * (the bounds are integers) and keeps |f| small for fixq__round_even_small. */
int fixq_quantize_f32__scalar(size_t rows, size_t channels, size_t inner, const float *x, void *y,
                              fixq_dtype y_dtype, const float *scale, const int32_t *zero_point,
                              int32_t qmin, int32_t qmax) {
  int nan = 0;
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const float s = scale[c];
      const int32_t zp = zero_point[c];
      const float lo = (float)(qmin - zp), hi = (float)(qmax - zp);
      for (size_t i = 0; i < inner; i++, k++) {
        float f = x[k] / s;
        nan |= f != f;
        f = f < lo ? lo : f;
        f = f > hi ? hi : f;
        fixq__store(y, y_dtype, k, f != f ? zp : (int32_t)fixq__round_even_small(f) + zp);
      }
    }
  return nan;
}

/* ONNX DequantizeLinear: (q - zero_point) * scale in float32; the difference
 * is exact (int64 for int32 inputs) and rounded once to float. */
void fixq_dequantize__scalar(size_t rows, size_t channels, size_t inner, const void *q,
                             fixq_dtype q_dtype, float *y, const float *scale,
                             const int32_t *zero_point) {
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const float s = scale[c];
      const int64_t zp = zero_point[c];
      for (size_t i = 0; i < inner; i++, k++)
        y[k] = (float)((int64_t)fixq__load(q, q_dtype, k) - zp) * s;
    }
}
