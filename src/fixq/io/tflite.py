"""Running a model imported from a .tflite file (docs/tflite.md) as the .tflite signature has it: its input
and output types and NHWC layouts, each kernel set's output DEQUANTIZE; :func:`import_model` reads the file
(``io/tflite_import.py``)."""
import weakref

import numpy as np

from .._core import EngineIO
from .._validate import threads_arg
from ..arith import dequantize
from .tflite_import import _Importer
from .tflite_file import read_model


# id(model) -> its C plan's EngineIO, or False where the plan does not compute every output; the entry goes
# when the model does (weakref.finalize; an EngineIO holds no reference to its model).  A dict of ids, not a
# WeakKeyDictionary: run_tflite's lookup costs what an attribute's does.
_PLAN_RUNNERS = {}


def import_model(source):
    """A :class:`fixq.Model` from a .tflite path or the bytes of one (fixq.import_tflite)."""
    tm = read_model(source)
    where = source if isinstance(source, str) else "the .tflite bytes"
    return _Importer(tm, where).run()


def _io(model):
    io = model.meta.get("tflite")
    if io is None:
        raise ValueError("this model was not imported from a .tflite file; run it with Model.run")
    return io


def _checked_input(io, x):
    """`x` as an array of the .tflite input `io`'s dtype and shape [N, ...], or a one-line TypeError /
    ValueError."""
    x = np.asarray(x)
    want = np.dtype(io["dtype"]) if io["dtype"] in ("int8", "uint8", "float32") else None
    if x.dtype != want:
        raise TypeError(f"x has dtype {x.dtype}; the model's input is {io['dtype']} of shape {io['shape']}")
    if x.ndim != len(io["shape"]) or list(x.shape[1:]) != io["shape"][1:]:
        raise ValueError(f"x has shape {list(x.shape)}; the model's input needs "
                         f"[N, {', '.join(map(str, io['shape'][1:]))}]")
    return x


def tflite_input(model, x):
    """`x` in the .tflite model's own input type and NHWC layout -> the float NCHW batch Model.run takes
    (an int8/uint8 input dequantized: exact, and quantized back to the same integers by every kernel set)."""
    io = _io(model)["inputs"][0]
    x = _checked_input(io, x)
    if x.dtype != np.float32:
        x = dequantize(x, io["scale"], io["zero_point"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def _dequantize(q, scale, zero_point, target):
    """The output DEQUANTIZE (int8 -> float32) of kernel set `target`, per sample (one invocation of the
    batch-1 model).  Reference kernels and XNNPACK: ``(float)(q - zp) * s`` (fixq.dequantize).  The optimized
    builtin kernel (optimized_ops::Dequantize) runs its NEON loop (NEON_2_SSE on x86) over the first
    ``8 * (n // 8)`` values: ``(float)q * s + (float)(-zp * (double)s)``, a float32 multiply then add, not
    fused; the rest as the reference.  Read off LiteRT 2.3.0 (37-, 21- and 13-wide outputs)."""
    y = dequantize(q, scale, zero_point)
    if target == "tflite":
        n = q[0].size if len(q) else 0
        flat, vec = y.reshape(len(q), n), 8 * (n // 8)
        s = np.float32(scale)
        head = q.reshape(len(q), n)[:, :vec].astype(np.float32) * s
        flat[:, :vec] = head + np.float32(-zero_point * np.float64(s))
    return y


def tflite_outputs(model, ys):
    """Model.run(..., raw=True) outputs -> the .tflite model's output types and layouts."""
    outs = []
    for io, y in zip(_io(model)["outputs"], ys if isinstance(ys, tuple) else (ys,)):
        if io.get("hwc"):
            h, w, c = io["hwc"]
            y = y.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(y.shape)
        elif y.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        if io["dtype"] == "uint8":
            y = (y.astype(np.int16) + 128).astype(np.uint8)
        elif io["dtype"] == "float32":
            y = _dequantize(y, io["scale"], io["zero_point"], model.target)
        outs.append(np.ascontiguousarray(y).reshape((-1,) + tuple(io["shape"][1:])))
    return outs


def tflite_runner(model):
    """``runner(x, threads=1)``: :func:`run_tflite` of imported model `model`, checked and prepared once.  Where
    the C plan computes every output, a call is one check of x's dtype and shape and one C call that reads x
    as the .tflite input (int8 bytes as they are, uint8 XOR 0x80, float32 through the kernel set's QUANTIZE)
    and writes each output as the .tflite output (int8, uint8, or float32 by the kernel set's DEQUANTIZE);
    each call returns new arrays.  That runner is made once per model and kept while the model lives; elsewhere
    the runner is the numpy route (:func:`tflite_input`, ``Model.run``, :func:`tflite_outputs`)."""
    runner = _PLAN_RUNNERS.get(id(model))
    if runner is None:
        runner = _PLAN_RUNNERS[id(model)] = _engine_io(model) or False
        weakref.finalize(model, _PLAN_RUNNERS.pop, id(model), None)
    return runner or _numpy_runner(model)


def _numpy_runner(model):
    _io(model)

    def run(x, threads=1):
        return tflite_outputs(model, model.run(tflite_input(model, x), threads=threads, raw=True))
    return run


def _engine_io(model):
    """The C plan's EngineIO of `model` (the .tflite signature's input and outputs), or None where the plan
    does not compute every output."""
    io = _io(model)
    plan = model.output_plan()
    if plan is None or model.act_dtype != np.int8:
        return None
    engine, index = plan
    inp = io["inputs"][0]
    if inp["dtype"] not in ("int8", "uint8", "float32"):
        return None
    outs = []
    for o, k in zip(io["outputs"], index):
        size = int(np.prod(o["shape"][1:]))
        a, b = (o["hwc"][2], size // o["hwc"][2]) if o.get("hwc") else (size, 1)
        form = {"int8": "raw", "uint8": "raw"}.get(o["dtype"],
                                                   "float-tflite" if model.target == "tflite" else "float")
        outs.append((k, a, b, form, 0x80 if o["dtype"] == "uint8" else 0,
                     o["scale"], o["zero_point"], o["dtype"], tuple(o["shape"][1:])))

    def check(x, threads):
        return np.ascontiguousarray(_checked_input(inp, x)), threads_arg(threads)
    return EngineIO(engine, check, "float-nhwc" if inp["dtype"] == "float32" else "q",
                    0x80 if inp["dtype"] == "uint8" else 0, inp["dtype"], tuple(inp["shape"][1:]), outs)


def run_tflite(model, x, threads=1):
    """Outputs of imported model `model` for `x`, both as the .tflite signature has them (types, NHWC): a
    list, one array per output (:func:`tflite_runner`)."""
    return (_PLAN_RUNNERS.get(id(model)) or tflite_runner(model))(x, threads)


def tflite_tensors(model, x, threads=1):
    """{TFLite tensor index: its value} for every tensor of imported model `model` that stands for one of the
    .tflite model's own tensors, for input `x` (the .tflite signature's type and layout), NHWC and in
    TFLite's feature order: what LiteRT's experimental_preserve_all_tensors shows."""
    io = _io(model)
    env = model.run_all(tflite_input(model, x), threads)
    out = {}
    for name, k in io["tensors"].items():
        if name not in env or env[name].dtype == np.float32:
            continue
        y = env[name]
        if name in io["hwc"]:
            h, w, c = io["hwc"][name]
            y = y.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(y.shape)
        if name in io.get("uint8", ()):
            y = (y.astype(np.int16) + 128).astype(np.uint8)
        out[int(k)] = y
    return out
