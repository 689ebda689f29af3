/* AVX2 GEMM micro-kernels and A packing, bit-identical to qgemm_s8__scalar.c.
 *
 * FIXQ_GEMM_S8 (every b' in [-127, 127]): vpmaddubsw(|a'|, b' ^ s) with the
 * sign mask s of a' (fixq_internal.h: pair sums stay inside int16, and the
 * per-row row_neg restores sum a' b'), then vpmaddwd(ones) + vpaddd, which
 * wrap modulo 2^32 like the scalar uint32 sums.  Four vector operations per
 * 32 multiply-adds, two of them on the multiply pipes.
 * FIXQ_GEMM_S16 (some b' == -128): b' widened to int16, vpmaddwd, exact.
 * Tiles: 16 rows x 48 columns (2 x 48 at a time), 4 x 16 where one panel is
 * left, 2 or 3 rows for the rest, one row over up to 3 panels side by side. */
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

/* c row r = acc (columns 0-7, 8-15) + fix + col_term - b_zp * row_sum[r] */
ALWAYS_INLINE void finish_row(__m256i lo, __m256i hi, int32_t fix, int32_t *c, size_t r, const int32_t *row_sum,
                              const int32_t *b_zp, const int32_t *col_term) { /* c: row r's start */
  const __m256i f = _mm256_set1_epi32(fix);
  lo = _mm256_add_epi32(lo, _mm256_add_epi32(f, _mm256_loadu_si256((const __m256i *)col_term)));
  hi = _mm256_add_epi32(hi, _mm256_add_epi32(f, _mm256_loadu_si256((const __m256i *)(col_term + 8))));
  if (row_sum != NULL) {
    const __m256i rs = _mm256_set1_epi32(row_sum[r]);
    lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)b_zp), rs));
    hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(b_zp + 8)), rs));
  }
  _mm256_storeu_si256((__m256i *)c, lo);
  _mm256_storeu_si256((__m256i *)(c + 8), hi);
}

/* ---- S8, 2 or 3 rows (GEMV and edges) ----------------------------------- */

#define S8_ROW(r, lo, hi)                                                                                    \
  do {                                                                                                       \
    const __m256i s = bcast32(a + (r) * 8), mag = bcast32(a + (r) * 8 + 4);                                  \
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_xor_si256(b0, s)), ones)); \
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_xor_si256(b1, s)), ones)); \
  } while (0)

ALWAYS_INLINE void s8_tile(const size_t rows, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c, size_t ldc,
                           const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i l0 = _mm256_setzero_si256(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0;
  for (size_t q = 0; q < kq; q++, a += rows * 8, b += NR * 4) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
    S8_ROW(0, l0, h0);
    if (rows > 1) S8_ROW(1, l1, h1);
    if (rows > 2) S8_ROW(2, l2, h2);
  }
  finish_row(l0, h0, row_neg[0], c, 0, row_sum, b_zp, col_term);
  if (rows > 1) finish_row(l1, h1, row_neg[1], c + ldc, 1, row_sum, b_zp, col_term);
  if (rows > 2) finish_row(l2, h2, row_neg[2], c + 2 * ldc, 2, row_sum, b_zp, col_term);
}

/* One row (GEMV, bound by reading B): the np panels side by side, so that
 * the two broadcasts of A serve np panels' 64 bytes of B. */
ALWAYS_INLINE void s8_row1(const size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t ps = kq * NR * 4;
  __m256i lo[3], hi[3];
  for (size_t p = 0; p < np; p++) lo[p] = hi[p] = _mm256_setzero_si256();
  for (size_t q = 0; q < kq; q++, a += 8, b += NR * 4) {
    const __m256i s = bcast32(a), mag = bcast32(a + 4);
    for (size_t p = 0; p < np; p++) {
      const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + p * ps));
      const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + p * ps + 32));
      lo[p] = _mm256_add_epi32(lo[p], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_xor_si256(b0, s)), ones));
      hi[p] = _mm256_add_epi32(hi[p], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_xor_si256(b1, s)), ones));
    }
  }
  for (size_t p = 0; p < np; p++)
    finish_row(lo[p], hi[p], row_neg[0], c + p * NR, 0, row_sum, b_zp + p * NR, col_term + p * NR);
}

/* ---- S8, the full 4 x 16 tile ----------------------------------------------
 * Inline asm: with intrinsics GCC keeps some of the 8 accumulators on the
 * stack.  ymm0-7 accumulators (rows 0-3 x columns 0-7 / 8-15), ymm8-9 B,
 * ymm10 int16 ones, ymm11 s, ymm12 |a'|, ymm13-14 products. */
#define S8_ASM_ROW(off, lo, hi)                    \
  "vpbroadcastd " #off "(%[a]), %%ymm11\n\t"       \
  "vpbroadcastd " #off "+4(%[a]), %%ymm12\n\t"     \
  "vpxor %%ymm11, %%ymm8, %%ymm13\n\t"             \
  "vpxor %%ymm11, %%ymm9, %%ymm14\n\t"             \
  "vpmaddubsw %%ymm13, %%ymm12, %%ymm13\n\t"       \
  "vpmaddubsw %%ymm14, %%ymm12, %%ymm14\n\t"       \
  "vpmaddwd %%ymm10, %%ymm13, %%ymm13\n\t"         \
  "vpmaddwd %%ymm10, %%ymm14, %%ymm14\n\t"         \
  "vpaddd %%ymm13, %%ymm" #lo ", %%ymm" #lo "\n\t" \
  "vpaddd %%ymm14, %%ymm" #hi ", %%ymm" #hi "\n\t"

static void s8_tile4(size_t kq, const uint8_t *a, const int8_t *b, int32_t *c, size_t ldc, const int32_t *row_sum,
                     const int32_t *row_neg, const int32_t *b_zp, const int32_t *col_term) {
  int32_t acc[MR * NR] __attribute__((aligned(32)));
  __asm__ volatile(
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"
      "vpxor %%ymm2, %%ymm2, %%ymm2\n\t"
      "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"
      "vpxor %%ymm4, %%ymm4, %%ymm4\n\t"
      "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"
      "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
      "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
      "vpcmpeqw %%ymm10, %%ymm10, %%ymm10\n\t"
      "vpsrlw $15, %%ymm10, %%ymm10\n\t"
      "test %[kq], %[kq]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n"
      "1:\n\t"
      "vmovdqu (%[b]), %%ymm8\n\t"
      "vmovdqu 32(%[b]), %%ymm9\n\t"
      S8_ASM_ROW(0, 0, 1)
      S8_ASM_ROW(8, 2, 3)
      S8_ASM_ROW(16, 4, 5)
      S8_ASM_ROW(24, 6, 7)
      "add $32, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[kq]\n\t"
      "jnz 1b\n"
      "2:\n\t"
      "vmovdqa %%ymm0, (%[acc])\n\t"
      "vmovdqa %%ymm1, 32(%[acc])\n\t"
      "vmovdqa %%ymm2, 64(%[acc])\n\t"
      "vmovdqa %%ymm3, 96(%[acc])\n\t"
      "vmovdqa %%ymm4, 128(%[acc])\n\t"
      "vmovdqa %%ymm5, 160(%[acc])\n\t"
      "vmovdqa %%ymm6, 192(%[acc])\n\t"
      "vmovdqa %%ymm7, 224(%[acc])\n\t"
      : [a] "+r"(a), [b] "+r"(b), [kq] "+r"(kq)
      : [acc] "r"(acc)
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14");
  for (size_t r = 0; r < MR; r++)
    finish_row(_mm256_load_si256((const __m256i *)(acc + NR * r)),
               _mm256_load_si256((const __m256i *)(acc + NR * r + 8)), row_neg[r], c + r * ldc, r, row_sum, b_zp,
               col_term);
}

/* ---- S8, up to 16 rows x 2 or 3 panels (M >= 4 and N > 16) ---------------
 * The rows come in groups of MR (4-row records, as the 4 x 16 tile reads
 * them), taken two rows at a time over all the tile's columns: 2 x 48 holds
 * 12 accumulators (ymm0-11) with ymm12 the product, ymm13 |a'|, ymm14 s and
 * ymm15 int16 ones, and B is the memory operand of the vpxor.  One broadcast
 * of s and one of |a'| serve 6 vectors of B (2 for the 4 x 16 tile), which
 * takes the kernel from ~204 to ~220 GOP/s with B in L1 on Zen4 (233 is both
 * multiply pipes busy); B held in registers instead measured 5% slower.  k
 * goes in chunks of KC quads, so each chunk of the panels (KC * 64 bytes
 * each) stays in L1 for all the row pairs; the accumulators wait in memory
 * between chunks. */
#define KC 64
#define S8_WIDE_VEC(src, acc)                  \
  "vpxor " src ", %%ymm14, %%ymm12\n\t"        \
  "vpmaddubsw %%ymm12, %%ymm13, %%ymm12\n\t"   \
  "vpmaddwd %%ymm15, %%ymm12, %%ymm12\n\t"     \
  "vpaddd %%ymm12, %%ymm" #acc ", %%ymm" #acc "\n\t"
#define S8_WIDE_BCAST(off)                     \
  "vpbroadcastd " #off "(%[a]), %%ymm14\n\t"   \
  "vpbroadcastd " #off "+4(%[a]), %%ymm13\n\t"
#define S8_WIDE_P2(c0, c1, c2, c3) \
  S8_WIDE_VEC("(%[b])", c0) S8_WIDE_VEC("32(%[b])", c1) S8_WIDE_VEC("(%[b],%[pb])", c2) S8_WIDE_VEC("32(%[b],%[pb])", c3)
#define S8_WIDE_P3(c0, c1, c2, c3, c4, c5) \
  S8_WIDE_P2(c0, c1, c2, c3) S8_WIDE_VEC("(%[b],%[pb],2)", c4) S8_WIDE_VEC("32(%[b],%[pb],2)", c5)
#define S8_LOAD(i) "vmovdqa " #i "*32(%[acc]), %%ymm" #i "\n\t"
#define S8_STORE(i) "vmovdqa %%ymm" #i ", " #i "*32(%[acc])\n\t"
#define S8_WIDE_LOOP(row0, row1) \
  "vpcmpeqw %%ymm15, %%ymm15, %%ymm15\n\t" \
  "vpsrlw $15, %%ymm15, %%ymm15\n\t"       \
  ".p2align 5\n"                           \
  "1:\n\t"                                 \
  S8_WIDE_BCAST(0) row0                    \
  S8_WIDE_BCAST(8) row1                    \
  "add $32, %[a]\n\t"                      \
  "add $64, %[b]\n\t"                      \
  "dec %[n]\n\t"                           \
  "jnz 1b\n\t"
#define S8_WIDE_CLOBBERS \
  "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm12", "xmm13", "xmm14", "xmm15"

/* acc (2 rows x 32 or 48 columns, row-major) += n quads of two rows of
 * records a (MR * 8 bytes a quad) times the panels b, b + pb (, b + 2 pb). */
static void s8_wide_p2(size_t n, const uint8_t *a, const int8_t *b, size_t pb, int32_t *acc) {
  __asm__ volatile(S8_LOAD(0) S8_LOAD(1) S8_LOAD(2) S8_LOAD(3) S8_LOAD(4) S8_LOAD(5) S8_LOAD(6) S8_LOAD(7)
                   S8_WIDE_LOOP(S8_WIDE_P2(0, 1, 2, 3), S8_WIDE_P2(4, 5, 6, 7))
                   S8_STORE(0) S8_STORE(1) S8_STORE(2) S8_STORE(3) S8_STORE(4) S8_STORE(5) S8_STORE(6) S8_STORE(7)
                   : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
                   : [acc] "r"(acc), [pb] "r"(pb)
                   : S8_WIDE_CLOBBERS);
}

static void s8_wide_p3(size_t n, const uint8_t *a, const int8_t *b, size_t pb, int32_t *acc) {
  __asm__ volatile(S8_LOAD(0) S8_LOAD(1) S8_LOAD(2) S8_LOAD(3) S8_LOAD(4) S8_LOAD(5) S8_LOAD(6) S8_LOAD(7)
                   S8_LOAD(8) S8_LOAD(9) S8_LOAD(10) S8_LOAD(11)
                   S8_WIDE_LOOP(S8_WIDE_P3(0, 1, 2, 3, 4, 5), S8_WIDE_P3(6, 7, 8, 9, 10, 11))
                   S8_STORE(0) S8_STORE(1) S8_STORE(2) S8_STORE(3) S8_STORE(4) S8_STORE(5) S8_STORE(6) S8_STORE(7)
                   S8_STORE(8) S8_STORE(9) S8_STORE(10) S8_STORE(11)
                   : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
                   : [acc] "r"(acc), [pb] "r"(pb)
                   : S8_WIDE_CLOBBERS);
}

/* rows (a multiple of MR, at most FIXQ__AVX2_MR) x np (2 or 3) panels */
ALWAYS_INLINE void s8_wide(const size_t np, size_t rows, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term) {
  const size_t pb = kq * NR * 4, ld = np * NR; /* pb: bytes from one panel to the next */
  int32_t acc[FIXQ__AVX2_MR * FIXQ__AVX2_NP * NR] __attribute__((aligned(32)));
  memset(acc, 0, rows * ld * sizeof(int32_t));
  for (size_t k0 = 0; k0 < kq; k0 += KC) {
    const size_t n = kq - k0 < KC ? kq - k0 : KC;
    for (size_t r = 0; r < rows; r += 2) { /* rows r, r + 1: group r / MR, at r % MR in its records */
      const uint8_t *ar = a + (r / MR * kq + k0) * MR * 8 + r % MR * 8;
      if (np == 3)
        s8_wide_p3(n, ar, b + k0 * NR * 4, pb, acc + r * ld);
      else
        s8_wide_p2(n, ar, b + k0 * NR * 4, pb, acc + r * ld);
    }
  }
  for (size_t r = 0; r < rows; r++)
    for (size_t p = 0; p < np; p++)
      finish_row(_mm256_load_si256((const __m256i *)(acc + r * ld + p * NR)),
                 _mm256_load_si256((const __m256i *)(acc + r * ld + p * NR + 8)), row_neg[r], c + r * ldc + p * NR,
                 r, row_sum, b_zp + p * NR, col_term + p * NR);
}

/* a: groups of MR rows (records of MR rows, kq * MR * 8 bytes each), then
 * the last mr % MR rows (records of that many rows). */
void fixq_qgemm_s8__avx2(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term) {
  const size_t full = mr / MR * MR, rest = mr - full, panel = kq * NR * 4;
#define RS(r) (row_sum != NULL ? row_sum + (r) : NULL)
  size_t p = 0;
  if (full > 0) {
    for (; p + 3 <= np; p += 3)
      s8_wide(3, full, kq, a, b + p * panel, c + p * NR, ldc, row_sum, row_neg, b_zp + p * NR, col_term + p * NR);
    if (p + 2 <= np) {
      s8_wide(2, full, kq, a, b + p * panel, c + p * NR, ldc, row_sum, row_neg, b_zp + p * NR, col_term + p * NR);
      p += 2;
    }
  }
  for (; p < np; p++)
    for (size_t r = 0; r < full; r += MR)
      s8_tile4(kq, a + r * kq * 8, b + p * panel, c + r * ldc + p * NR, ldc, RS(r), row_neg + r, b_zp + p * NR,
               col_term + p * NR);
  if (rest == 1) {
    const uint8_t *ar = a + full * kq * 8;
    for (p = 0; p + 3 <= np; p += 3)
      s8_row1(3, kq, ar, b + p * panel, c + full * ldc + p * NR, RS(full), row_neg + full, b_zp + p * NR,
              col_term + p * NR);
    if (np - p == 2)
      s8_row1(2, kq, ar, b + p * panel, c + full * ldc + p * NR, RS(full), row_neg + full, b_zp + p * NR,
              col_term + p * NR);
    else if (np - p == 1)
      s8_row1(1, kq, ar, b + p * panel, c + full * ldc + p * NR, RS(full), row_neg + full, b_zp + p * NR,
              col_term + p * NR);
  } else if (rest > 0) {
    const uint8_t *ar = a + full * kq * 8;
    for (p = 0; p < np; p++) {
      int32_t *cr = c + full * ldc + p * NR;
      const int8_t *bp = b + p * panel;
      if (rest == 2) s8_tile(2, kq, ar, bp, cr, ldc, RS(full), row_neg + full, b_zp + p * NR, col_term + p * NR);
      else s8_tile(3, kq, ar, bp, cr, ldc, RS(full), row_neg + full, b_zp + p * NR, col_term + p * NR);
    }
  }
#undef RS
}

/* ---- S16 ---------------------------------------------------------------------
 * Two rows at a time: 4 accumulators a row, each int32 lane holding the sum
 * over k pairs (0,1) or (2,3) of one column; hadd + permute put them back in
 * column order. */
ALWAYS_INLINE void s16_rows(const size_t rows, size_t r0, size_t mr, size_t kq, const uint8_t *a, const int8_t *b,
                            int32_t *c, size_t ldc, const int32_t *row_sum, const int32_t *b_zp,
                            const int32_t *col_term) {
  __m256i acc[2][4];
  for (size_t r = 0; r < rows; r++)
    for (size_t i = 0; i < 4; i++) acc[r][i] = _mm256_setzero_si256();
  a += r0 * 8;
  for (size_t q = 0; q < kq; q++, a += mr * 8, b += NR * 4) {
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
    finish_row(lo, hi, 0, c + (r0 + r) * ldc, r, row_sum != NULL ? row_sum + r0 : NULL, b_zp, col_term);
  }
}

void fixq_qgemm_s16__avx2(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                          size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                          const int32_t *col_term) {
  (void)row_neg; /* S16 multiplies a' itself */
  for (size_t p = 0; p < np; p++, b += kq * NR * 4, c += NR, b_zp += NR, col_term += NR) {
    for (size_t r0 = 0; r0 < mr; r0 += 2) {
      if (mr - r0 >= 2)
        s16_rows(2, r0, mr, kq, a, b, c, ldc, row_sum, b_zp, col_term);
      else
        s16_rows(1, r0, mr, kq, a, b, c, ldc, row_sum, b_zp, col_term);
    }
  }
}

/* ---- packing A (S8 records; S16 records come from the scalar packer) ------- */

/* Records of `rows` rows x nq <= 8 quads (32 k values of each row, already
 * a'), and the rows' sums of a' + 128 and of max(-a', 0). */
ALWAYS_INLINE void pack_s8_chunk(size_t rows, const __m256i x[MR], uint8_t *dst, size_t nq, __m256i *sum,
                                 __m256i *neg) { /* sum: NULL when the row sums are not needed */
  const __m256i zero = _mm256_setzero_si256(), bias = _mm256_set1_epi8((char)0x80);
  __m256i lo[MR], hi[MR];
  for (size_t r = 0; r < MR; r++) {
    const __m256i s = _mm256_cmpgt_epi8(zero, x[r]), m = _mm256_abs_epi8(x[r]);
    if (r < rows) {
      if (sum != NULL) sum[r] = _mm256_add_epi64(sum[r], _mm256_sad_epu8(_mm256_xor_si256(x[r], bias), zero));
      neg[r] = _mm256_add_epi64(neg[r], _mm256_sad_epu8(_mm256_and_si256(m, s), zero));
    }
    lo[r] = _mm256_unpacklo_epi32(s, m); /* records of quads 0, 1 | 4, 5 */
    hi[r] = _mm256_unpackhi_epi32(s, m); /* quads 2, 3 | 6, 7 */
  }
  if (rows == 1 && nq == 8) { /* one row: the records of quads 0-3 and 4-7 */
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo[0], hi[0], 0x20));
    _mm256_storeu_si256((__m256i *)dst + 1, _mm256_permute2x128_si256(lo[0], hi[0], 0x31));
    return;
  }
  const __m256i q04a = _mm256_unpacklo_epi64(lo[0], lo[1]), q04b = _mm256_unpacklo_epi64(lo[2], lo[3]);
  const __m256i q15a = _mm256_unpackhi_epi64(lo[0], lo[1]), q15b = _mm256_unpackhi_epi64(lo[2], lo[3]);
  const __m256i q26a = _mm256_unpacklo_epi64(hi[0], hi[1]), q26b = _mm256_unpacklo_epi64(hi[2], hi[3]);
  const __m256i q37a = _mm256_unpackhi_epi64(hi[0], hi[1]), q37b = _mm256_unpackhi_epi64(hi[2], hi[3]);
  __m256i quad[8];
  quad[0] = _mm256_permute2x128_si256(q04a, q04b, 0x20);
  quad[1] = _mm256_permute2x128_si256(q15a, q15b, 0x20);
  quad[2] = _mm256_permute2x128_si256(q26a, q26b, 0x20);
  quad[3] = _mm256_permute2x128_si256(q37a, q37b, 0x20);
  quad[4] = _mm256_permute2x128_si256(q04a, q04b, 0x31);
  quad[5] = _mm256_permute2x128_si256(q15a, q15b, 0x31);
  quad[6] = _mm256_permute2x128_si256(q26a, q26b, 0x31);
  quad[7] = _mm256_permute2x128_si256(q37a, q37b, 0x31);
  for (size_t q = 0; q < nq; q++) memcpy(dst + q * rows * 8, &quad[q], rows * 8);
}

/* Bytes p[0..n) (n < 32), zeros above, without reading past p + n: whole
 * dwords through a mask, the last 1-3 bytes blended in (no store to reload). */
ALWAYS_INLINE __m256i load_partial(const uint8_t *p, size_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), whole = _mm256_set1_epi32((int)(n / 4));
  __m256i x = _mm256_maskload_epi32((const int *)p, _mm256_cmpgt_epi32(whole, lane));
  const size_t rest = n % 4;
  if (rest) {
    const uint8_t *t = p + n - rest;
    const uint32_t w = t[0] | (rest > 1 ? (uint32_t)t[1] << 8 : 0) | (rest > 2 ? (uint32_t)t[2] << 16 : 0);
    x = _mm256_blendv_epi8(x, _mm256_set1_epi32((int)w), _mm256_cmpeq_epi32(whole, lane));
  }
  return x;
}

ALWAYS_INLINE int64_t hsum64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

/* rows is a constant in each instance: the arrays stay in registers. */
ALWAYS_INLINE void pack_s8(const size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype, uint8_t *dst,
                           int32_t *row_sum, int32_t *row_neg) {
  const __m256i flip = _mm256_set1_epi8(a_dtype == FIXQ_UINT8 ? (char)0x80 : 0);
  const size_t k_padded = (k + 3) / 4 * 4, chunk_bytes = 8 * rows * 8;
  const __m256i zero = _mm256_setzero_si256(); /* one by one: a loop here becomes a slow memset */
  __m256i sum[MR] = {zero, zero, zero, zero}, neg[MR] = {zero, zero, zero, zero}, x[MR] = {zero, zero, zero, zero};
  size_t k0 = 0;
  for (; k0 + 32 <= k; k0 += 32, dst += chunk_bytes) {
    for (size_t r = 0; r < rows; r++)
      x[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const uint8_t *)a + r * lda + k0)), flip);
    pack_s8_chunk(rows, x, dst, 8, row_sum != NULL ? sum : NULL, neg);
  }
  if (k0 < k_padded) { /* the rest (k - k0 < 32 values) zero-padded: a' = 0 adds nothing */
    const __m256i keep = _mm256_cmpgt_epi8(_mm256_set1_epi8((char)(k - k0)),
                                           _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                                            17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31));
    for (size_t r = 0; r < rows; r++)
      x[r] = _mm256_and_si256(_mm256_xor_si256(load_partial((const uint8_t *)a + r * lda + k0, k - k0), flip), keep);
    pack_s8_chunk(rows, x, dst, (k_padded - k0) / 4, row_sum != NULL ? sum : NULL, neg);
    k0 += 32;
  }
  /* each chunk added 128 per k value, padding included */
  for (size_t r = 0; r < rows; r++) {
    if (row_sum != NULL) row_sum[r] = (int32_t)(uint32_t)(uint64_t)(hsum64(sum[r]) - 128 * (int64_t)k0);
    row_neg[r] = (int32_t)(uint32_t)(uint64_t)hsum64(neg[r]);
  }
}

ALWAYS_INLINE void pack_rows(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype, uint8_t *dst,
                             int32_t *row_sum, int32_t *row_neg) {
  switch (rows) {
    case 1: pack_s8(1, k, a, lda, a_dtype, dst, row_sum, row_neg); break;
    case 2: pack_s8(2, k, a, lda, a_dtype, dst, row_sum, row_neg); break;
    case 3: pack_s8(3, k, a, lda, a_dtype, dst, row_sum, row_neg); break;
    default: pack_s8(MR, k, a, lda, a_dtype, dst, row_sum, row_neg); break;
  }
}

void fixq_qgemm_pack_a__avx2(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg) {
  if (kernel != FIXQ_GEMM_S8)
    fixq_qgemm_pack_a__scalar(rows, k, a, lda, a_dtype, kernel, dst, row_sum, row_neg);
  else
    for (size_t r = 0, kq = (k + 3) / 4; r < rows; r += MR) { /* groups of MR rows (fixq_qgemm_s8__avx2) */
      const size_t n = rows - r < MR ? rows - r : MR;
      const void *ar = (const char *)a + r * lda;
      if (row_sum == NULL)
        pack_rows(n, k, ar, lda, a_dtype, dst + r * kq * 8, NULL, row_neg + r); /* instances without the row sums */
      else
        pack_rows(n, k, ar, lda, a_dtype, dst + r * kq * 8, row_sum + r, row_neg + r);
    }
}

void fixq_qgemm_col_term__avx2(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                               const int32_t *col_sum, const int32_t *zp, const int32_t *bias, int32_t *col_term) {
  fixq__qgemm_col_term(ncols, n_bias, col_mult, zp_mult, col_sum, zp, bias, col_term);
}
