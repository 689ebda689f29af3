/* The C plan's direct convolution (engine_conv.h): which steps take it, their weights packed once, and the
 * driver that makes each sample's padded image, runs the path's tile over the output pixels and hands each
 * block of accumulators to the step's output stage. */
#include <string.h>

#include "engine_conv.h"
#include "engine_pw.h"

#define SLACK 16              /* image elements past the end: a run's last 4-byte group reads up to 3 */
#define BLOCK_BYTES (8 * 1024) /* int32 accumulators waiting for the output stage: stay in L1 */
#define MAX_OP 64              /* output channels (rounded up to 16) of a direct convolution */
#define MAX_IMAGE ((size_t)1 << 30) /* elements of its padded image */
#define MR FIXQ_ENG_CONV_MR

typedef struct {
  fixq_eng_conv_tile_fn tile;
  int wide; /* the image as int16 x - zp (else uint8 x') */
} conv_kernels;

static const conv_kernels kernel_table[FIXQ_ISA_COUNT] = {
    {fixq_eng_conv_tile__scalar, 0},
    {FIXQ__AVX2(fixq_eng_conv_tile__avx2), 1},
    {FIXQ__AVX512VNNI(fixq_eng_conv_tile__avx512vnni), 0},
    {NULL, 0}, /* aarch64: the im2col GEMM */
    {NULL, 0},
    {NULL, 0},
};

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The geometry of a direct convolution: a GEMM step of one group whose patches are not the input's rows, or
 * whose input is one pixel a sample (a linear: its one row a sample at batch 1), or a 1x1 convolution of at
 * most 8 output channels (whose 16-column GEMM panels would idle half their lanes or more) */
static int conv_shape(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  size_t rows, elems;
  if (s->op != FIXQ_ENG_GEMM || s->groups != 1 || s->kh > 256 || s->kw > 256 || s->kh * s->kw > 256) return 0;
  if (s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0 && xt->h * xt->w > 1 &&
      plan->tensors[s->out].c > 8)
    return 0;
  /* the padded image below MAX_IMAGE elements: every size and offset of the step is far from overflow */
  if (s->ph > MAX_IMAGE || s->pw > MAX_IMAGE || !fixq__mul_size(xt->h + 2 * s->ph, xt->w + 2 * s->pw, &rows) ||
      !fixq__mul_size(rows, xt->c, &elems) || elems > MAX_IMAGE)
    return 0;
  return (plan->tensors[s->out].c + 15) / 16 * 16 <= MAX_OP;
}

typedef struct {
  size_t segs, run, kq, op, PW, C;
} conv_dims;

static conv_dims dims_of(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  conv_dims d;
  d.C = xt->c;
  d.PW = xt->w + 2 * s->pw;
  d.segs = s->dw == 1 ? s->kh : s->kh * s->kw;
  d.run = s->dw == 1 ? s->kw * d.C : d.C;
  d.kq = (d.run + 3) / 4;
  d.op = (plan->tensors[s->out].c + 15) / 16 * 16;
  return d;
}

/* The output stage's row: L = lcm(O, 16) channels, period L / O pixels (0: none, see fixq_eng_conv) */
static size_t stage_period(const fixq_eng_step *s, size_t O) {
  const size_t channels = s->target != NULL ? s->target->channels : s->rq_channels;
  size_t g = 16;
  while (O % g) g /= 2;
  return channels == 1 || O * (16 / g) > 128 ? 0 : 16 / g;
}

size_t fixq_eng_conv_bytes(const fixq_eng_plan *plan, size_t step) {
  if (step >= plan->n_steps) return 0;
  const fixq_eng_step *s = &plan->steps[step];
  if (!conv_shape(plan, s) || !s->acc_fits || s->packed[0]->zero_point_nonzero) return 0;
  const conv_dims d = dims_of(plan, s);
  if (d.run > 4096) return 0; /* keeps every size below small */
  const size_t w = d.segs * d.kq * d.op * 4, L = stage_period(s, plan->tensors[s->out].c) * plan->tensors[s->out].c;
  return sizeof(fixq_eng_conv) + d.segs * (1 + 3 * d.kq) * sizeof(size_t) + 2 * d.op * sizeof(int32_t) + 3 * w +
         L * (4 * sizeof(int32_t) + sizeof(double));
}

/* The step's per-channel parameters repeated to L channels at mem (aligned to 8); returns the end */
static char *tile_stage(const fixq_eng_step *s, size_t O, size_t L, fixq_eng_conv *cv, char *mem) {
  double *real = (double *)mem;
  int32_t *m = (int32_t *)(real + L), *sh = m + L, *zp = sh + L;
  float *scale = (float *)(zp + L);
  const fixq_eng_target *t = s->target;
  for (size_t j = 0; j < L; j++) {
    const size_t c = j % O;
    if (t != NULL) {
      if (t->multiplier != NULL) m[j] = t->multiplier[c], sh[j] = t->shift[c];
      if (t->real != NULL) real[j] = t->real[c];
      continue;
    }
    if (s->rq.multiplier != NULL) m[j] = s->rq.multiplier[c];
    if (s->rq.shift != NULL) sh[j] = s->rq.shift[c];
    if (s->rq.scale != NULL) scale[j] = s->rq.scale[c];
    zp[j] = s->rq.zero_point[c];
  }
  if (t != NULL) {
    cv->target = *t;
    cv->target.channels = L;
    if (t->multiplier != NULL) cv->target.multiplier = m, cv->target.shift = sh;
    if (t->real != NULL) cv->target.real = real;
  } else {
    cv->rq = s->rq;
    if (s->rq.multiplier != NULL) cv->rq.multiplier = m;
    if (s->rq.shift != NULL) cv->rq.shift = sh;
    if (s->rq.scale != NULL) cv->rq.scale = scale;
    cv->rq.zero_point = zp;
  }
  return (char *)(scale + L);
}

const fixq_eng_conv *fixq_eng_conv_pack(const fixq_eng_plan *plan, size_t step, void *mem) {
  const fixq_eng_step *s = &plan->steps[step];
  const fixq_packed_b *b = s->packed[0];
  const conv_dims d = dims_of(plan, s);
  const size_t O = plan->tensors[s->out].c, period = stage_period(s, O);
  fixq_eng_conv *cv = mem;
  char *tiled = (char *)(cv + 1);
  size_t *off = (size_t *)tile_stage(s, O, period * O, cv, tiled);
  size_t *off4 = off + d.segs, *off2 = off4 + d.segs * d.kq;
  int32_t *col = (int32_t *)(off2 + 2 * d.segs * d.kq);
  int32_t *bias = col + d.op;
  int16_t *w16 = (int16_t *)(bias + d.op);
  int8_t *w8 = (int8_t *)(w16 + d.segs * d.kq * d.op * 4);
  const uint32_t zp = (uint32_t)(plan->dtype == FIXQ_UINT8 ? s->zp : s->zp + 128);
  cv->segs = d.segs, cv->run = d.run, cv->kq = d.kq, cv->op = d.op, cv->oc = O, cv->o8 = (O + 7) / 8;
  cv->period = period;
  cv->off = off, cv->off4 = off4, cv->off2 = off2, cv->w8 = w8, cv->w16 = w16, cv->col = col, cv->bias = bias;
  for (size_t g = 0; g < d.segs; g++)
    off[g] = s->dw == 1 ? g * s->dh * d.PW * d.C : ((g / s->kw) * s->dh * d.PW + (g % s->kw) * s->dw) * d.C;
  for (size_t i = 0; i < d.segs * d.kq; i++) off4[i] = off[i / d.kq] + 4 * (i % d.kq);
  for (size_t i = 0; i < 2 * d.segs * d.kq; i++) off2[i] = 2 * (off[i / (2 * d.kq)] + 2 * (i % (2 * d.kq)));
  for (size_t o = 0; o < O; o++) {
    uint32_t sum = 0;
    for (size_t g = 0; g < d.segs; g++)
      for (size_t j = 0; j < d.run; j++) {
        const size_t k = g * d.run + j; /* the GEMM's k: (kh, kw, c) order */
        const int8_t v = b->panels[(o / FIXQ_GEMM_NR) * b->k_padded * FIXQ_GEMM_NR + k / 4 * 4 * FIXQ_GEMM_NR +
                                   (o % FIXQ_GEMM_NR) * 4 + k % 4];
        w8[((g * d.kq + j / 4) * d.op + o) * 4 + j % 4] = v;
        w16[((g * 2 * d.kq + j / 2) * d.op + o) * 2 + j % 2] = v;
        sum += (uint32_t)(int32_t)v;
      }
    col[o] = (int32_t)((uint32_t)s->bias[o] - zp * sum);
    bias[o] = s->bias[o];
  }
  return cv;
}

/* Pixels a block of accumulators: a multiple of 16 (of the tile's and of any period) */
static size_t block_pixels(size_t O) {
  const size_t p = BLOCK_BYTES / (O * sizeof(int32_t)) / 16 * 16;
  return p < 16 ? 16 : p;
}

size_t fixq__eng_conv_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  if (!conv_shape(plan, s)) return 0;
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const conv_dims d = dims_of(plan, s);
  const size_t elems = (xt->h + 2 * s->ph) * d.PW * d.C + SLACK, O = plan->tensors[s->out].c;
  return 64 + align64(elems * sizeof(int16_t)) + block_pixels(O) * O * sizeof(int32_t);
}

/* Sample n of x into the padded image: uint8 x' (padding zp'), or int16 x - zp (padding 0) */
static void make_image(const fixq_eng_plan *plan, const fixq_eng_step *s, const uint8_t *x, size_t n, int wide,
                       void *img) {
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const size_t C = xt->c, PW = xt->w + 2 * s->pw, row = xt->w * C;
  const size_t elems = (xt->h + 2 * s->ph) * PW * C + SLACK;
  const int u8 = plan->dtype == FIXQ_UINT8;
  const uint8_t flip = u8 ? 0 : 0x80;
  x += n * xt->h * row;
  if (wide) {
    int16_t *d = img;
    memset(d, 0, elems * sizeof(int16_t));
    for (size_t iy = 0; iy < xt->h; iy++) {
      int16_t *r = d + ((iy + s->ph) * PW + s->pw) * C;
      const uint8_t *src = x + iy * row;
      if (u8)
        for (size_t i = 0; i < row; i++) r[i] = (int16_t)(src[i] - s->zp);
      else
        for (size_t i = 0; i < row; i++) r[i] = (int16_t)((int8_t)src[i] - s->zp);
    }
    return;
  }
  uint8_t *d = img;
  memset(d, (uint8_t)s->zp ^ flip, elems);
  for (size_t iy = 0; iy < xt->h; iy++) {
    uint8_t *r = d + ((iy + s->ph) * PW + s->pw) * C;
    const uint8_t *src = x + iy * row;
    for (size_t i = 0; i < row; i++) r[i] = src[i] ^ flip;
  }
}

/* The output stage of np pixels' accumulators (acc[p * O + o]) into y: the flat fp32 stage where the step
 * has it (engine_pw.h), else rows of the tiled stage, then the rest pixel by pixel */
static void block_out(const fixq_eng_plan *plan, const fixq_eng_step *s, const fixq_eng_conv *cv,
                      const fixq_eng_flat *flat, size_t np, const int32_t *acc, uint8_t *y, fixq_eng_conv_out out) {
  const size_t O = cv->oc;
  if (flat != NULL) {
    flat->run(flat, np * O, acc, y);
    return;
  }
  if ((s->target != NULL ? s->target->channels : s->rq_channels) == 1) {
    out(plan, &s->rq, 0, s->target, 1, np * O, acc, y);
    return;
  }
  const size_t rows = cv->period ? np / cv->period : 0, done = rows * cv->period * O;
  if (rows) out(plan, &cv->rq, 1, s->target != NULL ? &cv->target : NULL, rows, cv->period * O, acc, y);
  if (done < np * O) out(plan, &s->rq, 1, s->target, np - rows * cv->period, O, acc + done, y + done);
}

int fixq__eng_conv(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x, uint8_t *y,
                   uint8_t *scratch, int threads, fixq_eng_conv_out out) {
  const conv_kernels *kern = &kernel_table[fixq__isa];
  const fixq_eng_conv *cv = s->conv;
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  /* the GEMM's tiles for a linear's batch of rows, and its threads for a convolution worth several */
  if (kern->tile == NULL || (batch > 1 && yt->h * yt->w == 1) ||
      (threads > 1 && (double)batch * (double)(yt->h * yt->w * yt->c) * (double)(cv->segs * cv->run) >=
                          2.0 * FIXQ__MACS_PER_THREAD))
    return 0;
  const size_t C = xt->c, PW = xt->w + 2 * s->pw, elems = (xt->h + 2 * s->ph) * PW * C + SLACK;
  const size_t pixels = yt->h * yt->w, P = block_pixels(yt->c), O = yt->c;
  const size_t step = s->sw * C, jump = s->sh * PW * C - yt->w * step; /* to the next pixel, from a row's end */
  fixq_eng_flat flat; /* XNNPACK's stage as the 1x1 kernel runs it, where its tables pay (not for one pixel) */
  const int has_flat =
      s->target == NULL && pixels > 1 && fixq__eng_flat_init(&flat, &s->rq, s->rq_channels, O, plan->dtype);
  void *img = (void *)align64((size_t)scratch);
  int32_t *acc = (int32_t *)((uint8_t *)img + align64(elems * sizeof(int16_t)));
  for (size_t n = 0; n < batch; n++) {
    make_image(plan, s, x, n, kern->wide, img);
    size_t at = 0, ox = 0; /* the next pixel's first tap, its column */
    for (size_t p0 = 0; p0 < pixels; p0 += P) {
      const size_t np = pixels - p0 < P ? pixels - p0 : P;
      for (size_t t = 0; t < np; t += MR) {
        size_t pix[MR];
        for (size_t r = 0; r < MR; r++) { /* past the block's end: its last pixel again */
          pix[r] = at;
          if (t + r + 1 < np) {
            at += step;
            if (++ox == yt->w) ox = 0, at += jump;
          }
        }
        kern->tile(cv, img, pix, np - t < MR ? np - t : MR, acc + t * O);
      }
      if (++ox == yt->w) ox = 0, at += step + jump;
      else at += step;
      block_out(plan, s, cv, has_flat ? &flat : NULL, np, acc, y + (n * pixels + p0) * O, out);
    }
  }
  return 1;
}
