"""`fixq` interrupted (Ctrl-C, SIGTERM) or out of disk space: its temporary files are removed, the old
output is left as it was, and it says so in one line (`fixq: interrupted`, exit 130)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
from click.testing import CliRunner

from fixq.cli import cli

from test_engine import mlp_weights, save_float


def _model(tmp_path):
    rng = np.random.default_rng(0)
    save_float(tmp_path / "f.npz", mlp_weights(rng))
    np.save(tmp_path / "x.npy", rng.standard_normal((64, 12)).astype(np.float32))
    r = CliRunner().invoke(cli, ["quantize", str(tmp_path / "f.npz"), "-o", str(tmp_path / "q.npz"), "--calib",
                                 str(tmp_path / "x.npy"), "--activation", "relu", "--quiet"])
    assert r.exit_code == 0, r.output
    (tmp_path / "pred.npy").write_bytes(b"old output")


def _left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".fixq-"))


def test_sigterm_during_run_removes_the_temp_file(tmp_path):
    _model(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal
        from fixq.engine import Model
        run = Model.run
        def run_then_terminated(self, *a, **k):
            y = run(self, *a, **k)
            os.kill(os.getpid(), signal.SIGTERM)
            return y
        Model.run = run_then_terminated
        from fixq.cli import main
        main(["run", {str(tmp_path / "q.npz")!r}, {str(tmp_path / "x.npy")!r}, "-o", {str(tmp_path / "pred.npy")!r},
              "--force", "--quiet", "--batch-size", "8"])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == "fixq: interrupted"
    assert _left(tmp_path) == [] and (tmp_path / "pred.npy").read_bytes() == b"old output"


def test_ctrl_c_is_interrupted_not_aborted(tmp_path, monkeypatch):
    _model(tmp_path)
    from fixq.engine import Model

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(Model, "run", interrupted)
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "q.npz"), str(tmp_path / "x.npy"), "-o",
                                 str(tmp_path / "pred.npy"), "--force", "--quiet"])
    assert r.exit_code == 130 and r.stderr.strip() == "fixq: interrupted", r.output
    assert _left(tmp_path) == [] and (tmp_path / "pred.npy").read_bytes() == b"old output"


def test_full_disk_is_one_line_and_keeps_the_old_output(tmp_path, monkeypatch):
    _model(tmp_path)

    def full(fd, offset, size):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "q.npz"), str(tmp_path / "x.npy"), "-o",
                                 str(tmp_path / "pred.npy"), "--force", "--quiet"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == "fixq: error: cannot write the 1408-byte output (No space left on device)"
    assert _left(tmp_path) == [] and (tmp_path / "pred.npy").read_bytes() == b"old output"
