/* Dynamic-int8 linear layer: float x quantized to uint8 at run time (per row
 * or per tensor), the int8 GEMM driver (qgemm.c) with exact int32
 * accumulators, and a float epilogue (dequantize, bias) on each block of
 * accumulators while it is in L1.
 *
 * With q = quantized x and zp its zero point (per row),
 *   sum_k (q - zp)(b' - b_zp') = sum_k q (b' - b_zp') - zp * col_sum[n]:
 * the driver forms the first sum (uint8 a, zero point 0), the epilogue the
 * second from the packed weights' column sums (modulo 2^32; the driver's
 * check that 255 * col_abs fits int32 bounds the exact result). */
#include <stdlib.h>
#include <string.h>

#include "fixq_floatops.h"

#define ELEMENTS_PER_THREAD (1 << 15) /* quantization: less than this per thread does not pay for a worker */

static const fixq__dyn_kernels *const dyn_table[FIXQ_ISA_COUNT] = {
    &fixq__dyn_kernels__scalar, FIXQ__AVX2(&fixq__dyn_kernels__avx2),
    FIXQ__AVX512VNNI(&fixq__dyn_kernels__avx512vnni), &fixq__dyn_kernels__scalar,
    &fixq__dyn_kernels__scalar, &fixq__dyn_kernels__scalar};

/* onnxruntime DynamicQuantizeLinear (GetQuantizationParameter) for uint8: the
 * range widened to hold 0, scale = (hi - lo) / 255 (1 where that is 0),
 * zero point = round_half_even(clamp(0 - lo / scale, 0, 255)).  0 when the
 * scale is not finite (hi - lo overflows float32). */
static int quant_params(float lo, float hi, float *scale, int32_t *zp) {
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
  uint8_t *q;
  float *x_scale, *range; /* range: lo, hi per task (per tensor) */
  int32_t *zp;
  int *bad;               /* per task: a row (or the task's block) failed quant_params or finite_range */
  int tasks, tensor_pass; /* 0: per row, both steps; per tensor: 1 = ranges, 2 = quantize with x_scale[0], zp[0] */
  const int32_t *col_sum;
  const float *w_scale, *bias;
  float *y;
} dyn_job;

static void quantize_task(void *ctx, int t) {
  const dyn_job *j = ctx;
  const size_t T = (size_t)j->tasks, r0 = j->m * (size_t)t / T, r1 = j->m * ((size_t)t + 1) / T, k = j->k;
  const float *x = j->x + r0 * k;
  uint8_t *q = j->q + r0 * k;
  if (j->tensor_pass == 1) {
    if (!j->kern->finite_range((r1 - r0) * k, x, &j->range[2 * t], &j->range[2 * t + 1])) j->bad[t] = 1;
  } else if (j->tensor_pass == 2) {
    j->kern->quantize_u8((r1 - r0) * k, x, j->x_scale[0], j->zp[0], q);
  } else {
    for (size_t r = r0; r < r1; r++, x += k, q += k) {
      float lo, hi;
      if (!j->kern->finite_range(k, x, &lo, &hi) || !quant_params(lo, hi, &j->x_scale[r], &j->zp[r])) {
        j->bad[t] = 1;
        return;
      }
      j->kern->quantize_u8(k, x, j->x_scale[r], j->zp[r], q);
    }
  }
}

static int quantize_pass(dyn_job *job, int pass) {
  job->tensor_pass = pass;
  if (job->tasks == 1) quantize_task(job, 0);
  else fixq__parallel(job->tasks, quantize_task, job);
  for (int t = 0; t < job->tasks; t++)
    if (job->bad[t]) return 0;
  return 1;
}

static void store(const void *ctx, const int32_t *acc, size_t lda, size_t m0, size_t rows, size_t n0, size_t cols) {
  const dyn_job *j = ctx;
  j->kern->epilogue(rows, cols, acc, lda, j->zp + m0, j->x_scale + m0, j->col_sum + n0, j->w_scale + n0,
                    j->bias + n0, j->y + m0 * j->n + n0, j->n);
}

fixq_status fixq_dynamic_linear(const float *x, size_t m, const fixq_packed_b *b, const float *w_scale,
                                size_t w_scale_count, const float *bias, fixq_dyn_granularity granularity,
                                float *y, int threads) {
  size_t mk, mn, bytes;
  if (b == NULL || threads < 1 || (granularity != FIXQ_DYN_ROW && granularity != FIXQ_DYN_TENSOR))
    return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t k = b->k, n = b->n;
  if (!fixq__mul_size(m, k, &mk) || !fixq__mul_size(m, n, &mn) || (w_scale_count != 1 && w_scale_count != n) ||
      w_scale == NULL)
    return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < w_scale_count; i++)
    if (!(w_scale[i] > 0.0f && isfinite(w_scale[i]))) return FIXQ_ERR_INVALID_ARGUMENT;
  if (m == 0 || n == 0) return FIXQ_OK;
  if (y == NULL || (x == NULL && k > 0)) return FIXQ_ERR_INVALID_ARGUMENT;

  size_t T = mk / ELEMENTS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > m) T = m;
  if (T < 1) T = 1;
  /* q, then x_scale, zp (m each), w_scale and bias (n each), ranges and flags (per task) */
  if (!fixq__add_size(mk, 64 + 4 * (2 * m + 2 * n + 3 * T), &bytes)) return FIXQ_ERR_INVALID_ARGUMENT;
  char *mem = malloc(bytes);
  if (mem == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  float *x_scale = (float *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
  int32_t *zp = (int32_t *)(x_scale + m);
  float *ws = (float *)(zp + m), *bs = ws + n, *range = bs + n;
  int *bad = (int *)(range + 2 * T);
  uint8_t *q = (uint8_t *)(bad + T);
  for (size_t i = 0; i < n; i++) {
    ws[i] = w_scale[w_scale_count == 1 ? 0 : i];
    bs[i] = bias == NULL ? 0.0f : bias[i];
  }
  memset(bad, 0, T * sizeof *bad);
  dyn_job job = {dyn_table[fixq__isa], x, m, k, n, q, x_scale, range, zp, bad, (int)T, 0, b->col_sum, ws, bs, y};
  fixq_status st = FIXQ_OK;
  if (k == 0) { /* no values: scale 1, zero point 0, acc 0 */
    for (size_t r = 0; r < m; r++) x_scale[r] = 1.0f, zp[r] = 0;
  } else if (granularity == FIXQ_DYN_ROW) {
    if (!quantize_pass(&job, 0)) st = FIXQ_ERR_NAN;
  } else if (!quantize_pass(&job, 1)) {
    st = FIXQ_ERR_NAN;
  } else {
    float lo = range[0], hi = range[1];
    for (size_t t = 1; t < T; t++) {
      lo = range[2 * t] < lo ? range[2 * t] : lo;
      hi = range[2 * t + 1] > hi ? range[2 * t + 1] : hi;
    }
    if (!quant_params(lo, hi, &x_scale[0], &zp[0])) st = FIXQ_ERR_NAN;
    else quantize_pass(&job, 2);
    for (size_t r = 1; r < m; r++) x_scale[r] = x_scale[0], zp[r] = zp[0];
  }
  if (st == FIXQ_OK) st = fixq__qgemm_store_s32(m, q, FIXQ_UINT8, k, 0, b, NULL, store, &job, threads);
  free(mem);
  return st;
}
