"""ONNX float models -> fixq float graphs (``fixq.graph/1``; docs/onnx.md).

The importer walks the ONNX graph in its (topological) node order and keeps, for every ONNX tensor,
either a constant (a numpy array: initializers, ``Constant`` nodes and whatever is computed from
them alone, shapes included) or a fixq tensor.  Ops with a fixq counterpart become fixq nodes; the
rest is rewritten away at import: BatchNormalization folded into the conv / linear before it (else a
per-channel 1x1 depthwise conv / diagonal linear), an Add / Mul of a per-channel constant folded into
the conv / linear before it, Identity and Dropout removed, Flatten / Reshape / Squeeze to
``[batch, features]`` as flatten, constant subgraphs (Shape, Gather, Cast, Concat, Unsqueeze, ...)
computed.  The first dimension of the input is the batch, symbolic or not.  Anything else is one line
naming the node, its op type and opset.
"""
import math
import re

import numpy as np

from .. import graph as G
from .onnx_file import OnnxError, _check_declared, _onnx

DOCS = "docs/onnx.md lists the ONNX ops fixq imports"


class _Batch:
    """The batch dimension inside a folded shape (ONNX Shape of a tensor with a symbolic batch)."""

    def __repr__(self):
        return "batch"

    def _refuse(self, *_):
        raise TypeError("arithmetic on the batch dimension")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __floordiv__ = __truediv__ = _refuse
    __int__ = __index__ = _refuse


BATCH = _Batch()


class _Tensor:
    """A fixq tensor standing for an ONNX tensor.  ``squeezed``: the ONNX tensor is [N, C, 1, 1] (a global
    pool kept its spatial dims) while fixq's is [N, C]."""
    __slots__ = ("name", "shape", "squeezed")

    def __init__(self, name, shape, squeezed=False):
        self.name, self.shape, self.squeezed = name, tuple(shape), squeezed

    @property
    def onnx_shape(self):
        return self.shape + (1, 1) if self.squeezed else self.shape


# ONNX ops whose result is computed at import when every input is a constant
_FOLDABLE = ("Constant", "Shape", "Gather", "Cast", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape",
             "Transpose", "Identity", "Add", "Sub", "Mul", "Div", "ConstantOfShape", "Flatten", "Range",
             "Sqrt", "Neg", "Dropout")

# ONNX ops that become fixq nodes or are rewritten away (docs/onnx.md); the foldable ones on constants
SUPPORTED = ("Gemm", "MatMul", "Conv", "Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "LeakyRelu", "HardSigmoid",
             "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Add",
             "Sub", "Mul", "Div", "Concat", "Softmax", "BatchNormalization", "Identity", "Dropout") + _FOLDABLE


def _clean(name, fallback):
    """An ONNX name in fixq's character set (fixq.graph.check_name): other runs of characters become '_',
    and it is cut to leave room for the '_<k>' that tells equal names apart."""
    n = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name or "").strip("_.")[:G.LIMITS["name_length"] - 8].rstrip("_.")
    return n or fallback


class _Importer:
    sequence = False  # a sequence graph's add and mul broadcast (fixq.graph.output_shape)

    def __init__(self, model, constants):
        onnx, self.nh = _onnx()
        self.onnx = onnx
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if self.opset is None:
            raise OnnxError("model: no opset of the default ONNX domain (ai.onnx)")
        self.env = {}
        self.spec_nodes, self.weights = [], {}
        self.producer = {}          # fixq tensor name -> its spec node
        self.names = set()
        for t in g.initializer:
            _check_declared(t, "initializer")
            try:
                self.env[t.name] = self.nh.to_array(t)
            except (ValueError, TypeError, IndexError, KeyError) as e:
                raise OnnxError(f"initializer {t.name!r}: its data does not match its dims and type "
                                f"({' '.join(str(e).split())[:200]})") from None
        for t in g.sparse_initializer:
            raise OnnxError(f"initializer {t.values.name!r}: sparse initializers are not supported ({DOCS})")
        for name, v in (constants or {}).items():
            self.env[name] = np.asarray(v)
        self.uses = {}
        for nd in g.node:
            for t in nd.input:
                self.uses[t] = self.uses.get(t, 0) + 1
        for o in g.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self.graph_outputs = [o.name for o in g.output]
        self.nodes = g.node
        self.take_inputs([i for i in g.input if i.name not in self.env])

    def take_inputs(self, inputs):
        """The graph's inputs (those not given as constants) into env: exactly one float tensor."""
        if len(inputs) != 1:
            ints = any(i.type.tensor_type.elem_type in (6, 7) for i in inputs)  # int32 / int64: token ids
            raise OnnxError(f"model: has {len(inputs)} graph inputs ({', '.join(i.name for i in inputs)}); " + (
                "a transformer encoder is imported from its float export, then quantized with `fixq quantize "
                "--dynamic` (docs/onnx.md)" if ints else
                "fixq models take exactly one float input (give the others as constants=)"))
        self.input_name, self.input_shape = self._graph_input(inputs[0])
        self.env[inputs[0].name] = _Tensor(self.input_name, self.input_shape)

    # -- helpers ------------------------------------------------------------------------------------
    def _graph_input(self, vi):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or tt.elem_type not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.FLOAT16,
                                              self.onnx.TensorProto.DOUBLE):
            raise OnnxError(f"input {vi.name!r}: fixq models take one float tensor input")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] \
            if tt.HasField("shape") else None
        if dims is None or len(dims) not in (2, 4) or any(d is None or d <= 0 for d in dims[1:]):
            raise OnnxError(f"input {vi.name!r}: has shape {dims}; fixq takes [batch, features] or "
                            "[batch, C, H, W] with fixed sizes after the batch")
        try:
            G.check_elements(vi.name, "input shape", [None] + dims[1:])
        except G.GraphError as e:
            raise OnnxError(f"input {vi.name!r}: {e}") from None
        self.fixed_batch = dims[0]
        return self._name(vi.name, "x"), (None,) + tuple(dims[1:])

    def _name(self, onnx_name, fallback):
        base = _clean(onnx_name, fallback)
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def walk(self, visit):
        """visit(nd) for each node in order; a field of the wrong kind or count anywhere in a node (a short
        pads list, a tensor attribute where ints belong) is one line naming the node."""
        for nd in self.nodes:
            try:
                visit(nd)
            except OnnxError:
                raise
            except G.GraphError as e:
                self.fail(nd, str(e))
            except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, ZeroDivisionError,
                    MemoryError) as e:
                self.fail(nd, f"its attributes or inputs are malformed ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]})")

    def fail(self, nd, why):
        raise OnnxError(f"node {nd.name or nd.output[0]!r} ({nd.op_type}, opset {self.opset}): {why} ({DOCS})")

    def attr(self, nd, name, default=None):
        for a in nd.attribute:
            if a.name == name:
                return self.onnx.helper.get_attribute_value(a)
        return default

    def const(self, nd, i, what):
        v = self.env.get(nd.input[i]) if i < len(nd.input) and nd.input[i] else None
        if not isinstance(v, np.ndarray):
            self.fail(nd, f"input {i} ({what}) must be a constant")
        return v

    def opt_const(self, nd, i):
        if i >= len(nd.input) or not nd.input[i]:
            return None
        return self.const(nd, i, nd.input[i])

    def tensor(self, nd, i=0):
        v = self.env.get(nd.input[i])
        if not isinstance(v, _Tensor):
            self.fail(nd, f"input {i} must be computed from the model's input")
        return v

    def add_node(self, nd, op, inputs, weights=None, squeezed=False, **attrs):
        """A fixq node for ONNX node `nd`'s first output; its weights as ``<name>.weight`` / ``.bias``."""
        name = self._name(nd.name or nd.output[0], op)
        spec = {"name": name, "op": op, "inputs": [t.name for t in inputs], **attrs}
        for k, v in (weights or {}).items():
            self.weights[f"{name}.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
        node = G.Node(name, op, list(spec["inputs"]),
                      {k: spec.get(k, d) for k, d in G.OPS[op][1].items()})
        try:
            shape = G.ops.infer_shape(node, [t.shape for t in inputs], self.weights, {}, set(), self.sequence)
        except G.GraphError as e:
            self.fail(nd, str(e))
        self.spec_nodes.append(spec)
        self.producer[name] = spec
        out = _Tensor(name, shape, squeezed)
        self.env[nd.output[0]] = out
        return out

    def foldable_producer(self, nd, t, ops=G.WEIGHTED):
        """The weighted spec node that computes `t` if `nd` is its only reader (so it may be changed)."""
        spec = self.producer.get(t.name)
        onnx_name = nd.input[0] if self.env.get(nd.input[0]) is t else nd.input[1]
        if spec is None or spec["op"] not in ops or self.uses.get(onnx_name, 0) != 1 or t.squeezed:
            return None
        return spec

    def channel_vector(self, c, t):
        """Constant `c` as a per-channel vector of tensor `t` ([N, C] or [N, C, H, W]), or None."""
        shape = t.onnx_shape
        c = np.asarray(c, dtype=np.float64)
        if c.ndim > len(shape):
            return None
        full = (1,) * (len(shape) - c.ndim) + c.shape
        if full[0] != 1 or any(d != 1 for d in full[2:]) or full[1] not in (1, shape[1]):
            return None
        return np.broadcast_to(c.reshape(-1), (shape[1],)).copy()

    def scale_producer(self, spec, mul=None, add=None):
        """Fold ``y * mul + add`` (per output channel) into the weights of spec node `spec`."""
        w = self.weights[spec["name"] + ".weight"].astype(np.float64)
        b = self.weights.get(spec["name"] + ".bias")
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        if mul is not None:
            w = w * mul.reshape((-1,) + (1,) * (w.ndim - 1))
            b = b * mul
        if add is not None:
            b = b + add
        self.weights[spec["name"] + ".weight"] = w.astype(np.float32)
        self.weights[spec["name"] + ".bias"] = b.astype(np.float32)

    # -- the walk ----------------------------------------------------------------------------------
    def inputs(self, nd, domains, fold=True):
        """The values of `nd`'s inputs, after the checks every walk makes; with `fold`, None when the node only
        computes a constant, which is then folded."""
        if nd.domain not in domains:
            self.fail(nd, f"op domain {nd.domain!r} is not supported")
        ins = [self.env.get(t) if t else None for t in nd.input]
        for t, v in zip(nd.input, ins):
            if t and v is None:
                self.fail(nd, f"input {t!r} is not computed before it")
        if fold and nd.op_type in _FOLDABLE and all(v is None or isinstance(v, np.ndarray) for v in ins):
            self.fold(nd)
            return None
        return ins

    def first_output_only(self, nd):
        """Refuse `nd` where a node reads an output of it past the first (fixq computes only the first)."""
        for extra in nd.output[1:]:
            if extra and self.uses.get(extra):
                self.fail(nd, f"its output {extra!r} is used; fixq computes only the first output")

    def visit(self, nd):
        if self.inputs(nd, ("", "ai.onnx")) is None:
            return
        handler = getattr(self, "op_" + nd.op_type, None)
        if handler is None:
            self.fail(nd, "this op is not supported")
        handler(nd)
        self.first_output_only(nd)

    def run(self):
        self.walk(self.visit)
        outputs = []
        for name in self.graph_outputs:
            v = self.env.get(name)
            if not isinstance(v, _Tensor) or v.name == self.input_name:
                raise OnnxError(f"output {name!r}: is not computed from the input (a constant or the input "
                                "itself); fixq outputs are computed tensors")
            if v.name in outputs:
                raise OnnxError(f"output {name!r}: is the same tensor as another output")
            outputs.append(v.name)
        spec = {"format": G.GRAPH_FORMAT, "inputs": [{"name": self.input_name, "shape": list(self.input_shape)}],
                "nodes": self.spec_nodes, "outputs": outputs}
        used = {k for k in self.weights}
        try:
            return G.validate(spec, {k: self.weights[k] for k in used})
        except G.GraphError as e:
            raise OnnxError(f"model: the imported graph is not valid ({e}) ({DOCS})") from None

    # -- constant folding ----------------------------------------------------------------------------
    def fold(self, nd):
        op = nd.op_type
        x = [self.env.get(t) if t else None for t in nd.input]
        try:
            if op == "Constant":
                a = nd.attribute[0]
                v = self.onnx.helper.get_attribute_value(a)
                if a.name == "value":
                    _check_declared(v, "Constant")
                y = self.nh.to_array(v) if a.name == "value" else np.asarray(
                    v, dtype=np.float32 if "float" in a.name else np.int64)
            elif op == "Shape":
                y = np.asarray(x[0].shape, dtype=np.int64)
                y = y[self.attr(nd, "start", 0):self.attr(nd, "end", None)]
            elif op == "Gather":
                y = np.take(x[0], x[1].astype(np.int64), axis=self.attr(nd, "axis", 0))
            elif op == "Cast":
                to = self.onnx.helper.tensor_dtype_to_np_dtype(self.attr(nd, "to"))
                y = x[0].astype(to) if x[0].dtype != object else x[0]
            elif op in ("Unsqueeze", "Squeeze"):
                axes = self.attr(nd, "axes") if self.opset < 13 else (
                    x[1].tolist() if len(x) > 1 and x[1] is not None else None)
                if op == "Squeeze":
                    y = np.squeeze(x[0], axis=None if axes is None else tuple(axes))
                else:
                    y = x[0]
                    rank = y.ndim + len(axes)
                    for a in sorted(a % rank for a in axes):
                        y = np.expand_dims(y, a)
            elif op == "Concat":
                y = np.concatenate([v for v in x if v is not None and v.size], axis=self.attr(nd, "axis"))
            elif op == "Slice":
                if self.opset < 10:
                    starts, ends, axes = self.attr(nd, "starts"), self.attr(nd, "ends"), self.attr(nd, "axes")
                    steps = None
                else:
                    starts, ends = x[1].tolist(), x[2].tolist()
                    axes = x[3].tolist() if len(x) > 3 and x[3] is not None else None
                    steps = x[4].tolist() if len(x) > 4 and x[4] is not None else None
                axes = list(range(len(starts))) if axes is None else axes
                steps = [1] * len(starts) if steps is None else steps
                sl = [slice(None)] * x[0].ndim
                for s, e, a, st in zip(starts, ends, axes, steps):
                    sl[a] = slice(s, e, st)
                y = x[0][tuple(sl)]
            elif op == "Reshape":
                shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(x[1].tolist())]
                y = x[0].reshape(shape)
            elif op == "Flatten":
                ax = self.attr(nd, "axis", 1) % max(x[0].ndim, 1)
                y = x[0].reshape(math.prod(x[0].shape[:ax]), -1)
            elif op == "Transpose":
                y = np.transpose(x[0], self.attr(nd, "perm"))
            elif op in ("Identity", "Dropout"):
                y = x[0]
            elif op in ("Add", "Sub", "Mul", "Div"):
                f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
                y = f(x[0], x[1])
                if op == "Div" and x[0].dtype.kind in "iu":
                    y = np.trunc(y).astype(x[0].dtype)
                y = np.asarray(y).astype(np.result_type(x[0], x[1]) if x[0].dtype != object else object)
            elif op == "ConstantOfShape":
                v = self.attr(nd, "value")
                fill = self.nh.to_array(v) if v is not None else np.zeros(1, np.float32)
                dims = [int(d) for d in x[0].tolist()]
                self.check_size(nd, math.prod(dims) if all(d >= 0 for d in dims) else 0)
                y = np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)
            elif op == "Range":
                self.check_size(nd, math.ceil((float(x[1]) - float(x[0])) / float(x[2])))
                y = np.arange(x[0], x[1], x[2]).astype(x[0].dtype)
            elif op == "Sqrt":
                y = np.sqrt(x[0])
            elif op == "Neg":
                y = -x[0]
            else:
                raise AssertionError(op)
        except OnnxError:
            raise
        except (TypeError, ValueError, IndexError, OverflowError, ZeroDivisionError, MemoryError) as e:
            self.fail(nd, f"cannot compute it on its constant inputs ({' '.join(str(e).split())[:200]})")
        self.check_size(nd, np.size(y))
        self.env[nd.output[0]] = np.asarray(y)

    def check_size(self, nd, n):
        if n > G.LIMITS["elements"]:
            self.fail(nd, f"computes a constant of {n} values, more than {G.LIMITS['elements']} (docs/security.md)")

    # -- ops on tensors ------------------------------------------------------------------------------
    def op_Shape(self, nd):
        dims = [BATCH if d is None else d for d in self.tensor(nd).onnx_shape]
        y = np.empty(len(dims), dtype=object)
        y[:] = dims
        self.env[nd.output[0]] = y[self.attr(nd, "start", 0):self.attr(nd, "end", None)]

    def op_Identity(self, nd):
        self.env[nd.output[0]] = self.tensor(nd)

    def op_Dropout(self, nd):
        mode = self.opt_const(nd, 2) if self.opset >= 12 else None
        if (mode is not None and bool(mode)) or self.attr(nd, "is_test", 1) == 0:
            self.fail(nd, "training-mode Dropout is not supported (export the model in eval mode)")
        self.env[nd.output[0]] = self.tensor(nd)

    def op_Relu(self, nd):
        t = self.tensor(nd)
        self.add_node(nd, "relu", [t], squeezed=t.squeezed)

    def _table_op(self, nd, op, **attrs):
        t = self.tensor(nd)
        self.add_node(nd, op, [t], squeezed=t.squeezed, **attrs)

    def op_Sigmoid(self, nd):
        self._table_op(nd, "sigmoid")

    def op_Tanh(self, nd):
        self._table_op(nd, "tanh")

    def op_HardSwish(self, nd):
        self._table_op(nd, "hardswish")

    def op_LeakyRelu(self, nd):
        self._table_op(nd, "leaky_relu", alpha=float(self.attr(nd, "alpha", 0.01)))

    def op_HardSigmoid(self, nd):
        self._table_op(nd, "hardsigmoid", alpha=float(self.attr(nd, "alpha", 0.2)),
                       beta=float(self.attr(nd, "beta", 0.5)))

    def op_Clip(self, nd):
        t = self.tensor(nd)
        if self.opset < 11:
            lo, hi = self.attr(nd, "min", -np.inf), self.attr(nd, "max", np.inf)
        else:
            lo, hi = self.opt_const(nd, 1), self.opt_const(nd, 2)
            lo = -np.inf if lo is None else float(lo)
            hi = np.inf if hi is None else float(hi)
        if lo == 0 and hi == 6:
            self.add_node(nd, "relu6", [t], squeezed=t.squeezed)
        elif lo == 0 and hi == np.inf:
            self.add_node(nd, "relu", [t], squeezed=t.squeezed)
        else:
            self.fail(nd, f"Clip({lo:g}, {hi:g}) is not supported; fixq has Clip(0, 6) (relu6) and Clip(0, inf) (relu)")

    def op_Gemm(self, nd):
        t = self.tensor(nd)
        if self.attr(nd, "transA", 0):
            self.fail(nd, "transA=1 is not supported")
        if len(t.shape) != 2:
            self.fail(nd, f"input 0 has shape {list(t.onnx_shape)}; Gemm needs [batch, features]")
        b = self.const(nd, 1, "B").astype(np.float64)
        w = (b if self.attr(nd, "transB", 0) else b.T) * self.attr(nd, "alpha", 1.0)
        c = self.opt_const(nd, 2)
        wts = {"weight": w}
        if c is not None:
            c = np.asarray(c, dtype=np.float64) * self.attr(nd, "beta", 1.0)
            if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, w.shape[0]):
                self.fail(nd, f"C of shape {list(c.shape)} is not a per-output bias")
            wts["bias"] = np.broadcast_to(c.reshape(-1), (w.shape[0],))
        self.add_node(nd, "linear", [t], wts)

    def op_MatMul(self, nd):
        t = self.tensor(nd)
        b = self.const(nd, 1, "B")
        if len(t.shape) != 2 or b.ndim != 2:
            self.fail(nd, f"MatMul of {list(t.onnx_shape)} by a constant of shape {list(b.shape)} is not "
                      "supported; fixq has [batch, K] x [K, N]")
        self.add_node(nd, "linear", [t], {"weight": b.T})

    def _pads(self, nd, t, kernel, strides, dilations):
        """Symmetric (h, w) padding of a conv / pool node from pads or auto_pad."""
        auto = self.attr(nd, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        h = t.shape[2:]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 4
            for i in range(2):
                out = -(-h[i] // strides[i])
                total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - h[i])
                small, big = total // 2, total - total // 2
                pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * 4
        else:
            pads = list(self.attr(nd, "pads", [0] * 4))
        if pads[0] != pads[2] or pads[1] != pads[3]:
            self.fail(nd, f"asymmetric padding {pads} is not supported (fixq pads each side equally)")
        return [pads[0], pads[1]]

    def _spatial(self, nd, t, what):
        if len(t.shape) != 4 or t.squeezed:
            self.fail(nd, f"input 0 has shape {list(t.onnx_shape)}; {what} needs [N, C, H, W]")

    def op_Conv(self, nd):
        t = self.tensor(nd)
        self._spatial(nd, t, "a 2-D Conv")
        w = self.const(nd, 1, "W")
        if w.ndim != 4:
            self.fail(nd, f"weight of shape {list(w.shape)}; fixq has 2-D convolutions")
        strides = list(self.attr(nd, "strides", [1, 1]))
        dil = list(self.attr(nd, "dilations", [1, 1]))
        pads = self._pads(nd, t, w.shape[2:], strides, dil)
        wts = {"weight": w}
        b = self.opt_const(nd, 2)
        if b is not None:
            wts["bias"] = b
        self.add_node(nd, "conv2d", [t], wts, stride=strides, padding=pads, dilation=dil,
                      groups=int(self.attr(nd, "group", 1)))

    def _pool(self, nd, op):
        t = self.tensor(nd)
        self._spatial(nd, t, nd.op_type)
        k = list(self.attr(nd, "kernel_shape"))
        strides = list(self.attr(nd, "strides", [1, 1]))
        if list(self.attr(nd, "dilations", [1, 1])) != [1, 1]:
            self.fail(nd, "dilated pooling is not supported")
        if self.attr(nd, "storage_order", 0):
            self.fail(nd, "storage_order=1 is not supported")
        pads = self._pads(nd, t, k, strides, [1, 1])
        if self.attr(nd, "ceil_mode", 0):
            for i in range(2):
                span = t.shape[2 + i] + 2 * pads[i] - k[i]
                if span % strides[i]:
                    self.fail(nd, "ceil_mode=1 gives a partial last window here; fixq pools full windows")
        if op == "avgpool2d" and any(pads) and not self.attr(nd, "count_include_pad", 0):
            self.fail(nd, "AveragePool with padding and count_include_pad=0 is not supported; fixq's average "
                      "pool counts padding as zeros (count_include_pad=1)")
        self.add_node(nd, op, [t], kernel=k, stride=strides, padding=pads)

    def op_MaxPool(self, nd):
        self._pool(nd, "maxpool2d")

    def op_AveragePool(self, nd):
        self._pool(nd, "avgpool2d")

    def op_GlobalAveragePool(self, nd):
        t = self.tensor(nd)
        self._spatial(nd, t, "GlobalAveragePool")
        self.add_node(nd, "global_avgpool", [t], squeezed=True)

    def op_ReduceMean(self, nd):
        t = self.tensor(nd)
        axes = self.attr(nd, "axes") if self.opset < 18 else (
            self.opt_const(nd, 1).tolist() if self.opt_const(nd, 1) is not None else None)
        if len(t.onnx_shape) != 4 or t.squeezed or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            self.fail(nd, "ReduceMean is supported over the spatial axes [2, 3] of [N, C, H, W] only")
        self.add_node(nd, "global_avgpool", [t], squeezed=bool(self.attr(nd, "keepdims", 1)))

    def _to_2d(self, nd, t):
        """`t` as [batch, features]: itself, the 2-D view of a squeezed tensor, or a flatten node."""
        if len(t.shape) == 2:
            self.env[nd.output[0]] = _Tensor(t.name, t.shape)
        else:
            self.add_node(nd, "flatten", [t])

    def op_Flatten(self, nd):
        t = self.tensor(nd)
        if self.attr(nd, "axis", 1) % len(t.onnx_shape) != 1:
            self.fail(nd, "Flatten is supported with axis=1 (keeping the batch) only")
        self._to_2d(nd, t)

    def op_Reshape(self, nd):
        t = self.tensor(nd)
        target = self.const(nd, 1, "shape").tolist()
        src = t.onnx_shape
        if self.attr(nd, "allowzero", 0) and 0 in target:
            self.fail(nd, "allowzero=1 with a 0 in the shape is not supported")
        dims = []
        for i, d in enumerate(target):
            if d is BATCH or (i == 0 and d == 0) or (i == 0 and self.fixed_batch and d == self.fixed_batch):
                dims.append(None)
            elif d == 0 and i < len(src):
                dims.append(src[i])
            elif isinstance(d, (int, np.integer)):
                dims.append(int(d))
            else:
                self.fail(nd, f"shape {target} is not supported")
        feat = math.prod(src[1:])
        if len(dims) == 2 and dims[0] in (None, -1) and dims[1] in (feat, -1) and dims.count(-1) < 2:
            return self._to_2d(nd, t)
        if tuple(d if d != -1 else None for d in dims) == src or dims == [None] + list(src[1:]):
            self.env[nd.output[0]] = t
            return
        self.fail(nd, f"Reshape of {list(src)} to {target} is not supported; fixq reshapes to [batch, features]")

    def op_Squeeze(self, nd):
        t = self.tensor(nd)
        axes = self.attr(nd, "axes") if self.opset < 13 else (
            self.opt_const(nd, 1).tolist() if self.opt_const(nd, 1) is not None else None)
        src = t.onnx_shape
        if len(src) == 4 and src[2:] == (1, 1) and (axes is None or sorted(a % 4 for a in axes) == [2, 3]):
            return self._to_2d(nd, t)
        self.fail(nd, f"Squeeze of {list(src)} on axes {axes} is not supported; fixq squeezes [N, C, 1, 1] to [N, C]")

    def _binary(self, nd, op):
        a, b = (self.env.get(t) for t in nd.input[:2])
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if op not in ("Add", "Mul"):
                self.fail(nd, f"{op} of two computed tensors is not supported (fixq has add and mul)")
            if a.onnx_shape != b.onnx_shape or a.squeezed != b.squeezed:
                self.fail(nd, f"inputs of shapes {list(a.onnx_shape)} and {list(b.onnx_shape)}; fixq's "
                          f"{op.lower()} needs equal shapes")
            return self.add_node(nd, op.lower(), [a, b], squeezed=a.squeezed)
        t, c = (a, b) if isinstance(a, _Tensor) else (b, a)
        if op in ("Sub", "Div") and t is b:
            self.fail(nd, f"{op} of a constant by a tensor is not supported")
        spec = self.foldable_producer(nd, t)
        vec = self.channel_vector(c, t)
        if spec is None or vec is None:
            self.fail(nd, f"{op} of a constant is supported only as a per-channel bias or scale of the "
                      "Conv / Gemm / MatMul whose only reader it is")
        if op == "Add":
            self.scale_producer(spec, add=vec)
        elif op == "Sub":
            self.scale_producer(spec, add=-vec)
        elif op == "Mul":
            self.scale_producer(spec, mul=vec)
        else:
            self.scale_producer(spec, mul=1.0 / vec)
        self.env[nd.output[0]] = t

    def op_Add(self, nd):
        self._binary(nd, "Add")

    def op_Sub(self, nd):
        self._binary(nd, "Sub")

    def op_Mul(self, nd):
        self._binary(nd, "Mul")

    def op_Div(self, nd):
        self._binary(nd, "Div")

    def op_Concat(self, nd):
        ts = [self.env.get(t) for t in nd.input]
        if not all(isinstance(t, _Tensor) for t in ts):
            self.fail(nd, "Concat of computed tensors with constants is not supported")
        rank = len(ts[0].onnx_shape)
        axis = self.attr(nd, "axis") % rank
        sq = {t.squeezed for t in ts}
        if len(sq) != 1 or (ts[0].squeezed and axis != 1):
            self.fail(nd, "Concat of pooled [N, C, 1, 1] tensors is supported on axis 1 only")
        if len(ts) == 1:
            self.env[nd.output[0]] = ts[0]
            return
        self.add_node(nd, "concat", ts, squeezed=ts[0].squeezed, axis=axis)

    def op_Softmax(self, nd):
        t = self.tensor(nd)
        rank = len(t.onnx_shape)
        axis = self.attr(nd, "axis", -1 if self.opset >= 13 else 1) % rank
        if self.opset < 13 and axis != rank - 1:
            self.fail(nd, "Softmax before opset 13 over more than the last axis is not supported")
        if t.squeezed:
            if axis != 1:
                self.fail(nd, "Softmax over a size-1 axis is not supported")
            axis = 1
        self.add_node(nd, "softmax", [t], squeezed=t.squeezed, axis=axis)

    def op_BatchNormalization(self, nd):
        t = self.tensor(nd)
        if self.attr(nd, "training_mode", 0):
            self.fail(nd, "training_mode=1 is not supported (export the model in eval mode)")
        scale, bias, mean, var = (self.const(nd, i, w).astype(np.float64)
                                  for i, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        a = scale / np.sqrt(var + self.attr(nd, "epsilon", 1e-5))
        shift = bias - mean * a
        spec = self.foldable_producer(nd, t)
        if spec is not None:
            self.scale_producer(spec, mul=a, add=shift)
            self.env[nd.output[0]] = t
        elif len(t.shape) == 4:
            self.add_node(nd, "conv2d", [t], {"weight": a.reshape(-1, 1, 1, 1), "bias": shift},
                          groups=t.shape[1])
        elif len(t.shape) == 2:
            self.add_node(nd, "linear", [t], {"weight": np.diag(a), "bias": shift}, squeezed=t.squeezed)
        else:
            self.fail(nd, f"BatchNormalization of shape {list(t.onnx_shape)} is not supported")


def import_float(model, constants=None):
    """A validated float :class:`fixq.graph.Graph` from an ``onnx.ModelProto`` of a float model."""
    return _Importer(model, constants).run()
