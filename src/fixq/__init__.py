"""fixq: exact, fast int8 inference.

Integer results follow the declared fixed-point semantics exactly on every CPU
path (docs/arithmetic.md).  ``fixq.cpu_info()`` tells which path runs.
"""
import contextlib as _contextlib
import os as _os

from . import _core
from .arith import dequantize, multiply_by_quantized_multiplier, quantize_multiplier, requantize
from .gemm import PackedWeights, pack_weights
from .ops import qadd, qconv2d, qlinear, qmatmul, qmul, quantize
from . import calibrate, lowbit
from .lowbit import (binarize, binary_linear, fp16_linear, lowbit_qlinear, pack_fp16, popcount_linear,
                     storage_report, ternarize)
from .qparams import QParams, choose_qparams, quantize_bias
from . import targets  # target= emulation recipes (docs/conformance.md)
from .archive import ArchiveError, load_float_model
from .engine import Model  # the int8 engine (docs/engine.md)
from .quantizer import quantize_model
from .io import export_onnx, import_onnx  # ONNX models in and out (docs/onnx.md; needs the onnx extra)
from .io import import_tflite  # .tflite models in (docs/tflite.md; needs the tflite extra)

__version__ = _core.VERSION


def cpu_info():
    """The CPU paths compiled into this build, those this machine supports, and the selected one
    (FIXQ_ISA forces a path)."""
    return {
        "compiled": _core.compiled_isas(),
        "supported": _core.supported_isas(),
        "selected": _core.selected_isa(),
        "forced_by_env": _os.environ.get("FIXQ_ISA") or None,
    }


@_contextlib.contextmanager
def using_isa(name):
    """Run the block on CPU path `name` (one of ``cpu_info()["supported"]``), then restore the path
    that was selected; for tests and benchmarks.  The path is process-wide: don't switch it while
    other threads run fixq kernels."""
    before = _core.selected_isa()
    _core.select_isa(name)
    try:
        yield
    finally:
        _core.select_isa(before)


def get_include():
    """Directory holding ``fixq/fixq.h`` and ``fixq/fixq_capsule.h`` (like ``numpy.get_include()``);
    docs/embedding.md shows how C, C extensions and Cython modules use them."""
    return _os.path.join(_os.path.dirname(__file__), "include")


__all__ = [
    "__version__", "cpu_info", "using_isa", "get_include",
    "quantize_multiplier", "multiply_by_quantized_multiplier", "requantize", "quantize", "dequantize",
    "qmatmul", "qlinear", "qconv2d", "pack_weights", "PackedWeights",
    "qadd", "qmul",
    "calibrate", "QParams", "choose_qparams", "quantize_bias",
    "targets", "lowbit", "pack_fp16", "fp16_linear", "ternarize", "binarize", "popcount_linear", "binary_linear",
    "lowbit_qlinear", "storage_report",
    "Model", "quantize_model", "load_float_model", "ArchiveError", "import_onnx",
    "export_onnx", "import_tflite",
]
