"""Float reference execution in numpy float32, on the internal layout (4-D tensors NHWC) that the int8
engine uses, so that tensors of the two compare one to one."""
import math

import numpy as np

from .. import layout as L
from .ops import INT_INPUTS, SEQUENCE_OPS, TABLE_OPS, Dim, is_depthwise, pad4

_erf = np.frompyfunc(math.erf, 1, 1)


def softmax(x, axis, beta=1.0):
    e = np.exp((x - x.max(axis=axis, keepdims=True)) * np.float32(beta))
    return e / e.sum(axis=axis, keepdims=True)


def elementwise(op, attrs, x):
    """The table ops (fixq.graph.ops.TABLE_OPS) on `x`, in x's float dtype: ONNX Sigmoid, Tanh, HardSwish,
    LeakyRelu (alpha), HardSigmoid (alpha, beta)."""
    one = x.dtype.type(1)
    if op == "sigmoid":  # exp of -|x| only, so that nothing overflows
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, one, e) / (one + e)
    if op == "tanh":
        return np.tanh(x)
    if op == "hardswish":  # x * max(0, min(1, x / 6 + 1 / 2)), ONNX HardSwish (alpha 1/6, beta 1/2)
        return x * np.clip(x / x.dtype.type(6) + x.dtype.type(0.5), 0, one)
    if op == "leaky_relu":
        return np.where(x < 0, x.dtype.type(attrs["alpha"]) * x, x)
    if op == "hardsigmoid":
        return np.clip(x.dtype.type(attrs["alpha"]) * x + x.dtype.type(attrs["beta"]), 0, one)
    raise AssertionError(op)


def gelu(x, approximate):
    """torch.nn.functional.gelu in float64, rounded to float32: ``x/2 (1 + erf(x/sqrt 2))`` or, with
    "tanh", ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    v = x.astype(np.float64)
    if approximate == "tanh":
        return (0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))).astype(np.float32)
    return (0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def layer_norm(x, weight, bias, eps):
    """torch.nn.functional.layer_norm over the last axis (biased variance), in float64, rounded to float32."""
    v = x.astype(np.float64)
    mean = v.mean(axis=-1, keepdims=True)
    d = v - mean
    y = d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + eps) * weight
    return (y + bias if bias is not None else y).astype(np.float32)


def reshape_to(x, spec):
    """ONNX Reshape of the dims after the batch (0: the input's dim there, -1: what is left)."""
    return x.reshape((x.shape[0],) + tuple(x.shape[i + 1] if d == 0 else d for i, d in enumerate(spec)))


def attention_bias(mask, value):
    """[N, L] 0/1 mask -> [N, 1, 1, L] additive bias ``(1 - mask) * value`` (transformers' extended attention
    mask, value the float32 minimum)."""
    return ((np.float32(1) - mask.astype(np.float32)) * np.float32(value))[:, None, None, :]


def masked_mean(x, mask):
    """sentence-transformers' mean pooling: ``sum(x * mask) / max(sum(mask), 1e-9)`` over the token axes."""
    m = mask.astype(np.float32)[..., None]
    axes = tuple(range(1, x.ndim - 1))
    return (x * m).sum(axis=axes) / np.maximum(m.sum(axis=axes), np.float32(1e-9))


def l2_normalize(x, eps):
    """torch.nn.functional.normalize over the last axis: ``x / max(||x||_2, eps)``."""
    n = np.sqrt((x.astype(np.float64) ** 2).sum(axis=-1, keepdims=True))
    return (x / np.maximum(n, eps)).astype(np.float32)


def sequence_node(weights, node, xs):
    """One sequence op (fixq.graph.SEQUENCE_OPS) in float32; `weights` maps the node's weight keys to arrays."""
    a, x, op = node.attrs, xs[0], node.op
    if op == "gather":
        table = weights[a["weight"]]
        if a["positions"]:
            return np.broadcast_to(table[:x.shape[-1]], x.shape + table.shape[1:])
        return table[x]
    if op == "layer_norm":
        return layer_norm(x, weights[a["weight"]], weights[a["bias"]] if a["bias"] else None, a["eps"])
    if op == "gelu":
        return gelu(x, a["approximate"])
    if op == "matmul":
        return np.matmul(x, xs[1])
    if op == "transpose":
        return x.transpose(a["perm"])
    if op == "reshape":
        return reshape_to(x, a["shape"])
    if op == "scale":
        return x * np.float32(a["value"])
    if op == "attention_mask":
        return attention_bias(x, a["value"])
    if op == "masked_mean":
        return masked_mean(x, xs[1])
    if op == "l2_normalize":
        return l2_normalize(x, a["eps"])
    raise AssertionError(op)


def float_node(g, node, xs):
    """One node in float32 on internal-layout inputs (a sequence graph's tensors keep their layout)."""
    a, x = node.attrs, xs[0]
    if node.op in SEQUENCE_OPS:
        return sequence_node(g.weights, node, xs)
    if g is not None and g.sequence and node.op in ("softmax", "concat"):
        return softmax(x, a["axis"]) if node.op == "softmax" else np.concatenate(xs, axis=a["axis"])
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
        xp, p = L.padded(x, a["padding"], -np.inf)
        return L.window_reduce(xp, a["kernel"], a["stride"], p, -np.inf, np.maximum)
    if node.op == "avgpool2d":
        k = a["kernel"]
        xp, p = L.padded(x, a["padding"], 0)
        total = L.window_reduce(xp, k, a["stride"], p, 0, np.add)
        if a["count_include_pad"]:
            return total / np.float32(k[0] * k[1])
        ones, p = L.padded(np.ones((1,) + x.shape[1:3] + (1,), np.float32), a["padding"], 0)
        return total / L.window_reduce(ones, k, a["stride"], p, 0, np.add)
    if node.op == "pad":
        t, left, b, r = pad4(a["padding"])
        return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    if node.op == "requantize":
        return x
    if node.op == "batchnorm":  # the channels are the last axis inside the engine; a product, then a sum, in float32
        return x * np.float32(a["scale"]) + np.float32(a["shift"])
    if node.op == "global_avgpool":
        return x.mean(axis=(1, 2), dtype=np.float32)
    if node.op == "flatten":
        return L.flatten(x)
    if node.op in ("add", "mul", "sub"):
        p, q = (L.broadcast_operand(v, max(xs[0].ndim, xs[1].ndim)) for v in xs[:2])
        return p + q if node.op == "add" else p * q if node.op == "mul" else p - q
    if node.op == "concat":
        return np.concatenate(xs, axis=L.internal_axis(a["axis"], x.ndim))
    if node.op == "softmax":
        return softmax(x, L.internal_axis(a["axis"], x.ndim), a["beta"])
    if node.op in TABLE_OPS:
        return elementwise(node.op, a, x)
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


def input_roles(nodes):
    """What the nodes ``(op, input names, attrs, weight rows)`` read of each integer tensor (fixq.graph.INT_INPUTS):
    {name: (rows of the smallest table it indexes or None, whether it is read as a 0/1 mask)}."""
    roles = {}
    for op, ins, attrs, rows in nodes:
        for i, role in INT_INPUTS.get(op, {}).items():
            if op == "gather" and attrs["positions"]:
                continue
            top, mask = roles.get(ins[i], (None, False))
            if role == "ids":
                top = rows if top is None else min(top, rows)
            roles[ins[i]] = (top, mask or role == "mask")
    return roles


def check_feeds(inputs, roles, feeds):
    """The arrays of `feeds` (a dict of input name -> array, or one array for a one-input graph) in the order
    of `inputs` (fixq.graph.parse_input's dicts), checked: names, dtype kinds, ranks, fixed dims, one batch
    size, one size for each symbolic dim (1 to its largest), token ids inside their table, masks 0/1.  An
    optional input left out is zeros of its shape; float inputs come back float32, integer ones as given."""
    if not isinstance(feeds, dict):
        if len([i for i in inputs if not i["optional"]]) != 1:
            raise TypeError(f"this model takes several inputs ({', '.join(i['name'] for i in inputs)}); give a dict "
                            "of name -> array")
        feeds = {inputs[0]["name"]: feeds}
    names = {i["name"] for i in inputs}
    for k in feeds:
        if k not in names:
            raise ValueError(f"unknown input {str(k)[:128]!r}; the model's inputs are {', '.join(sorted(names))}")
    sizes, batch, out = {}, None, []
    for inp in inputs:
        name, shape = inp["name"], inp["shape"]
        if name not in feeds:
            if not inp["optional"]:
                raise ValueError(f"input {name!r} is missing (the model's inputs: "
                                 f"{', '.join(i['name'] + (' (optional)' if i['optional'] else '') for i in inputs)})")
            out.append(None)
            continue
        x = np.asarray(feeds[name])
        want = "float" if inp["dtype"] == "float32" else "integer"
        if x.dtype.kind != ("f" if want == "float" else "i") and not (want == "integer" and x.dtype.kind == "u"):
            raise TypeError(f"input {name!r} must be {'a float' if want == 'float' else 'an integer'} array, got dtype "
                            f"{x.dtype}")
        text = "[N, " + ", ".join(map(str, shape[1:])) + "]"
        if x.ndim != len(shape):
            raise ValueError(f"input {name!r} has shape {x.shape}; the model needs {text}")
        batch = x.shape[0] if batch is None else batch
        for i, (d, n) in enumerate(zip(shape, x.shape)):
            if i == 0 and n != batch:
                raise ValueError(f"input {name!r} has {n} samples and {inputs[0]['name']!r} {batch}; give one batch")
            if isinstance(d, Dim):
                if sizes.setdefault(d, n) != n:
                    raise ValueError(f"input {name!r} has shape {x.shape}; its {d} dim is {n} where another input's is "
                                     f"{sizes[d]} (the model needs {text} for all)")
                if not 1 <= n <= d.max:
                    raise ValueError(f"input {name!r} has shape {x.shape}; its {d} dim must be 1 to {d.max}")
            elif i and n != d:
                raise ValueError(f"input {name!r} has shape {x.shape}; the model needs {text}")
        if want == "float":
            if not np.all(np.isfinite(x)):
                raise ValueError(f"input {name!r} contains NaN or Inf")
            x = np.asarray(x, dtype=np.float32)
        rows, mask = roles.get(name, (None, False))
        if rows is not None and x.size and (x.min() < 0 or x.max() >= rows):
            raise ValueError(f"input {name!r} holds id {int(x.min() if x.min() < 0 else x.max())}; ids must be 0 to "
                             f"{rows - 1} (the embedding table's rows)")
        if mask and np.any((x != 0) & (x != 1)):
            raise ValueError(f"input {name!r} is a mask and holds values other than 0 and 1")
        out.append(np.ascontiguousarray(x))  # the kernels read rows in place
    for i, inp in enumerate(inputs):
        if out[i] is None:
            out[i] = np.zeros((batch,) + tuple(sizes.get(d, 1) if isinstance(d, Dim) else d for d in inp["shape"][1:]),
                              np.int64)
    return out


def graph_roles(g):
    """:func:`input_roles` of graph `g`."""
    return input_roles([(n.op, n.inputs, n.attrs, g.weights[n.attrs["weight"]].shape[0]
                                   if n.op == "gather" else None) for n in g.nodes])


def run_float(g, x, keep_all=False):
    """Float32 reference: the outputs (external layout), or with `keep_all` every tensor (internal).  A
    sequence graph takes a dict of input name -> array (:func:`check_feeds`)."""
    if g.sequence:
        env = dict(zip((i["name"] for i in g.inputs), check_feeds(g.inputs, graph_roles(g), x)))
    else:
        env = {g.input: L.to_internal(check_input(g, x))}
    for node in g.nodes:
        env[node.name] = float_node(g, node, [env[t] for t in node.inputs])
    if keep_all:
        return env
    outs = [L.to_external(env[t]) for t in g.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)
