/* The C executor's plan checks and scratch sizes (fixq_engine.h): what fixq_eng_check proves of a plan before
 * engine.c runs its steps, and the scratch each step needs. */
#include "engine_conv.h"
#include "engine_loops.h"
#include "engine_sizes.h"
#include "engine_targets.h"

/* (in + 2 pad - dil (k - 1) - 1) / stride + 1, or 0 when the window does not fit or a term overflows */
static size_t out_size(size_t in, size_t k, size_t s, size_t p, size_t d) {
  if (k == 0 || s == 0 || d == 0) return 0;
  const size_t span = add_sz(mul_sz(d, k - 1), 1), padded = add_sz(in, mul_sz(2, p));
  if (span == SIZE_MAX || padded == SIZE_MAX || padded < span) return 0;
  return (padded - span) / s + 1;
}

/* A pool's output size with p before and p + extra after: (in + 2 p + extra - k) / stride + 1, 0 when the
 * window does not fit or a term overflows */
static size_t pool_out_size(size_t in, size_t k, size_t s, size_t p, size_t extra) {
  if (k == 0 || s == 0) return 0;
  const size_t padded = add_sz(add_sz(in, mul_sz(2, p)), extra);
  if (padded == SIZE_MAX || padded < k) return 0;
  return (padded - k) / s + 1;
}

/* The largest pool window (and global pool area) whose int32 sum of |q| <= 255 cannot wrap */
#define FIXQ_ENG_MAX_POOL_AREA ((size_t)1 << 23)

/* ---- checks ---------------------------------------------------------------- */

static size_t step_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch);

static int check_target_range(const fixq_eng_plan *plan, const fixq_eng_target *t) {
  const int32_t lo = IS_U8(plan) ? 0 : INT8_MIN, hi = IS_U8(plan) ? UINT8_MAX : INT8_MAX;
  return lo <= t->lo && t->lo <= t->hi && t->hi <= hi;
}

/* numpy's broadcasting of one sample: each dimension y's or 1 */
static int check_broadcast(const fixq_eng_tensor *a, const fixq_eng_tensor *y) {
  return (a->h == y->h || a->h == 1) && (a->w == y->w || a->w == 1) && (a->c == y->c || a->c == 1);
}

/* The TFLite ADD / SUB / MUL forms: three (ADD, SUB) or one (MUL) multipliers with shifts the element
 * function's shifts take; ADD and MUL's NEON loops (int8 only) by runs dividing a sample's size */
static int check_tflite_binary(const fixq_eng_plan *plan, const fixq_eng_target *t, size_t per_sample) {
  const int mul = t->form == FIXQ_ENG_T_TFLITE_MUL;
  if (t->multiplier == NULL || t->shift == NULL || t->channels != (mul ? 1u : 3u)) return 0;
  for (size_t i = 0; i < t->channels; i++)
    if (t->shift[i] < -31 || t->shift[i] > (mul ? 30 : 0)) return 0;
  if (t->form == FIXQ_ENG_T_TFLITE_SUB) return t->neon == 0 && t->run == 0;
  if (t->neon < 0 || t->neon > (mul ? 1 : 2) || (t->neon && IS_U8(plan))) return 0;
  return t->run == 0 ? t->neon == 0 : per_sample % t->run == 0 && t->split <= t->run;
}

static int check_step(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  if (s->out < 0 || (size_t)s->out >= plan->n_tensors || s->n_in == 0 || s->in == NULL) return 0;
  const fixq_eng_tensor *y = &plan->tensors[s->out];
  if (y->esize != 1) return 0;
  for (size_t i = 0; i < s->n_in; i++) {
    if (s->in[i] < 0 || (size_t)s->in[i] >= plan->n_tensors || s->in[i] == s->out) return 0;
    if (plan->tensors[s->in[i]].esize != (s->op == FIXQ_ENG_QUANTIZE ? 4u : 1u)) return 0;
  }
  const fixq_eng_tensor *x = &plan->tensors[s->in[0]];
  const size_t want_in = s->op == FIXQ_ENG_ELTWISE  ? (s->constant != NULL ? 1 : 2)
                         : s->op == FIXQ_ENG_CONCAT ? s->n_in
                                                    : 1;
  if (s->n_in != want_in || (s->op == FIXQ_ENG_CONCAT && s->n_in < 2)) return 0;
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
      if (s->form < FIXQ_ENG_Q_DIV_EVEN || s->form > FIXQ_ENG_Q_ZP_DIV_AWAY || !(s->scale > 0) || isinf(s->scale))
        return 0;
      return x->h == y->h && x->w == y->w && x->c == y->c;
    case FIXQ_ENG_CLAMP:
      return x->h == y->h && x->w == y->w && x->c == y->c;
    case FIXQ_ENG_ELTWISE: {
      if (s->constant != NULL) {
        const fixq_eng_tensor *k = &s->constant_dims;
        if (s->constant_at > 1 || k->esize != 1 || k->h == 0 || k->w == 0 || k->c == 0 ||
            mul_sz(mul_sz(k->h, k->w), k->c) == SIZE_MAX)
          return 0;
      }
      for (size_t k = 0; k < 2; k++)
        if (!fixq__eng_elt_direct(plan, s, k) && !check_broadcast(fixq__eng_elt_operand(plan, s, k), y)) return 0;
      if (step_scratch(plan, s, 1) == SIZE_MAX) return 0;
      if (s->target == NULL) return s->eltwise != NULL;
      const fixq_eng_target *t = s->target;
      if (!check_target_range(plan, t)) return 0;
      if (t->form == FIXQ_ENG_T_TFLITE_SUB || t->form == FIXQ_ENG_T_TFLITE_ADD || t->form == FIXQ_ENG_T_TFLITE_MUL)
        return check_tflite_binary(plan, t, numel(y));
      return t->form >= FIXQ_ENG_T_ORT_ADD && t->form <= FIXQ_ENG_T_XNN_MUL &&
             (t->form != FIXQ_ENG_T_XNN_ADD || (t->shift_bits >= 1 && t->shift_bits <= 31));
    }
    case FIXQ_ENG_GEMM: {
      const size_t g = s->groups;
      if (s->target != NULL) {
        const fixq_eng_target *t = s->target;
        if ((t->form != FIXQ_ENG_T_RUY_X86 && t->form != FIXQ_ENG_T_FLOAT64_AWAY) || !check_target_range(plan, t) ||
            (t->channels != 1 && t->channels != y->c))
          return 0;
        if (t->form == FIXQ_ENG_T_RUY_X86) {
          if (t->multiplier == NULL || t->shift == NULL) return 0;
          for (size_t c = 0; c < t->channels; c++)
            if (t->multiplier[c] < 0 || t->shift[c] > 30 || t->shift[c] < -62) return 0;
        } else {
          if (t->real == NULL) return 0;
          for (size_t c = 0; c < t->channels; c++) /* round() of a NaN product has no int32 */
            if (!(t->real[c] >= 0) || isinf(t->real[c])) return 0;
        }
      }
      if (g == 0 || x->c % g || y->c % g || s->packed == NULL || s->bias == NULL) return 0;
      if (s->target == NULL && ((s->rq_channels != 1 && s->rq_channels != y->c) ||
                                fixq__check_requant(&s->rq, s->rq_channels, plan->dtype) != FIXQ_OK))
        return 0; /* checked once here: run_gemm's fixq__qgemm_checked_rq does not */
      for (size_t k = 0; k < g; k++)
        if (s->packed[k] == NULL || s->packed[k]->k != mul_sz(mul_sz(s->kh, s->kw), x->c / g) ||
            s->packed[k]->n != y->c / g)
          return 0;
      if (step_scratch(plan, s, 1) == SIZE_MAX) return 0;
      return y->h == out_size(x->h, s->kh, s->sh, s->ph, s->dh) && y->w == out_size(x->w, s->kw, s->sw, s->pw, s->dw);
    }
    case FIXQ_ENG_DEPTHWISE:
      if (s->groups == 0 || y->c != x->c * s->groups || s->taps == NULL || s->bias == NULL) return 0;
      if (s->rq_channels != y->c || step_scratch(plan, s, 1) == SIZE_MAX) return 0;
      return y->h == out_size(x->h, s->kh, s->sh, s->ph, s->dh) && y->w == out_size(x->w, s->kw, s->sw, s->pw, s->dw);
    case FIXQ_ENG_MAXPOOL:
    case FIXQ_ENG_AVGPOOL:
      if (s->op == FIXQ_ENG_AVGPOOL && mul_sz(s->kh, s->kw) > FIXQ_ENG_MAX_POOL_AREA) return 0;
      /* every window of a count_valid average holds a tap of the input: each padding below the kernel */
      if (s->count_valid && (add_sz(s->ph, s->pb_extra) >= s->kh || add_sz(s->pw, s->pr_extra) >= s->kw)) return 0;
      return y->c == x->c && y->h == pool_out_size(x->h, s->kh, s->sh, s->ph, s->pb_extra) &&
             y->w == pool_out_size(x->w, s->kw, s->sw, s->pw, s->pr_extra);
    case FIXQ_ENG_GLOBAL_AVGPOOL:
      /* the int32 sum of h*w values q (- zp), each within +-255, cannot wrap */
      if (y->h != 1 || y->w != 1 || y->c != x->c || x->h * x->w == 0 || x->h * x->w > FIXQ_ENG_MAX_POOL_AREA)
        return 0;
      if (s->target != NULL)
        return check_target_range(plan, s->target) &&
               (s->target->form == FIXQ_ENG_T_XNN_MEAN ||
                (s->target->form == FIXQ_ENG_T_TFLITE_MEAN && s->target->channels == 1 &&
                 s->target->split <= y->c && s->target->shift[0] >= -31 && s->target->shift[0] <= 30));
      if (s->rq_channels == 0) return 1;
      /* the input zero point within the dtype keeps h * w * zp inside int32 */
      return s->rq_channels == y->c && s->zp >= (IS_U8(plan) ? 0 : INT8_MIN) &&
             s->zp <= (IS_U8(plan) ? UINT8_MAX : INT8_MAX) &&
             fixq__check_requant(&s->rq, y->c, plan->dtype) == FIXQ_OK;
    case FIXQ_ENG_FLATTEN:
      return y->h == 1 && y->w == 1 && y->c == numel(x);
    case FIXQ_ENG_LUT:
      return s->table != NULL && x->h == y->h && x->w == y->w && x->c == y->c;
    case FIXQ_ENG_PAD:
      return x->c == y->c && add_sz(x->h, s->ph) <= y->h && add_sz(x->w, s->pw) <= y->w &&
             s->zp >= (IS_U8(plan) ? 0 : INT8_MIN) && s->zp <= (IS_U8(plan) ? UINT8_MAX : INT8_MAX);
    case FIXQ_ENG_REQUANTIZE: {
      const fixq_eng_target *t = s->target;
      if (t == NULL || x->h != y->h || x->w != y->w || x->c != y->c || !check_target_range(plan, t)) return 0;
      if (t->form == FIXQ_ENG_T_XNN_REQUANT) return t->a_mult >= 1 && t->a_mult <= 32768;
      return t->form == FIXQ_ENG_T_TFLITE_REQUANT && t->channels == 1 && t->split <= numel(x) &&
             t->shift[0] >= -31 && t->shift[0] <= 30;
    }
    case FIXQ_ENG_SOFTMAX: {
      const fixq_eng_target *t = s->target;
      if (t == NULL || x->h != y->h || x->w != y->w || x->c != y->c || !check_target_range(plan, t)) return 0;
      if (t->form == FIXQ_ENG_T_TFLITE_SOFTMAX_LUT) return t->table != NULL;
      /* the Q12.19 sum of c exponentials below 2^19 each stays an int32 */
      return t->form == FIXQ_ENG_T_TFLITE_SOFTMAX && t->channels == 1 && x->c < 4096 && t->shift[0] >= 0 &&
             t->shift[0] <= 31 && t->diff_min <= 0;
    }
    case FIXQ_ENG_CONCAT: {
      if (s->axis < 1 || s->axis > 3 || s->in_zp == NULL || s->in_rq == NULL) return 0;
      size_t total = 0;
      for (size_t i = 0; i < s->n_in; i++) {
        const fixq_eng_tensor *t = &plan->tensors[s->in[i]];
        const size_t d[3] = {t->h, t->w, t->c}, e[3] = {y->h, y->w, y->c};
        for (size_t a = 1; a <= 3; a++)
          if (a != s->axis && d[a - 1] != e[a - 1]) return 0;
        total = add_sz(total, d[s->axis - 1]);
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
  for (size_t t = 0; t < plan->n_tensors; t++) { /* every later h * w * c, times esize, is exact */
    const fixq_eng_tensor *x = &plan->tensors[t];
    if ((x->esize != 1 && x->esize != 4) || x->h == 0 || x->w == 0 || x->c == 0 || mul_sz(mul_sz(mul_sz(x->h, x->w), x->c), x->esize) == SIZE_MAX)
      return FIXQ_ERR_INVALID_ARGUMENT;
  }
  for (size_t i = 0; i < plan->n_steps; i++)
    if (!check_step(plan, &plan->steps[i])) {
      *bad_step = i;
      return FIXQ_ERR_INVALID_ARGUMENT;
    }
  return FIXQ_OK;
}

/* ---- scratch ------------------------------------------------------------- */

/* In saturating arithmetic (mul_sz, add_sz): SIZE_MAX when a size passes PTRDIFF_MAX */
static size_t step_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch) {
  const fixq_eng_tensor *x = &plan->tensors[s->in[0]], *y = &plan->tensors[s->out];
  const size_t out_n = mul_sz(batch, numel(y));
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
      return mul_sz(out_n, s->form == FIXQ_ENG_Q_RECIP_EVEN ? 1 + sizeof(float) : 1);
    case FIXQ_ENG_GEMM: { /* im2col: the patches, then one padded sample; or the direct convolution's */
      const size_t pixels = mul_sz(mul_sz(batch, y->h), y->w);
      if (gemm_is_direct(s)) return fixq__eng_conv_scratch(plan, s); /* 0 but for one pixel a sample */
      const size_t cols = add_sz(add_sz(mul_sz(pixels, mul_sz(mul_sz(s->kh, s->kw), x->c / s->groups)),
                                        FIXQ_ENG_IM2COL_SLACK),
                                 padded_bytes(s, x));
      const size_t conv = cols == SIZE_MAX ? 0 : fixq__eng_conv_scratch(plan, s);
      return conv > cols ? conv : cols;
    }
    case FIXQ_ENG_DEPTHWISE: { /* the accumulators, one padded sample of y's channels (a channel multiplier's
                                  repeated input), the weight pairs of dw_block16 or dw_block32 (channels
                                  rounded up to 32), the map of tap triples and its alignment */
      fixq_eng_tensor xi = *x;
      xi.c = y->c;
      const size_t triples = dw_triples_bytes(s, x, y);
      return add_sz(add_sz(add_sz(mul_sz(out_n, sizeof(int32_t)), padded_bytes(s, &xi)),
                           mul_sz(mul_sz(add_sz(mul_sz(s->kh, s->kw), 1) / 2, add_sz(y->c, 31) / 32 * 32), 4)),
                    triples ? add_sz(triples, 64) : 0);
    }
    case FIXQ_ENG_MAXPOOL: /* a row of the window's max over its input rows */
      return mul_sz(x->w, x->c);
    case FIXQ_ENG_AVGPOOL:
      return mul_sz(y->c, sizeof(int32_t));
    case FIXQ_ENG_GLOBAL_AVGPOOL:
      return mul_sz(mul_sz(s->rq_channels ? batch : 1, y->c), sizeof(int32_t));
    case FIXQ_ENG_ELTWISE: /* each operand broadcast to y's shape */
      return mul_sz(out_n, (size_t)!fixq__eng_elt_direct(plan, s, 0) + (size_t)!fixq__eng_elt_direct(plan, s, 1));
    case FIXQ_ENG_CONCAT: {
      size_t m = 0;
      for (size_t i = 0; i < s->n_in; i++)
        if (numel(&plan->tensors[s->in[i]]) > m) m = numel(&plan->tensors[s->in[i]]);
      return mul_sz(mul_sz(batch, m), sizeof(int32_t) + 1);
    }
    default:
      return 0;
  }
}

int fixq_eng_gemm_fits(const fixq_eng_plan *plan, size_t step) {
  if (step >= plan->n_steps || plan->steps[step].op != FIXQ_ENG_GEMM) return 0;
  const fixq_eng_step *s = &plan->steps[step];
  const size_t og = plan->tensors[s->out].c / s->groups;
  for (size_t g = 0; g < s->groups; g++)
    if (!fixq__qgemm_fits(s->packed[g], plan->dtype, s->zp, s->bias + g * og)) return 0;
  return 1;
}

size_t fixq_eng_scratch_bytes(const fixq_eng_plan *plan, size_t batch) {
  size_t m = 0;
  for (size_t i = 0; i < plan->n_steps; i++) {
    const size_t b = step_scratch(plan, &plan->steps[i], batch);
    if (b > m) m = b;
  }
  for (size_t t = 0; t < plan->n_tensors; t++) /* fixq_eng_emit of a 4-D output */
    if (mul_sz(batch, numel(&plan->tensors[t])) > m) m = mul_sz(batch, numel(&plan->tensors[t]));
  return m;
}
