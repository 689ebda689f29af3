/* fixq_qgemm from C, without Python: the cost of the driver itself on the
 * small shapes the engine runs (and any others).
 *
 *   make lib && cc -O2 bench/bench_qgemm.c -Isrc/fixq/include build/libfixq.a -lm -lpthread -o bench_qgemm
 *   ./bench_qgemm avx2|avx512vnni|scalar THREADS MxKxN ...
 *
 * Each shape: uint8 activations over their full range (zero point 128) times
 * packed int8 weights in [-127, 127] with a bias, requantized per tensor to
 * uint8 (double rounding), as bench_gemm.py; the best of 7 batches of calls
 * (about 10 ms each, or one call).  GOP/s = 2 M N K / time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixq/fixq.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s ISA THREADS MxKxN ...\n", argv[0]);
    return 2;
  }
  fixq_init();
  int isa = -1;
  for (int i = 0; i < FIXQ_ISA_COUNT; i++)
    if (strcmp(argv[1], fixq_isa_name((fixq_isa)i)) == 0) isa = i;
  if (isa < 0 || fixq_select_isa((fixq_isa)isa) != FIXQ_OK) {
    fprintf(stderr, "ISA %s is not supported here\n", argv[1]);
    return 1;
  }
  const int threads = atoi(argv[2]);
  for (int s = 3; s < argc; s++) {
    size_t m, k, n;
    if (sscanf(argv[s], "%zux%zux%zu", &m, &k, &n) != 3) {
      fprintf(stderr, "bad shape %s\n", argv[s]);
      return 2;
    }
    uint8_t *a = malloc(m * k + 1);
    int8_t *w = malloc(n * k + 1);
    int32_t *bias = malloc(4 * n + 4);
    uint8_t *y = malloc(m * n + 1);
    uint32_t seed = 1;
    for (size_t i = 0; i < m * k; i++) a[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 24);
    for (size_t i = 0; i < n * k; i++) w[i] = (int8_t)((int)((seed = seed * 1103515245u + 12345u) >> 24) % 255 - 127);
    for (size_t i = 0; i < n; i++) bias[i] = (int32_t)(i * 37 % 2000) - 1000;
    fixq_packed_b pb;
    fixq_packed_b_init(&pb, k, n);
    pb.panels = malloc(pb.n_padded * pb.k_padded + 1);
    pb.zero_point = malloc(4 * pb.n_padded + 4);
    pb.col_sum = malloc(4 * pb.n_padded + 4);
    pb.col_abs = malloc(8 * pb.n_padded + 8);
    const int32_t w_zp = 0, multiplier = 1 << 30, shift = -12, y_zp = 128;
    fixq_requant p = {FIXQ_ROUND_DOUBLE, &multiplier, &shift, NULL, &y_zp, 0, 255};
    if (fixq_pack_b(w, FIXQ_INT8, 1, (ptrdiff_t)k, &w_zp, 1, &pb) != FIXQ_OK) return 1;
    const double ops = 2.0 * m * n * k;
    const int reps = (int)(1e9 / (ops + 1e5)) + 1; /* about 10 ms or more */
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
      const double t0 = now();
      for (int i = 0; i < reps; i++)
        if (fixq_qgemm(m, a, FIXQ_UINT8, k, 128, &pb, bias, &p, 1, y, FIXQ_UINT8, n, threads) != FIXQ_OK) return 1;
      const double t = (now() - t0) / reps;
      if (t < best) best = t;
    }
    printf("%-16s %10.2f us %8.1f GOP/s\n", argv[s], best * 1e6, ops / best * 1e-9);
    free(a), free(w), free(bias), free(y);
    free(pb.panels), free(pb.zero_point), free(pb.col_sum), free(pb.col_abs);
  }
  return 0;
}
