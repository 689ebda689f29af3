"""Benchmark fixq's int8 GEMM against numpy fp32 and the installed int8 peers.

    python bench/bench_gemm.py [--threads 1] [--rounds 3] [--json out.json] [--png out.png]

Shapes are (M, K, N) with weights [N, K] (a Linear layer, y = x @ W.T), as in
shared/PEERS.md.  GOP/s = 2*M*N*K / time; every figure is the median of
`--rounds` rounds, the systems interleaved inside each round so they see the
same machine load.  Peers are optional: numpy fp32 matmul (always), torch int8
static Linear on a pre-quantized input (x86 and fbgemm engines), ONNX Runtime
QLinearMatMul and MatMulInteger (single-node graphs made with onnx.helper).
fixq runs qlinear on packed weights: uint8 activations (full range, zero
point 128) times int8 weights in [-127, 127], requantized to uint8, once on
each SIMD path the CPU has ("fixq avx2", "fixq avx512vnni": the path is
switched at run time with fixq._core.select_isa), each compared with numpy
fp32, the best AVX2 peer and the best peer of any ISA.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

SHAPES = [(1, 1024, 1024), (1, 4096, 4096), (16, 1024, 1024), (128, 1024, 1024), (512, 1024, 1024),
          (1024, 1024, 1024), (512, 4096, 1024), (64, 768, 3072)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.15, help="seconds per timed batch")
    p.add_argument("--shapes", nargs="*", help="MxKxN ... (default: the PEERS.md shapes)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--png", help="save a chart of the ratios to numpy fp32 here (needs matplotlib)")
    p.add_argument("--native-isa", action="store_true",
                   help="let numpy and torch use AVX-512/VNNI where the CPU has it (default: AVX2, the target)")
    p.add_argument("--peers", default="numpy,torch,ort", help="comma-separated subset of numpy,torch,ort")
    return p.parse_args()


ARGS = parse_args()
# Read when the libraries load.  The target is an AVX2 CPU (Zen3): where this
# CPU also has AVX-512/VNNI, numpy (OpenBLAS) and torch (fbgemm, oneDNN) are
# held to their AVX2 kernels unless --native-isa.  ONNX Runtime has no such
# switch: it uses whatever the CPU has (the table says which).
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)
if not ARGS.native_isa:
    os.environ.update(OPENBLAS_CORETYPE="Haswell", FBGEMM_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2",
                      DNNL_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
# idle OpenMP workers sleep instead of spinning on the core the next system needs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import fixq  # noqa: E402
from fixq import _core  # noqa: E402

FIXQ_ISAS = [isa for isa in fixq.cpu_info()["supported"] if isa != "scalar"]


def timeit(f, min_time):
    f()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n
        n = max(2 * n, int(n * min_time / max(dt, 1e-9)) + 1)


def make_inputs(m, k, n, rng):
    x = rng.integers(0, 256, (m, k), dtype=np.int64).astype(np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int64).astype(np.int8)
    bias = rng.integers(-1000, 1000, n, dtype=np.int64).astype(np.int32)
    return x, w, bias


# scales of the toy quantized layer shared by every int8 system
X_SCALE, W_SCALE, Y_SCALE, X_ZP, Y_ZP = 0.02, 0.01, 0.5, 128, 128


class OnPath:
    """A fixq call that runs on one ISA path: `select()` switches to it before timing."""

    def __init__(self, isa, f):
        self.isa, self.f = isa, f

    def select(self):
        _core.select_isa(self.isa)

    def __call__(self):
        return self.f()


def fixq_system(isa, fixed_threads=None):
    def make(x, w, bias, threads):
        packed = fixq.pack_weights(w)
        m_, s_ = fixq.quantize_multiplier(X_SCALE * W_SCALE / Y_SCALE)
        t = fixed_threads or threads
        return OnPath(isa, lambda: fixq.qlinear(x, packed, bias, a_zero_point=X_ZP, multiplier=m_, shift=s_,
                                                out_zero_point=Y_ZP, out_dtype=np.uint8, threads=t))
    return make


def measure(f, min_time):
    if isinstance(f, OnPath):
        f.select()
    return timeit(f, min_time)


def numpy_system(x, w, bias, threads):
    xf = x.astype(np.float32)
    wt = np.ascontiguousarray(w.T.astype(np.float32))
    return lambda: xf @ wt


def torch_systems(threads):
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    engines = [e for e in ("x86", "fbgemm") if e in torch.backends.quantized.supported_engines]

    def build(engine):
        def make(x, w, bias, threads):
            torch.backends.quantized.engine = engine
            k, n = x.shape[1], w.shape[0]
            lin = torch.ao.nn.quantized.Linear(k, n, dtype=torch.qint8)
            wq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w.copy()), W_SCALE, 0)
            lin.set_weight_bias(wq, torch.from_numpy(bias.astype(np.float32) * X_SCALE * W_SCALE))
            lin.scale, lin.zero_point = Y_SCALE, Y_ZP
            xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x.copy()), X_SCALE, X_ZP)

            def run():
                torch.backends.quantized.engine = engine
                with torch.inference_mode():
                    return lin(xq)
            return run
        return make
    return {f"torch int8 static, {e}": build(e) for e in engines}


def ort_systems(threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}

    def session(node, inputs, outputs, inits):
        graph = helper.make_graph([node], "g", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def qlinear_matmul(x, w, bias, threads):
        m, k = x.shape
        n = w.shape[0]
        inits = [numpy_helper.from_array(np.array(X_SCALE, np.float32), "as"),
                 numpy_helper.from_array(np.array(X_ZP, np.uint8), "az"),
                 numpy_helper.from_array(np.ascontiguousarray(w.T), "B"),
                 numpy_helper.from_array(np.array(W_SCALE, np.float32), "bs"),
                 numpy_helper.from_array(np.array(0, np.int8), "bz"),
                 numpy_helper.from_array(np.array(Y_SCALE, np.float32), "ys"),
                 numpy_helper.from_array(np.array(Y_ZP, np.uint8), "yz")]
        node = helper.make_node("QLinearMatMul", ["A", "as", "az", "B", "bs", "bz", "ys", "yz"], ["Y"])
        s = session(node, [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                    [helper.make_tensor_value_info("Y", TensorProto.UINT8, [m, n])], inits)
        return lambda: s.run(None, {"A": x})

    def matmul_integer(x, w, bias, threads):
        m, k = x.shape
        n = w.shape[0]
        inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "B"),
                 numpy_helper.from_array(np.array(X_ZP, np.uint8), "az")]
        node = helper.make_node("MatMulInteger", ["A", "B", "az"], ["Y"])
        s = session(node, [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                    [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])], inits)
        return lambda: s.run(None, {"A": x})

    del onnx
    return {"ORT QLinearMatMul u8*s8->u8": qlinear_matmul, "ORT MatMulInteger u8*s8->i32": matmul_integer}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


def openblas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} x{i.get('num_threads')}"
                     for i in threadpool_info() if i.get("user_api") == "blas") or "no BLAS found"


def two_python_threads(x, packed, min_time):
    """Throughput of two Python threads each running qlinear(threads=1), relative to one."""
    def call():
        fixq.qlinear(x, packed, a_zero_point=X_ZP, multiplier=1 << 30, shift=-12, out_dtype=np.uint8)

    def run(count, out):
        t0 = time.perf_counter()
        for _ in range(count):
            call()
        out.append(time.perf_counter() - t0)
    single = timeit(call, min_time)
    count = max(3, int(2 * min_time / single))
    times = []
    ts = [threading.Thread(target=run, args=(count, times)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return (2 * count / wall) / (1 / single)


def main():
    shapes = [tuple(int(v) for v in s.split("x")) for s in ARGS.shapes] if ARGS.shapes else SHAPES
    peers = ARGS.peers.split(",")
    fixq_names = [f"fixq {isa}" for isa in FIXQ_ISAS]
    systems = {name: fixq_system(isa) for name, isa in zip(fixq_names, FIXQ_ISAS)}
    systems["numpy fp32 matmul"] = numpy_system
    single = {}
    if ARGS.threads > 1:  # the same run with threads=1, for the scaling rows
        for name, isa in zip(fixq_names, FIXQ_ISAS):
            single[name] = f"{name}, threads=1"
            systems[single[name]] = fixq_system(isa, 1)
    if "torch" in peers:
        systems.update(torch_systems(ARGS.threads))
    if "ort" in peers:
        systems.update(ort_systems(ARGS.threads))
    rng = np.random.default_rng(0)
    gops = {name: {} for name in systems}
    for shape in shapes:
        m, k, n = shape
        x, w, bias = make_inputs(m, k, n, rng)
        runs = {name: make(x, w, bias, ARGS.threads) for name, make in systems.items()}
        samples = {name: [] for name in systems}
        for _ in range(ARGS.rounds):
            for name, f in runs.items():
                samples[name].append(measure(f, ARGS.min_time))
        key = "x".join(map(str, shape))
        for name in systems:
            gops[name][key] = 2.0 * m * n * k / statistics.median(samples[name]) / 1e9
        print(f"  {key}: " + ", ".join(f"{name} {gops[name][key]:.1f}" for name in systems),
              file=sys.stderr, flush=True)

    # fixed cost of a tiny call and Python-thread scaling
    x, w, bias = make_inputs(1, 64, 64, rng)
    tiny = {}
    for name, make in systems.items():
        f = make(x, w, bias, 1)
        tiny[name] = statistics.median(measure(f, 0.05) for _ in range(5)) * 1e6
    xs, ws, _ = make_inputs(256, 1024, 1024, rng)
    pyth = {}
    for name, isa in zip(fixq_names, FIXQ_ISAS):
        _core.select_isa(isa)
        pyth[name] = two_python_threads(xs, fixq.pack_weights(ws), ARGS.min_time)

    keys = ["x".join(map(str, s)) for s in shapes]
    numpy_name = "numpy fp32 matmul"
    vnni = "avx512_vnni" in cpu_flags()
    peers = [name for name in systems if name != numpy_name and not name.startswith("fixq")]
    # ONNX Runtime cannot be held to AVX2: on a VNNI CPU it is not an AVX2 peer
    avx2_peers = [name for name in peers if not (vnni and name.startswith("ORT"))]
    print(f"\nfixq {fixq.__version__}, ISA paths {', '.join(FIXQ_ISAS)}, threads={ARGS.threads}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; numpy BLAS: {openblas_info()}")
    print(f"GOP/s (ratio to numpy fp32), median of {ARGS.rounds} rounds; shapes M x K x N\n")
    print("| system | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name in systems:
        cells = [f"{gops[name][key]:.1f} ({gops[name][key] / gops[numpy_name][key]:.2f}x)" for key in keys]
        label = name + (" [AVX-512 VNNI]" if vnni and name.startswith("ORT") else "")
        print(f"| {label} | " + " | ".join(cells) + " |")
    ratios = {}
    for title, group in (("best AVX2 peer", avx2_peers), ("best peer, any ISA", peers if peers != avx2_peers else [])):
        if not group:
            continue
        best = {key: max(gops[p][key] for p in group) for key in keys}
        for name in fixq_names:
            ratios[f"{name} / {title}"] = {key: gops[name][key] / best[key] for key in keys}
    for name in fixq_names:
        if name in single:
            ratios[f"{name} threads={ARGS.threads} / threads=1"] = {
                key: gops[name][key] / gops[single[name]][key] for key in keys}
    for title, row in ratios.items():
        print(f"| **{title}** | " + " | ".join(f"**{row[key]:.2f}x**" for key in keys) + " |")
    print("\nfixed cost of one 1x64x64 call (us): " + ", ".join(f"{name}: {t:.1f}" for name, t in tiny.items()))
    for name, v in pyth.items():
        print(f"two Python threads each running {name} 256x1024x1024 (threads=1): {v:.2f}x the throughput of one")

    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"fixq_version": fixq.__version__, "isas": FIXQ_ISAS, "threads": ARGS.threads,
                       "rounds": ARGS.rounds, "machine": platform.machine(), "cpus": os.cpu_count(),
                       "blas": openblas_info(), "avx512_vnni": vnni, "native_isa": ARGS.native_isa, "gops": gops,
                       "ratios": ratios, "tiny_call_us": tiny, "two_python_threads_speedup": pyth}, f, indent=2)
    if ARGS.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(12, 5))
        width = 0.8 / len(systems)
        for i, name in enumerate(systems):
            ax.bar([j + i * width for j in range(len(keys))],
                   [gops[name][key] / gops[numpy_name][key] for key in keys], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, rotation=20)
        ax.set_ylabel("speed relative to numpy fp32")
        ax.set_title(f"int8 GEMM, {ARGS.threads} thread(s)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(ARGS.png, dpi=120)


if __name__ == "__main__":
    main()
