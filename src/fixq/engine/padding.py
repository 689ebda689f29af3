"""Padding that no output reads, left out of a sequence model's run (docs/transformers.md, "Padding left
out").

A padded batch of sentence embeddings spends most of its work on padding tokens whose results the outputs
never see: every step between the inputs and the mean pooling works token by token, attention gives the
padding keys a weight of exactly 0, and the pooling multiplies the padding rows by 0.  Where
:func:`dead_padding` shows that from the graph, the executor packs each sequence's tokens up to its last
unmasked one into one batch of T tokens ``[1, T, ...]`` (:func:`pack`), runs the same steps on it, except
three that read the sequence structure (:func:`packed_step`: position embeddings, attention over each
sequence's own tokens, pooling per sequence), and gets the bits of the padded run."""
import numpy as np

from .. import float_ops as F

MASKED = -2.0 ** 64  # float_ops.attention skips the keys whose bias is at or below this (FIXQ__ATT_MASKED)
_TOKEN_WISE = ("layer_norm", "gelu", "scale", "l2_normalize", "softmax", "add", "mul", "reshape", "transpose")
CHUNK_TOKENS = 256  # a chunk's tokens: 2 sequences of 128 (measured against 128, 512 and 1024 on MiniLM)
_ROW_WISE = ("layer_norm", "gelu", "scale", "l2_normalize", "add", "mul", "linear")  # each row of [N, ...] alone


class Unpacked(Exception):
    """A packed run cannot show it has the padded run's bits (a pooled sum of 0, whose sign the padding
    rows may set): the caller runs the batch padded."""


def dead_padding(steps, inputs, tensors, outputs, linear_rows, attention, replaced):
    """The name of the 0/1 mask input whose padding no output reads, or None.  `steps` as run (fused attention
    blocks `attention` replacing the steps in `replaced`); `linear_rows`: whether a linear's row depends on
    that row alone (dynamic int8 with per-row activation ranges: yes; one range for the tensor: no; float32
    weights on BLAS: not promised, as its sums may follow the row count).

    With S the mask's sequence dim, a token tensor is ``[N, S, fixed dims]``.  The padding is dead when:
    every attention_mask and masked_mean reads that one mask; every step that reads a token tensor or the
    mask's bias is one of these: a gather of ids (positions included); a linear with `linear_rows`; a
    layer_norm, gelu, scale, l2_normalize or last-axis softmax, token tensor to token tensor; an add or mul
    of two token tensors; a reshape or a transpose that keeps S second (token tensor to token tensor); a fused
    attention over token tensors whose bias is attention_mask(mask) with a value at or below -2^64 (the
    kernel's proof that a masked key's weight is exactly 0 applies); a masked_mean of a ``[N, S, D]`` token
    tensor (D >= 2: numpy sums it row after row, as it sums each sequence alone) over the mask.  No output is
    a token tensor or depends on S (a model that outputs its last hidden state shows the padding rows: it
    runs padded).  Then a token past its sequence's last unmasked one reaches the outputs only as a key of
    weight 0 and a row times 0 in the pooling, and the packed run has the padded run's bits (the premise of
    attention's skip: the padding rows' keys and values finite and inside its bound, as float_ops.attention
    states)."""
    masks = {s["inputs"][0] for s in steps if s["op"] == "attention_mask" and s["output"] not in replaced} | \
        {s["inputs"][1] for s in steps if s["op"] == "masked_mean"}
    shapes = {i["name"]: i["shape"] for i in inputs}
    if len(masks) != 1:
        return None
    mask = masks.pop()
    shape = shapes.get(mask)
    if shape is None or len(shape) != 2 or not isinstance(shape[1], str):
        return None
    seq = shape[1]

    def kind(t):  # "token", "free" (no S) or "seq" (S elsewhere)
        s = tensors[t] if t in tensors else shapes[t]
        if seq not in s:
            return "free"
        return "token" if len(s) >= 2 and s[0] is None and s[1] == seq and seq not in s[2:] else "seq"
    if any(kind(t) != "free" for t in outputs) or any(kind(i["name"]) == "seq" for i in inputs):
        return None
    made = {s["output"]: s for s in steps}
    for s in steps:
        if s["output"] in replaced:
            continue
        op, ins, out = s["op"], s["inputs"], kind(s["output"])
        kinds = [kind(t) for t in ins]
        if s["output"] in attention:
            q, k, v, bias = attention[s["output"]][:4]
            b = made.get(bias)
            ok = out == "token" and all(kind(t) == "token" for t in (q, k, v)) and b is not None and \
                b["op"] == "attention_mask" and b["value"] <= MASKED
        elif set(kinds) == {"free"} and out == "free":
            ok = True
        elif op == "attention_mask":
            ok = ins == [mask]
        elif op == "masked_mean":
            x = tensors[ins[0]]
            ok = kinds[0] == "token" and ins[1] == mask and len(x) == 3 and isinstance(x[2], int) and x[2] >= 2
        elif op == "gather" or (op == "linear" and linear_rows):
            ok = kinds == ["token"] and out == "token"
        elif op in _TOKEN_WISE:
            ok = set(kinds) == {"token"} and out == "token" and len({len(tensors[t]) for t in ins}) == 1 and \
                (op != "transpose" or s["perm"][1] == 1) and \
                (op != "softmax" or s["axis"] in (-1, len(tensors[s["output"]]) - 1))
        else:
            ok = False
        if not ok:
            return None
    return mask


def rows_apart(steps, inputs, tensors, outputs, seq, linear_rows, replaced):
    """Whether, in a graph that :func:`dead_padding` passed for the mask's sequence dim `seq`, each sequence's
    outputs depend on that sequence's inputs alone, so that a batch may run as several batches of whole
    sequences with the same bits: every output is ``[N, ...]``, and every step whose output lacks `seq` (those
    with it are token steps, which dead_padding checked) and that reads or makes an ``[N, ...]`` tensor reads
    each row for that row alone: an elementwise add or mul, a layer_norm, gelu or scale, an l2_normalize or a
    last-axis softmax, a linear with `linear_rows` (dynamic int8 with per-row ranges: one range for the
    tensor, or BLAS's float sums, may follow the other rows)."""
    shapes = {**{i["name"]: i["shape"] for i in inputs}, **tensors}
    if any(not shapes[t] or shapes[t][0] is not None for t in outputs):
        return False
    for s in steps:
        shape, op = shapes[s["output"]], s["op"]
        if s["output"] in replaced or op in ("attention_mask", "masked_mean") or seq in shape:
            continue
        if not any(shapes[t] and shapes[t][0] is None for t in [s["output"], *s["inputs"]]):
            continue
        ok = s["axis"] in (-1, len(shape) - 1) if op == "softmax" else \
            op in _ROW_WISE and (op != "linear" or linear_rows)
        if not ok:
            return False
    return True


def kept_lengths(mask):
    """Each sequence's tokens up to its last unmasked one (all of them when none is unmasked): the keys the fused
    attention computes for it, the tokens a packed run keeps."""
    on = mask != 0
    length = on.shape[1]
    return np.where(on.any(axis=1), length - np.argmax(on[:, ::-1], axis=1), length)


def batch_chunks(mask, threads):
    """Cuts for running a batch as chunks of whole sequences: [(first, end), ...], sequences in order, each cut
    at the sequence boundary nearest its share of the tokens (those up to each sequence's last unmasked one,
    which a packed run keeps), about CHUNK_TOKENS a chunk, their count a multiple of `threads` (at most the
    sequences; fewer where one sequence spans several shares); None where that leaves fewer chunks than
    `threads`, or one, or under half CHUNK_TOKENS tokens a chunk on average (the batch runs whole, its steps on
    the threads)."""
    n, length = mask.shape
    if n < max(2, threads) or n * length < max(2, threads) * CHUNK_TOKENS / 2:  # None, whatever the mask
        return None
    lens = kept_lengths(mask)
    total = int(lens.sum())
    count = min(max(1, round(total / CHUNK_TOKENS / threads)), n // threads) * threads
    if count < max(2, threads) or total < count * CHUNK_TOKENS / 2:
        return None
    bounds = np.concatenate([[0], np.cumsum(lens)])  # tokens before sequence j
    shares = total * np.arange(1, count) / count
    j = np.searchsorted(bounds, shares)  # bounds[j - 1] < share <= bounds[j]: the nearer of the two
    j = np.where(shares - bounds[j - 1] < bounds[j] - shares, j - 1, j)
    cuts = np.unique(np.concatenate([[0], j, [n]]))
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist())) if len(cuts) > max(2, threads) else None


class Packing:
    """One padded batch's tokens packed: `n` sequences, `offsets` (uintp, n + 1), each token's `positions`
    in its sequence, and which sequences lost padding (`padded`)."""

    def __init__(self, n, offsets, positions, padded):
        self.n, self.offsets, self.positions, self.padded = n, offsets, positions, padded


def pack(env, mask_slot, token_slots, pack_slot):
    """Packs the token inputs of `env` in place (``[N, L, ...]`` -> ``[1, T, ...]``) and puts the Packing at
    `pack_slot`: each sequence keeps its tokens up to its last unmasked one (all of them when none is
    unmasked), the keys float_ops.attention computes for it.  False (env untouched) when no token would go."""
    mask = env[mask_slot]
    n, length = mask.shape
    lens = kept_lengths(mask)
    if n == 0 or lens.sum() == n * length:
        return False
    keep = np.arange(length) < lens[:, None]
    for k in token_slots:
        env[k] = env[k][keep][None]
    offsets = np.zeros(n + 1, np.intp)
    np.cumsum(lens, out=offsets[1:])
    positions = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens)
    env[pack_slot] = Packing(n, offsets.astype(np.uintp), positions, lens < length)
    return True


def packed_step(s, m, slots, block, pack_slot):
    """The packed form of step `s` where it differs from the padded one (else None): a position gather reads
    each token's position, the fused attention (`block`, an _attention_blocks entry) each sequence's own
    tokens, masked_mean sums each sequence's rows."""
    p, op = pack_slot, s["op"]
    if block is not None:
        q, k, v, bias = (slots[t] for t in block[:4])
        scale, kernel = np.float32(block[4]), F.attention
        return lambda env, threads: kernel(env[q], env[k], env[v], scale, np.ascontiguousarray(env[bias]),
                                           threads=threads, seq_offsets=env[p].offsets)
    if op == "gather" and s["positions"]:
        table = m.arrays[f"{s['name']}:weight"]
        if m.options.get("int8_gather"):
            scale, gather_rows = m.arrays[f"{s['name']}:weight_scale"], F.gather_rows
            return lambda env, threads: gather_rows(table, scale, env[p].positions)[None]
        return lambda env, threads: table.take(env[p].positions, axis=0)[None]
    if op == "masked_mean":
        i, j, kernel = slots[s["inputs"][0]], slots[s["inputs"][1]], F.masked_mean

        def masked_mean(env, threads):  # G.masked_mean's products and sums, each sequence's rows alone
            pk = env[p]
            y = kernel(env[i], env[j], threads, seq_offsets=pk.offsets)
            if (y[pk.padded] == 0).any():  # a sum of 0 (or one that underflows): its -0 may be the padded run's +0
                raise Unpacked
            return y
        return masked_mean
    return None

