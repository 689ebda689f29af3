"""The ops of a float graph: the table of ops and their attributes, the checks of each node's
attributes and weights, and the shape each op gives.  A new op starts here (docs/architecture.md)."""
import re

import numpy as np

ACTIVATIONS = ("relu", "relu6", "none")

# op -> (number of inputs (None: 2 or more), allowed attributes with their defaults)
OPS = {
    "linear": (1, {"weight": None, "bias": None}),
    "conv2d": (1, {"weight": None, "bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "relu": (1, {}),
    "relu6": (1, {}),
    "maxpool2d": (1, {"kernel": None, "stride": None, "padding": 0}),
    "avgpool2d": (1, {"kernel": None, "stride": None, "padding": 0, "count_include_pad": True}),
    "global_avgpool": (1, {"keep_dims": False}),
    "flatten": (1, {}),
    "add": (2, {"broadcast": False, "constant": None, "constant_shape": None}),
    "mul": (2, {"broadcast": False, "constant": None, "constant_shape": None}),
    "sub": (2, {"broadcast": False, "constant": None, "constant_shape": None}),
    "concat": (None, {"axis": 1}),
    "softmax": (1, {"axis": -1, "beta": 1.0}),
    "pad": (1, {"padding": None}),
    "requantize": (1, {"uint8": False}),
    "sigmoid": (1, {}),
    "tanh": (1, {}),
    "hardswish": (1, {}),
    "leaky_relu": (1, {"alpha": 0.01}),
    "hardsigmoid": (1, {"alpha": 0.2, "beta": 0.5}),
    # an inference BatchNormalization left unfolded: y = x * scale[c] + shift[c] over axis 1, in float32
    "batchnorm": (1, {"scale": None, "shift": None}),
    # sequence ops (docs/transformers.md): tensors keep their layout, dims may be symbolic
    "gather": (1, {"weight": None, "positions": False}),
    "layer_norm": (1, {"weight": None, "bias": None, "eps": 1e-5}),
    "gelu": (1, {"approximate": "none"}),
    "matmul": (2, {}),
    "transpose": (1, {"perm": None}),
    "reshape": (1, {"shape": None}),
    "scale": (1, {"value": None}),
    "attention_mask": (1, {"value": -3.4028234663852886e38}),
    "masked_mean": (2, {}),
    "l2_normalize": (1, {"eps": 1e-12}),
}
WEIGHTED = ("linear", "conv2d")
# Ops with float weights that stay float in every mode: their weight keys (fixq.quantizer stores them as float32)
FLOAT_WEIGHTED = {"gather": ("weight",), "layer_norm": ("weight", "bias")}
# Ops only sequence graphs hold; a graph with one of them, several inputs, an integer input or a symbolic dim is a
# sequence graph: its tensors keep their own layout (no NCHW -> NHWC) and the ops below it cannot hold
SEQUENCE_OPS = ("gather", "layer_norm", "gelu", "matmul", "transpose", "reshape", "scale", "attention_mask",
                "masked_mean", "l2_normalize")
IMAGE_OPS = ("conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "flatten")
# Which input of an op reads integers: token ids (gather) or a 0/1 mask (attention_mask, masked_mean)
INT_INPUTS = {"gather": {0: "ids"}, "attention_mask": {0: "mask"}, "masked_mean": {1: "mask"}}
INPUT_DTYPES = ("float32", "int32", "int64")
MAX_RANK = 8
# Elementwise functions of one value: int8 in, int8 out through a 256-entry table (docs/engine.md)
TABLE_OPS = ("sigmoid", "tanh", "hardswish", "leaky_relu", "hardsigmoid")

# What a model file may declare (docs/security.md).  Every reader (fixq.archive and the importers of
# fixq.io) checks its files against this one table before anything is allocated or reaches C.
LIMITS = {
    "name_length": 128,              # a node or tensor name: 1 to 128 characters of NAME_CHARS
    "nodes": 100_000,                # nodes of a graph, steps of a quantized archive
    "elements": 2**27,               # per sample: every tensor, a conv's padded input and its patches
    "attribute": 2**16,              # kernel, stride, padding, dilation (each side), groups, axis
    "pool_area": 2**23,              # avgpool kernel and global_avgpool input area: the int32 sum is exact
    "archive_bytes": 2**31,          # all members of an archive, uncompressed
    "engine_tensors": 1024,          # the C plan of a static int8 model: its tensors (steps + 2) ...
    "engine_outputs": 64,            # ... and its outputs
    "inputs": 16,                    # inputs of a graph
}
NAME_CHARS = "letters, digits, '_', '.' and '-'"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class GraphError(ValueError):
    """A float model archive or graph that fixq cannot run (one line: the node and the key)."""


class Dim(str):
    """A symbolic dim of a sequence graph (the sequence length): its name, and ``max``, the largest size it
    takes (the graph's ``dims``), by which sizes are checked against LIMITS.  JSON writes it as its name."""
    max = 0

    def __new__(cls, name, maximum):
        d = super().__new__(cls, name)
        d.max = maximum
        return d


def parse_shape(what, shape, dims, batch=True):
    """`shape` of a JSON spec as a tuple: None batch first, then positive ints or names of `dims` (Dim);
    a one-line GraphError naming `what` otherwise."""
    if (not isinstance(shape, list) or not 2 <= len(shape) <= MAX_RANK or (batch and shape[0] is not None)
            or not all(_is_int(d, 1, 2**62) or (isinstance(d, str) and d in dims) for d in shape[1:])):
        raise GraphError(f"{what}: key 'shape' must be [null, ...] with 1 to {MAX_RANK - 1} positive sizes or names "
                         f"of the graph's 'dims' ({sorted(dims)}), got {shape!r}")
    return (None,) + tuple(Dim(d, dims[d]) if isinstance(d, str) else d for d in shape[1:])


def parse_dims(what, dims):
    """A graph's ``dims`` (symbolic dim -> its largest size) checked: names of NAME_CHARS, sizes within
    LIMITS["attribute"]."""
    if not isinstance(dims, dict):
        raise GraphError(f"{what}: key 'dims' must be an object of name -> largest size, got {dims!r}")
    for k, v in dims.items():
        check_name(f"{what}: key 'dims'", k)
        if not _is_int(v, 1, LIMITS["attribute"]):
            raise GraphError(f"{what}: key 'dims': {k!r} must be an integer from 1 to {LIMITS['attribute']}, got {v!r}")
    return dict(dims)


class Node:
    __slots__ = ("name", "op", "inputs", "attrs")

    def __init__(self, name, op, inputs, attrs):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs

    def __repr__(self):
        return f"Node({self.name!r}, {self.op!r}, {self.inputs!r}, {self.attrs!r})"


def check_name(what, name):
    """`name` (a node or tensor name) as it is, if it is 1 to LIMITS["name_length"] of NAME_CHARS: fixq's
    archives key arrays by ``<name>:<key>`` and ``t:<name>:<key>``, so ':' and '/' are not allowed."""
    if (not isinstance(name, str) or not 0 < len(name) <= LIMITS["name_length"]
            or _NAME.fullmatch(name) is None):
        raise GraphError(f"{what}: name {str(name)[:LIMITS['name_length']]!r} must be 1 to "
                         f"{LIMITS['name_length']} characters of {NAME_CHARS}")
    return name


def _is_int(v, minimum, maximum):
    return isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= maximum


def _pair(node, key, v, minimum):
    top = LIMITS["attribute"]
    vals = [v, v] if isinstance(v, int) and not isinstance(v, bool) else v
    if (not isinstance(vals, (list, tuple)) or len(vals) != 2
            or not all(_is_int(i, minimum, top) for i in vals)):
        raise GraphError(f"node {node!r}: key {key!r} must be an integer >= {minimum} or a pair of them "
                         f"(at most {top}), got {v!r}")
    return tuple(vals)


def _check_int(node, key, v, minimum):
    top = LIMITS["attribute"]
    if not _is_int(v, minimum, top):
        raise GraphError(f"node {node!r}: key {key!r} must be an integer >= {minimum} (at most {top}), got {v!r}")
    return v


def check_elements(node, what, shape):
    """`shape` (batch None) holds at most LIMITS["elements"] values per sample."""
    n = 1
    for d in shape[1:]:
        n *= d.max if isinstance(d, Dim) else d
    if n > LIMITS["elements"]:
        raise GraphError(f"node {node!r}: {what} {list(shape)} holds {n} values per sample, more than "
                         f"{LIMITS['elements']} (docs/security.md)")


def _finite(node, key, w):
    if not np.all(np.isfinite(w)):
        raise GraphError(f"node {node!r}: weight key {key!r} contains NaN or Inf")


def pad4(padding):
    """A pool's or pad's padding as (top, left, bottom, right): from a pair (symmetric) or four values."""
    return tuple(padding) * 2 if len(padding) == 2 else tuple(padding)


def _padding(node, key, v, kernel=None):
    """A pair (int or [h, w], symmetric) or four values [top, left, bottom, right] (TFLite's SAME puts the
    odd one after), each below the kernel where there is one."""
    top = LIMITS["attribute"]
    if isinstance(v, (list, tuple)) and len(v) == 4:
        if not all(_is_int(i, 0, top) for i in v):
            raise GraphError(f"node {node!r}: key {key!r} must be four integers >= 0 (at most {top}), got {v!r}")
        if kernel is not None and any(p >= k for p, k in zip(v, kernel * 2)):
            raise GraphError(f"node {node!r}: key {key!r} {list(v)} must be below the kernel {list(kernel)}")
        return tuple(v)
    return _pair(node, key, v, 0)


def _pool_out(node, h, k, s, p, d=(1, 1)):
    o = []
    t, left, b, r = pad4(p)
    check_elements(node, "key 'padding' gives a padded input of shape", (None, h[0] + t + b, h[1] + left + r))
    for i in range(2):
        span = d[i] * (k[i] - 1) + 1
        n = (h[i] + (t + b, left + r)[i] - span) // s[i] + 1
        if n < 1:
            raise GraphError(f"node {node!r}: key 'kernel' {k} (dilation {d}, padding {p}) does not fit the "
                             f"{h[0]}x{h[1]} input")
        o.append(n)
    return tuple(o)


def _weight(node, key_attr, default_key, weights, out, used, required):
    key = node.attrs[key_attr] if node.attrs[key_attr] is not None else default_key
    if not isinstance(key, str):
        raise GraphError(f"node {node.name!r}: key {key_attr!r} must name an array, got {key!r}")
    if key not in weights:
        if required or node.attrs[key_attr] is not None:
            raise GraphError(f"node {node.name!r}: weight key {key!r} is missing from the archive")
        return None
    _finite(node.name, key, weights[key])
    out[key] = weights[key]
    used.add(key)
    node.attrs[key_attr] = key
    return weights[key]


def infer_shape(node, in_shapes, weights, out_w, used, sequence=False):
    """The output shape of `node` (NCHW order, batch None) from its input shapes, its attributes checked
    and normalized in place (pairs as tuples, axes non-negative); its weights checked, recorded in `out_w`
    and their keys in `used`."""
    name, a = node.name, node.attrs
    w_shape = None
    if node.op in WEIGHTED:
        w = _weight(node, "weight", name + ".weight", weights, out_w, used, True)
        b = _weight(node, "bias", name + ".bias", weights, out_w, used, False)
        if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[0]):
            raise GraphError(f"node {name!r}: bias key {a['bias']!r} has shape {b.shape}; expected "
                             f"({w.shape[0]},)")
        w_shape = w.shape
    elif node.op in FLOAT_WEIGHTED:
        w = _weight(node, "weight", name + ".weight", weights, out_w, used, True)
        if node.op == "layer_norm":
            b = _weight(node, "bias", name + ".bias", weights, out_w, used, False)
            if b is not None and b.shape != w.shape:
                raise GraphError(f"node {name!r}: bias key {a['bias']!r} has shape {b.shape}; expected {w.shape}")
        w_shape = w.shape
    return output_shape(node, in_shapes, w_shape, sequence)


def output_shape(node, in_shapes, w_shape=None, sequence=False):
    """The output shape of `node` (NCHW order, batch None) from its input shapes and, for linear, conv2d,
    gather and layer_norm, the shape of its weight; its attributes checked against LIMITS and normalized
    in place (pairs as tuples, axes non-negative).  In a `sequence` graph add and mul broadcast and the
    NCHW ops are refused.  fixq.archive checks the steps of quantized archives with it too."""
    name, op, a = node.name, node.op, node.attrs
    x = in_shapes[0]
    wkey = a.get("weight")
    if sequence and op in IMAGE_OPS:
        raise GraphError(f"node {name!r}: key 'op' {op} works on NCHW images and this is a sequence graph "
                         "(docs/transformers.md)")
    if op in SEQUENCE_OPS:
        return _sequence_shape(node, in_shapes, w_shape)
    if op == "linear":
        if len(w_shape) != 2:
            raise GraphError(f"node {name!r}: weight key {wkey!r} has shape {tuple(w_shape)}; linear needs "
                             "[out, in]")
        if len(x) not in (2, 3) or x[-1] != w_shape[1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)} but weight "
                             f"{wkey!r} has shape {list(w_shape)} (needs [null, {w_shape[1]}] or "
                             f"[null, L, {w_shape[1]}])")
        return check_out(name, x[:-1] + (w_shape[0],))
    if op == "conv2d":
        if len(w_shape) != 4:
            raise GraphError(f"node {name!r}: weight key {wkey!r} has shape {tuple(w_shape)}; conv2d needs "
                             "[O, I/groups, kH, kW]")
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; conv2d needs [N, C, H, W]")
        a["stride"] = _pair(name, "stride", a["stride"], 1)
        a["padding"] = _pair(name, "padding", a["padding"], 0)
        a["dilation"] = _pair(name, "dilation", a["dilation"], 1)
        gr = _check_int(name, "groups", a["groups"], 1)
        if x[1] % gr or w_shape[0] % gr or w_shape[1] * gr != x[1]:
            raise GraphError(f"node {name!r}: key 'groups'={gr} does not fit {x[1]} input channels and weight "
                             f"{wkey!r} of shape {list(w_shape)}")
        oh, ow = _pool_out(name, x[2:], w_shape[2:], a["stride"], a["padding"], a["dilation"])
        check_elements(name, "its patches, of shape", (None, oh, ow, w_shape[1], w_shape[2], w_shape[3]))
        return check_out(name, (None, w_shape[0], oh, ow))
    if op in ("maxpool2d", "avgpool2d"):
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; {op} needs [N, C, H, W]")
        if a["kernel"] is None:
            raise GraphError(f"node {name!r}: key 'kernel' is required for {op}")
        a["kernel"] = _pair(name, "kernel", a["kernel"], 1)
        a["stride"] = _pair(name, "stride", a["stride"] if a["stride"] is not None else a["kernel"], 1)
        a["padding"] = _padding(name, "padding", a["padding"], a["kernel"])
        if len(a["padding"]) == 2 and any(p * 2 > k for p, k in zip(a["padding"], a["kernel"])):
            raise GraphError(f"node {name!r}: key 'padding' {a['padding']} must be at most half the kernel")
        if op == "avgpool2d" and not isinstance(a["count_include_pad"], bool):
            raise GraphError(f"node {name!r}: key 'count_include_pad' must be true or false, "
                             f"got {a['count_include_pad']!r}")
        if op == "avgpool2d" and a["kernel"][0] * a["kernel"][1] > LIMITS["pool_area"]:
            raise GraphError(f"node {name!r}: key 'kernel' {a['kernel']} covers more than {LIMITS['pool_area']} "
                             "values (docs/security.md)")
        return check_out(name, (None, x[1]) + _pool_out(name, x[2:], a["kernel"], a["stride"], a["padding"]))
    if op == "global_avgpool":
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; global_avgpool needs "
                             "[N, C, H, W]")
        if x[2] * x[3] > LIMITS["pool_area"]:
            raise GraphError(f"node {name!r}: key 'inputs' gives a {x[2]}x{x[3]} input; global_avgpool takes at "
                             f"most {LIMITS['pool_area']} values a channel (docs/security.md)")
        if not isinstance(a["keep_dims"], bool):
            raise GraphError(f"node {name!r}: key 'keep_dims' must be true or false, got {a['keep_dims']!r}")
        return (None, x[1])
    if op == "pad":
        if len(x) != 4 or not isinstance(a["padding"], (list, tuple)) or len(a["padding"]) != 4:
            raise GraphError(f"node {name!r}: pad needs an [N, C, H, W] input and key 'padding' [top, left, "
                             f"bottom, right], got {list(x)} and {a['padding']!r}")
        t, left, b, r = a["padding"] = _padding(name, "padding", a["padding"])
        return check_out(name, (None, x[1], x[2] + t + b, x[3] + left + r))
    if op == "requantize":
        if not isinstance(a["uint8"], bool):
            raise GraphError(f"node {name!r}: key 'uint8' must be true or false, got {a['uint8']!r}")
        return x
    if op == "batchnorm":
        for key in ("scale", "shift"):
            v = a[key]
            if (len(x) not in (2, 4) or not isinstance(v, (list, tuple)) or len(v) != x[1]
                    or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and np.isfinite(e) for e in v)):
                raise GraphError(f"node {name!r}: batchnorm needs an [N, C] or [N, C, H, W] input and keys 'scale' "
                                 f"and 'shift' of C finite numbers; got input {list(x)} and {key} {str(v)[:60]}")
            a[key] = [float(np.float32(e)) for e in v]
        return x
    if op == "flatten":
        return (None, int(np.prod(x[1:])))
    if op in ("relu", "relu6"):
        return x
    if op in TABLE_OPS:
        for key in OPS[op][1]:
            v = a[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise GraphError(f"node {name!r}: key {key!r} must be a finite number, got {v!r}")
            a[key] = float(v)
        return x
    if op in ("add", "mul") and sequence:
        return check_out(name, broadcast(name, op, in_shapes[0], in_shapes[1]))
    if op in ("add", "mul", "sub") and (a.get("broadcast") or a.get("constant") is not None):
        return check_out(name, _binary_shape(node, in_shapes))
    if op in ("add", "mul", "sub"):
        if in_shapes[0] != in_shapes[1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shapes {list(in_shapes[0])} and "
                             f"{list(in_shapes[1])}; {op} needs equal shapes")
        return x
    if op == "concat":
        ax = a["axis"]
        if not _is_int(ax, -len(x), len(x) - 1) or ax % len(x) == 0:
            raise GraphError(f"node {name!r}: key 'axis'={ax!r} is out of range for shape {list(x)}")
        ax = a["axis"] = ax % len(x)
        for s in in_shapes:
            if len(s) != len(x) or any(s[i] != x[i] for i in range(1, len(x)) if i != ax):
                raise GraphError(f"node {name!r}: key 'inputs' gives shapes "
                                 f"{[list(s) for s in in_shapes]} that do not concatenate on axis {ax}")
        return check_out(name, tuple(sum(s[ax] for s in in_shapes) if i == ax else x[i] for i in range(len(x))))
    if op == "softmax":
        ax = a["axis"]
        if not _is_int(ax, -len(x), len(x) - 1) or ax % len(x) == 0:
            raise GraphError(f"node {name!r}: key 'axis'={ax!r} must be a non-batch axis of shape {list(x)}")
        a["axis"] = ax % len(x)
        beta = a["beta"]
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not np.isfinite(beta) or beta <= 0:
            raise GraphError(f"node {name!r}: key 'beta' must be a finite number > 0, got {beta!r}")
        a["beta"] = float(beta)
        return x
    raise AssertionError(op)


def check_out(node, shape):
    """`shape`, an output shape, within LIMITS["elements"]."""
    check_elements(node, "its output shape", shape)
    return shape


def is_depthwise(node, in_channels):
    return node.op == "conv2d" and node.attrs["groups"] == in_channels and in_channels > 1


def _number(node, key, v, positive=False):
    if (not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v)
            or (positive and not v > 0) or abs(v) > np.finfo(np.float32).max):
        raise GraphError(f"node {node!r}: key {key!r} must be a finite float32 number{' > 0' if positive else ''}, "
                         f"got {v!r}")
    return float(v)


def _binary_shape(node, in_shapes):
    """The output shape of an add / mul / sub with ``broadcast`` (a quantized model's step: its inputs
    broadcast, an [N, F] input against [N, C, H, W] ones as [N, F, 1, 1]) and an optional constant input:
    ``constant`` its position (0 or 1), ``constant_shape`` its shape without the batch."""
    name, op, a = node.name, node.op, node.attrs
    if not isinstance(a["broadcast"], bool):
        raise GraphError(f"node {name!r}: key 'broadcast' must be true or false, got {a['broadcast']!r}")
    shapes = list(in_shapes)
    if a["constant"] is not None:
        shape = a["constant_shape"]
        if (not _is_int(a["constant"], 0, 1) or not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3)
                or not all(_is_int(d, 1, LIMITS["elements"]) for d in shape) or len(in_shapes) != 1):
            raise GraphError(f"node {name!r}: keys 'constant' {a['constant']!r} and 'constant_shape' {shape!r} must "
                             "be the constant input's position (0 or 1) and its [F] or [C, H, W] shape, with one "
                             "other input")
        a["constant_shape"] = [int(d) for d in shape]
        shapes.insert(a["constant"], (None,) + tuple(a["constant_shape"]))
    elif a["constant_shape"] is not None:
        raise GraphError(f"node {name!r}: key 'constant_shape' is set without key 'constant'")
    rank = max(len(s) for s in shapes)
    shapes = [(None, s[1], 1, 1) if len(s) == 2 and rank == 4 else s for s in shapes]
    return broadcast(name, op, shapes[0], shapes[1])


def broadcast(node, op, a, b):
    """numpy's broadcast of shapes `a` and `b` of one rank: each dim equal, or one of them 1."""
    if len(a) != len(b) or not all(p == q or p == 1 or q == 1 for p, q in zip(a[1:], b[1:])):
        raise GraphError(f"node {node!r}: key 'inputs' gives shapes {list(a)} and {list(b)}; {op} needs one rank "
                         "and each dim equal or 1 (numpy broadcasting)")
    return (None,) + tuple(q if p == 1 else p for p, q in zip(a[1:], b[1:]))


def _dim_product(dims):
    """(the product of the int dims, the sorted names of the symbolic ones)."""
    n, syms = 1, []
    for d in dims:
        if isinstance(d, str):
            syms.append(d)
        else:
            n *= d
    return n, sorted(syms)


def _reshape(node, x, spec):
    """ONNX Reshape over the dims after the batch: 0 copies the input's dim at that place, -1 (at most one) is
    what is left; symbolic dims pass through 0 or -1."""
    name = node.name
    if (not isinstance(spec, list) or not 1 <= len(spec) < MAX_RANK
            or not all(_is_int(d, -1, 2**62) for d in spec) or spec.count(-1) > 1):
        raise GraphError(f"node {name!r}: key 'shape' must list 1 to {MAX_RANK - 1} sizes after the batch (0 copies "
                         f"the input's, at most one -1), got {spec!r}")
    rest = x[1:]
    out = []
    for i, d in enumerate(spec):
        if d == 0:
            if i >= len(rest):
                raise GraphError(f"node {name!r}: key 'shape' {spec} copies dim {i + 1} (0) of a rank-{len(x)} input")
            out.append(rest[i])
        else:
            out.append(d)
    n_in, s_in = _dim_product(rest)
    n_out, s_out = _dim_product([d for d in out if d != -1])
    if -1 in out:
        left = list(s_in)
        for s in s_out:
            if s not in left:
                left = None
                break
            left.remove(s)
        if left is None or n_in % n_out or len(left) > 1 or (left and n_in != n_out):
            raise GraphError(f"node {name!r}: key 'shape' {spec} cannot take the values of input shape {list(x)}")
        out[out.index(-1)] = next(d for d in rest if d == left[0]) if left else n_in // n_out
    elif (n_in, s_in) != (n_out, s_out):
        raise GraphError(f"node {name!r}: key 'shape' {spec} does not hold the values of input shape {list(x)}")
    return (None,) + tuple(out)


def _sequence_shape(node, in_shapes, w_shape):
    name, op, a = node.name, node.op, node.attrs
    x = in_shapes[0]
    wkey = a.get("weight")
    if op == "gather":
        if not isinstance(a["positions"], bool):
            raise GraphError(f"node {name!r}: key 'positions' must be true or false, got {a['positions']!r}")
        if len(w_shape) != 2:
            raise GraphError(f"node {name!r}: weight key {wkey!r} has shape {tuple(w_shape)}; gather needs [rows, D]")
        if a["positions"] and x[-1] != w_shape[0] and (not isinstance(x[-1], Dim) or x[-1].max > w_shape[0]):
            biggest = x[-1].max if isinstance(x[-1], Dim) else x[-1]
            raise GraphError(f"node {name!r}: key 'positions': its input's last dim takes up to {biggest} positions "
                             f"and weight {wkey!r} has {w_shape[0]} rows")
        return check_out(name, x + (w_shape[1],))
    if op == "layer_norm":
        a["eps"] = _number(name, "eps", a["eps"], positive=True)
        if tuple(w_shape) != (x[-1],):
            raise GraphError(f"node {name!r}: weight key {wkey!r} has shape {tuple(w_shape)}; expected ({x[-1]},), the "
                             f"last dim of input shape {list(x)}")
        return x
    if op == "gelu":
        if a["approximate"] not in ("none", "tanh"):
            raise GraphError(f"node {name!r}: key 'approximate' must be 'none' or 'tanh', got {a['approximate']!r}")
        return x
    if op == "matmul":
        b = in_shapes[1]
        if len(x) < 3 or len(b) != len(x) or x[1:-2] != b[1:-2] or x[-1] != b[-2]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shapes {list(x)} and {list(b)}; matmul needs "
                             "[N, ..., M, K] and [N, ..., K, N2] with the same leading dims")
        return check_out(name, x[:-1] + (b[-1],))
    if op == "transpose":
        p = a["perm"]
        if (not isinstance(p, list) or len(p) != len(x) or not all(_is_int(i, 0, len(x) - 1) for i in p)
                or sorted(p) != list(range(len(x))) or p[0] != 0):
            raise GraphError(f"node {name!r}: key 'perm' must be a permutation of 0..{len(x) - 1} that keeps the batch "
                             f"first, got {p!r}")
        return tuple(x[i] for i in p)
    if op == "reshape":
        return check_out(name, _reshape(node, x, a["shape"]))
    if op == "scale":
        if a["value"] is None:
            raise GraphError(f"node {name!r}: key 'value' is required for scale")
        a["value"] = _number(name, "value", a["value"])
        return x
    if op == "attention_mask":
        a["value"] = _number(name, "value", a["value"])
        if len(x) != 2:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; attention_mask needs a [N, L] mask")
        return (None, 1, 1, x[1])
    if op == "masked_mean":
        m = in_shapes[1]
        if len(x) < 3 or m != x[:-1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shapes {list(x)} and {list(m)}; masked_mean needs "
                             "[N, L, D] and its [N, L] mask")
        return (None, x[-1])
    if op == "l2_normalize":
        a["eps"] = _number(name, "eps", a["eps"], positive=True)
        return x
    raise AssertionError(op)


def check_input_kinds(node, kinds):
    """Each input of `node` of the kind it reads (INT_INPUTS): `kinds` gives "int" or "float" per input."""
    ints = INT_INPUTS.get(node.op, {})
    for i, k in enumerate(kinds):
        want = "int" if i in ints else "float"
        if k != want:
            raise GraphError(f"node {node.name!r}: key 'inputs' gives {node.inputs[i]!r}, an {k} tensor; {node.op} reads "
                             f"{'integer ' + ints[i] if i in ints else 'a float tensor'} there")
