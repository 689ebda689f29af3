/* XOR-popcount GEMM, AVX2: bit-identical to bgemm__scalar.c (integer counts).
 * Operands come as nibble planes (fixq_bgemm_pack): per 256-bit chunk, the 32
 * low nibbles then the 32 high nibbles, so the lookup popcount (vpshufb on
 * each half-byte, Mula, Kurz & Lemire "Faster population counts using AVX2
 * instructions") needs no shifts or masks: per pair and chunk, two XORs, two
 * vpshufb and two byte adds.  Byte counts are summed for up to 31 chunks
 * (2 * 4 * 31 < 256) and then widened with vpsadbw.  A 1 x 8 tile of (a row,
 * b row) pairs keeps its 8 byte counters and the a chunk in registers and
 * reads b from L1 (b rows are blocked so a block stays there across all rows
 * of a); 8 counters + 2 a planes + the table leave room to schedule.  Columns
 * beyond a multiple of 8 use a 1 x 4 tile, then popcnt. */
#include <immintrin.h>

#include "fixq_internal.h"

#define FLUSH 31
#define L1_BYTES 16384
#define CHUNK 64 /* bytes of one 256-bit chunk in plane layout */

static inline __attribute__((always_inline)) int64_t hsum64(__m256i v) {
  const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
}

/* y[0..3] = k - 2 * (tot[0..3] + the byte counters' sums) */
static inline __attribute__((always_inline)) void finish4(__m256i s0, __m256i s1, __m256i s2, __m256i s3,
                                                          const int64_t *tot, int32_t k, int32_t *y) {
  const __m256i zero = _mm256_setzero_si256();
  s0 = _mm256_sad_epu8(s0, zero);
  s1 = _mm256_sad_epu8(s1, zero);
  s2 = _mm256_sad_epu8(s2, zero);
  s3 = _mm256_sad_epu8(s3, zero);
  const __m256i t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(s0, s1), _mm256_unpackhi_epi64(s0, s1));
  const __m256i t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(s2, s3), _mm256_unpackhi_epi64(s2, s3));
  __m256i t = _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20), _mm256_permute2x128_si256(t01, t23, 0x31));
  t = _mm256_add_epi64(t, _mm256_loadu_si256((const __m256i *)tot));
  /* totals are < 2^31: the low 32 bits of each lane */
  const __m128i p = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
  _mm_storeu_si128((__m128i *)y, _mm_sub_epi32(_mm_set1_epi32(k), _mm_add_epi32(p, p)));
}

#define LUT_CONSTANTS                                                                                        \
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, \
                                       1, 2, 2, 3, 2, 3, 3, 4);                                              \
  const __m256i zero = _mm256_setzero_si256()
#define LOAD(p, off) _mm256_loadu_si256((const __m256i *)((p) + (off)))
/* acc += popcount bytes of the chunk at offset off of b row p against a's planes lo/hi */
#define ACC(acc, lo, hi, p, off)                                                             \
  acc = _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo, LOAD(p, off)))); \
  acc = _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi, LOAD(p, (off) + 32))))
#define FLUSH_INTO(t, acc) (t += hsum64(_mm256_sad_epu8(acc, zero)), acc = zero)

/* one a row against b rows b .. b + 7 rb (rb bytes per row) */
static void tile_1x8(size_t chunks, size_t rb, const uint8_t *a, const uint8_t *b, int32_t k, int32_t *y) {
  LUT_CONSTANTS;
  const uint8_t *b1 = b + rb, *b2 = b + 2 * rb, *b3 = b + 3 * rb, *b4 = b + 4 * rb, *b5 = b + 5 * rb,
                *b6 = b + 6 * rb, *b7 = b + 7 * rb;
  __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero, c6 = zero, c7 = zero;
  int64_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t k0 = 0;; k0 += FLUSH) {
    const size_t k1 = k0 + FLUSH < chunks ? k0 + FLUSH : chunks;
    for (size_t off = k0 * CHUNK; off < k1 * CHUNK; off += CHUNK) {
      const __m256i lo = LOAD(a, off), hi = LOAD(a, off + 32);
      ACC(c0, lo, hi, b, off);
      ACC(c1, lo, hi, b1, off);
      ACC(c2, lo, hi, b2, off);
      ACC(c3, lo, hi, b3, off);
      ACC(c4, lo, hi, b4, off);
      ACC(c5, lo, hi, b5, off);
      ACC(c6, lo, hi, b6, off);
      ACC(c7, lo, hi, b7, off);
    }
    if (k1 == chunks) break;
    FLUSH_INTO(t[0], c0); FLUSH_INTO(t[1], c1); FLUSH_INTO(t[2], c2); FLUSH_INTO(t[3], c3);
    FLUSH_INTO(t[4], c4); FLUSH_INTO(t[5], c5); FLUSH_INTO(t[6], c6); FLUSH_INTO(t[7], c7);
  }
  finish4(c0, c1, c2, c3, t, k, y);
  finish4(c4, c5, c6, c7, t + 4, k, y + 4);
}

/* one a row against b rows b .. b + 3 rb */
static void tile_1x4(size_t chunks, size_t rb, const uint8_t *a, const uint8_t *b, int32_t k, int32_t *y) {
  LUT_CONSTANTS;
  const uint8_t *b1 = b + rb, *b2 = b + 2 * rb, *b3 = b + 3 * rb;
  __m256i c00 = zero, c01 = zero, c02 = zero, c03 = zero;
  int64_t t0[4] = {0, 0, 0, 0};
  for (size_t c0 = 0;; c0 += FLUSH) {
    const size_t c1 = c0 + FLUSH < chunks ? c0 + FLUSH : chunks;
    for (size_t off = c0 * CHUNK; off < c1 * CHUNK; off += CHUNK) {
      const __m256i l0 = LOAD(a, off), h0 = LOAD(a, off + 32);
      ACC(c00, l0, h0, b, off);
      ACC(c01, l0, h0, b1, off);
      ACC(c02, l0, h0, b2, off);
      ACC(c03, l0, h0, b3, off);
    }
    if (c1 == chunks) break;
    FLUSH_INTO(t0[0], c00); FLUSH_INTO(t0[1], c01); FLUSH_INTO(t0[2], c02); FLUSH_INTO(t0[3], c03);
  }
  finish4(c00, c01, c02, c03, t0, k, y);
}

static int32_t pair(size_t rb, const uint8_t *a, const uint8_t *b, int32_t k) {
  int64_t pop = 0;
  for (size_t i = 0; i < rb; i += 8) {
    uint64_t x, z;
    __builtin_memcpy(&x, a + i, 8);
    __builtin_memcpy(&z, b + i, 8);
    pop += _mm_popcnt_u64(x ^ z);
  }
  return k - 2 * (int32_t)pop;
}

void fixq_bgemm__avx2(size_t m, size_t n, size_t chunks, const uint8_t *a, const uint8_t *b, int32_t k,
                      int32_t *y) {
  const size_t rb = chunks * CHUNK, n8 = n / 8 * 8, n4 = n / 4 * 4;
  size_t nb = L1_BYTES / rb / 8 * 8;
  if (nb < 8) nb = 8;
  for (size_t j0 = 0; j0 < n8; j0 += nb) {
    const size_t j1 = j0 + nb < n8 ? j0 + nb : n8;
    for (size_t i = 0; i < m; i++)
      for (size_t j = j0; j < j1; j += 8) tile_1x8(chunks, rb, a + i * rb, b + j * rb, k, y + i * n + j);
  }
  for (size_t i = 0; i < m; i++) {
    if (n4 > n8) tile_1x4(chunks, rb, a + i * rb, b + n8 * rb, k, y + i * n + n8);
    for (size_t j = n4; j < n; j++) y[i * n + j] = pair(rb, a + i * rb, b + j * rb, k);
  }
}
