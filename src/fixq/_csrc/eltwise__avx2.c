/* AVX2 elementwise add / mul, bit-identical to eltwise__scalar.c.
 *
 * Three ways, all exact: the plan of fixq_eltwise_init when it found one
 * (lin_*, fixq.h: vpmaddwd + vpmaddubsw on (a' 2^8, b' 2^8) int16 pairs for
 * the ADD form, one fma on the product for MUL's float form;
 * docs/arithmetic.md), else the fixed-point formulas below (MUL: product by
 * vpmaddwd, SRDHM and RoundingDivideByPOT), or float32.  32 outputs per step
 * in four groups of 8 int32 lanes.  uint8 data is read as int8 after
 * flipping the top bit (x ^ 0x80 == x - 128) with the zero point moved by
 * 128, and written the same way, so one code path serves every dtype mix.
 * Row tails (and heads, when streaming) run the same code on a copy in a
 * local buffer.
 *
 * ADD input stage, exact rewrite of MultiplyByQuantizedMultiplier(v << 20, M,
 * -r) for |v| <= 255 and M in [2^30, 2^31) (docs/arithmetic.md):
 * with M = Mh * 2^11 + Ml,
 *   SRDHM(v << 20, M) = floor((v*M + 2^10) / 2^11) = v*Mh + ((v*Ml + 2^10) >> 11)
 * and RoundingDivideByPOT(h, r) = (h + 2^(r-1) - [h < 0]) >> r with
 * [h < 0] = [v < 0]; single rounding is floor((v*M + 2^(10+r)) / 2^(11+r))
 * = (v*Mh + 2^(r-1) + ((v*Ml) >> 11)) >> r for r >= 1.  Both products fit
 * int32 (|v*Mh| < 2^28), so two vpmulld replace the 64-bit SRDHM.  The
 * input with the larger scale has real multiplier 0.5 exactly (M = 2^30,
 * shift 0), where the whole stage is v << 19. */
#include <stdint.h>
#include <string.h>

#include "fixq_avx2.h"

/* RoundingDivideByPOT with one exponent e for all lanes, for |x| < 2^30:
 * (x + 2^(e-1) - [x < 0]) >> e; neg is all-ones when e >= 1, else zero. */
ALWAYS_INLINE __m256i rdbpot_bounded(__m256i x, __m128i e, __m256i rnd, __m256i neg) {
  const __m256i sign = _mm256_and_si256(_mm256_srai_epi32(x, 31), neg);
  return _mm256_sra_epi32(_mm256_add_epi32(_mm256_add_epi32(x, rnd), sign), e);
}

/* Per-input constants of the ADD input stage. */
typedef struct {
  __m256i mh, ml, c1, c2, neg;
  __m128i r;
} in_stage;

typedef struct {
  __m256i xa, xb, xy;        /* 0x80 byte masks for uint8 operands */
  __m256i za, zb;            /* zero points in the int8 domain */
  __m256i zab;               /* (za, zb) int16 pairs */
  in_stage ia, ib;           /* ADD fixed point */
  __m256i m, left, right, total, rnd, neg; /* output multiplier */
  __m128i right_count;
  int has_left;
  int single_high;           /* SINGLE with 31 - shift >= 32 */
  __m256i rnd64;             /* 2^(30 - shift) in 64-bit lanes */
  __m128i high_count;        /* 31 - shift - 32 */
  __m256 sa, sb, sy, lo, hi; /* FP32 */
  __m256i zy;                /* output zero point, int16 lanes */
  __m256i qmin, qmax;        /* int8 lanes */
} consts;

/* the plans' constants (lin_row) */
typedef struct {
  __m256i hi, lo, u, t, neg;
  __m256i m2;           /* ties to even: 2^(k+1) - 1 */
  __m256i rq_d;         /* requantize form: the tie side a' <= d */
  __m256 alpha, g, gneg; /* MUL float form */
  __m256i k;
} lin_consts;

static in_stage in_stage_init(int32_t m, int32_t shift, fixq_rounding mode) {
  in_stage s;
  const int r = -shift; /* 0..31: input multipliers are <= 0.5 */
  s.mh = _mm256_set1_epi32(m >> 11);
  s.ml = _mm256_set1_epi32(m & 2047);
  s.r = _mm_cvtsi32_si128(r);
  if (mode == FIXQ_ROUND_DOUBLE) {
    s.c1 = _mm256_set1_epi32(1 << 10);
    s.c2 = _mm256_set1_epi32(r ? (int32_t)(UINT32_C(1) << (r - 1)) : 0);
    s.neg = _mm256_set1_epi32(r ? -1 : 0);
  } else {
    s.c1 = _mm256_set1_epi32(r ? 0 : 1 << 10);
    s.c2 = _mm256_set1_epi32(r ? (int32_t)(UINT32_C(1) << (r - 1)) : 0);
    s.neg = _mm256_setzero_si256();
  }
  return s;
}

static void consts_init(consts *k, const fixq_eltwise *p) {
  memset(k, 0, sizeof *k);
  const int au = p->a_dtype == FIXQ_UINT8, bu = p->b_dtype == FIXQ_UINT8, yu = p->y_dtype == FIXQ_UINT8;
  k->xa = _mm256_set1_epi8(au ? (char)0x80 : 0);
  k->xb = _mm256_set1_epi8(bu ? (char)0x80 : 0);
  k->xy = _mm256_set1_epi8(yu ? (char)0x80 : 0);
  k->za = _mm256_set1_epi32(p->a_zero_point - (au ? 128 : 0));
  k->zb = _mm256_set1_epi32(p->b_zero_point - (bu ? 128 : 0));
  k->zab = _mm256_set1_epi32((int32_t)((uint32_t)(uint16_t)(p->b_zero_point - (bu ? 128 : 0)) << 16 |
                                       (uint16_t)(p->a_zero_point - (au ? 128 : 0))));
  k->zy = _mm256_set1_epi16((int16_t)(p->y_zero_point - (yu ? 128 : 0)));
  k->qmin = _mm256_set1_epi8((char)(p->qmin - (yu ? 128 : 0)));
  k->qmax = _mm256_set1_epi8((char)(p->qmax - (yu ? 128 : 0)));
  if (p->rounding == FIXQ_ROUND_FP32) {
    k->sa = _mm256_set1_ps(p->a_scale);
    k->sb = _mm256_set1_ps(p->b_scale);
    k->sy = _mm256_set1_ps(p->y_scale);
    k->lo = _mm256_set1_ps((float)(p->qmin - p->y_zero_point));
    k->hi = _mm256_set1_ps((float)(p->qmax - p->y_zero_point));
    return;
  }
  if (p->op == FIXQ_OP_ADD) {
    k->ia = in_stage_init(p->a_multiplier, p->a_shift, p->rounding);
    k->ib = in_stage_init(p->b_multiplier, p->b_shift, p->rounding);
  }
  const int s = p->y_shift, left = s > 0 ? s : 0, right = s > 0 ? 0 : -s;
  k->m = _mm256_set1_epi32(p->y_multiplier);
  k->left = _mm256_set1_epi32(left);
  k->has_left = left > 0;
  k->right = _mm256_set1_epi32(right);
  k->right_count = _mm_cvtsi32_si128(right);
  k->rnd = _mm256_set1_epi32(right ? (int32_t)(UINT32_C(1) << (right - 1)) : 0);
  k->neg = _mm256_set1_epi32(right ? -1 : 0);
  k->total = _mm256_set1_epi32(31 - s);
  k->single_high = 31 - s >= 32;
  k->rnd64 = _mm256_set1_epi64x(INT64_C(1) << (30 - s));
  k->high_count = _mm_cvtsi32_si128(k->single_high ? 31 - s - 32 : 0);
}

ALWAYS_INLINE __m256i add_input(__m256i v, const in_stage *s) {
  const __m256i t = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(v, s->ml), s->c1), 11);
  const __m256i h = _mm256_add_epi32(_mm256_mullo_epi32(v, s->mh), t);
  const __m256i c = _mm256_add_epi32(s->c2, _mm256_and_si256(_mm256_srai_epi32(v, 31), s->neg));
  return _mm256_sra_epi32(_mm256_add_epi32(h, c), s->r);
}

/* The output multiplier on x (|x| <= 2^28 for ADD, 2^16 for MUL). */
ALWAYS_INLINE __m256i out_stage(__m256i x, const consts *k, fixq_rounding mode) {
  if (mode == FIXQ_ROUND_SINGLE) {
    if (!k->single_high) return mbqm_single(x, k->m, k->total);
    /* total >= 32 and |x*m| < 2^59: floor((x*m + 2^(total-1)) / 2^total) is
     * the high dword of the 64-bit sum shifted right by total - 32 */
    const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, k->m), k->rnd64), 32);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), k->m), k->rnd64);
    return _mm256_sra_epi32(_mm256_blend_epi32(even, odd, 0xAA), k->high_count);
  }
  if (k->has_left) x = sat_shl(x, k->left);
  /* right > 0 only when left == 0, and then |srdhm| < 2^28 */
  return rdbpot_bounded(srdhm(x, k->m), k->right_count, k->rnd, k->neg);
}

/* Eight outputs (before the zero point) from eight input differences; for
 * ADD, pa / pb hold the already scaled input when that input is broadcast,
 * and bit 0 / bit 1 of `exact` say that a / b is scaled by v << 19. */
ALWAYS_INLINE __m256i eight(__m256i va, __m256i vb, const consts *k, fixq_eltwise_op op, fixq_rounding mode,
                            int a_bcast, int b_bcast, __m256i pa, __m256i pb, int exact) {
  if (mode == FIXQ_ROUND_FP32) {
    const __m256 fa = a_bcast ? _mm256_castsi256_ps(pa) : _mm256_mul_ps(_mm256_cvtepi32_ps(va), k->sa);
    const __m256 fb = b_bcast ? _mm256_castsi256_ps(pb) : _mm256_mul_ps(_mm256_cvtepi32_ps(vb), k->sb);
    const __m256 f = op == FIXQ_OP_ADD ? _mm256_add_ps(fa, fb) : _mm256_mul_ps(fa, fb);
    return clamp_round_f32(_mm256_div_ps(f, k->sy), k->lo, k->hi);
  }
  const __m256i a = a_bcast ? pa : exact & 1 ? _mm256_slli_epi32(va, 19) : add_input(va, &k->ia);
  const __m256i b = b_bcast ? pb : exact & 2 ? _mm256_slli_epi32(vb, 19) : add_input(vb, &k->ib);
  return out_stage(_mm256_add_epi32(a, b), k, mode);
}

ALWAYS_INLINE __m256i widen8(const int8_t *x, __m256i flip, __m256i zp) {
  const __m128i v = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)x), _mm256_castsi256_si128(flip));
  return _mm256_sub_epi32(_mm256_cvtepi8_epi32(v), zp);
}

/* 32 outputs: zero point with int16 saturation, int8 saturation, clamp. */
ALWAYS_INLINE void store32(int8_t *y, __m256i r0, __m256i r1, __m256i r2, __m256i r3, __m256i zy, const consts *k) {
  const __m256i w01 = _mm256_adds_epi16(_mm256_packs_epi32(r0, r1), zy);
  const __m256i w23 = _mm256_adds_epi16(_mm256_packs_epi32(r2, r3), zy);
  __m256i b = _mm256_packs_epi16(w01, w23);
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  b = _mm256_min_epi8(_mm256_max_epi8(b, k->qmin), k->qmax);
  _mm256_storeu_si256((__m256i *)y, _mm256_xor_si256(b, k->xy));
}

/* MUL in fixed point: (a', b') int16 pairs minus (za', zb'), then
 * P = va*vb = vpmaddwd((va, vb), (vb, 0)); elements as in lin_block32. */
ALWAYS_INLINE __m256i mul_pairs8(__m128i pairs8, const consts *k, fixq_rounding mode) {
  const __m256i d = _mm256_sub_epi16(_mm256_cvtepi8_epi16(pairs8), k->zab);
  return out_stage(_mm256_madd_epi16(d, _mm256_srli_epi32(d, 16)), k, mode);
}

ALWAYS_INLINE void mul_block32(const int8_t *a, const int8_t *b, int8_t *y, const consts *k, fixq_rounding mode,
                               int a_bcast, int b_bcast) {
  const __m256i av = _mm256_xor_si256(a_bcast ? _mm256_set1_epi8(a[0]) : _mm256_loadu_si256((const __m256i *)a), k->xa);
  const __m256i bv = _mm256_xor_si256(b_bcast ? _mm256_set1_epi8(b[0]) : _mm256_loadu_si256((const __m256i *)b), k->xb);
  const __m256i t0 = _mm256_unpacklo_epi8(av, bv), t1 = _mm256_unpackhi_epi8(av, bv);
  const __m256i r0 = mul_pairs8(_mm256_castsi256_si128(t0), k, mode);
  const __m256i r2 = mul_pairs8(_mm256_extracti128_si256(t0, 1), k, mode);
  const __m256i r1 = mul_pairs8(_mm256_castsi256_si128(t1), k, mode);
  const __m256i r3 = mul_pairs8(_mm256_extracti128_si256(t1, 1), k, mode);
  store32(y, r0, r1, r2, r3, k->zy, k);
}

ALWAYS_INLINE void block32(const int8_t *a, const int8_t *b, int8_t *y, const consts *k, fixq_eltwise_op op,
                           fixq_rounding mode, int a_bcast, int b_bcast, __m256i va0, __m256i vb0, __m256i pa,
                           __m256i pb, int exact) {
  if (op == FIXQ_OP_MUL && mode != FIXQ_ROUND_FP32) {
    mul_block32(a, b, y, k, mode, a_bcast, b_bcast);
    return;
  }
  __m256i r[4];
  for (int j = 0; j < 4; j++) {
    const __m256i va = a_bcast ? va0 : widen8(a + 8 * j, k->xa, k->za);
    const __m256i vb = b_bcast ? vb0 : widen8(b + 8 * j, k->xb, k->zb);
    r[j] = eight(va, vb, k, op, mode, a_bcast, b_bcast, pa, pb, exact);
  }
  store32(y, r[0], r[1], r[2], r[3], k->zy, k);
}

ALWAYS_INLINE void row(size_t n, const int8_t *a, const int8_t *b, int8_t *y, const consts *k,
                       fixq_eltwise_op op, fixq_rounding mode, int a_bcast, int b_bcast, int exact) {
  __m256i va0 = _mm256_setzero_si256(), vb0 = va0, pa = va0, pb = va0;
  if (a_bcast) {
    va0 = _mm256_sub_epi32(_mm256_set1_epi32((int8_t)(a[0] ^ (int8_t)_mm256_extract_epi8(k->xa, 0))), k->za);
    if (mode == FIXQ_ROUND_FP32) pa = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(va0), k->sa));
    else if (op == FIXQ_OP_ADD) pa = add_input(va0, &k->ia);
  }
  if (b_bcast) {
    vb0 = _mm256_sub_epi32(_mm256_set1_epi32((int8_t)(b[0] ^ (int8_t)_mm256_extract_epi8(k->xb, 0))), k->zb);
    if (mode == FIXQ_ROUND_FP32) pb = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(vb0), k->sb));
    else if (op == FIXQ_OP_ADD) pb = add_input(vb0, &k->ib);
  }
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    block32(a_bcast ? a : a + i, b_bcast ? b : b + i, y + i, k, op, mode, a_bcast, b_bcast, va0, vb0, pa, pb,
            exact);
  if (i < n) {
    int8_t ta[32] = {0}, tb[32] = {0}, ty[32];
    const size_t t = n - i;
    if (!a_bcast) memcpy(ta, a + i, t);
    if (!b_bcast) memcpy(tb, b + i, t);
    block32(a_bcast ? a : ta, b_bcast ? b : tb, ty, k, op, mode, a_bcast, b_bcast, va0, vb0, pa, pb, exact);
    memcpy(y + i, ty, t);
  }
}

/* ---- the plans (lin_k > 0, fixq.h) ----
 * ADD form: n = a'*ra + b'*rb + u, (n + (n < t ? neg : 0)) >> k.  Interleaving
 * the a' and b' bytes and unpacking them under zero bytes gives int16 pairs
 * z = (a' 2^8, b' 2^8), dword i holding output i.  With ra = rh*2^8 + rl
 * (0 <= rl < 2^8, rh < 2^14): vpmaddwd(z, (rh, rh_b)) = 2^8 (a' rh + b' rh_b);
 * vpmaddubsw((0, rl, 0, rl_b) bytes, z) = (a' rl, b' rl_b) int16 words (|.| <=
 * 255 * 128, no saturation), summed by vpmaddwd against ones.  Both sums fit
 * int32 and so does n (init keeps |n| < 2^31). */

ALWAYS_INLINE __m256i lin8(__m256i z, const lin_consts *c, int ties) {
  const __m256i lo = _mm256_madd_epi16(_mm256_maddubs_epi16(c->lo, z), _mm256_set1_epi16(1));
  __m256i n = _mm256_add_epi32(_mm256_madd_epi16(z, c->hi), _mm256_add_epi32(lo, c->u));
  if (ties == 1) n = _mm256_add_epi32(n, _mm256_and_si256(_mm256_cmpgt_epi32(c->t, n), c->neg));
  if (ties == 2) n = _mm256_add_epi32(n, _mm256_cmpeq_epi32(_mm256_and_si256(n, c->m2), c->t)); /* -1 at ties */
  return _mm256_srav_epi32(n, c->k);
}

/* MUL float form: P = (a' - za')(b' - zb') by vpmaddwd as in mul_pairs8 (P is
 * exact in float32), f = fma(P, alpha, P < t ? gneg : g) rounded once (under
 * MXCSR: fixq_eltwise__avx2 runs the form only when its rounding field is the
 * default, nearest even), floor. */
ALWAYS_INLINE __m256i mulf8(__m256i z, const lin_consts *c, const consts *k, int split, int biased) {
  const __m256i d = _mm256_sub_epi16(_mm256_srai_epi16(z, 8), k->zab);
  const __m256i prod = _mm256_madd_epi16(d, _mm256_srli_epi32(d, 16));
  const __m256 g = split ? _mm256_blendv_ps(c->g, c->gneg, _mm256_castsi256_ps(_mm256_cmpgt_epi32(c->t, prod))) : c->g;
  /* lin_k = 2: (float)(P + 1.5 * 2^23) by its bits, an integer add in place of the conversion */
  const __m256 pf = biased ? _mm256_castsi256_ps(_mm256_add_epi32(prod, _mm256_set1_epi32(FIXQ__MUL_BIAS_BITS)))
                           : _mm256_cvtepi32_ps(prod);
  return _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_fmadd_ps(pf, c->alpha, g)));
}

/* form: ADD (0), ADD with ties (1), fixq.h's int8 requantize form (2: b' =
 * -[a' > d], rb = neg, u + neg, which adds neg exactly where a' <= d), MUL
 * float form with one offset (3) or two (4), ADD with ties to even (5), MUL
 * float form on lin_k = 2's biased product with one offset (6) or two (7).  flip: an operand is uint8
 * (flipped to a' = x - 128).  clamp: the output clamp is narrower than int8
 * saturation. */
ALWAYS_INLINE __m256i plan8(__m256i z, const lin_consts *c, const consts *k, int form) {
  if (form == 3 || form == 4 || form == 6 || form == 7) return mulf8(z, c, k, form == 4 || form == 7, form >= 6);
  return lin8(z, c, form == 1 ? 1 : form == 5 ? 2 : 0);
}

ALWAYS_INLINE __m256i lin_block32(__m256i av, __m256i bv, const lin_consts *c, const consts *k, int form, int flip,
                                  int clamp) {
  if (flip) {
    av = _mm256_xor_si256(av, k->xa);
    bv = _mm256_xor_si256(bv, k->xb);
  }
  if (form == 2) bv = _mm256_cmpgt_epi8(av, c->rq_d);
  const __m256i zero = _mm256_setzero_si256();
  /* per 128-bit lane j: t0 pairs 16j..16j+7, t1 pairs 16j+8..16j+15 */
  const __m256i t0 = _mm256_unpacklo_epi8(av, bv), t1 = _mm256_unpackhi_epi8(av, bv);
  const __m256i r0 = plan8(_mm256_unpacklo_epi8(zero, t0), c, k, form);
  const __m256i r1 = plan8(_mm256_unpackhi_epi8(zero, t0), c, k, form);
  const __m256i r2 = plan8(_mm256_unpacklo_epi8(zero, t1), c, k, form);
  const __m256i r3 = plan8(_mm256_unpackhi_epi8(zero, t1), c, k, form);
  /* the zero point is inside u (g); int32 -> int16 -> int8 saturation lands the outputs in order */
  __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(r0, r1), _mm256_packs_epi32(r2, r3));
  if (clamp) b = _mm256_min_epi8(_mm256_max_epi8(b, k->qmin), k->qmax);
  return flip ? _mm256_xor_si256(b, k->xy) : b;
}

static void lin_consts_init(lin_consts *c, const fixq_eltwise *p) {
  const int32_t ra = p->lin_ra, rb = p->lin_rb;
  memset(c, 0, sizeof *c);
  c->u = _mm256_set1_epi32(p->lin_u);
  c->t = _mm256_set1_epi32(p->lin_t);
  c->neg = _mm256_set1_epi32(p->lin_neg);
  c->m2 = _mm256_set1_epi32((int32_t)((UINT32_C(2) << p->lin_k) - 1));
  c->k = _mm256_set1_epi32(p->lin_k);
  if (p->op == FIXQ_OP_MUL && rb >= 0) { /* fixq.h's MUL float form */
    float f[3];
    memcpy(&f[0], &p->lin_ra, 4);
    memcpy(&f[1], &p->lin_u, 4);
    memcpy(&f[2], &p->lin_neg, 4);
    c->alpha = _mm256_set1_ps(f[0]);
    c->g = _mm256_set1_ps(f[1]);
    c->gneg = _mm256_set1_ps(f[2]);
    return;
  }
  const int32_t rbb = rb < 0 ? p->lin_neg : rb; /* a MUL with lin_rb < 0: fixq.h's requantize form */
  c->rq_d = _mm256_set1_epi8((char)p->lin_t);
  if (rb < 0) c->u = _mm256_set1_epi32(p->lin_u + p->lin_neg);
  c->hi = _mm256_set1_epi32((int32_t)((uint32_t)(rbb >> 8) << 16 | (uint32_t)(ra >> 8)));
  c->lo = _mm256_set1_epi32((int32_t)((uint32_t)(rbb & 255) << 24 | (uint32_t)(ra & 255) << 8));
}

/* Up to 32 outputs through a local buffer (row heads and tails). */
ALWAYS_INLINE void lin_part(size_t t, const int8_t *a, const int8_t *b, int8_t *y, const lin_consts *c,
                            const consts *k, int a_bcast, int b_bcast, int form, int flip, int clamp) {
  int8_t ta[32] = {0}, tb[32] = {0}, ty[32];
  if (!a_bcast) memcpy(ta, a, t);
  if (!b_bcast) memcpy(tb, b, t);
  const __m256i av = a_bcast ? _mm256_set1_epi8(a[0]) : _mm256_loadu_si256((const __m256i *)ta);
  const __m256i bv = b_bcast ? _mm256_set1_epi8(b[0]) : _mm256_loadu_si256((const __m256i *)tb);
  _mm256_storeu_si256((__m256i *)ty, lin_block32(av, bv, c, k, form, flip, clamp));
  memcpy(y, ty, t);
}

/* Calls with this many outputs (24 MB touched and more: past the last-level
 * cache) store with non-temporal writes, which skip reading y's lines first. */
#define STREAM_MIN ((size_t)1 << 23)

ALWAYS_INLINE void lin_row(size_t n, const int8_t *a, const int8_t *b, int8_t *y, const lin_consts *lc,
                           const consts *k, int a_bcast, int b_bcast, int form, int flip, int clamp, int stream) {
  const lin_consts c = *lc;
  const __m256i av0 = _mm256_set1_epi8(a[0]), bv0 = _mm256_set1_epi8(b[0]);
  size_t i = 0;
  if (stream && ((uintptr_t)y & 31)) { /* up to y's next 32-byte boundary */
    i = n < 32 - ((uintptr_t)y & 31) ? n : 32 - ((uintptr_t)y & 31);
    lin_part(i, a, b, y, &c, k, a_bcast, b_bcast, form, flip, clamp);
  }
  for (; i + 32 <= n; i += 32) {
    const __m256i av = a_bcast ? av0 : _mm256_loadu_si256((const __m256i *)(a + i));
    const __m256i bv = b_bcast ? bv0 : _mm256_loadu_si256((const __m256i *)(b + i));
    const __m256i v = lin_block32(av, bv, &c, k, form, flip, clamp);
    if (stream) _mm256_stream_si256((__m256i *)(y + i), v);
    else _mm256_storeu_si256((__m256i *)(y + i), v);
  }
  if (i < n)
    lin_part(n - i, a_bcast ? a : a + i, b_bcast ? b : b + i, y + i, &c, k, a_bcast, b_bcast, form, flip, clamp);
}

#define LIN_FLIP(form, flip)                                                                   \
  do {                                                                                         \
    if (clamp) lin_row(n, a, b, y, &lc, &k, a_bcast, b_bcast, form, flip, 1, stream);          \
    else lin_row(n, a, b, y, &lc, &k, a_bcast, b_bcast, form, flip, 0, stream);                \
  } while (0)
#define LIN_FORM(form)                                                                         \
  do {                                                                                         \
    if (flip) LIN_FLIP(form, 1);                                                               \
    else LIN_FLIP(form, 0);                                                                    \
  } while (0)

#define ROW(op, mode, ab, bb, ex) row(n, a, b, y, &k, op, mode, ab, bb, ex)
#define ROWS(op, mode, ex)                                   \
  do {                                                       \
    if (a_bcast && b_bcast) ROW(op, mode, 1, 1, 0);          \
    else if (a_bcast) ROW(op, mode, 1, 0, 0);                \
    else if (b_bcast) ROW(op, mode, 0, 1, 0);                \
    else if ((ex) == 1) ROW(op, mode, 0, 0, 1);              \
    else if ((ex) == 2) ROW(op, mode, 0, 0, 2);              \
    else if ((ex) == 3) ROW(op, mode, 0, 0, 3);              \
    else ROW(op, mode, 0, 0, 0);                             \
  } while (0)

/* Bit 0 / 1: input a / b has the multiplier 2^30, shift 0 (v << 19). */
static int exact_inputs(const fixq_eltwise *p) {
  return (p->a_multiplier == (1 << 30) && p->a_shift == 0) | (p->b_multiplier == (1 << 30) && p->b_shift == 0) << 1;
}

void fixq_eltwise__avx2(size_t rows, size_t n, const void *a0, ptrdiff_t a_stride, int a_bcast, const void *b0,
                        ptrdiff_t b_stride, int b_bcast, void *y0, ptrdiff_t y_stride, const fixq_eltwise *p) {
  consts k;
  lin_consts lc;
  consts_init(&k, p);
  const int flip = p->a_dtype == FIXQ_UINT8 || p->b_dtype == FIXQ_UINT8 || p->y_dtype == FIXQ_UINT8;
  const int32_t oy = p->y_dtype == FIXQ_UINT8 ? 128 : 0;
  const int clamp = p->qmin - oy > INT8_MIN || p->qmax - oy < INT8_MAX;
  const int ex = exact_inputs(p);
  const int stream = rows * n >= STREAM_MIN && n >= 4096; /* row heads and tails go through a buffer here */
  lin_consts_init(&lc, p);
  /* the MUL float form's fma rounds under MXCSR: a caller's other mode gets the exact kernel */
  const int planned = p->lin_k > 0 && (p->op != FIXQ_OP_MUL || p->lin_rb < 0 || (_mm_getcsr() & 0x6000) == 0);
  for (size_t r = 0; r < rows; r++) {
    const int8_t *a = (const int8_t *)a0 + (ptrdiff_t)r * a_stride, *b = (const int8_t *)b0 + (ptrdiff_t)r * b_stride;
    int8_t *y = (int8_t *)y0 + (ptrdiff_t)r * y_stride;
    if (planned && p->op == FIXQ_OP_MUL && p->lin_rb >= 0) {
      if (p->lin_k == 2 && p->lin_u != p->lin_neg) LIN_FORM(7);
      else if (p->lin_k == 2) LIN_FORM(6);
      else if (p->lin_u != p->lin_neg) LIN_FORM(4);
      else LIN_FORM(3);
    } else if (planned) {
      if (p->op == FIXQ_OP_MUL && p->lin_neg != 0) LIN_FORM(2); /* requantize form (lin_rb < 0) */
      else if (p->op == FIXQ_OP_MUL) LIN_FORM(0);                /* without ties: b' = 1 times rb = 0 */
      else if (p->lin_neg == 1) LIN_FORM(5);
      else if (p->lin_neg != 0) LIN_FORM(1);
      else LIN_FORM(0);
    } else if (p->op == FIXQ_OP_ADD) {
      if (p->rounding == FIXQ_ROUND_DOUBLE) ROWS(FIXQ_OP_ADD, FIXQ_ROUND_DOUBLE, ex);
      else if (p->rounding == FIXQ_ROUND_SINGLE) ROWS(FIXQ_OP_ADD, FIXQ_ROUND_SINGLE, ex);
      else ROWS(FIXQ_OP_ADD, FIXQ_ROUND_FP32, 0);
    } else {
      if (p->rounding == FIXQ_ROUND_DOUBLE) ROWS(FIXQ_OP_MUL, FIXQ_ROUND_DOUBLE, 0);
      else if (p->rounding == FIXQ_ROUND_SINGLE) ROWS(FIXQ_OP_MUL, FIXQ_ROUND_SINGLE, 0);
      else ROWS(FIXQ_OP_MUL, FIXQ_ROUND_FP32, 0);
    }
  }
  if (stream) _mm_sfence(); /* the non-temporal stores before whatever the caller does next */
}
