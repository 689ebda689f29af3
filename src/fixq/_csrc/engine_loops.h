/* The inner loops of the C executor (engine.c), compiled once per ISA:
 * engine_loops__scalar.c, __avx2.c and __neon.c include this file and
 * export its functions as fixq_eng_loops (the compiler vectorizes them with
 * that file's flags; integer code, so every path gives the same bits).  The
 * depthwise loop has a hand-written 16-channel block for AVX2 (__AVX2__), its
 * 32-channel form for AVX-512 (__AVX512F__, engine_loops__avx512vnni.c) and one
 * for NEON (FIXQ_ENG_LOOPS_NEON, set by engine_loops__neon.c only: the
 * scalar file on aarch64 has __ARM_NEON too). */
#ifndef FIXQ_ENGINE_LOOPS_H_
#define FIXQ_ENGINE_LOOPS_H_

#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef FIXQ_ENG_LOOPS_NEON
#include <arm_neon.h>
#endif

#include "fixq_engine.h"
#include "fixq_internal.h"

#define IS_U8(plan) ((plan)->dtype == FIXQ_UINT8)
#define ENG_INLINE static inline __attribute__((always_inline))

/* Copies n bytes in 16-byte moves: writes up to 15 bytes past d + n and reads
 * up to 15 past src + n (the caller leaves that slack) */
ENG_INLINE void copy_over(uint8_t *d, const uint8_t *src, size_t n) {
  for (size_t i = 0; i < n; i += 16) memcpy(d + i, src + i, 16);
}

/* memcpy of a short row without a library call: 16-byte moves, the last
 * overlapping the one before it (AVX-512: 64-byte moves, the last through a
 * mask) */
ENG_INLINE void copy_exact(uint8_t *d, const uint8_t *src, size_t n) {
#ifdef __AVX512BW__
  size_t i = 0;
  for (; i + 64 <= n; i += 64) _mm512_storeu_si512(d + i, _mm512_loadu_si512(src + i));
  const __mmask64 k = (__mmask64)(((uint64_t)1 << (n - i)) - 1);
  _mm512_mask_storeu_epi8(d + i, k, _mm512_maskz_loadu_epi8(k, src + i));
#else
  if (n >= 16) {
    for (size_t i = 0; i + 16 < n; i += 16) memcpy(d + i, src + i, 16);
    memcpy(d + n - 16, src + n - 16, 16);
  } else if (n >= 8) {
    memcpy(d, src, 8);
    memcpy(d + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    memcpy(d, src, 4);
    memcpy(d + n - 4, src + n - 4, 4);
  } else {
    for (size_t i = 0; i < n; i++) d[i] = src[i];
  }
#endif
}

static inline int32_t load_q(const void *p, size_t i, int u8) {
  return u8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

static size_t numel(const fixq_eng_tensor *t) { return t->h * t->w * t->c; }

/* engine/steps.py avg_round: TFLite reference AveragePool, ties away from zero */
static inline int32_t avg_round(int32_t acc, int32_t count) {
  const int32_t h = count / 2;
  return acc >= 0 ? (acc + h) / count : -((h - acc) / count);
}


/* A padded sample: img holds (h + 2 ph) x (w + 2 pw) x c bytes and
 * FIXQ_ENG_IM2COL_SLACK more; pad_image fills its border with the padding value once,
 * pad_sample copies sample n of x into its interior. */
#define FIXQ_ENG_IM2COL_SLACK 16
ENG_INLINE void pad_image(const fixq_eng_step *s, const fixq_eng_tensor *xt, uint8_t *img, uint8_t pad) {
  const size_t PW = xt->w + 2 * s->pw, C = xt->c, row = PW * C, side = s->pw * C;
  if (xt->h == 0 || xt->w == 0) {
    memset(img, pad, (xt->h + 2 * s->ph) * row + FIXQ_ENG_IM2COL_SLACK);
    return;
  }
  /* the border only: pad_sample writes every byte of the interior */
  memset(img, pad, s->ph * row + side);
  for (size_t iy = 0; iy + 1 < xt->h; iy++) memset(img + (s->ph + iy) * row + side + xt->w * C, pad, 2 * side);
  const size_t tail = (s->ph + xt->h - 1) * row + side + xt->w * C;
  memset(img + tail, pad, (xt->h + 2 * s->ph) * row + FIXQ_ENG_IM2COL_SLACK - tail);
}

ENG_INLINE void pad_sample(const fixq_eng_step *s, const fixq_eng_tensor *xt, const uint8_t *x, size_t n,
                           uint8_t *img) {
  const size_t PW = xt->w + 2 * s->pw, C = xt->c;
  for (size_t iy = 0; iy < xt->h; iy++)
    copy_exact(img + ((iy + s->ph) * PW + s->pw) * C, x + (n * xt->h + iy) * xt->w * C, xt->w * C);
}

/* graph.im2col of group g: patches in (kh, kw, c) order, padding = zp.  From
 * the padded sample every tap row is one run of bytes (a run per tap with
 * groups or column dilation), copied in order with copy_over (its overrun is
 * rewritten by the next run, or lands in the slack). */
static void im2col(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt, size_t batch,
                   const uint8_t *x, size_t g, uint8_t *cols, uint8_t *img) {
  const size_t C = xt->c, cg = C / s->groups, K = s->kh * s->kw * cg;
  const size_t PW = xt->w + 2 * s->pw, run = s->kw * C;
  const int runs = cg == C && s->dw == 1;
  pad_image(s, xt, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    pad_sample(s, xt, x, n, img);
    uint8_t *d = cols + n * yt->h * yt->w * K;
    for (size_t oy = 0; oy < yt->h; oy++) {
      const uint8_t *row = img + oy * s->sh * PW * C + g * cg;
      if (runs && run <= 16) { /* one 16-byte move a tap row */
        for (size_t ox = 0; ox < yt->w; ox++, row += s->sw * C)
          for (size_t i = 0; i < s->kh; i++, d += run) memcpy(d, row + i * s->dh * PW * C, 16);
        continue;
      }
      for (size_t ox = 0; ox < yt->w; ox++, row += s->sw * C)
        for (size_t i = 0; i < s->kh; i++) {
          const uint8_t *src = row + i * s->dh * PW * C;
          if (runs) {
            copy_over(d, src, run);
            d += run;
          } else {
            for (size_t j = 0; j < s->kw; j++, d += cg) copy_over(d, src + j * s->dw * C, cg);
          }
        }
    }
  }
}


/* engine/steps.py depthwise: acc[o] = bias[o] + sum over the taps of
 * (x[o / mult] - zp) * w[o] (modulo 2^32, as numpy's int32), then the output
 * stage.  The taps read a padded copy of the sample (padding zp adds
 * (zp - zp) * w = 0, as numpy's windows do).  One output pixel, channels
 * [o0, o0 + nb), nb <= 16: the block of accumulators stays in registers. */
ENG_INLINE void dw_block(const fixq_eng_step *s, size_t mult, size_t C, size_t PW, size_t O, const uint8_t *img,
                         size_t oy, size_t ox, size_t o0, size_t nb, uint32_t *a, int u8) {
  const int32_t zp = s->zp;
  uint32_t blk[16];
  for (size_t k = 0; k < nb; k++) blk[k] = (uint32_t)s->bias[o0 + k];
  for (size_t i = 0; i < s->kh; i++)
    for (size_t j = 0; j < s->kw; j++) {
      const size_t base = ((oy * s->sh + i * s->dh) * PW + ox * s->sw + j * s->dw) * C;
      const int8_t *w = s->taps + (i * s->kw + j) * O + o0;
      if (mult == 1) {
        /* |x - zp| <= 255 and |w| <= 128: the product is exact in int16 (pmullw) */
        if (u8) {
          const uint8_t *xr = img + base + o0;
          for (size_t k = 0; k < nb; k++)
            blk[k] += (uint32_t)(int32_t)(int16_t)((int16_t)((int32_t)xr[k] - zp) * (int16_t)w[k]);
        } else {
          const int8_t *xr = (const int8_t *)img + base + o0;
          for (size_t k = 0; k < nb; k++)
            blk[k] += (uint32_t)(int32_t)(int16_t)((int16_t)((int32_t)xr[k] - zp) * (int16_t)w[k]);
        }
      } else {
        for (size_t k = 0; k < nb; k++)
          blk[k] += (uint32_t)(load_q(img, base + (o0 + k) / mult, u8) - zp) * (uint32_t)(int32_t)w[k];
      }
    }
  for (size_t k = 0; k < nb; k++) a[o0 + k] = blk[k];
}

#ifdef __AVX2__
/* Channel multiplier 1, 16 channels: the taps two by two through vpmaddwd
 * (x - zp and w interleaved as int16 pairs; each product fits int16 as in
 * dw_block and a pair sum fits int32, so the sum is the same modulo 2^32).
 * wp: the block's weight pairs, lanes as unpack{lo,hi}_epi16 of taps t, t+1
 * (an odd last tap pairs with weight 0); off: the taps' offsets in img. */
ENG_INLINE void dw_block16(const uint8_t *px, const size_t *off, size_t pairs, const __m256i *wp, const int32_t *bias,
                           __m256i zp, uint32_t *a, int u8) {
  __m256i lo = _mm256_setzero_si256(), hi = lo;
  for (size_t p = 0; p < pairs; p++) {
    const __m128i ra = _mm_loadu_si128((const __m128i *)(px + off[2 * p]));
    const __m128i rb = _mm_loadu_si128((const __m128i *)(px + off[2 * p + 1]));
    const __m256i xa = _mm256_sub_epi16(u8 ? _mm256_cvtepu8_epi16(ra) : _mm256_cvtepi8_epi16(ra), zp);
    const __m256i xb = _mm256_sub_epi16(u8 ? _mm256_cvtepu8_epi16(rb) : _mm256_cvtepi8_epi16(rb), zp);
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_loadu_si256(wp + 2 * p)));
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_loadu_si256(wp + 2 * p + 1)));
  }
  /* lo: channels 0-3 | 8-11, hi: 4-7 | 12-15 */
  const __m256i c0 = _mm256_permute2x128_si256(lo, hi, 0x20), c1 = _mm256_permute2x128_si256(lo, hi, 0x31);
  _mm256_storeu_si256((__m256i *)a, _mm256_add_epi32(c0, _mm256_loadu_si256((const __m256i *)bias)));
  _mm256_storeu_si256((__m256i *)(a + 8), _mm256_add_epi32(c1, _mm256_loadu_si256((const __m256i *)(bias + 8))));
}

/* dw_block16 of 8 channels (the tail of a channel count that is not a multiple of 16) in 128-bit lanes */
ENG_INLINE void dw_block8(const uint8_t *px, const size_t *off, size_t pairs, const __m128i *wp, const int32_t *bias,
                          __m128i zp, uint32_t *a, int u8) {
  __m128i lo = _mm_setzero_si128(), hi = lo;
  for (size_t p = 0; p < pairs; p++) {
    const __m128i ra = _mm_loadl_epi64((const __m128i *)(px + off[2 * p]));
    const __m128i rb = _mm_loadl_epi64((const __m128i *)(px + off[2 * p + 1]));
    const __m128i xa = _mm_sub_epi16(u8 ? _mm_cvtepu8_epi16(ra) : _mm_cvtepi8_epi16(ra), zp);
    const __m128i xb = _mm_sub_epi16(u8 ? _mm_cvtepu8_epi16(rb) : _mm_cvtepi8_epi16(rb), zp);
    lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi16(xa, xb), _mm_loadu_si128(wp + 2 * p)));
    hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi16(xa, xb), _mm_loadu_si128(wp + 2 * p + 1)));
  }
  _mm_storeu_si128((__m128i *)a, _mm_add_epi32(lo, _mm_loadu_si128((const __m128i *)bias)));
  _mm_storeu_si128((__m128i *)(a + 4), _mm_add_epi32(hi, _mm_loadu_si128((const __m128i *)(bias + 4))));
}
#endif

#ifdef __AVX512F__
/* dw_block16 in 512-bit registers: 32 channels, those of mask k (the others' inputs and weights load as 0,
 * and are not stored).  wp: the block's weight pairs, lanes as unpack{lo,hi}_epi16 of taps t, t+1. */
ENG_INLINE void dw_block32(const uint8_t *px, const size_t *off, size_t pairs, const __m512i *wp, const int32_t *bias,
                           __m512i zp, __mmask32 k, uint32_t *a, int u8) {
  __m512i lo = _mm512_setzero_si512(), hi = lo;
  for (size_t p = 0; p < pairs; p++) {
    const __m256i ra = _mm256_maskz_loadu_epi8(k, px + off[2 * p]), rb = _mm256_maskz_loadu_epi8(k, px + off[2 * p + 1]);
    const __m512i xa = _mm512_sub_epi16(u8 ? _mm512_cvtepu8_epi16(ra) : _mm512_cvtepi8_epi16(ra), zp);
    const __m512i xb = _mm512_sub_epi16(u8 ? _mm512_cvtepu8_epi16(rb) : _mm512_cvtepi8_epi16(rb), zp);
    lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(xa, xb), _mm512_loadu_si512(wp + 2 * p)));
    hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(xa, xb), _mm512_loadu_si512(wp + 2 * p + 1)));
  }
  /* lo: channels 0-3 | 8-11 | 16-19 | 24-27, hi: 4-7 | 12-15 | 20-23 | 28-31 (64-bit lanes 0-7 of lo, 8-15 of hi) */
  const __m512i c0 = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi);
  const __m512i c1 = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi);
  const __mmask16 k0 = (__mmask16)k, k1 = (__mmask16)(k >> 16);
  _mm512_mask_storeu_epi32(a, k0, _mm512_add_epi32(c0, _mm512_maskz_loadu_epi32(k0, bias)));
  _mm512_mask_storeu_epi32(a + 16, k1, _mm512_add_epi32(c1, _mm512_maskz_loadu_epi32(k1, bias + 16)));
}
#endif

/* pad_sample with each input channel repeated mult times: the image of a channel multiplier's output
 * channels, which then reads as a depthwise of multiplier 1 (a call of its own: inlined, it changed how
 * the compiler laid out depthwise_acc's tap loops) */
static __attribute__((noinline)) void pad_sample_repeat(const fixq_eng_step *s, const fixq_eng_tensor *xt,
                                                       const uint8_t *x, size_t n, size_t mult, uint8_t *img) {
  const size_t PW = xt->w + 2 * s->pw, C = xt->c;
  for (size_t iy = 0; iy < xt->h; iy++)
    for (size_t ix = 0; ix < xt->w; ix++) {
      const uint8_t *src = x + ((n * xt->h + iy) * xt->w + ix) * C;
      uint8_t *dst = img + ((iy + s->ph) * PW + s->pw + ix) * C * mult;
      size_t c = 0;
#ifdef __AVX2__
      if (mult == 2) /* each byte twice: the bytes interleaved with themselves, 16 channels a move */
        for (; c + 16 <= C; c += 16) {
          const __m128i v = _mm_loadu_si128((const __m128i *)(src + c));
          _mm_storeu_si128((__m128i *)(dst + 2 * c), _mm_unpacklo_epi8(v, v));
          _mm_storeu_si128((__m128i *)(dst + 2 * c + 16), _mm_unpackhi_epi8(v, v));
        }
#endif
      for (; c < C; c++)
        for (size_t k = 0; k < mult; k++) dst[c * mult + k] = src[c];
    }
}

#ifdef FIXQ_ENG_LOOPS_NEON
/* Channel multiplier 1, 16 channels, int8 x int8 as XNNPACK's qs8 dwconv
 * (neon-mla8): with x' = x, zp' = zp (int8) or x' = x ^ 0x80 = x - 128,
 * zp' = zp - 128 (uint8), (x - zp) w = x' w - zp' w, so the sum is
 * bias' + sum_t x' w with bias' = bias - zp' sum_t w (modulo 2^32, as in
 * dw_block; the padding, x' = zp', still adds 0).  smull makes each x' w
 * exactly in int16 (|x' w| <= 128 * 128); with no weight of -128 in the step
 * (pairs), smlal adds a second tap's product in int16 first (|x' w| <= 128 *
 * 127: the pair fits), and saddw widens into the int32 lanes.  bias2: bias'
 * of the block; off: the taps' offsets in img. */
ENG_INLINE void dw_block16_neon(const uint8_t *px, const size_t *off, size_t T, const int8_t *w, size_t O,
                                const uint8_t *bias2, int pairs, int u8, uint32_t *a) {
  int32x4_t c0 = vreinterpretq_s32_u8(vld1q_u8(bias2)), c1 = vreinterpretq_s32_u8(vld1q_u8(bias2 + 16));
  int32x4_t c2 = vreinterpretq_s32_u8(vld1q_u8(bias2 + 32)), c3 = vreinterpretq_s32_u8(vld1q_u8(bias2 + 48));
  const uint8x16_t flip = vdupq_n_u8(0x80);
#define DW_X(t) vreinterpretq_s8_u8(u8 ? veorq_u8(vld1q_u8(px + off[t]), flip) : vld1q_u8(px + off[t]))
  size_t t = 0;
  if (pairs)
    for (; t + 2 <= T; t += 2) {
      const int8x16_t x0 = DW_X(t), x1 = DW_X(t + 1), w0 = vld1q_s8(w + t * O), w1 = vld1q_s8(w + (t + 1) * O);
      const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(x0), vget_low_s8(w0)), vget_low_s8(x1), vget_low_s8(w1));
      const int16x8_t hi = vmlal_high_s8(vmull_high_s8(x0, w0), x1, w1);
      c0 = vaddw_s16(c0, vget_low_s16(lo));
      c1 = vaddw_high_s16(c1, lo);
      c2 = vaddw_s16(c2, vget_low_s16(hi));
      c3 = vaddw_high_s16(c3, hi);
    }
  for (; t < T; t++) {
    const int8x16_t x0 = DW_X(t), w0 = vld1q_s8(w + t * O);
    const int16x8_t lo = vmull_s8(vget_low_s8(x0), vget_low_s8(w0)), hi = vmull_high_s8(x0, w0);
    c0 = vaddw_s16(c0, vget_low_s16(lo));
    c1 = vaddw_high_s16(c1, lo);
    c2 = vaddw_s16(c2, vget_low_s16(hi));
    c3 = vaddw_high_s16(c3, hi);
  }
#undef DW_X
  vst1q_u32(a, vreinterpretq_u32_s32(c0));
  vst1q_u32(a + 4, vreinterpretq_u32_s32(c1));
  vst1q_u32(a + 8, vreinterpretq_u32_s32(c2));
  vst1q_u32(a + 12, vreinterpretq_u32_s32(c3));
}
#endif

ENG_INLINE void depthwise_acc(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt,
                              size_t batch, const uint8_t *x, int32_t *acc, uint8_t *img, int u8) {
  const size_t O = yt->c, PW = xt->w + 2 * s->pw;
  fixq_eng_tensor xi = *xt; /* the padded image's tensor */
  size_t mult = s->groups;  /* of the image */
#ifdef __AVX2__
  size_t nfast = 0, n8 = 0; /* channels done 16 at a time by dw_block16, then 8 by dw_block8 */
  const size_t T = s->kh * s->kw, pairs = (T + 1) / 2;
  size_t off[64];
  if (T <= 63 && mult > 1) { /* the channels repeated in the image (engine.c's scratch has room for O) */
    xi.c = O;
    mult = 1;
  }
  const size_t C = xi.c;
  __m256i *wp = (__m256i *)(img + (xt->h + 2 * s->ph) * PW * C + FIXQ_ENG_IM2COL_SLACK);
#ifdef __AVX512F__
  const int blocks32 = T <= 63; /* every channel by dw_block32, its weight pairs at wp */
  if (blocks32) {
    for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
    off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
    for (size_t o0 = 0; o0 < O; o0 += 32) {
      const __mmask32 k = O - o0 >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (O - o0)) - 1);
      for (size_t p = 0; p < pairs; p++) {
        const __m512i wa = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, s->taps + 2 * p * O + o0));
        const __m512i wb = 2 * p + 1 < T ? _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, s->taps + (2 * p + 1) * O + o0))
                                         : _mm512_setzero_si512();
        _mm512_storeu_si512((__m512i *)wp + (o0 / 32 * pairs + p) * 2, _mm512_unpacklo_epi16(wa, wb));
        _mm512_storeu_si512((__m512i *)wp + (o0 / 32 * pairs + p) * 2 + 1, _mm512_unpackhi_epi16(wa, wb));
      }
    }
  }
  if (T <= 63 && !blocks32) {
#else
  if (T <= 63) {
#endif
    nfast = O / 16 * 16;
    for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
    off[T] = off[T - 1]; /* the odd tap's partner: weight 0 */
    for (size_t o0 = 0; o0 < nfast; o0 += 16)
      for (size_t p = 0; p < pairs; p++) {
        const __m256i wa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(s->taps + 2 * p * O + o0)));
        const __m256i wb = 2 * p + 1 < T
                               ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(s->taps + (2 * p + 1) * O + o0)))
                               : _mm256_setzero_si256();
        _mm256_storeu_si256(wp + (o0 / 16 * pairs + p) * 2, _mm256_unpacklo_epi16(wa, wb));
        _mm256_storeu_si256(wp + (o0 / 16 * pairs + p) * 2 + 1, _mm256_unpackhi_epi16(wa, wb));
      }
    n8 = O - nfast >= 8 ? 8 : 0;
    for (size_t p = 0; n8 && p < pairs; p++) {
      const __m128i wa = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(s->taps + 2 * p * O + nfast)));
      const __m128i wb = 2 * p + 1 < T
                             ? _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(s->taps + (2 * p + 1) * O + nfast)))
                             : _mm_setzero_si128();
      _mm_storeu_si128((__m128i *)(wp + nfast / 16 * pairs * 2) + 2 * p, _mm_unpacklo_epi16(wa, wb));
      _mm_storeu_si128((__m128i *)(wp + nfast / 16 * pairs * 2) + 2 * p + 1, _mm_unpackhi_epi16(wa, wb));
    }
  }
  const __m256i zp16 = _mm256_set1_epi16((int16_t)s->zp);
#else
  const size_t C = xi.c;
#endif
#ifdef FIXQ_ENG_LOOPS_NEON
  size_t nfast = 0; /* channels done 16 at a time by dw_block16_neon */
  const size_t T = s->kh * s->kw;
  size_t off[64];
  int pairs = 1;
  /* bias' as bytes (the scratch has no alignment), within its (T + 1) / 2 * O * 4 */
  uint8_t *bias2 = img + (xt->h + 2 * s->ph) * PW * C + FIXQ_ENG_IM2COL_SLACK;
  if (s->groups == 1 && T <= 64) {
    nfast = O / 16 * 16;
    const uint32_t zp2 = (uint32_t)(u8 ? s->zp - 128 : s->zp);
    for (size_t t = 0; t < T; t++) off[t] = ((t / s->kw) * s->dh * PW + (t % s->kw) * s->dw) * C;
    for (size_t o = 0; o < nfast; o++) {
      uint32_t wsum = 0;
      for (size_t t = 0; t < T; t++) {
        wsum += (uint32_t)(int32_t)s->taps[t * O + o];
        pairs &= s->taps[t * O + o] != INT8_MIN;
      }
      const uint32_t b2 = (uint32_t)s->bias[o] - zp2 * wsum;
      memcpy(bias2 + 4 * o, &b2, 4);
    }
  }
#endif
  pad_image(s, &xi, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    if (xi.c != xt->c)
      pad_sample_repeat(s, xt, x, n, O / xt->c, img);
    else
      pad_sample(s, xt, x, n, img);
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        uint32_t *a = (uint32_t *)acc + ((n * yt->h + oy) * yt->w + ox) * O;
        size_t o0 = 0;
#ifdef __AVX2__
        const uint8_t *px = img + (oy * s->sh * PW + ox * s->sw) * C;
#ifdef __AVX512F__
        for (; blocks32 && o0 < O; o0 += 32)
          dw_block32(px + o0, off, pairs, (const __m512i *)wp + o0 / 32 * pairs * 2, s->bias + o0,
                     _mm512_set1_epi16((int16_t)s->zp),
                     O - o0 >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (O - o0)) - 1), a + o0, u8);
#endif
        for (; o0 < nfast; o0 += 16)
          dw_block16(px + o0, off, pairs, wp + o0 / 16 * pairs * 2, s->bias + o0, zp16, a + o0, u8);
        if (n8) {
          dw_block8(px + o0, off, pairs, (const __m128i *)(wp + o0 / 16 * pairs * 2), s->bias + o0,
                    _mm256_castsi256_si128(zp16), a + o0, u8);
          o0 += 8;
        }
#endif
#ifdef FIXQ_ENG_LOOPS_NEON
        const uint8_t *px = img + (oy * s->sh * PW + ox * s->sw) * C;
        for (; o0 < nfast; o0 += 16)
          dw_block16_neon(px + o0, off, T, s->taps + o0, O, bias2 + 4 * o0, pairs, u8, a + o0);
#endif
        for (; o0 + 16 <= O; o0 += 16) dw_block(s, mult, C, PW, O, img, oy, ox, o0, 16, a, u8);
        if (o0 < O) dw_block(s, mult, C, PW, O, img, oy, ox, o0, O - o0, a, u8);
      }
  }
}

static void depthwise(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, int32_t *acc,
                      uint8_t *img) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  if (IS_U8(plan))
    depthwise_acc(s, xt, yt, batch, x, acc, img, 1);
  else
    depthwise_acc(s, xt, yt, batch, x, acc, img, 0);
}

static void run_clamp(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t n, const void *x, void *y) {
  if (IS_U8(plan)) {
    const uint8_t *a = x, lo = (uint8_t)s->lo, hi = (uint8_t)s->hi;
    uint8_t *b = y;
    for (size_t i = 0; i < n; i++) b[i] = a[i] < lo ? lo : a[i] > hi ? hi : a[i];
  } else {
    const int8_t *a = x, lo = (int8_t)s->lo, hi = (int8_t)s->hi;
    int8_t *b = y;
    for (size_t i = 0; i < n; i++) b[i] = a[i] < lo ? lo : a[i] > hi ? hi : a[i];
  }
}


/* The taps of output (oy, ox) inside the input: rows [*y0, *y1), columns [*x0, *x1) */
ENG_INLINE void pool_window(const fixq_eng_step *s, const fixq_eng_tensor *xt, size_t oy, size_t ox, size_t *y0,
                            size_t *y1, size_t *x0, size_t *x1) {
  const size_t ty = oy * s->sh, tx = ox * s->sw;
  *y0 = ty < s->ph ? 0 : ty - s->ph;
  *x0 = tx < s->pw ? 0 : tx - s->pw;
  *y1 = ty + s->kh <= s->ph ? 0 : ty + s->kh - s->ph;
  *x1 = tx + s->kw <= s->pw ? 0 : tx + s->kw - s->pw;
  if (*y1 > xt->h) *y1 = xt->h;
  if (*x1 > xt->w) *x1 = xt->w;
  if (*y0 > *y1) *y0 = *y1;
  if (*x0 > *x1) *x0 = *x1;
}

/* graph.window_reduce with sum (padding zp) over the channels of one output pixel (acc: C int32); returns
 * the count to divide by */
ENG_INLINE size_t sum_pixel(const fixq_eng_step *s, const fixq_eng_tensor *xt, const void *x, size_t n, size_t oy,
                          size_t ox, int32_t *acc, int u8) {
  const size_t C = xt->c;
  size_t y0, y1, x0, x1;
  pool_window(s, xt, oy, ox, &y0, &y1, &x0, &x1);
  const size_t taps = (y1 - y0) * (x1 - x0);
  const uint8_t *img = (const uint8_t *)x + n * xt->h * xt->w * C;
  size_t c = 0;
#ifdef __AVX512BW__
  for (; c < C; c += 16) { /* the last block's channels past C through the mask */
    const __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
    __m512i sum = _mm512_setzero_si512();
    for (size_t iy = y0; iy < y1; iy++)
      for (size_t ix = x0; ix < x1; ix++) {
        const __m128i v = _mm_maskz_loadu_epi8(k, img + (iy * xt->w + ix) * C + c);
        sum = _mm512_add_epi32(sum, u8 ? _mm512_cvtepu8_epi32(v) : _mm512_cvtepi8_epi32(v));
      }
    _mm512_mask_storeu_epi32(acc + c, k, sum);
  }
#elif defined(__AVX2__)
  for (; c + 8 <= C; c += 8) {
    __m256i sum = _mm256_setzero_si256();
    for (size_t iy = y0; iy < y1; iy++)
      for (size_t ix = x0; ix < x1; ix++) {
        const __m128i v = _mm_loadl_epi64((const __m128i *)(img + (iy * xt->w + ix) * C + c));
        sum = _mm256_add_epi32(sum, u8 ? _mm256_cvtepu8_epi32(v) : _mm256_cvtepi8_epi32(v));
      }
    _mm256_storeu_si256((__m256i *)(acc + c), sum);
  }
#endif
  const size_t c0 = c; /* the rest tap by tap, over the channels (a loop the compiler vectorizes) */
  for (c = c0; c < C; c++) acc[c] = 0;
  for (size_t iy = y0; iy < y1 && c0 < C; iy++)
    for (size_t ix = x0; ix < x1; ix++) {
      const size_t base = (iy * xt->w + ix) * C;
      if (u8)
        for (c = c0; c < C; c++) acc[c] += img[base + c];
      else
        for (c = c0; c < C; c++) acc[c] += (int8_t)img[base + c];
    }
  /* each padded tap adds zp, or (count_valid) the taps inside are the count */
  if (s->count_valid) return taps;
  if (taps < s->kh * s->kw)
    for (c = 0; c < C; c++) acc[c] += s->zp * (int32_t)(s->kh * s->kw - taps);
  return s->kh * s->kw;
}

/* maxpool on the integers themselves: each output pixel starts at lo (the padding) and takes the max with
 * every tap inside the input.  Per output row, the max over its window's input rows first, column by column
 * (rows: x->w * C bytes of scratch), then per pixel the max over its window's columns of that row. */
ENG_INLINE void max_pool(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt, size_t batch,
                         const void *x, void *y, uint8_t *rows, int u8) {
  const size_t C = xt->c, W = xt->w * C;
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++) {
      const uint8_t *img = (const uint8_t *)x + n * xt->h * W;
      size_t y0, y1, x0, x1;
      pool_window(s, xt, oy, 0, &y0, &y1, &x0, &x1);
      if (y0 == y1) { /* all padding: lo */
        memset((uint8_t *)y + (n * yt->h + oy) * yt->w * C, (uint8_t)s->lo, yt->w * C);
        continue;
      }
      memcpy(rows, img + y0 * W, W);
      for (size_t iy = y0 + 1; iy < y1; iy++) {
        const uint8_t *r = img + iy * W;
        size_t i = 0;
#ifdef __AVX512BW__
        for (; i < W; i += 64) { /* the last block's bytes past W through the mask */
          const __mmask64 k = W - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (W - i)) - 1;
          const __m512i a = _mm512_maskz_loadu_epi8(k, rows + i), b = _mm512_maskz_loadu_epi8(k, r + i);
          _mm512_mask_storeu_epi8(rows + i, k, u8 ? _mm512_max_epu8(a, b) : _mm512_max_epi8(a, b));
        }
#elif defined(__AVX2__)
        for (; i + 16 <= W; i += 16) {
          const __m128i a = _mm_loadu_si128((const __m128i *)(rows + i)), b = _mm_loadu_si128((const __m128i *)(r + i));
          _mm_storeu_si128((__m128i *)(rows + i), u8 ? _mm_max_epu8(a, b) : _mm_max_epi8(a, b));
        }
#endif
        if (u8)
          for (; i < W; i++) rows[i] = r[i] > rows[i] ? r[i] : rows[i];
        else
          for (; i < W; i++) rows[i] = (int8_t)r[i] > (int8_t)rows[i] ? r[i] : rows[i];
      }
      for (size_t ox = 0; ox < yt->w; ox++) {
        uint8_t *d = (uint8_t *)y + ((n * yt->h + oy) * yt->w + ox) * C;
        pool_window(s, xt, oy, ox, &y0, &y1, &x0, &x1);
        size_t c = 0;
#ifdef __AVX512BW__
        for (; c < C; c += 16) { /* the last block's channels past C through the mask */
          const __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
          __m128i m = _mm_set1_epi8((char)s->lo);
          for (size_t ix = x0; ix < x1; ix++) {
            const __m128i v = _mm_maskz_loadu_epi8(k, rows + ix * C + c);
            m = u8 ? _mm_max_epu8(m, v) : _mm_max_epi8(m, v);
          }
          _mm_mask_storeu_epi8(d + c, k, m);
        }
#elif defined(__AVX2__)
        const __m128i lo = _mm_set1_epi8((char)s->lo);
        for (; c + 16 <= C; c += 16) {
          __m128i m = lo;
          for (size_t ix = x0; ix < x1; ix++) {
            const __m128i v = _mm_loadu_si128((const __m128i *)(rows + ix * C + c));
            m = u8 ? _mm_max_epu8(m, v) : _mm_max_epi8(m, v);
          }
          _mm_storeu_si128((__m128i *)(d + c), m);
        }
        for (; c + 8 <= C; c += 8) {
          __m128i m = lo;
          for (size_t ix = x0; ix < x1; ix++) {
            const __m128i v = _mm_loadl_epi64((const __m128i *)(rows + ix * C + c));
            m = u8 ? _mm_max_epu8(m, v) : _mm_max_epi8(m, v);
          }
          _mm_storel_epi64((__m128i *)(d + c), m);
        }
#endif
        const size_t c0 = c; /* the rest tap by tap, over the channels (a loop the compiler vectorizes) */
        for (c = c0; c < C; c++) d[c] = (uint8_t)s->lo; /* the low byte: (uint8_t) or (int8_t) alike */
        for (size_t ix = x0; ix < x1 && c0 < C; ix++) {
          const uint8_t *r = rows + ix * C;
          if (u8)
            for (c = c0; c < C; c++) d[c] = r[c] > d[c] ? r[c] : d[c];
          else
            for (c = c0; c < C; c++) d[c] = (int8_t)r[c] > (int8_t)d[c] ? r[c] : d[c];
        }
      }
    }
}

/* The average pool's outputs of one pixel: avg_round(acc[c], count), stored
 * as bytes.  NEON, AVX2, AVX-512: avg_round is sign(acc) floor((|acc| + count / 2) / count)
 * (n = |acc| + count / 2 < 2^31: count <= FIXQ_ENG_MAX_POOL_AREA = 2^23 and
 * |acc| <= 255 count); n * (1 / count) in float32 truncates to within one of
 * the quotient (< 256, relative error < 2^-22), and the remainder n - q count
 * (modulo 2^32, its true value in [-count, 2 count)) corrects it: exact. */
ENG_INLINE void avg_store(const int32_t *acc, size_t C, int32_t count, uint8_t *y) {
  size_t c = 0;
#ifdef __AVX512BW__
  /* NEON's quotient and corrections (below) in 16 lanes, the last block's channels past C through the mask */
  const __m512i half = _mm512_set1_epi32(count / 2), d = _mm512_set1_epi32(count);
  const __m512 inv = _mm512_set1_ps(1.0f / (float)count);
  for (; c < C; c += 16) {
    const __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
    const __m512i a = _mm512_maskz_loadu_epi32(k, acc + c), n = _mm512_add_epi32(_mm512_abs_epi32(a), half);
    __m512i q = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(n), inv));
    q = _mm512_add_epi32(q, _mm512_srai_epi32(_mm512_sub_epi32(n, _mm512_mullo_epi32(q, d)), 31)); /* r < 0 */
    const __mmask16 up = _mm512_cmpge_epi32_mask(_mm512_sub_epi32(n, _mm512_mullo_epi32(q, d)), d); /* r >= count */
    q = _mm512_mask_add_epi32(q, up, q, _mm512_set1_epi32(1));
    q = _mm512_mask_sub_epi32(q, _mm512_cmplt_epi32_mask(a, _mm512_setzero_si512()), _mm512_setzero_si512(), q);
    _mm512_mask_cvtepi32_storeu_epi8(y + c, k, q);
  }
#elif defined(__AVX2__)
  const __m256i half = _mm256_set1_epi32(count / 2), d = _mm256_set1_epi32(count), dm1 = _mm256_set1_epi32(count - 1);
  const __m256 inv = _mm256_set1_ps(1.0f / (float)count);
  const __m256i low = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (; c + 8 <= C; c += 8) {
    const __m256i a = _mm256_loadu_si256((const __m256i *)(acc + c)), n = _mm256_add_epi32(_mm256_abs_epi32(a), half);
    __m256i q = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(n), inv));
    q = _mm256_add_epi32(q, _mm256_srai_epi32(_mm256_sub_epi32(n, _mm256_mullo_epi32(q, d)), 31));        /* r < 0 */
    q = _mm256_sub_epi32(q, _mm256_cmpgt_epi32(_mm256_sub_epi32(n, _mm256_mullo_epi32(q, d)), dm1)); /* r >= count */
    q = _mm256_sign_epi32(q, a);
    const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, low), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)(y + c), _mm256_castsi256_si128(b));
  }
#endif
#ifdef FIXQ_ENG_LOOPS_NEON
  const int32x4_t half = vdupq_n_s32(count / 2), d = vdupq_n_s32(count);
  const float32x4_t inv = vdupq_n_f32(1.0f / (float)count);
  int32x4_t q2[2];
  for (; c + 8 <= C; c += 8) {
    for (size_t i = 0; i < 2; i++) {
      const int32x4_t a = vld1q_s32(acc + c + 4 * i), n = vaddq_s32(vabsq_s32(a), half);
      int32x4_t q = vcvtq_s32_f32(vmulq_f32(vcvtq_f32_s32(n), inv));
      q = vaddq_s32(q, vshrq_n_s32(vmlsq_s32(n, q, d), 31));                        /* r < 0: q - 1 */
      q = vsubq_s32(q, vreinterpretq_s32_u32(vcgeq_s32(vmlsq_s32(n, q, d), d))); /* r >= count: q + 1 */
      const int32x4_t sign = vshrq_n_s32(a, 31);
      q2[i] = vsubq_s32(veorq_s32(q, sign), sign);
    }
    vst1_u8(y + c, vreinterpret_u8_s8(vmovn_s16(vcombine_s16(vmovn_s32(q2[0]), vmovn_s32(q2[1])))));
  }
#endif
  for (; c < C; c++) y[c] = (uint8_t)avg_round(acc[c], count);
}

static void run_pool(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, void *y,
                     int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const int u8 = IS_U8(plan), is_max = s->op == FIXQ_ENG_MAXPOOL;
  const size_t C = xt->c;
  if (is_max) {
    if (u8)
      max_pool(s, xt, yt, batch, x, y, (uint8_t *)acc, 1);
    else
      max_pool(s, xt, yt, batch, x, y, (uint8_t *)acc, 0);
    return;
  }
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        const size_t yo = ((n * yt->h + oy) * yt->w + ox) * C;
        const int32_t count = (int32_t)(u8 ? sum_pixel(s, xt, x, n, oy, ox, acc, 1)
                                           : sum_pixel(s, xt, x, n, oy, ox, acc, 0));
        avg_store(acc, C, count, (uint8_t *)y + yo); /* the low byte: (uint8_t) or (int8_t) alike */
      }
}


static void run_global_avgpool(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                               void *y, int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const int u8 = IS_U8(plan);
  const size_t C = xt->c, hw = xt->h * xt->w;
  uint32_t *sum = (uint32_t *)acc; /* numpy's int32 sum, modulo 2^32 */
  for (size_t n = 0; n < batch; n++) {
    for (size_t c = 0; c < C; c++) sum[c] = 0;
    for (size_t p = 0; p < hw; p++) {
      if (u8) {
        const uint8_t *r = (const uint8_t *)x + (n * hw + p) * C;
        for (size_t c = 0; c < C; c++) sum[c] += r[c];
      } else {
        const int8_t *r = (const int8_t *)x + (n * hw + p) * C;
        for (size_t c = 0; c < C; c++) sum[c] += (uint32_t)(int32_t)r[c];
      }
    }
    for (size_t c = 0; c < C; c++) fixq__store(y, plan->dtype, n * C + c, avg_round((int32_t)sum[c], (int32_t)hw));
  }
}


#define FIXQ_ENG_LOOPS_INIT {im2col, depthwise, run_clamp, run_pool, run_global_avgpool}

#endif
