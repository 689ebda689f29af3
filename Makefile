# The C core as a static library, without Python:  make -j$(nproc) lib  ->  build/libfixq.a
# (every object is its own target: -j compiles them in parallel).
# Same sources, flags and macros as setup.py: a file named <name>__avx2.c gets
# the AVX2 flags alone, <name>__avx512vnni.c the AVX-512 ones (x86 only),
# <name>__neon.c, __dotprod.c, __i8mm.c their -march (aarch64 only);
# everything else the baseline flags.  Link a
# program with:  cc prog.c -Isrc/fixq/include build/libfixq.a -lm -lpthread
# (docs/embedding.md).  Overrides: CC, AR, OPT (default -O3), BUILD (output
# dir), ARCH (default uname -m; the target's, to cross-build:
#   make lib CC=aarch64-linux-gnu-gcc AR=aarch64-linux-gnu-ar ARCH=aarch64).
CC ?= cc
AR ?= ar
OPT ?= -O3
BUILD ?= build

CSRC := src/fixq/_csrc
ARCH := $(shell uname -m)
X86 := $(filter x86_64 amd64 i686 i386 x86,$(ARCH))
ARM := $(filter aarch64 arm64,$(ARCH))

# setup.py's flags plus those it inherits from Python's own build (-fwrapv -DNDEBUG -fPIC).
CFLAGS_COMMON := -std=gnu11 -ffp-contract=off -fno-strict-aliasing -Wall -Wno-unused-function \
	-fwrapv -fPIC $(OPT) -DNDEBUG -DFIXQ_BUILDING=1 $(if $(X86),-DFIXQ_COMPILED_AVX2=1 -DFIXQ_COMPILED_AVX512VNNI=1) \
	$(if $(ARM),-DFIXQ_COMPILED_NEON=1 -DFIXQ_COMPILED_DOTPROD=1 -DFIXQ_COMPILED_I8MM=1) \
	-Isrc/fixq/include -I$(CSRC)
AVX2_FLAGS := -mavx2 -mfma -mf16c -mpopcnt
AVX512VNNI_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
NEON_FLAGS := -march=armv8-a+simd
DOTPROD_FLAGS := -march=armv8.2-a+dotprod
I8MM_FLAGS := -march=armv8.6-a+i8mm

SRCS := $(filter-out $(if $(X86),,$(CSRC)/%__avx2.c $(CSRC)/%__avx512vnni.c) \
	$(if $(ARM),,$(CSRC)/%__neon.c $(CSRC)/%__dotprod.c $(CSRC)/%__i8mm.c),$(wildcard $(CSRC)/*.c))
OBJS := $(patsubst $(CSRC)/%.c,$(BUILD)/libfixq/%.o,$(SRCS))
HDRS := $(wildcard $(CSRC)/*.h src/fixq/include/fixq/*.h)

.PHONY: lib clean
lib: $(BUILD)/libfixq.a

$(BUILD)/libfixq.a: $(OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libfixq/%__avx2.o: $(CSRC)/%__avx2.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/libfixq/%__avx512vnni.o: $(CSRC)/%__avx512vnni.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(AVX512VNNI_FLAGS) -c $< -o $@

$(BUILD)/libfixq/%__neon.o: $(CSRC)/%__neon.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(NEON_FLAGS) -c $< -o $@

$(BUILD)/libfixq/%__dotprod.o: $(CSRC)/%__dotprod.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(DOTPROD_FLAGS) -c $< -o $@

$(BUILD)/libfixq/%__i8mm.o: $(CSRC)/%__i8mm.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) $(I8MM_FLAGS) -c $< -o $@

$(BUILD)/libfixq/%.o: $(CSRC)/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_COMMON) -c $< -o $@

clean:
	rm -rf $(BUILD)/libfixq $(BUILD)/libfixq.a
