/* AVX2 fixed-point primitives shared by the __avx2.c kernels (8 int32 lanes),
 * bit-identical to the scalar ones in fixq_internal.h.  Include only from
 * files compiled with the AVX2 flags. */
#ifndef FIXQ_AVX2_H_
#define FIXQ_AVX2_H_

#include <immintrin.h>

#include "fixq_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* gemmlowp SaturatingRoundingDoublingHighMul for m >= 0 (so the INT32_MIN *
 * INT32_MIN case cannot occur): floor((x*m + 2^30) / 2^31), which equals the
 * truncating division with the asymmetric nudge. */
ALWAYS_INLINE __m256i srdhm(__m256i x, __m256i m) {
  const __m256i nudge = _mm256_set1_epi64x(INT64_C(1) << 30);
  const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), nudge), 31);
  const __m256i odd = _mm256_srli_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), nudge), 31);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* Saturating x << left (left 0..30): gemmlowp SaturatingRoundingMultiplyByPOT.
 * (INT32_MIN >> left) << left is INT32_MIN exactly; above the top, select INT32_MAX. */
ALWAYS_INLINE __m256i sat_shl(__m256i x, __m256i left) {
  const __m256i hi = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MAX), left);
  const __m256i lo = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MIN), left);
  const __m256i v = _mm256_sllv_epi32(_mm256_max_epi32(x, lo), left);
  return _mm256_blendv_epi8(v, _mm256_set1_epi32(INT32_MAX), _mm256_cmpgt_epi32(x, hi));
}

/* TFLite MultiplyByQuantizedMultiplier (double rounding) for m >= 0 with one
 * 64-bit rounding.  With x' = sat_shl(x, left), t = x' m (|t| < 2^62) and
 * e = right: SRDHM(x', m) = floor((t + 2^30) / 2^31), which is < 0 exactly
 * when t < -2^30, and RoundingDivideByPOT(s, e) = floor((s + 2^(e-1) - [s < 0])
 * / 2^e) for e > 0, so (floor(floor(u / a) / b) = floor(u / ab)) the result is
 *   floor((t + 2^30 + [e > 0] (2^(30+e) - [t < -2^30] 2^31)) / 2^(31+e)).
 * AVX2 has no 64-bit arithmetic shift: 2^62 more keeps the sum in [0, 2^64),
 * and the logical shift's low half is then 2^(62-31-e) too big. */
typedef struct {
  __m256i m_even, m_odd;     /* m in the low half of each 64-bit lane */
  __m256i pos_even, pos_odd; /* 2^62 + 2^30 + [e > 0] 2^(30+e) */
  __m256i neg_even, neg_odd; /* the same minus [e > 0] 2^31: for t < -2^30 */
  __m256i sh_even, sh_odd;   /* 31 + e */
  __m256i corr;              /* 2^(31-e) mod 2^32, in 32-bit lanes */
  __m256i left;
  int has_left;
} mbqm_double_params;

ALWAYS_INLINE mbqm_double_params mbqm_double_prepare(__m256i m, __m256i left, __m256i right) {
  mbqm_double_params P;
  const __m256i low = _mm256_set1_epi64x(0xFFFFFFFF), one = _mm256_set1_epi64x(1);
  const __m256i e[2] = {_mm256_and_si256(right, low), _mm256_srli_epi64(right, 32)};
  __m256i pos[2], neg[2], sh[2];
  for (int h = 0; h < 2; h++) {
    const __m256i up = _mm256_cmpgt_epi64(e[h], _mm256_setzero_si256()); /* e > 0 */
    pos[h] = _mm256_add_epi64(_mm256_set1_epi64x((INT64_C(1) << 62) + (INT64_C(1) << 30)),
                              _mm256_and_si256(up, _mm256_sllv_epi64(one, _mm256_add_epi64(e[h], _mm256_set1_epi64x(30)))));
    neg[h] = _mm256_sub_epi64(pos[h], _mm256_and_si256(up, _mm256_set1_epi64x(INT64_C(1) << 31)));
    sh[h] = _mm256_add_epi64(e[h], _mm256_set1_epi64x(31));
  }
  P.m_even = m;
  P.m_odd = _mm256_srli_epi64(m, 32);
  P.pos_even = pos[0], P.pos_odd = pos[1], P.neg_even = neg[0], P.neg_odd = neg[1];
  P.sh_even = sh[0], P.sh_odd = sh[1];
  P.corr = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_sub_epi32(_mm256_set1_epi32(31), right));
  P.left = left;
  P.has_left = !_mm256_testz_si256(left, left);
  return P;
}

ALWAYS_INLINE __m256i mbqm_double_half(__m256i x, __m256i m, __m256i pos, __m256i neg, __m256i sh) {
  const __m256i t = _mm256_mul_epi32(x, m);
  const __m256i below = _mm256_cmpgt_epi64(_mm256_set1_epi64x(-(INT64_C(1) << 30)), t);
  return _mm256_srlv_epi64(_mm256_add_epi64(t, _mm256_blendv_epi8(pos, neg, below)), sh);
}

ALWAYS_INLINE __m256i mbqm_double(__m256i x, const mbqm_double_params *P) {
  if (P->has_left) x = sat_shl(x, P->left);
  const __m256i even = mbqm_double_half(x, P->m_even, P->pos_even, P->neg_even, P->sh_even);
  const __m256i odd = mbqm_double_half(_mm256_srli_epi64(x, 32), P->m_odd, P->pos_odd, P->neg_odd, P->sh_odd);
  return _mm256_sub_epi32(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA), P->corr);
}

/* Arithmetic right shift of int64 lanes by n (0..63), saturated to int32,
 * returned in the low half of each 64-bit lane. */
ALWAYS_INLINE __m256i sra64_sat32(__m256i v, __m256i n) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
  __m256i r = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(v, sign), n), sign);
  const __m256i hi = _mm256_set1_epi64x(INT32_MAX), lo = _mm256_set1_epi64x(INT32_MIN);
  r = _mm256_blendv_epi8(r, hi, _mm256_cmpgt_epi64(r, hi));
  r = _mm256_blendv_epi8(r, lo, _mm256_cmpgt_epi64(lo, r));
  return r;
}

/* TFLITE_SINGLE_ROUNDING: (x*m + 2^(total-1)) >> total, total = 31 - shift. */
ALWAYS_INLINE __m256i mbqm_single(__m256i x, __m256i m, __m256i total) {
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i t_even = _mm256_and_si256(total, _mm256_set1_epi64x(0xFFFFFFFF));
  const __m256i t_odd = _mm256_srli_epi64(total, 32);
  const __m256i re = _mm256_sllv_epi64(one, _mm256_sub_epi64(t_even, one));
  const __m256i ro = _mm256_sllv_epi64(one, _mm256_sub_epi64(t_odd, one));
  const __m256i even = sra64_sat32(_mm256_add_epi64(_mm256_mul_epi32(x, m), re), t_even);
  const __m256i odd = sra64_sat32(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), ro), t_odd);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* fixq__clamp_round_f32 without the zero point: clamp to [lo, hi], round half
 * to even (magic 1.5 * 2^23), convert. */
ALWAYS_INLINE __m256i clamp_round_f32(__m256 f, __m256 lo, __m256 hi) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
  return _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(f, magic), magic));
}

#endif /* FIXQ_AVX2_H_ */
