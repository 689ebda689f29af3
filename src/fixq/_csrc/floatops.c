/* Layer norm, softmax, GELU and attention in float32: argument checks, rows
 * (attention: blocks of query rows of each head) split over threads, and the
 * selected path's kernels (floatops__<isa>.c). */
#include <stdlib.h>

#include "fixq_floatops.h"

#define ELEMENTS_PER_THREAD (1 << 14) /* less work than this per thread does not pay for a worker */
#define BIAS_BLOCK 2048               /* softmax with a bias: rows of this many values biased, then normalized */

static const fixq__float_kernels *const float_table[FIXQ_ISA_COUNT] = {
    &fixq__float_kernels__scalar, FIXQ__AVX2(&fixq__float_kernels__avx2),
    FIXQ__AVX512VNNI(&fixq__float_kernels__avx512vnni), &fixq__float_kernels__scalar,
    &fixq__float_kernels__scalar, &fixq__float_kernels__scalar};

typedef enum { OP_LAYER_NORM, OP_SOFTMAX, OP_SOFTMAX_BIAS, OP_GELU } float_op;

typedef struct {
  float_op op;
  const fixq__float_kernels *kern;
  const float *x, *w, *b; /* OP_SOFTMAX_BIAS: w = the bias rows, each read by `per` rows of x */
  size_t per;
  float eps;
  fixq_gelu_form form;
  float *y;
  size_t rows, n; /* GELU: rows are single elements */
  int tasks;
} float_job;

static void run_rows(const float_job *job, size_t r0, size_t r1) {
  const size_t off = r0 * job->n;
  switch (job->op) {
    case OP_LAYER_NORM:
      job->kern->layer_norm(r1 - r0, job->n, job->x + off, job->w, job->b, job->eps, job->y + off);
      break;
    case OP_SOFTMAX: job->kern->softmax(r1 - r0, job->n, job->x + off, job->y + off); break;
    case OP_SOFTMAX_BIAS: { /* x + bias into y, then softmax of y in place while the rows are in L1: the bits
                               of the separate add and softmax */
      const size_t n = job->n, block = n < BIAS_BLOCK ? BIAS_BLOCK / n : 1;
      for (size_t r = r0; r < r1; r += block) {
        const size_t rows = r1 - r < block ? r1 - r : block;
        for (size_t q = r; q < r + rows; q++) {
          const float *xr = job->x + q * n, *br = job->w + q / job->per * n;
          float *yr = job->y + q * n;
          for (size_t i = 0; i < n; i++) yr[i] = xr[i] + br[i];
        }
        job->kern->softmax(rows, n, job->y + r * n, job->y + r * n);
      }
      break;
    }
    default: job->kern->gelu(r1 - r0, job->x + off, job->form, job->y + off); break;
  }
}

static void run_task(void *ctx, int t) {
  const float_job *job = ctx;
  const size_t T = (size_t)job->tasks;
  run_rows(job, job->rows * (size_t)t / T, job->rows * ((size_t)t + 1) / T);
}

/* Splits rows over up to `threads` threads, none with less than ELEMENTS_PER_THREAD. */
static fixq_status run(float_job *job, int threads) {
  size_t count;
  if (threads < 1 || !fixq__mul_size(job->rows, job->n, &count)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (count == 0) return FIXQ_OK;
  if (job->x == NULL || job->y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  job->kern = float_table[fixq__isa];
  size_t T = count / ELEMENTS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > job->rows) T = job->rows;
  if (T <= 1) {
    run_rows(job, 0, job->rows);
    return FIXQ_OK;
  }
  job->tasks = (int)T;
  fixq__parallel(job->tasks, run_task, job);
  return FIXQ_OK;
}

fixq_status fixq_layer_norm_f32(const float *x, size_t rows, size_t n, const float *weight, const float *bias,
                                float eps, float *y, int threads) {
  if (!(eps >= 0.0f && isfinite(eps)) || (n > 0 && (weight == NULL || bias == NULL))) return FIXQ_ERR_INVALID_ARGUMENT;
  float_job job = {OP_LAYER_NORM, NULL, x, weight, bias, 1, eps, FIXQ_GELU_ERF, y, rows, n, 1};
  return run(&job, threads);
}

fixq_status fixq_softmax_f32(const float *x, size_t rows, size_t n, float *y, int threads) {
  float_job job = {OP_SOFTMAX, NULL, x, NULL, NULL, 1, 0.0f, FIXQ_GELU_ERF, y, rows, n, 1};
  return run(&job, threads);
}

fixq_status fixq_softmax_bias_f32(const float *x, size_t rows, size_t n, const float *bias, size_t bias_rows,
                                  float *y, int threads) {
  if (bias_rows == 0 || rows % bias_rows != 0 || (rows > 0 && n > 0 && bias == NULL)) return FIXQ_ERR_INVALID_ARGUMENT;
  float_job job = {OP_SOFTMAX_BIAS, NULL, x, bias, NULL, rows / bias_rows, 0.0f, FIXQ_GELU_ERF, y, rows, n, 1};
  return run(&job, threads);
}

fixq_status fixq_gelu_f32(const float *x, size_t count, fixq_gelu_form form, float *y, int threads) {
  if (form != FIXQ_GELU_ERF && form != FIXQ_GELU_TANH) return FIXQ_ERR_INVALID_ARGUMENT;
  float_job job = {OP_GELU, NULL, x, NULL, NULL, 1, 0.0f, form, y, count, 1, 1};
  return run(&job, threads);
}

typedef struct {
  const fixq_attention_args *a;
  const fixq__float_kernels *kern;
  const size_t *l_kept; /* per batch */
  size_t blocks;        /* query blocks per head */
  size_t units;         /* heads * blocks */
  float *work;
  size_t work_floats; /* per task */
  int tasks;
} att_job;

static void att_task(void *ctx, int t) {
  const att_job *job = ctx;
  const fixq_attention_args *a = job->a;
  const size_t T = (size_t)job->tasks, u1 = job->units * ((size_t)t + 1) / T;
  float *work = job->work + job->work_floats * (size_t)t;
  for (size_t u = job->units * (size_t)t / T; u < u1;) {
    const size_t head = u / job->blocks, b = head / a->h, h = head % a->h;
    const size_t last = (head + 1) * job->blocks < u1 ? (head + 1) * job->blocks : u1;
    const size_t i0 = (u - head * job->blocks) * FIXQ__ATT_MB, i1e = (last - head * job->blocks) * FIXQ__ATT_MB;
    const ptrdiff_t bb = (ptrdiff_t)b, hh = (ptrdiff_t)h;
    job->kern->attention(i0, i1e < a->m ? i1e : a->m, a->l, job->l_kept[b], a->d,
                         a->q + bb * a->q_stride[0] + hh * a->q_stride[2], a->q_stride[1],
                         a->k + bb * a->k_stride[0] + hh * a->k_stride[2], a->k_stride[1],
                         a->v + bb * a->v_stride[0] + hh * a->v_stride[2], a->v_stride[1], a->scale,
                         a->bias == NULL ? NULL : a->bias + b * a->bias_stride, a->o + (b * a->m * a->h + h) * a->d,
                         a->h * a->d, work);
    u = last;
  }
}

fixq_status fixq_attention_f32(const fixq_attention_args *a, int threads) {
  size_t heads, rows, out, macs, work;
  if (a == NULL || threads < 1 || !fixq__mul_size(a->n, a->h, &heads) || !fixq__mul_size(heads, a->m, &rows) ||
      !fixq__mul_size(rows, a->d, &out) || !fixq__mul_size(out, a->l, &macs) ||
      (a->bias_stride != 0 && a->bias_stride != a->l) || !isfinite(a->scale))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (rows == 0 || a->d == 0) return FIXQ_OK;
  if (a->l == 0 || a->q == NULL || a->k == NULL || a->v == NULL || a->o == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t blocks = (a->m + FIXQ__ATT_MB - 1) / FIXQ__ATT_MB, units = heads * blocks;
  size_t T = macs / FIXQ__MACS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > units) T = units;
  if (T < 1) T = 1;
  /* FIXQ__ATT_WORK(l, d) + 16 floats per task (64-byte alignment), then the batches' kept keys */
  if (a->l > (size_t)-1 / 4 || a->d > (size_t)-1 / 64 ||
      !fixq__mul_size(FIXQ__ATT_LP(a->l), a->d + FIXQ__ATT_MB + 1, &work) ||
      !fixq__add_size(work, FIXQ__ATT_MB * (a->d + 15) + 16, &work))
    return FIXQ_ERR_INVALID_ARGUMENT;
  work = FIXQ__ATT_WORK(a->l, a->d) + 16;
  size_t bytes, kept_bytes;
  if (!fixq__mul_size(work, T * sizeof(float), &bytes) || !fixq__mul_size(a->n, sizeof(size_t), &kept_bytes) ||
      !fixq__add_size(bytes, kept_bytes + 64, &bytes))
    return FIXQ_ERR_INVALID_ARGUMENT;
  char *mem = malloc(bytes);
  if (mem == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  size_t *l_kept = (size_t *)mem;
  for (size_t b = 0; b < a->n; b++) { /* right padding: keys past the last one above FIXQ__ATT_MASKED */
    const float *br = a->bias == NULL ? NULL : a->bias + b * a->bias_stride;
    size_t j = a->l;
    while (br != NULL && j > 0 && br[j - 1] <= FIXQ__ATT_MASKED) j--;
    l_kept[b] = j == 0 || br == NULL || !(br[j - 1] >= FIXQ__ATT_KEPT) ? a->l : j;
  }
  att_job job = {a, float_table[fixq__isa], l_kept, blocks, units,
                 (float *)(((uintptr_t)(mem + kept_bytes) + 63) & ~(uintptr_t)63), work, (int)T};
  if (T == 1) att_task(&job, 0);
  else fixq__parallel(job.tasks, att_task, &job);
  free(mem);
  return FIXQ_OK;
}
