"""Archives as a new user meets them: files of other kinds named as what they are, the mode every
written file gets, pools without a stride, and global_avgpool's calibrated output."""
import json
import importlib.util
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from fixq import graph as G
from fixq.archive import ArchiveError, atomic_write, load_float_model, read_archive
from fixq.cli import cli
from fixq.cli.demo import bundled
from fixq.engine import Model
from fixq.quantizer import quantize_model

from engine_reference import simulate
from test_engine import calib_batches, graph_of, save_float


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------
# Files that are not fixq archives

def _torch_zip(path):
    """The layout of torch.save since PyTorch 1.6: a zip of <name>/data.pkl, <name>/data/0, ..."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/data.pkl", pickle.dumps({"fc.weight": "storage 0"}))
        z.writestr("model/data/0", b"\0" * 64)
        z.writestr("model/version", b"3\n")
    return path


@pytest.mark.parametrize("name,make,expected", [
    ("model.pt", _torch_zip, "is a PyTorch checkpoint (torch.save); fixq does not unpickle"),
    ("model.pth", lambda p: p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2)),
     "is a PyTorch checkpoint (torch.save)"),
    ("weights.pkl", lambda p: p.write_bytes(pickle.dumps([1, 2], protocol=4)), "is a Python pickle"),
    ("model.onnx", lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(40)), "is an ONNX model (.onnx)"),
    ("model.tflite", lambda p: p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40)),
     "is a TensorFlow Lite model (.tflite)"),
    ("x.npy", lambda p: np.save(p, np.zeros(3, np.float32)), "is a single .npy array, not an .npz archive"),
    ("random.bin", lambda p: p.write_bytes(os.urandom(256)), "damaged or not an .npz archive"),
])
def test_files_of_other_kinds_are_named(tmp_path, name, make, expected):
    path = tmp_path / name
    make(path)
    with pytest.raises(ArchiveError, match="^" + str(path).replace(".", r"\.") + ": " + expected.replace(
            "(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_float_model(str(path))
    for args in (["quantize", path, "-o", tmp_path / "q.npz", "--dynamic"], ["run", path, path, "-o",
                                                                            tmp_path / "y.npy"],
                 ["inspect", path]):
        r = invoke(*args)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        # run and inspect load .onnx and .tflite paths through their importers, which read these as damaged,
        # or, without the importer's package, say how to install it
        damaged = {".onnx": ("onnx", "cannot read it as an ONNX model", "pip install 'fixq[onnx]'"),
                   ".tflite": ("flatbuffers", "the file is truncated or damaged", "pip install 'fixq[tflite]'")}
        want = expected
        if args[0] != "quantize" and os.path.splitext(name)[1] in damaged:
            package, message, install = damaged[os.path.splitext(name)[1]]
            want = message if importlib.util.find_spec(package) is not None else install
        assert r.stderr.count("\n") == 1 and want in r.stderr, r.stderr


def test_quantized_and_float_archives_given_for_each_other(tmp_path):
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    quantize_model(g, [np.load(bundled("digits_calib.npy"))[:64]]).save(str(tmp_path / "q.npz"))
    r = invoke("quantize", tmp_path / "q.npz", "-o", tmp_path / "q2.npz", "--dynamic")
    assert r.exit_code == 1 and "is a fixq quantized model (fixq.qmodel/1), not a float model" in r.stderr
    assert "<U" not in r.stderr
    with pytest.raises(ArchiveError, match="is a float model, not a quantized one"):
        read_archive(bundled("digits_mlp.npz"))


# ---------------------------------------------------------------------------------------------
# File modes: what a plain open() would give

@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_written_files_get_the_mode_open_gives(tmp_path, umask_027):
    atomic_write(str(tmp_path / "a.bin"), lambda f: f.write(b"x"))
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == umask_027
    (tmp_path / "b.bin").write_bytes(b"old")
    os.chmod(tmp_path / "b.bin", 0o604)
    atomic_write(str(tmp_path / "b.bin"), lambda f: f.write(b"new"))
    assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o604
    assert (tmp_path / "b.bin").read_bytes() == b"new"
    r = invoke("quantize", bundled("digits_mlp.npz"), "-o", tmp_path / "q.npz", "--calib",
               bundled("digits_calib.npy"), "--quiet")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(tmp_path / "q.npz").st_mode) == umask_027
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.bin").write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(tmp_path / "keep.bin"), fail)
    assert (tmp_path / "keep.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]


# ---------------------------------------------------------------------------------------------
# Graphs

@pytest.mark.parametrize("op", ["maxpool2d", "avgpool2d"])
def test_pool_stride_defaults_to_kernel(op):
    w = {"fc.weight": np.ones((3, 2 * 3 * 3), np.float32)}
    spec = graph_of([{"name": "p", "op": op, "inputs": ["x"], "kernel": 2},
                     {"name": "f", "op": "flatten", "inputs": ["p"]},
                     {"name": "fc", "op": "linear", "inputs": ["f"]}], ["fc"], (2, 6, 7))
    g = G.validate(spec, w)
    assert g.nodes[0].attrs["stride"] == (2, 2) and g.shapes["p"] == (None, 2, 3, 3)
    spec["nodes"][0]["kernel"] = [3, 2]
    g = G.validate(spec, {"fc.weight": np.ones((3, 2 * 2 * 3), np.float32)})
    assert g.nodes[0].attrs["stride"] == (3, 2) and g.shapes["p"] == (None, 2, 2, 3)


def test_graph_in_an_archive_is_data_not_a_path(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(graph_of([{"name": "fc", "op": "linear", "inputs": ["x"]}],
                                                         ["fc"], (4,))))
    path = save_float(tmp_path / "m.npz", {"fc.weight": np.ones((2, 4), np.float32)})
    arrays = dict(np.load(path))
    np.savez(path, **arrays, __graph__=np.array(str(tmp_path / "g.json")))
    with pytest.raises(G.GraphError, match="invalid JSON"):
        load_float_model(path)
    g, inferred = load_float_model(path, graph=str(tmp_path / "g.json"))  # an explicit graph= may be a file
    assert not inferred and g.outputs == ["fc"]


# ---------------------------------------------------------------------------------------------
# global_avgpool: the mean requantized to its own calibrated range

def _gap_model(rng):
    w = {"c.weight": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) / 4, "c.bias": np.zeros(6, np.float32),
         "fc.weight": rng.standard_normal((4, 6)).astype(np.float32)}
    spec = graph_of([{"name": "c", "op": "conv2d", "inputs": ["x"], "padding": 1},
                     {"name": "r", "op": "relu", "inputs": ["c"]},
                     {"name": "gap", "op": "global_avgpool", "inputs": ["r"]},
                     {"name": "fc", "op": "linear", "inputs": ["gap"]}], ["fc", "gap"], (3, 7, 5))
    return G.validate(spec, w)


@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_global_avgpool_gets_its_own_scale(tmp_path, isa, rounding, activations):
    rng = np.random.default_rng(9)
    g = _gap_model(rng)
    m = quantize_model(g, calib_batches(rng, (3, 7, 5)), rounding=rounding, activations=activations)
    (s_in, _), (s_out, _) = m.qparams("r"), m.qparams("gap")
    assert s_out < s_in / 1.5  # the mean of a ReLU map spans far less than its largest pixel
    np.testing.assert_allclose(m.arrays["gap:scale"], s_in / (s_out * 35), rtol=1e-6)
    m.save(str(tmp_path / "q.npz"))
    x = rng.standard_normal((13, 3, 7, 5)).astype(np.float32)
    raw = Model.load(str(tmp_path / "q.npz")).run(x, raw=True)
    ref = simulate(str(tmp_path / "q.npz"), x)
    for a, b in zip(raw, ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m.run_all(x)["gap"], m.run_all(x, engine=False)["gap"])
    # the quantized mean is within half a step of the float mean of the dequantized input (where the
    # output range, calibrated on other samples, holds it)
    env = m.run_all(x)
    mean = m.dequantized("r", env["r"]).mean(axis=(1, 2))
    lo, hi = (-128, 127) if activations == "int8" else (0, 255)
    inside = (env["gap"] > lo) & (env["gap"] < hi)
    assert inside.mean() > 0.9
    err = np.abs(m.dequantized("gap", env["gap"]) - mean)[inside]
    # gemmlowp's double rounding (SRDHM, then RDBPOT) may add up to a quarter step to the half step
    assert err.max() <= s_out * (0.75 if rounding == "double" else 0.5) * (1 + 1e-4)


def test_global_avgpool_of_an_archive_without_its_requantization(tmp_path):
    """Archives written before global_avgpool had its own scale keep running as they were made: the
    input's scale, TFLite's rounded average."""
    rng = np.random.default_rng(10)
    m = quantize_model(_gap_model(rng), calib_batches(rng, (3, 7, 5)))
    arrays = {k: v for k, v in m.arrays.items() if not k.startswith("gap:")}
    arrays["t:gap:scale"], arrays["t:gap:zero_point"] = m.arrays["t:r:scale"], m.arrays["t:r:zero_point"]
    old = Model(m.meta, arrays)
    old.save(str(tmp_path / "old.npz"))
    x = rng.standard_normal((5, 3, 7, 5)).astype(np.float32)
    env = Model.load(str(tmp_path / "old.npz")).run_all(x)
    acc = env["r"].astype(np.int64).sum(axis=(1, 2))
    q = (np.abs(acc) + 17) // 35
    np.testing.assert_array_equal(env["gap"], np.where(acc < 0, -q, q))
    np.testing.assert_array_equal(simulate(str(tmp_path / "old.npz"), x)[1], env["gap"])


def test_eval_of_a_float_and_quantized_pair_that_do_not_belong_together(tmp_path):
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    quantize_model(g, [np.load(bundled("digits_calib.npy"))[:64]]).save(str(tmp_path / "q.npz"))
    r = invoke("eval", bundled("digits_cnn.npz"), tmp_path / "q.npz", "--data", bundled("digits_test_x.npy"))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "digits_cnn.npz is not the float model" in r.stderr and "q.npz was quantized from" in r.stderr
