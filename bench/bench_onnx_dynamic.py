"""ONNX Runtime's quantize_dynamic models in fixq: MLPs exported by torch.onnx.export and quantized by
quantize_dynamic (per-channel QInt8 weights), run by ORT's default session and by fixq's import (target
onnxruntime, bit-exact, checked here) at batch 1 and 64.  One thread, same process, ORT and fixq interleaved
call by call; median and minimum per call.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python bench/bench_onnx_dynamic.py [--calls 3000]

Needs torch (the local CPU wheel), onnx and onnxruntime.
"""
import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime import quantization

from fixq.io import import_onnx

SIZES = [(784, 256, 128, 10), (64, 32, 32, 10)]


def _model(sizes, path):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Sequential(*layers[:-1]).eval(), (torch.rand(2, sizes[0]),), path + ".f.onnx",
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
        quantization.quantize_dynamic(path + ".f.onnx", path, per_channel=True,
                                      weight_type=quantization.QuantType.QInt8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000, help="calls at batch 1 (a fifth of them at batch 64)")
    calls = ap.parse_args().calls
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    print("| model | batch | ORT (us) | fixq (us) | ORT / fixq |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for sizes in SIZES:
            path = os.path.join(d, "mlp.onnx")
            _model(sizes, path)
            sess, m = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]), import_onnx(path)
            for n in (1, 64):
                x = np.random.default_rng(n).standard_normal((n, sizes[0]), dtype=np.float32)
                feed = {"x": x}
                assert np.array_equal(m.run(x).view(np.uint32), sess.run(None, feed)[0].view(np.uint32))
                t_ort, t_fixq = [], []
                for _ in range(calls if n == 1 else calls // 5):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    t1 = time.perf_counter()
                    m.run(x)
                    t_fixq.append(time.perf_counter() - t1)
                    t_ort.append(t1 - t0)
                o, f = np.array(t_ort) * 1e6, np.array(t_fixq) * 1e6
                print(f"| {'-'.join(map(str, sizes))} | {n} | {np.median(o):.1f} ({o.min():.1f}) | "
                      f"{np.median(f):.1f} ({f.min():.1f}) | {np.median(o) / np.median(f):.2f}x "
                      f"({o.min() / f.min():.2f}x) |")


if __name__ == "__main__":
    main()
