"""``fixq quantize / run / inspect / eval / demo`` through click's runner: exit codes and messages."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fixq.cli import cli
from fixq.cli.demo import bundled
import fixq.graph as G
from fixq.archive import load_float_model
from fixq.engine import Model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def files(tmp_path):
    """A float MLP without a graph (its activation named by __activation__), calibration data as .npy and as
    an .npz key, inputs and labels."""
    rng = np.random.default_rng(0)
    w = {"fc1.weight": rng.standard_normal((16, 12)).astype(np.float32) / 3,
         "fc1.bias": rng.standard_normal(16).astype(np.float32) / 10,
         "fc2.weight": rng.standard_normal((4, 16)).astype(np.float32) / 3,
         "fc2.bias": rng.standard_normal(4).astype(np.float32) / 10}
    np.savez(tmp_path / "float.npz", **w, __activation__=np.array("relu"))
    x = rng.standard_normal((300, 12)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x[:100])
    np.savez(tmp_path / "data.npz", calib=x[:100], other=x[:5])
    np.save(tmp_path / "x.npy", x[100:])
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 200))
    return tmp_path


def test_inferred_mlp_needs_its_activation_named(files):
    """Without a graph the activation between layers is never guessed: a tanh MLP quantized as a ReLU one
    agrees with itself and with nothing else."""
    w = dict(np.load(files / "float.npz"))
    del w["__activation__"]
    np.savez(files / "bare.npz", **w)
    r = invoke("quantize", files / "bare.npz", "-o", files / "q.npz", "--calib", files / "calib.npy")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "has no __graph__" in r.output and "--activation relu|relu6|none" in r.output
    assert not (files / "q.npz").exists()
    r = invoke("quantize", files / "bare.npz", "-o", files / "q.npz", "--calib", files / "calib.npy",
               "--activation", "relu6")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "relu6 between them (from --activation)" in r.output
    assert [s["act"] for s in Model.load(str(files / "q.npz")).steps] == ["relu6", None]
    with pytest.raises(ValueError, match="activation="):
        load_float_model(str(files / "bare.npz"))


def test_quantize_run_inspect_eval(files):
    d = files
    r = invoke("quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "calib.npy", "--batch-size", 32,
               "--quiet")
    assert r.exit_code == 0, r.output
    assert "inferred a sequential MLP" in r.output
    assert "fc1" in r.output and "linear+relu" in r.output and "smaller than fp32" in r.output
    m = Model.load(str(d / "q.npz"))
    assert m.options["method"] == "minmax" and m.options["per_channel"]

    r = invoke("run", d / "q.npz", d / "x.npy", "-o", d / "pred.npy", "--batch-size", 64, "--quiet")
    assert r.exit_code == 0, r.output
    pred = np.load(d / "pred.npy")
    np.testing.assert_array_equal(pred, m.run(np.load(d / "x.npy")))
    r = invoke("run", d / "q.npz", d / "x.npy", "-o", d / "raw.npy", "--raw", "--threads", 2, "--quiet")
    assert r.exit_code == 0, r.output
    raw = np.load(d / "raw.npy")
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(raw, m.run(np.load(d / "x.npy"), raw=True))
    # the float archive runs in float: fixq's float reference, beside the int8 outputs
    r = invoke("run", d / "float.npz", d / "x.npy", "-o", d / "float_pred.npy", "--quiet")
    assert r.exit_code == 0, r.output
    g, _ = load_float_model(str(d / "float.npz"))
    np.testing.assert_array_equal(np.load(d / "float_pred.npy"), G.run_float(g, np.load(d / "x.npy")))

    r = invoke("inspect", d / "q.npz")
    assert r.exit_code == 0, r.output
    assert "fixq.qmodel/1" in r.output and "compression" in r.output and "multiplier / shift" in r.output

    r = invoke("eval", d / "float.npz", d / "q.npz", "--data", d / "x.npy", "--labels", d / "y.npy", "--quiet")
    assert r.exit_code == 0, r.output
    assert "accuracy: float" in r.output and "top-1 agreement" in r.output and "SQNR dB" in r.output
    assert "output 'fc2' [N, 4]: class = argmax of the 4 scores" in r.output and "max abs error" in r.output


def test_quantize_options(files):
    d = files
    r = invoke("quantize", d / "float.npz", "-o", d / "q.npz", "--calib", f"{d / 'data.npz'}:calib",
               "--per-tensor", "--activations", "uint8", "--rounding", "fp32", "--activation", "relu6", "--quiet")
    assert r.exit_code == 0, r.output
    m = Model.load(str(d / "q.npz"))
    assert m.options["activations"] == "uint8" and m.options["rounding"] == "fp32" and not m.options["per_channel"]
    assert m.steps[0]["act"] == "relu6"
    r = invoke("quantize", d / "float.npz", "-o", d / "dyn.npz", "--dynamic")
    assert r.exit_code == 0, r.output
    assert Model.load(str(d / "dyn.npz")).dynamic


def test_eval_plot(files):
    pytest.importorskip("matplotlib")
    d = files
    assert invoke("quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "calib.npy").exit_code == 0
    r = invoke("eval", d / "float.npz", d / "q.npz", "--data", d / "x.npy", "--plot", d / "report.png", "--quiet")
    assert r.exit_code == 0, r.output
    assert open(d / "report.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_errors_exit_1_one_line(files):
    d = files
    cases = [
        (["quantize", d / "missing.npz", "-o", d / "q.npz", "--calib", d / "calib.npy"],
         f"fixq: error: {d / 'missing.npz'}: no such file\n"),
        (["quantize", d / "float.npz", "-o", d / "q.npz"],
         "fixq: error: static quantization needs --calib DATA.npy (or pass --dynamic)\n"),
        (["quantize", d / "float.npz", "-o", d / "q.npz", "--dynamic", "--calib", d / "calib.npy"],
         "fixq: error: --dynamic computes activation ranges at run time; drop --calib\n"),
        (["quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "x.npy:k"],
         f"fixq: error: --calib {d / 'x.npy'}: is a single .npy array with no keys; drop ':k'\n"),
        (["quantize", d / "float.npz", "-o", d / "q.npz", "--calib", f"{d / 'data.npz'}:k"],
         f"fixq: error: --calib {d / 'data.npz'}: no key 'k' (keys: calib, other)\n"),
        (["quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "data.npz"],
         f"fixq: error: --calib {d / 'data.npz'}: holds keys ['calib', 'other']; name one as"),
        (["quantize", d / "float.npz", "-o", d / "float.npz", "--calib", d / "calib.npy", "--force"],
         f"fixq: error: {d / 'float.npz'}: is also an input; write the output elsewhere\n"),
        (["quantize", d / "float.npz", "-o", d / "x.npy", "--calib", d / "calib.npy"],
         f"fixq: error: {d / 'x.npy'}: exists; pass --force to overwrite it\n"),
        (["run", d / "float.npz", d / "x.npy", "-o", d / "p.npy", "--raw"],
         f"fixq: error: {d / 'float.npz'}: is a float model; its outputs are float: drop --raw\n"),
        (["inspect", d / "float.npz"],
         f"fixq: error: {d / 'float.npz'}: is a float model, not a quantized one (fixq.qmodel/1); quantize it"),
        (["inspect", d / "x.npy"],
         f"fixq: error: {d / 'x.npy'}: is a single .npy array, not an .npz archive"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith(message), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr


def test_run_errors(files):
    d = files
    assert invoke("quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "calib.npy").exit_code == 0
    np.save(d / "bad.npy", np.zeros((3, 5), np.float32))
    r = invoke("run", d / "q.npz", d / "bad.npy", "-o", d / "p.npy")
    assert (r.exit_code, r.stderr) == (1, f"fixq: error: INPUT {d / 'bad.npy'} (shape [3, 5]): the model's input 'x' "
                                          "needs [N, 12]\n")
    r = invoke("run", d / "q.npz", d / "x.npy", "-o", d / "q.npz", "--force")
    assert (r.exit_code, r.stderr) == (1, f"fixq: error: {d / 'q.npz'}: is also an input; write the output "
                                          "elsewhere\n")
    before = open(d / "q.npz", "rb").read()
    assert invoke("run", d / "q.npz", d / "x.npy", "-o", d / "p.npy", "--quiet").exit_code == 0
    r = invoke("run", d / "q.npz", d / "x.npy", "-o", d / "p.npy")
    assert (r.exit_code, r.stderr) == (1, f"fixq: error: {d / 'p.npy'}: exists; pass --force to overwrite it\n")
    assert invoke("run", d / "q.npz", d / "x.npy", "-o", d / "p.npy", "--force", "--quiet").exit_code == 0
    assert open(d / "q.npz", "rb").read() == before
    assert not [f for f in os.listdir(d) if f.startswith(".fixq-")]  # no temp files left behind


def test_usage_errors_exit_2(files):
    d = files
    for args in (["quantize", d / "float.npz"],
                 ["quantize", d / "float.npz", "-o", d / "q.npz", "--method", "kl"],
                 ["run", d / "q.npz", d / "x.npy", "-o", d / "p.npy", "--threads", 0],
                 ["nonsense"]):
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Usage:" in r.output


def test_graph_errors_are_one_line(files):
    d = files
    g = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, 12]}],
         "nodes": [{"name": "fc1", "op": "linear", "inputs": ["x"]}, {"name": "fc2", "op": "lineaer",
                                                                     "inputs": ["fc1"]}],
         "outputs": ["fc2"]}
    (d / "g.json").write_text(json.dumps(g))
    r = invoke("quantize", d / "float.npz", "-o", d / "q.npz", "--calib", d / "calib.npy", "--graph", d / "g.json")
    assert r.exit_code == 1
    assert r.stderr.startswith("fixq: error: node 'fc2': key 'op' is 'lineaer', not one of")
    assert r.stderr.count("\n") == 1


def test_demo():
    r = invoke("demo")
    assert r.exit_code == 0, r.output
    assert r.output.count("accuracy    float") == 2
    assert "int8" in r.output and "smaller" in r.output and "batch 1" in r.output


def test_bundled_model_through_the_cli(tmp_path):
    out = tmp_path / "cnn_int8.npz"
    r = invoke("quantize", bundled("digits_cnn.npz"), "-o", out, "--calib", bundled("digits_calib.npy"),
               "--method", "entropy", "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("eval", bundled("digits_cnn.npz"), out, "--data", bundled("digits_test_x.npy"),
               "--labels", bundled("digits_test_y.npy"), "--quiet")
    assert r.exit_code == 0, r.output
    line = [ln for ln in r.output.splitlines() if ln.strip().startswith("accuracy")][0]
    acc_f, acc_q = (float(t.rstrip("%")) for t in line.split() if t.endswith("%"))
    assert abs(acc_f - acc_q) <= 1.0
    assert load_float_model(bundled("digits_cnn.npz"))[0].outputs == ["fc"]


def test_closed_stdout_pipe_is_quiet(files):
    """`fixq inspect OUT.npz | head -1`: no ``fixq: error: Broken pipe`` line when the reader leaves."""
    import subprocess
    import sys
    assert invoke("quantize", files / "float.npz", "-o", files / "q.npz", "--calib", files / "calib.npy",
                  "--quiet").exit_code == 0
    code = "import sys; from fixq.cli import main; main(sys.argv[1:])"
    for _ in range(3):  # the race between the writer and the closing reader; one loss is enough to fail
        p = subprocess.Popen([sys.executable, "-c", code, "inspect", str(files / "q.npz")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        p.stdout.readline()
        p.stdout.close()
        err = p.stderr.read().decode()
        p.wait()
        assert "error" not in err, err
