/* NEON elementwise add / mul, bit-identical to eltwise__scalar.c: the
 * contract's own formulas on 16 outputs a step (four groups of 4 int32
 * lanes), the last 1-15 of a row through the scalar kernel.  fixq.h's SIMD
 * plan (lin_*) is not used: these are the exact kernels it is fitted to.
 *
 * Inputs are widened to int16 and the zero points subtracted there (|a - zp|
 * <= 255).  Fixed point (TFLite reference_integer_ops AddFunc / MulFunc):
 * ADD rescales (a - zp) << 20 and (b - zp) << 20 by sqrdmulh and neon_rdbpot
 * (the input shifts are <= 0) or by neon_mbqm_single (fixq_neon.h) and adds
 * them in int32 (each is at most 2^27 in magnitude); MUL takes the exact
 * product by smull (int16 x int16 -> int32); then the output multiplier,
 * sqadd of the zero point and the clamp to
 * [qmin, qmax], which equals fixq__add_clamp.  FP32: scvtf (exact), fmul,
 * fadd or fmul, fdiv by the output scale, fmax / fmin, neon_round_even_small:
 * the float32 operations of fixq__eltwise_one in its order (no fused
 * multiply-add).  Outputs lie in [qmin, qmax], so narrowing is exact. */
#include "fixq_neon.h"

typedef struct {
  int16x8_t za, zb;                  /* input zero points */
  int32x4_t ma, ra, ta, mb, rb, tb;  /* ADD input multipliers: m, min(shift, 0), shift - 31 */
  int32x4_t my, ly, ry, ty;          /* output multiplier: m, max(shift, 0), min(shift, 0), shift - 31 */
  int32x4_t zy, qmin, qmax;
  float32x4_t sa, sb, sy, lo, hi;    /* FP32 */
} consts;

static void consts_init(consts *k, const fixq_eltwise *p) {
  const int32x4_t zero = vdupq_n_s32(0), m31 = vdupq_n_s32(31);
  k->za = vdupq_n_s16((int16_t)p->a_zero_point);
  k->zb = vdupq_n_s16((int16_t)p->b_zero_point);
  const int32x4_t sa = vdupq_n_s32(p->a_shift), sb = vdupq_n_s32(p->b_shift), sy = vdupq_n_s32(p->y_shift);
  k->ma = vdupq_n_s32(p->a_multiplier);
  k->ra = vminq_s32(sa, zero); /* ADD's input shifts are <= 0: no left shift */
  k->ta = vsubq_s32(sa, m31);
  k->mb = vdupq_n_s32(p->b_multiplier);
  k->rb = vminq_s32(sb, zero);
  k->tb = vsubq_s32(sb, m31);
  k->my = vdupq_n_s32(p->y_multiplier);
  k->ly = vmaxq_s32(sy, zero);
  k->ry = vminq_s32(sy, zero);
  k->ty = vsubq_s32(sy, m31);
  k->zy = vdupq_n_s32(p->y_zero_point);
  k->qmin = vdupq_n_s32(p->qmin);
  k->qmax = vdupq_n_s32(p->qmax);
  k->sa = vdupq_n_f32(p->a_scale);
  k->sb = vdupq_n_f32(p->b_scale);
  k->sy = vdupq_n_f32(p->y_scale);
  k->lo = vdupq_n_f32((float)(p->qmin - p->y_zero_point));
  k->hi = vdupq_n_f32((float)(p->qmax - p->y_zero_point));
}

/* fixq__eltwise_one on 4 lanes: va = a - a_zp, vb = b - b_zp (int16) */
ALWAYS_INLINE int32x4_t one4(int16x4_t va, int16x4_t vb, const consts *k, fixq_eltwise_op op, fixq_rounding mode) {
  if (mode == FIXQ_ROUND_FP32) {
    const float32x4_t fa = vmulq_f32(vcvtq_f32_s32(vmovl_s16(va)), k->sa);
    const float32x4_t fb = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vb)), k->sb);
    float32x4_t f = vdivq_f32(op == FIXQ_OP_ADD ? vaddq_f32(fa, fb) : vmulq_f32(fa, fb), k->sy);
    f = vminq_f32(vmaxq_f32(f, k->lo), k->hi);
    return vaddq_s32(neon_round_even_small(f), k->zy);
  }
  const int single = mode == FIXQ_ROUND_SINGLE;
  int32x4_t x;
  if (op == FIXQ_OP_ADD) {
    const int32x4_t xa = vshlq_n_s32(vmovl_s16(va), 20), xb = vshlq_n_s32(vmovl_s16(vb), 20);
    x = single ? vaddq_s32(neon_mbqm_single(xa, k->ma, k->ta), neon_mbqm_single(xb, k->mb, k->tb))
               : vaddq_s32(neon_rdbpot(vqrdmulhq_s32(xa, k->ma), k->ra), neon_rdbpot(vqrdmulhq_s32(xb, k->mb), k->rb));
  } else {
    x = vmull_s16(va, vb);
  }
  const int32x4_t r = single ? neon_mbqm_single(x, k->my, k->ty) : neon_mbqm_double(x, k->my, k->ly, k->ry);
  return vmaxq_s32(vminq_s32(vqaddq_s32(r, k->zy), k->qmax), k->qmin);
}

ALWAYS_INLINE int16x8_t widen(uint8x8_t v, int u8) {
  return u8 ? vreinterpretq_s16_u16(vmovl_u8(v)) : vmovl_s8(vreinterpret_s8_u8(v));
}

/* 8 outputs from 8 inputs of each side (int16 lanes, zero points subtracted) */
ALWAYS_INLINE int16x8_t one8(int16x8_t va, int16x8_t vb, const consts *k, fixq_eltwise_op op, fixq_rounding mode) {
  const int32x4_t lo = one4(vget_low_s16(va), vget_low_s16(vb), k, op, mode);
  const int32x4_t hi = one4(vget_high_s16(va), vget_high_s16(vb), k, op, mode);
  return vcombine_s16(vmovn_s32(lo), vmovn_s32(hi));
}

ALWAYS_INLINE void eltwise_rows(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                                ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p,
                                fixq_eltwise_op op, fixq_rounding mode) {
  consts k;
  consts_init(&k, p);
  const int au = p->a_dtype == FIXQ_UINT8, bu = p->b_dtype == FIXQ_UINT8;
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *ar = (const uint8_t *)a + (ptrdiff_t)r * a_stride, *br = (const uint8_t *)b + (ptrdiff_t)r * b_stride;
    uint8_t *yr = (uint8_t *)y + (ptrdiff_t)r * y_stride;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const uint8x16_t a8 = a_bcast ? vld1q_dup_u8(ar) : vld1q_u8(ar + i);
      const uint8x16_t b8 = b_bcast ? vld1q_dup_u8(br) : vld1q_u8(br + i);
      const int16x8_t va0 = vsubq_s16(widen(vget_low_u8(a8), au), k.za), va1 = vsubq_s16(widen(vget_high_u8(a8), au), k.za);
      const int16x8_t vb0 = vsubq_s16(widen(vget_low_u8(b8), bu), k.zb), vb1 = vsubq_s16(widen(vget_high_u8(b8), bu), k.zb);
      const int16x8_t y0 = one8(va0, vb0, &k, op, mode), y1 = one8(va1, vb1, &k, op, mode);
      /* the low byte of each lane: int8 as is, uint8 (0..255) likewise */
      vst1q_u8(yr + i, vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(y0)), vmovn_u16(vreinterpretq_u16_s16(y1))));
    }
    if (i < n)
      fixq_eltwise__scalar(1, n - i, ar + (a_bcast ? 0 : i), 0, a_bcast, br + (b_bcast ? 0 : i), 0, b_bcast, yr + i, 0, p);
  }
}

void fixq_eltwise__neon(size_t rows, size_t n, const void *a, ptrdiff_t a_stride, int a_bcast, const void *b,
                        ptrdiff_t b_stride, int b_bcast, void *y, ptrdiff_t y_stride, const fixq_eltwise *p) {
#define ROWS(op, mode) eltwise_rows(rows, n, a, a_stride, a_bcast, b, b_stride, b_bcast, y, y_stride, p, op, mode)
  const int add = p->op == FIXQ_OP_ADD;
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE: add ? ROWS(FIXQ_OP_ADD, FIXQ_ROUND_DOUBLE) : ROWS(FIXQ_OP_MUL, FIXQ_ROUND_DOUBLE); break;
    case FIXQ_ROUND_SINGLE: add ? ROWS(FIXQ_OP_ADD, FIXQ_ROUND_SINGLE) : ROWS(FIXQ_OP_MUL, FIXQ_ROUND_SINGLE); break;
    default: add ? ROWS(FIXQ_OP_ADD, FIXQ_ROUND_FP32) : ROWS(FIXQ_OP_MUL, FIXQ_ROUND_FP32); break;
  }
#undef ROWS
}
