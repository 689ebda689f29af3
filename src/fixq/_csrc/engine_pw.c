/* The C plan's 1x1 convolution of few output channels (engine_pw.h): which steps take it, on which path. */
#include "engine_pw.h"

static const fixq_eng_pw_fn pw_table[FIXQ_ISA_COUNT] = {
    NULL, NULL, FIXQ__AVX512VNNI(fixq_eng_pw_fp32__avx512vnni), NULL, NULL, NULL};

int fixq__eng_pw(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *x, uint8_t *y,
                 int threads) {
  const fixq_packed_b *b = s->packed[0];
  if (pw_table[fixq__isa] == NULL || s->groups != 1 || s->target != NULL || s->rq.rounding != FIXQ_ROUND_FP32 ||
      !s->acc_fits || b->zero_point_nonzero || b->k > FIXQ__DIRECT_K_MAX || b->n > FIXQ_ENG_PW_MAX_N ||
      (plan->dtype != FIXQ_INT8 && plan->dtype != FIXQ_UINT8) ||
      (threads > 1 && (double)m * (double)b->k * (double)b->n >= 2.0 * FIXQ__MACS_PER_THREAD))
    return 0;
  pw_table[fixq__isa](m, x, plan->dtype, s->zp, b, s->bias, &s->rq, s->rq_channels, y);
  return 1;
}
