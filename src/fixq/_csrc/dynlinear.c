/* Dynamic-int8 linear layer: float x quantized to uint8 at run time (per row
 * or per tensor) a tile's rows at a time as the int8 GEMM driver (qgemm.c)
 * packs them, so that x is read once and its uint8 copy never leaves L1;
 * exact int32 accumulators, and a float epilogue (dequantize, bias, and a
 * residual add) on each block of accumulators while it is in L1, or (AVX-512
 * VNNI, full tiles) straight from the GEMM kernel's registers, then GELU on
 * the block's rows while they are in L1.  Per tensor, one range pass over x
 * comes first.
 *
 * With q = quantized x and zp its zero point (per row),
 *   sum_k (q - zp)(b' - b_zp') = sum_k q (b' - b_zp') - zp * col_sum[n]:
 * the driver forms the first sum (uint8 a, zero point 0), the epilogue the
 * second from the packed weights' column sums (modulo 2^32; the driver's
 * check that 255 * col_abs fits int32 bounds the exact result). */
#include <stdlib.h>
#include <string.h>

#include "fixq_floatops.h"

#define ELEMENTS_PER_THREAD (1 << 15) /* range pass: less than this per thread does not pay for a worker */

static const fixq__dyn_kernels *const dyn_table[FIXQ_ISA_COUNT] = {
    &fixq__dyn_kernels__scalar, FIXQ__AVX2(&fixq__dyn_kernels__avx2),
    FIXQ__AVX512VNNI(&fixq__dyn_kernels__avx512vnni), &fixq__dyn_kernels__scalar,
    &fixq__dyn_kernels__scalar, &fixq__dyn_kernels__scalar};

/* fixq_floatops.h: onnxruntime DynamicQuantizeLinear's uint8 scale and zero point. */
int fixq__dyn_qparams(float lo, float hi, float *scale, int32_t *zp) {
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  float s = (hi - lo) / 255.0f;
  if (s == 0.0f) s = 1.0f;
  if (!isfinite(s)) return 0;
  float z = 0.0f - lo / s;
  z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
  *scale = s;
  *zp = (int32_t)fixq__round_even_small(z);
  return 1;
}

typedef struct {
  const fixq__dyn_kernels *kern;
  const float *x;
  size_t m, k, n;
  int per_tensor;
  fixq__dyn_row tensor; /* per tensor: the one scale and zero point */
  float *range;         /* per tensor: lo, hi per task of the range pass */
  int *bad;             /* per task: its block holds NaN or infinity */
  int tasks;
  const fixq__dyn_out *out; /* the epilogue's arrays and the activation */
} dyn_job;

static void range_task(void *ctx, int t) {
  const dyn_job *j = ctx;
  const size_t T = (size_t)j->tasks, r0 = j->m * (size_t)t / T, r1 = j->m * ((size_t)t + 1) / T;
  if (!j->kern->finite_range((r1 - r0) * j->k, j->x + r0 * j->k, &j->range[2 * t], &j->range[2 * t + 1]))
    j->bad[t] = 1;
}

/* The GEMM's A, a tile's rows at a time (fixq__qgemm_source): each row's scale and zero point (its own, or
 * the tensor's) into info, its uint8 values into q; the tile's rows share one pass (rows are contiguous). */
static fixq_status quantize_rows(const void *ctx, size_t m0, size_t rows, uint8_t *q, void *info) {
  const dyn_job *j = ctx;
  const size_t k = j->k;
  const float *x = j->x + m0 * k;
  fixq__dyn_row *row = info;
  if (j->per_tensor || k == 0) {
    for (size_t r = 0; r < rows; r++) row[r] = j->tensor;
    if (k > 0) j->kern->quantize_u8(rows * k, x, j->tensor.scale, j->tensor.zp, q);
    return FIXQ_OK;
  }
  return j->kern->quantize_rows(rows, k, x, row, q) ? FIXQ_OK : FIXQ_ERR_NAN;
}

static void store(const void *ctx, const void *info, const int32_t *acc, size_t lda, size_t m0, size_t rows,
                  size_t n0, size_t cols) {
  const dyn_job *j = ctx;
  const fixq__dyn_out *o = j->out;
  const size_t at = m0 * o->ldy + n0;
  j->kern->epilogue(rows, cols, acc, lda, info, o->col_sum + n0, o->w_scale + n0, o->bias + n0,
                    o->res != NULL ? o->res + at : NULL, o->y + at, o->ldy);
  if (o->act != NULL) o->act(rows, cols, o->y + at, o->ldy, o->form, o->y + at, o->ldy); /* while it is in L1 */
}

fixq_status fixq_dynamic_linear(const float *x, size_t m, const fixq_packed_b *b, const float *w_scale,
                                size_t w_scale_count, const float *bias, fixq_dyn_granularity granularity,
                                const float *residual, fixq_dyn_act act, float *y, int threads) {
  size_t mk, mn;
  if (b == NULL || threads < 1 || (granularity != FIXQ_DYN_ROW && granularity != FIXQ_DYN_TENSOR) ||
      (act != FIXQ_DYN_ACT_NONE && act != FIXQ_DYN_ACT_GELU_ERF && act != FIXQ_DYN_ACT_GELU_TANH))
    return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t k = b->k, n = b->n;
  if (!fixq__mul_size(m, k, &mk) || !fixq__mul_size(m, n, &mn) || (w_scale_count != 1 && w_scale_count != n) ||
      w_scale == NULL)
    return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < w_scale_count; i++)
    if (!(w_scale[i] > 0.0f && isfinite(w_scale[i]))) return FIXQ_ERR_INVALID_ARGUMENT;
  if (m == 0 || n == 0) return FIXQ_OK;
  if (y == NULL || (x == NULL && k > 0)) return FIXQ_ERR_INVALID_ARGUMENT;

  /* the range pass (per tensor) splits rows over T tasks */
  size_t T = mk / ELEMENTS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > m) T = m;
  if (T < 1) T = 1;
  /* w_scale and bias (n each), ranges and flags (per task) */
  float *ws = malloc(sizeof(float) * (2 * n + 3 * T));
  if (ws == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  float *bs = ws + n, *range = bs + n;
  int *bad = (int *)(range + 2 * T);
  for (size_t i = 0; i < n; i++) {
    ws[i] = w_scale[w_scale_count == 1 ? 0 : i];
    bs[i] = bias == NULL ? 0.0f : bias[i];
  }
  memset(bad, 0, T * sizeof *bad);
  const fixq__dyn_out out = {b->col_sum, ws, bs, residual, y, n,
                             act == FIXQ_DYN_ACT_NONE ? NULL : fixq__float_table[fixq__isa]->gelu,
                             act == FIXQ_DYN_ACT_GELU_TANH ? FIXQ_GELU_TANH : FIXQ_GELU_ERF};
  dyn_job job = {dyn_table[fixq__isa], x, m, k, n, granularity == FIXQ_DYN_TENSOR, {1.0f, 0}, range, bad, (int)T,
                 &out};
  fixq_status st = FIXQ_OK;
  if (job.per_tensor && k > 0) { /* k == 0: no values, scale 1, zero point 0 */
    if (T == 1) range_task(&job, 0);
    else fixq__parallel((int)T, range_task, &job);
    float lo = range[0], hi = range[1];
    for (size_t t = 0; t < T; t++) {
      if (bad[t]) st = FIXQ_ERR_NAN;
      lo = range[2 * t] < lo ? range[2 * t] : lo;
      hi = range[2 * t + 1] > hi ? range[2 * t + 1] : hi;
    }
    if (st == FIXQ_OK && !fixq__dyn_qparams(lo, hi, &job.tensor.scale, &job.tensor.zp)) st = FIXQ_ERR_NAN;
  }
  const fixq__qgemm_source src = {quantize_rows, store, &job, sizeof(fixq__dyn_row), &out};
  if (st == FIXQ_OK) st = fixq__qgemm_u8_source(m, b, &src, threads);
  free(ws);
  return st;
}
