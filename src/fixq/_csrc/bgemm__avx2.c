/* XOR-popcount GEMM, AVX2: bit-identical to bgemm__scalar.c (integer counts).
 * Operands come as nibble planes (fixq_bgemm_pack): per 256-bit chunk, the 32
 * low nibbles then the 32 high nibbles, so the lookup popcount (vpshufb on
 * each half-byte, Mula, Kurz & Lemire "Faster population counts using AVX2
 * instructions") needs no shifts or masks: per pair and chunk, two XORs, two
 * vpshufb and two byte adds.  Byte counts are summed for up to 31 chunks
 * (2 * 4 * 31 < 256) and then widened with vpsadbw.  A 1 x 8 tile of (a row,
 * b row) pairs keeps its 8 byte counters and the a chunk in registers and
 * reads b from L1 (b rows in L1-sized blocks, reused across an L2-sized block
 * of a rows).  Columns
 * beyond a multiple of 8 use a 1 x 4 tile, then popcnt. */
#include <immintrin.h>

#include "fixq_internal.h"

#define FLUSH 31
#define L1_BYTES 16384
#define L2_BYTES 131072
#define CHUNK 64 /* bytes of one 256-bit chunk in plane layout */

/* tot[0..3] += the sums of the byte counters s0..s3 */
static inline __attribute__((always_inline)) void add_sums4(__m256i s0, __m256i s1, __m256i s2, __m256i s3,
                                                            int64_t *tot) {
  const __m256i zero = _mm256_setzero_si256();
  s0 = _mm256_sad_epu8(s0, zero);
  s1 = _mm256_sad_epu8(s1, zero);
  s2 = _mm256_sad_epu8(s2, zero);
  s3 = _mm256_sad_epu8(s3, zero);
  const __m256i t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(s0, s1), _mm256_unpackhi_epi64(s0, s1));
  const __m256i t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(s2, s3), _mm256_unpackhi_epi64(s2, s3));
  const __m256i t = _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20),
                                     _mm256_permute2x128_si256(t01, t23, 0x31));
  _mm256_storeu_si256((__m256i *)tot, _mm256_add_epi64(t, _mm256_loadu_si256((const __m256i *)tot)));
}

#define LUT_CONSTANTS                                                                                        \
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, \
                                       1, 2, 2, 3, 2, 3, 3, 4);                                              \
  const __m256i zero = _mm256_setzero_si256()
#define LOAD(p, off) _mm256_loadu_si256((const __m256i *)((p) + (off)))
/* acc += popcount bytes of the chunk at offset off of b row p against a's planes lo/hi:
 * xor, nibble lookup, add, twice.  One asm block per pair fixes this order, so the 8
 * counters, a's two planes, the table and two temporaries all stay in registers (GCC 12
 * otherwise hoists the loads and spills counters). */
#define ACC(acc, lo, hi, p, off)                                                                    \
  do {                                                                                              \
    __m256i t1_, t2_;                                                                               \
    __asm__("vpxor %[m0], %[l], %[t1]\n\t"                                                          \
            "vpshufb %[t1], %[lut], %[t1]\n\t"                                                      \
            "vpxor %[m1], %[h], %[t2]\n\t"                                                          \
            "vpshufb %[t2], %[lut], %[t2]\n\t"                                                      \
            "vpaddb %[t1], %[s], %[s]\n\t"                                                      \
            "vpaddb %[t2], %[s], %[s]"                                                          \
            : [s] "+x"(acc), [t1] "=&x"(t1_), [t2] "=&x"(t2_)                                       \
            : [l] "x"(lo), [h] "x"(hi), [lut] "x"(lut), [m0] "m"(*(const __m256i *)((p) + (off))), \
              [m1] "m"(*(const __m256i *)((p) + (off) + 32)));                                      \
  } while (0)

/* tot[0..7] += popcount(a ^ b row j) over chunks [c0, c1) (at most FLUSH), b rows rb bytes apart.
 * The byte counters live only inside this block, so they stay in registers. */
static inline __attribute__((always_inline)) void block_1x8(size_t c0, size_t c1, size_t rb, const uint8_t *a,
                                                            const uint8_t *b, int64_t *tot) {
  LUT_CONSTANTS;
  const uint8_t *b1 = b + rb, *b2 = b + 2 * rb, *b3 = b + 3 * rb, *b4 = b + 4 * rb, *b5 = b + 5 * rb,
                *b6 = b + 6 * rb, *b7 = b + 7 * rb;
  __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero, s5 = zero, s6 = zero, s7 = zero;
  for (size_t off = c0 * CHUNK; off < c1 * CHUNK; off += CHUNK) {
    const __m256i lo = LOAD(a, off), hi = LOAD(a, off + 32);
    ACC(s0, lo, hi, b, off);
    ACC(s1, lo, hi, b1, off);
    ACC(s2, lo, hi, b2, off);
    ACC(s3, lo, hi, b3, off);
    ACC(s4, lo, hi, b4, off);
    ACC(s5, lo, hi, b5, off);
    ACC(s6, lo, hi, b6, off);
    ACC(s7, lo, hi, b7, off);
  }
  add_sums4(s0, s1, s2, s3, tot);
  add_sums4(s4, s5, s6, s7, tot + 4);
}

static inline __attribute__((always_inline)) void block_1x4(size_t c0, size_t c1, size_t rb, const uint8_t *a,
                                                            const uint8_t *b, int64_t *tot) {
  LUT_CONSTANTS;
  const uint8_t *b1 = b + rb, *b2 = b + 2 * rb, *b3 = b + 3 * rb;
  __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
  for (size_t off = c0 * CHUNK; off < c1 * CHUNK; off += CHUNK) {
    const __m256i lo = LOAD(a, off), hi = LOAD(a, off + 32);
    ACC(s0, lo, hi, b, off);
    ACC(s1, lo, hi, b1, off);
    ACC(s2, lo, hi, b2, off);
    ACC(s3, lo, hi, b3, off);
  }
  add_sums4(s0, s1, s2, s3, tot);
}

/* y[0 .. w) for one a row against w (8 or 4) b rows */
static void tile(int w, size_t chunks, size_t rb, const uint8_t *a, const uint8_t *b, int32_t k, int32_t *y) {
  int64_t tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t c0 = 0; c0 < chunks; c0 += FLUSH) {
    const size_t c1 = c0 + FLUSH < chunks ? c0 + FLUSH : chunks;
    if (w == 8)
      block_1x8(c0, c1, rb, a, b, tot);
    else
      block_1x4(c0, c1, rb, a, b, tot);
  }
  /* y = k - 2 * tot; totals are < 2^31, so the low 32 bits of each int64 lane */
  const __m256i lo32 = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0), kk = _mm256_set1_epi32(k);
  for (int j = 0; j < w; j += 4) {
    const __m128i t = _mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(tot + j)), lo32));
    _mm_storeu_si128((__m128i *)(y + j), _mm_sub_epi32(_mm256_castsi256_si128(kk), _mm_add_epi32(t, t)));
  }
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
  /* a in L2-sized row blocks; within one, b in L1-sized blocks of 8-row tiles */
  size_t mb = L2_BYTES / rb, nb = L1_BYTES / rb / 8 * 8;
  if (mb < 1) mb = 1;
  if (nb < 8) nb = 8;
  for (size_t i0 = 0; i0 < m; i0 += mb) {
    const size_t i1 = i0 + mb < m ? i0 + mb : m;
    for (size_t j0 = 0; j0 < n8; j0 += nb) {
      const size_t j1 = j0 + nb < n8 ? j0 + nb : n8;
      for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j += 8) tile(8, chunks, rb, a + i * rb, b + j * rb, k, y + i * n + j);
    }
  }
  for (size_t i = 0; i < m; i++) {
    if (n4 > n8) tile(4, chunks, rb, a + i * rb, b + n8 * rb, k, y + i * n + n8);
    for (size_t j = n4; j < n; j++) y[i * n + j] = pair(rb, a + i * rb, b + j * rb, k);
  }
}
