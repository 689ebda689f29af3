"""fixq.float_ops.embed_sum and masked_mean, the token-wise steps around a transformer's layers: numpy's bits (the
separate gathers, adds and layer_norm; sentence-transformers' pooling as fixq.graph computes it) on every CPU path
and thread split, signed zeros, NaN and infinity included; packed sequences; the checks; and the sequence
executor's fused embedding step against its unfused run."""
import numpy as np
import pytest

from fixq import float_ops as F
from fixq.engine import sequence
from fixq.graph.reference import masked_mean as masked_mean_ref
from fixq.io import import_bert
from fixq.quantizer import quantize_model
from test_float_ops import one_line_value_error
from test_transformer import feeds, write_model


def tables(rng, d, rows=(50, 300, 2)):
    return [F.quantize_rows((rng.standard_normal((r, d)) * rng.uniform(0.01, 3)).astype(np.float32)) for r in rows]


def embed_ref(tabs, ids):
    y = F.gather_rows(*tabs[0], ids[0])
    for t, i in zip(tabs[1:], ids[1:]):
        y = y + F.gather_rows(*t, i)
    return y


def same_bits(a, b):
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("n,length,d,threads", [(1, 1, 1, 1), (3, 7, 5, 2), (4, 50, 384, 2), (2, 300, 130, 3),
                                                (0, 4, 8, 2), (2, 0, 8, 2)])
def test_embed_sum_is_the_gathers_and_adds(isa, n, length, d, threads):
    rng = np.random.default_rng(n * 1000 + length + d)
    tabs = tables(rng, d)
    ids = [rng.integers(0, 50, (n, length)), np.broadcast_to(np.arange(length), (n, length)).astype(np.int32),
           rng.integers(0, 2, (n, length)).astype(np.uint8)]
    ref = embed_ref(tabs, ids)
    for k in (1, 2, 3):  # one table alone, two, three
        same_bits(F.embed_sum(tabs[:k], ids[:k], threads=threads), embed_ref(tabs[:k], ids[:k]))
    w, b = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    for eps in (1e-12, 1e-5):
        y = F.embed_sum(tabs, ids, layer_norm=(w, b, eps), threads=threads)
        same_bits(y, F.layer_norm(ref, w, b, eps) if ref.size else ref)


def test_embed_sum_bad_arguments():
    rng = np.random.default_rng(1)
    tabs, ids = tables(rng, 8), [np.zeros((2, 3), np.int64)] * 3
    one_line_value_error(lambda: F.embed_sum([], []), "1 to 8")
    one_line_value_error(lambda: F.embed_sum(tabs, ids[:2]), "one integer array per table")
    one_line_value_error(lambda: F.embed_sum([(tabs[0][0].astype(np.int16), tabs[0][1])], ids[:1]), "int8")
    one_line_value_error(lambda: F.embed_sum([tabs[0], tables(rng, 9)[1]], ids[:2]), r"\[rows, 8\]")
    one_line_value_error(lambda: F.embed_sum([(tabs[0][0], tabs[0][1][:3])], ids[:1]), "scale of shape")
    one_line_value_error(lambda: F.embed_sum(tabs, [ids[0], ids[0], np.zeros((2, 4), np.int64)]), "one shape")
    one_line_value_error(lambda: F.embed_sum(tabs[:1], [ids[0].astype(np.float32)]), "integer")
    for bad in (-1, 50):
        one_line_value_error(lambda: F.embed_sum(tabs[:1], [np.full((2, 3), bad)]), r"ids\[0\] must lie in \[0, 50\)")
    one_line_value_error(lambda: F.embed_sum(tabs, ids, layer_norm=(np.ones(7, np.float32), np.ones(8, np.float32),
                                                                    1e-5)), "layer_norm must be")
    one_line_value_error(lambda: F.embed_sum(tabs, ids, layer_norm=(np.ones(8, np.float32), np.ones(8, np.float32),
                                                                    float("nan"))), "layer_norm must be")


@pytest.mark.parametrize("n,length,d,threads", [(1, 1, 2, 1), (3, 7, 5, 2), (32, 128, 384, 2), (2, 300, 130, 3),
                                                (1, 40, 1000, 2), (0, 3, 4, 2), (2, 0, 4, 2)])
def test_masked_mean_is_numpys(isa, n, length, d, threads):
    rng = np.random.default_rng(n + length + d)
    x = (rng.standard_normal((n, length, d)) * 10.0 ** rng.uniform(-30, 30, (n, length, d))).astype(np.float32)
    mask = (rng.random((n, length)) < 0.7).astype(np.int64)
    if n:
        x[0, :, 0] = -0.0  # numpy's sum starts at +0
        mask[-1] = 0       # no token: 0 / 1e-9
    same_bits(F.masked_mean(x, mask, threads), masked_mean_ref(x, mask))
    x[..., 1 % d] = np.nan
    x[..., 2 % d] = np.inf  # times a mask of 0: NaN, as numpy's product
    with np.errstate(invalid="ignore", over="ignore"):
        same_bits(F.masked_mean(x, mask, threads), masked_mean_ref(x, mask))


def test_masked_mean_packed_sequences(isa):
    rng = np.random.default_rng(5)
    x, mask = rng.standard_normal((1, 60, 33)).astype(np.float32), (rng.random((1, 60)) < 0.8).astype(np.int32)
    offsets = [0, 9, 9, 40, 41, 60]  # an empty sequence among them
    for threads in (1, 2, 3):
        y = F.masked_mean(x, mask, threads, seq_offsets=np.array(offsets))
        for s in range(5):
            a, b = offsets[s], offsets[s + 1]
            same_bits(y[s:s + 1], masked_mean_ref(x[:, a:b], mask[:, a:b]))
    one_line_value_error(lambda: F.masked_mean(x, mask, seq_offsets=[0, 30, 20, 60]), "rise from 0")
    one_line_value_error(lambda: F.masked_mean(x, mask, seq_offsets=[0, 59]), "rise from 0 to the 60")
    one_line_value_error(lambda: F.masked_mean(np.zeros((2, 3, 4), np.float32), np.ones((2, 3)), seq_offsets=[0, 3]),
                         r"\[1, T, D\]")
    one_line_value_error(lambda: F.masked_mean(x[0], mask), r"\[N, L, D\]")
    one_line_value_error(lambda: F.masked_mean(x, mask[:, :5]), r"\[N, L, D\]")
    one_line_value_error(lambda: F.masked_mean(x.astype(np.float64), mask), "float32")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bert") / "tiny")
    write_model(d)
    return import_bert(d)


def test_executor_fuses_the_embedding_sum(isa, bert, monkeypatch):
    """run() computes BERT's three int8 gathers, their two adds and the embedding layer_norm as one
    float_ops.embed_sum step: the bits of the separate steps, with and without token types, padded and packed,
    at 1 and 2 threads.  float32 tables (float_gather) keep the separate steps."""
    rng = np.random.default_rng(7)
    batches = [feeds(rng, n=4, length=11, types=types) for types in (True, False)] + [feeds(rng, n=1, length=5)]
    for float_gather in (False, True):
        m = quantize_model(bert, dynamic=True, float_gather=float_gather)
        fused = [fn for fn, _, _ in m._sequence.steps if fn.__qualname__.startswith("_embedding.")]
        assert len(fused) == (0 if float_gather else 1)
        with monkeypatch.context() as patch:
            patch.setattr(sequence, "_embedding_sums", lambda *args: {})
            apart = quantize_model(bert, dynamic=True, float_gather=float_gather)
        for f in batches:
            for threads in (1, 2):
                same_bits(m.run(f, threads=threads), apart.run(f, threads=threads))
