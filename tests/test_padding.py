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
    assert m._sequence.padding is None
    y = m.run(feeds(np.random.default_rng(23), n=3, length=10))
    for out in y if isinstance(y, (list, tuple)) else [y]:
        assert np.isfinite(out).all()

