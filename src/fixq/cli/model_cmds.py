"""``fixq quantize``, ``fixq run``, ``fixq inspect``, ``fixq eval`` (docs/engine.md)."""
import inspect as _inspect
import json
import os

import click
import numpy as np

from . import cli
from ._classes import ClassIds, classes, describe
from ._common import (CliError, atomic_output, batches, check_output, echo_json, load_array, one_line_errors,
                      progressbar)
from ._float import FloatModel, load_runnable, output_shapes
from ._outputs import check_layout, output_format, run_output, shape_text
from ._sequence import run_sequence
from ._shards import SCHEDULER, dask_ranges, load_samples, run_shards
from .. import calibrate, graph as G, layout as L
from ..archive import WEIGHT_TYPES, load_float_model
from ..engine import Model
from ..io.tflite import run_tflite, tflite_input
from ..quantizer import GRANULARITIES, METHODS, quantize_model
from ..targets import TARGETS

QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
FORCE = click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print one JSON object on stdout instead of the text report.")


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


def _plain(v):
    """A JSON value of a numpy array or scalar."""
    return v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v


def layers(model):
    """One dict per step: name, op, fused act, depthwise, weight dtype and shape, weight scales, input
    and output scale and zero point (None with float activations), multipliers and shifts, bytes."""
    out, a = [], model.arrays
    wdt = {"int8": "int8", "fp16": "float16", "ternary": "ternary", "binary": "binary", "fp32": "float32"}[model.weights]
    for s in model.steps:
        name = s["name"]
        shape = s.get("weight_shape")
        layer = {"name": name, "op": s["op"], "act": s["act"], "depthwise": bool(s.get("depthwise", False)),
                 "weight_dtype": ("float32" if s["op"] in G.FLOAT_WEIGHTED else wdt) if shape else None,
                 "weight_shape": shape,
                 "weight_scale": a.get(name + ":weight_scale"),
                 "input_scale": None, "input_zero_point": None, "output_scale": None, "output_zero_point": None,
                 "multiplier": a.get(name + ":multiplier"), "shift": a.get(name + ":shift"),
                 "bytes": sum(v.nbytes for k, v in a.items() if k.startswith(name + ":"))}
        if not model.float_acts:
            si, zi = model.qparams(s["inputs"][0])
            so, zo = model.qparams(s["output"])
            layer.update(input_scale=si, input_zero_point=zi, output_scale=so, output_zero_point=zo)
        out.append({k: _plain(v) for k, v in layer.items()})
    return out


def layer_rows(model):
    """The rows of :data:`LAYER_HEADER`, one per step."""
    rows = []
    for ly in layers(model):
        op = ly["op"] + (f"+{ly['act']}" if ly["act"] else "") + (" dw" if ly["depthwise"] else "")
        if model.float_acts:
            io = ["dynamic" if model.dynamic else "float", "", "float", ""]
        else:
            io = [_fmt(ly["input_scale"]), ly["input_zero_point"], _fmt(ly["output_scale"]), ly["output_zero_point"]]
        mq = (f"{_per(np.asarray(ly['multiplier']))} / {_per(np.asarray(ly['shift']))}"
              if ly["multiplier"] is not None else "")
        shape = ly["weight_shape"]
        rows.append([ly["name"], op, ly["weight_dtype"] or "", "x".join(map(str, shape)) if shape else "",
                     _per(np.asarray(ly["weight_scale"])) if ly["weight_scale"] is not None else ""]
                    + io + [mq, ly["bytes"]])
    return rows


LAYER_HEADER = ["layer", "op", "dtype", "weight", "w scale", "in scale", "in zp", "out scale", "out zp",
                "multiplier / shift", "bytes"]


def _observer_options(method):
    """The options of `method`'s observer (``fixq.calibrate``), with their defaults."""
    return _inspect.signature(calibrate.METHODS[method].__init__).parameters


def _default(option):
    """'default 2048': the default of `option` in the first observer that takes it."""
    return next(f"default {_observer_options(m)[option].default}" for m in METHODS if option in _observer_options(m))


def method_options(method, calibrating, **given):
    """The calibration options given on the command line, checked against `method`'s observer
    (``fixq.calibrate``): each refused in one line where that observer does not take it or its value is
    out of range, before any data is read."""
    given = {k: v for k, v in given.items() if v is not None}
    for k, v in given.items():
        flag = "--" + k.replace("_", "-")
        if not calibrating:
            raise CliError(f"{flag} is a calibration option, and --dynamic and --weights fp16 calibrate nothing; "
                           f"drop {flag}")
        if k not in _observer_options(method):
            users = "/".join(m for m in METHODS if k in _observer_options(m))
            raise CliError(f"{flag} applies to --method {users}, not {method}")
        try:
            calibrate.make(method, **{k: v})
        except (ValueError, TypeError) as e:
            raise CliError(f"{flag}: {e}") from None
    return given


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Quantized archive to write (fixq.qmodel/1 .npz).")
@click.option("--calib", help="Calibration inputs: FILE.npy (memory-mapped), FILE.npz[:KEY] or a directory of "
                                "FILE.npy shards (taken in name order).")
@click.option("--method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Activation calibration method.")
@click.option("--percentile", type=float,
              help=f"--method percentile: the percentile of |x| kept ({_default('percentile')}).")
@click.option("--bins", type=int,
              help=f"--method percentile/entropy/mse: histogram bins ({_default('bins')}).")
@click.option("--averaging-constant", type=float,
              help=f"--method moving_average: c in v += c*(batch v - v) ({_default('averaging_constant')}).")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--weights", type=click.Choice(WEIGHT_TYPES), default="int8", show_default=True,
              help="Weight storage: int8; ternary/binary codes through the int8 path; fp16 or fp32 (float "
                   "activations; fp32: float mode, nothing quantized).")
@click.option("--activations", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True)
@click.option("--dynamic", is_flag=True, help="Activation qparams computed per batch at run time (no --calib).")
@click.option("--granularity", type=click.Choice(GRANULARITIES), default=None,
              help="Sequence models with --dynamic: activations quantized per row (token; the default) or per tensor "
                   "(docs/transformers.md).")
@click.option("--int8-attention", is_flag=True,
              help="Sequence models with --dynamic: the attention matmuls in dynamic int8 too (float by default).")
@click.option("--float-gather", is_flag=True,
              help="Sequence models with --dynamic: keep the embedding (gather) tables float32 (int8 per row by "
                   "default).")
@click.option("--rounding", type=click.Choice(["double", "single", "fp32"]), default="double", show_default=True,
              help="Requantization rounding (docs/arithmetic.md).")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Runtime whose requantization the model emulates when run (docs/conformance.md).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Calibration batch size.")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False), help="Graph JSON (overrides __graph__).")
@click.option("--activation", type=click.Choice(G.ACTIVATIONS), default=None,
              help="Activation between layers of an inferred MLP (no graph).")
@SCHEDULER
@FORCE
@QUIET
@one_line_errors
def quantize(model, output, calib, method, percentile, bins, averaging_constant, per_channel, weights, activations,
             dynamic, granularity, int8_attention, float_gather, rounding, target, batch_size, graph_path, activation, scheduler, force,
             quiet):
    """Quantize a float MODEL.npz to an int8 archive."""
    check_output(output, [model, calib, graph_path], force)
    float_weights = weights in ("fp16", "fp32")
    if dynamic and calib is not None:
        raise CliError("--dynamic computes activation ranges at run time; drop --calib")
    if float_weights and (calib is not None or dynamic):
        raise CliError(f"--weights {weights} keeps float activations: drop --calib and --dynamic")
    if (granularity is not None or int8_attention or float_gather) and not dynamic:
        raise CliError("--granularity, --int8-attention and --float-gather choose how --dynamic quantizes a sequence "
                       "model; add --dynamic or drop them")
    options = method_options(method, not dynamic and not float_weights, percentile=percentile, bins=bins,
                             averaging_constant=averaging_constant)
    if not dynamic and not float_weights and calib is None:
        raise CliError("static quantization needs --calib DATA.npy (or pass --dynamic)")
    if scheduler is not None and calib is None:
        raise CliError("--scheduler runs the calibration: it needs --calib (a directory of .npy shards)")
    g, inferred = load_float_model(model, graph=graph_path, activation=activation)
    if g.sequence and calib is not None:
        raise CliError(f"{model} is a sequence model: it quantizes without calibration, in dynamic int8 (--dynamic) "
                       "or float (--weights fp32); drop --calib (docs/transformers.md)")
    if calib is None:
        seq = {"granularity": granularity or "row", "int8_attention": int8_attention,
               "float_gather": float_gather} if g.sequence else {}
        if not g.sequence and (granularity is not None or int8_attention or float_gather):
            raise CliError(f"--granularity, --int8-attention and --float-gather apply to sequence models "
                           f"(docs/transformers.md); {model} is not one")
        q = quantize_model(g, dynamic=dynamic, per_channel=per_channel, weights=weights, activations=activations,
                           rounding=rounding, target=target, **seq)
    elif scheduler is not None:
        ranges = dask_ranges(g, calib, scheduler, method, options, weights, batch_size)
        q = quantize_model(g, ranges=ranges, method=method, method_options=options, per_channel=per_channel,
                           weights=weights, activations=activations, rounding=rounding, target=target)
    else:
        x = load_samples(calib, "--calib")
        with progressbar(len(x), "calibrating", quiet) as bar:
            q = quantize_model(g, batches(x, batch_size, bar), method=method, method_options=options,
                               per_channel=per_channel, weights=weights, activations=activations,
                               rounding=rounding, target=target)
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
@click.option("-o", "--output", "output", required=True, type=click.Path(),
              help="Predictions to write, in the format of its suffix: .npy (one output), .npz (one array per "
                   "output name), .csv (one output: a header row, then a row per sample), .json (an object "
                   "keyed by output name); for a directory INPUT, a directory (one .npy or .npz per shard).")
@click.option("--argmax", is_flag=True,
              help="Class ids instead of scores: the argmax of several columns; one column: class 1 where a "
                   "probability is > 0.5 or a logit > 0 (the rule used is printed).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Samples a call (an ONNX quantize_dynamic model: the whole INPUT unless given, since its "
                   "activations' range is the whole batch's, as in one ORT call).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--raw", is_flag=True, help="Write the int8/uint8 outputs instead of dequantized floats.")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Requantize exactly as this runtime does (docs/conformance.md).")
@SCHEDULER
@FORCE
@QUIET
@one_line_errors
def run(model, input, output, argmax, batch_size, threads, raw, target, scheduler, force, quiet):
    """Run MODEL on INPUT in batches: an int8 archive (or quantized .onnx) in int8, a float archive (or
    float .onnx) in float with fixq's float reference, to compare the two.

    INPUT is FILE.npy (memory-mapped) or FILE.npz[:KEY], or a directory of FILE.npy shards: then -o is a
    directory that gets one output per shard, named as the shard, and a rerun runs only the shards whose
    output is missing (--force: all)."""
    if raw and argmax:
        raise CliError("--argmax gives class ids from the dequantized scores; drop --raw")
    tflite = model.lower().endswith(".tflite")  # inputs and outputs as the .tflite signature has them
    if tflite and raw:
        raise CliError("a .tflite MODEL reads and writes its own input and output types: drop --raw")
    if tflite and os.path.isdir(input):
        raise CliError("a .tflite MODEL runs a file INPUT; for a directory of shards, fixq import it first and run "
                       "the archive")
    if os.path.isdir(input):
        if argmax:
            raise CliError("--argmax needs a file INPUT; a directory INPUT writes each shard's scores (.npy)")
        m = _runnable(model, target, raw, scheduler)
        if m.sequence:
            raise CliError(f"{model} is a sequence model: INPUT is an .npz of its named inputs, not a directory")
        return run_shards(m, input, output, batch_size, threads, raw, scheduler, force, quiet)
    if scheduler is not None:
        raise CliError("--scheduler runs a directory of .npy shards; INPUT is not a directory")
    if os.path.isdir(output):
        raise CliError(f"{output}: is a directory; give a file, or a directory of .npy shards as INPUT")
    fmt = output_format(output)
    check_output(output, [model, input], force)
    m = _runnable(model, target, raw, scheduler)
    if m.sequence:
        return run_sequence(m, input, output, fmt, argmax, batch_size, threads, raw, quiet)
    shapes = output_shapes(m)
    check_layout(output, fmt, m.outputs, shapes, argmax)
    x = load_array(input, "INPUT")
    if x.ndim == 0 or len(x) == 0:
        raise CliError(f"INPUT {input}: no samples")
    try:
        tflite_input(m, x[:1]) if tflite else m._check_x(x[:1])
    except (ValueError, TypeError) as e:
        # the check sees one sample: name the file's own shape
        raise CliError(f"INPUT {input} (shape {list(x.shape)}): {str(e).split('; ', 1)[-1]}") from None
    if isinstance(m, Model) and m._ort_dynamic() and len(x) > batch_size:
        # ORT's DynamicQuantizeLinear takes one range over the whole input: a batch is one ORT call
        if click.get_current_context().get_parameter_source("batch_size") == click.core.ParameterSource.DEFAULT:
            batch_size = len(x)
        elif not quiet:
            click.echo(f"note: a quantize_dynamic model quantizes each --batch-size {batch_size} batch with that "
                       "batch's range, as one ORT call on it would", err=True)
    with run_output(output, fmt, m.outputs, shapes, argmax, len(x), quiet) as add, \
            progressbar(len(x), "running", quiet) as bar:
        for b in batches(x, batch_size, bar, floats=not tflite):
            add(tuple(run_tflite(m, b, threads)) if tflite else m.run(b, threads=threads, raw=raw))


def _runnable(model, target, raw, scheduler):
    m = load_runnable(model, target)
    if isinstance(m, FloatModel) and m.graph.sequence:
        # a float sequence graph runs on the engine's float mode (fp32 weights, float kernels)
        return quantize_model(m.graph, weights="fp32")
    if isinstance(m, FloatModel):
        if raw:
            raise CliError(f"{model}: is a float model; its outputs are float: drop --raw")
        if scheduler is not None:
            raise CliError(f"{model}: is a float model; --scheduler runs int8 models: drop it")
    return m


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@JSON
@one_line_errors
def inspect(model, as_json):
    """Show a quantized MODEL's layers, qparams and sizes.

    Per layer: op, weight dtype and shape, scales, zero points, multipliers/shifts, bytes; then the
    compression ratio against fp32."""
    m = Model.load(model)
    o = m.options
    mode = "dynamic" if m.dynamic else ("float activations" if m.float_acts else "static")
    q, f = m.weight_bytes(), m.float_weight_bytes()
    if as_json:
        echo_json({"file": model, "format": m.meta["format"], "fixq_version": m.meta["fixq_version"], "mode": mode,
                   "options": o, "input": m.input, "input_shape": list(m.input_shape), "outputs": list(m.outputs),
                   "layers": layers(m), "parameter_bytes": q, "float_parameter_bytes": f,
                   "compression": f / max(q, 1)})
        return
    click.echo(f"{model}: {m.meta['format']}, made by fixq {m.meta['fixq_version']}")
    if o["weights"] == "fp32":  # float mode: no quantization to describe
        click.echo(f"mode {mode}; weights fp32")
    else:
        click.echo(f"mode {mode}; weights {o['weights']} "
                   f"{'per-channel' if o['per_channel'] else 'per-tensor'}; activations {o['activations']}; "
                   f"calibration {o['method']}; rounding {o['rounding']}")
    if m.sequence:
        click.echo(f"attention matmuls {'int8' if o.get('int8_attention') else 'float'}; gather tables "
                   f"{'int8 per row' if o.get('int8_gather') else 'float32'}; dynamic activations "
                   f"per {o.get('granularity') or 'tensor'}" if m.dynamic else "float mode (fp32 weights)")
        ins = ", ".join(f"{i['name']} {shape_text(i['shape'])} {i['dtype']}{' (optional)' if i['optional'] else ''}"
                        for i in m.inputs)
        click.echo(f"inputs {ins}; outputs {', '.join(m.outputs)}")
    else:
        click.echo(f"input {m.input} {m.input_shape}; outputs {', '.join(m.outputs)}")
    click.echo(_table(layer_rows(m), LAYER_HEADER))
    click.echo(f"parameters: {q} bytes quantized vs {f} bytes fp32: compression {f / max(q, 1):.2f}x")


def sqnr_db(signal2, noise2):
    if noise2 == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal2, 1e-30) / noise2)


@cli.command("eval")
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Inputs: FILE.npy or FILE.npz[:KEY].")
@click.option("--labels", help="Integer class labels, one per sample: FILE.npy or FILE.npz[:KEY]; scored against "
                               "every [N, C] output whose classes they fit.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG report (needs matplotlib).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@JSON
@FORCE
@QUIET
@one_line_errors
def eval_(float_model, model, data, labels, plot, batch_size, as_json, force, quiet):
    """Compare FLOAT_MODEL with its quantized MODEL on --data.

    Per-tensor SQNR; then for every output: max abs error, and for [N, C] outputs the class each sample
    gets (argmax of several columns; one column: a probability > 0.5 or a logit > 0, whichever the
    float outputs show, named in the report), the agreement of float and quantized classes and, with
    --labels, the accuracy of each."""
    if plot is not None:
        check_output(plot, [float_model, model, data, labels], force)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib (pip install matplotlib)") from None
    m = Model.load(model)
    if m.sequence:
        raise CliError(f"{model} is a sequence model; fixq eval compares models of one float input (--data): compare "
                       "a sequence model's Model.run outputs in Python (docs/transformers.md)")
    try:
        g, _ = load_float_model(float_model, graph=m.meta["graph"])
    except G.GraphError as e:
        raise CliError(f"{float_model} is not the float model {model} was quantized from: its weights do not "
                       f"fit {model}'s graph ({e})") from None
    x = load_array(data, "--data")
    outputs = {t: m.meta["tensors"][t] for t in m.outputs}
    decided = {t: shape[1] for t, shape in outputs.items() if len(shape) == 2}
    y = None
    if labels is not None:
        y = load_array(labels, "--labels")
        if y.ndim != 1 or y.dtype.kind not in "biu" or len(y) != len(x):
            raise CliError(f"--labels must be 1-D integers, one per sample of --data ({len(x)}); got shape "
                           f"{y.shape} dtype {y.dtype}")
        y = np.asarray(y, dtype=np.int64)
        lo, hi = (int(y.min()), int(y.max())) if len(y) else (0, 0)
        scored = [t for t, c in decided.items() if 0 <= lo and hi < classes(c)]
        if not decided:
            raise CliError("--labels need an [N, C] output to score; this model's outputs are "
                           + ", ".join(f"{t!r} {shape_text(shape)}" for t, shape in outputs.items()))
        if not scored:
            raise CliError(f"--labels hold classes {lo}..{hi}, which fit no output ("
                           + ", ".join(f"{t!r} has classes 0..{classes(c) - 1}" for t, c in decided.items()) + ")")
    tensors = [s["output"] for s in m.steps]
    sig = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    max_err = dict.fromkeys(outputs, 0.0)
    ids = {t: (ClassIds(c), ClassIds(c)) for t, c in decided.items()}
    errs = []
    n = 0
    with progressbar(len(x), "evaluating", quiet) as bar:
        for b in batches(x, batch_size, bar):
            fenv = G.run_float(g, b, keep_all=True)
            qenv = m.run_all(b)
            for t in tensors:
                f = fenv[t].astype(np.float64)
                d = f - m.dequantized(t, qenv[t])
                sig[t] += float(np.sum(f * f))
                noise[t] += float(np.sum(d * d))
            for t in outputs:
                fo = L.to_external(fenv[t])
                qo = L.to_external(m.dequantized(t, qenv[t]))
                e = np.abs(fo - qo)
                max_err[t] = max(max_err[t], float(e.max()))
                if plot is not None:
                    errs.append(e.reshape(-1))
                if t in ids:
                    ids[t][0].add(fo)
                    ids[t][1].add(qo)
            n += len(b)
    if n == 0:
        raise CliError(f"--data {data}: no samples")
    report = {"float_model": float_model, "model": model, "samples": n,
              "labels": None if y is None else {"min": lo, "max": hi},
              "sqnr_db": {t: sqnr_db(sig[t], noise[t]) for t in tensors}, "outputs": {}, "plot": plot}
    for t, shape in outputs.items():
        r = {"shape": list(shape), "max_abs_error": max_err[t], "class_rule": None, "class_rule_text": None,
             "agreement": None, "accuracy": None}
        if t in ids:
            rule = ids[t][0].rule()  # the float model's outputs say which rule; both sides use it
            pf, pq = ids[t][0].ids(rule), ids[t][1].ids(rule)
            r.update(class_rule=rule, class_rule_text=describe(rule, decided[t]), agreement=float(np.mean(pf == pq)))
            if y is not None and t in scored:
                r["accuracy"] = {"float": float(np.mean(pf == y)), "quantized": float(np.mean(pq == y))}
        report["outputs"][t] = r
    if plot is not None:
        _plot(plot, report["sqnr_db"], np.concatenate(errs), model)
    if as_json:  # strict JSON has no infinity: a tensor without any error has SQNR null
        echo_json(dict(report, sqnr_db={t: None if v == float("inf") else v for t, v in report["sqnr_db"].items()}))
    else:
        _print_eval(report)


def _print_eval(report):
    click.echo(_table([[t, _fmt(v)] for t, v in report["sqnr_db"].items()], ["tensor", "SQNR dB"]))
    labels = report["labels"]
    for t, r in report["outputs"].items():
        click.echo(f"output {t!r} {shape_text(r['shape'])}: {r['class_rule_text'] or 'no classes (not [N, C])'}")
        if r["accuracy"] is not None:
            click.echo(f"  accuracy: float {100 * r['accuracy']['float']:.2f}%  "
                       f"quantized {100 * r['accuracy']['quantized']:.2f}%  ({report['samples']} samples)")
        elif labels is not None and r["class_rule"] is not None:
            click.echo(f"  accuracy: not scored: --labels hold classes {labels['min']}..{labels['max']}, this output "
                       f"0..{classes(r['shape'][1]) - 1}")
        if r["agreement"] is not None:
            click.echo(f"  {'top-1 ' if r['class_rule'] == 'argmax' else ''}agreement: {100 * r['agreement']:.2f}% "
                       "of samples get the same class")
        click.echo(f"  max abs error: {r['max_abs_error']:.6g}")
    if report["plot"] is not None:
        click.echo(f"wrote {report['plot']}")


def _plot(path, sqnr, errs, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(sqnr)
    vals = [min(sqnr[t], 100.0) for t in names]
    a1.barh(names[::-1], vals[::-1])
    a1.set_xlabel("SQNR (dB), float vs quantized")
    a1.set_title("per-layer SQNR")
    a2.hist(errs, bins=60)
    a2.set_yscale("log")
    a2.set_xlabel("|float - quantized| at the outputs")
    a2.set_title("output error")
    fig.suptitle(os.path.basename(title))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

