/* fp16-weight linear, scalar: the contract (summation order in fixq_internal.h). */
#include <math.h>

#include "fixq_internal.h"

void fixq_f16_linear__scalar(size_t m, size_t n, size_t k, const float *x, size_t ldx, const uint16_t *packed,
                             const float *bias, float *y, size_t ldy, float *work) {
  (void)work;
  for (size_t i = 0; i < m; i++) {
    const float *xi = x + i * ldx;
    for (size_t j = 0; j < n; j++) {
      /* panel j / NR holds w[., k] for its NR columns at [k][NR] */
      const uint16_t *wj = packed + (j / FIXQ__F16_NR) * k * FIXQ__F16_NR + j % FIXQ__F16_NR;
      float out = 0.0f;
      for (size_t k0 = 0; k0 < k; k0 += FIXQ__F16_KC) {
        const size_t k1 = k0 + FIXQ__F16_KC < k ? k0 + FIXQ__F16_KC : k;
        float acc = 0.0f;
        for (size_t kk = k0; kk < k1; kk++) acc = fmaf(xi[kk], fixq__f16_to_f32(wj[kk * FIXQ__F16_NR]), acc);
        out = k0 == 0 ? acc : out + acc;
      }
      y[i * ldy + j] = bias != NULL ? out + bias[j] : out;
    }
  }
}
