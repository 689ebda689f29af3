/* The depthwise step of channel multiplier 1 with its output stage in registers, AVX-512: the same bits as
 * the depthwise loop (engine_loops.h) followed by fixq_requantize_s32 (engine.c run_depthwise).
 *
 * (x - zp) w summed over the taps is sum x w - zp sum w (modulo 2^32, as numpy's int32): the zero point goes
 * into the bias once per call (bias' = bias - zp sum_t w), and the padding, which holds zp, still adds
 * (zp - zp) w = 0.  x and w as int16 make each product exact (|x w| <= 255 * 128) and vpdpwssd adds a pair
 * of taps into an int32 lane exactly (vpmaddwd and the add, wrapping, in one instruction).  Per block of 32
 * channels the weight pairs, bias' and the output stage's parameters are loaded once; every output pixel's 32
 * sums then go through requant16 and are stored as bytes, with no int32 map in between.  A 3x3 takes the map of
 * tap triples below instead where engine.c gives one (stride 1). */
#include "engine_loops.h"
#include "fixq_requant_avx512.h"

/* The 32 sums of one output pixel: pairs of taps (off: their offsets in the padded image, the odd last tap
 * paired with weight 0), channels as dw_block32 lays them out, then put back in order. */
ALWAYS_INLINE void dw_sums32(const uint8_t *px, const size_t *off, size_t pairs, const __m512i *wp, __mmask32 k,
                             int u8, __m512i *c0, __m512i *c1) {
  __m512i lo = _mm512_setzero_si512(), hi = lo;
  for (size_t p = 0; p < pairs; p++) {
    const __m256i ra = _mm256_maskz_loadu_epi8(k, px + off[2 * p]);
    const __m256i rb = _mm256_maskz_loadu_epi8(k, px + off[2 * p + 1]);
    const __m512i xa = u8 ? _mm512_cvtepu8_epi16(ra) : _mm512_cvtepi8_epi16(ra);
    const __m512i xb = u8 ? _mm512_cvtepu8_epi16(rb) : _mm512_cvtepi8_epi16(rb);
    lo = _mm512_dpwssd_epi32(lo, _mm512_unpacklo_epi16(xa, xb), wp[2 * p]);
    hi = _mm512_dpwssd_epi32(hi, _mm512_unpackhi_epi16(xa, xb), wp[2 * p + 1]);
  }
  /* lo: channels 0-3 | 8-11 | 16-19 | 24-27, hi: 4-7 | 12-15 | 20-23 | 28-31 */
  *c0 = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi);
  *c1 = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi);
}

/* Channels [o0, o0 + 32) of every output pixel of sample n (its padded image img); T taps (a constant where
 * the caller makes it one: the tap loop unrolls). */
ALWAYS_INLINE void dw_block_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t T, const size_t *off,
                               const uint8_t *img, size_t PW, size_t C, size_t OH, size_t OW, size_t o0, uint8_t *y,
                               fixq_rounding mode, int u8) {
  const size_t O = C, pairs = (T + 1) / 2;
  const __mmask32 k = O - o0 >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (O - o0)) - 1);
  const __mmask16 k0 = (__mmask16)k, k1 = (__mmask16)(k >> 16);
  __m512i wp[64];
  int32_t bias[32];
  for (size_t c = 0; c < 32; c++) {
    uint32_t b = 0;
    if (o0 + c < O) {
      uint32_t wsum = 0;
      for (size_t t = 0; t < T; t++) wsum += (uint32_t)(int32_t)s->taps[t * O + o0 + c];
      b = (uint32_t)s->bias[o0 + c] - (uint32_t)s->zp * wsum;
    }
    bias[c] = (int32_t)b;
  }
  for (size_t p = 0; p < pairs; p++) {
    const __m512i wa = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, s->taps + 2 * p * O + o0));
    const __m512i wb = 2 * p + 1 < T ? _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, s->taps + (2 * p + 1) * O + o0))
                                     : _mm512_setzero_si512();
    wp[2 * p] = _mm512_unpacklo_epi16(wa, wb);
    wp[2 * p + 1] = _mm512_unpackhi_epi16(wa, wb);
  }
  const __m512i b0 = _mm512_loadu_si512(bias), b1 = _mm512_loadu_si512(bias + 16);
  const fixq_requant *p = &s->rq;
  const __m512i qmin = _mm512_set1_epi32(p->qmin), qmax = _mm512_set1_epi32(p->qmax);
  const lanes L0 = lanes_load(p, o0, k0, 1, mode), L1 = lanes_load(p, o0 + 16, k1, 1, mode);
  for (size_t oy = 0; oy < OH; oy++)
    for (size_t ox = 0; ox < OW; ox++) {
      __m512i c0, c1;
      dw_sums32(img + (oy * s->sh * PW + ox * s->sw) * C + o0, off, pairs, wp, k, u8, &c0, &c1);
      const size_t at = (oy * OW + ox) * O + o0;
      store16(y, at, plan->dtype, requant16(_mm512_add_epi32(c0, b0), &L0, mode, qmin, qmax), k0);
      if (k1) store16(y, at + 16, plan->dtype, requant16(_mm512_add_epi32(c1, b1), &L1, mode, qmin, qmax), k1);
    }
}

/* ---- 3x3: a row of taps as one vpdpbusd ----------------------------------------------------------------------
 * The map of tap triples holds, for padded row iy and output column ox, each channel c's bytes
 * u(iy, ox sw + j dw, c) for j = 0, 1, 2 and a fourth (the third again) as one int32 lane, u = x ^ 0x80 = x + 128 (int8)
 * or x (uint8); 32 channels a record of 128 bytes.  vpdpbusd multiplies the 4 unsigned bytes by the row's 3
 * weights and a 0 and adds them to the lane exactly, so an output is bias'' + 3 vpdpbusd with
 * bias'' = bias - (zp + 128) sum_t w (int8; zp sum_t w for uint8): sum_t (x - zp) w modulo 2^32, the padding
 * (u = zp + 128 or zp) still adding 0.  Each record is made once per call and read by every output row whose
 * taps cover its row (3 at stride 1). */
ALWAYS_INLINE void triples_build(const fixq_eng_step *s, const uint8_t *img, size_t PH, size_t PW, size_t C,
                                 size_t OW, int u8, uint8_t *q) {
  const size_t CQ = (C + 31) / 32 * 32;
  const __m256i flip = _mm256_set1_epi8(u8 ? 0 : (char)0x80);
  for (size_t iy = 0; iy < PH; iy++)
    for (size_t ox = 0; ox < OW; ox++) {
      const uint8_t *p = img + (iy * PW + ox * s->sw) * C;
      uint8_t *d = q + (iy * OW + ox) * CQ * 4;
      for (size_t c = 0; c < C; c += 32, d += 128) {
        const __mmask32 k = C - c >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (C - c)) - 1);
        const __m256i a = _mm256_xor_si256(_mm256_maskz_loadu_epi8(k, p + c), flip);
        const __m256i b = _mm256_xor_si256(_mm256_maskz_loadu_epi8(k, p + s->dw * C + c), flip);
        const __m256i e = _mm256_xor_si256(_mm256_maskz_loadu_epi8(k, p + 2 * s->dw * C + c), flip);
        const __m256i ab0 = _mm256_unpacklo_epi8(a, b), ab1 = _mm256_unpackhi_epi8(a, b);
        const __m256i ee0 = _mm256_unpacklo_epi8(e, e), ee1 = _mm256_unpackhi_epi8(e, e);
        /* channels 0-3 | 16-19, 4-7 | 20-23, 8-11 | 24-27, 12-15 | 28-31: each half to its place */
        const __m256i q0 = _mm256_unpacklo_epi16(ab0, ee0), q1 = _mm256_unpackhi_epi16(ab0, ee0);
        const __m256i q2 = _mm256_unpacklo_epi16(ab1, ee1), q3 = _mm256_unpackhi_epi16(ab1, ee1);
        _mm_storeu_si128((__m128i *)d, _mm256_castsi256_si128(q0));
        _mm_storeu_si128((__m128i *)(d + 16), _mm256_castsi256_si128(q1));
        _mm_storeu_si128((__m128i *)(d + 32), _mm256_castsi256_si128(q2));
        _mm_storeu_si128((__m128i *)(d + 48), _mm256_castsi256_si128(q3));
        _mm_storeu_si128((__m128i *)(d + 64), _mm256_extracti128_si256(q0, 1));
        _mm_storeu_si128((__m128i *)(d + 80), _mm256_extracti128_si256(q1, 1));
        _mm_storeu_si128((__m128i *)(d + 96), _mm256_extracti128_si256(q2, 1));
        _mm_storeu_si128((__m128i *)(d + 112), _mm256_extracti128_si256(q3, 1));
      }
    }
}

/* Channels [o0, o0 + 16) of every output of a sample from its map of triples q */
ALWAYS_INLINE void triples_block_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, const uint8_t *q, size_t C,
                                    size_t OH, size_t OW, size_t o0, uint8_t *y, fixq_rounding mode, int u8) {
  const size_t CQ = (C + 31) / 32 * 32, nb = C - o0 < 16 ? C - o0 : 16;
  const __mmask16 k = nb == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nb) - 1);
  const uint32_t off = (uint32_t)s->zp + (u8 ? 0u : 128u);
  int8_t w[3][64];
  int32_t bias[16];
  for (size_t c = 0; c < 16; c++) {
    uint32_t wsum = 0;
    for (size_t i = 0; i < 3; i++)
      for (size_t j = 0; j < 4; j++) {
        const int8_t v = c < nb && j < 3 ? s->taps[(i * 3 + j) * C + o0 + c] : 0;
        w[i][4 * c + j] = v;
        wsum += (uint32_t)(int32_t)v;
      }
    bias[c] = c < nb ? (int32_t)((uint32_t)s->bias[o0 + c] - off * wsum) : 0;
  }
  const __m512i w0 = _mm512_loadu_si512(w[0]), w1 = _mm512_loadu_si512(w[1]), w2 = _mm512_loadu_si512(w[2]);
  const __m512i b = _mm512_loadu_si512(bias);
  const fixq_requant *p = &s->rq;
  const __m512i qmin = _mm512_set1_epi32(p->qmin), qmax = _mm512_set1_epi32(p->qmax);
  const lanes L = lanes_load(p, o0, k, 1, mode);
  const size_t row = OW * CQ * 4;
  const uint8_t *qb = q + o0 * 4;
  for (size_t oy = 0; oy < OH; oy++)
    for (size_t ox = 0; ox < OW; ox++) {
      const uint8_t *r = qb + oy * s->sh * row + ox * CQ * 4;
      __m512i acc = _mm512_dpbusd_epi32(b, _mm512_load_si512(r), w0);
      acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(r + s->dh * row), w1);
      acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(r + 2 * s->dh * row), w2);
      store16(y, (oy * OW + ox) * C + o0, plan->dtype, requant16(acc, &L, mode, qmin, qmax), k);
    }
}

ALWAYS_INLINE void dw_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                         uint8_t *y, uint8_t *img, uint8_t *triples, fixq_rounding mode, int u8) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const size_t C = xt->c, PW = xt->w + 2 * s->pw, T = s->kh * s->kw;
  size_t off[64];
  for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
  off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
  pad_image(s, xt, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    pad_sample(s, xt, x, n, img);
    uint8_t *yn = y + n * yt->h * yt->w * C;
    if (triples != NULL) {
      triples_build(s, img, xt->h + 2 * s->ph, PW, C, yt->w, u8, triples);
      for (size_t o0 = 0; o0 < C; o0 += 16) triples_block_rq(plan, s, triples, C, yt->h, yt->w, o0, yn, mode, u8);
      continue;
    }
    for (size_t o0 = 0; o0 < C; o0 += 32) {
      if (T == 9)
        dw_block_rq(plan, s, 9, off, img, PW, C, yt->h, yt->w, o0, yn, mode, u8);
      else
        dw_block_rq(plan, s, T, off, img, PW, C, yt->h, yt->w, o0, yn, mode, u8);
    }
  }
}

void fixq__eng_depthwise_rq__avx512vnni(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                        const void *x, void *y, uint8_t *img, uint8_t *triples) {
  const int u8 = IS_U8(plan);
  switch (s->rq.rounding) {
    case FIXQ_ROUND_DOUBLE:
      if (u8) dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_DOUBLE, 1);
      else dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_DOUBLE, 0);
      break;
    case FIXQ_ROUND_SINGLE:
      if (u8) dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_SINGLE, 1);
      else dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_SINGLE, 0);
      break;
    default:
      if (u8) dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_FP32, 1);
      else dw_rq(plan, s, batch, x, y, img, triples, FIXQ_ROUND_FP32, 0);
      break;
  }
}
