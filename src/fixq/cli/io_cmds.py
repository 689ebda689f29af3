"""``fixq import`` / ``fixq export``: models of other formats in and out; ``fixq compare``: fixq against ONNX Runtime
(docs/onnx.md) or LiteRT (docs/tflite.md)."""
import collections

import click
import numpy as np

from . import cli
from ._common import CliError, atomic_output, check_output, load_array, one_line_errors
from ..archive import write_float_model
from ..engine import Model
from ..io import export_onnx, import_onnx, import_tflite


def is_tflite(path):
    return str(path).lower().endswith(".tflite")


@cli.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Float archive to write (fixq.graph/1 .npz).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
@one_line_errors
def import_(model, output, force):
    """Import an ONNX MODEL: a float model as a fixq float archive (graph + weights) for `fixq quantize`; a
    quantized one (QOperator or QDQ) as an int8 archive that runs ONNX Runtime's arithmetic.  A full-integer
    .tflite MODEL becomes an int8 archive that runs any of LiteRT's kernel sets (--target at run time;
    xnnpack by default)."""
    check_output(output, [model], force)
    g = import_tflite(model) if is_tflite(model) else import_onnx(model)
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
    click.echo(f"wrote {output}: input {g.input} {list(g.input_shape)}, {len(g.nodes)} nodes "
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
@one_line_errors
def compare(model, onnx_model, data):
    """Run MODEL (a fixq int8 archive) and ONNX_MODEL in ONNX Runtime (its default optimizations, one
    thread) on the same inputs; print, per output, the elements that are equal and the largest difference.

    A .tflite MODEL (no ONNX_MODEL) runs in fixq with each of LiteRT's kernel sets (tflite-reference, tflite,
    xnnpack) and in LiteRT's interpreter with the same kernel set (ai-edge-litert): per output, how many
    elements agree; then where the kernel sets disagree with each other, the operator that first differs."""
    if is_tflite(model):
        if onnx_model is not None:
            raise CliError("a .tflite MODEL is compared with LiteRT: give no ONNX_MODEL")
        from ._tflite import compare_tflite
        return compare_tflite(model, load_array(data, "--data"))
    if onnx_model is None:
        raise CliError("give ONNX_MODEL, the ONNX model to compare MODEL with (or a .tflite MODEL)")
    try:
        import onnxruntime
    except ImportError:
        raise CliError("fixq compare runs ONNX Runtime: pip install onnxruntime") from None
    m = Model.load(model)
    x = np.ascontiguousarray(load_array(data, "--data"), dtype=np.float32)
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = onnxruntime.InferenceSession(onnx_model, so, providers=["CPUExecutionProvider"])
        refs = sess.run(None, {sess.get_inputs()[0].name: x})
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models and bad inputs
        raise CliError(f"{onnx_model}: ONNX Runtime cannot run it ({' '.join(str(e).split())})") from None
    ys = m.run(x)
    ys = ys if isinstance(ys, tuple) else (ys,)
    if len(ys) != len(refs):
        raise CliError(f"{model} has {len(ys)} outputs and {onnx_model} {len(refs)}")
    for name, y, ref in zip(m.outputs, ys, refs):
        if y.size != ref.size:
            raise CliError(f"output {name!r}: fixq gives shape {list(y.shape)}, ONNX Runtime {list(ref.shape)}")
        y = y.reshape(ref.shape)
        diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
        click.echo(f"{name}: {int((y == ref).sum())} / {ref.size} equal, max difference {diff.max():.6g}")
