/* The direct convolution's tile (engine_conv.h) on AVX2: the image as int16 x - zp, 8 output channels a
 * 256-bit register, two k a vpmaddwd (each pair of x - zp broadcast, the w16 pairs of 8 channels): every
 * product and pair sum is exact in int32 (|x - zp| <= 255, |w| <= 128), so the sum is the contract's modulo
 * 2^32.  A block of 8 channels at a time, the tile's 8 pixels in 8 registers. */
#include <immintrin.h>
#include <string.h>

#include "engine_conv.h"

#define MR FIXQ_ENG_CONV_MR

void fixq_eng_conv_tile__avx2(const fixq_eng_conv *cv, const void *img, const size_t *pix, int32_t *acc) {
  const int16_t *x = img;
  const size_t op = cv->op, kp = 2 * cv->kq;
  for (size_t cb = 0; cb < cv->o8; cb++) {
    __m256i c[MR];
    const __m256i bias = _mm256_loadu_si256((const __m256i *)(cv->bias + 8 * cb));
    for (size_t r = 0; r < MR; r++) c[r] = bias;
    for (size_t g = 0; g < cv->segs; g++) {
      const int16_t *px[MR];
      for (size_t r = 0; r < MR; r++) px[r] = x + pix[r] + cv->off[g];
      const int16_t *w = cv->w16 + (g * kp * op + 8 * cb) * 2;
      for (size_t t = 0; t < kp; t++, w += op * 2) {
        const __m256i b = _mm256_loadu_si256((const __m256i *)w);
        for (size_t r = 0; r < MR; r++) {
          int32_t v;
          memcpy(&v, px[r] + 2 * t, 4);
          c[r] = _mm256_add_epi32(c[r], _mm256_madd_epi16(_mm256_set1_epi32(v), b));
        }
      }
    }
    for (size_t r = 0; r < MR; r++) _mm256_storeu_si256((__m256i *)(acc + r * op + 8 * cb), c[r]);
  }
}
