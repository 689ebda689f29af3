"""The int8 ops of a target that are not a requantized GEMM or an add/mul: the one-input activations
(each a 256-entry table), SOFTMAX, MEAN and the 8-bit requantizing QUANTIZE, dispatched to the runtime
modules (docs/conformance.md, "Activations, pools, softmax")."""
import numpy as np

from .._validate import dtype_arg, scalar_zero_point_arg
from . import _dispatch, onnxruntime, tflite, xnnpack
from ._common import f32
from ._dispatch import target_arg

TABLE_OPS = ("sigmoid", "tanh", "hardswish", "leaky_relu")
_TABLES = {"tflite": tflite.TABLES, "tflite-reference": tflite.TABLES, "xnnpack": xnnpack.TABLES}


def table(target, op, attrs, in_scale, in_zero_point, out_scale, out_zero_point, dtype=np.int8):
    """The 256-entry table of `target`'s int8/uint8 `op` (sigmoid = LOGISTIC, tanh = TANH, hardswish =
    HARD_SWISH, leaky_relu = LEAKY_RELU with ``attrs["alpha"]``) from the input to the output
    quantization, indexed by the input's byte (int8 q at ``q & 0xff``); None where `target` has no
    emulation of its own for `op` (gemmlowp, onnxruntime: the model's table applies)."""
    target_arg(target)
    if op not in TABLE_OPS:
        raise ValueError(f"op must be one of {list(TABLE_OPS)}, got {op!r}")
    fns = _TABLES.get(target)
    if fns is None:
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    s_in, s_out = float(f32(in_scale, "in_scale")), float(f32(out_scale, "out_scale"))
    zp_in = scalar_zero_point_arg(in_zero_point, dt, "in_zero_point")
    zp_out = scalar_zero_point_arg(out_zero_point, dt, "out_zero_point")
    return fns[op](dict(attrs or {}), s_in, zp_in, s_out, zp_out, dt)


def _tflite_family(target):
    """The kernel set (``"reference"`` / ``"optimized"`` / ``"xnnpack"``) of a TFLite-family target, or None."""
    return {"tflite-reference": "reference", "tflite": "optimized", "xnnpack": "xnnpack"}.get(target_arg(target))


def softmax(x, target, in_scale, beta, out_scale, out_zero_point, dtype=np.int8):
    """`target`'s 8-bit SOFTMAX over the last axis of int8/uint8 `x`: TFLite's reference fixed-point kernel,
    or its optimized float-table kernel (``tflite``, and ``xnnpack``, whose delegate takes no quantized
    SOFTMAX), or ONNX Runtime's QLinearSoftmax (``onnxruntime``, beta 1); None for a target without one."""
    kind = _tflite_family(target)
    if kind is None and target != "onnxruntime":
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    x = np.asarray(x)
    if kind is None:
        if float(np.float32(beta)) != 1.0:
            raise ValueError(f"ONNX Runtime's QLinearSoftmax has no beta; got beta={beta!r}")
        return onnxruntime.qlinear_softmax(x, f32(in_scale, "in_scale"), f32(out_scale, "out_scale"),
                                           scalar_zero_point_arg(out_zero_point, dt, "out_zero_point"), dt)
    if kind == "reference":
        return tflite.softmax_reference(x, f32(in_scale, "in_scale"), float(np.float32(beta)), dt)
    return tflite.softmax_optimized(x, f32(in_scale, "in_scale"), float(np.float32(beta)), f32(out_scale, "out_scale"),
                                    scalar_zero_point_arg(out_zero_point, dt, "out_zero_point"), dt)


def softmax_form(target, in_scale, beta, out_scale, out_zero_point, dtype=np.int8):
    """How `target` computes its 8-bit SOFTMAX (:func:`softmax`) as the engine's step takes it:
    ``{"form": "tflite-softmax", "multiplier", "shift", "diff_min"}`` (the reference kernel's fixed point)
    or ``{"form": "tflite-softmax-lut", "table", "out_scale", "out_zp"}`` (the optimized kernel's float
    table); None for a target without one, or a form the engine does not take (a negative left shift, a
    table that is not finite)."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    s_in, beta = f32(in_scale, "in_scale"), float(np.float32(beta))
    if kind == "reference":
        m, left, diff_min = tflite.softmax_reference_params(s_in, beta)
        if not 0 <= left <= 31:
            return None
        return {"form": "tflite-softmax", "multiplier": m, "shift": left, "diff_min": diff_min}
    table = tflite.softmax_table(s_in, beta)
    if not np.all(np.isfinite(table)):
        return None
    return {"form": "tflite-softmax-lut", "table": np.ascontiguousarray(table, np.float32),
            "out_scale": float(f32(out_scale, "out_scale")),
            "out_zp": scalar_zero_point_arg(out_zero_point, dt, "out_zero_point")}


def mean_hw(x, target, in_scale, in_zero_point, out_scale, out_zero_point, keep_dims=False, dtype=np.int8):
    """`target`'s MEAN of NHWC int8/uint8 `x` over H and W, as ``[N, C]``: TFLite's reference kernel, its
    optimized 4-D kernel (``tflite`` with ``keep_dims``; NEON loop in groups of 16 channels, one thread),
    or XNNPACK's float-folded convert (int8); None for a target without one."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    x = np.asarray(x)
    count = x.shape[1] * x.shape[2]
    sums = x.astype(np.int64).sum(axis=(1, 2))
    args = (sums, count, f32(in_scale, "in_scale"), scalar_zero_point_arg(in_zero_point, x.dtype, "in_zero_point"),
            f32(out_scale, "out_scale"), scalar_zero_point_arg(out_zero_point, dt, "out_zero_point"), dt)
    if kind == "xnnpack":
        return xnnpack.mean(*args)
    if kind == "optimized" and keep_dims:
        return tflite.mean_optimized(*args)
    return tflite.mean_reference(*args)


def requantize8(q, target, in_scale, in_zero_point, out_scale, out_zero_point, dtype=np.int8):
    """`target`'s QUANTIZE of int8/uint8 `q` to another 8-bit quantization (a requantization); None for a
    target without one."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    q = np.asarray(q)
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    args = (q, f32(in_scale, "in_scale"), scalar_zero_point_arg(in_zero_point, q.dtype, "in_zero_point"),
            f32(out_scale, "out_scale"), scalar_zero_point_arg(out_zero_point, dt, "out_zero_point"), dt)
    return {"reference": tflite.requantize_reference, "optimized": tflite.requantize_optimized,
            "xnnpack": xnnpack.requantize}[kind](*args)


def mean_form(target, in_scale, in_zero_point, out_scale, out_zero_point, count, channels, keep_dims=False,
              dtype=np.int8):
    """How `target` computes MEAN over H, W (:func:`mean_hw`) as the engine's global_avgpool takes it:
    ``{"form": "double", "multiplier", "shift"}`` (MBQM of the sum of q - zp_in: TFLite's reference),
    ``{"form": "tflite-mean", "multiplier", "shift", "bias", "split"}`` (MBQM of the raw sum + bias, the
    first `split` channels in NEON form) or ``{"form": "xnnpack-mean", "scale", "offset"}``; None for a
    target without its own."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    if kind == "xnnpack" and dt == np.int8:
        fs = np.float32
        inv = fs(fs(fs(in_scale) / fs(out_scale)) * fs(fs(1.0) / fs(count)))
        offset = fs(fs(out_zero_point) - fs(fs(int(count) * int(in_zero_point)) * inv))
        return {"form": "xnnpack-mean", "scale": float(inv), "offset": float(offset)}
    if kind == "optimized" and keep_dims:
        m, s, bias = tflite.mean_optimized_params(count, in_scale, in_zero_point, out_scale, out_zero_point)
        return {"form": "tflite-mean", "multiplier": m, "shift": s, "bias": bias,
                "split": channels - channels % 16}
    m, s = tflite.mean_reference_multiplier(count, in_scale, out_scale)
    return {"form": "double", "multiplier": m, "shift": s}


def requantize_form(target, in_scale, in_zero_point, out_scale, out_zero_point, size, dtype=np.int8):
    """How `target` (None: fixq's own, TFLite's reference arithmetic) requantizes an 8-bit tensor of `size`
    values a sample: ``{"form": "tflite-requantize", "multiplier", "shift", "split"}`` (MBQM of q - zp_in,
    the first `split` values in NEON form) or ``{"form": "xnnpack-requantize", "multiplier"}``."""
    kind = None if target is None else _tflite_family(target)
    ratio = np.float32(np.float32(in_scale) / np.float32(out_scale))
    if kind == "xnnpack" and np.dtype(dtype) == np.int8 and 2.0**-8 <= ratio <= 128.0:
        return {"form": "xnnpack-requantize", "multiplier": int(np.rint(np.float32(256.0) * ratio))}
    m, s = tflite.requantize_multiplier(in_scale, out_scale)
    return {"form": "tflite-requantize", "multiplier": m, "shift": s,
            "split": size - size % 16 if kind in ("optimized", "xnnpack") else 0}


def sub(a, b, target, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min=None,
        out_max=None, dtype=np.int8):
    """`target`'s 8-bit SUB of equal-shape `a` and `b` (TFLite's reference arithmetic for ``tflite`` and
    ``tflite-reference``, XNNPACK's vadd with b negated), clamped to [out_min, out_max]; None for a
    target without one."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    dt = dtype_arg(dtype, (np.int8, np.uint8), "dtype")
    info = np.iinfo(dt)
    lo = info.min if out_min is None else int(out_min)
    hi = info.max if out_max is None else int(out_max)
    fn = xnnpack.sub if kind == "xnnpack" else tflite.sub
    return fn(a, b, f32(a_scale, "a_scale"), int(a_zero_point), f32(b_scale, "b_scale"), int(b_zero_point),
              f32(out_scale, "out_scale"), int(out_zero_point), lo, hi, dt)


def binary8(op, a, b, target, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point, out_min=None,
            out_max=None):
    """`target`'s int8 ADD / SUB / MUL (`op` "add", "sub", "mul") of `a` and `b` with numpy broadcasting, axis 0
    the batch (one invocation of the kernel per sample, which places the optimized kernels' NEON loops),
    clamped to [out_min, out_max]: TFLite's reference kernels (``tflite-reference``, and SUB in ``tflite``),
    its optimized ADD / MUL with their NEON and scalar loops (``tflite``), XNNPACK's vadd / vmul / vadd with b
    negated where the delegate takes the node (``xnnpack``; TFLite's optimized kernels where it does not); None
    for a target without one."""
    kind = _tflite_family(target)
    if kind is None:
        return None
    if op not in ("add", "sub", "mul"):
        raise ValueError(f"op must be 'add', 'sub' or 'mul', got {op!r}")
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise TypeError(f"a and b must be int8, got {a.dtype} and {b.dtype}")
    s_a, s_b, s_o = f32(a_scale, "a_scale"), f32(b_scale, "b_scale"), f32(out_scale, "out_scale")
    z_a, z_b, z_o = (scalar_zero_point_arg(z, np.int8, n) for z, n in ((a_zero_point, "a_zero_point"),
                                                                      (b_zero_point, "b_zero_point"),
                                                                      (out_zero_point, "out_zero_point")))
    lo = -128 if out_min is None else int(out_min)
    hi = 127 if out_max is None else int(out_max)
    if kind == "xnnpack" and not xnnpack.binary_delegated(op, s_a, s_b, s_o):
        kind = "optimized"
    if op == "sub":
        fn = xnnpack.sub if kind == "xnnpack" else tflite.sub
    elif kind == "optimized":
        fn = tflite.add_optimized if op == "add" else tflite.mul_optimized
    else:
        fn = _dispatch.add if op == "add" else _dispatch.mul
        return fn(a, b, target, a_scale=s_a, a_zero_point=z_a, b_scale=s_b, b_zero_point=z_b, out_scale=s_o,
                  out_zero_point=z_o, out_min=lo, out_max=hi)
    return fn(a, b, s_a, z_a, s_b, z_b, s_o, z_o, lo, hi, np.int8)


def binary8_form(op, target, a_scale, b_scale, out_scale, a_zero_point, b_zero_point, out_zero_point, lo, hi):
    """Which arithmetic `target` (a LiteRT kernel set) runs for an int8 ADD / SUB / MUL of equal shapes with
    these parameters: ``"xnnpack"`` (delegated), ``"reference"`` (TFLite's reference kernels; the optimized
    SUB; the optimized ADD / MUL where their NEON loops agree with the scalar one on every input pair,
    :func:`fixq.targets.tflite.neon_agrees`) or ``"optimized"`` (the NEON and scalar loops by position)."""
    kind = _tflite_family(target)
    if kind == "xnnpack" and xnnpack.binary_delegated(op, a_scale, b_scale, out_scale):
        return "xnnpack"
    if kind == "reference" or op == "sub" or tflite.neon_agrees(op, a_scale, a_zero_point, b_scale, b_zero_point,
                                                                 out_scale, out_zero_point, lo, hi):
        return "reference"
    return "optimized"
