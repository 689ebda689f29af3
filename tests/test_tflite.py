""".tflite models (fixq.import_tflite, Model.load of a .tflite path, the CLI) against the outputs of LiteRT's
three kernel sets, recorded by tests/data/tflite/make_models.py: every element equal, on every CPU path.
The live checks against LiteRT's interpreter run where ai-edge-litert imports.  TensorFlow is never needed."""
import copy
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("flatbuffers")

import fixq  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.io import TfliteError, import_tflite  # noqa: E402
from fixq.io.tflite import run_tflite, tflite_input, tflite_tensors  # noqa: E402
from fixq.io.tflite_file import read_model  # noqa: E402
from fixq.io.tflite_litert import first_divergence, litert, run_litert  # noqa: E402
from fixq.archive import ArchiveError, check_archive  # noqa: E402
from tflite_edit import patch_field  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
MODELS = ("mobilenet_v2", "ds_cnn", "mlp", "uint8_io", "same_pad", "mlp_float_io", "broadcast", "broadcast_ties",
          "uint8_requantize")
TARGETS = ("tflite-reference", "tflite", "xnnpack")

CASES = [(n, t) for n in MODELS for t in TARGETS]


def path(name):
    return os.path.join(DATA, name + ".tflite")


def golden(name):
    with np.load(os.path.join(DATA, name + ".npz")) as g:
        return {k: g[k] for k in g.files}


@pytest.mark.parametrize("name,target", CASES)
def test_outputs_equal_litert(isa, name, target):
    g = golden(name)
    m = fixq.Model.load(path(name), target=target)
    ys = run_tflite(m, g["x"])
    for k, y in enumerate(ys):
        ref = g[f"y:{target}:{k}"]
        assert y.dtype == ref.dtype and y.shape == ref.shape
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("name,target", CASES)
def test_every_layer_equals_litert(isa, name, target):
    g = golden(name)
    m = fixq.Model.load(path(name), target=target)
    gold = {int(k.split(":")[2]): v for k, v in g.items() if k.startswith(f"t:{target}:")}
    mine = tflite_tensors(m, g["x"][:len(next(iter(gold.values())))])
    ops = read_model(path(name)).operators
    float_softmax = {o.outputs[0] for o in ops if o.op == "SOFTMAX"}  # fixq's softmax is float (no int8 tensor)
    assert set(gold) - set(mine) <= float_softmax | {o.outputs[0] for o in ops if o.op == "QUANTIZE"}
    d = first_divergence(ops, mine, gold)
    assert d is None, f"operator {d[0].index} ({d[0].op}) differs on {d[2]} of {d[3]} elements"


@pytest.mark.parametrize("target", TARGETS)
def test_every_model_runs_on_the_c_plan(isa, target):
    """Each bundled model is one C plan under each kernel set (broadcasting and constant ADD / SUB / MUL, the
    optimized ADD / MUL's NEON loops by position): every tensor the numpy steps' integers."""
    for name in MODELS:
        m = fixq.Model.load(path(name), target=target)
        assert m._engine is not None, name
        x = tflite_input(m, golden(name)["x"])
        want, got = m.run_all(x, engine=False), m.run_all(x)
        for k, v in got.items():
            if v.dtype != np.float32:
                np.testing.assert_array_equal(v, want[k], err_msg=f"{name}: {k}")


@pytest.mark.skipif(litert() is None, reason="needs ai-edge-litert (LiteRT's interpreter)")
@pytest.mark.parametrize("name,target", CASES)
def test_live_litert(name, target):
    m = fixq.Model.load(path(name), target=target)
    io = m.meta["tflite"]["inputs"][0]
    rng, shape = np.random.default_rng(7), (6,) + tuple(io["shape"][1:])
    if io["dtype"] == "float32":
        x = rng.normal(0, 1.5, shape).astype(np.float32)
    else:
        info = np.iinfo(io["dtype"])
        x = rng.integers(info.min, info.max + 1, shape).astype(io["dtype"])
    with open(path(name), "rb") as f:
        refs, _ = run_litert(f.read(), x, target)
    for y, ref in zip(run_tflite(m, x), refs):
        np.testing.assert_array_equal(y, ref)


def test_kernel_sets_part_ways_in_the_goldens():
    """The recorded outputs differ between kernel sets (the point of target=), and the first operator where
    they part ways is found from the preserved tensors."""
    g = golden("mobilenet_v2")
    assert np.any(g["y:tflite:0"] != g["y:xnnpack:0"])
    ops = read_model(path("mobilenet_v2")).operators
    ta, tb = ({int(k.split(":")[2]): v for k, v in g.items() if k.startswith(f"t:{t}:")} for t in ("tflite", "xnnpack"))
    o, k, n, size = first_divergence(ops, ta, tb)
    assert (o.index, o.op, k) == (0, "CONV_2D", 23) and 0 < n < size


def test_optimized_add_neon_loops_in_the_goldens():
    """broadcast_ties' constant ADDs hit input pairs where the optimized ADD's NEON loops (AddElementwiseInt8,
    AddScalarBroadcast) round away from its scalar loop: LiteRT's tflite outputs differ there from the
    reference arithmetic, and fixq's tflite kernel set follows the NEON loops."""
    g, tm = golden("broadcast_ties"), read_model(path("broadcast_ties"))
    differ = 0
    for o in tm.operators:
        if o.op != "ADD" or tm.tensors[o.inputs[1]].data is None:
            continue
        ta, tb, to = (tm.tensors[k] for k in (o.inputs[0], o.inputs[1], o.outputs[0]))
        a = g[f"t:tflite:{o.inputs[0]}"]
        b = tb.data.reshape((1,) * (a.ndim - tb.data.ndim) + tb.data.shape)
        args = (ta.scale[0], int(ta.zero_point[0]), tb.scale[0], int(tb.zero_point[0]), to.scale[0],
                int(to.zero_point[0]))
        gold = g[f"t:tflite:{o.outputs[0]}"]
        np.testing.assert_array_equal(fixq.targets.binary8("add", a, b, "tflite", *args), gold)
        differ += int(np.count_nonzero(fixq.targets.binary8("add", a, b, "tflite-reference", *args) != gold))
    assert differ == 82  # 79 in the [1, H, W, C] + [C] ADD, 3 in the [1, C] + scalar one


@pytest.mark.parametrize("op,params,agree", [
    ("add", (0.05, 3, 0.04, -3, 0.08, 1), False),
    ("add", (0.015622425, -69, 0.007753962, 38, 0.026468169, -86), False),
    ("add", (0.05, 3, 0.04, -3, 0.09, 1), True),
    ("mul", (0.05, 3, 0.04, -3, 0.003, 1), True),
    ("mul", (0.05, 3, 0.04, -3, 0.00001, 1), False),  # saturates: the NEON loop's int16 narrowing differs
])
def test_neon_agrees_is_the_exhaustive_comparison(op, params, agree):
    """fixq.targets.tflite.neon_agrees (which keeps an equal-shape ADD / MUL on the C plan) against both loops
    run on all 65536 input pairs."""
    from fixq.targets import tflite as T
    q = np.arange(-128, 128, dtype=np.int8)
    a, b = (v.reshape(-1) for v in np.meshgrid(q, q, indexing="ij"))
    args = tuple(np.float32(v) if isinstance(v, float) else v for v in params) + (-128, 127)
    fn = T.add_optimized if op == "add" else T.mul_optimized
    neon = fn(a.reshape(-1, 16), b.reshape(-1, 16), *args, np.int8).reshape(-1)
    scalar = fn(a.reshape(-1, 1), b.reshape(-1, 1), *args, np.int8).reshape(-1)
    assert np.array_equal(neon, scalar) == agree == T.neon_agrees(op, *args)


def test_dynamic_range_model_is_one_line():
    with pytest.raises(TfliteError, match=r"operator 2 \(FULLY_CONNECTED, version \d+\): a dynamic-range \(hybrid\) "
                                          r"layer: int8 weights, float32 activations") as e:
        import_tflite(path("mlp_dynamic"))
    assert "\n" not in str(e.value)


def test_uint8_tensor_read_by_another_op_is_one_line():
    from fixq.io.tflite_import import _Importer
    tm = read_model(path("uint8_requantize"))
    assert tm.operators[3].op == "QUANTIZE" and tm.tensors[tm.operators[3].inputs[0]].type == 3  # uint8 -> int8
    for op in ("RELU", "ADD"):
        tm.operators[3].op = op
        with pytest.raises(TfliteError, match=rf"operator 3 \({op}, version \d+\): input 0 is a uint8 tensor; "
                                              r"fixq reads uint8 tensors only with QUANTIZE"):
            _Importer(tm, "m.tflite").run()


def test_broadcast_steps_are_checked():
    """A broadcast step whose constant does not broadcast against its input is refused in one line."""
    m = import_tflite(path("broadcast"))
    meta, arrays = copy.deepcopy(m.meta), dict(m.arrays)
    s = next(s for s in meta["steps"] if s.get("constant") is not None and len(s["constant_shape"]) == 3)
    s["constant_shape"] = [7, 1, 1]
    arrays[f"{s['name']}:constant"] = np.zeros((1, 1, 1, 7), np.int8)
    with pytest.raises(ArchiveError, match=f"node {s['name']!r}: key 'inputs' gives shapes"):
        check_archive(meta, arrays, "model")


def test_import_keeps_the_models_parameters():
    """int8 weights, int32 biases, float32 scales and zero points exactly as stored (fixq's layouts)."""
    tm = read_model(path("ds_cnn"))
    m = import_tflite(path("ds_cnn"))
    steps = {s["name"]: s for s in m.steps}
    for o in tm.operators:
        if o.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        name = ("linear" if o.op == "FULLY_CONNECTED" else "conv2d") + f"_{o.index}"
        w = tm.tensors[o.inputs[1]]
        b = tm.tensors[o.inputs[2]].data if o.inputs[2] != -1 else np.zeros(w.shape[0], np.int32)
        want = {"CONV_2D": (0, 3, 1, 2), "DEPTHWISE_CONV_2D": (3, 0, 1, 2), "FULLY_CONNECTED": (0, 1)}[o.op]
        want = w.data.transpose(want)
        np.testing.assert_array_equal(m.arrays[f"{name}:weight"], want)
        assert m.arrays[f"{name}:weight"].dtype == np.int8
        np.testing.assert_array_equal(m.arrays[f"{name}:bias"], b)
        np.testing.assert_array_equal(m.arrays[f"{name}:weight_scale"], w.scale)
        out = tm.tensors[o.outputs[0]]
        assert m.qparams(steps[name]["output"]) == (float(out.scale[0]), int(out.zero_point[0]))
    assert steps["conv2d_3"]["depthwise"] and steps["conv2d_3"]["weight_shape"][0] == 2 * 16  # depth multiplier 2


def test_path_bytes_and_load_agree():
    with open(path("mlp"), "rb") as f:
        content = f.read()
    a, b = import_tflite(path("mlp")), import_tflite(content)
    assert a.steps == b.steps and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert fixq.Model.load(path("mlp")).target == "xnnpack"
    assert fixq.Model.load(path("mlp"), target="tflite-reference").target == "tflite-reference"
    with pytest.raises(ValueError, match="rounding= or target="):
        fixq.Model.load(path("mlp"), rounding="fp32", target="tflite")


def test_saved_archive_runs_the_same(tmp_path):
    m = import_tflite(path("ds_cnn"))
    m.save(tmp_path / "m.q.npz")
    x = golden("ds_cnn")["x"]
    for t in TARGETS:
        a = fixq.Model.load(tmp_path / "m.q.npz", target=t)
        np.testing.assert_array_equal(run_tflite(a, x)[0], run_tflite(fixq.Model.load(path("ds_cnn"), target=t), x)[0])


def test_unsupported_operator_is_one_line():
    with open(path("mlp"), "rb") as f:
        content = bytearray(f.read())
    bad = patch_field(content, ("operator_code", 0, "builtin_code"), 39)  # TRANSPOSE
    with pytest.raises(TfliteError, match=r"operator \d+ \(TRANSPOSE, version \d+\) is not supported; "
                                          r"docs/tflite.md lists") as e:
        import_tflite(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("edit,match", [
    (("version",), "schema version 7; fixq reads version 3"),
    (("tensor", 1, "buffer"), "buffer .* does not exist|holds .* bytes"),
    (("operator", 1, "opcode_index"), "opcode index .* does not exist"),
])
def test_damaged_fields_are_one_line(edit, match):
    with open(path("mlp"), "rb") as f:
        content = bytearray(f.read())
    value = {"version": 7, "buffer": 10**6, "opcode_index": 99}[edit[-1]]
    with pytest.raises(TfliteError, match=match):
        import_tflite(patch_field(content, edit, value))


def test_truncated_and_foreign_files(tmp_path):
    with open(path("mlp"), "rb") as f:
        content = f.read()
    with pytest.raises(TfliteError, match="outside the file|too short"):
        import_tflite(content[:len(content) // 2])
    with pytest.raises(TfliteError, match="is not a .tflite model"):
        import_tflite(content[:4] + b"PK\x03\x04" + content[8:])
    with pytest.raises(TfliteError, match="no such file"):
        import_tflite(str(tmp_path / "missing.tflite"))


# -- the command line -----------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_import_run_inspect(tmp_path):
    g = golden("ds_cnn")
    np.save(tmp_path / "x.npy", g["x"])
    r = invoke("import", path("ds_cnn"), "-o", tmp_path / "m.q.npz")
    assert r.exit_code == 0 and "target xnnpack" in r.output, r.output
    r = invoke("run", path("ds_cnn"), tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--target", "tflite", "-q")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  run_tflite(fixq.Model.load(path("ds_cnn"), target="tflite"), g["x"])[0])
    r = invoke("inspect", path("ds_cnn"), "--json")
    assert r.exit_code == 0
    layers = json.loads(r.output)["layers"]
    assert [ly["op"] for ly in layers][:2] == ["conv2d", "conv2d"] and layers[0]["multiplier"]
    r = invoke("run", path("ds_cnn"), tmp_path / "x.npy", "-o", tmp_path / "z.npy", "--raw")
    assert r.exit_code == 1 and r.output.startswith("fixq: error: a .tflite MODEL")


def test_cli_compare(tmp_path):
    np.save(tmp_path / "x.npy", golden("ds_cnn")["x"][:3])
    r = invoke("compare", path("ds_cnn"), "--data", tmp_path / "x.npy")
    assert r.exit_code == 0, r.output
    if litert() is None:
        assert r.output.startswith("ai-edge-litert is not installed")
    else:
        assert "xnnpack: fixq vs LiteRT, output" in r.output
    assert "tflite-reference vs tflite" in r.output


def test_cli_errors_are_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
    for args in (("run", path("mlp"), tmp_path / "x.npy", "-o", tmp_path / "y.npy"),
                 ("inspect", tmp_path / "bad.tflite"),
                 ("compare", path("mlp"), tmp_path / "x.npy", "--data", tmp_path / "x.npy")):
        r = invoke(*args)
        assert r.exit_code == 1 and r.output.startswith("fixq: error: ") and r.output.count("\n") == 1, r.output
