"""``fixq import``: models of other formats in (docs/onnx.md)."""
import collections

import click

from . import cli
from ._common import atomic_output, check_output, one_line_errors
from ..archive import write_float_model
from ..engine import Model
from ..io import import_onnx


@cli.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Float archive to write (fixq.graph/1 .npz).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
@one_line_errors
def import_(model, output, force):
    """Import an ONNX MODEL: a float model as a fixq float archive (graph + weights) for `fixq quantize`; a
    quantized one (QOperator or QDQ) as an int8 archive that runs ONNX Runtime's arithmetic."""
    check_output(output, [model], force)
    g = import_onnx(model)
    if isinstance(g, Model):
        with atomic_output(output) as tmp:
            g.save(tmp)
        ops = collections.Counter(s["op"] for s in g.steps)
        click.echo(f"wrote {output}: int8 model ({g.act_dtype.name} activations, target onnxruntime), "
                   f"{len(g.steps)} steps ({', '.join(f'{k} x{v}' for k, v in ops.items())}), "
                   f"{g.weight_bytes()} bytes of parameters")
        return
    with atomic_output(output) as tmp:
        write_float_model(tmp, g)
    ops = collections.Counter(n.op for n in g.nodes)
    click.echo(f"wrote {output}: input {g.input} {list(g.input_shape)}, {len(g.nodes)} nodes "
               f"({', '.join(f'{k} x{v}' for k, v in ops.items())}), outputs {', '.join(g.outputs)}, "
               f"{sum(w.size for w in g.weights.values())} weights")
