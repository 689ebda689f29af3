"""Quantized ONNX models -> fixq int8 models (``fixq.qmodel/1``, target ``onnxruntime``; docs/onnx.md).

Both formats ONNX Runtime's quantizer writes are read into the graph ORT's CPU session actually runs
with its default graph optimizations: QOperator nodes (QLinearConv, QLinearMatMul, QGemm, QLinearAdd,
...) map to fixq steps one to one; in QDQ form, each float op whose inputs are DequantizeLinear views
and whose output goes through a QuantizeLinear is one step (ORT's QDQ selector-action fusion makes it
the same QLinear kernel), and the DequantizeLinear / QuantizeLinear pairs around MaxPool, Flatten and
Reshape with equal scales are dropped (ORT's drop-QDQ rule).  The model's own scales, zero points,
int8 weights and int32 biases are kept as they are.
"""
import numpy as np

from .. import graph as G
from .._core import VERSION
from ..archive import QMODEL_FORMAT, ArchiveError, check_archive
from ..arith import quantize_multiplier
from ..engine import Model
from ..quantizer import batchnorm_table
from .onnx import BATCH, DOCS, _Importer, _Tensor
from .onnx_dynamic import DYNAMIC_OPS, import_dynamic, is_dynamic
from .onnx_file import OnnxError

# ONNX ops that only a quantized model holds
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd",
             "QLinearMul", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearAveragePool", "QLinearSigmoid",
             "QLinearLeakyRelu", "QLinearSoftmax") + DYNAMIC_OPS


class _Q:
    """A quantized fixq tensor: its name, NCHW shape (batch None), scale and zero point."""
    __slots__ = ("name", "shape", "scale", "zp", "squeezed")

    def __init__(self, name, shape, scale, zp, squeezed=False):
        self.name, self.shape, self.scale, self.zp, self.squeezed = name, tuple(shape), scale, zp, squeezed

    @property
    def onnx_shape(self):
        return self.shape + (1, 1) if self.squeezed else self.shape


class _DQ:
    """The float view (DequantizeLinear) of a quantized tensor; `moved` when ORT's QDQ propagation put it
    there (after a MaxPool / Reshape / Squeeze)."""
    __slots__ = ("q", "moved")

    def __init__(self, q, moved=False):
        self.q, self.moved = q, moved


class _CQ:
    """A DequantizeLinear of a constant integer tensor (QDQ weights and biases)."""
    __slots__ = ("q", "scale", "zp", "axis")

    def __init__(self, q, scale, zp, axis):
        self.q, self.scale, self.zp, self.axis = q, scale, zp, axis


class _InputView:
    """Flatten / Reshape / Identity of the float model input before its QuantizeLinear (quantizing is
    elementwise, so they run on the quantized input instead)."""
    __slots__ = ("chain",)

    def __init__(self, chain):
        self.chain = chain


class _Pending:
    """A float op on DequantizeLinear views, waiting for the QuantizeLinear that makes it one int8 step."""
    __slots__ = ("nd",)

    def __init__(self, nd):
        self.nd = nd


_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Identity", "Dropout", "Squeeze")
_TABLES = {"Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu", "Tanh": "tanh", "HardSigmoid": "hardsigmoid",
           "HardSwish": "hardswish"}
_QDQ_FLOAT_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "GlobalAveragePool", "AveragePool", "Concat", "Softmax",
                  "Relu", "BatchNormalization") + tuple(_TABLES) + _PASS_THROUGH
# ORT's QDQPropagationTransformer (CanNodePropagate): a DequantizeLinear read by nothing but one of these
# ops moves after it, for the op versions listed there (opset ranges [first, end))
_DQ_PROPAGATES = {"MaxPool": (12, 22), "Reshape": (5, 21), "Squeeze": (1, 21)}

# MLAS MlasLogisticConstants (Eigen's rational approximation of the logistic function)
_LOGISTIC_ALPHA = np.array([4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                            8.51377133304701e-03, 2.48287947061529e-01], np.float32)
_LOGISTIC_BETA = np.array([6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                           1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01], np.float32)


def _fma32(a, b, c):
    """float32 fused multiply-add a * b + c rounded once: the float32 product is exact in float64, the
    float64 sum is rounded to odd (TwoSum's error picks the odd neighbour) so that its rounding to
    float32 is the correctly rounded result."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(np.int64) & 1) == 0
    s = np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def _horner_fma(x2, coeffs):
    """MLAS's polynomial in x^2, highest coefficient first, one fused multiply-add a step (float32; the
    product's operand order does not change a fused result)."""
    p = _fma32(x2, np.float32(coeffs[0]), coeffs[1])
    for c in coeffs[2:]:
        p = _fma32(x2, p, c)
    return p


def _mlas_logistic(x):
    """MLAS MlasLogisticKernelFma3 (x86-64 with FMA3): x clamped to [-18, 18], p and q by fused
    multiply-adds in x^2, then max(0, x * p / q + 0.5), all in float32."""
    x = np.clip(x, np.float32(-18), np.float32(18)).astype(np.float32)
    x2 = x * x
    p, q = _horner_fma(x2, _LOGISTIC_ALPHA), _horner_fma(x2, _LOGISTIC_BETA)
    return np.maximum(np.float32(0), (x * p) / q + np.float32(0.5))


# MLAS MlasTanhConstants (Eigen's rational approximation of tanh): odd numerator, even denominator
_TANH_ALPHA = np.array([-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                        1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03], np.float32)
_TANH_BETA = np.array([1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03],
                      np.float32)


def _mlas_tanh(x):
    """MLAS MlasTanhKernel (x86-64: its FMA3 form): x clamped to [-9, 9], p and q by fused multiply-adds in
    x^2, then x * p / q, all in float32."""
    x = np.clip(x, np.float32(-9), np.float32(9)).astype(np.float32)
    x2 = x * x
    p, q = _horner_fma(x2, _TANH_ALPHA), _horner_fma(x2, _TANH_BETA)
    return (p * x) / q


def _hardsigmoid(x, alpha, beta):
    """ORT HardSigmoid (float32): max(0, min(1, alpha * x + beta)), the product and the sum each rounded."""
    return np.maximum(np.float32(0), np.minimum(np.float32(1), np.float32(alpha) * x + np.float32(beta)))


def _ort_function(op, x, a):
    """The float32 function ORT applies to dequantized values `x` for table op `op` (attributes `a`)."""
    if op == "sigmoid":
        return _mlas_logistic(x)
    if op == "leaky_relu":
        return np.where(x >= 0, x, np.float32(a["alpha"]) * x)
    if op == "tanh":
        return _mlas_tanh(x)
    if op == "hardsigmoid":
        return _hardsigmoid(x, a["alpha"], a["beta"])
    # HardSwish: ORT expands its function body, x * HardSigmoid(x, alpha = 1/6, beta = 1/2), in float32
    return x * _hardsigmoid(x, np.float32(1 / 6), 0.5)


def _ort_table(op, a, s_in, zp_in, s_out, zp_out, dt):
    """ORT's arithmetic for a table op on each of the 256 input bytes: the value dequantized as
    X_scale * (q - zp) in float32, the function in float32, then MlasQuantizeLinear (float32 division, ties
    to even).  QLinearSigmoid / QLinearLeakyRelu build this table themselves (QlinearBuildLookupTable);
    Tanh, HardSigmoid and HardSwish between DequantizeLinear and QuantizeLinear stay float ops in ORT's
    optimized graph, and as their input holds 256 values the table is their result on every input."""
    dt = np.dtype(dt)
    q = np.arange(256, dtype=np.uint8).view(dt).astype(np.int32)
    x = np.float32(s_in) * (q - zp_in).astype(np.float32)
    y = _ort_function(op, x, a).astype(np.float32)
    info = np.iinfo(dt)
    return np.clip(np.rint(y / np.float32(s_out)) + zp_out, info.min, info.max).astype(dt)


def _real_requant(real):
    real = np.asarray(real, dtype=np.float64).reshape(-1)
    m, s = quantize_multiplier(real)
    return m.astype(np.int32), s.astype(np.int32), real.astype(np.float32)


class _QImporter(_Importer):
    def __init__(self, model, constants):
        super().__init__(model, constants)
        self.steps, self.arrays, self.tensors = [], {}, {}
        self.act_dtype = None
        self.per_channel = False
        self.input_q = None
        self.q_outputs, self.dq_reads = set(), {}

    # -- records ---------------------------------------------------------------------------------------
    def qparams(self, nd, s_i, z_i):
        s = self.const(nd, s_i, "scale")
        z = self.opt_const(nd, z_i)
        z = np.zeros((), np.uint8) if z is None else z
        if s.size != 1 or z.size != 1:
            self.fail(nd, "per-axis activation scales are not supported")
        if z.dtype not in (np.int8, np.uint8):
            self.fail(nd, f"zero point of dtype {z.dtype}; fixq runs int8 and uint8 activations")
        if self.act_dtype is None:
            self.act_dtype = z.dtype
        elif z.dtype != self.act_dtype:
            self.fail(nd, f"mixes {self.act_dtype} and {z.dtype} activations; fixq runs one activation type")
        return np.float32(s.reshape(())), int(z.reshape(()))

    def tensor_record(self, name, shape, scale, zp):
        self.tensors[name] = [None] + [int(d) for d in shape[1:]]
        self.arrays[f"t:{name}:scale"] = np.float32(scale)
        self.arrays[f"t:{name}:zero_point"] = np.int32(zp)

    def step(self, nd, op, ins, scale, zp, attrs=None, weight=None, w_scale=None, bias=None, squeezed=False):
        """One fixq step for ONNX node `nd`: its shape from fixq.graph's rules, its keys in the archive."""
        attrs = dict(attrs or {})
        name = self._name(nd.name or nd.output[0], op)
        wts = {}
        if weight is not None:
            wts[name + ".weight"] = weight.astype(np.float32)
        node = G.Node(name, op, [q.name for q in ins], {k: attrs.get(k, d) for k, d in G.OPS[op][1].items()})
        try:
            shape = G.ops.infer_shape(node, [q.shape for q in ins], wts, {}, set())
        except G.GraphError as e:
            self.fail(nd, str(e))
        s = {"name": name, "op": op, "inputs": [q.name for q in ins], "output": name, "act": None}
        a = node.attrs
        if op == "conv2d":
            s.update(stride=list(a["stride"]), padding=list(a["padding"]), dilation=list(a["dilation"]),
                     groups=a["groups"], depthwise=G.is_depthwise(node, ins[0].shape[1]))
        elif op in ("maxpool2d", "avgpool2d"):
            s.update(kernel=list(a["kernel"]), stride=list(a["stride"]), padding=list(a["padding"]))
        elif op in ("concat", "softmax"):
            s["axis"] = a["axis"]
        elif op in G.TABLE_OPS:
            s.update(a)
            self.arrays[f"{name}:table"] = _ort_table(op, a, ins[0].scale, ins[0].zp, scale, zp, self.act_dtype)
        elif op == "batchnorm":
            s.update(scale=a["scale"], shift=a["shift"])
            self.arrays[f"{name}:table"] = batchnorm_table(a["scale"], a["shift"], ins[0].scale, ins[0].zp, scale, zp,
                                                           self.act_dtype)
        if weight is not None:
            if weight.dtype != np.int8:
                self.fail(nd, f"weights of dtype {weight.dtype}; fixq runs int8 weights")
            o = weight.shape[0]
            ws = np.asarray(w_scale, np.float32).reshape(-1)
            if ws.size not in (1, o):
                self.fail(nd, f"{ws.size} weight scales for {o} output channels")
            self.per_channel |= ws.size > 1
            s["weight_shape"] = list(weight.shape)
            b = np.zeros(o, np.int32) if bias is None else np.asarray(bias)
            if b.dtype != np.int32 or b.shape != (o,):
                self.fail(nd, f"bias of dtype {b.dtype} and shape {list(b.shape)}; fixq needs int32 [{o}]")
            self.arrays[f"{name}:weight"] = np.ascontiguousarray(weight)
            self.arrays[f"{name}:weight_scale"] = ws
            self.arrays[f"{name}:weight_zero_point"] = np.zeros(ws.size, np.int32)
            self.arrays[f"{name}:bias"] = np.ascontiguousarray(b)
            real = np.float64(ins[0].scale) * ws.astype(np.float64) / np.float64(scale)
            (self.arrays[f"{name}:multiplier"], self.arrays[f"{name}:shift"],
             self.arrays[f"{name}:scale"]) = _real_requant(real)
        elif op == "global_avgpool":
            h, w = ins[0].shape[2:]
            m, sh, _ = _real_requant([np.float64(ins[0].scale) / (np.float64(scale) * (h * w))])
            # MLAS QLinearGlobalAveragePool: ScaleInput / (ScaleOutput * (float)ImageSize) in float32
            sc = np.float32(ins[0].scale) / np.float32(np.float32(scale) * np.float32(h * w))
            self.arrays[f"{name}:multiplier"], self.arrays[f"{name}:shift"] = m, sh
            self.arrays[f"{name}:scale"] = np.array([sc], np.float32)
        elif op == "concat":
            (self.arrays[f"{name}:multiplier"], self.arrays[f"{name}:shift"],
             self.arrays[f"{name}:scale"]) = _real_requant([np.float64(q.scale) / np.float64(scale) for q in ins])
        self.steps.append(s)
        self.tensor_record(name, shape, scale, zp)
        out = _Q(name, shape, scale, zp, squeezed)
        self.env[nd.output[0]] = out
        return out

    # -- the walk ----------------------------------------------------------------------------------------
    def visit(self, nd):
        ins = self.inputs(nd, ("", "ai.onnx", "com.microsoft"))
        if ins is None:
            return
        handler = getattr(self, "q_" + nd.op_type, None)
        if handler is not None:
            handler(nd)
        elif (isinstance(ins[0], _DQ) and (ins[0].moved or self.uses.get(nd.input[0]) == 1)
              and self.opset in range(*_DQ_PROPAGATES.get(nd.op_type, (0, 0)))):
            # PropagateDQForward: the DequantizeLinear itself read once, then past every reader of the op
            q = ins[0].q
            self.pass_through(nd, q, q.scale, q.zp)
            self.env[nd.output[0]] = _DQ(self.env[nd.output[0]], moved=True)
        elif nd.op_type in _QDQ_FLOAT_OPS and any(isinstance(v, (_DQ, _Pending)) for v in ins):
            self.env[nd.output[0]] = _Pending(nd)
        elif nd.op_type in ("Flatten", "Reshape", "Identity", "Squeeze") and isinstance(ins[0], (_Tensor,
                                                                                             _InputView)):
            self.env[nd.output[0]] = _InputView((ins[0].chain if isinstance(ins[0], _InputView) else []) + [nd])
        elif nd.op_type in _PASS_THROUGH and isinstance(ins[0], _Q):
            self.pass_through(nd, ins[0], ins[0].scale, ins[0].zp)
        elif nd.op_type in QUANT_OPS:
            self.fail(nd, "this quantized op is not supported yet")
        elif nd.op_type == "BatchNormalization":
            self.fail(nd, "a BatchNormalization of a float tensor (not a DequantizeLinear): ORT runs it in float32 "
                          "before quantizing, which fixq does not import; fold it into the Conv / Gemm next to it "
                          "before quantizing (torch.onnx.export's default after a Conv, or quant_pre_process)")
        else:
            self.fail(nd, "this op is not supported in a quantized model")

    def run(self):
        self.walk(self.visit)
        outputs = []
        for name in self.graph_outputs:
            v = self.env.get(name)
            if isinstance(v, _Pending) and v.nd.op_type == "Softmax":
                v = _DQ(self.softmax(v.nd))
            if not isinstance(v, _DQ) or v.q.name == self.input_name:
                raise OnnxError(f"output {name!r}: is not the DequantizeLinear of a computed int8 tensor; fixq's "
                                f"int8 models output dequantized int8 tensors ({DOCS})")
            outputs.append(v.q.name)
        if self.input_q is None:
            raise OnnxError(f"input {self.input_name!r}: no QuantizeLinear reads it ({DOCS})")
        self.tensor_record(self.input_name, self.input_shape, self.input_q[0], self.input_q[1])
        if self.act_dtype == np.int8 and self.q_outputs and all(
                self.uses.get(t) == 1 and self.dq_reads.get(t) == 1 for t in self.q_outputs):
            self.to_uint8()
        meta = {
            "format": QMODEL_FORMAT, "fixq_version": VERSION,
            "options": {"method": "onnx", "per_channel": self.per_channel, "weights": "int8",
                        "activations": np.dtype(self.act_dtype).name, "dynamic": False, "rounding": "fp32",
                        "method_options": {}, "target": "onnxruntime"},
            "graph": {"format": G.GRAPH_FORMAT, "inputs": [{"name": self.input_name,
                                                           "shape": list(self.input_shape)}],
                      "nodes": [{"name": s["name"], "op": s["op"], "inputs": s["inputs"]} for s in self.steps],
                      "outputs": outputs},
            "input": self.input_name, "input_shape": list(self.input_shape), "outputs": outputs,
            "tensors": dict({self.input_name: [None] + list(self.input_shape[1:])},
                            **{k: v for k, v in self.tensors.items() if k != self.input_name}),
            "steps": self.steps,
        }
        try:  # the one validator of quantized archives (Model.load, fixq inspect)
            check_archive(meta, self.arrays, "model")
        except ArchiveError as e:
            raise OnnxError(f"{e} ({DOCS})") from None
        return Model(meta, self.arrays)

    def to_uint8(self):
        """ORT's QDQS8ToU8Transformer: every int8 QuantizeLinear read by one DequantizeLinear only becomes
        uint8 with its zero point + 128, so ORT's kernels run this model on uint8 activations.  The same
        values, but the kernels that add the zero point in float before rounding (QLinearAdd, QLinearMul,
        QLinearAveragePool) can round differently with it: fixq runs the uint8 model ORT runs."""
        self.act_dtype = np.dtype(np.uint8)
        flip = np.arange(256) ^ 0x80  # the int8 table's entry for uint8 byte b is at byte b ^ 0x80
        for k in list(self.arrays):
            if k.startswith("t:") and k.endswith(":zero_point"):
                self.arrays[k] = np.int32(self.arrays[k] + 128)
            elif k.endswith(":table"):
                self.arrays[k] = self.arrays[k].view(np.uint8)[..., flip] ^ np.uint8(0x80)

    # -- boundaries ---------------------------------------------------------------------------------------
    def q_QuantizeLinear(self, nd):
        x = self.env[nd.input[0]]
        if isinstance(x, np.ndarray):
            s = self.const(nd, 1, "scale")
            z = self.opt_const(nd, 2)
            z = np.zeros((), np.uint8) if z is None else z
            info = np.iinfo(z.dtype)
            axis = self.attr(nd, "axis", 1)
            shape = [1] * x.ndim
            if s.size > 1:
                shape[axis] = -1
            q = np.rint(x.astype(np.float32) / s.astype(np.float32).reshape(shape)) + z.astype(np.int64).reshape(shape)
            self.env[nd.output[0]] = np.clip(q, info.min, info.max).astype(z.dtype)
            return
        scale, zp = self.qparams(nd, 1, 2)
        self.q_outputs.add(nd.output[0])
        if isinstance(x, (_Tensor, _InputView)):
            if self.input_q is not None and self.input_q != (scale, zp):
                self.fail(nd, "the input is quantized twice with different scales")
            self.input_q = (scale, zp)
            q = _Q(self.input_name, self.input_shape, scale, zp)
            for view in (x.chain if isinstance(x, _InputView) else []):
                self.env[view.input[0]] = q
                self.pass_through(view, q, scale, zp)
                q = self.env[view.output[0]]
            self.env[nd.output[0]] = q
        elif isinstance(x, _DQ):
            if (x.q.scale, x.q.zp) != (scale, zp):
                self.fail(nd, "requantizes a tensor to another scale on its own; fixq requantizes in its ops")
            self.env[nd.output[0]] = x.q
        elif isinstance(x, _Pending):
            self.materialize(x.nd, scale, zp, nd)
        else:
            self.fail(nd, "input 0 must be the model's input or a float op on dequantized tensors")

    def q_DequantizeLinear(self, nd):
        x = self.env[nd.input[0]]
        if isinstance(x, np.ndarray):
            s = self.const(nd, 1, "scale")
            z = self.opt_const(nd, 2)
            z = np.zeros(1, x.dtype) if z is None else z
            self.env[nd.output[0]] = _CQ(x, s, z, self.attr(nd, "axis", 1))
        elif isinstance(x, _Q):
            scale, zp = self.qparams(nd, 1, 2)
            self.dq_reads[nd.input[0]] = self.dq_reads.get(nd.input[0], 0) + 1
            if (scale, zp) != (x.scale, x.zp):
                self.fail(nd, "dequantizes with other parameters than its tensor was quantized with")
            self.env[nd.output[0]] = _DQ(x)
        else:
            self.fail(nd, "input 0 must be a quantized tensor or an integer constant")

    def q_Shape(self, nd):
        x = self.env[nd.input[0]]
        shape = x.q.onnx_shape if isinstance(x, _DQ) else x.onnx_shape if isinstance(x, (_Q, _Tensor)) else None
        if shape is None:
            self.fail(nd, "Shape of this input is not supported")
        y = np.empty(len(shape), dtype=object)
        y[:] = [BATCH if d is None else d for d in shape]
        self.env[nd.output[0]] = y[self.attr(nd, "start", 0):self.attr(nd, "end", None)]

    # -- steps ------------------------------------------------------------------------------------------
    def weight_of(self, nd, cq, axis_ok):
        """int8 weights, their scales (zero points must be 0) from a _CQ (QDQ)."""
        if not isinstance(cq, _CQ):
            self.fail(nd, "its weight must be the DequantizeLinear of an int8 constant")
        if np.any(np.asarray(cq.zp) != 0):
            self.fail(nd, "weight zero points other than 0 are not supported (fixq runs symmetric weights)")
        if np.asarray(cq.scale).size > 1 and cq.axis % cq.q.ndim != axis_ok:
            self.fail(nd, f"per-axis weight scales on axis {cq.axis}; fixq has per-output-channel scales")
        return cq.q, np.asarray(cq.scale, np.float32).reshape(-1)

    def bias_of(self, nd, cq, s_in, ws):
        if cq is None:
            return None
        if isinstance(cq, np.ndarray) and cq.dtype == np.float32 and cq.ndim == 1 and nd.op_type in ("Conv", "Gemm"):
            # a float bias (PyTorch QAT exports): ORT's WeightBiasQuantization makes it
            # Cast<int32>(Round(bias / (input_scale * weight_scale))), all in float32, ties to even
            b = np.rint(cq / (np.float32(s_in) * ws.astype(np.float32)))
            if not np.all(np.abs(b) < 2.0 ** 31):
                self.fail(nd, "its float bias overflows int32 at scale input_scale * weight_scale")
            return b.astype(np.int32)
        if not isinstance(cq, _CQ) or cq.q.dtype != np.int32:
            self.fail(nd, "its bias must be a float32 constant or the DequantizeLinear of an int32 constant")
        return cq.q.reshape(-1)

    def conv_attrs(self, nd, q, w):
        fake = _Tensor(q.name, q.shape)
        strides = list(self.attr(nd, "strides", [1, 1]))
        dil = list(self.attr(nd, "dilations", [1, 1]))
        return dict(stride=strides, padding=self._pads(nd, fake, w.shape[2:], strides, dil), dilation=dil,
                    groups=int(self.attr(nd, "group", 1)))

    def q_input(self, nd, i):
        v = self.env.get(nd.input[i])
        if isinstance(v, _DQ):
            return v.q
        if isinstance(v, _Pending):
            self.fail(nd, f"input {i} is the float output of {v.nd.op_type} node {v.nd.name!r}, not a "
                          "DequantizeLinear, so ORT runs this node in float; fixq runs int8 ops (quantize that "
                          "output, or use Reshape / view, which ORT moves the DequantizeLinear past, for Flatten)")
        if not isinstance(v, _Q):
            self.fail(nd, f"input {i} must be a quantized tensor")
        return v

    def materialize(self, nd, scale, zp, qnode):
        """The int8 step ORT's QDQ fusion makes of float node `nd` with output quantization (scale, zp)."""
        op = nd.op_type
        ins = [self.env.get(t) if t else None for t in nd.input]
        if op == "Relu":  # ORT's ReluQuantFusion: Relu before a QuantizeLinear that clamps at 0 anyway
            src = ins[0]
            if zp != np.iinfo(self.act_dtype).min:
                self.fail(nd, "a Relu before a QuantizeLinear whose zero point is not the type's minimum: ORT "
                              "runs the op before it in float; fixq runs int8 ops")
            if isinstance(src, _Pending) and self.uses.get(nd.input[0]) == 1:
                return self.materialize(src.nd, scale, zp, qnode)
            q = self.q_input(nd, 0)
            if (q.scale, q.zp) != (scale, zp):
                self.fail(nd, "Relu between different scales; ORT keeps it in float here, fixq does not")
            self.env[qnode.output[0]] = q
        elif op == "Conv":
            q = self.q_input(nd, 0)
            w, ws = self.weight_of(nd, ins[1], 0)
            b = self.bias_of(nd, ins[2] if len(ins) > 2 else None, q.scale, ws)
            self.step(qnode, "conv2d", [q], scale, zp, self.conv_attrs(nd, q, w), w, ws, b)
        elif op in ("Gemm", "MatMul"):
            q = self.q_input(nd, 0)
            if op == "Gemm" and (self.attr(nd, "transA", 0) or self.attr(nd, "alpha", 1.0) != 1.0):
                self.fail(nd, "a quantized Gemm with transA or alpha is not supported")
            trans = op == "Gemm" and self.attr(nd, "transB", 0)
            w, ws = self.weight_of(nd, ins[1], 0 if trans else 1)
            b = self.bias_of(nd, ins[2] if len(ins) > 2 else None, q.scale, ws)
            self.step(qnode, "linear", [q], scale, zp, None, w if trans else np.ascontiguousarray(w.T), ws, b)
        elif op in ("Add", "Mul"):
            a, b = self.q_input(nd, 0), self.q_input(nd, 1)
            self.step(qnode, op.lower(), [a, b], scale, zp, squeezed=a.squeezed)
        elif op == "GlobalAveragePool":
            self.step(qnode, "global_avgpool", [self.q_input(nd, 0)], scale, zp, squeezed=True)
        elif op in _TABLES:  # Sigmoid, LeakyRelu: ORT fuses them into QLinearSigmoid / QLinearLeakyRelu
            self._lookup(qnode, nd, self.q_input(nd, 0), op, scale, zp)
        elif op == "Concat":  # ORT fuses it into QLinearConcat
            qs = [self.q_input(nd, i) for i in range(len(nd.input))]
            axis = self.attr(nd, "axis") % len(qs[0].onnx_shape)
            self.step(qnode, "concat", qs, scale, zp, {"axis": axis}, squeezed=qs[0].squeezed)
        elif op == "AveragePool":  # ORT fuses it into QLinearAveragePool
            self.avgpool(nd, self.q_input(nd, 0), scale, zp, qnode.output[0])
        elif op == "BatchNormalization":  # ORT keeps it a float op between the DequantizeLinear and QuantizeLinear
            self.batchnorm(qnode, nd, self.q_input(nd, 0), scale, zp)
        elif op == "Softmax":  # ORT fuses it into QLinearSoftmax
            self.softmax(nd, (scale, zp))
            self.env[qnode.output[0]] = self.env.pop(nd.output[0])
        elif op in _PASS_THROUGH:
            src = self.env.get(nd.input[0])
            if isinstance(src, _Pending):
                self.fail(nd, "a chain of float ops between quantized tensors is not supported")
            q = self.q_input(nd, 0)
            if (q.scale, q.zp) != (scale, zp):
                self.fail(nd, f"{op} between different scales; ORT keeps it in float here, fixq does not")
            self.pass_through(nd, q, scale, zp, out=qnode.output[0])
        else:
            self.fail(nd, "this float op between quantized tensors is not supported")

    def float_const(self, nd, i, what):
        """Input `i` of `nd` as float32 values: a float constant, or the DequantizeLinear of an integer constant
        computed as ORT's kernel does, (float)(q - zp) * scale along its axis."""
        v = self.env.get(nd.input[i]) if i < len(nd.input) else None
        if isinstance(v, _CQ):
            shape = [1] * v.q.ndim
            if np.size(v.scale) > 1:
                shape[v.axis % v.q.ndim] = -1
            zp = np.asarray(v.zp, np.int64).reshape(shape if np.size(v.zp) > 1 else [])
            return (v.q.astype(np.int64) - zp).astype(np.float32) * np.asarray(v.scale, np.float32).reshape(
                shape if np.size(v.scale) > 1 else [])
        v = self.const(nd, i, what)
        if v.dtype != np.float32:
            self.fail(nd, f"its {what} has dtype {v.dtype}; ORT's BatchNormalization takes float32")
        return v

    def batchnorm(self, qnode, nd, q, scale, zp):
        """DequantizeLinear -> BatchNormalization -> QuantizeLinear, which ORT runs unfused: a batchnorm step whose
        per-channel tables are ORT's float32 arithmetic (onnxruntime/core/providers/cpu/nn/batch_norm.h):
        inv_std = 1 / sqrt(var + epsilon), new_scale = inv_std * scale, new_bias = B - mean * new_scale."""
        if self.attr(nd, "training_mode", 0) or not self.attr(nd, "spatial", 1):
            self.fail(nd, "training_mode=1 and spatial=0 are not supported")
        c = q.onnx_shape[1] if len(q.onnx_shape) in (2, 4) else None
        p = [self.float_const(nd, i, w).reshape(-1) for i, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
        if c is None or any(v.size != c for v in p):
            self.fail(nd, f"input of shape {list(q.onnx_shape)} and parameters of sizes {[v.size for v in p]}; fixq "
                          "normalizes axis 1 of [N, C] or [N, C, H, W]")
        s, b, mean, var = p
        inv_std = np.float32(1) / np.sqrt(var + np.float32(self.attr(nd, "epsilon", 1e-5)))
        new_scale = inv_std * s
        new_bias = b - mean * new_scale
        if not (np.all(np.isfinite(new_scale)) and np.all(np.isfinite(new_bias))):
            self.fail(nd, "its folded scale or shift is not finite (a variance + epsilon of 0 or below?)")
        self.step(qnode, "batchnorm", [q], scale, zp, {"scale": new_scale.tolist(), "shift": new_bias.tolist()},
                  squeezed=q.squeezed)

    def pass_through(self, nd, q, scale, zp, out=None, op=None):
        """MaxPool / Flatten / Reshape / Identity on a quantized tensor (its scale and zero point kept), or the
        float importer's reading of ONNX op `op` (AveragePool) with output quantization (scale, zp)."""
        out = out or nd.output[0]
        op = op or nd.op_type
        if op in ("Identity", "Dropout"):
            self.env[out] = q
            return
        fake = _Tensor(q.name, q.shape, q.squeezed)
        saved = self.env.get(nd.output[0])
        self.env[nd.input[0]], keep = fake, self.env[nd.input[0]]
        self.spec_nodes = []
        getattr(self, "op_" + op)(nd)
        self.env[nd.input[0]] = keep
        res = self.env[nd.output[0]]
        if self.spec_nodes:  # a fixq node: flatten or a pool
            spec = self.spec_nodes[0]
            attrs = {k: v for k, v in spec.items() if k not in ("name", "op", "inputs")}
            self.names.discard(spec["name"])
            self.env[nd.output[0]] = saved
            self.step(nd, spec["op"], [q], scale, zp, attrs, squeezed=res.squeezed)
            if out != nd.output[0]:
                self.env[out] = self.env.pop(nd.output[0])
        else:
            self.env[out] = _Q(q.name, res.shape, scale, zp, res.squeezed)

    def softmax(self, nd, out=None, opset=None):
        """The softmax step of Softmax / QLinearSoftmax node `nd` (softmax opset `opset`): with `out`, the
        output's (scale, zero point) and ORT's QLinearSoftmax arithmetic (the step marked ``quantized``); else
        float on the dequantized input, the step's output at the input's quantization."""
        q = self.q_input(nd, 0)
        rank, opset = len(q.onnx_shape), opset or self.opset
        axis = self.attr(nd, "axis", -1 if opset >= 13 else 1) % rank
        if opset < 13 and any(d != 1 for d in q.onnx_shape[axis + 1:]):
            self.fail(nd, "a softmax before opset 13 over the flattened axes from axis on is supported only when "
                          "they are the last axis")
        scale, zp = out or (q.scale, q.zp)
        out_q = self.step(nd, "softmax", [q], scale, zp, {"axis": 1 if q.squeezed else axis}, squeezed=q.squeezed)
        if out is not None:
            self.steps[-1]["quantized"] = True
        return out_q

    def q_QLinearSoftmax(self, nd):
        self.softmax(nd, self.qparams(nd, 3, 4), int(self.attr(nd, "opset", self.opset)))

    # -- QOperator ---------------------------------------------------------------------------------------
    def _qop_weight(self, nd, i, axis_ok):
        w = self.const(nd, i, "weight")
        ws = self.const(nd, i + 1, "weight scale")
        wz = self.opt_const(nd, i + 2)
        return self.weight_of(nd, _CQ(w, ws, np.zeros(1) if wz is None else wz, axis_ok), axis_ok)

    def q_QLinearConv(self, nd):
        q = self.q_input(nd, 0)
        w, ws = self._qop_weight(nd, 3, 0)
        scale, zp = self.qparams(nd, 6, 7)
        b = self.opt_const(nd, 8)
        self.step(nd, "conv2d", [q], scale, zp, self.conv_attrs(nd, q, w), w, ws,
                  None if b is None else b.reshape(-1))

    def q_QLinearMatMul(self, nd):
        q = self.q_input(nd, 0)
        w, ws = self._qop_weight(nd, 3, 1)
        scale, zp = self.qparams(nd, 6, 7)
        self.step(nd, "linear", [q], scale, zp, None, np.ascontiguousarray(w.T), ws)

    def q_QGemm(self, nd):
        q = self.q_input(nd, 0)
        if self.attr(nd, "transA", 0) or self.attr(nd, "alpha", 1.0) != 1.0:
            self.fail(nd, "transA or alpha is not supported")
        trans = self.attr(nd, "transB", 0)
        w, ws = self._qop_weight(nd, 3, 0 if trans else 1)
        if len(nd.input) < 8 or not nd.input[7]:
            self.fail(nd, "a QGemm with a float output is not supported")
        scale, zp = self.qparams(nd, 7, 8)
        b = self.opt_const(nd, 6)
        self.step(nd, "linear", [q], scale, zp, None, w if trans else np.ascontiguousarray(w.T), ws,
                  None if b is None else b.reshape(-1))

    def _qbinary(self, nd, op):
        a, b = self.q_input(nd, 0), self.q_input(nd, 3)
        if a.onnx_shape != b.onnx_shape:
            self.fail(nd, "inputs of different shapes; fixq's add and mul need equal shapes")
        scale, zp = self.qparams(nd, 6, 7)
        self.step(nd, op, [a, b], scale, zp, squeezed=a.squeezed)

    def q_QLinearAdd(self, nd):
        self._qbinary(nd, "add")

    def q_QLinearMul(self, nd):
        self._qbinary(nd, "mul")

    def q_QLinearGlobalAveragePool(self, nd):
        if self.attr(nd, "channels_last", 0):
            self.fail(nd, "channels_last=1 is not supported")
        scale, zp = self.qparams(nd, 3, 4)
        self.step(nd, "global_avgpool", [self.q_input(nd, 0)], scale, zp, squeezed=True)

    def _lookup(self, qnode, nd, q, op, scale, zp):
        """The table step of ONNX op `op` (its attributes on node `nd`), named after `qnode`."""
        attrs = {k: float(self.attr(nd, k, d)) for k, d in G.OPS[_TABLES[op]][1].items()}
        return self.step(qnode, _TABLES[op], [q], scale, zp, attrs, squeezed=q.squeezed)

    def q_QLinearSigmoid(self, nd):
        scale, zp = self.qparams(nd, 3, 4)
        self._lookup(nd, nd, self.q_input(nd, 0), "Sigmoid", scale, zp)

    def q_QLinearLeakyRelu(self, nd):
        scale, zp = self.qparams(nd, 3, 4)
        self._lookup(nd, nd, self.q_input(nd, 0), "LeakyRelu", scale, zp)

    def avgpool(self, nd, q, scale, zp, out):
        """QLinearAveragePool (or its QDQ form): avgpool2d, ORT's arithmetic (fixq.targets.onnxruntime)."""
        if self.attr(nd, "channels_last", 0):
            self.fail(nd, "channels_last=1 is not supported")
        self.pass_through(nd, q, scale, zp, out=out, op="AveragePool")

    def q_QLinearAveragePool(self, nd):
        scale, zp = self.qparams(nd, 3, 4)
        self.avgpool(nd, self.q_input(nd, 0), scale, zp, nd.output[0])

    def q_QLinearConcat(self, nd):
        scale, zp = self.qparams(nd, 0, 1)
        qs = [self.q_input(nd, i) for i in range(2, len(nd.input), 3)]
        axis = self.attr(nd, "axis") % len(qs[0].onnx_shape)
        self.step(nd, "concat", qs, scale, zp, {"axis": axis}, squeezed=qs[0].squeezed)


def is_quantized(model):
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def import_quantized(model, constants=None):
    """The int8 Model of a quantize_static / QAT model, or the dynamic one of a quantize_dynamic model."""
    if is_dynamic(model):
        return import_dynamic(model, constants)
    return _QImporter(model, constants).run()
