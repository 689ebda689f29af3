"""Float reference execution in numpy float32, on the internal layout (4-D tensors NHWC) that the int8
engine uses, so that tensors of the two compare one to one."""
import numpy as np

from .. import layout as L
from .ops import TABLE_OPS, is_depthwise, pad4


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
    if node.op == "global_avgpool":
        return x.mean(axis=(1, 2), dtype=np.float32)
    if node.op == "flatten":
        return L.flatten(x)
    if node.op == "add":
        return xs[0] + xs[1]
    if node.op == "mul":
        return xs[0] * xs[1]
    if node.op == "sub":
        return xs[0] - xs[1]
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


def run_float(g, x, keep_all=False):
    """Float32 reference: the outputs (external layout), or with `keep_all` every tensor (internal)."""
    env = {g.input: L.to_internal(check_input(g, x))}
    for node in g.nodes:
        env[node.name] = float_node(g, node, [env[t] for t in node.inputs])
    if keep_all:
        return env
    outs = [L.to_external(env[t]) for t in g.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)
