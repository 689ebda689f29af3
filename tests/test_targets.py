"""fixq.targets beyond the golden vectors: the fused-activation clamp each runtime derives, per-axis
QUANTIZE, DequantizeLinear, and the layering of the kernels, fixq.targets and fixq.ops."""
import ast
from pathlib import Path

import numpy as np
import pytest

import fixq
from fixq import targets

TFLITE_LIKE = ("tflite", "tflite-reference", "gemmlowp")


# ---- activation_range -------------------------------------------------------------------------------

def test_relu6_exact_tie_in_float32_and_float64():
    """6 / 12 = 0.5 exactly: TFLite rounds away (1), fixq's own rule ties to even (0), as designed."""
    for target in TFLITE_LIKE:
        assert targets.activation_range("relu6", 12.0, 0, target=target) == (0, 1)
        assert targets.activation_range("relu6", 12.0, -3, target=target) == (-3, -2)
    assert targets.activation_range("relu6", 12.0, 0) == (0, 0)
    assert targets.activation_range("relu6", 12.0, 0, target="onnxruntime") == (0, 0)   # rne(0.5) = 0
    assert targets.activation_range("relu6", 12.0, 1, target="xnnpack") == (1, 2)       # rint(0.5 + 1) = 2


def test_relu6_tie_in_float32_only():
    """s = 0.24489796f: 6.0f / s is exactly 24.5 in float32 (TFLite: 25) but 24.4999998 in float64 (fixq: 24)."""
    s = np.float32(0.24489796)
    assert np.float32(6.0) / s == np.float32(24.5) and 6.0 / float(s) < 24.5
    for target in TFLITE_LIKE:
        assert targets.activation_range("relu6", s, -128, target=target) == (-128, -103)
    assert targets.activation_range("relu6", s, -128) == (-128, -104)
    assert targets.activation_range("relu6", s, -128, target="onnxruntime") == (-128, -104)
    # XNNPACK adds the zero point in float before rounding: the tie breaks by the parity of zp + 24.5
    assert targets.activation_range("relu6", s, -128, target="xnnpack") == (-128, -104)
    assert targets.activation_range("relu6", s, -127, target="xnnpack") == (-127, -102)
    assert targets.activation_range("relu6", s, 0, np.uint8, target="xnnpack") == (0, 24)


def test_fixq_rule_is_the_engines():
    """target=None keeps zp + round(6.0 / s) (float64, Python's round) clamped to the dtype: the engine's rule."""
    rng = np.random.default_rng(0)
    for s in np.concatenate([rng.uniform(1e-3, 0.2, 500), 6.0 / (np.arange(1, 300) + 0.5)]).astype(np.float32):
        zp = int(rng.integers(-128, 128))
        assert targets.activation_range("relu6", s, zp) == (zp, min(127, zp + round(6.0 / float(s))))
        assert targets.activation_range("relu", s, zp) == (zp, 127)


@pytest.mark.parametrize("target", (None,) + targets.TARGETS)
def test_activation_bounds(target):
    assert targets.activation_range(None, None, 5, target=target) == (-128, 127)
    assert targets.activation_range("none", 0.1, 5, np.uint8, target=target) == (0, 255)
    assert targets.activation_range("relu", None, -7, target=target) == (-7, 127)
    assert targets.activation_range("relu6", 0.5, 120, target=target) == (120, 127)
    assert targets.activation_range("relu_n1_to_1", 0.25, 0, target=target) == (-4, 4)
    assert targets.activation_range("relu6", 0.05, 0, np.int16, target=target) == (0, 120)
    with pytest.raises(ValueError, match="activation must be one of"):
        targets.activation_range("gelu", 0.1, 0, target=target)
    with pytest.raises(ValueError, match="needs out_scale"):
        targets.activation_range("relu6", None, 0, target=target)
    with pytest.raises(ValueError, match="out_zero_point"):
        targets.activation_range("relu", 0.1, 200, target=target)
    with pytest.raises(ValueError, match="out_scale"):
        targets.activation_range("relu6", -1.0, 0, target=target)


@pytest.mark.parametrize("target", (None,) + targets.TARGETS)
def test_activation_keyword_is_the_clamp(target):
    """activation= on every op equals out_min/out_max from activation_range; with out_min/out_max it is refused."""
    rng = np.random.default_rng(1)
    s_out = np.float32(0.24489796)
    lo, hi = targets.activation_range("relu6", s_out, -128, target=target)
    x, w = rng.integers(-128, 128, (6, 16)).astype(np.int8), rng.integers(-127, 128, (5, 16)).astype(np.int8)
    ew = dict(a_scale=0.5, a_zero_point=1, b_scale=0.25, b_zero_point=-2, out_scale=s_out, out_zero_point=-128)
    calls = [(fixq.qadd, (x, x[::-1]), ew), (fixq.qmul, (x, x[::-1]), ew)]
    if target is not None:
        g = dict(target=target, scales=(np.float32(0.05), np.float32(0.02), s_out), out_zero_point=-128)
        xc, wc = x.reshape(1, 6, 8, 2), w.reshape(5, 2, 4, 2)[:, :, :3]
        calls += [(fixq.qlinear, (x, w), g), (fixq.qmatmul, (x, w.T.copy()), g), (fixq.qconv2d, (xc, wc), g)]
    for fn, args, kw in calls:
        want = fn(*args, **kw, **({"target": target} if "target" not in kw else {}), out_min=lo, out_max=hi)
        got = fn(*args, **kw, **({"target": target} if "target" not in kw else {}), activation="relu6")
        np.testing.assert_array_equal(got, want)
        with pytest.raises(ValueError, match="not both"):
            fn(*args, **kw, **({"target": target} if "target" not in kw else {}), activation="relu", out_min=0)


def test_gemm_activation_without_target():
    x, w = np.ones((2, 3), np.int8), np.ones((4, 3), np.int8)
    y = fixq.qlinear(x, w, multiplier=1 << 30, shift=0, out_zero_point=-2, activation="relu")
    np.testing.assert_array_equal(y, fixq.qlinear(x, w, multiplier=1 << 30, shift=0, out_zero_point=-2, out_min=-2))
    with pytest.raises(ValueError, match="only from target= and scales="):
        fixq.qlinear(x, w, multiplier=1 << 30, shift=0, activation="relu6")
    with pytest.raises(ValueError, match="scales="):
        fixq.qlinear(x, w, target="tflite", activation="relu6")


# ---- per-axis QUANTIZE ------------------------------------------------------------------------------

def _reference_quantize(x, scale, zp, dtype, axis, rule):
    """numpy per channel: the division in float32, then each runtime's rounding and zero point."""
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    shape = [1] * x.ndim
    shape[axis] = -1
    s, z = scale.astype(np.float32).reshape(shape), zp.reshape(shape).astype(np.int64)
    q = (x / s).astype(np.float32).astype(np.float64)
    if rule == "away":        # std::round(x / s) + zp
        return np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5) + z, lo, hi).astype(dtype)
    if rule == "even":        # rne(x / s) + zp
        return np.clip(np.rint(q) + z, lo, hi).astype(dtype)
    v = np.clip((z.astype(np.float32) + q.astype(np.float32)).astype(np.float32), lo, hi).astype(np.float64)
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(dtype)     # gemmlowp: round(clamp(zp + x / s))


PER_AXIS_RULE = {"tflite": "away", "tflite-reference": "away", "xnnpack": "away", "onnxruntime": "even",
                 "gemmlowp": "zp-first"}


@pytest.mark.parametrize("target", targets.TARGETS)
@pytest.mark.parametrize("dtype", (np.int8, np.uint8))
@pytest.mark.parametrize("axis", (0, 1, -1))
def test_quantize_per_axis(isa, target, dtype, axis):
    rng = np.random.default_rng(3)
    x = np.empty((4, 5, 6), np.float32)
    c = x.shape[axis]
    scale = np.float32(2.0) ** rng.integers(-6, -1, c).astype(np.float32)
    zp = rng.integers(0 if dtype == np.uint8 else -20, 40, c).astype(np.int32)
    shape = [1, 1, 1]
    shape[axis] = c
    ticks = rng.integers(-300, 300, x.shape) + rng.choice([0.0, 0.5, 0.25, -0.5], x.shape)   # exact ties
    x[...] = ticks * scale.reshape(shape)
    x.reshape(-1)[::7] = rng.standard_normal(x.size)[::7].astype(np.float32)
    want = _reference_quantize(x, scale, zp, dtype, axis % 3, PER_AXIS_RULE[target])
    got = fixq.quantize(x, scale, zp, dtype, axis=axis, target=target)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    for i in range(c):   # one channel per tensor: the per-tensor recipe of the same runtime
        sl = [slice(None)] * 3
        sl[axis] = i
        per_tensor = targets.quantize(x[tuple(sl)], target, scale[i], zp[i], dtype)
        if targets.recipe(target, "quantize") == targets.recipe(target, "quantize_per_axis"):
            np.testing.assert_array_equal(got[tuple(sl)], per_tensor)


def test_tflite_per_channel_quantize_is_not_its_per_tensor_recipe():
    """TFLite's QUANTIZE multiplies by the reciprocal and ties to even per tensor, but runs the reference
    PerChannelQuantize (divide, ties away) for per-channel parameters, with and without XNNPACK."""
    x = np.float32([[2.5, -2.5, 0.5], [1.5, 3.5, -0.5]])
    ones = np.ones(3, np.float32)
    for target in ("tflite", "xnnpack"):
        np.testing.assert_array_equal(fixq.quantize(x, ones, 0, axis=1, target=target), [[3, -3, 1], [2, 4, -1]])
        np.testing.assert_array_equal(fixq.quantize(x, 1.0, 0, target=target), [[2, -2, 0], [2, 4, 0]])
        # parameters of length 1 along the axis are per tensor, as TFLite's IsQuantizedPerChannel decides
        np.testing.assert_array_equal(fixq.quantize(x, [1.0], [0], axis=0, target=target), [[2, -2, 0], [2, 4, 0]])


def test_quantize_per_axis_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="need axis="):
        fixq.quantize(x, np.ones(3, np.float32), target="tflite")
    with pytest.raises(ValueError, match="length 3"):
        fixq.quantize(x, np.ones(2, np.float32), axis=1, target="onnxruntime")
    with pytest.raises(ValueError, match="out of range"):
        fixq.quantize(x, np.ones(3, np.float32), axis=2, target="onnxruntime")
    with pytest.raises(ValueError, match="zero_point"):
        fixq.quantize(x, np.ones(3, np.float32), [0, 1, 300], axis=1, target="xnnpack")
    with pytest.raises(ValueError, match="scale"):
        fixq.quantize(x, [1.0, 0.0, 1.0], axis=1, target="tflite")
    assert fixq.quantize(np.zeros((2, 0), np.float32), np.ones(0, np.float32), np.zeros(0, np.int32), axis=1,
                         target="tflite").shape == (2, 0)


# ---- DequantizeLinear / DEQUANTIZE ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", (np.int8, np.uint8, np.int16))
def test_every_runtimes_dequantize_is_fixqs(isa, dtype):
    """ONNX Runtime and XNNPACK compute (float)(q - zp) * s in float32, TFLite (float)((double)s * (q - zp)):
    for 8- and 16-bit q the difference is exact and the double product too, so all round the same product
    once, and fixq.dequantize is each of them (per tensor and per axis)."""
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    rng = np.random.default_rng(6)
    scales = np.concatenate([rng.uniform(1e-6, 10, 40), [2.0**-20, 1e-30, 3e30, 0.1, 1 / 3]]).astype(np.float32)
    for s in scales:
        zp = int(rng.integers(info.min, info.max + 1))
        diff = q.astype(np.int64) - zp
        as_float32 = diff.astype(np.float32) * s
        as_double = (np.float64(s) * diff).astype(np.float32)
        np.testing.assert_array_equal(as_float32, as_double)
        np.testing.assert_array_equal(fixq.dequantize(q, s, zp), as_float32)
    per_axis = fixq.dequantize(q[:256].reshape(2, 128), scales[:2], np.int32([3, -5]) if dtype != np.uint8 else [3, 5],
                               axis=0)
    zps = np.int64([3, -5]) if dtype != np.uint8 else np.int64([3, 5])
    np.testing.assert_array_equal(per_axis, (q[:256].reshape(2, 128) - zps[:, None]).astype(np.float32)
                                  * scales[:2, None])


# ---- layering ----------------------------------------------------------------------------------------

SRC = Path(fixq.__file__).parent
LAYERS = [  # each may import only from its own layer (without a cycle) and those before it
    {"_core", "_validate", "layout"},
    {"arith", "gemm", "conv", "eltwise", "float_ops"},
    {"targets", "targets._common", "targets._dispatch", "targets.tflite", "targets.xnnpack", "targets.onnxruntime",
     "targets.gemmlowp", "targets._layers", "targets._fixedpoint"},
    {"ops"},
]


def _module_file(name):
    path = SRC.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(name):
    return _module_file(name).exists() or any(SRC.glob(name.replace(".", "/") + ".*.so"))


def _fixq_imports(name):
    """The fixq modules `name` imports, at module level or inside functions."""
    path = _module_file(name)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module.split(".")[0] == "fixq":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                sub = ".".join(base + [alias.name])
                found.add(sub if _is_module(sub) else ".".join(base))
        elif isinstance(node, ast.Import):
            found |= {a.name[len("fixq."):] for a in node.names if a.name.startswith("fixq.")}
            if any(a.name == "fixq" for a in node.names):
                found.add("")  # the whole package, every layer
    return found


def test_import_arrows_point_one_way():
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    graph = {m: _fixq_imports(m) for m in layer_of if _module_file(m).exists()}
    assert "_core" not in graph   # compiled
    for m, deps in graph.items():
        for d in deps:
            assert d in layer_of and layer_of[d] <= layer_of[m], f"fixq.{m} imports fixq.{d or '(package)'}"
    state = {}

    def visit(m, path):
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        if state.get(m) is None:
            state[m] = "open"
            for d in graph.get(m, ()):
                visit(d, path + [m])
            state[m] = "done"
    for m in graph:
        visit(m, [])
