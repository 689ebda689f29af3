/* The static int8 model executor: fixq_engine.h.  Each step is the C form of
 * one rule of docs/engine.md section 3, bit for bit the numpy path of
 * fixq.engine (engine/steps.py static_step). */
#include <math.h>
#include <string.h>
#include <stdlib.h>

#include "engine_conv.h"
#include "engine_loops.h"
#include "engine_sizes.h"
#include "engine_pw.h"
#include "engine_targets.h"

static const fixq_eng_loops *const loops_table[FIXQ_ISA_COUNT] = {
    &fixq_eng_loops__scalar, FIXQ__AVX2(&fixq_eng_loops__avx2), FIXQ__AVX512VNNI(&fixq_eng_loops__avx512vnni),
    FIXQ__NEON(&fixq_eng_loops__neon), FIXQ__DOTPROD(&fixq_eng_loops__neon), FIXQ__I8MM(&fixq_eng_loops__neon)};
/* The runtimes' forms fixq's kernels lack (engine_targets.h) */
static const fixq_eng_targets *const targets_table[FIXQ_ISA_COUNT] = {
    &fixq_eng_targets__scalar, FIXQ__AVX2(&fixq_eng_targets__avx2), FIXQ__AVX512VNNI(&fixq_eng_targets__avx512vnni),
    FIXQ__NEON(&fixq_eng_targets__scalar), FIXQ__DOTPROD(&fixq_eng_targets__scalar),
    FIXQ__I8MM(&fixq_eng_targets__scalar)};

/* ---- layout ---------------------------------------------------------------- */

/* [n][a][b] -> [n][b][a] bytes */
static void transpose(size_t n, size_t a, size_t b, const void *src, void *dst) {
  if (a == 1 || b == 1) {
    memcpy(dst, src, n * a * b);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const uint8_t *s = (const uint8_t *)src + i * a * b;
    uint8_t *d = (uint8_t *)dst + i * a * b;
    for (size_t r = 0; r < a; r++)
      for (size_t c = 0; c < b; c++) d[c * a + r] = s[r * b + c];
  }
}

/* ---- steps ----------------------------------------------------------------- */

/* engine/steps.py prepared_quantize after layout.to_internal: quantize, then NCHW -> NHWC (x already NHWC:
 * none), in the form of fixq.targets.quantize's recipe (FIXQ_ENG_Q_RECIP_EVEN: the float32 product
 * x * (1/scale), then fixq_quantize_f32 with scale 1, which divides by 1 exactly). */
static fixq_status run_quantize(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const float *x,
                                void *y, void *scratch, int nhwc) {
  const fixq_eng_tensor *t = &plan->tensors[s->out];
  const int32_t lo = IS_U8(plan) ? 0 : INT8_MIN, hi = IS_U8(plan) ? UINT8_MAX : INT8_MAX;
  const int direct = nhwc || t->c == 1 || t->h * t->w == 1;
  const size_t n = batch * numel(t);
  float scale = s->scale;
  fixq_status st;
  if (s->form == FIXQ_ENG_Q_RECIP_EVEN) {
    float *v = (float *)scratch;
    for (size_t i = 0; i < n; i++) v[i] = x[i] * s->scale;
    x = v;
    scratch = v + n;
    scale = 1.0f;
  }
  if (s->form == FIXQ_ENG_Q_DIV_AWAY || s->form == FIXQ_ENG_Q_ZP_DIV_AWAY)
    st = targets_table[fixq__isa]->quantize_away(s->form, s->scale, s->zp, plan->dtype, lo, hi, n, x,
                                                 direct ? y : scratch)
             ? FIXQ_ERR_NAN
             : FIXQ_OK;
  else
    st = fixq_quantize_f32(x, direct ? y : scratch, plan->dtype, 1, 1, n, &scale, &s->zp, lo, hi);
  if (st == FIXQ_OK && !direct) transpose(batch, t->c, t->h * t->w, scratch, y);
  return st;
}

/* fixq.targets' numpy epilogues of an int32 GEMM (bias included): ruy's x86 kernel and TFLite's reference
 * FULLY_CONNECTED, then + zero point and the clamp, on each block of accumulators as the GEMM makes it. */
typedef struct {
  const fixq_eng_target *t;
  fixq_dtype dt;
  size_t c0; /* the group's first output channel */
  uint8_t *y;
  size_t ldy;
} target_store_ctx;

static void target_store(const void *ctx, const int32_t *acc, size_t lda, size_t m0, size_t rows, size_t n0,
                         size_t cols) {
  const target_store_ctx *c = ctx;
  targets_table[fixq__isa]->gemm(c->t, c->dt, rows, cols, c->c0 + n0, acc, lda, c->y + m0 * c->ldy + c->c0 + n0,
                                 c->ldy);
}

static fixq_status gemm_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *a,
                               size_t lda, size_t g, size_t og, uint8_t *y, size_t ldy, int threads) {
  const target_store_ctx ctx = {s->target, plan->dtype, g * og, y, ldy};
  if (s->acc_fits)
    return fixq__qgemm_fitted(m, a, plan->dtype, lda, s->zp, s->packed[g], s->bias + g * og, NULL, 0, NULL,
                              FIXQ_INT32, 0, target_store, &ctx, threads);
  return fixq__qgemm_store_s32(m, a, plan->dtype, lda, s->zp, s->packed[g], s->bias + g * og, target_store, &ctx,
                               threads);
}

/* fixq_eng_conv_out: the step's output stage on rows x cols accumulators of the direct convolution */
static void conv_out(const fixq_eng_plan *plan, const fixq_requant *rq, int per_channel, const fixq_eng_target *t,
                     size_t rows, size_t cols, const int32_t *acc, uint8_t *y) {
  if (t != NULL) targets_table[fixq__isa]->gemm(t, plan->dtype, rows, cols, 0, acc, cols, y, cols);
  else
    fixq__requant_ukernel()(rows, per_channel ? cols : 1, per_channel ? 1 : cols, acc, cols, y, cols, plan->dtype,
                            rq);
}

/* engine/steps.py conv / qlinear: the 1x1 kernel (engine_pw.h), the direct convolution (engine_conv.h), or one
 * fixq_qgemm per group on the group's columns of y */
static fixq_status run_gemm(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                            uint8_t *y, uint8_t *scratch, int threads) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const size_t cg = xt->c / s->groups, og = yt->c / s->groups, m = batch * yt->h * yt->w;
  const int per_channel = s->rq_channels > 1;
  if (gemm_is_direct(s) && fixq__eng_pw(plan, s, m, x, y, threads)) return FIXQ_OK;
  if (s->conv != NULL && fixq__eng_conv(plan, s, batch, x, y, scratch, threads, conv_out)) return FIXQ_OK;
  for (size_t g = 0; g < s->groups; g++) {
    const uint8_t *a;
    size_t lda;
    if (gemm_is_direct(s)) {
      a = x + g * cg;
      lda = xt->c;
    } else {
      lda = s->kh * s->kw * cg;
      loops_table[fixq__isa]->im2col(s, xt, yt, batch, x, g, scratch, scratch + m * lda + FIXQ_ENG_IM2COL_SLACK);
      a = scratch;
    }
    if (s->target != NULL) {
      const fixq_status st = gemm_target(plan, s, m, a, lda, g, og, y, yt->c, threads);
      if (st != FIXQ_OK) return st;
      continue;
    }
    fixq_requant rq = s->rq;
    if (per_channel) {
      const size_t off = g * og;
      if (rq.multiplier != NULL) rq.multiplier += off;
      if (rq.shift != NULL) rq.shift += off;
      if (rq.scale != NULL) rq.scale += off;
      rq.zero_point += off;
    }
    const fixq_status st =
        s->acc_fits ? fixq__qgemm_fitted(m, a, plan->dtype, lda, s->zp, s->packed[g], s->bias + g * og, &rq,
                                         per_channel ? og : 1, y + g * og, plan->dtype, yt->c, NULL, NULL, threads)
                    : fixq__qgemm_checked_rq(m, a, plan->dtype, lda, s->zp, s->packed[g], s->bias + g * og, &rq,
                                             per_channel ? og : 1, y + g * og, plan->dtype, yt->c, threads);
    if (st != FIXQ_OK) return st;
  }
  return FIXQ_OK;
}

/* Depthwise steps of at most 63 taps with the output stage in registers */
static const fixq_eng_depthwise_rq_fn depthwise_rq_table[FIXQ_ISA_COUNT] = {
    NULL, FIXQ__AVX2(fixq__eng_depthwise_rq__avx2), FIXQ__AVX512VNNI(fixq__eng_depthwise_rq__avx512vnni), NULL, NULL,
    NULL};

static fixq_status run_depthwise(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                 void *y, int32_t *acc) {
  const fixq_eng_tensor *yt = &plan->tensors[s->out];
  const fixq_eng_depthwise_rq_fn fused = depthwise_rq_table[fixq__isa];
  if (fused != NULL && s->kh * s->kw <= 63) {
    const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
    uint8_t *img = (uint8_t *)(acc + batch * numel(yt)), *triples = NULL;
    if (dw_triples_bytes(s, xt, yt)) { /* after the image and the weight pairs (step_scratch) */
      fixq_eng_tensor xi = *xt;
      xi.c = yt->c;
      const size_t pairs_bytes = (s->kh * s->kw + 1) / 2 * ((yt->c + 31) / 32 * 32) * 4;
      const uintptr_t end = (uintptr_t)(img + padded_bytes(s, &xi) + pairs_bytes);
      triples = (uint8_t *)((end + 63) & ~(uintptr_t)63);
    }
    fused(plan, s, batch, x, y, img, triples);
    return FIXQ_OK;
  }
  loops_table[fixq__isa]->depthwise(plan, s, batch, x, acc, (uint8_t *)(acc + batch * numel(yt)));
  return fixq_requantize_s32(acc, y, plan->dtype, batch * yt->h * yt->w, yt->c, 1, &s->rq);
}

/* The mean over h x w requantized to the output's own scale (ONNX Runtime's
 * QLinearGlobalAveragePool, TFLite's MEAN): acc = sum of (q - zp_in), exact in
 * int32, then the output stage with the multiplier s_in / (s_out * h * w). */
static fixq_status run_global_avgpool_rq(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                         const void *x, void *y, int32_t *acc) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const size_t C = xt->c, hw = xt->h * xt->w;
  const int u8 = IS_U8(plan);
  const int32_t offset = (int32_t)hw * s->zp;
  for (size_t n = 0; n < batch; n++) {
    int32_t *a = acc + n * C;
    for (size_t c = 0; c < C; c++) a[c] = -offset;
    for (size_t p = 0; p < hw; p++) {
      const size_t base = (n * hw + p) * C;
      for (size_t c = 0; c < C; c++) a[c] += load_q(x, base + c, u8);
    }
  }
  return fixq_requantize_s32(acc, y, plan->dtype, batch, C, 1, &s->rq);
}

/* engine/steps.py concat: inputs with other qparams requantized (fixq_requantize_s32
 * of q - zp_in), then copied block by block along the axis */
static fixq_status run_concat(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                              void *const *buffers, uint8_t *y, uint8_t *scratch) {
  const fixq_eng_tensor *yt = &plan->tensors[s->out];
  const size_t ydims[3] = {yt->h, yt->w, yt->c};
  size_t outer = batch, yinner = 1;
  for (size_t a = 1; a < s->axis; a++) outer *= ydims[a - 1];
  for (size_t a = s->axis; a <= 3; a++) yinner *= ydims[a - 1];
  size_t off = 0;
  for (size_t i = 0; i < s->n_in; i++) {
    const fixq_eng_tensor *t = &plan->tensors[s->in[i]];
    const size_t inner = yinner / ydims[s->axis - 1] * (s->axis == 1 ? t->h : s->axis == 2 ? t->w : t->c);
    const uint8_t *src = buffers[s->in[i]];
    if (s->in_rq[i].zero_point != NULL) {
      const size_t n = batch * numel(t);
      int32_t *acc = (int32_t *)scratch;
      uint8_t *q = scratch + n * sizeof(int32_t);
      for (size_t e = 0; e < n; e++) acc[e] = load_q(src, e, IS_U8(plan)) - s->in_zp[i];
      const fixq_status st = fixq_requantize_s32(acc, q, plan->dtype, 1, 1, n, &s->in_rq[i]);
      if (st != FIXQ_OK) return st;
      src = q;
    }
    for (size_t r = 0; r < outer; r++) copy_exact(y + r * yinner + off, src + r * inner, inner);
    off += inner;
  }
  return FIXQ_OK;
}

/* int8 and uint8 alike: the table is indexed by the input's byte (int8 q at (uint8_t)q) */
static void run_lut(const uint8_t *table, size_t n, const void *x, void *y) {
  const uint8_t *a = (const uint8_t *)x;
  uint8_t *b = (uint8_t *)y;
  for (size_t i = 0; i < n; i++) b[i] = table[a[i]];
}

static fixq_status run_step(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, void *const *buffers,
                            void *scratch, int threads) {
  const void *x = buffers[s->in[0]];
  void *y = buffers[s->out];
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  switch (s->op) {
    case FIXQ_ENG_QUANTIZE:
      return run_quantize(plan, s, batch, x, y, scratch, 0);
    case FIXQ_ENG_GEMM:
      return run_gemm(plan, s, batch, x, y, scratch, threads);
    case FIXQ_ENG_DEPTHWISE:
      return run_depthwise(plan, s, batch, x, y, scratch);
    case FIXQ_ENG_ELTWISE:
      return fixq__eng_eltwise(plan, s, targets_table[fixq__isa], batch, buffers, y, scratch);
    case FIXQ_ENG_CONCAT:
      return run_concat(plan, s, batch, buffers, y, scratch);
    case FIXQ_ENG_CLAMP:
      loops_table[fixq__isa]->clamp(plan, s, batch * numel(xt), x, y);
      return FIXQ_OK;
    case FIXQ_ENG_MAXPOOL:
    case FIXQ_ENG_AVGPOOL:
      loops_table[fixq__isa]->pool(plan, s, batch, x, y, scratch);
      return FIXQ_OK;
    case FIXQ_ENG_GLOBAL_AVGPOOL:
      if (s->target != NULL) {
        fixq__eng_global_avgpool_target(plan, s, batch, x, y);
        return FIXQ_OK;
      }
      if (s->rq_channels) return run_global_avgpool_rq(plan, s, batch, x, y, scratch);
      loops_table[fixq__isa]->global_avgpool(plan, s, batch, x, y, scratch);
      return FIXQ_OK;
    case FIXQ_ENG_FLATTEN:
      transpose(batch, xt->h * xt->w, xt->c, x, y);
      return FIXQ_OK;
    case FIXQ_ENG_LUT:
      run_lut(s->table, batch * numel(xt), x, y);
      return FIXQ_OK;
    case FIXQ_ENG_PAD:
      fixq__eng_pad(plan, s, batch, x, y);
      return FIXQ_OK;
    case FIXQ_ENG_REQUANTIZE:
      fixq__eng_requantize_target(plan, s, batch, x, y);
      return FIXQ_OK;
    case FIXQ_ENG_SOFTMAX:
      fixq__eng_softmax_target(plan, s, batch, x, y);
      return FIXQ_OK;
  }
  return FIXQ_ERR_INVALID_ARGUMENT;
}

static fixq_status run_steps(const fixq_eng_plan *plan, size_t first, size_t batch, void *const *buffers,
                             void *scratch, int threads, size_t *failed_step) {
  for (size_t i = first; i < plan->n_steps; i++) {
    const fixq_status st = run_step(plan, &plan->steps[i], batch, buffers, scratch, threads);
    if (st != FIXQ_OK) {
      *failed_step = i;
      return st;
    }
  }
  return FIXQ_OK;
}

fixq_status fixq_eng_run(const fixq_eng_plan *plan, size_t batch, void *const *buffers, void *scratch, int threads,
                         size_t *failed_step) {
  return run_steps(plan, 0, batch, buffers, scratch, threads, failed_step);
}

/* y = x XOR flip, byte by byte */
static void copy_flip(size_t n, const uint8_t *x, uint8_t flip, uint8_t *y) {
  if (flip == 0) {
    memcpy(y, x, n);
    return;
  }
  for (size_t i = 0; i < n; i++) y[i] = x[i] ^ flip;
}

fixq_status fixq_eng_emit(const fixq_eng_plan *plan, const fixq_eng_out *o, size_t batch, const void *src, void *dst,
                          void *scratch) {
  if (o->t < 0 || (size_t)o->t >= plan->n_tensors || plan->tensors[o->t].esize != 1 ||
      mul_sz(o->a, o->b) != numel(&plan->tensors[o->t]))
    return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t per = numel(&plan->tensors[o->t]), n = batch * per;
  if (o->a > 1 && o->b > 1) {
    transpose(batch, o->a, o->b, src, o->form == FIXQ_ENG_OUT_RAW && o->flip == 0 ? dst : scratch);
    if (o->form == FIXQ_ENG_OUT_RAW && o->flip == 0) return FIXQ_OK;
    src = scratch;
  }
  switch (o->form) {
    case FIXQ_ENG_OUT_RAW:
      copy_flip(n, src, o->flip, dst);
      return FIXQ_OK;
    case FIXQ_ENG_OUT_FLOAT:
      return fixq_dequantize(src, plan->dtype, dst, 1, 1, n, &o->scale, &o->zp);
    case FIXQ_ENG_OUT_FLOAT_TFLITE:
      fixq__eng_dequantize_tflite(plan->dtype, batch, per, src, o->scale, o->zp, dst);
      return FIXQ_OK;
  }
  return FIXQ_ERR_INVALID_ARGUMENT;
}

/* ---- a batch in chunks, on worker threads ----------------------------------- */

typedef struct {
  const fixq_eng_plan *plan;
  const fixq_eng_batch *b;
  int gemm_threads;
  size_t next; /* the next chunk to take (atomic) */
  int stop;    /* a chunk failed: take no more (atomic) */
} batch_job;

typedef struct {
  batch_job *job;
  char *arena;
  size_t failed_chunk, failed_step; /* failed_chunk SIZE_MAX: none */
  fixq_status st;
} batch_worker;

static fixq_status run_chunk(const batch_job *job, char *arena, size_t c, size_t *failed_step) {
  const fixq_eng_plan *plan = job->plan;
  const fixq_eng_batch *b = job->b;
  const size_t n0 = c * b->chunk, nb = b->n - n0 < b->chunk ? b->n - n0 : b->chunk;
  void *bufs[plan->n_tensors];
  void *scratch = arena + b->scratch_off;
  const char *x = (const char *)b->x + n0 * b->x_sample;
  bufs[0] = (void *)x;
  for (size_t i = 1; i < plan->n_tensors; i++) bufs[i] = arena + b->offsets[i] * b->chunk;
  fixq_status st;
  if (b->in_form == FIXQ_ENG_IN_FLOAT_NCHW) {
    st = run_steps(plan, 0, nb, bufs, scratch, job->gemm_threads, failed_step);
  } else {
    const fixq_eng_step *q = &plan->steps[0];
    *failed_step = 0;
    if (b->in_form == FIXQ_ENG_IN_Q) {
      copy_flip(nb * b->x_sample, (const uint8_t *)x, b->in_flip, bufs[q->out]);
      st = FIXQ_OK;
    } else {
      st = run_quantize(plan, q, nb, (const float *)x, bufs[q->out], scratch, 1);
    }
    if (st == FIXQ_OK) st = run_steps(plan, 1, nb, bufs, scratch, job->gemm_threads, failed_step);
  }
  for (size_t k = 0; k < b->n_out && st == FIXQ_OK; k++) {
    st = fixq_eng_emit(plan, &b->outs[k], nb, bufs[b->outs[k].t], b->dst[k] + n0 * b->dst_row[k], scratch);
    if (st != FIXQ_OK) *failed_step = plan->n_steps; /* not a step: emit failed */
  }
  return st;
}

/* Takes chunks until none is left or one failed; every chunk taken is run, so
 * the chunks run form a prefix and the first failing one is threads=1's. */
static void batch_work(void *workers, int t) {
  batch_worker *w = (batch_worker *)workers + t;
  batch_job *job = w->job;
  const size_t n_chunks = (job->b->n + job->b->chunk - 1) / job->b->chunk;
  while (!__atomic_load_n(&job->stop, __ATOMIC_RELAXED)) {
    const size_t c = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
    if (c >= n_chunks) break;
    size_t step = 0;
    const fixq_status st = run_chunk(job, w->arena, c, &step);
    if (st != FIXQ_OK) {
      if (c < w->failed_chunk) w->failed_chunk = c, w->failed_step = step, w->st = st;
      __atomic_store_n(&job->stop, 1, __ATOMIC_RELAXED);
    }
  }
}

int fixq_eng_workers(const fixq_eng_plan *plan, size_t n, int threads) {
  double macs = 0; /* per sample */
  for (size_t i = 0; i < plan->n_steps; i++) {
    const fixq_eng_step *s = &plan->steps[i];
    const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
    if (s->op == FIXQ_ENG_GEMM) macs += (double)numel(yt) * (double)(s->kh * s->kw * (xt->c / s->groups));
    if (s->op == FIXQ_ENG_DEPTHWISE) macs += (double)numel(yt) * (double)(s->kh * s->kw);
  }
  const double fit = macs * (double)n / FIXQ__MACS_PER_THREAD;
  if (fit < threads) threads = fit > 1 ? (int)fit : 1;
  if ((size_t)threads > n) threads = n > 1 ? (int)n : 1;
  return threads;
}

fixq_status fixq_eng_run_batch(const fixq_eng_plan *plan, const fixq_eng_batch *b, char *const *arenas, int workers,
                               int gemm_threads, size_t *failed_step) {
  if (b->chunk == 0 || workers < 1 || gemm_threads < 1) return FIXQ_ERR_INVALID_ARGUMENT;
  if (b->in_form != FIXQ_ENG_IN_FLOAT_NCHW &&
      (plan->n_steps == 0 || plan->steps[0].op != FIXQ_ENG_QUANTIZE || plan->steps[0].in[0] != 0 ||
       (b->in_form == FIXQ_ENG_IN_Q && b->x_sample != numel(&plan->tensors[plan->steps[0].out])) ||
       (b->in_form == FIXQ_ENG_IN_FLOAT_NHWC && b->x_sample != numel(&plan->tensors[0]) * sizeof(float)))) {
    *failed_step = 0;
    return FIXQ_ERR_INVALID_ARGUMENT;
  }
  batch_job job = {plan, b, gemm_threads, 0, 0};
  if (workers == 1) { /* the common batch-1 call: no worker array to allocate; its GEMMs' regions one burst */
    batch_worker w = {&job, arenas[0], SIZE_MAX, 0, FIXQ_OK};
    fixq__parallel_hold(gemm_threads);
    batch_work(&w, 0);
    fixq__parallel_release(gemm_threads);
    if (w.failed_chunk != SIZE_MAX) *failed_step = w.failed_step;
    return w.st;
  }
  batch_worker *ws = malloc(sizeof(batch_worker) * (size_t)workers);
  if (ws == NULL) {
    *failed_step = plan->n_steps;
    return FIXQ_ERR_OUT_OF_MEMORY;
  }
  for (int t = 0; t < workers; t++) ws[t] = (batch_worker){&job, arenas[t], SIZE_MAX, 0, FIXQ_OK};
  fixq__parallel(workers, batch_work, ws);
  fixq_status st = FIXQ_OK;
  size_t first = SIZE_MAX;
  for (int t = 0; t < workers; t++)
    if (ws[t].failed_chunk < first) first = ws[t].failed_chunk, st = ws[t].st, *failed_step = ws[t].failed_step;
  free(ws);
  return st;
}
