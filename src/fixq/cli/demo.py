"""``fixq demo``: the main job on a bundled example."""
import time

import click
import numpy as np

from . import cli
from .. import dequantize, quantize, quantize_multiplier, requantize


@cli.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the bundled example layer.")
def demo(seed):
    """Quantize an example fp32 linear layer to int8 and compare it with float."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    w = (rng.standard_normal((128, 256)) / 16).astype(np.float32)
    x_scale = float(np.abs(x).max() / 127)
    w_scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    y_float = x @ w.T
    y_scale = float(np.abs(y_float).max() / 127)
    t0 = time.perf_counter()
    xq = quantize(x, x_scale)
    wq = quantize(w, w_scale, axis=0, qmin=-127)
    acc = (xq.astype(np.int64) @ wq.astype(np.int64).T).astype(np.int32)
    m, s = quantize_multiplier(x_scale * w_scale.astype(np.float64) / y_scale)
    yq = requantize(acc, m, s, 0, axis=-1)
    t1 = time.perf_counter()
    y = dequantize(yq, y_scale)
    err = np.abs(y - y_float)
    click.echo(f"layer 64x256 @ 256x128, int8 per-channel weights, double rounding ({(t1 - t0) * 1e3:.2f} ms)")
    click.echo(f"max abs error vs float: {err.max():.4f} (output scale {y_scale:.4f}); "
               f"mean abs error {err.mean():.5f}")
