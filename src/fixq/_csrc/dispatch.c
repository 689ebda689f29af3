/* Runtime CPU dispatch: CPUID + XGETBV (x86-64) or the kernel's HWCAP bits
 * (aarch64 Linux) once at fixq_init, FIXQ_ISA override. */
#include <stdlib.h>
#include <string.h>

#include "fixq_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FIXQ_X86 1
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#define FIXQ_ARM_LINUX 1
#endif

fixq_isa fixq__isa = FIXQ_ISA_SCALAR;

static const char *const isa_names[FIXQ_ISA_COUNT] = {"scalar", "avx2", "avx512vnni",
                                                          "neon", "dotprod", "i8mm"};

const char *fixq_isa_name(fixq_isa isa) {
  return (unsigned)isa < FIXQ_ISA_COUNT ? isa_names[isa] : "unknown";
}

int fixq_isa_compiled(fixq_isa isa) {
  switch (isa) {
    case FIXQ_ISA_SCALAR: return 1;
#ifdef FIXQ_COMPILED_AVX2
    case FIXQ_ISA_AVX2: return 1;
#endif
#ifdef FIXQ_COMPILED_AVX512VNNI
    case FIXQ_ISA_AVX512VNNI: return 1;
#endif
#ifdef FIXQ_COMPILED_NEON
    case FIXQ_ISA_NEON: return 1;
#endif
#ifdef FIXQ_COMPILED_DOTPROD
    case FIXQ_ISA_DOTPROD: return 1;
#endif
#ifdef FIXQ_COMPILED_I8MM
    case FIXQ_ISA_I8MM: return 1;
#endif
    default: return 0;
  }
}

#ifdef FIXQ_X86
static uint64_t xgetbv0(void) {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

/* AVX2 + FMA + F16C + POPCNT, and the OS saves YMM state (XCR0 bits 1, 2). */
static int cpu_has_avx2(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  const int f16c = (c >> 29) & 1, popcnt = (c >> 23) & 1;
  if (!(osxsave && avx && fma && f16c && popcnt)) return 0;
  if ((xgetbv0() & 0x6) != 0x6) return 0;
  if (__get_cpuid_max(0, NULL) < 7) return 0;
  __cpuid_count(7, 0, a, b, c, d);
  return (b >> 5) & 1;
}

/* AVX-512 F (CPUID.7.0:EBX bit 16), DQ (17), BW (30), VL (31), VNNI (ECX bit 11),
 * and the OS saves opmask and ZMM state (XCR0 bits 5, 6, 7). */
static int cpu_has_avx512vnni(void) {
  if (!cpu_has_avx2()) return 0;
  if ((xgetbv0() & 0xE6) != 0xE6) return 0;
  unsigned a, b, c, d;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned need_b = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
  return (b & need_b) == need_b && ((c >> 11) & 1);
}
#endif

#ifdef FIXQ_ARM_LINUX
/* Linux arch/arm64 uapi hwcap.h: HWCAP_ASIMD, HWCAP_ASIMDDP, HWCAP2_I8MM.
 * Read on every call: the library keeps no state but the selected path. */
static int cpu_has_neon(void) { return (getauxval(AT_HWCAP) >> 1) & 1; }
static int cpu_has_dotprod(void) { return cpu_has_neon() && ((getauxval(AT_HWCAP) >> 20) & 1); }
static int cpu_has_i8mm(void) { return cpu_has_dotprod() && ((getauxval(AT_HWCAP2) >> 13) & 1); }
#elif defined(__aarch64__)
/* Advanced SIMD is part of every aarch64 core; without Linux's HWCAP the
 * optional dot-product and matrix-multiply paths are not offered. */
static int cpu_has_neon(void) { return 1; }
static int cpu_has_dotprod(void) { return 0; }
static int cpu_has_i8mm(void) { return 0; }
#endif

int fixq_isa_supported(fixq_isa isa) {
  if (!fixq_isa_compiled(isa)) return 0;
  switch (isa) {
    case FIXQ_ISA_SCALAR: return 1;
#ifdef FIXQ_X86
    case FIXQ_ISA_AVX2: return cpu_has_avx2();
    case FIXQ_ISA_AVX512VNNI: return cpu_has_avx512vnni();
#endif
#ifdef __aarch64__
    case FIXQ_ISA_NEON: return cpu_has_neon();
    case FIXQ_ISA_DOTPROD: return cpu_has_dotprod();
    case FIXQ_ISA_I8MM: return cpu_has_i8mm();
#endif
    default: return 0;
  }
}

fixq_isa fixq_selected_isa(void) { return fixq__isa; }

fixq_status fixq_select_isa(fixq_isa isa) {
  if ((unsigned)isa >= FIXQ_ISA_COUNT || !fixq_isa_supported(isa)) return FIXQ_ERR_UNSUPPORTED;
  fixq__isa = isa;
  return FIXQ_OK;
}

fixq_status fixq_init(void) {
  const char *want = getenv("FIXQ_ISA");
  if (want != NULL && want[0] != '\0') {
    for (int i = 0; i < FIXQ_ISA_COUNT; i++)
      if (strcmp(want, isa_names[i]) == 0) return fixq_select_isa((fixq_isa)i);
    return FIXQ_ERR_INVALID_ARGUMENT;
  }
  fixq_isa best = FIXQ_ISA_SCALAR;
  for (int i = 0; i < FIXQ_ISA_COUNT; i++)
    if (fixq_isa_supported((fixq_isa)i)) best = (fixq_isa)i;
  fixq__isa = best;
  return FIXQ_OK;
}
