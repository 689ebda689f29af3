"""fixq.dask on a local cluster of two worker processes, and the CLI's directory mode (docs/scale-out.md)."""
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")
import dask.array as da  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import fixq  # noqa: E402
import fixq.dask as fqd  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.cli._common import batches  # noqa: E402
from fixq.cli.demo import bundled  # noqa: E402
from fixq.quantizer import calibrated_tensors, observe_ranges, quantize_model  # noqa: E402

from test_engine import every_op_model, save_float  # noqa: E402

METHODS = ["minmax", "moving_average", "percentile", "entropy", "mse"]


def _cluster(**kw):
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    silence_logs=logging.ERROR, **kw)


@pytest.fixture(scope="module")
def client():
    with _cluster() as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def cnn():
    g, _ = fixq.load_float_model(bundled("digits_cnn.npz"))
    rng = np.random.default_rng(0)
    x = np.load(bundled("digits_test_x.npy"))
    x = np.concatenate([x, x[::-1] * np.float32(1.5) + rng.standard_normal(x.shape).astype(np.float32)])
    return g, x


def _loop(m, x, batch_size, **kw):
    """Model.run over x in batches, outputs concatenated (a tuple for several outputs)."""
    ys = [m.run(b, **kw) for b in batches(x, batch_size)]
    if isinstance(ys[0], tuple):
        return tuple(np.concatenate(o) for o in zip(*ys))
    return np.concatenate(ys)


# ---------------------------------------------------------------------------------------------
# run

@pytest.mark.parametrize("mode", ["static", "raw", "dynamic", "ternary", "fp16"])
def test_run_equals_model_run(client, cnn, mode):
    g, x = cnn
    kw = {"static": {}, "raw": {}, "dynamic": {"dynamic": True}, "ternary": {"weights": "ternary"},
          "fp16": {"weights": "fp16"}}[mode]
    m = quantize_model(g, batches(x[:300], 100), **kw)
    xd = da.from_array(x, chunks=(350, 1, 8, 8))   # not a multiple of the batch size: run rechunks
    y = fqd.run(m, xd, batch_size=64, raw=mode == "raw")
    assert y.chunks[0][0] == 320
    got = y.compute()
    want = _loop(m, x, 64, raw=mode == "raw")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if mode in ("static", "raw"):   # the integer engine gives the same in any batching
        np.testing.assert_array_equal(got, m.run(x, raw=mode == "raw"))


def test_model_is_one_key_and_built_once_per_worker(client, cnn):
    g, x = cnn
    m = quantize_model(g, [x[:100]])
    y = fqd.run(m, da.from_array(x, chunks=100), batch_size=50)
    graph = dict(y.__dask_graph__())
    held = [k for k in graph if str(k).startswith("fixq-model-")]
    assert len(held) == 1 and y.npartitions == 9   # every task refers to the one key holding the model
    y.compute()
    key = held[0][len("fixq-model-"):]
    built = client.run(lambda: list(fqd._MODELS))
    assert all(keys.count(key) == 1 for keys in built.values())
    assert fqd._payload(m)[0] == fqd._payload(fixq.Model(m.meta, m.arrays))[0]


def test_run_several_outputs_and_a_path(client, tmp_path):
    rng = np.random.default_rng(1)
    w, spec = every_op_model(rng)
    g, _ = fixq.load_float_model(save_float(tmp_path / "f.npz", w, spec))
    m = quantize_model(g, [rng.standard_normal((40, 3, 9, 6)).astype(np.float32)])
    m.save(tmp_path / "q.npz")
    x = rng.standard_normal((250, 3, 9, 6)).astype(np.float32)
    ys = fqd.run(str(tmp_path / "q.npz"), da.from_array(x, chunks=(60, 3, 3, 6)), batch_size=32)
    assert isinstance(ys, tuple) and len(ys) == 2
    got = client.compute(list(ys), sync=True)
    for a, b in zip(got, m.run(x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_worker_killed_during_run(cnn):
    """A worker process killed mid-run: Dask reruns its tasks on the other worker and its restarted
    replacement, and the result is unchanged."""
    g, x = cnn
    m = quantize_model(g, [x[:200]])
    xd = da.random.RandomState(7).standard_normal((200_000, 1, 8, 8), chunks=(4000, 1, 8, 8)).astype(np.float32)
    with _cluster() as cluster, distributed.Client(cluster) as c:
        pids = c.run(os.getpid)
        fut = c.compute(fqd.run(m, xd, batch_size=256))
        deadline = time.time() + 60
        while not any(c.processing().values()) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)   # some blocks done: their results are lost with the worker too
        busy = next(w for w, tasks in c.processing().items() if tasks)
        assert not fut.done()
        os.kill(pids[busy], signal.SIGKILL)
        got = fut.result()
        assert busy not in c.scheduler_info()["workers"]
    want = m.run(xd.compute())
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# calibrate

@pytest.mark.parametrize("method", METHODS)
def test_calibrate_equals_one_pass(client, cnn, method):
    g, x = cnn
    xd = da.from_array(x, chunks=(200, 1, 8, 8))
    # fewer histogram bins than the default 2048: the same code, a quarter of entropy's threshold search
    opts = {"moving_average": {"averaging_constant": 0.2}, "entropy": {"bins": 512},
            "mse": {"bins": 512}}.get(method, {})
    ranges = fqd.calibrate(g, xd, method, batch_size=96, method_options=opts, split_every=2)
    want = observe_ranges(g, batches(x, 96), method, calibrated_tensors(g), **opts)
    assert ranges == want
    q1 = quantize_model(g, ranges=ranges, method=method, method_options=opts)
    q2 = quantize_model(g, batches(x, 96), method=method, method_options=opts)
    assert q1.meta == q2.meta and q1.arrays.keys() == q2.arrays.keys()
    for k in q1.arrays:
        np.testing.assert_array_equal(q1.arrays[k], q2.arrays[k])


def test_calibrate_ternary_and_bad_input(client, cnn):
    g, x = cnn
    ranges = fqd.calibrate(g, x[:700], "percentile", batch_size=100, weights="ternary")
    q = quantize_model(g, ranges=ranges, weights="ternary", method="percentile")
    want = quantize_model(g, batches(x[:700], 100), weights="ternary", method="percentile")
    for k in q.arrays:
        np.testing.assert_array_equal(q.arrays[k], want.arrays[k])
    with pytest.raises(ValueError, match="method"):
        fqd.calibrate(g, x, "kl")
    with pytest.raises(TypeError, match="foo"):
        fqd.calibrate(g, x, "entropy", method_options={"foo": 1})
    with pytest.raises(TypeError, match="float"):
        fqd.calibrate(g, x.astype(np.int32))
    with pytest.raises(ValueError, match=r"x has shape \(900, 64\); the model's input 'x' needs \[N, 1, 8, 8\]"):
        fqd.calibrate(g, x.reshape(-1, 64))
    with pytest.raises(ValueError, match=r"x has shape \(900, 1, 64\)"):
        fqd.run(want, x.reshape(-1, 1, 64))
    with pytest.raises(ValueError, match="at least one sample"):
        fqd.run(want, x[:0])
    with pytest.raises(ValueError, match="batch_size"):
        fqd.run(want, x, batch_size=0)
    with pytest.raises(ValueError, match="no \\(min, max\\)"):
        quantize_model(g, ranges={g.input: (0.0, 1.0)})
    with pytest.raises(ValueError, match="not both"):
        quantize_model(g, [x], ranges=ranges)


def test_from_npy_reads_on_the_workers(client, tmp_path, cnn):
    _, x = cnn
    for i, part in enumerate(np.array_split(x, 3)):
        np.save(tmp_path / f"{i}.npy", part)
    xd = fqd.from_npy([tmp_path / f"{i}.npy" for i in range(3)], rows=100)
    assert xd.numblocks[0] > 3
    assert len(pickle.dumps(dict(xd.__dask_graph__()))) < 20_000   # the files travel as paths, not data
    np.testing.assert_array_equal(xd.compute(), x)
    m = quantize_model(cnn[0], [x[:100]])
    y = fqd.run(m, xd, batch_size=50)   # blocks of 100 and 100, 100, 100 / 300: whole batches already
    assert y.chunks[0] == xd.chunks[0] == (100,) * 9
    np.testing.assert_array_equal(y.compute(), m.run(x))
    np.save(tmp_path / "bad.npy", x[:3, :, :4])
    with pytest.raises(ValueError, match="does not stack"):
        fqd.from_npy([tmp_path / "0.npy", tmp_path / "bad.npy"])


# ---------------------------------------------------------------------------------------------
# the command line: directory mode

def _shards(path, x, n):
    path.mkdir()
    for i, part in enumerate(np.array_split(x, n)):
        np.save(path / f"part-{i:03d}.npy", part)
    return str(path)


def _invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.output


def test_cli_quantize_calib_directory(client, tmp_path, cnn):
    _, x = cnn
    shards = _shards(tmp_path / "calib", x[:1000], 7)
    np.save(tmp_path / "all.npy", x[:1000])
    model = bundled("digits_cnn.npz")
    outs = {}
    for name, extra in [("file", ["--calib", tmp_path / "all.npy"]), ("dir", ["--calib", shards]),
                        ("dask", ["--calib", shards, "--scheduler", client.scheduler.address])]:
        code, out = _invoke("quantize", model, "-o", tmp_path / f"{name}.npz", "--method", "entropy",
                            "--bins", 512, "--batch-size", 64, "-q", *extra)
        assert code == 0, out
        outs[name] = np.load(tmp_path / f"{name}.npz")
    assert '"bins": 512' in str(outs["dask"]["__meta__"])   # the option reached the workers' observers
    for k in outs["file"].files:
        np.testing.assert_array_equal(outs["dir"][k], outs["file"][k])
        np.testing.assert_array_equal(outs["dask"][k], outs["file"][k])
    code, out = _invoke("quantize", model, "-o", tmp_path / "x.npz", "--calib", shards, "--scheduler", "nowhere")
    assert code == 1 and "tcp://HOST:PORT, local or local:N" in out


@pytest.mark.parametrize("scheduler", [None, "cluster"])
def test_cli_run_directory_resumes_after_a_failure(client, tmp_path, cnn, scheduler):
    """A shard that fails stops only itself; the rerun runs just the shards whose output is missing."""
    g, x = cnn
    m = quantize_model(g, [x[:200]])
    m.save(tmp_path / "q.npz")
    src = _shards(tmp_path / "in", x, 6)
    good = np.load(os.path.join(src, "part-002.npy"))
    bad = good.copy()
    bad[5, 0, 3, 3] = np.nan
    np.save(os.path.join(src, "part-002.npy"), bad)
    sched = [] if scheduler is None else ["--scheduler", client.scheduler.address]
    out = tmp_path / "out"
    code, msg = _invoke("run", tmp_path / "q.npz", src, "-o", out, "--batch-size", 100, *sched)
    assert code == 1 and "part-002.npy" in msg and "NaN" in msg and "1 of 6 shards failed" in msg
    assert sorted(os.listdir(out)) == [f"part-{i:03d}.npy" for i in (0, 1, 3, 4, 5)]
    stamps = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)}
    np.save(os.path.join(src, "part-002.npy"), good)
    code, msg = _invoke("run", tmp_path / "q.npz", src, "-o", out, "--batch-size", 100, *sched)
    assert code == 0 and "5 of 6 shards done already; running 1" in msg
    assert {n: os.stat(out / n).st_mtime_ns for n in stamps} == stamps
    for i, part in enumerate(np.array_split(x, 6)):
        np.testing.assert_array_equal(np.load(out / f"part-{i:03d}.npy"), m.run(part))


@pytest.mark.slow
def test_cli_run_directory_resumes_after_an_interrupt(tmp_path, cnn):
    """`fixq run DIR` stopped with Ctrl-C (SIGINT) leaves whole outputs only; the rerun runs the rest."""
    g, x = cnn
    m = quantize_model(g, [x[:200]])
    m.save(tmp_path / "q.npz")
    parts = np.array_split(np.tile(x, (200, 1, 1, 1)), 20)   # 9000 samples, ~0.1 s, a shard
    src = tmp_path / "in"
    src.mkdir()
    for i, part in enumerate(parts):
        np.save(src / f"part-{i:03d}.npy", part)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fixq", "run", str(tmp_path / "q.npz"), str(src), "-o", str(out), "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out.exists() and any(n.endswith(".npy") for n in os.listdir(out))) and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0 and len(os.listdir(out)) == 20:  # a starved machine: the run ended before the signal
        pytest.skip("the run finished before SIGINT reached it; nothing was interrupted")
    assert p.returncode == 130 and err.strip() == "fixq: interrupted", err
    done = sorted(os.listdir(out))
    assert 0 < len(done) < 20 and all(n.startswith("part-") for n in done)   # no temporary file left
    stamps = {n: os.stat(out / n).st_mtime_ns for n in done}
    r = subprocess.run(cmd[:-1], env=env, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert r.returncode == 0 and f"{len(done)} of 20 shards done already; running {20 - len(done)}" in r.stderr
    assert {n: os.stat(out / n).st_mtime_ns for n in done} == stamps
    assert sorted(os.listdir(out)) == [f"part-{i:03d}.npy" for i in range(20)]
    for i in {0, len(done) - 1, len(done), 19}:   # whole outputs on both sides of the interruption
        np.testing.assert_array_equal(np.load(out / f"part-{i:03d}.npy"), m.run(parts[i]))


def test_cli_directory_errors(tmp_path, cnn):
    g, x = cnn
    m = quantize_model(g, [x[:200]])
    m.save(tmp_path / "q.npz")
    src = _shards(tmp_path / "in", x[:100], 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    for args, msg in [
        (["run", tmp_path / "q.npz", src, "-o", src], "is the INPUT directory"),
        (["run", tmp_path / "q.npz", src, "-o", tmp_path / "file"], "is a file"),
        (["run", tmp_path / "q.npz", tmp_path / "empty", "-o", tmp_path / "o"], "no .npy files"),
        (["run", tmp_path / "q.npz", os.path.join(src, "part-000.npy"), "-o", tmp_path / "o.npy",
          "--scheduler", "local"], "directory of .npy shards"),
        (["run", tmp_path / "q.npz", os.path.join(src, "part-000.npy"), "-o", tmp_path], "is a directory"),
        (["run", tmp_path / "q.npz", src, "-o", tmp_path / "o", "--argmax"], "--argmax needs a file INPUT"),
        (["quantize", bundled("digits_cnn.npz"), "-o", tmp_path / "d.npz", "--dynamic", "--scheduler", "local"],
         "needs --calib"),
    ]:
        code, out = _invoke(*args)
        assert code == 1 and msg in out and "Traceback" not in out, (args, out)


def test_missing_dask_is_one_line(tmp_path, cnn):
    code = ("import sys; sys.modules['dask'] = None\n"
            "try:\n    import fixq.dask\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "fixq.dask needs Dask: pip install 'fixq[dask]'"
    (tmp_path / "in").mkdir()
    quantize_model(cnn[0], [cnn[1][:100]]).save(tmp_path / "q.npz")
    code = ("import sys; sys.modules['dask'] = None\n"
            "from fixq.cli import main\n"
            f"main(['run', 'q.npz', {str(tmp_path / 'in')!r}, '-o', 'out', '--scheduler', 'local'])\n")
    np.save(tmp_path / "in" / "a.npy", np.zeros((2, 1, 8, 8), np.float32))
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == "fixq: error: --scheduler needs Dask: pip install 'fixq[dask]'"
