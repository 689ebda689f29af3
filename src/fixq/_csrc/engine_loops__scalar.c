/* The executor's inner loops (engine_loops.h) built with the scalar flags. */
#include "engine_loops.h"

const fixq_eng_loops fixq_eng_loops__scalar = FIXQ_ENG_LOOPS_INIT;
