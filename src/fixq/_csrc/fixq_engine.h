/*
 * The static int8 model executor (engine.c): a plan of steps over NHWC
 * activation buffers, run in one call per batch (docs/engine.md, section 3).
 * Internal to fixq: fixq.engine builds the plan (src/fixq/_engine.pxi).
 *
 * Tensors are numbered; tensor t holds `batch` samples of h x w x c values
 * (NHWC; a 2-D tensor is 1 x 1 x c) of the plan's activation dtype, except
 * the plan's float input (esize 4, NCHW order).  buffers[t] is the start of
 * tensor t.  Every step reads whole tensors and writes one.
 */
#ifndef FIXQ_ENGINE_H_
#define FIXQ_ENGINE_H_

#include <stddef.h>
#include <stdint.h>

#include "fixq/fixq.h"

typedef enum {
  FIXQ_ENG_QUANTIZE,       /* float NCHW -> q NHWC with scale, zp, in the form `form` */
  FIXQ_ENG_GEMM,           /* linear, conv2d (im2col, groups): fixq_qgemm with rq */
  FIXQ_ENG_DEPTHWISE,      /* groups == C_in, channel multiplier `groups`: direct taps, then rq */
  FIXQ_ENG_ELTWISE,        /* add / mul / sub: fixq_eltwise_nd or a target's form, each operand broadcast
                              (numpy's rules, per sample) to the output's shape; one may be the plan's constant */
  FIXQ_ENG_CONCAT,         /* along internal axis `axis` (1..3), inputs requantized by in_rq */
  FIXQ_ENG_CLAMP,          /* relu / relu6: clamp to [lo, hi] */
  FIXQ_ENG_MAXPOOL,        /* padding counts as lo (qmin) */
  FIXQ_ENG_AVGPOOL,        /* padding counts as zp, or (count_valid) is left out of the count; TFLite rounding */
  FIXQ_ENG_GLOBAL_AVGPOOL, /* over h x w; with rq: sum of (q - zp), then rq; without: TFLite rounding */
  FIXQ_ENG_FLATTEN,        /* NHWC -> NCHW order */
  FIXQ_ENG_LUT,            /* y = table[byte of x]: an elementwise function of one int8 / uint8 value */
  FIXQ_ENG_PAD,            /* ph rows and pw columns before, what y's shape leaves after, filled with zp */
  FIXQ_ENG_REQUANTIZE,     /* one 8-bit quantization to another, in a target's form */
  FIXQ_ENG_SOFTMAX         /* 8-bit softmax over c (each h x w position a row), in a target's form */
} fixq_eng_op;

/* How QUANTIZE rounds x / scale (docs/conformance.md); every product and quotient in float32. */
typedef enum {
  FIXQ_ENG_Q_DIV_EVEN,    /* rne(x / scale) + zp: fixq_quantize_f32, ONNX QuantizeLinear */
  FIXQ_ENG_Q_RECIP_EVEN,  /* rne(x * scale) + zp, scale = 1 / s: TFLite optimized, XNNPACK */
  FIXQ_ENG_Q_DIV_AWAY,    /* round(x / scale) + zp, std::round: TFLite reference AffineQuantize */
  FIXQ_ENG_Q_ZP_DIV_AWAY  /* round(clamp(zp + x / scale, qmin, qmax)): gemmlowp's Quantize */
} fixq_eng_quantize_form;

/* A runtime's arithmetic that fixq's kernels lack (fixq.targets, docs/conformance.md), computed
 * element by element exactly as that runtime does: the epilogue of an int32 GEMM, or an add / mul. */
typedef enum {
  FIXQ_ENG_T_RUY_X86 = 1, /* GEMM: t = ((acc << l) * M + 2^30) >> 31, (t + 2^(r-1)) >> r, l = max(s, 0),
                             r = max(-s, 0), int64 wrapping, ties to +inf (ruy's x86 epilogue) */
  FIXQ_ENG_T_FLOAT64_AWAY, /* GEMM: std::round((double)acc * real[c]) (TFLite reference FULLY_CONNECTED) */
  FIXQ_ENG_T_ORT_ADD,      /* rne(clamp(((float)(a - za) * sa + (float)(b - zb) * sb) / so) + (float)zo) */
  FIXQ_ENG_T_ORT_MUL,      /* rne((float)((a - za)(b - zb)) * scale + (float)zo), saturated */
  FIXQ_ENG_T_XNN_ADD,      /* ((bias + a * ma + b * mb) >> shift) + zo (XNNPACK vadd) */
  FIXQ_ENG_T_XNN_MUL,      /* rne((float)((a - za)(b - zb)) * scale) + zo (XNNPACK vmul) */
  FIXQ_ENG_T_TFLITE_SUB,   /* MBQM(MBQM((a - za) << 20, M0, s0) - MBQM((b - zb) << 20, M1, s1), M2, s2) + zo
                              (TFLite SubElementwise, double rounding; multiplier / shift hold 3) */
  FIXQ_ENG_T_TFLITE_MEAN,  /* GLOBAL_AVGPOOL: MBQM(sum of q, M, s) + bias, the first `split` channels in the
                              NEON form (TFLite optimized Mean: ties to +inf), the rest double rounding */
  FIXQ_ENG_T_XNN_MEAN,     /* GLOBAL_AVGPOOL: rne((float)(sum of q) * scale + offset) (XNNPACK mean) */
  FIXQ_ENG_T_TFLITE_REQUANT, /* REQUANTIZE: MBQM(q - a_zp, M, s) + zo, the first `split` values of each
                              sample in the NEON form (TFLite Requantize), the rest double rounding */
  FIXQ_ENG_T_XNN_REQUANT,  /* REQUANTIZE: (((q - a_zp) * a_mult + 128) >> 8) + zo (XNNPACK qs8-vcvt) */
  FIXQ_ENG_T_TFLITE_SOFTMAX, /* SOFTMAX: TFLite reference_ops::Softmax, gemmlowp fixed point: (max - q) << shift
                              scaled by multiplier into Q5.26, differences below diff_min give lo */
  FIXQ_ENG_T_TFLITE_ADD,   /* SUB's form with the sum (TFLite AddFunc); neon 1: optimized AddElementwiseInt8's NEON
                              loop, 2: AddScalarBroadcast's (fixq.targets.tflite.add_optimized) */
  FIXQ_ENG_T_TFLITE_MUL,   /* MBQM((a - za)(b - zb), M, s) + zo, double rounding (TFLite MulElementwise's scalar
                              loop); neon 1: its NEON loop (ties to +inf, then away; vqmovn) */
  FIXQ_ENG_T_TFLITE_SOFTMAX_LUT /* SOFTMAX: TFLite optimized_ops::Softmax: table[max - q] * (1 / (float32 sum in
                              order * out_scale)), std::round (int8) or (int)(p + 0.5f) (uint8), + zo */
} fixq_eng_target_form;

typedef struct {
  fixq_eng_target_form form;
  const int32_t *multiplier, *shift; /* RUY_X86: per output channel (or one) */
  const double *real;                /* FLOAT64_AWAY: per output channel (or one) */
  size_t channels;                   /* GEMM: 1 or the output channels */
  float a_scale, b_scale, out_scale; /* ORT_ADD */
  float scale;                       /* *_MUL: s_a * s_b / s_out in float32 */
  int32_t a_zp, b_zp, out_zp, lo, hi;
  int64_t a_mult, b_mult, bias;      /* XNN_ADD */
  int32_t shift_bits;                /* XNN_ADD: in 1..31 */
  size_t split;                      /* TFLITE_MEAN: channels, TFLITE_REQUANT: values per sample, in NEON form;
                                        TFLITE_ADD / _MUL with run: the first `split` outputs of each run */
  size_t run;                        /* TFLITE_ADD / _MUL: 0, or each sample's outputs in runs of `run` (a
                                        divisor of its size), each run's first `split` in form `neon` */
  int neon;                          /* TFLITE_ADD / _MUL: 0 (the scalar loop), 1 or 2 (a NEON loop) */
  float offset;                      /* XNN_MEAN: the folded zero point */
  int32_t diff_min;                  /* TFLITE_SOFTMAX */
  const float *table;                /* TFLITE_SOFTMAX_LUT: [256] expf(-s_in * beta * d) */
} fixq_eng_target;

typedef struct {
  size_t h, w, c;
  size_t esize; /* 1, or 4 for the float input */
} fixq_eng_tensor;

typedef struct {
  fixq_eng_op op;
  size_t n_in;
  const int32_t *in; /* tensor indices */
  int32_t out;
  size_t kh, kw, sh, sw, ph, pw, dh, dw; /* conv and pool geometry */
  size_t pb_extra, pr_extra;             /* MAXPOOL, AVGPOOL: padding after (bottom, right) beyond ph, pw
                                            (TFLite's SAME puts the odd one after) */
  int count_valid;                       /* AVGPOOL: divide by the taps inside the input (TFLite) */
  size_t groups;                         /* GEMM: groups; DEPTHWISE: channel multiplier */
  const fixq_packed_b *const *packed;    /* GEMM: one per group */
  const int32_t *bias;                   /* GEMM, DEPTHWISE: [O] */
  const int8_t *taps;                    /* DEPTHWISE: [kh * kw][O] */
  fixq_requant rq;                       /* GEMM, DEPTHWISE, GLOBAL_AVGPOOL: the output stage */
  size_t rq_channels;                    /* 1 (per tensor) or O; 0: GLOBAL_AVGPOOL without rq */
  int32_t zp; /* GEMM, DEPTHWISE, GLOBAL_AVGPOOL: input zero point; AVGPOOL: padding; QUANTIZE */
  int32_t lo, hi;                        /* CLAMP; MAXPOOL: lo pads */
  float scale;                           /* QUANTIZE: the scale (FIXQ_ENG_Q_RECIP_EVEN: its reciprocal) */
  int form;                              /* QUANTIZE: a fixq_eng_quantize_form */
  const fixq_eltwise *eltwise;           /* ELTWISE */
  const void *constant;                  /* ELTWISE: one sample of an operand held by the plan, or NULL */
  fixq_eng_tensor constant_dims;         /* ELTWISE: its shape (esize 1) */
  size_t constant_at;                    /* ELTWISE: which operand (0 or 1) it is; in[0] is the other */
  const fixq_eng_target *target;         /* GEMM, ELTWISE, GLOBAL_AVGPOOL: a runtime's arithmetic instead of
                                            rq / eltwise; REQUANTIZE: its form */
  size_t axis;                           /* CONCAT */
  const int32_t *in_zp;                  /* CONCAT: per input */
  const fixq_requant *in_rq;             /* CONCAT: per input; zero_point NULL: copied as is */
  const uint8_t *table;                  /* LUT: [256] output bytes, indexed by the input's byte */
  int acc_fits; /* GEMM: fixq_eng_gemm_fits of the step, set after fixq_eng_check (0: every run proves the
                   int32 bound, and fails with FIXQ_ERR_OVERFLOW where it does not hold) */
  const struct fixq_eng_conv *conv; /* GEMM: its direct convolution (engine_conv.h), set after acc_fits, or NULL */
} fixq_eng_step;

typedef struct {
  fixq_dtype dtype; /* FIXQ_INT8 or FIXQ_UINT8 */
  size_t n_tensors;
  const fixq_eng_tensor *tensors;
  size_t n_steps;
  const fixq_eng_step *steps;
} fixq_eng_plan;

/* The inner loops, one table per ISA (engine_loops.h) */
typedef struct {
  void (*im2col)(const fixq_eng_step *s, const fixq_eng_tensor *xt, const fixq_eng_tensor *yt, size_t batch,
                 const uint8_t *x, size_t g, uint8_t *cols, uint8_t *img);
  void (*depthwise)(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, int32_t *acc,
                    uint8_t *img);
  void (*clamp)(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t n, const void *x, void *y);
  void (*pool)(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, void *y,
               int32_t *acc);
  void (*global_avgpool)(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x, void *y,
                         int32_t *acc);
} fixq_eng_loops;
extern const fixq_eng_loops fixq_eng_loops__scalar;
#ifdef FIXQ_COMPILED_AVX2
extern const fixq_eng_loops fixq_eng_loops__avx2;
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
extern const fixq_eng_loops fixq_eng_loops__avx512vnni;
#endif
#ifdef FIXQ_COMPILED_NEON
extern const fixq_eng_loops fixq_eng_loops__neon;
#endif

/* A depthwise step with its output stage in registers (engine_dwconv__*.c): the bits of the depthwise loop then
 * fixq_requantize_s32; img: the loop's padded image of y's channels and its slack; triples: 64-byte aligned room
 * for a 3x3's map of tap triples (AVX-512 VNNI) or pairs (AVX2) and its parameters (engine_sizes.h
 * dw_triples_bytes), or NULL */
typedef void (*fixq_eng_depthwise_rq_fn)(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                         const void *x, void *y, uint8_t *img, uint8_t *triples);
#ifdef FIXQ_COMPILED_AVX2
void fixq__eng_depthwise_rq__avx2(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                  void *y, uint8_t *img, uint8_t *triples);
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
void fixq__eng_depthwise_rq__avx512vnni(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                        const void *x, void *y, uint8_t *img, uint8_t *triples);
#endif

/* The MEAN and requantize target forms and PAD (engine_targets.c), run by fixq_eng_run on checked steps */
void fixq__eng_global_avgpool_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch,
                                     const void *x, void *y);
void fixq__eng_requantize_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                                 void *y);
void fixq__eng_softmax_target(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const void *x,
                               void *y);
void fixq__eng_pad(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x, uint8_t *y);

/* Shapes, indices and parameters of every step agree (run never reads or
 * writes outside the tensors); on failure *bad_step is the step. */
fixq_status fixq_eng_check(const fixq_eng_plan *plan, size_t *bad_step);
/* Step `step` of a checked plan is a GEMM whose every int32 accumulator fits (fixq__qgemm_fits of each
 * group's packed B, bias and input zero point), for any input. */
int fixq_eng_gemm_fits(const fixq_eng_plan *plan, size_t step);
/* Bytes of scratch fixq_eng_run needs for `batch` samples. */
size_t fixq_eng_scratch_bytes(const fixq_eng_plan *plan, size_t batch);
/* Runs every step on `batch` samples; on failure *failed_step is the step. */
fixq_status fixq_eng_run(const fixq_eng_plan *plan, size_t batch, void *const *buffers, void *scratch,
                         int threads, size_t *failed_step);
/* How fixq_eng_run_batch reads x, the n samples of the model input */
typedef enum {
  FIXQ_ENG_IN_FLOAT_NCHW, /* float32 in tensor 0's NCHW order, through step 0 (Model.run) */
  FIXQ_ENG_IN_FLOAT_NHWC, /* float32 in NHWC order, through step 0 with no layout change (a .tflite float input) */
  FIXQ_ENG_IN_Q           /* the bytes of step 0's output (NHWC), each XOR in_flip (0x80: uint8 q -> int8 q - 128,
                             exact where the zero points differ by 128 and the scales agree); step 0 not run */
} fixq_eng_in_form;

/* How an output is written */
typedef enum {
  FIXQ_ENG_OUT_RAW,         /* q XOR flip */
  FIXQ_ENG_OUT_FLOAT,       /* (float)(q - zp) * scale: fixq_dequantize, ONNX DequantizeLinear, TFLite's reference
                               and XNNPACK's DEQUANTIZE */
  FIXQ_ENG_OUT_FLOAT_TFLITE /* TFLite's optimized DEQUANTIZE: fixq__eng_dequantize_tflite */
} fixq_eng_out_form;

/* One output: tensor t of each sample, a x b values (a * b = h * w * c), transposed from [a][b] to [b][a]
 * where a > 1 and b > 1 (NHWC -> NCHW: a = h * w, b = c; a flatten's C, H, W features back to TFLite's H, W, C:
 * a = c, b = h * w; as they are: a = h * w * c, b = 1), then written in `form` */
typedef struct {
  int32_t t;
  size_t a, b;
  int form; /* a fixq_eng_out_form */
  uint8_t flip;
  float scale;
  int32_t zp;
} fixq_eng_out;

/* A batch of n samples run in chunks of `chunk` samples by `workers` threads
 * (the calling one and workers - 1 pthreads), each chunk through every step
 * and its outputs emitted; a worker takes the next chunk until none is left,
 * in its own memory: activations at arenas[w] + offsets[t] * chunk (t >= 1;
 * tensor 0 is x), scratch at arenas[w] + scratch_off. */
typedef struct {
  size_t n, chunk;
  const void *x;   /* the n samples, read in in_form */
  size_t x_sample; /* bytes per sample of x */
  int in_form;     /* a fixq_eng_in_form */
  uint8_t in_flip; /* FIXQ_ENG_IN_Q */
  const size_t *offsets;
  size_t scratch_off;
  size_t n_out;
  const fixq_eng_out *outs;
  char *const *dst;      /* sample 0 of output k */
  const size_t *dst_row; /* bytes per sample of output k */
} fixq_eng_batch;
/* How many workers fixq_eng_run_batch should use for n samples: at most
 * `threads`, and fewer where each would get less than FIXQ__MACS_PER_THREAD
 * multiply-adds (GEMM and depthwise) to do. */
int fixq_eng_workers(const fixq_eng_plan *plan, size_t n, int threads);
/* Runs the batch; GEMMs get `gemm_threads`.  On failure *failed_step is the
 * step in the first failing chunk (the failure threads=1 reports).  An in_form other than
 * FIXQ_ENG_IN_FLOAT_NCHW needs step 0 to be the QUANTIZE of tensor 0 and x_sample to match. */
fixq_status fixq_eng_run_batch(const fixq_eng_plan *plan, const fixq_eng_batch *b, char *const *arenas, int workers,
                               int gemm_threads, size_t *failed_step);
/* Output o of `batch` samples at src (tensor o->t) into dst (float32 or q, per o->form); scratch holds one
 * tensor of the batch. */
fixq_status fixq_eng_emit(const fixq_eng_plan *plan, const fixq_eng_out *o, size_t batch, const void *src, void *dst,
                          void *scratch);
/* TFLite's optimized DEQUANTIZE (optimized_ops::Dequantize, its NEON loop run by NEON_2_SSE on x86) of `batch`
 * samples of n values each: the first 8 * (n / 8) of a sample (float)q * scale + (float)(-zp * (double)scale),
 * a float32 multiply then add, not fused; the rest (float)(q - zp) * scale (the reference). */
void fixq__eng_dequantize_tflite(fixq_dtype dtype, size_t batch, size_t n, const void *q, float scale, int32_t zp,
                                 float *y);

#endif
