"""fixq against golden vectors recorded from real runtimes (tests/conformance/cases, made by
tests/conformance/generate.py): every committed case, with the matching ``target``, bit for bit."""
from pathlib import Path

import numpy as np
import pytest

from fixq import targets

CASES = sorted((Path(__file__).parent / "conformance" / "cases").glob("*.npz"))
OP_OF = {"fully_connected": "matmul", "qlinearmatmul": "matmul", "conv2d": "conv", "qlinearconv": "conv",
         "depthwise_conv2d": "depthwise_conv", "qlinearconv_depthwise": "depthwise_conv",
         "add": "add", "qlinearadd": "add", "mul": "mul", "qlinearmul": "mul", "quantize": "quantize"}


def _scalar(z, key):
    return np.asarray(z[key]).reshape(-1)[0]


def _pad_same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _patches_nhwc(x, kh, kw, stride, padding):
    """[n, oh, ow, kh, kw, c] windows of an NHWC tensor (zero padding: x already has its zero point removed)."""
    n, h, w, c = x.shape
    if padding == "same":
        oh, pt, pb = _pad_same(h, kh, stride)
        ow, pl, pr = _pad_same(w, kw, stride)
    else:
        oh, ow, pt, pb, pl, pr = (h - kh) // stride + 1, (w - kw) // stride + 1, 0, 0, 0, 0
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = np.empty((n, oh, ow, kh, kw, c), np.int64)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
    return out


def _tflite_acc(z, op):
    """int32 accumulators (bias included) in int64, and the output-channel axis."""
    x = z["x"].astype(np.int64) - int(_scalar(z, "x_zero_point"))
    w = z["w"].astype(np.int64)
    bias = z["bias"].astype(np.int64)
    if op == "fully_connected":
        return x @ w.T + bias
    stride, padding = int(z["stride"]), str(z["padding"])
    if op == "conv2d":                                     # w: OHWI
        p = _patches_nhwc(x, w.shape[1], w.shape[2], stride, padding)
        return np.einsum("nijhwc,ohwc->nijo", p, w) + bias
    mult = int(z["depth_multiplier"])                      # w: [1, kh, kw, c * mult]
    p = np.repeat(_patches_nhwc(x, w.shape[1], w.shape[2], stride, padding), mult, axis=-1)
    return np.einsum("nijhwc,hwc->nijc", p, w[0]) + bias


def _onnx_acc(z, op):
    if op == "qlinearmatmul":
        a = z["a"].astype(np.int64) - int(_scalar(z, "a_zero_point"))
        return a @ (z["b"].astype(np.int64) - z["b_zero_point"].astype(np.int64))
    x = z["x"].astype(np.int64) - int(_scalar(z, "x_zero_point"))     # NCHW, w OIHW, pads t, l, b, r
    w = z["w"].astype(np.int64)
    group, stride = int(z["group"]), int(z["stride"])
    pt, pl, pb, pr = (int(v) for v in z["pads"])
    p = _patches_nhwc(np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (pt, pb), (pl, pr), (0, 0))),
                      w.shape[2], w.shape[3], stride, "valid")
    o, cg = w.shape[0], w.shape[1]
    og = o // group
    acc = np.concatenate([np.einsum("nijhwc,ochw->nijo", p[..., g * cg:(g + 1) * cg], w[g * og:(g + 1) * og])
                          for g in range(group)], axis=-1)
    return (acc + z["bias"].astype(np.int64)).transpose(0, 3, 1, 2)


def _binary_kwargs(z):
    keys = ("a_scale", "a_zero_point", "b_scale", "b_zero_point")
    kw = {k: _scalar(z, k) for k in keys}
    kw["out_scale"], kw["out_zero_point"] = _scalar(z, "y_scale"), int(_scalar(z, "y_zero_point"))
    return kw


def emulate(z):
    target, op = str(z["target"]), str(z["op"])
    y = z["y"]
    if op == "matmulinteger":
        a = z["a"].astype(np.int64) - int(_scalar(z, "a_zero_point"))
        return (a @ (z["b"].astype(np.int64) - int(_scalar(z, "b_zero_point")))).astype(np.int32)
    kind = OP_OF[op]
    if kind in ("matmul", "conv", "depthwise_conv"):
        if target == "onnxruntime":
            acc = _onnx_acc(z, op)
            in_scale = z["a_scale"] if op == "qlinearmatmul" else z["x_scale"]
            w_scale = z["b_scale"] if op == "qlinearmatmul" else z["w_scale"]
            axis = -1 if op == "qlinearmatmul" else 1
            out_min = None
        else:
            acc = _tflite_acc(z, op)
            in_scale, w_scale, axis = z["x_scale"], z["w_scale"], -1
            out_min = int(_scalar(z, "y_zero_point")) if str(z["activation"]) == "relu" else None
        assert np.abs(acc).max() < 2**31
        return targets.requantize(acc.astype(np.int32), target, kind, np.asarray(in_scale).reshape(-1)[0],
                                  np.asarray(w_scale).reshape(-1), _scalar(z, "y_scale"),
                                  int(_scalar(z, "y_zero_point")), out_min=out_min, dtype=y.dtype, axis=axis)
    if kind in ("add", "mul"):
        fn = targets.add if kind == "add" else targets.mul
        return fn(z["a"], z["b"], target, out_dtype=y.dtype, **_binary_kwargs(z))
    return targets.quantize(z["x"], target, _scalar(z, "y_scale"), int(_scalar(z, "y_zero_point")), dtype=y.dtype)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_bit_exact(path):
    z = np.load(path, allow_pickle=False)
    if "exact_in_int64" in z.files and not bool(z["exact_in_int64"]):
        pytest.skip(f"runtime defect recorded on this CPU ({z['cpu']}): {z['runtime']} is not exact here")
    got = emulate(z)
    want = z["y"]
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
    assert diff.size == 0, (f"{diff.size} of {want.size} values differ, first at {diff[:5]}: "
                            f"fixq {got.reshape(-1)[diff[:5]]} runtime {want.reshape(-1)[diff[:5]]}")


def test_cases_are_small_and_cover_every_target():
    assert sum(p.stat().st_size for p in CASES) < 2 * 1024 * 1024
    seen = {(str(np.load(p)["target"]), OP_OF.get(str(np.load(p)["op"]))) for p in CASES}
    for target in ("tflite", "tflite-reference", "xnnpack", "onnxruntime"):
        for op in targets.OPS:
            assert (target, op) in seen, (target, op)


@pytest.mark.parametrize("target", targets.TARGETS)
def test_every_target_has_a_recipe_per_op(target):
    for op in targets.OPS:
        r = targets.recipe(target, op)
        assert r.kernel in ("fixq", "numpy") and r.formula


def test_bad_target_and_op():
    with pytest.raises(ValueError, match="target must be one of"):
        targets.recipe("tensorrt", "add")
    with pytest.raises(ValueError, match="op must be one of"):
        targets.recipe("tflite", "softmax")
