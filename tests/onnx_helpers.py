"""What the ONNX tests share: a torch module exported as they export it, ONNX Runtime's CPU output on one thread,
and quantize_static's calibration data.  torch and onnxruntime are imported only when called (the callers skip
without them)."""
import os
import warnings

import numpy as np
import pytest


def export_torch(module, path, shape, **options):
    """`module` exported by torch.onnx.export's TorchScript exporter to `path` (returned as a str): input "x" of
    shape [N, *shape] (traced at N = 2), output "y", the batch dimension symbolic, opset 17; `options` add to or
    replace torch.onnx.export's arguments."""
    import torch
    kw = dict(dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
              opset_version=17)
    kw.update(options)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand((2,) + tuple(shape)),), str(path), **kw)
    return str(path)


def ort_run(model, x, level="ORT_ENABLE_ALL", save=None):
    """ONNX Runtime's first output for `x` fed to the first input of `model` (a path or a ModelProto): the CPU
    provider on one thread, graph optimizations `level` (ORT's default: all); `save`: where ORT writes the graph
    it optimized."""
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = 1
    if save:
        so.optimized_model_filepath = str(save)
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else os.fspath(model)
    s = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def calib_reader():
    """quantize_static's calibration data: four batches of 8 random 1x8x8 images, input "x"."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": np.random.default_rng(i).random((8, 1, 8, 8), dtype=np.float32)}
                            for i in range(4)])

        def get_next(self):
            return next(self.it, None)
    return Reader()
