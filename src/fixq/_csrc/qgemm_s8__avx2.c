/* AVX2 GEMM micro-kernels, bit-identical to qgemm_s8__scalar.c.
 *
 * FIXQ_GEMM_S8 (every b' in [-127, 127]): vpmaddubsw(|a'|, sign(a') * b')
 * multiplies u8 |a'| <= 128 by s8 sign(a')b' in [-127, 127]; a pair sums to at
 * most 2 * 128 * 127 = 32512, so its int16 saturation never triggers and
 * vpmaddwd(ones) + vpaddd give the exact sum (wrapping mod 2^32 like the
 * scalar uint32 sum).  FIXQ_GEMM_S16: b' widened to int16, vpmaddwd, exact.
 * Tile: up to 4 rows x 16 columns (8 int32 accumulators for S8). */
#include <immintrin.h>
#include <string.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MR FIXQ_GEMM_MR
#define NR FIXQ_GEMM_NR

ALWAYS_INLINE __m256i bcast32(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

ALWAYS_INLINE __m256i bcast64(const uint8_t *p) {
  int64_t v;
  memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

/* c row r = acc (columns 0-7, 8-15) + col_term - b_zp * row_sum[r] */
ALWAYS_INLINE void finish_row(__m256i lo, __m256i hi, int32_t *c, size_t r, const int32_t *row_sum,
                              const int32_t *b_zp, const int32_t *col_term) {
  lo = _mm256_add_epi32(lo, _mm256_loadu_si256((const __m256i *)col_term));
  hi = _mm256_add_epi32(hi, _mm256_loadu_si256((const __m256i *)(col_term + 8)));
  if (row_sum != NULL) {
    const __m256i rs = _mm256_set1_epi32(row_sum[r]);
    lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)b_zp), rs));
    hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(b_zp + 8)), rs));
  }
  _mm256_storeu_si256((__m256i *)(c + r * NR), lo);
  _mm256_storeu_si256((__m256i *)(c + r * NR + 8), hi);
}

ALWAYS_INLINE void s8_tile(const size_t rows, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i lo[MR], hi[MR];
  for (size_t r = 0; r < rows; r++) lo[r] = hi[r] = _mm256_setzero_si256();
  for (size_t q = 0; q < kq; q++, a += MR * 8, b += NR * 4) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
    for (size_t r = 0; r < rows; r++) {
      const __m256i sgn = bcast32(a + r * 8), mag = bcast32(a + r * 8 + 4);
      lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_sign_epi8(b0, sgn)), ones));
      hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_sign_epi8(b1, sgn)), ones));
    }
  }
  for (size_t r = 0; r < rows; r++) finish_row(lo[r], hi[r], c, r, row_sum, b_zp, col_term);
}

void fixq_qgemm_s8__avx2(size_t mr, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  switch (mr) {
    case 1: s8_tile(1, kq, a, b, c, row_sum, b_zp, col_term); break;
    case 2: s8_tile(2, kq, a, b, c, row_sum, b_zp, col_term); break;
    case 3: s8_tile(3, kq, a, b, c, row_sum, b_zp, col_term); break;
    default: s8_tile(4, kq, a, b, c, row_sum, b_zp, col_term); break;
  }
}

/* Two rows at a time: 4 accumulators a row, each int32 lane holding the sum
 * over k pairs (0,1) or (2,3) of one column; hadd + permute put them back in
 * column order. */
ALWAYS_INLINE void s16_rows(const size_t rows, size_t r0, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  __m256i acc[2][4];
  for (size_t r = 0; r < rows; r++)
    for (size_t i = 0; i < 4; i++) acc[r][i] = _mm256_setzero_si256();
  a += r0 * 8;
  for (size_t q = 0; q < kq; q++, a += MR * 8, b += NR * 4) {
    const __m128i *bq = (const __m128i *)b;
    __m256i w[4];
    for (size_t i = 0; i < 4; i++) w[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(bq + i)); /* columns 4i..4i+3 */
    for (size_t r = 0; r < rows; r++) {
      const __m256i x = bcast64(a + r * 8);
      for (size_t i = 0; i < 4; i++) acc[r][i] = _mm256_add_epi32(acc[r][i], _mm256_madd_epi16(w[i], x));
    }
  }
  for (size_t r = 0; r < rows; r++) {
    const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
    const __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2], acc[r][3]), 0xD8);
    finish_row(lo, hi, c + r0 * NR, r, row_sum != NULL ? row_sum + r0 : NULL, b_zp, col_term);
  }
}

void fixq_qgemm_s16__avx2(size_t mr, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                          const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  for (size_t r0 = 0; r0 < mr; r0 += 2) {
    if (mr - r0 >= 2)
      s16_rows(2, r0, kq, a, b, c, row_sum, b_zp, col_term);
    else
      s16_rows(1, r0, kq, a, b, c, row_sum, b_zp, col_term);
  }
}
