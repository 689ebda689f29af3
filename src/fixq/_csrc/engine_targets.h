/* The C plan's forms of a runtime's arithmetic that fixq's kernels lack
 * (fixq_engine.h fixq_eng_target, fixq_eng_quantize_form), one table per ISA:
 * engine_targets__scalar.c runs the element functions below one by one and
 * is the contract; engine_targets__avx2.c and __avx512vnni.c compute the
 * same bits with SIMD, and fall back on these functions for tails and for
 * parameters outside what their vector arithmetic proves exact
 * (fixq_eng_target_vector_ok).  Float forms use exactly the scalar operations
 * in the same order (no FMA: -ffp-contract=off). */
#ifndef FIXQ_ENGINE_TARGETS_H_
#define FIXQ_ENGINE_TARGETS_H_

#include <math.h>

#include "fixq_engine.h"
#include "fixq_internal.h"

typedef struct {
  /* RUY_X86, FLOAT64_AWAY: m rows of n int32 accumulators (acc[r * lda + j], channel c0 + j, or 0 for
   * a per-tensor target) -> y[r * ldy + j] in dt */
  void (*gemm)(const fixq_eng_target *t, fixq_dtype dt, size_t m, size_t n, size_t c0, const int32_t *acc,
               size_t lda, uint8_t *y, size_t ldy);
  /* ORT_ADD, ORT_MUL, XNN_ADD, XNN_MUL, TFLITE_SUB, _ADD, _MUL on n elements of a and b (the TFLite forms and
   * NEON loops as fixq__eng_eltwise_one on every ISA) */
  void (*eltwise)(const fixq_eng_target *t, fixq_dtype dt, size_t n, const void *a, const void *b, void *y);
  /* DIV_AWAY, ZP_DIV_AWAY: n floats -> q in dt, saturated to [lo, hi]; 1 at the first NaN (the elements
   * before it stored) */
  int (*quantize_away)(int form, float scale, int32_t zp, fixq_dtype dt, int32_t lo, int32_t hi, size_t n,
                       const float *x, void *y);
} fixq_eng_targets;

extern const fixq_eng_targets fixq_eng_targets__scalar;
#ifdef FIXQ_COMPILED_AVX2
extern const fixq_eng_targets fixq_eng_targets__avx2;
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
extern const fixq_eng_targets fixq_eng_targets__avx512vnni;
#endif

/* Operand k of an ELTWISE step (the plan's constant, or its input tensor), and whether it is read as it is
 * (a tensor of y's size: flat, as before broadcasting), else broadcast to y's shape (engine_targets.c) */
const fixq_eng_tensor *fixq__eng_elt_operand(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t k);
int fixq__eng_elt_direct(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t k);
/* The ELTWISE step on `batch` samples with the ISA's `targets` (engine_targets.c) */
fixq_status fixq__eng_eltwise(const fixq_eng_plan *plan, const fixq_eng_step *s, const fixq_eng_targets *targets,
                              size_t batch, void *const *buffers, uint8_t *y, uint8_t *scratch);

static inline int32_t fixq__eng_saturate(int64_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : v > hi ? hi : (int32_t)v;
}

/* A rounded float as int64 without undefined behaviour: past the range it saturates (the clamp that
 * follows then gives numpy's np.clip of the float), NaN (an infinite scale times 0) is 0 */
static inline int64_t fixq__eng_float_to_i64(float v) {
  return v != v ? 0 : v <= -0x1p63f ? INT64_MIN : v >= 0x1p63f ? INT64_MAX : (int64_t)v;
}

static inline int32_t fixq__eng_load_q(const void *p, size_t i, fixq_dtype dt) {
  return dt == FIXQ_UINT8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

/* ruy's x86 epilogue (fixq.targets.tflite, numpy int64): t = ((acc << l) * M + 2^30) >> 31,
 * (t + 2^(r-1)) >> r, both ties to +inf, the shift and product wrapping modulo 2^64, >> arithmetic */
static inline int32_t fixq__eng_ruy_x86_one(int64_t v, int32_t multiplier, int32_t sh, int32_t zp, int32_t lo,
                                            int32_t hi) {
  const int left = sh > 0 ? sh : 0, right = sh < 0 ? -sh : 0;
  const uint64_t p = ((uint64_t)v << left) * (uint64_t)(int64_t)multiplier + ((uint64_t)1 << 30);
  const int64_t u = (int64_t)p >> 31;
  const int64_t w = (int64_t)((uint64_t)u + (((uint64_t)1 << right) >> 1)) >> right;
  return fixq__eng_saturate((int64_t)((uint64_t)w + (uint64_t)(int64_t)zp), lo, hi);
}

/* TFLite's reference FULLY_CONNECTED: round() is std::round (ties away from zero); the clamp in double,
 * as numpy's */
static inline int32_t fixq__eng_float64_away_one(int64_t v, double real, int32_t zp, int32_t lo, int32_t hi) {
  const double d = round((double)v * real) + (double)zp;
  return d < lo ? lo : d > hi ? hi : (int32_t)d;
}

/* The optimized ADD / MUL's NEON narrowing (fixq.targets.tflite._narrow): to int16 (vqmovn_s32 saturating,
 * vmovn_s32 wrapping), + zero point in int16 (wrapping), vqmovn_s16 to int8, then the activation clamp */
static inline int32_t fixq__eng_neon_narrow(int32_t v, int saturate16, const fixq_eng_target *t) {
  const int32_t v16 = saturate16 ? (v < INT16_MIN ? INT16_MIN : v > INT16_MAX ? INT16_MAX : v) : (int16_t)(uint16_t)v;
  const int32_t z = (int16_t)(uint16_t)(uint32_t)(v16 + t->out_zp);
  return fixq__eng_saturate(z < INT8_MIN ? INT8_MIN : z > INT8_MAX ? INT8_MAX : z, t->lo, t->hi);
}

/* vshlq_s32 by a constant: a left shift wrapping to int32, or (negative count) an arithmetic right shift */
static inline int32_t fixq__eng_vshl(int32_t x, int n) {
  return n >= 0 ? (int32_t)((uint32_t)x << n) : x >> -n;
}

/* The optimized ADD's NEON loops on the offset inputs (fixq.targets.tflite.add_optimized): neon 1
 * (AddElementwiseInt8) vqrdmulh(d << (20 + s_i), M_i), one rounding; neon 2 (AddScalarBroadcast)
 * vqrdmulh(d << 20, M_i) >> -s_i, truncating; then vqrdmulh of the wrapping sum by M_out, RoundingDivideByPOT
 * (ties away) and vmovn (wrapping) */
static inline int32_t fixq__eng_tflite_add_neon(const fixq_eng_target *t, int32_t da, int32_t db) {
  int32_t x[2];
  const int32_t d[2] = {da, db};
  for (int i = 0; i < 2; i++)
    x[i] = t->neon == 1 ? fixq__srdhm(fixq__eng_vshl(d[i], 20 + t->shift[i]), t->multiplier[i])
                        : fixq__srdhm((int32_t)((uint32_t)d[i] << 20), t->multiplier[i]) >> -t->shift[i];
  const int32_t sum = (int32_t)((uint32_t)x[0] + (uint32_t)x[1]);
  return fixq__eng_neon_narrow(fixq__rdbpot(fixq__srdhm(sum, t->multiplier[2]), -t->shift[2]), 0, t);
}

/* fixq.targets' numpy add / mul of ONNX Runtime (MLAS on x86) and XNNPACK, and TFLite's SUB */
static inline int32_t fixq__eng_eltwise_one(const fixq_eng_target *t, int32_t qa, int32_t qb) {
  const int64_t da = (int64_t)qa - t->a_zp, db = (int64_t)qb - t->b_zp;
  int64_t q;
  switch (t->form) {
    case FIXQ_ENG_T_ORT_ADD: {
      const float fa = (float)da * t->a_scale, fb = (float)db * t->b_scale;
      float v = (fa + fb) / t->out_scale;
      const float lo = (float)(t->lo - t->out_zp), hi = (float)(t->hi - t->out_zp);
      v = v < lo ? lo : v > hi ? hi : v; /* numpy's clip: NaN stays NaN */
      q = fixq__eng_float_to_i64(rintf(v + (float)t->out_zp));
      break;
    }
    case FIXQ_ENG_T_ORT_MUL:
      q = fixq__eng_float_to_i64(rintf((float)(da * db) * t->scale + (float)t->out_zp));
      break;
    case FIXQ_ENG_T_XNN_ADD: {
      const int64_t acc = t->bias + (int64_t)qa * t->a_mult + (int64_t)qb * t->b_mult;
      q = (acc >> t->shift_bits) + t->out_zp;
      break;
    }
    case FIXQ_ENG_T_TFLITE_SUB: /* TFLite's SubElementwise / AddFunc: inputs << 20, each rescaled, then the
                                   difference or the sum */
    case FIXQ_ENG_T_TFLITE_ADD: {
      if (t->neon) return fixq__eng_tflite_add_neon(t, (int32_t)da, (int32_t)db);
      const int32_t sa = fixq__mbqm_double((int32_t)(da * (1 << 20)), t->multiplier[0], t->shift[0]);
      const int32_t sb = fixq__mbqm_double((int32_t)(db * (1 << 20)), t->multiplier[1], t->shift[1]);
      q = (int64_t)fixq__mbqm_double(t->form == FIXQ_ENG_T_TFLITE_ADD ? sa + sb : sa - sb, t->multiplier[2],
                                     t->shift[2]) + t->out_zp;
      break;
    }
    case FIXQ_ENG_T_TFLITE_MUL: {
      const int32_t p = (int32_t)(da * db), s = t->shift[0];
      if (t->neon) /* vshl (wrapping), vqrdmulh, RoundingDivideByPOT */
        return fixq__eng_neon_narrow(
            fixq__rdbpot(fixq__srdhm((int32_t)((uint32_t)p << (s > 0 ? s : 0)), t->multiplier[0]), s < 0 ? -s : 0),
            1, t);
      q = (int64_t)fixq__mbqm_double(p, t->multiplier[0], s) + t->out_zp;
      break;
    }
    default: /* FIXQ_ENG_T_XNN_MUL */
      q = fixq__eng_float_to_i64(rintf((float)(da * db) * t->scale));
      q = (q < -((int64_t)1 << 40) ? -((int64_t)1 << 40) : q > ((int64_t)1 << 40) ? ((int64_t)1 << 40) : q) + t->out_zp;
      break;
  }
  return fixq__eng_saturate(q, t->lo, t->hi);
}

/* The two half-away forms of fixq.targets.quantize: std::round is roundf.  1 for NaN (nothing stored). */
static inline int fixq__eng_quantize_away_one(int form, float x, float scale, int32_t zp, int32_t lo, int32_t hi,
                                              int32_t *out) {
  if (isnan(x)) return 1;
  const float q = x / scale;
  int64_t v;
  if (form == FIXQ_ENG_Q_ZP_DIV_AWAY) {
    const float z = (float)zp + q;
    v = (int64_t)roundf(z < (float)lo ? (float)lo : z > (float)hi ? (float)hi : z);
  } else {
    v = (int64_t)roundf(q < -0x1p31f ? -0x1p31f : q > 0x1p31f ? 0x1p31f : q) + zp;
    v = v < lo ? lo : v > hi ? hi : v;
  }
  *out = (int32_t)v;
  return 0;
}

/* Whether a SIMD form's arithmetic is exact for these parameters: int32 lanes cannot wrap (zero points
 * within 2^15, so (a - za)(b - zb) < 2^31; XNNPACK's multipliers within int32 and its bias within 2^60,
 * so its int64 sum cannot wrap either) and no float NaN can arise (scales below 2^96 keep every product
 * finite, a nonzero out_scale).  Every runtime's parameters pass; others, and forms the SIMD files lack,
 * run the element functions. */
/* XNN_ADD's sum bias + a ma + b mb stays inside int32 for every 8-bit a and b (XNNPACK's qs8-vadd computes it in
 * int32 lanes; fixq.targets.xnnpack's multipliers are below 2^21): a SIMD form may then compute it in int32 lanes.
 * For a target fixq__eng_vector_ok accepts. */
static inline int fixq__eng_xnn_add_fits32(const fixq_eng_target *t) {
  const int64_t ma = t->a_mult < 0 ? -t->a_mult : t->a_mult, mb = t->b_mult < 0 ? -t->b_mult : t->b_mult;
  return 255 * (ma + mb) + (t->bias < 0 ? -t->bias : t->bias) <= INT32_MAX;
}

static inline int fixq__eng_vector_ok(const fixq_eng_target *t) {
  const int32_t z = 1 << 15;
  if (t->a_zp < -z || t->a_zp > z || t->b_zp < -z || t->b_zp > z || t->out_zp < -z || t->out_zp > z) return 0;
  switch (t->form) {
    case FIXQ_ENG_T_ORT_ADD:
      return fabsf(t->a_scale) < 0x1p96f && fabsf(t->b_scale) < 0x1p96f && t->out_scale == t->out_scale &&
             t->out_scale != 0;
    case FIXQ_ENG_T_XNN_ADD:
      return t->a_mult >= INT32_MIN && t->a_mult <= INT32_MAX && t->b_mult >= INT32_MIN && t->b_mult <= INT32_MAX &&
             t->bias >= -((int64_t)1 << 60) && t->bias <= ((int64_t)1 << 60);
    case FIXQ_ENG_T_ORT_MUL:
    case FIXQ_ENG_T_XNN_MUL:
      return fabsf(t->scale) < 0x1p96f;
    default: /* a form the SIMD files do not know */
      return 0;
  }
}

#endif
