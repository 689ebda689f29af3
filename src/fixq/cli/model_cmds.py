"""``fixq quantize``, ``fixq run``, ``fixq inspect``, ``fixq eval`` (docs/engine.md)."""
import json
import os

import click
import numpy as np

from . import cli
from ._common import CliError, batches, check_output, load_array, one_line_errors, progressbar
from .. import graph as G, layout as L
from ..archive import WEIGHT_TYPES, atomic_write, load_float_model
from ..engine import Model
from ..quantizer import METHODS, quantize_model
from ..targets import TARGETS

QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
FORCE = click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")


def _fmt(v):
    return f"{v:.6g}"


def _per(a):
    """One value, or the range of a per-channel array."""
    a = np.asarray(a).reshape(-1)
    if a.size == 1 or np.all(a == a[0]):
        return _fmt(a[0]) if a.dtype.kind == "f" else str(int(a[0]))
    lo, hi = a.min(), a.max()
    return (f"{_fmt(lo)}..{_fmt(hi)}" if a.dtype.kind == "f" else f"{int(lo)}..{int(hi)}") + f" ({a.size})"


def _table(rows, header):
    rows = [header] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def layer_rows(model):
    """One row per step: name, op, dtype, weight shape, in/out scale and zero point, multiplier/shift, bytes."""
    rows, a = [], model.arrays
    for s in model.steps:
        name, out = s["name"], s["output"]
        op = s["op"] + (f"+{s['act']}" if s["act"] else "") + (" dw" if s.get("depthwise") else "")
        shape = s.get("weight_shape")
        wdt = {"int8": "int8", "fp16": "float16", "ternary": "ternary", "binary": "binary"}[model.weights]
        nbytes = sum(v.nbytes for k, v in a.items() if k.startswith(name + ":"))
        if model.float_acts:
            io = ["dynamic" if model.dynamic else "float", "", "float", ""]
        else:
            si, zi = model.qparams(s["inputs"][0])
            so, zo = model.qparams(out)
            io = [_fmt(si), zi, _fmt(so), zo]
        mq = (f"{_per(a[name + ':multiplier'])} / {_per(a[name + ':shift'])}"
              if f"{name}:multiplier" in a else "")
        rows.append([name, op, wdt if shape else "", "x".join(map(str, shape)) if shape else "",
                     _per(a[name + ":weight_scale"]) if f"{name}:weight_scale" in a else ""] + io + [mq, nbytes])
    return rows


LAYER_HEADER = ["layer", "op", "dtype", "weight", "w scale", "in scale", "in zp", "out scale", "out zp",
                "multiplier / shift", "bytes"]


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Quantized archive to write (fixq.qmodel/1 .npz).")
@click.option("--calib", help="Calibration inputs: FILE.npy (memory-mapped) or FILE.npz[:KEY].")
@click.option("--method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Activation calibration method.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--weights", type=click.Choice(WEIGHT_TYPES), default="int8", show_default=True,
              help="Weight storage: int8; ternary/binary codes through the int8 path; fp16 (float activations).")
@click.option("--activations", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True)
@click.option("--dynamic", is_flag=True, help="Activation qparams computed per batch at run time (no --calib).")
@click.option("--rounding", type=click.Choice(["double", "single", "fp32"]), default="double", show_default=True,
              help="Requantization rounding (docs/arithmetic.md).")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Runtime whose requantization the model emulates when run (docs/conformance.md).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration batch size.")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False), help="Graph JSON (overrides __graph__).")
@click.option("--activation", type=click.Choice(G.ACTIVATIONS), default=None,
              help="Activation between layers of an inferred MLP (no graph).")
@FORCE
@QUIET
@one_line_errors
def quantize(model, output, calib, method, per_channel, weights, activations, dynamic, rounding, target, batch_size,
             graph_path, activation, force, quiet):
    """Quantize a float MODEL.npz to an int8 archive."""
    check_output(output, [model, calib, graph_path], force)
    if dynamic and calib is not None:
        raise CliError("--dynamic computes activation ranges at run time; drop --calib")
    if weights == "fp16" and (calib is not None or dynamic):
        raise CliError("--weights fp16 keeps float activations: drop --calib and --dynamic")
    if not dynamic and weights != "fp16" and calib is None:
        raise CliError("static quantization needs --calib DATA.npy (or pass --dynamic)")
    g, inferred = load_float_model(model, graph=graph_path, activation=activation)
    if calib is None:
        q = quantize_model(g, dynamic=dynamic, per_channel=per_channel, weights=weights, activations=activations,
                           rounding=rounding, target=target)
    else:
        x = load_array(calib, "--calib")
        with progressbar(len(x), "calibrating", quiet) as bar:
            q = quantize_model(g, batches(x, batch_size, bar), method=method, per_channel=per_channel,
                               weights=weights, activations=activations, rounding=rounding, target=target)
    q.save(output)
    click.echo(_table(layer_rows(q), LAYER_HEADER))
    click.echo(f"wrote {output}: {q.weight_bytes()} bytes of parameters "
               f"({q.float_weight_bytes() / max(q.weight_bytes(), 1):.2f}x smaller than fp32)")
    if inferred:
        acts = sorted({n.op for n in g.nodes if n.op != "linear"}) or ["no activation"]
        source = "--activation" if activation is not None else "the archive's __activation__"
        click.echo(f"warning: {model} has no __graph__: fixq inferred a sequential MLP of "
                   f"{sum(n.op == 'linear' for n in g.nodes)} linear layers with {', '.join(acts)} between them "
                   f"(from {source}); if the model differs, give its graph (--graph, docs/engine.md):\n"
                   f"{json.dumps(g.spec)}", err=True)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("input", type=str)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Predictions to write (.npy; .npz for several outputs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--raw", is_flag=True, help="Write the int8/uint8 outputs instead of dequantized floats.")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Requantize exactly as this runtime does (docs/conformance.md).")
@FORCE
@QUIET
@one_line_errors
def run(model, input, output, batch_size, threads, raw, target, force, quiet):
    """Run a quantized MODEL on INPUT in batches.

    INPUT is FILE.npy (memory-mapped) or FILE.npz[:KEY]."""
    check_output(output, [model, input], force)
    m = Model.load(model, target=target)
    x = load_array(input, "INPUT")
    if x.ndim == 0 or len(x) == 0:
        raise CliError(f"INPUT {input}: no samples")
    m._check_x(x[:1])
    if len(m.outputs) == 1:
        _run_to_npy(m, x, output, batch_size, threads, raw, quiet)
    else:
        outs = [[] for _ in m.outputs]
        with progressbar(len(x), "running", quiet) as bar:
            for b in batches(x, batch_size, bar):
                for i, y in enumerate(m.run(b, threads=threads, raw=raw)):
                    outs[i].append(y)
        atomic_write(output, lambda f: np.savez(f, **{t: np.concatenate(o) for t, o in zip(m.outputs, outs)}))
    if not quiet:
        click.echo(f"wrote {output}: {len(x)} samples", err=True)


def _run_to_npy(m, x, output, batch_size, threads, raw, quiet):
    """Stream the predictions into a memory-mapped temp .npy next to `output`, then rename it."""
    d = os.path.dirname(os.path.abspath(output))
    tmp = os.path.join(d, f".fixq-{os.getpid()}-{os.path.basename(output)}.tmp")
    try:
        dst, i = None, 0
        with progressbar(len(x), "running", quiet) as bar:
            for b in batches(x, batch_size, bar):
                y = m.run(b, threads=threads, raw=raw)
                if dst is None:
                    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=y.dtype, shape=(len(x),) + y.shape[1:])
                dst[i:i + len(y)] = y
                i += len(y)
        dst.flush()
        del dst
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@one_line_errors
def inspect(model):
    """Show a quantized MODEL's layers, qparams and sizes.

    Per layer: op, weight dtype and shape, scales, zero points, multipliers/shifts, bytes; then the
    compression ratio against fp32."""
    m = Model.load(model)
    o = m.options
    click.echo(f"{model}: {m.meta['format']}, made by fixq {m.meta['fixq_version']}")
    mode = "dynamic" if m.dynamic else ("float activations" if m.float_acts else "static")
    click.echo(f"mode {mode}; weights {o['weights']} "
               f"{'per-channel' if o['per_channel'] else 'per-tensor'}; activations {o['activations']}; "
               f"calibration {o['method']}; rounding {o['rounding']}")
    click.echo(f"input {m.input} {m.input_shape}; outputs {', '.join(m.outputs)}")
    click.echo(_table(layer_rows(m), LAYER_HEADER))
    q, f = m.weight_bytes(), m.float_weight_bytes()
    click.echo(f"parameters: {q} bytes quantized vs {f} bytes fp32: compression {f / max(q, 1):.2f}x")


def sqnr_db(signal2, noise2):
    if noise2 == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal2, 1e-30) / noise2)


@cli.command("eval")
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Inputs: FILE.npy or FILE.npz[:KEY].")
@click.option("--labels", help="Integer class labels: FILE.npy or FILE.npz[:KEY].")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG report (needs matplotlib).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@FORCE
@QUIET
@one_line_errors
def eval_(float_model, model, data, labels, plot, batch_size, force, quiet):
    """Compare FLOAT_MODEL with its quantized MODEL on --data.

    Accuracy (with --labels), top-1 agreement, max abs error and per-tensor SQNR."""
    if plot is not None:
        check_output(plot, [float_model, model, data, labels], force)
        try:
            import matplotlib
        except ImportError:
            raise CliError("--plot needs matplotlib (pip install matplotlib)") from None
    m = Model.load(model)
    g, _ = load_float_model(float_model, graph=m.meta["graph"])
    x = load_array(data, "--data")
    y = None
    if labels is not None:
        y = load_array(labels, "--labels")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise CliError(f"--labels must be 1-D integers, one per sample of --data ({len(x)}); got shape "
                           f"{y.shape} dtype {y.dtype}")
    tensors = [s["output"] for s in m.steps]
    sig = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    n = agree = right_f = right_q = 0
    max_err = 0.0
    errs = []
    out = m.outputs[0]
    with progressbar(len(x), "evaluating", quiet) as bar:
        for b in batches(x, batch_size, bar):
            fenv = G.run_float(g, b, keep_all=True)
            qenv = m.run_all(b)
            for t in tensors:
                f = fenv[t].astype(np.float64)
                d = f - m.dequantized(t, qenv[t])
                sig[t] += float(np.sum(f * f))
                noise[t] += float(np.sum(d * d))
            fo = L.to_external(fenv[out])
            qo = L.to_external(m.dequantized(out, qenv[out]))
            e = np.abs(fo - qo)
            max_err = max(max_err, float(e.max()))
            errs.append(e.reshape(-1))
            if fo.ndim == 2:
                pf, pq = fo.argmax(1), qo.argmax(1)
                agree += int(np.sum(pf == pq))
                if y is not None:
                    yy = np.asarray(y[n:n + len(b)])
                    right_f += int(np.sum(pf == yy))
                    right_q += int(np.sum(pq == yy))
            n += len(b)
    rows = [[t, _fmt(sqnr_db(sig[t], noise[t]))] for t in tensors]
    click.echo(_table(rows, ["tensor", "SQNR dB"]))
    if y is not None:
        click.echo(f"accuracy: float {100 * right_f / n:.2f}%  quantized {100 * right_q / n:.2f}%  "
                   f"({n} samples)")
    click.echo(f"top-1 agreement: {100 * agree / n:.2f}%")
    click.echo(f"max abs error of output {out!r}: {max_err:.6g}")
    if plot is not None:
        _plot(plot, rows, np.concatenate(errs), model)
        click.echo(f"wrote {plot}")


def _plot(path, rows, errs, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    vals = [float(r[1]) if r[1] != "inf" else 100.0 for r in rows]
    a1.barh([r[0] for r in rows][::-1], vals[::-1])
    a1.set_xlabel("SQNR (dB), float vs quantized")
    a1.set_title("per-layer SQNR")
    a2.hist(errs, bins=60)
    a2.set_yscale("log")
    a2.set_xlabel("|float - quantized| at the output")
    a2.set_title("output error")
    fig.suptitle(os.path.basename(title))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)

