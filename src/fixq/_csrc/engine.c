/* The static int8 model executor: fixq_engine.h.  Each step is the C form of
 * one rule of docs/engine.md section 3, bit for bit the numpy path of
 * fixq.model (Model._static_step). */
#include <string.h>

#include "fixq_engine.h"
#include "fixq_internal.h"

#define IS_U8(plan) ((plan)->dtype == FIXQ_UINT8)

static inline int32_t load_q(const void *p, size_t i, int u8) {
  return u8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

static size_t numel(const fixq_eng_tensor *t) { return t->h * t->w * t->c; }

/* (in + 2 pad - dil (k - 1) - 1) / stride + 1, or 0 when the window does not fit */
static size_t out_size(size_t in, size_t k, size_t s, size_t p, size_t d) {
  const size_t span = d * (k - 1) + 1;
  if (k == 0 || s == 0 || d == 0 || in + 2 * p < span) return 0;
  return (in + 2 * p - span) / s + 1;
}

/* ---- checks ---------------------------------------------------------------- */

static int check_step(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  if (s->out < 0 || (size_t)s->out >= plan->n_tensors || s->n_in == 0 || s->in == NULL) return 0;
  const fixq_eng_tensor *y = &plan->tensors[s->out];
  if (y->esize != 1) return 0;
  for (size_t i = 0; i < s->n_in; i++) {
    if (s->in[i] < 0 || (size_t)s->in[i] >= plan->n_tensors || s->in[i] == s->out) return 0;
    if (plan->tensors[s->in[i]].esize != (s->op == FIXQ_ENG_QUANTIZE ? 4u : 1u)) return 0;
  }
  const fixq_eng_tensor *x = &plan->tensors[s->in[0]];
  const size_t want_in = s->op == FIXQ_ENG_ELTWISE ? 2 : s->op == FIXQ_ENG_CONCAT ? s->n_in : 1;
  if (s->n_in != want_in || (s->op == FIXQ_ENG_CONCAT && s->n_in < 2)) return 0;
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
    case FIXQ_ENG_CLAMP:
      return x->h == y->h && x->w == y->w && x->c == y->c;
    case FIXQ_ENG_ELTWISE: {
      const fixq_eng_tensor *b = &plan->tensors[s->in[1]];
      return s->eltwise != NULL && numel(x) == numel(y) && numel(b) == numel(y);
    }
    case FIXQ_ENG_GEMM: {
      const size_t g = s->groups;
      if (g == 0 || x->c % g || y->c % g || s->packed == NULL || s->bias == NULL) return 0;
      if (s->rq_channels != 1 && s->rq_channels != y->c) return 0;
      for (size_t k = 0; k < g; k++)
        if (s->packed[k] == NULL || s->packed[k]->k != s->kh * s->kw * (x->c / g) || s->packed[k]->n != y->c / g)
          return 0;
      return y->h == out_size(x->h, s->kh, s->sh, s->ph, s->dh) && y->w == out_size(x->w, s->kw, s->sw, s->pw, s->dw);
    }
    case FIXQ_ENG_DEPTHWISE:
      if (s->groups == 0 || y->c != x->c * s->groups || s->taps == NULL || s->bias == NULL) return 0;
      if (s->rq_channels != y->c) return 0;
      return y->h == out_size(x->h, s->kh, s->sh, s->ph, s->dh) && y->w == out_size(x->w, s->kw, s->sw, s->pw, s->dw);
    case FIXQ_ENG_MAXPOOL:
    case FIXQ_ENG_AVGPOOL:
      return y->c == x->c && y->h == out_size(x->h, s->kh, s->sh, s->ph, 1) &&
             y->w == out_size(x->w, s->kw, s->sw, s->pw, 1);
    case FIXQ_ENG_GLOBAL_AVGPOOL:
      return y->h == 1 && y->w == 1 && y->c == x->c && x->h * x->w > 0;
    case FIXQ_ENG_FLATTEN:
      return y->h == 1 && y->w == 1 && y->c == numel(x);
    case FIXQ_ENG_CONCAT: {
      if (s->axis < 1 || s->axis > 3 || s->in_zp == NULL || s->in_rq == NULL) return 0;
      size_t total = 0;
      for (size_t i = 0; i < s->n_in; i++) {
        const fixq_eng_tensor *t = &plan->tensors[s->in[i]];
        const size_t d[3] = {t->h, t->w, t->c}, e[3] = {y->h, y->w, y->c};
        for (size_t a = 1; a <= 3; a++)
          if (a != s->axis && d[a - 1] != e[a - 1]) return 0;
        total += d[s->axis - 1];
        if (s->in_rq[i].zero_point != NULL && fixq__check_requant(&s->in_rq[i], 1, plan->dtype) != FIXQ_OK) return 0;
      }
      return total == (s->axis == 1 ? y->h : s->axis == 2 ? y->w : y->c);
    }
  }
  return 0;
}

fixq_status fixq_eng_check(const fixq_eng_plan *plan, size_t *bad_step) {
  *bad_step = 0;
  if (plan == NULL || (plan->dtype != FIXQ_INT8 && plan->dtype != FIXQ_UINT8) || plan->tensors == NULL ||
      (plan->n_steps > 0 && plan->steps == NULL))
    return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < plan->n_steps; i++)
    if (!check_step(plan, &plan->steps[i])) {
      *bad_step = i;
      return FIXQ_ERR_INVALID_ARGUMENT;
    }
  return FIXQ_OK;
}

/* ---- scratch ------------------------------------------------------------- */

static int gemm_is_direct(const fixq_eng_step *s) {
  return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
}

static size_t step_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch) {
  const fixq_eng_tensor *x = &plan->tensors[s->in[0]], *y = &plan->tensors[s->out];
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
      return batch * numel(y);
    case FIXQ_ENG_GEMM:
      return gemm_is_direct(s) ? 0 : batch * y->h * y->w * s->kh * s->kw * (x->c / s->groups);
    case FIXQ_ENG_DEPTHWISE:
      return batch * numel(y) * sizeof(int32_t);
    case FIXQ_ENG_MAXPOOL:
    case FIXQ_ENG_AVGPOOL:
      return y->c * sizeof(int32_t);
    case FIXQ_ENG_CONCAT: {
      size_t m = 0;
      for (size_t i = 0; i < s->n_in; i++)
        if (numel(&plan->tensors[s->in[i]]) > m) m = numel(&plan->tensors[s->in[i]]);
      return batch * m * (sizeof(int32_t) + 1);
    }
    default:
      return 0;
  }
}

size_t fixq_eng_scratch_bytes(const fixq_eng_plan *plan, size_t batch) {
  size_t m = 0;
  for (size_t i = 0; i < plan->n_steps; i++) {
    const size_t b = step_scratch(plan, &plan->steps[i], batch);
    if (b > m) m = b;
  }
  for (size_t t = 0; t < plan->n_tensors; t++) /* fixq_eng_emit of a 4-D output */
    if (batch * numel(&plan->tensors[t]) > m) m = batch * numel(&plan->tensors[t]);
  return m;
}

/* ---- layout ---------------------------------------------------------------- */

/* [n][a][b] -> [n][b][a] for elements of `esize` bytes */
static void transpose(size_t n, size_t a, size_t b, size_t esize, const void *src, void *dst) {
  if (a == 1 || b == 1) {
    memcpy(dst, src, n * a * b * esize);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const char *s = (const char *)src + i * a * b * esize;
    char *d = (char *)dst + i * a * b * esize;
    if (esize == 1) {
      for (size_t r = 0; r < a; r++)
        for (size_t c = 0; c < b; c++) d[c * a + r] = s[r * b + c];
    } else {
      for (size_t r = 0; r < a; r++)
        for (size_t c = 0; c < b; c++) memcpy(d + (c * a + r) * esize, s + (r * b + c) * esize, esize);
    }
  }
}

/* ---- steps ----------------------------------------------------------------- */

/* model.py _prepared_quantize after graph.to_internal: quantize, then NCHW -> NHWC */
static fixq_status run_quantize(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const float *x,
                                void *y, void *scratch) {
  const fixq_eng_tensor *t = &plan->tensors[s->out];
  const int32_t lo = IS_U8(plan) ? 0 : INT8_MIN, hi = IS_U8(plan) ? UINT8_MAX : INT8_MAX;
  const int direct = t->c == 1 || t->h * t->w == 1;
  const fixq_status st =
      fixq_quantize_f32(x, direct ? y : scratch, plan->dtype, 1, 1, batch * numel(t), &s->scale, &s->zp, lo, hi);
  if (st == FIXQ_OK && !direct) transpose(batch, t->c, t->h * t->w, 1, scratch, y);
  return st;
}

/* graph.im2col of group g: patches in (kh, kw, c) order, padding = zp; with
 * one group and no column dilation the taps of a kernel row inside the input
 * are one run of bytes */
static void im2col(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt, size_t batch,
                   const uint8_t *x, size_t g, uint8_t *cols) {
  const size_t C = xt->c, cg = C / s->groups, row = s->kh * s->kw * cg;
  const int runs = cg == C && s->dw == 1;
  const uint8_t pad = (uint8_t)s->zp;
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        uint8_t *d = cols + ((n * yt->h + oy) * yt->w + ox) * row;
        /* the taps j in [j0, j1) lie inside the input's columns */
        const ptrdiff_t x0 = (ptrdiff_t)(ox * s->sw) - (ptrdiff_t)s->pw;
        size_t j0 = 0, j1 = s->kw;
        while (j0 < s->kw && x0 + (ptrdiff_t)(j0 * s->dw) < 0) j0++;
        while (j1 > j0 && x0 + (ptrdiff_t)((j1 - 1) * s->dw) >= (ptrdiff_t)xt->w) j1--;
        for (size_t i = 0; i < s->kh; i++, d += s->kw * cg) {
          const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + i * s->dh) - (ptrdiff_t)s->ph;
          if (iy < 0 || iy >= (ptrdiff_t)xt->h || j0 == j1) {
            memset(d, pad, s->kw * cg);
            continue;
          }
          const uint8_t *src = x + ((n * xt->h + (size_t)iy) * xt->w) * C + g * cg;
          if (j0 > 0) memset(d, pad, j0 * cg);
          if (runs) {
            memcpy(d + j0 * cg, src + (size_t)(x0 + (ptrdiff_t)j0) * C, (j1 - j0) * C);
          } else {
            for (size_t j = j0; j < j1; j++)
              memcpy(d + j * cg, src + (size_t)(x0 + (ptrdiff_t)(j * s->dw)) * C, cg);
          }
          if (j1 < s->kw) memset(d + j1 * cg, pad, (s->kw - j1) * cg);
        }
      }
}

/* model.py conv / qlinear: one fixq_qgemm per group on the group's columns of y */
static fixq_status run_gemm(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                            uint8_t *y, uint8_t *scratch, int threads) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const size_t cg = xt->c / s->groups, og = yt->c / s->groups, m = batch * yt->h * yt->w;
  const int per_channel = s->rq_channels > 1;
  for (size_t g = 0; g < s->groups; g++) {
    const uint8_t *a;
    size_t lda;
    if (gemm_is_direct(s)) {
      a = x + g * cg;
      lda = xt->c;
    } else {
      im2col(s, xt, yt, batch, x, g, scratch);
      a = scratch;
      lda = s->kh * s->kw * cg;
    }
    fixq_requant rq = s->rq;
    if (per_channel) {
      const size_t off = g * og;
      if (rq.multiplier != NULL) rq.multiplier += off;
      if (rq.shift != NULL) rq.shift += off;
      if (rq.scale != NULL) rq.scale += off;
      rq.zero_point += off;
    }
    const fixq_status st = fixq_qgemm(m, a, plan->dtype, lda, s->zp, s->packed[g], s->bias + g * og, &rq,
                                      per_channel ? og : 1, y + g * og, plan->dtype, yt->c, threads);
    if (st != FIXQ_OK) return st;
  }
  return FIXQ_OK;
}

/* model.py depthwise: acc[o] = bias[o] + sum over the taps inside the input of
 * (x[o / mult] - zp) * w[o] (modulo 2^32, as numpy's int32), then the output stage */
static inline __attribute__((always_inline)) void depthwise_acc(const fixq_eng_step *s, const fixq_eng_tensor *xt,
                                                                const fixq_eng_tensor *yt, size_t batch,
                                                                const void *x, int32_t *acc, int u8) {
  const size_t C = xt->c, O = yt->c, mult = s->groups;
  const uint32_t zp = (uint32_t)s->zp;
  const int32_t zp16 = s->zp;
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        uint32_t *a = (uint32_t *)acc + ((n * yt->h + oy) * yt->w + ox) * O;
        for (size_t o = 0; o < O; o++) a[o] = (uint32_t)s->bias[o];
        for (size_t i = 0; i < s->kh; i++) {
          const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + i * s->dh) - (ptrdiff_t)s->ph;
          if (iy < 0 || iy >= (ptrdiff_t)xt->h) continue;
          for (size_t j = 0; j < s->kw; j++) {
            const ptrdiff_t ix = (ptrdiff_t)(ox * s->sw + j * s->dw) - (ptrdiff_t)s->pw;
            if (ix < 0 || ix >= (ptrdiff_t)xt->w) continue;
            const size_t base = ((n * xt->h + (size_t)iy) * xt->w + (size_t)ix) * C;
            const int8_t *w = s->taps + (i * s->kw + j) * O;
            if (mult == 1) {
              /* |x - zp| <= 255 and |w| <= 128: the product is exact in int16 (pmullw) */
              if (u8) {
                const uint8_t *xr = (const uint8_t *)x + base;
                for (size_t o = 0; o < O; o++)
                  a[o] += (uint32_t)(int32_t)(int16_t)((int16_t)((int32_t)xr[o] - zp16) * (int16_t)w[o]);
              } else {
                const int8_t *xr = (const int8_t *)x + base;
                for (size_t o = 0; o < O; o++)
                  a[o] += (uint32_t)(int32_t)(int16_t)((int16_t)((int32_t)xr[o] - zp16) * (int16_t)w[o]);
              }
            } else {
              for (size_t o = 0; o < O; o++)
                a[o] += ((uint32_t)load_q(x, base + o / mult, u8) - zp) * (uint32_t)(int32_t)w[o];
            }
          }
        }
      }
}

static fixq_status run_depthwise(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                 void *y, int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  if (IS_U8(plan))
    depthwise_acc(s, xt, yt, batch, x, acc, 1);
  else
    depthwise_acc(s, xt, yt, batch, x, acc, 0);
  return fixq_requantize_s32(acc, y, plan->dtype, batch * yt->h * yt->w, yt->c, 1, &s->rq);
}

/* model.py concat: inputs with other qparams requantized (fixq_requantize_s32
 * of q - zp_in), then copied block by block along the axis */
static fixq_status run_concat(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                              void *const *buffers, uint8_t *y, uint8_t *scratch) {
  const fixq_eng_tensor *yt = &plan->tensors[s->out];
  const size_t ydims[3] = {yt->h, yt->w, yt->c};
  size_t outer = batch, yinner = 1;
  for (size_t a = 1; a < s->axis; a++) outer *= ydims[a - 1];
  for (size_t a = s->axis; a <= 3; a++) yinner *= ydims[a - 1];
  size_t off = 0;
  for (size_t i = 0; i < s->n_in; i++) {
    const fixq_eng_tensor *t = &plan->tensors[s->in[i]];
    const size_t inner = yinner / ydims[s->axis - 1] * (s->axis == 1 ? t->h : s->axis == 2 ? t->w : t->c);
    const uint8_t *src = buffers[s->in[i]];
    if (s->in_rq[i].zero_point != NULL) {
      const size_t n = batch * numel(t);
      int32_t *acc = (int32_t *)scratch;
      uint8_t *q = scratch + n * sizeof(int32_t);
      for (size_t e = 0; e < n; e++) acc[e] = load_q(src, e, IS_U8(plan)) - s->in_zp[i];
      const fixq_status st = fixq_requantize_s32(acc, q, plan->dtype, 1, 1, n, &s->in_rq[i]);
      if (st != FIXQ_OK) return st;
      src = q;
    }
    for (size_t r = 0; r < outer; r++) memcpy(y + r * yinner + off, src + r * inner, inner);
    off += inner;
  }
  return FIXQ_OK;
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

/* model.py _avg_round: TFLite reference AveragePool, ties away from zero */
static inline int32_t avg_round(int32_t acc, int32_t count) {
  const int32_t h = count / 2;
  return acc >= 0 ? (acc + h) / count : -((h - acc) / count);
}

/* graph.window_reduce with max (padding lo) or sum (padding zp), tap by tap
 * over the channels of one output pixel (acc: C int32) */
static inline __attribute__((always_inline)) void pool_pixel(const fixq_eng_step *s, const fixq_eng_tensor *xt,
                                                             const void *x, size_t n, size_t oy, size_t ox,
                                                             int32_t *acc, int u8, int is_max) {
  const size_t C = xt->c;
  const int32_t pad = is_max ? s->lo : s->zp;
  size_t taps = 0;
  for (size_t c = 0; c < C; c++) acc[c] = is_max ? s->lo : 0;
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
        if (is_max)
          for (size_t c = 0; c < C; c++) acc[c] = r[c] > acc[c] ? r[c] : acc[c];
        else
          for (size_t c = 0; c < C; c++) acc[c] += r[c];
      } else {
        const int8_t *r = (const int8_t *)x + base;
        if (is_max)
          for (size_t c = 0; c < C; c++) acc[c] = r[c] > acc[c] ? r[c] : acc[c];
        else
          for (size_t c = 0; c < C; c++) acc[c] += r[c];
      }
    }
  }
  /* the padded taps: max(acc, lo) == acc; the sum gains zp for each */
  if (!is_max && taps < s->kh * s->kw)
    for (size_t c = 0; c < C; c++) acc[c] += pad * (int32_t)(s->kh * s->kw - taps);
}

static void run_pool(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, void *y,
                     int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const int u8 = IS_U8(plan), is_max = s->op == FIXQ_ENG_MAXPOOL;
  const size_t C = xt->c;
  const int32_t count = (int32_t)(s->kh * s->kw);
  for (size_t n = 0; n < batch; n++)
    for (size_t oy = 0; oy < yt->h; oy++)
      for (size_t ox = 0; ox < yt->w; ox++) {
        if (u8 && is_max) pool_pixel(s, xt, x, n, oy, ox, acc, 1, 1);
        else if (u8) pool_pixel(s, xt, x, n, oy, ox, acc, 1, 0);
        else if (is_max) pool_pixel(s, xt, x, n, oy, ox, acc, 0, 1);
        else pool_pixel(s, xt, x, n, oy, ox, acc, 0, 0);
        const size_t yo = ((n * yt->h + oy) * yt->w + ox) * C;
        if (u8) {
          uint8_t *d = (uint8_t *)y + yo;
          for (size_t c = 0; c < C; c++) d[c] = (uint8_t)(is_max ? acc[c] : avg_round(acc[c], count));
        } else {
          int8_t *d = (int8_t *)y + yo;
          for (size_t c = 0; c < C; c++) d[c] = (int8_t)(is_max ? acc[c] : avg_round(acc[c], count));
        }
      }
}

static void run_global_avgpool(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                               void *y) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const int u8 = IS_U8(plan);
  const size_t C = xt->c, hw = xt->h * xt->w;
  for (size_t n = 0; n < batch; n++)
    for (size_t c = 0; c < C; c++) {
      uint32_t sum = 0; /* numpy's int32 sum, modulo 2^32 */
      for (size_t p = 0; p < hw; p++) sum += (uint32_t)load_q(x, (n * hw + p) * C + c, u8);
      fixq__store(y, plan->dtype, n * C + c, avg_round((int32_t)sum, (int32_t)hw));
    }
}

static fixq_status run_step(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, void *const *buffers,
                            void *scratch, int threads) {
  const void *x = buffers[s->in[0]];
  void *y = buffers[s->out];
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
      return run_quantize(plan, s, batch, x, y, scratch);
    case FIXQ_ENG_GEMM:
      return run_gemm(plan, s, batch, x, y, scratch, threads);
    case FIXQ_ENG_DEPTHWISE:
      return run_depthwise(plan, s, batch, x, y, scratch);
    case FIXQ_ENG_ELTWISE: {
      const size_t n = batch * numel(xt);
      const ptrdiff_t one = 1;
      return fixq_eltwise_nd(s->eltwise, 1, &n, x, &one, buffers[s->in[1]], &one, y, &one);
    }
    case FIXQ_ENG_CONCAT:
      return run_concat(plan, s, batch, buffers, y, scratch);
    case FIXQ_ENG_CLAMP:
      run_clamp(plan, s, batch * numel(xt), x, y);
      return FIXQ_OK;
    case FIXQ_ENG_MAXPOOL:
    case FIXQ_ENG_AVGPOOL:
      run_pool(plan, s, batch, x, y, scratch);
      return FIXQ_OK;
    case FIXQ_ENG_GLOBAL_AVGPOOL:
      run_global_avgpool(plan, s, batch, x, y);
      return FIXQ_OK;
    case FIXQ_ENG_FLATTEN:
      transpose(batch, xt->h * xt->w, xt->c, 1, x, y);
      return FIXQ_OK;
  }
  return FIXQ_ERR_INVALID_ARGUMENT;
}

fixq_status fixq_eng_run(const fixq_eng_plan *plan, size_t batch, void *const *buffers, void *scratch, int threads,
                         size_t *failed_step) {
  for (size_t i = 0; i < plan->n_steps; i++) {
    const fixq_status st = run_step(plan, &plan->steps[i], batch, buffers, scratch, threads);
    if (st != FIXQ_OK) {
      *failed_step = i;
      return st;
    }
  }
  return FIXQ_OK;
}

fixq_status fixq_eng_emit(const fixq_eng_plan *plan, int32_t t, int four_d, size_t batch, const void *src,
                          float scale, int32_t zp, float *y, void *q, void *scratch) {
  if (t < 0 || (size_t)t >= plan->n_tensors || plan->tensors[t].esize != 1) return FIXQ_ERR_INVALID_ARGUMENT;
  const fixq_eng_tensor *tt = &plan->tensors[t];
  const size_t n = batch * numel(tt);
  const int nchw = four_d && tt->h * tt->w > 1 && tt->c > 1;
  if (q != NULL) { /* raw */
    if (nchw)
      transpose(batch, tt->h * tt->w, tt->c, 1, src, q);
    else
      memcpy(q, src, n);
    return FIXQ_OK;
  }
  if (nchw) {
    transpose(batch, tt->h * tt->w, tt->c, 1, src, scratch);
    src = scratch;
  }
  return fixq_dequantize(src, plan->dtype, y, 1, 1, n, &scale, &zp);
}
