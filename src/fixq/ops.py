"""The public quantized ops that take ``target=`` and ``activation=``: :func:`quantize`,
:func:`qmatmul`, :func:`qlinear`, :func:`qconv2d`, :func:`qadd`, :func:`qmul`.

Without them each call is its kernel in fixq.arith / fixq.gemm / fixq.conv / fixq.eltwise: qmatmul,
qlinear, qadd and qmul call the same inner function as their kernels, so a plain call is no deeper
than a kernel call.  ``target=`` runs that runtime's recipe instead
(fixq.targets); ``activation=`` turns a fused activation into the output clamp, quantizing its
bounds as fixq or the target does (:func:`fixq.targets.activation_range`).  This module sits above
both the kernels and fixq.targets, so neither of them imports the other's caller.
"""
import numpy as np

from . import targets
from .arith import quantize as _quantize
from .conv import qconv2d as _qconv2d
from .eltwise import _binary, qadd as _qadd, qmul as _qmul
from .gemm import _qgemm, qlinear as _qlinear, qmatmul as _qmatmul
from .targets._dispatch import _GEMM_OPS, scales_arg

__all__ = ["quantize", "qmatmul", "qlinear", "qconv2d", "qadd", "qmul"]


def quantize(x, scale, zero_point=0, dtype=np.int8, axis=None, *, qmin=None, qmax=None, out=None, target=None):
    """Float to int8/uint8/int16: ``saturate(round_half_even(x / scale) + zero_point)``,
    computed in float32 (ONNX QuantizeLinear).  Per-tensor, or one scale and zero point per
    index of ``axis``.  NaN is an error.

    ``target=`` (int8/uint8 output) quantizes exactly as that runtime does, per tensor or per
    axis (``fixq.targets.quantize``; docs/conformance.md).  The runtimes saturate to the full
    range of ``dtype``: leave ``qmin``, ``qmax`` and ``out`` out."""
    if target is None:
        return _quantize(x, scale, zero_point, dtype, axis, qmin, qmax, out)
    if qmin is not None or qmax is not None or out is not None:
        raise ValueError("quantize(target=...) saturates to the full dtype range as the runtimes do: leave out qmin, "
                         "qmax and out")
    return targets.quantize(x, target, scale, zero_point, dtype, axis)


def qmatmul(a, b, *, a_zero_point=0, b_zero_point=0, bias=None, multiplier=None, shift=None, scale=None,
            out_zero_point=0, out_min=None, out_max=None, out_dtype=np.int8, rounding="double", threads=1,
            out=None, target=None, scales=None, op=None, activation=None):
    """``a @ b`` for int8/uint8 ``a [..., M, K]`` and ``b [K, N]`` (or :class:`PackedWeights`).

    ``acc = sum_k (a - a_zero_point)(b - b_zero_point[n]) + bias[n]`` in exact int32;
    ``out_dtype=np.int32`` returns ``acc`` (ONNX MatMulInteger).  Otherwise ``acc``
    is requantized as by :func:`fixq.requantize`: ``rounding="double"|"single"``
    with ``multiplier``/``shift``, ``"fp32"`` with ``scale``, per tensor or per
    column, then ``out_zero_point`` is added and the result clamped to
    ``[out_min, out_max]`` (a fused ReLU is a clamp).  ``threads`` splits the
    work; the GIL is released throughout.

    ``target="tflite"|"tflite-reference"|"xnnpack"|"onnxruntime"|"gemmlowp"`` with
    ``scales=(a_scale, b_scale, out_scale)`` requantizes exactly as that runtime
    does (``fixq.targets``, docs/conformance.md) instead of taking
    ``multiplier``/``shift``/``scale``/``rounding``.  ``op`` names the runtime op
    whose recipe applies: ``"matmul"`` (None, the default: FULLY_CONNECTED,
    MatMul, QLinearMatMul), or ``"conv"`` / ``"depthwise_conv"`` for a
    convolution computed as a matrix product (:func:`fixq.qconv2d` picks it
    from the layer itself).

    ``activation="relu"|"relu6"|"relu_n1_to_1"|"none"`` sets ``out_min`` /
    ``out_max`` (pass one or the other) from the output scale and zero point,
    as the target or, without one, fixq quantizes the activation's bounds
    (:func:`fixq.targets.activation_range`).  Bounds other than 0 need the
    output scale, which this function has only from ``scales=``.
    """
    if target is None and activation is None and op is None:
        return _qgemm("qmatmul", "a", "b", "matmul", a, b, a_zero_point, b_zero_point, bias, multiplier, shift, scale,
                      out_zero_point, out_min, out_max, out_dtype, rounding, threads, out)
    return _gemm("qmatmul", _qmatmul, a, b, target, scales, _gemm_op("qmatmul", op), activation, out, dict(
        a_zero_point=a_zero_point, b_zero_point=b_zero_point, bias=bias, multiplier=multiplier, shift=shift,
        scale=scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype,
        rounding=rounding, threads=threads))


def qlinear(x, w, bias=None, *, a_zero_point=0, b_zero_point=0, multiplier=None, shift=None, scale=None,
            out_zero_point=0, out_min=None, out_max=None, out_dtype=np.int8, rounding="double", threads=1,
            out=None, target=None, scales=None, op=None, activation=None):
    """A Linear/FC layer: :func:`qmatmul` with ``w`` in ``[N, K]`` layout (``y = x @ w.T + bias``),
    ``target``, ``scales``, ``op`` and ``activation`` included."""
    if target is None and activation is None and op is None:
        return _qgemm("qlinear", "x", "w", "linear", x, w, a_zero_point, b_zero_point, bias, multiplier, shift, scale,
                      out_zero_point, out_min, out_max, out_dtype, rounding, threads, out)
    return _gemm("qlinear", _qlinear, x, w, target, scales, _gemm_op("qlinear", op), activation, out, dict(
        bias=bias, a_zero_point=a_zero_point, b_zero_point=b_zero_point, multiplier=multiplier, shift=shift,
        scale=scale, out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype,
        rounding=rounding, threads=threads))


def qconv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, a_zero_point=0, b_zero_point=0,
            multiplier=None, shift=None, scale=None, out_zero_point=0, out_min=None, out_max=None, out_dtype=np.int8,
            rounding="double", threads=1, out=None, target=None, scales=None, op=None, activation=None):
    """2-D convolution of NHWC int8/uint8 ``x [N, H, W, C]`` with int8/uint8 weights
    ``w [O, kH, kW, C / groups]`` (OHWI, as TFLite's CONV_2D holds them; from PyTorch's or ONNX's
    ``[O, C / groups, kH, kW]``: ``w.transpose(0, 2, 3, 1)``; from TFLite's DEPTHWISE_CONV_2D
    ``[1, kH, kW, O]``: ``w.transpose(3, 1, 2, 0)``), giving ``[N, OH, OW, O]``.

    ``stride`` and ``dilation``: an int or ``(h, w)``.  ``padding``: ``"valid"``, ``"same"``
    (TF SAME / ONNX SAME_UPPER: an odd padding puts the extra row and column after), an int,
    ``(pad_h, pad_w)``, or ``((top, bottom), (left, right))``; padded with ``a_zero_point``.
    ``groups == C`` is a depthwise conv (channel ``c`` feeds outputs ``c * O / C`` up to
    ``(c + 1) * O / C``, TFLite's depth multiplier order).  The accumulators are exact int32; the
    output stage, ``out``, ``threads``, ``target``, ``scales`` and ``activation`` are those of
    :func:`fixq.qmatmul`, per output channel.

    With ``target=`` the recipe is the runtime's CONV_2D (``op="conv"``) or DEPTHWISE_CONV_2D
    (``"depthwise_conv"``), taken from the layer: depthwise when ``groups == C > 1``.  A conv with
    one input channel is either; ``op=`` must say which where the target rounds them differently.
    """
    kw = dict(bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups, a_zero_point=a_zero_point,
              b_zero_point=b_zero_point, multiplier=multiplier, shift=shift, scale=scale,
              out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype, rounding=rounding,
              threads=threads)
    return _gemm("qconv2d", _qconv2d, x, w, target, scales, _conv_op(x, groups, op, target), activation, out, kw)


def qadd(a, b, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min=None,
         out_max=None, out_dtype=np.int8, rounding="double", out=None, target=None, activation=None):
    """Quantized ``a + b`` with numpy broadcasting; int8 or uint8 in and out.

    ``rounding="double"`` (default) / ``"single"``: TFLite int8 ADD (inputs
    ``(x - zp) << 20`` rescaled by ``s_x / (2 max(s_a, s_b))``, summed, rescaled
    by ``2 max(s_a, s_b) / (2**20 s_out)``, each multiplier applied with that
    rounding).  ``"fp32"``: ``((a - za) * s_a + (b - zb) * s_b) / s_out`` in
    float32, rounded half to even.  Then ``+ out_zero_point``, clamped to
    ``[out_min, out_max]`` (default: the dtype's range).  ``out`` may be ``a``
    or ``b``.  ``target=`` computes it exactly as that runtime does instead of
    `rounding` (``fixq.targets.add``).  ``activation=`` sets ``out_min`` /
    ``out_max`` as in :func:`fixq.qmatmul`.
    """
    if target is None and activation is None:
        return _binary("add", a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
                       out_min, out_max, out_dtype, rounding, out)
    return _eltwise("qadd", _qadd, targets.add, a, b, target, activation, out, rounding, dict(
        a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point, out_scale=out_scale,
        out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype))


def qmul(a, b, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min=None,
         out_max=None, out_dtype=np.int8, rounding="double", out=None, target=None, activation=None):
    """Quantized ``a * b`` with numpy broadcasting; int8 or uint8 in and out.

    ``rounding="double"`` / ``"single"``: TFLite int8 MUL,
    ``MBQM((a - za) * (b - zb), M)`` with ``M = s_a s_b / s_out``.  ``"fp32"``:
    ``((a - za) * s_a) * ((b - zb) * s_b) / s_out`` in float32, rounded half to
    even.  Zero point, clamp, ``out``, ``target`` and ``activation`` as in
    :func:`qadd` (``fixq.targets.mul``).
    """
    if target is None and activation is None:
        return _binary("mul", a, b, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
                       out_min, out_max, out_dtype, rounding, out)
    return _eltwise("qmul", _qmul, targets.mul, a, b, target, activation, out, rounding, dict(
        a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point, out_scale=out_scale,
        out_zero_point=out_zero_point, out_min=out_min, out_max=out_max, out_dtype=out_dtype))


def _gemm_op(fn, op):
    if op is None:
        return "matmul"
    if op not in _GEMM_OPS:
        raise ValueError(f"{fn}: op must be one of {list(_GEMM_OPS)} (the runtime op whose recipe applies), got {op!r}")
    return op


def _conv_op(x, groups, op, target):
    """The runtime op of a conv layer: ``"depthwise_conv"`` when groups == C > 1, else ``"conv"``;
    a one-channel conv is either, so ``op=`` must say which where `target`'s recipes differ."""
    c = np.shape(x)[3] if np.ndim(x) == 4 else None
    if op is not None:
        if op not in ("conv", "depthwise_conv"):
            raise ValueError(f"qconv2d: op must be 'conv' or 'depthwise_conv', got {op!r}")
        if op == "depthwise_conv" and c is not None and groups != c:
            raise ValueError(f"qconv2d: op='depthwise_conv' needs groups = C = {c}, got groups={groups!r}")
        return op
    if c != 1:
        return "depthwise_conv" if groups == c else "conv"
    if target is not None and targets.recipe(target, "conv") != targets.recipe(target, "depthwise_conv"):
        raise ValueError(f"qconv2d: with one input channel the layer is a conv or a depthwise conv, and "
                         f"target={target!r} rounds the two differently: pass op='conv' (CONV_2D) or "
                         "op='depthwise_conv' (DEPTHWISE_CONV_2D)")
    return "conv"


def _gemm(fn, kernel, a, b, target, scales, op, activation, out, kw):
    """`kernel` (fixq.gemm's or fixq.conv's) with `activation`'s clamp and `target`'s output stage."""
    if activation is not None:
        out_scale = None if target is None else scales_arg(scales)[2]
        kw["out_min"], kw["out_max"] = _clamp(fn, activation, out_scale, kw["out_zero_point"], kw["out_dtype"], target,
                                              kw["out_min"], kw["out_max"])
    if target is None:
        return kernel(a, b, out=out, **kw)
    if kw["rounding"] == "double":  # the default: target= derives the rounding
        kw["rounding"] = None
    return targets.qgemm(kernel, a, b, target=target, scales=scales, op=op, out=out, **kw)


def _eltwise(fn, kernel, target_fn, a, b, target, activation, out, rounding, kw):
    """`kernel` (fixq.eltwise's) or `target_fn` (fixq.targets') with `activation`'s clamp."""
    if activation is not None:
        kw["out_min"], kw["out_max"] = _clamp(fn, activation, kw["out_scale"], kw["out_zero_point"], kw["out_dtype"],
                                              target, kw["out_min"], kw["out_max"])
    if target is None:
        return kernel(a, b, rounding=rounding, out=out, **kw)
    return target_fn(a, b, target, out=out, **kw)


def _clamp(fn, activation, out_scale, out_zero_point, out_dtype, target, out_min, out_max):
    """(out_min, out_max) of `activation`; refuses out_min/out_max beside it."""
    if out_min is not None or out_max is not None:
        raise ValueError(f"{fn}: activation= sets out_min and out_max from the output scale and zero point: pass "
                         "activation= or out_min/out_max, not both")
    try:
        return targets.activation_range(activation, out_scale, out_zero_point, out_dtype, target)
    except ValueError as e:
        if out_scale is not None or activation not in targets.ACTIVATIONS:
            raise
        raise ValueError(f"{fn}: {e}, which {fn} has only from target= and scales=; without a target pass "
                         f"out_min/out_max from fixq.targets.activation_range({activation!r}, out_scale, "
                         "out_zero_point)") from None
