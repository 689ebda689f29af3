"""``fixq eval`` on binary and multi-output models, ``--json`` reports, calibration options, and one-line
errors for whatever goes wrong."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import fixq
from fixq.cli import cli
from fixq.engine import Model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def save_model(path, weights, nodes, outputs, features):
    g = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, features]}], "nodes": nodes,
         "outputs": outputs}
    np.savez(path, **weights, __graph__=np.array(json.dumps(g)))


LOGREG_W = np.array([[1.5, -2.0, 0.7, 0.3]], np.float32)


@pytest.fixture
def logreg(tmp_path):
    """Logistic regression [N, 4] -> [N, 1] as a logit (logit.npz) and, scaled into [0, 1] by its
    weights, as a probability-like score (prob.npz); labels from the float model itself."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400, 4)).astype(np.float32)
    node = [{"name": "out", "op": "linear", "inputs": ["x"]}]
    save_model(tmp_path / "logit.npz", {"out.weight": LOGREG_W, "out.bias": np.float32([0.2])}, node, ["out"], 4)
    # 0.5 + logit / 40 stays inside [0, 1] for these inputs and crosses 0.5 where the logit crosses 0
    save_model(tmp_path / "prob.npz", {"out.weight": LOGREG_W / 40, "out.bias": np.float32([0.5 + 0.2 / 40])},
               node, ["out"], 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", ((x @ LOGREG_W.T)[:, 0] + 0.2 > 0).astype(np.int64))
    for k in ("logit", "prob"):
        r = invoke("quantize", tmp_path / f"{k}.npz", "-o", tmp_path / f"{k}_q.npz", "--calib", tmp_path / "x.npy",
                   "--quiet")
        assert r.exit_code == 0, r.output
    return tmp_path


def test_eval_binary_logit_and_probability(logreg):
    d = logreg
    y = np.load(d / "y.npy")
    assert 0.3 < y.mean() < 0.7  # both classes: argmax over one column (always 0) would score ~50%
    for k, rule, text in (("logit", "logit", "read as a logit, class 1 where it is > 0"),
                          ("prob", "probability", "read as a probability, class 1 where it is > 0.5")):
        r = invoke("eval", d / f"{k}.npz", d / f"{k}_q.npz", "--data", d / "x.npy", "--labels", d / "y.npy", "--quiet")
        assert r.exit_code == 0, r.output
        assert "output 'out' [N, 1]: one column" in r.output and text in r.output, r.output
        acc = [ln for ln in r.output.splitlines() if ln.strip().startswith("accuracy")][0]
        acc_f, acc_q = (float(t.rstrip("%")) for t in acc.split() if t.endswith("%"))
        assert acc_f == 100.0 and acc_q >= 97.0, acc
        r = invoke("eval", d / f"{k}.npz", d / f"{k}_q.npz", "--data", d / "x.npy", "--labels", d / "y.npy",
                   "--json", "--quiet")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        out = rep["outputs"]["out"]
        assert out["class_rule"] == rule and out["shape"] == [None, 1] and out["accuracy"]["float"] == 1.0
        assert rep["samples"] == 400 and set(rep["sqnr_db"]) == {"out"}


def test_run_argmax_binary(logreg):
    d = logreg
    r = invoke("run", d / "logit_q.npz", d / "x.npy", "-o", d / "ids.npy", "--argmax", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr == "out: one column, values outside [0, 1]: read as a logit, class 1 where it is > 0\n"
    ids = np.load(d / "ids.npy")
    q = Model.load(str(d / "logit_q.npz")).run(np.load(d / "x.npy"))
    np.testing.assert_array_equal(ids, (q[:, 0] > 0).astype(np.int64))
    assert np.mean(ids == np.load(d / "y.npy")) >= 0.97


def test_eval_labels_that_fit_no_output(logreg):
    d = logreg
    np.save(d / "y10.npy", np.arange(400) % 10)
    r = invoke("eval", d / "logit.npz", d / "logit_q.npz", "--data", d / "x.npy", "--labels", d / "y10.npy")
    assert (r.exit_code, r.stderr) == (1, "fixq: error: --labels hold classes 0..9, which fit no output ('out' has "
                                          "classes 0..1)\n")


def test_eval_reports_every_output(tmp_path):
    rng = np.random.default_rng(8)
    w = {"a.weight": rng.standard_normal((6, 5)).astype(np.float32), "b.weight": rng.standard_normal((3, 6)).astype(
        np.float32), "c.weight": rng.standard_normal((1, 6)).astype(np.float32)}
    nodes = [{"name": "a", "op": "linear", "inputs": ["x"]}, {"name": "r", "op": "relu", "inputs": ["a"]},
             {"name": "b", "op": "linear", "inputs": ["r"]}, {"name": "c", "op": "linear", "inputs": ["r"]}]
    save_model(tmp_path / "f.npz", w, nodes, ["b", "c"], 5)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 200))
    assert invoke("quantize", tmp_path / "f.npz", "-o", tmp_path / "q.npz", "--calib", tmp_path / "x.npy").exit_code == 0
    r = invoke("eval", tmp_path / "f.npz", tmp_path / "q.npz", "--data", tmp_path / "x.npy", "--labels",
               tmp_path / "y.npy", "--quiet")
    assert r.exit_code == 0, r.output
    assert "output 'b' [N, 3]: class = argmax of the 3 scores" in r.output
    assert "output 'c' [N, 1]: one column" in r.output
    assert "accuracy: not scored: --labels hold classes 0..2, this output 0..1" in r.output
    assert r.output.count("max abs error") == 2
    r = invoke("eval", tmp_path / "f.npz", tmp_path / "q.npz", "--data", tmp_path / "x.npy", "--labels",
               tmp_path / "y.npy", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert list(rep["outputs"]) == ["b", "c"]
    assert rep["outputs"]["b"]["accuracy"] is not None and rep["outputs"]["c"]["accuracy"] is None
    assert rep["outputs"]["c"]["class_rule"] in ("logit", "probability")
    m, f = Model.load(str(tmp_path / "q.npz")), fixq.load_float_model(str(tmp_path / "f.npz"))[0]
    qb, qc = m.run(x)
    fb, fc = fixq.graph.run_float(f, x)
    assert rep["outputs"]["c"]["max_abs_error"] == pytest.approx(float(np.abs(fc - qc).max()))
    assert rep["outputs"]["b"]["agreement"] == pytest.approx(float(np.mean(fb.argmax(1) == qb.argmax(1))))


def test_inspect_json(logreg):
    r = invoke("inspect", logreg / "logit_q.npz", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)  # the whole of stdout is one JSON object
    m = Model.load(str(logreg / "logit_q.npz"))
    assert rep["format"] == "fixq.qmodel/1" and rep["mode"] == "static" and rep["outputs"] == ["out"]
    (layer,) = rep["layers"]
    assert layer["name"] == "out" and layer["op"] == "linear" and layer["weight_shape"] == [1, 4]
    assert layer["multiplier"] == m.arrays["out:multiplier"].tolist()
    assert (layer["output_scale"], layer["output_zero_point"]) == m.qparams("out")
    assert rep["parameter_bytes"] == m.weight_bytes()


def test_version_json():
    for args in (["--version", "--json"], ["--json", "--version"]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output) == {"fixq": fixq.__version__, "cpu": fixq.cpu_info()}
    r = invoke("--json", "inspect", "m.npz")
    assert r.exit_code == 2 and "--json before a command goes with --version" in r.output


def test_calibration_options(logreg):
    d = logreg
    q = d / "pct.npz"
    r = invoke("quantize", d / "logit.npz", "-o", q, "--calib", d / "x.npy", "--method", "percentile",
               "--percentile", 99.0, "--bins", 512, "--quiet")
    assert r.exit_code == 0, r.output
    assert Model.load(str(q)).options["method_options"] == {"percentile": 99.0, "bins": 512}
    # the input scale follows the percentile: 99% of |x| is well inside the 99.99% default range
    s99 = Model.load(str(q)).qparams("x")[0]
    s_default = Model.load(str(d / "logit_q.npz")).qparams("x")[0]
    assert s99 < s_default
    r = invoke("quantize", d / "logit.npz", "-o", d / "ma.npz", "--calib", d / "x.npy", "--method", "moving_average",
               "--averaging-constant", 0.5, "--quiet")
    assert r.exit_code == 0, r.output
    assert Model.load(str(d / "ma.npz")).options["method_options"] == {"averaging_constant": 0.5}
    cases = [
        (["--method", "minmax", "--percentile", 99], "fixq: error: --percentile applies to --method percentile, not "
                                                     "minmax\n"),
        (["--method", "moving_average", "--bins", 512], "fixq: error: --bins applies to --method "
                                                        "percentile/entropy/mse, not moving_average\n"),
        (["--method", "entropy", "--bins", 64], "fixq: error: --bins: bins=64 is out of range; expected [128, "
                                                "16777216]\n"),
        (["--method", "moving_average", "--averaging-constant", 0], "fixq: error: --averaging-constant: "
                                                                    "averaging_constant=0.0 is out of range; "
                                                                    "expected (0.0, 1.0]\n"),
    ]
    for extra, message in cases:
        r = invoke("quantize", d / "logit.npz", "-o", d / "bad.npz", "--calib", d / "x.npy", *extra)
        assert (r.exit_code, r.stderr) == (1, message), extra
    r = invoke("quantize", d / "logit.npz", "-o", d / "bad.npz", "--dynamic", "--percentile", 99)
    assert r.exit_code == 1 and r.stderr.startswith("fixq: error: --percentile is a calibration option, and --dynamic")


def test_unexpected_errors_are_one_line(logreg, monkeypatch):
    def broken(*a, **k):
        raise KeyError("surprise")
    monkeypatch.setattr(Model, "load", broken)
    r = invoke("inspect", logreg / "logit_q.npz")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("fixq: error: unexpected KeyError: 'surprise' (a bug in fixq")
