"""``fixq run -o``: the format from the suffix, class ids with --argmax, atomic writes with open()'s mode."""
import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fixq.cli import cli
from fixq.cli._common import CliError, atomic_output
from fixq.cli._outputs import check_layout
from fixq.engine import Model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def save_model(path, weights, nodes, outputs, features):
    g = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, features]}], "nodes": nodes,
         "outputs": outputs}
    np.savez(path, **weights, __graph__=np.array(json.dumps(g)))


@pytest.fixture
def models(tmp_path):
    """q1.npz: one output fc2 [N, 3]; q2.npz: two outputs, fc1 [N, 5] (ReLU'd by relu1) and fc2 [N, 3]."""
    rng = np.random.default_rng(3)
    w = {"fc1.weight": rng.standard_normal((5, 4)).astype(np.float32), "fc1.bias": np.zeros(5, np.float32),
         "fc2.weight": rng.standard_normal((3, 5)).astype(np.float32), "fc2.bias": np.zeros(3, np.float32)}
    nodes = [{"name": "fc1", "op": "linear", "inputs": ["x"]}, {"name": "relu1", "op": "relu", "inputs": ["fc1"]},
             {"name": "fc2", "op": "linear", "inputs": ["relu1"]}]
    save_model(tmp_path / "f1.npz", w, nodes, ["fc2"], 4)
    save_model(tmp_path / "f2.npz", w, nodes, ["fc1", "fc2"], 4)
    x = rng.standard_normal((150, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for k in ("1", "2"):
        r = invoke("quantize", tmp_path / f"f{k}.npz", "-o", tmp_path / f"q{k}.npz", "--calib", tmp_path / "x.npy",
                   "--quiet")
        assert r.exit_code == 0, r.output
    return tmp_path


def test_formats_by_suffix(models):
    d = models
    x = np.load(d / "x.npy")
    m1, m2 = Model.load(str(d / "q1.npz")), Model.load(str(d / "q2.npz"))
    y1 = m1.run(x)
    y2 = m2.run(x)
    for suffix in (".npy", ".npz", ".csv", ".json"):
        r = invoke("run", d / "q1.npz", d / "x.npy", "-o", d / f"p1{suffix}", "--batch-size", 64, "--quiet")
        assert r.exit_code == 0, (suffix, r.output)
    np.testing.assert_array_equal(np.load(d / "p1.npy"), y1)
    with np.load(d / "p1.npz") as z:
        assert z.files == ["fc2"]
        np.testing.assert_array_equal(z["fc2"], y1)
    with open(d / "p1.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["fc2[0]", "fc2[1]", "fc2[2]"] and len(rows) == 1 + len(x)
    np.testing.assert_array_equal(np.array(rows[1:], np.float32), y1)  # 9 digits: float32 round-trips
    out = json.load(open(d / "p1.json"))
    assert list(out) == ["fc2"]
    np.testing.assert_array_equal(np.array(out["fc2"], np.float32), y1)

    # several outputs: .npz and .json keyed by output name
    assert invoke("run", d / "q2.npz", d / "x.npy", "-o", d / "p2.npz", "--quiet").exit_code == 0
    with np.load(d / "p2.npz") as z:
        assert z.files == ["fc1", "fc2"]
        np.testing.assert_array_equal(z["fc1"], y2[0])
        np.testing.assert_array_equal(z["fc2"], y2[1])
    assert invoke("run", d / "q2.npz", d / "x.npy", "-o", d / "p2.json", "--quiet").exit_code == 0
    out = json.load(open(d / "p2.json"))
    assert list(out) == ["fc1", "fc2"]
    np.testing.assert_array_equal(np.array(out["fc1"], np.float32), y2[0])

    # --raw keeps the integers in every format
    assert invoke("run", d / "q1.npz", d / "x.npy", "-o", d / "raw.csv", "--raw", "--quiet").exit_code == 0
    raw = np.loadtxt(d / "raw.csv", delimiter=",", skiprows=1, dtype=np.int64)
    np.testing.assert_array_equal(raw, m1.run(x, raw=True))


def test_argmax(models):
    d = models
    x = np.load(d / "x.npy")
    y1 = Model.load(str(d / "q1.npz")).run(x)
    for suffix in (".npy", ".npz", ".csv", ".json"):
        r = invoke("run", d / "q1.npz", d / "x.npy", "-o", d / f"c{suffix}", "--argmax", "--quiet")
        assert r.exit_code == 0, (suffix, r.output)
    want = y1.argmax(1)
    np.testing.assert_array_equal(np.load(d / "c.npy"), want)
    with np.load(d / "c.npz") as z:
        np.testing.assert_array_equal(z["fc2"], want)
    assert open(d / "c.csv").read() == "fc2\n" + "".join(f"{v}\n" for v in want)
    assert json.load(open(d / "c.json")) == {"fc2": want.tolist()}


def test_refusals_are_one_line(models):
    d = models
    cases = [
        (["run", d / "q1.npz", d / "x.npy", "-o", d / "p.txt"],
         f"fixq: error: {d / 'p.txt'}: cannot tell the output format from .txt; name it .npy, .npz, .csv or .json\n"),
        (["run", d / "q1.npz", d / "x.npy", "-o", d / "pred"],
         f"fixq: error: {d / 'pred'}: cannot tell the output format from a name without a suffix; name it .npy, "
         ".npz, .csv or .json\n"),
        (["run", d / "q2.npz", d / "x.npy", "-o", d / "p.csv"],
         f"fixq: error: {d / 'p.csv'}: a .csv file holds one output and this model has 2 (fc1, fc2); write .npz or "
         ".json (keyed by output name)\n"),
        (["run", d / "q2.npz", d / "x.npy", "-o", d / "p.npy"],
         f"fixq: error: {d / 'p.npy'}: a .npy file holds one output and this model has 2 (fc1, fc2); write .npz or "
         ".json (keyed by output name)\n"),
        (["run", d / "q1.npz", d / "x.npy", "-o", d / "p.npy", "--argmax", "--raw"],
         "fixq: error: --argmax gives class ids from the dequantized scores; drop --raw\n"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert (r.exit_code, r.stderr) == (1, message), args
    assert not [f for f in os.listdir(d) if f.startswith(("p.", "pred", ".fixq-"))]


def test_argmax_needs_two_dimensional_outputs():
    """check_layout refuses --argmax of an output that is not [N, C], for models and sequence models alike."""
    message = r"^--argmax needs \[N, C\] outputs and output 'h' is \[N, 9, 4\]; drop --argmax$"
    with pytest.raises(CliError, match=message):
        check_layout("p.npz", ".npz", ["y", "h"], [(None, 3), (None, 9, 4)], True)
    check_layout("p.npz", ".npz", ["y", "h"], [(None, 3), (None, 9, 4)], False)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_outputs_get_the_mode_open_gives(models, umask_027):
    d = models
    for suffix in (".npy", ".npz", ".csv", ".json"):
        for model in ("q1", "q2"):
            if model == "q2" and suffix in (".npy", ".csv"):
                continue
            out = d / f"{model}_mode{suffix}"
            r = invoke("run", d / f"{model}.npz", d / "x.npy", "-o", out, "--quiet")
            assert r.exit_code == 0, r.output
            assert os.stat(out).st_mode & 0o777 == umask_027, (out, oct(os.stat(out).st_mode))
    with atomic_output(str(d / "plain.bin")) as tmp:
        open(tmp, "wb").write(b"x")
    with open(d / "by_open.bin", "wb") as f:
        f.write(b"x")
    assert os.stat(d / "plain.bin").st_mode & 0o777 == os.stat(d / "by_open.bin").st_mode & 0o777 == umask_027


def test_failed_write_leaves_nothing(models):
    d = models
    with pytest.raises(RuntimeError), atomic_output(str(d / "half.npy")):
        raise RuntimeError("stop")
    assert not os.path.exists(d / "half.npy")
    x = np.load(d / "x.npy")
    x[100] = np.nan  # the third batch fails, after two were written
    np.save(d / "bad.npy", x)
    for suffix in (".npy", ".csv", ".json"):
        r = invoke("run", d / "q1.npz", d / "bad.npy", "-o", d / f"p{suffix}", "--batch-size", 40, "--quiet")
        assert r.exit_code == 1 and r.stderr.startswith("fixq: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not [f for f in os.listdir(d) if f.startswith(("p.", ".fixq-"))]


def test_plot_gets_the_mode_open_gives(models, umask_027):
    pytest.importorskip("matplotlib")
    d = models
    r = invoke("eval", d / "f1.npz", d / "q1.npz", "--data", d / "x.npy", "--plot", d / "report.png", "--quiet")
    assert r.exit_code == 0, r.output
    assert os.stat(d / "report.png").st_mode & 0o777 == umask_027


def test_unwritable_directory_is_one_line(models, monkeypatch):
    import fixq.archive

    def refuse(path, flags, mode=0o777):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(fixq.archive.os, "open", refuse)
    d = models
    r = invoke("run", d / "q1.npz", d / "x.npy", "-o", d / "p.csv", "--quiet")
    assert (r.exit_code, r.stderr) == (1, f"fixq: error: {d / 'p.csv'}: cannot create a file in {d} (Permission "
                                          "denied)\n")
