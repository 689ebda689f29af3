/* The runtimes' arithmetic that fixq's kernels lack (fixq.targets, docs/conformance.md), element by
 * element as each runtime computes it: the executor's (engine.c) MEAN and requantize forms, and PAD (the add /
 * mul / sub and GEMM epilogue forms: engine_targets.h and its per-ISA files). */
#include <math.h>
#include <string.h>

#include "engine_loops.h"
#include "engine_targets.h"

/* TFLite's MultiplyByQuantizedMultiplier4Rows (its NEON loops, which the x86 build runs through
 * NEON_2_SSE): vqrdmulh of x << left (wrapping), then vrshl: both steps ties toward +inf */
static int32_t neon_mbqm(int32_t x, int32_t m, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  const int64_t t = fixq__srdhm((int32_t)((uint32_t)x << left), m);
  return (int32_t)((t + ((INT64_C(1) << right) >> 1)) >> right);
}

/* fixq.targets' MEAN over h x w (TFLite optimized, XNNPACK): the sum of the raw q per channel */
void fixq__eng_global_avgpool_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                     const void *x, void *y) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const fixq_eng_target *t = s->target;
  const size_t C = xt->c, hw = xt->h * xt->w;
  const int u8 = IS_U8(plan);
  for (size_t n = 0; n < batch; n++)
    for (size_t c = 0; c < C; c++) {
      int32_t sum = 0;
      for (size_t p = 0; p < hw; p++) sum += load_q(x, (n * hw + p) * C + c, u8);
      int64_t q;
      if (t->form == FIXQ_ENG_T_XNN_MEAN)
        q = fixq__eng_float_to_i64(rintf((float)sum * t->scale + t->offset));
      else
        q = (int64_t)(c < t->split ? neon_mbqm(sum, t->multiplier[0], t->shift[0])
                                   : fixq__mbqm_double(sum, t->multiplier[0], t->shift[0])) + t->bias;
      fixq__store(y, plan->dtype, n * C + c, fixq__eng_saturate(q, t->lo, t->hi));
    }
}

/* fixq.targets' requantize8 of TFLite (Requantize: NEON loop, then scalar) and XNNPACK (qs8-vcvt) */
void fixq__eng_requantize_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                 void *y) {
  const fixq_eng_target *t = s->target;
  const size_t per = numel(&plan->tensors[s->in[0]]);
  const int u8 = IS_U8(plan);
  for (size_t n = 0; n < batch; n++)
    for (size_t i = 0; i < per; i++) {
      const int32_t v = load_q(x, n * per + i, u8) - t->a_zp;
      int64_t q;
      if (t->form == FIXQ_ENG_T_XNN_REQUANT)
        q = (((int64_t)v * t->a_mult + 128) >> 8) + t->out_zp;
      else
        q = (int64_t)(i < t->split ? neon_mbqm(v, t->multiplier[0], t->shift[0])
                                   : fixq__mbqm_double(v, t->multiplier[0], t->shift[0])) + t->out_zp;
      fixq__store(y, plan->dtype, n * per + i, fixq__eng_saturate(q, t->lo, t->hi));
    }
}

/* A sample copied into a larger one at (ph, pw), the rest zp (TFLite PAD with the output's zero point) */
void fixq__eng_pad(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x, uint8_t *y) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  memset(y, (uint8_t)s->zp, batch * numel(yt));
  for (size_t n = 0; n < batch; n++)
    for (size_t r = 0; r < xt->h; r++)
      memcpy(y + ((n * yt->h + r + s->ph) * yt->w + s->pw) * yt->c, x + (n * xt->h + r) * xt->w * xt->c,
             xt->w * xt->c);
}
