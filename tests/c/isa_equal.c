/* Every CPU path this machine supports gives the scalar path's bits: the int8
 * GEMM and GEMV (int8/uint8 A and B, weights of -128, zero points, bias, every output
 * stage, one and several threads), requantize (double, single, fp32 rounding;
 * per channel and per tensor; int8/uint8/int16/int32 outputs; int32 extremes
 * and rounding ties), quantize / dequantize (+-inf, NaN), elementwise add /
 * mul and the int8 requantize that runs on them, and the executor's loops
 * (depthwise, max / average / global pooling, clamp, im2col of a grouped
 * convolution) through one-step plans, on random and edge-case inputs from a
 * fixed seed.  Written for the Arm paths
 * (run under qemu-aarch64 -cpu max from tests/test_arm.py); on x86 it checks
 * avx2 and avx512vnni the same way.  FIXQ_ISA=name checks that path alone.
 *
 * Prints one line per mismatch (at most 20) and "ok: N cases (paths)"; exit
 * status 1 on any mismatch.
 * Build: cc isa_equal.c -Isrc/fixq/include -Isrc/fixq/_csrc build/libfixq.a -lm -lpthread */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fixq/fixq.h>

#include "fixq_engine.h" /* the executor's plan, built here by hand (src/fixq/_csrc) */

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint32_t next(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * 0x2545F4914F6CDD1Du) >> 32);
}
static int32_t uniform(int32_t lo, int32_t hi) { /* [lo, hi]; the whole int32 range too */
  const uint64_t span = (uint64_t)((int64_t)hi - lo) + 1;
  return (int32_t)((uint32_t)lo + (uint32_t)(next() % span));
}

static fixq_isa paths[FIXQ_ISA_COUNT];
static int npaths, cases, mismatches;

static void mismatch(const char *what, fixq_isa isa, int id, const char *detail) {
  if (++mismatches <= 20) printf("MISMATCH %s case %d on %s: %s\n", what, id, fixq_isa_name(isa), detail);
}

/* Runs fn(ctx, out) on scalar, then on each path, and compares the bytes and the status. */
typedef fixq_status (*case_fn)(void *ctx, void *out);
static void check(const char *what, case_fn fn, void *ctx, size_t bytes) {
  unsigned char *want = malloc(bytes + 1), *got = malloc(bytes + 1);
  const int id = ++cases;
  memset(want, 0xA5, bytes + 1);
  fixq_select_isa(FIXQ_ISA_SCALAR);
  const fixq_status st = fn(ctx, want);
  for (int i = 0; i < npaths; i++) {
    memset(got, 0xA5, bytes + 1);
    fixq_select_isa(paths[i]);
    const fixq_status st2 = fn(ctx, got);
    char detail[160];
    if (st2 != st) {
      snprintf(detail, sizeof detail, "status %d, scalar %d", (int)st2, (int)st);
      mismatch(what, paths[i], id, detail);
    } else if (memcmp(want, got, bytes + 1) != 0) {
      size_t at = 0;
      while (want[at] == got[at]) at++;
      snprintf(detail, sizeof detail, "byte %zu of %zu: 0x%02x, scalar 0x%02x", at, bytes, got[at], want[at]);
      mismatch(what, paths[i], id, detail);
    }
  }
  free(want);
  free(got);
}

static size_t dsize(fixq_dtype dt) { return dt == FIXQ_INT8 || dt == FIXQ_UINT8 ? 1 : dt == FIXQ_INT16 ? 2 : 4; }
static void drange(fixq_dtype dt, int32_t *lo, int32_t *hi) {
  *lo = dt == FIXQ_INT8 ? -128 : dt == FIXQ_UINT8 ? 0 : dt == FIXQ_INT16 ? -32768 : INT32_MIN;
  *hi = dt == FIXQ_INT8 ? 127 : dt == FIXQ_UINT8 ? 255 : dt == FIXQ_INT16 ? 32767 : INT32_MAX;
}

/* ---- requantize ------------------------------------------------------------ */

/* an int32 input: extremes, ties of a right shift, small and any values */
static int32_t edge_i32(int e) {
  switch (next() % 6) {
    case 0: {
      static const int32_t v[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX, INT32_MAX - 1, -65536, 65535};
      return v[next() % 9];
    }
    case 1: /* k * 2^e +- 2^(e-1): a tie of RoundingDivideByPOT and of srshl */
      if (e > 0 && e < 31) return (int32_t)((uint32_t)uniform(-1000, 1000) << e) + (int32_t)(next() % 2 ? 1 : -1) * (1 << (e - 1));
      return uniform(-3, 3);
    case 2: return uniform(-300, 300);
    case 3: return uniform(-(1 << 20), 1 << 20);
    default: return (int32_t)next();
  }
}

typedef struct {
  size_t rows, channels, inner;
  fixq_dtype y_dtype;
  int32_t *x, *multiplier, *shift, *zero_point;
  float *scale;
  fixq_requant p;
} requant_case;

static fixq_status run_requant(void *ctx, void *out) {
  requant_case *c = ctx;
  return fixq_requantize_s32(c->x, out, c->y_dtype, c->rows, c->channels, c->inner, &c->p);
}

static void requant_cases(int count) {
  static const fixq_dtype dts[] = {FIXQ_INT8, FIXQ_UINT8, FIXQ_INT16, FIXQ_INT32};
  for (int t = 0; t < count; t++) {
    requant_case c;
    c.rows = (size_t)uniform(1, 5);
    c.channels = (size_t)uniform(1, 13);
    c.inner = next() % 2 ? 1 : (size_t)uniform(1, 21);
    c.y_dtype = dts[next() % 4];
    const fixq_rounding mode = (fixq_rounding)(next() % 3);
    if (mode == FIXQ_ROUND_FP32 && c.y_dtype == FIXQ_INT32) c.y_dtype = FIXQ_INT16;
    const size_t n = c.rows * c.channels * c.inner;
    c.x = malloc(n * 4);
    c.multiplier = malloc(c.channels * 4);
    c.shift = malloc(c.channels * 4);
    c.zero_point = malloc(c.channels * 4);
    c.scale = malloc(c.channels * 4);
    int32_t lo, hi;
    drange(c.y_dtype, &lo, &hi);
    for (size_t ch = 0; ch < c.channels; ch++) {
      static const int32_t m_edge[] = {0, 1, 1 << 30, INT32_MAX, INT32_MAX - 1, (1 << 30) + 1};
      c.multiplier[ch] = next() % 4 ? uniform(1 << 30, INT32_MAX) : m_edge[next() % 6];
      c.shift[ch] = next() % 3 ? uniform(-31, 30) : next() % 2 ? -31 : 30;
      if (next() % 3 == 0) c.shift[ch] = uniform(-12, 2);
      c.zero_point[ch] = c.y_dtype == FIXQ_INT32 ? 0 : uniform(lo, hi);
      c.scale[ch] = ldexpf(1.0f + (float)(next() % 1000000) / 1e6f, uniform(-40, 4));
    }
    for (size_t i = 0; i < n; i++) c.x[i] = edge_i32(-c.shift[(i / c.inner) % c.channels]);
    c.p.rounding = mode;
    c.p.multiplier = c.multiplier;
    c.p.shift = c.shift;
    c.p.scale = c.scale;
    c.p.zero_point = c.zero_point;
    c.p.qmin = next() % 2 ? lo : uniform(lo, lo / 2 + hi / 2);
    c.p.qmax = next() % 2 ? hi : uniform(lo / 2 + hi / 2, hi);
    if (c.p.qmin > c.p.qmax) c.p.qmin = c.p.qmax;
    check("requantize_s32", run_requant, &c, n * dsize(c.y_dtype));
    free(c.x), free(c.multiplier), free(c.shift), free(c.zero_point), free(c.scale);
  }
}

/* ---- GEMM ------------------------------------------------------------------ */

typedef struct {
  size_t m, k, n;
  fixq_dtype a_dtype, y_dtype;
  int32_t a_zp;
  void *a;
  fixq_packed_b pb;
  int32_t *bias;
  const fixq_requant *p;
  size_t p_channels;
  int threads;
} gemm_case;

static fixq_status run_gemm(void *ctx, void *out) {
  gemm_case *c = ctx;
  return fixq_qgemm(c->m, c->a, c->a_dtype, c->k, c->a_zp, &c->pb, c->bias, c->p, c->p_channels, out, c->y_dtype,
                    c->n, c->threads);
}

static void gemm_one(size_t m, size_t k, size_t n, int threads) {
  gemm_case c = {m, k, n, next() % 2 ? FIXQ_INT8 : FIXQ_UINT8, FIXQ_INT32, 0, NULL, {0}, NULL, NULL, 0, threads};
  const fixq_dtype b_dtype = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
  const int32_t b_off = b_dtype == FIXQ_INT8 ? 0 : 128, a_off = c.a_dtype == FIXQ_INT8 ? 0 : 128;
  const int weights = (int)(next() % 4); /* 0: any, 1: mostly -128', 2: all -128', 3: within +-127' */
  int8_t *a = malloc(m * k + 1);
  uint8_t *b = malloc(k * n + 1);
  for (size_t i = 0; i < m * k; i++) a[i] = (int8_t)next();
  for (size_t i = 0; i < k * n; i++) {
    int32_t v = uniform(-128, 127);
    if (weights == 1 && next() % 2) v = -128;
    if (weights == 2) v = -128;
    if (weights == 3 && v == -128) v = -127;
    b[i] = (uint8_t)(v + b_off);
  }
  c.a = a;
  const int zp_kind = (int)(next() % 3); /* 0: zero, 1: one per tensor, 2: per column */
  int32_t *zp = malloc(n * 4);
  for (size_t j = 0; j < n; j++) zp[j] = zp_kind == 0 ? b_off : uniform(-128, 127) + b_off;
  c.a_zp = next() % 3 ? uniform(-128, 127) + a_off : a_off;
  fixq_packed_b_init(&c.pb, k, n);
  c.pb.panels = malloc(c.pb.n_padded * c.pb.k_padded + 1);
  c.pb.zero_point = malloc(c.pb.n_padded * 4 + 4);
  c.pb.col_sum = malloc(c.pb.n_padded * 4 + 4);
  c.pb.col_abs = malloc(c.pb.n_padded * 8 + 8);
  if (fixq_pack_b(b, b_dtype, (ptrdiff_t)n, 1, zp, zp_kind == 2 ? n : 1, &c.pb) != FIXQ_OK) {
    printf("MISMATCH setup: fixq_pack_b failed\n");
    mismatches++;
    return;
  }
  if (next() % 2) {
    c.bias = malloc(n * 4);
    for (size_t j = 0; j < n; j++) c.bias[j] = uniform(-(1 << 22), 1 << 22);
  }
  /* the output stage: int32, or a requantize with per-column or per-tensor parameters */
  const size_t chans = next() % 2 ? n : 1;
  int32_t *mult = malloc(chans * 4), *shift = malloc(chans * 4), *yzp = malloc(chans * 4);
  float *scale = malloc(chans * 4);
  fixq_requant p;
  const int stage = (int)(next() % 4);
  if (stage > 0) {
    c.y_dtype = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    int32_t lo, hi;
    drange(c.y_dtype, &lo, &hi);
    for (size_t j = 0; j < chans; j++) {
      mult[j] = uniform(1 << 30, INT32_MAX);
      shift[j] = uniform(-14, 1);
      yzp[j] = uniform(lo, hi);
      scale[j] = ldexpf(1.0f + (float)(next() % 1000) / 1000.0f, uniform(-14, 0));
    }
    p = (fixq_requant){(fixq_rounding)(stage - 1), mult, shift, scale, yzp, lo, hi};
    c.p = &p;
    c.p_channels = chans;
  }
  check("qgemm", run_gemm, &c, m * n * dsize(c.y_dtype));
  free(a), free(b), free(zp), free(c.bias), free(mult), free(shift), free(yzp), free(scale);
  free(c.pb.panels), free(c.pb.zero_point), free(c.pb.col_sum), free(c.pb.col_abs);
}

static void gemm_cases(int count) {
  for (int t = 0; t < count; t++) { /* drawn in this order on every compiler */
    const size_t m = (size_t)uniform(1, 23), k = (size_t)uniform(0, 45), n = (size_t)uniform(1, 40);
    gemm_one(m, k, n, next() % 4 ? 1 : 3);
  }
  /* several row blocks and panel groups, odd and even numbers of 4-k groups, threads */
  gemm_one(300, 301, 70, 1);
  gemm_one(131, 64, 100, 2);
  gemm_one(9, 1000, 33, 3);
  gemm_one(1, 517, 200, 1); /* one row: a GEMV */
}

/* one row of A (a GEMV: the one-row kernels): every K tail of the 4-group
 * unrolled loop, K = 0, one and two panels and partial ones, all the weight,
 * zero-point and output-stage draws of gemm_one, a GEMV split over threads */
static void gemv_cases(int count) {
  static const size_t ks[] = {0, 1, 3, 4, 5, 8, 12, 13, 15, 16, 17, 20, 28, 31, 32, 33, 63, 64, 65};
  static const size_t ns[] = {1, 15, 16, 17, 32, 33, 48};
  for (int t = 0; t < count; t++) {
    const size_t k = t < 19 ? ks[t] : (size_t)uniform(0, 300), n = t < 19 ? ns[t % 7] : (size_t)uniform(1, 70);
    gemm_one(1, k, n, 1);
  }
  gemm_one(1, 4099, 300, 3); /* columns split over threads */
}

/* ---- quantize, dequantize, elementwise ------------------------------------- */

typedef struct {
  size_t channels, inner;
  fixq_dtype dt;
  float *x, scale[3];
  int32_t zp[3], qmin, qmax;
  void *q;
} qd_case;

/* FIXQ_ERR_NAN leaves the NaN inputs' outputs unspecified (fixq.h): they are
 * zeroed here, every other output is compared */
static fixq_status run_quantize(void *ctx, void *out) {
  qd_case *c = ctx;
  const fixq_status st = fixq_quantize_f32(c->x, out, c->dt, 1, c->channels, c->inner, c->scale, c->zp, c->qmin, c->qmax);
  if (st == FIXQ_ERR_NAN)
    for (size_t i = 0; i < c->channels * c->inner; i++)
      if (isnan(c->x[i])) memset((char *)out + i * dsize(c->dt), 0, dsize(c->dt));
  return st;
}

static fixq_status run_dequantize(void *ctx, void *out) {
  qd_case *c = ctx;
  return fixq_dequantize(c->q, c->dt, out, 1, c->channels, c->inner, c->scale, c->zp);
}

/* an input of quantize for channel scale s: halves (ties), large (saturating),
 * tiny, zeros of both signs, +-inf, and rarely NaN */
static float edge_f32(float s, int nan) {
  switch (next() % 8) {
    case 0: return ldexpf((float)uniform(-1000, 1000), uniform(-30, 30));
    case 1: return next() % 2 ? -0.0f : 0.0f;
    case 2: return (float)uniform(-70000, 70000) * s; /* past every clamp */
    case 3: return next() % 2 ? INFINITY : -INFINITY;
    case 4: return nan && next() % 4 == 0 ? NAN : (float)uniform(-300, 300) * 0.5f * s;
    default: return (float)uniform(-800, 800) * 0.5f * s;
  }
}

static void quantize_cases(int count) {
  static const fixq_dtype dts[] = {FIXQ_INT8, FIXQ_UINT8, FIXQ_INT16, FIXQ_INT32};
  for (int t = 0; t < count; t++) {
    qd_case c;
    c.channels = (size_t)uniform(1, 3);
    c.inner = (size_t)uniform(1, 40);
    const size_t n = c.channels * c.inner;
    c.dt = dts[next() % 3];
    drange(c.dt, &c.qmin, &c.qmax);
    for (size_t ch = 0; ch < c.channels; ch++) {
      c.zp[ch] = next() % 4 ? uniform(c.qmin, c.qmax) : next() % 2 ? c.qmin : c.qmax;
      c.scale[ch] = ldexpf(1.0f + (float)(next() % 1000) / 1000.0f, uniform(-10, 3));
    }
    if (next() % 3 == 0) { /* a fused clamp inside the dtype */
      c.qmin = uniform(c.qmin, c.qmin / 2 + c.qmax / 2);
      c.qmax = uniform(c.qmin, c.qmax);
      for (size_t ch = 0; ch < c.channels; ch++) c.zp[ch] = uniform(c.qmin, c.qmax);
    }
    const int nan = next() % 8 == 0;
    c.x = malloc(n * 4);
    for (size_t i = 0; i < n; i++) c.x[i] = edge_f32(c.scale[i / c.inner], nan);
    check("quantize_f32", run_quantize, &c, n * dsize(c.dt));
    c.dt = dts[next() % 4];
    drange(c.dt, &c.qmin, &c.qmax);
    for (size_t ch = 0; ch < c.channels; ch++) c.zp[ch] = next() % 4 ? uniform(c.qmin, c.qmax) : c.qmax;
    c.q = malloc(n * 4);
    for (size_t i = 0; i < n * 4; i++) ((uint8_t *)c.q)[i] = (uint8_t)next();
    for (size_t i = 0; i < n; i++) /* the dtype's extremes */
      if (next() % 5 == 0) {
        const int32_t v = next() % 2 ? c.qmin : c.qmax;
        memcpy((char *)c.q + i * dsize(c.dt), &v, dsize(c.dt)); /* little-endian low bytes */
      }
    check("dequantize", run_dequantize, &c, n * 4);
    free(c.x), free(c.q);
  }
}

typedef struct {
  fixq_eltwise p;
  size_t shape[2];
  ptrdiff_t as[2], bs[2], ys[2];
  uint8_t *a, *b;
} elt_case;

static fixq_status run_eltwise(void *ctx, void *out) {
  elt_case *c = ctx;
  return fixq_eltwise_nd(&c->p, 2, c->shape, c->a, c->as, c->b, c->bs, out, c->ys);
}

/* a scale 2^e * [1, 2) */
static float scale_in(int lo, int hi) { return ldexpf(1.0f + (float)(next() % 1000) / 1000.0f, uniform(lo, hi)); }

static void eltwise_cases(int count) {
  for (int t = 0; t < count; t++) {
    elt_case c;
    const fixq_dtype at = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8, bt = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    const fixq_dtype yt = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    int32_t alo, ahi, blo, bhi, ylo, yhi;
    drange(at, &alo, &ahi), drange(bt, &blo, &bhi), drange(yt, &ylo, &yhi);
    /* equal scales (ADD's tie-heavy case), or any within 2^+-8 (saturating outputs among them) */
    const float as = scale_in(-8, 0), bs = next() % 4 ? scale_in(-8, 0) : as, ys = scale_in(-10, 0);
    const int32_t azp = next() % 4 ? uniform(alo, ahi) : next() % 2 ? alo : ahi;
    const int32_t bzp = next() % 4 ? uniform(blo, bhi) : next() % 2 ? blo : bhi;
    int32_t qmin = ylo, qmax = yhi;
    if (next() % 3 == 0) qmin = uniform(ylo, ylo / 2 + yhi / 2), qmax = uniform(qmin, yhi); /* fused ReLU */
    /* every 4th case: all 65536 input pairs (a row per value of a), each op
     * and rounding in turn (a one-off in ADD's rescaled inputs shows only at
     * the output's rounding boundaries); else random bytes */
    const int all = t % 4 == 0;
    const fixq_eltwise_op op = (fixq_eltwise_op)(all ? t / 4 % 2 : (int)(next() % 2));
    const fixq_rounding mode = (fixq_rounding)(all ? t / 8 % 3 : (int)(next() % 3));
    if (fixq_eltwise_init(&c.p, op, mode, at, as, azp, bt, bs, bzp, yt, ys, uniform(ylo, yhi), qmin, qmax) != FIXQ_OK)
      continue;
    c.shape[0] = all ? 256 : (size_t)uniform(1, 4);
    c.shape[1] = all ? 256 : (size_t)uniform(1, 90);
    const size_t n = c.shape[0] * c.shape[1];
    c.a = malloc(n), c.b = malloc(n);
    for (size_t i = 0; i < n; i++)
      c.a[i] = all ? (uint8_t)(i >> 8) : (uint8_t)next(), c.b[i] = all ? (uint8_t)i : (uint8_t)next();
    const int bcast = all ? 2 : (int)(next() % 6); /* 0: a broadcast along rows, 1: b, else none */
    c.as[0] = (ptrdiff_t)c.shape[1], c.as[1] = bcast == 0 ? 0 : 1;
    c.bs[0] = (ptrdiff_t)c.shape[1], c.bs[1] = bcast == 1 ? 0 : 1;
    c.ys[0] = (ptrdiff_t)c.shape[1], c.ys[1] = 1;
    check("eltwise", run_eltwise, &c, n);
    free(c.a), free(c.b);
  }
}

typedef struct {
  size_t n;
  fixq_dtype x_dtype, y_dtype;
  int32_t x_zp;
  uint8_t *x;
  fixq_requant p;
} rq8_case;

static fixq_status run_requantize_q8(void *ctx, void *out) {
  rq8_case *c = ctx;
  return fixq_requantize_q8(c->x, c->x_dtype, c->x_zp, out, c->y_dtype, c->n, &c->p);
}

/* int8/uint8 -> int8/uint8 requantize: the elementwise kernels with b = 1 */
static void requantize_q8_cases(int count) {
  for (int t = 0; t < count; t++) {
    rq8_case c;
    int32_t xlo, xhi, lo, hi, mult, shift, zp;
    float scale;
    c.x_dtype = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    c.y_dtype = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    drange(c.x_dtype, &xlo, &xhi), drange(c.y_dtype, &lo, &hi);
    c.x_zp = uniform(xlo, xhi);
    mult = next() % 4 ? uniform(1 << 30, INT32_MAX) : 1 << 30;
    shift = uniform(-10, 2);
    zp = uniform(lo, hi);
    scale = scale_in(-6, 2);
    c.p = (fixq_requant){(fixq_rounding)(next() % 3), &mult, &shift, &scale, &zp, lo, hi};
    c.n = next() % 2 ? (size_t)uniform(1, 100) : (size_t)uniform(1024, 1100); /* planned from 1024 */
    c.x = malloc(c.n);
    for (size_t i = 0; i < c.n; i++) c.x[i] = (uint8_t)next();
    check("requantize_q8", run_requantize_q8, &c, c.n);
    free(c.x);
  }
}

/* ---- the executor's loops: one-step plans ---------------------------------- */

typedef struct {
  fixq_eng_plan plan;
  size_t batch;
  void *x, *scratch;
} eng_case;

static fixq_status run_engine(void *ctx, void *out) {
  eng_case *c = ctx;
  void *const bufs[2] = {c->x, out};
  size_t failed;
  return fixq_eng_run(&c->plan, c->batch, bufs, c->scratch, 1, &failed);
}

static size_t out_dim(size_t in, size_t k, size_t s, size_t p, size_t d) {
  const size_t span = d * (k - 1) + 1;
  return in + 2 * p < span ? 0 : (in + 2 * p - span) / s + 1;
}

static const fixq_eng_op eng_ops[] = {FIXQ_ENG_DEPTHWISE, FIXQ_ENG_MAXPOOL, FIXQ_ENG_AVGPOOL,
                                      FIXQ_ENG_GLOBAL_AVGPOOL, FIXQ_ENG_CLAMP, FIXQ_ENG_GEMM};

/* Which plans engine_cases builds: every op in turn; depthwise with
 * MobileNet's shapes (channel multiplier 1, 16-72 channels: the 16-channel
 * blocks and a rest); average pools whose window count (41, 47, 55, 61)
 * makes the NEON division's float estimate one short of the quotient; one
 * 1024 x 1024 average pool whose sums make it one over (the float of
 * |acc| + 2^19 rounding up to k 2^20). */
enum { ENG_EVERY_OP, ENG_WIDE_DEPTHWISE, ENG_POOL_COUNTS, ENG_HUGE_POOL };

static void engine_cases(int count, int mode) {
  const int wide_depthwise = mode == ENG_WIDE_DEPTHWISE;
  for (int t = 0; t < count; t++) {
    const fixq_eng_op op = wide_depthwise ? FIXQ_ENG_DEPTHWISE : mode != ENG_EVERY_OP ? FIXQ_ENG_AVGPOOL : eng_ops[t % 6];
    const fixq_dtype dt = next() % 2 ? FIXQ_INT8 : FIXQ_UINT8;
    int32_t lo, hi;
    drange(dt, &lo, &hi);
    fixq_eng_tensor ts[2] = {{0, 0, 0, 1}, {0, 0, 0, 1}};
    ts[0].h = (size_t)uniform(1, 9), ts[0].w = (size_t)uniform(1, 9), ts[0].c = (size_t)uniform(1, 40);
    fixq_eng_step s;
    memset(&s, 0, sizeof s);
    const int32_t in0 = 0;
    s.op = op, s.n_in = 1, s.in = &in0, s.out = 1;
    s.kh = (size_t)uniform(1, 4), s.kw = (size_t)uniform(1, 4), s.sh = (size_t)uniform(1, 2), s.sw = (size_t)uniform(1, 2);
    s.ph = (size_t)uniform(0, 2), s.pw = (size_t)uniform(0, 2);
    s.dh = op == FIXQ_ENG_DEPTHWISE || op == FIXQ_ENG_GEMM ? (size_t)uniform(1, 2) : 1;
    s.dw = op == FIXQ_ENG_DEPTHWISE || op == FIXQ_ENG_GEMM ? (size_t)uniform(1, 2) : 1;
    s.zp = next() % 4 ? uniform(lo, hi) : next() % 2 ? lo : hi;
    s.lo = uniform(lo, lo / 2 + hi / 2), s.hi = uniform(s.lo, hi);
    if (op == FIXQ_ENG_GEMM) { /* groups of 1..3 channels */
      s.groups = (size_t)uniform(1, 3);
      ts[0].c = s.groups * (size_t)uniform(1, 5);
    } else {
      s.groups = op == FIXQ_ENG_DEPTHWISE ? (size_t)uniform(1, 3) : 1;
    }
    if (wide_depthwise) {
      s.groups = 1, ts[0].c = (size_t)uniform(16, 72);
      if (next() % 2) s.kh = s.kw = 3;
    }
    if (mode == ENG_POOL_COUNTS) {
      static const size_t win[][2] = {{1, 41}, {47, 1}, {5, 11}, {1, 61}};
      s.kh = win[t % 4][0], s.kw = win[t % 4][1], s.sh = s.sw = 1;
      ts[0].h = s.kh + (size_t)uniform(0, 2), ts[0].w = s.kw + (size_t)uniform(0, 2), ts[0].c = (size_t)uniform(8, 40);
    }
    if (mode == ENG_HUGE_POOL) {
      s.kh = s.kw = ts[0].h = ts[0].w = 1024, s.ph = s.pw = 0, ts[0].c = 8;
    }
    ts[1].h = out_dim(ts[0].h, s.kh, s.sh, s.ph, s.dh), ts[1].w = out_dim(ts[0].w, s.kw, s.sw, s.pw, s.dw);
    ts[1].c = op == FIXQ_ENG_DEPTHWISE ? ts[0].c * s.groups : op == FIXQ_ENG_GEMM ? s.groups * (size_t)uniform(1, 20) : ts[0].c;
    if (op == FIXQ_ENG_GLOBAL_AVGPOOL || op == FIXQ_ENG_CLAMP) {
      ts[1].h = op == FIXQ_ENG_CLAMP ? ts[0].h : 1, ts[1].w = op == FIXQ_ENG_CLAMP ? ts[0].w : 1;
      s.rq_channels = 0;
    }
    if (ts[1].h == 0 || ts[1].w == 0) continue; /* the window does not fit */
    const size_t O = ts[1].c, T = s.kh * s.kw;
    /* taps (weights of -128 among them), bias, and a per-channel output stage;
     * one case in three (exact): small taps, inputs near zp, small bias and
     * an output stage of 1.0, so that an accumulator off by one shows */
    const int exact = next() % 3 == 0;
    int8_t *taps = malloc(T * O);
    int32_t *bias = malloc(O * 4), *mult = malloc(O * 4), *shift = malloc(O * 4), *yzp = malloc(O * 4);
    float *scale = malloc(O * 4);
    /* (wide depthwise, every other case: no -128 but +-127, so that int16 pair sums reach their bound) */
    const int no_min = wide_depthwise && t % 2;
    for (size_t i = 0; i < T * O; i++)
      taps[i] = exact    ? (int8_t)uniform(-2, 2)
                : no_min ? (int8_t)(next() % 3 ? uniform(-127, 127) : next() % 2 ? 127 : -127)
                : next() % 5 ? (int8_t)next() : -128;
    for (size_t o = 0; o < O; o++) {
      bias[o] = exact ? uniform(-20, 20) : uniform(-(1 << 20), 1 << 20);
      mult[o] = exact ? 1 << 30 : uniform(1 << 30, INT32_MAX);
      shift[o] = exact ? 1 : uniform(-14, 0);
      yzp[o] = exact ? lo / 2 + hi / 2 : uniform(lo, hi);
      scale[o] = exact ? 1.0f : ldexpf(1.0f + (float)(next() % 1000) / 1000.0f, uniform(-14, -4));
    }
    s.taps = taps, s.bias = bias;
    s.rq = (fixq_requant){(fixq_rounding)(next() % 3), mult, shift, scale, yzp, lo, hi};
    if (op == FIXQ_ENG_DEPTHWISE || op == FIXQ_ENG_GEMM) s.rq_channels = next() % 2 || op == FIXQ_ENG_DEPTHWISE ? O : 1;
    /* GEMM: one packed B per group, k = kh kw (C / groups) */
    const size_t cg = ts[0].c / s.groups, og = O / s.groups, K = T * cg;
    fixq_packed_b pb[3];
    const fixq_packed_b *pbp[3];
    const int32_t bzp = 0;
    if (op == FIXQ_ENG_GEMM)
      for (size_t g = 0; g < s.groups; g++) {
        int8_t *w = malloc(K * og);
        for (size_t i = 0; i < K * og; i++) w[i] = exact ? (int8_t)uniform(-2, 2) : next() % 5 ? (int8_t)next() : -128;
        fixq_packed_b_init(&pb[g], K, og);
        pb[g].panels = malloc(pb[g].n_padded * pb[g].k_padded);
        pb[g].zero_point = malloc(pb[g].n_padded * 4);
        pb[g].col_sum = malloc(pb[g].n_padded * 4);
        pb[g].col_abs = malloc(pb[g].n_padded * 8);
        fixq_pack_b(w, FIXQ_INT8, (ptrdiff_t)og, 1, &bzp, 1, &pb[g]);
        pbp[g] = &pb[g];
        free(w);
      }
    s.packed = pbp;
    eng_case c = {{dt, 2, ts, 1, &s}, mode == ENG_HUGE_POOL ? 1 : (size_t)uniform(1, 3), NULL, NULL};
    size_t bad;
    if (fixq_eng_check(&c.plan, &bad) != FIXQ_OK) {
      printf("MISMATCH setup: engine plan %d (op %d) refused\n", t, (int)op);
      mismatches++;
    } else {
      s.acc_fits = fixq_eng_gemm_fits(&c.plan, 0); /* as _core.Engine sets it: a GEMM without per-call bound */
      const size_t nx = c.batch * ts[0].h * ts[0].w * ts[0].c;
      c.x = malloc(nx);
      for (size_t i = 0; i < nx; i++) /* the dtype's extremes and the zero point among random bytes */
        ((uint8_t *)c.x)[i] = exact ? (uint8_t)(s.zp + uniform(s.zp - 3 < lo ? 0 : -3, s.zp + 3 > hi ? 0 : 3))
                              : next() % 4 ? (uint8_t)next() : (uint8_t)(next() % 3 == 0 ? lo : next() % 2 ? hi : s.zp);
      if (mode == ENG_HUGE_POOL) /* channel ch sums to +-(k 2^20 - 2^19 - 1), k = 3 + 9 ch: 2^20 taps of k - 1 or k */
        for (size_t i = 0; i < nx; i++) {
          const int32_t k = 3 + 9 * (int32_t)(i % 8), v = (int32_t)(i / 8) < (1 << 19) - 1 ? k : k - 1;
          ((uint8_t *)c.x)[i] = (uint8_t)(dt == FIXQ_UINT8 ? v : -v);
        }
      c.scratch = malloc(fixq_eng_scratch_bytes(&c.plan, c.batch) + 64);
      check("engine", run_engine, &c, c.batch * ts[1].h * ts[1].w * ts[1].c);
      free(c.x), free(c.scratch);
    }
    if (op == FIXQ_ENG_GEMM)
      for (size_t g = 0; g < s.groups; g++) free(pb[g].panels), free(pb[g].zero_point), free(pb[g].col_sum), free(pb[g].col_abs);
    free(taps), free(bias), free(mult), free(shift), free(yzp), free(scale);
  }
}

int main(void) {
  if (fixq_init() != FIXQ_OK) {
    printf("fixq_init failed (FIXQ_ISA?)\n");
    return 1;
  }
  const char *only = getenv("FIXQ_ISA");
  char names[128] = "";
  for (int i = 1; i < FIXQ_ISA_COUNT; i++)
    if (fixq_isa_supported((fixq_isa)i) && (only == NULL || only[0] == '\0' || (fixq_isa)i == fixq_selected_isa())) {
      paths[npaths++] = (fixq_isa)i;
      strcat(names, npaths > 1 ? ", " : "");
      strcat(names, fixq_isa_name((fixq_isa)i));
    }
  const int scale = getenv("FIXQ_TEST_CASES") ? atoi(getenv("FIXQ_TEST_CASES")) : 200;
  requant_cases(scale * 2);
  gemm_cases(scale);
  gemv_cases(scale / 4);
  quantize_cases(scale / 2);
  eltwise_cases(scale);
  requantize_q8_cases(scale / 4);
  engine_cases(scale, ENG_EVERY_OP);
  engine_cases(scale / 8, ENG_WIDE_DEPTHWISE);
  engine_cases(scale / 25, ENG_POOL_COUNTS);
  engine_cases(1, ENG_HUGE_POOL);
  if (mismatches) {
    printf("%d mismatches in %d cases\n", mismatches, cases);
    return 1;
  }
  printf("ok: %d cases (%s)\n", cases, npaths ? names : "no path but scalar");
  return 0;
}
