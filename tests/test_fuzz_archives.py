"""Damaged and hostile model archives: ``fixq.Model.load``/``run`` raise only fixq's own errors, and the CLI
answers with one ``fixq: error:`` line and exit 1 (never a traceback); byte-level mutations, truncations and
structured edits (dropped keys, wrong dtypes and shapes, pickled object arrays, broken ``__meta__``)."""
import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixq.archive import ArchiveError
from fixq.engine import Model
from fixq.cli import cli

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
OWN_ERRORS = (ValueError, TypeError, OSError)   # fixq.ArchiveError is a ValueError


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real quantized model (a small conv + MLP graph), its bytes and arrays, and an input batch."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    w = {"fc1.weight": rng.standard_normal((16, 12)).astype(np.float32) / 3,
         "fc1.bias": rng.standard_normal(16).astype(np.float32) / 10,
         "fc2.weight": rng.standard_normal((4, 16)).astype(np.float32) / 3,
         "fc2.bias": rng.standard_normal(4).astype(np.float32) / 10}
    np.savez(d / "float.npz", **w)
    x = rng.standard_normal((64, 12)).astype(np.float32)
    np.save(d / "calib.npy", x)
    np.save(d / "x.npy", x[:5])
    r = CliRunner().invoke(cli, ["quantize", str(d / "float.npz"), "-o", str(d / "q.npz"), "--calib",
                                 str(d / "calib.npy"), "--activation", "relu", "--quiet"])
    assert r.exit_code == 0, r.output
    raw = (d / "q.npz").read_bytes()
    with np.load(d / "q.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return d, raw, arrays, x[:5]


def _check_load_and_run(path, x):
    """Load + run give a result or one of fixq's own errors with a message."""
    try:
        m = Model.load(str(path))
        m.run(x)
    except OWN_ERRORS as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"


def _check_cli(path, d):
    """`fixq inspect` and `fixq run` exit 0, or exit 1 with exactly one ``fixq: error:`` line on stderr."""
    for args in (["inspect", str(path)],
                 ["run", str(path), str(d / "x.npy"), "-o", str(d / "pred.npy"), "--force", "--quiet"]):
        r = CliRunner().invoke(cli, args)
        crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
        assert not crashed, f"fixq {args[0]} raised {type(r.exception).__name__}: {r.exception} (a traceback)"
        assert r.exit_code in (0, 1), (args[0], r.exit_code, r.output)
        if r.exit_code == 1:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("fixq: error: "), r.stderr


def _write(d, name, data):
    p = d / name
    p.write_bytes(data)
    return p


@FUZZ
@given(data=st.data())
def test_mutated_and_truncated_bytes(archive, data):
    d, raw, _, x = archive
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    b = bytearray(raw)
    if kind == "truncate":
        b = b[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= data.draw(st.integers(1, 255))
    else:
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    p = _write(d, "mut.npz", bytes(b))
    _check_load_and_run(p, x)
    _check_cli(p, d)


def _edit(arrays, data):
    """A structured edit of the archive's arrays (returns the new dict, and whether it needs pickling)."""
    a = dict(arrays)
    keys = sorted(a)
    kind = data.draw(st.sampled_from(["drop", "dtype", "shape", "object", "meta_drop", "meta_type", "meta_value",
                                      "format", "nan", "extra"]))
    meta = json.loads(str(a["__meta__"]))
    if kind == "drop":
        del a[data.draw(st.sampled_from(keys))]
    elif kind == "dtype":
        k = data.draw(st.sampled_from([k for k in keys if not k.startswith("__")]))
        with np.errstate(over="ignore", invalid="ignore"):  # the narrowing is the point of the edit
            a[k] = a[k].astype(data.draw(st.sampled_from([np.float64, np.int64, np.int8, np.uint8, np.float16])))
    elif kind == "shape":
        k = data.draw(st.sampled_from([k for k in keys if not k.startswith("__")]))
        v = a[k].reshape(-1)
        a[k] = data.draw(st.sampled_from([v[:-1] if v.size else v, np.concatenate([v, v[:1]]), v.reshape(1, -1),
                                          v[:0]]))
    elif kind == "object":
        k = data.draw(st.sampled_from(keys))
        a[k] = np.array([{"x": 1}, None], dtype=object)
        return a, True
    elif kind == "nan":
        k = data.draw(st.sampled_from([k for k in keys if a[k].dtype.kind == "f"] or keys))
        if a[k].dtype.kind == "f" and a[k].size:
            a[k] = a[k].copy()
            a[k].reshape(-1)[0] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e38]))
    elif kind == "extra":
        a[data.draw(st.sampled_from(["junk", "fc1:weight2", "__meta2__"]))] = np.zeros(3, np.float32)
    elif kind == "format":
        a["__format__"] = np.array(data.draw(st.sampled_from(["fixq.qmodel/2", "fixq.qmodel/x", "other/1", "",
                                                               "fixq.qmodel/999999999999999999999"])))
    else:
        def paths(o, pre=()):
            if isinstance(o, dict):
                for k, v in o.items():
                    yield from paths(v, pre + (k,))
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    yield from paths(v, pre + (i,))
            yield pre
        target = data.draw(st.sampled_from([p for p in paths(meta) if p]))
        parent = meta
        for k in target[:-1]:
            parent = parent[k]
        if kind == "meta_drop":
            del parent[target[-1]]
        else:
            parent[target[-1]] = data.draw(st.sampled_from(
                [None, -1, 0, 2**40, 1.5, "x", [], {}, [1, 2], True] if kind == "meta_type" else
                [parent[target[-1]] * 2 if isinstance(parent[target[-1]], (int, float)) else "",
                 [parent[target[-1]]], str(parent[target[-1]])]))
        a["__meta__"] = np.array(json.dumps(meta))
    return a, False


@FUZZ
@given(data=st.data())
def test_structured_edits(archive, data):
    d, _, arrays, x = archive
    a, pickled = _edit(arrays, data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:        # np.savez, but allowing the object arrays under test
        for k, v in a.items():
            with zf.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=pickled)
    p = _write(d, "edit.npz", buf.getvalue())
    _check_load_and_run(p, x)
    _check_cli(p, d)


def test_pickled_archive_is_refused_without_unpickling(archive, tmp_path):
    d, _, arrays, x = archive
    a = dict(arrays)
    a["__meta__"] = np.array([json.loads(str(a["__meta__"]))], dtype=object)
    np.savez(tmp_path / "p.npz", **a)
    with pytest.raises(ValueError):
        Model.load(str(tmp_path / "p.npz"))
    _check_cli(tmp_path / "p.npz", d)


@pytest.mark.parametrize("edit", ["encrypted", "compression", "version"])
def test_zip_entries_zipfile_cannot_read(archive, edit):
    """An entry flagged encrypted (RuntimeError inside zipfile), stored with a compression method
    zipfile lacks or needing a newer zip version (NotImplementedError) is a one-line 'damaged' error
    (hypothesis found the first and the last)."""
    d, raw, _, x = archive
    b = bytearray(raw)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header / central directory
        i = b.find(sig)
        if edit == "encrypted":
            b[i + off] |= 1
        elif edit == "compression":
            b[i + off + 2:i + off + 4] = (99).to_bytes(2, "little")  # AES, which zipfile cannot read
        elif sig == b"PK\x01\x02":
            b[i + 6] = 99  # "version needed to extract": 9.9
    p = _write(d, f"{edit}.npz", bytes(b))
    with pytest.raises(ValueError, match="damaged"):
        Model.load(str(p))
    _check_cli(p, d)


@pytest.mark.parametrize("shape", [[None, -4], [None, 0], [None, 4, 2], [None, 1.5], [3, 4], "x", [None, True]])
def test_meta_tensor_shape_is_checked(archive, tmp_path, shape):
    """A tensor shape in __meta__ that is not [null, features] / [null, C, H, W] with positive sizes is an
    ArchiveError naming the tensor (hypothesis found a negative size reaching the C plan's size_t)."""
    d, _, arrays, _ = archive
    a = dict(arrays)
    meta = json.loads(str(a["__meta__"]))
    name = sorted(meta["tensors"])[-1]
    meta["tensors"][name] = shape
    a["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "s.npz", **a)
    with pytest.raises(ArchiveError, match=f"tensor '{name}' has shape"):
        Model.load(str(tmp_path / "s.npz"))
    _check_cli(tmp_path / "s.npz", d)
