/* The C plan's 1x1 convolution of few output channels with XNNPACK's fp32 output stage
 * (engine_pw__avx512vnni.c): the rows of x read in place by the GEMM's direct tile into a block of int32
 * accumulators laid out as y (pixel after pixel, N channels each, no padding to 16 columns), then the output
 * stage over that block 16 accumulators a vector whatever N is (the channel parameters repeated so that any
 * 16 consecutive channels of the block are one unaligned load). */
#ifndef FIXQ_ENGINE_PW_H_
#define FIXQ_ENGINE_PW_H_

#include "fixq_engine.h"
#include "fixq_internal.h"

#define FIXQ_ENG_PW_MAX_N 48 /* output channels: the direct tile's 3 panels cover every column at once */

/* y[m][n] = requant_fp32(sum_k (x[m][k] - a_zp) * b[k][n] + bias[n]) for rq (FIXQ_ROUND_FP32, per tensor when
 * rq_channels == 1), x and y in dt (int8/uint8) rows of k and n bytes; b packed without zero points, k <=
 * FIXQ__DIRECT_K_MAX, n <= FIXQ_ENG_PW_MAX_N, the accumulators proven inside int32 */
typedef void (*fixq_eng_pw_fn)(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                               const int32_t *bias, const fixq_requant *rq, size_t rq_channels, uint8_t *y);

/* Runs GEMM step s, a 1x1 convolution of stride 1 without padding (or a linear) on m pixels of x into y, where
 * its path has the kernel and the step fits it: one group, XNNPACK's fp32 output stage, the accumulators
 * proven inside int32, B without zero points, k and n within the kernel's, one thread's work; 0 where it does
 * not (the caller runs the GEMM). */
int fixq__eng_pw(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t m, const uint8_t *x, uint8_t *y,
                 int threads);

#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_eng_pw_fp32__avx512vnni(size_t m, const uint8_t *x, fixq_dtype dt, int32_t a_zp, const fixq_packed_b *b,
                                  const int32_t *bias, const fixq_requant *rq, size_t rq_channels, uint8_t *y);
#endif

#endif
