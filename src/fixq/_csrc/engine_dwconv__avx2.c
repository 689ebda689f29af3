/* The depthwise step of channel multiplier 1 with its output stage in registers, AVX2: the same bits as the
 * depthwise loop (engine_loops.h) followed by fixq_requantize_s32 (engine.c run_depthwise).  The arithmetic
 * is engine_dwconv__avx512vnni.c's (the zero point folded into the bias once per call, pairs of taps through
 * vpmaddwd) in blocks of 16 channels: per block the weight pairs, bias' and the output stage's parameters are
 * loaded once, and every output pixel's 16 sums go through requant8 and are stored as bytes.  The last block
 * of a channel count that is not a multiple of 16 reads bytes past its channels (the next pixel's, or the
 * padded image's slack) against weights of 0 and stores only its own. */
#include "engine_loops.h"
#include "fixq_requant_avx2.h"

/* The 16 sums of one output pixel in order (dw_block16's lanes put back) */
ALWAYS_INLINE void dw_sums16(const uint8_t *px, const size_t *off, size_t pairs, const __m256i *wp, int u8,
                             __m256i *c0, __m256i *c1) {
  __m256i lo = _mm256_setzero_si256(), hi = lo;
  for (size_t p = 0; p < pairs; p++) {
    const __m128i ra = _mm_loadu_si128((const __m128i *)(px + off[2 * p]));
    const __m128i rb = _mm_loadu_si128((const __m128i *)(px + off[2 * p + 1]));
    const __m256i xa = u8 ? _mm256_cvtepu8_epi16(ra) : _mm256_cvtepi8_epi16(ra);
    const __m256i xb = u8 ? _mm256_cvtepu8_epi16(rb) : _mm256_cvtepi8_epi16(rb);
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), wp[2 * p]));
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), wp[2 * p + 1]));
  }
  /* lo: channels 0-3 | 8-11, hi: 4-7 | 12-15 */
  *c0 = _mm256_permute2x128_si256(lo, hi, 0x20);
  *c1 = _mm256_permute2x128_si256(lo, hi, 0x31);
}

/* The first n (<= 8) of 8 values, requantized, to y[at..] */
ALWAYS_INLINE void store_n(void *y, size_t at, fixq_dtype dt, __m256i v, size_t n) {
  if (n == 8)
    store8(y, at, dt, v);
  else
    store_partial(y, at, dt, v, n);
}

/* Channels [o0, o0 + 16) of every output pixel of sample n (its padded image img); T taps (a constant where
 * the caller makes it one: the tap loop unrolls). */
ALWAYS_INLINE void dw_block_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t T, const size_t *off,
                               const uint8_t *img, size_t PW, size_t C, size_t OH, size_t OW, size_t o0, uint8_t *y,
                               fixq_rounding mode, int u8) {
  const size_t O = C, pairs = (T + 1) / 2, nb = O - o0 < 16 ? O - o0 : 16;
  const size_t n0 = nb < 8 ? nb : 8, n1 = nb - n0;
  __m256i wp[64];
  int32_t bias[16];
  int8_t w[2][16];
  for (size_t c = 0; c < 16; c++) {
    uint32_t b = 0;
    if (c < nb) {
      uint32_t wsum = 0;
      for (size_t t = 0; t < T; t++) wsum += (uint32_t)(int32_t)s->taps[t * O + o0 + c];
      b = (uint32_t)s->bias[o0 + c] - (uint32_t)s->zp * wsum;
    }
    bias[c] = (int32_t)b;
  }
  for (size_t p = 0; p < pairs; p++) {
    for (size_t c = 0; c < 16; c++) {
      w[0][c] = c < nb ? s->taps[2 * p * O + o0 + c] : 0;
      w[1][c] = c < nb && 2 * p + 1 < T ? s->taps[(2 * p + 1) * O + o0 + c] : 0;
    }
    const __m256i wa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[0]));
    const __m256i wb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[1]));
    wp[2 * p] = _mm256_unpacklo_epi16(wa, wb);
    wp[2 * p + 1] = _mm256_unpackhi_epi16(wa, wb);
  }
  const __m256i b0 = _mm256_loadu_si256((const __m256i *)bias), b1 = _mm256_loadu_si256((const __m256i *)(bias + 8));
  const fixq_requant *p = &s->rq;
  const __m256i qmin = _mm256_set1_epi32(p->qmin), qmax = _mm256_set1_epi32(p->qmax);
  const lanes L0 = lanes_load(p, o0, n0, 1, mode);
  const lanes L1 = n1 ? lanes_load(p, o0 + 8, n1, 1, mode) : L0; /* (L0: unused) */
  const fixq_dtype dt = plan->dtype; /* in a register: y's stores may alias the plan */
  for (size_t oy = 0; oy < OH; oy++)
    for (size_t ox = 0; ox < OW; ox++) {
      __m256i c0, c1;
      dw_sums16(img + (oy * s->sh * PW + ox * s->sw) * C + o0, off, pairs, wp, u8, &c0, &c1);
      const size_t at = (oy * OW + ox) * O + o0;
      store_n(y, at, dt, requant8(_mm256_add_epi32(c0, b0), &L0, mode, qmin, qmax), n0);
      if (n1) store_n(y, at + 8, dt, requant8(_mm256_add_epi32(c1, b1), &L1, mode, qmin, qmax), n1);
    }
}

ALWAYS_INLINE void dw_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                         uint8_t *y, uint8_t *img, fixq_rounding mode, int u8) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  fixq_eng_tensor xi = *xt; /* the padded image's: y's channels (a channel multiplier's repeated) */
  xi.c = yt->c;
  const size_t C = yt->c, PW = xt->w + 2 * s->pw, T = s->kh * s->kw;
  size_t off[64];
  for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
  off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
  pad_image(s, &xi, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    if (xi.c != xt->c) pad_sample_repeat(s, xt, x, n, C / xt->c, img);
    else pad_sample(s, xt, x, n, img);
    uint8_t *yn = y + n * yt->h * yt->w * C;
    for (size_t o0 = 0; o0 < C; o0 += 16) {
      if (T == 9)
        dw_block_rq(plan, s, 9, off, img, PW, C, yt->h, yt->w, o0, yn, mode, u8);
      else
        dw_block_rq(plan, s, T, off, img, PW, C, yt->h, yt->w, o0, yn, mode, u8);
    }
  }
}

void fixq__eng_depthwise_rq__avx2(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                  void *y, uint8_t *img, uint8_t *triples) {
  const int u8 = IS_U8(plan);
  (void)triples; /* vpdpbusd's: AVX-512 VNNI only */
  switch (s->rq.rounding) {
    case FIXQ_ROUND_DOUBLE:
      if (u8) dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_DOUBLE, 1);
      else dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_DOUBLE, 0);
      break;
    case FIXQ_ROUND_SINGLE:
      if (u8) dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_SINGLE, 1);
      else dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_SINGLE, 0);
      break;
    default:
      if (u8) dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_FP32, 1);
      else dw_rq(plan, s, batch, x, y, img, FIXQ_ROUND_FP32, 0);
      break;
  }
}
