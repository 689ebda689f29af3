"""ONNX models quantized by ORT's ``quantize_dynamic`` -> fixq dynamic int8 models (target ``onnxruntime``;
docs/onnx.md).

``quantize_dynamic`` rewrites each MatMul (a Gemm becomes MatMul + Add first) and Conv into
DynamicQuantizeLinear of its float input, MatMulInteger / ConvInteger of the uint8 values by the int8 or
uint8 weights, a Cast to float, a Mul by ``x_scale * w_scale`` and an Add of the float bias.  ORT's default
session fuses the MatMul groups into DynamicQuantizeMatMul (com.microsoft), whose MLAS output processor computes
the same float32 product and sum, and runs the Conv groups as written; both forms (and MatMulIntegerToFloat) are
read here.  Each group becomes one ``linear`` / ``conv2d`` step of a dynamic model, its weights, scales and zero
points stored as the file holds them (uint8 weights as int8 with the zero point - 128: the same differences);
the float ops between the groups are the float importer's, limited to those whose float32 result is exact
(ReLU, Clip, MaxPool, Flatten, Reshape, Add / Mul / Concat of computed tensors), since fixq does not reproduce
ORT's float GEMM, pooling averages or transcendental functions bit for bit.
"""
import numpy as np

from .. import graph as G
from .._core import VERSION
from ..archive import QMODEL_FORMAT, ArchiveError, check_archive
from ..engine import Model
from ..quantizer import plan_steps
from .onnx import DOCS, _Importer, _Tensor
from .onnx_file import OnnxError

# the ops of the groups quantize_dynamic writes, and ORT's fused forms of them (com.microsoft)
DYNAMIC_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat")
# float ops whose float32 result fixq computes exactly as ORT does (comparisons, copies, one rounding each)
_EXACT_FLOAT_OPS = ("Relu", "Clip", "MaxPool", "Flatten", "Reshape", "Squeeze", "Identity", "Dropout", "Shape",
                    "Concat", "Add", "Mul")


class _Dyn:
    """An output of DynamicQuantizeLinear of float tensor `t`: ``part`` "q", "scale" or "zp"; a scale
    multiplied by a constant weight scale carries it as ``w_scale``."""
    __slots__ = ("t", "part", "w_scale")

    def __init__(self, t, part, w_scale=None):
        self.t, self.part, self.w_scale = t, part, w_scale


class _Acc:
    """The int32 output of MatMulInteger / ConvInteger node `nd` on DynamicQuantizeLinear's values of `t`
    (``cast``: after its Cast to float): ``op`` linear ([N, K] weights) or conv2d, with the weights' zero point
    and the conv's attributes."""
    __slots__ = ("t", "nd", "op", "w", "w_zp", "attrs", "cast")

    def __init__(self, t, nd, op, w, w_zp, attrs, cast=False):
        self.t, self.nd, self.op, self.w, self.w_zp, self.attrs, self.cast = t, nd, op, w, w_zp, attrs, cast


def _int8_weights(w, zp):
    """int8 weights and int32 zero points with the same differences w - zp: uint8 values and zero points - 128."""
    if w.dtype == np.uint8:
        return (w ^ np.uint8(0x80)).view(np.int8), zp.astype(np.int32) - 128
    return w, zp.astype(np.int32)


class _DynImporter(_Importer):
    def __init__(self, model, constants):
        super().__init__(model, constants)
        self.qweights = {}  # step name -> {"weight", "weight_scale", "weight_zero_point", "bias"}

    def visit(self, nd):
        ins = self.inputs(nd, ("", "ai.onnx", "com.microsoft"))
        if ins is None:
            return
        symbolic = any(isinstance(v, (_Dyn, _Acc)) for v in ins)
        if nd.op_type in DYNAMIC_OPS or (symbolic and nd.op_type in ("Mul", "Cast")):
            getattr(self, "d_" + nd.op_type)(nd, ins)
        elif nd.op_type in ("QuantizeLinear", "DequantizeLinear", "QGemm") or nd.op_type.startswith("QLinear"):
            self.fail(nd, "static quantization (QuantizeLinear, QLinear ops) in a quantize_dynamic model is not "
                          "supported; fixq imports models quantized one way")
        elif symbolic:
            self.fail(nd, "it reads an output of DynamicQuantizeLinear, MatMulInteger or ConvInteger outside the "
                          "Mul / Cast pattern quantize_dynamic writes")
        elif nd.op_type in ("Add", "Sub", "Mul", "Div") and any(isinstance(v, np.ndarray) for v in ins):
            self.bias_add(nd, ins)
        elif nd.op_type in ("Gemm", "MatMul", "Conv"):
            self.fail(nd, "a float layer in a quantize_dynamic model: ORT runs it with MLAS's float GEMM, whose "
                          "summation order fixq does not reproduce (quantize it too, or run the float model)")
        elif nd.op_type not in _EXACT_FLOAT_OPS:
            self.fail(nd, "this float op is not supported in a quantize_dynamic model: ORT runs it in float32 with "
                          "its own arithmetic, which fixq reproduces only for ReLU, Clip, MaxPool, Flatten, Reshape "
                          "and Add / Mul / Concat of computed tensors")
        else:
            super().visit(nd)

    # -- the groups ---------------------------------------------------------------------------------
    def d_DynamicQuantizeLinear(self, nd, ins):
        t = self.tensor(nd)
        for out, part in zip(nd.output, ("q", "scale", "zp")):
            if out:
                self.env[out] = _Dyn(t, part)

    def dyn(self, nd, i, part, t=None):
        """Input `i` of `nd`: DynamicQuantizeLinear's output `part` (of tensor `t` when given)."""
        v = self.env.get(nd.input[i]) if i < len(nd.input) and nd.input[i] else None
        if not isinstance(v, _Dyn) or v.part != part or (t is not None and v.t is not t) or v.w_scale is not None:
            what = {"q": "quantized values", "scale": "scale", "zp": "zero point"}[part]
            self.fail(nd, f"input {i} must be the {what} of the DynamicQuantizeLinear of its A input")
        return v

    def weight_zp(self, nd, i, w, n):
        zp = self.opt_const(nd, i)
        zp = np.zeros(1, w.dtype) if zp is None else zp
        if zp.dtype != w.dtype or zp.size not in (1, n) or (zp.size > 1 and zp.ndim != 1):
            self.fail(nd, f"its weight zero point of dtype {zp.dtype} and shape {list(zp.shape)} is not a scalar or "
                          f"one per output channel ({n}) of the weights' dtype {w.dtype}")
        return zp.reshape(-1)

    def int_weight(self, nd, i, ndim):
        w = self.const(nd, i, "weights")
        if w.dtype not in (np.int8, np.uint8) or w.ndim != ndim:
            self.fail(nd, f"weights of dtype {w.dtype} and shape {list(w.shape)}; fixq runs int8 or uint8 weights "
                          f"of rank {ndim} (a MatMulInteger's B must be a constant [K, N])")
        return w

    def matmul_acc(self, nd, t, w_input=1, zp_input=3):
        """An _Acc of the linear (weights [N, K]) of MatMul-like node `nd` on float tensor `t`."""
        b = self.int_weight(nd, w_input, 2)
        if len(t.shape) != 2 or t.shape[1] != b.shape[0]:
            self.fail(nd, f"A of shape {list(t.onnx_shape)} by B of shape {list(b.shape)}; fixq has "
                          "[batch, K] x [K, N]")
        return _Acc(t, nd, "linear", np.ascontiguousarray(b.T), self.weight_zp(nd, zp_input, b, b.shape[1]), {})

    def d_MatMulInteger(self, nd, ins):
        q = self.dyn(nd, 0, "q")
        self.dyn(nd, 2, "zp", q.t)
        self.env[nd.output[0]] = self.matmul_acc(nd, q.t)

    def d_ConvInteger(self, nd, ins):
        q = self.dyn(nd, 0, "q")
        self.dyn(nd, 2, "zp", q.t)
        t = q.t
        self._spatial(nd, t, "a 2-D ConvInteger")
        w = self.int_weight(nd, 1, 4)
        strides = list(self.attr(nd, "strides", [1, 1]))
        dil = list(self.attr(nd, "dilations", [1, 1]))
        attrs = dict(stride=strides, padding=self._pads(nd, t, w.shape[2:], strides, dil), dilation=dil,
                     groups=int(self.attr(nd, "group", 1)))
        self.env[nd.output[0]] = _Acc(t, nd, "conv2d", w, self.weight_zp(nd, 3, w, w.shape[0]), attrs)

    def d_Cast(self, nd, ins):
        acc = ins[0]
        if not isinstance(acc, _Acc) or acc.cast or self.attr(nd, "to") != self.onnx.TensorProto.FLOAT:
            self.fail(nd, "only a Cast of MatMulInteger's / ConvInteger's int32 output to float is supported here")
        self.env[nd.output[0]] = _Acc(acc.t, acc.nd, acc.op, acc.w, acc.w_zp, acc.attrs, cast=True)

    def d_Mul(self, nd, ins):
        a, b = ins[:2]
        if isinstance(b, _Dyn) or isinstance(a, np.ndarray):
            a, b = b, a
        if isinstance(a, _Dyn) and a.part == "scale" and a.w_scale is None and isinstance(b, np.ndarray):
            self.env[nd.output[0]] = _Dyn(a.t, "scale", b)  # x_scale * w_scale (ORT's Mul, commutative)
        elif isinstance(a, _Dyn) and a.part == "scale" and isinstance(b, _Acc) and b.cast and b.t is a.t \
                and a.w_scale is not None:
            self.step(nd, b, a.w_scale)
        else:
            self.fail(nd, "a Mul here must be DynamicQuantizeLinear's scale by the weight scale, or the float "
                          "MatMulInteger / ConvInteger output by that product")

    def d_DynamicQuantizeMatMul(self, nd, ins):
        t = self.tensor(nd)
        self.step(nd, self.matmul_acc(nd, t), self.const(nd, 2, "B scale"), self.opt_const(nd, 4))

    def d_MatMulIntegerToFloat(self, nd, ins):
        q = self.dyn(nd, 0, "q")
        self.dyn(nd, 2, "scale", q.t)
        self.dyn(nd, 4, "zp", q.t)
        self.step(nd, self.matmul_acc(nd, q.t, zp_input=5), self.const(nd, 3, "B scale"), self.opt_const(nd, 6))

    def step(self, nd, acc, w_scale, bias=None):
        """The linear / conv2d step of `acc` with weight scale `w_scale` (and float `bias`) as the output of `nd`."""
        w, zp = acc.w, acc.w_zp
        n = w.shape[0]
        t = _Tensor("", (None, n) if acc.op == "linear" else (None, n, 1, 1))
        ws = self.channel_vector(w_scale, t) if np.ndim(w_scale) else np.reshape(w_scale, 1)
        if ws is None or w_scale.dtype != np.float32 or not np.all(np.isfinite(ws) & (ws > 0)):
            self.fail(nd, f"its weight scale of dtype {np.asarray(w_scale).dtype} and shape {list(np.shape(w_scale))} "
                          f"is not positive float32 values, one or one per output channel ({n})")
        ws = ws.astype(np.float32)
        if ws.size != zp.size:
            ws, zp = np.broadcast_to(ws, (n,)).copy(), np.broadcast_to(zp, (n,)).copy()
        shape = (-1,) + (1,) * (w.ndim - 1)
        wf = (w.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * ws.reshape(shape)
        keep = self.env.get(acc.nd.output[0])
        out = self.add_node(acc.nd, acc.op, [acc.t], {"weight": wf}, **acc.attrs)
        self.env[acc.nd.output[0]] = keep
        self.env[nd.output[0]] = out
        qw, qzp = _int8_weights(w, zp)
        self.qweights[out.name] = {"weight": np.ascontiguousarray(qw), "weight_scale": ws, "weight_zero_point": qzp,
                                   "bias": None}
        if bias is not None:
            self.set_bias(nd, out, bias)

    def set_bias(self, nd, t, c):
        vec = self.channel_vector(c, t)
        if c.dtype != np.float32 or vec is None:
            self.fail(nd, f"a bias of dtype {c.dtype} and shape {list(c.shape)} is not float32 per output channel")
        b = vec.astype(np.float32)  # float32 -> float64 -> float32: the file's values
        self.qweights[t.name]["bias"] = b
        self.weights[t.name + ".bias"] = b

    def bias_add(self, nd, ins):
        """The float bias after a group: an Add of a per-channel constant to the step's output, read by nothing
        else and the step's first one (ORT adds it in float32 once, as the step's epilogue does)."""
        t = next((v for v in ins[:2] if isinstance(v, _Tensor)), None)
        spec = None if t is None else self.foldable_producer(nd, t)
        if nd.op_type != "Add" or spec is None or spec["name"] not in self.qweights \
                or self.qweights[spec["name"]]["bias"] is not None:
            self.fail(nd, f"{nd.op_type} of a constant is supported in a quantize_dynamic model only as the float "
                          "bias Add of a MatMulInteger / ConvInteger group, its only reader")
        self.set_bias(nd, t, next(v for v in ins[:2] if isinstance(v, np.ndarray)))
        self.env[nd.output[0]] = t

    # -- the model ----------------------------------------------------------------------------------
    def run(self):
        g = super().run()
        steps = plan_steps(g)
        if not self.qweights:
            raise OnnxError(f"model: no MatMulInteger, ConvInteger or DynamicQuantizeMatMul group ({DOCS})")
        arrays = {}
        for s in steps:
            if s["op"] in G.WEIGHTED:
                q = self.qweights[s["name"]]
                s["weight_shape"] = list(q["weight"].shape)
                n = q["weight"].shape[0]
                arrays.update({f"{s['name']}:{k}": v for k, v in q.items() if k != "bias"})
                arrays[f"{s['name']}:bias"] = np.zeros(n, np.float32) if q["bias"] is None else q["bias"]
        meta = {
            "format": QMODEL_FORMAT, "fixq_version": VERSION,
            "options": {"method": None, "per_channel": any(q["weight_scale"].size > 1 for q in self.qweights.values()),
                        "weights": "int8", "activations": "uint8", "dynamic": True, "rounding": "double",
                        "method_options": {}, "target": "onnxruntime"},
            "graph": g.spec, "input": g.input, "input_shape": list(g.input_shape), "outputs": list(g.outputs),
            "tensors": {t: list(g.shapes[t]) for t in [g.input] + [s["output"] for s in steps]}, "steps": steps,
        }
        try:  # the one validator of quantized archives (Model.load, fixq inspect)
            check_archive(meta, arrays, "model")
        except ArchiveError as e:
            raise OnnxError(f"{e} ({DOCS})") from None
        return Model(meta, arrays)


def is_dynamic(model):
    return any(n.op_type in DYNAMIC_OPS for n in model.graph.node)


def import_dynamic(model, constants=None):
    return _DynImporter(model, constants).run()
