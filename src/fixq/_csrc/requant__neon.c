/* NEON requantize, bit-identical to requant__scalar.c: four int32 lanes at a
 * time, the last 1-3 of a row through the scalar contract.
 *
 * Double rounding: sqrdmulh is gemmlowp's SaturatingRoundingDoublingHighMul
 * exactly ((2ab + 2^31) >> 32, ties toward +inf, INT32_MIN^2 saturated:
 * gemmlowp's nudge-and-truncate gives floor((ab + 2^30) / 2^31) for either
 * sign of ab).  srshl by -e rounds ties toward +inf where RoundingDivideByPOT
 * rounds them away from zero: gemmlowp's NEON fix-up (fixedpoint_neon.h)
 * first adds -1 to negative x when e > 0 (saturating: INT32_MIN gives the
 * same quotient).  The left shift is sqshl (SaturatingRoundingMultiplyByPOT).
 * Single rounding: smull to int64 and srshl by -(31 - shift) is ruy's
 * (x m + 2^(total-1)) >> total exactly; sqxtn saturates.  Adding the zero
 * point with sqadd then clamping to [qmin, qmax] equals the exact sum
 * clamped.  fp32: scvtf rounds to nearest even like (float)x; the clamp, then
 * + 1.5 * 2^23 - 1.5 * 2^23 as fixq__round_even_small, then fcvtzs. */
#include <arm_neon.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef struct {
  int32x4_t m, left, neg_right, neg_total, zp; /* double: m, left, -right; single: m, -total */
  float32x4_t scale, lo, hi;                   /* fp32 */
} lanes;

ALWAYS_INLINE int32x4_t load4(const int32_t *v, int per_lane) { return per_lane ? vld1q_s32(v) : vdupq_n_s32(*v); }

ALWAYS_INLINE lanes lanes_load(const fixq_requant *p, size_t c, int per_lane, fixq_rounding mode) {
  lanes L;
  L.zp = load4(p->zero_point + c, per_lane);
  if (mode == FIXQ_ROUND_FP32) {
    L.scale = per_lane ? vld1q_f32(p->scale + c) : vdupq_n_f32(p->scale[c]);
    L.lo = vcvtq_f32_s32(vsubq_s32(vdupq_n_s32(p->qmin), L.zp));
    L.hi = vcvtq_f32_s32(vsubq_s32(vdupq_n_s32(p->qmax), L.zp));
    return L;
  }
  const int32x4_t s = load4(p->shift + c, per_lane), zero = vdupq_n_s32(0);
  L.m = load4(p->multiplier + c, per_lane);
  L.left = vmaxq_s32(s, zero);
  L.neg_right = vminq_s32(s, zero);
  L.neg_total = vsubq_s32(s, vdupq_n_s32(31));
  return L;
}

ALWAYS_INLINE int32x4_t requant4(int32x4_t x, const lanes *L, fixq_rounding mode, int32x4_t qmin, int32x4_t qmax) {
  int32x4_t v;
  if (mode == FIXQ_ROUND_FP32) {
    const float32x4_t bias = vdupq_n_f32(12582912.0f);
    float32x4_t f = vmulq_f32(vcvtq_f32_s32(x), L->scale);
    f = vminq_f32(vmaxq_f32(f, L->lo), L->hi);
    f = vsubq_f32(vaddq_f32(f, bias), bias);
    return vaddq_s32(vcvtq_s32_f32(f), L->zp);
  }
  if (mode == FIXQ_ROUND_DOUBLE) {
    v = vqrdmulhq_s32(vqshlq_s32(x, L->left), L->m);
    v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, L->neg_right), 31));
    v = vrshlq_s32(v, L->neg_right);
  } else {
    const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(L->m)), vmovl_s32(vget_low_s32(L->neg_total)));
    const int64x2_t hi = vrshlq_s64(vmull_high_s32(x, L->m), vmovl_high_s32(L->neg_total));
    v = vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
  }
  return vmaxq_s32(vminq_s32(vqaddq_s32(v, L->zp), qmax), qmin);
}

/* v's lanes (inside the dtype's range) to y[i..i+3] */
ALWAYS_INLINE void store4(void *y, fixq_dtype dt, size_t i, int32x4_t v) {
  switch (dt) {
    case FIXQ_INT8: {
      const int8x8_t b = vmovn_s16(vcombine_s16(vmovn_s32(v), vdup_n_s16(0)));
      vst1_lane_s32((int32_t *)(void *)((int8_t *)y + i), vreinterpret_s32_s8(b), 0);
      break;
    }
    case FIXQ_UINT8: {
      const uint8x8_t b = vmovn_u16(vcombine_u16(vmovn_u32(vreinterpretq_u32_s32(v)), vdup_n_u16(0)));
      vst1_lane_u32((uint32_t *)(void *)((uint8_t *)y + i), vreinterpret_u32_u8(b), 0);
      break;
    }
    case FIXQ_INT16: vst1_s16((int16_t *)y + i, vmovn_s32(v)); break;
    default: vst1q_s32((int32_t *)y + i, v); break;
  }
}

ALWAYS_INLINE void requant_rows(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                                void *y, size_t y_stride, fixq_dtype dt, const fixq_requant *p,
                                fixq_rounding mode) {
  const int32x4_t qmin = vdupq_n_s32(p->qmin), qmax = vdupq_n_s32(p->qmax);
  if (inner == 1) { /* per-channel parameters along the row (the GEMM output stage) */
    size_t c = 0;
    for (; c + 4 <= channels; c += 4) {
      const lanes L = lanes_load(p, c, 1, mode);
      for (size_t r = 0; r < rows; r++) store4(y, dt, r * y_stride + c, requant4(vld1q_s32(x + r * x_stride + c), &L, mode, qmin, qmax));
    }
    for (; c < channels; c++)
      for (size_t r = 0; r < rows; r++) fixq__store(y, dt, r * y_stride + c, fixq__requant_one(x[r * x_stride + c], p, c));
    return;
  }
  for (size_t c = 0; c < channels; c++) {
    const lanes L = lanes_load(p, c, 0, mode);
    for (size_t r = 0; r < rows; r++) {
      const int32_t *xr = x + r * x_stride + c * inner;
      const size_t yr = r * y_stride + c * inner;
      size_t i = 0;
      for (; i + 4 <= inner; i += 4) store4(y, dt, yr + i, requant4(vld1q_s32(xr + i), &L, mode, qmin, qmax));
      for (; i < inner; i++) fixq__store(y, dt, yr + i, fixq__requant_one(xr[i], p, c));
    }
  }
}

void fixq_requant_s32__neon(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                            void *y, size_t y_stride, fixq_dtype y_dtype, const fixq_requant *p) {
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_DOUBLE);
      break;
    case FIXQ_ROUND_SINGLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_SINGLE);
      break;
    default:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_FP32);
      break;
  }
}
