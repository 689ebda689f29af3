/*
 * fixq: calling an installed fixq from another Python extension, without
 * linking against it.
 *
 * fixq._core exports `_C_API`, a PyCapsule named FIXQ_CAPSULE_NAME that holds
 * a `const fixq_api *`: a versioned table of the public entry points of
 * fixq.h.  In a C extension:
 *
 *     #include <fixq/fixq_capsule.h>      (include dir: fixq.get_include())
 *     ... in PyInit_<module>:  if (import_fixq() < 0) return NULL;
 *
 * After import_fixq() succeeds, the usual names (fixq_requantize_s32,
 * fixq_quantize_f32, ...) call the installed fixq's kernels through the table,
 * so code written against fixq.h compiles unchanged.  fixq._core owns the CPU
 * dispatch state: fixq_init and fixq_select_isa are not in the table.
 * The table pointer is static in each translation unit: call import_fixq()
 * once in every file that uses it.  Cython modules use fixq/cfixq.pxd, which
 * declares the same names through this header.
 *
 * ABI: a fixq build refuses (ImportError) a table whose abi_version differs
 * from FIXQ_API_VERSION or whose size is smaller than this header's
 * fixq_api; new entry points are only ever appended.
 */
#ifndef FIXQ_FIXQ_CAPSULE_H_
#define FIXQ_FIXQ_CAPSULE_H_

#ifndef FIXQ_BUILDING
#include <Python.h> /* first, before any standard header, as Python requires */
#endif
#include "fixq/fixq.h"

#define FIXQ_API_VERSION 1
#define FIXQ_CAPSULE_NAME "fixq._core._C_API"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fixq_api {
  uint32_t abi_version; /* FIXQ_API_VERSION of the fixq that filled the table */
  uint32_t size;        /* sizeof(fixq_api) of that fixq */
  const char *(*status_string)(fixq_status status);
  fixq_isa (*selected_isa)(void);
  int (*isa_compiled)(fixq_isa isa);
  int (*isa_supported)(fixq_isa isa);
  const char *(*isa_name)(fixq_isa isa);
  int32_t (*srdhm)(int32_t a, int32_t b);
  int32_t (*rounding_divide_by_pot)(int32_t x, int exponent);
  fixq_status (*quantize_multiplier)(double real, int32_t *multiplier, int *shift);
  int32_t (*multiply_by_quantized_multiplier)(int32_t x, int32_t m, int shift, fixq_rounding rounding);
  fixq_status (*requantize_s32)(const int32_t *x, void *y, fixq_dtype y_dtype, size_t rows,
                                size_t channels, size_t inner, const fixq_requant *p);
  fixq_status (*quantize_f32)(const float *x, void *y, fixq_dtype y_dtype, size_t rows,
                              size_t channels, size_t inner, const float *scale,
                              const int32_t *zero_point, int32_t qmin, int32_t qmax);
  fixq_status (*dequantize)(const void *q, fixq_dtype q_dtype, float *y, size_t rows,
                            size_t channels, size_t inner, const float *scale,
                            const int32_t *zero_point);
  /* matmul with packed weights and the fused output stage */
  void (*packed_b_init)(fixq_packed_b *pb, size_t k, size_t n);
  fixq_status (*pack_b)(const void *b, fixq_dtype b_dtype, ptrdiff_t stride_k, ptrdiff_t stride_n,
                        const int32_t *zero_point, size_t zp_count, fixq_packed_b *pb);
  fixq_status (*packed_b_finish)(fixq_packed_b *pb);
  fixq_status (*qgemm)(size_t m, const void *a, fixq_dtype a_dtype, size_t lda, int32_t a_zero_point,
                       const fixq_packed_b *b, const int32_t *bias, const fixq_requant *p,
                       size_t p_channels, void *y, fixq_dtype y_dtype, size_t ldy, int threads);
} fixq_api;

#ifdef FIXQ_BUILDING
/* The table fixq._core wraps in its capsule (src/fixq/_csrc/capsule.c). */
const fixq_api *fixq__capsule_api(void);
#endif

#ifdef __cplusplus
}
#endif

#ifndef FIXQ_BUILDING
static const fixq_api *fixq_capi = NULL;

/* Imports fixq._core and fills fixq_capi.  0 on success; -1 with a Python
 * exception set (ImportError when the installed fixq is incompatible). */
static inline int import_fixq(void) {
  const fixq_api *api = (const fixq_api *)PyCapsule_Import(FIXQ_CAPSULE_NAME, 0);
  if (api == NULL) return -1;
  if (api->abi_version != FIXQ_API_VERSION || api->size < sizeof(fixq_api)) {
    PyErr_Format(PyExc_ImportError,
                 "the installed fixq exports C API version %u (%u bytes); this extension was built "
                 "against version %d (%u bytes): rebuild it against the installed fixq "
                 "(fixq.get_include())",
                 (unsigned)api->abi_version, (unsigned)api->size, FIXQ_API_VERSION,
                 (unsigned)sizeof(fixq_api));
    return -1;
  }
  fixq_capi = api;
  return 0;
}

/* fixq.h's names, called through the table. */
#define fixq_status_string (fixq_capi->status_string)
#define fixq_selected_isa (fixq_capi->selected_isa)
#define fixq_isa_compiled (fixq_capi->isa_compiled)
#define fixq_isa_supported (fixq_capi->isa_supported)
#define fixq_isa_name (fixq_capi->isa_name)
#define fixq_srdhm (fixq_capi->srdhm)
#define fixq_rounding_divide_by_pot (fixq_capi->rounding_divide_by_pot)
#define fixq_quantize_multiplier (fixq_capi->quantize_multiplier)
#define fixq_multiply_by_quantized_multiplier (fixq_capi->multiply_by_quantized_multiplier)
#define fixq_requantize_s32 (fixq_capi->requantize_s32)
#define fixq_quantize_f32 (fixq_capi->quantize_f32)
#define fixq_dequantize (fixq_capi->dequantize)
#define fixq_packed_b_init (fixq_capi->packed_b_init)
#define fixq_pack_b (fixq_capi->pack_b)
#define fixq_packed_b_finish (fixq_capi->packed_b_finish)
#define fixq_qgemm (fixq_capi->qgemm)
#endif /* !FIXQ_BUILDING */

#endif /* FIXQ_FIXQ_CAPSULE_H_ */
