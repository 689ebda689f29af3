/* Float kernels of a transformer encoder (layer norm, softmax, GELU, attention, embedding sums, masked
 * mean) and the dynamic-int8 linear layer.  fixq._core calls them; they are not part of the
 * public C API (fixq.h, the capsule).
 *
 * Float results are not bit-identical across CPU paths (sums run in
 * different orders; docs/arithmetic.md states the error bounds), except the
 * dynamic linear layer's: its int32 accumulators are exact and its epilogue
 * is one float multiply and one float add per output on every path. */
#ifndef FIXQ_FLOATOPS_H_
#define FIXQ_FLOATOPS_H_

#include <float.h>

#include "fixq_internal.h"

#define FIXQ__FLOAT_ELEMENTS_PER_THREAD (1 << 14) /* less work than this per thread does not pay for a worker */

typedef enum { FIXQ_GELU_ERF = 0, FIXQ_GELU_TANH = 1 } fixq_gelu_form;
typedef enum { FIXQ_DYN_ROW = 0, FIXQ_DYN_TENSOR = 1 } fixq_dyn_granularity;
/* what a dynamic linear layer applies to its float result: nothing, or fixq_gelu_f32 of that form */
typedef enum { FIXQ_DYN_ACT_NONE = 0, FIXQ_DYN_ACT_GELU_ERF = 1, FIXQ_DYN_ACT_GELU_TANH = 2 } fixq_dyn_act;

/* y[r][i] = (x[r][i] - mean_r) / sqrt(var_r + eps) * weight[i] + bias[i] over rows of n
 * (var biased, as torch.nn.functional.layer_norm); eps >= 0 and finite.  y may be x. */
fixq_status fixq_layer_norm_f32(const float *x, size_t rows, size_t n, const float *weight, const float *bias,
                                float eps, float *y, int threads);
/* y[r][i] = exp(x[r][i] - max_r) / sum_i exp(x[r][i] - max_r).  y may be x. */
fixq_status fixq_softmax_f32(const float *x, size_t rows, size_t n, float *y, int threads);
/* y[r] = softmax(x[r] + bias[r / (rows / bias_rows)]) over rows of n, the sum rounded to float32 first (the
 * bits of the add, then fixq_softmax_f32): an attention mask's bias [N][1][1][n] on scores [N][H][L][n].
 * bias_rows divides rows.  y may be x; bias must not overlap y. */
fixq_status fixq_softmax_bias_f32(const float *x, size_t rows, size_t n, const float *bias, size_t bias_rows,
                                  float *y, int threads);
/* ERF: 0.5 x (1 + erf(x / sqrt 2)); TANH: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).  y may be x. */
fixq_status fixq_gelu_f32(const float *x, size_t count, fixq_gelu_form form, float *y, int threads);

/* Multi-head attention, per batch b < N, head h < H, query i < M:
 *   o[b][i][h][:] = sum_j p[j] v[b][j][h][:],  p = softmax_j(s_j + bias[b][j]) over keys j < L,
 *   s_j = sum_d (scale * q[b][i][h][d]) k[b][j][h][d]  (each product scale * q rounded to float32 first)
 * with fixq_softmax_bias_f32's numerics for p (the add rounded, then the row's softmax).  q, k, v: rows
 * of D contiguous floats at q + b * q_stride[0] + i * q_stride[1] + h * q_stride[2] (strides in floats,
 * any sign); bias: NULL (none) or rows of L floats, bias_stride (0 or L) apart per batch; o: C-contiguous
 * [N][M][H][D], overlapping none of the inputs.  Keys j >= L' past the last one whose bias is above
 * -2^64 contribute exactly 0 wherever the bound of fixq__att_keys shows it (right padding of a mask), and
 * are skipped then: the result is the same bits.  FIXQ_ERR_INVALID_ARGUMENT when L == 0 < M.
 * With seq_offsets (N + 1 offsets from 0 up to T, each sequence one token or more) the N sequences lie
 * packed, one after another, in q, k, v, o and bias as tokens of one batch: M = L = T (the batch strides and
 * bias_stride unused), and sequence b's tokens [seq_offsets[b], seq_offsets[b + 1]) attend to its own
 * tokens alone (queries and keys both; bias: T floats or NULL): per sequence, the bits of its own call with
 * N = 1 and M = L = its length. */
typedef struct {
  size_t n, h, m, l, d;
  const float *q, *k, *v;
  ptrdiff_t q_stride[3], k_stride[3], v_stride[3]; /* batch, token, head */
  const float *bias;
  size_t bias_stride;
  float scale;
  float *o;
  const size_t *seq_offsets; /* or NULL */
} fixq_attention_args;
fixq_status fixq_attention_f32(const fixq_attention_args *a, int threads);

/* y[m][n] = (float)acc * (x_scale[m] * w_scale[n]) + bias[n] for float x [m][k]
 * (row-major), B packed from int8/uint8 weights, with x quantized to uint8 per
 * row or per tensor as ONNX DynamicQuantizeLinear does (docs/arithmetic.md)
 * and acc = sum_k (q[m][k] - zp[m]) (b[k][n] - b_zp[n]) exact.  w_scale:
 * w_scale_count (1 or n) finite values > 0; bias [n] or NULL.  Then, each
 * step rounded to float32 as the separate ops round it: + residual[m][n]
 * (NULL: none; it may be y itself, else overlaps nothing), then `act` over
 * each row (the bits of fixq_gelu_f32 on the sum).
 * FIXQ_ERR_NAN: x holds a NaN or an infinity (y unspecified);
 * FIXQ_ERR_OVERFLOW: acc could pass int32 (fixq_qgemm's check, |q - zp| <= 255). */
fixq_status fixq_dynamic_linear(const float *x, size_t m, const fixq_packed_b *b, const float *w_scale,
                                size_t w_scale_count, const float *bias, fixq_dyn_granularity granularity,
                                const float *residual, fixq_dyn_act act, float *y, int threads);

/* One table of fixq_embed_sum_f32: int8 rows [rows][d] with a float32 scale each, and the row each token
 * reads (ids[t] < rows; any other id is FIXQ_ERR_INVALID_ARGUMENT, checked before anything is read). */
typedef struct {
  const int8_t *q;
  const float *scale;
  size_t rows;
  const int64_t *ids; /* one per token */
} fixq_embed_table;
/* y[t][:] = ((scale_0[i_0] * q_0[i_0][:] + scale_1[i_1] * q_1[i_1][:]) + ...) over `count` >= 1 tables, i_k =
 * tables[k].ids[t], for t < rows: each product and each add rounded to float32 (numpy's int8 x float32
 * multiply, then its adds, left to right); then, with ln_weight and ln_bias (both or neither), each row's
 * fixq_layer_norm_f32 in place. */
fixq_status fixq_embed_sum_f32(const fixq_embed_table *tables, size_t count, size_t rows, size_t d,
                               const float *ln_weight, const float *ln_bias, float eps, float *y, int threads);
/* y[b][:] = sum_t x[t][:] * mask[t] / max(sum_t mask[t], 1e-9) over the tokens t of sequence b,
 * offsets[b] <= t < offsets[b + 1], for b < n: numpy's (x * mask).sum(tokens) / maximum(mask.sum(tokens),
 * 1e-9) in float32 (each product rounded, added row after row to +0; mask values whose sums are exact, as 0/1
 * are).  x [offsets[n]][d], mask [offsets[n]], y [n][d]; offsets rise from 0. */
fixq_status fixq_masked_mean_f32(const float *x, const float *mask, const size_t *offsets, size_t n, size_t d,
                                 float *y, int threads);

/* ---- shared constants -------------------------------------------------------
 * exp: Cephes expf (x = n ln2 + r with ln 2 in two parts, |r| <= ln2 / 2, a
 * degree-5 polynomial for (e^r - 1 - r) / r^2, then times 2^n), relative error
 * about 2e-7; x below FIXQ__EXP_LO (~ ln FLT_MIN) gives 0, x above FIXQ__EXP_HI
 * gives e^88. */
#define FIXQ__EXP_LO (-87.33654f)
#define FIXQ__EXP_HI 88.0f
#define FIXQ__LOG2E 1.44269504088896341f
#define FIXQ__LN2_HI 0.693359375f
#define FIXQ__LN2_LO (-2.12194440e-4f)
#define FIXQ__EXP_P0 1.9875691500e-4f
#define FIXQ__EXP_P1 1.3981999507e-3f
#define FIXQ__EXP_P2 8.3334519073e-3f
#define FIXQ__EXP_P3 4.1665795894e-2f
#define FIXQ__EXP_P4 1.6666665459e-1f
#define FIXQ__EXP_P5 5.0000001201e-1f
/* erf: Eigen's generic_fast_erf_float, x clamped to [-4, 4] (where erf is +-1
 * in float32), x * A(x^2) / B(x^2); absolute error below 2e-7. */
#define FIXQ__ERF_A13 (-2.72614225801306e-10f)
#define FIXQ__ERF_A11 2.77068142495902e-08f
#define FIXQ__ERF_A9 (-2.10102402082508e-06f)
#define FIXQ__ERF_A7 (-5.69250639462346e-05f)
#define FIXQ__ERF_A5 (-7.34990630326855e-04f)
#define FIXQ__ERF_A3 (-2.95459980854025e-03f)
#define FIXQ__ERF_A1 (-1.60960333262415e-02f)
#define FIXQ__ERF_B8 (-1.45660718464996e-05f)
#define FIXQ__ERF_B6 (-2.13374055278905e-04f)
#define FIXQ__ERF_B4 (-1.68282697438203e-03f)
#define FIXQ__ERF_B2 (-7.37332916720468e-03f)
#define FIXQ__ERF_B0 (-1.42647390514189e-02f)
#define FIXQ__SQRT1_2 0.70710678118654752f
#define FIXQ__SQRT_2_OVER_PI 0.79788456080286536f
#define FIXQ__GELU_TANH_C 0.044715f

/* ---- attention heads ----------------------------------------------------------
 * A head kernel takes query rows in blocks of FIXQ__ATT_MB.  Its `work`,
 * FIXQ__ATT_WORK(L, D) floats aligned to 64 bytes, holds K transposed [D][Lp]
 * (Lp: L rounded up to 16), the block's scores [MB][Lp], the bias row [Lp],
 * the block's scaled queries [MB][Dp] (Dp: D rounded up to 16) and V's rows
 * copied [Lp][Dp]. */
#define FIXQ__ATT_MB 8
#define FIXQ__ATT_LP(l) (((l) + 15) & ~(size_t)15)
#define FIXQ__ATT_WORK(l, d) \
  (FIXQ__ATT_LP(l) * ((d) + FIXQ__ATT_MB + 1 + (((d) + 15) & ~(size_t)15)) + FIXQ__ATT_MB * (((d) + 15) & ~(size_t)15))
#define FIXQ__ATT_MASKED (-18446744073709551616.0f) /* -2^64: a bias at or below it masks its key */
#define FIXQ__ATT_KEPT (-1152921504606846976.0f)    /* -2^60: the last kept key's bias is at least this */

/* The keys a block of queries needs: L' (< L, the keys up to the last unmasked one) when every query row of
 * the block has sum_d |scale * q[d]| <= 2^59 / kv_max, kv_max any finite bound of |k| over all keys and |v|
 * over the skipped ones (the kernels pass the float sum of them: NaN and infinity propagate).  Then every
 * |s_j| <= 2^60 (twice the bound of a float dot product), the kept key's score is above -2^61, a skipped
 * one's below -2^63, their difference below FIXQ__EXP_LO: its exp is 0 on every path, and 0 * v adds
 * nothing to the finite sums.  Otherwise L. */
static inline size_t fixq__att_keys(size_t l, size_t l_kept, float kv_max, const float *q_abs_sum, size_t rows) {
  if (l_kept >= l || !(kv_max < INFINITY)) return l;
  const float limit = kv_max > 0.0f ? 576460752303423488.0f / kv_max : INFINITY; /* 2^59 / kv_max */
  for (size_t r = 0; r < rows; r++)
    if (!(q_abs_sum[r] <= limit)) return l;
  return l_kept;
}

/* ---- row kernels, one set per ISA (floatops__<isa>.c) ----------------------
 * attention: one head, query rows [i0, i1) of M (fixq_attention_f32's formula,
 * strides in floats, the output rows so apart); l_kept: as fixq__att_keys. */
typedef struct {
  void (*layer_norm)(size_t rows, size_t n, const float *x, const float *w, const float *b, float eps, float *y);
  void (*softmax)(size_t rows, size_t n, const float *x, float *y);
  void (*gelu)(size_t rows, size_t cols, const float *x, size_t ldx, fixq_gelu_form form, float *y, size_t ldy);
  void (*attention)(size_t i0, size_t i1, size_t l, size_t l_kept, size_t d, const float *q, ptrdiff_t sq,
                    const float *k, ptrdiff_t sk, const float *v, ptrdiff_t sv, float scale, const float *bias,
                    float *o, size_t so, float *work);
} fixq__float_kernels;

/* ---- dynamic linear kernels (dynlinear__<isa>.c) ----------------------------
 * finite_range: lo = min(x), hi = max(x) over n >= 1 values; 0 when one is NaN
 * or infinite.  quantize_u8: q[i] = clamp(round_half_even(x[i] / scale) + zp,
 * 0, 255).  quantize_rows: for each of `rows` rows of k >= 1 values (x[r * k
 * + i]), its scale and zero point by fixq__dyn_qparams over its finite_range
 * into row[r] and its values by quantize_u8 into q[r * k + i]; 0 when a row
 * is not finite or its scale is not (then row and q are partly written).
 * epilogue: for rows r < rows, columns j < cols,
 *   y[r * ldy + j] = (float)(int32)(acc[r * lda + j] - row[r].zp * col_sum[j]) * (row[r].scale * w_scale[j])
 *                    + bias[j] (+ res[r * ldy + j] where res is not NULL; res may be y)
 * (the subtraction modulo 2^32, each float operation rounded once: no FMA). */
/* The AVX-512 quantize_u8 multiplies by r = 1 / scale (rounded) instead of
 * dividing where that gives the integer of the rounded quotient q = x / scale.
 * With scale in [FLT_MIN, 2^125], r is normal and v = x * r (rounded) lies
 * within |x / scale| 2^-22.9 of x / scale (plus 2^-149 where v is subnormal),
 * q within 2^-16 of it while |x / scale| < 2^9.  So where |v| < 299 and v
 * lies FIXQ__DYN_NEAR_TIE = 2^-12 or more from every half-integer, v and q
 * round to one integer; where |v| >= 299, v and q lie past the same clamp
 * bound (|bound| <= 255).  A vector with a lane nearer a tie divides. */
#define FIXQ__DYN_RECIPROCAL_OK(scale) ((scale) >= FLT_MIN && (scale) <= 0x1p125f)
#define FIXQ__DYN_NEAR_TIE 0x1p-12f

typedef struct {
  float scale; /* of a row of x quantized to uint8 */
  int32_t zp;
} fixq__dyn_row;
/* onnxruntime DynamicQuantizeLinear (GetQuantizationParameter) for uint8 over
 * the finite range [lo, hi]: the range widened to hold 0, scale = (hi - lo) /
 * 255 (1 where that is 0), zero point = round_half_even(clamp(0 - lo / scale,
 * 0, 255)), each operation in float32.  0 when the scale is not finite
 * (hi - lo overflows float32).  fixq.targets.onnxruntime.dynamic_qparams. */
int fixq__dyn_qparams(float lo, float hi, float *scale, int32_t *zp);
typedef struct {
  int (*finite_range)(size_t n, const float *x, float *lo, float *hi);
  void (*quantize_u8)(size_t n, const float *x, float scale, int32_t zp, uint8_t *q);
  int (*quantize_rows)(size_t rows, size_t k, const float *x, fixq__dyn_row *row, uint8_t *q);
  void (*epilogue)(size_t rows, size_t cols, const int32_t *acc, size_t lda, const fixq__dyn_row *row,
                   const int32_t *col_sum, const float *w_scale, const float *bias, const float *res, float *y,
                   size_t ldy);
} fixq__dyn_kernels;

extern const fixq__float_kernels fixq__float_kernels__scalar;
extern const fixq__dyn_kernels fixq__dyn_kernels__scalar;
extern const fixq__float_kernels *const fixq__float_table[FIXQ_ISA_COUNT]; /* by fixq_isa (floatops.c) */
#ifdef FIXQ_COMPILED_AVX2
extern const fixq__float_kernels fixq__float_kernels__avx2;
extern const fixq__dyn_kernels fixq__dyn_kernels__avx2;
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
extern const fixq__float_kernels fixq__float_kernels__avx512vnni;
extern const fixq__dyn_kernels fixq__dyn_kernels__avx512vnni;
#endif

/* One full tile (FIXQ__VNNI_MR rows x np panels, the GEMM kernel's records and
 * panels) of a dynamic linear straight to float: the epilogue above on the
 * exact sum_k a b' (weights' zero points 0), for columns j < cols (cols > (np
 * - 1) * FIXQ_GEMM_NR); row, col_sum, w_scale, bias, res (or NULL) and y from
 * the tile's first row and column. */
typedef void (*fixq__qgemm_f32_tile)(size_t np, size_t kq, const uint8_t *a, const int8_t *b, size_t cols,
                                     const fixq__dyn_row *row, const int32_t *col_sum, const float *w_scale,
                                     const float *bias, const float *res, float *y, size_t ldy);
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_qgemm_u8_f32__avx512vnni(size_t np, size_t kq, const uint8_t *a, const int8_t *b, size_t cols,
                                   const fixq__dyn_row *row, const int32_t *col_sum, const float *w_scale,
                                   const float *bias, const float *res, float *y, size_t ldy);
#endif

/* The GEMM driver (qgemm.c) with a caller's uint8 A (zero point 0) and output
 * stage: acc[m][n] = sum_k a[m][k] (b[k][n] - b_zp[n]), exact.  For every block
 * of rows, from any of `threads` threads, rows(ctx, m0, rows, a, info) writes
 * rows [m0, m0 + rows) of A (a[r * k + i], rows at most the tile's, so that
 * they are packed while in L1) and info_bytes of its own per row at info
 * (8-byte aligned; info_bytes a multiple of the alignment the caller needs);
 * store(ctx, info, acc, lda_acc, m0, rows, n0, cols) gets each block of
 * accumulators (acc[r * lda_acc + j] for row m0 + r, column n0 + j) with
 * those rows' info (row m0 + r's at info + r * info_bytes), every block once.
 * A row may be made more than once (by parts that split the columns), each
 * time into its own info.  With `out`, the driver may write whole tiles of
 * y itself with the epilogue of fixq__dyn_kernels (out's arrays from column
 * 0, y and res from row 0) where its ISA has a kernel for it and the weights'
 * zero points are all 0, then out->act (when not NULL) over each of the
 * tile's rows; store() gets the other blocks.  The first status other than FIXQ_OK from rows()
 * is the call's; FIXQ_ERR_OVERFLOW unless 255 * col_abs_max fits int32. */
typedef struct {
  const int32_t *col_sum; /* the packed weights' */
  const float *w_scale, *bias;
  const float *res; /* or NULL */
  float *y;
  size_t ldy;
  /* a fixq__float_kernels' gelu, or NULL */
  void (*act)(size_t rows, size_t cols, const float *x, size_t ldx, fixq_gelu_form form, float *y, size_t ldy);
  fixq_gelu_form form;
} fixq__dyn_out;
typedef struct {
  fixq_status (*rows)(const void *ctx, size_t m0, size_t rows, uint8_t *a, void *info);
  void (*store)(const void *ctx, const void *info, const int32_t *acc, size_t lda_acc, size_t m0, size_t rows,
                size_t n0, size_t cols);
  const void *ctx;
  size_t info_bytes;
  const fixq__dyn_out *out; /* or NULL; given, info is a fixq__dyn_row per row */
} fixq__qgemm_source;
fixq_status fixq__qgemm_u8_source(size_t m, const fixq_packed_b *b, const fixq__qgemm_source *src, int threads);

#endif /* FIXQ_FLOATOPS_H_ */
