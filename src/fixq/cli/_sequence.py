"""``fixq run`` of a sequence model (docs/transformers.md): INPUT is an ``.npz`` of its named inputs
(``input_ids``, ``attention_mask``[, ``token_type_ids``]), checked whole before anything runs, then run in
batches into the output file."""
import os
import zipfile

import numpy as np

from ._common import CliError, progressbar
from ._outputs import check_layout, run_output
from .. import graph as G


def load_feeds(spec, m):
    """The named arrays of the .npz `spec` for sequence model `m`, every key one of its inputs."""
    if os.path.isdir(spec) or not os.path.exists(spec):
        raise CliError(f"INPUT {spec}: no such file; give an .npz of the model's inputs "
                       f"({', '.join(i['name'] for i in m.inputs)})")
    names = ", ".join(i["name"] for i in m.inputs)
    errors = (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError)
    try:
        z = np.load(spec, allow_pickle=False)
    except errors as e:
        raise CliError(f"INPUT {spec}: cannot read it as an .npz of arrays ({' '.join(str(e).split())})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CliError(f"INPUT {spec}: a single array; a sequence model takes an .npz of its named inputs ({names}), "
                       "e.g. numpy.savez(path, input_ids=..., attention_mask=...)")
    with z:
        try:
            feeds = {k: z[k] for k in z.files}
        except errors as e:
            raise CliError(f"INPUT {spec}: cannot read it as an .npz of arrays ({' '.join(str(e).split())})") from None
    try:
        G.check_feeds(m._sequence.inputs, m._sequence.roles, feeds)
    except (ValueError, TypeError) as e:
        raise CliError(f"INPUT {spec}: {e}") from None
    return feeds


def run_sequence(m, input, output, fmt, argmax, batch_size, threads, raw, quiet):
    if raw:
        raise CliError("--raw writes int8 outputs and a sequence model's outputs are float; drop --raw")
    shapes = [m.meta["tensors"][t] for t in m.outputs]
    check_layout(output, fmt, m.outputs, shapes, argmax)
    feeds = load_feeds(input, m)
    n = len(next(iter(feeds.values())))
    if n == 0:
        raise CliError(f"INPUT {input}: no samples")
    with run_output(output, fmt, m.outputs, shapes, argmax, n, quiet) as add, progressbar(n, "running", quiet) as bar:
        for i in range(0, n, batch_size):
            ys = add(m.run({k: v[i:i + batch_size] for k, v in feeds.items()}, threads=threads))
            bar.update(len(ys[0]))
