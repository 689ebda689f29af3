/* Elementwise add / mul entry points: parameter derivation (TFLite int8 ADD
 * and MUL), the broadcast driver, and the selected row kernel. */
#include <fenv.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixq_internal.h"

static const fixq_eltwise_ukernel eltwise_table[FIXQ_ISA_COUNT] = {
    fixq_eltwise__scalar, FIXQ__AVX2(fixq_eltwise__avx2),
    FIXQ__AVX512VNNI(fixq_eltwise__avx512vnni), FIXQ__NEON(fixq_eltwise__neon),
    FIXQ__DOTPROD(fixq_eltwise__neon), FIXQ__I8MM(fixq_eltwise__neon)};

static int q8_range(fixq_dtype dt, int32_t *lo, int32_t *hi) {
  if (dt == FIXQ_INT8) { *lo = INT8_MIN; *hi = INT8_MAX; return 1; }
  if (dt == FIXQ_UINT8) { *lo = 0; *hi = UINT8_MAX; return 1; }
  return 0;
}

static int q8_param_ok(fixq_dtype dt, int32_t zp) {
  int32_t lo = 0, hi = 0;
  return q8_range(dt, &lo, &hi) && zp >= lo && zp <= hi;
}

/* FP32 rounding must never see inf - inf or 0 * inf: |x - zp| * scale
 * (|x - zp| <= 255) stays finite in float32. */
static int scale_ok(float s) { return s > 0.0f && isfinite(255.0f * s); }

/* A real multiplier that quantize_multiplier can represent for mbqm: not
 * flushed to zero (real >= 2^-32 roughly) and shift <= 30. */
static int multiplier_ok(double real, int32_t *m, int32_t *shift) {
  int s;
  if (fixq_quantize_multiplier(real, m, &s) != FIXQ_OK) return 0;
  *shift = s;
  return *m != 0 && s <= 30;
}

/* The linear plan (fixq_eltwise.lin_*, ADD form) for outputs y known at
 * `count` points.  px == NULL: point i is the input pair a' = (i >> 8) - 128,
 * b' = (i & 255) - 128 and n = a'*ra + b'*rb + u; px given (int8 requantize):
 * point i has a' = px[i] and n = a'*ra + u.  The slopes are the effective real multipliers rounded at the largest k that
 * keeps them below `rlimit` (and their other neighbours); then the offsets u
 * for which every point lands in its output's interval (points below the
 * output zero point taking the tie shift neg), and a final check of every
 * point.  Double rounding moves values below zero by up to 2^-r_out of an
 * output step (RoundingDivideByPOT after SRDHM): neg.  Exact ties under
 * half-to-even (FP32), or ties that ADD's input rounding decides, leave no
 * plan. */
static int64_t lin_out(int64_t x, int64_t u, int64_t t, int64_t neg, int k) {
  const int64_t n = x + u;
  if (neg == 1) /* ties to even (fixq.h) */
    return (n - ((n & ((INT64_C(2) << k) - 1)) == t)) >> k;
  return (n + (n < t ? neg : 0)) >> k;
}

typedef struct {
  int count, k, r_out;
  const int32_t *px;
  const uint8_t *y;
  int64_t t, qmin, qmax;
  int32_t oy;
} fit_problem;

#define POINT_X(i) (f->px ? (int64_t)f->px[i] * ra : (((i) >> 8) - 128) * ra + (((i) & 255) - 128) * rb)
#define POINT_Y(i) ((int64_t)(p->y_dtype == FIXQ_UINT8 ? (int32_t)f->y[i] : (int32_t)(int8_t)f->y[i]) - f->oy)
/* The interval [*lo, *hi] of offsets u that put every point with output in
 * [omin, omax] in its interval (clamped outputs bound one side only).  even:
 * under the ties-to-even form (lin_neg = 1) n = o 2^k rounds down when
 * (o - zr) is odd, and n = (o + 1) 2^k to o when (o + 1 - zr) is. */
static void offset_interval(const fixq_eltwise *p, const fit_problem *f, int64_t ra, int64_t rb, int64_t omin,
                            int64_t omax, int even, int64_t zr, int64_t *lo, int64_t *hi) {
  const int64_t one = INT64_C(1) << f->k;
  *lo = INT64_MIN;
  *hi = INT64_MAX;
  for (int i = 0; i < f->count; i++) {
    const int64_t x = POINT_X(i), o = POINT_Y(i);
    if (o < omin || o > omax) continue;
    const int64_t l = o * one + (even ? (o - zr) & 1 : 0) - x;
    const int64_t h = (o + 1) * one - 1 + (even ? (o + 1 - zr) & 1 : 0) - x;
    if (o > f->qmin && l > *lo) *lo = l;
    if (o < f->qmax && h < *hi) *hi = h;
  }
  if (*lo == INT64_MIN) *lo = *hi == INT64_MAX ? 0 : *hi;
  if (*hi == INT64_MAX) *hi = *lo;
}

static int fit_offsets(fixq_eltwise *p, const fit_problem *f, int64_t ra, int64_t rb) {
  const int k = f->k;
  const int64_t one = INT64_C(1) << k, t = f->t, qmin = f->qmin, qmax = f->qmax;
  const int64_t span = 128 * (ra + rb); /* |n - u|: n must fit int32 in the kernels */
  /* tie shifts: none (the kernel then skips it), one unit, RoundingDivideByPOT's
   * 2^-r_out of an output step between values above and below zero, and one
   * fitted on its own (c == 3): u from the points at or above the output zero
   * point, u + neg from those at or below, for the ties that SRDHM's rounding
   * makes exact on one side of zero and not on the other */
  const int64_t negs[3] = {0, -1, f->r_out > 0 && k >= f->r_out ? -(INT64_C(1) << (k - f->r_out)) : 0};
  const int64_t zr = (t - (one >> 1)) >> k; /* the output zero point, int8 domain */
  for (int c = 0; c < 5; c++) {
    int64_t neg = c < 3 ? negs[c] : 0, tc = t;
    if (c > 0 && c < 3 && neg == 0) continue;
    int64_t lo = INT64_MIN, hi = INT64_MAX, u = 0;
    if (c == 4) { /* FP32's half to even on exact ties: fixq.h's ADD form with lin_neg = 1 */
      if (p->op != FIXQ_OP_ADD || p->rounding != FIXQ_ROUND_FP32) continue;
      neg = 1;
      tc = ((zr & 1) ^ 1) << k; /* n's low k + 1 bits at a tie whose lower neighbour is even */
      offset_interval(p, f, ra, rb, qmin, qmax, 1, zr, &lo, &hi);
      u = lo + (hi - lo) / 2;
    }
    if (c == 3) {
      int64_t lo_neg, hi_neg;
      offset_interval(p, f, ra, rb, zr, qmax, 0, zr, &lo, &hi);
      offset_interval(p, f, ra, rb, qmin, zr, 0, zr, &lo_neg, &hi_neg);
      u = lo + (hi - lo) / 2;
      const int64_t u_neg = hi_neg < u ? lo_neg + (hi_neg - lo_neg) / 2 : u;
      if (lo_neg > hi_neg || u_neg < lo_neg || u_neg - u <= INT32_MIN) continue;
      neg = u_neg - u;
    }
    for (int round = 0; round < 2 && c < 3; round++) { /* round 0 estimates u, round 1 uses it for the tie side */
      lo = INT64_MIN;
      hi = INT64_MAX;
      for (int i = 0; i < f->count; i++) {
        const int64_t x = POINT_X(i), o = POINT_Y(i);
        const int64_t d = round && x + u < t ? neg : 0;
        if (o > qmin && o * one - x - d > lo) lo = o * one - x - d;
        if (o < qmax && (o + 1) * one - 1 - x - d < hi) hi = (o + 1) * one - 1 - x - d;
      }
      if (lo == INT64_MIN) lo = hi == INT64_MAX ? 0 : hi;
      if (hi == INT64_MAX) hi = lo;
      u = lo + (hi - lo) / 2;
    }
    if (lo > hi || u - (neg < 0 ? -neg : 1) - span <= INT32_MIN || u + span >= INT32_MAX || t <= INT32_MIN ||
        t >= INT32_MAX)
      continue;
    int exact = 1;
    for (int i = 0; i < f->count && exact; i++) {
      int64_t o = lin_out(POINT_X(i), u, tc, neg, k);
      o = o < qmin ? qmin : o > qmax ? qmax : o;
      exact = o == POINT_Y(i);
    }
    if (!exact) continue;
    p->lin_ra = (int32_t)ra;
    p->lin_rb = (int32_t)rb;
    p->lin_u = (int32_t)u;
    p->lin_t = (int32_t)tc;
    p->lin_neg = (int32_t)neg;
    p->lin_k = k;
    return 1;
  }
  return 0;
}
#undef POINT_X
#undef POINT_Y

static void fit_linear(fixq_eltwise *p, int count, const int32_t *px, const uint8_t *y, double ra_real,
                       double rb_real, int r_out) {
  const double rlimit = 4194304.0; /* ra, rb < 2^22: the kernels split them into int16 (>> 8) and a byte */
  fit_problem f;
  f.count = count;
  f.px = px;
  f.y = y;
  f.r_out = r_out;
  f.oy = p->y_dtype == FIXQ_UINT8 ? 128 : 0;
  f.qmin = p->qmin - f.oy;
  f.qmax = p->qmax - f.oy;
  const double rmax = ra_real > rb_real ? ra_real : rb_real;
  /* n = a' ra + b' rb + u, u about the output zero point times 2^k, must fit int32 */
  const double reach = 128.0 * (ra_real + rb_real) + fabs((double)(p->y_zero_point - f.oy)) + 2.0;
  int k = 0;
  while (k < 24 && rmax * ldexp(1.0, k + 1) < rlimit - 1.0 && reach * ldexp(1.0, k + 1) < 2147483648.0) k++;
  if (k < 8) return;
  f.k = k;
  f.t = (int64_t)(p->y_zero_point - f.oy) * (INT64_C(1) << k) + (INT64_C(1) << (k - 1)); /* n < t: below zero */
  /* slopes: rounded first, then the other neighbours (which way the rounding
   * error leans decides exact ties the same way as the contract) */
  const double xa = ldexp(ra_real, k), xb = ldexp(rb_real, k);
  const int64_t ra0 = llround(xa), rb0 = llround(xb);
  const int64_t ra1 = ra0 == (int64_t)floor(xa) ? (int64_t)ceil(xa) : (int64_t)floor(xa);
  const int64_t rb1 = rb0 == (int64_t)floor(xb) ? (int64_t)ceil(xb) : (int64_t)floor(xb);
  for (int sl = 0; sl < 4; sl++) {
    const int64_t ra = sl & 1 ? ra1 : ra0, rb = sl & 2 ? rb1 : rb0;
    if ((sl & 1 && ra1 == ra0) || (sl & 2 && rb1 == rb0)) continue;
    if (fit_offsets(p, &f, ra, rb)) return;
  }
  /* Scales in a simple ratio (1/256 against 1/32) make ties along lines of
   * equal a' xa + b' xb; the slopes then have to keep that ratio exactly while
   * leaning one way: the larger slope one or two units off, the other scaled. */
  if (xb == 0.0) return;
  for (int c = 0; c < 8; c++) {
    const int d = (c & 3) < 2 ? (c & 3) - 2 : (c & 3) - 1; /* -2, -1, 1, 2: from the smaller slope, then the larger */
    int64_t ra, rb;
    if ((xa <= xb) == (c < 4)) ra = ra0 + d, rb = llround((double)ra * xb / xa);
    else rb = rb0 + d, ra = llround((double)rb * xa / xb);
    if (ra < 0 || rb < 0 || (double)(ra > rb ? ra : rb) >= rlimit) continue;
    if (fit_offsets(p, &f, ra, rb)) return;
  }
}

/* ADD: the contract on all 65536 input pairs, then fit_linear with the
 * effective slopes 2^20 * M_in * M_out (fixed point) or s_in / s_out. */
static void plan_add(fixq_eltwise *p) {
  const int32_t oa = p->a_dtype == FIXQ_UINT8 ? 128 : 0, ob = p->b_dtype == FIXQ_UINT8 ? 128 : 0;
  double ra_real = (double)p->a_scale / p->y_scale, rb_real = (double)p->b_scale / p->y_scale;
  if (p->rounding != FIXQ_ROUND_FP32) {
    const double out = ldexp((double)p->y_multiplier, p->y_shift - 31 + 20);
    ra_real = ldexp((double)p->a_multiplier, p->a_shift - 31) * out;
    rb_real = ldexp((double)p->b_multiplier, p->b_shift - 31) * out;
  }
  uint8_t *buf = malloc(3 * 65536);
  if (buf == NULL) return;
  uint8_t *a = buf, *b = buf + 65536, *y = buf + 2 * 65536;
  for (int i = 0; i < 65536; i++) {
    a[i] = (uint8_t)((i >> 8) - 128 + oa); /* int8-domain value (i >> 8) - 128 */
    b[i] = (uint8_t)((i & 255) - 128 + ob);
  }
  eltwise_table[fixq__isa](1, 65536, a, 0, 0, b, 0, 0, y, 0, p); /* lin_k == 0: the exact kernel */
  fit_linear(p, 65536, NULL, y, ra_real, rb_real, p->rounding == FIXQ_ROUND_DOUBLE && p->y_shift < 0 ? -p->y_shift : 0);
  free(buf);
}

/* fixq.h's MUL float form: y = floor(fl(P*alpha + g)), g = gneg where P <
 * pt, one float32 rounding (a fused multiply-add) of the exact value.
 * fl(x) >= o holds for every x above the midpoint between o and the float
 * below it, fl(x) < o + 1 for every x below the midpoint under o + 1
 * (integers |o| <= 2^9 are floats), so each point bounds g from both sides,
 * exactly in double (P*alpha has at most 17 + 24 bits).  The clamp and int8
 * saturation follow as in the linear plan. */
static double below_mid(double o) { return o - (o - (double)nextafterf((float)o, -INFINITY)) / 2; }

/* side: every point (-1), those with P >= pt (0) or P < pt (1); bias: the
 * fma's first operand is (float)(P + bias), bias 0 or FIXQ__MUL_BIAS. */
static int fit_float_side(const fixq_eltwise *p, const int32_t *px, const uint8_t *y, float alpha, int side,
                          int32_t pt, int32_t bias, float *g) {
  const int32_t oy = p->y_dtype == FIXQ_UINT8 ? 128 : 0, qmin = p->qmin - oy, qmax = p->qmax - oy;
  double lo = -INFINITY, hi = INFINITY; /* g in (lo, hi), open */
  for (int i = 0; i < 65536; i++) {
    if (side >= 0 && (px[i] < pt) != side) continue;
    const int32_t o = (p->y_dtype == FIXQ_UINT8 ? (int32_t)y[i] : (int32_t)(int8_t)y[i]) - oy;
    const double x = (double)(px[i] + bias) * alpha; /* 24 x 24 bits: exact */
    if (o > qmin && below_mid(o) - x > lo) lo = below_mid(o) - x;
    if (o < qmax && below_mid(o + 1) - x < hi) hi = below_mid(o + 1) - x;
  }
  if (lo == -INFINITY && hi == INFINITY) lo = -1.0, hi = 1.0;
  else if (lo == -INFINITY) lo = hi - 1.0;
  else if (hi == INFINITY) hi = lo + 1.0;
  *g = (float)(lo + (hi - lo) / 2);
  return lo < *g && *g < hi && fabs(*g + (double)bias * alpha) < 65536.0; /* the offset to alpha * P */
}

static int fit_float(fixq_eltwise *p, const int32_t *px, const uint8_t *y, double r) {
  const int32_t oy = p->y_dtype == FIXQ_UINT8 ? 128 : 0;
  const int32_t pts[3] = {0, 1, -1};
  const float a0 = (float)r, up = nextafterf(a0, INFINITY), dn = nextafterf(a0, 0.0f);
  const float alphas[5] = {a0, up, dn, nextafterf(up, INFINITY), nextafterf(dn, 0.0f)};
  /* biased first (lin_k = 2: the kernels then skip a conversion), where an
   * offset near -alpha * 2^23 * 1.5 still has the precision the fit needs */
  for (int c = 0; c < 10; c++) { /* the rounded slope, then its float neighbours */
    const float alpha = alphas[c % 5];
    const int32_t bias = c < 5 ? FIXQ__MUL_BIAS : 0;
    if (!(alpha > 0.0f) || 65025.0 * alpha >= 1073741824.0) return 0; /* floor(f) fits int32 */
    for (int s = -1; s < 3; s++) { /* one offset, then two split at P < pt */
      float g = 0.0f, gneg = 0.0f;
      const int32_t pt = s < 0 ? 0 : pts[s];
      if (!fit_float_side(p, px, y, alpha, s < 0 ? -1 : 0, pt, bias, &g)) continue;
      if (s < 0) gneg = g;
      else if (!fit_float_side(p, px, y, alpha, 1, pt, bias, &gneg)) continue;
      int exact = 1;
      for (int i = 0; i < 65536 && exact; i++) {
        int64_t o = (int64_t)floorf(fmaf((float)(px[i] + bias), alpha, px[i] < pt ? gneg : g));
        o = o < p->qmin - oy ? p->qmin - oy : o > p->qmax - oy ? p->qmax - oy : o;
        exact = o == (p->y_dtype == FIXQ_UINT8 ? (int32_t)y[i] : (int32_t)(int8_t)y[i]) - oy;
      }
      if (!exact) continue;
      memcpy(&p->lin_ra, &alpha, 4);
      memcpy(&p->lin_u, &g, 4);
      memcpy(&p->lin_neg, &gneg, 4);
      p->lin_t = pt;
      p->lin_rb = 0;
      p->lin_k = bias ? 2 : 1;
      return 1;
    }
  }
  return 0;
}

/* MUL: the contract on all 65536 input pairs, then the float form on their
 * products (fit_float) with the slope M * 2^(shift - 31) (fixed point) or
 * s_a s_b / s_out. */
static void plan_mul(fixq_eltwise *p) {
  const int32_t oa = p->a_dtype == FIXQ_UINT8 ? 128 : 0, ob = p->b_dtype == FIXQ_UINT8 ? 128 : 0;
  const double r = p->rounding == FIXQ_ROUND_FP32 ? (double)p->a_scale * p->b_scale / p->y_scale
                                                  : ldexp((double)p->y_multiplier, p->y_shift - 31);
  uint8_t *buf = malloc(3 * 65536 + 4 * 65536);
  if (buf == NULL) return;
  uint8_t *a = buf, *b = buf + 65536, *y = buf + 2 * 65536;
  int32_t *px = (int32_t *)(buf + 3 * 65536);
  for (int i = 0; i < 65536; i++) {
    a[i] = (uint8_t)((i >> 8) - 128 + oa);
    b[i] = (uint8_t)((i & 255) - 128 + ob);
    px[i] = ((i >> 8) - 128 + oa - p->a_zero_point) * ((i & 255) - 128 + ob - p->b_zero_point);
  }
  eltwise_table[fixq__isa](1, 65536, a, 0, 0, b, 0, 0, y, 0, p); /* lin_k == 0: the exact kernel */
  fit_float(p, px, y, r);
  free(buf);
}

fixq_status fixq__eltwise_setup(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                                fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                                fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                                fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                                int32_t qmin, int32_t qmax) {
  int32_t lo, hi;
  if (p == NULL || (op != FIXQ_OP_ADD && op != FIXQ_OP_MUL)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (rounding != FIXQ_ROUND_DOUBLE && rounding != FIXQ_ROUND_SINGLE && rounding != FIXQ_ROUND_FP32)
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (!q8_param_ok(a_dtype, a_zero_point) || !q8_param_ok(b_dtype, b_zero_point) ||
      !q8_param_ok(y_dtype, y_zero_point) || !q8_range(y_dtype, &lo, &hi))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (qmin < lo || qmax > hi || qmin > qmax) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!scale_ok(a_scale) || !scale_ok(b_scale) || !(y_scale > 0.0f) || isinf(y_scale))
    return FIXQ_ERR_INVALID_ARGUMENT;
  p->op = op;
  p->rounding = rounding;
  p->a_dtype = a_dtype;
  p->b_dtype = b_dtype;
  p->y_dtype = y_dtype;
  p->a_zero_point = a_zero_point;
  p->b_zero_point = b_zero_point;
  p->y_zero_point = y_zero_point;
  p->qmin = qmin;
  p->qmax = qmax;
  p->a_scale = a_scale;
  p->b_scale = b_scale;
  p->y_scale = y_scale;
  p->a_multiplier = p->b_multiplier = p->y_multiplier = 0;
  p->a_shift = p->b_shift = p->y_shift = 0;
  const double sa = a_scale, sb = b_scale, sy = y_scale;
  int ok = 1;
  if (op == FIXQ_OP_ADD) {
    /* tflite/kernels/add.cc (int8): left_shift 20, twice_max_input_scale */
    const double twice_max = 2.0 * (sa > sb ? sa : sb);
    ok &= multiplier_ok(sa / twice_max, &p->a_multiplier, &p->a_shift);
    ok &= multiplier_ok(sb / twice_max, &p->b_multiplier, &p->b_shift);
    ok &= multiplier_ok(twice_max / (1048576.0 * sy), &p->y_multiplier, &p->y_shift);
  } else {
    /* tflite/kernels/mul.cc (int8): s_a * s_b / s_out */
    ok &= multiplier_ok(sa * sb / sy, &p->y_multiplier, &p->y_shift);
  }
  p->lin_ra = p->lin_rb = p->lin_u = p->lin_k = p->lin_t = p->lin_neg = 0;
  if (!ok && rounding != FIXQ_ROUND_FP32) return FIXQ_ERR_UNSUPPORTED;
  if (!ok) { /* FP32 does not use them */
    p->a_multiplier = p->b_multiplier = p->y_multiplier = 0;
    p->a_shift = p->b_shift = p->y_shift = 0;
  }
  return FIXQ_OK;
}

void fixq__eltwise_plan(fixq_eltwise *p) {
  if (p->op == FIXQ_OP_ADD) plan_add(p);
  else if (fegetround() == FE_TONEAREST) plan_mul(p); /* fit_float's fmaf rounds as the kernels' fma */
}

fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                              fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                              fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                              fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                              int32_t qmin, int32_t qmax) {
  const fixq_status st = fixq__eltwise_setup(p, op, rounding, a_dtype, a_scale, a_zero_point, b_dtype, b_scale,
                                             b_zero_point, y_dtype, y_scale, y_zero_point, qmin, qmax);
  if (st == FIXQ_OK) fixq__eltwise_plan(p);
  return st;
}

/* Range checks on a filled fixq_eltwise (memory safety does not depend on
 * them; wrong values give wrong numbers, never out-of-bounds accesses). */
static int eltwise_params_ok(const fixq_eltwise *p) {
  int32_t lo, hi;
  if (p == NULL || (p->op != FIXQ_OP_ADD && p->op != FIXQ_OP_MUL)) return 0;
  if (p->rounding != FIXQ_ROUND_DOUBLE && p->rounding != FIXQ_ROUND_SINGLE && p->rounding != FIXQ_ROUND_FP32)
    return 0;
  if (!q8_param_ok(p->a_dtype, p->a_zero_point) || !q8_param_ok(p->b_dtype, p->b_zero_point) ||
      !q8_param_ok(p->y_dtype, p->y_zero_point) || !q8_range(p->y_dtype, &lo, &hi))
    return 0;
  if (p->qmin < lo || p->qmax > hi || p->qmin > p->qmax) return 0;
  if (!scale_ok(p->a_scale) || !scale_ok(p->b_scale) || !(p->y_scale > 0.0f) || isinf(p->y_scale)) return 0;
  const int32_t m[3] = {p->a_multiplier, p->b_multiplier, p->y_multiplier};
  const int32_t sh[3] = {p->a_shift, p->b_shift, p->y_shift};
  for (int i = 0; i < 3; i++)
    if (m[i] < 0 || sh[i] < -31 || sh[i] > 30) return 0;
  if (p->op == FIXQ_OP_ADD && p->rounding != FIXQ_ROUND_FP32 && (p->a_shift > 0 || p->b_shift > 0)) return 0;
  return p->lin_k >= 0 && p->lin_k <= 30 && (p->lin_neg <= 0 || (p->op == FIXQ_OP_MUL && p->lin_rb == 0) ||
                                              (p->op == FIXQ_OP_ADD && p->lin_neg == 1 && p->lin_k <= 29));
}

/* Blocks of the two innermost dimensions (one row when ndim == 1), walking
 * the outer dimensions like an odometer. */
static void eltwise_blocks(const fixq_eltwise *p, fixq_eltwise_ukernel kern, size_t ndim, const size_t *shape,
                           const char *a, const ptrdiff_t *as, const char *b, const ptrdiff_t *bs, char *y,
                           const ptrdiff_t *ys) {
  const size_t n = shape[ndim - 1];
  const int a_bcast = as[ndim - 1] == 0, b_bcast = bs[ndim - 1] == 0;
  if (ndim == 1) {
    kern(1, n, a, 0, a_bcast, b, 0, b_bcast, y, 0, p);
    return;
  }
  const size_t rows = shape[ndim - 2], outer = ndim - 2;
  const ptrdiff_t ra = as[ndim - 2], rb = bs[ndim - 2], ry = ys[ndim - 2];
  size_t idx[16] = {0};
  for (;;) {
    kern(rows, n, a, ra, a_bcast, b, rb, b_bcast, y, ry, p);
    size_t d = outer;
    while (d-- > 0) {
      if (++idx[d] < shape[d]) {
        a += as[d];
        b += bs[d];
        y += ys[d];
        break;
      }
      idx[d] = 0;
      a -= as[d] * (ptrdiff_t)(shape[d] - 1);
      b -= bs[d] * (ptrdiff_t)(shape[d] - 1);
      y -= ys[d] * (ptrdiff_t)(shape[d] - 1);
    }
    if (d == (size_t)-1) return;
  }
}

fixq_status fixq_eltwise_nd(const fixq_eltwise *p, size_t ndim, const size_t *shape, const void *a,
                            const ptrdiff_t *a_strides, const void *b, const ptrdiff_t *b_strides, void *y,
                            const ptrdiff_t *y_strides) {
  if (!eltwise_params_ok(p) || ndim == 0 || ndim > 16 || shape == NULL || a_strides == NULL ||
      b_strides == NULL || y_strides == NULL)
    return FIXQ_ERR_INVALID_ARGUMENT;
  size_t count = 1;
  for (size_t d = 0; d < ndim; d++)
    if (!fixq__mul_size(count, shape[d], &count)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (count == 0) return FIXQ_OK;
  if (a == NULL || b == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t last = ndim - 1;
  if ((a_strides[last] != 0 && a_strides[last] != 1) || (b_strides[last] != 0 && b_strides[last] != 1) ||
      y_strides[last] != 1)
    return FIXQ_ERR_INVALID_ARGUMENT;
  /* the innermost strides (0 or 1) reach at most shape[last] - 1 < count */
  size_t a_reach = shape[last] - 1, b_reach = a_reach, y_reach = a_reach;
  for (size_t d = 0; d < last; d++)
    if (!fixq__add_reach(&a_reach, shape[d], a_strides[d]) || !fixq__add_reach(&b_reach, shape[d], b_strides[d]) ||
        !fixq__add_reach(&y_reach, shape[d], y_strides[d]))
      return FIXQ_ERR_INVALID_ARGUMENT;
  /* every input and output element is one byte: strides in elements are byte strides */
  eltwise_blocks(p, eltwise_table[fixq__isa], ndim, shape, a, a_strides, b, b_strides, y, y_strides);
  return FIXQ_OK;
}

/* fixq.h's requantize form of an ADD-form plan on a' alone: n = a'*ra + u is
 * increasing in a', so its tie side n < t is a' <= d for the largest such d
 * (-129: none), which the kernels compare on the bytes. */
static int requant_form(fixq_eltwise *e) {
  int32_t d = -129;
  for (int32_t v = -128; v < 128; v++)
    if ((int64_t)v * e->lin_ra + e->lin_u < e->lin_t) {
      if (v != d + 1) return 0; /* not a prefix: never for ra >= 0 */
      d = v;
    }
  const int64_t neg = d == -129 ? 0 : e->lin_neg;
  /* the kernels add neg to u and take rb = neg, which must split into int16 (neg >> 8) and a byte */
  if (neg <= -(INT64_C(1) << 23) || (int64_t)e->lin_u + neg - 128 * (int64_t)e->lin_ra <= INT32_MIN) return 0;
  e->lin_rb = -1;
  e->lin_t = d;
  e->lin_neg = (int32_t)neg;
  return 1;
}

fixq_status fixq__requantize_q8_params(fixq_eltwise *e, fixq_dtype x_dtype, int32_t x_zero_point,
                                       fixq_dtype y_dtype, const fixq_requant *p, int plan) {
  if (e == NULL || fixq__check_requant(p, 1, y_dtype) != FIXQ_OK || !q8_param_ok(x_dtype, x_zero_point) ||
      (y_dtype != FIXQ_INT8 && y_dtype != FIXQ_UINT8))
    return FIXQ_ERR_INVALID_ARGUMENT;
  /* (x - x_zp) * (1 - 0), then the requantize output stage: a MUL whose
   * multiplier is the caller's (FP32: ((x - zp) * scale * 1) / 1, exact) */
  const int8_t one = 1;
  e->op = FIXQ_OP_MUL;
  e->rounding = p->rounding;
  e->a_dtype = x_dtype;
  e->b_dtype = FIXQ_INT8;
  e->y_dtype = y_dtype;
  e->a_zero_point = x_zero_point;
  e->b_zero_point = 0;
  e->y_zero_point = p->zero_point[0];
  e->qmin = p->qmin;
  e->qmax = p->qmax;
  e->a_scale = p->rounding == FIXQ_ROUND_FP32 ? p->scale[0] : 1.0f;
  e->b_scale = e->y_scale = 1.0f;
  e->a_multiplier = e->b_multiplier = 0;
  e->a_shift = e->b_shift = 0;
  e->y_multiplier = p->rounding == FIXQ_ROUND_FP32 ? 0 : p->multiplier[0];
  e->y_shift = p->rounding == FIXQ_ROUND_FP32 ? 0 : p->shift[0];
  e->lin_ra = e->lin_rb = e->lin_u = e->lin_k = e->lin_t = e->lin_neg = 0;
  if (plan) { /* a map of 256 values: plan it on every input value, in ADD's form (b' = 1, rb = 0) */
    uint8_t xs[256], ys[256];
    int32_t px[256];
    const int32_t ox = x_dtype == FIXQ_UINT8 ? 128 : 0;
    for (int i = 0; i < 256; i++) {
      xs[i] = (uint8_t)(i - 128 + ox);
      px[i] = i - 128; /* a' */
    }
    eltwise_table[fixq__isa](1, 256, xs, 0, 0, &one, 0, 1, ys, 0, e);
    const double r = p->rounding == FIXQ_ROUND_FP32 ? (double)p->scale[0]
                                                    : ldexp((double)p->multiplier[0], p->shift[0] - 31);
    fit_linear(e, 256, px, ys, r, 0.0, p->rounding == FIXQ_ROUND_DOUBLE && p->shift[0] < 0 ? -p->shift[0] : 0);
    if (e->lin_k > 0 && !requant_form(e)) e->lin_ra = e->lin_u = e->lin_k = e->lin_t = e->lin_neg = 0;
  }
  return FIXQ_OK;
}

fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                               fixq_dtype y_dtype, size_t n, const fixq_requant *p) {
  fixq_eltwise e;
  if (n > PTRDIFF_MAX) return FIXQ_ERR_INVALID_ARGUMENT; /* bytes: no array has more (fixq__mul_size) */
  const fixq_status st = fixq__requantize_q8_params(&e, x_dtype, x_zero_point, y_dtype, p, n >= 1024);
  if (st != FIXQ_OK) return st;
  if (n == 0) return FIXQ_OK;
  if (x == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  const int8_t one = 1;
  eltwise_table[fixq__isa](1, n, x, 0, 0, &one, 0, 1, y, 0, &e);
  return FIXQ_OK;
}
