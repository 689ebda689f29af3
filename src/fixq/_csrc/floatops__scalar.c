/* Layer norm, softmax, GELU and attention: the scalar path (fixq_floatops.h states
 * what each computes).  Row statistics are summed in double, one pass:
 * var = E[x^2] - mean^2 (exact enough in double unless |mean| / std passes ~1e6). */
#include <string.h>

#include "fixq_floatops.h"

static float exp_f(float x) {
  if (x != x) return x;
  if (x < FIXQ__EXP_LO) return 0.0f;
  if (x > FIXQ__EXP_HI) x = FIXQ__EXP_HI;
  const float n = fixq__round_even_small(x * FIXQ__LOG2E);
  const float r = (x - n * FIXQ__LN2_HI) - n * FIXQ__LN2_LO;
  float p = FIXQ__EXP_P0;
  p = p * r + FIXQ__EXP_P1;
  p = p * r + FIXQ__EXP_P2;
  p = p * r + FIXQ__EXP_P3;
  p = p * r + FIXQ__EXP_P4;
  p = p * r + FIXQ__EXP_P5;
  const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return (p * (r * r) + r + 1.0f) * scale;
}

static float erf_f(float x) {
  x = x < -4.0f ? -4.0f : x > 4.0f ? 4.0f : x; /* NaN stays NaN */
  const float x2 = x * x;
  float p = FIXQ__ERF_A13;
  p = p * x2 + FIXQ__ERF_A11;
  p = p * x2 + FIXQ__ERF_A9;
  p = p * x2 + FIXQ__ERF_A7;
  p = p * x2 + FIXQ__ERF_A5;
  p = p * x2 + FIXQ__ERF_A3;
  p = p * x2 + FIXQ__ERF_A1;
  float q = FIXQ__ERF_B8;
  q = q * x2 + FIXQ__ERF_B6;
  q = q * x2 + FIXQ__ERF_B4;
  q = q * x2 + FIXQ__ERF_B2;
  q = q * x2 + FIXQ__ERF_B0;
  return x * p / q;
}

static void layer_norm(size_t rows, size_t n, const float *x, const float *w, const float *b, float eps, float *y) {
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
      sum += x[i];
      sq += (double)x[i] * x[i];
    }
    const double mean = sum / (double)n, var = fmax(sq / (double)n - mean * mean, 0.0);
    const float rstd = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
    for (size_t i = 0; i < n; i++) y[i] = (x[i] - m) * rstd * w[i] + b[i];
  }
}

static void softmax(size_t rows, size_t n, const float *x, float *y) {
  for (size_t r = 0; r < rows; r++, x += n, y += n) {
    float max = x[0];
    for (size_t i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += y[i] = exp_f(x[i] - max);
    const float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++) y[i] *= inv;
  }
}

static void gelu_row(size_t count, const float *x, fixq_gelu_form form, float *y) {
  if (form == FIXQ_GELU_ERF) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] * 0.5f * (1.0f + erf_f(x[i] * FIXQ__SQRT1_2));
  } else { /* 0.5 x (1 + tanh u) = x / (1 + e^(-2u)) */
    for (size_t i = 0; i < count; i++) {
      const float v = x[i], u = FIXQ__SQRT_2_OVER_PI * (v + FIXQ__GELU_TANH_C * (v * v * v));
      y[i] = v / (1.0f + exp_f(-2.0f * u));
    }
  }
}

/* rows x cols floats, rows ldx (x) and ldy (y) apart, row by row */
static void gelu(size_t rows, size_t cols, const float *x, size_t ldx, fixq_gelu_form form, float *y, size_t ldy) {
  for (size_t r = 0; r < rows; r++) gelu_row(cols, x + r * ldx, form, y + r * ldy);
}

/* Scores of each query row against K read in place, the row's softmax (the function above), then P V. */
static void attention(size_t i0, size_t i1, size_t l, size_t l_kept, size_t d, const float *q, ptrdiff_t sq,
                      const float *k, ptrdiff_t sk, const float *v, ptrdiff_t sv, float scale, const float *bias,
                      float *o, size_t so, float *work) {
  float *s = work, *qs = s + l, kv = 0.0f;
  for (size_t j = 0; j < l; j++)
    for (size_t c = 0; c < d; c++) kv += fabsf(k[(ptrdiff_t)j * sk + (ptrdiff_t)c]);
  for (size_t j = l_kept; j < l; j++)
    for (size_t c = 0; c < d; c++) kv += fabsf(v[(ptrdiff_t)j * sv + (ptrdiff_t)c]);
  for (size_t i = i0; i < i1; i++) {
    const float *qi = q + (ptrdiff_t)i * sq;
    float qsum = 0.0f;
    for (size_t c = 0; c < d; c++) qsum += fabsf(qs[c] = scale * qi[c]);
    const size_t n = fixq__att_keys(l, l_kept, kv, &qsum, 1);
    for (size_t j = 0; j < n; j++) {
      const float *kj = k + (ptrdiff_t)j * sk;
      float acc = 0.0f;
      for (size_t c = 0; c < d; c++) acc += qs[c] * kj[c];
      s[j] = bias == NULL ? acc : acc + bias[j];
    }
    softmax(1, n, s, s);
    float *oi = o + i * so;
    for (size_t c = 0; c < d; c++) oi[c] = 0.0f;
    for (size_t j = 0; j < n; j++) {
      const float p = s[j], *vj = v + (ptrdiff_t)j * sv;
      for (size_t c = 0; c < d; c++) oi[c] += p * vj[c];
    }
  }
}

const fixq__float_kernels fixq__float_kernels__scalar = {layer_norm, softmax, gelu, attention};
