"""Embedding fixq (docs/embedding.md): the public header, the static library, the capsule and the
Cython surface.  The consumer programs are the examples of docs/embedding.md, compiled and run in
a temporary directory and checked bit for bit against the Python API."""
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fixq
from fixq import _core

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "embedding.md"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CC is None, reason="no C compiler found (set CC)"),
]


def doc_files():
    """{path: source} for each code block of docs/embedding.md whose first line names a file."""
    files = {}
    for body in re.findall(r"```(?:c|python|cython)\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"(?:/\*|#) (\w+/[\w.]+)(?: \*/)?", first.strip())
        if m:
            files[m.group(1)] = body
    return files


def run(cmd, cwd, env=None):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def demo_inputs(m=3, k=37, n=19):
    """The inputs c_demo/fixq_demo.c builds."""
    i = np.arange(m * k, dtype=np.uint64)
    x = ((i * 2654435761) % 2**32 % 1001).astype(np.float32) / np.float32(100) - np.float32(5)
    i = np.arange(n * k, dtype=np.uint64)
    w = (((i * 40503) % 2**32 % 255).astype(np.int32) - 127).astype(np.int8).reshape(n, k)
    c = np.arange(n)
    bias = ((c * 7919) % 2001 - 1000).astype(np.int32)
    multiplier, shift = fixq.quantize_multiplier(0.0002 * (c + 1))
    i = np.arange(m * n, dtype=np.uint64)
    skip = (((i * 69069) % 2**32 % 256).astype(np.int32) - 128).astype(np.int8).reshape(m, n)
    return x.reshape(m, k), w, bias, multiplier, shift, skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    for name, src in doc_files().items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(src)
    return d


def consumer_env():
    """The test process's fixq (and its .pxd files) for the build subprocesses; -O1 keeps them quick."""
    env = dict(os.environ, CFLAGS="-O1")
    pkg_parent = str(Path(fixq.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# ---- the public header -----------------------------------------------------------------------


HEADER_CASES = [("fixq.h", lang, std) for lang, std in [
    ("c", "c89"), ("c", "c99"), ("c", "c11"), ("c++", "c++98"), ("c++", "c++11"), ("c++", "c++17")]]
HEADER_CASES += [("fixq_capsule.h", lang, std) for lang, std in [
    ("c", "c99"), ("c", "c11"), ("c++", "c++11"), ("c++", "c++17")]]


@pytest.mark.parametrize("header,lang,std", HEADER_CASES)
def test_header_compiles_as_c_and_cxx(tmp_path, header, lang, std):
    """fixq.h in every C and C++ dialect; fixq_capsule.h (which includes Python.h) in those Python
    supports.  -pedantic -Wall -Wextra -Werror."""
    compiler = CC if lang == "c" else CXX
    if compiler is None:
        pytest.skip("no C++ compiler found (set CXX)")
    src = tmp_path / ("t.c" if lang == "c" else "t.cpp")
    call = "import_fixq() < 0 ? 1 : " if header == "fixq_capsule.h" else ""
    src.write_text(f"#include <fixq/{header}>\n"
                   f"int f(void) {{ return {call}fixq_status_string(FIXQ_OK)[0] == 0; }}\n")
    run([compiler, f"-std={std}", "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
         "-I", fixq.get_include(), "-I", sysconfig.get_paths()["include"], str(src)], tmp_path)


def test_get_include_holds_the_headers():
    inc = Path(fixq.get_include())
    assert (inc / "fixq" / "fixq.h").is_file()
    assert (inc / "fixq" / "fixq_capsule.h").is_file()
    assert (Path(fixq.__file__).parent / "cfixq.pxd").is_file()


# ---- 1. the static library -------------------------------------------------------------------


@pytest.fixture(scope="module")
def libfixq(tmp_path_factory):
    if shutil.which("make") is None:
        pytest.skip("make not found")
    if not (ROOT / "Makefile").is_file():
        pytest.skip("not a source checkout (no Makefile)")
    build = tmp_path_factory.mktemp("libfixq")
    run(["make", "-s", "-j2", "lib", f"BUILD={build}", "OPT=-O1", f"CC={CC}"], ROOT)
    return build / "libfixq.a"


def test_static_library_writes_only_the_isa_and_the_pool_and_never_prints(libfixq):
    """After fixq_init nothing is written but the selected path (fixq__isa) and the worker pool of
    threads > 1 (parallel.c: pool, pool_once); no stdio, no abort."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump not found")
    table = run(["objdump", "-t", str(libfixq)], libfixq.parent)
    writable = set()
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 5 and " O " in line:
            section = parts[-3]
            if (section.startswith((".data", ".bss", ".tdata", ".tbss")) or section == "*COM*") \
                    and not section.startswith(".data.rel.ro"):
                writable.add(parts[-1])
    assert writable == {"fixq__isa", "pool", "pool_once"}
    undefined = set(run(["nm", "-u", str(libfixq)], libfixq.parent).split())
    banned = {"printf", "puts", "putchar", "fprintf", "fputs", "fwrite", "perror", "abort", "exit",
              "__assert_fail", "__printf_chk", "__fprintf_chk"}
    assert not undefined & banned


def test_c_program_linked_against_static_library(workdir, libfixq):
    exe = workdir / "fixq_demo"
    run([CC, "-O1", "c_demo/fixq_demo.c", "-I", fixq.get_include(), str(libfixq), "-lm", "-lpthread",
         "-o", str(exe)], workdir)
    x, w, bias, multiplier, shift, skip = demo_inputs()
    want_a = fixq.quantize(x, np.float32(0.05), -3)
    want_y = fixq.qlinear(want_a, w, bias, a_zero_point=-3, multiplier=multiplier, shift=shift,
                          out_zero_point=5)
    f32 = np.float32
    want_z = fixq.qadd(want_y, skip, a_scale=f32(0.1), a_zero_point=5, b_scale=f32(0.05), b_zero_point=-3,
                       out_scale=f32(0.12), out_zero_point=2)
    for isa in fixq.cpu_info()["supported"]:
        out = run([str(exe)], workdir, env=dict(os.environ, FIXQ_ISA=isa)).splitlines()
        assert out[0] == isa
        np.testing.assert_array_equal(np.array(out[1].split(), np.int8), want_a.reshape(-1))
        np.testing.assert_array_equal(np.array(out[2].split(), np.int8), want_y.reshape(-1))
        np.testing.assert_array_equal(np.array(out[3].split(), np.int8), want_z.reshape(-1))


def test_c_api_limits(libfixq, tmp_path):
    """tests/c/api_limits.c against the static library, on every CPU path: each size of each entry
    point at SIZE_MAX and SIZE_MAX / 2 + 1 (a negative int), and sizes whose products overflow, get
    FIXQ_ERR_INVALID_ARGUMENT and no crash (each call in a child process); the quantize_multiplier
    flush threshold, requant's zero point range and eltwise_nd's ndim, as fixq.h states them."""
    exe = tmp_path / "api_limits"
    run([CC, "-O1", "-Wall", "-Wextra", "-Werror", str(ROOT / "tests" / "c" / "api_limits.c"), "-I",
         fixq.get_include(), str(libfixq), "-lm", "-lpthread", "-o", str(exe)], tmp_path)
    for isa in fixq.cpu_info()["supported"]:
        out = run([str(exe)], tmp_path, env=dict(os.environ, FIXQ_ISA=isa))
        assert out.startswith("ok: ") and out.rstrip().endswith(f"({isa})"), out


# ---- 2. and 3. extensions through the capsule ------------------------------------------------


def test_capsule():
    assert type(_core._C_API).__name__ == "PyCapsule"
    assert "fixq._core._C_API" in repr(_core._C_API)


def build_extension(workdir, name, module):
    pytest.importorskip("setuptools", reason="setuptools not installed: pip install -e '.[test]'")
    run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], workdir / name, env=consumer_env())
    sys.path.insert(0, str(workdir / name))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(workdir / name))


@pytest.fixture(scope="module")
def capsule_ext(workdir):
    return build_extension(workdir, "capsule_demo", "fixqdemo")


@pytest.fixture(scope="module")
def cython_ext(workdir):
    pytest.importorskip("Cython", reason="Cython not installed: pip install -e '.[test]'")
    return build_extension(workdir, "cython_demo", "fixqcy")


@pytest.fixture(params=["capsule", "cython"])
def ext(request):
    return request.getfixturevalue(f"{request.param}_ext")


def test_extension_matches_python_api(ext, isa):
    rng = np.random.default_rng(8)
    assert ext.isa() == isa
    for m, k, n in [(1, 1, 1), (3, 37, 19), (16, 64, 33), (65, 17, 31), (2, 300, 7)]:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        bias = rng.integers(-5000, 5000, n, dtype=np.int32)
        for real, a_zp, out_zp in [(0.75 / k, -128, 0), (2.0**-12, 7, -128), (0.002, 127, 127)]:
            mult, shift = fixq.quantize_multiplier(real)
            got = np.frombuffer(ext.linear(a, w, bias, a_zp, mult, shift, out_zp), np.int8)
            want = fixq.qlinear(a, w, bias, a_zero_point=a_zp, multiplier=mult, shift=shift,
                                out_zero_point=out_zp)
            np.testing.assert_array_equal(got.reshape(m, n), want)
    f32 = np.float32
    for size in (0, 1, 7, 31, 33, 64, 65, 1000):
        a = rng.integers(-128, 128, size, dtype=np.int8)
        b = rng.integers(-128, 128, size, dtype=np.int8)
        for scales, zps in [((0.1, 0.05, 0.12), (5, -3, 2)), ((1e-3, 2.5, 0.7), (-128, 127, 0)),
                            ((0.02, 0.02, 0.02), (0, 0, -128))]:
            sa, sb, sy = map(f32, scales)
            got = np.frombuffer(ext.add(a, b, sa, zps[0], sb, zps[1], sy, zps[2]), np.int8)
            want = fixq.qadd(a, b, a_scale=sa, a_zero_point=zps[0], b_scale=sb, b_zero_point=zps[1],
                             out_scale=sy, out_zero_point=zps[2])
            np.testing.assert_array_equal(got, want)
        x = rng.normal(0.0, 3.0, size).astype(np.float32)
        x[: size // 3] = np.round(x[: size // 3] * 4) / 4  # ties
        got = np.frombuffer(ext.quantize(x, np.float32(0.03125), -3), np.int8)
        np.testing.assert_array_equal(got, fixq.quantize(x, np.float32(0.03125), -3))


def test_extension_links_nothing_from_fixq(ext):
    """The extension calls fixq through the capsule: no fixq symbol is left for the loader."""
    if shutil.which("nm") is None:
        pytest.skip("nm not found")
    undefined = run(["nm", "-D", "-u", ext.__file__], Path(ext.__file__).parent).split()
    assert not [s for s in undefined if s.startswith("fixq")]


def test_extension_reports_c_errors(ext):
    a, w, bias = np.ones((2, 3), np.int8), np.ones((4, 3), np.int8), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="invalid argument"):
        ext.linear(a, w, bias, 0, -1, 0, 0)
    with pytest.raises(ValueError, match="invalid argument"):
        ext.add(np.ones(3, np.int8), np.ones(3, np.int8), 0.0, 0, 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="scale ratio"):
        ext.add(np.ones(3, np.int8), np.ones(3, np.int8), 1e-6, 0, 1e6, 0, 1.0, 0)
    with pytest.raises(ValueError, match="NaN"):
        ext.quantize(np.array([np.nan], np.float32), np.float32(1.0), 0)


def test_extension_threads(ext):
    """The kernels run without the GIL from several threads at once, each with its own data."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(88)
    jobs = [(rng.integers(-128, 128, (64, 256), dtype=np.int8),
             rng.integers(-127, 128, (96, 256), dtype=np.int8),
             rng.integers(-1000, 1000, 96, dtype=np.int32)) for _ in range(4)]
    mult, shift = fixq.quantize_multiplier(0.0003)
    want = [fixq.qlinear(a, w, b, a_zero_point=3, multiplier=mult, shift=shift) for a, w, b in jobs]

    def job(args):
        return np.frombuffer(ext.linear(*args, 3, mult, shift, 0), np.int8).reshape(64, 96)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for got, w in zip(pool.map(job, jobs), want):
                np.testing.assert_array_equal(got, w)


def test_capsule_and_pxd_cover_the_public_c_api():
    """Every entry point of fixq.h (but fixq_init / fixq_select_isa, which fixq._core owns) is in the
    capsule table (a fixq_capsule.h macro) and in cfixq.pxd."""
    inc = Path(fixq.get_include()) / "fixq"
    public = set(re.findall(r"^[\w ]+?\**\s*\b(fixq_\w+)\(", (inc / "fixq.h").read_text(), re.M))
    public -= {"fixq_init", "fixq_select_isa"}
    assert {"fixq_qgemm", "fixq_pack_b", "fixq_eltwise_nd", "fixq_requantize_s32"} <= public
    capsule = set(re.findall(r"^#define (fixq_\w+) \(fixq_capi->", (inc / "fixq_capsule.h").read_text(), re.M))
    pxd = set(re.findall(r"\b(fixq_\w+)\(", (Path(fixq.__file__).parent / "cfixq.pxd").read_text()))
    assert public == capsule
    assert public <= pxd


FAKE_TABLE = """
import ctypes
import fixq._core
table = (ctypes.c_uint32 * 2)({abi}, {size})
name = b"fixq._core._C_API"
new = ctypes.pythonapi.PyCapsule_New
new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
fixq._core._C_API = new(ctypes.addressof(table), name, None)
try:
    import {module}
except ImportError as e:
    print(e)
"""


@pytest.mark.parametrize("abi,size", [(999, 4096), (1, 8)], ids=["newer-abi", "older-smaller-table"])
def test_import_fixq_refuses_an_incompatible_table(ext, abi, size):
    """import_fixq() checks abi_version and size, and raises ImportError rather than call through a
    table of another layout."""
    code = FAKE_TABLE.format(abi=abi, size=size, module=ext.__name__)
    out = run([sys.executable, "-c", code], Path(ext.__file__).parent, env=consumer_env())
    assert f"exports C API version {abi} ({size} bytes)" in out and "rebuild it" in out
