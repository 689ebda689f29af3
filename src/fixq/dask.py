"""Calibration and batch inference on Dask (docs/scale-out.md).

The same calls run on Dask's threads, on a local process cluster or on a remote one: whichever
scheduler is active (a ``dask.distributed.Client`` once made is the default) computes them.

- :func:`run`: a Dask array of a quantized model's outputs, one task per block of whole samples; the
  model travels to each worker once and is built once per worker process.
- :func:`calibrate`: the activation ranges of a float graph, one set of observers per block merged in
  block order (a tree of merges), equal bit for bit to one pass over the same batches; what
  ``fixq.quantize_model(g, ranges=...)`` takes.
- :func:`from_npy`: ``.npy`` files as one Dask array whose blocks the workers read themselves.
- :func:`client` and :func:`as_completed`: a ``dask.distributed`` client on a scheduler address or a local
  cluster, and results as it finishes them (what ``fixq run DIR --scheduler`` uses).

Needs the optional extra: ``pip install 'fixq[dask]'`` (dask[array] and distributed).
"""
import collections
import contextlib
import hashlib
import json
import math
import os
import threading
import uuid

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError:
    raise ImportError("fixq.dask needs Dask: pip install 'fixq[dask]'") from None

from . import calibrate as calibrators
from .engine import Model
from .quantizer import METHODS, calibrated_tensors, calibration_graph, lowbit_weights, observers

__all__ = ["run", "calibrate", "from_npy", "client", "as_completed"]


# ---------------------------------------------------------------------------------------------
# Blocks of whole batches

def _as_samples(x, name, shape):
    """`x` as a Dask array of float samples for input `name` of shape ``[None, ...]`` `shape`."""
    x = x if isinstance(x, da.Array) else da.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a float array, got dtype {x.dtype}")
    if x.ndim != len(shape) or tuple(x.shape[1:]) != tuple(shape[1:]):
        raise ValueError(f"x has shape {x.shape}; the model's input {name!r} needs "
                         f"[N, {', '.join(map(str, shape[1:]))}]")
    if math.isnan(x.shape[0]):
        raise ValueError("x has an unknown number of samples; call x.compute_chunk_sizes() first")
    if x.shape[0] == 0:
        raise ValueError(f"x has shape {x.shape}: it needs at least one sample")
    return x


def _whole_batches(x, batch_size):
    """`x` in blocks of whole samples (one chunk across every other axis) whose sizes are whole multiples
    of `batch_size` but for the last, so the blocks cut `x` into the batches a loop over it would; blocks
    that already are stay as they are."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({0: "auto", **{i: -1 for i in range(1, x.ndim)}})
    if all(c % batch_size == 0 for c in x.chunks[0][:-1]):
        return x
    n = x.shape[0]
    rows = max(1, round(max(x.chunks[0]) / batch_size)) * batch_size
    sizes = (rows,) * (n // rows) + ((n % rows,) if n % rows else ())
    return x.rechunk({0: sizes})


# ---------------------------------------------------------------------------------------------
# run

_MODELS = collections.OrderedDict()   # this process's models, by the hash of what rebuilds them
_MODELS_KEPT = 4
_MODELS_LOCK = threading.Lock()


def _payload(model):
    """``(key, meta, arrays, rounding, target)``: what rebuilds `model` in a worker; `key` is the SHA-256 of
    all of it (the archive's contents), so a worker builds each model once."""
    h = hashlib.sha256(json.dumps([model.meta, model.rounding, model.target], sort_keys=True).encode())
    for k in sorted(model.arrays):
        a = np.ascontiguousarray(model.arrays[k])
        h.update(f"\0{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data)
    return h.hexdigest(), model.meta, model.arrays, model.rounding, model.target


def _model(payload):
    """The :class:`Model` of `payload`, built once per process (the last few are kept)."""
    key, meta, arrays, rounding, target = payload
    with _MODELS_LOCK:
        m = _MODELS.get(key)
        if m is not None:
            _MODELS.move_to_end(key)
            return m
    m = Model(meta, arrays, None if target is not None else rounding, target)
    with _MODELS_LOCK:
        m = _MODELS.setdefault(key, m)
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return m


def _run_block(block, payload, batch_size, threads, raw):
    """The model's outputs (a tuple) for one block, run in batches of `batch_size` into preallocated arrays."""
    m = _model(payload)
    outs = None
    for i in range(0, len(block), batch_size):
        ys = m.run(block[i:i + batch_size], threads=threads, raw=raw)
        ys = ys if isinstance(ys, tuple) else (ys,)
        if outs is None:
            outs = tuple(np.empty((len(block),) + y.shape[1:], y.dtype) for y in ys)
        for o, y in zip(outs, ys):
            o[i:i + len(y)] = y
    return outs


def _output(outs, k):
    return outs[k]


def run(model, x, batch_size=256, threads=1, raw=False):
    """The outputs of quantized `model` (a :class:`fixq.Model` or the path of its archive) for float
    samples `x` (a Dask array, or an array Dask can wrap): a Dask array (a tuple of them for several
    outputs), equal bit for bit to ``model.run`` over `x` in batches of `batch_size`.

    `x` is rechunked, where needed, into blocks of whole samples whose sizes are multiples of `batch_size`
    but for the last (near its current chunk size); each block is one task, run in batches of `batch_size`
    on `threads` of fixq's threads: with Dask's own threads per worker, keep their product at most the
    worker's cores (docs/scale-out.md).  The model is one key of the graph (each worker receives it once) and is built
    once per worker process."""
    if not isinstance(model, Model):
        model = Model.load(os.fspath(model))
    x = _whole_batches(_as_samples(x, model.input, model.input_shape), batch_size)
    probe = model.run(np.zeros((1,) + x.shape[1:], np.float32), threads=threads, raw=raw)
    probe = probe if isinstance(probe, tuple) else (probe,)
    payload = _payload(model)
    held = dask.delayed(payload, name=f"fixq-model-{payload[0]}", traverse=False)
    drop = list(range(1, x.ndim))
    blocks = x.map_blocks(_run_block, held, batch_size, threads, raw, dtype=object, chunks=(x.chunks[0],),
                          drop_axis=drop, meta=np.empty((0,), object))
    outs = tuple(blocks.map_blocks(_output, k, chunks=(x.chunks[0],) + p.shape[1:],
                                   new_axis=list(range(1, p.ndim)), meta=np.empty((0,) * p.ndim, p.dtype))
                 for k, p in enumerate(probe))
    return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------------------------------------
# calibrate

def _observe_block(g, block, tensors, method, options, batch_size):
    batches = (block[i:i + batch_size] for i in range(0, len(block), batch_size))
    return observers(g, batches, method, tensors, **options)


def _merge_observers(method, options, *parts):
    """One observer per tensor: `parts` merged in order into new observers (the parts stay as they were,
    so a task Dask runs again finds its inputs unchanged)."""
    return {t: _merged([p[t] for p in parts], method, options) for t in parts[0]}


def _merged(obs, method, options):
    out = calibrators.make(method, **options)
    for o in obs:
        out.merge(o)
    return out


def calibrate(g, x, method="minmax", *, batch_size=256, weights="int8", method_options=None, split_every=8):
    """The (min, max) of every tensor static quantization calibrates (``fixq.quantizer.calibrated_tensors``),
    observed with `method` over float samples `x` (a Dask array, or an array Dask can wrap) fed to float
    graph `g` in batches of `batch_size`: pass it as ``fixq.quantize_model(g, ranges=..., method=method,
    weights=weights, method_options=method_options)``.

    Each block of whole batches (see :func:`run`) gets its own observers; they are merged in block order,
    `split_every` at a time, so the ranges equal bit for bit those of one pass of
    ``quantize_model(g, calib=batches)`` over the same batches, for every method.  `weights` ternary or
    binary calibrates the network those weights approximate, as ``quantize_model`` does."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    options = dict(method_options or {})
    calibrators.make(method, **options)   # options checked here, not on a worker
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an integer >= 2, got {split_every!r}")
    x = _whole_batches(_as_samples(x, g.input, g.input_shape), batch_size)
    tensors = calibrated_tensors(g)
    g_cal = calibration_graph(g, lowbit_weights(g, weights))
    held = dask.delayed(g_cal, name=f"fixq-graph-{uuid.uuid4().hex}", traverse=False)
    parts = [dask.delayed(_observe_block)(held, b, tensors, method, options, batch_size)
             for b in x.to_delayed().ravel()]
    while len(parts) > 1:
        parts = [dask.delayed(_merge_observers)(method, options, *parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    (obs,) = dask.compute(parts[0])
    return {t: tuple(float(v) for v in obs[t].range()) for t in tensors}


# ---------------------------------------------------------------------------------------------
# .npy files

class _NpyFile:
    """An ``.npy`` file that pickles as its path and reads rows (memory-mapped) where it is sliced."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        a = np.load(self.path, mmap_mode="r", allow_pickle=False)
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{path}: is not a .npy array")
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim

    def __getitem__(self, index):
        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])


def from_npy(paths, rows=None):
    """The ``.npy`` files `paths` (one dtype, one sample shape) concatenated along their first axis as one
    Dask array; each file in blocks of `rows` samples (default: Dask's ``array.chunk-size``, 128 MiB),
    each block read by the worker that needs it (memory-mapped), so the files must be at the same path on
    every worker (a shared file system)."""
    files = [_NpyFile(p) for p in paths]
    if not files:
        raise ValueError("from_npy needs at least one .npy file")
    for f in files:
        if f.ndim == 0 or f.shape[1:] != files[0].shape[1:] or f.dtype != files[0].dtype:
            raise ValueError(f"{f.path}: shape {f.shape} dtype {f.dtype} does not stack with {files[0].path}'s "
                             f"{files[0].shape} {files[0].dtype} (samples along the first axis, one dtype)")
    parts = []
    for f in files:
        st = os.stat(f.path)
        name = "fixq-npy-" + dask.base.tokenize(f.path, st.st_size, st.st_mtime_ns, rows)
        chunks = ({0: rows} if rows is not None else {0: "auto"}) | {i: -1 for i in range(1, f.ndim)}
        parts.append(da.from_array(f, chunks=chunks, name=name, meta=np.empty((0,) * f.ndim, f.dtype)))
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


# ---------------------------------------------------------------------------------------------
# distributed

@contextlib.contextmanager
def client(scheduler):
    """A ``dask.distributed.Client``, the default scheduler inside the block and closed after it, on
    `scheduler`: ``"tcp://HOST:PORT"`` (or ``tls://``), a running scheduler; ``"local"`` or ``"local:N"``, a
    cluster of N worker processes (default: one per core) of one thread each on this machine."""
    from dask.distributed import Client, LocalCluster
    kind, _, n = scheduler.partition(":")
    if scheduler.startswith(("tcp://", "tls://")):
        with Client(scheduler, timeout="10s") as c:
            yield c
    elif kind == "local" and (not n or (n.isdigit() and int(n) > 0)):
        with LocalCluster(n_workers=int(n) if n else None, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as c:
            yield c
    else:
        raise ValueError(f"scheduler {scheduler!r}: give tcp://HOST:PORT, local or local:N (N workers)")


def as_completed(collections):
    """``(i, result)`` for each of `collections` (Dask collections, or tuples of them), in the order the
    current ``dask.distributed`` client finishes them; ``(i, exception)`` for one that failed, and the
    others go on."""
    from dask.distributed import as_completed as completed, default_client
    c = default_client()
    futures = {c.compute(dask.delayed(coll)): i for i, coll in enumerate(collections)}
    for fut in completed(futures):
        try:
            result = fut.result()
        except Exception as e:  # the caller reports it; the other collections still run
            result = e
        yield futures[fut], result
