"""The float graph format, the quantized archive and the int8 engine (docs/engine.md)."""
import json
import os

import numpy as np
import pytest

import fixq
from fixq import graph as G, layout as L
from fixq.cli.demo import bundled
from fixq.archive import ArchiveError, load_float_model
from fixq.engine import Model
from fixq.quantizer import quantize_model

from engine_reference import simulate


def save_float(path, weights, graph=None):
    arrays = dict(weights)
    if graph is not None:
        arrays["__graph__"] = np.array(json.dumps(graph))
    np.savez(path, **arrays)
    return str(path)


def graph_of(nodes, outputs, shape):
    return {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None] + list(shape)}], "nodes": nodes,
            "outputs": outputs}


def mlp_weights(rng, sizes=(12, 16, 5)):
    w = {}
    for i in range(len(sizes) - 1):
        w[f"fc{i + 1}.weight"] = rng.standard_normal((sizes[i + 1], sizes[i])).astype(np.float32) / 3
        w[f"fc{i + 1}.bias"] = rng.standard_normal(sizes[i + 1]).astype(np.float32) / 10
    return w


# A graph with every op: conv (stride, padding, dilation, groups), depthwise with multiplier 2,
# relu6, pools with padding, add, mul, concat of differently scaled inputs, flatten, linear, softmax.
def every_op_model(rng):
    r = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    w = {"c1.weight": r(8, 3, 3, 3), "c1.bias": r(8),
         "c2.weight": r(8, 4, 3, 3), "c2.bias": r(8),
         "dw.weight": r(16, 1, 3, 3), "dw.bias": r(16),
         "c3.weight": r(8, 16, 1, 1),
         "fc.weight": r(6, 8 * 3 * 3 + 8), "fc.bias": r(6),
         "side.weight": r(8, 8 * 3 * 3), "side.bias": r(8)}
    nodes = [
        {"name": "c1", "op": "conv2d", "inputs": ["x"], "stride": 1, "padding": 1},
        {"name": "r1", "op": "relu6", "inputs": ["c1"]},
        {"name": "c2", "op": "conv2d", "inputs": ["r1"], "stride": [2, 1], "padding": [2, 1], "dilation": [2, 1],
         "groups": 2},
        {"name": "r2", "op": "relu", "inputs": ["c2"]},
        {"name": "dw", "op": "conv2d", "inputs": ["r2"], "padding": 1, "groups": 8},
        {"name": "c3", "op": "conv2d", "inputs": ["dw"]},
        {"name": "sum", "op": "add", "inputs": ["c3", "r2"]},
        {"name": "prod", "op": "mul", "inputs": ["sum", "c3"]},
        {"name": "mp", "op": "maxpool2d", "inputs": ["prod"], "kernel": 3, "stride": 2, "padding": 1},
        {"name": "ap", "op": "avgpool2d", "inputs": ["mp"], "kernel": 3, "stride": 1, "padding": 1},
        {"name": "flat", "op": "flatten", "inputs": ["ap"]},
        {"name": "gap", "op": "global_avgpool", "inputs": ["c2"]},
        {"name": "cat", "op": "concat", "inputs": ["flat", "gap"]},
        {"name": "fc", "op": "linear", "inputs": ["cat"]},
        {"name": "side", "op": "linear", "inputs": ["flat"]},
        {"name": "sm", "op": "softmax", "inputs": ["side"]},
    ]
    return w, graph_of(nodes, ["fc", "sm"], [3, 9, 6])


def calib_batches(rng, shape, n=3, batch=16):
    return [rng.standard_normal((batch,) + tuple(shape)).astype(np.float32) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Graph format

def test_bundled_models_validate_and_run_float():
    x = np.load(bundled("digits_test_x.npy"))
    y = np.load(bundled("digits_test_y.npy"))
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and y.dtype.kind == "i"
    for name in ("digits_mlp.npz", "digits_cnn.npz"):
        g, inferred = load_float_model(bundled(name))
        assert not inferred
        assert np.mean(G.run_float(g, x).argmax(1) == y) > 0.96
    total = sum(os.path.getsize(bundled(f)) for f in os.listdir(os.path.dirname(bundled("x"))))
    assert total < 1 << 20


def test_inferred_mlp(tmp_path):
    rng = np.random.default_rng(0)
    path = save_float(tmp_path / "m.npz", mlp_weights(rng))
    g, inferred = load_float_model(path, activation="relu6")
    assert inferred
    assert [(n.name, n.op) for n in g.nodes] == [("fc1", "linear"), ("fc1_relu6", "relu6"), ("fc2", "linear")]
    assert g.input_shape == (None, 12) and g.outputs == ["fc2"]


def test_float_conv_matches_direct_convolution():
    rng = np.random.default_rng(1)
    w, spec = every_op_model(rng)
    g = G.validate(spec, w)
    x = rng.standard_normal((2, 3, 9, 6)).astype(np.float32)
    env = G.run_float(g, x, keep_all=True)

    def direct(x, w, b, stride, pad, dil, groups):
        n, c, h, wd = x.shape
        o, ig, kh, kw = w.shape
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
        oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
        y = np.zeros((n, o, oh, ow))
        og = o // groups
        for oc in range(o):
            k = oc // og
            for i in range(oh):
                for j in range(ow):
                    patch = xp[:, k * ig:(k + 1) * ig, i * stride[0]:i * stride[0] + dil[0] * (kh - 1) + 1:dil[0],
                               j * stride[1]:j * stride[1] + dil[1] * (kw - 1) + 1:dil[1]]
                    y[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (b[oc] if b is not None else 0)
        return y

    r1 = L.to_external(env["r1"])
    c2 = direct(r1, w["c2.weight"], w["c2.bias"], (2, 1), (2, 1), (2, 1), 2)
    np.testing.assert_allclose(L.to_external(env["c2"]), c2, rtol=1e-4, atol=1e-4)
    dw = direct(L.to_external(env["r2"]).repeat(2, axis=1), w["dw.weight"], w["dw.bias"], (1, 1), (1, 1), (1, 1), 16)
    np.testing.assert_allclose(L.to_external(env["dw"]), dw, rtol=1e-4, atol=1e-4)


def _bad(spec_edit=None, weights_edit=None):
    rng = np.random.default_rng(0)
    w = mlp_weights(rng)
    spec = graph_of([{"name": "fc1", "op": "linear", "inputs": ["x"]},
                     {"name": "act", "op": "relu", "inputs": ["fc1"]},
                     {"name": "fc2", "op": "linear", "inputs": ["act"]}], ["fc2"], [12])
    if spec_edit:
        spec_edit(spec)
    if weights_edit:
        weights_edit(w)
    return spec, w


def _nan(w):
    w["fc2.weight"][0, 0] = np.nan


@pytest.mark.parametrize("spec_edit, weights_edit, message", [
    (lambda s: s["nodes"][2].update(op="dense"), None,
     "node 'fc2': key 'op' is 'dense', not one of"),
    (None, lambda w: w.pop("fc2.weight"), "node 'fc2': weight key 'fc2.weight' is missing from the archive"),
    (None, lambda w: w.update(extra=np.zeros(3, np.float32)), "weights: key 'extra' is not used by any node"),
    (None, lambda w: w.update({"fc2.weight": np.zeros((5, 7), np.float32)}),
     "node 'fc2': key 'inputs' gives shape [None, 16] but weight 'fc2.weight' has shape [5, 7]"),
    (None, _nan, "node 'fc2': weight key 'fc2.weight' contains NaN or Inf"),
    (lambda s: s["nodes"][0].update(inputs=["fc2"]), None, "node 'fc1': key 'inputs' is part of a cycle"),
    (lambda s: s["nodes"][1].update(inputs=["nope"]), None, "node 'act': key 'inputs' names unknown tensor 'nope'"),
    (lambda s: s["nodes"][1].update(kernel=3), None, "node 'act': unknown key 'kernel' for op relu"),
    (lambda s: s.update(format="fixq.graph/2"), None, "graph: key 'format' must be 'fixq.graph/1'"),
    (lambda s: s["nodes"][1].update(op="softmax"), None, "node 'act': key 'op' softmax is computed in float"),
    (lambda s: s["nodes"][1].update(name="fc1"), None, "node 'fc1': key 'name' is used twice"),
    (lambda s: s["outputs"].append("zz"), None, "graph: key 'outputs' names unknown tensor 'zz'"),
    (None, lambda w: w.update({"fc1.bias": np.zeros(3, np.float32)}),
     "node 'fc1': bias key 'fc1.bias' has shape (3,); expected (16,)"),
])
def test_graph_validation_errors(spec_edit, weights_edit, message):
    spec, w = _bad(spec_edit, weights_edit)
    with pytest.raises(G.GraphError) as e:
        G.validate(spec, w)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_conv_validation_errors():
    rng = np.random.default_rng(0)
    w, spec = every_op_model(rng)
    spec["nodes"][2]["groups"] = 3
    with pytest.raises(G.GraphError, match="node 'c2': key 'groups'=3 does not fit 8 input channels"):
        G.validate(spec, w)
    w, spec = every_op_model(rng)
    spec["nodes"][0]["stride"] = 0
    with pytest.raises(G.GraphError, match="node 'c1': key 'stride' must be an integer >= 1"):
        G.validate(spec, w)


# ---------------------------------------------------------------------------------------------
# Round trip: float -> quantize -> archive -> run == int64 simulation, bit for bit

@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("activations, per_channel", [("int8", True), ("uint8", False)])
def test_round_trip_bit_exact(tmp_path, isa, rounding, activations, per_channel):
    rng = np.random.default_rng(7)
    w, spec = every_op_model(rng)
    g = G.validate(spec, w)
    q = quantize_model(g, calib_batches(rng, (3, 9, 6)), rounding=rounding, activations=activations,
                       per_channel=per_channel)
    path = str(tmp_path / "q.npz")
    q.save(path)
    m = Model.load(path)
    x = rng.standard_normal((5, 3, 9, 6)).astype(np.float32) * 1.5
    fc, sm = m.run(x, raw=True)
    want_fc, want_sm = simulate(path, x)
    assert fc.dtype == np.dtype(activations)
    np.testing.assert_array_equal(fc.astype(np.int64), want_fc)
    side = m.run_all(x)["side"]
    np.testing.assert_array_equal(side.astype(np.int64), want_sm)
    np.testing.assert_array_equal(G.softmax(fixq.dequantize(side, *m.qparams("side")), 1), sm)
    # the float outputs are the dequantized integers; batch 1 gives the same rows
    y_fc, _ = m.run(x)
    np.testing.assert_array_equal(y_fc, fixq.dequantize(fc, *m.qparams("fc")))
    np.testing.assert_array_equal(m.run(x[2:3], raw=True)[0], fc[2:3])


def test_round_trip_bundled_cnn_bit_exact(tmp_path, isa):
    g, _ = load_float_model(bundled("digits_cnn.npz"))
    calib = np.load(bundled("digits_calib.npy"))
    q = quantize_model(g, [calib[:128], calib[128:]])
    path = str(tmp_path / "cnn.npz")
    q.save(path)
    x = np.load(bundled("digits_test_x.npy"))[:64]
    np.testing.assert_array_equal(Model.load(path).run(x, raw=True).astype(np.int64), simulate(path, x))


def test_rounding_override_at_load(tmp_path):
    rng = np.random.default_rng(3)
    g = G.validate(*_bad()[:1], _bad()[1])
    q = quantize_model(g, calib_batches(rng, (12,)))
    path = str(tmp_path / "q.npz")
    q.save(path)
    x = rng.standard_normal((9, 12)).astype(np.float32)
    for r in ("single", "fp32"):
        np.testing.assert_array_equal(Model.load(path, rounding=r).run(x, raw=True).astype(np.int64),
                                      simulate(path, x, rounding=r))


# ---------------------------------------------------------------------------------------------
# Accuracy on the bundled digits models (real data)

@pytest.mark.parametrize("name", ["digits_mlp.npz", "digits_cnn.npz"])
@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_int8_accuracy_within_one_point(name, method):
    g, _ = load_float_model(bundled(name))
    calib = np.load(bundled("digits_calib.npy"))
    x = np.load(bundled("digits_test_x.npy"))
    y = np.load(bundled("digits_test_y.npy"))
    m = quantize_model(g, [calib], method=method, per_channel=True)
    acc_f = np.mean(G.run_float(g, x).argmax(1) == y)
    acc_q = np.mean(m.run(x).argmax(1) == y)
    assert abs(acc_q - acc_f) <= 0.01, (acc_f, acc_q)


@pytest.mark.parametrize("name", ["digits_mlp.npz", "digits_cnn.npz"])
def test_dynamic_mode(tmp_path, name):
    g, _ = load_float_model(bundled(name))
    x = np.load(bundled("digits_test_x.npy"))
    y = np.load(bundled("digits_test_y.npy"))
    q = quantize_model(g, dynamic=True)
    path = str(tmp_path / "d.npz")
    q.save(path)
    m = Model.load(path)
    assert "t:x:scale" not in m.arrays
    out = m.run(x)
    f = G.run_float(g, x)
    assert abs(np.mean(out.argmax(1) == y) - np.mean(f.argmax(1) == y)) <= 0.01
    assert np.max(np.abs(out - f)) < 0.05 * np.max(np.abs(f))
    with pytest.raises(ValueError, match="raw=True needs a static int8 model"):
        m.run(x, raw=True)


def test_run_argument_errors(tmp_path):
    rng = np.random.default_rng(0)
    g = G.validate(*_bad())
    m = quantize_model(g, calib_batches(rng, (12,)))
    with pytest.raises(ValueError, match=r"x has shape \(4, 11\); the model's input 'x' needs \[N, 12\]"):
        m.run(np.zeros((4, 11), np.float32))
    with pytest.raises(TypeError, match="x must be a float array, got dtype int8"):
        m.run(np.zeros((4, 12), np.int8))
    bad = np.zeros((2, 12), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="input contains NaN"):
        m.run(bad)
    with pytest.raises(ValueError, match="step 'fc1': its input contains NaN or Inf"):
        quantize_model(g, dynamic=True).run(bad)
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        m.run(np.zeros((4, 12), np.float32), threads=0)
    with pytest.raises(ValueError, match="static quantization needs calibration data"):
        quantize_model(g)
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_model(g, [], method="kl")


# ---------------------------------------------------------------------------------------------
# Malformed archives

@pytest.fixture
def archive(tmp_path):
    rng = np.random.default_rng(0)
    q = quantize_model(G.validate(*_bad()), calib_batches(rng, (12,)))
    path = str(tmp_path / "q.npz")
    q.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays


def _rewrite(path, arrays, **kw):
    np.savez(path, **arrays, **kw)


def test_archive_truncated(archive):
    path, _ = archive
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(ArchiveError, match=r"q\.npz: (damaged or not an \.npz archive|key .* is damaged)"):
        Model.load(path)


def test_archive_not_a_zip(tmp_path):
    path = tmp_path / "q.npz"
    path.write_bytes(b"hello, not a zip")
    with pytest.raises(ArchiveError, match="damaged or not an .npz archive"):
        Model.load(str(path))


def test_archive_wrong_dtype(archive):
    path, a = archive
    a["fc1:weight"] = a["fc1:weight"].astype(np.float32)
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match="step 'fc1': key 'fc1:weight' has dtype float32; expected int8"):
        Model.load(path)


def test_archive_wrong_shape(archive):
    path, a = archive
    a["fc2:multiplier"] = a["fc2:multiplier"][:2]
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match=r"step 'fc2': key 'fc2:multiplier' has shape \(2,\); expected \(5,\)"):
        Model.load(path)


def test_archive_pickled_object_array(archive):
    path, a = archive
    a["fc1:bias"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **a)
    with pytest.raises(ArchiveError, match="key 'fc1:bias' holds a pickled object array"):
        Model.load(path)


def test_archive_missing_keys(archive):
    path, a = archive[0], dict(archive[1])
    meta = json.loads(str(a["__meta__"]))
    del meta["steps"]
    a["__meta__"] = np.array(json.dumps(meta))
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match="key '__meta__' lacks 'steps'"):
        Model.load(path)
    path2 = path + ".2.npz"
    b = dict(archive[1])
    del b["fc2:shift"]
    _rewrite(path2, b)
    with pytest.raises(ArchiveError, match="step 'fc2': key 'fc2:shift' is missing"):
        Model.load(path2)
    b = dict(archive[1])
    del b["__format__"]
    _rewrite(path2, b)
    with pytest.raises(ArchiveError, match="no key '__format__'; not a fixq quantized model"):
        Model.load(path2)


def test_archive_newer_version(archive):
    path, a = archive
    a["__format__"] = np.array("fixq.qmodel/2")
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match="format fixq.qmodel/2 is newer than this fixq"):
        Model.load(path)


def test_archive_bad_zero_point(archive):
    path, a = archive
    a["t:x:zero_point"] = np.int32(300)
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match="tensor 'x': key 't:x:zero_point' = 300 is outside int8"):
        Model.load(path)


def test_archive_meta_inconsistent(archive):
    path, a = archive
    meta = json.loads(str(a["__meta__"]))
    meta["steps"][0]["inputs"] = ["ghost"]
    a["__meta__"] = np.array(json.dumps(meta))
    _rewrite(path, a)
    with pytest.raises(ArchiveError, match="step 'fc1': key 'inputs' names unknown tensor 'ghost'"):
        Model.load(path)


# ---------------------------------------------------------------------------------------------
# Ternary, binary and fp16 weights

@pytest.mark.parametrize("weights", ["ternary", "binary"])
def test_lowbit_weights_bit_exact_and_packed(tmp_path, weights):
    rng = np.random.default_rng(5)
    w, spec = every_op_model(rng)
    g = G.validate(spec, w)
    q = quantize_model(g, calib_batches(rng, (3, 9, 6)), weights=weights)
    path = str(tmp_path / "q.npz")
    q.save(path)
    m = Model.load(path)
    key = {"ternary": "weight_codes", "binary": "weight_bits"}[weights]
    per = {"ternary": 4, "binary": 8}[weights]
    assert m.arrays[f"c2:{key}"].shape == (8, (4 * 3 * 3 + per - 1) // per)
    assert "c2:weight" not in m.arrays
    wq = m.weight(m.steps[1])
    assert wq.shape == (8, 4, 3, 3) and set(np.unique(wq)) <= {-1, 0, 1}
    x = rng.standard_normal((4, 3, 9, 6)).astype(np.float32)
    fc, _ = m.run(x, raw=True)
    np.testing.assert_array_equal(fc.astype(np.int64), simulate_lowbit(path, m, x))


def simulate_lowbit(path, m, x):
    """The int64 simulation on an archive rewritten with the unpacked int8 codes."""
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    meta = json.loads(str(a["__meta__"]))
    for s in meta["steps"]:
        if "weight_shape" in s:
            a[f"{s['name']}:weight"] = m.weight(s)
    alt = path + ".int8.npz"
    np.savez(alt, **a)
    return simulate(alt, x)[0]


def test_fp16_weights(tmp_path):
    g, _ = load_float_model(bundled("digits_cnn.npz"))
    x = np.load(bundled("digits_test_x.npy"))
    q = quantize_model(g, weights="fp16")
    path = str(tmp_path / "f16.npz")
    q.save(path)
    m = Model.load(path)
    assert m.arrays["conv1:weight"].dtype == np.float16
    assert m.weight_bytes() < 0.55 * m.float_weight_bytes()
    ref = G.run_float(g, x)
    out = m.run(x)
    assert np.max(np.abs(out - ref)) < 1e-2 * np.max(np.abs(ref))
    assert np.mean(out.argmax(1) == ref.argmax(1)) > 0.99


def test_empty_batch_in_every_mode():
    """A batch of 0 gives empty outputs (as numpy would) in every mode, engine or numpy steps; dynamic
    and fp16 models used to fail inside numpy (x.min() of an empty array, reshape(0, -1))."""
    x = np.load(bundled("digits_test_x.npy"))[:0]
    calib = np.load(bundled("digits_calib.npy"))[:64]
    for name in ("digits_mlp.npz", "digits_cnn.npz"):
        g, _ = load_float_model(bundled(name))
        assert G.run_float(g, x).shape == (0, 10)
        for kw in ({}, {"dynamic": True}, {"weights": "fp16"}):
            q = quantize_model(g, [calib], **kw)
            assert q.run(x, threads=3).shape == (0, 10)
            for engine in (True, False):
                assert all(v.shape[0] == 0 for v in q.run_all(x, engine=engine).values())


def test_threads_beyond_int32_are_capped():
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    x = np.load(bundled("digits_test_x.npy"))[:8]
    for kw in ({}, {"dynamic": True}):
        q = quantize_model(g, [np.load(bundled("digits_calib.npy"))[:64]], **kw)
        want = q.run(x)
        for t in (2**31, 2**63):
            np.testing.assert_array_equal(q.run(x, threads=t), want)
            np.testing.assert_array_equal(q.run_all(x, threads=t, engine=False)[q.outputs[0]],
                                          q.run_all(x, engine=False)[q.outputs[0]])
