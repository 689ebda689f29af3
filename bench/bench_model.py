"""End-to-end throughput of ``fixq.Model.run`` on the bundled digits MLP and CNN, side by side with the
float model in numpy and ONNX Runtime running the same model (fp32, and int8 from its quantize_static),
at batch 1 and batch 256, one thread, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        PYTHONPATH=src python bench/bench_model.py [--json out.json] [--rounds 5] [--targets all] [--cpu-time]

Peers are optional (``pip install -e '.[bench]'`` brings onnx and onnxruntime).  The same calibration
set (the bundled 256 digits images) feeds fixq's minmax calibration and ORT's quantize_static (minmax,
per-channel int8 weights; QDQ and QOperator formats, uint8 and int8 activations: the fastest ORT variant
is the reference).  Accuracy on the bundled test set is printed for every system.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

import fixq
from fixq import graph as G
from fixq.cli.demo import bundled
from fixq.quantizer import quantize_model

BATCHES = (1, 256)


def timeit(fn, x, min_time=0.3, rounds=5, clock=time.perf_counter):
    """Median over `rounds` of the mean time of one call, each round at least `min_time` seconds."""
    fn(x)
    n, t = 1, 0.0
    while True:
        t0 = clock()
        for _ in range(n):
            fn(x)
        t = clock() - t0
        if t > min_time / 5:
            break
        n *= 4
    n = max(1, int(n * (min_time / 5) / t) * 5)
    res = []
    for _ in range(rounds):
        t0 = clock()
        for _ in range(n):
            fn(x)
        res.append((clock() - t0) / n)
    return float(np.median(res))


# ---------------------------------------------------------------------------------------------
# The same float model as ONNX

def to_onnx(g):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    names = {g.input: g.input}

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    for n in g.nodes:
        ins = [names[t] for t in n.inputs]
        out = n.name
        a = n.attrs
        if n.op == "linear":
            w = init(n.name + "_W", g.weights[a["weight"]])
            b = [init(n.name + "_B", g.weights[a["bias"]])] if a["bias"] else []
            nodes.append(helper.make_node("Gemm", ins + [w] + b, [out], transB=1))
        elif n.op == "conv2d":
            w = init(n.name + "_W", g.weights[a["weight"]])
            b = [init(n.name + "_B", g.weights[a["bias"]])] if a["bias"] else []
            k = g.weights[a["weight"]].shape[2:]
            p = a["padding"]
            nodes.append(helper.make_node("Conv", ins + [w] + b, [out], kernel_shape=list(k),
                                          strides=list(a["stride"]), pads=[p[0], p[1], p[0], p[1]],
                                          dilations=list(a["dilation"]), group=a["groups"]))
        elif n.op == "relu":
            nodes.append(helper.make_node("Relu", ins, [out]))
        elif n.op == "relu6":
            lo, hi = init(n.name + "_lo", np.float32(0)), init(n.name + "_hi", np.float32(6))
            nodes.append(helper.make_node("Clip", ins + [lo, hi], [out]))
        elif n.op in ("maxpool2d", "avgpool2d"):
            p = a["padding"]
            kw = dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[p[0], p[1], p[0], p[1]])
            if n.op == "avgpool2d":
                kw["count_include_pad"] = 1
            nodes.append(helper.make_node("MaxPool" if n.op == "maxpool2d" else "AveragePool", ins, [out], **kw))
        elif n.op == "global_avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", ins, [out + "_4d"]))
            nodes.append(helper.make_node("Flatten", [out + "_4d"], [out], axis=1))
        elif n.op == "flatten":
            nodes.append(helper.make_node("Flatten", ins, [out], axis=1))
        elif n.op in ("add", "mul"):
            nodes.append(helper.make_node(n.op.capitalize(), ins, [out]))
        elif n.op == "concat":
            nodes.append(helper.make_node("Concat", ins, [out], axis=a["axis"]))
        elif n.op == "softmax":
            nodes.append(helper.make_node("Softmax", ins, [out], axis=a["axis"]))
        names[n.name] = out
    shape = ["N"] + list(g.input_shape[1:])
    graph = helper.make_graph(
        nodes, "fixq_bench", [helper.make_tensor_value_info(g.input, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N"] + list(g.shapes[t][1:])) for t in g.outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def ort_quantize_static(float_path, calib, d):
    """{label: path} of ORT quantize_static's models of `float_path` in `d`: QDQ and QOperator formats, u8 and
    s8 activations, per-channel int8 weights (a variant ORT cannot build is reported and left out)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.it, None)

    out = {}
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        for act in (QuantType.QUInt8, QuantType.QInt8):
            label = f"{'QDQ' if fmt == QuantFormat.QDQ else 'QOp'} {'u8' if act == QuantType.QUInt8 else 's8'}"
            path = os.path.join(d, f"int8_{label.replace(' ', '_')}.onnx")
            try:
                quantize_static(float_path, path, Reader(), quant_format=fmt, activation_type=act,
                                weight_type=QuantType.QInt8, per_channel=True)
                out[label] = path
            except Exception as e:  # a variant ORT cannot build for this graph is reported, not fatal
                print(f"  ORT int8 {label}: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
    return out


def ort_int8_variants(float_path, calib, d):
    """{label: run} for ORT quantize_static in QDQ and QOperator formats, u8 and s8 activations."""
    return {label: ort_session(path) for label, path in ort_quantize_static(float_path, calib, d).items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="Write the results as JSON here.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--threads", type=int, default=1,
                    help="Also time fixq with Model.run(x, threads=N) (the peers stay on one thread).")
    ap.add_argument("--targets", default="",
                    help="Also time fixq with Model.load(..., target=T) for each T of this comma-separated "
                         "list ('all': every fixq.targets.TARGETS).")
    ap.add_argument("--cpu-time", action="store_true",
                    help="Time each call by this thread's CPU time (time.thread_time) instead of the wall clock: "
                         "on a shared machine, the time the process waited for a core is left out.")
    args = ap.parse_args()

    x_test = np.load(bundled("digits_test_x.npy"))
    y_test = np.load(bundled("digits_test_y.npy"))
    calib = np.load(bundled("digits_calib.npy"))
    big = np.concatenate([x_test] * 2)[:256]
    info = fixq.cpu_info()
    print(f"fixq {fixq.__version__}, ISA path {info['selected']}; 1 thread; median of {args.rounds} rounds; "
          "throughput in samples/s (batch 1: also us per call)")
    try:
        import onnxruntime as ort
        print(f"onnxruntime {ort.__version__}")
    except ImportError:
        ort = None
        print("onnxruntime not installed: ORT columns skipped")
    results = []
    for name in args.models.split(","):
        g, _ = fixq.load_float_model(bundled(f"digits_{name}.npz"))
        m = quantize_model(g, [calib], method="minmax", per_channel=True)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "q.npz")
            m.save(path)
            m = fixq.Model.load(path)
            systems = {"numpy fp32": lambda x: G.run_float(g, x), "fixq int8": m.run}
            if args.threads > 1:
                systems[f"fixq int8 threads={args.threads}"] = lambda x, m=m: m.run(x, threads=args.threads)
            for t in (fixq.targets.TARGETS if args.targets == "all" else
                      [t for t in args.targets.split(",") if t]):
                systems[f"fixq int8 target={t}"] = fixq.Model.load(path, target=t).run
            if ort is not None:
                import onnx
                fpath = os.path.join(d, "float.onnx")
                onnx.save(to_onnx(g), fpath)
                systems["ORT fp32"] = ort_session(fpath)
                systems.update({f"ORT int8 {k}": v for k, v in ort_int8_variants(fpath, calib, d).items()})
            for label, fn in systems.items():
                acc = float(np.mean(np.asarray(fn(x_test)).argmax(1) == y_test))
                row = {"model": name, "system": label, "accuracy": acc}
                for b in BATCHES:
                    xb = np.ascontiguousarray(big[:b])
                    row[f"batch{b}_s"] = timeit(fn, xb, rounds=args.rounds,
                                                clock=time.thread_time if args.cpu_time else time.perf_counter)
                results.append(row)
    ort_best = {}
    for r in results:
        if r["system"].startswith("ORT int8"):
            for b in BATCHES:
                k = (r["model"], b)
                ort_best[k] = min(ort_best.get(k, float("inf")), r[f"batch{b}_s"])
    hdr = ["model", "system", "accuracy", "batch 1 (us/call)", "batch 1 (samples/s)", "batch 256 (samples/s)",
           "fixq vs this, b1", "fixq vs this, b256"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in results:
        fq = [x for x in results if x["model"] == r["model"] and x["system"] == "fixq int8"][0]
        cells = [r["model"], r["system"], f"{100 * r['accuracy']:.2f}%", f"{r['batch1_s'] * 1e6:.1f}",
                 f"{1 / r['batch1_s']:,.0f}", f"{256 / r['batch256_s']:,.0f}",
                 f"{r['batch1_s'] / fq['batch1_s']:.2f}x", f"{r['batch256_s'] / fq['batch256_s']:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    for (model, b), t in sorted(ort_best.items()):
        fq = [x for x in results if x["model"] == model and x["system"] == "fixq int8"][0]
        print(f"{model} batch {b}: fixq int8 is {t / fq[f'batch{b}_s']:.2f}x the fastest ORT int8 variant")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": info, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
