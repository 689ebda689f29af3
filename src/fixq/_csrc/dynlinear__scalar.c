/* Dynamic linear kernels, scalar: the contract (fixq_floatops.h) the SIMD
 * paths match bit for bit. */
#include "fixq_floatops.h"

static int finite_range(size_t n, const float *x, float *lo, float *hi) {
  float l = x[0], h = x[0], z = 0.0f;
  for (size_t i = 0; i < n; i++) {
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
    z += x[i] * 0.0f; /* NaN once some x[i] is NaN or infinite */
  }
  *lo = l;
  *hi = h;
  return z == 0.0f;
}

static void quantize_u8(size_t n, const float *x, float scale, int32_t zp, uint8_t *q) {
  for (size_t i = 0; i < n; i++) q[i] = (uint8_t)fixq__clamp_round_f32(x[i] / scale, zp, 0, UINT8_MAX);
}

static int quantize_rows(size_t rows, size_t k, const float *x, fixq__dyn_row *row, uint8_t *q) {
  for (size_t r = 0; r < rows; r++, x += k, q += k) {
    float lo, hi;
    if (!finite_range(k, x, &lo, &hi) || !fixq__dyn_qparams(lo, hi, &row[r].scale, &row[r].zp)) return 0;
    quantize_u8(k, x, row[r].scale, row[r].zp, q);
  }
  return 1;
}

static void epilogue(size_t rows, size_t cols, const int32_t *acc, size_t lda, const fixq__dyn_row *row,
                     const int32_t *col_sum, const float *w_scale, const float *bias, const float *res, float *y,
                     size_t ldy) {
  for (size_t r = 0; r < rows; r++, acc += lda, y += ldy, row++) {
    for (size_t j = 0; j < cols; j++) {
      const int32_t a = (int32_t)((uint32_t)acc[j] - (uint32_t)row->zp * (uint32_t)col_sum[j]);
      const float v = (float)a * (row->scale * w_scale[j]) + bias[j];
      y[j] = res != NULL ? v + res[j] : v;
    }
    if (res != NULL) res += ldy;
  }
}

const fixq__dyn_kernels fixq__dyn_kernels__scalar = {finite_range, quantize_u8, quantize_rows, epilogue};
