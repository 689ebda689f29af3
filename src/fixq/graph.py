"""Float model archives (``fixq.graph/1``): parsing, validation, and float reference execution.

A float model is a ``.npz`` of float32/float16/float64 arrays with PyTorch ``state_dict``-style keys
plus a graph: a JSON string under ``__graph__`` (or given separately), or nothing, in which case a
sequential MLP is inferred from the ``*.weight``/``*.bias`` pairs in file order.  docs/engine.md
describes the format.

Every check runs before any work and raises :class:`GraphError`, one line naming the node and the key.
4-D activations are NCHW at the model's boundary and NHWC inside (the conv GEMM reads NHWC patches);
:func:`run_float` uses the same internal layout as the int8 engine so tensors compare one to one.
"""
import json
import zipfile
import zlib

import numpy as np

from . import layout as L

GRAPH_FORMAT = "fixq.graph/1"
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
}
WEIGHTED = ("linear", "conv2d")


class GraphError(ValueError):
    """A float model archive or graph that fixq cannot run (one line: the node and the key)."""


class Node:
    __slots__ = ("name", "op", "inputs", "attrs")

    def __init__(self, name, op, inputs, attrs):
        self.name, self.op, self.inputs, self.attrs = name, op, inputs, attrs

    def __repr__(self):
        return f"Node({self.name!r}, {self.op!r}, {self.inputs!r}, {self.attrs!r})"


class Graph:
    """A validated graph: ``input`` (name), ``input_shape`` (NCHW, batch None), ``nodes`` in
    execution order, ``outputs``, ``shapes`` (every tensor, NCHW order, batch None), ``weights``
    (float32 arrays by key) and ``spec`` (the JSON-able graph)."""

    def __init__(self, spec, weights):
        self.spec = spec
        self.weights = weights
        self.input = spec["inputs"][0]["name"]
        self.input_shape = tuple(spec["inputs"][0]["shape"])
        self.nodes = []
        self.outputs = list(spec["outputs"])
        self.shapes = {}

    def consumers(self, tensor):
        return [n for n in self.nodes if tensor in n.inputs]


# ---------------------------------------------------------------------------------------------
# Loading and validation

def load_npz(path, what="model"):
    """The arrays of an .npz (allow_pickle=False), with damaged files and pickles as one-line errors."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise GraphError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GraphError(f"{path}: is a directory") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, NotImplementedError) as e:
        # NotImplementedError: zipfile's answer to a central directory entry needing a newer zip version
        raise GraphError(f"{path}: damaged or not an .npz archive ({' '.join(str(e).split())})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise GraphError(f"{path}: not an .npz archive (a single .npy array); save the {what} with numpy.savez")
    out = {}
    with z:
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise GraphError(f"{path}: key {k!r} holds a pickled object array; fixq archives hold only "
                                     "plain numeric and string arrays") from None
                raise GraphError(f"{path}: key {k!r} is damaged ({' '.join(str(e).split())})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                # zipfile raises RuntimeError for an encrypted entry, NotImplementedError for an unknown method
                raise GraphError(f"{path}: key {k!r} is damaged ({' '.join(str(e).split())})") from None
    return out


def load_float_model(path, graph=None, activation="relu"):
    """(Graph, inferred) from a float ``.npz`` at `path`.  `graph` (dict, JSON string or path of a
    .json file) overrides ``__graph__``; with neither, a sequential MLP is inferred with `activation`
    between layers and ``inferred`` is True."""
    arrays = load_npz(path)
    spec_src = arrays.pop("__graph__", None)
    if graph is not None:
        spec_src = graph
    weights = {}
    for k, v in arrays.items():
        if v.dtype not in (np.float16, np.float32, np.float64):
            raise GraphError(f"weights: key {k!r} has dtype {v.dtype}; expected float16, float32 or float64")
        weights[k] = np.ascontiguousarray(v, dtype=np.float32)
    if spec_src is None:
        return validate(infer_mlp(weights, activation), weights), True
    return validate(parse_spec(spec_src), weights), False


def parse_spec(src):
    """The graph dict of a dict, a JSON string, a 0-d string array, or a path to a .json file."""
    if isinstance(src, np.ndarray):
        if src.dtype.kind != "U" or src.ndim != 0:
            raise GraphError(f"__graph__: expected a JSON string (0-d str array), got dtype {src.dtype} "
                             f"shape {src.shape}")
        src = str(src)
    if isinstance(src, dict):
        return src
    text = src
    if not src.lstrip().startswith("{"):
        try:
            with open(src, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise GraphError(f"graph: cannot read {src!r} ({e.strerror})") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphError(f"graph: invalid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise GraphError("graph: expected a JSON object")
    return spec


def infer_mlp(weights, activation="relu"):
    """A sequential MLP over the ``<p>.weight``/``<p>.bias`` pairs in file order."""
    if activation not in ACTIVATIONS:
        raise GraphError(f"activation: expected one of {list(ACTIVATIONS)}, got {activation!r}")
    layers = []
    for k, v in weights.items():
        if k.endswith(".weight"):
            layers.append(k[:-len(".weight")])
        elif not k.endswith(".bias"):
            raise GraphError(f"weights: key {k!r} is neither <layer>.weight nor <layer>.bias and there is "
                             "no __graph__ to say what it is")
    if not layers:
        raise GraphError("weights: no <layer>.weight keys and no __graph__")
    for k in weights:
        if k.endswith(".bias") and k[:-len(".bias")] not in layers:
            raise GraphError(f"weights: key {k!r} has no matching {k[:-5]}.weight")
    for p in layers:
        if weights[p + ".weight"].ndim != 2:
            raise GraphError(f"node {p!r}: key '{p}.weight' has shape {weights[p + '.weight'].shape}; an "
                             "inferred MLP needs 2-D [out, in] weights (give a __graph__ for convolutions)")
    nodes, prev = [], "x"
    for i, p in enumerate(layers):
        nodes.append({"name": p, "op": "linear", "inputs": [prev]})
        prev = p
        if i < len(layers) - 1 and activation != "none":
            nodes.append({"name": f"{p}_{activation}", "op": activation, "inputs": [prev]})
            prev = f"{p}_{activation}"
    return {"format": GRAPH_FORMAT,
            "inputs": [{"name": "x", "shape": [None, int(weights[layers[0] + ".weight"].shape[1])]}],
            "nodes": nodes, "outputs": [prev]}


def _pair(node, key, v, minimum):
    vals = [v, v] if isinstance(v, int) and not isinstance(v, bool) else v
    if (not isinstance(vals, list) or len(vals) != 2
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


def validate(spec, weights):
    """Check the graph against the weights and infer every tensor's shape; return a Graph."""
    if spec.get("format") != GRAPH_FORMAT:
        raise GraphError(f"graph: key 'format' must be {GRAPH_FORMAT!r}, got {spec.get('format')!r}")
    for key in spec:
        if key not in ("format", "inputs", "nodes", "outputs"):
            raise GraphError(f"graph: unknown key {key!r}")
    for key in ("inputs", "nodes", "outputs"):
        if not isinstance(spec.get(key), list) or not spec[key]:
            raise GraphError(f"graph: key {key!r} must be a non-empty list")
    if len(spec["inputs"]) != 1:
        raise GraphError("graph: key 'inputs' must list exactly one input")
    inp = spec["inputs"][0]
    if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
        raise GraphError("graph: inputs[0] needs a string 'name'")
    shape = inp.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (2, 4) or shape[0] is not None
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise GraphError(f"input {inp['name']!r}: key 'shape' must be [null, features] or [null, C, H, W] "
                         f"with positive sizes, got {shape!r}")
    g = Graph(spec, {})
    g.shapes[g.input] = tuple(shape)
    raw = {}
    for i, nd in enumerate(spec["nodes"]):
        if not isinstance(nd, dict) or not isinstance(nd.get("name"), str) or not nd.get("name"):
            raise GraphError(f"nodes[{i}]: key 'name' must be a non-empty string")
        name = nd["name"]
        if name in raw or name == g.input:
            raise GraphError(f"node {name!r}: key 'name' is used twice")
        op = nd.get("op")
        if op not in OPS:
            raise GraphError(f"node {name!r}: key 'op' is {op!r}, not one of {sorted(OPS)}")
        n_in, allowed = OPS[op]
        for key in nd:
            if key not in ("name", "op", "inputs") and key not in allowed:
                raise GraphError(f"node {name!r}: unknown key {key!r} for op {op}")
        ins = nd.get("inputs")
        if not isinstance(ins, list) or not all(isinstance(t, str) for t in ins):
            raise GraphError(f"node {name!r}: key 'inputs' must be a list of tensor names")
        if (n_in is None and len(ins) < 2) or (n_in is not None and len(ins) != n_in):
            want = "2 or more" if n_in is None else str(n_in)
            raise GraphError(f"node {name!r}: key 'inputs' must name {want} tensor(s) for op {op}, got {len(ins)}")
        raw[name] = nd
    for name, nd in raw.items():
        for t in nd["inputs"]:
            if t not in raw and t != g.input:
                raise GraphError(f"node {name!r}: key 'inputs' names unknown tensor {t!r}")
    for t in spec["outputs"]:
        if not isinstance(t, str) or (t not in raw and t != g.input):
            raise GraphError(f"graph: key 'outputs' names unknown tensor {t!r}")
        if t == g.input:
            raise GraphError(f"graph: key 'outputs' names the input {t!r}; outputs must be computed")
    # Topological order (Kahn; stable in file order); what is left over lies on a cycle.
    done, order, pending = {g.input}, [], list(raw)
    while pending:
        ready = [n for n in pending if all(t in done for t in raw[n]["inputs"])]
        if not ready:
            raise GraphError(f"node {pending[0]!r}: key 'inputs' is part of a cycle "
                             f"({' -> '.join(pending)})")
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]
    used = set()
    for name in order:
        nd = raw[name]
        attrs = {k: nd.get(k, d) for k, d in OPS[nd["op"]][1].items()}
        node = Node(name, nd["op"], list(nd["inputs"]), attrs)
        g.shapes[name] = _infer(node, [g.shapes[t] for t in node.inputs], weights, g.weights, used)
        g.nodes.append(node)
    for node in g.nodes:
        if node.op == "softmax" and (node.name not in g.outputs or g.consumers(node.name)):
            raise GraphError(f"node {node.name!r}: key 'op' softmax is computed in float and must be a graph "
                             "output that no other node reads")
    extra = [k for k in weights if k not in used]
    if extra:
        raise GraphError(f"weights: key {extra[0]!r} is not used by any node"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    return g


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


def _infer(node, in_shapes, weights, out_w, used):
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


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Float reference execution (numpy float32, internal layout)

def float_node(g, node, xs):
    """One node in float32 on internal-layout inputs."""
    a, x = node.attrs, xs[0]
    if node.op == "linear":
        y = x @ g.weights[a["weight"]].T
        return y + g.weights[a["bias"]] if a["bias"] else y
    if node.op == "conv2d":
        w = g.weights[a["weight"]]
        gr, c = a["groups"], x.shape[3]
        if is_depthwise(node, c):
            v = L.windows(x[..., np.arange(w.shape[0]) // (w.shape[0] // c)], w.shape[2:], a["stride"],
                        a["padding"], a["dilation"])
            y = np.einsum("nhwijc,cij->nhwc", v, w[:, 0], optimize=True).astype(np.float32)
        else:
            outs = []
            og, ig = w.shape[0] // gr, c // gr
            for k in range(gr):
                cols, (n, oh, ow) = L.im2col(np.ascontiguousarray(x[..., k * ig:(k + 1) * ig]), w.shape[2:],
                                           a["stride"], a["padding"], a["dilation"])
                outs.append((cols @ L.conv_weight_hwc(w[k * og:(k + 1) * og]).T).reshape(n, oh, ow, og))
            y = outs[0] if gr == 1 else np.concatenate(outs, axis=3)
        return y + g.weights[a["bias"]] if a["bias"] else y
    if node.op == "relu":
        return np.maximum(x, 0)
    if node.op == "relu6":
        return np.clip(x, 0, 6)
    if node.op == "maxpool2d":
        return L.window_reduce(x, a["kernel"], a["stride"], a["padding"], -np.inf, np.maximum)
    if node.op == "avgpool2d":
        k = a["kernel"]
        return L.window_reduce(x, k, a["stride"], a["padding"], 0, np.add) / np.float32(k[0] * k[1])
    if node.op == "global_avgpool":
        return x.mean(axis=(1, 2), dtype=np.float32)
    if node.op == "flatten":
        return L.flatten(x)
    if node.op == "add":
        return xs[0] + xs[1]
    if node.op == "mul":
        return xs[0] * xs[1]
    if node.op == "concat":
        return np.concatenate(xs, axis=L.internal_axis(a["axis"], x.ndim))
    if node.op == "softmax":
        return softmax(x, L.internal_axis(a["axis"], x.ndim))
    raise AssertionError(node.op)


def check_input(g, x, name="x"):
    """`x` as float32 NCHW matching the graph's input shape (any batch)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
    want = g.input_shape
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
        raise ValueError(f"{name} has shape {x.shape}; the model's input {g.input!r} needs "
                         f"[N, {', '.join(map(str, want[1:]))}]")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    return np.asarray(x, dtype=np.float32)


def run_float(g, x, keep_all=False):
    """Float32 reference: the outputs (external layout), or with `keep_all` every tensor (internal)."""
    env = {g.input: L.to_internal(check_input(g, x))}
    for node in g.nodes:
        env[node.name] = float_node(g, node, [env[t] for t in node.inputs])
    if keep_all:
        return env
    outs = [L.to_external(env[t]) for t in g.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)
