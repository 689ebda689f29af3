"""numpy's BLAS thread count, set for a block so that a timing of numpy and of fixq uses the same
number of threads.

numpy has no API for it, and its environment variables (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS) are
read once, when numpy is imported.  threadpoolctl reaches every BLAS but is not a dependency of fixq:
it is used where it is installed.  Without it, OpenBLAS (in numpy's wheels for Linux, Windows and
Intel macOS, and most distribution builds) is reached through its own ``openblas_set_num_threads``
in the copy numpy loaded, as threadpoolctl does."""
import contextlib
import ctypes
import glob
import os

import numpy as np

# OpenBLAS's exported names: plain builds, 64-bit-integer builds (suffix 64_), and numpy's
# scipy-openblas wheels (prefix scipy_)
_OPENBLAS_NAMES = [(f"{p}openblas_set_num_threads{s}", f"{p}openblas_get_num_threads{s}")
                   for p in ("", "scipy_") for s in ("", "64_")]


def _loaded_libraries():
    """Paths of the shared libraries this process has loaded (Linux), else the libraries bundled with
    numpy's wheels (numpy.libs on Linux and Windows, numpy/.dylibs on macOS), which numpy loads."""
    try:
        with open("/proc/self/maps") as f:
            paths = [fields[5] for fields in (line.split(None, 5) for line in f) if len(fields) == 6]
    except OSError:
        root = os.path.dirname(np.__file__)
        paths = glob.glob(os.path.join(root + ".libs", "*")) + glob.glob(os.path.join(root, ".dylibs", "*"))
    return [p.strip() for p in dict.fromkeys(paths)]


def _openblas():
    """(set, get) thread-count functions of the OpenBLAS numpy loaded, or None."""
    for path in _loaded_libraries():
        if "openblas" not in os.path.basename(path).lower():
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_NAMES:
            set_fn, get_fn = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if set_fn is not None and get_fn is not None:
                set_fn.argtypes, set_fn.restype = [ctypes.c_int], None
                get_fn.argtypes, get_fn.restype = [], ctypes.c_int
                return set_fn, get_fn
    return None


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


_NAMES = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}  # threadpoolctl's internal_api names


@contextlib.contextmanager
def blas_threads(n):
    """numpy's BLAS limited to `n` threads in the block, then restored.  Yields ``(library, threads in
    effect)``, or None where neither threadpoolctl nor OpenBLAS can be reached (the BLAS keeps its
    own count)."""
    tpc = _threadpoolctl()
    if tpc is not None:
        with tpc.threadpool_limits(limits=n, user_api="blas"):
            blas = [d for d in tpc.threadpool_info() if d.get("user_api") == "blas"]
            name = blas[0]["internal_api"] if blas else None
            yield (_NAMES.get(name, name), blas[0]["num_threads"]) if blas else None
        return
    fns = _openblas()
    if fns is None:
        yield None
        return
    set_fn, get_fn = fns
    before = get_fn()
    set_fn(n)
    try:
        yield "OpenBLAS", get_fn()
    finally:
        set_fn(before)
