/* XOR-popcount GEMM, AVX2: bit-identical to bgemm__scalar.c (integer counts).
 * popcount of 256 bits by the nibble lookup (vpshufb on each half-byte, as in
 * Mula, Kurz & Lemire "Faster population counts using AVX2 instructions"),
 * byte counts summed for up to 31 chunks (8 * 31 < 256) and then widened with
 * vpsadbw.  A 2 x 4 tile of (a row, b row) pairs shares its loads; b rows are
 * blocked so a block stays in L1 across all rows of a.  The last word of every
 * row (and any words after the last full 256-bit chunk) go through popcnt with
 * the mask, so padding bits never count. */
#include <immintrin.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define TM 2
#define TN 4
#define FLUSH 31
#define L1_BYTES 16384

ALWAYS_INLINE __m256i popcount_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

ALWAYS_INLINE int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

ALWAYS_INLINE void tile(const int mr, const int nr, size_t kw, uint64_t last_mask, const uint64_t *a,
                        const uint64_t *b, int32_t k, int32_t *y, size_t ldy) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  const size_t chunks = (kw - 1) / 4; /* full 256-bit chunks before the last word */
  __m256i wide[TM][TN];
#pragma GCC unroll 2
  for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) wide[i][j] = zero;
  for (size_t c0 = 0; c0 < chunks; c0 += FLUSH) {
    const size_t c1 = c0 + FLUSH < chunks ? c0 + FLUSH : chunks;
    __m256i byte[TM][TN];
#pragma GCC unroll 2
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
      for (int j = 0; j < nr; j++) byte[i][j] = zero;
    for (size_t c = c0; c < c1; c++) {
      __m256i av[TM];
#pragma GCC unroll 2
      for (int i = 0; i < mr; i++) av[i] = _mm256_loadu_si256((const __m256i *)(a + i * kw + 4 * c));
#pragma GCC unroll 4
      for (int j = 0; j < nr; j++) {
        const __m256i bv = _mm256_loadu_si256((const __m256i *)(b + j * kw + 4 * c));
#pragma GCC unroll 2
        for (int i = 0; i < mr; i++)
          byte[i][j] = _mm256_add_epi8(byte[i][j], popcount_bytes(_mm256_xor_si256(av[i], bv), lut, low));
      }
    }
#pragma GCC unroll 2
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
      for (int j = 0; j < nr; j++) wide[i][j] = _mm256_add_epi64(wide[i][j], _mm256_sad_epu8(byte[i][j], zero));
  }
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      const uint64_t *ai = a + i * kw, *bj = b + j * kw;
      int64_t pop = hsum64(wide[i][j]);
      for (size_t w = 4 * chunks; w + 1 < kw; w++) pop += __builtin_popcountll(ai[w] ^ bj[w]);
      pop += __builtin_popcountll((ai[kw - 1] ^ bj[kw - 1]) & last_mask);
      y[i * ldy + j] = k - 2 * (int32_t)pop;
    }
}

#define TILE_CASE(MR_, NR_) \
  case MR_ * 8 + NR_: tile(MR_, NR_, kw, last_mask, a, b, k, y, ldy); break;

static void run_tile(int mr, int nr, size_t kw, uint64_t last_mask, const uint64_t *a, const uint64_t *b,
                     int32_t k, int32_t *y, size_t ldy) {
  switch (mr * 8 + nr) {
    TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3) TILE_CASE(1, 4)
    TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(2, 3) TILE_CASE(2, 4)
    default: break;
  }
}

void fixq_bgemm__avx2(size_t m, size_t n, size_t kw, uint64_t last_mask, const uint64_t *a, const uint64_t *b,
                      int32_t k, int32_t *y) {
  size_t nb = L1_BYTES / (kw * 8) / TN * TN;
  if (nb < TN) nb = TN;
  for (size_t j0 = 0; j0 < n; j0 += nb) {
    const size_t j1 = j0 + nb < n ? j0 + nb : n;
    for (size_t i = 0; i < m; i += TM) {
      const int mr = m - i < TM ? (int)(m - i) : TM;
      for (size_t j = j0; j < j1; j += TN) {
        const int nr = j1 - j < TN ? (int)(j1 - j) : TN;
        run_tile(mr, nr, kw, last_mask, a + i * kw, b + j * kw, k, y + i * n + j, n);
      }
    }
  }
}
