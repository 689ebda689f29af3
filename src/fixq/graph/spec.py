"""Float graphs (``fixq.graph/1``): the :class:`Graph`, its JSON spec, and validation.

A graph is JSON (docs/engine.md) naming its input (a sequence graph: several, docs/transformers.md), nodes
and outputs; :func:`validate` checks it against the weights and infers every tensor's shape before any
work, raising :class:`GraphError` with one line naming the node and the key.  Without a graph, :func:`infer_mlp` builds a sequential
MLP from ``<layer>.weight``/``<layer>.bias`` pairs, with the activation the caller names.
"""
import json

import numpy as np

from .ops import (ACTIVATIONS, INPUT_DTYPES, LIMITS, OPS, SEQUENCE_OPS, GraphError, Node, check_elements,
                  check_input_kinds, check_name, infer_shape, parse_dims, parse_shape)

GRAPH_FORMAT = "fixq.graph/1"


class Graph:
    """A validated graph: ``input`` (the first input's name), ``input_shape`` (its shape, NCHW, batch None),
    ``inputs`` (every input: a dict of ``name``, ``shape``, ``dtype``, ``optional``), ``dims`` (symbolic dim ->
    largest size), ``sequence`` (a sequence graph: tensors keep their layout, docs/transformers.md), ``nodes``
    in execution order, ``outputs``, ``shapes`` (every tensor, NCHW order, batch None), ``kinds`` (every
    tensor: "int" or "float"), ``weights`` (float32 arrays by key) and ``spec`` (the JSON-able graph)."""

    def __init__(self, spec, weights):
        self.spec = spec
        self.weights = weights
        self.input = spec["inputs"][0]["name"]
        self.input_shape = tuple(spec["inputs"][0]["shape"])
        self.inputs = []
        self.dims = {}
        self.sequence = False
        self.kinds = {}
        self.nodes = []
        self.outputs = list(spec["outputs"])
        self.shapes = {}
        self._readers = None

    def consumers(self, tensor):
        """The nodes that read `tensor`, in execution order (an index built on the first call)."""
        if self._readers is None:
            self._readers = {}
            for n in self.nodes:
                for t in dict.fromkeys(n.inputs):
                    self._readers.setdefault(t, []).append(n)
        return list(self._readers.get(tensor, ()))


def json_object(text, what):
    """The JSON object of `text`: a duplicate key, nesting too deep for Python's parser, or anything but
    an object is a one-line GraphError naming `what`."""
    def pairs(kv):
        d = {}
        for k, v in kv:
            if k in d:
                raise GraphError(f"{what}: key {k!r} appears twice in one JSON object")
            d[k] = v
        return d
    try:
        obj = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise GraphError(f"{what}: invalid JSON ({e})") from None
    except RecursionError:
        raise GraphError(f"{what}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise GraphError(f"{what}: expected a JSON object")
    return obj


def parse_spec(src):
    """The graph dict of a dict, a JSON string or a 0-d string array (``__graph__`` as numpy stores it).
    A graph is data: a string is parsed as JSON, never opened as a path."""
    if isinstance(src, np.ndarray):
        if src.dtype.kind != "U" or src.ndim != 0:
            raise GraphError(f"__graph__: expected a JSON string (0-d str array), got dtype {src.dtype} "
                             f"shape {src.shape}")
        src = str(src)
    if isinstance(src, dict):
        return src
    if not isinstance(src, str):
        raise GraphError(f"graph: expected a JSON object or string, got {type(src).__name__}")
    return json_object(src, "graph")


def infer_mlp(weights, activation):
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


def validate(spec, weights):
    """Check the graph against the weights and infer every tensor's shape; return a Graph."""
    if spec.get("format") != GRAPH_FORMAT:
        raise GraphError(f"graph: key 'format' must be {GRAPH_FORMAT!r}, got {spec.get('format')!r}")
    for key in spec:
        if key not in ("format", "inputs", "dims", "nodes", "outputs"):
            raise GraphError(f"graph: unknown key {key!r}")
    for key in ("inputs", "nodes", "outputs"):
        if not isinstance(spec.get(key), list) or not spec[key]:
            raise GraphError(f"graph: key {key!r} must be a non-empty list")
    if len(spec["nodes"]) > LIMITS["nodes"]:
        raise GraphError(f"graph: key 'nodes' lists {len(spec['nodes'])} nodes, more than {LIMITS['nodes']} "
                         "(docs/security.md)")
    seq_spec = (len(spec["inputs"]) > 1 or "dims" in spec
                or any(isinstance(nd, dict) and nd.get("op") in SEQUENCE_OPS for nd in spec["nodes"])
                or any(isinstance(i, dict) and i.get("dtype", "float32") != "float32" for i in spec["inputs"]))
    if not seq_spec:
        _check_image_input(spec)
    dims = parse_dims("graph", spec.get("dims", {}))
    if len(spec["inputs"]) > LIMITS["inputs"]:
        raise GraphError(f"graph: key 'inputs' lists {len(spec['inputs'])} inputs, more than {LIMITS['inputs']}")
    inputs = [parse_input(f"graph: inputs[{i}]", inp, dims) for i, inp in enumerate(spec["inputs"])]
    g = Graph(spec, {})
    g.sequence, g.dims, g.inputs = seq_spec, dims, inputs
    for inp in inputs:
        if inp["name"] in g.shapes:
            raise GraphError(f"input {inp['name']!r}: key 'name' is used twice")
        g.shapes[inp["name"]] = inp["shape"]
        g.kinds[inp["name"]] = "float" if inp["dtype"] == "float32" else "int"
    if inputs[0]["optional"]:
        raise GraphError(f"input {g.input!r}: key 'optional': the first input cannot be optional")
    g.input_shape = g.shapes[g.input]
    raw = {}
    for i, nd in enumerate(spec["nodes"]):
        if not isinstance(nd, dict) or not isinstance(nd.get("name"), str) or not nd.get("name"):
            raise GraphError(f"nodes[{i}]: key 'name' must be a non-empty string")
        name = check_name(f"nodes[{i}]", nd["name"])
        if name in raw or name in g.shapes:
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
            if t not in raw and t not in g.shapes:
                raise GraphError(f"node {name!r}: key 'inputs' names unknown tensor {t!r}")
    for t in spec["outputs"]:
        if not isinstance(t, str) or (t not in raw and t not in g.shapes):
            raise GraphError(f"graph: key 'outputs' names unknown tensor {t!r}")
        if t in g.shapes:
            raise GraphError(f"graph: key 'outputs' names the input {t!r}; outputs must be computed")
    # Topological order by levels, stable in file order: a node's level is one more than its inputs'
    # highest (Kahn's algorithm over the nodes' in-degrees); what is left over lies on a cycle.
    index = {n: i for i, n in enumerate(raw)}
    given = set(g.shapes)
    waiting = {n: len(set(raw[n]["inputs"]) - given) for n in raw}
    readers = {}
    for n, nd in raw.items():
        for t in set(nd["inputs"]) - given:
            readers.setdefault(t, []).append(n)
    level = {n: 0 for n, k in waiting.items() if k == 0}
    ready = list(level)
    for n in ready:  # grows while it is walked
        for r in readers.get(n, ()):
            level[r] = max(level.get(r, 0), level[n] + 1)
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(ready) < len(raw):
        pending = [n for n in raw if n not in level or waiting[n]]
        raise GraphError(f"node {pending[0]!r}: key 'inputs' is part of a cycle "
                         f"({' -> '.join(pending[:20])}{' -> ...' if len(pending) > 20 else ''})")
    order = sorted(raw, key=lambda n: (level[n], index[n]))
    used = set()
    for name in order:
        nd = raw[name]
        attrs = {k: nd.get(k, d) for k, d in OPS[nd["op"]][1].items()}
        node = Node(name, nd["op"], list(nd["inputs"]), attrs)
        check_input_kinds(node, [g.kinds[t] for t in node.inputs])
        g.shapes[name] = infer_shape(node, [g.shapes[t] for t in node.inputs], weights, g.weights, used, g.sequence)
        g.kinds[name] = "float"
        g.nodes.append(node)
    outputs = set(g.outputs)
    for node in g.nodes:
        if node.op == "softmax" and not g.sequence and (node.name not in outputs or g.consumers(node.name)):
            raise GraphError(f"node {node.name!r}: key 'op' softmax is computed in float and must be a graph "
                             "output that no other node reads")
    extra = [k for k in weights if k not in used]
    if extra:
        raise GraphError(f"weights: key {extra[0]!r} is not used by any node"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    return g


def _check_image_input(spec):
    """An image graph's one float input: [null, features] or [null, C, H, W]."""
    inp = spec["inputs"][0]
    if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
        raise GraphError("graph: inputs[0] needs a string 'name'")
    check_name("graph: inputs[0]", inp["name"])
    shape = inp.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (2, 4) or shape[0] is not None
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise GraphError(f"input {inp['name']!r}: key 'shape' must be [null, features] or [null, C, H, W] "
                         f"with positive sizes, got {shape!r}")


def parse_input(what, inp, dims):
    """One entry of a graph's ``inputs``: {"name", "shape", "dtype" (float32, int32 or int64; int32 and int64
    both take either at run time), "optional" (an int input left out runs as zeros)} checked, the shape as
    a tuple of ints and Dims."""
    if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
        raise GraphError(f"{what} needs a string 'name'")
    check_name(what, inp["name"])
    for key in inp:
        if key not in ("name", "shape", "dtype", "optional"):
            raise GraphError(f"input {inp['name']!r}: unknown key {key!r}")
    shape = parse_shape(f"input {inp['name']!r}", inp.get("shape"), dims)
    check_elements(inp["name"], "key 'shape'", shape)
    dtype, optional = inp.get("dtype", "float32"), inp.get("optional", False)
    if dtype not in INPUT_DTYPES:
        raise GraphError(f"input {inp['name']!r}: key 'dtype' must be one of {list(INPUT_DTYPES)}, got {dtype!r}")
    if not isinstance(optional, bool) or (optional and dtype == "float32"):
        raise GraphError(f"input {inp['name']!r}: key 'optional' must be true or false, and true only for an "
                         f"integer input, got {optional!r}")
    return {"name": inp["name"], "shape": shape, "dtype": dtype, "optional": optional}
