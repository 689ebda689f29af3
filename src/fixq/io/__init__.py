"""Front-ends for other model formats (docs/architecture.md: above the model layer).

- :func:`import_onnx`: an ONNX model (a path or an ``onnx.ModelProto``) -> a validated float
  :class:`fixq.graph.Graph` (docs/onnx.md).  The ``onnx`` package is imported only here, on first use.
"""
from .onnx import OnnxError, import_onnx

__all__ = ["OnnxError", "import_onnx"]
