/* The executor's inner loops (engine_loops.h) built with the avx2 flags. */
#include "engine_loops.h"

const fixq_eng_loops fixq_eng_loops__avx2 = FIXQ_ENG_LOOPS_INIT;
