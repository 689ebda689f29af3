"""Shards: ``fixq quantize --calib DIR`` and ``fixq run MODEL DIR -o OUT/`` over a directory of ``.npy``
files, in this process or on a Dask scheduler (``--scheduler``, docs/scale-out.md).  ``fixq run`` writes
one output per input shard, named as that shard, each atomically, so a rerun runs only the missing ones."""
import os

import click
import numpy as np

from ._common import CliError, batches, load_array, progressbar
from ..archive import atomic_write

SCHEDULER = click.option(
    "--scheduler", metavar="tcp://HOST:PORT|local[:N]", default=None,
    help="Run on Dask (pip install 'fixq[dask]'): a running scheduler, or a local cluster of N worker "
         "processes (default: one per core), one thread each; needs a directory of .npy shards.")


def shard_paths(directory, what):
    """The ``.npy`` files of `directory`, sorted by name (hidden files skipped)."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".npy") and not n.startswith("."))
    if not names:
        raise CliError(f"{what} {directory}: a directory with no .npy files; put one .npy array of samples per "
                       "shard in it")
    return [os.path.join(directory, n) for n in names]


class ShardStack:
    """The shards of a directory as one array along the first axis, each memory-mapped and read by slices."""

    def __init__(self, directory, what):
        paths = shard_paths(directory, what)
        self.arrays = [load_array(p, what) for p in paths]
        first = self.arrays[0]
        for p, a in zip(paths, self.arrays):
            if a.ndim == 0 or a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
                raise CliError(f"{what} {p}: shape {a.shape} dtype {a.dtype} does not stack with the first shard's "
                               f"{first.shape} {first.dtype} (samples along the first axis, one dtype)")
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, rows):
        start, stop, _ = rows.indices(len(self))
        parts = [a[max(start - s, 0):stop - s] for a, s in zip(self.arrays, self.starts[:-1]) if s < stop]
        return np.concatenate([p for p in parts if len(p)] or [self.arrays[0][:0]])


def load_samples(spec, what):
    """A directory of ``.npy`` shards as a :class:`ShardStack`, else ``FILE.npy`` / ``FILE.npz[:KEY]``."""
    return ShardStack(spec, what) if os.path.isdir(spec) else load_array(spec, what)


def _dask():
    try:
        import fixq.dask as fqd
    except ImportError:
        raise CliError("--scheduler needs Dask: pip install 'fixq[dask]'") from None
    return fqd


def _client(fqd, scheduler):
    try:
        return fqd.client(scheduler)
    except OSError as e:
        raise CliError(f"--scheduler {scheduler}: cannot reach it ({' '.join(str(e).split())})") from None


def dask_ranges(g, calib, scheduler, method, options, weights, batch_size):
    """``fixq.dask.calibrate`` of `g` over the shards of directory `calib` on `scheduler` (`method` with
    `options`)."""
    if not os.path.isdir(calib):
        raise CliError(f"--scheduler reads --calib as a directory of .npy shards; {calib} is not a directory")
    fqd = _dask()
    with _client(fqd, scheduler):
        x = fqd.from_npy(shard_paths(calib, "--calib"))
        if x.dtype.kind != "f":
            raise CliError(f"input data must be float, got dtype {x.dtype}")
        return fqd.calibrate(g, x, method, batch_size=batch_size, weights=weights, method_options=options)


def run_shards(m, src, out, batch_size, threads, raw, scheduler, force, quiet):
    """Run model `m` on every shard of directory `src` whose output is not yet in directory `out` (every
    shard with `force`): ``out/NAME.npy`` for shard ``NAME.npy`` (``NAME.npz``, a key per output, for a
    model with several outputs), each written atomically; the other shards go on when one fails."""
    paths = shard_paths(src, "INPUT")
    if scheduler is not None:
        _dask()
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"-o {out}: is a file; a directory INPUT writes one output per shard into a directory")
    os.makedirs(out, exist_ok=True)
    if os.path.samefile(out, src):
        raise CliError(f"-o {out}: is the INPUT directory; the outputs are named as the shards: write them elsewhere")
    ext = ".npy" if len(m.outputs) == 1 else ".npz"
    dest = {p: os.path.join(out, os.path.splitext(os.path.basename(p))[0] + ext) for p in paths}
    todo = [p for p in paths if force or not os.path.exists(dest[p])]
    if not quiet:
        click.echo(f"{out}: {len(paths) - len(todo)} of {len(paths)} shards done already; running {len(todo)}",
                   err=True)
    failed = []
    run = _run_here if scheduler is None else _run_on_dask
    for p, ys in run(m, todo, batch_size, threads, raw, scheduler, quiet):
        if isinstance(ys, Exception):
            failed.append((p, ys))
        else:
            _write(dest[p], m, ys)
    if failed:
        p, e = failed[0]
        msg = str(e) if isinstance(e, (ValueError, TypeError, OverflowError, OSError)) else f"{type(e).__name__}: {e}"
        raise CliError(f"INPUT {p}: {msg}; {len(failed)} of {len(todo)} shards failed, the others are in "
                       f"{out}: run again to retry the missing ones")


def _write(path, m, ys):
    if len(ys) == 1:
        atomic_write(path, lambda f: np.save(f, ys[0]))
    else:
        atomic_write(path, lambda f: np.savez(f, **dict(zip(m.outputs, ys))))


def _run_here(m, paths, batch_size, threads, raw, _scheduler, quiet):
    """(path, outputs tuple or the exception) of each shard, in order, run in this process."""
    xs = {}
    for p in paths:
        x = xs[p] = load_array(p, "INPUT")
        if x.ndim == 0 or len(x) == 0:
            raise CliError(f"INPUT {p}: no samples")
        m._check_x(x[:1])
    with progressbar(sum(len(x) for x in xs.values()), "running", quiet) as bar:
        for p, x in xs.items():
            try:
                outs = [[] for _ in m.outputs]
                for b in batches(x, batch_size, bar):
                    ys = m.run(b, threads=threads, raw=raw)
                    for o, y in zip(outs, ys if isinstance(ys, tuple) else (ys,)):
                        o.append(y)
                yield p, tuple(np.concatenate(o) for o in outs)
            except Exception as e:  # reported with the others' count once every shard has run
                yield p, e


def _run_on_dask(m, paths, batch_size, threads, raw, scheduler, quiet):
    """(path, outputs tuple or the exception) of each shard as the cluster finishes it."""
    fqd = _dask()
    with _client(fqd, scheduler):
        runs = []
        for p in paths:
            x = fqd.from_npy([p])
            if x.dtype.kind != "f":
                raise CliError(f"INPUT {p}: input data must be float, got dtype {x.dtype}")
            ys = fqd.run(m, x, batch_size=batch_size, threads=threads, raw=raw)
            runs.append(ys if isinstance(ys, tuple) else (ys,))
        with progressbar(len(runs), "running shards", quiet) as bar:
            for i, ys in fqd.as_completed(runs):
                yield paths[i], ys
                bar.update(1)
