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
    "add": (2, {}),
    "mul": (2, {}),
    "sub": (2, {}),
    "concat": (None, {"axis": 1}),
    "softmax": (1, {"axis": -1, "beta": 1.0}),
    "pad": (1, {"padding": None}),
    "requantize": (1, {}),
    "sigmoid": (1, {}),
    "tanh": (1, {}),
    "hardswish": (1, {}),
    "leaky_relu": (1, {"alpha": 0.01}),
    "hardsigmoid": (1, {"alpha": 0.2, "beta": 0.5}),
}
WEIGHTED = ("linear", "conv2d")
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
}
NAME_CHARS = "letters, digits, '_', '.' and '-'"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class GraphError(ValueError):
    """A float model archive or graph that fixq cannot run (one line: the node and the key)."""


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
        n *= d
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


def infer_shape(node, in_shapes, weights, out_w, used):
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
    return output_shape(node, in_shapes, w_shape)


def output_shape(node, in_shapes, w_shape=None):
    """The output shape of `node` (NCHW order, batch None) from its input shapes and, for linear and
    conv2d, the shape of its weight; its attributes checked against LIMITS and normalized in place (pairs
    as tuples, axes non-negative).  fixq.archive checks the steps of quantized archives with it too."""
    name, op, a = node.name, node.op, node.attrs
    x = in_shapes[0]
    wkey = a.get("weight")
    if op == "linear":
        if len(w_shape) != 2:
            raise GraphError(f"node {name!r}: weight key {wkey!r} has shape {tuple(w_shape)}; linear needs "
                             "[out, in]")
        if len(x) != 2 or x[1] != w_shape[1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)} but weight "
                             f"{wkey!r} has shape {list(w_shape)} (needs [null, {w_shape[1]}])")
        return (None, w_shape[0])
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
