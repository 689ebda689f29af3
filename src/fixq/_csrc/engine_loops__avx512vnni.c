/* The executor's inner loops (engine_loops.h) built with the avx512vnni flags: the depthwise taps 32
 * channels a block in 512-bit registers, the other loops as the compiler vectorizes them there. */
#include "engine_loops.h"

const fixq_eng_loops fixq_eng_loops__avx512vnni = FIXQ_ENG_LOOPS_INIT;
