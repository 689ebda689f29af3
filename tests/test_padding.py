"""Padded batches of sequence models run only their real tokens where no output reads the padding
(fixq/engine/padding.py, docs/transformers.md "Padding left out"): the bits of the padded run, every mask pattern and
CPU path; the models whose outputs or arithmetic read the padding run padded."""
import json

import numpy as np
import pytest

from fixq import graph as G
from fixq.engine import padding
from fixq.io import import_bert
from fixq.quantizer import quantize_model
from test_transformer import SEQ_MAX, feeds, write_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bert") / "tiny")
    write_model(d)
    return import_bert(d)


def padded_and_packed(g, **mode):
    """(the model, the same model running every batch padded)"""
    m, padded = quantize_model(g, **mode), quantize_model(g, **mode)
    padded._sequence.padding = None
    return m, padded


def masks(rng):
    """[N, L] masks: varied lengths, length 1, one real token among full rows, full length, batch 1, a masked
    token inside, a row with none unmasked."""
    def right(lengths, length):
        return (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    inside = right([7, 3, 9], 9)
    inside[0, 2] = 0
    none = right([4, 9, 2], 9)
    none[1] = 0
    return [right(rng.integers(1, SEQ_MAX + 1, 6), SEQ_MAX), right([1, 1, 1], 5), right([SEQ_MAX, 1, SEQ_MAX], SEQ_MAX),
            right([11, 11], 11), right([3], 10), right([1], 1), right([1], SEQ_MAX), inside, none]


def same_bits(a, b):
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("mode", [dict(dynamic=True), dict(dynamic=True, float_gather=True)])
def test_packed_run_has_the_padded_runs_bits(tiny, isa, mode, monkeypatch):
    m, padded = padded_and_packed(tiny, **mode)
    assert m._sequence.padding is not None
    packed = []
    pack = padding.pack
    monkeypatch.setattr(padding, "pack", lambda env, *a: packed.append(pack(env, *a)) or packed[-1])
    rng = np.random.default_rng(21)
    for mask in masks(rng):
        f = feeds(rng, *mask.shape)
        f["attention_mask"] = mask
        for threads in (1, 2):
            same_bits(m.run(f, threads=threads), padded.run(f, threads=threads))
        without_types = {k: f[k] for k in ("input_ids", "attention_mask")}
        same_bits(m.run(without_types), padded.run(without_types))
    assert packed.count(True) == 3 * 7 and packed.count(False) == 3 * 2  # full length and length 1 run as they are


def test_a_pooled_sum_of_zero_runs_padded(tiny, monkeypatch):
    """A pooled sum of 0 may be -0 packed and +0 padded (the padding rows' 0 * x): that batch runs padded."""
    g = G.validate(tiny.spec, dict(tiny.weights))
    last = "encoder.layer.1.output.LayerNorm"
    for key in ("weight", "bias"):
        g.weights[f"{last}.{key}"] = g.weights[f"{last}.{key}"].copy()
        g.weights[f"{last}.{key}"][:3] = 0
    m, padded = padded_and_packed(g, dynamic=True)
    refused = []
    unpacked = padding.Unpacked
    monkeypatch.setattr(padding, "Unpacked", type("Spy", (unpacked,), {"__init__": lambda s: refused.append(s)}))
    f = feeds(np.random.default_rng(22), n=3, length=12)
    same_bits(m.run(f), padded.run(f))
    assert len(refused) == 1


def token_output(g):
    spec = json.loads(json.dumps(g.spec))
    spec["outputs"].append("encoder.layer.1.output.LayerNorm")
    return G.validate(spec, g.weights)


def mask_value(g, value):
    spec = json.loads(json.dumps(g.spec))
    next(n for n in spec["nodes"] if n["op"] == "attention_mask")["value"] = value
    return G.validate(spec, g.weights)


@pytest.mark.parametrize("edit, mode", [
    (None, dict(dynamic=True, granularity="tensor")),  # one activation range over the batch, padding included
    (None, dict(weights="fp32")),                      # BLAS's sums are not promised row by row
    (None, dict(dynamic=True, int8_attention=True)),   # the context's per-column ranges span the padding
    (token_output, dict(dynamic=True)),                # the last hidden state shows the padding rows
    (lambda g: mask_value(g, -10000.0), dict(dynamic=True)),  # a masked key's weight not proven 0
])
def test_models_that_read_the_padding_run_padded(tiny, edit, mode):
    g = tiny if edit is None else edit(tiny)
    m = quantize_model(g, **mode)
    assert m._sequence.padding is None and m._sequence.chunks is None
    y = m.run(feeds(np.random.default_rng(23), n=3, length=10))
    for out in y if isinstance(y, (list, tuple)) else [y]:
        assert np.isfinite(out).all()



def test_batch_chunks_cut_whole_sequences(monkeypatch):
    monkeypatch.setattr(padding, "CHUNK_TOKENS", 16)
    full = np.ones((8, 16), np.int64)
    assert padding.batch_chunks(full[:1], 1) is None and padding.batch_chunks(full[:1], 2) is None
    assert padding.batch_chunks(full, 1) == padding.batch_chunks(full, 2) == [(k, k + 1) for k in range(8)]
    assert padding.batch_chunks(full, 3) == [(0, 1), (1, 3), (3, 4), (4, 5), (5, 7), (7, 8)]  # 9 wanted, 6 fit
    assert len(padding.batch_chunks(np.ones((12, 16), np.int64), 5)) == 10  # 12 tokens a chunk: 2 x 5 chunks
    short = np.zeros((4, 16), np.int64)
    short[:, :1] = 1
    assert padding.batch_chunks(short, 1) is None and padding.batch_chunks(short, 2) is None  # 4 tokens in all
    rng = np.random.default_rng(24)
    for _ in range(50):
        n, length = int(rng.integers(1, 40)), int(rng.integers(1, 48))
        mask = (rng.random((n, length)) < rng.random()).astype(np.int64)
        for threads in (1, 2, 3):
            cuts = padding.batch_chunks(mask, threads)
            if cuts is None:
                continue
            assert cuts[0][0] == 0 and cuts[-1][1] == n and len(cuts) >= max(2, threads)
            assert all(a < b for a, b in cuts) and all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:]))


@pytest.mark.parametrize("mode", [dict(dynamic=True), dict(dynamic=True, float_gather=True)])
def test_chunked_run_has_the_whole_runs_bits(tiny, isa, mode, monkeypatch):
    """A batch run as chunks of whole sequences, each on a thread of its own, gives the whole batch's bits."""
    monkeypatch.setattr(padding, "CHUNK_TOKENS", 16)
    m, whole = quantize_model(tiny, **mode), quantize_model(tiny, **mode)
    assert m._sequence.chunks is not None
    whole._sequence.chunks = None
    cut = []
    chunks = padding.batch_chunks
    monkeypatch.setattr(padding, "batch_chunks", lambda mask, t: cut.append(chunks(mask, t)) or cut[-1])
    rng = np.random.default_rng(25)
    full = np.ones((9, SEQ_MAX), np.int64)
    for mask in masks(rng) + [full]:
        f = feeds(rng, *mask.shape)
        f["attention_mask"] = mask
        for threads in (1, 2, 3):
            same_bits(m.run(f, threads=threads), whole.run(f, threads=threads))
    assert sum(c is not None for c in cut) >= 10


def test_a_chunks_error_reaches_the_caller(tiny, monkeypatch):
    monkeypatch.setattr(padding, "CHUNK_TOKENS", 16)
    m = quantize_model(tiny, dynamic=True)
    runner, run_fed = m._sequence, m._sequence._run_fed
    calls = []

    def failing(fed, threads):
        calls.append(fed[0].shape[0])
        if len(calls) == 3:
            raise MemoryError("chunk 3")
        return run_fed(fed, threads)
    monkeypatch.setattr(runner, "_run_fed", failing)
    f = feeds(np.random.default_rng(26), n=8, length=SEQ_MAX)
    for threads in (1, 2):
        calls.clear()
        with pytest.raises(MemoryError, match="chunk 3"):
            m.run(f, threads=threads)


def test_rows_apart_after_the_pooling():
    """The steps after the pooling (no sequence dim) decide whether sequences stand apart."""
    inputs = [{"name": "ids", "shape": [None, "seq"]}]
    tensors = {"pooled": [None, 8], "w": [8], "y": [None, 8]}

    def apart(op, out_shape=(None, 8), linear_rows=True, **attrs):
        step = dict(op=op, inputs=["pooled", "w"] if op in ("add", "mul") else ["pooled"], output="y", **attrs)
        return padding.rows_apart([step], inputs, dict(tensors, y=list(out_shape)), ["y"], "seq", linear_rows, set())
    for op in ("l2_normalize", "layer_norm", "gelu", "scale", "add", "mul", "linear"):
        assert apart(op)
    assert apart("softmax", axis=-1) and apart("softmax", axis=1)
    assert not apart("softmax", axis=0)                # across the batch
    assert not apart("linear", linear_rows=False)      # BLAS's or one range's rows
    assert not apart("matmul") and not apart("reshape")  # not shown to keep rows apart: the batch runs whole
    assert not apart("l2_normalize", out_shape=(8,))   # an output without the batch dim


def bag_of_embeddings(d=768, vocab=50, seq=64, out=256):
    """Token embeddings mean-pooled, then a linear: no linear reads a token tensor."""
    rng = np.random.default_rng(0)
    spec = {"format": "fixq.graph/1", "dims": {"seq": seq}, "outputs": ["proj"],
            "inputs": [{"name": "ids", "shape": [None, "seq"], "dtype": "int64"},
                       {"name": "mask", "shape": [None, "seq"], "dtype": "int64"}],
            "nodes": [{"name": "emb", "op": "gather", "inputs": ["ids"]},
                      {"name": "pool", "op": "masked_mean", "inputs": ["emb", "mask"]},
                      {"name": "proj", "op": "linear", "inputs": ["pool"]}]}
    w = {"emb.weight": rng.standard_normal((vocab, d)).astype(np.float32),
         "proj.weight": rng.standard_normal((out, d)).astype(np.float32),
         "proj.bias": rng.standard_normal(out).astype(np.float32)}
    return G.validate(spec, w)


@pytest.mark.parametrize("mode, apart", [(dict(dynamic=True), True), (dict(dynamic=True, granularity="tensor"), False),
                                         (dict(weights="fp32"), False)])
def test_a_linear_after_the_pooling_that_reads_the_whole_batch_keeps_it_whole(mode, apart, monkeypatch):
    """One activation range for the batch, or BLAS's sums, make a pooled row's linear read the other rows."""
    monkeypatch.setattr(padding, "CHUNK_TOKENS", 16)
    g = bag_of_embeddings()
    m, whole = quantize_model(g, **mode), quantize_model(g, **mode)
    assert (m._sequence.chunks is not None) == apart
    whole._sequence.chunks = None
    rng = np.random.default_rng(1)
    f = {"ids": rng.integers(0, 50, (8, 64)), "mask": np.ones((8, 64), np.int64)}
    f["ids"][0] = 7
    same_bits(m.run(f, threads=2), whole.run(f, threads=2))


def test_rows_apart_checks_steps_with_another_symbolic_dim():
    """A tensor with a symbolic dim other than the mask's sequence dim is not a token tensor: its steps are
    checked like the pooled ones."""
    inputs = [{"name": "ids", "shape": [None, "seq"]}, {"name": "extra", "shape": [None, "k", 8]}]
    tensors = {"side": [None, "k", 8]}
    step = {"op": "linear", "inputs": ["extra"], "output": "side"}
    assert not padding.rows_apart([step], inputs, tensors, ["side"], "seq", False, set())
    assert padding.rows_apart([step], inputs, tensors, ["side"], "seq", True, set())
