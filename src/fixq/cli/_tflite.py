"""``fixq compare MODEL.tflite``: fixq against LiteRT for each kernel set, and where the kernel sets part
ways (docs/tflite.md)."""
import click
import numpy as np

from ..engine import Model
from ..io.tflite import run_tflite, tflite_input, tflite_tensors
from ..io.tflite_file import read_bytes, read_model
from ..io.tflite_litert import RESOLVERS, first_divergence, litert, run_litert

SETS = tuple(RESOLVERS)


def _where(d):
    o, k, n, size = d
    return f"operator {o.index} ({o.op}) first, its output tensor {k}: {n} of {size} elements"


def _agreement(name, a, b):
    n = int(np.count_nonzero(a != b.reshape(a.shape)))
    diff = np.abs(a.astype(np.float64) - b.reshape(a.shape).astype(np.float64)).max() if n else 0
    return f"{name}: {a.size - n} / {a.size} equal" + (f", max difference {diff:.6g}" if n else "")


def compare_tflite(path, x):
    """Print, per kernel set and output, fixq's agreement with LiteRT (when ai-edge-litert imports), then
    each pair of kernel sets that disagree and the operator where they first do."""
    content, _ = read_bytes(path)
    tm = read_model(content)
    base = Model.load(path)
    tflite_input(base, x[:1])
    models = {t: Model(base.meta, base.arrays, target=t) for t in SETS}
    fixq_out = {t: run_tflite(m, x) for t, m in models.items()}
    fixq_t = {t: tflite_tensors(m, x) for t, m in models.items()}
    names = [tm.tensors[k].name for k in tm.outputs]
    if litert() is None:
        click.echo("ai-edge-litert is not installed (pip install ai-edge-litert): comparing fixq's three kernel "
                   "sets with each other")
        outs, tens, who = fixq_out, fixq_t, "fixq"
    else:
        outs, tens, who = {}, {}, "LiteRT"
        for t in SETS:
            outs[t], tens[t] = run_litert(content, x, t, preserve=True)
            for name, y, ref in zip(names, fixq_out[t], outs[t]):
                click.echo(f"{t}: fixq vs LiteRT, " + _agreement(f"output {name!r}", y, ref))
            if any(np.any(y != ref.reshape(y.shape)) for y, ref in zip(fixq_out[t], outs[t])):
                d = first_divergence(tm.operators, fixq_t[t], tens[t])
                if d:
                    click.echo(f"  fixq and LiteRT part ways at {_where(d)}")
    for i, a in enumerate(SETS):
        for b in SETS[i + 1:]:
            same = all(np.array_equal(ya, yb) for ya, yb in zip(outs[a], outs[b]))
            if same:
                click.echo(f"{who} {a} vs {b}: all outputs equal")
                continue
            for name, ya, yb in zip(names, outs[a], outs[b]):
                click.echo(f"{who} {a} vs {b}: " + _agreement(f"output {name!r}", ya, yb))
            d = first_divergence(tm.operators, tens[a], tens[b])
            if d:
                click.echo(f"  they part ways at {_where(d)}")
