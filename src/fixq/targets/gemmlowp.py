"""gemmlowp, from its source (it has no Python runtime to record): the GEMM output stage
``OutputStageQuantizeDownInt32ByFixedPoint`` and ``doc/quantization_example.cc``'s Quantize.  gemmlowp
has no elementwise ops and no activations: the target uses TFLite's, which were built on gemmlowp's
fixed-point primitives."""
import numpy as np

from . import tflite
from ._common import AFTER, SAT, Recipe, along, round_away


def _quantize(x, scale, zero_point, dtype, axis):
    """quantization_example.cc Quantize: std::round(clamp(zp + x / scale, qmin, qmax)) in float32."""
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    q = (x / along(scale, axis, x.ndim)).astype(np.float32)
    zp = along(np.asarray(zero_point, np.float32), axis, x.ndim)
    return round_away(np.clip((zp + q).astype(np.float32), lo, hi)).astype(dtype)


GEMM = Recipe(
    "float32", "double", AFTER, SAT, "fixq",
    "OutputStageQuantizeDownInt32ByFixedPoint: RDBPOT(SRDHM(acc, M), -s) + offset; "
    "M, s = QuantizeMultiplierSmallerThanOne(s_in * s_w / s_out computed in float32)")
QUANTIZE = Recipe(
    "-", "zp-div-away", "in float32, before rounding", "clamp in float32 before rounding", "numpy",
    "std::round(clamp(zp + x / scale, qmin, qmax)) (gemmlowp doc/quantization_example.cc Quantize)", _quantize)

RECIPES = {
    "gemmlowp": dict(matmul=GEMM, conv=GEMM, depthwise_conv=GEMM, add=tflite.ADD, mul=tflite.MUL,
                     quantize=QUANTIZE, quantize_per_axis=QUANTIZE, activation=tflite.ACTIVATION),
}
