/* The inner loops of the C executor (engine.c), compiled once per ISA:
 * engine_loops__scalar.c and engine_loops__avx2.c include this file and
 * export its functions as fixq_eng_loops (the compiler vectorizes them with
 * that file's flags; integer code, so every path gives the same bits). */
#ifndef FIXQ_ENGINE_LOOPS_H_
#define FIXQ_ENGINE_LOOPS_H_

#include <string.h>

#include "fixq_engine.h"
#include "fixq_internal.h"

#define IS_U8(plan) ((plan)->dtype == FIXQ_UINT8)
#define ENG_INLINE static inline __attribute__((always_inline))

/* Copies n bytes in 16-byte moves: writes up to 15 bytes past d + n and reads
 * up to 15 past src + n (the caller leaves that slack) */
ENG_INLINE void copy_over(uint8_t *d, const uint8_t *src, size_t n) {
  for (size_t i = 0; i < n; i += 16) memcpy(d + i, src + i, 16);
}

/* memcpy of a short row without a library call: the last move overlaps the
 * one before it */
ENG_INLINE void copy_exact(uint8_t *d, const uint8_t *src, size_t n) {
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
}

static inline int32_t load_q(const void *p, size_t i, int u8) {
  return u8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

static size_t numel(const fixq_eng_tensor *t) { return t->h * t->w * t->c; }

/* model.py _avg_round: TFLite reference AveragePool, ties away from zero */
static inline int32_t avg_round(int32_t acc, int32_t count) {
  const int32_t h = count / 2;
  return acc >= 0 ? (acc + h) / count : -((h - acc) / count);
}


/* A padded sample: img holds (h + 2 ph) x (w + 2 pw) x c bytes and
 * FIXQ_ENG_IM2COL_SLACK more; pad_image fills it with the padding value once,
 * pad_sample copies sample n of x into its interior. */
#define FIXQ_ENG_IM2COL_SLACK 16
ENG_INLINE void pad_image(const fixq_eng_step *s, const fixq_eng_tensor *xt, uint8_t *img, uint8_t pad) {
  memset(img, pad, (xt->h + 2 * s->ph) * (xt->w + 2 * s->pw) * xt->c + FIXQ_ENG_IM2COL_SLACK);
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
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++)
        for (size_t i = 0; i < s->kh; i++) {
          const uint8_t *src = img + ((oy * s->sh + i * s->dh) * PW + ox * s->sw) * C + g * cg;
          if (runs) {
            copy_over(d, src, run);
            d += run;
          } else {
            for (size_t j = 0; j < s->kw; j++, d += cg) copy_over(d, src + j * s->dw * C, cg);
          }
        }
  }
}


/* model.py depthwise: acc[o] = bias[o] + sum over the taps of
 * (x[o / mult] - zp) * w[o] (modulo 2^32, as numpy's int32), then the output
 * stage.  The taps read a padded copy of the sample (padding zp adds
 * (zp - zp) * w = 0, as numpy's windows do).  One output pixel, channels
 * [o0, o0 + nb), nb <= 16: the block of accumulators stays in registers. */
ENG_INLINE void dw_block(const fixq_eng_step *s, size_t C, size_t PW, size_t O, const uint8_t *img, size_t oy,
                         size_t ox, size_t o0, size_t nb, uint32_t *a, int u8) {
  const size_t mult = s->groups;
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

ENG_INLINE void depthwise_acc(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt,
                              size_t batch, const uint8_t *x, int32_t *acc, uint8_t *img, int u8) {
  const size_t O = yt->c, C = xt->c, PW = xt->w + 2 * s->pw;
  pad_image(s, xt, img, (uint8_t)s->zp);
  for (size_t n = 0; n < batch; n++) {
    pad_sample(s, xt, x, n, img);
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        uint32_t *a = (uint32_t *)acc + ((n * yt->h + oy) * yt->w + ox) * O;
        size_t o0 = 0;
        for (; o0 + 16 <= O; o0 += 16) dw_block(s, C, PW, O, img, oy, ox, o0, 16, a, u8);
        if (o0 < O) dw_block(s, C, PW, O, img, oy, ox, o0, O - o0, a, u8);
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


/* graph.window_reduce with sum (padding zp), tap by tap over the channels of
 * one output pixel (acc: C int32) */
ENG_INLINE void sum_pixel(const fixq_eng_step *s, const fixq_eng_tensor *xt, const void *x, size_t n, size_t oy,
                          size_t ox, int32_t *acc, int u8) {
  const size_t C = xt->c;
  size_t taps = 0;
  for (size_t c = 0; c < C; c++) acc[c] = 0;
  for (size_t i = 0; i < s->kh; i++) {
    const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + i) - (ptrdiff_t)s->ph;
    if (iy < 0 || iy >= (ptrdiff_t)xt->h) continue;
    for (size_t j = 0; j < s->kw; j++) {
      const ptrdiff_t ix = (ptrdiff_t)(ox * s->sw + j) - (ptrdiff_t)s->pw;
      if (ix < 0 || ix >= (ptrdiff_t)xt->w) continue;
      const size_t base = ((n * xt->h + (size_t)iy) * xt->w + (size_t)ix) * C;
      taps++;
      if (u8) {
        const uint8_t *r = (const uint8_t *)x + base;
        for (size_t c = 0; c < C; c++) acc[c] += r[c];
      } else {
        const int8_t *r = (const int8_t *)x + base;
        for (size_t c = 0; c < C; c++) acc[c] += r[c];
      }
    }
  }
  /* each padded tap adds zp */
  if (taps < s->kh * s->kw)
    for (size_t c = 0; c < C; c++) acc[c] += s->zp * (int32_t)(s->kh * s->kw - taps);
}

/* maxpool on the integers themselves: each output row starts at lo (the
 * padding) and takes the max with every tap inside the input */
ENG_INLINE void max_pool(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt, size_t batch,
                         const void *x, void *y, int u8) {
  const size_t C = xt->c;
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        const size_t yo = ((n * yt->h + oy) * yt->w + ox) * C;
        uint8_t *du = (uint8_t *)y + yo;
        int8_t *ds = (int8_t *)y + yo;
        for (size_t c = 0; c < C; c++) {
          if (u8) du[c] = (uint8_t)s->lo;
          else ds[c] = (int8_t)s->lo;
        }
        for (size_t i = 0; i < s->kh; i++) {
          const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + i) - (ptrdiff_t)s->ph;
          if (iy < 0 || iy >= (ptrdiff_t)xt->h) continue;
          for (size_t j = 0; j < s->kw; j++) {
            const ptrdiff_t ix = (ptrdiff_t)(ox * s->sw + j) - (ptrdiff_t)s->pw;
            if (ix < 0 || ix >= (ptrdiff_t)xt->w) continue;
            const size_t base = ((n * xt->h + (size_t)iy) * xt->w + (size_t)ix) * C;
            if (u8) {
              const uint8_t *r = (const uint8_t *)x + base;
              for (size_t c = 0; c < C; c++) du[c] = r[c] > du[c] ? r[c] : du[c];
            } else {
              const int8_t *r = (const int8_t *)x + base;
              for (size_t c = 0; c < C; c++) ds[c] = r[c] > ds[c] ? r[c] : ds[c];
            }
          }
        }
      }
}

static void run_pool(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, void *y,
                     int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const int u8 = IS_U8(plan), is_max = s->op == FIXQ_ENG_MAXPOOL;
  const size_t C = xt->c;
  const int32_t count = (int32_t)(s->kh * s->kw);
  if (is_max) {
    if (u8)
      max_pool(s, xt, yt, batch, x, y, 1);
    else
      max_pool(s, xt, yt, batch, x, y, 0);
    return;
  }
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        const size_t yo = ((n * yt->h + oy) * yt->w + ox) * C;
        if (u8) {
          sum_pixel(s, xt, x, n, oy, ox, acc, 1);
          uint8_t *d = (uint8_t *)y + yo;
          for (size_t c = 0; c < C; c++) d[c] = (uint8_t)avg_round(acc[c], count);
        } else {
          sum_pixel(s, xt, x, n, oy, ox, acc, 0);
          int8_t *d = (int8_t *)y + yo;
          for (size_t c = 0; c < C; c++) d[c] = (int8_t)avg_round(acc[c], count);
        }
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
