/* The C plan's 1x1 convolution of few output channels with XNNPACK's fp32 output stage
 * (engine_pw__avx2.c, engine_pw__avx512vnni.c): the rows of x read in place by a direct tile into a block of
 * int32 accumulators laid out as y (pixel after pixel, N channels each, no padding to the vector width), then
 * the flat output stage below over that block.
 *
 * The flat fp32 stage: XNNPACK's fp32 requantization over a run of accumulators whose channel at position i is
 * i % N (a block that starts at a pixel), a vector at a time whatever N is (the channel parameters repeated so
 * that the lanes starting at any channel are one unaligned load), in the order of XNNPACK's qs8/qu8 gemm
 * microkernels: (float)acc * scale, min with qmax - zp in float, convert (round half to even), pack to int16
 * with saturation, add zp with saturation, pack to bytes with saturation, max with qmin on the bytes.  It
 * equals fixq__requant_fp32 on every int32: a value below qmin - zp stays below qmin through the saturating
 * steps, and qmax - zp (at most 383) fits int16.  The direct convolution (engine_conv.c) runs its fp32 steps'
 * blocks through it too. */
#ifndef FIXQ_ENGINE_PW_H_
#define FIXQ_ENGINE_PW_H_

#include "fixq_engine.h"
#include "fixq_internal.h"

#define FIXQ_ENG_PW_MAX_N 48   /* output channels of the 1x1 kernel: the direct tile's 3 panels cover every column */
#define FIXQ_ENG_FLAT_MAX_N 64 /* channels of the flat stage (the direct convolution's up to 64) */
#define FIXQ_ENG_FLAT_RUN 64   /* accumulators a step of the widest path's stage (4 vectors of 16) */

typedef struct fixq_eng_flat fixq_eng_flat;
/* The path's stage on `total` accumulators acc[i] of channel i % N into y[i] */
typedef void (*fixq_eng_flat_fn)(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y);

struct fixq_eng_flat {
  size_t n;
  size_t step4;       /* the channel four of the path's vectors further on, less the channel, modulo n */
  fixq_dtype dt;       /* int8 or uint8 */
  int32_t zp, qmin;    /* one zero point (XNNPACK's output zero point is per tensor) */
  float max_less_zp;   /* qmax - zp */
  fixq_eng_flat_fn run;
  /* channel i % n at i, i < n + FIXQ_ENG_FLAT_RUN: a stage step's 4 vectors from channel c read at c + lanes j */
  float scale[FIXQ_ENG_FLAT_MAX_N + FIXQ_ENG_FLAT_RUN];
};

/* c modulo n, for c < 2 n (the flat stage's channel after a step) */
static inline size_t fixq__flat_wrap(size_t c, size_t n) { return c >= n ? c - n : c; }

/* st for rq (FIXQ_ROUND_FP32, per tensor when rq_channels == 1) on n channels of dt on the CPU path; 0 where the
 * path has no flat stage or rq, n or dt is not one it takes, or the zero points differ between channels (the
 * caller runs the requantize kernel). */
int fixq__eng_flat_init(fixq_eng_flat *st, const fixq_requant *rq, size_t rq_channels, size_t n, fixq_dtype dt);

/* y[m][n] = requant_fp32(sum_k (x[m][k] - a_zp) * b[k][n] + bias[n]) for rq (FIXQ_ROUND_FP32, per tensor when
 * rq_channels == 1), x and y in dt (int8/uint8) rows of k and n bytes; b packed without zero points, k <=
 * FIXQ__DIRECT_K_MAX, n <= FIXQ_ENG_PW_MAX_N, the accumulators proven inside int32; st the flat stage of rq */
typedef void (*fixq_eng_pw_fn)(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                               const int32_t *bias, const fixq_eng_flat *st, uint8_t *y);

/* Runs GEMM step s, a 1x1 convolution of stride 1 without padding (or a linear) on m pixels of x into y, where
 * its path has the kernel and the step fits it: one group, XNNPACK's fp32 output stage, the accumulators
 * proven inside int32, B without zero points, k and n within the kernel's, one thread's work; 0 where it does
 * not (the caller runs the GEMM). */
int fixq__eng_pw(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *x, uint8_t *y,
                 int threads);

#ifdef FIXQ_COMPILED_AVX2
void fixq_eng_pw_fp32__avx2(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                            const int32_t *bias, const fixq_eng_flat *st, uint8_t *y);
void fixq_eng_flat__avx2(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y);
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_eng_pw_fp32__avx512vnni(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                                  const int32_t *bias, const fixq_eng_flat *st, uint8_t *y);
void fixq_eng_flat__avx512vnni(const fixq_eng_flat *st, size_t total, const int32_t *acc, uint8_t *y);
#endif

#endif
