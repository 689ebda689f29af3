/* AVX-512 VNNI GEMM micro-kernel and A packing, bit-identical to
 * qgemm_s8__scalar.c.
 *
 * vpdpbusd multiplies unsigned bytes by signed bytes and adds each group of 4
 * products to an int32 lane, wrapping modulo 2^32 with no intermediate
 * saturation, so it is exact for every b' (-128 included: one kernel serves
 * FIXQ_GEMM_S8 and FIXQ_GEMM_S16).  A is packed as u8 = a' + 128 (= a' ^ 0x80);
 * the driver subtracts 128 * sum_k b' through col_term (qgemm.c, a_offset).
 * One 16-column group of 4 k values of a B panel is exactly one zmm.
 * Tile: up to MR = 8 rows x NP = 3 panels (24 zmm accumulators). */
#include <immintrin.h>
#include <string.h>

#include "fixq_floatops.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MR FIXQ__VNNI_MR
#define NP FIXQ__VNNI_NP
#define NR FIXQ_GEMM_NR

ALWAYS_INLINE __m512i bcast32(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

/* c = acc + col_term - b_zp * row_sum[r] for 16 columns */
ALWAYS_INLINE void finish16(__m512i acc, int32_t *c, const int32_t *row_sum, size_t r, const int32_t *b_zp,
                            const int32_t *col_term) {
  acc = _mm512_add_epi32(acc, _mm512_loadu_si512(col_term));
  if (row_sum != NULL)
    acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_loadu_si512(b_zp), _mm512_set1_epi32(row_sum[r])));
  _mm512_storeu_si512(c, acc);
}

/* rows x np tile over kq groups of 4 k; the np panels lie kq * 64 bytes apart. */
ALWAYS_INLINE void tile(const size_t rows, const size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                        size_t ldc, const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  __m512i acc[MR][NP];
  for (size_t r = 0; r < rows; r++)
    for (size_t p = 0; p < np; p++) acc[r][p] = _mm512_setzero_si512();
  const size_t ps = kq * NR * 4;
  for (size_t q = 0; q < kq; q++, a += rows * 4, b += NR * 4) {
    __m512i w[NP];
    for (size_t p = 0; p < np; p++) w[p] = _mm512_loadu_si512(b + p * ps);
    for (size_t r = 0; r < rows; r++) {
      const __m512i x = bcast32(a + r * 4);
      for (size_t p = 0; p < np; p++) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], x, w[p]);
    }
  }
  for (size_t r = 0; r < rows; r++)
    for (size_t p = 0; p < np; p++)
      finish16(acc[r][p], c + r * ldc + p * NR, row_sum, r, b_zp + p * NR, col_term + p * NR);
}

/* One row (GEMV, bound by reading B): the np panels side by side, so that
 * one broadcast of A serves np loads of B (np + 1 loads per np * 64 bytes),
 * with two accumulators a panel (q even / odd) so that the chains do not
 * wait on vpdpbusd's latency. */
ALWAYS_INLINE void row1_np(const size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term) {
  const size_t ps = kq * NR * 4;
  __m512i e[NP], o[NP];
  for (size_t p = 0; p < np; p++) e[p] = o[p] = _mm512_setzero_si512();
  size_t q = 0;
  for (; q + 2 <= kq; q += 2, a += 8, b += 2 * NR * 4) {
    const __m512i x0 = bcast32(a), x1 = bcast32(a + 4);
    for (size_t p = 0; p < np; p++) {
      e[p] = _mm512_dpbusd_epi32(e[p], x0, _mm512_loadu_si512(b + p * ps));
      o[p] = _mm512_dpbusd_epi32(o[p], x1, _mm512_loadu_si512(b + p * ps + NR * 4));
    }
  }
  if (q < kq) {
    const __m512i x0 = bcast32(a);
    for (size_t p = 0; p < np; p++) e[p] = _mm512_dpbusd_epi32(e[p], x0, _mm512_loadu_si512(b + p * ps));
  }
  for (size_t p = 0; p < np; p++)
    finish16(_mm512_add_epi32(e[p], o[p]), c + p * NR, row_sum, 0, b_zp + p * NR, col_term + p * NR);
}

static void row1(size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c, const int32_t *row_sum,
                 const int32_t *b_zp, const int32_t *col_term) {
  if (np == 1) row1_np(1, kq, a, b, c, row_sum, b_zp, col_term);
  else if (np == 2) row1_np(2, kq, a, b, c, row_sum, b_zp, col_term);
  else row1_np(3, kq, a, b, c, row_sum, b_zp, col_term);
}

/* ---- the full 8-row tiles ------------------------------------------------------
 * Inline asm: with intrinsics GCC copies every accumulator through a spare
 * register around each vpdpbusd and spills some of them.  zmm(np * r + p):
 * accumulator of row r, panel p; zmm24-26 the panels' groups, zmm27 the
 * broadcast record.  The accumulators go to acc[r][p * 16 + j]. */
#define ZERO(i) "vpxord %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define SAVE(i) "vmovdqa64 %%zmm" #i ", " #i "*64(%[acc])\n\t"
#define BCAST(r) "vpbroadcastd " #r "*4(%[a]), %%zmm27\n\t"
#define DP(w, i) "vpdpbusd %%zmm" #w ", %%zmm27, %%zmm" #i "\n\t"
#define CLOBBERS                                                                                              \
  "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",     \
      "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21",      \
      "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27"

static void tile8x3(size_t kq, const uint8_t *a, const int8_t *b, int32_t *acc) {
  const size_t ps = kq * NR * 4;
  __asm__ volatile(
      ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7) ZERO(8) ZERO(9) ZERO(10) ZERO(11)
      ZERO(12) ZERO(13) ZERO(14) ZERO(15) ZERO(16) ZERO(17) ZERO(18) ZERO(19) ZERO(20) ZERO(21) ZERO(22) ZERO(23)
      "test %[kq], %[kq]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n"
      "1:\n\t"
      "vmovdqu64 (%[b]), %%zmm24\n\t"
      "vmovdqu64 (%[b],%[ps]), %%zmm25\n\t"
      "vmovdqu64 (%[b],%[ps],2), %%zmm26\n\t"
      BCAST(0) DP(24, 0) DP(25, 1) DP(26, 2)
      BCAST(1) DP(24, 3) DP(25, 4) DP(26, 5)
      BCAST(2) DP(24, 6) DP(25, 7) DP(26, 8)
      BCAST(3) DP(24, 9) DP(25, 10) DP(26, 11)
      BCAST(4) DP(24, 12) DP(25, 13) DP(26, 14)
      BCAST(5) DP(24, 15) DP(25, 16) DP(26, 17)
      BCAST(6) DP(24, 18) DP(25, 19) DP(26, 20)
      BCAST(7) DP(24, 21) DP(25, 22) DP(26, 23)
      "add $32, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[kq]\n\t"
      "jnz 1b\n"
      "2:\n\t"
      SAVE(0) SAVE(1) SAVE(2) SAVE(3) SAVE(4) SAVE(5) SAVE(6) SAVE(7) SAVE(8) SAVE(9) SAVE(10) SAVE(11)
      SAVE(12) SAVE(13) SAVE(14) SAVE(15) SAVE(16) SAVE(17) SAVE(18) SAVE(19) SAVE(20) SAVE(21) SAVE(22) SAVE(23)
      : [a] "+r"(a), [b] "+r"(b), [kq] "+r"(kq)
      : [acc] "r"(acc), [ps] "r"(ps)
      : CLOBBERS);
}

static void tile8x2(size_t kq, const uint8_t *a, const int8_t *b, int32_t *acc) {
  const size_t ps = kq * NR * 4;
  __asm__ volatile(
      ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7) ZERO(8) ZERO(9) ZERO(10) ZERO(11)
      ZERO(12) ZERO(13) ZERO(14) ZERO(15)
      "test %[kq], %[kq]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n"
      "1:\n\t"
      "vmovdqu64 (%[b]), %%zmm24\n\t"
      "vmovdqu64 (%[b],%[ps]), %%zmm25\n\t"
      BCAST(0) DP(24, 0) DP(25, 1)
      BCAST(1) DP(24, 2) DP(25, 3)
      BCAST(2) DP(24, 4) DP(25, 5)
      BCAST(3) DP(24, 6) DP(25, 7)
      BCAST(4) DP(24, 8) DP(25, 9)
      BCAST(5) DP(24, 10) DP(25, 11)
      BCAST(6) DP(24, 12) DP(25, 13)
      BCAST(7) DP(24, 14) DP(25, 15)
      "add $32, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[kq]\n\t"
      "jnz 1b\n"
      "2:\n\t"
      SAVE(0) SAVE(1) SAVE(2) SAVE(3) SAVE(4) SAVE(5) SAVE(6) SAVE(7) SAVE(8) SAVE(9) SAVE(10) SAVE(11)
      SAVE(12) SAVE(13) SAVE(14) SAVE(15)
      : [a] "+r"(a), [b] "+r"(b), [kq] "+r"(kq)
      : [acc] "r"(acc), [ps] "r"(ps)
      : CLOBBERS);
}

static void tile8x1(size_t kq, const uint8_t *a, const int8_t *b, int32_t *acc) {
  __asm__ volatile(
      ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
      "test %[kq], %[kq]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n"
      "1:\n\t"
      "vmovdqu64 (%[b]), %%zmm24\n\t"
      BCAST(0) DP(24, 0)
      BCAST(1) DP(24, 1)
      BCAST(2) DP(24, 2)
      BCAST(3) DP(24, 3)
      BCAST(4) DP(24, 4)
      BCAST(5) DP(24, 5)
      BCAST(6) DP(24, 6)
      BCAST(7) DP(24, 7)
      "add $32, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[kq]\n\t"
      "jnz 1b\n"
      "2:\n\t"
      SAVE(0) SAVE(1) SAVE(2) SAVE(3) SAVE(4) SAVE(5) SAVE(6) SAVE(7)
      : [a] "+r"(a), [b] "+r"(b), [kq] "+r"(kq)
      : [acc] "r"(acc)
      : CLOBBERS);
}

void fixq_qgemm_s8__avx512vnni(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                               size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                               const int32_t *col_term) {
  (void)row_neg; /* u8 records need no sign correction */
  if (mr == MR) {
    int32_t acc[MR * NP * NR] __attribute__((aligned(64)));
    if (np == 1) tile8x1(kq, a, b, acc);
    else if (np == 2) tile8x2(kq, a, b, acc);
    else tile8x3(kq, a, b, acc);
    for (size_t r = 0; r < MR; r++)
      for (size_t p = 0; p < np; p++)
        finish16(_mm512_load_si512(acc + (r * np + p) * NR), c + r * ldc + p * NR, row_sum, r, b_zp + p * NR,
                 col_term + p * NR);
    return;
  }
  switch (mr) {
    case 1: row1(np, kq, a, b, c, row_sum, b_zp, col_term); break;
#define EDGE(rows)                                                                 \
  case rows:                                                                       \
    if (np == 1) tile(rows, 1, kq, a, b, c, ldc, row_sum, b_zp, col_term);         \
    else if (np == 2) tile(rows, 2, kq, a, b, c, ldc, row_sum, b_zp, col_term);    \
    else tile(rows, 3, kq, a, b, c, ldc, row_sum, b_zp, col_term);                 \
    break;
    EDGE(2)
    EDGE(3)
    EDGE(4)
    EDGE(5)
    EDGE(6)
    default: EDGE(7)
#undef EDGE
  }
}

/* ---- A read in place ------------------------------------------------------------
 * fixq_qgemm_direct__avx512vnni: the records of `tile` made from the rows of A
 * themselves, each 4 bytes broadcast as they lie (uint8: a' + 128 = a) or
 * with 0x80 flipped (int8: a' + 128 = a ^ 0x80); the last group of a k that
 * is not a multiple of 4 takes its bytes alone (the panels hold zeros past k,
 * so the bytes above them add nothing), never reading past the row. */
ALWAYS_INLINE __m512i bcast_tail(const uint8_t *p, size_t n, int back) {
  uint32_t v;
  if (back) { /* the 4 bytes ending at p + n, inside the row: no partial store to forward from */
    memcpy(&v, p + n - 4, 4);
    v >>= 8 * (4 - n);
  } else {
    v = p[0] | (n > 1 ? (uint32_t)p[1] << 8 : 0) | (n > 2 ? (uint32_t)p[2] << 16 : 0);
  }
  return _mm512_set1_epi32((int32_t)v);
}

ALWAYS_INLINE void direct_tile(const size_t rows, const size_t np, const int halves, size_t k, const uint8_t *a,
                               size_t lda, __m512i flip, const int8_t *b, int32_t *c, size_t ldc,
                               const int32_t *col_term) {
  __m512i acc[MR][NP];
#pragma GCC unroll 3
  for (size_t p = 0; p < np; p++) {
    const __m512i ct = _mm512_loadu_si512(col_term + p * NR);
#pragma GCC unroll 8
    for (size_t r = 0; r < rows; r++) acc[r][p] = ct;
  }
  const size_t ps = (k + 3) / 4 * NR * 4, full = k / 4;
  for (size_t q = 0; q < full; q++, a += 4, b += NR * 4) {
    __m512i w[NP];
#pragma GCC unroll 3
    for (size_t p = 0; p < np; p++) w[p] = _mm512_loadu_si512(b + p * ps);
#pragma GCC unroll 8
    for (size_t r = 0; r < rows; r++) {
      const __m512i x = _mm512_xor_si512(bcast32(a + r * lda), flip);
#pragma GCC unroll 3
      for (size_t p = 0; p < np; p++) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], x, w[p]);
    }
  }
  if (k % 4) {
    __m512i w[NP];
#pragma GCC unroll 3
    for (size_t p = 0; p < np; p++) w[p] = _mm512_loadu_si512(b + p * ps);
#pragma GCC unroll 8
    for (size_t r = 0; r < rows; r++) {
      const __m512i x = _mm512_xor_si512(bcast_tail(a + r * lda, k % 4, full > 0), flip);
#pragma GCC unroll 3
      for (size_t p = 0; p < np; p++) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], x, w[p]);
    }
  }
  if (halves) { /* rows of 16 np - 8 (engine_pw's y rows of 8, 24, 40 channels): 32-byte stores, which split no
                 * 64-byte line, and none past the row */
#pragma GCC unroll 8
    for (size_t r = 0; r < rows; r++)
#pragma GCC unroll 3
      for (size_t p = 0; p < np; p++) {
        _mm256_storeu_si256((__m256i *)(c + r * ldc + p * NR), _mm512_castsi512_si256(acc[r][p]));
        if (p + 1 < np)
          _mm256_storeu_si256((__m256i *)(c + r * ldc + p * NR + 8), _mm512_extracti64x4_epi64(acc[r][p], 1));
      }
    return;
  }
#pragma GCC unroll 8
  for (size_t r = 0; r < rows; r++)
#pragma GCC unroll 3
    for (size_t p = 0; p < np; p++)
      _mm512_storeu_si512(c + r * ldc + p * NR, acc[r][p]);
}

void fixq_qgemm_direct__avx512vnni(size_t mr, size_t np, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                   const int8_t *b, int32_t *c, size_t ldc, const int32_t *col_term) {
  const __m512i flip = _mm512_set1_epi32(a_dtype == FIXQ_INT8 ? (int32_t)0x80808080 : 0);
  const uint8_t *x = (const uint8_t *)a;
  switch (mr * 8 + np * 2 + (ldc % NR == NR / 2)) {
#define DIRECT(rows, n)                                                                  \
  case rows * 8 + n * 2: direct_tile(rows, n, 0, k, x, lda, flip, b, c, ldc, col_term); break; \
  case rows * 8 + n * 2 + 1: direct_tile(rows, n, 1, k, x, lda, flip, b, c, ldc, col_term); break;
#define DIRECT_ROWS(rows) DIRECT(rows, 1) DIRECT(rows, 2) DIRECT(rows, 3)
    DIRECT_ROWS(1)
    DIRECT_ROWS(2)
    DIRECT_ROWS(3)
    DIRECT_ROWS(4)
    DIRECT_ROWS(5)
    DIRECT_ROWS(6)
    DIRECT_ROWS(7)
    DIRECT_ROWS(8)
#undef DIRECT_ROWS
#undef DIRECT
    default: break;
  }
}

/* The full tile of a dynamic linear straight to float (fixq_floatops.h): the
 * accumulators from the tile's registers to y through the epilogue of
 * dynlinear__avx512vnni.c (the same operations, so the same bits), with no
 * int32 block in between. */
void fixq_qgemm_u8_f32__avx512vnni(size_t np, size_t kq, const uint8_t *a, const int8_t *b, size_t cols,
                                   const fixq__dyn_row *row, const int32_t *col_sum, const float *w_scale,
                                   const float *bias, const float *res, float *y, size_t ldy) {
  int32_t acc[MR * NP * NR] __attribute__((aligned(64)));
  if (np == 1) tile8x1(kq, a, b, acc);
  else if (np == 2) tile8x2(kq, a, b, acc);
  else tile8x3(kq, a, b, acc);
  for (size_t p = 0; p < np; p++) {
    const size_t j = p * NR;
    const __mmask16 k = cols - j >= NR ? (__mmask16)0xFFFF : (__mmask16)((1u << (cols - j)) - 1);
    const __m512i cs = _mm512_maskz_loadu_epi32(k, col_sum + j);
    const __m512 ws = _mm512_maskz_loadu_ps(k, w_scale + j), bs = _mm512_maskz_loadu_ps(k, bias + j);
    for (size_t r = 0; r < MR; r++) {
      const __m512i v = _mm512_sub_epi32(_mm512_load_si512(acc + (r * np + p) * NR),
                                         _mm512_mullo_epi32(_mm512_set1_epi32(row[r].zp), cs));
      const __m512 f = _mm512_cvt_roundepi32_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 sc = _mm512_mul_ps(_mm512_set1_ps(row[r].scale), ws);
      const __m512 o = _mm512_add_ps(_mm512_mul_ps(f, sc), bs);
      const __m512 sum = res != NULL ? _mm512_add_ps(o, _mm512_maskz_loadu_ps(k, res + r * ldy + j)) : o;
      _mm512_mask_storeu_ps(y + r * ldy + j, k, sum);
    }
  }
}

/* ---- packing A ---------------------------------------------------------------
 * Records of 4 bytes (u8 a' + 128 for 4 consecutive k, zeros past k): for
 * each q, `rows` records, record r at dst + (q * rows + r) * 4.  Eight rows x
 * 32 k at a time: an 8 x 8 transpose of 32-bit elements. */
ALWAYS_INLINE void pack(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype, uint8_t *dst,
                        int32_t *row_sum) {
  const __m256i flip = _mm256_set1_epi8(a_dtype == FIXQ_INT8 ? (char)0x80 : 0), zero = _mm256_setzero_si256();
  const __mmask8 row_mask = (__mmask8)((1u << rows) - 1);
  __m256i sum[MR];
  for (size_t r = 0; r < MR; r++) sum[r] = zero;
  for (size_t k0 = 0; k0 < k; k0 += 32) {
    const __mmask32 km = k - k0 >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (k - k0)) - 1);
    __m256i x[MR];
    for (size_t r = 0; r < MR; r++) {
      x[r] = zero;
      if (r < rows) {
        x[r] = _mm256_maskz_mov_epi8(km, _mm256_xor_si256(
                   _mm256_maskz_loadu_epi8(km, (const uint8_t *)a + r * lda + k0), flip));
        if (row_sum != NULL) sum[r] = _mm256_add_epi64(sum[r], _mm256_sad_epu8(x[r], zero));
      }
    }
    if (rows == 1) { /* one row's records are its bytes in order, zeros up to k_padded */
      const size_t bytes = k - k0 >= 32 ? 32 : (k - k0 + 3) / 4 * 4;
      _mm256_mask_storeu_epi8(dst, bytes == 32 ? ~(__mmask32)0 : (__mmask32)((1u << bytes) - 1), x[0]);
      dst += bytes;
      continue;
    }
    /* quads (q) 0..7 of rows 0..7: transpose */
    const __m256i t0 = _mm256_unpacklo_epi32(x[0], x[1]), t1 = _mm256_unpackhi_epi32(x[0], x[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(x[2], x[3]), t3 = _mm256_unpackhi_epi32(x[2], x[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(x[4], x[5]), t5 = _mm256_unpackhi_epi32(x[4], x[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(x[6], x[7]), t7 = _mm256_unpackhi_epi32(x[6], x[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    __m256i quad[8];
    quad[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    quad[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    quad[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    quad[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    quad[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    quad[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    quad[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    quad[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
    const size_t nq = k - k0 >= 32 ? 8 : (k - k0 + 3) / 4;
    for (size_t q = 0; q < nq; q++, dst += rows * 4) _mm256_mask_storeu_epi32(dst, row_mask, quad[q]);
  }
  if (row_sum != NULL)
    for (size_t r = 0; r < rows; r++) {
      const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(sum[r]), _mm256_extracti128_si256(sum[r], 1));
      const int64_t total = _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
      row_sum[r] = (int32_t)(uint32_t)(uint64_t)(total - 128 * (int64_t)k); /* sum of a' */
    }
}

void fixq_qgemm_pack_a__avx512vnni(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                   fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg) {
  (void)kernel; /* one record format for both */
  (void)row_neg;
  if (row_sum != NULL)
    pack(rows, k, a, lda, a_dtype, dst, row_sum);
  else
    pack(rows, k, a, lda, a_dtype, dst, NULL); /* without the row sums */
}
