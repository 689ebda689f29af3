"""``fixq run``'s prediction files: the format comes from the suffix; every file is written to a
temporary file in its directory (see ``atomic_output``) and renamed into place."""
import contextlib
import csv
import json
import os
import zipfile

import numpy as np

from ._classes import ClassIds, report_run
from ._common import CliError, atomic_output

FORMATS = (".npy", ".npz", ".csv", ".json")


def shape_text(shape):
    """``[N, 4]`` for a tensor shape with a ``None`` batch."""
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def output_format(path):
    """The format of `path` by its suffix, or a one-line refusal naming those fixq writes."""
    fmt = os.path.splitext(path)[1].lower()
    if fmt not in FORMATS:
        raise CliError(f"{path}: cannot tell the output format from {fmt or 'a name without a suffix'}; "
                       f"name it {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    return fmt


def check_layout(path, fmt, names, shapes, argmax):
    """Refuse, in one line, a format that cannot hold the outputs `names` of `shapes` (class ids with
    `argmax`, which needs [N, C] outputs)."""
    if argmax:
        for t, shape in zip(names, shapes):
            if len(shape) != 2:
                raise CliError(f"--argmax needs [N, C] outputs and output {t!r} is {shape_text(shape)}; drop --argmax")
    if fmt in (".npy", ".csv") and len(names) > 1:
        raise CliError(f"{path}: a {fmt} file holds one output and this model has {len(names)} "
                       f"({', '.join(names)}); write .npz or .json (keyed by output name)")
    if fmt == ".csv" and not argmax and len(shapes[0]) != 2:
        raise CliError(f"{path}: a .csv file holds [N, C] rows and output {names[0]!r} is {shape_text(shapes[0])}; "
                       "write .npy, .npz or .json")


class _Writer:
    """``add(arrays)`` once per batch (one array per output, in output order), then the file is complete
    when the ``with`` block ends without an error."""

    def __init__(self, path, names, samples):
        self.path, self.names, self.samples = path, names, samples

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(exc_type is None)


class _Npy(_Writer):
    """One output streamed into a memory-mapped .npy."""
    _dst = None
    _i = 0

    def add(self, ys):
        y = ys[0]
        if self._dst is None:
            self._dst = np.lib.format.open_memmap(self.path, mode="w+", dtype=y.dtype,
                                                  shape=(self.samples,) + y.shape[1:])
            # the blocks of the whole file now: a full disk is an OSError here, not a SIGBUS in a later store
            with open(self.path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                try:
                    os.posix_fallocate(f.fileno(), 0, size)
                except OSError as e:
                    raise OSError(e.errno, f"cannot write the {size}-byte output ({e.strerror})") from None
        self._dst[self._i:self._i + len(y)] = y
        self._i += len(y)

    def close(self, complete):
        if self._dst is not None:
            if complete:
                self._dst.flush()
            self._dst = None


class _Csv(_Writer):
    """One output, a header row (``name[j]`` per column; the output name for class ids), then one row per
    sample: floats with 9 significant digits (float32 round-trips), integers as integers."""

    def __init__(self, path, names, samples):
        super().__init__(path, names, samples)
        self._f = open(path, "w", newline="")
        self._header = False

    def add(self, ys):
        y = ys[0]
        if not self._header:
            name = self.names[0]
            csv.writer(self._f).writerow([name] if y.ndim == 1 else [f"{name}[{j}]" for j in range(y.shape[1])])
            self._header = True
        np.savetxt(self._f, y.reshape(len(y), -1), fmt="%d" if y.dtype.kind in "iu" else "%.9g", delimiter=",")

    def close(self, complete):
        self._f.close()


class _Whole(_Writer):
    """Every output gathered, then written at the end by ``_write({name: array})``."""

    def __init__(self, path, names, samples):
        super().__init__(path, names, samples)
        self._parts = [[] for _ in names]

    def add(self, ys):
        for part, y in zip(self._parts, ys):
            part.append(y)

    def close(self, complete):
        if complete:
            self._write({n: np.concatenate(p) for n, p in zip(self.names, self._parts)})


class _Npz(_Whole):
    """One array per output name, as np.savez writes them (whose own parameters, ``file`` and
    ``allow_pickle``, would clash with outputs of those names)."""

    def _write(self, arrays):
        with zipfile.ZipFile(self.path, "w", allowZip64=True) as z:
            for n, a in arrays.items():
                with z.open(n + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)


class _Json(_Whole):
    """One JSON object: nested lists (class ids: a list) per output name."""

    def _write(self, arrays):
        with open(self.path, "w") as f:
            json.dump({n: a.tolist() for n, a in arrays.items()}, f)
            f.write("\n")


WRITERS = {".npy": _Npy, ".npz": _Npz, ".csv": _Csv, ".json": _Json}


@contextlib.contextmanager
def run_output(path, fmt, names, shapes, argmax, samples, quiet):
    """``fixq run``'s output file of the outputs `names` (of `shapes`) for `samples` samples, written whole or
    not at all: yields ``add(ys)``, called once per batch with the model's output (an array or a tuple of them)
    and returning it as a tuple; with `argmax`, each output's class ids (ClassIds) are written in place of its
    values.  Then the run's report on stderr (report_run)."""
    ids = [ClassIds(shape[1]) for shape in shapes] if argmax else None
    with atomic_output(path) as tmp, WRITERS[fmt](tmp, names, samples) as writer:
        def add(ys):
            ys = ys if isinstance(ys, tuple) else (ys,)
            for acc, y in zip(ids or (), ys):
                acc.add(y)
            if ids is None:
                writer.add(ys)
            return ys
        yield add
        if ids is not None:
            writer.add([acc.ids() for acc in ids])
    report_run(names, ids, path, samples, quiet)
