"""The README's first commands and its "Your own model" steps, run as written."""
import os
import re
import shlex
from types import SimpleNamespace

import numpy as np
from click.testing import CliRunner

from fixq.cli import cli
from fixq.cli.demo import bundled

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks(text):
    """(language, code) of every fenced block, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def test_setup_commands_come_first():
    lang, code = blocks(open(README).read())[0]
    assert (lang, code) == ("bash", "pip install . && fixq demo\npip install -e '.[test]' && pytest\n")


def sklearn_like_mlp(x, y, hidden=128, classes=10):
    """An MLPClassifier look-alike (coefs_ [in, out], intercepts_, ReLU hidden layer) fitted with numpy
    alone: a random hidden layer and ridge-regression output weights."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((x.shape[1], hidden)) / np.sqrt(x.shape[1])
    b1 = rng.standard_normal(hidden) * 0.1
    h = np.maximum(x @ w1 + b1, 0)
    h1 = np.hstack([h, np.ones((len(h), 1))])
    sol = np.linalg.solve(h1.T @ h1 + np.eye(hidden + 1), h1.T @ np.eye(classes)[y])
    return SimpleNamespace(coefs_=[w1.astype(np.float32), sol[:-1].astype(np.float32)],
                           intercepts_=[b1.astype(np.float32), sol[-1].astype(np.float32)])


def test_your_own_model(tmp_path, monkeypatch):
    section = open(README).read().split("## Your own model", 1)[1].split("\n## ", 1)[0]
    (_, python), (_, bash) = blocks(section)
    x = np.load(bundled("digits_test_x.npy")).reshape(-1, 64)
    y = np.load(bundled("digits_test_y.npy"))
    x_train, y_train, x_test, y_test = x[:300], y[:300], x[300:], y[300:]
    clf = sklearn_like_mlp(x_train, y_train)
    monkeypatch.chdir(tmp_path)
    exec(python, {"clf": clf, "X_train": x_train, "y_train": y_train, "X_test": x_test, "y_test": y_test})
    commands = [shlex.split(line, comments=True) for line in bash.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["fixq", "quantize"], ["fixq", "run"], ["fixq", "eval"]]
    for c in commands:
        r = CliRunner().invoke(cli, c[1:])
        assert r.exit_code == 0, (c, r.output)
    pred = np.loadtxt("pred.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert np.mean(pred == y_test) > 0.85
    line = next(ln for ln in r.output.splitlines() if ln.strip().startswith("accuracy"))
    acc_f, acc_q = (float(t.rstrip("%")) for t in line.split() if t.endswith("%"))
    assert acc_f > 85 and abs(acc_f - acc_q) <= 2.0, line
