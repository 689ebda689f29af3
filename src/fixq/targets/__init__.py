"""Emulation targets: the exact requantization each runtime applies, per op.

``target=`` names a runtime; each (target, op) maps to a :class:`Recipe` that
says how that runtime derives its multiplier (double or float32 arithmetic),
how it rounds (each step's tie rule), where it adds the zero point and how it
clamps.  The recipes were read off the runtimes themselves (golden vectors in
tests/conformance/, made by tests/conformance/generate.py) and checked against
their sources; docs/conformance.md has one table per target.

One module per runtime holds its table of recipes and the exact numpy
arithmetic only that runtime needs: :mod:`.tflite` (``tflite``,
``tflite-reference``), :mod:`.xnnpack`, :mod:`.onnxruntime`, :mod:`.gemmlowp`.
Where a recipe is one of fixq's kernel modes (``rounding="double"|"fp32"``,
float32 ``quantize``) the call goes through the C kernels (fixq.arith,
fixq.gemm, fixq.eltwise), which this package sits above; the public ops that
take ``target=`` (fixq.ops) sit above it.
"""
from ._common import Recipe
from ._common import product_scale
from ._dispatch import (ACTIVATIONS, OPS, TARGETS, activation_range, add, gemm_out_stage, mul, qgemm, quantize,
                        mean_stage, real_multiplier, recipe, requantize, target_arg)
from ._layers import (TABLE_OPS, binary8, binary8_form, mean_form, mean_hw, requantize8, requantize_form, softmax,
                      softmax_form, sub, table)

__all__ = ["TARGETS", "OPS", "ACTIVATIONS", "Recipe", "recipe", "target_arg", "gemm_out_stage", "requantize", "qgemm",
           "add", "mul", "quantize", "activation_range", "real_multiplier", "product_scale", "mean_stage",
           "TABLE_OPS", "table", "softmax", "softmax_form", "mean_hw", "mean_form", "requantize8", "requantize_form", "sub",
           "binary8", "binary8_form"]
