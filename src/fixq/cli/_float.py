"""What ``fixq run`` and ``fixq compare`` run: an int8 :class:`Model`, or fixq's float reference
(:func:`fixq.graph.run_float`) of a float model, a float ``.npz`` archive or a float ``.onnx``."""
import os
import zipfile

from ._common import CliError
from ..archive import load_float_model
from ..engine import Model
from ..graph import check_input, run_float
from ..io import load_onnx


class FloatModel:
    """Float graph `g` behind the part of Model's interface the commands use (``outputs``, ``run``)."""
    sequence = False  # a float sequence graph runs on the engine's float mode, a Model

    def __init__(self, g):
        self.graph = g
        self.input, self.outputs = g.input, list(g.outputs)

    def output_shapes(self):
        return [list(self.graph.shapes[t]) for t in self.outputs]

    def _check_x(self, x):
        return check_input(self.graph, x)

    def run(self, x, threads=1, raw=False):
        if raw:
            raise ValueError("raw=True needs an int8 model; a float model's outputs are float")
        return run_float(self.graph, x)


def _float_archive(path):
    """Whether `path` is a float ``.npz`` (its graph or its MLP's activation named, no quantized format)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False  # Model.load says what the file is
    return "__format__.npy" not in names and bool(names & {"__graph__.npy", "__activation__.npy"})


def load_runnable(path, target=None):
    """An int8 Model of `path` (`target` as ``Model.load`` takes it), or the FloatModel of a float archive or
    float ONNX model; `target` names an int8 runtime's arithmetic and is refused with a float model."""
    if os.path.splitext(os.fspath(path))[1].lower() == ".onnx":
        m = load_onnx(path, target=target, float_ok=True)
    elif _float_archive(path):
        m = load_float_model(path)[0]
    else:
        return Model.load(path, target=target)
    if isinstance(m, Model):
        return m
    if target is not None:
        raise CliError(f"{path}: is a float model, which fixq runs in float (its reference); --target names an "
                       f"int8 runtime's arithmetic: drop it, or quantize the model first (fixq quantize)")
    return FloatModel(m)


def output_shapes(m):
    """Each output's shape (batch None), int8 Model or FloatModel."""
    if isinstance(m, FloatModel):
        return m.output_shapes()
    return [m.meta["tensors"][t] for t in m.outputs]
