"""Crafted quantized archives that pass the key-by-key checks but lie in their step attributes, names,
shapes or sizes: each is refused by the one validator that ``Model.load`` and ``fixq inspect`` share
(fixq.archive.read_archive), with one line naming the archive and the key, before anything reaches C;
and the C plan's own check refuses wrapped geometry."""
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from fixq import _core, graph as G
from fixq.archive import ArchiveError, load_float_model, read_archive
from fixq.cli import cli
from fixq.engine import Model
from fixq.quantizer import quantize_model

from test_engine import calib_batches, every_op_model, graph_of, save_float


@pytest.fixture(scope="module")
def every_op(tmp_path_factory):
    """The path, meta and arrays of a static int8 archive of every op, and an input batch."""
    d = tmp_path_factory.mktemp("untrusted")
    rng = np.random.default_rng(3)
    w, graph = every_op_model(rng)
    g, _ = load_float_model(save_float(d / "f.npz", w, graph))
    m = quantize_model(g, calib_batches(rng, (3, 9, 6)))
    m.save(str(d / "q.npz"))
    meta, arrays = read_archive(str(d / "q.npz"))
    return d / "q.npz", meta, arrays, rng.standard_normal((2, 3, 9, 6)).astype(np.float32)


def write(path, meta, arrays):
    a = dict(arrays)
    a["__format__"] = np.array("fixq.qmodel/1")
    a["__meta__"] = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    np.savez(path, **a)
    return str(path)


def edited(every_op, tmp_path, edit):
    _, meta, arrays, _ = every_op
    meta = json.loads(json.dumps(meta))
    steps = {s["name"]: s for s in meta["steps"]}
    edit(meta, steps)
    return write(tmp_path / "e.npz", meta, arrays)


def refused(path, match):
    """Model.load and `fixq inspect` both refuse `path` with one line naming it and `match`."""
    with pytest.raises(ArchiveError, match=match) as e:
        Model.load(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    r = CliRunner().invoke(cli, ["inspect", path])
    assert r.exit_code == 1 and r.exception is None or isinstance(r.exception, SystemExit), r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixq: error: ") and match.split("'")[0] in lines[0], r.stderr


def _set(name, key, value):
    def edit(meta, steps):
        steps[name][key] = value
    return edit


@pytest.mark.parametrize("name,key,value,match", [
    # out-of-bounds writes in C: 2 * padding wraps to an honest size
    ("c1", "padding", [1, 2**63 + 1], "key 'padding' must be an integer >="),
    ("mp", "padding", [2**63, 2**63], "key 'padding' must be an integer >="),
    ("ap", "kernel", [65536, 65536], "covers more than 8388608 values"),
    ("ap", "kernel", [9, 9], "does not fit"),
    # silent wrong answers
    ("c1", "depthwise", True, "key 'depthwise' is True, but groups=1"),
    ("dw", "depthwise", False, "key 'depthwise' is False"),
    ("mp", "padding", [2, 2], "at most half the kernel"),
    ("c2", "stride", [2.0, 1], "key 'stride' must be an integer"),
    ("c2", "stride", [True, 1], "key 'stride' must be an integer"),
    ("c2", "dilation", [1, 1], "its attributes give output shape"),
    ("c2", "groups", 0, "key 'groups' must be an integer >="),
    ("c2", "groups", 4, "key 'groups'=4 does not fit"),
    ("c1", "weight_shape", [8, 3, 3, True], "key 'weight_shape'"),
    ("cat", "axis", 0, "key 'axis'=0 is out of range"),
    ("cat", "axis", 1.0, "key 'axis'=1.0 is out of range"),
    ("sm", "axis", 5, "key 'axis'=5 must be a non-batch axis"),
    ("c1", "act", "sigmoid", "key 'act' is 'sigmoid'"),
    ("mp", "act", "relu", "key 'act' is 'relu'"),
    ("c1", "out_min", 2**40, "keys 'out_min', 'out_max'"),
    ("c1", "color", "red", "unknown key 'color' for op conv2d"),
    ("c1", "op", "gelu", "key 'op' is 'gelu'"),
])
def test_step_attributes_are_validated(every_op, tmp_path, name, key, value, match):
    refused(edited(every_op, tmp_path, _set(name, key, value)), match)


def test_fused_activation_without_bounds_is_refused(every_op, tmp_path):
    def edit(meta, steps):
        del steps["c1"]["out_min"]
    refused(edited(every_op, tmp_path, edit), "keys 'out_min' and 'out_max' are missing")


@pytest.mark.parametrize("shape,match", [
    ([None, 2**63 + 32, 1, 2], "input_shape"),          # heap overflow in the plan's transpose
    ([None, 3, 2**20, 2**20], "input_shape"),
])
def test_input_shape_is_cross_checked(every_op, tmp_path, shape, match):
    def edit(meta, steps):
        meta["tensors"]["x"] = shape
    refused(edited(every_op, tmp_path, edit), match)


def test_huge_tensor_shapes_are_refused(every_op, tmp_path):
    def edit(meta, steps):
        meta["tensors"]["x"] = meta["input_shape"] = [None, 3, 2**20, 2**20]
    refused(edited(every_op, tmp_path, edit), "values per sample, more than")


@pytest.mark.parametrize("bad", ["t:x", "../../x", "a/b", "", "x" * 129, "sp ace", "é"])
def test_names_outside_the_character_set_are_refused(every_op, tmp_path, bad):
    def edit(meta, steps):
        steps["c1"]["name"] = bad
    refused(edited(every_op, tmp_path, edit), "must be 1 to 128 characters")


def test_duplicates_are_refused(every_op, tmp_path):
    refused(edited(every_op, tmp_path, _set("c3", "name", "c1")), "key 'name' is used twice")
    refused(edited(every_op, tmp_path, _set("c3", "output", "r1")), "is computed twice")
    path, meta, arrays, _ = every_op
    text = json.dumps(meta)
    refused(write(tmp_path / "k.npz", text[:-1] + ', "input": "x"}', arrays), "key 'input' appears twice")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as out:
        for n, data in members.items():
            out.writestr(n, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            out.writestr("c1:bias.npy", members["c1:bias.npy"])
    refused(str(tmp_path / "z.npz"), "member 'c1:bias.npy' appears twice")


def test_deeply_nested_meta_is_one_line(every_op, tmp_path):
    _, _, arrays, _ = every_op
    refused(write(tmp_path / "n.npz", "[" * 100000 + "]" * 100000, arrays), "key '__meta__': JSON nested too deeply")
    with pytest.raises(G.GraphError, match="graph: JSON nested too deeply"):
        G.parse_spec('{"a": ' + "[" * 100000 + "]" * 100000 + "}")


def test_valid_archive_still_loads_and_runs(every_op):
    path, _, _, x = every_op
    m = Model.load(str(path))
    assert np.array_equal(m.run(x, raw=True)[0], m.run(x, raw=True)[0])
    r = CliRunner().invoke(cli, ["inspect", str(path)])
    assert r.exit_code == 0, r.output


def test_engine_limits_are_checked_before_calibration(tmp_path):
    """A graph the C plan cannot hold is refused before any calibration batch is read."""
    rng = np.random.default_rng(0)
    nodes = [{"name": "fc", "op": "linear", "inputs": ["x"]}]
    nodes += [{"name": f"r{i}", "op": "relu", "inputs": [f"r{i - 1}" if i else "fc"]} for i in range(1100)]
    w = {"fc.weight": rng.standard_normal((4, 4)).astype(np.float32), "fc.bias": np.zeros(4, np.float32)}
    g, _ = load_float_model(save_float(tmp_path / "f.npz", w, graph_of(nodes, ["r1099"], [4])))

    def calib():
        raise AssertionError("calibration started")
        yield
    with pytest.raises(ArchiveError, match="runs at most 1022 steps and 64 outputs"):
        quantize_model(g, calib())
    quantize_model(g, dynamic=True)


def test_long_chains_validate_in_order():
    """20,000 chained nodes, listed backwards, validate (the sort is linear: 0.3 s here where the
    level-by-level sort took minutes; tests assert no timings) and come out in execution order."""
    n = 20000
    nodes = [{"name": f"r{i}", "op": "relu", "inputs": [f"r{i - 1}" if i else "x"]} for i in range(n)]
    spec = graph_of(nodes[::-1], [f"r{n - 1}"], [4])
    g = G.validate(spec, {})
    assert [nd.name for nd in g.nodes] == [f"r{i}" for i in range(n)]
    with pytest.raises(G.GraphError, match="more than 100000"):
        G.validate(graph_of(nodes * 6, ["r0"], [4]), {})


def _plan(kernel, stride, padding, op="maxpool", x=(8, 8, 1), y=(8, 8, 1)):
    tensors = [x + (4,), x + (1,), y + (1,)]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": 1.0, "zp": 0, "form": "div-even"},
             {"op": op, "name": "pool", "in": [1], "out": 2, "kernel": kernel, "stride": stride, "padding": padding,
              "lo": -128, "zp": 0}]
    return _core.Engine("int8", tensors, steps, [(2, True, 1.0, 0, (y[2], y[0], y[1]), True)])


@pytest.mark.parametrize("kernel,stride,padding,op", [
    ((1, 1), (1, 1), (2**63, 2**63), "maxpool"),          # 2 * padding wraps to 0
    ((2**63 + 1, 1), (1, 1), (0, 0), "maxpool"),          # dilation * (kernel - 1) + 1 wraps
    ((65536, 65536), (2**16, 2**16), (32767, 32767), "avgpool"),  # kernel area 2**32: a zero divisor
])
def test_c_plan_refuses_wrapped_geometry(kernel, stride, padding, op):
    _plan((3, 3), (1, 1), (1, 1))  # the honest plan is accepted
    with pytest.raises(ValueError, match="engine plan: step 'pool' is inconsistent"):
        _plan(kernel, stride, padding, op, y=(1, 1, 1) if op == "avgpool" else (8, 8, 1))


def test_c_plan_refuses_wrapped_tensor_sizes():
    with pytest.raises(ValueError, match="inconsistent"):
        _plan((1, 1), (1, 1), (0, 0), x=(2**62, 4, 1), y=(2**62, 4, 1))


def _npz_member(zf, name, header_shape, payload, compress=zipfile.ZIP_DEFLATED):
    import io
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "|i1", "fortran_order": False, "shape": header_shape})
    zf.writestr(zipfile.ZipInfo(name), b.getvalue() + payload, compress_type=compress)


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """Members' uncompressed sizes are summed from the zip's directory before anything is inflated (a 3 MB
    archive of 3.1 GB of zeros took 2.99 GB of RSS and 22 s; now 33 MB and no time)."""
    monkeypatch.setitem(G.LIMITS, "archive_bytes", 1 << 20)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as zf:
        _npz_member(zf, "junk.npy", (2 << 20,), bytes(2 << 20))
    with pytest.raises(ArchiveError, match="hold more than 1048576 bytes uncompressed"):
        Model.load(str(tmp_path / "bomb.npz"))
    with pytest.raises(ArchiveError, match="hold more than 1048576 bytes uncompressed"):
        load_float_model(str(tmp_path / "bomb.npz"))


def test_member_size_must_match_its_header(tmp_path):
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as zf:
        _npz_member(zf, "fc.weight.npy", (2**40,), bytes(16))
    with pytest.raises(ArchiveError, match=r"member 'fc.weight.npy' declares shape \(1099511627776,\)"):
        load_float_model(str(tmp_path / "lie.npz"))


def test_conv_padding_is_bounded(tmp_path):
    """Padding 8192 on an 8x8 input took 3.1 GB and 17 s for one sample; now the padded input is refused."""
    w = {"c.weight": np.ones((1, 1, 3, 3), np.float32), "c.bias": np.zeros(1, np.float32)}
    spec = graph_of([{"name": "c", "op": "conv2d", "inputs": ["x"], "padding": 8192}], ["c"], [1, 8, 8])
    with pytest.raises(G.GraphError, match="padded input of shape .* more than 134217728"):
        load_float_model(save_float(tmp_path / "f.npz", w, spec))


def _mul_plan(form, scale):
    tensors = [(4, 4, 1, 4), (4, 4, 1, 1), (4, 4, 1, 1), (4, 4, 1, 1)]
    q = {"op": "quantize", "in": [0], "scale": 0.01, "zp": 0, "form": "div-even"}
    target = dict(form=form, scale=scale, a_zp=0, b_zp=0, out_zp=3, lo=-128, hi=127)
    steps = [dict(q, name="a", out=1), dict(q, name="b", out=2),
             {"op": "eltwise", "name": "mul", "in": [1, 2], "out": 3, "target": target}]
    return _core.Engine("int8", tensors, steps, [(3, True, 1.0, 0, (1, 4, 4), True)])


@pytest.mark.parametrize("form", ["onnxruntime-mul", "xnnpack-mul"])
@pytest.mark.parametrize("scale", [3e38, float("inf")])
def test_c_target_mul_saturates_a_product_past_int64(form, scale):
    # float -> int64 of a value past 2^63 (or NaN) was undefined behaviour (UBSan float-cast-overflow)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = _mul_plan(form, scale).run(x, 1, True, False)[0].reshape(-1)
    sq = np.rint(x.reshape(-1) / np.float32(0.01)).astype(np.int64) ** 2
    assert np.all(y[sq > 0] == 127)
    if np.isfinite(scale):
        assert np.all(y[sq == 0] == 3)


@pytest.mark.parametrize("zp,ok", [(-128, True), (127, True), (2**30, False), (-(2**31), False)])
def test_c_plan_checks_the_global_avgpool_input_zero_point(zp, ok):
    # h * w * zp in int32: a zero point outside int8 wrapped (signed overflow) for a 64 x 64 input
    rq = {"rounding": "fp32", "scale": np.full(2, 1 / 4096, np.float32), "zero_point": np.zeros(2, np.int32),
          "qmin": -128, "qmax": 127}
    tensors = [(64, 64, 2, 4), (64, 64, 2, 1), (1, 1, 2, 1)]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": 1.0, "zp": 0, "form": "div-even"},
             {"op": "global_avgpool", "name": "gap", "in": [1], "out": 2, "zp": zp, "rq": rq}]
    if ok:
        _core.Engine("int8", tensors, steps, [(2, True, 1.0, 0, (2,), True)])
    else:
        with pytest.raises(ValueError, match="engine plan: step 'gap' is inconsistent"):
            _core.Engine("int8", tensors, steps, [(2, True, 1.0, 0, (2,), True)])
