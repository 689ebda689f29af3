/* AVX-512 forms of the C plan's target arithmetic (engine_targets.h), bit
 * for bit engine_targets__scalar.c, 16 outputs a step, tails under masks.
 *
 * ruy's x86 epilogue: with every shift of the block <= 0, the int32 form of
 * engine_targets__avx2.c; else in int64 lanes, every shift: vpmuldq gives acc * M
 * exactly, vpsllvq the shift left modulo 2^64 ((acc << l) * M = (acc * M) << l
 * modulo 2^64), then the additions wrap as numpy's int64 and vpsraq /
 * vpsravq shift as its >>.  The other forms are engine_targets__avx2.c's in
 * 512-bit registers (its header comment gives the arguments), with XNNPACK's
 * vadd in int64 lanes and the clamps in int64 where the avx2 form needs the
 * 2^62 offset. */
#include "engine_targets.h"
#include "fixq_avx2.h"

#define AVX512_INLINE static inline __attribute__((always_inline))

AVX512_INLINE __mmask16 tail16(size_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* 16 int32 within the dtype's range as bytes (vpmovdb keeps the low byte) */
AVX512_INLINE void store16(uint8_t *y, __m512i q, __mmask16 k) { _mm512_mask_cvtepi32_storeu_epi8(y, k, q); }

AVX512_INLINE __m512i load16(const uint8_t *p, __mmask16 k, fixq_dtype dt) {
  const __m128i b = _mm_maskz_loadu_epi8(k, p);
  return dt == FIXQ_UINT8 ? _mm512_cvtepu8_epi32(b) : _mm512_cvtepi8_epi32(b);
}

/* ---- GEMM epilogues --------------------------------------------------------- */

typedef struct {
  __m512i m, left, right, half; /* int64 lanes */
} ruy_half;

AVX512_INLINE ruy_half ruy_prepare(__m256i m32, __m256i sh32) {
  ruy_half P;
  const __m512i sh = _mm512_cvtepi32_epi64(sh32), zero = _mm512_setzero_si512();
  P.m = _mm512_cvtepi32_epi64(m32);
  P.left = _mm512_max_epi64(sh, zero);
  P.right = _mm512_max_epi64(_mm512_sub_epi64(zero, sh), zero);
  P.half = _mm512_srli_epi64(_mm512_sllv_epi64(_mm512_set1_epi64(1), P.right), 1);
  return P;
}

AVX512_INLINE __m256i ruy8(__m256i v, const ruy_half *P, __m512i zp, __m512i lo, __m512i hi) {
  const __m512i p = _mm512_add_epi64(_mm512_sllv_epi64(_mm512_mul_epi32(_mm512_cvtepi32_epi64(v), P->m), P->left),
                                     _mm512_set1_epi64(INT64_C(1) << 30));
  const __m512i u = _mm512_srai_epi64(p, 31);
  const __m512i w = _mm512_add_epi64(_mm512_srav_epi64(_mm512_add_epi64(u, P->half), P->right), zp);
  return _mm512_cvtepi64_epi32(_mm512_min_epi64(_mm512_max_epi64(w, lo), hi));
}

/* With every shift <= 0 (and a zero point within 2^15), engine_targets__avx2.c's int32 form in 16 lanes */
typedef struct {
  __m512i m, right, r1, rbit, lo, hi, zp;
} ruy32_params;

AVX512_INLINE ruy32_params ruy32_prepare(__m512i m, __m512i sh, const fixq_eng_target *t) {
  ruy32_params P;
  const __m512i zero = _mm512_setzero_si512();
  P.m = m;
  P.right = _mm512_sub_epi32(zero, sh);
  P.r1 = _mm512_max_epi32(_mm512_sub_epi32(P.right, _mm512_set1_epi32(1)), zero);
  P.rbit = _mm512_maskz_set1_epi32(_mm512_cmpgt_epi32_mask(P.right, zero), 1);
  P.lo = _mm512_set1_epi32(t->lo - t->out_zp), P.hi = _mm512_set1_epi32(t->hi - t->out_zp);
  P.zp = _mm512_set1_epi32(t->out_zp);
  return P;
}

/* floor((x m + 2^30) / 2^31) for m >= 0: srdhm() of fixq_avx2.h in 16 lanes */
AVX512_INLINE __m512i ruy32(__m512i x, const ruy32_params *P) {
  const __m512i nudge = _mm512_set1_epi64(INT64_C(1) << 30);
  const __m512i even = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, P->m), nudge), 31);
  const __m512i odd =
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(P->m, 32)), nudge);
  const __m512i u = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 1));
  const __m512i w =
      _mm512_add_epi32(_mm512_srav_epi32(u, P->right), _mm512_and_si512(_mm512_srav_epi32(u, P->r1), P->rbit));
  return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(w, P->lo), P->hi), P->zp);
}

AVX512_INLINE __m256i away8(__m256i v, __m512d real, __m512d zp, __m512d lo, __m512d hi) {
  const __m512d d = _mm512_mul_pd(_mm512_cvtepi32_pd(v), real);
  const __m512d t = _mm512_roundscale_pd(d, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask8 up = _mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_sub_pd(d, t)), _mm512_set1_pd(0.5), _CMP_GE_OQ);
  const __m512d one = _mm512_or_pd(_mm512_and_pd(d, _mm512_set1_pd(-0.0)), _mm512_set1_pd(1.0));
  const __m512d r = _mm512_mask_add_pd(t, up, t, one);
  return _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(_mm512_add_pd(r, zp), lo), hi));
}

AVX512_INLINE __m512i join(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }

static void gemm_avx512(const fixq_eng_target *t, fixq_dtype dt, size_t m, size_t n, size_t c0, const int32_t *acc,
                        size_t lda, uint8_t *y, size_t ldy) {
  if (t->form != FIXQ_ENG_T_RUY_X86 && t->form != FIXQ_ENG_T_FLOAT64_AWAY) {
    fixq_eng_targets__scalar.gemm(t, dt, m, n, c0, acc, lda, y, ldy);
    return;
  }
  const int per_tensor = t->channels == 1;
  if (per_tensor && lda == n && ldy == n) { /* one row */
    n *= m;
    m = 1;
  }
  for (size_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail16(n - j);
    const int32_t *a = acc + j;
    uint8_t *d = y + j;
    if (t->form == FIXQ_ENG_T_RUY_X86) {
      __m512i mv, sv;
      if (per_tensor) {
        mv = _mm512_set1_epi32(t->multiplier[0]), sv = _mm512_set1_epi32(t->shift[0]);
      } else {
        mv = _mm512_maskz_loadu_epi32(k, t->multiplier + c0 + j), sv = _mm512_maskz_loadu_epi32(k, t->shift + c0 + j);
      }
      if (!_mm512_cmpgt_epi32_mask(sv, _mm512_setzero_si512()) && t->out_zp >= -(1 << 15) && t->out_zp <= (1 << 15)) {
        const ruy32_params P = ruy32_prepare(mv, sv, t);
        for (size_t r = 0; r < m; r++, a += lda, d += ldy) store16(d, ruy32(_mm512_maskz_loadu_epi32(k, a), &P), k);
        continue;
      }
      const ruy_half P0 = ruy_prepare(_mm512_castsi512_si256(mv), _mm512_castsi512_si256(sv));
      const ruy_half P1 = ruy_prepare(_mm512_extracti64x4_epi64(mv, 1), _mm512_extracti64x4_epi64(sv, 1));
      const __m512i zp = _mm512_set1_epi64(t->out_zp), lo = _mm512_set1_epi64(t->lo), hi = _mm512_set1_epi64(t->hi);
      for (size_t r = 0; r < m; r++, a += lda, d += ldy) {
        const __m512i v = _mm512_maskz_loadu_epi32(k, a);
        store16(d,
                join(ruy8(_mm512_castsi512_si256(v), &P0, zp, lo, hi),
                     ruy8(_mm512_extracti64x4_epi64(v, 1), &P1, zp, lo, hi)),
                k);
      }
    } else {
      const double *re = t->real + (per_tensor ? 0 : c0 + j);
      const __m512d r0 = per_tensor ? _mm512_set1_pd(re[0]) : _mm512_maskz_loadu_pd((__mmask8)k, re);
      const __m512d r1 = per_tensor ? r0 : _mm512_maskz_loadu_pd((__mmask8)(k >> 8), re + 8);
      const __m512d zp = _mm512_set1_pd((double)t->out_zp), lo = _mm512_set1_pd(t->lo), hi = _mm512_set1_pd(t->hi);
      for (size_t r = 0; r < m; r++, a += lda, d += ldy) {
        const __m512i v = _mm512_maskz_loadu_epi32(k, a);
        store16(d,
                join(away8(_mm512_castsi512_si256(v), r0, zp, lo, hi),
                     away8(_mm512_extracti64x4_epi64(v, 1), r1, zp, lo, hi)),
                k);
      }
    }
  }
}

/* ---- add / mul -------------------------------------------------------------- */

typedef struct {
  __m512i za, zb, zo, lo, hi;
  __m512 sa, sb, so, scale, flo, fhi, fzo;
  __m512i ma, mb, bias, lo64, hi64; /* XNN_ADD: int64 lanes, the clamp before the zero point */
  __m512i ma32, mb32, bias32, qlo, qhi; /* XNN_ADD where fixq__eng_xnn_add_fits32: int32 lanes */
  int shift, fits32;
} elt_params;

AVX512_INLINE __m256i xnn_add8(__m256i qa, __m256i qb, const elt_params *P) {
  const __m512i acc = _mm512_add_epi64(P->bias, _mm512_add_epi64(_mm512_mul_epi32(_mm512_cvtepi32_epi64(qa), P->ma),
                                                                 _mm512_mul_epi32(_mm512_cvtepi32_epi64(qb), P->mb)));
  const __m512i w = _mm512_sra_epi64(acc, _mm_cvtsi32_si128(P->shift));
  return _mm512_cvtepi64_epi32(_mm512_min_epi64(_mm512_max_epi64(w, P->lo64), P->hi64));
}

AVX512_INLINE __m512i eltwise16(int form, __m512i qa, __m512i qb, const elt_params *P) {
  const __m512i da = _mm512_sub_epi32(qa, P->za), db = _mm512_sub_epi32(qb, P->zb);
  switch (form) {
    case FIXQ_ENG_T_ORT_ADD: {
      const __m512 fa = _mm512_mul_ps(_mm512_cvtepi32_ps(da), P->sa), fb = _mm512_mul_ps(_mm512_cvtepi32_ps(db), P->sb);
      const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(_mm512_add_ps(fa, fb), P->so), P->flo), P->fhi);
      const __m512i q = _mm512_cvtps_epi32(_mm512_add_ps(v, P->fzo));
      return _mm512_min_epi32(_mm512_max_epi32(q, P->lo), P->hi);
    }
    case FIXQ_ENG_T_ORT_MUL: { /* flo, fhi: lo, hi */
      const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mullo_epi32(da, db)), P->scale);
      return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_add_ps(p, P->fzo), P->flo), P->fhi));
    }
    case FIXQ_ENG_T_XNN_ADD:
      if (P->fits32) {
        const __m512i acc = _mm512_add_epi32(P->bias32, _mm512_add_epi32(_mm512_mullo_epi32(qa, P->ma32),
                                                                         _mm512_mullo_epi32(qb, P->mb32)));
        const __m512i w = _mm512_sra_epi32(acc, _mm_cvtsi32_si128(P->shift));
        return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(w, P->qlo), P->qhi), P->zo);
      }
      return _mm512_add_epi32(join(xnn_add8(_mm512_castsi512_si256(qa), _mm512_castsi512_si256(qb), P),
                                   xnn_add8(_mm512_extracti64x4_epi64(qa, 1), _mm512_extracti64x4_epi64(qb, 1), P)),
                              P->zo);
    default: { /* XNN_MUL; flo, fhi: lo - zo, hi - zo */
      const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mullo_epi32(da, db)), P->scale);
      return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(p, P->flo), P->fhi)), P->zo);
    }
  }
}

AVX512_INLINE void eltwise_loop(int form, fixq_dtype dt, size_t n, const uint8_t *a, const uint8_t *b, uint8_t *y,
                                const elt_params *P) {
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail16(n - i);
    store16(y + i, eltwise16(form, load16(a + i, k, dt), load16(b + i, k, dt), P), k);
  }
}

static void eltwise_avx512(const fixq_eng_target *t, fixq_dtype dt, size_t n, const void *a, const void *b,
                           void *y) {
  if (!fixq__eng_vector_ok(t)) {
    fixq_eng_targets__scalar.eltwise(t, dt, n, a, b, y);
    return;
  }
  elt_params P;
  const int32_t zo = t->out_zp;
  const int ort_mul = t->form == FIXQ_ENG_T_ORT_MUL;
  P.za = _mm512_set1_epi32(t->a_zp), P.zb = _mm512_set1_epi32(t->b_zp), P.zo = _mm512_set1_epi32(zo);
  P.lo = _mm512_set1_epi32(t->lo), P.hi = _mm512_set1_epi32(t->hi);
  P.sa = _mm512_set1_ps(t->a_scale), P.sb = _mm512_set1_ps(t->b_scale), P.so = _mm512_set1_ps(t->out_scale);
  P.scale = _mm512_set1_ps(t->scale), P.fzo = _mm512_set1_ps((float)zo);
  P.flo = _mm512_set1_ps((float)(ort_mul ? t->lo : t->lo - zo));
  P.fhi = _mm512_set1_ps((float)(ort_mul ? t->hi : t->hi - zo));
  P.ma = _mm512_set1_epi64(t->a_mult), P.mb = _mm512_set1_epi64(t->b_mult), P.bias = _mm512_set1_epi64(t->bias);
  P.lo64 = _mm512_set1_epi64(t->lo - zo), P.hi64 = _mm512_set1_epi64(t->hi - zo);
  P.shift = t->shift_bits;
  P.fits32 = t->form == FIXQ_ENG_T_XNN_ADD && fixq__eng_xnn_add_fits32(t);
  P.ma32 = _mm512_set1_epi32((int32_t)t->a_mult), P.mb32 = _mm512_set1_epi32((int32_t)t->b_mult);
  P.bias32 = _mm512_set1_epi32((int32_t)t->bias);
  P.qlo = _mm512_set1_epi32(t->lo - zo), P.qhi = _mm512_set1_epi32(t->hi - zo);
  switch (t->form) {
    case FIXQ_ENG_T_ORT_ADD: eltwise_loop(FIXQ_ENG_T_ORT_ADD, dt, n, a, b, y, &P); break;
    case FIXQ_ENG_T_ORT_MUL: eltwise_loop(FIXQ_ENG_T_ORT_MUL, dt, n, a, b, y, &P); break;
    case FIXQ_ENG_T_XNN_ADD: eltwise_loop(FIXQ_ENG_T_XNN_ADD, dt, n, a, b, y, &P); break;
    default: eltwise_loop(FIXQ_ENG_T_XNN_MUL, dt, n, a, b, y, &P); break;
  }
}

/* ---- QUANTIZE, ties away from zero ------------------------------------------ */

AVX512_INLINE __m512 round_away16(__m512 q) {
  const __m512 t = _mm512_roundscale_ps(q, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(q, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_or_ps(_mm512_and_ps(q, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
  return _mm512_mask_add_ps(t, up, t, one);
}

static int quantize_away_avx512(int form, float scale, int32_t zp, fixq_dtype dt, int32_t lo, int32_t hi, size_t n,
                                const float *x, void *y) {
  size_t i = 0;
  const int zp_first = form == FIXQ_ENG_Q_ZP_DIV_AWAY;
  if (zp_first || (zp >= -(1 << 15) && zp <= (1 << 15))) {
    const __m512 s = _mm512_set1_ps(scale), fzp = _mm512_set1_ps((float)zp);
    const __m512 flo = _mm512_set1_ps(zp_first ? (float)lo : (float)(lo - zp - 1));
    const __m512 fhi = _mm512_set1_ps(zp_first ? (float)hi : (float)(hi - zp + 1));
    const __m512i vzp = _mm512_set1_epi32(zp_first ? 0 : zp), vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    for (; i < n; i += 16) {
      const __mmask16 k = tail16(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
      if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) break; /* the scalar form stops at the NaN */
      __m512 q = _mm512_div_ps(v, s);
      if (zp_first) q = _mm512_add_ps(fzp, q);
      q = round_away16(_mm512_min_ps(_mm512_max_ps(q, flo), fhi));
      const __m512i r = _mm512_add_epi32(_mm512_cvttps_epi32(q), vzp);
      store16((uint8_t *)y + i, _mm512_min_epi32(_mm512_max_epi32(r, vlo), vhi), k);
    }
  }
  if (i >= n) return 0;
  return fixq_eng_targets__scalar.quantize_away(form, scale, zp, dt, lo, hi, n - i, x + i, (uint8_t *)y + i);
}

const fixq_eng_targets fixq_eng_targets__avx512vnni = {gemm_avx512, eltwise_avx512, quantize_away_avx512};
