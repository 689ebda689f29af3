/* XOR-popcount GEMM, scalar: the contract.  For +-1 vectors stored as sign
 * bits (1 = -1), dot = k - 2 * popcount(a XOR b) (XNOR-Net; larq compute
 * engine bgemm). */
#include "fixq_internal.h"

void fixq_bgemm__scalar(size_t m, size_t n, size_t kw, uint64_t last_mask, const uint64_t *a, const uint64_t *b,
                        int32_t k, int32_t *y) {
  for (size_t i = 0; i < m; i++) {
    const uint64_t *ai = a + i * kw;
    for (size_t j = 0; j < n; j++) {
      const uint64_t *bj = b + j * kw;
      int32_t pop = 0;
      for (size_t w = 0; w + 1 < kw; w++) pop += __builtin_popcountll(ai[w] ^ bj[w]);
      pop += __builtin_popcountll((ai[kw - 1] ^ bj[kw - 1]) & last_mask);
      y[i * n + j] = k - 2 * pop;
    }
  }
}
