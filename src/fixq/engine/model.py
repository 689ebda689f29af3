"""The :class:`Model`: a quantized model loaded, checked and ready to run."""
import math
import os

import numpy as np

from .. import graph as G, layout as L, lowbit, targets
from .._validate import THREADS_MAX, rounding_arg, threads_arg
from ..archive import ACT_TYPES, ArchiveError, read_archive, write_archive
from ..arith import dequantize
from .plan import engine_plan
from .sequence import SequenceRunner
from .steps import float_step, prepared_dequantize, prepared_quantize, static_step


_F32 = np.dtype(np.float32)

# file suffix -> load(path, rounding, target) of a front-end above this layer (fixq.io registers ".onnx")
_LOADERS = {}


def register_loader(suffix, load):
    """Let :meth:`Model.load` read files ending in `suffix` with ``load(path, rounding, target)``."""
    _LOADERS[suffix.lower()] = load


class Model:
    """An int8 model: ``Model.load(path)`` then ``model.run(x)``."""

    def __init__(self, meta, arrays, rounding=None, target=None):
        self.meta = meta
        self.arrays = arrays
        self.options = meta["options"]
        self.rounding = rounding_arg(rounding) if rounding is not None else self.options["rounding"]
        self.dynamic = self.options["dynamic"]
        self.weights = self.options["weights"]
        self.float_acts = self.dynamic or self.weights in ("fp16", "fp32")
        self.sequence = "inputs" in meta  # a sequence model (docs/transformers.md): several named inputs
        self.target = target if target is not None else self.options.get("target")
        self.act_dtype = np.dtype(ACT_TYPES[self.options["activations"]])
        if self.target is not None:
            targets.target_arg(self.target)
            if rounding is not None:
                raise ValueError("give rounding= or target=, not both: a target fixes each op's rounding")
            if self.float_acts and not self._ort_dynamic():
                if self.target == "onnxruntime" and self.dynamic and self.weights == "int8" and not self.sequence:
                    raise ValueError("target='onnxruntime' runs a dynamic model as ORT's DynamicQuantizeLinear does, "
                                     "on uint8 activations; quantize it with activations='uint8' (--activations uint8)")
                raise ValueError(f"target={self.target!r} emulates a runtime's int8 kernels and needs a static "
                                 "int8 model (quantized without --dynamic or --weights fp16); of dynamic models, "
                                 "target='onnxruntime' runs those with int8 weights and uint8 activations")
        self.input = meta["input"]
        self.input_shape = tuple(meta["input_shape"])
        self.inputs = [dict(i, shape=tuple(i["shape"])) for i in meta["inputs"]] if self.sequence else \
            [{"name": self.input, "shape": self.input_shape, "dtype": "float32", "optional": False}]
        self.outputs = list(meta["outputs"])
        self.steps = meta["steps"]
        self._build()

    def _ort_dynamic(self):
        """Whether target onnxruntime can run this float-activation model: dynamic int8 weights, uint8
        activations (ORT quantizes them as DynamicQuantizeLinear does, engine/steps.py), not a sequence model."""
        return (self.target == "onnxruntime" and self.dynamic and self.weights == "int8" and not self.sequence
                and self.act_dtype == np.uint8)

    @classmethod
    def load(cls, path, rounding=None, target=None):
        """Read a ``fixq.qmodel/1`` archive; `rounding` overrides the requantization it was made with;
        `target` runs linear, conv, add, mul and the input quantization exactly as that runtime does
        (``fixq.targets``, docs/conformance.md).  A path of another format with a registered front-end
        (``.onnx``: :func:`fixq.io.load_onnx`) is imported on the fly."""
        load = _LOADERS.get(os.path.splitext(os.fspath(path))[1].lower())
        if load is not None:
            return load(path, rounding, target)
        meta, arrays = read_archive(path)
        try:
            return cls(meta, arrays, rounding, target)
        except (KeyError, IndexError, TypeError) as e:
            raise ArchiveError(f"{path}: key '__meta__' is inconsistent ({type(e).__name__}: {e})") from None

    def save(self, path):
        """Write the archive atomically (fixq.archive.write_archive)."""
        write_archive(path, self.meta, self.arrays)

    # -- parameters -----------------------------------------------------------------------------
    def qparams(self, tensor):
        """(scale, zero_point) of an activation tensor (static mode)."""
        return float(self.arrays[f"t:{tensor}:scale"]), int(self.arrays[f"t:{tensor}:zero_point"])

    def weight_bytes(self):
        return sum(a.nbytes for k, a in self.arrays.items() if not k.startswith("t:"))

    def float_weight_bytes(self):
        """fp32 weights and biases of the weighted layers (and of gather and layer_norm)."""
        return sum(4 * int(np.prod(s["weight_shape"])) * (2 if s["op"] == "layer_norm" else 1)
                   + (4 * s["weight_shape"][0] if s["op"] in G.WEIGHTED else 0)
                   for s in self.steps if s["op"] in G.WEIGHTED or s["op"] in G.FLOAT_WEIGHTED)

    def weight(self, s):
        """The int8 weights of step `s` in their float layout (ternary/binary codes unpacked)."""
        a, name, shape = self.arrays, s["name"], s["weight_shape"]
        if self.weights == "ternary":
            lw = lowbit.TernaryWeights.from_arrays({"codes": a[f"{name}:weight_codes"],
                                                         "alpha": a[f"{name}:weight_scale"],
                                                         "k": int(np.prod(shape[1:]))})
        elif self.weights == "binary":
            lw = lowbit.BinaryWeights.from_arrays({"bits": a[f"{name}:weight_bits"],
                                                        "alpha": a[f"{name}:weight_scale"],
                                                        "k": int(np.prod(shape[1:]))})
        else:
            return a[f"{name}:weight"]
        return lw.unpack().reshape(shape)

    # -- building the run plan ------------------------------------------------------------------
    def _requant_kw(self, name):
        a = self.arrays
        if self.rounding == "fp32":
            return {"scale": a[f"{name}:scale"]}
        return {"multiplier": a[f"{name}:multiplier"], "shift": a[f"{name}:shift"]}

    def _build(self):
        """Static int8 models run on the C plan (plan.engine_plan), with or without target=; dynamic mode
        and fp16 weights run the numpy steps (steps.py; built on demand for run_all(engine=False) too)."""
        self._fns = None
        self._engine = None
        self._plan_only = False
        if self.sequence:
            self._sequence = SequenceRunner(self)
            return
        if not self.float_acts:
            sc, zp = self.qparams(self.input)
            if self.target is not None:
                self._quantize_in = lambda x: targets.quantize(x, self.target, sc, zp, self.act_dtype)
            else:
                self._quantize_in = prepared_quantize(sc, zp, self.act_dtype)
            self._dequantize_out = [prepared_dequantize(*self.qparams(t), self.act_dtype) for t in self.outputs]
        self._engine = None
        self._in_tail = self.input_shape[1:]
        if not self.float_acts:
            plan = engine_plan(self)
            if plan is not None:
                self._engine, self._engine_index, self._softmax = plan
        # the C plan computes every output (no softmax left to numpy): Model.run is one call of it
        self._plan_only = self._engine is not None and not self._softmax and not self.sequence

    def output_plan(self):
        """``(plan, indices)`` where :meth:`run` is one call of the C plan (every output computed there): the plan
        (``_core.Engine``, only read) and each of :attr:`outputs`' tensor numbers in it; None where numpy runs a
        part (dynamic, fp16/fp32-weight and sequence models, a float softmax, a step the plan lacks).  For a
        front-end that runs the plan on its own input and output forms (``fixq.io.tflite``'s runner,
        ``_core.EngineIO``)."""
        if not self._plan_only:
            return None
        return self._engine, [self._engine_index[t] for t in self.outputs]

    def _python_steps(self):
        if self._fns is None:
            self._fns = []
            for s in self.steps:
                fn = float_step(self, s) if self.float_acts else static_step(self, s)
                self._fns.append((fn, tuple(s["inputs"]), s["output"]))
        return self._fns

    # -- running --------------------------------------------------------------------------------
    def _check_x(self, x):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"x must be a float array, got dtype {x.dtype}")
        want = self.input_shape
        if x.ndim != len(want) or x.shape[1:] != want[1:]:
            raise ValueError(f"x has shape {x.shape}; the model's input {self.input!r} needs "
                             f"[N, {', '.join(map(str, want[1:]))}]")
        return x

    def run_all(self, x, threads=1, engine=True):
        """Every tensor of the run (internal layout: 4-D tensors NHWC), keyed by name.  `engine=False`
        runs the numpy steps instead of the C plan (the same integers).  A sequence model takes a dict of
        input name -> array and keeps its tensors' layout."""
        if type(threads) is not int or not 0 < threads <= THREADS_MAX:  # the common case without a call
            threads = threads_arg(threads)
        if self.sequence:
            return self._sequence.run(x, threads, True)
        x = self._check_x(x)
        if self._engine is not None and engine:
            views = self._engine.run(x, threads, False, True)
            env = {}
            for t, i in self._engine_index.items():
                env[t] = views[i] if len(self.meta["tensors"][t]) == 4 else views[i].reshape(
                    x.shape[0], math.prod(self.meta["tensors"][t][1:]))
            for t, (src, axis, quantized) in self._softmax.items():
                env[t] = (quantized(env[src]) if quantized is not None else
                          G.softmax(dequantize(env[src], *self.qparams(src)), axis, self._beta(t)))
            return env
        x = L.to_internal(x)
        if self.float_acts:
            env = {self.input: np.asarray(x, np.float32)}
        else:
            env = {self.input: self._quantize_in(x)}
        for fn, ins, out in self._python_steps():
            env[out] = fn(*[env[t] for t in ins], threads)
        return env

    def run(self, x, threads=1, raw=False):
        """Outputs for a float batch `x` (the model's input shape with any batch size): dequantized
        float32, or with `raw` the int8/uint8 outputs (static mode).  One output: an array; several:
        a tuple.  A sequence model takes a dict of input name -> array (``input_ids``, ``attention_mask``,
        ...; one array for a model of one required input), each checked (fixq.graph.check_feeds)."""
        if type(threads) is not int or not 0 < threads <= THREADS_MAX:  # the common case without a call
            threads = threads_arg(threads)
        if self._plan_only:
            if type(x) is not np.ndarray or x.dtype is not _F32 or x.shape[1:] != self._in_tail:
                x = self._check_x(x)
            outs = self._engine.run(x, threads, raw, False)
            return outs[0] if len(outs) == 1 else tuple(outs)
        if raw and self.float_acts:
            raise ValueError("raw=True needs a static int8 model; this model's outputs are float")
        if self.sequence:
            outs = self._sequence.run(x, threads)
            return outs[0] if len(outs) == 1 else tuple(outs)
        if self._engine is not None:
            quantized = any(q is not None for _, _, q in self._softmax.values())
            outs = self._engine.run(self._check_x(x), threads, raw or quantized, False)
            for i, t in enumerate(self.outputs):
                if t in self._softmax:
                    _, axis, q = self._softmax[t]
                    y = q(outs[i]) if q is not None else G.softmax(outs[i], axis, self._beta(t))
                    outs[i] = L.to_external(y if raw or q is None else dequantize(y, *self.qparams(t)))
                elif quantized and not raw:
                    outs[i] = self._dequantize_out[i](outs[i])
            return outs[0] if len(outs) == 1 else tuple(outs)
        env = self.run_all(x, threads)
        outs = []
        for i, t in enumerate(self.outputs):
            y = env[t]
            if not self.float_acts and not raw and y.dtype != np.float32:
                y = self._dequantize_out[i](y)
            outs.append(L.to_external(y))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _beta(self, tensor):
        """The beta of the softmax step writing `tensor`."""
        return next(s.get("beta", 1.0) for s in self.steps if s["output"] == tensor)

    def dequantized(self, tensor, value):
        """Float view of an internal tensor value (for per-layer error reports)."""
        if self.float_acts or value.dtype == np.float32:
            return value
        return dequantize(value, *self.qparams(tensor))
