"""The ops of a float graph: the table of ops and their attributes, the checks of each node's
attributes and weights, and the shape each op gives.  A new op starts here (docs/architecture.md)."""
import numpy as np

ACTIVATIONS = ("relu", "relu6", "none")

# op -> (number of inputs (None: 2 or more), allowed attributes with their defaults)
OPS = {
    "linear": (1, {"weight": None, "bias": None}),
    "conv2d": (1, {"weight": None, "bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "relu": (1, {}),
    "relu6": (1, {}),
    "maxpool2d": (1, {"kernel": None, "stride": None, "padding": 0}),
    "avgpool2d": (1, {"kernel": None, "stride": None, "padding": 0}),
    "global_avgpool": (1, {}),
    "flatten": (1, {}),
    "add": (2, {}),
    "mul": (2, {}),
    "concat": (None, {"axis": 1}),
    "softmax": (1, {"axis": -1}),
    "sigmoid": (1, {}),
    "tanh": (1, {}),
    "hardswish": (1, {}),
    "leaky_relu": (1, {"alpha": 0.01}),
    "hardsigmoid": (1, {"alpha": 0.2, "beta": 0.5}),
}
WEIGHTED = ("linear", "conv2d")
# Elementwise functions of one value: int8 in, int8 out through a 256-entry table (docs/engine.md)
TABLE_OPS = ("sigmoid", "tanh", "hardswish", "leaky_relu", "hardsigmoid")


class GraphError(ValueError):
    """A float model archive or graph that fixq cannot run (one line: the node and the key)."""


class Node:
    __slots__ = ("name", "op", "inputs", "attrs")

    def __init__(self, name, op, inputs, attrs):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs

    def __repr__(self):
        return f"Node({self.name!r}, {self.op!r}, {self.inputs!r}, {self.attrs!r})"


def _pair(node, key, v, minimum):
    vals = [v, v] if isinstance(v, int) and not isinstance(v, bool) else v
    if (not isinstance(vals, (list, tuple)) or len(vals) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= minimum for i in vals)):
        raise GraphError(f"node {node!r}: key {key!r} must be an integer >= {minimum} or a pair of them, "
                         f"got {v!r}")
    return tuple(vals)


def _check_int(node, key, v, minimum):
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise GraphError(f"node {node!r}: key {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _finite(node, key, w):
    if not np.all(np.isfinite(w)):
        raise GraphError(f"node {node!r}: weight key {key!r} contains NaN or Inf")


def _pool_out(node, h, k, s, p, d=(1, 1)):
    o = []
    for i in range(2):
        span = d[i] * (k[i] - 1) + 1
        n = (h[i] + 2 * p[i] - span) // s[i] + 1
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
    name, op, a = node.name, node.op, node.attrs
    x = in_shapes[0]
    if op in WEIGHTED:
        w = _weight(node, "weight", name + ".weight", weights, out_w, used, True)
        b = _weight(node, "bias", name + ".bias", weights, out_w, used, False)
        if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[0]):
            raise GraphError(f"node {name!r}: bias key {a['bias']!r} has shape {b.shape}; expected "
                             f"({w.shape[0]},)")
    if op == "linear":
        if w.ndim != 2:
            raise GraphError(f"node {name!r}: weight key {a['weight']!r} has shape {w.shape}; linear needs "
                             "[out, in]")
        if len(x) != 2 or x[1] != w.shape[1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)} but weight "
                             f"{a['weight']!r} has shape {list(w.shape)} (needs [null, {w.shape[1]}])")
        return (None, w.shape[0])
    if op == "conv2d":
        if w.ndim != 4:
            raise GraphError(f"node {name!r}: weight key {a['weight']!r} has shape {w.shape}; conv2d needs "
                             "[O, I/groups, kH, kW]")
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; conv2d needs [N, C, H, W]")
        a["stride"] = _pair(name, "stride", a["stride"], 1)
        a["padding"] = _pair(name, "padding", a["padding"], 0)
        a["dilation"] = _pair(name, "dilation", a["dilation"], 1)
        gr = _check_int(name, "groups", a["groups"], 1)
        if x[1] % gr or w.shape[0] % gr or w.shape[1] * gr != x[1]:
            raise GraphError(f"node {name!r}: key 'groups'={gr} does not fit {x[1]} input channels and weight "
                             f"{a['weight']!r} of shape {list(w.shape)}")
        oh, ow = _pool_out(name, x[2:], w.shape[2:], a["stride"], a["padding"], a["dilation"])
        return (None, w.shape[0], oh, ow)
    if op in ("maxpool2d", "avgpool2d"):
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; {op} needs [N, C, H, W]")
        if a["kernel"] is None:
            raise GraphError(f"node {name!r}: key 'kernel' is required for {op}")
        a["kernel"] = _pair(name, "kernel", a["kernel"], 1)
        a["stride"] = _pair(name, "stride", a["stride"] if a["stride"] is not None else a["kernel"], 1)
        a["padding"] = _pair(name, "padding", a["padding"], 0)
        if any(p * 2 > k for p, k in zip(a["padding"], a["kernel"])):
            raise GraphError(f"node {name!r}: key 'padding' {a['padding']} must be at most half the kernel")
        return (None, x[1]) + _pool_out(name, x[2:], a["kernel"], a["stride"], a["padding"])
    if op == "global_avgpool":
        if len(x) != 4:
            raise GraphError(f"node {name!r}: key 'inputs' gives shape {list(x)}; global_avgpool needs "
                             "[N, C, H, W]")
        return (None, x[1])
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
    if op in ("add", "mul"):
        if in_shapes[0] != in_shapes[1]:
            raise GraphError(f"node {name!r}: key 'inputs' gives shapes {list(in_shapes[0])} and "
                             f"{list(in_shapes[1])}; {op} needs equal shapes")
        return x
    if op == "concat":
        ax = _check_int(name, "axis", a["axis"], 1) if a["axis"] >= 0 or not isinstance(a["axis"], int) \
            else a["axis"] + len(x)
        if not 1 <= ax < len(x):
            raise GraphError(f"node {name!r}: key 'axis'={a['axis']} is out of range for shape {list(x)}")
        a["axis"] = ax
        for s in in_shapes:
            if len(s) != len(x) or any(s[i] != x[i] for i in range(1, len(x)) if i != ax):
                raise GraphError(f"node {name!r}: key 'inputs' gives shapes "
                                 f"{[list(s) for s in in_shapes]} that do not concatenate on axis {ax}")
        return tuple(sum(s[ax] for s in in_shapes) if i == ax else x[i] for i in range(len(x)))
    if op == "softmax":
        ax = a["axis"]
        if not isinstance(ax, int) or not -len(x) <= ax < len(x) or ax % len(x) == 0:
            raise GraphError(f"node {name!r}: key 'axis'={ax!r} must be a non-batch axis of shape {list(x)}")
        a["axis"] = ax % len(x)
        return x
    raise AssertionError(op)


def is_depthwise(node, in_channels):
    return node.op == "conv2d" and node.attrs["groups"] == in_channels and in_channels > 1
