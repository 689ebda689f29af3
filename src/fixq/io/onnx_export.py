"""fixq int8 models -> QDQ ONNX (opset 13) that ONNX Runtime loads and runs (docs/onnx.md).

Each quantized tensor is a uint8 ONNX tensor with the model's own scale and zero point (int8 ones shifted
by 128, zero point + 128: the model ORT's own int8-to-uint8 rewrite would run); each
step reads the DequantizeLinear views of its inputs and writes through a QuantizeLinear, the form ORT's
default session fuses into its QLinear kernels (QLinearConv, QGemm, QLinearAdd, QLinearMul,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat), so that ORT computes what
``Model.load(path, target="onnxruntime")`` does.
Weights are int8 initializers with per-channel (axis 0) or per-tensor scales, biases int32 with scale
``s_in * s_w``.  Flatten, MaxPool and the clamps of ReLU / ReLU6 that change nothing run on the
integer tensors; a table op (sigmoid, tanh, ...) is its 256-entry table as a ``Gather`` on the input's
value, so it is exact in any runtime.
"""
import numpy as np

from .. import graph as G, targets
from .._validate import INT_RANGES
from ..archive import atomic_path
from .onnx_file import OnnxError, _onnx

OPSET = 13
IR_VERSION = 8  # the IR of opset 13: every ONNX Runtime since 1.10 loads it


class _Exporter:
    def __init__(self, m):
        self.onnx, self.nh = _onnx()
        self.h = self.onnx.helper
        self.m = m
        self.nodes, self.inits = [], []
        self.dt = m.act_dtype
        # int8 activations are written as uint8 with zero points + 128 (the same values): ORT's
        # QDQS8ToU8Transformer converts only the int8 QuantizeLinear read by one DequantizeLinear, and a tensor
        # read by two ops left in int8 next to converted ones keeps their QDQ groups from fusing
        self.shift = 128 if self.dt == np.int8 else 0
        self.elem = self.onnx.TensorProto.UINT8
        self.q = {}  # fixq tensor -> the ONNX name of its integer tensor
        self.dq = {}  # fixq tensor -> the ONNX name of its DequantizeLinear
        self.qp = set()  # fixq tensors whose scale and zero point are initializers

    def init(self, name, value):
        self.inits.append(self.nh.from_array(np.asarray(value), name))
        return name

    def node(self, op, ins, outs, name, **attrs):
        self.nodes.append(self.h.make_node(op, ins, outs, name=name, **attrs))
        return outs[0]

    def qparams(self, t):
        if t not in self.qp:
            sc, zp = self.m.qparams(t)
            self.init(f"{t}:scale", np.float32(sc))
            self.init(f"{t}:zero_point", np.array(zp + self.shift, np.uint8))
            self.qp.add(t)
        return [f"{t}:scale", f"{t}:zero_point"]

    def dequantized(self, t):
        if t not in self.dq:
            self.dq[t] = self.node("DequantizeLinear", [self.q[t]] + self.qparams(t), [f"{t}:dq"], f"{t}:dq")
        return self.dq[t]

    def quantize_to(self, t, float_name, step, q_name=None):
        q_name = q_name or f"{t}:q"
        self.q[t] = self.node("QuantizeLinear", [float_name] + self.qparams(t), [q_name], f"{step}:q")

    def fail(self, s, why):
        raise OnnxError(f"step {s['name']!r} ({s['op']}): {why}; fixq exports static int8 models of the ops "
                        "docs/onnx.md lists")

    # -- steps ----------------------------------------------------------------------------------------
    def weighted(self, s):
        m, name = self.m, s["name"]
        a = m.arrays
        if np.any(a[f"{name}:weight_zero_point"] != 0):
            self.fail(s, "weight zero points other than 0")
        w = np.ascontiguousarray(m.weight(s), np.int8)
        ws = a[f"{name}:weight_scale"].astype(np.float32)
        per_ch = ws.size > 1
        s_in = np.float32(m.qparams(s["inputs"][0])[0])
        wq = self.init(f"{name}:weight", w)
        wdq = self.node("DequantizeLinear", [wq, self.init(f"{name}:weight_scale", ws if per_ch else ws[0]),
                                             self.init(f"{name}:weight_zero_point",
                                                       np.zeros(ws.shape if per_ch else (), np.int8))],
                        [f"{name}:weight:dq"], f"{name}:weight:dq", **({"axis": 0} if per_ch else {}))
        bs = (s_in * ws).astype(np.float32)  # as ORT's quantizer writes the bias scale
        bdq = self.node("DequantizeLinear", [self.init(f"{name}:bias", a[f"{name}:bias"].astype(np.int32)),
                                             self.init(f"{name}:bias_scale", bs if per_ch else bs[0]),
                                             self.init(f"{name}:bias_zero_point",
                                                       np.zeros(bs.shape if per_ch else (), np.int32))],
                        [f"{name}:bias:dq"], f"{name}:bias:dq", **({"axis": 0} if per_ch else {}))
        x = self.dequantized(s["inputs"][0])
        if s["op"] == "linear":
            y = self.node("Gemm", [x, wdq, bdq], [f"{name}:float"], name, transB=1)
        else:
            p = list(s["padding"])
            y = self.node("Conv", [x, wdq, bdq], [f"{name}:float"], name, kernel_shape=list(w.shape[2:]),
                          strides=list(s["stride"]), pads=p + p, dilations=list(s["dilation"]), group=s["groups"])
        self.activation(s)
        self.quantize_to(s["output"], y, name)

    def activation(self, s):
        """A fused relu / relu6 must change nothing after the output stage (fixq's clamp to [out_min,
        out_max] inside [qmin, qmax]); ORT would run a Relu / Clip between the op and its QuantizeLinear
        in float."""
        if s["act"] is None:
            return
        qmin, qmax = INT_RANGES[self.dt]
        if (s.get("out_min", qmin), s.get("out_max", qmax)) != (qmin, qmax):
            self.fail(s, f"its fused {s['act']} clamps to [{s['out_min']}, {s['out_max']}] inside the output's "
                      f"[{qmin}, {qmax}]; ONNX Runtime would run it in float")

    def step(self, s):
        op, name, m = s["op"], s["name"], self.m
        ins, out = s["inputs"], s["output"]
        if op in G.WEIGHTED:
            return self.weighted(s)
        if op in ("add", "mul"):
            y = self.node(op.capitalize(), [self.dequantized(t) for t in ins], [f"{name}:float"], name)
            self.activation(s)
            return self.quantize_to(out, y, name)
        if op == "global_avgpool":  # QLinearGlobalAveragePool in ORT, then the [N, C] view of fixq
            y = self.node("GlobalAveragePool", [self.dequantized(ins[0])], [f"{name}:float"], name)
            self.quantize_to(out, y, name, f"{out}:q4d")
            self.q[out] = self.node("Flatten", [self.q[out]], [f"{out}:q"], f"{name}:flatten", axis=1)
            return
        if op == "maxpool2d":  # int8 MaxPool; fixq pads with qmin, ORT with the lowest value
            k, p = list(s["kernel"]), list(s["padding"])
            self.q[out] = self.node("MaxPool", [self.q[ins[0]]], [f"{out}:q"], name, kernel_shape=k,
                                    strides=list(s["stride"]), pads=p + p)
            return
        if op == "avgpool2d":  # QLinearAveragePool in ORT (count_include_pad: fixq counts padding as zeros)
            k, p = list(s["kernel"]), list(s["padding"])
            y = self.node("AveragePool", [self.dequantized(ins[0])], [f"{name}:float"], name, kernel_shape=k,
                          strides=list(s["stride"]), pads=p + p, count_include_pad=1)
            return self.quantize_to(out, y, name)
        if op == "concat":  # QLinearConcat in ORT: a table per input at another scale
            y = self.node("Concat", [self.dequantized(t) for t in ins], [f"{name}:float"], name, axis=s["axis"])
            return self.quantize_to(out, y, name)
        if op == "flatten":
            self.q[out] = self.node("Flatten", [self.q[ins[0]]], [f"{out}:q"], name, axis=1)
            return
        if op in ("relu", "relu6"):  # an integer clamp (Clip of int8 / uint8 needs opset 12)
            lo, hi = m.qparams(out)[1], INT_RANGES[self.dt][1]
            if op == "relu6":
                lo, hi = targets.activation_range("relu6", *m.qparams(out), self.dt, m.target)
            bounds = [self.init(f"{name}:{k}", np.array(v + self.shift, np.uint8)) for k, v in (("lo", lo), ("hi", hi))]
            self.q[out] = self.node("Clip", [self.q[ins[0]]] + bounds, [f"{out}:q"], name)
            return
        if op in G.TABLE_OPS:  # Gather by the uint8 value; an int8 table's entry for value b is at byte b ^ 0x80
            idx = self.node("Cast", [self.q[ins[0]]], [f"{name}:index"], f"{name}:index",
                            to=self.onnx.TensorProto.INT32)
            t = m.arrays[f"{name}:table"].view(np.uint8)
            if self.shift:
                t = t[np.arange(256) ^ 0x80] ^ np.uint8(0x80)
            table = self.init(f"{name}:table", t)
            self.q[out] = self.node("Gather", [table, idx], [f"{out}:q"], name, axis=0)
            return
        if op == "softmax":  # float, on the dequantized input, as fixq computes it
            self.q[out] = None
            self.dq[out] = self.node("Softmax", [self.dequantized(ins[0])], [out], name, axis=s["axis"])
            return
        self.fail(s, "this op is not exported yet")

    def run(self):
        m = self.m
        x = m.input
        shape = ["N"] + list(m.input_shape[1:])
        self.quantize_to(x, x, x)
        for s in m.steps:
            self.step(s)
        outputs = []
        for t in m.outputs:
            if self.q.get(t) is not None:  # a softmax's node writes the output itself
                self.node("DequantizeLinear", [self.q[t]] + self.qparams(t), [t], f"{t}:output")
            outputs.append(self.h.make_tensor_value_info(t, self.onnx.TensorProto.FLOAT,
                                                         ["N"] + list(m.meta["tensors"][t][1:])))
        graph = self.h.make_graph(self.nodes, "fixq", [self.h.make_tensor_value_info(x, self.onnx.TensorProto.FLOAT,
                                                                                   shape)],
                                  outputs, self.inits)
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", OPSET)], producer_name="fixq",
                                  ir_version=IR_VERSION)
        self.onnx.checker.check_model(model)
        return model


def export_onnx(model, path=None):
    """The QDQ ONNX model (opset 13) of int8 :class:`fixq.Model` `model`, written atomically to `path` when
    given; returns the ``onnx.ModelProto``.  ONNX Runtime's default session runs it with the arithmetic of
    ``target="onnxruntime"`` (docs/onnx.md says where it is exact)."""
    proto = _Exporter(model).run()
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(proto.SerializeToString())
    return proto
