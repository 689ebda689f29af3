/* The direct convolution's tile (engine_conv.h) on AVX2: the image as int16 x - zp, 8 output channels a
 * 256-bit register, two k a vpmaddwd (each pair of x - zp broadcast, the w16 pairs of 8 channels): every
 * product and pair sum is exact in int32 (|x - zp| <= 255, |w| <= 128), so the sum is the contract's modulo
 * 2^32.  A block of 8 channels at a time, 8 pixels in 8 registers, the pairs of every run in one
 * loop (off2). */
#include <immintrin.h>
#include <string.h>

#include "engine_conv.h"

#define MR 8 /* pixels a pass: 8 accumulators of the 16 registers */

static void tile8(const fixq_eng_conv *cv, const void *img, const size_t *pix, int32_t *acc) {
  const size_t op = cv->op, pairs = 2 * cv->segs * cv->kq, O = cv->oc;
  const char *px[MR];
  for (size_t r = 0; r < MR; r++) px[r] = (const char *)img + 2 * pix[r];
  for (size_t cb = 0; cb < cv->o8; cb++) {
    __m256i c[MR];
    const __m256i bias = _mm256_loadu_si256((const __m256i *)(cv->bias + 8 * cb));
    for (size_t r = 0; r < MR; r++) c[r] = bias;
    const int16_t *w = cv->w16 + 16 * cb;
    for (size_t t = 0; t < pairs; t++, w += op * 2) {
      const size_t d = cv->off2[t];
      const __m256i b = _mm256_loadu_si256((const __m256i *)w);
      for (size_t r = 0; r < MR; r++) {
        int32_t v;
        memcpy(&v, px[r] + d, 4);
        c[r] = _mm256_add_epi32(c[r], _mm256_madd_epi16(_mm256_set1_epi32(v), b));
      }
    }
    const size_t left = O - 8 * cb; /* channels of this block, the others' lanes not stored */
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)(left < 8 ? left : 8)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (size_t r = 0; r < MR; r++) _mm256_maskstore_epi32(acc + r * O + 8 * cb, mask, c[r]);
  }
}

/* A few pixels one at a time (a linear at batch 1, a block's last pixel), the pairs alternately into two
 * accumulators */
static void tile_few(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows, int32_t *acc) {
  const size_t op = cv->op, pairs = 2 * cv->segs * cv->kq, O = cv->oc;
  for (size_t r = 0; r < rows; r++) {
    const char *px = (const char *)img + 2 * pix[r];
    for (size_t cb = 0; cb < cv->o8; cb++) {
      const int16_t *w = cv->w16 + 16 * cb;
      __m256i c0 = _mm256_loadu_si256((const __m256i *)(cv->bias + 8 * cb)), c1 = _mm256_setzero_si256();
      for (size_t t = 0; t < pairs; t += 2, w += 4 * op) { /* pairs is even */
        int32_t v0, v1;
        memcpy(&v0, px + cv->off2[t], 4);
        memcpy(&v1, px + cv->off2[t + 1], 4);
        c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_set1_epi32(v0), _mm256_loadu_si256((const __m256i *)w)));
        c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_set1_epi32(v1),
                                                    _mm256_loadu_si256((const __m256i *)(w + 2 * op))));
      }
      const size_t left = O - 8 * cb;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)(left < 8 ? left : 8)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      _mm256_maskstore_epi32(acc + r * O + 8 * cb, mask, _mm256_add_epi32(c0, c1));
    }
  }
}

void fixq_eng_conv_tile__avx2(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows, int32_t *acc) {
  if (rows <= 2) {
    tile_few(cv, img, pix, rows, acc);
    return;
  }
  for (size_t h = 0; h < rows; h += MR) tile8(cv, img, pix + h, acc + h * cv->oc);
}
