"""Front-ends for other model formats (docs/architecture.md: above the model layer).

- :func:`import_onnx`: an ONNX model (a path or an ``onnx.ModelProto``) -> a validated float
  :class:`fixq.graph.Graph`, or an int8 :class:`fixq.Model` for a quantized one (docs/onnx.md).  The
  ``onnx`` package is imported only here, on first use.
"""
__all__ = ["OnnxError", "import_onnx"]


def __getattr__(name):
    # the importers load on first use, so that `import fixq` does not pay for them
    if name == "OnnxError":
        from .onnx import OnnxError
        return OnnxError
    raise AttributeError(f"module 'fixq.io' has no attribute {name!r}")


def import_onnx(model, constants=None):
    """A validated float :class:`fixq.graph.Graph` from a float ONNX model (a path or an
    ``onnx.ModelProto``), or a :class:`fixq.Model` running ONNX Runtime's arithmetic (target
    ``"onnxruntime"``) from a quantized one (QOperator or QDQ, as ORT's quantize_static writes them).

    `constants` maps names of extra graph inputs to arrays that are then treated as initializers (fixq
    models take one input).  Unsupported nodes raise :class:`OnnxError`, one line naming the node, its
    op type and opset (docs/onnx.md lists what is supported)."""
    from .onnx import import_float, load_model
    from .onnx_qmodel import import_quantized, is_quantized

    proto = load_model(model)
    if is_quantized(proto):
        return import_quantized(proto, constants)
    return import_float(proto, constants)
