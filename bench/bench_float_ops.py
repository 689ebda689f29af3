"""fixq.float_ops against torch and numpy on a transformer encoder's shapes (all-MiniLM-L6-v2: hidden 384,
FFN 1536, 12 heads, sequence 128), one thread.

    PYTHONPATH=src python bench/bench_float_ops.py [--rounds 7] [--threads 1]

dynamic_linear: fixq (per-row and per-tensor activation quantization, weights int8 per channel) against
torch.ao.nn.quantized.dynamic.Linear (torch.ao.quantization.quantize_dynamic on an nn.Linear; per-tensor
activations, fbgemm/x86 engine), numpy float32 ``x @ W.T + b`` (OpenBLAS) and torch float32 linear, on
(32*128, 384) x (384 -> 1536) and (128, 384) x (384 -> 384).  layer_norm on (32, 128, 384), softmax on
(32, 12, 128, 128), GELU (erf) on (32, 128, 1536) against torch.nn.functional's; attention (12 heads of 32,
q, k, v strided views of one [N, 128, 1152] array, an attention mask's bias) at N = 1 and 32, full length and
padded (4-39 real tokens), against torch's scaled_dot_product_attention plus the head merge.  Every system runs once
per round, in turn, so they share the machine's load; the table gives each one's median round in ms and
its time over fixq's (> 1: fixq is faster).
"""
import argparse
import os
import platform
import statistics
import time

THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def run_group(title, systems, rounds):
    """systems: [(name, fn, reps)], the first is fixq's reference row."""
    for _, fn, _ in systems:
        fn()  # warm up: pools, packing caches, first-touch pages
    times = {name: [] for name, _, _ in systems}
    for _ in range(rounds):
        for name, fn, reps in systems:
            times[name].append(timed(fn, reps))
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med[systems[0][0]]
    print(f"\n{title}\n| system | ms | time / fixq |\n|---|---:|---:|")
    for name, _, _ in systems:
        print(f"| {name} | {med[name]:.3f} | {med[name] / base:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for var in THREADS_ENV:
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    import fixq
    from fixq import float_ops as F

    torch.set_num_threads(args.threads)
    T = args.threads
    print(f"CPU: {cpu_name()}; fixq path {fixq._core.selected_isa()}; threads {T}; torch {torch.__version__} "
          f"(quantized engine {torch.backends.quantized.engine}); numpy {np.__version__}")
    rng = np.random.default_rng(0)

    for m, k, n, reps in ((32 * 128, 384, 1536, 3), (128, 384, 384, 100)):
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        ws = (np.abs(w).max(1) / 127).astype(np.float32)
        packed = fixq.pack_weights(np.clip(np.rint(w / ws[:, None]), -127, 127).astype(np.int8))
        lin = torch.nn.Linear(k, n)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        qlin = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, torch.qint8)
        tx = torch.from_numpy(x)

        def torch_int8(qlin=qlin, tx=tx):
            with torch.inference_mode():
                return qlin(tx)

        def torch_fp32(lin=lin, tx=tx):
            with torch.inference_mode():
                return lin(tx)

        systems = [("fixq dynamic_linear row", lambda: F.dynamic_linear(x, packed, ws, b, "row", T), reps),
                   ("fixq dynamic_linear tensor", lambda: F.dynamic_linear(x, packed, ws, b, "tensor", T), reps),
                   ("torch quantize_dynamic (int8)", torch_int8, reps),
                   ("numpy fp32 x @ W.T + b", lambda: x @ w.T + b, reps),
                   ("torch fp32 linear", torch_fp32, reps)]
        run_group(f"dynamic_linear ({m}, {k}) x ({k} -> {n})", systems, args.rounds)

    x = rng.standard_normal((32, 128, 384)).astype(np.float32)
    g, beta = rng.standard_normal(384).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    tx, tg, tb = torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(beta)
    run_group("layer_norm (32, 128, 384)",
              [("fixq layer_norm", lambda: F.layer_norm(x, g, beta, 1e-12, threads=T), 20),
               ("torch layer_norm", lambda: torch.nn.functional.layer_norm(tx, (384,), tg, tb, 1e-12), 20)],
              args.rounds)
    s = rng.standard_normal((32, 12, 128, 128)).astype(np.float32)
    ts = torch.from_numpy(s)
    run_group("softmax (32, 12, 128, 128)",
              [("fixq softmax", lambda: F.softmax(s, threads=T), 5),
               ("torch softmax", lambda: torch.softmax(ts, -1), 5)], args.rounds)
    h = rng.standard_normal((32, 128, 1536)).astype(np.float32)
    th = torch.from_numpy(h)
    run_group("gelu erf (32, 128, 1536)",
              [("fixq gelu", lambda: F.gelu(h, threads=T), 5),
               ("torch gelu", lambda: torch.nn.functional.gelu(th), 5)], args.rounds)
    run_group("gelu tanh (32, 128, 1536)",
              [("fixq gelu tanh", lambda: F.gelu(h, "tanh", threads=T), 5),
               ("torch gelu tanh", lambda: torch.nn.functional.gelu(th, approximate="tanh"), 5)], args.rounds)

    for n, reps in ((1, 100), (32, 3)):
        x = rng.standard_normal((n, 128, 3 * 384)).astype(np.float32)
        q, k, v = (x[..., i * 384:(i + 1) * 384].reshape(n, 128, 12, 32) for i in range(3))
        tq, tk, tv = (torch.from_numpy(t).transpose(1, 2) for t in (q, k, v))
        lengths = rng.integers(4, 40, n)
        for name, real in (("full length", np.full(n, 128)), ("padded", lengths)):
            bias = np.where(np.arange(128)[None] < real[:, None], 0, np.finfo(np.float32).min).astype(np.float32)
            bias = bias[:, None, None, :]
            tb = torch.from_numpy(bias)

            def torch_sdpa(tq=tq, tk=tk, tv=tv, tb=tb, n=n):
                with torch.inference_mode():
                    o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tb)
                    return o.transpose(1, 2).reshape(n, 128, 384)

            run_group(f"attention ({n}, 128, 12, 32), {name}",
                      [("fixq attention", lambda q=q, k=k, v=v, b=bias: F.attention(q, k, v, 32**-0.5, b, threads=T),
                        reps),
                       ("torch scaled_dot_product_attention", torch_sdpa, reps)], args.rounds)


if __name__ == "__main__":
    main()
