/* The token-wise steps of a sequence model around its layers, in float32 and
 * split over threads: the sum of a token's int8 embedding rows (then its
 * layer norm) and the masked mean over each sequence's tokens.  Every value
 * is rounded as numpy rounds the separate ops (a product, then each add, in
 * float32; the build's -ffp-contract=off keeps them apart), so the results
 * are numpy's bits on every path and at every thread count. */
#include <stdlib.h>

#include "fixq_floatops.h"

#define EMBED_BLOCK 16 /* rows summed, then layer-normed while they are in L1 */
#define MEAN_COLUMNS 64 /* columns of a sequence's sums kept in registers / L1 */

typedef struct {
  const fixq_embed_table *tables;
  size_t count, rows, d;
  const float *ln_w, *ln_b;
  float eps;
  float *y;
  const fixq__float_kernels *kern;
  int tasks;
} embed_job;

static void embed_rows(const embed_job *job, size_t r0, size_t r1) {
  const size_t d = job->d;
  for (size_t r = r0; r < r1; r += EMBED_BLOCK) {
    const size_t re = r1 - r < EMBED_BLOCK ? r1 : r + EMBED_BLOCK;
    for (size_t t = r; t < re; t++) {
      float *y = job->y + t * d;
      for (size_t k = 0; k < job->count; k++) {
        const fixq_embed_table *tb = &job->tables[k];
        const size_t id = (size_t)tb->ids[t];
        const int8_t *q = tb->q + id * d;
        const float s = tb->scale[id];
        if (k == 0) /* numpy's int8 x float32 multiply: the int8 widened exactly, one rounded product */
          for (size_t i = 0; i < d; i++) y[i] = (float)q[i] * s;
        else
          for (size_t i = 0; i < d; i++) y[i] = y[i] + (float)q[i] * s;
      }
    }
    if (job->ln_w != NULL) job->kern->layer_norm(re - r, d, job->y + r * d, job->ln_w, job->ln_b, job->eps,
                                                 job->y + r * d);
  }
}

static void embed_task(void *ctx, int t) {
  const embed_job *job = ctx;
  const size_t T = (size_t)job->tasks;
  embed_rows(job, job->rows * (size_t)t / T, job->rows * ((size_t)t + 1) / T);
}

/* The number of tasks for `elements` values over `units` units: at most `threads`, none with less than
 * FIXQ__FLOAT_ELEMENTS_PER_THREAD values. */
static int task_count(size_t elements, size_t units, int threads) {
  size_t T = elements / FIXQ__FLOAT_ELEMENTS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > units) T = units;
  return T < 1 ? 1 : (int)T;
}

fixq_status fixq_embed_sum_f32(const fixq_embed_table *tables, size_t count, size_t rows, size_t d,
                               const float *ln_weight, const float *ln_bias, float eps, float *y, int threads) {
  size_t elements, table_elements;
  if (threads < 1 || count == 0 || tables == NULL || !fixq__mul_size(rows, d, &elements) ||
      ((ln_weight == NULL) != (ln_bias == NULL)) || (ln_weight != NULL && !(eps >= 0.0f && isfinite(eps))))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (elements == 0) return FIXQ_OK;
  if (y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t k = 0; k < count; k++) { /* every id inside its table, before any row is read */
    const fixq_embed_table *tb = &tables[k];
    if (tb->q == NULL || tb->scale == NULL || tb->ids == NULL || !fixq__mul_size(tb->rows, d, &table_elements))
      return FIXQ_ERR_INVALID_ARGUMENT;
    for (size_t t = 0; t < rows; t++)
      if (tb->ids[t] < 0 || (uint64_t)tb->ids[t] >= (uint64_t)tb->rows) return FIXQ_ERR_INVALID_ARGUMENT;
  }
  embed_job job = {tables, count, rows, d, ln_weight, ln_bias, eps, y, fixq__float_table[fixq__isa], 1};
  job.tasks = task_count(elements, rows, threads);
  if (job.tasks == 1) embed_rows(&job, 0, rows);
  else fixq__parallel(job.tasks, embed_task, &job);
  return FIXQ_OK;
}

typedef struct {
  const float *x, *mask;
  const size_t *offsets;
  size_t n, d, chunks; /* chunks: blocks of MEAN_COLUMNS columns per sequence */
  float *y;
  int tasks;
} mean_job;

/* numpy's (x * mask).sum(axis=tokens) / maximum(mask.sum(axis=tokens), 1e-9) for one block of columns: the
 * products rounded, added row after row to +0 (the reduction's identity), the count (whole numbers, exact)
 * likewise, one float32 division. */
static void mean_unit(const mean_job *job, size_t unit) {
  const size_t b = unit / job->chunks, c0 = unit % job->chunks * MEAN_COLUMNS, d = job->d;
  const size_t cols = d - c0 < MEAN_COLUMNS ? d - c0 : MEAN_COLUMNS;
  float acc[MEAN_COLUMNS], count = 0.0f;
  for (size_t i = 0; i < cols; i++) acc[i] = 0.0f;
  for (size_t t = job->offsets[b]; t < job->offsets[b + 1]; t++) {
    const float m = job->mask[t], *x = job->x + t * d + c0;
    for (size_t i = 0; i < cols; i++) acc[i] = acc[i] + x[i] * m;
    count = count + m;
  }
  const float div = count > 1e-9f ? count : 1e-9f; /* np.maximum; the count is never NaN */
  float *y = job->y + b * d + c0;
  for (size_t i = 0; i < cols; i++) y[i] = acc[i] / div;
}

static void mean_task(void *ctx, int t) {
  const mean_job *job = ctx;
  const size_t T = (size_t)job->tasks, units = job->n * job->chunks;
  for (size_t u = units * (size_t)t / T; u < units * ((size_t)t + 1) / T; u++) mean_unit(job, u);
}

fixq_status fixq_masked_mean_f32(const float *x, const float *mask, const size_t *offsets, size_t n, size_t d,
                                 float *y, int threads) {
  size_t elements;
  if (threads < 1 || offsets == NULL || offsets[0] != 0) return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t b = 0; b < n; b++)
    if (offsets[b + 1] < offsets[b]) return FIXQ_ERR_INVALID_ARGUMENT;
  if (n == 0 || d == 0) return FIXQ_OK;
  if (!fixq__mul_size(offsets[n], d, &elements) || y == NULL || (offsets[n] > 0 && (x == NULL || mask == NULL)))
    return FIXQ_ERR_INVALID_ARGUMENT;
  mean_job job = {x, mask, offsets, n, d, (d + MEAN_COLUMNS - 1) / MEAN_COLUMNS, y, 1};
  job.tasks = task_count(elements, n * job.chunks, threads);
  if (job.tasks == 1) mean_task(&job, 0);
  else fixq__parallel(job.tasks, mean_task, &job);
  return FIXQ_OK;
}
