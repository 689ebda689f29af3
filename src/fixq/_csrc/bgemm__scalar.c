/* XOR-popcount GEMM, scalar: the contract.  For +-1 vectors stored as sign
 * bits (1 = -1), dot = k - 2 * popcount(a XOR b) (XNOR-Net; larq compute
 * engine bgemm).  Rows are in nibble-plane layout (fixq_bgemm_pack), which
 * holds every bit once and zeros in the padding, so the count is the popcount
 * of the XOR of the whole rows. */
#include <string.h>

#include "fixq_internal.h"

void fixq_bgemm__scalar(size_t m, size_t n, size_t chunks, const uint8_t *a, const uint8_t *b, int32_t k,
                        int32_t *y) {
  const size_t rb = chunks * 64;
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int32_t pop = 0;
      for (size_t w = 0; w < rb; w += 8) {
        uint64_t x, z;
        memcpy(&x, a + i * rb + w, 8);
        memcpy(&z, b + j * rb + w, 8);
        pop += __builtin_popcountll(x ^ z);
      }
      y[i * n + j] = k - 2 * pop;
    }
}
