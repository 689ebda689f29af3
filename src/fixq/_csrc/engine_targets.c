/* The runtimes' arithmetic that fixq's kernels lack (fixq.targets, docs/conformance.md), element by
 * element as each runtime computes it: the executor's (engine.c) MEAN, requantize and SOFTMAX forms, PAD,
 * and the ELTWISE step's broadcasting (the add / mul / sub and GEMM epilogue forms: engine_targets.h and its
 * per-ISA files). */
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
    for (size_t c0 = 0; c0 < C; c0 += 64) { /* the sums of up to 64 channels, pixel by pixel (loops that vectorize) */
      const size_t nc = C - c0 < 64 ? C - c0 : 64;
      int32_t sums[64] = {0};
      for (size_t p = 0; p < hw; p++) {
        const size_t base = (n * hw + p) * C + c0;
        if (u8)
          for (size_t c = 0; c < nc; c++) sums[c] += ((const uint8_t *)x)[base + c];
        else
          for (size_t c = 0; c < nc; c++) sums[c] += ((const int8_t *)x)[base + c];
      }
      for (size_t c = c0; c < c0 + nc; c++) {
        const int32_t sum = sums[c - c0];
        int64_t q;
        if (t->form == FIXQ_ENG_T_XNN_MEAN)
          q = fixq__eng_float_to_i64(rintf((float)sum * t->scale + t->offset));
        else
          q = (int64_t)(c < t->split ? neon_mbqm(sum, t->multiplier[0], t->shift[0])
                                     : fixq__mbqm_double(sum, t->multiplier[0], t->shift[0])) + t->bias;
        fixq__store(y, plan->dtype, n * C + c, fixq__eng_saturate(q, t->lo, t->hi));
      }
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

/* gemmlowp fixedpoint.h on int32 raws, as fixq.targets._fixedpoint computes them: additions wrap */
static inline int32_t add_wrap(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

/* RoundingDivideByPOT in int64 (ties away from zero), for exponents past 31 too */
static inline int64_t rdbpot64(int64_t x, int e) {
  const int64_t mask = (INT64_C(1) << e) - 1;
  return (x >> e) + ((x & mask) > ((mask >> 1) + (x < 0)));
}

/* SaturatingRoundingMultiplyByPOT<e > 0> */
static inline int32_t sat_shl(int32_t x, int e) { return fixq__sat_i32((int64_t)x * (INT64_C(1) << e)); }

/* exp_on_interval_between_negative_one_quarter_and_0_excl */
static int32_t exp_quarter(int32_t a) {
  const int32_t constant_term = 1895147668, one_third = 715827883;
  const int32_t x = add_wrap(a, 1 << 28);
  const int32_t x2 = fixq__srdhm(x, x), x3 = fixq__srdhm(x2, x), x4 = fixq__srdhm(x2, x2);
  const int32_t x4_over_4 = (int32_t)rdbpot64(x4, 2);
  const int32_t poly = (int32_t)rdbpot64(add_wrap(fixq__srdhm(add_wrap(x4_over_4, x3), one_third), x2), 1);
  return add_wrap(constant_term, fixq__srdhm(constant_term, add_wrap(x, poly)));
}

/* exp_on_negative_values of a Q5.26 raw a <= 0: a Q0.31 raw */
static int32_t exp_on_negative_q5(int32_t a) {
  static const int32_t mult[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  const int32_t quarter = 1 << 24;
  const int32_t a_mod = add_wrap(a & (quarter - 1), -quarter);
  int32_t result = exp_quarter(sat_shl(a_mod, 5));
  const int32_t remainder = (int32_t)((uint32_t)a_mod - (uint32_t)a);
  for (int k = 0; k < 7; k++) /* the barrel shifter of exponents -2..4 */
    if (remainder & (INT32_C(1) << (24 + k))) result = fixq__srdhm(result, mult[k]);
  return a == 0 ? INT32_MAX : result;
}

/* one_over_one_plus_x_for_x_in_0_1 of a Q0.31 raw in [0, 1): Newton-Raphson in Q2.29 */
static int32_t one_over_one_plus_x(int32_t a) {
  const int64_t sum = (int64_t)a + INT32_MAX; /* RoundingHalfSum(a, One()) */
  const int32_t half_denominator = (int32_t)(sum >= 0 ? (sum + 1) / 2 : -((-sum + 1) / 2));
  int32_t x = add_wrap(1515870810, fixq__srdhm(half_denominator, -1010580540));
  for (int k = 0; k < 3; k++) {
    const int32_t t = add_wrap(1 << 29, -fixq__srdhm(half_denominator, x));
    x = add_wrap(x, sat_shl(fixq__srdhm(x, t), 2));
  }
  return sat_shl(x, 1);
}

/* The input difference to the row's max in Q5.26 (PreprocessSoftmaxScaling's multiplier) */
static inline int32_t softmax_exp(const fixq_eng_target *t, int32_t diff) {
  return exp_on_negative_q5(fixq__srdhm((int32_t)((int64_t)diff * (INT64_C(1) << t->shift[0])), t->multiplier[0]));
}

/* fixq.targets' softmax of TFLite: reference_ops::Softmax (fixed point) or optimized_ops::Softmax (table),
 * over each row of c values */
void fixq__eng_softmax_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                              void *y) {
  const fixq_eng_target *t = s->target;
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const size_t C = xt->c, rows = batch * xt->h * xt->w;
  const int u8 = IS_U8(plan);
  const int32_t qmin = u8 ? 0 : INT8_MIN, qmax = u8 ? UINT8_MAX : INT8_MAX;
  for (size_t r = 0; r < rows; r++) {
    const size_t base = r * C;
    int32_t mx = load_q(x, base, u8);
    for (size_t i = 1; i < C; i++) {
      const int32_t v = load_q(x, base + i, u8);
      mx = v > mx ? v : mx;
    }
    if (t->form == FIXQ_ENG_T_TFLITE_SOFTMAX_LUT) {
      float total = 0.0f; /* std::accumulate: in order */
      for (size_t i = 0; i < C; i++) total += t->table[mx - load_q(x, base + i, u8)];
      const float inv = 1.0f / (total * t->out_scale);
      for (size_t i = 0; i < C; i++) {
        const float p = t->table[mx - load_q(x, base + i, u8)] * inv;
        const int64_t q = fixq__eng_float_to_i64(u8 ? floorf(p + 0.5f) : roundf(p)) + t->out_zp;
        fixq__store(y, plan->dtype, base + i, fixq__eng_saturate(q, qmin, qmax));
      }
      continue;
    }
    int64_t total = 0; /* Q12.19 */
    for (size_t i = 0; i < C; i++) {
      const int32_t diff = load_q(x, base + i, u8) - mx;
      if (diff >= t->diff_min) total += rdbpot64(softmax_exp(t, diff), 12);
    }
    const int headroom = __builtin_clz((uint32_t)total);
    const int32_t shifted_minus_one = (int32_t)(((uint32_t)total << headroom) - (UINT32_C(1) << 31));
    const int32_t scale = one_over_one_plus_x(shifted_minus_one);
    const int exponent = 12 - headroom + 31 - 8;
    for (size_t i = 0; i < C; i++) {
      const int32_t diff = load_q(x, base + i, u8) - mx;
      int64_t q = qmin;
      if (diff >= t->diff_min) q = rdbpot64(fixq__srdhm(scale, softmax_exp(t, diff)), exponent) + qmin;
      fixq__store(y, plan->dtype, base + i, fixq__eng_saturate(q, qmin, qmax));
    }
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

void fixq__eng_dequantize_tflite(fixq_dtype dtype, size_t batch, size_t n, const void *q, float scale, int32_t zp,
                                 float *y) {
  const int u8 = dtype == FIXQ_UINT8;
  const size_t head = n / 8 * 8;
  const float offset = (float)(-(double)zp * (double)scale);
  for (size_t b = 0; b < batch; b++) {
    const size_t base = b * n;
    for (size_t i = 0; i < head; i++) y[base + i] = (float)load_q(q, base + i, u8) * scale + offset;
    for (size_t i = head; i < n; i++) y[base + i] = (float)(load_q(q, base + i, u8) - zp) * scale;
  }
}

/* ---- ELTWISE: engine_targets.h ---------------------------------------------- */

const fixq_eng_tensor *fixq__eng_elt_operand(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t k) {
  if (s->constant != NULL) return k == s->constant_at ? &s->constant_dims : &plan->tensors[s->in[0]];
  return &plan->tensors[s->in[k]];
}

int fixq__eng_elt_direct(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t k) {
  return (s->constant == NULL || k != s->constant_at) &&
         numel(fixq__eng_elt_operand(plan, s, k)) == numel(&plan->tensors[s->out]);
}

/* One operand of `batch` samples, sample after sample `stride` bytes apart (0: the plan's constant), as
 * numpy broadcasts it to y's shape */
static void broadcast_operand(const fixq_eng_tensor *a, const fixq_eng_tensor *y, size_t batch, const uint8_t *src,
                              size_t stride, uint8_t *dst) {
  const size_t sh = a->h == 1 ? 0 : a->w * a->c, sw = a->w == 1 ? 0 : a->c;
  for (size_t n = 0; n < batch; n++)
    for (size_t i = 0; i < y->h; i++)
      for (size_t j = 0; j < y->w; j++, dst += y->c) {
        const uint8_t *r = src + n * stride + i * sh + j * sw;
        if (a->c == 1)
          memset(dst, *r, y->c);
        else
          memcpy(dst, r, y->c);
      }
}

/* engine/steps.py binary_step: the operands broadcast, then the target's form (TFLite's optimized ADD / MUL:
 * the first `split` outputs of each run in its NEON form, the rest in the scalar loop's) or fixq_eltwise_nd */
fixq_status fixq__eng_eltwise(const fixq_eng_plan *plan, const fixq_eng_step *s, const fixq_eng_targets *targets,
                              size_t batch, void *const *buffers, uint8_t *y, uint8_t *scratch) {
  const fixq_eng_tensor *yt = &plan->tensors[s->out];
  const size_t n = batch * numel(yt);
  const uint8_t *op[2];
  for (size_t k = 0; k < 2; k++) {
    const int is_const = s->constant != NULL && k == s->constant_at;
    const uint8_t *src = is_const ? s->constant : buffers[s->in[s->constant != NULL ? 0 : k]];
    if (fixq__eng_elt_direct(plan, s, k)) {
      op[k] = src;
      continue;
    }
    const fixq_eng_tensor *t = fixq__eng_elt_operand(plan, s, k);
    broadcast_operand(t, yt, batch, src, is_const ? 0 : numel(t), scratch);
    op[k] = scratch;
    scratch += n;
  }
  const fixq_eng_target *t = s->target;
  if (t == NULL) {
    const ptrdiff_t one = 1;
    return fixq_eltwise_nd(s->eltwise, 1, &n, op[0], &one, op[1], &one, y, &one);
  }
  void (*const eltwise)(const fixq_eng_target *, fixq_dtype, size_t, const void *, const void *, void *) =
      targets->eltwise;
  if (t->run == 0) {
    eltwise(t, plan->dtype, n, op[0], op[1], y);
    return FIXQ_OK;
  }
  fixq_eng_target scalar = *t;
  scalar.neon = 0;
  for (size_t i = 0; i < n; i += t->run) {
    eltwise(t, plan->dtype, t->split, op[0] + i, op[1] + i, y + i);
    eltwise(&scalar, plan->dtype, t->run - t->split, op[0] + i + t->split, op[1] + i + t->split, y + i + t->split);
  }
  return FIXQ_OK;
}
