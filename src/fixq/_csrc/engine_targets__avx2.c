/* AVX2 forms of the C plan's target arithmetic (engine_targets.h), bit for
 * bit engine_targets__scalar.c, 8 outputs a step.
 *
 * ruy's x86 epilogue with l = 0 (a real multiplier below 1, every shift <= 0):
 * |acc * M| < 2^62, so t = (acc * M + 2^30) >> 31 fits int32 and is srdhm()
 * (fixq_avx2.h: the same floor((acc * M + 2^30) / 2^31) for M >= 0); then
 * (t + 2^(r-1)) >> r without the sum overflowing: floor(t / 2^r + 1/2) =
 * (t >> r) + bit r-1 of t, for r >= 1 (vpsravd fills counts past 31 with
 * the sign, which gives 0 for r >= 32 as the int64 form does).  The clamp
 * comes before the zero point: clamp(w + zp, lo, hi) = clamp(w, lo - zp,
 * hi - zp) + zp (a zero point within 2^15).  Column blocks whose channels shift
 * left run the scalar form.
 *
 * TFLite's float64 rounding: t = trunc(d) and d - t (exact) decide
 * std::round's tie away from zero: t + copysign(1, d) where |d - t| >= 0.5.
 *
 * The float32 forms (ONNX Runtime's QLinearAdd / QLinearMul, XNNPACK's vmul,
 * the half-away QUANTIZEs) run the scalar form's operations in its order, one
 * IEEE operation per intrinsic (vcvtps2dq rounds to nearest even as rintf
 * does in the default mode).  A clamp to integers before the rounding equals
 * the saturation after it.  fixq__eng_vector_ok says when int32 lanes and
 * float32 stay exact; other parameters run the scalar form. */
#include "engine_targets.h"
#include "fixq_avx2.h"

/* 8 int32 within the dtype's range as 8 bytes */
ALWAYS_INLINE void store8(uint8_t *y, __m256i q, fixq_dtype dt) {
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64((__m128i *)y, dt == FIXQ_UINT8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w));
}

ALWAYS_INLINE __m256i load8(const uint8_t *p, fixq_dtype dt) {
  const __m128i b = _mm_loadl_epi64((const __m128i *)p);
  return dt == FIXQ_UINT8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi8_epi32(b);
}

/* ---- GEMM epilogues --------------------------------------------------------- */

typedef struct {
  __m256i m, right, r1, rbit, lo, hi, zp;
} ruy_params;

/* 0 when a channel of the block shifts left */
ALWAYS_INLINE int ruy_prepare(const fixq_eng_target *t, size_t c, int per_tensor, ruy_params *P) {
  const __m256i sh = per_tensor ? _mm256_set1_epi32(t->shift[0]) : _mm256_loadu_si256((const __m256i *)(t->shift + c));
  if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(sh, _mm256_setzero_si256()))) return 0;
  P->m = per_tensor ? _mm256_set1_epi32(t->multiplier[0]) : _mm256_loadu_si256((const __m256i *)(t->multiplier + c));
  P->right = _mm256_sub_epi32(_mm256_setzero_si256(), sh);
  P->r1 = _mm256_max_epi32(_mm256_sub_epi32(P->right, _mm256_set1_epi32(1)), _mm256_setzero_si256());
  P->rbit = _mm256_and_si256(_mm256_cmpgt_epi32(P->right, _mm256_setzero_si256()), _mm256_set1_epi32(1));
  P->lo = _mm256_set1_epi32(t->lo - t->out_zp);
  P->hi = _mm256_set1_epi32(t->hi - t->out_zp);
  P->zp = _mm256_set1_epi32(t->out_zp);
  return 1;
}

ALWAYS_INLINE __m256i ruy8(__m256i v, const ruy_params *P) {
  const __m256i u = srdhm(v, P->m);
  const __m256i w =
      _mm256_add_epi32(_mm256_srav_epi32(u, P->right), _mm256_and_si256(_mm256_srav_epi32(u, P->r1), P->rbit));
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(w, P->lo), P->hi), P->zp);
}

ALWAYS_INLINE __m128i away4(__m128i v, __m256d real, __m256d zp, __m256d lo, __m256d hi) {
  const __m256d d = _mm256_mul_pd(_mm256_cvtepi32_pd(v), real), neg0 = _mm256_set1_pd(-0.0);
  const __m256d t = _mm256_round_pd(d, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256d up = _mm256_cmp_pd(_mm256_andnot_pd(neg0, _mm256_sub_pd(d, t)), _mm256_set1_pd(0.5), _CMP_GE_OQ);
  const __m256d r = _mm256_add_pd(t, _mm256_and_pd(up, _mm256_or_pd(_mm256_and_pd(d, neg0), _mm256_set1_pd(1.0))));
  return _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(_mm256_add_pd(r, zp), lo), hi));
}

static void gemm_avx2(const fixq_eng_target *t, fixq_dtype dt, size_t m, size_t n, size_t c0, const int32_t *acc,
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
  /* past 2^15, lo - zp and hi - zp could leave int32 */
  const size_t nv = t->out_zp < -(1 << 15) || t->out_zp > (1 << 15) ? 0 : n;
  size_t j = 0;
  for (; j + 8 <= nv; j += 8) {
    const int32_t *a = acc + j;
    uint8_t *d = y + j;
    if (t->form == FIXQ_ENG_T_RUY_X86) {
      ruy_params P;
      if (!ruy_prepare(t, c0 + j, per_tensor, &P)) {
        fixq_eng_targets__scalar.gemm(t, dt, m, 8, c0 + j, a, lda, d, ldy);
        continue;
      }
      for (size_t r = 0; r < m; r++, a += lda, d += ldy)
        store8(d, ruy8(_mm256_loadu_si256((const __m256i *)a), &P), dt);
    } else {
      const double *re = t->real + (per_tensor ? 0 : c0 + j);
      const __m256d r0 = per_tensor ? _mm256_set1_pd(re[0]) : _mm256_loadu_pd(re);
      const __m256d r1 = per_tensor ? r0 : _mm256_loadu_pd(re + 4);
      const __m256d zp = _mm256_set1_pd((double)t->out_zp), lo = _mm256_set1_pd(t->lo), hi = _mm256_set1_pd(t->hi);
      for (size_t r = 0; r < m; r++, a += lda, d += ldy) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)a);
        const __m128i q0 = away4(_mm256_castsi256_si128(v), r0, zp, lo, hi);
        const __m128i q1 = away4(_mm256_extracti128_si256(v, 1), r1, zp, lo, hi);
        store8(d, _mm256_setr_m128i(q0, q1), dt);
      }
    }
  }
  if (j < n) fixq_eng_targets__scalar.gemm(t, dt, m, n - j, c0 + j, acc + j, lda, y + j, ldy);
}

/* ---- add / mul -------------------------------------------------------------- */

typedef struct {
  __m256i za, zb, zo, lo, hi, qlo, qhi; /* qlo, qhi: the clamp before the zero point */
  __m256 sa, sb, so, scale, flo, fhi, fzo;
  __m256i ma, mb, bias, hi64, lo64, off;
  __m256i ma32, mb32, bias32; /* XNN_ADD where fixq__eng_xnn_add_fits32: int32 lanes */
  __m128i shift;
  int fits32;
} elt_params;

/* XNNPACK vadd on 4 lanes: |acc| < 2^61, so acc + 2^62 is positive and its logical shift less 2^(62-s) is
 * the arithmetic one; the result clamped in int64, then its low halves */
ALWAYS_INLINE __m128i xnn_add4(__m128i qa, __m128i qb, const elt_params *P) {
  const __m256i acc = _mm256_add_epi64(P->bias, _mm256_add_epi64(_mm256_mul_epi32(_mm256_cvtepi32_epi64(qa), P->ma),
                                                                 _mm256_mul_epi32(_mm256_cvtepi32_epi64(qb), P->mb)));
  __m256i w = _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(acc, _mm256_set1_epi64x(INT64_C(1) << 62)), P->shift),
                               P->off);
  w = _mm256_blendv_epi8(w, P->hi64, _mm256_cmpgt_epi64(w, P->hi64));
  w = _mm256_blendv_epi8(w, P->lo64, _mm256_cmpgt_epi64(P->lo64, w));
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}

ALWAYS_INLINE __m256i eltwise8(int form, __m256i qa, __m256i qb, const elt_params *P) {
  const __m256i da = _mm256_sub_epi32(qa, P->za), db = _mm256_sub_epi32(qb, P->zb);
  switch (form) {
    case FIXQ_ENG_T_ORT_ADD: {
      const __m256 fa = _mm256_mul_ps(_mm256_cvtepi32_ps(da), P->sa), fb = _mm256_mul_ps(_mm256_cvtepi32_ps(db), P->sb);
      const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_add_ps(fa, fb), P->so), P->flo), P->fhi);
      const __m256i q = _mm256_cvtps_epi32(_mm256_add_ps(v, P->fzo));
      return _mm256_min_epi32(_mm256_max_epi32(q, P->lo), P->hi);
    }
    case FIXQ_ENG_T_ORT_MUL: { /* flo, fhi: lo, hi */
      const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(da, db)), P->scale);
      return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(p, P->fzo), P->flo), P->fhi));
    }
    case FIXQ_ENG_T_XNN_ADD: {
      if (P->fits32) {
        const __m256i acc = _mm256_add_epi32(P->bias32, _mm256_add_epi32(_mm256_mullo_epi32(qa, P->ma32),
                                                                         _mm256_mullo_epi32(qb, P->mb32)));
        const __m256i w = _mm256_sra_epi32(acc, P->shift);
        return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(w, P->qlo), P->qhi), P->zo);
      }
      const __m128i w0 = xnn_add4(_mm256_castsi256_si128(qa), _mm256_castsi256_si128(qb), P);
      const __m128i w1 = xnn_add4(_mm256_extracti128_si256(qa, 1), _mm256_extracti128_si256(qb, 1), P);
      return _mm256_add_epi32(_mm256_setr_m128i(w0, w1), P->zo);
    }
    default: { /* XNN_MUL; flo, fhi: lo - zo, hi - zo */
      const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(da, db)), P->scale);
      return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(p, P->flo), P->fhi)), P->zo);
    }
  }
}

ALWAYS_INLINE void eltwise_loop(int form, fixq_dtype dt, size_t n, const uint8_t *a, const uint8_t *b, uint8_t *y,
                                const elt_params *P) {
  for (size_t i = 0; i + 8 <= n; i += 8) store8(y + i, eltwise8(form, load8(a + i, dt), load8(b + i, dt), P), dt);
}

static void eltwise_avx2(const fixq_eng_target *t, fixq_dtype dt, size_t n, const void *a, const void *b, void *y) {
  if (!fixq__eng_vector_ok(t)) {
    fixq_eng_targets__scalar.eltwise(t, dt, n, a, b, y);
    return;
  }
  elt_params P;
  const int32_t zo = t->out_zp;
  const int ort_mul = t->form == FIXQ_ENG_T_ORT_MUL;
  P.za = _mm256_set1_epi32(t->a_zp), P.zb = _mm256_set1_epi32(t->b_zp), P.zo = _mm256_set1_epi32(zo);
  P.lo = _mm256_set1_epi32(t->lo), P.hi = _mm256_set1_epi32(t->hi);
  P.sa = _mm256_set1_ps(t->a_scale), P.sb = _mm256_set1_ps(t->b_scale), P.so = _mm256_set1_ps(t->out_scale);
  P.scale = _mm256_set1_ps(t->scale), P.fzo = _mm256_set1_ps((float)zo);
  P.flo = _mm256_set1_ps((float)(ort_mul ? t->lo : t->lo - zo));
  P.fhi = _mm256_set1_ps((float)(ort_mul ? t->hi : t->hi - zo));
  P.ma = _mm256_set1_epi64x(t->a_mult), P.mb = _mm256_set1_epi64x(t->b_mult), P.bias = _mm256_set1_epi64x(t->bias);
  P.lo64 = _mm256_set1_epi64x(t->lo - zo), P.hi64 = _mm256_set1_epi64x(t->hi - zo);
  P.shift = _mm_cvtsi32_si128(t->shift_bits);
  P.off = _mm256_set1_epi64x(INT64_C(1) << (62 - (t->form == FIXQ_ENG_T_XNN_ADD ? t->shift_bits : 0)));
  P.fits32 = t->form == FIXQ_ENG_T_XNN_ADD && fixq__eng_xnn_add_fits32(t);
  P.ma32 = _mm256_set1_epi32((int32_t)t->a_mult), P.mb32 = _mm256_set1_epi32((int32_t)t->b_mult);
  P.bias32 = _mm256_set1_epi32((int32_t)t->bias);
  P.qlo = _mm256_set1_epi32(t->lo - zo), P.qhi = _mm256_set1_epi32(t->hi - zo);
  switch (t->form) {
    case FIXQ_ENG_T_ORT_ADD: eltwise_loop(FIXQ_ENG_T_ORT_ADD, dt, n, a, b, y, &P); break;
    case FIXQ_ENG_T_ORT_MUL: eltwise_loop(FIXQ_ENG_T_ORT_MUL, dt, n, a, b, y, &P); break;
    case FIXQ_ENG_T_XNN_ADD: eltwise_loop(FIXQ_ENG_T_XNN_ADD, dt, n, a, b, y, &P); break;
    default: eltwise_loop(FIXQ_ENG_T_XNN_MUL, dt, n, a, b, y, &P); break;
  }
  const size_t done = n / 8 * 8;
  fixq_eng_targets__scalar.eltwise(t, dt, n - done, (const uint8_t *)a + done, (const uint8_t *)b + done,
                                   (uint8_t *)y + done);
}

/* ---- QUANTIZE, ties away from zero ------------------------------------------ */

/* std::round of 8 floats: trunc, then one away from zero where the (exact) fraction is at least 1/2 */
ALWAYS_INLINE __m256 round_away8(__m256 q) {
  const __m256 neg0 = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(q, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(neg0, _mm256_sub_ps(q, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  return _mm256_add_ps(t, _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(q, neg0), _mm256_set1_ps(1.0f))));
}

/* DIV_AWAY: q clamped to [lo - zp - 1, hi - zp + 1] first (the result is monotone in q and saturates
 * there), so the int32 sum cannot wrap; ZP_DIV_AWAY: the scalar form's own clamp of zp + q */
static int quantize_away_avx2(int form, float scale, int32_t zp, fixq_dtype dt, int32_t lo, int32_t hi, size_t n,
                              const float *x, void *y) {
  size_t i = 0;
  const int zp_first = form == FIXQ_ENG_Q_ZP_DIV_AWAY;
  if (zp_first || (zp >= -(1 << 15) && zp <= (1 << 15))) {
    const __m256 s = _mm256_set1_ps(scale), fzp = _mm256_set1_ps((float)zp);
    const __m256 flo = _mm256_set1_ps(zp_first ? (float)lo : (float)(lo - zp - 1));
    const __m256 fhi = _mm256_set1_ps(zp_first ? (float)hi : (float)(hi - zp + 1));
    const __m256i vzp = _mm256_set1_epi32(zp_first ? 0 : zp), vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) break; /* the scalar form stops at the NaN */
      __m256 q = _mm256_div_ps(v, s);
      if (zp_first) q = _mm256_add_ps(fzp, q);
      q = round_away8(_mm256_min_ps(_mm256_max_ps(q, flo), fhi));
      const __m256i r = _mm256_add_epi32(_mm256_cvttps_epi32(q), vzp);
      store8((uint8_t *)y + i, _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi), dt);
    }
  }
  return fixq_eng_targets__scalar.quantize_away(form, scale, zp, dt, lo, hi, n - i, x + i, (uint8_t *)y + i);
}

const fixq_eng_targets fixq_eng_targets__avx2 = {gemm_avx2, eltwise_avx2, quantize_away_avx2};
