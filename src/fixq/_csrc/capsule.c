/* The function table fixq._core exports as its `_C_API` capsule
 * (include/fixq/fixq_capsule.h).  New entries go at the end. */
#include "fixq/fixq_capsule.h"

static const fixq_api api = {
    FIXQ_API_VERSION,
    (uint32_t)sizeof(fixq_api),
    fixq_status_string,
    fixq_selected_isa,
    fixq_isa_compiled,
    fixq_isa_supported,
    fixq_isa_name,
    fixq_srdhm,
    fixq_rounding_divide_by_pot,
    fixq_quantize_multiplier,
    fixq_multiply_by_quantized_multiplier,
    fixq_requantize_s32,
    fixq_quantize_f32,
    fixq_dequantize,
    fixq_packed_b_init,
    fixq_pack_b,
    fixq_packed_b_finish,
    fixq_qgemm,
};

const fixq_api *fixq__capsule_api(void) { return &api; }
