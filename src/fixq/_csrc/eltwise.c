/* Elementwise add / mul entry points: parameter derivation (TFLite int8 ADD
 * and MUL), the broadcast driver, and the selected row kernel. */
#include <math.h>

#include "fixq_internal.h"

static const fixq_eltwise_ukernel eltwise_table[FIXQ_ISA_COUNT] = {
    fixq_eltwise__scalar, FIXQ__AVX2(fixq_eltwise__avx2)};

static int q8_range(fixq_dtype dt, int32_t *lo, int32_t *hi) {
  if (dt == FIXQ_INT8) { *lo = INT8_MIN; *hi = INT8_MAX; return 1; }
  if (dt == FIXQ_UINT8) { *lo = 0; *hi = UINT8_MAX; return 1; }
  return 0;
}

static int q8_param_ok(fixq_dtype dt, int32_t zp) {
  int32_t lo, hi;
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

fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
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
  return ok || rounding == FIXQ_ROUND_FP32 ? FIXQ_OK : FIXQ_ERR_UNSUPPORTED;
}

static int eltwise_params_ok(const fixq_eltwise *p) {
  fixq_eltwise q;
  return p != NULL &&
         fixq_eltwise_init(&q, p->op, p->rounding, p->a_dtype, p->a_scale, p->a_zero_point, p->b_dtype,
                           p->b_scale, p->b_zero_point, p->y_dtype, p->y_scale, p->y_zero_point, p->qmin,
                           p->qmax) == FIXQ_OK &&
         q.a_multiplier == p->a_multiplier && q.a_shift == p->a_shift && q.b_multiplier == p->b_multiplier &&
         q.b_shift == p->b_shift && q.y_multiplier == p->y_multiplier && q.y_shift == p->y_shift;
}

/* Rows of the innermost dimension, walking the outer dimensions like an
 * odometer. */
static void eltwise_rows(const fixq_eltwise *p, fixq_eltwise_ukernel row, size_t ndim, const size_t *shape,
                         const char *a, const ptrdiff_t *as, const char *b, const ptrdiff_t *bs, char *y,
                         const ptrdiff_t *ys) {
  const size_t n = shape[ndim - 1];
  const int a_bcast = as[ndim - 1] == 0, b_bcast = bs[ndim - 1] == 0;
  if (ndim == 1) {
    row(n, a, a_bcast, b, b_bcast, y, p);
    return;
  }
  size_t idx[16] = {0};
  const size_t outer = ndim - 1;
  for (;;) {
    row(n, a, a_bcast, b, b_bcast, y, p);
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
  for (size_t d = 0; d < ndim; d++)
    if (shape[d] == 0) return FIXQ_OK;
  if (a == NULL || b == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t last = ndim - 1;
  if ((a_strides[last] != 0 && a_strides[last] != 1) || (b_strides[last] != 0 && b_strides[last] != 1) ||
      y_strides[last] != 1)
    return FIXQ_ERR_INVALID_ARGUMENT;
  /* every input and output element is one byte: strides in elements are byte strides */
  eltwise_rows(p, eltwise_table[fixq__isa], ndim, shape, a, a_strides, b, b_strides, y, y_strides);
  return FIXQ_OK;
}

fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                               fixq_dtype y_dtype, size_t n, const fixq_requant *p) {
  if (fixq__check_requant(p, 1, y_dtype) != FIXQ_OK || !q8_param_ok(x_dtype, x_zero_point) ||
      (y_dtype != FIXQ_INT8 && y_dtype != FIXQ_UINT8))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return FIXQ_OK;
  if (x == NULL || y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  /* (x - x_zp) * (1 - 0), then the requantize output stage: a MUL whose
   * multiplier is the caller's (FP32: ((x - zp) * scale * 1) / 1, exact) */
  const int8_t one = 1;
  fixq_eltwise e;
  e.op = FIXQ_OP_MUL;
  e.rounding = p->rounding;
  e.a_dtype = x_dtype;
  e.b_dtype = FIXQ_INT8;
  e.y_dtype = y_dtype;
  e.a_zero_point = x_zero_point;
  e.b_zero_point = 0;
  e.y_zero_point = p->zero_point[0];
  e.qmin = p->qmin;
  e.qmax = p->qmax;
  e.a_scale = p->rounding == FIXQ_ROUND_FP32 ? p->scale[0] : 1.0f;
  e.b_scale = e.y_scale = 1.0f;
  e.a_multiplier = e.b_multiplier = 0;
  e.a_shift = e.b_shift = 0;
  e.y_multiplier = p->rounding == FIXQ_ROUND_FP32 ? 0 : p->multiplier[0];
  e.y_shift = p->rounding == FIXQ_ROUND_FP32 ? 0 : p->shift[0];
  eltwise_table[fixq__isa](n, x, 0, &one, 1, y, &e);
  return FIXQ_OK;
}
