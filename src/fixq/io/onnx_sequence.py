"""ONNX transformer encoders (BERT class, as ``torch.onnx.export`` writes transformers' BertModel) -> fixq sequence
graphs (docs/onnx.md, docs/transformers.md).

A graph with integer inputs (token ids, an attention mask) is read here.  Every ONNX tensor is a constant (shapes
keep the batch and the sequence length as symbols), a fixq tensor, a *probe* or a *partial pattern*:

- a probe is a tensor computed from the integer inputs and from shapes alone (the attention-mask chain, position
  ids).  It is not read node by node: where a fixq tensor meets it, it is evaluated with the onnx package's
  reference evaluator on a few masks and lengths and recognised by its values (an additive attention bias, the
  positions 0..L-1, a 0/1 mask for mean pooling), whatever chain of ops computed it;
- a partial pattern is the start of a decomposed op (LayerNormalization's ReduceMean/Sub/Pow/Sqrt/Div, the erf
  form of GELU, the masked mean and the L2 normalization of sentence-transformers) that becomes one fixq node
  when the pattern completes.
"""
import math

import numpy as np

from .. import graph as G
from .onnx import _FOLDABLE, BATCH, DOCS, _Batch, _clean, _Importer, _Tensor
from .onnx_file import OnnxError

_INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)   # onnx.TensorProto uint8 .. int64, uint32, uint64
# folds that move shape values around without arithmetic: a symbolic dim passes through them
_SYMBOL_SAFE = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Identity", "Cast", "Dropout")
# (batch, length, mask rows) at which probes are evaluated: right padding and holes, several lengths
_PROBES = ((3, 5, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]]), (2, 3, [[1, 0, 0], [1, 1, 1]]))
_SQRT2 = math.sqrt(2.0)
# ops evaluated on the integer inputs; none of them holds a subgraph, and those whose output size is set by input
# values have it checked before they run
_PROBE_OPS = ("Shape", "Size", "Gather", "GatherND", "GatherElements", "Cast", "CastLike", "Unsqueeze", "Squeeze",
              "Concat", "Slice", "Reshape", "Flatten", "Transpose", "Identity", "Add", "Sub", "Mul", "Div", "Neg",
              "Abs", "Sqrt", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Not", "Xor",
              "Where", "Max", "Min", "Clip", "Range", "ConstantOfShape", "Expand", "ReduceSum", "ReduceMax",
              "ReduceMin", "CumSum", "IsNaN", "IsInf", "Dropout")


def _elements(shape):
    return math.prod(max(int(d), 0) for d in np.ravel(shape))


_PROBE_SIZE = {
    "Range": lambda start, limit, delta: max(0, math.ceil((float(limit) - float(start)) / float(delta)))
    if float(delta) else 0,
    "ConstantOfShape": lambda shape: _elements(shape),
    "Expand": lambda x, shape: math.prod(np.broadcast_shapes(np.shape(x), tuple(int(d) for d in np.ravel(shape)))),
}


class _Seq(_Batch):
    """The sequence length inside a folded shape: arithmetic on it makes a probe."""

    def __init__(self, dim):
        self.dim = dim

    def __repr__(self):
        return str(self.dim)


class _Probe:
    """A tensor of the integer inputs and shapes alone: ``source`` a graph input's name, or ONNX node ``node``
    over ``inputs`` (constants, probes, None for an absent optional input); ``reads``: the graph inputs it reads."""
    __slots__ = ("node", "inputs", "source", "reads")

    def __init__(self, node=None, inputs=(), source=None):
        self.node, self.inputs, self.source = node, list(inputs), source
        self.reads = frozenset([source]) if source is not None else frozenset().union(
            *(v.reads for v in inputs if isinstance(v, _Probe)))


class _Partial:
    """A decomposed op under way: ``kind`` how far, ``x`` the fixq tensor it started from, ``value`` a number."""
    __slots__ = ("kind", "x", "value")

    def __init__(self, kind, x, value=None):
        self.kind, self.x, self.value = kind, x, value


def _scalar(c):
    """A constant of one value (an array or an attribute's number) as a float, else None."""
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        return float(c)
    return float(c.reshape(-1)[0]) if isinstance(c, np.ndarray) and c.size == 1 and c.dtype.kind in "fiu" else None


def _symbolic(v):
    return isinstance(v, np.ndarray) and v.dtype == object and any(isinstance(e, _Batch) for e in v.flat)


def is_sequence(model):
    """Whether ONNX model `model` takes an integer input (token ids, masks): read by :func:`import_sequence`."""
    init = {t.name for t in model.graph.initializer}
    return any(i.type.HasField("tensor_type") and i.type.tensor_type.elem_type in _INT_TYPES
               for i in model.graph.input if i.name not in init)


class _SequenceImporter(_Importer):
    sequence = True

    def take_inputs(self, inputs):
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator
        self.inputs_spec, self.seq_dim, self.fixq_input = [], None, {}
        self.positions_rows = None
        self.row_tables = []         # gathers of one table row for every token (token types left out)
        self.mask_bias = {}          # (mask input, value) -> the attention_mask fixq tensor
        self.evaluators = {}
        for vi in inputs:
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in tt.shape.dim] \
                if tt is not None and tt.HasField("shape") else None
            if tt is None or tt.elem_type not in _INT_TYPES or dims is None or len(dims) != 2:
                raise OnnxError(f"input {vi.name!r}: a transformer encoder's inputs are integer [batch, sequence] "
                                "tensors (token ids, attention mask); this one has type "
                                f"{getattr(tt, 'elem_type', None)} and shape {dims}")
            if not isinstance(dims[1], str):
                raise OnnxError(f"input {vi.name!r}: has shape {dims}; fixq imports transformer encoders exported with "
                                "a symbolic sequence dim (torch.onnx.export(..., dynamic_axes={name: {0: 'batch', "
                                "1: 'seq'}}))")
            if self.seq_dim is None:
                self.seq_dim = G.Dim(_clean(dims[1], "seq"), 1)   # its largest size: the position table's rows
            name = self._name(vi.name, "input")
            self.fixq_input[vi.name] = name
            self.inputs_spec.append({"name": name, "shape": [None, self.seq_dim], "dtype": "int64"})
            self.env[vi.name] = _Probe(source=vi.name)
        if not inputs:
            raise OnnxError("model: has no graph inputs")
        self.input_name = None

    # -- values ------------------------------------------------------------------------------------
    def op_Shape(self, nd, t=None):
        t = t or self.tensor(nd)
        y = np.empty(len(t.shape), dtype=object)
        y[:] = [BATCH if d is None else _Seq(d) if isinstance(d, G.Dim) else d for d in t.shape]
        self.env[nd.output[0]] = y[self.attr(nd, "start", 0):self.attr(nd, "end", None)]

    def tensor(self, nd, i=0):
        v = self.env.get(nd.input[i])
        if isinstance(v, _Partial) and v.kind == "div":   # x / c that no GELU read: a scale
            v = self.env[nd.input[i]] = self.add_node(nd, "scale", [v.x], value=1.0 / v.value, suffix="scale")
        if not isinstance(v, _Tensor):
            what = ("a constant" if isinstance(v, np.ndarray) else "a tensor of the integer inputs alone"
                    if isinstance(v, _Probe) else f"a {v.kind} pattern under way that this op does not complete")
            self.fail(nd, f"input {i} must be computed from the model's activations; it is {what}")
        return v

    def add_node(self, nd, op, inputs, weights=None, squeezed=False, suffix=None, **attrs):
        out = nd.output[0]
        if suffix is not None:   # a node made on behalf of another ONNX node: named after it, output not bound
            saved = self.env.get(out)
        t = super().add_node(nd, op, inputs, weights, squeezed, **attrs)
        if suffix is not None:
            self.env[out] = saved
        return t

    def visit(self, nd):
        ins = self.inputs(nd, ("", "ai.onnx"), fold=False)  # folding waits for the probes' checks below
        if nd.op_type == "Shape" and isinstance(ins[0], _Probe) and ins[0].source is not None:
            ins[0] = _Tensor(self.fixq_input[ins[0].source], (None, self.seq_dim))
            return self.op_Shape(nd, ins[0])
        if not any(isinstance(v, (_Tensor, _Partial)) for v in ins):
            if nd.op_type == "Gather" and isinstance(ins[0], np.ndarray) and ins[0].dtype.kind == "f" \
                    and isinstance(ins[1], _Probe):
                return self.embedding(nd, ins[0], ins[1])
            probes = any(isinstance(v, _Probe) for v in ins)
            symbolic = any(_symbolic(v) for v in ins[1 if nd.op_type == "Slice" else 0:])
            if nd.op_type in _FOLDABLE and not probes and (not symbolic or nd.op_type in _SYMBOL_SAFE):
                self.fold(nd)
                y = self.env[nd.output[0]]
                if y.dtype == object and not _symbolic(y):
                    self.env[nd.output[0]] = y.astype(np.int64)
                return
            self.env[nd.output[0]] = _Probe(nd, ins)
            return
        handler = getattr(self, "seq_" + nd.op_type, None) or getattr(self, "op_" + nd.op_type, None)
        if handler is None:
            self.fail(nd, "this op is not supported in a transformer encoder")
        handler(nd, *ins) if handler.__name__.startswith("seq_") else handler(nd)
        self.first_output_only(nd)

    # -- probes --------------------------------------------------------------------------------------
    def evaluate(self, nd, p, batch, length, feeds, memo):
        if isinstance(p, np.ndarray):
            if p.dtype != object:
                return p
            return np.array([batch if e is BATCH else length if isinstance(e, _Seq) else e for e in p.flat],
                            dtype=np.int64).reshape(p.shape)
        if p is None:
            return None
        if p.source is not None:
            return feeds[p.source]
        if id(p) not in memo:
            vals = [self.evaluate(nd, v, batch, length, feeds, memo) for v in p.inputs]
            op = p.node.op_type
            if op not in _PROBE_OPS:
                self.fail(p.node, "this op is not supported on the integer inputs (fixq reads attention-mask and "
                          "position chains of shape, index, comparison and arithmetic ops)")
            n = _PROBE_SIZE[op](*vals) if op in _PROBE_SIZE else 0
            if n > G.LIMITS["elements"]:
                self.fail(p.node, f"computes {n} values on sample masks, more than {G.LIMITS['elements']} "
                          "(docs/security.md)")
            ev = self.evaluators.get(id(p.node))
            if ev is None:
                ev = self.evaluators[id(p.node)] = self.evaluator(p.node, opsets={"": self.opset})
            try:
                y = np.asarray(ev.run([p.node.output[0]], {k: v for k, v in zip(p.node.input, vals) if k})[0])
            except Exception as e:  # the reference evaluator raises what its op implementations raise
                self.fail(p.node, f"cannot evaluate it on sample masks ({' '.join(str(e).split())[:200]})")
            if y.size > G.LIMITS["elements"]:
                self.fail(p.node, f"computes {y.size} values on sample masks (docs/security.md)")
            memo[id(p)] = y
        return memo[id(p)]

    def probe_values(self, nd, p):
        """[(batch, length, mask or None, the probe's value)] at each of _PROBES; the mask fed to the one integer
        input the probe reads (none read: shapes alone)."""
        srcs = set(p.reads)
        if len(srcs) > 1:
            self.fail(nd, f"reads a tensor computed from several inputs ({', '.join(sorted(srcs))}); fixq knows an "
                      "attention mask computed from one")
        out = []
        for n, length, rows in _PROBES:
            mask = np.array(rows, dtype=np.int64)
            feeds = {s: mask for s in srcs}
            try:
                out.append((n, length, mask if srcs else None, self.evaluate(nd, p, n, length, feeds, {})))
            except RecursionError:
                self.fail(nd, "reads a chain of ops on the integer inputs too deep to evaluate")
        return srcs.pop() if srcs else None, out

    def embedding(self, nd, table, ids):
        """Gather of a float table by integer ids: ids a graph input (word, token type) or the positions 0..L-1."""
        if self.attr(nd, "axis", 0) != 0 or table.ndim != 2:
            self.fail(nd, f"Gather of a table of shape {list(table.shape)} on axis {self.attr(nd, 'axis', 0)}; fixq "
                      "gathers rows of a [rows, D] embedding table")
        src = ids
        while src.source is None and src.node.op_type in ("Cast", "Identity") and isinstance(src.inputs[0], _Probe):
            src = src.inputs[0]
        if src.source is not None:
            self.add_node(nd, "gather", [_Tensor(self.fixq_input[src.source], (None, self.seq_dim))],
                          {"weight": table})
            return
        _, vals = self.probe_values(nd, ids)
        if all(v.ndim <= 2 and v.shape[-1:] == (n,) and np.all(v == np.arange(n)) for _, n, _, v in vals):
            first = self.inputs_spec[0]["name"]
            self.positions_rows = table.shape[0] if self.positions_rows is None else min(self.positions_rows,
                                                                                         table.shape[0])
            self.add_node(nd, "gather", [_Tensor(first, (None, self.seq_dim))], {"weight": table}, positions=True)
            return
        if all(v.ndim <= 2 and v.shape[-1:] == (n,) and not np.any(v) for _, n, _, v in vals):
            # token types left out of the export: transformers reads row 0 for every token, which is a position
            # gather of a table whose rows are all row 0 (its row count set with the position table's in run)
            first = self.inputs_spec[0]["name"]
            t = self.add_node(nd, "gather", [_Tensor(first, (None, self.seq_dim))], {"weight": table[:1]},
                              positions=True)
            self.row_tables.append(t.name)
            return
        self.fail(nd, "gathers embedding rows by ids that are neither a graph input, the positions 0..L-1 nor zeros")

    def attention_bias(self, nd, p):
        """The fixq attention_mask tensor that probe `p`, an additive bias of the scores, equals, or None."""
        source, vals = self.probe_values(nd, p)
        if source is None:
            return None
        value = None
        for n, length, mask, v in vals:
            if v.dtype.kind != "f" or v.ndim != 4 or v.shape[0] != n or v.shape[1] != 1 \
                    or v.shape[2] not in (1, length) or v.shape[3] != length:
                return None
            m = np.broadcast_to(mask[:, None, None, :], v.shape)
            if np.any(v[m == 1] != 0):
                return None
            masked = np.unique(v[m == 0])
            if masked.size != 1 or not masked[0] < 0 or (value is not None and masked[0] != value):
                return None
            value = masked[0]
        value = float(np.finfo(np.float32).min) if np.isinf(value) else float(value)
        key = (source, value)
        if key not in self.mask_bias:
            mask = _Tensor(self.fixq_input[source], (None, self.seq_dim))
            self.mask_bias[key] = self.add_node(nd, "attention_mask", [mask], value=value, suffix="mask")
        return self.mask_bias[key]

    def is_mask(self, nd, p, divisor=False):
        """Whether probe `p` is the 0/1 mask of one input as [N, L, 1] (a multiplier), or, with `divisor`, the
        count of its ones as [N, 1] (sentence-transformers' clamped sum)."""
        source, vals = self.probe_values(nd, p)
        if source is None:
            return None
        for n, length, mask, v in vals:
            want = np.maximum(mask.sum(1), 1e-9)[:, None] if divisor else mask[:, :, None]
            if v.ndim != want.ndim or v.shape[:-1] != want.shape[:-1] or not np.array_equal(
                    v, np.broadcast_to(want, v.shape)):
                return None
        return source

    # -- fixq tensors --------------------------------------------------------------------------------
    def last_axis_vector(self, c, t):
        """Constant `c` as a vector over the last dim of tensor `t` (a scalar repeated), or None."""
        c = np.asarray(c, dtype=np.float64)
        d = t.shape[-1]
        if c.ndim > len(t.shape) or any(s != 1 for s in c.shape[:-1]) or (c.ndim and c.shape[-1] not in (1, d)):
            return None
        return np.broadcast_to(c.reshape(-1), (d,)).copy()

    def fold_constant(self, nd, op, t, c):
        """Add / Sub / Mul / Div of tensor `t` by constant `c` folded into the linear or layer_norm whose only
        reader this is; a Mul / Div by a scalar elsewhere is a scale.  False when neither applies."""
        spec = self.foldable_producer(nd, t, ("linear", "layer_norm"))
        vec = self.last_axis_vector(c, t) if spec is not None else None
        if spec is not None and vec is not None:
            if op in ("Add", "Sub"):
                self.scale_producer(spec, add=vec if op == "Add" else -vec)
            else:
                self.scale_producer(spec, mul=vec if op == "Mul" else 1.0 / vec)
            self.env[nd.output[0]] = t
            return True
        v = _scalar(c)
        if op in ("Mul", "Div") and v is not None:
            self.add_node(nd, "scale", [t], value=v if op == "Mul" else 1.0 / v)
            return True
        return False

    def split(self, nd, a, b):
        """(the activation side, the other side) of a binary node: a fixq tensor or partial pattern first."""
        return (a, b) if isinstance(a, (_Tensor, _Partial)) else (b, a)

    def seq_Add(self, nd, a, b):
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if len(a.shape) != len(b.shape):
                self.fail(nd, f"inputs of shapes {list(a.shape)} and {list(b.shape)}; fixq's add broadcasts tensors "
                          "of one rank")
            self.add_node(nd, "add", [a, b])
            return
        x, c = self.split(nd, a, b)
        v = _scalar(c)
        if isinstance(x, _Partial) and v is not None:
            if x.kind == "var":
                self.env[nd.output[0]] = _Partial("var_eps", x.x, v)
                return
            if x.kind == "erf" and v == 1:
                self.env[nd.output[0]] = _Partial("erf1", x.x)
                return
        if isinstance(x, _Tensor) and isinstance(c, _Probe):
            bias = self.attention_bias(nd, c)
            if bias is None:
                self.fail(nd, "adds a tensor computed from the integer inputs that is not an attention mask's "
                          "additive bias ([N, 1, 1 or L, L]: 0 where the mask is 1, one negative value where it is 0)")
            self.add_node(nd, "add", [x, bias])
            return
        if isinstance(x, _Tensor) and isinstance(c, np.ndarray) and self.fold_constant(nd, "Add", x, c):
            return
        self.fail(nd, "Add is supported between activations, of a constant bias after a MatMul / LayerNormalization "
                  "(its only reader), of an attention mask's bias, and in layer normalization and GELU patterns")

    def seq_Sub(self, nd, a, b):
        if isinstance(a, _Tensor) and isinstance(b, _Partial) and b.kind == "mean" and b.x is a:
            self.env[nd.output[0]] = _Partial("centered", a)
            return
        if isinstance(a, _Tensor) and isinstance(b, np.ndarray) and self.fold_constant(nd, "Sub", a, b):
            return
        self.fail(nd, "Sub is supported as x - ReduceMean(x) of a layer normalization and as a bias")

    def seq_Mul(self, nd, a, b):
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            self.add_node(nd, "mul", [a, b])
            return
        x, c = self.split(nd, a, b)
        for t, p in ((a, b), (b, a)):
            if isinstance(t, _Tensor) and isinstance(p, _Partial) and p.kind == "erf1" and p.x is t:
                self.env[nd.output[0]] = _Partial("gelu2", t)       # x (1 + erf(x / sqrt 2))
                return
        if isinstance(x, _Partial) and x.kind == "gelu2" and _scalar(c) == 0.5:
            self.add_node(nd, "gelu", [x.x], approximate="none")
            return
        if isinstance(x, _Tensor) and isinstance(c, _Probe):
            source = self.is_mask(nd, c)
            if source is None:
                self.fail(nd, "multiplies by a tensor computed from the integer inputs that is not a 0/1 mask "
                          "[N, L, 1] (mean pooling)")
            self.env[nd.output[0]] = _Partial("masked", x, source)
            return
        if isinstance(x, _Tensor) and isinstance(c, np.ndarray) and self.fold_constant(nd, "Mul", x, c):
            return
        self.fail(nd, "Mul is supported by a constant (scale, or folded into a MatMul / LayerNormalization), "
                  "between activations, in the erf form of GELU and by the mask of mean pooling")

    def seq_Div(self, nd, a, b):
        if isinstance(a, _Partial) and a.kind == "centered" and isinstance(b, _Partial) and b.kind == "std" \
                and b.x is a.x:
            d = a.x.shape[-1]
            self.add_node(nd, "layer_norm", [a.x], {"weight": np.ones(d), "bias": np.zeros(d)}, eps=b.value)
            return
        if isinstance(a, _Partial) and a.kind == "masked_sum" and isinstance(b, _Probe):
            if self.is_mask(nd, b, divisor=True) != a.value:
                self.fail(nd, "divides a masked sum by a tensor that is not the count of the mask's ones")
            self.add_node(nd, "masked_mean", [a.x, _Tensor(self.fixq_input[a.value], (None, self.seq_dim))])
            return
        if isinstance(a, _Tensor) and isinstance(b, _Partial) and b.kind == "l2" and b.x is a:
            self.add_node(nd, "l2_normalize", [a], eps=b.value)
            return
        if isinstance(a, _Tensor) and isinstance(b, np.ndarray):
            if _scalar(b) is not None and abs(_scalar(b) - _SQRT2) < 1e-6:
                self.env[nd.output[0]] = _Partial("div", a, _scalar(b))
                return
            if self.fold_constant(nd, "Div", a, b):
                return
        self.fail(nd, "Div is supported by a constant, in layer normalization, mean pooling and L2 normalization")

    def seq_Erf(self, nd, x):
        if not isinstance(x, _Partial) or x.kind != "div":
            self.fail(nd, "Erf is supported in GELU's erf form, x * 0.5 * (1 + erf(x / sqrt(2)))")
        self.env[nd.output[0]] = _Partial("erf", x.x)

    def reduce_axes(self, nd):
        axes = self.attr(nd, "axes")
        if axes is None and len(nd.input) > 1 and nd.input[1]:
            axes = self.const(nd, 1, "axes").tolist()
        return axes

    def seq_ReduceMean(self, nd, x, *_):
        axes = self.reduce_axes(nd)
        base = x.x if isinstance(x, _Partial) else x
        if axes is None or len(axes) != 1 or axes[0] % len(base.shape) != len(base.shape) - 1 \
                or not self.attr(nd, "keepdims", 1):
            self.fail(nd, "ReduceMean is supported over the last axis with keepdims=1 (layer normalization)")
        if isinstance(x, _Tensor):
            self.env[nd.output[0]] = _Partial("mean", x)
        elif x.kind == "square":
            self.env[nd.output[0]] = _Partial("var", x.x)
        else:
            self.fail(nd, f"ReduceMean of a partial {x.kind} pattern is not understood")

    def seq_Pow(self, nd, x, e):
        if isinstance(x, _Partial) and x.kind == "centered" and _scalar(e) == 2:
            self.env[nd.output[0]] = _Partial("square", x.x)
            return
        self.fail(nd, "Pow is supported as (x - mean)^2 of a layer normalization")

    def seq_Sqrt(self, nd, x):
        if not isinstance(x, _Partial) or x.kind != "var_eps":
            self.fail(nd, "Sqrt is supported as sqrt(variance + eps) of a layer normalization")
        self.env[nd.output[0]] = _Partial("std", x.x, x.value)

    def seq_ReduceSum(self, nd, x, *_):
        axes = self.reduce_axes(nd)
        if isinstance(x, _Partial) and x.kind == "masked" and axes is not None and len(axes) == 1 \
                and axes[0] % 3 == 1 and not self.attr(nd, "keepdims", 1) and len(x.x.shape) == 3:
            self.env[nd.output[0]] = _Partial("masked_sum", x.x, x.value)
            return
        self.fail(nd, "ReduceSum is supported over the tokens of a masked [N, L, D] tensor (mean pooling)")

    def seq_ReduceL2(self, nd, x, *_):
        axes = self.reduce_axes(nd)
        if isinstance(x, _Tensor) and axes is not None and len(axes) == 1 \
                and axes[0] % len(x.shape) == len(x.shape) - 1 and self.attr(nd, "keepdims", 1):
            self.env[nd.output[0]] = _Partial("norm", x)
            return
        self.fail(nd, "ReduceL2 is supported over the last axis with keepdims=1 (L2 normalization)")

    def seq_Clip(self, nd, x, lo=None, hi=None):
        lo = self.attr(nd, "min") if self.opset < 11 else lo
        hi = self.attr(nd, "max") if self.opset < 11 else hi
        if isinstance(x, _Partial) and x.kind == "norm" and _scalar(lo) is not None and hi is None:
            self.env[nd.output[0]] = _Partial("l2", x.x, _scalar(lo))
            return
        self.fail(nd, "Clip is supported as the clamp of an L2 norm (torch.nn.functional.normalize)")

    def seq_Expand(self, nd, x, shape):
        if isinstance(x, _Partial) and x.kind == "l2":
            self.env[nd.output[0]] = x
            return
        self.fail(nd, "Expand of an activation is supported in L2 normalization only")

    def seq_IsNaN(self, nd, x):
        self.env[nd.output[0]] = _Partial("isnan", self.tensor(nd))

    def seq_Where(self, nd, cond, a, b):
        # Where(IsNaN(p), 0, p): softmax of a row the mask hides entirely; fixq's additive bias is finite, so p
        # holds no NaN
        if isinstance(cond, _Partial) and cond.kind == "isnan" and b is cond.x and isinstance(a, np.ndarray) \
                and np.all(a == 0):
            self.env[nd.output[0]] = b
            return
        self.fail(nd, "Where is supported as Where(IsNaN(x), 0, x) after a softmax")

    def seq_Cast(self, nd, x):
        if self.attr(nd, "to") != self.onnx.TensorProto.FLOAT:
            self.fail(nd, "Cast of an activation to a type other than float32 is not supported")
        self.env[nd.output[0]] = self.tensor(nd)

    def seq_MatMul(self, nd, a, b):
        t = self.tensor(nd)
        if isinstance(b, np.ndarray):
            if b.ndim != 2 or len(t.shape) not in (2, 3) or b.shape[0] != t.shape[-1]:
                self.fail(nd, f"MatMul of {list(t.shape)} by a constant of shape {list(b.shape)}; fixq's linear is "
                          "[N, K] or [N, L, K] by [K, M]")
            self.add_node(nd, "linear", [t], {"weight": b.T})
            return
        self.add_node(nd, "matmul", [t, self.tensor(nd, 1)])

    def seq_Gemm(self, nd, *_):
        self.op_Gemm(nd)

    def seq_Gelu(self, nd, x):
        approx = self.attr(nd, "approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        self.add_node(nd, "gelu", [self.tensor(nd)], approximate=approx)

    def seq_LayerNormalization(self, nd, x, w, b=None):
        t = self.tensor(nd)
        if self.attr(nd, "axis", -1) % len(t.shape) != len(t.shape) - 1:
            self.fail(nd, "LayerNormalization is supported over the last axis")
        scale = self.const(nd, 1, "Scale")
        bias = self.opt_const(nd, 2)
        d = t.shape[-1]
        wts = {"weight": np.broadcast_to(scale.reshape(-1), (d,)),
               "bias": np.zeros(d) if bias is None else np.broadcast_to(bias.reshape(-1), (d,))}
        self.add_node(nd, "layer_norm", [t], wts, eps=float(self.attr(nd, "epsilon", 1e-5)))

    def seq_Softmax(self, nd, x):
        t = self.tensor(nd)
        axis = self.attr(nd, "axis", -1 if self.opset >= 13 else 1) % len(t.shape)
        if self.opset < 13 and axis != len(t.shape) - 1:
            self.fail(nd, "Softmax before opset 13 over more than the last axis is not supported")
        self.add_node(nd, "softmax", [t], axis=axis)

    def seq_Transpose(self, nd, x):
        perm = self.attr(nd, "perm")
        if isinstance(x, _Partial) and x.kind == "merged" and list(perm or []) == [0, 2, 1]:
            self.env[nd.output[0]] = _Partial("merged", x.x, not x.value)
            return
        t = self.tensor(nd)
        self.add_node(nd, "transpose", [t], perm=list(perm) if perm is not None else list(range(len(t.shape)))[::-1])

    def same_dims(self, dims, shape):
        return len(dims) == len(shape) and all(
            (isinstance(d, _Seq) and d.dim == s) or (not isinstance(d, _Batch) and isinstance(s, int) and int(d) == s)
            for d, s in zip(dims, shape))

    def seq_Reshape(self, nd, x, target):
        target = self.const(nd, 1, "shape")
        dims = list(target.flat)
        if self.attr(nd, "allowzero", 0) and 0 in [d for d in dims if not isinstance(d, _Batch)]:
            self.fail(nd, "allowzero=1 with a 0 in the shape is not supported")
        # torch's scaled_dot_product_attention (dynamo export) transposes a key as [B, H, L, D] -> [B*H, L, D] ->
        # [B*H, D, L] -> [B, H, D, L]: one transpose of the last two axes
        if isinstance(x, _Tensor) and len(x.shape) > 3 and len(dims) == 3 and not isinstance(dims[0], _Batch) \
                and int(dims[0]) == -1 and self.same_dims(dims[1:], x.shape[-2:]):
            self.env[nd.output[0]] = _Partial("merged", x, False)
            return
        if isinstance(x, _Partial) and x.kind == "merged":
            t = x.x
            tail = t.shape[-2:][::-1] if x.value else t.shape[-2:]
            if not dims or dims[0] is not BATCH or not self.same_dims(dims[1:], t.shape[1:-2] + tail):
                self.fail(nd, f"Reshape to {dims} does not undo the merge of the batch with the heads")
            if x.value:
                perm = list(range(len(t.shape)))
                perm[-2:] = perm[-1], perm[-2]
                self.add_node(nd, "transpose", [t], perm=perm)
            else:
                self.env[nd.output[0]] = t
            return
        t = self.tensor(nd)
        if not dims or not (dims[0] is BATCH or (not isinstance(dims[0], _Batch) and int(dims[0]) == 0)):
            self.fail(nd, f"Reshape to {dims} does not keep the batch first")
        out = []
        for i, d in enumerate(dims[1:], 1):
            if isinstance(d, _Seq):
                out.append(0 if i < len(t.shape) and t.shape[i] == d.dim else -1)
            elif d is BATCH:
                self.fail(nd, f"Reshape to {dims} moves the batch")
            else:
                out.append(int(d))
        self.add_node(nd, "reshape", [t], shape=out)

    def seq_Identity(self, nd, x):
        self.env[nd.output[0]] = x

    seq_Dropout = seq_Identity

    # -- the graph -----------------------------------------------------------------------------------
    def run(self):
        self.walk(self.visit)
        outputs = []
        for name in self.graph_outputs:
            v = self.env.get(name)
            if not isinstance(v, _Tensor):
                raise OnnxError(f"output {name!r}: is not computed from the model's activations ({type(v).__name__}); "
                                f"fixq outputs are computed tensors ({DOCS})")
            if v.name in outputs:
                raise OnnxError(f"output {name!r}: is the same tensor as another output")
            outputs.append(v.name)
        if self.positions_rows is None:
            raise OnnxError(f"model: no position embedding (a Gather of the positions 0..L-1) bounds the sequence "
                            f"length ({DOCS})")
        for name in self.row_tables:
            key = name + ".weight"
            self.weights[key] = np.repeat(self.weights[key], self.positions_rows, axis=0)
        read = {t for s in self.spec_nodes for t in s["inputs"]}
        gathered = {s["inputs"][0] for s in self.spec_nodes if s["op"] == "gather" and not s.get("positions")}
        others = {t for s in self.spec_nodes if s["op"] != "gather" or s.get("positions") for t in s["inputs"]}
        inputs = []
        for k, i in enumerate(self.inputs_spec):
            if i["name"] not in read:
                continue
            opt = k > 0 and i["name"] in gathered and i["name"] not in others   # token types: zeros when left out
            inputs.append(dict(i, shape=[None, str(self.seq_dim)], optional=opt) if opt
                          else dict(i, shape=[None, str(self.seq_dim)]))
        spec = {"format": G.GRAPH_FORMAT, "inputs": inputs, "dims": {str(self.seq_dim): self.positions_rows},
                "nodes": self.spec_nodes, "outputs": outputs}
        try:
            return G.validate(spec, dict(self.weights))
        except G.GraphError as e:
            raise OnnxError(f"model: the imported graph is not valid ({e}) ({DOCS})") from None


def import_sequence(model, constants=None):
    """A validated float sequence :class:`fixq.graph.Graph` from an ``onnx.ModelProto`` of a transformer encoder
    (integer inputs: token ids, attention mask, token types)."""
    return _SequenceImporter(model, constants).run()
