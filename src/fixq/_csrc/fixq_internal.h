/*
 * Internal declarations shared by the C core.  The inline functions here are
 * the scalar arithmetic contract: every ISA path must give the same bits.
 */
#ifndef FIXQ_INTERNAL_H_
#define FIXQ_INTERNAL_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "fixq/fixq.h"

/* Set once by fixq_init (and by fixq_select_isa in tests).  Each kernel family
 * keeps a `static const` table indexed by fixq_isa and calls
 * table[fixq__isa]; a table entry is NULL where that ISA is not compiled. */
extern fixq_isa fixq__isa;

/* ---- sizes -----------------------------------------------------------------
 * No object is larger than PTRDIFF_MAX bytes, and a size that came from a
 * negative int lies above it: an entry point takes a size, and forms a
 * product or sum of sizes (element and byte counts, padded sizes, strided
 * reaches), only through these, at entry, and refuses the call when one
 * fails.  *r = a * b (a + b); 0 when a, b or the result passes PTRDIFF_MAX. */
static inline int fixq__mul_size(size_t a, size_t b, size_t *r) {
  return __builtin_expect(!__builtin_mul_overflow(a, b, r) && a <= PTRDIFF_MAX && b <= PTRDIFF_MAX && *r <= PTRDIFF_MAX, 1);
}

static inline int fixq__add_size(size_t a, size_t b, size_t *r) {
  return __builtin_expect(!__builtin_add_overflow(a, b, r) && *r <= PTRDIFF_MAX, 1);
}

/* *reach += (count - 1) * |stride|: how far `count` elements `stride` apart
 * lie from the first (nothing when count is 0). */
static inline int fixq__add_reach(size_t *reach, size_t count, ptrdiff_t stride) {
  const size_t mag = stride < 0 ? 0 - (size_t)stride : (size_t)stride;
  size_t step;
  return count == 0 ||
         (count <= PTRDIFF_MAX && fixq__mul_size(count - 1, mag, &step) && fixq__add_size(*reach, step, reach));
}

static inline int32_t fixq__sat_i32(int64_t v) {
  return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

/* gemmlowp fixedpoint.h SaturatingRoundingDoublingHighMul: ties toward +inf,
 * INT32_MIN * INT32_MIN saturates to INT32_MAX. */
static inline int32_t fixq__srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (1 - (INT64_C(1) << 30));
  return (int32_t)((ab + nudge) / (INT64_C(1) << 31)); /* C division truncates, as in gemmlowp */
}

/* gemmlowp fixedpoint.h RoundingDivideByPOT: ties away from zero, 0 <= e <= 31. */
static inline int32_t fixq__rdbpot(int32_t x, int e) {
  const int32_t mask = (int32_t)((INT64_C(1) << e) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier (double rounding).  The left shift
 * saturates (gemmlowp SaturatingRoundingMultiplyByPOT) where TFLite would
 * overflow. */
static inline int32_t fixq__mbqm_double(int32_t x, int32_t m, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return fixq__rdbpot(fixq__srdhm(fixq__sat_i32((int64_t)x * ((int64_t)1 << left)), m), right);
}

/* TFLite MultiplyByQuantizedMultiplier with TFLITE_SINGLE_ROUNDING (ruy
 * apply_multiplier.cc): one rounding, ties toward +inf, result saturated. */
static inline int32_t fixq__mbqm_single(int32_t x, int32_t m, int shift) {
  const int total = 31 - shift; /* 1..62 */
  const int64_t r = ((int64_t)x * (int64_t)m + (INT64_C(1) << (total - 1))) >> total;
  return fixq__sat_i32(r);
}

/* Round half to even for |f| < 2^22, independent of the FP environment: adding
 * 1.5 * 2^23 leaves no fraction bits, so the FPU rounds to nearest even there
 * (requires -ffp-contract=off and no -ffast-math, as setup.py builds). */
static inline float fixq__round_even_small(float f) {
  return (f + 12582912.0f) - 12582912.0f;
}

/* The float output stage: clamp f to [qmin - zp, qmax - zp], round half to
 * even, add the zero point.  f must not be NaN. */
static inline int32_t fixq__clamp_round_f32(float f, int32_t zp, int32_t qmin, int32_t qmax) {
  const float lo = (float)(qmin - zp), hi = (float)(qmax - zp);
  f = f < lo ? lo : f;
  f = f > hi ? hi : f;
  return (int32_t)fixq__round_even_small(f) + zp;
}

/* XNNPACK xnn_qs8_requantize_fp32: clamp in float around the zero point, round
 * half to even, add the zero point. */
static inline int32_t fixq__requant_fp32(int32_t x, float scale, int32_t zp, int32_t qmin,
                                         int32_t qmax) {
  /* NaN cannot occur: x is an integer and scale is finite */
  return fixq__clamp_round_f32((float)x * scale, zp, qmin, qmax);
}

/* clamp(v + zp) computed without int32 overflow */
static inline int32_t fixq__add_clamp(int32_t v, int32_t zp, int32_t lo, int32_t hi) {
  const int64_t s = (int64_t)v + zp;
  return s < lo ? lo : s > hi ? hi : (int32_t)s;
}

/* One output value of the shared output stage, channel c. */
static inline int32_t fixq__requant_one(int32_t x, const fixq_requant *p, size_t c) {
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE:
      return fixq__add_clamp(fixq__mbqm_double(x, p->multiplier[c], p->shift[c]), p->zero_point[c], p->qmin, p->qmax);
    case FIXQ_ROUND_SINGLE:
      return fixq__add_clamp(fixq__mbqm_single(x, p->multiplier[c], p->shift[c]), p->zero_point[c], p->qmin, p->qmax);
    default:
      return fixq__requant_fp32(x, p->scale[c], p->zero_point[c], p->qmin, p->qmax);
  }
}

static inline void fixq__store(void *y, fixq_dtype dt, size_t i, int32_t v) {
  switch (dt) {
    case FIXQ_INT8: ((int8_t *)y)[i] = (int8_t)v; break;
    case FIXQ_UINT8: ((uint8_t *)y)[i] = (uint8_t)v; break;
    case FIXQ_INT16: ((int16_t *)y)[i] = (int16_t)v; break;
    default: ((int32_t *)y)[i] = v; break;
  }
}

static inline int32_t fixq__load(const void *q, fixq_dtype dt, size_t i) {
  switch (dt) {
    case FIXQ_INT8: return ((const int8_t *)q)[i];
    case FIXQ_UINT8: return ((const uint8_t *)q)[i];
    case FIXQ_INT16: return ((const int16_t *)q)[i];
    default: return ((const int32_t *)q)[i];
  }
}

static inline size_t fixq__dtype_size(fixq_dtype dt) {
  return dt == FIXQ_INT8 || dt == FIXQ_UINT8 ? 1 : dt == FIXQ_INT16 ? 2 : 4;
}

/* ---- micro-kernels ---------------------------------------------------------
 * Requantize `rows` rows of channels*inner int32 values.  Row r of x starts at
 * x + r*x_stride, row r of y at element r*y_stride of y (strides in elements).
 * The GEMM output stage calls this on a tile of accumulators with inner == 1
 * and p's arrays offset to the tile's first column. */
typedef void (*fixq_requant_ukernel)(size_t rows, size_t channels, size_t inner, const int32_t *x,
                                     size_t x_stride, void *y, size_t y_stride, fixq_dtype y_dtype,
                                     const fixq_requant *p);
/* Returns nonzero when a NaN was seen. */
typedef int (*fixq_quantize_ukernel)(size_t rows, size_t channels, size_t inner, const float *x,
                                     void *y, fixq_dtype y_dtype, const float *scale,
                                     const int32_t *zero_point, int32_t qmin, int32_t qmax);
typedef void (*fixq_dequantize_ukernel)(size_t rows, size_t channels, size_t inner, const void *q,
                                        fixq_dtype q_dtype, float *y, const float *scale,
                                        const int32_t *zero_point);

void fixq_requant_s32__scalar(size_t rows, size_t channels, size_t inner, const int32_t *x,
                              size_t x_stride, void *y, size_t y_stride, fixq_dtype y_dtype,
                              const fixq_requant *p);
int fixq_quantize_f32__scalar(size_t rows, size_t channels, size_t inner, const float *x, void *y,
                              fixq_dtype y_dtype, const float *scale, const int32_t *zero_point,
                              int32_t qmin, int32_t qmax);
void fixq_dequantize__scalar(size_t rows, size_t channels, size_t inner, const void *q,
                             fixq_dtype q_dtype, float *y, const float *scale,
                             const int32_t *zero_point);
#ifdef FIXQ_COMPILED_AVX2
void fixq_requant_s32__avx2(size_t rows, size_t channels, size_t inner, const int32_t *x,
                            size_t x_stride, void *y, size_t y_stride, fixq_dtype y_dtype,
                            const fixq_requant *p);
int fixq_quantize_f32__avx2(size_t rows, size_t channels, size_t inner, const float *x, void *y,
                            fixq_dtype y_dtype, const float *scale, const int32_t *zero_point,
                            int32_t qmin, int32_t qmax);
void fixq_dequantize__avx2(size_t rows, size_t channels, size_t inner, const void *q,
                           fixq_dtype q_dtype, float *y, const float *scale,
                           const int32_t *zero_point);
#define FIXQ__AVX2(fn) fn
#else
#define FIXQ__AVX2(fn) NULL
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_requant_s32__avx512vnni(size_t rows, size_t channels, size_t inner, const int32_t *x,
                                  size_t x_stride, void *y, size_t y_stride, fixq_dtype y_dtype,
                                  const fixq_requant *p);
#endif
/* Table entry for the avx512vnni level: its own kernel, or (FIXQ__AVX512VNNI(x__avx2))
 * the AVX2 one where 512-bit code would not pay. */
#ifdef FIXQ_COMPILED_AVX512VNNI
#define FIXQ__AVX512VNNI(fn) fn
#else
#define FIXQ__AVX512VNNI(fn) NULL
#endif
/* The aarch64 levels' table entries, likewise: FIXQ__DOTPROD(x__neon) where
 * the dot product would not change the kernel. */
#ifdef FIXQ_COMPILED_NEON
#define FIXQ__NEON(fn) fn
#else
#define FIXQ__NEON(fn) NULL
#endif
#ifdef FIXQ_COMPILED_DOTPROD
#define FIXQ__DOTPROD(fn) fn
#else
#define FIXQ__DOTPROD(fn) NULL
#endif
#ifdef FIXQ_COMPILED_I8MM
#define FIXQ__I8MM(fn) fn
#else
#define FIXQ__I8MM(fn) NULL
#endif

/* ---- GEMM micro-kernels (qgemm.c drives them) ------------------------------
 * Each ISA has a packer for A and a tile kernel that read one record format;
 * qgemm.c's kernel_table gives its tile (mr rows x np panels), its record size
 * and the offset it adds to a'.
 * A is packed `rows` <= mr rows at a time (the kernel gets mr == rows): for
 * each group of 4 k values q (k padded with zeros to a multiple of 4), `rows`
 * records, record r at dst + (q * rows + r) * record size (AVX2 S8: the rows
 * in groups of FIXQ_GEMM_MR, one group after the other, each laid out so
 * with its own row count).  A record holds
 * a' = a (int8) or a ^ 0x80 (uint8, = a - 128) for k = 4q..4q+3 as
 *   scalar, AVX2, FIXQ_GEMM_S8:  uint8 s[4] = (a' < 0 ? 0xFF : 0), then uint8 |a'|[4]
 *   scalar, AVX2, FIXQ_GEMM_S16: int16 a'[4]
 *   AVX-512 VNNI (both kernels): uint8 a' + 128 [4] (zeros past k)
 * and row_sum[r] = sum_k a' (mod 2^32; only when row_sum is not NULL) and,
 * for the 8-byte records, row_neg[r] = sum_k max(-a', 0).
 * The S8 kernels multiply |a'| by b' ^ s: for a' < 0 that is
 * |a'| * (-b' - 1) = a' b' - |a'|, so sum_k |a'| (b' ^ s) + row_neg = sum_k a' b'.
 * With b' in [-127, 127] each product lies in [-128 * 128, 128 * 127], so a
 * vpmaddubsw pair sum lies in [-32768, 32512]: int16 saturation never triggers.
 * The VNNI kernel sums (a' + 128) b' exactly (vpdpbusd); the driver folds
 * -128 * sum_k b' into col_term. */
/* The GEMM driver (qgemm.c) with a caller's output stage: fixq_qgemm's acc[m][n] (its checks, bias and
 * zero points; FIXQ_ERR_OVERFLOW where the exact acc could pass int32), and store(ctx, acc, lda_acc, m0, rows,
 * n0, cols) gets each block of accumulators (acc[r * lda_acc + j] for row m0 + r, column n0 + j) while it
 * is in L1, from any of `threads` threads, every block once. */
typedef void (*fixq__qgemm_store)(const void *ctx, const int32_t *acc, size_t lda_acc, size_t m0, size_t rows,
                                  size_t n0, size_t cols);
fixq_status fixq__qgemm_store_s32(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                                  const fixq_packed_b *b, const int32_t *bias, fixq__qgemm_store store,
                                  const void *ctx, int threads);
#define FIXQ__MACS_PER_THREAD (1 << 19) /* less work than this per thread does not pay for a worker */

/* ---- worker threads (parallel.c) ------------------------------------------
 * fixq__parallel(n, fn, ctx) runs fn(ctx, t) once for every t in [0, n),
 * on the calling thread and kept worker threads (any task on any of them),
 * and returns when all have returned.  Every task runs, whatever threads can
 * be had. */
typedef void (*fixq__task_fn)(void *ctx, int t);
void fixq__parallel(int n, fixq__task_fn fn, void *ctx);
/* A burst of regions of up to `threads` tasks, with serial steps between
 * them (a model call): between hold and its release, workers 0 .. threads - 2
 * poll for the next region instead of sleeping (while the CPU is theirs).
 * Holds nest, come from any thread, and change no result; each hold is
 * released once, with the same threads; threads <= 1: nothing.  _holds: how
 * many are open. */
void fixq__parallel_hold(int threads);
void fixq__parallel_release(int threads);
int fixq__parallel_holds(void);
#define FIXQ_GEMM_MR 4 /* scalar tile rows; the AVX2 S8 records come in groups of this many rows */
#define FIXQ__AVX2_MR 16 /* AVX2 tile: 16 rows (groups of FIXQ_GEMM_MR) x 3 panels (qgemm_s8__avx2.c) */
#define FIXQ__AVX2_NP 3
#define FIXQ__VNNI_MR 8
#define FIXQ__VNNI_NP 3
typedef void (*fixq_qgemm_pack_a_fn)(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                     fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
/* One tile of mr rows by np panels of FIXQ_GEMM_NR columns over kq groups of
 * 4 k values (b: the first panel, fixq.h; the next ones follow kq * 4 *
 * FIXQ_GEMM_NR bytes apart): c[r * ldc + j] =
 * sum_k a'[r][k] b'[k][j] - b_zp[j] * row_sum[r] + col_term[j], mod 2^32
 * (the row_sum term skipped when row_sum is NULL). */
typedef void (*fixq_qgemm_ukernel)(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                                   size_t ldc, const int32_t *row_sum, const int32_t *row_neg,
                                   const int32_t *b_zp, const int32_t *col_term);

/* The tile of fixq_qgemm_ukernel with row_sum NULL (B without zero points), its records made from the
 * rows of A as they lie (row r at a + r * lda, k values of a_dtype), with no packing: where a path has one,
 * qgemm.c runs it instead of the packer and the tile kernel for a k up to FIXQ__DIRECT_K_MAX.  Where ldc % 16
 * == 8 (rows of 16 np - 8 columns, engine_pw.h) the last panel's upper 8 columns are not written. */
typedef void (*fixq_qgemm_direct_fn)(size_t mr, size_t np, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                     const int8_t *b, int32_t *c, size_t ldc, const int32_t *col_term);
#define FIXQ__DIRECT_K_MAX 64

/* The GEMM's column terms for ncols columns (qgemm.c's col_term), modulo 2^32:
 * col_term[j] = bias[j] - col_mult * col_sum[j] - zp_mult * zp[j], bias[j] read for j < n_bias only.
 * One definition, compiled per path (the AVX2 one multiplies 8 columns a vpmulld). */
typedef void (*fixq_qgemm_col_term_fn)(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                                       const int32_t *col_sum, const int32_t *zp, const int32_t *bias,
                                       int32_t *col_term);
static inline void fixq__qgemm_col_term(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                                        const int32_t *restrict col_sum, const int32_t *restrict zp,
                                        const int32_t *restrict bias, int32_t *restrict col_term) {
  size_t j = 0;
  for (; j < n_bias; j++)
    col_term[j] = (int32_t)((uint32_t)bias[j] - col_mult * (uint32_t)col_sum[j] - zp_mult * (uint32_t)zp[j]);
  for (; j < ncols; j++) col_term[j] = (int32_t)(0u - col_mult * (uint32_t)col_sum[j] - zp_mult * (uint32_t)zp[j]);
}
void fixq_qgemm_col_term__scalar(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                                 const int32_t *col_sum, const int32_t *zp, const int32_t *bias, int32_t *col_term);
#ifdef FIXQ_COMPILED_AVX2
void fixq_qgemm_col_term__avx2(size_t ncols, size_t n_bias, uint32_t col_mult, uint32_t zp_mult,
                               const int32_t *col_sum, const int32_t *zp, const int32_t *bias, int32_t *col_term);
#endif

void fixq_qgemm_pack_a__scalar(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                               fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
void fixq_qgemm_s8__scalar(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                           size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                           const int32_t *col_term);
void fixq_qgemm_s16__scalar(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                            const int32_t *col_term);
#ifdef FIXQ_COMPILED_AVX2
void fixq_qgemm_pack_a__avx2(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
void fixq_qgemm_s8__avx2(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term);
void fixq_qgemm_s16__avx2(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                          size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                          const int32_t *col_term);
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_qgemm_pack_a__avx512vnni(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                   fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
void fixq_qgemm_s8__avx512vnni(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                               size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                               const int32_t *col_term);
void fixq_qgemm_direct__avx512vnni(size_t mr, size_t np, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                                   const int8_t *b, int32_t *c, size_t ldc, const int32_t *col_term);
#endif

/* The aarch64 kernels (qgemm_s8__neon.c, __dotprod.c, __i8mm.c) read one A
 * format: int8 a'[4] per row per 4 k (4-byte records), the rows in groups of
 * FIXQ__ARM_MR, records of rows past `rows` zero; per group of 4 k, the
 * group's FIXQ__ARM_MR records one after the other (i8mm: per pair of groups,
 * rows 2i and 2i+1 as 8 k each, side by side; an odd last group as the
 * others); one row alone (rows == 1: a GEMV, or the last row of A) as its
 * a' in order, zeros up to 4 kq, as the AVX-512 VNNI packer does, for the
 * one-row kernels (the i8mm path runs the dotprod one: smmla multiplies two
 * rows at once).  Every a' b' product and pair sum is exact (smull/sadalp,
 * sdot, smmla are signed x signed), so b' = -128 needs no second kernel and
 * row_neg is not used. */
#define FIXQ__ARM_MR 4
#define FIXQ__ARM_NP 2
#ifdef FIXQ_COMPILED_NEON
void fixq_qgemm_pack_a__neon(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
void fixq_qgemm_s8__neon(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term);
void fixq_requant_s32__neon(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                            void *y, size_t y_stride, fixq_dtype y_dtype, const fixq_requant *p);
int fixq_quantize_f32__neon(size_t rows, size_t channels, size_t inner, const float *x, void *y,
                            fixq_dtype y_dtype, const float *scale, const int32_t *zero_point,
                            int32_t qmin, int32_t qmax);
void fixq_dequantize__neon(size_t rows, size_t channels, size_t inner, const void *q,
                           fixq_dtype q_dtype, float *y, const float *scale,
                           const int32_t *zero_point);
#endif
#ifdef FIXQ_COMPILED_DOTPROD
void fixq_qgemm_s8__dotprod(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                            size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                            const int32_t *col_term);
/* the one-row tile of fixq_qgemm_s8__dotprod (mr == 1), also the i8mm kernel's */
void fixq_qgemm_s8_row1__dotprod(size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                                 const int32_t *row_sum, const int32_t *b_zp, const int32_t *col_term);
#endif
#ifdef FIXQ_COMPILED_I8MM
void fixq_qgemm_pack_a__i8mm(size_t rows, size_t k, const void *a, size_t lda, fixq_dtype a_dtype,
                             fixq_gemm_kernel kernel, uint8_t *dst, int32_t *row_sum, int32_t *row_neg);
void fixq_qgemm_s8__i8mm(size_t mr, size_t np, size_t kq, const uint8_t *a, const int8_t *b, int32_t *c,
                         size_t ldc, const int32_t *row_sum, const int32_t *row_neg, const int32_t *b_zp,
                         const int32_t *col_term);
#endif

/* Elementwise add/mul over `rows` rows of n outputs; row r of a starts at
 * a + r * a_stride (bytes; every operand has 1-byte elements), likewise b
 * and y.  a_bcast / b_bcast: that input is one value repeated along a row. */
typedef void (*fixq_eltwise_ukernel)(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast,
                                     const void *b, ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride,
                                     const fixq_eltwise *p);
void fixq_eltwise__scalar(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                          ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p);
#ifdef FIXQ_COMPILED_AVX2
void fixq_eltwise__avx2(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                        ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p);
#endif
#ifdef FIXQ_COMPILED_NEON
void fixq_eltwise__neon(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                        ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p);
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_eltwise__avx512vnni(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast,
                              const void *b, ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride,
                              const fixq_eltwise *p);
#endif

/* MUL's float plan with lin_k = 2 takes (float)(P + FIXQ__MUL_BIAS): 1.5 * 2^23,
 * whose float bits are 0x4B400000 + P for |P| < 2^22 (fixq.h). */
#define FIXQ__MUL_BIAS 12582912
#define FIXQ__MUL_BIAS_BITS 0x4B400000

/* fixq_eltwise_init in two steps: the checks and multipliers (no plan,
 * lin_k = 0), then the SIMD plan (0.5 to 15 ms: the contract on all 65536
 * input pairs and the fit), for callers that plan only when it pays. */
fixq_status fixq__eltwise_setup(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding, fixq_dtype a_dtype,
                                float a_scale, int32_t a_zero_point, fixq_dtype b_dtype, float b_scale,
                                int32_t b_zero_point, fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                                int32_t qmin, int32_t qmax);
void fixq__eltwise_plan(fixq_eltwise *p);

/* The parameter block that computes fixq_requantize_q8 through fixq_eltwise_nd
 * with b a single int8 1 broadcast (p per tensor); plan: also the SIMD plan
 * over the 256 input values (a few microseconds). */
fixq_status fixq__requantize_q8_params(fixq_eltwise *e, fixq_dtype x_dtype, int32_t x_zero_point,
                                       fixq_dtype y_dtype, const fixq_requant *p, int plan);

/* One output of the elementwise contract from the input differences
 * va = a - a_zp, vb = b - b_zp (TFLite int8 ADD / MUL, or float32). */
static inline int32_t fixq__eltwise_one(int32_t va, int32_t vb, const fixq_eltwise *p) {
  const int32_t zp = p->y_zero_point;
  if (p->rounding == FIXQ_ROUND_FP32) {
    const float fa = (float)va * p->a_scale, fb = (float)vb * p->b_scale;
    return fixq__clamp_round_f32((p->op == FIXQ_OP_ADD ? fa + fb : fa * fb) / p->y_scale, zp, p->qmin, p->qmax);
  }
  const int single = p->rounding == FIXQ_ROUND_SINGLE;
  int32_t x = va * vb; /* MUL: |x| <= 255 * 255 */
  if (p->op == FIXQ_OP_ADD) {
    /* tflite reference_integer_ops::AddFunc: left shift 20, both inputs
     * rescaled to 2*max(s_a, s_b), summed, rescaled to the output */
    const int32_t xa = va * (1 << 20), xb = vb * (1 << 20);
    x = single ? fixq__mbqm_single(xa, p->a_multiplier, p->a_shift) + fixq__mbqm_single(xb, p->b_multiplier, p->b_shift)
               : fixq__mbqm_double(xa, p->a_multiplier, p->a_shift) + fixq__mbqm_double(xb, p->b_multiplier, p->b_shift);
  }
  const int32_t r = single ? fixq__mbqm_single(x, p->y_multiplier, p->y_shift)
                           : fixq__mbqm_double(x, p->y_multiplier, p->y_shift);
  return fixq__add_clamp(r, zp, p->qmin, p->qmax);
}

/* ---- low-bit kernels -------------------------------------------------------
 * fp16-weight linear: y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) in fp32.
 * The weights are packed in panels of FIXQ__F16_NR columns (fixq.h).  The
 * summation order is part of the contract, so every path gives the same bits:
 * for each block of FIXQ__F16_KC values of k, acc = fmaf(x, w, acc) from
 * acc = +0.0f in increasing k; y = ((acc_0 + acc_1) + ...) + bias.
 * `work` holds FIXQ__F16_MC * FIXQ__F16_KC floats (AVX2 packs x there). */
#define FIXQ__F16_NR 16
#define FIXQ__F16_KC 256
#define FIXQ__F16_MC 72
typedef void (*fixq_f16_linear_ukernel)(size_t m, size_t n, size_t k, const float *x, size_t ldx,
                                        const uint16_t *packed, const float *bias, float *y, size_t ldy,
                                        float *work);
void fixq_f16_linear__scalar(size_t m, size_t n, size_t k, const float *x, size_t ldx, const uint16_t *packed,
                             const float *bias, float *y, size_t ldy, float *work);

/* fixq_qgemm of an output stage p (not NULL) that fixq__check_requant(p, p_channels, y_dtype) accepted
 * before: the C plan checks its steps' stages once (fixq_eng_check), not on every call. */
fixq_status fixq__qgemm_checked_rq(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                                   const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                                   size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads);

/* fixq_qgemm (p given) or fixq__qgemm_store_s32 (store given) of arguments a caller checked before, for which
 * fixq__qgemm_fits holds: no checks, no bound (the C plan proves it once per step, fixq_eng_gemm_fits). */
fixq_status fixq__qgemm_fitted(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                               const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                               size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, fixq__qgemm_store store,
                               const void *store_ctx, int threads);
/* Every acc of fixq_qgemm(a of a_dtype around a_zero_point, b, bias) fits int32 (else FIXQ_ERR_OVERFLOW). */
int fixq__qgemm_fits(const fixq_packed_b *b, fixq_dtype a_dtype, int32_t a_zero_point, const int32_t *bias);

/* XOR-popcount GEMM on nibble planes (fixq_bgemm_pack; rows of chunks * 64
 * bytes): y[i][j] = k - 2 * popcount(a[i] ^ b[j]). */
typedef void (*fixq_bgemm_ukernel)(size_t m, size_t n, size_t chunks, const uint8_t *a, const uint8_t *b,
                                   int32_t k, int32_t *y);
void fixq_bgemm__scalar(size_t m, size_t n, size_t chunks, const uint8_t *a, const uint8_t *b, int32_t k,
                        int32_t *y);
#ifdef FIXQ_COMPILED_AVX2
void fixq_f16_linear__avx2(size_t m, size_t n, size_t k, const float *x, size_t ldx, const uint16_t *packed,
                           const float *bias, float *y, size_t ldy, float *work);
void fixq_bgemm__avx2(size_t m, size_t n, size_t chunks, const uint8_t *a, const uint8_t *b, int32_t k,
                      int32_t *y);
#endif

/* IEEE binary16 -> binary32, exact (what vcvtph2ps does, NaNs quieted). */
static inline float fixq__f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  union { uint32_t u; float f; } v;
  if (exp == 0x1f) {
    v.u = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u);
  } else if (exp != 0) {
    v.u = sign | ((exp + 112u) << 23) | (man << 13);
  } else {
    v.f = (float)man * 0x1p-24f; /* zero or subnormal: exact */
    v.u |= sign;
  }
  return v.f;
}

/* The requantize micro-kernel of the selected path (for the GEMM output stage). */
fixq_requant_ukernel fixq__requant_ukernel(void);

/* Validates a fixq_requant against `channels` and the output dtype. */
fixq_status fixq__check_requant(const fixq_requant *p, size_t channels, fixq_dtype y_dtype);

#endif /* FIXQ_INTERNAL_H_ */
