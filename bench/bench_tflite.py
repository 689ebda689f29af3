"""fixq against LiteRT's interpreter on the .tflite test models (tests/data/tflite), one thread, batch 1:
per model and kernel set, the time of one invocation in fixq and in LiteRT, each given the model's input array
in its input type and giving its output arrays in their types (fixq: ``fixq.io.tflite.tflite_runner``, one
check and one call of the C plan; LiteRT: ``set_tensor``, ``invoke``, ``get_tensor``), and whether fixq's
outputs equal LiteRT's on every element of the recorded inputs.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_tflite.py [--json out.json] [--rounds 5]

Needs ai-edge-litert (LiteRT's interpreter) and flatbuffers; never TensorFlow.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import fixq  # noqa: E402
from fixq.io.tflite import run_tflite, tflite_runner  # noqa: E402
from fixq.io.tflite_litert import interpreter, litert  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tflite")
MODELS = ("mobilenet_v2", "ds_cnn", "mlp", "uint8_io")
TARGETS = ("tflite-reference", "tflite", "xnnpack")


def time_pair(fa, fb, x, rounds, min_time=0.1):
    """Medians over `rounds` of the mean time of one call of fa and of fb, timed in turn within each round
    (each at least `min_time` seconds), so that both see the same load."""
    fa(x), fb(x)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fa(x)
            fb(x)
        if time.perf_counter() - t0 > min_time:
            break
        n *= 2
    ta, tb = [], []
    for _ in range(rounds):
        for fn, ts in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(x)
            ts.append((time.perf_counter() - t0) / n)
    return float(np.median(ta)), float(np.median(tb))


def bench(name, rounds):
    path = os.path.join(DATA, name + ".tflite")
    with open(path, "rb") as f:
        content = f.read()
    with np.load(os.path.join(DATA, name + ".npz")) as g:
        gold = {k: g[k] for k in g.files}
    x1 = gold["x"][:1]
    rows = []
    for target in TARGETS:
        try:
            m = fixq.Model.load(path, target=target)
        except ValueError as e:
            rows.append({"model": name, "target": target, "error": str(e)})
            continue
        exact = all(np.array_equal(y, gold[f"y:{target}:{k}"]) for k, y in enumerate(run_tflite(m, gold["x"])))
        it = interpreter(content, target)
        i_in, i_out = it.get_input_details()[0]["index"], [d["index"] for d in it.get_output_details()]

        def lite(x, it=it, i_in=i_in, i_out=i_out):
            it.set_tensor(i_in, x)
            it.invoke()
            return [it.get_tensor(k) for k in i_out]
        t_fixq, t_lite = time_pair(tflite_runner(m), lite, x1, rounds)
        rows.append({"model": name, "target": target, "fixq_us": t_fixq * 1e6, "litert_us": t_lite * 1e6,
                     "speedup": t_lite / t_fixq, "bit_exact": exact})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="Also write the rows as JSON here.")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    if litert() is None:
        sys.exit("bench_tflite.py runs LiteRT's interpreter: pip install ai-edge-litert")
    info = fixq.cpu_info()
    print(f"fixq {fixq.__version__}, CPU path {info['selected']} ({platform.processor() or platform.machine()}); "
          "one thread, batch 1; times per invocation (median of rounds, fixq and LiteRT in turn)")
    print(f"{'model':14s} {'kernel set':17s} {'fixq us':>9s} {'LiteRT us':>10s} {'speedup':>8s}  bit-exact")
    rows = []
    for name in MODELS:
        for r in bench(name, args.rounds):
            rows.append(r)
            if "error" in r:
                print(f"{r['model']:14s} {r['target']:17s} not imported: {r['error'][:90]}")
            else:
                print(f"{r['model']:14s} {r['target']:17s} {r['fixq_us']:9.2f} {r['litert_us']:10.2f} "
                      f"{r['speedup']:7.2f}x  {'yes' if r['bit_exact'] else 'NO'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
