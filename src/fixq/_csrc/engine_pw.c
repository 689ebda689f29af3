/* The C plan's 1x1 convolution of few output channels and the flat fp32 output stage (engine_pw.h): which
 * steps take them, on which path. */
#include "engine_pw.h"

typedef struct {
  fixq_eng_pw_fn pw;
  fixq_eng_flat_fn flat;
  unsigned lanes;  /* int32 lanes a vector of the flat stage */
  size_t min_rows; /* pixels from which the kernel pays (AVX2 lays the weights out each call: a linear at batch
                    * 1 runs the direct convolution's few-pixel tile for less) */
} pw_kernels;

static const pw_kernels kernel_table[FIXQ_ISA_COUNT] = {
    {NULL, NULL, 0, 0},
    {FIXQ__AVX2(fixq_eng_pw_fp32__avx2), FIXQ__AVX2(fixq_eng_flat__avx2), 8, 8},
    {FIXQ__AVX512VNNI(fixq_eng_pw_fp32__avx512vnni), FIXQ__AVX512VNNI(fixq_eng_flat__avx512vnni), 16, 1},
    {NULL, NULL, 0, 0},
    {NULL, NULL, 0, 0},
    {NULL, NULL, 0, 0},
};

int fixq__eng_flat_init(fixq_eng_flat *st, const fixq_requant *rq, size_t rq_channels, size_t n, fixq_dtype dt) {
  const pw_kernels *kern = &kernel_table[fixq__isa];
  if (kern->flat == NULL || rq->rounding != FIXQ_ROUND_FP32 || n == 0 || n > FIXQ_ENG_FLAT_MAX_N ||
      (dt != FIXQ_INT8 && dt != FIXQ_UINT8))
    return 0;
  const size_t per_channel = rq_channels != 1;
  for (size_t i = 1; per_channel && i < n; i++)
    if (rq->zero_point[i] != rq->zero_point[0]) return 0;
  st->n = n, st->dt = dt, st->zp = rq->zero_point[0], st->qmin = rq->qmin, st->run = kern->flat;
  st->max_less_zp = (float)(rq->qmax - rq->zero_point[0]);
  st->step4 = (unsigned)(4 * kern->lanes) % (unsigned)n;
  /* the first p >= 16 channels (p a multiple of n), then copies p apart, which vectorize */
  const size_t p = (16 + n - 1) / n * n;
  for (size_t i = 0, j = 0; i < p; i++, j = j + 1 == n ? 0 : j + 1) st->scale[i] = rq->scale[per_channel * j];
  for (size_t i = p; i < n + FIXQ_ENG_FLAT_RUN; i++) st->scale[i] = st->scale[i - p];
  return 1;
}

int fixq__eng_pw(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *x, uint8_t *y,
                 int threads) {
  const fixq_packed_b *b = s->packed[0];
  const pw_kernels *kern = &kernel_table[fixq__isa];
  if (kern->pw == NULL || m < kern->min_rows || s->groups != 1 || s->target != NULL ||
      s->rq.rounding != FIXQ_ROUND_FP32 || !s->acc_fits ||
      b->zero_point_nonzero || b->k > FIXQ__DIRECT_K_MAX || b->n > FIXQ_ENG_PW_MAX_N ||
      (plan->dtype != FIXQ_INT8 && plan->dtype != FIXQ_UINT8) ||
      (threads > 1 && (double)m * (double)b->k * (double)b->n >= 2.0 * FIXQ__MACS_PER_THREAD))
    return 0;
  fixq_eng_flat st;
  if (!fixq__eng_flat_init(&st, &s->rq, s->rq_channels, b->n, plan->dtype)) return 0;
  kern->pw(m, x, plan->dtype, s->zp, b, s->bias, &st, y);
  return 1;
}
