"""``fixq import``: models of other formats in (docs/onnx.md)."""
import collections

import click

from . import cli
from ._common import atomic_output, check_output, one_line_errors
from ..archive import write_float_model
from ..io import import_onnx


@cli.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Float archive to write (fixq.graph/1 .npz).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file.")
@one_line_errors
def import_(model, output, force):
    """Import a float ONNX MODEL as a fixq float archive (graph + weights) for `fixq quantize`."""
    check_output(output, [model], force)
    g = import_onnx(model)
    with atomic_output(output) as tmp:
        write_float_model(tmp, g)
    ops = collections.Counter(n.op for n in g.nodes)
    click.echo(f"wrote {output}: input {g.input} {list(g.input_shape)}, {len(g.nodes)} nodes "
               f"({', '.join(f'{k} x{v}' for k, v in ops.items())}), outputs {', '.join(g.outputs)}, "
               f"{sum(w.size for w in g.weights.values())} weights")
