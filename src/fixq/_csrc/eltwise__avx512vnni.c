/* AVX-512 (BW + VNNI) elementwise add / mul on the linear plan of
 * fixq_eltwise_init, bit-identical to eltwise__scalar.c.  Parameter sets
 * without a plan run the AVX2 kernels (fixq_eltwise__avx2).
 *
 * 64 outputs per step.  uint8 operands are read as int8 after flipping the
 * top bit (x ^ 0x80 == x - 128, the plan's a', b'); the output likewise.
 * Interleaving a' and b' bytes and unpacking them under zero bytes gives
 * int16 pairs (a' * 2^8, b' * 2^8), dword i holding output i.  With
 * ra = rh * 2^8 + rl (0 <= rl < 2^8, rh < 2^14):
 *   vpdpwssd: u + (a' 2^8) rh + (b' 2^8) rh_b                 (int16 pairs)
 *   vpdpbusd: + rl a' + rl_b b'   (bytes 1 and 3 of the dword are a', b')
 * which is n = a' ra + b' rb + u exactly (both accumulate modulo 2^32 and n
 * fits int32).  MUL's float plan: P by vpmaddwd, one vfmadd and a
 * conversion with the roundings given in the instructions.  Rows of 256+
 * outputs start with a masked step up to y's first 64-byte boundary (split
 * line stores cost ~5%); tails use masked loads and stores. */
#include <stdint.h>
#include <string.h>

#include "fixq_avx2.h"

#define AVX512_INLINE static inline __attribute__((always_inline))

typedef struct {
  __m512i flip_a, flip_b, flip_y; /* 0x80 bytes for uint8 operands */
  __m512i hi, lo, u, t, neg;
  __m512 alpha, g, gneg;           /* MUL float form */
  __m512i qmin, qmax;              /* int8 domain */
  __m512i rq_d;                    /* requantize form: the tie side a' <= d */
  __m512i kv;                      /* k per lane: vpsravd (Zen 4 runs the xmm-count vpsrad ~13% slower here) */
  __m512i iu0, iu1, is0, is1, sk, pc; /* MUL's product by vpdpbusd (mul_layout) */
  __m512i m2;                          /* ties to even: 2^(k+1) - 1 */
} plan512;

/* ties: 1 adds neg below t, 2 rounds exact ties to even (neg = -1 where n's
 * low k + 1 bits equal t: fixq.h's lin_neg = 1). */
AVX512_INLINE __m512i finish16(__m512i n, const plan512 *c, int ties) {
  if (ties == 1) n = _mm512_mask_add_epi32(n, _mm512_cmplt_epi32_mask(n, c->t), n, c->neg);
  if (ties == 2) n = _mm512_mask_add_epi32(n, _mm512_cmpeq_epi32_mask(_mm512_and_si512(n, c->m2), c->t), n, c->neg);
  return _mm512_srav_epi32(n, c->kv);
}

/* ADD form: n for the 16 pairs (a' 2^8, b' 2^8) in z. */
AVX512_INLINE __m512i add16(__m512i z, const plan512 *c, int ties) {
  return finish16(_mm512_dpbusd_epi32(_mm512_dpwssd_epi32(c->u, z, c->hi), c->lo, z), c, ties);
}

/* MUL float form on 16 outputs from interleaved (x, y) byte pairs, tu as
 * uint8 (x' + 128) and ts as int8 (x'): P by one vpdpbusd (mul_layout), f =
 * fma(P, alpha, P < t ? gneg : g) rounded once to nearest even, then floor;
 * both roundings are given in the instructions. */
AVX512_INLINE __m512i mul16(__m512i tu, __m512i ts, __m512i iu, __m512i is, const plan512 *c, int split,
                            int biased) {
  const __m512i su = _mm512_shuffle_epi8(tu, iu);
  const __m512i ss = _mm512_mask_shuffle_epi8(c->sk, _cvtu64_mask64(UINT64_C(0x1111111111111111)), ts, is);
  const __m512i prod = _mm512_dpbusd_epi32(c->pc, su, ss); /* biased: the bits of (float)(P + 1.5 * 2^23) */
  const __m512 g = split ? _mm512_mask_blend_ps(_mm512_cmplt_epi32_mask(prod, c->t), c->g, c->gneg) : c->g;
  const __m512 pf = biased ? _mm512_castsi512_ps(prod) : _mm512_cvtepi32_ps(prod);
  const __m512 f = _mm512_fmadd_round_ps(pf, c->alpha, g, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
}

/* 64 outputs from 64 a and 64 b bytes (int8 domain after the flips).  form:
 * ADD (0), MUL (1; 3 with lin_k = 2's biased product), or int8 requantize
 * (2: b' = -[a' > d], rb = neg, u + neg, which adds neg exactly where a' <= d). */
AVX512_INLINE __m512i block64(__m512i av, __m512i bv, const plan512 *c, int form, int flip, int ties, int clamp) {
  const int mul = form == 1 || form == 3;
  if (flip) {
    av = _mm512_xor_si512(av, c->flip_a);
    bv = _mm512_xor_si512(bv, c->flip_b);
  }
  if (form == 2) bv = _mm512_movm_epi8(_mm512_cmpgt_epi8_mask(av, c->rq_d));
  const __m512i zero = _mm512_setzero_si512();
  /* per 128-bit lane j: t0 pairs 16j..16j+7, t1 pairs 16j+8..16j+15 */
  const __m512i t0 = _mm512_unpacklo_epi8(av, bv), t1 = _mm512_unpackhi_epi8(av, bv);
  __m512i r0, r1, r2, r3;
  if (mul) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80), u0 = _mm512_xor_si512(t0, x80), u1 = _mm512_xor_si512(t1, x80);
    r0 = mul16(u0, t0, c->iu0, c->is0, c, ties, form == 3);
    r1 = mul16(u0, t0, c->iu1, c->is1, c, ties, form == 3);
    r2 = mul16(u1, t1, c->iu0, c->is0, c, ties, form == 3);
    r3 = mul16(u1, t1, c->iu1, c->is1, c, ties, form == 3);
  } else {
    r0 = add16(_mm512_unpacklo_epi8(zero, t0), c, ties);
    r1 = add16(_mm512_unpackhi_epi8(zero, t0), c, ties);
    r2 = add16(_mm512_unpacklo_epi8(zero, t1), c, ties);
    r3 = add16(_mm512_unpackhi_epi8(zero, t1), c, ties);
  }
  /* int32 -> int16 -> int8 saturation lands the outputs in order in each lane */
  __m512i y = _mm512_packs_epi16(_mm512_packs_epi32(r0, r1), _mm512_packs_epi32(r2, r3));
  if (clamp) y = _mm512_min_epi8(_mm512_max_epi8(y, c->qmin), c->qmax);
  return flip ? _mm512_xor_si512(y, c->flip_y) : y;
}

/* Calls with this many outputs (24 MB touched and more: past the last-level
 * cache) store with non-temporal writes, which skip reading y's lines first. */
#define STREAM_MIN ((size_t)1 << 23)

AVX512_INLINE void plan_rows(size_t rows, size_t n, const int8_t *a0, ptrdiff_t a_stride, const int8_t *b0,
                             ptrdiff_t b_stride, int8_t *y0, ptrdiff_t y_stride, const plan512 *pc, int a_bcast,
                             int b_bcast, int form, int flip, int ties, int clamp, int stream) {
  const plan512 c = *pc; /* once per call: a copy per row made rows of 1024 2.6x slower (Zen 4) */
  for (size_t r = 0; r < rows; r++) {
    const int8_t *a = a0 + (ptrdiff_t)r * a_stride, *b = b0 + (ptrdiff_t)r * b_stride;
    int8_t *y = y0 + (ptrdiff_t)r * y_stride;
    const __m512i av0 = _mm512_set1_epi8(a[0]), bv0 = _mm512_set1_epi8(b[0]);
    size_t i = 0;
    if (n >= 256 && ((uintptr_t)y & 63)) { /* up to y's next 64-byte boundary: aligned (or streamed) stores */
      const size_t head = n < 64 - ((uintptr_t)y & 63) ? n : 64 - ((uintptr_t)y & 63);
      const __mmask64 m = _cvtu64_mask64((UINT64_C(1) << head) - 1);
      const __m512i av = a_bcast ? av0 : _mm512_maskz_loadu_epi8(m, a);
      const __m512i bv = b_bcast ? bv0 : _mm512_maskz_loadu_epi8(m, b);
      _mm512_mask_storeu_epi8(y, m, block64(av, bv, &c, form, flip, ties, clamp));
      i = head;
    }
    for (; i + 64 <= n; i += 64) {
      const __m512i av = a_bcast ? av0 : _mm512_loadu_si512(a + i);
      const __m512i bv = b_bcast ? bv0 : _mm512_loadu_si512(b + i);
      const __m512i v = block64(av, bv, &c, form, flip, ties, clamp);
      if (stream) _mm512_stream_si512((void *)(y + i), v);
      else _mm512_storeu_si512(y + i, v);
    }
    if (i < n) {
      const __mmask64 m = _cvtu64_mask64((UINT64_C(1) << (n - i)) - 1); /* n - i < 64 */
      const __m512i av = a_bcast ? av0 : _mm512_maskz_loadu_epi8(m, a + i);
      const __m512i bv = b_bcast ? bv0 : _mm512_maskz_loadu_epi8(m, b + i);
      _mm512_mask_storeu_epi8(y + i, m, block64(av, bv, &c, form, flip, ties, clamp));
    }
  }
}

/* MUL's product P = (a' - za')(b' - zb') (int8 domain) as one vpdpbusd on
 * byte pairs: with x one operand, y the other, X = x' + 128 and ZX = zx' + 128
 * (uint8), Y and ZY likewise,
 *   P = (X - ZX)(y' - zy') = X y' + (-zy') X + (-ZX) Y + ZX ZY,
 * so dword i takes the uint8 bytes (X, v1, v2, v3) against the int8 bytes
 * (y', c1, c2, c3) with the constants c in [-128, 127] and ZX ZY in the
 * accumulator: -zy' in one byte against X and -ZX in two against Y, or, when
 * zy' = -128, 64 + 64 against X and -ZX (then >= -128) against Y.  x = a
 * fits unless zb' = -128 and ZA > 128, when x = b does (-za' < 0).  Bytes as
 * interleaved (a, b) pairs: output i of a lane is at 2i and 2i + 1. */
static int mul_layout_for(plan512 *c, int x_is_a, int32_t zx, int32_t zy) {
  const int32_t cx = -zy, cy = -(zx + 128);
  int8_t vars[3], coef[3]; /* which operand (0: x, 1: y) each of bytes 1..3 reads, and its constant */
  if (cx <= 127) {
    vars[0] = 0, coef[0] = (int8_t)cx;
    vars[1] = vars[2] = 1, coef[1] = (int8_t)(cy - cy / 2), coef[2] = (int8_t)(cy / 2);
  } else if (cy >= -128) {
    vars[0] = vars[1] = 0, coef[0] = coef[1] = 64, vars[2] = 1, coef[2] = (int8_t)cy;
  } else {
    return 0;
  }
  int8_t iu[2][16], is[2][16], sk[16];
  for (int h = 0; h < 2; h++)
    for (int i = 0; i < 4; i++) {
      const int o = 4 * h + i, px = 2 * o + !x_is_a, py = 2 * o + x_is_a;
      iu[h][4 * i] = (int8_t)px;
      is[h][4 * i] = (int8_t)py;
      for (int j = 0; j < 3; j++) {
        iu[h][4 * i + 1 + j] = (int8_t)(vars[j] ? py : px);
        is[h][4 * i + 1 + j] = 0;
        sk[4 * i + 1 + j] = coef[j];
      }
      sk[4 * i] = 0;
    }
  c->iu0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)iu[0]));
  c->iu1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)iu[1]));
  c->is0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)is[0]));
  c->is1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)is[1]));
  c->sk = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)sk));
  c->pc = _mm512_set1_epi32((zx + 128) * (zy + 128));
  return 1;
}

static void mul_layout(plan512 *c, int32_t za, int32_t zb) {
  if (!mul_layout_for(c, 1, za, zb)) mul_layout_for(c, 0, zb, za);
}

static void plan_init(plan512 *c, const fixq_eltwise *p) {
  const int au = p->a_dtype == FIXQ_UINT8, bu = p->b_dtype == FIXQ_UINT8, yu = p->y_dtype == FIXQ_UINT8;
  const int32_t ra = p->lin_ra, rb = p->lin_rb;
  c->flip_a = _mm512_set1_epi8(au ? (char)0x80 : 0);
  c->flip_b = _mm512_set1_epi8(bu ? (char)0x80 : 0);
  c->flip_y = _mm512_set1_epi8(yu ? (char)0x80 : 0);
  c->qmin = _mm512_set1_epi8((char)(p->qmin - (yu ? 128 : 0)));
  c->qmax = _mm512_set1_epi8((char)(p->qmax - (yu ? 128 : 0)));
  c->u = _mm512_set1_epi32(p->lin_u);
  c->t = _mm512_set1_epi32(p->lin_t);
  c->neg = _mm512_set1_epi32(p->lin_neg == 1 ? -1 : p->lin_neg);
  c->m2 = _mm512_set1_epi32((int32_t)((UINT32_C(2) << p->lin_k) - 1));
  c->kv = _mm512_set1_epi32(p->lin_k);
  c->hi = c->lo = c->rq_d = c->iu0 = c->iu1 = c->is0 = c->is1 = c->sk = c->pc = _mm512_setzero_si512();
  c->alpha = c->g = c->gneg = _mm512_setzero_ps();
  if (p->op == FIXQ_OP_MUL && rb >= 0) { /* fixq.h's MUL float form */
    float f[3];
    memcpy(&f[0], &p->lin_ra, 4);
    memcpy(&f[1], &p->lin_u, 4);
    memcpy(&f[2], &p->lin_neg, 4);
    c->alpha = _mm512_set1_ps(f[0]);
    c->g = _mm512_set1_ps(f[1]);
    c->gneg = _mm512_set1_ps(f[2]);
    mul_layout(c, p->a_zero_point - (au ? 128 : 0), p->b_zero_point - (bu ? 128 : 0));
    if (p->lin_k == 2) { /* P + FIXQ__MUL_BIAS as float bits, compared against t likewise */
      c->pc = _mm512_add_epi32(c->pc, _mm512_set1_epi32(FIXQ__MUL_BIAS_BITS));
      c->t = _mm512_set1_epi32(p->lin_t + FIXQ__MUL_BIAS_BITS);
    }
    return;
  }
  const int32_t rbb = rb < 0 ? p->lin_neg : rb; /* a MUL with lin_rb < 0: fixq.h's requantize form */
  c->rq_d = _mm512_set1_epi8((char)p->lin_t);
  if (rb < 0) c->u = _mm512_set1_epi32(p->lin_u + p->lin_neg);
  c->hi = _mm512_set1_epi32((int32_t)((uint32_t)(rbb >> 8) << 16 | (uint32_t)(ra >> 8)));
  c->lo = _mm512_set1_epi32((int32_t)((uint32_t)(rbb & 255) << 24 | (uint32_t)(ra & 255) << 8));
}

#define PLAN_ROW(form, flip, ties, clamp)                                                                     \
  plan_rows(rows, n, (const int8_t *)a0, a_stride, (const int8_t *)b0, b_stride, (int8_t *)y0, y_stride, &c, a_bcast, \
            b_bcast, form, flip, ties, clamp, stream)
#define PLAN_CLAMP(form, flip, ties)                 \
  do {                                               \
    if (clamp) PLAN_ROW(form, flip, ties, 1);        \
    else PLAN_ROW(form, flip, ties, 0);              \
  } while (0)
#define PLAN_TIES(form, flip)                        \
  do {                                               \
    if (ties == 2) PLAN_CLAMP(form, flip, 2);        \
    else if (ties) PLAN_CLAMP(form, flip, 1);        \
    else PLAN_CLAMP(form, flip, 0);                  \
  } while (0)
#define PLAN_FLIP(form)                              \
  do {                                               \
    if (flip) PLAN_TIES(form, 1);                    \
    else PLAN_TIES(form, 0);                         \
  } while (0)

void fixq_eltwise__avx512vnni(size_t rows, size_t n, const void *a0, ptrdiff_t a_stride, int a_bcast,
                              const void *b0, ptrdiff_t b_stride, int b_bcast, void *y0, ptrdiff_t y_stride,
                              const fixq_eltwise *p) {
  if (p->lin_k == 0) {
    fixq_eltwise__avx2(rows, n, a0, a_stride, a_bcast, b0, b_stride, b_bcast, y0, y_stride, p);
    return;
  }
  plan512 c;
  plan_init(&c, p);
  const int32_t oy = p->y_dtype == FIXQ_UINT8 ? 128 : 0;
  const int clamp = p->qmin - oy > INT8_MIN || p->qmax - oy < INT8_MAX;
  const int flip = p->a_dtype == FIXQ_UINT8 || p->b_dtype == FIXQ_UINT8 || p->y_dtype == FIXQ_UINT8;
  const int stream = rows * n >= STREAM_MIN;
  const int ties = p->op == FIXQ_OP_ADD ? (p->lin_neg == 1 ? 2 : p->lin_neg != 0)
                                         : p->lin_rb >= 0 && p->lin_u != p->lin_neg;
  if (p->op == FIXQ_OP_MUL && p->lin_rb >= 0 && p->lin_k == 2) PLAN_FLIP(3); /* ties: two offsets */
  else if (p->op == FIXQ_OP_MUL && p->lin_rb >= 0) PLAN_FLIP(1);
  else if (p->op == FIXQ_OP_MUL && p->lin_neg != 0) PLAN_FLIP(2);
  else PLAN_FLIP(0); /* ADD, or requantize without ties: b' = 1 times rb = 0 */
  if (stream) _mm_sfence(); /* the non-temporal stores before whatever the caller does next */
}
