/* The C plan's target forms element by element (engine_targets.h): the
 * contract the SIMD files reproduce bit for bit. */
#include "engine_targets.h"

static void gemm_scalar(const fixq_eng_target *t, fixq_dtype dt, size_t m, size_t n, size_t c0, const int32_t *acc,
                        size_t lda, uint8_t *y, size_t ldy) {
  for (size_t r = 0; r < m; r++)
    for (size_t j = 0; j < n; j++) {
      const size_t c = t->channels == 1 ? 0 : c0 + j;
      const int64_t v = acc[r * lda + j];
      fixq__store(y, dt, r * ldy + j,
                  t->form == FIXQ_ENG_T_RUY_X86
                      ? fixq__eng_ruy_x86_one(v, t->multiplier[c], t->shift[c], t->out_zp, t->lo, t->hi)
                      : fixq__eng_float64_away_one(v, t->real[c], t->out_zp, t->lo, t->hi));
    }
}

static void eltwise_scalar(const fixq_eng_target *t, fixq_dtype dt, size_t n, const void *a, const void *b,
                           void *y) {
  for (size_t i = 0; i < n; i++)
    fixq__store(y, dt, i, fixq__eng_eltwise_one(t, fixq__eng_load_q(a, i, dt), fixq__eng_load_q(b, i, dt)));
}

static int quantize_away_scalar(int form, float scale, int32_t zp, fixq_dtype dt, int32_t lo, int32_t hi, size_t n,
                                const float *x, void *y) {
  for (size_t i = 0; i < n; i++) {
    int32_t q;
    if (fixq__eng_quantize_away_one(form, x[i], scale, zp, lo, hi, &q)) return 1;
    fixq__store(y, dt, i, q);
  }
  return 0;
}

const fixq_eng_targets fixq_eng_targets__scalar = {gemm_scalar, eltwise_scalar, quantize_away_scalar};
