"""``fixq demo``: the main job on the bundled digits models, end to end."""
import os
import statistics
import tempfile
import time

import click
import numpy as np

from . import cli
from ._blas import blas_threads
from ._common import one_line_errors
from .. import graph as G
from ..archive import load_float_model
from ..engine import Model
from ..quantizer import quantize_model

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
MODELS = {"mlp": "digits_mlp.npz", "cnn": "digits_cnn.npz"}


def bundled(name):
    """Path of a file shipped in fixq/data."""
    return os.path.join(DATA, name)


REPEATS = 7


def _median_time(fn, calls=1):
    """Median over REPEATS runs of the time per call of `calls` calls in a row."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


@cli.command()
@click.option("--model", "which", type=click.Choice(["mlp", "cnn", "both"]), default="both", show_default=True,
              help="Which bundled model.")
@click.option("--method", type=click.Choice(["minmax", "entropy"]), default="minmax", show_default=True,
              help="Activation calibration method.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for both sides of the speed comparison: numpy's BLAS and fixq's threads=.")
@one_line_errors
def demo(which, method, threads):
    """Quantize and run the bundled digits models (accuracy, size, speed).

    The models were trained offline on scikit-learn's 8x8 handwritten digits; they are quantized to
    int8, run on the held-out test set, and compared with float.  Both sides of the speed comparison
    run on the same number of threads (one by default: per-core speed, which a machine shared with
    other work reproduces; left alone, numpy's BLAS takes every core and its waiting threads and
    fixq's compete for them), and each time is the median of several runs."""
    x = np.load(bundled("digits_test_x.npy"))
    y = np.load(bundled("digits_test_y.npy"))
    calib = np.load(bundled("digits_calib.npy"))
    click.echo(f"digits test set: {len(x)} images 1x8x8, 10 classes; calibration: {len(calib)} images; "
               f"static int8, per-channel weights, {method} calibration, double rounding")
    with blas_threads(threads) as blas:
        if blas:  # the BLAS may cap the count (OpenBLAS at its build's MAX_THREADS): fixq follows
            threads = blas[1]
        float_threads = (f"{threads} {blas[0]} thread{'s' if threads != 1 else ''}" if blas else
                         "its BLAS's own thread count (neither threadpoolctl nor OpenBLAS found to set it)")
        click.echo(f"speed: median of {REPEATS} runs; numpy float on {float_threads}, fixq int8 on {threads} "
                   f"thread{'s' if threads != 1 else ''}")
        for name in (["mlp", "cnn"] if which == "both" else [which]):
            _demo_model(name, x, y, calib, method, threads)


def _demo_model(name, x, y, calib, method, threads):
    """Quantize, save, load and run one bundled model; print accuracy, size and speed."""
    g, _ = load_float_model(bundled(MODELS[name]))
    t0 = time.perf_counter()
    q = quantize_model(g, [calib[i:i + 128] for i in range(0, len(calib), 128)], method=method)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"digits_{name}_int8.npz")
        q.save(path)
        m = Model.load(path)
    t_quant = time.perf_counter() - t0
    acc_f = float(np.mean(G.run_float(g, x).argmax(1) == y))
    acc_q = float(np.mean(m.run(x).argmax(1) == y))
    agree = float(np.mean(G.run_float(g, x).argmax(1) == m.run(x).argmax(1)))
    tf = _median_time(lambda: G.run_float(g, x))
    tq = _median_time(lambda: m.run(x, threads=threads))
    x1 = x[:1]
    t1f = _median_time(lambda: G.run_float(g, x1), 20)
    t1q = _median_time(lambda: m.run(x1, threads=threads), 20)
    click.echo(f"\n{name}: {' -> '.join(s['op'] + ('+' + s['act'] if s['act'] else '') for s in m.steps)}")
    click.echo(f"  accuracy    float {100 * acc_f:.2f}%   int8 {100 * acc_q:.2f}%   "
               f"(top-1 agreement {100 * agree:.2f}%)")
    click.echo(f"  parameters  float {m.float_weight_bytes()} B   int8 {m.weight_bytes()} B   "
               f"({m.float_weight_bytes() / m.weight_bytes():.2f}x smaller)")
    click.echo(f"  speed       batch {len(x)}: numpy float {len(x) / tf:,.0f}/s, int8 {len(x) / tq:,.0f}/s "
               f"({tf / tq:.1f}x); batch 1: float {t1f * 1e6:.0f} us, int8 {t1q * 1e6:.0f} us ({t1f / t1q:.1f}x)")
    click.echo(f"  (quantize + save + load: {t_quant * 1e3:.0f} ms)")
