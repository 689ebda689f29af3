/* AVX2 elementwise add / mul, bit-identical to eltwise__scalar.c.
 *
 * 32 outputs per step in four groups of 8 int32 lanes.  uint8 data is read as
 * int8 after flipping the top bit (x ^ 0x80 == x - 128) with the zero point
 * moved by 128, and written the same way, so one code path serves every dtype
 * mix.  The tail (n % 32) runs the same code on a copy in a local buffer.
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
  if (op == FIXQ_OP_MUL) return out_stage(_mm256_mullo_epi32(va, vb), k, mode);
  const __m256i a = a_bcast ? pa : exact & 1 ? _mm256_slli_epi32(va, 19) : add_input(va, &k->ia);
  const __m256i b = b_bcast ? pb : exact & 2 ? _mm256_slli_epi32(vb, 19) : add_input(vb, &k->ib);
  return out_stage(_mm256_add_epi32(a, b), k, mode);
}

ALWAYS_INLINE __m256i widen8(const int8_t *x, __m256i flip, __m256i zp) {
  const __m128i v = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)x), _mm256_castsi256_si128(flip));
  return _mm256_sub_epi32(_mm256_cvtepi8_epi32(v), zp);
}

/* 32 outputs: zero point with int16 saturation, int8 saturation, clamp. */
ALWAYS_INLINE void store32(int8_t *y, __m256i r0, __m256i r1, __m256i r2, __m256i r3, const consts *k) {
  const __m256i w01 = _mm256_adds_epi16(_mm256_packs_epi32(r0, r1), k->zy);
  const __m256i w23 = _mm256_adds_epi16(_mm256_packs_epi32(r2, r3), k->zy);
  __m256i b = _mm256_packs_epi16(w01, w23);
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  b = _mm256_min_epi8(_mm256_max_epi8(b, k->qmin), k->qmax);
  _mm256_storeu_si256((__m256i *)y, _mm256_xor_si256(b, k->xy));
}

ALWAYS_INLINE void block32(const int8_t *a, const int8_t *b, int8_t *y, const consts *k, fixq_eltwise_op op,
                           fixq_rounding mode, int a_bcast, int b_bcast, __m256i va0, __m256i vb0, __m256i pa,
                           __m256i pb, int exact) {
  __m256i r[4];
  for (int j = 0; j < 4; j++) {
    const __m256i va = a_bcast ? va0 : widen8(a + 8 * j, k->xa, k->za);
    const __m256i vb = b_bcast ? vb0 : widen8(b + 8 * j, k->xb, k->zb);
    r[j] = eight(va, vb, k, op, mode, a_bcast, b_bcast, pa, pb, exact);
  }
  store32(y, r[0], r[1], r[2], r[3], k);
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

void fixq_eltwise__avx2(size_t n, const void *a_, int a_bcast, const void *b_, int b_bcast, void *y_,
                        const fixq_eltwise *p) {
  const int8_t *a = a_, *b = b_;
  int8_t *y = y_;
  consts k;
  consts_init(&k, p);
  if (p->op == FIXQ_OP_ADD) {
    const int ex = exact_inputs(p);
    if (p->rounding == FIXQ_ROUND_DOUBLE) ROWS(FIXQ_OP_ADD, FIXQ_ROUND_DOUBLE, ex);
    else if (p->rounding == FIXQ_ROUND_SINGLE) ROWS(FIXQ_OP_ADD, FIXQ_ROUND_SINGLE, ex);
    else ROWS(FIXQ_OP_ADD, FIXQ_ROUND_FP32, 0);
  } else {
    if (p->rounding == FIXQ_ROUND_DOUBLE) ROWS(FIXQ_OP_MUL, FIXQ_ROUND_DOUBLE, 0);
    else if (p->rounding == FIXQ_ROUND_SINGLE) ROWS(FIXQ_OP_MUL, FIXQ_ROUND_SINGLE, 0);
    else ROWS(FIXQ_OP_MUL, FIXQ_ROUND_FP32, 0);
  }
}
