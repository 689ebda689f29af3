/* AVX-512 requantize micro-kernel (fixq_requantize_s32 and the GEMM output
 * stage on the avx512vnni path), bit-identical to requant__scalar.c.
 * Sixteen int32 lanes at a time, the last group of a row through masks.
 * Against the AVX2 kernel: 64-bit arithmetic shifts and min/max, compares
 * into masks and narrowing stores take about a third of its instructions. */
#include "fixq_requant_avx512.h"

/* Each group of parameters is prepared once for all rows. */
ALWAYS_INLINE void requant_rows(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                                void *y, size_t y_stride, fixq_dtype dt, const fixq_requant *p,
                                fixq_rounding mode) {
  const __m512i qmin = _mm512_set1_epi32(p->qmin), qmax = _mm512_set1_epi32(p->qmax);
  if (inner == 1) {
    /* parameters vary along the vector */
    for (size_t c = 0; c < channels; c += 16) {
      const __mmask16 mask = channels - c >= 16 ? 0xFFFF : (__mmask16)((1u << (channels - c)) - 1);
      const lanes L = lanes_load(p, c, mask, 1, mode);
      for (size_t r = 0; r < rows; r++)
        store16(y, r * y_stride + c, dt,
                requant16(_mm512_maskz_loadu_epi32(mask, x + r * x_stride + c), &L, mode, qmin, qmax), mask);
    }
    return;
  }
  const __mmask16 tail = (__mmask16)((1u << (inner % 16)) - 1);
  for (size_t c = 0; c < channels; c++) {
    const lanes L = lanes_load(p, c, 1, 0, mode);
    for (size_t r = 0; r < rows; r++) {
      const int32_t *xr = x + r * x_stride + c * inner;
      const size_t yr = r * y_stride + c * inner;
      size_t i = 0;
      for (; i + 16 <= inner; i += 16)
        store16(y, yr + i, dt, requant16(_mm512_loadu_si512(xr + i), &L, mode, qmin, qmax), 0xFFFF);
      if (i < inner)
        store16(y, yr + i, dt, requant16(_mm512_maskz_loadu_epi32(tail, xr + i), &L, mode, qmin, qmax), tail);
    }
  }
}

void fixq_requant_s32__avx512vnni(size_t rows, size_t channels, size_t inner, const int32_t *x, size_t x_stride,
                                  void *y, size_t y_stride, fixq_dtype y_dtype, const fixq_requant *p) {
  switch (p->rounding) {
    case FIXQ_ROUND_DOUBLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_DOUBLE);
      break;
    case FIXQ_ROUND_SINGLE:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_SINGLE);
      break;
    default:
      requant_rows(rows, channels, inner, x, x_stride, y, y_stride, y_dtype, p, FIXQ_ROUND_FP32);
      break;
  }
}
