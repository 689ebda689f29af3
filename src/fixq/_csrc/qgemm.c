/* GEMM driver: packing B, the up-front overflow proof, cache blocking,
 * threads, and the fused output stage.
 *
 * acc[m][n] = sum_k (a' - a_zp')(b' - b_zp'[n]) + bias[n]
 *           = sum_k a' b' - b_zp'[n] * row_sum[m] - a_zp' * col_sum[n] + bias[n]
 * (gemmlowp doc/low-precision.md; a', b' as in fixq.h).  The kernels form the
 * right-hand side modulo 2^32 (a kernel that multiplies a' + a_offset, the
 * VNNI one, gets -a_offset * sum_k b' in col_term); fixq_qgemm first proves
 * that the exact acc fits int32, so the wrapped value is acc.  Each block of
 * accumulators goes through the requantize micro-kernel while it is still in L1.
 * A small k on a path with a direct tile (fixq_qgemm_direct_fn, AVX-512 VNNI)
 * and B without zero points skips the packing of A: the tile reads A's rows
 * (a 1x1 convolution's NHWC pixels) where they lie. */
#include <stdlib.h>
#include <string.h>

#include "fixq_floatops.h"

#define NR FIXQ_GEMM_NR
#define MC_MAX 128                /* rows per block */
#define TILE_BYTES (8 * 1024)     /* int32 accumulators waiting for the output stage: stay in L1 */
#define A_BLOCK_BYTES (96 * 1024) /* packed A block: stays in L2 */
#define STACK_BYTES (16 * 1024)   /* run_part's memory on launch's stack, where it fits */
#define NEXT_B_BYTES (32 * 1024)  /* a tile's panels up to this size stay in L1: the next tile's are fetched ahead */

typedef struct {
  fixq_qgemm_pack_a_fn pack_a;
  fixq_qgemm_ukernel ukernel[2]; /* by fixq_gemm_kernel */
  size_t mr, np;                 /* tile: mr rows (one pack_a call) x up to np panels */
  size_t record;                 /* packed A bytes per row per 4 k (fixq_internal.h) */
  uint32_t a_offset;             /* the kernels multiply a' + a_offset */
  fixq__qgemm_f32_tile f32_tile; /* a dynamic linear's full tiles straight to float, or NULL */
  fixq_qgemm_direct_fn direct;   /* or NULL: every A packed */
  fixq_qgemm_col_term_fn col_term;
} qgemm_kernels;

static const qgemm_kernels kernel_table[FIXQ_ISA_COUNT] = {
    {fixq_qgemm_pack_a__scalar, {fixq_qgemm_s8__scalar, fixq_qgemm_s16__scalar}, FIXQ_GEMM_MR, 1, 8, 0, NULL, NULL, fixq_qgemm_col_term__scalar},
    {FIXQ__AVX2(fixq_qgemm_pack_a__avx2), {FIXQ__AVX2(fixq_qgemm_s8__avx2), FIXQ__AVX2(fixq_qgemm_s16__avx2)},
     FIXQ__AVX2_MR, FIXQ__AVX2_NP, 8, 0, NULL, NULL, FIXQ__AVX2(fixq_qgemm_col_term__avx2)},
    /* vpdpbusd is exact for b' = -128 too: one kernel for both */
    {FIXQ__AVX512VNNI(fixq_qgemm_pack_a__avx512vnni),
     {FIXQ__AVX512VNNI(fixq_qgemm_s8__avx512vnni), FIXQ__AVX512VNNI(fixq_qgemm_s8__avx512vnni)}, FIXQ__VNNI_MR,
     FIXQ__VNNI_NP, 4, 128, FIXQ__AVX512VNNI(fixq_qgemm_u8_f32__avx512vnni),
     FIXQ__AVX512VNNI(fixq_qgemm_direct__avx512vnni), FIXQ__AVX512VNNI(fixq_qgemm_col_term__avx2)},
    {FIXQ__NEON(fixq_qgemm_pack_a__neon), {FIXQ__NEON(fixq_qgemm_s8__neon), FIXQ__NEON(fixq_qgemm_s8__neon)},
     FIXQ__ARM_MR, FIXQ__ARM_NP, 4, 0, NULL, NULL, fixq_qgemm_col_term__scalar},
    {FIXQ__DOTPROD(fixq_qgemm_pack_a__neon), {FIXQ__DOTPROD(fixq_qgemm_s8__dotprod), FIXQ__DOTPROD(fixq_qgemm_s8__dotprod)},
     FIXQ__ARM_MR, FIXQ__ARM_NP, 4, 0, NULL, NULL, fixq_qgemm_col_term__scalar},
    {FIXQ__I8MM(fixq_qgemm_pack_a__i8mm), {FIXQ__I8MM(fixq_qgemm_s8__i8mm), FIXQ__I8MM(fixq_qgemm_s8__i8mm)},
     FIXQ__ARM_MR, FIXQ__ARM_NP, 4, 0, NULL, NULL, fixq_qgemm_col_term__scalar},
};

/* ---- packing B ------------------------------------------------------------ */

/* k and n rounded up as fixq.h says; 0 when the buffers could not exist (the
 * panels' n_padded * k_padded bytes or col_abs's 8 * n_padded). */
static int padded_sizes(size_t k, size_t n, size_t *k_padded, size_t *n_padded) {
  size_t kp, np, bytes;
  if (!fixq__add_size(k, 3, &kp) || !fixq__add_size(n, NR - 1, &np)) return 0;
  kp = kp / 4 * 4;
  np = np / NR * NR;
  if (!fixq__mul_size(np, kp, &bytes) || !fixq__mul_size(np, sizeof(int64_t), &bytes)) return 0;
  *k_padded = kp;
  *n_padded = np;
  return 1;
}

void fixq_packed_b_init(fixq_packed_b *pb, size_t k, size_t n) {
  memset(pb, 0, sizeof *pb); /* padded sizes 0 where k, n are out of range */
  pb->k = k;
  pb->n = n;
  padded_sizes(k, n, &pb->k_padded, &pb->n_padded);
}

/* pb's padded sizes are fixq_packed_b_init's for its k and n, and its buffers are set. */
static int packed_ok(const fixq_packed_b *pb) {
  size_t kp, np;
  if (!padded_sizes(pb->k, pb->n, &kp, &np) || pb->k_padded != kp || pb->n_padded != np) return 0;
  if (np * kp > 0 && pb->panels == NULL) return 0;
  return np == 0 || (pb->zero_point != NULL && pb->col_sum != NULL && pb->col_abs != NULL);
}

fixq_status fixq_pack_b(const void *b, fixq_dtype b_dtype, ptrdiff_t stride_k, ptrdiff_t stride_n,
                        const int32_t *zero_point, size_t zp_count, fixq_packed_b *pb) {
  size_t reach = 0; /* of the elements of b from the first, which the strides may put anywhere */
  if (pb == NULL || !packed_ok(pb) || (b_dtype != FIXQ_INT8 && b_dtype != FIXQ_UINT8)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!fixq__add_reach(&reach, pb->k, stride_k) || !fixq__add_reach(&reach, pb->n, stride_n))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if ((zp_count != 1 && zp_count != pb->n) || zero_point == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  if (pb->n * pb->k > 0 && b == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  const int32_t lo = b_dtype == FIXQ_INT8 ? INT8_MIN : 0, hi = b_dtype == FIXQ_INT8 ? INT8_MAX : UINT8_MAX;
  const int32_t shift = b_dtype == FIXQ_INT8 ? 0 : 128;
  for (size_t i = 0; i < zp_count; i++)
    if (zero_point[i] < lo || zero_point[i] > hi) return FIXQ_ERR_INVALID_ARGUMENT;
  pb->dtype = b_dtype;
  for (size_t n = 0; n < pb->n_padded; n++)
    pb->zero_point[n] = n < pb->n ? zero_point[zp_count == 1 ? 0 : n] - shift : 0;
  /* in the order of the panels (fixq.h), zeros past k and n */
  int8_t *dst = pb->panels;
  for (size_t n0 = 0; n0 < pb->n_padded; n0 += NR)
    for (size_t k0 = 0; k0 < pb->k_padded; k0 += 4)
      for (size_t n = n0; n < n0 + NR; n++)
        for (size_t k = k0; k < k0 + 4; k++) {
          const ptrdiff_t i = (ptrdiff_t)k * stride_k + (ptrdiff_t)n * stride_n;
          *dst++ = k >= pb->k || n >= pb->n ? 0
                   : b_dtype == FIXQ_INT8 ? ((const int8_t *)b)[i]
                                          : (int8_t)((int32_t)((const uint8_t *)b)[i] - shift);
        }
  return fixq_packed_b_finish(pb);
}

fixq_status fixq_packed_b_finish(fixq_packed_b *pb) {
  if (pb == NULL || !packed_ok(pb) || (pb->dtype != FIXQ_INT8 && pb->dtype != FIXQ_UINT8))
    return FIXQ_ERR_INVALID_ARGUMENT;
  int any_min = 0, padding_ok = 1;
  pb->zero_point_nonzero = 0;
  pb->col_abs_max = 0;
  for (size_t n = 0; n < pb->n_padded; n++) {
    const int32_t zp = pb->zero_point[n];
    if (zp < INT8_MIN || zp > INT8_MAX || (n >= pb->n && zp != 0)) return FIXQ_ERR_INVALID_ARGUMENT;
    pb->zero_point_nonzero |= zp != 0;
  }
  const int8_t *src = pb->panels;
  for (size_t n0 = 0; n0 < pb->n_padded; n0 += NR) {
    int64_t sum[NR] = {0}, abs_sum[NR] = {0};
    for (size_t k0 = 0; k0 < pb->k_padded; k0 += 4)
      for (size_t j = 0; j < NR; j++)
        for (size_t k = k0; k < k0 + 4; k++) {
          const int32_t v = *src++, zp = pb->zero_point[n0 + j];
          if (k >= pb->k || n0 + j >= pb->n) {
            padding_ok &= v == 0;
            continue;
          }
          any_min |= v == INT8_MIN;
          sum[j] += v - zp;
          abs_sum[j] += v > zp ? v - zp : zp - v;
        }
    for (size_t j = 0; j < NR; j++) {
      pb->col_sum[n0 + j] = (int32_t)(uint32_t)(uint64_t)sum[j]; /* mod 2^32, as the kernels use it */
      pb->col_abs[n0 + j] = abs_sum[j];
      if (abs_sum[j] > pb->col_abs_max) pb->col_abs_max = abs_sum[j];
    }
  }
  if (!padding_ok) return FIXQ_ERR_INVALID_ARGUMENT;
  pb->kernel = any_min ? FIXQ_GEMM_S16 : FIXQ_GEMM_S8;
  return FIXQ_OK;
}

/* ---- the product ---------------------------------------------------------- */

typedef struct {
  const qgemm_kernels *kern;
  const void *a;
  fixq_dtype a_dtype;
  size_t m, lda;
  int32_t a_zp; /* a_zp' */
  const fixq_packed_b *b;
  const int32_t *bias;
  const fixq_requant *p; /* NULL: int32 output */
  int per_column;
  fixq_requant_ukernel requant;
  char *y;
  fixq_dtype y_dtype;
  size_t ldy;
  const fixq__qgemm_source *src; /* given: A's rows and the output stage are the caller's (a, p, y unused) */
  fixq__qgemm_store store;       /* given: the output stage is the caller's (p, y unused) */
  const void *store_ctx;
} qgemm_job;

typedef struct {
  const qgemm_job *job;
  size_t m0, m1, p0, p1; /* rows [m0, m1), panels [p0, p1) */
  fixq_status status;
} qgemm_part;

static size_t rows_per_block(const qgemm_kernels *kern, size_t kq) {
  const size_t mr = kern->mr;
  size_t mc = kq ? A_BLOCK_BYTES / (kq * kern->record) / mr * mr : MC_MAX;
  return mc < mr ? mr : mc > MC_MAX ? MC_MAX : mc;
}

/* The output stage on rows [m0, m0 + mc) x columns [n0, n0 + nc) of y; the
 * accumulators are tile[r * ldt + j]. */
static void store_block(const qgemm_job *job, const void *info, const int32_t *tile, size_t ldt, size_t m0,
                        size_t mc, size_t n0, size_t nc) {
  if (job->src != NULL) {
    job->src->store(job->src->ctx, info, tile, ldt, m0, mc, n0, nc);
    return;
  }
  if (job->store != NULL) {
    job->store(job->store_ctx, tile, ldt, m0, mc, n0, nc);
    return;
  }
  const size_t esize = fixq__dtype_size(job->y_dtype);
  char *y = job->y + (m0 * job->ldy + n0) * esize;
  if (job->p == NULL) {
    for (size_t r = 0; r < mc; r++) memcpy(y + r * job->ldy * esize, tile + r * ldt, nc * sizeof(int32_t));
  } else if (job->per_column) {
    fixq_requant pc = *job->p;
    if (pc.multiplier != NULL) pc.multiplier += n0;
    if (pc.shift != NULL) pc.shift += n0;
    if (pc.scale != NULL) pc.scale += n0;
    pc.zero_point += n0;
    job->requant(mc, nc, 1, tile, ldt, y, job->ldy, job->y_dtype, &pc);
  } else {
    job->requant(mc, 1, nc, tile, ldt, y, job->ldy, job->y_dtype, job->p);
  }
}

/* The sizes of run_part's memory for `rows` rows x `ncols` columns: the packed A block (mc_max rows), its
 * row sums and row_neg, the int32 tile (mc_max x ldt), col_term, then a source's mr rows and its per-row
 * data; `bytes` in all, 64 for the alignment included. */
typedef struct {
  size_t mc_max, ldt, a_bytes, info_bytes, bytes;
} part_layout;

static part_layout layout(const qgemm_kernels *kern, const fixq_packed_b *b, const fixq__qgemm_source *src,
                          size_t rows, size_t ncols) {
  const size_t mr = kern->mr, np = kern->np, kq = b->k_padded / 4, block = rows_per_block(kern, kq);
  part_layout l;
  /* fewer rows than a tile: one tile of them, in whole groups of FIXQ_GEMM_MR (the aarch64 packers write
   * that many records, zeros past `rows`) */
  const size_t unit = rows > mr ? mr : FIXQ_GEMM_MR;
  rows = (rows + unit - 1) / unit * unit;
  l.mc_max = rows < block ? rows : block;
  size_t group = l.mc_max * NR * 4 >= TILE_BYTES ? 1 : TILE_BYTES / (l.mc_max * NR * 4);
  if (group > ncols / NR) group = ncols / NR;
  group = (group + np - 1) / np * np;
  l.ldt = group * NR;
  l.a_bytes = l.mc_max * kq * kern->record;
  l.info_bytes = src != NULL ? src->info_bytes : 0;
  l.bytes = l.a_bytes + sizeof(int32_t) * (l.mc_max * (2 + l.ldt) + ncols) +
            (src != NULL ? l.mc_max * l.info_bytes + mr * b->k + 8 : 0) + 64;
  return l;
}

/* Row tile t of `tiles` fetches its share of bytes [0, bytes) at p into L2. */
static inline void prefetch_share(const int8_t *p, size_t bytes, size_t t, size_t tiles) {
  const size_t share = (bytes / tiles + 63) & ~(size_t)63;
  for (size_t o = t * share; o < bytes && o < (t + 1) * share; o += 64) __builtin_prefetch(p + o, 0, 2);
}

/* A dynamic linear's lines of y (and res) that a tile of `rows` rows x `cols` columns from y + at writes,
 * fetched while its kernel runs: into L1 where the tile's epilogue follows its kernel (stores that miss L1
 * stall it, and a strip of y's rows, 4608 bytes apart at N = 1152, falls on a few L1 sets and evicts the
 * panels where each store's line comes in by itself), else into L2, where they wait for the int32 block's
 * epilogue after the block's other row tiles. */
static inline void prefetch_out(const fixq__dyn_out *out, size_t at, size_t rows, size_t cols, int l1) {
  const int read_res = out->res != NULL && out->res != out->y;
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < cols; j += 64 / sizeof(float)) {
      const float *y = out->y + at + r * out->ldy + j, *res = read_res ? out->res + at + r * out->ldy + j : NULL;
      if (l1) {
        __builtin_prefetch(y, 1, 3);
        if (read_res) __builtin_prefetch(res, 0, 3);
      } else {
        __builtin_prefetch(y, 1, 2);
        if (read_res) __builtin_prefetch(res, 0, 2);
      }
    }
}

/* Rows [m0, m1) x panels [p0, p1): blocks of mc_max rows of A packed once
 * (from a caller's source: made mr rows at a time into a scratch that stays
 * in L1, then packed), groups of panels whose int32 accumulators (mc_max x
 * group * NR) fit in TILE_BYTES go through the output stage together.
 * Its memory: buf where layout's bytes fit in buf_bytes, else allocated here. */
static void run_part(qgemm_part *part, void *buf, size_t buf_bytes) {
  const qgemm_job *job = part->job;
  const qgemm_kernels *kern = job->kern;
  const fixq_packed_b *b = job->b;
  const size_t mr = kern->mr, np = kern->np, kq = b->k_padded / 4;
  const size_t ncols = (part->p1 - part->p0) * NR;
  const fixq__qgemm_source *src = job->src;
  const part_layout l = layout(kern, b, src, part->m1 - part->m0, ncols);
  const size_t mc_max = l.mc_max, ldt = l.ldt, a_bytes = l.a_bytes, info_bytes = l.info_bytes;
  const size_t group = ldt / NR;
  const fixq_qgemm_ukernel ukernel = kern->ukernel[b->kernel];
  const int need_row_sum = b->zero_point_nonzero;
  const fixq__dyn_out *out = src != NULL ? src->out : NULL;
  const fixq__qgemm_f32_tile f32_tile = out != NULL && !need_row_sum ? kern->f32_tile : NULL;
  const int direct = kern->direct != NULL && src == NULL && !need_row_sum && b->k <= FIXQ__DIRECT_K_MAX;
  void *const scratch = l.bytes <= buf_bytes ? buf : NULL;
  char *mem = scratch != NULL ? scratch : malloc(l.bytes);
  if (mem == NULL) {
    part->status = FIXQ_ERR_OUT_OF_MEMORY;
    return;
  }
  uint8_t *apack = (uint8_t *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
  int32_t *row_sum = (int32_t *)(apack + a_bytes);
  int32_t *row_neg = row_sum + mc_max;
  int32_t *tile = row_neg + mc_max;
  /* col_term = bias - a_zp' * col_sum - a_offset * sum_k b' for the part's columns, where
   * sum_k b' = col_sum + k * zp' (0 in the padding) */
  int32_t *col_term = tile + mc_max * ldt;
  uint8_t *info = (uint8_t *)(((uintptr_t)(col_term + ncols) + 7) & ~(uintptr_t)7), *rows_u8 = info + mc_max * info_bytes;
  const size_t n0 = part->p0 * NR, n_bias = b->n - n0 < ncols ? b->n - n0 : ncols;
  const uint32_t col_mult = (uint32_t)job->a_zp + kern->a_offset, zp_mult = kern->a_offset * (uint32_t)b->k;
  kern->col_term(ncols, job->bias != NULL ? n_bias : 0, col_mult, zp_mult, b->col_sum + n0, b->zero_point + n0,
                 job->bias != NULL ? job->bias + n0 : NULL, col_term);
  for (size_t m0 = part->m0; m0 < part->m1; m0 += mc_max) {
    const size_t mc = part->m1 - m0 < mc_max ? part->m1 - m0 : mc_max;
    for (size_t i = 0; i < mc && !direct; i += mr) {
      const size_t rows_i = mc - i < mr ? mc - i : mr;
      const void *a = (const char *)job->a + (m0 + i) * job->lda;
      size_t lda = job->lda;
      if (src != NULL) {
        const fixq_status st = src->rows(src->ctx, m0 + i, rows_i, rows_u8, info + i * info_bytes);
        if (st != FIXQ_OK) {
          if (scratch == NULL) free(mem);
          part->status = st;
          return;
        }
        a = rows_u8;
        lda = b->k;
      }
      kern->pack_a(rows_i, b->k, a, lda, job->a_dtype, b->kernel, apack + i * kq * kern->record,
                   need_row_sum ? row_sum + i : NULL, row_neg + i);
    }
    /* rows [0, fused) of the block go to y straight from the kernel */
    const size_t fused = f32_tile != NULL ? mc / mr * mr : 0;
    for (size_t g0 = part->p0; g0 < part->p1; g0 += group) {
      const size_t g1 = part->p1 - g0 < group ? part->p1 : g0 + group;
      const size_t n0 = g0 * NR, n1 = g1 * NR < b->n ? g1 * NR : b->n;
      for (size_t pn = g0; pn < g1; pn += np) {
        const int8_t *panel = b->panels + pn * kq * 4 * NR;
        const size_t j0 = (pn - part->p0) * NR, tile_np = g1 - pn < np ? g1 - pn : np, c0 = pn * NR;
        const size_t cols = b->n - c0 < tile_np * NR ? b->n - c0 : tile_np * NR;
        /* the part's first block reads B from memory: the next tile's panels are fetched into L2, a share at
         * each row tile, where a tile's panels stay in L1 (larger ones stream from L2 at every row tile, and
         * fetching more beside them measured slower) */
        const size_t next_np = part->p1 - pn - tile_np < np ? part->p1 - pn - tile_np : np;
        const int8_t *next = panel + tile_np * kq * 4 * NR;
        const size_t next_bytes = m0 == part->m0 && tile_np * kq * 4 * NR <= NEXT_B_BYTES ? next_np * kq * 4 * NR : 0;
        const size_t tiles = (mc + mr - 1) / mr;
        for (size_t i = 0; i < fused; i += mr) {
          prefetch_share(next, next_bytes, i / mr, tiles);
          const size_t at = (m0 + i) * out->ldy + c0;
          prefetch_out(out, at, mr, cols, 1);
          f32_tile(tile_np, kq, apack + i * kq * kern->record, panel, b->n - c0,
                   (const fixq__dyn_row *)(info + i * info_bytes), out->col_sum + c0, out->w_scale + c0,
                   out->bias + c0, out->res != NULL ? out->res + at : NULL, out->y + at, out->ldy);
          if (out->act != NULL) /* the tile's rows while they are in L1 */
            out->act(mr, cols, out->y + at, out->ldy, out->form, out->y + at, out->ldy);
        }
        for (size_t i = fused; i < mc && direct; i += mr)
          kern->direct(mc - i < mr ? mc - i : mr, tile_np, b->k, (const char *)job->a + (m0 + i) * job->lda, job->lda,
                       job->a_dtype, panel, tile + i * ldt + (pn - g0) * NR, ldt, col_term + j0);
        for (size_t i = fused; i < mc && !direct; i += mr) {
          prefetch_share(next, next_bytes, i / mr, tiles);
          if (out != NULL) prefetch_out(out, (m0 + i) * out->ldy + c0, mc - i < mr ? mc - i : mr, cols, 0);
          ukernel(mc - i < mr ? mc - i : mr, tile_np, kq, apack + i * kq * kern->record, panel,
                  tile + i * ldt + (pn - g0) * NR, ldt, need_row_sum ? row_sum + i : NULL, row_neg + i,
                  b->zero_point + pn * NR, col_term + j0);
        }
      }
      if (fused < mc) store_block(job, info + fused * info_bytes, tile + fused * ldt, ldt, m0 + fused, mc - fused, n0,
                                  n1 - n0);
    }
  }
  if (scratch == NULL) free(mem);
  part->status = FIXQ_OK;
}

static void run_part_task(void *parts, int t) { run_part((qgemm_part *)parts + t, NULL, 0); }

/* Splits rows (in tiles of mr) when there are enough for every thread, else
 * panels; threads is at most the larger count, so no part is empty. */
static void split(size_t m, size_t mr, size_t panels, int threads, int t, size_t *m0, size_t *m1, size_t *p0,
                  size_t *p1) {
  const size_t T = (size_t)threads;
  if (m >= 32 * T || panels < T) {
    const size_t groups = (m + mr - 1) / mr;
    *m0 = groups * t / T * mr;
    *m1 = groups * (t + 1) / T * mr;
    if (*m1 > m) *m1 = m;
    if (*m0 > m) *m0 = m;
    *p0 = 0;
    *p1 = panels;
  } else {
    *m0 = 0;
    *m1 = m;
    *p0 = panels * t / T;
    *p1 = panels * (t + 1) / T;
  }
}

static int dtype_bounds(fixq_dtype dt, int32_t *lo, int32_t *hi) {
  if (dt == FIXQ_INT8) {
    *lo = INT8_MIN;
    *hi = INT8_MAX;
    return 1;
  }
  if (dt == FIXQ_UINT8) {
    *lo = 0;
    *hi = UINT8_MAX;
    return 1;
  }
  return 0;
}

/* acc[m][n] lies in bias[n] +- max|a - a_zp| * col_abs[n]: first the bound
 * with the largest |bias| (one loop that vectorizes), then column by column. */
static int fits_int32(const fixq_packed_b *b, int64_t a_span, const int32_t *bias) {
  if (b->col_abs_max > INT32_MAX) return 0; /* a_span >= 127 */
  if (bias == NULL) return a_span * b->col_abs_max <= INT32_MAX;
  uint32_t bias_max = 0;
  for (size_t n = 0, count = b->n; n < count; n++) {
    const uint32_t mag = bias[n] < 0 ? 0u - (uint32_t)bias[n] : (uint32_t)bias[n];
    bias_max = mag > bias_max ? mag : bias_max;
  }
  if (a_span * b->col_abs_max + bias_max <= INT32_MAX) return 1;
  for (size_t n = 0; n < b->n; n++) {
    const int64_t r = a_span * b->col_abs[n];
    if (bias[n] + r > INT32_MAX || bias[n] - r < INT32_MIN) return 0;
  }
  return 1;
}

int fixq__qgemm_fits(const fixq_packed_b *b, fixq_dtype a_dtype, int32_t a_zero_point, const int32_t *bias) {
  int32_t lo, hi;
  if (!dtype_bounds(a_dtype, &lo, &hi)) return 0;
  const int64_t a_span = a_zero_point - lo > hi - a_zero_point ? a_zero_point - lo : hi - a_zero_point;
  return fits_int32(b, a_span, bias);
}

/* Runs job on up to `threads` threads (fewer when the product is small); a one-thread run whose memory fits
 * STACK_BYTES (a few rows: a GEMV) in a buffer on the stack, the others in memory of their own. */
static fixq_status launch(const qgemm_job *job, int threads) {
  const qgemm_kernels *kern = job->kern;
  const fixq_packed_b *b = job->b;
  const size_t m = job->m;
  const size_t panels = b->n_padded / NR;
  int T = threads;
  if (T > 1) {
    const double macs = (double)m * (double)b->n * (double)(b->k ? b->k : 1);
    const double fit = macs / FIXQ__MACS_PER_THREAD;
    if (fit < T) T = fit > 1 ? (int)fit : 1;
    const size_t groups = (m + kern->mr - 1) / kern->mr; /* row tiles */
    if ((size_t)T > groups && (size_t)T > panels) T = (int)(groups > panels ? groups : panels); /* split gives each part rows or panels */
  }
  if (T == 1) {
    qgemm_part part = {job, 0, m, 0, panels, FIXQ_OK};
    _Alignas(64) char stack[STACK_BYTES];
    run_part(&part, stack, sizeof stack);
    return part.status;
  }
  qgemm_part *parts = malloc(sizeof(qgemm_part) * (size_t)T);
  if (parts == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  for (int t = 0; t < T; t++) {
    parts[t].job = job;
    parts[t].status = FIXQ_OK;
    split(m, kern->mr, panels, T, t, &parts[t].m0, &parts[t].m1, &parts[t].p0, &parts[t].p1);
  }
  fixq__parallel(T, run_part_task, parts);
  fixq_status st = FIXQ_OK;
  for (int t = 0; t < T; t++)
    if (parts[t].status != FIXQ_OK) st = parts[t].status;
  free(parts);
  return st;
}

/* fixq_qgemm; check_p 0: p was checked by fixq__check_requant before (the engine's plan, once) */
static fixq_status qgemm(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                         const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p, size_t p_channels,
                         void *y, fixq_dtype y_dtype, size_t ldy, int threads, int check_p, fixq__qgemm_store store,
                         const void *store_ctx) {
  int32_t lo, hi;
  size_t bytes;
  if (b == NULL || !packed_ok(b) || threads < 1 || !dtype_bounds(a_dtype, &lo, &hi)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (a_zero_point < lo || a_zero_point > hi || lda < b->k || !fixq__mul_size(m, lda, &bytes))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (store == NULL) {
    if (ldy < b->n || !fixq__mul_size(m, ldy, &bytes) || !fixq__mul_size(bytes, fixq__dtype_size(y_dtype), &bytes))
      return FIXQ_ERR_INVALID_ARGUMENT;
    if (p == NULL) {
      if (y_dtype != FIXQ_INT32) return FIXQ_ERR_INVALID_ARGUMENT;
    } else {
      if (p_channels != 1 && p_channels != b->n) return FIXQ_ERR_INVALID_ARGUMENT;
      const fixq_status st = check_p ? fixq__check_requant(p, p_channels, y_dtype) : FIXQ_OK;
      if (st != FIXQ_OK) return st;
    }
  }
  if (m == 0 || b->n == 0) return FIXQ_OK;
  if ((store == NULL && y == NULL) || (a == NULL && b->k > 0)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (!fixq__qgemm_fits(b, a_dtype, a_zero_point, bias)) return FIXQ_ERR_OVERFLOW;
  return fixq__qgemm_fitted(m, a, a_dtype, lda, a_zero_point, b, bias, p, p_channels, y, y_dtype, ldy, store,
                            store_ctx, threads);
}

fixq_status fixq__qgemm_fitted(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                               const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                               size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, fixq__qgemm_store store,
                               const void *store_ctx, int threads) {
  if (m == 0 || b->n == 0) return FIXQ_OK;
  const qgemm_kernels *kern = &kernel_table[fixq__isa];
  const qgemm_job job = {kern, a, a_dtype, m, lda, a_zero_point - (a_dtype == FIXQ_UINT8 ? 128 : 0), b, bias,
                         store != NULL ? NULL : p, store == NULL && p != NULL && p_channels > 1,
                         fixq__requant_ukernel(), (char *)y, y_dtype, ldy, NULL, store, store_ctx};
  return launch(&job, threads);
}

fixq_status fixq_qgemm(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                       const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                       size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads) {
  return qgemm(m, a, a_dtype, lda, a_zero_point, b, bias, p, p_channels, y, y_dtype, ldy, threads, 1, NULL, NULL);
}

fixq_status fixq__qgemm_checked_rq(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                                   const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                                   size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads) {
  return qgemm(m, a, a_dtype, lda, a_zero_point, b, bias, p, p_channels, y, y_dtype, ldy, threads, 0, NULL, NULL);
}

fixq_status fixq__qgemm_store_s32(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                                  const fixq_packed_b *b, const int32_t *bias, fixq__qgemm_store store,
                                  const void *ctx, int threads) {
  if (store == NULL) return FIXQ_ERR_INVALID_ARGUMENT;
  return qgemm(m, a, a_dtype, lda, a_zero_point, b, bias, NULL, 0, NULL, FIXQ_INT32, 0, threads, 0, store, ctx);
}

fixq_status fixq__qgemm_u8_source(size_t m, const fixq_packed_b *b, const fixq__qgemm_source *src, int threads) {
  if (b == NULL || !packed_ok(b) || threads < 1 || src == NULL || src->rows == NULL || src->store == NULL)
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (m == 0 || b->n == 0) return FIXQ_OK;
  if (!fits_int32(b, UINT8_MAX, NULL)) return FIXQ_ERR_OVERFLOW;
  const qgemm_kernels *kern = &kernel_table[fixq__isa];
  const qgemm_job job = {kern, NULL, FIXQ_UINT8, m, 0, -128, b, NULL, NULL, 0, NULL, NULL, FIXQ_INT32, 0, src, NULL, NULL};
  return launch(&job, threads);
}
