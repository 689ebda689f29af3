/*
 * fixq: exact int8 inference kernels.  Public C API.
 *
 * Every entry point is reentrant, never aborts and never prints: it returns a
 * fixq_status.  Integer results are defined by the scalar code (the contract,
 * docs/arithmetic.md); SIMD paths are bit-identical to it.  Call fixq_init()
 * once before anything else (the Python module does it at import).
 *
 * State: the library keeps two things.  The selected CPU path, written by
 * fixq_init and fixq_select_isa (a test hook), neither of which may race with
 * kernel calls.  And the worker pool behind fixq_qgemm's threads > 1, safe to
 * use from any number of threads: workers started on first use and kept for
 * the life of the process; one call at a time runs on them (a mutex, taken
 * with trylock), and a call that finds them busy runs on threads of its own,
 * so concurrent calls never wait for each other; a fork() child starts with
 * no workers and makes new ones.  Nothing else is written: any thread may
 * call any entry point, on its own arguments.
 *
 * Sizes: no object is larger than PTRDIFF_MAX bytes, so every size argument,
 * and every product or sum of them an entry point forms (element and byte
 * counts, padded sizes, strided reaches), must be at most PTRDIFF_MAX; else
 * the call returns FIXQ_ERR_INVALID_ARGUMENT before it reads or writes
 * anything.  A size that came from a negative int ((size_t)-1) is refused so,
 * even where another size is 0.
 *
 * This header is C89 and C++ clean; docs/embedding.md shows how to link the
 * static library (`make lib`) or call an installed fixq through its capsule
 * (fixq_capsule.h).
 */
#ifndef FIXQ_FIXQ_H_
#define FIXQ_FIXQ_H_

#include <stddef.h>
#include <stdint.h>

#define FIXQ_VERSION_MAJOR 0
#define FIXQ_VERSION_MINOR 1
#define FIXQ_VERSION_PATCH 0
#define FIXQ_VERSION_STRING "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  FIXQ_OK = 0,
  FIXQ_ERR_INVALID_ARGUMENT = 1, /* a size, pointer or parameter out of range */
  FIXQ_ERR_OVERFLOW = 2,         /* int32 accumulation could overflow */
  FIXQ_ERR_NAN = 3,              /* a NaN reached quantization */
  FIXQ_ERR_OUT_OF_MEMORY = 4,
  FIXQ_ERR_UNSUPPORTED = 5       /* ISA not available here, or a ratio fixed point cannot represent */
} fixq_status;

/* A short English description of `status` ("invalid argument", ...); never NULL. */
const char *fixq_status_string(fixq_status status);

/* Two families, each level implying the ones before it in its family (and
 * scalar everywhere).  x86-64: AVX512VNNI = AVX-512 F/BW/DQ/VL + VNNI (Ice
 * Lake, Sapphire Rapids, Zen 4 and later).  aarch64: NEON (every core),
 * DOTPROD = sdot (Armv8.2-A DotProd: Cortex-A55/A76, Neoverse N1, Apple M1),
 * I8MM = smmla (Armv8.6-A Int8 matrix multiply: Cortex-A710/X2, Neoverse V1/N2,
 * Apple M2). */
typedef enum {
  FIXQ_ISA_SCALAR = 0,
  FIXQ_ISA_AVX2 = 1,
  FIXQ_ISA_AVX512VNNI = 2,
  FIXQ_ISA_NEON = 3,
  FIXQ_ISA_DOTPROD = 4,
  FIXQ_ISA_I8MM = 5,
  FIXQ_ISA_COUNT = 6
} fixq_isa;

/* How a real multiplier is applied (docs/arithmetic.md). */
typedef enum {
  FIXQ_ROUND_DOUBLE = 0, /* gemmlowp SRDHM then RoundingDivideByPOT (TFLite default) */
  FIXQ_ROUND_SINGLE = 1, /* (x*M + 2^(30-shift)) >> (31-shift), ties toward +inf */
  FIXQ_ROUND_FP32 = 2    /* (float)x * scale, round half to even (XNNPACK, ORT, fbgemm) */
} fixq_rounding;

typedef enum { FIXQ_INT8 = 0, FIXQ_UINT8 = 1, FIXQ_INT16 = 2, FIXQ_INT32 = 3 } fixq_dtype;

/* ---- CPU dispatch --------------------------------------------------------- */
/* Reads FIXQ_ISA (scalar|avx2|avx512vnni|neon|dotprod|i8mm; unset = best
 * supported).  Idempotent. */
fixq_status fixq_init(void);
fixq_isa fixq_selected_isa(void);
int fixq_isa_compiled(fixq_isa isa);
int fixq_isa_supported(fixq_isa isa); /* compiled and this CPU/OS can run it */
const char *fixq_isa_name(fixq_isa isa);
/* Switch the selected path (tests and benchmarks).  Not thread-safe with
 * concurrent kernel calls. */
fixq_status fixq_select_isa(fixq_isa isa);

/* ---- fixed-point primitives (scalar, the contract) ------------------------- */
int32_t fixq_srdhm(int32_t a, int32_t b);                    /* SaturatingRoundingDoublingHighMul */
int32_t fixq_rounding_divide_by_pot(int32_t x, int exponent); /* 0 <= exponent <= 31 */
/* TFLite QuantizeMultiplier: real >= 0, finite.  real ~ m * 2^(shift-31).
 * Reals below 2^-32 flush to (0, 0), but those in [2^-32 - 2^-64, 2^-32),
 * which round up to (2^30, -31). */
fixq_status fixq_quantize_multiplier(double real, int32_t *multiplier, int *shift);
/* rounding DOUBLE or SINGLE; 0 <= m <= INT32_MAX, -31 <= shift <= 30. */
int32_t fixq_multiply_by_quantized_multiplier(int32_t x, int32_t m, int shift, fixq_rounding rounding);

/* ---- requantization -------------------------------------------------------
 * A tensor is viewed as [rows][channels][inner]; per-channel parameters are
 * arrays of length `channels` (use channels == 1 for per-tensor).
 */
typedef struct {
  fixq_rounding rounding;
  const int32_t *multiplier; /* DOUBLE/SINGLE: [channels], 0..INT32_MAX */
  const int32_t *shift;      /* DOUBLE/SINGLE: [channels], -31..30 */
  const float *scale;        /* FP32: [channels], finite, > 0 */
  const int32_t *zero_point; /* [channels], inside the output dtype (0 for int32 output); it is
                                added before the clamp, so it may lie outside [qmin, qmax] */
  int32_t qmin, qmax;        /* clamp, inside the output dtype */
} fixq_requant;

/* int32 -> int8/uint8/int16/int32: multiplier, then zero point, then clamp. */
fixq_status fixq_requantize_s32(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                size_t channels, size_t inner, const fixq_requant *p);
/* float32 -> int8/uint8/int16: round_half_even(x / scale) + zero_point, saturated to
 * [qmin, qmax].  Returns FIXQ_ERR_NAN (output unspecified) when x holds a NaN. */
fixq_status fixq_quantize_f32(const float *x, void *y, fixq_dtype y_dtype, size_t rows,
                              size_t channels, size_t inner, const float *scale,
                              const int32_t *zero_point, int32_t qmin, int32_t qmax);
/* int8/uint8/int16/int32 -> float32: (float)(q - zero_point) * scale. */
fixq_status fixq_dequantize(const void *q, fixq_dtype q_dtype, float *y, size_t rows, size_t channels,
                            size_t inner, const float *scale, const int32_t *zero_point);

/* ---- matmul --------------------------------------------------------------
 * y[m][n] = out_stage(acc[m][n]),
 * acc[m][n] = sum_k (a[m][k] - a_zp) * (b[k][n] - b_zp[n]) + bias[n]   (exact int32)
 * with a, b int8 or uint8.  B is packed once (fixq_pack_b) into fixq_packed_b;
 * the output stage is fixq_requantize_s32's (or none: int32 output).
 *
 * Packed layout.  uint8 values are stored as int8 v ^ 0x80 (= v - 128) with
 * their zero point shifted the same way, so the packed values b' and zero
 * points zp' are signed and (b' - zp') == (b - zp).  K is padded with zeros to
 * k_padded = round_up(k, 4), N to n_padded = round_up(n, FIXQ_GEMM_NR).
 * panels: n_padded / FIXQ_GEMM_NR panels, one after the other; inside a panel,
 *   k_padded / 4 groups of FIXQ_GEMM_NR * 4 bytes; inside a group, column j of
 *   the panel holds its 4 consecutive k values:
 *   panels[(p * k_padded / 4 + q) * 4 * NR + 4 * j + t] = b'[4 q + t][p * NR + j]
 * zero_point[n_padded]: zp'[n] (0 in the padding)
 * col_sum[n_padded]:    sum_k (b'[k][n] - zp'[n]) (0 in the padding)
 * col_abs[n_padded]:    sum_k |b'[k][n] - zp'[n]| (bounds acc, see fixq_qgemm)
 */
#define FIXQ_GEMM_NR 16

typedef enum {
  FIXQ_GEMM_S8 = 0, /* all b' in [-127, 127]: |a'| * sign(a')b' pairs cannot saturate int16 */
  FIXQ_GEMM_S16 = 1 /* some b' == -128: operands widened to int16 */
} fixq_gemm_kernel;

typedef struct {
  size_t k, n;                 /* logical B is [k][n] */
  size_t k_padded, n_padded;
  fixq_dtype dtype;            /* FIXQ_INT8 or FIXQ_UINT8: what b was */
  fixq_gemm_kernel kernel;     /* chosen by fixq_pack_b from the packed values */
  int zero_point_nonzero;      /* some zp'[n] != 0: the kernel needs A's row sums */
  int64_t col_abs_max;         /* max over n of col_abs[n] */
  int8_t *panels;              /* [n_padded * k_padded], caller-allocated */
  int32_t *zero_point;         /* [n_padded], caller-allocated */
  int32_t *col_sum;            /* [n_padded], caller-allocated */
  int64_t *col_abs;            /* [n_padded], caller-allocated */
} fixq_packed_b;

/* Fills k, n, k_padded, n_padded (sizes of the buffers to allocate).  Where
 * those buffers could not exist (k or n too large: see Sizes above),
 * k_padded = n_padded = 0, and fixq_pack_b, fixq_packed_b_finish and
 * fixq_qgemm return FIXQ_ERR_INVALID_ARGUMENT for pb. */
void fixq_packed_b_init(fixq_packed_b *pb, size_t k, size_t n);
/* Packs B: element (k, n) is at b[k * stride_k + n * stride_n] (strides in
 * elements; stride_k = n, stride_n = 1 for a C-contiguous [K][N] matmul
 * operand, stride_k = 1, stride_n = k for a Linear weight [N][K]);
 * (k - 1) * |stride_k| + (n - 1) * |stride_n| at most PTRDIFF_MAX.
 * zero_point: zp_count values (1 = per tensor, or n), inside b_dtype's range.
 * pb: from fixq_packed_b_init, with its four buffers set. */
fixq_status fixq_pack_b(const void *b, fixq_dtype b_dtype, ptrdiff_t stride_k, ptrdiff_t stride_n,
                        const int32_t *zero_point, size_t zp_count, fixq_packed_b *pb);
/* Recomputes every derived field (kernel, zero_point_nonzero, col_sum,
 * col_abs, col_abs_max) of pb from its panels and zero_point (e.g. after
 * loading them from a file); FIXQ_ERR_INVALID_ARGUMENT if the padding is not zero. */
fixq_status fixq_packed_b_finish(fixq_packed_b *pb);

/* y[m][n] at y + (m * ldy + n) * size(y_dtype); a[m][k] at a + m * lda + k
 * (m * lda and m * ldy * size(y_dtype) at most PTRDIFF_MAX).
 * bias: NULL or [n].  p: the output stage with p_channels == 1 (per tensor) or
 * b->n (per column), y_dtype int8/uint8/int16/int32 as in fixq_requantize_s32;
 * p == NULL returns acc itself (y_dtype FIXQ_INT32, ONNX MatMulInteger).
 * Before any work: FIXQ_ERR_OVERFLOW unless every acc, bounded by
 * bias[n] +- max|a - a_zp| * col_abs[n], fits in int32.  Inside, sums wrap
 * modulo 2^32, so the result is exact.  threads >= 1 splits the work over
 * that many threads: the calling one and threads - 1 workers of the kept pool
 * (State, above; fewer when the product is small). */
fixq_status fixq_qgemm(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                       const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                       size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads);

/* ---- elementwise --------------------------------------------------------- */
/* Quantized int8/uint8 add and multiply (TFLite int8 ADD / MUL, or float32),
 * docs/arithmetic.md "Elementwise add and mul".  Fill a fixq_eltwise once with
 * fixq_eltwise_init (it derives the multipliers from the scales), then call
 * fixq_eltwise_nd any number of times, from any number of threads. */
typedef enum { FIXQ_OP_ADD = 0, FIXQ_OP_MUL = 1 } fixq_eltwise_op;

typedef struct {
  fixq_eltwise_op op;
  fixq_rounding rounding;
  fixq_dtype a_dtype, b_dtype, y_dtype; /* FIXQ_INT8 or FIXQ_UINT8 */
  int32_t a_zero_point, b_zero_point, y_zero_point;
  int32_t qmin, qmax;                   /* output clamp (fused ReLU/ReLU6) */
  float a_scale, b_scale, y_scale;      /* the scales (FP32 rounding uses them directly) */
  /* DOUBLE/SINGLE: ADD applies a_/b_ multipliers to (x - zp) << 20 and the
   * y_ multiplier to their sum; MUL applies the y_ multiplier to
   * (a - a_zp) * (b - b_zp).  TFLite QuantizeMultiplier of reals derived in
   * double from the float scales. */
  int32_t a_multiplier, a_shift, b_multiplier, b_shift, y_multiplier, y_shift;
  /* Plan for SIMD paths, found by init (lin_k == 0: none) and checked
   * against the contract on all 65536 input pairs, the clamp below in the
   * int8 domain (uint8 values minus 128):
   *   ADD: every output equals clamp((n + (n < lin_t ? lin_neg : 0)) >> lin_k),
   *        n = a'*lin_ra + b'*lin_rb + lin_u (a', b' int8-domain inputs),
   *        lin_neg <= 0 (double rounding treats values below zero differently);
   *        lin_neg == 1 instead rounds exact ties to even (fp32):
   *        clamp((n - ((n & (2^(lin_k+1) - 1)) == lin_t)) >> lin_k);
   *   MUL: clamp(floor(fmaf((float)P, alpha, P < lin_t ? gneg : g))), P = (a -
   *        a_zero_point) * (b - b_zero_point), with the float32 bits of alpha,
   *        g, gneg in lin_ra, lin_u, lin_neg (one rounding, to nearest even),
   *        lin_k = 1, lin_rb = 0; lin_k = 2: the same with (float)(P + 12582912)
   *        for (float)P (its bits are 0x4B400000 + P: no conversion);
   *   MUL with lin_rb < 0 (int8 requantize, b the constant 1): as ADD with
   *        n = a'*lin_ra + lin_u, the tie side a' <= lin_t instead of n < lin_t. */
  int32_t lin_ra, lin_rb, lin_u, lin_k, lin_t, lin_neg;
} fixq_eltwise;

/* Validates dtypes, scales (finite, > 0), zero points and the clamp, and
 * derives the multipliers and the SIMD plan (about 0.5-2 ms, up to ~12 ms:
 * init once per parameter set).  FIXQ_ERR_INVALID_ARGUMENT for bad arguments;
 * FIXQ_ERR_UNSUPPORTED when a fixed-point multiplier cannot represent its real
 * ratio (quantize_multiplier flushes it to zero, or needs shift > 30): the
 * struct is still filled so the caller can report which; use FP32 there. */
fixq_status fixq_eltwise_init(fixq_eltwise *p, fixq_eltwise_op op, fixq_rounding rounding,
                              fixq_dtype a_dtype, float a_scale, int32_t a_zero_point,
                              fixq_dtype b_dtype, float b_scale, int32_t b_zero_point,
                              fixq_dtype y_dtype, float y_scale, int32_t y_zero_point,
                              int32_t qmin, int32_t qmax);

/* y = op(a, b) over an ndim-dimensional broadcast, 1 <= ndim <= 16 (else
 * FIXQ_ERR_INVALID_ARGUMENT): shape[d] elements along dimension d; strides
 * are in elements (0 broadcasts).  The innermost a/b strides must be 0 or 1
 * and y's innermost stride 1; per operand, sum_d (shape[d] - 1) * |stride[d]|
 * at most PTRDIFF_MAX.  y may be a or b itself (same pointer and strides);
 * any other overlap is undefined. */
fixq_status fixq_eltwise_nd(const fixq_eltwise *p, size_t ndim, const size_t *shape,
                            const void *a, const ptrdiff_t *a_strides, const void *b,
                            const ptrdiff_t *b_strides, void *y, const ptrdiff_t *y_strides);

/* int8/uint8 -> int8/uint8 requantization, per tensor: the same result as
 * fixq_requantize_s32 on (x - x_zero_point); channels == 1 in p.  Runs on
 * the elementwise kernels (planned over the 256 input values when n >= 1024). */
fixq_status fixq_requantize_q8(const void *x, fixq_dtype x_dtype, int32_t x_zero_point, void *y,
                               fixq_dtype y_dtype, size_t n, const fixq_requant *p);

/* ---- low-bit weights -----------------------------------------------------
 * fp16 weights: w[n][k] as IEEE binary16 bits, packed by fixq_f16_pack into
 * ceil(n/16) panels; panel p is [k][16] and holds columns 16p..16p+15 (zero
 * padded).  fixq_f16_linear computes y[m][n] = sum_k x[m][k] * w[n][k]
 * (+ bias[n]) in fp32; the summation order is fixed (for each block of 256
 * values of k, an fmaf chain from +0.0f; blocks added in order; then the bias),
 * so every CPU path returns the same bits. */
size_t fixq_f16_packed_size(size_t n, size_t k); /* in uint16_t elements; 0 if too large */
fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed);
/* x [m][k], y [m][n] (row-major, contiguous); bias [n] or NULL; k >= 1. */
fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                            const float *bias, float *y);
/* XOR-popcount GEMM on +-1 vectors stored as sign bits (bit 1 = -1; element i
 * of a row is bit i % 8 of byte i / 8; rows of ceil(k / 8) bytes).
 * fixq_bgemm_pack turns rows of bits into the kernel's layout: per 256-bit
 * chunk, the 32 low nibbles then the 32 high nibbles, bits >= k cleared
 * (fixq_bgemm_packed_size(rows, k) bytes).  fixq_bgemm on two packed operands,
 * a [m] rows and b [n] rows of the same k: y[i][j] = k - 2 * popcount(a[i] XOR
 * b[j]), the dot product of the +-1 vectors.  1 <= k <= 2^31 - 1. */
size_t fixq_bgemm_packed_size(size_t rows, size_t k); /* 0 if k or the size is out of range */
fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed);
fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k, int32_t *y);


#ifdef __cplusplus
}
#endif
#endif /* FIXQ_FIXQ_H_ */
