/* Sizes of a step's buffers, shared by engine.c (which runs the steps) and engine_check.c (which checks a plan
 * and sizes its scratch). */
#ifndef FIXQ_ENGINE_SIZES_H
#define FIXQ_ENGINE_SIZES_H

#include <string.h>

#include "engine_loops.h" /* FIXQ_ENG_IM2COL_SLACK */
#include "fixq_engine.h"
#include "fixq_internal.h"

/* Saturating size arithmetic: SIZE_MAX for a result past PTRDIFF_MAX (fixq__mul_size / fixq__add_size), and
 * SIZE_MAX in gives SIZE_MAX out, so a chain of them is checked once at its end. */
static size_t mul_sz(size_t a, size_t b) {
  size_t r;
  return fixq__mul_size(a, b, &r) ? r : SIZE_MAX;
}
static size_t add_sz(size_t a, size_t b) {
  size_t r;
  return fixq__add_size(a, b, &r) ? r : SIZE_MAX;
}

/* Bytes of one padded sample of x (pad_image), SIZE_MAX past PTRDIFF_MAX */
static size_t padded_bytes(const fixq_eng_step *s, const fixq_eng_tensor *x) {
  return add_sz(mul_sz(mul_sz(add_sz(x->h, mul_sz(2, s->ph)), add_sz(x->w, mul_sz(2, s->pw))), x->c),
                FIXQ_ENG_IM2COL_SLACK);
}

/* The AVX-512 VNNI depthwise's map of tap triples (engine_dwconv__avx512vnni.c), for 3x3 steps of strides up
 * to 2: at stride 1 across, a ring of the padded input rows that a band of FIXQ_DW_BAND output rows
 * reads, each row holding each output lane (an output row's W C values); else one output row's map, each padded
 * input column's lanes (W C values); 4 bytes a lane, rows rounded up to 16 lanes.  After it, 8 arrays of C + 16
 * int32 (the weights, bias and output stage per lane). */
#define FIXQ_DW_BAND 4
static int dw_triples_takes(const fixq_eng_step *s) {
  return s->kh == 3 && s->kw == 3 && s->sh <= 2 && s->sw <= 2;
}
static size_t dw_triples_rows(const fixq_eng_step *s) {
  return s->sw == 1 ? add_sz(add_sz(mul_sz(FIXQ_DW_BAND - 1, s->sh), mul_sz(2, s->dh)), 1) : 1;
}
static size_t dw_triples_row_bytes(const fixq_eng_step *s, const fixq_eng_tensor *x, const fixq_eng_tensor *y) {
  const size_t lanes = mul_sz(s->sw == 1 ? y->w : add_sz(x->w, mul_sz(2, s->pw)), y->c);
  return mul_sz(add_sz(lanes, 15) / 16, 64);
}
/* Bytes of the map and its arrays (room for the AVX2 map of pairs too: two rows a ring slot, then 11 arrays);
 * 0 for the steps it does not run */
static size_t dw_triples_bytes(const fixq_eng_step *s, const fixq_eng_tensor *x, const fixq_eng_tensor *y) {
  if (!dw_triples_takes(s)) return 0;
  return add_sz(mul_sz(mul_sz(2, dw_triples_rows(s)), dw_triples_row_bytes(s, x, y)),
                mul_sz(add_sz(y->c, 16), 11 * sizeof(int32_t)));
}

/* A 1x1 convolution of stride 1 without padding: its NHWC input is the GEMM's A as it is */
static int gemm_is_direct(const fixq_eng_step *s) {
  return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
}

/* The depthwise output stage's per-channel parameters in arrays of L = C + 16 after bias (zp, multiplier, shift,
 * scale), channel c repeated at c + C, c + 2C, ... up to L as the kernels' lanes read them, with bias (made by the
 * caller for channels 0 .. C - 1) repeated alike; r: the step's output stage pointing at them.  Shared by the
 * AVX2 and AVX-512 depthwise kernels. */
static void dw_params_wrap(const fixq_eng_step *s, size_t C, int32_t *bias, fixq_requant *r, fixq_rounding mode) {
  const size_t L = C + 16;
  int32_t *zp = bias + L, *mul = zp + L, *sh = mul + L;
  float *scale = (float *)(sh + L);
  memcpy(zp, s->rq.zero_point, C * sizeof(int32_t));
  if (mode == FIXQ_ROUND_FP32) memcpy(scale, s->rq.scale, C * sizeof(float));
  else {
    memcpy(mul, s->rq.multiplier, C * sizeof(int32_t));
    memcpy(sh, s->rq.shift, C * sizeof(int32_t));
  }
  for (size_t c = C; c < L; c++) {
    bias[c] = bias[c - C];
    zp[c] = zp[c - C];
    if (mode == FIXQ_ROUND_FP32) scale[c] = scale[c - C];
    else mul[c] = mul[c - C], sh[c] = sh[c - C];
  }
  *r = s->rq;
  r->zero_point = zp;
  r->multiplier = mul;
  r->shift = sh;
  r->scale = scale;
}

#endif
