"""What the model commands share: one-line errors, safe outputs, streamed array inputs, progress bars."""
import contextlib
import functools
import json
import os
import sys

import click
import numpy as np

from .. import __version__
from ..archive import atomic_path


class CliError(Exception):
    """A user error found by the command line itself (printed as one line, exit 1)."""


def one_line_errors(fn):
    """fixq's own errors (ValueError, TypeError, OverflowError, OSError, CliError) -> ``fixq: error: ...``
    on stderr, exit 1; any other exception too, named as a fixq bug, never as a traceback.  Ctrl-C (and
    SIGTERM, which fixq.cli.main turns into it) is ``fixq: interrupted``, exit 130, once the command's
    temporary files are removed.  Click's usage errors keep exit 2; a closed stdout pipe is left to click."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:  # before click turns it into "Aborted!", exit 1
            click.echo("fixq: interrupted", err=True)
            sys.exit(130)
        except (CliError, ValueError, TypeError, OverflowError) as e:
            msg = " ".join(str(e).split())
        except BrokenPipeError:  # `fixq inspect ... | head`: click exits 1 quietly, as it does for its own output
            raise
        except OSError as e:
            msg = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else \
                e.strerror if e.strerror else " ".join(str(e).split())
        except MemoryError:
            msg = "out of memory; try a smaller --batch-size or a smaller input"
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001  (anything else is fixq's fault: say so in one line)
            msg = (f"unexpected {type(e).__name__}: {' '.join(str(e).split())} (a bug in fixq {__version__}; "
                   "please report it with the command that failed)")
        click.echo(f"fixq: error: {msg}", err=True)
        sys.exit(1)
    return wrapper


def file_of(spec):
    """The file of an array argument ``FILE.npy`` or ``FILE.npz:KEY``."""
    return spec if os.path.exists(spec) or ":" not in spec else spec.rsplit(":", 1)[0]


def check_output(out, inputs, force):
    """Refuse to write over an input, or over an existing file without --force."""
    if os.path.exists(out):
        for spec in inputs:
            src = file_of(spec) if spec else None
            if src and os.path.exists(src) and os.path.samefile(out, src):
                raise CliError(f"{out}: is also an input; write the output elsewhere")
        if not force:
            raise CliError(f"{out}: exists; pass --force to overwrite it")
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise CliError(f"{out}: directory {d} does not exist")


@contextlib.contextmanager
def atomic_output(path):
    """:func:`fixq.archive.atomic_path` for the CLI's outputs: a directory it cannot create a file in is
    one line naming the output and the directory."""
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(path))
        except OSError as e:
            raise CliError(f"{path}: {e.strerror}") from None
        yield tmp


def echo_json(obj):
    """`obj` as one line of strict JSON on stdout (NaN and infinities are refused, not written)."""
    click.echo(json.dumps(obj, allow_nan=False))


def load_array(spec, what):
    """An array from ``FILE.npy`` (memory-mapped, read lazily) or ``FILE.npz:KEY`` (or an .npz with one
    key), never unpickling."""
    path = file_of(spec)
    key = spec[len(path) + 1:] if path != spec else None
    if not os.path.exists(path):
        raise CliError(f"{what} {path}: no such file")
    try:
        obj = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/BadZipFile for damaged files
        raise CliError(f"{what} {path}: cannot read it as a numpy array ({' '.join(str(e).split())})") from None
    if isinstance(obj, np.ndarray):
        if key is not None:
            raise CliError(f"{what} {path}: is a single .npy array with no keys; drop ':{key}'")
        return obj
    with obj as z:
        if key is None:
            if len(z.files) != 1:
                raise CliError(f"{what} {path}: holds keys {z.files}; name one as {path}:KEY")
            key = z.files[0]
        if key not in z.files:
            raise CliError(f"{what} {path}: no key {key!r} (keys: {', '.join(z.files)})")
        try:
            return z[key]
        except Exception as e:
            raise CliError(f"{what} {path}: key {key!r} cannot be read ({' '.join(str(e).split())})") from None


def batches(x, batch_size, bar=None, floats=True):
    """Float batches of `x` (memory-mapped arrays are read one batch at a time); any dtype without `floats`."""
    for i in range(0, len(x), batch_size):
        b = np.asarray(x[i:i + batch_size])
        if floats and b.dtype.kind != "f":
            raise CliError(f"input data must be float, got dtype {b.dtype}")
        yield b
        if bar is not None:
            bar.update(len(b))


def progressbar(length, label, quiet):
    return click.progressbar(length=length, label=label, file=sys.stderr, hidden=quiet)
