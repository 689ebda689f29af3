"""Low-bit kernels against their baselines, ratios measured in one run.

- fp16-weight linear (``fixq.fp16_linear``) against numpy fp32 matmul on the same shapes:
  ``y = x @ W.T`` with ``x`` [M, K], ``W`` [N, K].
- XOR-popcount GEMM (``fixq.popcount_linear``) against fixq's exact int8 GEMM at the same (M, K, N):
  ``fixq.qlinear`` on packed weights, int32 out.

GOP/s = 2*M*N*K / s (a binary multiply-add counts as 2 ops, as an int8 one does).  The contenders
alternate within each round; GOP/s are medians over ``--rounds`` rounds of the best of 3, ratios the
median of the per-round ratios.  Run single-threaded, with numpy's OpenBLAS on its own kernel choice:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        PYTHONPATH=src python bench/bench_lowbit.py [--json out.json]
"""
import argparse
import json
import os
import platform
import time

import numpy as np

import fixq

SHAPES = [(1, 1024, 1024), (1, 4096, 4096), (16, 1024, 1024), (128, 1024, 1024), (512, 1024, 1024),
          (1024, 1024, 1024), (512, 4096, 1024), (64, 768, 3072)]


def best_of(f, calls, tries=3):
    best = np.inf
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def measure(fns, ops, rounds):
    """Seconds per call of each function: the contenders alternate within every round (so a busy
    neighbour slows all of them alike) and each figure is the median over rounds."""
    calls = max(1, int(2e8 / ops))
    for f in fns.values():
        f()
    per = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            per[name].append(best_of(f, calls))
    return {name: float(np.median(v)) for name, v in per.items()}, per


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("internal_api", "architecture", "num_threads")} for d in threadpool_info()
                if d.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def int8_call(m, k, n, rng):
    """fixq's exact int8 GEMM at the same shape: qlinear on packed weights, int32 out."""
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = fixq.pack_weights(rng.integers(-127, 128, (n, k), dtype=np.int8))   # packed once
    return lambda: fixq.qlinear(x, w, out_dtype=np.int32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--shapes", help="M,K,N;M,K,N;... (default: the PEERS.md shapes)")
    args = ap.parse_args()
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    rng = np.random.default_rng(0)
    info = {"cpu_path": fixq.cpu_info()["selected"], "machine": platform.processor() or platform.machine(),
            "blas": blas_info(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    print(f"fixq {fixq.__version__}, CPU path {info['cpu_path']}, numpy {np.__version__} BLAS {info['blas']}")
    rows = []
    print(f"\n{'M x K x N':>16} | {'numpy fp32':>10} | {'fixq fp16':>9} | {'fp16/np':>7} | "
          f"{'int8':>7} | {'popcount':>8} | {'pop/int8':>8}   (GOP/s)")
    for m, k, n in shapes:
        ops = 2.0 * m * n * k
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        wt = w.T
        y = np.empty((m, n), np.float32)
        w16 = fixq.pack_fp16(w)
        a_bits, w_bits = fixq.binarize(x), fixq.binarize(w)
        fns = {"numpy": lambda: np.matmul(x, wt, out=y), "fp16": lambda: fixq.fp16_linear(x, w16),
               "popcount": lambda: fixq.popcount_linear(a_bits, w_bits)}
        fns["int8"] = int8_call(m, k, n, rng)
        t, per = measure(fns, ops, args.rounds)
        t_np, t_16, t_pop, t_i8 = t["numpy"], t["fp16"], t["popcount"], t["int8"]
        # ratios: median over rounds of the per-round ratio
        fp16_ratio = float(np.median(np.array(per["numpy"]) / np.array(per["fp16"])))
        pop_ratio = float(np.median(np.array(per["int8"]) / np.array(per["popcount"])))
        r = {"shape": [m, k, n], "numpy_fp32_gops": ops / t_np / 1e9, "fp16_gops": ops / t_16 / 1e9,
             "fp16_vs_numpy": fp16_ratio, "popcount_gops": ops / t_pop / 1e9,
             "int8_gops": ops / t_i8 / 1e9, "popcount_vs_int8": pop_ratio}
        rows.append(r)
        print(f"{m:>5} x{k:>5} x{n:>5} | {r['numpy_fp32_gops']:10.1f} | {r['fp16_gops']:9.1f} | "
              f"{r['fp16_vs_numpy']:6.2f}x | {r['int8_gops']:7.1f} | {r['popcount_gops']:8.1f} | "
              f"{r['popcount_vs_int8']:7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
