"""The executor of sequence models (docs/transformers.md): float activations between steps, linears as float32
GEMMs (``weights="fp32"``) or dynamic int8 (``dynamic=True``: activations quantized per row or per tensor at run
time), attention matmuls in float or, with ``int8_attention``, dynamic int8; layer_norm, softmax and gelu on
``fixq.float_ops``.  Everything a step needs is looked up once, here, at load: a run is one checked feed and one
call per step into a list of tensors numbered at load.

Copies are avoided where the result is the same bits: transpose and reshape are views, which the float attention
matmuls read strided as their left operand (their right one is copied: strided, it slows BLAS more); a matmul
read only by a transpose writes its product straight into the transposed layout, so that the head merge costs
nothing; and a step whose first input is a fresh array (a step's own result, no view of it taken) that no later
step reads writes its output into that input (residual adds, gelu, softmax, layer_norm); an attention mask's
add goes into the softmax after it (``float_ops.softmax(bias=)``: one pass over the scores instead of two).
Each float attention written as import_bert writes it (head transposes, scale, scores, mask add, softmax,
context, head merge) is one ``float_ops.attention`` step reading the heads in place (``_attention_blocks``).
Where no output reads a padded batch's padding (``padding.dead_padding``), a run packs the real tokens and runs
them alone (``steps_packed``), with the padded run's bits.  ``threads`` reaches numpy's BLAS through threadpoolctl
when that is installed (BLAS keeps its own thread count otherwise).  ``run(keep_all=True)`` runs the steps without
writing into inputs, fusing or packing."""
import contextlib
import functools
import itertools
import threading

import numpy as np

from .. import _core, float_ops as F, gemm, graph as G
from . import padding as P

_PLAIN = type("PlainLayout", (), {"sequence": True, "weights": {}})()  # float_node's view of a sequence graph
_FRESH = ("linear", "gelu", "softmax", "layer_norm", "matmul", "scale", "add", "mul")  # results nothing else holds
_VIEWS = ("reshape", "transpose")
_IN_PLACE = ("add", "mul", "gelu", "softmax", "layer_norm")


def _acts(act):
    return {"relu": lambda y: np.maximum(y, 0, out=y), "relu6": lambda y: np.clip(y, 0, 6, out=y), None: None}[act]


def _linear(m, s, i, act=None, res=None, into=False):
    """A linear step over the last axis: fp32 weights as one float32 GEMM over all rows, int8 weights through
    F.dynamic_linear, with `act` and the tensor `res` added in its epilogue (written into `res` with `into`)."""
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

    def dynamic_epilogue(env, threads):
        r = None if res is None else np.ascontiguousarray(env[res])
        return dynamic_linear(np.ascontiguousarray(env[i]), packed, ws, bias, granularity, threads, residual=r,
                              act=act, out=r if into else None)
    return dynamic if act is None and res is None else dynamic_epilogue


def _stacked_linears(m, group, i, outs):
    """The dynamic int8 linears `group` (steps), all reading tensor i, as one F.dynamic_linear over their weights
    stacked (i quantized once; per row or per tensor, the same scale and zero point as each alone gets, so the
    same bits): each member's output is a column view of the product, the first returned and the others set
    in env at `outs`."""
    a = m.arrays
    weights = [a[f"{s['name']}:weight"] for s in group]
    packed = gemm.pack_weights(np.concatenate(weights))
    ws = np.concatenate([np.broadcast_to(a[f"{s['name']}:weight_scale"].reshape(-1), (w.shape[0],))
                         for s, w in zip(group, weights)]).astype(np.float32)
    bias = np.concatenate([a[f"{s['name']}:bias"] for s in group])
    cuts = np.cumsum([0] + [w.shape[0] for w in weights]).tolist()
    parts = list(zip(outs, cuts[1:-1], cuts[2:]))
    granularity, dynamic_linear = m.options.get("granularity", "row"), F.dynamic_linear

    def stacked(env, threads):
        y = dynamic_linear(np.ascontiguousarray(env[i]), packed, ws, bias, granularity, threads)
        for o, c0, c1 in parts:
            env[o] = y[..., c0:c1]
        return y[..., :cuts[1]]
    return stacked


def _on_first_call(make):
    """fn(env, threads) that makes its step with make() when first called (the weights of a linear that run()
    runs stacked or with its epilogue, packed for run_all only if it runs)."""
    made = []

    def step(env, threads):
        if not made:
            made.append(make())
        return made[0](env, threads)
    return step


def _attention(block, slots):
    """The fused attention step of an _attention_blocks entry: F.attention on the heads, the context
    [N, L, H, D] out."""
    q, k, v, bias = (None if t is None else slots[t] for t in block[:4])
    scale, kernel = np.float32(block[4]), F.attention
    if bias is None:
        return lambda env, threads: kernel(env[q], env[k], env[v], scale, threads=threads)
    return lambda env, threads: kernel(env[q], env[k], env[v], scale, np.ascontiguousarray(env[bias]),
                                       threads=threads)


def _step(m, s, slots, in_place, transposed):
    """``fn(env, threads)`` computing step `s` from the numbered tensors `env`; with `in_place` it writes into its
    first input, and a matmul with `transposed` (a permutation) writes into an array laid out in that order."""
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
    if op == "softmax" and s["axis"] != len(m.meta["tensors"][s["output"]]) - 1:
        axis = s["axis"]
        return lambda env, threads: G.softmax(env[i], axis)
    if op in ("layer_norm", "gelu", "softmax"):
        if op == "layer_norm":
            kernel, args = F.layer_norm, (a[f"{name}:weight"], a[f"{name}:bias"], s["eps"])
        else:
            kernel, args = (F.gelu, (s["approximate"],)) if op == "gelu" else (F.softmax, ())

        def float_kernel(env, threads):  # into its input, or into the contiguous copy it had to make
            x = np.ascontiguousarray(env[i])
            return kernel(x, *args, out=x if in_place or x is not env[i] else None, threads=threads)
        return float_kernel
    if op == "matmul":
        j = ins[1]
        if m.options.get("int8_attention"):
            mm = F.qmatmul_dynamic
            return lambda env, threads: mm(np.ascontiguousarray(env[i]), np.ascontiguousarray(env[j]),
                                           threads=threads)
        if transposed is None:
            return lambda env, threads: np.matmul(env[i], np.ascontiguousarray(env[j]))
        back = tuple(int(k) for k in np.argsort(transposed))

        def matmul_transposed(env, threads):
            x, y = env[i], np.ascontiguousarray(env[j])
            shape = np.broadcast_shapes(x.shape[:-2], y.shape[:-2]) + (x.shape[-2], y.shape[-1])
            out = np.empty(tuple(shape[k] for k in transposed), np.float32).transpose(back)
            return np.matmul(x, y, out=out)
        return matmul_transposed
    if op == "transpose":
        perm = tuple(s["perm"])
        return lambda env, threads: env[i].transpose(perm)
    if op == "reshape":
        spec = s["shape"]
        head = next((k for k, d in enumerate(spec) if d != 0), len(spec)) + 1  # the batch and the dims 0 copies
        if 0 in spec[head - 1:]:
            return lambda env, threads: G.reshape_to(env[i], spec)
        tail = tuple(spec[head - 1:])  # G.reshape_to's shape, without building it from spec each call
        return lambda env, threads: env[i].reshape(env[i].shape[:head] + tail)
    if op == "scale":
        c = np.float32(s["value"])
        return lambda env, threads: env[i] * c
    if op in ("add", "mul"):
        j, ufunc, act = ins[1], (np.add if op == "add" else np.multiply), _acts(s["act"])
        if in_place:
            def ufunc_in_place(env, threads):
                x = env[i]
                return ufunc(x, env[j], out=x)
            f = ufunc_in_place
        else:
            f = lambda env, threads: ufunc(env[i], env[j])  # noqa: E731
        return f if act is None else (lambda env, threads: act(f(env, threads)))
    if op == "attention_mask":
        value = s["value"]
        return lambda env, threads: G.attention_bias(env[i], value)
    if op == "masked_mean":
        j, x = ins[1], m.meta["tensors"][s["inputs"][0]]
        if len(x) == 3 and isinstance(x[2], int) and x[2] >= 2:  # numpy's bits (over D = 1 numpy sums pairwise)
            kernel = F.masked_mean
            return lambda env, threads: kernel(env[i], env[j], threads)
        return lambda env, threads: G.masked_mean(env[i], env[j])
    if op == "l2_normalize":
        eps = s["eps"]
        return lambda env, threads: G.l2_normalize(env[i], eps)
    node = G.Node(name, op, s["inputs"], {k: v for k, v in s.items() if k not in ("name", "op", "inputs")})
    return lambda env, threads: G.float_node(_PLAIN, node, [env[t] for t in ins])


def _attention_blocks(steps, tensors, readers, keep):
    """{output of a context transpose: (q, k, v heads, mask bias or None, scale, the steps it replaces)} for
    each attention written as import_bert writes it: heads [N, L, H, D] transposed to [N, H, L, D] (keys to
    [N, H, D, L]), an optional scale of the queries, the scores matmul (or a scale of the scores after it, as
    ONNX exports write it; the kernel scales the queries, which differs by float rounding), an optional add of a [N or 1, 1, 1, L]
    bias, a last-axis softmax, the context matmul and its transpose back to [N, L, H, D]; every tensor between
    read by the next step alone and not an output.  float_ops.attention computes the same, fused."""
    made = {s["output"]: s for s in steps}

    def sole(t, op, k=0):  # the step making t, when it is `op` and t's only reader reads it as input k
        s, r = made.get(t), readers.get(t, [])
        return s if s is not None and s["op"] == op and t not in keep and len(r) == 1 and \
            r[0]["inputs"].index(t) == k and r[0]["inputs"].count(t) == 1 else None

    def heads(t, perm, k):  # the [N, L, H, D] tensor that t transposes with perm
        s = sole(t, "transpose", k)
        return s["inputs"][0] if s is not None and s["perm"] == perm and len(tensors[t]) == 4 else None
    found = {}
    for ct in steps:
        if ct["op"] != "transpose" or ct["perm"] != [0, 2, 1, 3]:
            continue
        mm2 = sole(ct["inputs"][0], "matmul")
        sm = mm2 and sole(mm2["inputs"][0], "softmax")
        if sm is None or sm["axis"] not in (-1, 3) or len(tensors[sm["output"]]) != 4:
            continue
        add, bias = sole(sm["inputs"][0], "add"), None
        if add is not None:
            bias, b = add["inputs"][1], tensors[add["inputs"][1]]
            if add["act"] is not None or len(b) != 4 or b[1:3] != [1, 1] or b[3] != tensors[add["output"]][3]:
                continue
        scores = add["inputs"][0] if add else sm["inputs"][0]
        post = sole(scores, "scale")  # the scores scaled after their matmul (an ONNX export's Div)
        mm1 = sole(post["inputs"][0] if post else scores, "matmul")
        if mm1 is None:
            continue
        sc = sole(mm1["inputs"][0], "scale")
        if sc is not None and post is not None:
            continue
        scale = sc["value"] if sc else post["value"] if post else 1.0
        qt = sc["inputs"][0] if sc else mm1["inputs"][0]
        q = heads(qt, [0, 2, 1, 3], 0)
        k = heads(mm1["inputs"][1], [0, 2, 3, 1], 1)
        v = heads(mm2["inputs"][1], [0, 2, 1, 3], 1)
        if None in (q, k, v) or not (tensors[q][2:] == tensors[k][2:] == tensors[v][2:] and tensors[k] == tensors[v]
                                     and tensors[q][0] == tensors[k][0] and (bias is None or tensors[bias][0] in
                                                                            (1, tensors[q][0]))):
            continue
        parts = [made[t] for t in (qt, mm1["inputs"][1], mm2["inputs"][1])] + \
            [x for x in (sc, post, add) if x is not None] + [mm1, sm, mm2]
        found[ct["output"]] = (q, k, v, bias, scale, {x["output"] for x in parts})
    return found


def _embedding_sums(steps, tensors, readers, keep):
    """{output: (the int8 gather steps in the order their rows are added, the layer_norm step or None, the outputs
    of the steps it replaces)} for each sum of gathers (BERT's word, position and token-type embeddings): adds of
    gathers whose tensors are all of one shape, each added to the sum of the ones before it (either side of an
    add, as a float add is commutative), every tensor between read by the next step alone and not an output; then
    the layer_norm reading the sum alone, when there is one.  float_ops.embed_sum computes the same bits."""
    made = {s["output"]: s for s in steps}

    def sole(t, op):
        s, r = made.get(t), readers.get(t, [])
        return s if s is not None and s["op"] == op and t not in keep and len(r) == 1 and \
            r[0]["inputs"].count(t) == 1 else None
    chains = {}  # an add's output: (its gathers, the outputs of the steps it stands for)
    for s in steps:
        if s["op"] != "add" or s["act"] is not None or len(set(s["inputs"])) != 2 or \
                any(tensors[t] != tensors[s["output"]] for t in s["inputs"]):
            continue
        parts = []
        for t in s["inputs"]:
            g, c = sole(t, "gather"), sole(t, "add")
            chain = chains.pop(t) if c is not None and t in chains else None
            parts.append(([g], {t}) if g is not None else (chain[0], chain[1] | {t}) if chain else None)
        if None in parts or len(parts[0][0]) > 1 and len(parts[1][0]) > 1:
            continue
        first, second = parts if len(parts[1][0]) == 1 else parts[::-1]
        chains[s["output"]] = (first[0] + second[0], first[1] | second[1])
    found = {}
    for t, (gathers, parts) in chains.items():
        r = readers.get(t, [])
        ln = r[0] if t not in keep and len(r) == 1 and r[0]["op"] == "layer_norm" and r[0]["inputs"] == [t] else None
        found[ln["output"] if ln else t] = (gathers, ln, parts | {t} if ln else parts)
    return found


def _embedding(m, block, slots, pack_slot=None):
    """The fused step of an _embedding_sums entry: F.embed_sum over the gathers' int8 tables, its layer norm
    after it; with `pack_slot`, a packed run's (positions read from its Packing)."""
    a, (gathers, ln, _) = m.arrays, block
    tables = [(a[f"{g['name']}:weight"], a[f"{g['name']}:weight_scale"]) for g in gathers]
    ins = [(slots[g["inputs"][0]], g["positions"]) for g in gathers]
    norm = None if ln is None else (a[f"{ln['name']}:weight"], a[f"{ln['name']}:bias"], ln["eps"])
    kernel = F.embed_sum

    def ids(env, i, positions):
        x = env[i]
        if not positions:
            return x
        return env[pack_slot].positions[None] if pack_slot is not None else \
            np.broadcast_to(np.arange(x.shape[-1]), x.shape)
    return lambda env, threads: kernel(tables, [ids(env, i, p) for i, p in ins], norm, threads)


@functools.lru_cache(maxsize=None)
def _blas_limiter():
    """``limit(threads)``: a context holding numpy's BLAS to that many threads (threadpoolctl's), or one that
    does nothing when threadpoolctl is not installed."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return lambda threads: contextlib.nullcontext()
    controller = ThreadpoolController().select(user_api="blas")
    return lambda threads: controller.limit(limits=threads)


class SequenceRunner:
    """The steps of a sequence model, numbered at load: ``run(feeds, threads, keep_all)``."""

    def __init__(self, m):
        meta = m.meta
        self.inputs = meta["inputs"]
        self.roles = G.input_roles([(s["op"], s["inputs"], s, (s.get("weight_shape") or [None])[0])
                                    for s in meta["steps"]])
        self.names = [i["name"] for i in self.inputs] + [s["output"] for s in meta["steps"]]
        slots = {t: k for k, t in enumerate(self.names)}
        last, readers = {}, {}
        for k, s in enumerate(meta["steps"]):
            for t in s["inputs"]:
                last[t] = k
                readers.setdefault(t, []).append(s)
        keep = set(meta["outputs"])
        tensors, made_by = meta["tensors"], {s["output"]: s["op"] for s in meta["steps"]}

        def in_place(k, s):  # its first input is a fresh array of its output's shape that nothing reads later
            t = s["inputs"][0]
            return (s["op"] in _IN_PLACE and made_by.get(t) in _FRESH and last[t] == k and t not in keep
                    and tensors[t] == tensors[s["output"]] and not any(r["op"] in _VIEWS for r in readers[t]))

        def transposed(s):  # a matmul read by one transpose alone: the permutation
            r = readers.get(s["output"], [])
            return (tuple(r[0]["perm"]) if s["op"] == "matmul" and len(r) == 1 and r[0]["op"] == "transpose"
                    and s["output"] not in keep else None)
        def mask_bias(k, s):  # an in-place add of a row bias read by one softmax alone: the bias (the softmax adds it)
            r, x, b = readers.get(s["output"], []), tensors[s["inputs"][0]], tensors[s["inputs"][-1]]
            return (s["inputs"][1] if s["op"] == "add" and s["act"] is None and in_place(k, s) and len(r) == 1
                    and r[0]["op"] == "softmax" and r[0]["axis"] == len(x) - 1 and s["output"] not in keep
                    and len(b) == len(x) and b[0] in (1, x[0]) and b[-1] == x[-1] and set(b[1:-1]) <= {1} else None)
        attention = {} if m.options.get("int8_attention") else \
            _attention_blocks(meta["steps"], tensors, readers, keep)
        replaced = {t for a in attention.values() for t in a[5]}
        embedded = _embedding_sums(meta["steps"], tensors, readers, keep) if m.options.get("int8_gather") else {}
        summed = {t for e in embedded.values() for t in e[2]} - embedded.keys()  # computed in their sum's step
        fused = {s["output"]: mask_bias(k, s) for k, s in enumerate(meta["steps"])
                 if s["output"] not in replaced and mask_bias(k, s) is not None}
        step_of = {s["output"]: k for k, s in enumerate(meta["steps"])}

        def epilogue(k, s):  # a dynamic linear read by one gelu or same-shape add alone: (reader, act, residual, into)
            t, r = s["output"], readers.get(s["output"], [])
            if m.weights == "fp32" or s["op"] != "linear" or s["act"] is not None or t in keep or len(r) != 1 \
                    or t in replaced or r[0]["output"] in replaced or r[0]["output"] in fused:
                return None
            nxt, n = r[0], step_of[r[0]["output"]]
            if nxt["op"] == "gelu":
                return n, "gelu" if nxt["approximate"] == "none" else "gelu_tanh", None, False
            if nxt["op"] != "add" or nxt["act"] is not None:
                return None
            res = nxt["inputs"][1] if nxt["inputs"][0] == t else nxt["inputs"][0]
            if res == t or step_of.get(res, k) >= k \
                    or not tensors[res] == tensors[t] == tensors[nxt["output"]]:
                return None
            # into res: a fresh array that no step reads between this one and the add, or after it
            into = made_by[res] in _FRESH and res not in keep and last[res] == n and res not in s["inputs"] and \
                not any(x["op"] in _VIEWS or step_of[x["output"]] > k and x is not nxt for x in readers[res])
            return n, None, res, into
        epilogues = {s["output"]: e for k, s in enumerate(meta["steps"]) if (e := epilogue(k, s)) is not None}
        absorbed = {meta["steps"][e[0]]["output"]: t for t, e in epilogues.items()}  # gelu / add -> the linear
        # dynamic linears sharing their input (a layer's query, key and value): one product, x quantized once
        stacks = {} if m.weights == "fp32" else {
            t: [s for s in r if s["op"] == "linear" and s["act"] is None and s["output"] not in keep and
                s["output"] not in epilogues and not any(x["output"] in fused for x in readers.get(s["output"], []))]
            for t, r in readers.items()}
        stacked = {g[0]["output"]: g for g in stacks.values() if len(g) > 1}
        made_early = {s["output"] for g in stacked.values() for s in g[1:]}  # set by their stack's first linear
        reads = [[] if s["output"] in replaced or s["output"] in summed
                 else [t for t in attention[s["output"]][:4] if t is not None] if s["output"] in attention
                 else [g["inputs"][0] for g in embedded[s["output"]][0]] if s["output"] in embedded
                 else [s["inputs"][0]] if s["output"] in fused
                 else [absorbed[s["output"]]] if s["output"] in absorbed else [] if s["output"] in made_early
                 else s["inputs"] + [fused[t] for t in s["inputs"] if t in fused]
                 + [e[2] for e in [epilogues.get(s["output"])] if e is not None and e[2] is not None]
                 for s in meta["steps"]]
        last_read = {t: k for k, r in enumerate(reads) for t in r}
        linear_rows = m.weights != "fp32" and m.options.get("granularity", "row") == "row"
        mask = P.dead_padding(meta["steps"], self.inputs, tensors, meta["outputs"], linear_rows, attention, replaced)
        self.size = len(self.names)
        self.padding = None  # (the mask's slot, the token inputs' slots, the Packing's slot): P.pack's arguments
        self.chunks = None  # the mask's slot where a batch may run as batches of whole sequences (P.rows_apart)
        if mask is not None:
            seq = next(i["shape"][1] for i in self.inputs if i["name"] == mask)
            self.padding = (slots[mask], [slots[i["name"]] for i in self.inputs if seq in i["shape"]], self.size)
            if P.rows_apart(meta["steps"], self.inputs, tensors, meta["outputs"], seq, linear_rows, replaced):
                self.chunks = slots[mask]
        self.steps, self.steps_all, self.steps_packed = [], [], []
        for k, s in enumerate(meta["steps"]):
            own = s["output"] in stacked or s["output"] in made_early or s["output"] in epilogues  # run() packs others
            fns = [_on_first_call(lambda s=s: _step(m, s, slots, False, None)) if own
                   else _step(m, s, slots, False, transposed(s))]
            if s["output"] in replaced or s["output"] in summed:  # computed inside a fused step below
                self.steps_all.append((fns[0], slots[s["output"]]))
                continue
            if s["output"] in attention:
                fns.append(_attention(attention[s["output"]], slots))
            elif s["output"] in embedded:
                fns.append(_embedding(m, embedded[s["output"]], slots))
            elif s["output"] in fused:  # the add passes its input on; the softmax after it adds the bias
                i = slots[s["inputs"][0]]
                fns.append(lambda env, threads, i=i: env[i])
            elif s["output"] in epilogues:  # the gelu or residual add after it, in the GEMM's epilogue
                _, act, res, into = epilogues[s["output"]]
                fns.append(_linear(m, s, slots[s["inputs"][0]], act, None if res is None else slots[res], into))
            elif s["output"] in stacked:
                g = stacked[s["output"]]
                fns.append(_stacked_linears(m, g, slots[s["inputs"][0]], [slots[x["output"]] for x in g[1:]]))
            elif s["output"] in made_early:
                i = slots[s["output"]]
                fns.append(lambda env, threads, i=i: env[i])
            elif s["output"] in absorbed:  # the linear before it did this step: its result passes on
                i = slots[absorbed[s["output"]]]
                fns.append(lambda env, threads, i=i: env[i])
            elif s["op"] == "softmax" and s["inputs"][0] in fused:
                i, j = slots[s["inputs"][0]], slots[fused[s["inputs"][0]]]
                fns.append(lambda env, threads, i=i, j=j: F.softmax(env[i], env[i], threads, bias=env[j]))
            else:
                fns.append(_step(m, s, slots, True, transposed(s)) if in_place(k, s) else fns[0])
            if s["op"] == "linear" and s["act"] is not None:
                fns = [(lambda f, act: lambda env, threads: act(f(env, threads)))(f, _acts(s["act"])) for f in fns]
            dead = tuple(slots[t] for t in dict.fromkeys(reads[k]) if last_read[t] == k and t not in keep)
            self.steps_all.append((fns[0], slots[s["output"]]))
            self.steps.append((fns[1], slots[s["output"]], dead))
            if self.padding is not None:
                packed = _embedding(m, embedded[s["output"]], slots, self.size) if s["output"] in embedded \
                    else P.packed_step(s, m, slots, attention.get(s["output"]), self.size)
                self.steps_packed.append(self.steps[-1] if packed is None else (packed, slots[s["output"]], dead))
        self.outputs = [slots[t] for t in meta["outputs"]]
        float_matmuls = not m.options.get("int8_attention") and any(s["op"] == "matmul" and s["output"] not in replaced
                                                                    for s in meta["steps"])
        self.blas = _blas_limiter() if float_matmuls or m.weights == "fp32" else None

    def run(self, feeds, threads, keep_all=False):
        """The outputs (a list), or with `keep_all` every tensor by name (then no step writes into its input).
        A batch whose sequences stand apart (``chunks``) and hold enough tokens runs as chunks of whole
        sequences (P.batch_chunks), each on one thread, on up to `threads` threads at once: a chunk's
        intermediates stay in the caches, and the threads meet once a call instead of at every step."""
        fed = G.check_feeds(self.inputs, self.roles, feeds)
        cuts = P.batch_chunks(fed[self.chunks], threads) if self.chunks is not None and not keep_all else None
        if cuts is not None:
            with self.blas(1) if self.blas is not None else contextlib.nullcontext():
                return self._run_chunks(fed, cuts, threads)
        with self.blas(threads) if self.blas is not None else contextlib.nullcontext(), _core.ParallelBurst(threads):
            if keep_all:
                env = fed + [None] * (self.size + 1 - len(fed))
                for fn, out in self.steps_all:
                    env[out] = fn(env, threads)
                return dict(zip(self.names, env))
            return self._run_fed(fed, threads)

    def _run_chunks(self, fed, cuts, threads):
        """The outputs of the batch `fed` run as the chunks of sequences `cuts`, claimed in turn by the caller
        and threads - 1 threads of its own (numpy and the kernels release the GIL), each at one thread."""
        outs, errors, claim = [None] * len(cuts), [], itertools.count()

        def work():
            try:
                for k in iter(claim.__next__, None):
                    if k >= len(cuts) or errors:
                        return
                    b0, b1 = cuts[k]
                    outs[k] = self._run_fed([x[b0:b1] for x in fed], 1)
            except BaseException as e:  # noqa: B036 -- raised again by the caller
                errors.append(e)
        helpers = [threading.Thread(target=work, daemon=True) for _ in range(min(threads, len(cuts)) - 1)]
        try:
            for t in helpers:
                t.start()
            work()
        finally:
            errors.append(None)  # no chunk is claimed after this (an interrupt's too)
            for t in helpers:
                t.join()
        raised = [e for e in errors if e is not None]
        if raised:  # an interrupt before another thread's error
            raise next((e for e in raised if not isinstance(e, Exception)), raised[0])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def _run_fed(self, fed, threads):
        """The outputs for the checked inputs `fed`: its real tokens packed where padding would go, else as fed."""
        env = fed + [None] * (self.size + 1 - len(fed))  # the last: a packed run's Packing
        if self.padding is not None and P.pack(env, *self.padding):
            try:
                return self._run(env, self.steps_packed, threads)
            except P.Unpacked:
                env = fed + [None] * (self.size + 1 - len(fed))
        return self._run(env, self.steps, threads)

    def _run(self, env, steps, threads):
        for fn, out, dead in steps:
            env[out] = fn(env, threads)
            for d in dead:
                env[d] = None
        return [env[k] for k in self.outputs]
