"""Low-bit kernels against their baselines, ratios measured in one run.

- fp16-weight linear (``fixq.fp16_linear``) against numpy fp32 matmul on the same shapes:
  ``y = x @ W.T`` with ``x`` [M, K], ``W`` [N, K].
- XOR-popcount GEMM (``fixq.popcount_linear``) against the int8 GEMM at the same (M, K, N):
  ``fixq.qmatmul`` when this build has it, else ONNX Runtime MatMulInteger u8*s8->i32 (the fastest
  int8 peer in ../shared/PEERS.md) as the int8 estimate, labelled as such.

GOP/s = 2*M*N*K / s (a binary multiply-add counts as 2 ops, as an int8 one does).  Each figure is the
median of ``--rounds`` rounds of the best of several calls.  Run single-threaded, with numpy's
OpenBLAS on its own kernel choice:

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


def timeit(f, ops, rounds):
    f()
    calls = max(1, int(2e8 / ops))
    per_round = []
    for _ in range(rounds):
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            best = min(best, (time.perf_counter() - t0) / calls)
        per_round.append(best)
    return float(np.median(per_round))


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("internal_api", "architecture", "num_threads")} for d in threadpool_info()
                if d.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def int8_baseline():
    """(name, make(m, k, n) -> callable) for the int8 GEMM at a shape."""
    if hasattr(fixq, "qmatmul"):
        def make(m, k, n, rng):
            a = rng.integers(-128, 128, (m, k), dtype=np.int8)
            b = rng.integers(-127, 128, (k, n), dtype=np.int8)
            return lambda: fixq.qmatmul(a, b, out_dtype=np.int32)
        return "fixq.qmatmul int8->int32", make
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None, None

    def make(m, k, n, rng):
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
            [numpy_helper.from_array(w, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {"A": rng.integers(0, 256, (m, k), dtype=np.uint8)}
        return lambda: sess.run(None, feed)
    return "ONNX Runtime MatMulInteger u8*s8->i32 (int8 estimate; fixq.qmatmul not in this build)", make


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--shapes", help="M,K,N;M,K,N;... (default: the PEERS.md shapes)")
    args = ap.parse_args()
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    rng = np.random.default_rng(0)
    info = {"cpu_path": fixq.cpu_info()["selected"], "machine": platform.processor() or platform.machine(),
            "blas": blas_info(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    print(f"fixq {fixq.__version__}, CPU path {info['cpu_path']}, numpy {np.__version__} BLAS {info['blas']}")
    int8_name, int8_make = int8_baseline()
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
        t_np = timeit(lambda: np.matmul(x, wt, out=y), ops, args.rounds)
        t_16 = timeit(lambda: fixq.fp16_linear(x, w16), ops, args.rounds)
        a_bits, w_bits = fixq.binarize(x), fixq.binarize(w)
        t_pop = timeit(lambda: fixq.popcount_linear(a_bits, w_bits), ops, args.rounds)
        t_i8 = timeit(int8_make(m, k, n, rng), ops, args.rounds) if int8_make else None
        r = {"shape": [m, k, n], "numpy_fp32_gops": ops / t_np / 1e9, "fp16_gops": ops / t_16 / 1e9,
             "fp16_vs_numpy": t_np / t_16, "popcount_gops": ops / t_pop / 1e9,
             "int8_gops": ops / t_i8 / 1e9 if t_i8 else None, "popcount_vs_int8": t_i8 / t_pop if t_i8 else None}
        rows.append(r)
        i8 = f"{r['int8_gops']:7.1f}" if t_i8 else "      -"
        pr = f"{r['popcount_vs_int8']:7.2f}x" if t_i8 else "       -"
        print(f"{m:>5} x{k:>5} x{n:>5} | {r['numpy_fp32_gops']:10.1f} | {r['fp16_gops']:9.1f} | "
              f"{r['fp16_vs_numpy']:6.2f}x | {i8} | {r['popcount_gops']:8.1f} | {pr}")
    print(f"\nint8 baseline: {int8_name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "int8_baseline": int8_name, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
