/* The C plan's 1x1 convolution of few output channels and the flat fp32 output stage (engine_pw.h): which
 * steps take them, on which path. */
#include "engine_pw.h"

typedef struct {
  fixq_eng_pw_fn pw;
  void (*pairs)(fixq_eng_flat *st);
  fixq_eng_flat_fn flat;
} pw_kernels;

static const pw_kernels kernel_table[FIXQ_ISA_COUNT] = {
    {NULL, NULL, NULL},
    {FIXQ__AVX2(fixq_eng_pw_fp32__avx2), FIXQ__AVX2(fixq_eng_flat_pairs__avx2), FIXQ__AVX2(fixq_eng_flat__avx2)},
    {FIXQ__AVX512VNNI(fixq_eng_pw_fp32__avx512vnni), FIXQ__AVX512VNNI(fixq_eng_flat_pairs__avx512vnni),
     FIXQ__AVX512VNNI(fixq_eng_flat__avx512vnni)},
    {NULL, NULL, NULL},
    {NULL, NULL, NULL},
    {NULL, NULL, NULL},
};

int fixq__eng_flat_init(fixq_eng_flat *st, const fixq_requant *rq, size_t rq_channels, size_t n, fixq_dtype dt) {
  const pw_kernels *kern = &kernel_table[fixq__isa];
  if (kern->flat == NULL || rq->rounding != FIXQ_ROUND_FP32 || n == 0 || n > FIXQ_ENG_FLAT_MAX_N ||
      (dt != FIXQ_INT8 && dt != FIXQ_UINT8))
    return 0;
  const size_t per_channel = rq_channels != 1;
  st->n = n, st->dt = dt, st->qmin = rq->qmin, st->run = kern->flat;
  for (size_t i = 0, j = 0; i < n + FIXQ_ENG_FLAT_LANES; i++, j = j + 1 == n ? 0 : j + 1) { /* j: i % n */
    const size_t c = per_channel * j;
    st->scale[i] = rq->scale[c];
    st->max_less_zp[i] = (float)(rq->qmax - rq->zero_point[c]);
    st->zp[i] = rq->zero_point[c];
  }
  kern->pairs(st);
  return 1;
}

int fixq__eng_pw(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *x, uint8_t *y,
                 int threads) {
  const fixq_packed_b *b = s->packed[0];
  const fixq_eng_pw_fn pw = kernel_table[fixq__isa].pw;
  if (pw == NULL || s->groups != 1 || s->target != NULL || s->rq.rounding != FIXQ_ROUND_FP32 || !s->acc_fits ||
      b->zero_point_nonzero || b->k > FIXQ__DIRECT_K_MAX || b->n > FIXQ_ENG_PW_MAX_N ||
      (plan->dtype != FIXQ_INT8 && plan->dtype != FIXQ_UINT8) ||
      (threads > 1 && (double)m * (double)b->k * (double)b->n >= 2.0 * FIXQ__MACS_PER_THREAD))
    return 0;
  fixq_eng_flat st;
  if (!fixq__eng_flat_init(&st, &s->rq, s->rq_channels, b->n, plan->dtype)) return 0;
  pw(m, x, plan->dtype, s->zp, b, s->bias, &st, y);
  return 1;
}
