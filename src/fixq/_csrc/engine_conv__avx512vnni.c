/* The direct convolution's tile (engine_conv.h) on AVX-512 VNNI: the image as uint8 x', four k a vpdpbusd
 * (x' bytes broadcast, the w8 groups of 16 channels, exact u8 x s8 products summed modulo 2^32 as the
 * contract): 8 pixels and 32 channels a pass in two 512-bit registers a pixel, or, for at most 8 channels, 16
 * pixels in one 256-bit register each.  The 4-byte groups of every run in one loop (off4): the tile's pixels stay in registers. */
#include <immintrin.h>
#include <string.h>

#include "engine_conv.h"

#define TILE_INLINE static inline __attribute__((always_inline))

/* c + vpdpbusd(a, b), c updated in place (the intrinsics left GCC 12 copying every accumulator each step) */
TILE_INLINE __m512i dot512(__m512i c, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(a), "v"(b));
  return c;
}

TILE_INLINE __m256i dot256(__m256i c, __m256i a, __m256i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(a), "v"(b));
  return c;
}

static inline int32_t load4(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* 8 pixels, channels [16 cb, 16 (cb + nb)), nb 1 or 2 */
TILE_INLINE void tile_zmm(const fixq_eng_conv *cv, const uint8_t *x, const size_t *pix, int32_t *acc, size_t cb,
                          size_t nb) {
  const size_t op = cv->op, groups = cv->segs * cv->kq, O = cv->oc;
  const uint8_t *px[8];
  for (size_t r = 0; r < 8; r++) px[r] = x + pix[r];
  __m512i c[8][2];
  for (size_t j = 0; j < nb; j++) {
    const __m512i col = _mm512_loadu_si512(cv->col + 16 * (cb + j));
    for (size_t r = 0; r < 8; r++) c[r][j] = col;
  }
  const int8_t *w = cv->w8 + 64 * cb;
  for (size_t i = 0; i < groups; i++, w += op * 4) {
    const size_t d = cv->off4[i];
    __m512i b[2];
    for (size_t j = 0; j < nb; j++) b[j] = _mm512_loadu_si512(w + 64 * j);
    for (size_t r = 0; r < 8; r++) {
      const __m512i a = _mm512_set1_epi32(load4(px[r] + d));
      for (size_t j = 0; j < nb; j++) c[r][j] = dot512(c[r][j], a, b[j]);
    }
  }
  for (size_t j = 0; j < nb; j++) { /* the block's channels, the others' lanes not stored */
    const size_t left = O - 16 * (cb + j);
    const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    for (size_t r = 0; r < 8; r++) _mm512_mask_storeu_epi32(acc + r * O + 16 * (cb + j), k, c[r][j]);
  }
}

/* 16 pixels of at most 8 channels, one 256-bit register each */
static void tile_ymm(const fixq_eng_conv *cv, const uint8_t *x, const size_t *pix, int32_t *acc) {
  const size_t op = cv->op, groups = cv->segs * cv->kq, O = cv->oc;
  const uint8_t *px[16];
  for (size_t r = 0; r < 16; r++) px[r] = x + pix[r];
  __m256i c[16];
  const __m256i col = _mm256_loadu_si256((const __m256i *)cv->col);
  for (size_t r = 0; r < 16; r++) c[r] = col;
  const int8_t *w = cv->w8;
  for (size_t i = 0; i < groups; i++, w += op * 4) {
    const size_t d = cv->off4[i];
    const __m256i b = _mm256_loadu_si256((const __m256i *)w);
    for (size_t r = 0; r < 16; r++) c[r] = dot256(c[r], _mm256_set1_epi32(load4(px[r] + d)), b);
  }
  const __mmask8 k = (__mmask8)((1u << O) - 1);
  for (size_t r = 0; r < 16; r++) _mm256_mask_storeu_epi32(acc + r * O, k, c[r]);
}

/* A few pixels one at a time (a linear at batch 1, a block's last pixel), 16 channels a register, the groups
 * alternately into two accumulators */
static void tile_few(const fixq_eng_conv *cv, const uint8_t *x, const size_t *pix, size_t rows, int32_t *acc) {
  const size_t op = cv->op, groups = cv->segs * cv->kq, O = cv->oc;
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *px = x + pix[r];
    for (size_t cb = 0; 16 * cb < O; cb++) {
      const int8_t *w = cv->w8 + 64 * cb;
      __m512i c0 = _mm512_loadu_si512(cv->col + 16 * cb), c1 = _mm512_setzero_si512();
      size_t i = 0;
      for (; i + 2 <= groups; i += 2, w += 2 * op * 4) {
        c0 = dot512(c0, _mm512_set1_epi32(load4(px + cv->off4[i])), _mm512_loadu_si512(w));
        c1 = dot512(c1, _mm512_set1_epi32(load4(px + cv->off4[i + 1])), _mm512_loadu_si512(w + op * 4));
      }
      if (i < groups) c0 = dot512(c0, _mm512_set1_epi32(load4(px + cv->off4[i])), _mm512_loadu_si512(w));
      const size_t left = O - 16 * cb;
      const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
      _mm512_mask_storeu_epi32(acc + r * O + 16 * cb, k, _mm512_add_epi32(c0, c1));
    }
  }
}

void fixq_eng_conv_tile__avx512vnni(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows,
                                    int32_t *acc) {
  if (rows <= 2) {
    tile_few(cv, img, pix, rows, acc);
    return;
  }
  if (cv->o8 == 1) {
    tile_ymm(cv, img, pix, acc);
    return;
  }
  const size_t n16 = (cv->o8 + 1) / 2;
  for (size_t h = 0; h < rows; h += 8) {
    size_t cb = 0;
    for (; cb + 2 <= n16; cb += 2) tile_zmm(cv, img, pix + h, acc + h * cv->oc, cb, 2);
    if (cb < n16) tile_zmm(cv, img, pix + h, acc + h * cv->oc, cb, 1);
  }
}
