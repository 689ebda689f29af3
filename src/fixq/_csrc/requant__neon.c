/* NEON requantize / quantize / dequantize, bit-identical to requant__scalar.c:
 * four int32 lanes at a time (quantize, dequantize: eight), the last few of a
 * row through the scalar contract.
 *
 * Double and single rounding: fixq_neon.h's neon_mbqm_double (sqrdmulh, the
 * gemmlowp tie fix-up, srshl) and neon_mbqm_single (smull, srshl, sqxtn).
 * Adding the zero point with sqadd then clamping to [qmin, qmax] equals the
 * exact sum clamped.  fp32: scvtf rounds to nearest even like (float)x; the
 * clamp, then + 1.5 * 2^23 - 1.5 * 2^23 as fixq__round_even_small, then
 * fcvtzs. */
#include "fixq_neon.h"

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
    float32x4_t f = vmulq_f32(vcvtq_f32_s32(x), L->scale);
    f = vminq_f32(vmaxq_f32(f, L->lo), L->hi);
    return vaddq_s32(neon_round_even_small(f), L->zp);
  }
  v = mode == FIXQ_ROUND_DOUBLE ? neon_mbqm_double(x, L->m, L->left, L->neg_right) : neon_mbqm_single(x, L->m, L->neg_total);
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

/* ---- quantize: the float operations of fixq_quantize_f32__scalar ----------
 * fdiv, then fmax / fmin to [qmin - zp, qmax - zp]: a NaN quotient stays NaN
 * through both (FMAX and FMIN return NaN when an operand is one) and fcvtzs
 * turns it into 0, so a NaN stores zp as the scalar kernel does; +-inf
 * clamps to the bounds. */
ALWAYS_INLINE int16x8_t quantize8(const float *x, float32x4_t s, float32x4_t lo, float32x4_t hi, int32x4_t zp,
                                  uint32x4_t *nan) {
  const float32x4_t f0 = vdivq_f32(vld1q_f32(x), s), f1 = vdivq_f32(vld1q_f32(x + 4), s);
  *nan = vorrq_u32(*nan, vmvnq_u32(vceqq_f32(f0, f0)));
  *nan = vorrq_u32(*nan, vmvnq_u32(vceqq_f32(f1, f1)));
  const int32x4_t q0 = vaddq_s32(neon_round_even_small(vminq_f32(vmaxq_f32(f0, lo), hi)), zp);
  const int32x4_t q1 = vaddq_s32(neon_round_even_small(vminq_f32(vmaxq_f32(f1, lo), hi)), zp);
  return vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)); /* inside the dtype's range: exact */
}

int fixq_quantize_f32__neon(size_t rows, size_t channels, size_t inner, const float *x, void *y, fixq_dtype dt,
                            const float *scale, const int32_t *zero_point, int32_t qmin, int32_t qmax) {
  uint32x4_t nan = vdupq_n_u32(0);
  int nan_tail = 0;
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const float s = scale[c];
      const int32_t zp = zero_point[c];
      const float32x4_t vs = vdupq_n_f32(s);
      const float32x4_t lo = vdupq_n_f32((float)(qmin - zp)), hi = vdupq_n_f32((float)(qmax - zp));
      const int32x4_t vzp = vdupq_n_s32(zp);
      size_t i = 0;
      for (; i + 8 <= inner; i += 8, k += 8) {
        const int16x8_t q = quantize8(x + k, vs, lo, hi, vzp, &nan);
        switch (dt) {
          case FIXQ_INT8: vst1_s8((int8_t *)y + k, vmovn_s16(q)); break;
          case FIXQ_UINT8: vst1_u8((uint8_t *)y + k, vmovn_u16(vreinterpretq_u16_s16(q))); break;
          default: vst1q_s16((int16_t *)y + k, q); break;
        }
      }
      if (i < inner) {
        nan_tail |= fixq_quantize_f32__scalar(1, 1, inner - i, x + k, (char *)y + k * fixq__dtype_size(dt), dt,
                                              &s, &zp, qmin, qmax);
        k += inner - i;
      }
    }
  return nan_tail | (vmaxvq_u32(nan) != 0);
}

/* ---- dequantize: (q - zp) in int32 (exact for 8- and 16-bit q), scvtf
 * (exact below 2^24), fmul: the scalar kernel's one rounding ------------- */
ALWAYS_INLINE int16x8_t load8_widen(const void *q, fixq_dtype dt, size_t k) {
  switch (dt) {
    case FIXQ_INT8: return vmovl_s8(vld1_s8((const int8_t *)q + k));
    case FIXQ_UINT8: return vreinterpretq_s16_u16(vmovl_u8(vld1_u8((const uint8_t *)q + k)));
    default: return vld1q_s16((const int16_t *)q + k);
  }
}

void fixq_dequantize__neon(size_t rows, size_t channels, size_t inner, const void *q, fixq_dtype dt, float *y,
                           const float *scale, const int32_t *zero_point) {
  if (dt == FIXQ_INT32) { /* q - zero_point needs int64 here: the scalar contract */
    fixq_dequantize__scalar(rows, channels, inner, q, dt, y, scale, zero_point);
    return;
  }
  const size_t esize = fixq__dtype_size(dt);
  size_t k = 0;
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < channels; c++) {
      const float32x4_t vs = vdupq_n_f32(scale[c]);
      const int32x4_t vzp = vdupq_n_s32(zero_point[c]);
      size_t i = 0;
      for (; i + 8 <= inner; i += 8, k += 8) {
        const int16x8_t v = load8_widen(q, dt, k); /* uint8 widened as uint16: below 2^15, a valid int16 */
        vst1q_f32(y + k, vmulq_f32(vcvtq_f32_s32(vsubq_s32(vmovl_s16(vget_low_s16(v)), vzp)), vs));
        vst1q_f32(y + k + 4, vmulq_f32(vcvtq_f32_s32(vsubq_s32(vmovl_high_s16(v), vzp)), vs));
      }
      if (i < inner) {
        fixq_dequantize__scalar(1, 1, inner - i, (const char *)q + k * esize, dt, y + k, scale + c, zero_point + c);
        k += inner - i;
      }
    }
}
