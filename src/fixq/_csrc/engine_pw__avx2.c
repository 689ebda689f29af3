/* The C plan's 1x1 convolution of few output channels and the flat fp32 output stage on AVX2 (engine_pw.h).
 * The GEMM would pack A and pad every tile to 16 columns; here each block's rows of x are widened to int16 as
 * they lie (one flat run: a row's pairs past k read the next row's values against zero weights), the weights
 * are laid out once a call as int16 pairs of 8 channels, and a tile of 4 pixels x 24 channels sums them with
 * vpmaddwd (every product and pair sum exact in int32: |x| <= 255, |w| <= 128; the sum the contract's modulo
 * 2^32), starting at the column term bias - a_zp col_sum.  The accumulators go to a block laid out as y (32-byte
 * stores on rows of a multiple of 8 channels: no split line), then through the flat stage 8 a vector. */
#include <immintrin.h>
#include <string.h>

#include "engine_pw.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NR FIXQ_GEMM_NR
#define RT 4         /* pixels a tile */
#define BT 3         /* blocks of 8 channels a tile: 12 accumulators of the 16 registers */
#define BLOCK 2048   /* accumulators a block (8 KB) */
#define X_BLOCK 2048 /* int16 values of x a block (4 KB) */
#define KP_MAX (FIXQ__DIRECT_K_MAX / 2)
#define NB_MAX (FIXQ_ENG_PW_MAX_N / 8)

/* XNNPACK's fp32 stage up to the int32 conversion on 8 accumulators of channels c.. (both conversions round to
 * nearest even, MXCSR's as C's (float); below 2^16 in magnitude the second is fixq__round_even_small, and it
 * gives INT32_MIN below -2^31) */
ALWAYS_INLINE __m256i scaled8(const float *scale, size_t c, __m256 max_less_zp, __m256i acc) {
  return _mm256_cvtps_epi32(
      _mm256_min_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(scale + c)), max_less_zp));
}

/* 32 outputs from channel c: two int16 packs with the zero point added, the byte pack, the max with qmin, and
 * one vpermd putting the packs' interleaved 128-bit lanes back in order */
ALWAYS_INLINE __m256i stage32(const float *scale, size_t c, const __m256i a[4], __m256 max_less_zp, __m256i zp,
                              __m256i qmin, const int u8) {
  const __m256i lo = _mm256_adds_epi16(
      _mm256_packs_epi32(scaled8(scale, c, max_less_zp, a[0]), scaled8(scale, c + 8, max_less_zp, a[1])), zp);
  const __m256i hi = _mm256_adds_epi16(
      _mm256_packs_epi32(scaled8(scale, c + 16, max_less_zp, a[2]), scaled8(scale, c + 24, max_less_zp, a[3])), zp);
  const __m256i bytes = u8 ? _mm256_max_epu8(_mm256_packus_epi16(lo, hi), qmin)
                           : _mm256_max_epi8(_mm256_packs_epi16(lo, hi), qmin);
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

ALWAYS_INLINE void flat(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y, const int u8) {
  const size_t n = st->n, step4 = st->step4;
  const float *scale = st->scale;
  const __m256 max_less_zp = _mm256_set1_ps(st->max_less_zp);
  const __m256i zp = _mm256_set1_epi16((short)st->zp), qmin = _mm256_set1_epi8((char)st->qmin);
  size_t i = 0, c = 0;
  for (; i + 32 <= total; i += 32, c = fixq__flat_wrap(c + step4, n)) {
    __m256i a[4];
    for (int j = 0; j < 4; j++) a[j] = _mm256_loadu_si256((const __m256i *)(acc + i + 8 * j));
    _mm256_storeu_si256((__m256i *)(y + i), stage32(scale, c, a, max_less_zp, zp, qmin, u8));
  }
  if (i == total) return;
  __m256i a[4];
  uint8_t out[32];
  for (size_t j = 0; j < 4; j++) { /* the lanes past total read as 0 */
    const size_t left = total - i > 8 * j ? total - i - 8 * j : 0;
    a[j] = _mm256_maskload_epi32((const int *)acc + i + 8 * j,
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  _mm256_storeu_si256((__m256i *)out, stage32(scale, c, a, max_less_zp, zp, qmin, u8));
  memcpy(y + i, out, total - i);
}

void fixq_eng_flat__avx2(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y) {
  if (st->dt == FIXQ_UINT8) flat(st, total, acc, y, 1);
  else flat(st, total, acc, y, 0);
}

/* acc[r * n + 8 b] for r < R pixels (x's int16 rows of k at xr) and b < B blocks of the tile's 8 channels (w:
 * their pairs, nbt int16 apart a pair; ct: their column terms); the last block's lanes past n not stored where
 * tail (lanes 0..n % 8 - 1 set) is given */
ALWAYS_INLINE void tile(const size_t R, const size_t B, size_t kp, const int16_t *xr, size_t k, const int16_t *w,
                        size_t nbt, const int32_t *ct, int32_t *acc, size_t n, const __m256i *tail) {
  __m256i c[RT][BT];
  for (size_t b = 0; b < B; b++) {
    const __m256i v = _mm256_load_si256((const __m256i *)(ct + 8 * b));
    for (size_t r = 0; r < R; r++) c[r][b] = v;
  }
  for (size_t t = 0; t < kp; t++, w += nbt) {
    __m256i wb[BT];
    for (size_t b = 0; b < B; b++) wb[b] = _mm256_load_si256((const __m256i *)(w + 16 * b));
    for (size_t r = 0; r < R; r++) {
      int32_t v;
      memcpy(&v, xr + r * k + 2 * t, 4);
      const __m256i xv = _mm256_set1_epi32(v);
      for (size_t b = 0; b < B; b++) c[r][b] = _mm256_add_epi32(c[r][b], _mm256_madd_epi16(xv, wb[b]));
    }
  }
  for (size_t r = 0; r < R; r++)
    for (size_t b = 0; b < B; b++) {
      if (b + 1 == B && tail != NULL) _mm256_maskstore_epi32((int *)acc + r * n + 8 * b, *tail, c[r][b]);
      else _mm256_storeu_si256((__m256i *)(acc + r * n + 8 * b), c[r][b]);
    }
}

/* x's bytes [0, len) widened to int16 at d (zeros after them, to the last row's last pair) */
static void widen(const uint8_t *x, size_t len, fixq_dtype dt, int16_t *d) {
  const int u8 = dt == FIXQ_UINT8;
#define WIDEN(at)                                                                 \
  do {                                                                            \
    const __m128i v = _mm_loadu_si128((const __m128i *)(x + (at)));               \
    _mm256_storeu_si256((__m256i *)(d + (at)), u8 ? _mm256_cvtepu8_epi16(v) : _mm256_cvtepi8_epi16(v)); \
  } while (0)
  size_t i = 0;
  for (; i + 16 <= len; i += 16) WIDEN(i);
  if (i < len && len >= 16) WIDEN(len - 16);
  else
    for (; i < len; i++) d[i] = u8 ? (int16_t)x[i] : (int16_t)(int8_t)x[i];
#undef WIDEN
  memset(d + len, 0, 4 * sizeof(int16_t));
}

void fixq_eng_pw_fp32__avx2(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                            const int32_t *bias, const fixq_eng_flat *st, uint8_t *y) {
  const size_t k = b->k, n = b->n, kq = (k + 3) / 4, kp = 2 * kq, nb = (n + 7) / 8, nbt = 16 * nb;
  int16_t w16[KP_MAX * NB_MAX * 16] __attribute__((aligned(32)));
  int32_t col_term[NB_MAX * 8] __attribute__((aligned(32)));
  int32_t acc[BLOCK] __attribute__((aligned(32)));
  int16_t xw[X_BLOCK + 8] __attribute__((aligned(32)));
  /* acc = bias + sum (x - a_zp) w = (bias - a_zp col_sum) + sum x w, modulo 2^32 */
  for (size_t j = 0; j < 8 * nb; j++)
    col_term[j] = j < n ? (int32_t)((bias != NULL ? (uint32_t)bias[j] : 0u) - (uint32_t)a_zp * (uint32_t)b->col_sum[j])
                        : 0;
  /* the panels' 4-byte groups of 8 channels (int8, zeros past k and n) as pairs t = 2q, 2q + 1: w16[t][o][2] */
  for (size_t q = 0; q < kq; q++)
    for (size_t o8 = 0; o8 < nb; o8++) {
      const int8_t *src = b->panels + (o8 / 2) * b->k_padded * NR + q * 4 * NR + (o8 % 2) * 32;
      const __m256 lo = _mm256_castsi256_ps(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)src)));
      const __m256 hi = _mm256_castsi256_ps(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + 16))));
      _mm256_store_si256((__m256i *)(w16 + (2 * q * nb + o8) * 16),
                         _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
      _mm256_store_si256((__m256i *)(w16 + ((2 * q + 1) * nb + o8) * 16),
                         _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
    }
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n % 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  size_t rows_block = BLOCK / n < X_BLOCK / k ? BLOCK / n : X_BLOCK / k;
  rows_block = rows_block / RT * RT;
  for (size_t m0 = 0; m0 < m; m0 += rows_block) {
    const size_t rows = m - m0 < rows_block ? m - m0 : rows_block;
    widen(x + m0 * k, rows * k, dt, xw);
    for (size_t r0 = 0; r0 < rows; r0 += RT) {
      const size_t R = rows - r0 < RT ? rows - r0 : RT;
      for (size_t b0 = 0; b0 < nb; b0 += BT) {
        const size_t B = nb - b0 < BT ? nb - b0 : BT;
        const int16_t *xr = xw + r0 * k, *w = w16 + 16 * b0;
        const __m256i *t = b0 + B == nb && n % 8 ? &tail : NULL;
        int32_t *c = acc + r0 * n + 8 * b0;
        switch (R * 4 + B) {
#define TILE(r, bb) \
  case r * 4 + bb: tile(r, bb, kp, xr, k, w, nbt, col_term + 8 * b0, c, n, t); break;
#define TILE_ROWS(r) TILE(r, 1) TILE(r, 2) TILE(r, 3)
          TILE_ROWS(1)
          TILE_ROWS(2)
          TILE_ROWS(3)
          TILE_ROWS(4)
#undef TILE_ROWS
#undef TILE
          default: break;
        }
      }
    }
    fixq_eng_flat__avx2(st, rows * n, acc, y + m0 * n);
  }
}
