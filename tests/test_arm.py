"""The aarch64 paths (neon, dotprod, i8mm), checked here on x86: the C core cross-built with
`make lib ARCH=aarch64`, tests/c/isa_equal.c run under qemu-aarch64 on emulated cores that have
each path, every kernel compared bit for bit with the scalar path.  Needs Debian's
gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user: installed with apt-get when missing
and running as root (as on CI), else the tests skip and say what to install."""
import os
import platform
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CROSS = "aarch64-linux-gnu-"
SYSROOT = "/usr/aarch64-linux-gnu"
PACKAGES = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user"]
TOOLS = [CROSS + "gcc", CROSS + "ar", CROSS + "nm", "qemu-aarch64"]

pytestmark = pytest.mark.slow


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None]


def run(cmd, cwd=ROOT, env=None, timeout=180):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def cross_tools():
    if not (ROOT / "Makefile").is_file() or not (ROOT / "tests" / "c" / "isa_equal.c").is_file():
        pytest.skip("not a source checkout (no Makefile or tests/c)")
    if platform.machine().lower() in ("aarch64", "arm64"):
        pytest.skip("an aarch64 host runs the Arm paths natively (tests/test_*.py on every supported path)")
    if missing_tools():
        apt = shutil.which("apt-get")
        if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip(f"{', '.join(missing_tools())} not found; install {' '.join(PACKAGES)} "
                        "(Debian/Ubuntu: apt-get install), or run the tests as root to let them do it")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run([apt, "update", "-q"], env=env, timeout=300)
        run([apt, "install", "-y", "-q", "--no-install-recommends", *PACKAGES], env=env, timeout=600)
        if missing_tools():
            pytest.skip(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(missing_tools())} is still missing")


@pytest.fixture(scope="module")
def isa_equal(cross_tools, tmp_path_factory):
    """tests/c/isa_equal.c linked against the core cross-built for aarch64 by the Makefile."""
    build = tmp_path_factory.mktemp("arm")
    run(["make", "-s", "-j2", "lib", f"CC={CROSS}gcc", f"AR={CROSS}ar", "ARCH=aarch64", f"BUILD={build}", "OPT=-O2"])
    objects = sorted(p.name for p in (build / "libfixq").iterdir())
    for name in ("qgemm_s8__neon.o", "qgemm_s8__dotprod.o", "qgemm_s8__i8mm.o", "requant__neon.o", "eltwise__neon.o",
                 "engine_loops__neon.o"):
        assert name in objects
    assert not [o for o in objects if "avx" in o]
    exe = build / "isa_equal"
    run([f"{CROSS}gcc", "-O1", "-Wall", "-Wextra", "-Werror", "tests/c/isa_equal.c", "-Isrc/fixq/include",
         "-Isrc/fixq/_csrc", str(build / "libfixq.a"), "-lm", "-lpthread", "-o", str(exe)])
    return exe


def qemu(exe, cpu, isa=None):
    env = {k: v for k, v in os.environ.items() if k != "FIXQ_ISA"}
    if isa is not None:
        env["FIXQ_ISA"] = isa
    return run(["qemu-aarch64", "-cpu", cpu, "-L", SYSROOT, str(exe)], env=env).strip().splitlines()[-1]


def test_every_arm_path_matches_scalar(isa_equal):
    """On an emulated core with every extension (qemu -cpu max), neon, dotprod and i8mm each give
    the scalar path's bits: GEMM, requantize, quantize/dequantize, elementwise, the executor's loops."""
    assert qemu(isa_equal, "max").endswith("(neon, dotprod, i8mm)")


@pytest.mark.parametrize("isa", ["neon", "dotprod", "i8mm"])
def test_fixq_isa_forces_one_arm_path(isa_equal, isa):
    assert qemu(isa_equal, "max", isa).endswith(f"({isa})")


@pytest.mark.parametrize("cpu,paths", [("cortex-a53", "neon"), ("cortex-a76", "neon, dotprod")])
def test_arm_paths_follow_the_cpu(isa_equal, cpu, paths):
    """HWCAP picks what the core has: a Cortex-A53 (no dot product) runs neon, a Cortex-A76 dotprod."""
    assert qemu(isa_equal, cpu).endswith(f"({paths})")


def test_setup_py_builds_the_arm_files_on_aarch64(cross_tools, tmp_path, monkeypatch):
    """What `pip install .` compiles on an aarch64 host (setup.py read as if platform.machine() were
    aarch64): the neon, dotprod and i8mm files, each with its -march, cross-compiled here, and the
    Cython wrapper with them, linked as the extension is: no fixq symbol left undefined (every
    kernel the tables name is built).  The wrapper compiles against this host's Python headers
    (x86-64 Linux, LP64 as aarch64 Linux: the same sizes)."""
    import setuptools
    import Cython.Build
    captured = {}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.setattr(Cython.Build, "cythonize", lambda exts, **kw: exts)
    monkeypatch.chdir(ROOT)
    conf = runpy.run_path(str(ROOT / "setup.py"))
    (ext,) = captured["ext_modules"]
    sources = [s for s in ext.sources if s.endswith(".c")]
    isas = {conf["isa_of"](s) for s in sources}
    assert {"neon", "dotprod", "i8mm"} <= isas and not isas & {"avx2", "avx512vnni"}
    macros = [f"-D{name}={value}" for name, value in ext.define_macros]
    assert "-DFIXQ_COMPILED_I8MM=1" in macros and not [m for m in macros if "AVX" in m]
    includes = [f"-I{d}" for d in ext.include_dirs]
    objects = []
    for src in sources:
        flags = conf["ISA_FLAGS"].get(conf["isa_of"](src), [])
        objects.append(str(tmp_path / (Path(src).stem + ".o")))
        run([f"{CROSS}gcc", "-fPIC", "-Werror", *ext.extra_compile_args, *macros, *includes, *flags, "-c", src,
             "-o", objects[-1]])
    core_c = tmp_path / "_core.c"
    run([sys.executable, "-m", "cython", "-3", "-I", "src", "-o", str(core_c), "src/fixq/_core.pyx"])
    objects.append(str(tmp_path / "_core.o"))
    run([f"{CROSS}gcc", "-fPIC", "-O0", "-std=gnu11", *macros, *includes, f"-I{sysconfig.get_paths()['include']}",
         "-c", str(core_c), "-o", objects[-1]])
    so = tmp_path / "_core.so"
    run([f"{CROSS}gcc", "-shared", *objects, *ext.extra_link_args, "-o", str(so)])
    undefined = run([f"{CROSS}nm", "-u", str(so)]).split()
    assert "PyInit__core" in run([f"{CROSS}nm", "-D", "--defined-only", str(so)])
    assert not [name for name in undefined if "fixq" in name]
