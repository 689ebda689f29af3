/* The C plan's 1x1 convolution of few output channels with XNNPACK's fp32 output stage on AVX-512 VNNI
 * (engine_pw.h).  fixq's GEMM pads each tile's columns to 16 and requantizes tile by tile, so at 8 or 24
 * output channels half or a third of every output-stage vector idles; here the direct tile
 * (fixq_qgemm_direct__avx512vnni) writes its accumulators with y's own row length, and the output stage runs
 * over the block as one flat run of int32, 16 a vector, the lanes' channels given by where the run starts. */
#include <immintrin.h>

#include "engine_pw.h"

#define NR FIXQ_GEMM_NR
#define MR FIXQ__VNNI_MR
#define BLOCK 2048 /* accumulators a block (8 KB: stays in L1 with x's rows and y's) */

/* The channel parameters of XNNPACK's fp32 stage for lane i: channel i % n, i < n + 16 */
typedef struct {
  float scale[FIXQ_ENG_PW_MAX_N + NR], lo[FIXQ_ENG_PW_MAX_N + NR], hi[FIXQ_ENG_PW_MAX_N + NR];
  int32_t zp[FIXQ_ENG_PW_MAX_N + NR];
} pw_stage;

/* fixq__requant_fp32 on 16 accumulators of channels c0.. (params at c0): (float)acc * scale (the conversion
 * rounds to nearest even as C's), clamped to [qmin - zp, qmax - zp] in float, rounded half to even (the
 * clamped value is below 2^16 in magnitude, where the conversion's rounding is fixq__round_even_small's), plus
 * zp: a value inside [qmin, qmax] */
static inline __m512i stage16(const pw_stage *P, size_t c0, __m512i acc) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(P->scale + c0));
  f = _mm512_min_ps(_mm512_max_ps(f, _mm512_loadu_ps(P->lo + c0)), _mm512_loadu_ps(P->hi + c0));
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                          _mm512_loadu_si512(P->zp + c0));
}

/* The channel after 16 more accumulators */
static inline size_t next16(size_t c0, size_t step, size_t n) {
  c0 += step;
  return c0 >= n ? c0 - n : c0;
}

void fixq_eng_pw_fp32__avx512vnni(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                                  const int32_t *bias, const fixq_requant *rq, size_t rq_channels, uint8_t *y) {
  const size_t k = b->k, n = b->n, np = (n + NR - 1) / NR, step = NR % n;
  int32_t col_term[FIXQ_ENG_PW_MAX_N + NR] __attribute__((aligned(64)));
  int32_t acc[BLOCK + 3 * NR] __attribute__((aligned(64))); /* the tile's last row writes 16 np - n past it */
  pw_stage P;
  /* qgemm.c's column terms without B zero points: bias - (a_zp' + 128) col_sum (the tile multiplies a' + 128),
   * a_zp' + 128 being a_zp for uint8 (a' = a - 128) and a_zp + 128 for int8, modulo 2^32 */
  const uint32_t col_mult = (uint32_t)a_zp + (dt == FIXQ_INT8 ? 128u : 0u);
  for (size_t j = 0; j < np * NR; j++)
    col_term[j] = j < n ? (int32_t)((bias != NULL ? (uint32_t)bias[j] : 0u) - col_mult * (uint32_t)b->col_sum[j]) : 0;
  const size_t per_channel = rq_channels != 1;
  for (size_t i = 0; i < n; i++) {
    const int32_t zp = rq->zero_point[per_channel * i];
    P.scale[i] = rq->scale[per_channel * i];
    P.lo[i] = (float)(rq->qmin - zp);
    P.hi[i] = (float)(rq->qmax - zp);
    P.zp[i] = zp;
  }
  for (size_t i = n; i < n + NR; i++)
    P.scale[i] = P.scale[i - n], P.lo[i] = P.lo[i - n], P.hi[i] = P.hi[i - n], P.zp[i] = P.zp[i - n];
  const size_t rows_block = BLOCK / n / MR * MR;
  for (size_t m0 = 0; m0 < m; m0 += rows_block) {
    const size_t rows = m - m0 < rows_block ? m - m0 : rows_block, total = rows * n;
    for (size_t r = 0; r < rows; r += MR)
      fixq_qgemm_direct__avx512vnni(rows - r < MR ? rows - r : MR, np, k, x + (m0 + r) * k, k, dt, b->panels,
                                    acc + r * n, n, col_term);
    uint8_t *yb = y + m0 * n;
    size_t i = 0, c0 = 0; /* c0: the channel of accumulator i (the block starts at a pixel) */
    /* 64 outputs a step packed to bytes by saturating packs (exact: every value is inside the dtype), whose
     * 128-bit lanes interleave the 4 vectors' dwords, put back in order by one vpermd */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (; i + 4 * NR <= total; i += 4 * NR) {
      __m512i q[4];
      for (int j = 0; j < 4; j++) q[j] = stage16(&P, c0, _mm512_load_si512(acc + i + j * NR)), c0 = next16(c0, step, n);
      const __m512i lo = _mm512_packs_epi32(q[0], q[1]), hi = _mm512_packs_epi32(q[2], q[3]);
      const __m512i bytes = dt == FIXQ_UINT8 ? _mm512_packus_epi16(lo, hi) : _mm512_packs_epi16(lo, hi);
      _mm512_storeu_si512(yb + i, _mm512_permutexvar_epi32(order, bytes));
    }
    for (; i < total; i += NR, c0 = next16(c0, step, n)) { /* the low byte of each value is it, int8 or uint8 */
      const __mmask16 left = total - i >= NR ? (__mmask16)0xFFFF : (__mmask16)((1u << (total - i)) - 1);
      _mm512_mask_cvtepi32_storeu_epi8(yb + i, left, stage16(&P, c0, _mm512_maskz_loadu_epi32(left, acc + i)));
    }
  }
}
