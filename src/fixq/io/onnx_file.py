"""Reading ONNX files: the onnx package (an optional extra) imported on first use, a model and its external
data read with every declared size bounded (fixq.graph.LIMITS) before anything is read, and external data
only from files in the model's own directory (docs/security.md)."""
import os

from .. import graph as G


class OnnxError(ValueError):
    """An ONNX model fixq cannot import (one line: the node, its op type and opset, and why)."""


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OnnxError("reading ONNX models needs the onnx package: pip install 'fixq[onnx]'") from None
    return onnx, numpy_helper


def _check_declared(t, what):
    """A TensorProto's declared dims, before its data is read: non-negative, at most LIMITS["elements"]
    values (the bound on a weight).  Returns the value count."""
    n = 1
    for d in t.dims:
        if d < 0:
            raise OnnxError(f"{what} {t.name!r}: declares dims {list(t.dims)}; dims must be >= 0")
        n *= d
    if n > G.LIMITS["elements"]:
        raise OnnxError(f"{what} {t.name!r}: declares dims {list(t.dims)}, {n} values, more than "
                        f"{G.LIMITS['elements']} (docs/security.md)")
    return n


def load_model(model):
    """An ``onnx.ModelProto`` from a path (external data files beside it load too) or a ModelProto."""
    onnx, _ = _onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise OnnxError(f"{path}: no such file")
    if os.path.isfile(path) and os.path.getsize(path) > G.LIMITS["archive_bytes"]:
        raise OnnxError(f"{path}: holds more than {G.LIMITS['archive_bytes']} bytes (docs/security.md)")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, ValueError for damaged files
        raise OnnxError(f"{path}: cannot read it as an ONNX model ({' '.join(str(e).split())[:200]})") from None
    _load_external(onnx, proto, path)
    return proto


def _load_external(onnx, proto, path):
    """The external data of `proto` (a model read from `path`), each file a regular file inside the model's
    directory (its real path, symbolic links followed), each tensor's declared dims within LIMITS, before
    anything is read."""
    from onnx import external_data_helper as ext

    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    tensors = [t for t in ext._get_all_tensors(proto) if ext.uses_external_data(t)]
    total = 0
    for t in tensors:
        total += _check_declared(t, "initializer") * 8  # no ONNX numeric type is wider than 8 bytes
        if total > G.LIMITS["archive_bytes"]:
            raise OnnxError(f"{path}: its external data declares more than {G.LIMITS['archive_bytes']} bytes "
                            "(docs/security.md)")
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        full = os.path.realpath(os.path.join(base, loc))
        if not loc or os.path.isabs(loc) or os.path.commonpath([base, full]) != base or not os.path.isfile(full):
            raise OnnxError(f"{path}: initializer {t.name!r} names external data {loc!r}; external data must be a "
                            "file in the model's own directory")
    if tensors:
        try:
            ext.load_external_data_for_model(proto, base)
        except Exception as e:  # onnx raises OSError, ValueError for a short or unreadable file
            raise OnnxError(f"{path}: cannot read its external data ({' '.join(str(e).split())[:200]})") from None
