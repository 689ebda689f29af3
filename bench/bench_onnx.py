"""A user's model through ONNX: a CNN with BatchNorm trained in PyTorch on the digits data, exported by
torch.onnx.export, quantized by ONNX Runtime's quantize_static (QDQ and QOperator, uint8 and int8
activations, per-channel int8 weights, minmax on the bundled 256 calibration images) and imported by
fixq.  In one run, one thread, same process:

- exactness: fixq ``--target onnxruntime`` against ORT's default session (ORT_ENABLE_ALL) on every
  output of the test set, and how far ORT's own ORT_DISABLE_ALL session (the QDQ graph read as written)
  is from it;
- accuracy (top-1 on the bundled test set) of the float model, ORT int8 and fixq int8;
- speed at batch 1 and batch 256, samples/s: ORT fp32, ORT int8, fixq target onnxruntime (bit-exact)
  and plain fixq (the same int8 model on fixq's own output stage), with the ratios to ORT int8.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        PYTHONPATH=src python bench/bench_onnx.py [--json out.json] [--rounds 5] [--epochs 30]

Needs torch (the local CPU wheel), onnx, onnxruntime and scikit-learn (the training split,
tools/train_demo_models.py).
"""
import argparse
import json
import os
import sys
import tempfile
import warnings

import numpy as np

import fixq
from fixq.cli.demo import bundled

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from bench_model import ort_quantize_static, ort_session, timeit  # noqa: E402
from train_demo_models import load_digits_split  # noqa: E402

BATCHES = (1, 256)


def train_cnn(x_tr, y_tr, epochs):
    """conv-BN-ReLU x2, max pool, conv-BN-ReLU, global average pool, linear; seeded, one thread."""
    import torch
    nn = torch.nn
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def export(net, path):
    import torch
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), path, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)


def ort_unfused(path):
    """ORT's session without graph optimizations: the QDQ graph as written (float ops on dequantized values)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="Write the results as JSON here.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    import onnxruntime

    x_tr, y_tr, x_te, y_te, calib = load_digits_split()
    assert np.array_equal(x_te, np.load(bundled("digits_test_x.npy")))  # the bundled test set
    big = np.ascontiguousarray(np.concatenate([x_te] * 2)[:256])
    info = fixq.cpu_info()
    print(f"fixq {fixq.__version__} (ISA path {info['selected']}), onnxruntime {onnxruntime.__version__}; "
          f"1 thread; median of {args.rounds} rounds")
    rows, exact = [], []
    with tempfile.TemporaryDirectory() as d:
        fpath = os.path.join(d, "float.onnx")
        export(train_cnn(x_tr, y_tr, args.epochs), fpath)
        systems = {"ORT fp32": ("-", ort_session(fpath))}
        for label, path in ort_quantize_static(fpath, calib, d).items():
            ort_fn = ort_session(path)
            m = fixq.io.load_onnx(path)  # target onnxruntime
            plain = fixq.io.load_onnx(path, rounding="double")
            ref, unfused, y = ort_fn(x_te), ort_unfused(path)(x_te), m.run(x_te)
            exact.append({"model": label, "outputs": int(ref.size), "fixq_equal": int((y == ref).sum()),
                          "plain_equal": int((plain.run(x_te) == ref).sum()),
                          "disable_all_equal": int((unfused == ref).sum()),
                          "fixq_equal_disable_all": int((y == unfused).sum())})
            systems[f"ORT int8 {label}"] = (label, ort_fn)
            systems[f"fixq --target onnxruntime ({label})"] = (label, m.run)
            systems[f"fixq plain ({label})"] = (label, plain.run)
        times = {(name, b): [] for name in systems for b in BATCHES}
        for _ in range(args.rounds):  # the systems interleaved inside a round, so that they share the load
            for name, (label, fn) in systems.items():
                for b in BATCHES:
                    times[name, b].append(timeit(fn, np.ascontiguousarray(big[:b]), rounds=1))
        for name, (label, fn) in systems.items():
            row = {"system": name, "model": label, "accuracy": float(np.mean(fn(x_te).argmax(1) == y_te))}
            row.update({f"batch{b}_s": float(np.median(times[name, b])) for b in BATCHES})
            rows.append(row)
    print("\n| model | outputs | fixq --target onnxruntime = ORT | plain fixq = ORT | ORT_DISABLE_ALL = ORT_ENABLE_ALL "
          "| fixq = ORT_DISABLE_ALL |")
    print("|---|---|---|---|---|---|")
    for e in exact:
        print(f"| {e['model']} | {e['outputs']} | {e['fixq_equal']} | {e['plain_equal']} | {e['disable_all_equal']} "
              f"| {e['fixq_equal_disable_all']} |")
    ort_rows = {r["model"]: r for r in rows if r["system"].startswith("ORT int8")}
    print("\n| system | top-1 | batch 1 (samples/s) | batch 256 (samples/s) | vs ORT int8, b1 | vs ORT int8, b256 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        o = ort_rows.get(r["model"])
        ratios = ["-", "-"] if o is None else [f"{o[f'batch{b}_s'] / r[f'batch{b}_s']:.2f}x" for b in BATCHES]
        print(f"| {r['system']} | {100 * r['accuracy']:.2f}% | {1 / r['batch1_s']:,.0f} | "
              f"{256 / r['batch256_s']:,.0f} | {ratios[0]} | {ratios[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": info, "onnxruntime": onnxruntime.__version__, "exact": exact, "results": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
