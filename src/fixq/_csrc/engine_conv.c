/* The C plan's direct convolution (engine_conv.h): which steps take it, their weights packed once, and the
 * driver that makes each sample's padded image, runs the path's tile over the output pixels and hands each
 * block of accumulators to the step's output stage. */
#include <string.h>

#include "engine_conv.h"

#define SLACK 16              /* image elements past the end: a run's last 4-byte group reads up to 3 */
#define BLOCK_BYTES (8 * 1024) /* int32 accumulators waiting for the output stage: stay in L1 */
#define MAX_OP 64              /* output channels (rounded up to 16) of a direct convolution */
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

/* The geometry of a direct convolution: a GEMM step of one group whose patches are not the input's rows */
static int conv_shape(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  if (s->op != FIXQ_ENG_GEMM || s->groups != 1) return 0;
  if (s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0) return 0;
  return (plan->tensors[s->out].c + 15) / 16 * 16 <= MAX_OP && s->kh * s->kw <= 256;
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

size_t fixq_eng_conv_bytes(const fixq_eng_plan *plan, size_t step) {
  if (step >= plan->n_steps) return 0;
  const fixq_eng_step *s = &plan->steps[step];
  if (!conv_shape(plan, s) || !s->acc_fits || s->packed[0]->zero_point_nonzero) return 0;
  const conv_dims d = dims_of(plan, s);
  if (d.run > 4096) return 0; /* keeps every size below small */
  const size_t w = d.segs * d.kq * d.op * 4;
  return sizeof(fixq_eng_conv) + d.segs * sizeof(size_t) + 2 * d.op * sizeof(int32_t) + 2 * w + w;
}

const fixq_eng_conv *fixq_eng_conv_pack(const fixq_eng_plan *plan, size_t step, void *mem) {
  const fixq_eng_step *s = &plan->steps[step];
  const fixq_packed_b *b = s->packed[0];
  const conv_dims d = dims_of(plan, s);
  const size_t O = plan->tensors[s->out].c, w = d.segs * d.kq * d.op * 4;
  fixq_eng_conv *cv = mem;
  size_t *off = (size_t *)(cv + 1);
  int32_t *col = (int32_t *)(off + d.segs);
  int32_t *bias = col + d.op;
  int16_t *w16 = (int16_t *)(bias + d.op);
  int8_t *w8 = (int8_t *)(w16 + w);
  const uint32_t zp = (uint32_t)(plan->dtype == FIXQ_UINT8 ? s->zp : s->zp + 128);
  cv->segs = d.segs, cv->run = d.run, cv->kq = d.kq, cv->op = d.op, cv->o8 = (O + 7) / 8;
  cv->off = off, cv->w8 = w8, cv->w16 = w16, cv->col = col, cv->bias = bias;
  for (size_t g = 0; g < d.segs; g++)
    off[g] = s->dw == 1 ? g * s->dh * d.PW * d.C : ((g / s->kw) * s->dh * d.PW + (g % s->kw) * s->dw) * d.C;
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

/* The image (one padded sample) and the block of accumulators */
static size_t block_pixels(size_t op) {
  const size_t p = BLOCK_BYTES / (op * sizeof(int32_t)) / MR * MR;
  return p < MR ? MR : p;
}

size_t fixq__eng_conv_scratch(const fixq_eng_plan *plan, const fixq_eng_step *s) {
  if (!conv_shape(plan, s)) return 0;
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]];
  const conv_dims d = dims_of(plan, s);
  const size_t elems = (xt->h + 2 * s->ph) * d.PW * d.C + SLACK;
  return 64 + align64(elems * sizeof(int16_t)) + block_pixels(d.op) * d.op * sizeof(int32_t);
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

int fixq__eng_conv(const fixq_eng_plan *plan, const fixq_eng_step *s, size_t batch, const uint8_t *x,
                   uint8_t *scratch, fixq__qgemm_store store, const void *ctx) {
  const conv_kernels *kern = &kernel_table[fixq__isa];
  if (kern->tile == NULL) return 0;
  const fixq_eng_conv *cv = s->conv;
  const fixq_eng_tensor *xt = &plan->tensors[s->in[0]], *yt = &plan->tensors[s->out];
  const size_t C = xt->c, PW = xt->w + 2 * s->pw, elems = (xt->h + 2 * s->ph) * PW * C + SLACK;
  const size_t pixels = yt->h * yt->w, P = block_pixels(cv->op);
  void *img = (void *)align64((size_t)scratch);
  int32_t *acc = (int32_t *)((uint8_t *)img + align64(elems * sizeof(int16_t)));
  for (size_t n = 0; n < batch; n++) {
    make_image(plan, s, x, n, kern->wide, img);
    size_t oy = 0, ox = 0; /* the next pixel's */
    for (size_t p0 = 0; p0 < pixels; p0 += P) {
      const size_t np = pixels - p0 < P ? pixels - p0 : P;
      for (size_t t = 0; t < np; t += MR) {
        size_t pix[MR];
        for (size_t r = 0; r < MR; r++) {
          if (t + r >= np) { /* past the block's end: its last pixel again */
            pix[r] = pix[r - 1];
            continue;
          }
          pix[r] = (oy * s->sh * PW + ox * s->sw) * C;
          if (++ox == yt->w) ox = 0, oy++;
        }
        kern->tile(cv, img, pix, acc + t * cv->op);
      }
      store(ctx, acc, cv->op, n * pixels + p0, np, 0, yt->c);
    }
  }
  return 1;
}
