/* The C plan's direct convolution (engine_conv.c): a GEMM step whose rows of A would be im2col patches
 * (a kernel larger than 1x1, a stride or padding; one group, weights without zero points, the int32 bound
 * proven for the step) computed from a padded copy of each sample where the patches lie, with no im2col and
 * no packing of A, then handed block by block to the step's own output stage (fixq__qgemm_store).
 *
 * Each output pixel's patch is `segs` runs of the padded image: one run of kw * C bytes per kernel row
 * (dw == 1), else one run of C bytes per tap, at off[s] from the pixel's first tap; the weights are packed
 * once, when the plan is built, in two forms every path can read (the CPU path may change between runs):
 *   w8:  [segs][kq][op][4] int8, w[o][k] for k = 4q..4q+3 of the run (0 past the run and past O): the
 *        vpdpbusd form, read with the image as uint8 x' (x for a uint8 plan, x ^ 0x80 = x + 128 for int8)
 *        and col[o] = bias[o] - zp' * sum_k w[o][k] (mod 2^32), zp' the input zero point in x' terms;
 *   w16: [segs][2 kq][op][2] int16, the pairs of w8: the vpmaddwd form, read with the image as int16 x - zp.
 * acc = col + sum x' w = bias + sum (x - zp) w modulo 2^32, and the step's bound makes it the exact acc of
 * the GEMM (the padding, x' = zp' or x - zp = 0, adds 0 as im2col's zp does). */
#ifndef FIXQ_ENGINE_CONV_H_
#define FIXQ_ENGINE_CONV_H_

#include "fixq_engine.h"
#include "fixq_internal.h"

typedef struct fixq_eng_conv {
  size_t segs, run, kq; /* runs a patch, bytes a run, 4-byte groups a run: (run + 3) / 4 */
  size_t op;            /* output channels rounded up to 16 */
  size_t oc, o8;        /* output channels O, and its blocks of 8: (O + 7) / 8 */
  /* The output stage runs on rows of L = lcm(O, 16) accumulators, `period` = L / O pixels a row, with the
   * step's per-channel parameters repeated to L channels here (so no SIMD lane idles for O < 16); period 0:
   * pixel by pixel (L > 128, or a stage of one channel, which takes any row) */
  size_t period;
  fixq_requant rq;
  fixq_eng_target target;
  const size_t *off;    /* [segs]: elements of the padded image from the pixel's first tap */
  const size_t *off4;   /* [segs kq]: off[g] + 4 q, group q of run g in the uint8 image (bytes) */
  const size_t *off2;   /* [segs 2 kq]: 2 (off[g] + 2 t), pair t of run g in the int16 image (bytes) */
  const int8_t *w8;
  const int16_t *w16;
  const int32_t *col;  /* [op]: the uint8 image's start */
  const int32_t *bias; /* [op]: the int16 image's (the step's bias, 0 past O) */
} fixq_eng_conv;

/* One tile of `rows` <= FIXQ_ENG_CONV_MR output pixels (a path's kernel): acc[r * O + o] for o < O and r < rows
 * (rows up to the tile's end or the next multiple of 8 may be written too), the patch of pixel r at img + pix[r]
 * (elements: uint8 x' or int16 x - zp, per the path); pix has FIXQ_ENG_CONV_MR entries, those past rows
 * repeating a real pixel. */
typedef void (*fixq_eng_conv_tile_fn)(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows,
                                      int32_t *acc);
#define FIXQ_ENG_CONV_MR 16
void fixq_eng_conv_tile__scalar(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows,
                                int32_t *acc);
#ifdef FIXQ_COMPILED_AVX2
void fixq_eng_conv_tile__avx2(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows, int32_t *acc);
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq_eng_conv_tile__avx512vnni(const fixq_eng_conv *cv, const void *img, const size_t *pix, size_t rows,
                                    int32_t *acc);
#endif

/* Bytes fixq_eng_conv_pack needs for step `step` of a checked plan whose acc_fits is set, or 0 where the step
 * is not a direct convolution (then it stays an im2col GEMM). */
size_t fixq_eng_conv_bytes(const fixq_eng_plan *plan, size_t step);
/* The step's packed form in mem (fixq_eng_conv_bytes of it, zeroed, 8-byte aligned) */
const fixq_eng_conv *fixq_eng_conv_pack(const fixq_eng_plan *plan, size_t step, void *mem);
/* Scratch bytes of fixq__eng_conv for one sample of step s (0 where it has no conv) */
size_t fixq__eng_conv_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s);
/* The step's output stage (engine.c) on rows x cols accumulators acc[r * cols + j] of channel j (rq per channel,
 * or t's channel j), or of its one channel (rq per tensor, t of one channel), into y[r * cols + j] */
typedef void (*fixq_eng_conv_out)(const fixq_eng_plan *plan, const fixq_requant *rq, int per_channel,
                                  const fixq_eng_target *t, size_t rows, size_t cols, const int32_t *acc, uint8_t *y);
/* Runs step s (s->conv set) on `batch` samples of x into y, each block of accumulators through out, on one
 * thread; 0 where the GEMM does better (the caller runs it): the CPU path has no direct tile, a linear's batch
 * of rows, or `threads` and work enough for two of them. */
int fixq__eng_conv(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x, uint8_t *y,
                   uint8_t *scratch, int threads, fixq_eng_conv_out out);

#endif
