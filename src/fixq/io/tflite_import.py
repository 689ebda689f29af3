"""Full-integer .tflite models -> fixq int8 models (``fixq.qmodel/1``; docs/tflite.md).

Each TFLite operator of subgraph 0 becomes one fixq step (an asymmetric SAME padding adds a ``pad`` step),
keeping the model's own float32 scales, zero points, int8 weights (per-channel or per-tensor) and int32
biases as stored.  One archive serves LiteRT's three kernel sets: ``target=`` ("tflite-reference",
"tflite", "xnnpack") recomputes each op's recipe from those parameters (docs/conformance.md).

fixq's tensors are NCHW outside and NHWC inside; TFLite's are NHWC: 4-D shapes are recorded as
``[null, C, H, W]`` and the NHWC axes renumbered.  A RESHAPE of ``[1, H, W, C]`` to ``[1, H·W·C]`` is fixq's
flatten, whose features come in C, H, W order: the FULLY_CONNECTED layers reading it get their weight
columns permuted to match, and an output is put back in TFLite's order by :func:`run_tflite`.  The
model's input and output types (int8, uint8, float32) are kept in ``meta["tflite"]`` for
:func:`run_tflite`, which takes and returns arrays as the .tflite model's own signature does.
"""
import numpy as np

from .. import graph as G
from .._core import VERSION
from ..archive import QMODEL_FORMAT, ArchiveError, check_archive
from ..arith import quantize_multiplier
from ..engine import Model
from ..quantizer import activation_table
from ..targets import activation_range
from .tflite_file import DOCS, TENSOR_TYPE_NAMES, TfliteError

DEFAULT_TARGET = "xnnpack"  # what LiteRT's default interpreter runs: the XNNPACK delegate where it takes the op
_ACTS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_TABLES = {"LOGISTIC": "sigmoid", "TANH": "tanh", "HARD_SWISH": "hardswish", "LEAKY_RELU": "leaky_relu"}
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


class _Q:
    """A quantized fixq tensor: its name, NCHW shape (batch None), scale, zero point, for a flattened
    [N, H·W·C] tensor the (H, W, C) whose TFLite order its features are not in, and whether it holds a
    uint8 TFLite tensor (as int8 values q - 128 with zero point zp - 128: the same real values)."""
    __slots__ = ("name", "shape", "scale", "zp", "hwc", "uint8")

    def __init__(self, name, shape, scale, zp, hwc=None, uint8=False):
        self.name, self.shape, self.scale, self.zp, self.hwc, self.uint8 = name, tuple(shape), scale, zp, hwc, uint8


def _nchw(shape):
    return (None, shape[3], shape[1], shape[2]) if len(shape) == 4 else (None,) + tuple(shape[1:])


def _same_pads(size, k, stride, dil):
    """TFLite's SAME padding of one dimension: (before, after) = (total // 2, total - total // 2)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dil + 1 - size, 0)
    return total // 2, total - total // 2


class _Importer:
    def __init__(self, tm, where):
        self.tm, self.where = tm, where
        self.steps, self.arrays, self.tensors, self.env = [], {}, {}, {}
        self.origin = {}  # fixq tensor name -> TFLite tensor index
        self.per_channel = False
        self.io = {"inputs": [], "outputs": []}

    # -- errors and records ---------------------------------------------------------------------------------
    def fail(self, o, msg):
        raise TfliteError(f"{self.where}: operator {o.index} ({o.op}, version {o.version}): {msg} ({DOCS})")

    def tensor(self, k):
        return self.tm.tensors[k]

    def qparams(self, o, k, dtype=np.int8):
        """Per-tensor (float32 scale, int zero point) of activation tensor `k` of `dtype` (int8 unless said)."""
        t = self.tensor(k)
        where = f"operator {o.index} ({o.op}, version {o.version})" if o is not None else "the model's input"
        if t.dtype != dtype:
            raise TfliteError(f"{self.where}: {where}: tensor {k} {t.name!r} is "
                              f"{TENSOR_TYPE_NAMES.get(t.type, t.type)}; fixq runs {np.dtype(dtype).name} here "
                              f"(full-integer models) ({DOCS})")
        if t.scale is None or t.scale.size != 1 or t.zero_point is None or t.zero_point.size != 1:
            raise TfliteError(f"{self.where}: {where}: tensor {k} {t.name!r} has no per-tensor scale and zero point "
                              f"({DOCS})")
        info = np.iinfo(dtype)
        scale, zp = np.float32(t.scale[0]), int(t.zero_point[0])
        if not (np.isfinite(scale) and np.finfo(np.float32).tiny <= scale) or not info.min <= zp <= info.max:
            raise TfliteError(f"{self.where}: {where}: tensor {k} {t.name!r} has scale {float(scale)!r} and zero "
                              f"point {zp}; scales must be finite normal floats > 0 and zero points inside "
                              f"{np.dtype(dtype).name}")
        return scale, zp

    def value(self, o, i):
        """The quantized fixq tensor that input `i` of operator `o` reads."""
        k = o.inputs[i] if i < len(o.inputs) else -1
        if k not in self.env:
            self.fail(o, f"input {i} must be a computed int8 tensor")
        if self.env[k].uint8 and o.op != "QUANTIZE":
            self.fail(o, f"input {i} is a uint8 tensor; fixq reads uint8 tensors only with QUANTIZE (int8 models)")
        return self.env[k]

    def const(self, o, i, what):
        k = o.inputs[i] if i < len(o.inputs) else -1
        if k == -1 or self.tensor(k).data is None:
            self.fail(o, f"its {what} (input {i}) must be a constant")
        return self.tensor(k).data

    def record(self, name, shape, scale, zp, k):
        if len(shape) not in (2, 4) or any(d < 1 for d in shape[1:]):
            self.fail_shape(name, shape)
        self.tensors[name] = [None] + [int(d) for d in shape[1:]]
        self.arrays[f"t:{name}:scale"] = np.float32(scale)
        self.arrays[f"t:{name}:zero_point"] = np.int32(zp)
        self.origin[name] = k

    def fail_shape(self, name, shape):
        raise TfliteError(f"{self.where}: tensor {name!r} of shape {list(shape)}; fixq runs [N, features] and "
                          f"[N, H, W, C] tensors ({DOCS})")

    def step(self, o, op, ins, out_k=None, attrs=None, act=None, name=None, qp=None):
        """One fixq step for operator `o` writing TFLite tensor `out_k` (default: its output 0), of int8
        quantization `qp` (default: the tensor's own)."""
        out_k = o.outputs[0] if out_k is None else out_k
        t = self.tensor(out_k)
        scale, zp = qp or self.qparams(o, out_k)
        name = name or f"{op}_{o.index}"
        shape = _nchw(t.shape)
        if len(t.shape) not in (2, 4) or (t.shape and t.shape[0] != 1):
            self.fail(o, f"output tensor {out_k} has shape {list(t.shape)}; fixq runs [1, features] and "
                         "[1, H, W, C] tensors of batch 1 models")
        s = {"name": name, "op": op, "inputs": [q.name for q in ins], "output": name, "act": None}
        s.update(attrs or {})
        if act is not None:
            if act not in ("relu", "relu6"):
                self.fail(o, f"fused activation {act.upper()} is not supported")
            s["act"] = act
            s["out_min"], s["out_max"] = activation_range(act, scale, zp, np.int8, None)
        self.steps.append(s)
        self.record(name, shape, scale, zp, out_k)
        q = _Q(name, shape, scale, zp)
        self.env[out_k] = q
        return q

    def multipliers(self, o, name, real):
        """multiplier / shift / scale of the real multipliers `real` (float64), each in (0, 256) in float64
        and float32 (XNNPACK keeps a node with a larger one on TFLite; a zero or infinite one is damage)."""
        real = np.asarray(real, np.float64).reshape(-1)
        with np.errstate(over="ignore", under="ignore"):
            r32 = real.astype(np.float32)
        if not (np.all(np.isfinite(real)) and np.all(real > 0) and np.all(real < 256) and np.all(r32 > 0)):
            self.fail(o, f"a requantization multiplier (input scale x weight scale / output scale) of "
                         f"{float(real[~((real > 0) & (real < 256) & (r32 > 0))][0]):.6g}; fixq takes them in (0, 256)")
        m, sh = quantize_multiplier(real)
        self.arrays[f"{name}:multiplier"] = m.astype(np.int32)
        self.arrays[f"{name}:shift"] = sh.astype(np.int32)
        self.arrays[f"{name}:scale"] = real.astype(np.float32)

    def positive(self, o, *names):
        """Options `names` (strides, dilations, filter sizes) each in [1, LIMITS["attribute"]]."""
        for n in names:
            if not 1 <= o.options[n] <= G.LIMITS["attribute"]:
                self.fail(o, f"option {n} = {o.options[n]}; it must be in [1, {G.LIMITS['attribute']}]")

    def act(self, o):
        a = o.options.get("activation", 0)
        if a not in _ACTS:
            self.fail(o, f"fused activation {a} is not supported")
        return _ACTS[a]

    # -- the walk -------------------------------------------------------------------------------------------
    def run(self):
        tm = self.tm
        for o in tm.operators:
            if (o.op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D") and len(o.inputs) > 1 and o.inputs[0] >= 0
                    and o.inputs[1] >= 0 and self.tensor(o.inputs[0]).type == 0 and self.tensor(o.inputs[1]).type == 9):
                self.fail(o, "a dynamic-range (hybrid) layer: int8 weights, float32 activations that LiteRT quantizes "
                             "at run time; fixq imports full-integer models only, see 'Dynamic-range models'")
        if len(tm.inputs) != 1:
            raise TfliteError(f"{self.where}: {len(tm.inputs)} inputs; fixq models take one ({DOCS})")
        self.input_tensor(tm.inputs[0])
        outs = set(tm.outputs)
        for o in tm.operators:
            if o.op in ("QUANTIZE", "DEQUANTIZE") and o.outputs and o.outputs[0] in outs and self.edge(o):
                continue  # the model's output conversion: run_tflite
            handler = getattr(self, "op_" + o.op, None)
            if handler is None:
                raise TfliteError(f"{self.where}: operator {o.index} ({o.op}, version {o.version}) is not supported; "
                                  f"{DOCS} lists the ops fixq imports")
            if len(o.outputs) != 1 or o.outputs[0] == -1:
                self.fail(o, f"{len(o.outputs)} outputs; fixq's steps have one")
            handler(o)
        outputs = [self.output_tensor(k) for k in tm.outputs]
        name = self.io["input"]
        meta = {
            "format": QMODEL_FORMAT, "fixq_version": VERSION,
            "options": {"method": "tflite", "per_channel": self.per_channel, "weights": "int8",
                        "activations": "int8", "dynamic": False, "rounding": "double", "method_options": {},
                        "target": DEFAULT_TARGET},
            "graph": {"format": G.GRAPH_FORMAT, "inputs": [{"name": name, "shape": self.tensors[name]}],
                      "nodes": [{"name": s["name"], "op": s["op"], "inputs": s["inputs"]} for s in self.steps],
                      "outputs": outputs},
            "input": name, "input_shape": self.tensors[name], "outputs": outputs, "tensors": self.tensors,
            "steps": self.steps,
            "tflite": dict(self.io, tensors={k: v for k, v in self.origin.items() if v >= 0},
                           hwc={q.name: list(q.hwc) for q in self.env.values() if q.hwc},
                           uint8=sorted(q.name for q in self.env.values() if q.uint8)),
        }
        try:
            check_archive(meta, self.arrays, "model")
        except ArchiveError as e:
            raise TfliteError(f"{self.where}: {e} ({DOCS})") from None
        return Model(meta, self.arrays)

    def input_tensor(self, k):
        """The model input: an int8 tensor, or a float32/uint8 one that a QUANTIZE turns into int8 (uint8 ->
        int8 with the same scale and zero point - 128 is exact, as is dequantizing the uint8 input)."""
        t = self.tensor(k)
        io = {"index": k, "dtype": TENSOR_TYPE_NAMES.get(t.type, str(t.type)).lower(), "shape": list(t.shape)}
        src = k
        if t.type != 9:
            q = [o for o in self.tm.operators if o.op == "QUANTIZE" and o.inputs[:1] == [k]]
            if t.type not in (0, 3) or len(q) != 1:
                raise TfliteError(f"{self.where}: input {t.name!r} is {io['dtype']}; fixq takes an int8 input, or a "
                                  f"float32 or uint8 one read by one QUANTIZE ({DOCS})")
            src = q[0].outputs[0]
            if t.type == 3:
                (si, zi), (so, zo) = self.qparams(q[0], k, np.uint8), self.qparams(q[0], src)
                io.update(scale=float(si), zero_point=zi)
                if si != so or zi - 128 != zo:  # a requantizing QUANTIZE: a step on the uint8 input
                    src = k
            if src != k:
                q[0].op = "INPUT_QUANTIZE"
        uint8 = src == k and t.type == 3
        scale, zp = self.qparams_input(src, np.uint8 if uint8 else np.int8)
        zp -= 128 if uint8 else 0
        name = "input"
        self.record(name, _nchw(self.tensor(src).shape), scale, zp, src)
        self.env[src] = _Q(name, _nchw(self.tensor(src).shape), scale, zp, uint8=uint8)
        io.setdefault("scale", float(scale))
        io.setdefault("zero_point", zp)
        self.io["input"] = name
        self.io["inputs"] = [io]

    def qparams_input(self, k, dtype):
        t = self.tensor(k)
        if len(t.shape) not in (2, 4) or t.shape[0] != 1:
            self.fail_shape(t.name, t.shape)
        return self.qparams(None, k, dtype)

    def edge(self, o):
        """Whether output QUANTIZE / DEQUANTIZE `o` is one run_tflite does: a DEQUANTIZE, or int8 -> uint8 with
        the same scale and zero point + 128 (exact); any other QUANTIZE is a step."""
        t, src = self.tensor(o.outputs[0]), self.tensor(o.inputs[0]) if o.inputs and o.inputs[0] >= 0 else None
        if o.op == "DEQUANTIZE" or src is None or t.type != 3 or src.type != 9:
            return True
        (si, zi), (so, zo) = self.qparams(o, o.inputs[0]), self.qparams(o, o.outputs[0], np.uint8)
        return si == so and zi + 128 == zo

    def output_tensor(self, k):
        """A model output: an int8 tensor, or the uint8 / float32 one a QUANTIZE / DEQUANTIZE makes of one."""
        t = self.tensor(k)
        io = {"index": k, "dtype": TENSOR_TYPE_NAMES.get(t.type, str(t.type)).lower(), "shape": list(t.shape)}
        src = k
        if k not in self.env:
            o = next((o for o in self.tm.operators if o.outputs[:1] == [k]), None)
            if o is None or o.op not in ("QUANTIZE", "DEQUANTIZE") or o.inputs[0] not in self.env:
                raise TfliteError(f"{self.where}: output {t.name!r} is not computed by an operator fixq imports "
                                  f"({DOCS})")
            src = o.inputs[0]
            if o.op == "QUANTIZE":
                if t.type != 3:
                    self.fail(o, "an output QUANTIZE to another type than uint8 is not supported")
                (si, zi), (so, zo) = self.qparams(o, src), self.qparams(o, k, np.uint8)
                if si != so or zi + 128 != zo:
                    self.fail(o, "a uint8 output with another scale than the int8 tensor it comes from is not "
                                 "supported")
        q = self.env[src]
        io.update(scale=float(q.scale), zero_point=int(q.zp) + (128 if io["dtype"] == "uint8" else 0),
                  hwc=list(q.hwc) if q.hwc else None)
        self.io["outputs"].append(io)
        return q.name

    # -- operators ------------------------------------------------------------------------------------------
    def weights(self, o, i, axis, ndim):
        """int8 weights (input `i`, rank `ndim`, output channels on `axis`) and their float32 scales."""
        w = self.const(o, i, "weight")
        t = self.tensor(o.inputs[i])
        if w.ndim != ndim or 0 in w.shape:
            self.fail(o, f"weights of shape {list(w.shape)}; it needs rank {ndim}")
        o_channels = w.shape[axis]
        if w.dtype != np.int8:
            self.fail(o, f"weights of type {TENSOR_TYPE_NAMES.get(t.type)}; fixq runs int8 weights (dynamic-range "
                         "and float models are not supported)")
        if t.scale is None or t.scale.size not in (1, o_channels) or (t.scale.size > 1 and t.qdim != axis):
            self.fail(o, f"weight scales must be per tensor or per output channel (dimension {axis})")
        if not np.all(np.isfinite(t.scale) & (t.scale > 0)):
            self.fail(o, f"tensor {o.inputs[i]} {t.name!r}: weight scales must be finite and > 0")
        if t.zero_point is not None and np.any(t.zero_point != 0):
            self.fail(o, "weight zero points other than 0 are not supported")
        self.per_channel |= t.scale.size > 1
        return w, t.scale.astype(np.float32)

    def weighted(self, o, op, q, w, ws, attrs, act):
        """A linear / conv2d step: int8 weights as stored (fixq's layout), int32 bias, multipliers of
        s_in·s_w/s_out in float64."""
        out = o.outputs[0]
        s_out, _ = self.qparams(o, out)
        n = w.shape[0]
        b = np.zeros(n, np.int32)
        if len(o.inputs) > 2 and o.inputs[2] != -1:
            b = self.const(o, 2, "bias")
            if b.dtype != np.int32 or b.shape != (n,):
                self.fail(o, f"bias of shape {list(b.shape)} and type {b.dtype}; fixq needs int32 [{n}]")
        name = f"{op}_{o.index}"
        self.arrays[f"{name}:weight"] = np.ascontiguousarray(w)
        self.arrays[f"{name}:weight_scale"] = np.array(ws, np.float32)
        self.arrays[f"{name}:weight_zero_point"] = np.zeros(ws.size, np.int32)
        self.arrays[f"{name}:bias"] = np.array(b, np.int32)
        with np.errstate(all="ignore"):  # XNNPACK's float32 s_in * s_w / s_out, left to right
            r32 = (np.float32(q.scale) * ws).astype(np.float32) / np.float32(s_out)
        if not np.all(np.isfinite(r32) & (r32 > 0)):
            self.fail(o, "input scale x weight scale / output scale is 0 or infinite in float32")
        self.multipliers(o, name, np.float64(q.scale) * ws.astype(np.float64) / np.float64(s_out))
        return self.step(o, op, [q], attrs=dict(attrs, weight_shape=list(w.shape)), act=act)

    def conv_padding(self, o, q, kh, kw, dil):
        """fixq's symmetric [ph, pw], after a pad step where TFLite's SAME padding is asymmetric."""
        self.positive(o, "stride_h", "stride_w", "dilation_h", "dilation_w")
        _, _, h, w = q.shape
        if o.options["padding"] == 1:  # VALID
            return q, [0, 0]
        (t, b), (l, r) = (_same_pads(h, kh, o.options["stride_h"], dil[0]),
                          _same_pads(w, kw, o.options["stride_w"], dil[1]))
        if t == b and l == r:
            return q, [t, l]
        return self.pad(o, q, [t, l, b, r]), [0, 0]

    def pad(self, o, q, pads, name=None):
        t, l, b, r = pads
        shape = (None, q.shape[1], q.shape[2] + t + b, q.shape[3] + l + r)
        name = name or f"pad_{o.index}"
        self.steps.append({"name": name, "op": "pad", "inputs": [q.name], "output": name, "act": None,
                           "padding": [t, l, b, r]})
        self.record(name, shape, q.scale, q.zp, -1)
        return _Q(name, shape, q.scale, q.zp)

    def op_CONV_2D(self, o):
        q = self.nhwc_value(o, 0)
        w, ws = self.weights(o, 1, 0, 4)
        dil = [o.options["dilation_h"], o.options["dilation_w"]]
        q, pad = self.conv_padding(o, q, w.shape[1], w.shape[2], dil)
        groups = q.shape[1] // w.shape[3]
        attrs = {"stride": [o.options["stride_h"], o.options["stride_w"]], "padding": pad, "dilation": dil,
                 "groups": groups, "depthwise": False}
        self.weighted(o, "conv2d", q, w.transpose(0, 3, 1, 2), ws, attrs, self.act(o))

    def op_DEPTHWISE_CONV_2D(self, o):
        q = self.nhwc_value(o, 0)
        w, ws = self.weights(o, 1, 3, 4)
        shape = w.shape
        dil = [o.options["dilation_h"], o.options["dilation_w"]]
        q, pad = self.conv_padding(o, q, w.shape[1], w.shape[2], dil)
        c = q.shape[1]
        if shape[3] % c:
            self.fail(o, f"{shape[3]} output channels for {c} input channels")
        attrs = {"stride": [o.options["stride_h"], o.options["stride_w"]], "padding": pad, "dilation": dil,
                 "groups": c, "depthwise": c > 1}
        self.weighted(o, "conv2d", q, w.transpose(3, 0, 1, 2), ws, attrs, self.act(o))

    def op_FULLY_CONNECTED(self, o):
        if o.options["weights_format"] != 0:
            self.fail(o, "shuffled weights are not supported")
        q = self.value(o, 0)
        w, ws = self.weights(o, 1, 0, 2)
        if len(q.shape) == 4:  # FULLY_CONNECTED flattens its input itself
            q = self.flatten(o, q, f"flatten_{o.index}")
        if w.ndim != 2 or q.shape[1] != w.shape[1]:
            self.fail(o, f"weights of shape {list(w.shape)} for {q.shape[1]} input features")
        if q.hwc is not None:  # fixq's flatten gives C, H, W order; TFLite's is H, W, C
            w = w.reshape((w.shape[0],) + tuple(q.hwc)).transpose(0, 3, 1, 2).reshape(w.shape)
        self.weighted(o, "linear", q, w, ws, {}, self.act(o))

    def nhwc_value(self, o, i):
        q = self.value(o, i)
        if len(q.shape) != 4:
            self.fail(o, f"input {i} has shape {list(q.shape)}; it needs [N, H, W, C]")
        return q

    def flatten(self, o, q, name):
        _, c, h, w = q.shape
        self.steps.append({"name": name, "op": "flatten", "inputs": [q.name], "output": name, "act": None})
        self.record(name, (None, c * h * w), q.scale, q.zp, -1)
        return _Q(name, (None, c * h * w), q.scale, q.zp, (h, w, c) if h * w > 1 and c > 1 else None)

    def binary(self, o, op):
        """ADD / SUB / MUL: equal shapes, or shapes that broadcast as LiteRT extends them (an [N, F] operand of a
        4-D op is [N, 1, 1, F]); one input may be a constant int8 tensor (kept in the step)."""
        ins, const = [], None
        for i in (0, 1):
            k = o.inputs[i] if i < len(o.inputs) else -1
            if k in self.env:
                ins.append(self.value(o, i))
            elif k != -1 and self.tensor(k).data is not None and const is None:
                const = (i, k)
            else:
                self.fail(o, f"input {i} must be a computed int8 tensor or a constant (one of the two)")
        act = self.act(o)
        if const is None and ins[0].shape == ins[1].shape and ins[0].hwc == ins[1].hwc:
            self.step(o, op, ins, act=act).hwc = ins[0].hwc
            return
        if any(q.hwc for q in ins):
            self.fail(o, "broadcasting a flattened feature map is not supported")
        out = _nchw(self.tensor(o.outputs[0]).shape)
        shapes = [q.shape[1:] for q in ins]
        name, attrs = f"{op}_{o.index}", {"broadcast": True}
        if const is not None:
            i, k = const
            scale, zp = self.qparams(o, k)
            data = np.asarray(self.tensor(k).data)
            if data.ndim > len(out) or (data.ndim == len(out) and data.shape[0] != 1):
                self.fail(o, f"a constant of shape {list(data.shape)} for an output of shape "
                             f"{list(self.tensor(o.outputs[0]).shape)}")
            data = data.reshape((1,) * (len(out) - data.ndim) + data.shape)  # ExtendedShape; NHWC is fixq's inside
            nchw = [data.shape[3], data.shape[1], data.shape[2]] if data.ndim == 4 else [data.shape[1]]
            shapes.insert(i, tuple(nchw))
            attrs.update(constant=i, constant_shape=nchw)
            self.arrays[f"{name}:constant"] = np.ascontiguousarray(data, np.int8)
            self.arrays[f"{name}:constant_scale"] = np.float32(scale)
            self.arrays[f"{name}:constant_zero_point"] = np.int32(zp)
        shapes = [s + (1, 1) if len(s) == 1 and len(out) == 4 else s for s in shapes]
        try:
            ok = np.broadcast_shapes(*shapes) == out[1:] and all(len(s) == len(out) - 1 for s in shapes)
        except ValueError:
            ok = False
        if not ok:
            self.fail(o, f"inputs of shapes {[list(s) for s in shapes]} (NCHW, no batch) do not broadcast to its "
                         f"output {list(out[1:])}")
        self.step(o, op, ins, attrs=attrs, act=act)

    def op_ADD(self, o):
        self.binary(o, "add")

    def op_SUB(self, o):
        self.binary(o, "sub")

    def op_MUL(self, o):
        self.binary(o, "mul")

    def op_CONCATENATION(self, o):
        qs = [self.value(o, i) for i in range(len(o.inputs))]
        if self.act(o) is not None:
            self.fail(o, "a fused activation on CONCATENATION is not supported")
        rank = len(self.tensor(o.outputs[0]).shape)
        axis = o.options["axis"] % rank
        if rank == 4:
            axis = _NHWC_TO_NCHW[axis]
        elif any(q.hwc for q in qs):
            self.fail(o, "concatenating flattened feature maps is not supported")
        s_out, _ = self.qparams(o, o.outputs[0])
        name = f"concat_{o.index}"
        self.multipliers(o, name, [np.float64(q.scale) / np.float64(s_out) for q in qs])
        self.step(o, "concat", qs, attrs={"axis": axis})

    def pool(self, o, op):
        q = self.nhwc_value(o, 0)
        if self.act(o) is not None:
            self.fail(o, "a fused activation on a pool is not supported")
        if self.qparams(o, o.outputs[0]) != (q.scale, q.zp):
            self.fail(o, "input and output quantization differ")
        self.positive(o, "filter_h", "filter_w", "stride_h", "stride_w")
        k = [o.options["filter_h"], o.options["filter_w"]]
        attrs = {"kernel": k, "stride": [o.options["stride_h"], o.options["stride_w"]], "padding": [0, 0]}
        if o.options["padding"] == 0:  # SAME
            (t, b), (l, r) = (_same_pads(q.shape[2], k[0], attrs["stride"][0], 1),
                              _same_pads(q.shape[3], k[1], attrs["stride"][1], 1))
            if op == "maxpool2d":  # padding with qmin: a max over the taps inside
                attrs["padding"] = [t, l] if (t, l) == (b, r) else [t, l, b, r]
            elif t or b or l or r:
                attrs.update(padding=[t, l, b, r], count_include_pad=False)
        self.step(o, op, [q], attrs=attrs)

    def op_AVERAGE_POOL_2D(self, o):
        self.pool(o, "avgpool2d")

    def op_MAX_POOL_2D(self, o):
        self.pool(o, "maxpool2d")

    def op_MEAN(self, o):
        q = self.nhwc_value(o, 0)
        axes = sorted(int(a) % 4 for a in np.asarray(self.const(o, 1, "axis")).reshape(-1))
        if axes != [1, 2]:
            self.fail(o, f"a MEAN over axes {axes} is not supported (only over H and W: [1, 2])")
        _, c, h, w = q.shape
        s_out, _ = self.qparams(o, o.outputs[0])
        name = f"global_avgpool_{o.index}"
        self.multipliers(o, name, [np.float64(q.scale) / (np.float64(s_out) * (h * w))])
        attrs = {}
        if len(self.tensor(o.outputs[0]).shape) == 4:  # keep_dims: [1, 1, 1, C] is [N, C] in fixq
            self.tensor(o.outputs[0]).shape = (1, c)
            attrs["keep_dims"] = True  # the tflite kernel set runs its optimized Mean only then
        self.step(o, "global_avgpool", [q], attrs=attrs, name=name)

    def op_SOFTMAX(self, o):
        q = self.value(o, 0)
        if o.outputs[0] not in self.tm.outputs and not any(
                p.op in ("QUANTIZE", "DEQUANTIZE") and p.inputs[:1] == o.outputs[:1] and p.outputs[0] in self.tm.outputs
                for p in self.tm.operators):
            self.fail(o, "a SOFTMAX that other operators read is not supported (fixq's softmax ends the model)")
        attrs = {"axis": 1 if len(q.shape) == 4 else -1}
        beta = float(np.float32(o.options["beta"]))
        if beta != 1.0:
            attrs["beta"] = beta
        self.step(o, "softmax", [q], attrs=attrs).hwc = q.hwc

    def op_table(self, o, op):
        q = self.value(o, 0)
        s_out, zp_out = self.qparams(o, o.outputs[0])
        attrs = {"alpha": float(np.float32(o.options["alpha"]))} if op == "leaky_relu" else {}
        name = f"{op}_{o.index}"
        self.arrays[f"{name}:table"] = activation_table(op, attrs, q.scale, q.zp, s_out, zp_out, np.int8)
        self.step(o, op, [q], attrs=attrs).hwc = q.hwc

    def op_LOGISTIC(self, o):
        self.op_table(o, "sigmoid")

    def op_TANH(self, o):
        self.op_table(o, "tanh")

    def op_HARD_SWISH(self, o):
        self.op_table(o, "hardswish")

    def op_LEAKY_RELU(self, o):
        self.op_table(o, "leaky_relu")

    def relu(self, o, op):
        q = self.value(o, 0)
        if self.qparams(o, o.outputs[0]) != (q.scale, q.zp):
            self.fail(o, "a standalone activation that requantizes (input and output quantization differ) is not "
                         "supported")
        self.step(o, op, [q]).hwc = q.hwc

    def op_RELU(self, o):
        self.relu(o, "relu")

    def op_RELU6(self, o):
        self.relu(o, "relu6")

    def reshape(self, o):
        q = self.value(o, 0)
        t = self.tensor(o.outputs[0])
        if self.qparams(o, o.outputs[0]) != (q.scale, q.zp):
            self.fail(o, "input and output quantization differ")
        shape = _nchw(t.shape)
        if len(t.shape) not in (2, 4) or t.shape[0] != 1:
            self.fail(o, f"output shape {list(t.shape)}; fixq runs [1, features] and [1, H, W, C] tensors")
        if shape == q.shape or (len(q.shape) == 2 and q.hwc is None and shape == (None, q.shape[1], 1, 1)):
            self.env[o.outputs[0]] = q  # [1, F] -> [1, 1, 1, F] too: fixq's [N, F] stands for it in a broadcast
        elif len(q.shape) == 4 and len(shape) == 2 and shape[1] == np.prod(q.shape[1:]):
            self.env[o.outputs[0]] = self.flatten(o, q, f"flatten_{o.index}")
            self.origin[self.env[o.outputs[0]].name] = o.outputs[0]
        else:
            self.fail(o, f"a reshape of {list(q.shape[1:])} to {list(shape[1:])} (NCHW) is not supported; only "
                         "[1, H, W, C] -> [1, H*W*C] and no-op reshapes are")

    def op_RESHAPE(self, o):
        self.reshape(o)

    def op_SQUEEZE(self, o):
        self.reshape(o)

    def op_PAD(self, o):
        q = self.nhwc_value(o, 0)
        p = np.asarray(self.const(o, 1, "paddings")).reshape(-1)
        if p.size != 8 or p[0] or p[1] or p[6] or p[7] or np.any(p < 0):
            self.fail(o, f"paddings {p.tolist()}; fixq pads H and W only")
        fill = self.const(o, 2, "constant") if len(o.inputs) > 2 and o.inputs[2] != -1 else None
        if fill is not None and (fill.size != 1 or int(fill.reshape(-1)[0]) != q.zp):
            self.fail(o, "a pad value other than the zero point is not supported")
        if self.qparams(o, o.outputs[0]) != (q.scale, q.zp):
            self.fail(o, "input and output quantization differ")
        r = self.pad(o, q, [int(p[2]), int(p[4]), int(p[3]), int(p[5])])
        self.env[o.outputs[0]] = r
        self.origin[r.name] = o.outputs[0]

    op_PADV2 = op_PAD

    def op_QUANTIZE(self, o):
        """int8 / uint8 -> int8 / uint8 (a uint8 tensor held as int8 q - 128): TFLite's Requantize."""
        q = self.value(o, 0)
        uint8 = self.tensor(o.outputs[0]).type == 3
        scale, zp = self.qparams(o, o.outputs[0], np.uint8 if uint8 else np.int8)
        attrs = {"uint8": True} if uint8 or q.uint8 else {}
        r = self.step(o, "requantize", [q], attrs=attrs, qp=(scale, zp - (128 if uint8 else 0)))
        r.hwc, r.uint8 = q.hwc, uint8

    def op_INPUT_QUANTIZE(self, o):
        pass  # the model input's conversion (input_tensor)
