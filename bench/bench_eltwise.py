"""Quantized elementwise add / mul: fixq against ONNX Runtime, PyTorch and numpy, one thread, one run.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_eltwise.py [--sizes 1048576 16777216]
        [--repeats 3] [--json bench/results/eltwise.json]

fixq runs on each of its SIMD paths this CPU supports (avx2, avx512vnni; switched
with fixq.using_isa), the peers once.  Bytes are counted as 2 inputs + 1
output (3 bytes per element).  Every row's time is the median over `--repeats`
rounds of the best of several calls; the ratios compare rows measured in this
same run.  Peers that are not installed are skipped.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import fixq

# fixq's SIMD paths on this CPU, each benchmarked in the same run
FIXQ_PATHS = [p for p in ("avx2", "avx512vnni") if p in fixq.cpu_info()["supported"]]



# Scales as calibration produces them (arbitrary float32 values).  "Round" scales create exact ties:
# powers of two such as 1/256 and 1/32 against 0.1 get a plan whose slopes keep their ratio (the
# "power-of-two scales" row); decimal ones such as 0.02 / 0.013 / 0.03, whose ties TFLite's input
# rounding decides, get none, and qadd runs its exact fixed-point kernel (the "tied scales" row).
SA, ZA, SB, ZB, SO, ZO = 0.0213, 3, 0.0171, -5, 0.0391, 1
POW2 = dict(a_scale=1 / 256, a_zero_point=3, b_scale=1 / 32, b_zero_point=-5, out_scale=0.1, out_zero_point=1)
TIED = dict(a_scale=0.02, a_zero_point=3, b_scale=0.013, b_zero_point=-5, out_scale=0.03, out_zero_point=1)


def timeit(fn, n, repeats):
    fn()
    calls = max(3, int(2e9 // max(n, 1) // 40))  # ~50 calls at 1M, 3 at 16M
    meds = []
    for _ in range(repeats):
        best = float("inf")
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        meds.append(best)
    return float(np.median(meds))


def ort_session(op, shape_a, shape_b):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    init = [helper.make_tensor(nm, TensorProto.FLOAT, [], [v]) for nm, v in (("sa", SA), ("sb", SB), ("so", SO))]
    init += [helper.make_tensor(nm, TensorProto.INT8, [], [v]) for nm, v in (("za", ZA), ("zb", ZB), ("zo", ZO))]
    node = helper.make_node("QLinearAdd" if op == "add" else "QLinearMul",
                            ["a", "sa", "za", "b", "sb", "zb", "so", "zo"], ["y"], domain="com.microsoft")
    out_shape = list(np.broadcast_shapes(shape_a, shape_b))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.INT8, list(shape_a)),
                                            helper.make_tensor_value_info("b", TensorProto.INT8, list(shape_b))],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, out_shape)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def cases(n, repeats):
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    y = np.empty_like(a)
    cols = 1024
    row = rng.integers(-128, 128, cols, dtype=np.int8)
    a2 = a.reshape(-1, cols)
    y2 = y.reshape(-1, cols)
    kw = dict(a_scale=SA, a_zero_point=ZA, b_scale=SB, b_zero_point=ZB, out_scale=SO, out_zero_point=ZO)
    rows = []

    def add(name, fn, group, isa=None):
        row = {"name": name, "group": group, "n": n, "isa": isa}
        if isa is None:
            row["seconds"] = timeit(fn, n, repeats)
        else:
            with fixq.using_isa(isa):
                row["seconds"] = timeit(fn, n, repeats)
        rows.append(row)

    au, bu, yu = a.view(np.uint8), b.view(np.uint8), y.view(np.uint8)
    add("numpy u8 a+b (3-stream limit)", lambda: np.add(au, bu, out=yu), "limit")
    m, s = fixq.quantize_multiplier(SA / SO)
    for isa in FIXQ_PATHS:
        for rounding in ("double", "single", "fp32"):
            add(f"fixq qadd {rounding}", lambda r=rounding: fixq.qadd(a, b, rounding=r, out=y, **kw), "add", isa)
        add("fixq qadd double, per-channel row [N/1024,1024]+[1024]",
            lambda: fixq.qadd(a2, row, out=y2, **kw), "add-row", isa)
        add("fixq qadd double, scalar b", lambda: fixq.qadd(a, np.int8(7), out=y, **kw), "add-scalar", isa)
        add("fixq qadd double, power-of-two scales", lambda: fixq.qadd(a, b, out=y, **POW2), "add", isa)
        add("fixq qadd double, tied scales (no plan: exact kernel)", lambda: fixq.qadd(a, b, out=y, **TIED), "add",
            isa)
        for rounding in ("double", "single", "fp32"):
            add(f"fixq qmul {rounding}", lambda r=rounding: fixq.qmul(a, b, rounding=r, out=y, **kw), "mul", isa)
        add("fixq requantize int8->int8 double", lambda: fixq.requantize(a, m, s, ZO, input_zero_point=ZA, out=y),
            "requant", isa)
    try:
        for op in ("add", "mul"):
            sess = ort_session(op, a.shape, b.shape)
            feeds = {"a": a, "b": b}
            add(f"ORT QLinear{op.capitalize()} s8", lambda s=sess, f=feeds: s.run(None, f), op)
        sess = ort_session("add", a2.shape, row.shape)
        add("ORT QLinearAdd s8, per-channel row", lambda: sess.run(None, {"a": a2, "b": row}), "add-row")
    except ImportError as e:
        print(f"# ONNX Runtime skipped: {e}", file=sys.stderr)
    try:
        import torch
        torch.set_num_threads(1)
        qa = torch.quantize_per_tensor(torch.from_numpy((a.astype(np.float32) - ZA) * SA), SA, ZA, torch.qint8)
        qb = torch.quantize_per_tensor(torch.from_numpy((b.astype(np.float32) - ZB) * SB), SB, ZB, torch.qint8)
        add("torch quantized.add qint8", lambda: torch.ops.quantized.add(qa, qb, SO, ZO), "add")
        add("torch quantized.mul qint8", lambda: torch.ops.quantized.mul(qa, qb, SO, ZO), "mul")
    except ImportError as e:
        print(f"# torch skipped: {e}", file=sys.stderr)

    def float_add():
        f = (a.astype(np.float32) - ZA) * np.float32(SA) + (b.astype(np.float32) - ZB) * np.float32(SB)
        return np.clip(np.rint(f / np.float32(SO)) + ZO, -128, 127).astype(np.int8)
    add("numpy float dequantize-add-requantize", float_add, "add")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1 << 20, 1 << 24])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "eltwise.json"))
    args = ap.parse_args(argv)
    out = {"isa_paths": FIXQ_PATHS, "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "numpy": np.__version__, "rows": []}
    for n in args.sizes:
        rows = cases(n, args.repeats)
        by = {r["name"]: r for r in rows if r["isa"] is None}
        limit = by["numpy u8 a+b (3-stream limit)"]["seconds"]
        peer = {"add": by.get("ORT QLinearAdd s8"), "mul": by.get("ORT QLinearMul s8"),
                "add-row": by.get("ORT QLinearAdd s8, per-channel row")}
        tpeer = {"add": by.get("torch quantized.add qint8"), "mul": by.get("torch quantized.mul qint8")}
        print(f"\n{n} elements ({3 * n / 2**20:.0f} MiB touched), fixq paths: {', '.join(FIXQ_PATHS)}")
        print(f"| {'system':<56} | path       | GB/s | Gelem/s | x ORT | x torch | x numpy limit |")
        print(f"|{'-' * 58}|------------|-----:|--------:|------:|--------:|--------------:|")
        for r in rows:
            t = r["seconds"]
            g = r["group"]
            base = peer.get(g) or peer.get(g.split("-")[0])
            tb = tpeer.get(g) or tpeer.get(g.split("-")[0])
            r.update(gbps=3 * n / t / 1e9, gelem=n / t / 1e9,
                     x_ort=base["seconds"] / t if base else None, x_torch=tb["seconds"] / t if tb else None,
                     x_limit=limit / t)
            f = lambda v: f"{v:.2f}" if v is not None else "-"
            print(f"| {r['name']:<56} | {r['isa'] or '-':<10} | {r['gbps']:4.1f} | {r['gelem']:7.2f} | "
                  f"{f(r['x_ort']):>5} | {f(r['x_torch']):>7} | {r['x_limit']:13.2f} |")
        out["rows"] += rows
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
