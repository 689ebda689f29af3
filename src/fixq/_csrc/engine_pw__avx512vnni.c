/* The C plan's 1x1 convolution of few output channels and the flat fp32 output stage on AVX-512 VNNI
 * (engine_pw.h).  fixq's GEMM pads each tile's columns to 16 and requantizes tile by tile, so at 8 or 24
 * output channels half or a third of every output-stage vector idles; here the direct tile
 * (fixq_qgemm_direct__avx512vnni) writes its accumulators with y's own row length, and the output stage runs
 * over the block as one flat run of int32, 16 a vector, the lanes' channels given by where the run starts. */
#include <immintrin.h>

#include "engine_pw.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NR FIXQ_GEMM_NR
#define MR FIXQ__VNNI_MR
#define BLOCK 2048 /* accumulators a block (8 KB: stays in L1 with x's rows and y's) */

/* XNNPACK's fp32 stage up to the int32 conversion on 16 accumulators of channels c.. (the conversion of acc
 * rounds to nearest even as C's; the embedded rounding of the other, half to even, is fixq__round_even_small's
 * below 2^16 in magnitude and saturates to INT32_MIN below -2^31) */
ALWAYS_INLINE __m512i scaled16(const float *scale, size_t c, __m512 max_less_zp, __m512i acc) {
  const __m512 f = _mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(scale + c)), max_less_zp);
  return _mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* 64 outputs (fewer where keep says) from channel c: two int16 packs with the zero point added, the byte pack,
 * the max with qmin, and one vpermd putting the packs' interleaved 128-bit lanes back in order */
ALWAYS_INLINE void stage64(const float *scale, size_t c, const int32_t *acc, uint8_t *y, __mmask64 keep,
                           __m512 max_less_zp, __m512i zp, __m512i qmin, const int u8) {
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m512i q[4];
  for (int j = 0; j < 4; j++)
    q[j] = scaled16(scale, c + 16 * j, max_less_zp,
                    _mm512_maskz_loadu_epi32((__mmask16)(keep >> 16 * j), acc + 16 * j));
  const __m512i lo = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp);
  const __m512i hi = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zp);
  const __m512i bytes = u8 ? _mm512_max_epu8(_mm512_packus_epi16(lo, hi), qmin)
                           : _mm512_max_epi8(_mm512_packs_epi16(lo, hi), qmin);
  _mm512_mask_storeu_epi8(y, keep, _mm512_permutexvar_epi32(order, bytes));
}

ALWAYS_INLINE void flat(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y, const int u8) {
  const size_t n = st->n, step4 = st->step4;
  const float *scale = st->scale;
  const __m512 max_less_zp = _mm512_set1_ps(st->max_less_zp);
  const __m512i zp = _mm512_set1_epi16((short)st->zp), qmin = _mm512_set1_epi8((char)st->qmin);
  size_t i = 0, c = 0;
  for (; i + 4 * NR <= total; i += 4 * NR, c = fixq__flat_wrap(c + step4, n))
    stage64(scale, c, acc + i, y + i, ~(__mmask64)0, max_less_zp, zp, qmin, u8);
  if (i < total) stage64(scale, c, acc + i, y + i, ((__mmask64)1 << (total - i)) - 1, max_less_zp, zp, qmin, u8);
}

void fixq_eng_flat__avx512vnni(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y) {
  if (st->dt == FIXQ_UINT8) flat(st, total, acc, y, 1);
  else flat(st, total, acc, y, 0);
}

void fixq_eng_pw_fp32__avx512vnni(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                                  const int32_t *bias, const fixq_eng_flat *st, uint8_t *y) {
  const size_t k = b->k, n = b->n, np = (n + NR - 1) / NR;
  int32_t col_term[FIXQ_ENG_PW_MAX_N + NR] __attribute__((aligned(64)));
  int32_t acc[BLOCK + NR] __attribute__((aligned(64))); /* the tile's last row writes up to 16 np - n past it */
  /* qgemm.c's column terms without B zero points: bias - (a_zp' + 128) col_sum (the tile multiplies a' + 128),
   * a_zp' + 128 being a_zp for uint8 (a' = a - 128) and a_zp + 128 for int8, modulo 2^32 */
  const uint32_t col_mult = (uint32_t)a_zp + (dt == FIXQ_INT8 ? 128u : 0u);
  for (size_t j = 0; j < np * NR; j++)
    col_term[j] = j < n ? (int32_t)((bias != NULL ? (uint32_t)bias[j] : 0u) - col_mult * (uint32_t)b->col_sum[j]) : 0;
  /* rows a block: a multiple of the tile's and, where the block holds that many, of 64 / gcd(n, 64), so that
   * every block of y starts 64-byte aligned with y (y's 64-byte stores then split no cache line where y is
   * aligned) */
  size_t g = 64, unit;
  while (n % g) g /= 2;
  unit = 64 / g < MR ? MR : 64 / g;
  if (unit * n > BLOCK) unit = MR;
  const size_t rows_block = BLOCK / n / unit * unit;
  for (size_t m0 = 0; m0 < m; m0 += rows_block) {
    const size_t rows = m - m0 < rows_block ? m - m0 : rows_block;
    for (size_t r = 0; r < rows; r += MR)
      fixq_qgemm_direct__avx512vnni(rows - r < MR ? rows - r : MR, np, k, x + (m0 + r) * k, k, dt, b->panels,
                                    acc + r * n, n, col_term);
    fixq_eng_flat__avx512vnni(st, rows * n, acc, y + m0 * n);
  }
}
