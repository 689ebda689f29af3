/* The limits fixq.h documents, checked against the static library (make lib):
 *
 * - sizes: every size argument of every entry point at SIZE_MAX and
 *   SIZE_MAX / 2 + 1 (what a negative int becomes), and sizes whose products
 *   (element counts, padded sizes, byte counts, strided reaches) overflow,
 *   must give FIXQ_ERR_INVALID_ARGUMENT, never a crash or a hang.  Each call
 *   runs in a child process (fork), on small real buffers, so an accepted
 *   size shows up as a signal or a timeout instead of ending the run;
 * - fixq_quantize_multiplier flushes reals below 2^-32 (after rounding to 31
 *   bits) to (0, 0);
 * - fixq_requant's zero point: anywhere in the output dtype's range, even
 *   outside [qmin, qmax] (the clamp comes after it), never outside the dtype;
 * - fixq_eltwise_nd takes 1 <= ndim <= 16.
 *
 * Prints one line per failed check and "ok: N checks"; exit status 1 on any failure.
 * Build: cc api_limits.c -Isrc/fixq/include build/libfixq.a -lm -lpthread */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fixq/fixq.h>

#define BIG_A SIZE_MAX
#define BIG_B (SIZE_MAX / 2 + 1)
#define HALF_BITS ((size_t)1 << (sizeof(size_t) * 4)) /* HALF_BITS * HALF_BITS wraps to 0 */

#define SETUP_FAILED 100 /* a child's exit status when the call could not be set up */

static int checks, failures;

static void fail(const char *what, const char *why) {
  printf("FAIL %s: %s\n", what, why);
  failures++;
}

/* The child's exit status is the fixq_status the call returned. */
static void expect_invalid_in_child(const char *what, pid_t pid) {
  int status = 0;
  char why[96];
  checks++;
  if (pid < 0) {
    fail(what, "fork failed");
    return;
  }
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) {
    snprintf(why, sizeof why, "killed by signal %d (%s)", WTERMSIG(status),
             WTERMSIG(status) == SIGALRM ? "timeout" : strsignal(WTERMSIG(status)));
    fail(what, why);
  } else if (WEXITSTATUS(status) == SETUP_FAILED) {
    fail(what, "the test's own setup failed");
  } else if (WEXITSTATUS(status) != FIXQ_ERR_INVALID_ARGUMENT) {
    snprintf(why, sizeof why, "returned %d (%s), not FIXQ_ERR_INVALID_ARGUMENT", WEXITSTATUS(status),
             fixq_status_string((fixq_status)WEXITSTATUS(status)));
    fail(what, why);
  }
}

#define EXPECT_INVALID(what, call)            \
  do {                                        \
    pid_t pid_ = fork();                      \
    if (pid_ == 0) {                          \
      alarm(10);                              \
      _exit((int)(call));                     \
    }                                         \
    expect_invalid_in_child((what), pid_);    \
  } while (0)

static void expect(int ok, const char *what) {
  checks++;
  if (!ok) fail(what, "does not hold");
}

/* Small real buffers: whatever a size claims, a call reads and writes these. */
static int32_t s32[4096], rq_multiplier[64], rq_shift[64], rq_zero_point[64], bias[64];
static float f32[4096], scales[64];
static int8_t s8[4096], s8_out[4096];
static uint16_t u16[4096];
static uint8_t u8[4096];
static int8_t panels[4096];
static int32_t pb_zero_point[64], pb_col_sum[64];
static int64_t pb_col_abs[64];

static fixq_requant requant(void) {
  fixq_requant p;
  p.rounding = FIXQ_ROUND_DOUBLE;
  p.multiplier = rq_multiplier;
  p.shift = rq_shift;
  p.scale = scales;
  p.zero_point = rq_zero_point;
  p.qmin = -128;
  p.qmax = 127;
  return p;
}

/* A packed B of k x n from fixq_packed_b_init, its buffers the small ones above. */
static fixq_packed_b packed(size_t k, size_t n) {
  fixq_packed_b pb;
  fixq_packed_b_init(&pb, k, n);
  pb.panels = panels;
  pb.zero_point = pb_zero_point;
  pb.col_sum = pb_col_sum;
  pb.col_abs = pb_col_abs;
  return pb;
}

static fixq_status pack_b(size_t k, size_t n, ptrdiff_t stride_k, ptrdiff_t stride_n) {
  fixq_packed_b pb = packed(k, n);
  const int32_t zp = 0;
  return fixq_pack_b(s8, FIXQ_INT8, stride_k, stride_n, &zp, 1, &pb);
}

static fixq_status packed_b_finish(size_t k, size_t n) {
  fixq_packed_b pb = packed(k, n);
  pb.dtype = FIXQ_INT8;
  return fixq_packed_b_finish(&pb);
}

/* fixq_qgemm on a B of k x n (packed for real when it is small), int8 output. */
static fixq_status qgemm(size_t m, size_t lda, size_t k, size_t n, size_t ldy, fixq_dtype y_dtype) {
  fixq_packed_b pb = packed(k, n);
  const int32_t zp = 0;
  fixq_requant p = requant();
  if (k <= 64 && n <= 64 && fixq_pack_b(s8, FIXQ_INT8, 1, (ptrdiff_t)k, &zp, 1, &pb) != FIXQ_OK)
    return (fixq_status)SETUP_FAILED;
  return fixq_qgemm(m, s8, FIXQ_INT8, lda, 0, &pb, bias, y_dtype == FIXQ_INT32 ? NULL : &p, 1, s32, y_dtype, ldy, 1);
}

static fixq_status eltwise_nd(size_t ndim, const size_t *shape, const ptrdiff_t *a_strides) {
  /* y strides: 0 outside the innermost dimension, so y stays in its buffer whatever the shape */
  static const ptrdiff_t y_strides[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  fixq_eltwise e;
  if (fixq_eltwise_init(&e, FIXQ_OP_ADD, FIXQ_ROUND_DOUBLE, FIXQ_INT8, 0.5f, 0, FIXQ_INT8, 0.5f, 0, FIXQ_INT8,
                        0.5f, 0, -128, 127) != FIXQ_OK)
    return (fixq_status)SETUP_FAILED;
  return fixq_eltwise_nd(&e, ndim, shape, s8, a_strides, s8, a_strides, s8_out,
                         ndim <= 16 ? y_strides + 16 - ndim : y_strides);
}

static void sizes(void) {
  const size_t bigs[] = {BIG_A, BIG_B};
  const fixq_requant p = requant();
  char what[160];
  size_t i;
  for (i = 0; i < 64; i++) {
    rq_multiplier[i] = 1 << 30;
    scales[i] = 1.0f;
  }

  for (i = 0; i < 2; i++) {
    const size_t v = bigs[i];
    const size_t shape2[2][2] = {{v, 2}, {2, v}};
    const ptrdiff_t contiguous[2] = {2, 1};
    int d;
#define SIZE_CASE(fmt, call)                  \
  do {                                        \
    snprintf(what, sizeof what, fmt, v);      \
    EXPECT_INVALID(what, call);               \
  } while (0)
    SIZE_CASE("fixq_requantize_s32 rows=%zu", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, v, 1, 1, &p));
    SIZE_CASE("fixq_requantize_s32 channels=%zu", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, 1, v, 1, &p));
    SIZE_CASE("fixq_requantize_s32 inner=%zu", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, 1, 1, v, &p));
    SIZE_CASE("fixq_requantize_s32 rows=0 inner=%zu", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, 0, 1, v, &p));
    SIZE_CASE("fixq_quantize_f32 rows=%zu",
              fixq_quantize_f32(f32, s8_out, FIXQ_INT8, v, 1, 1, scales, rq_zero_point, -128, 127));
    SIZE_CASE("fixq_quantize_f32 channels=%zu",
              fixq_quantize_f32(f32, s8_out, FIXQ_INT8, 1, v, 1, scales, rq_zero_point, -128, 127));
    SIZE_CASE("fixq_quantize_f32 inner=%zu",
              fixq_quantize_f32(f32, s8_out, FIXQ_INT8, 1, 1, v, scales, rq_zero_point, -128, 127));
    SIZE_CASE("fixq_dequantize rows=%zu", fixq_dequantize(s8, FIXQ_INT8, f32, v, 1, 1, scales, rq_zero_point));
    SIZE_CASE("fixq_dequantize channels=%zu", fixq_dequantize(s8, FIXQ_INT8, f32, 1, v, 1, scales, rq_zero_point));
    SIZE_CASE("fixq_dequantize inner=%zu", fixq_dequantize(s8, FIXQ_INT8, f32, 1, 1, v, scales, rq_zero_point));

    SIZE_CASE("fixq_pack_b k=%zu", pack_b(v, 4, 1, 4));
    SIZE_CASE("fixq_pack_b n=%zu", pack_b(4, v, 4, 1));
    SIZE_CASE("fixq_pack_b k=%zu - 2 (k + 3 wraps)", pack_b(v - 2, 4, 1, 4));
    SIZE_CASE("fixq_pack_b n=%zu - 8 (n + 15 wraps)", pack_b(4, v - 8, 4, 1));
    SIZE_CASE("fixq_packed_b_finish k=%zu", packed_b_finish(v, 4));
    SIZE_CASE("fixq_packed_b_finish n=%zu", packed_b_finish(4, v));
    SIZE_CASE("fixq_qgemm m=%zu", qgemm(v, 8, 8, 8, 8, FIXQ_INT8));
    SIZE_CASE("fixq_qgemm m=%zu, int32 output", qgemm(v, 8, 8, 8, 8, FIXQ_INT32));
    SIZE_CASE("fixq_qgemm lda=%zu", qgemm(2, v, 8, 8, 8, FIXQ_INT8));
    SIZE_CASE("fixq_qgemm ldy=%zu", qgemm(2, 8, 8, 8, v, FIXQ_INT8));
    SIZE_CASE("fixq_qgemm k=%zu (fixq_packed_b_init's)", qgemm(2, v, v, 8, 8, FIXQ_INT8));
    SIZE_CASE("fixq_qgemm n=%zu (fixq_packed_b_init's)", qgemm(2, 8, 8, v, v, FIXQ_INT8));

    SIZE_CASE("fixq_eltwise_nd ndim=%zu", eltwise_nd(v, shape2[0], contiguous));
    for (d = 0; d < 2; d++) {
      snprintf(what, sizeof what, "fixq_eltwise_nd shape[%d]=%zu", d, v);
      EXPECT_INVALID(what, eltwise_nd(2, shape2[d], contiguous));
    }
    SIZE_CASE("fixq_requantize_q8 n=%zu", fixq_requantize_q8(s8, FIXQ_INT8, 0, s8_out, FIXQ_INT8, v, &p));

    SIZE_CASE("fixq_f16_pack n=%zu", fixq_f16_pack(u16, v, 4, u16 + 64));
    SIZE_CASE("fixq_f16_pack k=%zu", fixq_f16_pack(u16, 4, v, u16 + 64));
    SIZE_CASE("fixq_f16_pack n=%zu - 8 (rounding up wraps)", fixq_f16_pack(u16, v - 8, 4, u16 + 64));
    SIZE_CASE("fixq_f16_linear m=%zu", fixq_f16_linear(f32, v, 4, u16, 4, NULL, f32 + 64));
    SIZE_CASE("fixq_f16_linear k=%zu", fixq_f16_linear(f32, 2, v, u16, 4, NULL, f32 + 64));
    SIZE_CASE("fixq_f16_linear n=%zu", fixq_f16_linear(f32, 2, 4, u16, v, NULL, f32 + 64));
    SIZE_CASE("fixq_bgemm_pack rows=%zu", fixq_bgemm_pack(u8, v, 8, u8 + 64));
    SIZE_CASE("fixq_bgemm m=%zu", fixq_bgemm(u8, v, u8, 2, 8, s32));
    SIZE_CASE("fixq_bgemm n=%zu", fixq_bgemm(u8, 2, u8, v, 8, s32));
#undef SIZE_CASE
    checks += 4;
    if (fixq_f16_packed_size(v, 4) != 0) fail("fixq_f16_packed_size(SIZE_MAX-ish, 4)", "is not 0");
    if (fixq_f16_packed_size(4, v) != 0) fail("fixq_f16_packed_size(4, SIZE_MAX-ish)", "is not 0");
    if (fixq_bgemm_packed_size(v, 8) != 0) fail("fixq_bgemm_packed_size(SIZE_MAX-ish, 8)", "is not 0");
    if (fixq_bgemm_packed_size(8, v) != 0) fail("fixq_bgemm_packed_size(8, SIZE_MAX-ish)", "is not 0");
  }

  /* products that overflow, each size alone being small enough */
  {
    const size_t h = HALF_BITS, q = (size_t)1 << (sizeof(size_t) * 8 - 2); /* q * 4 wraps to 0 */
    const size_t wide[2] = {h, h}, three_by_four[2] = {3, 4}, long_rows[2] = {2, q / 2};
    const ptrdiff_t wide_strides[2] = {(ptrdiff_t)h, 1}, far[2] = {PTRDIFF_MAX / 2 + 1, 1};
    const ptrdiff_t nearly_max[2] = {PTRDIFF_MAX - (ptrdiff_t)(q / 4), 1}; /* + q / 2 - 1 passes PTRDIFF_MAX */
    const size_t tall = (size_t)1 << 40; /* rows of 2^28 packed bytes (k = 2^30): 2^68 bytes */
    EXPECT_INVALID("fixq_requantize_s32 rows * inner", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, h, 1, h, &p));
    EXPECT_INVALID("fixq_requantize_s32 rows * channels", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, h, h, 1, &p));
    EXPECT_INVALID("fixq_requantize_s32 int32 bytes", fixq_requantize_s32(s32, s8_out, FIXQ_INT8, q, 1, 1, &p));
    EXPECT_INVALID("fixq_quantize_f32 float bytes",
                   fixq_quantize_f32(f32, s8_out, FIXQ_INT8, 1, 1, q, scales, rq_zero_point, -128, 127));
    EXPECT_INVALID("fixq_quantize_f32 rows * inner",
                   fixq_quantize_f32(f32, s8_out, FIXQ_INT8, h, 1, h, scales, rq_zero_point, -128, 127));
    EXPECT_INVALID("fixq_dequantize float bytes", fixq_dequantize(s8, FIXQ_INT8, f32, q, 1, 1, scales, rq_zero_point));
    EXPECT_INVALID("fixq_pack_b k_padded * n_padded", pack_b(h, h, 1, (ptrdiff_t)h));
    EXPECT_INVALID("fixq_pack_b (k - 1) * stride_k", pack_b(4, 4, PTRDIFF_MAX / 2 + 1, 1));
    EXPECT_INVALID("fixq_pack_b k and n reach", pack_b(2, 2, PTRDIFF_MAX / 2 + 1, PTRDIFF_MAX / 2 + 1));
    EXPECT_INVALID("fixq_pack_b stride_n = PTRDIFF_MIN", pack_b(4, 4, 1, PTRDIFF_MIN));
    EXPECT_INVALID("fixq_packed_b_finish k_padded * n_padded", packed_b_finish(h, h));
    EXPECT_INVALID("fixq_qgemm m * lda", qgemm(h, h, 8, 8, 8, FIXQ_INT8));
    EXPECT_INVALID("fixq_qgemm m * ldy", qgemm(h, 8, 8, 8, h, FIXQ_INT8));
    EXPECT_INVALID("fixq_qgemm int32 output bytes", qgemm(q, 1, 1, 1, 1, FIXQ_INT32));
    EXPECT_INVALID("fixq_qgemm k_padded * n_padded (fixq_packed_b_init's)", qgemm(2, h, h, h, h, FIXQ_INT8));
    EXPECT_INVALID("fixq_eltwise_nd shape product", eltwise_nd(2, wide, wide_strides));
    EXPECT_INVALID("fixq_eltwise_nd (shape - 1) * stride", eltwise_nd(2, three_by_four, far));
    EXPECT_INVALID("fixq_eltwise_nd strided reach", eltwise_nd(2, long_rows, nearly_max));
    EXPECT_INVALID("fixq_f16_pack n * k", fixq_f16_pack(u16, h, h, u16 + 64));
    EXPECT_INVALID("fixq_f16_pack packed bytes", fixq_f16_pack(u16, 16, q / 16, u16 + 64));
    EXPECT_INVALID("fixq_f16_linear m * k", fixq_f16_linear(f32, h, h, u16, 4, NULL, f32 + 64));
    EXPECT_INVALID("fixq_f16_linear m * n", fixq_f16_linear(f32, h, 4, u16, h, NULL, f32 + 64));
    EXPECT_INVALID("fixq_f16_linear float bytes", fixq_f16_linear(f32, q, 1, u16, 1, NULL, f32 + 64));
    EXPECT_INVALID("fixq_bgemm_pack rows * bytes per row", fixq_bgemm_pack(u8, tall, 1u << 30, u8 + 64));
    EXPECT_INVALID("fixq_bgemm m * n", fixq_bgemm(u8, h, u8, h, 8, s32));
    EXPECT_INVALID("fixq_bgemm int32 bytes", fixq_bgemm(u8, q, u8, 1, 8, s32));
    checks += 2;
    if (fixq_f16_packed_size(h, h) != 0) fail("fixq_f16_packed_size(2^32, 2^32)", "is not 0");
    if (fixq_bgemm_packed_size(tall, 1u << 30) != 0) fail("fixq_bgemm_packed_size(2^40, 2^30)", "is not 0");
  }
}

/* TFLite QuantizeMultiplier: frexp's exponent below -31 flushes to (0, 0), so
 * reals below 2^-32 flush, except those that round up to it (>= 2^-32 - 2^-64). */
static void flush_threshold(void) {
  const double at = ldexp(1.0, -32), half_step = ldexp(1.0, -64);
  int32_t m;
  int shift;
  expect(fixq_quantize_multiplier(at, &m, &shift) == FIXQ_OK && m == 1 << 30 && shift == -31,
         "quantize_multiplier(2^-32) = (2^30, -31)");
  expect(fixq_quantize_multiplier(at - half_step, &m, &shift) == FIXQ_OK && m == 1 << 30 && shift == -31,
         "quantize_multiplier(2^-32 - 2^-64) rounds up to (2^30, -31)");
  expect(fixq_quantize_multiplier(nextafter(at - half_step, 0.0), &m, &shift) == FIXQ_OK && m == 0 && shift == 0,
         "quantize_multiplier(just below 2^-32 - 2^-64) = (0, 0)");
  expect(fixq_quantize_multiplier(ldexp(1.0, -31) * 0.75, &m, &shift) == FIXQ_OK && m != 0,
         "quantize_multiplier(0.75 * 2^-31) is not flushed");
}

/* The zero point lies in the output dtype's range; the clamp [qmin, qmax] follows it. */
static void requant_zero_point(void) {
  int32_t x[3] = {0, 1000, -1000}, multiplier = 1 << 30, shift = 1, zero_point = 50;
  int8_t y[3];
  fixq_requant p;
  p.rounding = FIXQ_ROUND_DOUBLE;
  p.multiplier = &multiplier;
  p.shift = &shift;
  p.scale = NULL;
  p.zero_point = &zero_point;
  p.qmin = -10;
  p.qmax = 10;
  expect(fixq_requantize_s32(x, y, FIXQ_INT8, 1, 1, 3, &p) == FIXQ_OK && y[0] == 10 && y[1] == 10 && y[2] == -10,
         "requantize_s32: zero point 50 outside [qmin, qmax] = [-10, 10], clamped after it");
  zero_point = 128;
  expect(fixq_requantize_s32(x, y, FIXQ_INT8, 1, 1, 3, &p) == FIXQ_ERR_INVALID_ARGUMENT,
         "requantize_s32: zero point 128 outside int8");
  zero_point = 1;
  expect(fixq_requantize_s32(x, (int32_t *)x, FIXQ_INT32, 1, 1, 3, &p) == FIXQ_ERR_INVALID_ARGUMENT,
         "requantize_s32: int32 output takes zero point 0 only");
}

static void eltwise_ndim(void) {
  size_t shape[17];
  ptrdiff_t strides[17];
  int d;
  for (d = 0; d < 17; d++) {
    shape[d] = 1;
    strides[d] = 0;
  }
  strides[16] = 1;
  expect(eltwise_nd(16, shape, strides + 1) == FIXQ_OK, "eltwise_nd takes ndim 16");
  expect(eltwise_nd(17, shape, strides) == FIXQ_ERR_INVALID_ARGUMENT, "eltwise_nd refuses ndim 17");
  expect(eltwise_nd(0, shape, strides) == FIXQ_ERR_INVALID_ARGUMENT, "eltwise_nd refuses ndim 0");
}

int main(void) {
  if (fixq_init() != FIXQ_OK) {
    printf("FAIL fixq_init\n");
    return 1;
  }
  sizes();
  flush_threshold();
  requant_zero_point();
  eltwise_ndim();
  if (failures) {
    printf("%d of %d checks failed (%s)\n", failures, checks, fixq_isa_name(fixq_selected_isa()));
    return 1;
  }
  printf("ok: %d checks (%s)\n", checks, fixq_isa_name(fixq_selected_isa()));
  return 0;
}
