/* Sizes of a step's buffers, shared by engine.c (which runs the steps) and engine_check.c (which checks a plan
 * and sizes its scratch). */
#ifndef FIXQ_ENGINE_SIZES_H
#define FIXQ_ENGINE_SIZES_H

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

/* Bytes of the AVX-512 VNNI depthwise's map of tap triples (engine_dwconv__avx512vnni.c): at stride 1 across, for
 * each padded input row each output lane (an output row's W C values), else for each output row each padded input
 * column's lanes (W C values), 4 bytes a lane, rounded up to 16 lanes; then 8 arrays of C + 16 int32 (the weights,
 * bias and output stage per lane).  0 for the steps it does not run (other than 3x3 of multiplier 1 and strides
 * up to 2) */
static size_t dw_triples_bytes(const fixq_eng_step *s, const fixq_eng_tensor *x, const fixq_eng_tensor *y) {
  if (s->kh != 3 || s->kw != 3 || s->sh > 2 || s->sw > 2 || s->groups != 1) return 0;
  const size_t rows = s->sw == 1 ? add_sz(x->h, mul_sz(2, s->ph)) : y->h;
  const size_t lanes = mul_sz(s->sw == 1 ? y->w : add_sz(x->w, mul_sz(2, s->pw)), y->c);
  return add_sz(mul_sz(mul_sz(rows, add_sz(lanes, 15) / 16), 64), mul_sz(add_sz(y->c, 16), 8 * sizeof(int32_t)));
}

/* A 1x1 convolution of stride 1 without padding: its NHWC input is the GEMM's A as it is */
static int gemm_is_direct(const fixq_eng_step *s) {
  return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
}

#endif
