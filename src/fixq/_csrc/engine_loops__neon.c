/* The executor's inner loops (engine_loops.h) built with the neon flags and
 * its NEON depthwise block (the dotprod and i8mm paths use these too: no loop
 * there has a dot product). */
#define FIXQ_ENG_LOOPS_NEON 1
#include "engine_loops.h"

const fixq_eng_loops fixq_eng_loops__neon = FIXQ_ENG_LOOPS_INIT;
