/* The direct convolution's tile (engine_conv.h), the contract: acc = col + sum x' w over the patch's runs,
 * modulo 2^32, on the uint8 image and the w8 weights. */
#include "engine_conv.h"

void fixq_eng_conv_tile__scalar(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows,
                                int32_t *acc) {
  const uint8_t *x = img;
  const size_t op = cv->op, kq = cv->kq, n = cv->oc;
  for (size_t r = 0; r < rows; r++) {
    uint32_t *a = (uint32_t *)acc + r * n;
    for (size_t o = 0; o < n; o++) a[o] = (uint32_t)cv->col[o];
    for (size_t g = 0; g < cv->segs; g++) {
      const uint8_t *px = x + pix[r] + cv->off[g];
      const int8_t *w = cv->w8 + g * kq * op * 4;
      for (size_t q = 0; q < kq; q++, px += 4, w += op * 4)
        for (size_t o = 0; o < n; o++)
          a[o] += (uint32_t)px[0] * (uint32_t)(int32_t)w[4 * o] + (uint32_t)px[1] * (uint32_t)(int32_t)w[4 * o + 1] +
                  (uint32_t)px[2] * (uint32_t)(int32_t)w[4 * o + 2] + (uint32_t)px[3] * (uint32_t)(int32_t)w[4 * o + 3];
    }
  }
}
