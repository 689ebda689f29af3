"""Build fixq's C core and Cython wrapper.

The C core lives in src/fixq/_csrc.  A file named ``<kernel>__<isa>.c`` is an
ISA-specific micro-kernel: it is compiled with that ISA's flags alone, and only
on CPUs families that have the ISA.  Everything else is built for the baseline
(x86-64 / aarch64) with -O3 and no -march=native; the right path is picked at
import time by runtime CPU dispatch (src/fixq/_csrc/dispatch.c).

FIXQ_DEBUG=1 turns on Cython bounds/wraparound checks and builds with -O0 -g.
"""
import glob
import os
import platform
from concurrent.futures import ThreadPoolExecutor

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "src/fixq/_csrc"
DEBUG = os.environ.get("FIXQ_DEBUG", "0") not in ("", "0")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
ARM = platform.machine().lower() in ("aarch64", "arm64")

# Flags given to ISA-specific files only.
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-mpopcnt"],
    "avx512vnni": ["-mavx2", "-mfma", "-mf16c", "-mpopcnt",
                   "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni"],
    "neon": ["-march=armv8-a+simd"],
    "dotprod": ["-march=armv8.2-a+dotprod"],
    "i8mm": ["-march=armv8.6-a+i8mm"],
}
ISA_ON_THIS_ARCH = {"avx2": X86, "avx512vnni": X86, "neon": ARM, "dotprod": ARM, "i8mm": ARM}


def isa_of(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.rsplit("__", 1)[1] if "__" in stem else None


def c_sources():
    out = []
    for path in sorted(glob.glob(os.path.join(CSRC, "*.c"))):
        isa = isa_of(path)
        if isa in (None, "scalar") or ISA_ON_THIS_ARCH.get(isa, False):
            out.append(path)
    return out


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BuildExt(build_ext):
    """Compiles the C files in parallel, each ISA file with its own flags on top of the common ones.

    ``build_ext -j N`` (``--parallel N``) sets the number of compiler processes; by default, one per
    CPU this process may run on.  Files start in the order of the sources, the slowest to compile
    (Cython's _core.c) first."""

    def build_extensions(self):
        compiler = self.compiler
        compile_one, compile_all = compiler._compile, compiler.compile
        jobs = self.parallel if type(self.parallel) is int and self.parallel > 0 else cpu_count()

        def compile_parallel(*args, **kwargs):
            todo = []
            # CCompiler.compile's setup (object names, output directories), with each file queued
            compiler._compile = lambda obj, src, *rest: todo.append((obj, src) + rest)
            try:
                objects = compile_all(*args, **kwargs)
            finally:
                compiler._compile = compile_one
            with ThreadPoolExecutor(jobs) as pool:
                running = [pool.submit(compile_with_isa_flags, *job) for job in todo]
                try:
                    for done in running:
                        done.result()
                except BaseException:  # the first CompileError: start no more files
                    pool.shutdown(cancel_futures=True)
                    raise
            return objects

        def compile_with_isa_flags(obj, src, ext, cc_args, extra_postargs, pp_opts):
            extra = list(extra_postargs) + ISA_FLAGS.get(isa_of(src), [])
            compile_one(obj, src, ext, cc_args, extra, pp_opts)

        compiler.compile = compile_parallel
        super().build_extensions()


common = ["-std=gnu11", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
common += ["-O0", "-g"] if DEBUG else ["-O3"]
macros = [("FIXQ_BUILDING", "1"), ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
macros += [("FIXQ_COMPILED_" + isa.upper(), "1") for isa, ok in ISA_ON_THIS_ARCH.items() if ok]

ext = Extension(
    "fixq._core",
    sources=["src/fixq/_core.pyx"] + c_sources(),
    include_dirs=["src/fixq/include", CSRC, numpy.get_include()],  # numpy's C API in _core (_engine.pxi)
    define_macros=macros,
    extra_compile_args=common,
    extra_link_args=["-lpthread"],
)

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

setup(
    ext_modules=cythonize([ext], compiler_directives=directives, include_path=["src"]),
    cmdclass={"build_ext": BuildExt},
)
