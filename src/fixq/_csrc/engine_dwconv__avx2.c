/* The depthwise step with its output stage in registers, AVX2: the same bits as the depthwise loop
 * (engine_loops.h) followed by fixq_requantize_s32 (engine.c run_depthwise); a channel multiplier reads an image
 * of the output's channels, x's repeated (pad_sample_repeat).  The arithmetic
 * is engine_dwconv__avx512vnni.c's (the zero point folded into the bias once per call, pairs of taps through
 * vpmaddwd) in blocks of 16 channels: per block the weight pairs, bias' and the output stage's parameters are
 * loaded once, and every output pixel's 16 sums go through requant8 and are stored as bytes.  The last block
 * of a channel count that is not a multiple of 16 reads bytes past its channels (the next pixel's, or the
 * padded image's slack) against weights of 0 and stores only its own. */
#include "engine_loops.h"
#include "engine_sizes.h"
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

/* ---- 3x3 of stride 1 across: tap pairs from a map of rows -----------------------------------------------------
 * For padded row iy and output lane f = ox C + c (an output row's bytes in order) the map holds two int32 lanes:
 * u(iy, ox, c) | u(iy, ox + dw, c) << 16, the row's first two taps as int16, and u(iy, ox + 2 dw, c), the third
 * beside a 0; u = x ^ 0x80 = x + 128 (int8) or x (uint8).  vpmaddwd multiplies each by the row's weights as int16
 * pairs and adds the pair exactly, so 8 outputs are bias'' + 6 vpmaddwd with bias'' = bias - (zp + 128) sum_t w
 * (int8; zp sum_t w for uint8), the padding (u of the zero point) adding 0: the arithmetic, lanes, phases of
 * channels and ring of map rows of engine_dwconv__avx512vnni.c's map of triples, 8 lanes a vector.  Taken where C
 * is not a multiple of 16 (mobilenet_v2's 24: 20.1k -> 15.8k TSC cycles); on 16 or 48 channels, which the blocks
 * of 16 fill, the blocks cost less (10.2k against 11.0k on a 9x9x48 step). */

/* The padded sample of u, every byte written (the border u of the zero point) */
ALWAYS_INLINE void pad_flip(const fixq_eng_step *s, const fixq_eng_tensor *xt, const uint8_t *x, uint8_t flip,
                            uint8_t *img) {
  const size_t C = xt->c, row = (xt->w + 2 * s->pw) * C, side = s->pw * C, in = xt->w * C;
  const uint8_t pad = (uint8_t)s->zp ^ flip;
  const __m256i f = _mm256_set1_epi8((char)flip);
  for (size_t iy = 0; iy < xt->h + 2 * s->ph; iy++) {
    uint8_t *d = img + iy * row;
    if (iy < s->ph || iy >= s->ph + xt->h) {
      memset(d, pad, row);
      continue;
    }
    const uint8_t *src = x + (iy - s->ph) * in;
    memset(d, pad, side);
    size_t i = 0;
    for (; i + 32 <= in; i += 32)
      _mm256_storeu_si256((__m256i *)(d + side + i),
                          _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i)), f));
    for (; i < in; i++) d[side + i] = src[i] ^ flip;
    memset(d + side + in, pad, side);
  }
}

/* Lanes [0, n) of map row (h: the pairs, t: the third taps) from the image's row p, zeros up to a multiple of 8 */
ALWAYS_INLINE void pairs_run(const uint8_t *p, size_t n, size_t dj, int32_t *h, int32_t *t) {
  size_t f = 0;
  for (; f + 8 <= n; f += 8) {
    const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + f)));
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + f + dj)));
    _mm256_storeu_si256((__m256i *)(h + f), _mm256_or_si256(a, _mm256_slli_epi32(b, 16)));
    _mm256_storeu_si256((__m256i *)(t + f), _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + f + 2 * dj))));
  }
  for (; f < n; f++) h[f] = p[f] | p[f + dj] << 16, t[f] = p[f + 2 * dj];
  for (; f % 8; f++) h[f] = t[f] = 0; /* the last vector's lanes past n: read, never stored */
}

/* Per channel, in arrays of C + 16 with channel c at c and c + C (c + 2C, ..., where C < 8): each row's weights
 * (wh: the first two as int16 pairs, wt: the third), bias'', and the output stage's parameters; r points at the
 * latter. */
ALWAYS_INLINE void pairs_params(const fixq_eng_step *s, size_t C, int u8, int32_t *w, fixq_requant *r,
                                fixq_rounding mode) {
  const size_t L = C + 16;
  const uint32_t off = (uint32_t)s->zp + (u8 ? 0u : 128u);
  int32_t *bias = w + 6 * L;
  for (size_t c = 0; c < C; c++) {
    uint32_t wsum = 0;
    for (size_t i = 0; i < 3; i++) {
      const int8_t *t = s->taps + 3 * i * C + c;
      wsum += (uint32_t)(int32_t)t[0] + (uint32_t)(int32_t)t[C] + (uint32_t)(int32_t)t[2 * C];
      w[i * L + c] = (int32_t)((uint32_t)(uint16_t)(int16_t)t[0] | (uint32_t)(uint16_t)(int16_t)t[C] << 16);
      w[(3 + i) * L + c] = (uint16_t)(int16_t)t[2 * C];
    }
    bias[c] = (int32_t)((uint32_t)s->bias[c] - off * wsum);
  }
  for (size_t c = C; c < L; c++)
    for (size_t i = 0; i < 6; i++) w[i * L + c] = w[i * L + c - C];
  dw_params_wrap(s, C, bias, r, mode);
}

/* Every output of a sample from its image of u (rows of PW C bytes): bands of FIXQ_DW_BAND output rows, each after
 * the map rows it reads (q: a ring of R slots of two rows of `row` bytes) */
ALWAYS_INLINE void pairs_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, const uint8_t *img, size_t PW,
                            uint8_t *q, size_t row, size_t R, size_t C, size_t OH, size_t OW, const int32_t *w,
                            const fixq_requant *r, uint8_t *y, fixq_rounding mode) {
  const size_t L = C + 16, n = OW * C, nv = (n + 7) / 8;
  size_t P = C, g = 8; /* P = C / gcd(C, 8) */
  while (P % 2 == 0 && g > 1) P /= 2, g /= 2;
  const __m256i qmin = _mm256_set1_epi32(r->qmin), qmax = _mm256_set1_epi32(r->qmax);
  const fixq_dtype dt = plan->dtype; /* in a register: y's stores may alias the plan */
  size_t built = 0;                  /* map rows made */
  for (size_t oy0 = 0; oy0 < OH; oy0 += FIXQ_DW_BAND) {
    const size_t ob = OH - oy0 < FIXQ_DW_BAND ? OH - oy0 : FIXQ_DW_BAND, last = (oy0 + ob - 1) * s->sh + 2 * s->dh;
    for (; built <= last; built++) {
      int32_t *h = (int32_t *)(q + built % R * 2 * row);
      pairs_run(img + built * PW * C, n, s->dw * C, h, h + row / 4);
    }
    for (size_t ph = 0; ph < P && ph < nv; ph++) {
      const size_t c0 = 8 * ph % C;
      __m256i wv[6];
      for (size_t i = 0; i < 6; i++) wv[i] = _mm256_loadu_si256((const __m256i *)(w + i * L + c0));
      const __m256i b = _mm256_loadu_si256((const __m256i *)(w + 6 * L + c0));
      const lanes La = lanes_load(r, c0, 8, 1, mode);
      for (size_t oy = oy0; oy < oy0 + ob; oy++) {
        const int32_t *m[3];
        for (size_t i = 0; i < 3; i++) m[i] = (const int32_t *)(q + (oy * s->sh + i * s->dh) % R * 2 * row);
        for (size_t v = ph; v < nv; v += P) {
          __m256i acc = b;
          for (size_t i = 0; i < 3; i++) {
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(m[i] + 8 * v)), wv[i]));
            acc = _mm256_add_epi32(
                acc, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(m[i] + row / 4 + 8 * v)), wv[3 + i]));
          }
          const __m256i o = requant8(acc, &La, mode, qmin, qmax);
          if (8 * v + 8 <= n) store8(y, oy * n + 8 * v, dt, o);
          else store_partial(y, oy * n + 8 * v, dt, o, n - 8 * v);
        }
      }
    }
  }
}

ALWAYS_INLINE void dw_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                         uint8_t *y, uint8_t *img, uint8_t *triples, fixq_rounding mode, int u8) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  fixq_eng_tensor xi = *xt; /* the padded image's: y's channels (a channel multiplier's repeated) */
  xi.c = yt->c;
  const size_t C = yt->c, PW = xt->w + 2 * s->pw, T = s->kh * s->kw;
  size_t off[64];
  for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
  off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
  if (triples != NULL && s->sw == 1 && C % 16) { /* (where the tap-pair blocks of 16 would leave lanes idle) */
    const size_t R = dw_triples_rows(s), row = dw_triples_row_bytes(s, xt, yt);
    int32_t *w = (int32_t *)(triples + 2 * R * row);
    fixq_requant r;
    pairs_params(s, C, u8, w, &r, mode);
    for (size_t n = 0; n < batch; n++) {
      if (xi.c == xt->c) pad_flip(s, xt, x + n * xt->h * xt->w * C, u8 ? 0 : 0x80, img);
      else {
        pad_image(s, &xi, img, (uint8_t)s->zp);
        pad_sample_repeat(s, xt, x, n, C / xt->c, img);
        if (!u8) {
          const size_t bytes = (xi.h + 2 * s->ph) * PW * C;
          for (size_t i = 0; i < bytes; i++) img[i] ^= 0x80;
        }
      }
      pairs_rq(plan, s, img, PW, triples, row, R, C, yt->h, yt->w, w, &r, y + n * yt->h * yt->w * C, mode);
    }
    return;
  }
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
