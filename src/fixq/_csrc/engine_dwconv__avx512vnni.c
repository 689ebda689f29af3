/* The depthwise step with its output stage in registers, AVX-512: the same bits as the depthwise loop
 * (engine_loops.h) followed by fixq_requantize_s32 (engine.c run_depthwise).  A channel multiplier reads an
 * image of the output's channels, x's repeated (pad_sample_repeat).
 *
 * (x - zp) w summed over the taps is sum x w - zp sum w (modulo 2^32, as numpy's int32): the zero point goes
 * into the bias once per call (bias' = bias - zp sum_t w), and the padding, which holds zp, still adds
 * (zp - zp) w = 0.  x and w as int16 make each product exact (|x w| <= 255 * 128) and vpdpwssd adds a pair
 * of taps into an int32 lane exactly (vpmaddwd and the add, wrapping, in one instruction).  Per block of 32
 * channels the weight pairs, bias' and the output stage's parameters are loaded once; every output pixel's 32
 * sums then go through requant16 and are stored as bytes, with no int32 map in between.  A 3x3 takes the map of
 * tap triples below instead where engine.c gives one (strides up to 2). */
#include "engine_loops.h"
#include "engine_sizes.h"
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
  const fixq_dtype dt = plan->dtype; /* in a register: y's stores may alias the plan */
  for (size_t oy = 0; oy < OH; oy++)
    for (size_t ox = 0; ox < OW; ox++) {
      __m512i c0, c1;
      dw_sums32(img + (oy * s->sh * PW + ox * s->sw) * C + o0, off, pairs, wp, k, u8, &c0, &c1);
      const size_t at = (oy * OW + ox) * O + o0;
      store16(y, at, dt, requant16(_mm512_add_epi32(c0, b0), &L0, mode, qmin, qmax), k0);
      if (k1) store16(y, at + 16, dt, requant16(_mm512_add_epi32(c1, b1), &L1, mode, qmin, qmax), k1);
    }
}

/* ---- 3x3: a row of taps as one vpdpbusd ----------------------------------------------------------------------
 * The map of tap triples holds, for padded row iy, each output lane f = ox C + c (ox < OW, c < C: an output
 * row's bytes in order) as one int32 of unsigned bytes u(iy, ox sw + j dw, c) for j = 0, 1, 2 and a fourth 0,
 * u = x ^ 0x80 = x + 128 (int8) or x (uint8); a map row is OW C lanes rounded up to 16.  vpdpbusd multiplies the
 * 4 bytes by the row's 3 weights and a 0 and adds them to the lane exactly, so 16 outputs are bias'' + 3 vpdpbusd
 * with bias'' = bias - (zp + 128) sum_t w (int8; zp sum_t w for uint8): sum_t (x - zp) w modulo 2^32, the
 * padding (u = zp + 128 or zp) still adding 0.  Each map row is made once per sample, a band of FIXQ_DW_BAND
 * output rows at a time into a ring, and read by every output row whose taps cover it (3 at stride 1).  Lane f is channel f % C, so the 16 lanes of vector v take the weights
 * and output stage of channels (16 v + l) % C: one of P = C / gcd(C, 16) phases, each laid out once per call
 * from per-channel arrays repeated past C (as engine_pw__avx512vnni.c does), and the vectors of a phase run
 * together with its parameters in registers.  At a column stride of 2 an output row's lanes are not one run of
 * the map: there each output row has its own map of columns (each padded column's 3 rows), read 16 channels an
 * output pixel. */

/* n bytes of v from d on */
ALWAYS_INLINE void fill64(uint8_t *d, size_t n, __m512i v) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) _mm512_storeu_si512(d + i, v);
  if (i < n) _mm512_mask_storeu_epi8(d + i, _cvtu64_mask64((~0ULL) >> (64 - (n - i))), v);
}

/* The padded sample as the map reads it, u = x ^ flip, every byte written (the border u of the zero point) */
ALWAYS_INLINE void pad_flip(const fixq_eng_step *s, const fixq_eng_tensor *xt, const uint8_t *x, uint8_t flip,
                            uint8_t *img) {
  const size_t C = xt->c, row = (xt->w + 2 * s->pw) * C, side = s->pw * C, in = xt->w * C;
  const __m512i f = _mm512_set1_epi8((char)flip), pad = _mm512_set1_epi8((char)((uint8_t)s->zp ^ flip));
  for (size_t iy = 0; iy < xt->h + 2 * s->ph; iy++) {
    uint8_t *d = img + iy * row;
    if (iy < s->ph || iy >= s->ph + xt->h) {
      fill64(d, row, pad);
      continue;
    }
    const uint8_t *src = x + (iy - s->ph) * in;
    fill64(d, side, pad);
    size_t i = 0;
    for (; i + 64 <= in; i += 64) _mm512_storeu_si512(d + side + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), f));
    if (i < in) {
      const __mmask64 k = _cvtu64_mask64((~0ULL) >> (64 - (in - i)));
      _mm512_mask_storeu_epi8(d + side + i, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, src + i), f));
    }
    fill64(d + side + in, side, pad);
  }
}

/* Lanes [f, f + n) of a map row from the image's bytes p[f], p[f + dj], p[f + 2 dj] */
ALWAYS_INLINE __m512i triples_of(const uint8_t *p, size_t dj, __mmask16 k) {
  const __m512i a = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, p));
  const __m512i b = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, p + dj)), 8);
  const __m512i e = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, p + 2 * dj)), 16);
  return _mm512_ternarylogic_epi32(a, b, e, 0xFE);
}

ALWAYS_INLINE void triples_run(const uint8_t *p, size_t n, size_t dj, int32_t *d) {
  size_t f = 0;
  for (; f + 16 <= n; f += 16) _mm512_storeu_si512(d + f, triples_of(p + f, dj, (__mmask16)0xFFFF));
  if (f < n) {
    const __mmask16 k = (__mmask16)((1u << (n - f)) - 1);
    _mm512_mask_storeu_epi32(d + f, k, triples_of(p + f, dj, k));
  }
}

/* Per channel, in arrays of C + 16 with channel c at c and c + C (c + 2C, ..., where C < 16): each row's 3
 * weights (each column's, for a map of columns) as the map's 4 bytes, bias'', and the output stage's parameters;
 * r points at the latter. */
ALWAYS_INLINE void triples_params(const fixq_eng_step *s, size_t C, int u8, int columns, int32_t *w4, int32_t *bias,
                                  fixq_requant *r, fixq_rounding mode) {
  const size_t L = C + 16;
  const int32_t off = s->zp + (u8 ? 0 : 128);
  for (size_t c = 0; c < C; c += 16) {
    const __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
    __m512i wsum = _mm512_setzero_si512();
    for (size_t i = 0; i < 3; i++) {
      __m128i t[3];
      for (size_t j = 0; j < 3; j++) {
        t[j] = _mm_maskz_loadu_epi8(k, s->taps + (columns ? 3 * j + i : 3 * i + j) * C + c);
        wsum = _mm512_add_epi32(wsum, _mm512_cvtepi8_epi32(t[j]));
      }
      const __m512i w = _mm512_ternarylogic_epi32(_mm512_cvtepu8_epi32(t[0]),
                                                  _mm512_slli_epi32(_mm512_cvtepu8_epi32(t[1]), 8),
                                                  _mm512_slli_epi32(_mm512_cvtepu8_epi32(t[2]), 16), 0xFE);
      _mm512_mask_storeu_epi32(w4 + i * L + c, k, w);
    }
    const __m512i b = _mm512_maskz_loadu_epi32(k, s->bias + c);
    _mm512_mask_storeu_epi32(bias + c, k, _mm512_sub_epi32(b, _mm512_mullo_epi32(wsum, _mm512_set1_epi32(off))));
  }
  for (size_t c = C; c < L; c++)
    for (size_t i = 0; i < 3; i++) w4[i * L + c] = w4[i * L + c - C];
  dw_params_wrap(s, C, bias, r, mode);
}

/* Every output of a sample from its image of u (rows of PW C bytes), stride 1 across: bands of FIXQ_DW_BAND output
 * rows, each after the map rows it reads (q: a ring of R rows of `row` bytes, the map in L1 with the image) */
ALWAYS_INLINE void triples_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, const uint8_t *img, size_t PW,
                              uint8_t *q, size_t row, size_t R, size_t C, size_t OH, size_t OW, const int32_t *w4,
                              const fixq_requant *r, uint8_t *y, fixq_rounding mode) {
  const size_t L = C + 16, n = OW * C, nv = (n + 15) / 16;
  size_t P = C, g = 16; /* P = C / gcd(C, 16) */
  while (P % 2 == 0 && g > 1) P /= 2, g /= 2;
  const int32_t *bias = w4 + 3 * L;
  const __m512i qmin = _mm512_set1_epi32(r->qmin), qmax = _mm512_set1_epi32(r->qmax);
  const __mmask16 tail = n % 16 ? (__mmask16)((1u << (n % 16)) - 1) : (__mmask16)0xFFFF;
  const fixq_dtype dt = plan->dtype; /* in a register: y's stores may alias the plan */
  size_t built = 0;                  /* map rows made */
  for (size_t oy0 = 0; oy0 < OH; oy0 += FIXQ_DW_BAND) {
    const size_t ob = OH - oy0 < FIXQ_DW_BAND ? OH - oy0 : FIXQ_DW_BAND, last = (oy0 + ob - 1) * s->sh + 2 * s->dh;
    for (; built <= last; built++) triples_run(img + built * PW * C, n, s->dw * C, (int32_t *)(q + built % R * row));
    for (size_t ph = 0; ph < P && ph < nv; ph++) {
      const size_t c0 = 16 * ph % C;
      const __m512i w0 = _mm512_loadu_si512(w4 + c0), w1 = _mm512_loadu_si512(w4 + L + c0);
      const __m512i w2 = _mm512_loadu_si512(w4 + 2 * L + c0), b = _mm512_loadu_si512(bias + c0);
      const lanes La = lanes_load(r, c0, (__mmask16)0xFFFF, 1, mode);
      for (size_t oy = oy0; oy < oy0 + ob; oy++) {
        const size_t iy = oy * s->sh;
        const uint8_t *r0 = q + iy % R * row, *r1 = q + (iy + s->dh) % R * row, *r2 = q + (iy + 2 * s->dh) % R * row;
        for (size_t v = ph; v < nv; v += P) {
          __m512i acc = _mm512_dpbusd_epi32(b, _mm512_load_si512(r0 + 64 * v), w0);
          acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(r1 + 64 * v), w1);
          acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(r2 + 64 * v), w2);
          const __m512i o = requant16(acc, &La, mode, qmin, qmax);
          if (v + 1 < nv && (dt == FIXQ_INT8 || dt == FIXQ_UINT8))
            _mm_storeu_si128((__m128i *)((uint8_t *)y + oy * n + 16 * v), _mm512_cvtepi32_epi8(o));
          else
            store16(y, oy * n + 16 * v, dt, o, v + 1 < nv ? (__mmask16)0xFFFF : tail);
        }
      }
    }
  }
}

/* Every output of a sample from its image of u, stride sw > 1 (an output row's lanes are not one run of a map of
 * rows): per output row its map of columns (one row of `row` bytes at q), then 16 channels an output pixel */
ALWAYS_INLINE void triples_cols_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, const uint8_t *img, size_t PW,
                                   uint8_t *q, size_t C, size_t OH, size_t OW, const int32_t *w4,
                                   const fixq_requant *r, uint8_t *y, fixq_rounding mode) {
  const size_t L = C + 16, dj = s->dw * C * 4;
  const int32_t *bias = w4 + 3 * L;
  const __m512i qmin = _mm512_set1_epi32(r->qmin), qmax = _mm512_set1_epi32(r->qmax);
  const fixq_dtype dt = plan->dtype; /* in a register: y's stores may alias the plan */
  for (size_t oy = 0; oy < OH; oy++) {
    triples_run(img + oy * s->sh * PW * C, PW * C, s->dh * PW * C, (int32_t *)q);
    for (size_t c0 = 0; c0 < C; c0 += 16) {
      const __mmask16 k = C - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c0)) - 1);
      const __m512i w0 = _mm512_loadu_si512(w4 + c0), w1 = _mm512_loadu_si512(w4 + L + c0);
      const __m512i w2 = _mm512_loadu_si512(w4 + 2 * L + c0), b = _mm512_loadu_si512(bias + c0);
      const lanes La = lanes_load(r, c0, (__mmask16)0xFFFF, 1, mode);
      for (size_t ox = 0; ox < OW; ox++) {
        const uint8_t *p = q + (ox * s->sw * C + c0) * 4;
        __m512i acc = _mm512_dpbusd_epi32(b, _mm512_maskz_loadu_epi32(k, p), w0);
        acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi32(k, p + dj), w1);
        acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi32(k, p + 2 * dj), w2);
        store16(y, (oy * OW + ox) * C + c0, dt, requant16(acc, &La, mode, qmin, qmax), k);
      }
    }
  }
}

/* The padded image of sample n for the tap pairs (x as it is) or the map (u = x ^ flip): a channel multiplier's
 * image holds x's channels repeated (engine_loops.h pad_sample_repeat), then flipped in place */
ALWAYS_INLINE void dw_image(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *xi,
                            const uint8_t *x, size_t n, uint8_t flip, uint8_t *img) {
  if (xi->c == xt->c) {
    pad_flip(s, xt, x + n * xt->h * xt->w * xt->c, flip, img);
    return;
  }
  pad_image(s, xi, img, (uint8_t)s->zp);
  pad_sample_repeat(s, xt, x, n, xi->c / xt->c, img);
  if (flip) {
    const size_t bytes = (xi->h + 2 * s->ph) * (xi->w + 2 * s->pw) * xi->c;
    const __m512i f = _mm512_set1_epi8((char)flip);
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) _mm512_storeu_si512(img + i, _mm512_xor_si512(_mm512_loadu_si512(img + i), f));
    for (; i < bytes; i++) img[i] ^= flip;
  }
}

ALWAYS_INLINE void dw_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                         uint8_t *y, uint8_t *img, uint8_t *triples, fixq_rounding mode, int u8) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  fixq_eng_tensor xi = *xt; /* the padded image's: y's channels */
  xi.c = yt->c;
  const size_t C = yt->c, PW = xt->w + 2 * s->pw, T = s->kh * s->kw;
  size_t off[64];
  for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
  off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
  if (triples != NULL) {
    const size_t R = dw_triples_rows(s), row = dw_triples_row_bytes(s, xt, yt);
    int32_t *w4 = (int32_t *)(triples + R * row);
    fixq_requant r;
    triples_params(s, C, u8, s->sw != 1, w4, w4 + 3 * (C + 16), &r, mode);
    for (size_t n = 0; n < batch; n++) {
      uint8_t *yn = y + n * yt->h * yt->w * C;
      dw_image(s, xt, &xi, x, n, u8 ? 0 : 0x80, img);
      if (s->sw == 1) triples_rq(plan, s, img, PW, triples, row, R, C, yt->h, yt->w, w4, &r, yn, mode);
      else triples_cols_rq(plan, s, img, PW, triples, C, yt->h, yt->w, w4, &r, yn, mode);
    }
    return;
  }
  pad_image(s, &xi, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    if (xi.c != xt->c) pad_sample_repeat(s, xt, x, n, C / xt->c, img);
    else pad_sample(s, xt, x, n, img);
    uint8_t *yn = y + n * yt->h * yt->w * C;
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
