"""The executor of sequence models (docs/transformers.md): float activations between steps, linears as float32
GEMMs (``weights="fp32"``) or dynamic int8 (``dynamic=True``: activations quantized per row or per tensor at run
time), attention matmuls in float or, with ``int8_attention``, dynamic int8; layer_norm, softmax and gelu on
``fixq.float_ops``.  Everything a step needs is looked up once, here, at load: a run is one checked feed and one
call per step into a list of tensors numbered at load.  The kernels take C-contiguous float32 arrays; the
steps pass them so (np.ascontiguousarray copies only the broadcast view of a position table)."""
import numpy as np

from .. import float_ops as F, gemm, graph as G

_PLAIN = type("PlainLayout", (), {"sequence": True, "weights": {}})()  # float_node's view of a sequence graph


def _acts(act):
    return {"relu": lambda y: np.maximum(y, 0, out=y), "relu6": lambda y: np.clip(y, 0, 6, out=y), None: None}[act]


def _linear(m, s, i):
    """A linear step over the last axis: fp32 weights as one float32 GEMM over all rows, int8 weights through
    F.dynamic_linear."""
    a, name = m.arrays, s["name"]
    bias = a[f"{name}:bias"]
    if m.weights == "fp32":
        wt = np.ascontiguousarray(a[f"{name}:weight"].T)
        k = wt.shape[0]

        def linear(env, threads):
            x = env[i]
            y = np.ascontiguousarray(x).reshape(-1, k) @ wt
            y += bias
            return y.reshape(x.shape[:-1] + (wt.shape[1],))
        return linear
    packed = gemm.pack_weights(a[f"{name}:weight"])
    ws = a[f"{name}:weight_scale"]
    ws = ws if ws.size > 1 else ws.reshape(())
    granularity = m.options.get("granularity", "row")
    dynamic_linear = F.dynamic_linear

    def dynamic(env, threads):
        return dynamic_linear(np.ascontiguousarray(env[i]), packed, ws, bias, granularity, threads)
    return dynamic


def _step(m, s, slots):
    """``fn(env, threads)`` computing step `s` from the numbered tensors `env`."""
    op, name, a = s["op"], s["name"], m.arrays
    ins = [slots[t] for t in s["inputs"]]
    i = ins[0]
    if op == "linear":
        return _linear(m, s, i)
    if op == "gather":
        table = a[f"{name}:weight"]
        if m.options.get("int8_gather"):
            scale, gather_rows = a[f"{name}:weight_scale"], F.gather_rows
            if s["positions"]:
                return lambda env, threads: np.broadcast_to(gather_rows(table, scale, None, env[i].shape[-1]),
                                                            env[i].shape + table.shape[1:])
            return lambda env, threads: gather_rows(table, scale, env[i])
        if s["positions"]:  # a read-only view
            return lambda env, threads: np.broadcast_to(table[:env[i].shape[-1]], env[i].shape + table.shape[1:])
        return lambda env, threads: table.take(env[i], axis=0)
    if op == "layer_norm":
        w, b, eps, layer_norm = a[f"{name}:weight"], a[f"{name}:bias"], s["eps"], F.layer_norm
        return lambda env, threads: layer_norm(np.ascontiguousarray(env[i]), w, b, eps, threads=threads)
    if op == "gelu":
        approximate, gelu = s["approximate"], F.gelu
        return lambda env, threads: gelu(np.ascontiguousarray(env[i]), approximate, threads=threads)
    if op == "softmax":
        axis, softmax = s["axis"], F.softmax
        if axis == len(m.meta["tensors"][s["output"]]) - 1:
            return lambda env, threads: softmax(np.ascontiguousarray(env[i]), threads=threads)
        return lambda env, threads: G.softmax(env[i], axis)
    if op == "matmul":
        j = ins[1]
        mm = F.qmatmul_dynamic if m.options.get("int8_attention") else F.matmul
        return lambda env, threads: mm(np.ascontiguousarray(env[i]), np.ascontiguousarray(env[j]), threads=threads)
    if op == "transpose":
        perm = tuple(s["perm"])
        return lambda env, threads: np.ascontiguousarray(env[i].transpose(perm))
    if op == "reshape":
        spec = s["shape"]
        return lambda env, threads: G.reshape_to(env[i], spec)
    if op == "scale":
        c = np.float32(s["value"])
        return lambda env, threads: env[i] * c
    if op in ("add", "mul"):
        j, ufunc, act = ins[1], (np.add if op == "add" else np.multiply), _acts(s["act"])
        if act is None:
            return lambda env, threads: ufunc(env[i], env[j])
        return lambda env, threads: act(ufunc(env[i], env[j]))
    if op == "attention_mask":
        value = s["value"]
        return lambda env, threads: G.attention_bias(env[i], value)
    if op == "masked_mean":
        j = ins[1]
        return lambda env, threads: G.masked_mean(env[i], env[j])
    if op == "l2_normalize":
        eps = s["eps"]
        return lambda env, threads: G.l2_normalize(env[i], eps)
    node = G.Node(name, op, s["inputs"], {k: v for k, v in s.items() if k not in ("name", "op", "inputs")})
    return lambda env, threads: G.float_node(_PLAIN, node, [env[t] for t in ins])


class SequenceRunner:
    """The steps of a sequence model, numbered at load: ``run(feeds, threads, keep_all)``."""

    def __init__(self, m):
        meta = m.meta
        self.inputs = meta["inputs"]
        self.roles = G.input_roles([(s["op"], s["inputs"], s, (s.get("weight_shape") or [None])[0])
                                    for s in meta["steps"]])
        self.names = [i["name"] for i in self.inputs] + [s["output"] for s in meta["steps"]]
        slots = {t: k for k, t in enumerate(self.names)}
        last = {}
        for k, s in enumerate(meta["steps"]):
            for t in s["inputs"]:
                last[t] = k
        keep = set(meta["outputs"])
        self.steps = []
        for k, s in enumerate(meta["steps"]):
            fn = _step(m, s, slots)
            if s["op"] == "linear" and s["act"] is not None:
                fn = (lambda f, act: lambda env, threads: act(f(env, threads)))(fn, _acts(s["act"]))
            dead = tuple(slots[t] for t in dict.fromkeys(s["inputs"]) if last[t] == k and t not in keep)
            self.steps.append((fn, slots[s["output"]], dead))
        self.outputs = [slots[t] for t in meta["outputs"]]
        self.size = len(self.names)

    def run(self, feeds, threads, keep_all=False):
        """The outputs (a list), or with `keep_all` every tensor by name."""
        env = [None] * self.size
        env[:len(self.inputs)] = G.check_feeds(self.inputs, self.roles, feeds)
        if keep_all:
            for fn, out, _ in self.steps:
                env[out] = fn(env, threads)
            return dict(zip(self.names, env))
        for fn, out, dead in self.steps:
            env[out] = fn(env, threads)
            for d in dead:
                env[d] = None
        return [env[k] for k in self.outputs]
