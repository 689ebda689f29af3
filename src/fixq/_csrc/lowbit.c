/* Low-bit entry points: argument checks, fp16 panel packing, dispatch. */
#include <stdlib.h>

#include "fixq_internal.h"

static const fixq_f16_linear_ukernel f16_table[FIXQ_ISA_COUNT] = {
    fixq_f16_linear__scalar, FIXQ__AVX2(fixq_f16_linear__avx2),
    FIXQ__AVX512VNNI(fixq_f16_linear__avx2), FIXQ__NEON(fixq_f16_linear__scalar),
    FIXQ__DOTPROD(fixq_f16_linear__scalar), FIXQ__I8MM(fixq_f16_linear__scalar)};
static const fixq_bgemm_ukernel bgemm_table[FIXQ_ISA_COUNT] = {
    fixq_bgemm__scalar, FIXQ__AVX2(fixq_bgemm__avx2),
    FIXQ__AVX512VNNI(fixq_bgemm__avx2), FIXQ__NEON(fixq_bgemm__scalar),
    FIXQ__DOTPROD(fixq_bgemm__scalar), FIXQ__I8MM(fixq_bgemm__scalar)};

/* n rounded up to whole panels, times k; 0 when that many elements (or their
 * bytes) pass what an array can have. */
size_t fixq_f16_packed_size(size_t n, size_t k) {
  size_t padded, count, bytes;
  if (!fixq__add_size(n, FIXQ__F16_NR - 1, &padded) ||
      !fixq__mul_size(padded / FIXQ__F16_NR * FIXQ__F16_NR, k, &count) ||
      !fixq__mul_size(count, sizeof(uint16_t), &bytes))
    return 0;
  return count;
}

fixq_status fixq_f16_pack(const uint16_t *w, size_t n, size_t k, uint16_t *packed) {
  if (w == NULL || packed == NULL || n == 0 || k == 0 || fixq_f16_packed_size(n, k) == 0)
    return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t panels = (n + FIXQ__F16_NR - 1) / FIXQ__F16_NR;
  for (size_t p = 0; p < panels; p++)
    for (size_t kk = 0; kk < k; kk++)
      for (size_t c = 0; c < FIXQ__F16_NR; c++) {
        const size_t j = p * FIXQ__F16_NR + c;
        packed[(p * k + kk) * FIXQ__F16_NR + c] = j < n ? w[j * k + kk] : 0;
      }
  return FIXQ_OK;
}

fixq_status fixq_f16_linear(const float *x, size_t m, size_t k, const uint16_t *packed, size_t n,
                            const float *bias, float *y) {
  size_t count;
  if (x == NULL || packed == NULL || y == NULL || k == 0 || n == 0 || fixq_f16_packed_size(n, k) == 0)
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (!fixq__mul_size(m, k, &count) || !fixq__mul_size(count, sizeof(float), &count) ||
      !fixq__mul_size(m, n, &count) || !fixq__mul_size(count, sizeof(float), &count))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (m == 0) return FIXQ_OK;
  float *work = NULL;
  if (fixq__isa != FIXQ_ISA_SCALAR) {
    work = aligned_alloc(64, sizeof(float) * FIXQ__F16_MC * FIXQ__F16_KC);
    if (work == NULL) return FIXQ_ERR_OUT_OF_MEMORY;
  }
  f16_table[fixq__isa](m, n, k, x, k, packed, bias, y, n, work);
  free(work);
  return FIXQ_OK;
}

/* Bytes of `rows` packed rows of k bits (64 per chunk of 256 bits), 1 <= k <= INT32_MAX. */
static int bgemm_bytes(size_t rows, size_t k, size_t *bytes) {
  return k >= 1 && k <= INT32_MAX && fixq__mul_size(rows, (k + 255) / 256 * 64, bytes);
}

size_t fixq_bgemm_packed_size(size_t rows, size_t k) {
  size_t bytes;
  return bgemm_bytes(rows, k, &bytes) ? bytes : 0;
}

/* Per 256-bit chunk of a row (bits 256c .. 256c + 255, 32 bytes b[0..31]):
 * b[i] & 15 for i = 0..31, then b[i] >> 4; bits >= k are cleared. */
fixq_status fixq_bgemm_pack(const uint8_t *bits, size_t rows, size_t k, uint8_t *packed) {
  size_t bytes;
  if (bits == NULL || packed == NULL || !bgemm_bytes(rows, k, &bytes)) return FIXQ_ERR_INVALID_ARGUMENT;
  const size_t row_bytes = (k + 7) / 8, chunks = (k + 255) / 256;
  for (size_t r = 0; r < rows; r++) {
    const uint8_t *src = bits + r * row_bytes;
    uint8_t *dst = packed + r * chunks * 64;
    for (size_t c = 0; c < chunks; c++)
      for (size_t i = 0; i < 32; i++) {
        const size_t byte = c * 32 + i;
        uint8_t v = 0;
        if (byte < row_bytes) {
          v = src[byte];
          if (byte == row_bytes - 1 && k % 8 != 0) v &= (uint8_t)((1u << (k % 8)) - 1);
        }
        dst[c * 64 + i] = v & 15;
        dst[c * 64 + 32 + i] = v >> 4;
      }
  }
  return FIXQ_OK;
}

fixq_status fixq_bgemm(const uint8_t *a, size_t m, const uint8_t *b, size_t n, size_t k, int32_t *y) {
  size_t bytes;
  if (a == NULL || b == NULL || y == NULL || n == 0 || !bgemm_bytes(m, k, &bytes) || !bgemm_bytes(n, k, &bytes))
    return FIXQ_ERR_INVALID_ARGUMENT;
  if (!fixq__mul_size(m, n, &bytes) || !fixq__mul_size(bytes, sizeof(int32_t), &bytes)) return FIXQ_ERR_INVALID_ARGUMENT;
  if (m == 0) return FIXQ_OK;
  bgemm_table[fixq__isa](m, n, (k + 255) / 256, a, b, (int32_t)k, y);
  return FIXQ_OK;
}
