/* The AVX-512 requantize output stage of 16 int32 lanes (fixq_requant, every rounding), shared by
 * requant__avx512vnni.c and the kernels that requantize in registers (engine_dwconv__avx512vnni.c),
 * bit-identical to requant__scalar.c.  Include only from files compiled with the AVX-512 flags. */
#ifndef FIXQ_REQUANT_AVX512_H_
#define FIXQ_REQUANT_AVX512_H_

#include <immintrin.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Per-lane parameters of one group of 16 outputs; the 64-bit products of
 * the even and the odd int32 lanes are handled apart ([0] and [1]). */
typedef struct {
  __m512i m[2];        /* multiplier in the low half of each 64-bit lane */
  __m512i pos[2];      /* double: 2^30 + [e > 0] 2^(30+e); single: 2^(total-1) */
  __m512i neg[2];      /* double: pos - [e > 0] 2^31 (for t < -2^30) */
  __m512i sh[2];       /* double: 31 + e; single: total = 31 - shift */
  __m512i left;        /* double: max(shift, 0) */
  int has_left;
  __m512i zp;
  __m512 scale, lo, hi; /* fp32 */
} lanes;

ALWAYS_INLINE __m512i load_lanes(const int32_t *v, __mmask16 mask, int per_lane) {
  return per_lane ? _mm512_maskz_loadu_epi32(mask, v) : _mm512_set1_epi32(*v);
}

ALWAYS_INLINE lanes lanes_load(const fixq_requant *p, size_t c, __mmask16 mask, int per_lane, fixq_rounding mode) {
  lanes L;
  L.zp = load_lanes(p->zero_point + c, mask, per_lane);
  if (mode == FIXQ_ROUND_FP32) {
    L.scale = per_lane ? _mm512_maskz_loadu_ps(mask, p->scale + c) : _mm512_set1_ps(p->scale[c]);
    L.lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_set1_epi32(p->qmin), L.zp));
    L.hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_set1_epi32(p->qmax), L.zp));
    return L;
  }
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi64(1);
  const __m512i s = load_lanes(p->shift + c, mask, per_lane), m = load_lanes(p->multiplier + c, mask, per_lane);
  const __m512i low = _mm512_set1_epi64(0xFFFFFFFF);
  L.m[0] = m;
  L.m[1] = _mm512_srli_epi64(m, 32);
  if (mode == FIXQ_ROUND_DOUBLE) {
    L.left = _mm512_max_epi32(s, zero);
    L.has_left = _mm512_test_epi32_mask(L.left, L.left) != 0;
    const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, s), zero);
    const __m512i e[2] = {_mm512_and_si512(right, low), _mm512_srli_epi64(right, 32)};
    for (int h = 0; h < 2; h++) {
      const __mmask8 up = _mm512_cmpgt_epi64_mask(e[h], zero);
      L.pos[h] = _mm512_mask_add_epi64(_mm512_set1_epi64(INT64_C(1) << 30), up, _mm512_set1_epi64(INT64_C(1) << 30),
                                       _mm512_sllv_epi64(one, _mm512_add_epi64(e[h], _mm512_set1_epi64(30))));
      L.neg[h] = _mm512_mask_sub_epi64(L.pos[h], up, L.pos[h], _mm512_set1_epi64(INT64_C(1) << 31));
      L.sh[h] = _mm512_add_epi64(e[h], _mm512_set1_epi64(31));
    }
  } else {
    const __m512i total = _mm512_sub_epi32(_mm512_set1_epi32(31), s);
    L.sh[0] = _mm512_and_si512(total, low);
    L.sh[1] = _mm512_srli_epi64(total, 32);
    for (int h = 0; h < 2; h++) L.pos[h] = _mm512_sllv_epi64(one, _mm512_sub_epi64(L.sh[h], one));
  }
  return L;
}

/* Lanes 0, 2, .. from even, 1, 3, .. from the low halves of odd's 64-bit lanes. */
ALWAYS_INLINE __m512i interleave(__m512i even, __m512i odd) {
  return _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CDAB);
}

/* TFLite MultiplyByQuantizedMultiplier, double rounding, as one 64-bit
 * rounding (fixq_avx2.h, mbqm_double: floor((t + 2^30 + [e > 0] (2^(30+e) -
 * [t < -2^30] 2^31)) / 2^(31+e)), t = sat_shl(x, left) * m). */
ALWAYS_INLINE __m512i mbqm_double(__m512i x, const lanes *L) {
  if (L->has_left) { /* gemmlowp SaturatingRoundingMultiplyByPOT */
    const __m512i hi = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MAX), L->left);
    const __m512i lo = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MIN), L->left);
    const __mmask16 over = _mm512_cmpgt_epi32_mask(x, hi);
    x = _mm512_mask_mov_epi32(_mm512_sllv_epi32(_mm512_max_epi32(x, lo), L->left), over, _mm512_set1_epi32(INT32_MAX));
  }
  const __m512i thr = _mm512_set1_epi64(-(INT64_C(1) << 30));
  __m512i r[2];
  const __m512i xs[2] = {x, _mm512_srli_epi64(x, 32)};
  for (int h = 0; h < 2; h++) {
    const __m512i t = _mm512_mul_epi32(xs[h], L->m[h]);
    const __mmask8 below = _mm512_cmplt_epi64_mask(t, thr);
    r[h] = _mm512_srav_epi64(_mm512_add_epi64(t, _mm512_mask_blend_epi64(below, L->pos[h], L->neg[h])), L->sh[h]);
  }
  return interleave(r[0], r[1]);
}

/* TFLITE_SINGLE_ROUNDING: (x m + 2^(total-1)) >> total, saturated to int32. */
ALWAYS_INLINE __m512i mbqm_single(__m512i x, const lanes *L) {
  const __m512i lo = _mm512_set1_epi64(INT32_MIN), hi = _mm512_set1_epi64(INT32_MAX);
  __m512i r[2];
  const __m512i xs[2] = {x, _mm512_srli_epi64(x, 32)};
  for (int h = 0; h < 2; h++) {
    const __m512i t = _mm512_add_epi64(_mm512_mul_epi32(xs[h], L->m[h]), L->pos[h]);
    r[h] = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(t, L->sh[h]), lo), hi);
  }
  return interleave(r[0], r[1]);
}

ALWAYS_INLINE __m512i requant16(__m512i x, const lanes *L, fixq_rounding mode, __m512i qmin, __m512i qmax) {
  if (mode == FIXQ_ROUND_FP32) { /* fixq__requant_fp32: the same product and clamp; |f| <= 65535 after the clamp
                                   (fixq__check_requant: 8- or 16-bit outputs), where the conversion's embedded
                                   round to nearest even is fixq__round_even_small */
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(x), L->scale);
    f = _mm512_min_ps(_mm512_max_ps(f, L->lo), L->hi);
    return _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), L->zp);
  }
  __m512i v = mode == FIXQ_ROUND_DOUBLE ? mbqm_double(x, L) : mbqm_single(x, L);
  /* clamp(v + zp, qmin, qmax) == clamp(v, qmin - zp, qmax - zp) + zp, without int32 overflow */
  v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_sub_epi32(qmin, L->zp)), _mm512_sub_epi32(qmax, L->zp));
  return _mm512_add_epi32(v, L->zp);
}

/* Lanes of mask of v (already inside the dtype's range) to y[i..]. */
ALWAYS_INLINE void store16(void *y, size_t i, fixq_dtype dt, __m512i v, __mmask16 mask) {
  switch (dt) {
    case FIXQ_INT8:
    case FIXQ_UINT8: _mm_mask_storeu_epi8((uint8_t *)y + i, mask, _mm512_cvtepi32_epi8(v)); break;
    case FIXQ_INT16: _mm256_mask_storeu_epi16((int16_t *)y + i, mask, _mm512_cvtepi32_epi16(v)); break;
    default: _mm512_mask_storeu_epi32((int32_t *)y + i, mask, v); break;
  }
}

#endif /* FIXQ_REQUANT_AVX512_H_ */
