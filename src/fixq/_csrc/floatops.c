/* Layer norm, softmax, GELU and attention in float32: argument checks, rows
 * (attention: blocks of query rows of each head) split over threads, and the
 * selected path's kernels (floatops__<isa>.c). */
#include <stdlib.h>

#include "fixq_floatops.h"

#define BIAS_BLOCK 2048               /* softmax with a bias: rows of this many values biased, then normalized */

const fixq__float_kernels *const fixq__float_table[FIXQ_ISA_COUNT] = {
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
    default: job->kern->gelu(1, r1 - r0, job->x + off, 0, job->form, job->y + off, 0); break;
  }
}

static void run_task(void *ctx, int t) {
  const float_job *job = ctx;
  const size_t T = (size_t)job->tasks;
  run_rows(job, job->rows * (size_t)t / T, job->rows * ((size_t)t + 1) / T);
}

/* Splits rows over up to `threads` threads, none with less than FIXQ__FLOAT_ELEMENTS_PER_THREAD. */
static fixq_status run(float_job *job, int threads) {
  size_t count;
  if (threads < 1 || !fixq__mul_size(job->rows, job->n, &count)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (count == 0) return FIXQ_OK;
  if (job->x == NULL || job->y == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  job->kern = fixq__float_table[fixq__isa];
  size_t T = count / FIXQ__FLOAT_ELEMENTS_PER_THREAD;
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

/* Packed sequences: units are each sequence's heads x blocks, numbered on from first[b] (first[n] in all). */
typedef struct {
  const fixq_attention_args *a;
  const fixq__float_kernels *kern;
  const size_t *first;
  float *work;
  size_t work_floats;
  int tasks;
} packed_job;

static void packed_task(void *ctx, int t) {
  const packed_job *job = ctx;
  const fixq_attention_args *a = job->a;
  const size_t T = (size_t)job->tasks, units = job->first[a->n], u1 = units * ((size_t)t + 1) / T;
  float *work = job->work + job->work_floats * (size_t)t;
  size_t u = units * (size_t)t / T, b = 0;
  while (u < u1) {
    while (job->first[b + 1] <= u) b++;
    const size_t t0 = a->seq_offsets[b], len = a->seq_offsets[b + 1] - t0;
    const size_t blocks = (len + FIXQ__ATT_MB - 1) / FIXQ__ATT_MB;
    const size_t local = u - job->first[b], h = local / blocks;
    const size_t last = job->first[b] + (h + 1) * blocks < u1 ? job->first[b] + (h + 1) * blocks : u1;
    const size_t i0 = (local - h * blocks) * FIXQ__ATT_MB, i1e = (last - job->first[b] - h * blocks) * FIXQ__ATT_MB;
    const ptrdiff_t tt = (ptrdiff_t)t0, hh = (ptrdiff_t)h;
    job->kern->attention(i0, i1e < len ? i1e : len, len, len, a->d, a->q + tt * a->q_stride[1] + hh * a->q_stride[2],
                         a->q_stride[1], a->k + tt * a->k_stride[1] + hh * a->k_stride[2], a->k_stride[1],
                         a->v + tt * a->v_stride[1] + hh * a->v_stride[2], a->v_stride[1], a->scale,
                         a->bias == NULL ? NULL : a->bias + t0, a->o + (t0 * a->h + h) * a->d, a->h * a->d, work);
    u = last;
  }
}

/* fixq_attention_f32 with seq_offsets: a->m == a->l == seq_offsets[n], checked here. */
static fixq_status attention_packed(const fixq_attention_args *a, int threads) {
  const size_t *off = a->seq_offsets;
  size_t longest = 0, units = 0, macs = 0, heads_d, work, bytes, first_bytes;
  if (off[0] != 0 || off[a->n] != a->m || a->m != a->l || !fixq__mul_size(a->h, a->d, &heads_d))
    return FIXQ_ERR_INVALID_ARGUMENT;
  for (size_t b = 0; b < a->n; b++) {
    size_t len = off[b + 1] - off[b], sq, m;
    if (off[b + 1] <= off[b] || off[b + 1] > a->m) return FIXQ_ERR_INVALID_ARGUMENT;
    if (!fixq__mul_size(len, len, &sq) || !fixq__mul_size(sq, heads_d, &m) || !fixq__add_size(macs, m, &macs))
      return FIXQ_ERR_INVALID_ARGUMENT;
    units += a->h * ((len + FIXQ__ATT_MB - 1) / FIXQ__ATT_MB); /* at most h * T */
    longest = len > longest ? len : longest;
  }
  size_t T = macs / FIXQ__MACS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > units) T = units;
  if (T < 1) T = 1;
  work = FIXQ__ATT_WORK(longest, a->d) + 16; /* sizes checked by the caller for L = T >= longest */
  if (!fixq__mul_size(work, T * sizeof(float), &bytes) || !fixq__mul_size(a->n + 1, sizeof(size_t), &first_bytes) ||
      !fixq__add_size(bytes, first_bytes + 64, &bytes))
    return FIXQ_ERR_INVALID_ARGUMENT;
  char *mem = malloc(bytes);
  if (mem == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  size_t *first = (size_t *)mem;
  first[0] = 0;
  for (size_t b = 0; b < a->n; b++)
    first[b + 1] = first[b] + a->h * ((off[b + 1] - off[b] + FIXQ__ATT_MB - 1) / FIXQ__ATT_MB);
  packed_job job = {a, fixq__float_table[fixq__isa], first,
                    (float *)(((uintptr_t)(mem + first_bytes) + 63) & ~(uintptr_t)63), work, (int)T};
  if (T == 1) packed_task(&job, 0);
  else fixq__parallel(job.tasks, packed_task, &job);
  free(mem);
  return FIXQ_OK;
}

fixq_status fixq_attention_f32(const fixq_attention_args *a, int threads) {
  size_t heads, rows, out, macs, work;
  if (a == NULL || threads < 1 || !fixq__mul_size(a->seq_offsets != NULL ? 1 : a->n, a->h, &heads) ||
      !fixq__mul_size(heads, a->m, &rows) || !fixq__mul_size(rows, a->d, &out) || !fixq__mul_size(out, a->l, &macs) ||
      (a->bias_stride != 0 && a->bias_stride != a->l) || !isfinite(a->scale))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (rows == 0 || a->d == 0) return FIXQ_OK;
  if (a->l == 0 || a->q == NULL || a->k == NULL || a->v == NULL || a->o == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  /* FIXQ__ATT_WORK(l, d) + 16 floats per task (64-byte alignment), then the batches' kept keys */
  if (a->l > (size_t)-1 / 4 || a->d > (size_t)-1 / 64 ||
      !fixq__mul_size(FIXQ__ATT_LP(a->l), a->d + FIXQ__ATT_MB + 1 + ((a->d + 15) & ~(size_t)15), &work) ||
      !fixq__add_size(work, FIXQ__ATT_MB * (a->d + 15) + 16, &work))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (a->seq_offsets != NULL) return attention_packed(a, threads);
  const size_t blocks = (a->m + FIXQ__ATT_MB - 1) / FIXQ__ATT_MB, units = heads * blocks;
  size_t T = macs / FIXQ__MACS_PER_THREAD;
  if (T > (size_t)threads) T = (size_t)threads;
  if (T > units) T = units;
  if (T < 1) T = 1;
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
  att_job job = {a, fixq__float_table[fixq__isa], l_kept, blocks, units,
                 (float *)(((uintptr_t)(mem + kept_bytes) + 63) & ~(uintptr_t)63), work, (int)T};
  if (T == 1) att_task(&job, 0);
  else fixq__parallel(job.tasks, att_task, &job);
  free(mem);
  return FIXQ_OK;
}
