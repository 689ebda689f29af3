"""fixq against golden vectors recorded from real runtimes (tests/conformance/cases, made by
tests/conformance/generate.py): every committed case, with the matching ``target``, bit for bit."""
from pathlib import Path

import numpy as np
import pytest

import fixq
from fixq import targets

OP_OF = {"fully_connected": "matmul", "qlinearmatmul": "matmul", "conv2d": "conv", "qlinearconv": "conv",
         "depthwise_conv2d": "depthwise_conv", "qlinearconv_depthwise": "depthwise_conv",
         "add": "add", "qlinearadd": "add", "mul": "mul", "qlinearmul": "mul", "quantize": "quantize",
         "matmulinteger": None}
# the cases of the ops above (file names are target__op__variant); test_conformance_layers.py runs the rest
CASES = sorted(p for p in (Path(__file__).parent / "conformance" / "cases").glob("*.npz")
               if p.stem.split("__")[1] in OP_OF)


def assert_same_as_runtime(got, want):
    """fixq's output `got` is the runtime's `want`: dtype, shape and every value (else the first that differ)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
    assert diff.size == 0, (f"{diff.size} of {want.size} values differ, first at {diff[:5]}: "
                            f"fixq {got.reshape(-1)[diff[:5]]} runtime {want.reshape(-1)[diff[:5]]}")


def _scalar(z, key):
    return np.asarray(z[key]).reshape(-1)[0]


def _binary_kwargs(z):
    keys = ("a_scale", "a_zero_point", "b_scale", "b_zero_point")
    kw = {k: _scalar(z, k) for k in keys}
    kw["out_scale"], kw["out_zero_point"] = _scalar(z, "y_scale"), int(_scalar(z, "y_zero_point"))
    return kw


def _conv_case(z):
    """(x NHWC, w OHWI, bias, geometry, back to the case's layout) of a conv or depthwise case."""
    if str(z["target"]) == "onnxruntime":               # NCHW, OIHW, pads (top, left, bottom, right)
        pt, pl, pb, pr = (int(p) for p in z["pads"])
        return (z["x"].transpose(0, 2, 3, 1), z["w"].transpose(0, 2, 3, 1), z["bias"],
                dict(stride=int(z["stride"]), padding=((pt, pb), (pl, pr)), groups=int(z["group"])),
                lambda y: y.transpose(0, 3, 1, 2))
    geometry = dict(stride=int(z["stride"]), padding=str(z["padding"]))
    if str(z["op"]) == "conv2d":                        # w: OHWI
        return z["x"], z["w"], z["bias"], geometry, lambda y: y
    # DEPTHWISE_CONV_2D: w [1, kH, kW, C * multiplier] -> OHWI, one group per input channel
    return z["x"], z["w"].transpose(3, 1, 2, 0), z["bias"], dict(geometry, groups=z["x"].shape[3]), lambda y: y


def _gemm_like(z, target, op, y):
    """Matmul, conv and depthwise cases through the public ops: fixq.qmatmul, fixq.qlinear and fixq.qconv2d,
    each with the case's target; qconv2d takes the conv recipe from the layer itself."""
    y_zp = int(_scalar(z, "y_zero_point"))
    if op == "qlinearmatmul":
        return fixq.qmatmul(z["a"], z["b"], a_zero_point=int(_scalar(z, "a_zero_point")),
                            b_zero_point=z["b_zero_point"], target=target,
                            scales=(_scalar(z, "a_scale"), z["b_scale"], _scalar(z, "y_scale")),
                            out_zero_point=y_zp, out_dtype=y.dtype)
    common = dict(a_zero_point=int(_scalar(z, "x_zero_point")), target=target, out_zero_point=y_zp,
                  scales=(_scalar(z, "x_scale"), z["w_scale"], _scalar(z, "y_scale")), out_dtype=y.dtype)
    if "activation" in z.files:                         # TFLite's fused activation
        common["activation"] = str(z["activation"])
    if op == "fully_connected":
        return fixq.qlinear(z["x"], z["w"], z["bias"], **common)
    x, w, bias, geometry, back = _conv_case(z)
    return back(fixq.qconv2d(x, w, bias, **geometry, **common))


def emulate(z):
    target, op = str(z["target"]), str(z["op"])
    y = z["y"]
    if op == "matmulinteger":
        return fixq.qmatmul(z["a"], z["b"], a_zero_point=int(_scalar(z, "a_zero_point")),
                            b_zero_point=int(_scalar(z, "b_zero_point")), out_dtype=np.int32)
    kind = OP_OF[op]
    if kind in ("matmul", "conv", "depthwise_conv"):
        return _gemm_like(z, target, op, y)
    if kind in ("add", "mul"):
        fn = fixq.qadd if kind == "add" else fixq.qmul
        return fn(z["a"], z["b"], target=target, out_dtype=y.dtype, **_binary_kwargs(z))
    return fixq.quantize(z["x"], _scalar(z, "y_scale"), int(_scalar(z, "y_zero_point")), dtype=y.dtype, target=target)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_bit_exact(isa, path):
    z = np.load(path, allow_pickle=False)
    if "exact_in_int64" in z.files and not bool(z["exact_in_int64"]):
        pytest.skip(f"runtime defect recorded on this CPU ({z['cpu']}): {z['runtime']} is not exact here")
    assert_same_as_runtime(emulate(z), z["y"])


def test_conv_cases_need_the_conv_recipe():
    """The conv and depthwise cases above run through fixq.qconv2d.  With the fully-connected recipe instead
    (what qlinear(target=) applies to im2col columns unless op= says otherwise) four of them come out wrong:
    TFLite's reference CONV_2D and both kernel sets' DEPTHWISE_CONV_2D round twice in fixed point, not as
    their FULLY_CONNECTED does."""
    wrong = []
    for path in CASES:
        z = np.load(path)
        if OP_OF.get(str(z["op"])) not in ("conv", "depthwise_conv"):
            continue
        x, w, bias, geometry, back = _conv_case(z)
        acc = fixq.qconv2d(x, w, bias, a_zero_point=int(_scalar(z, "x_zero_point")), out_dtype=np.int32, **geometry)
        y = targets.requantize(acc, str(z["target"]), "matmul", _scalar(z, "x_scale"), z["w_scale"],
                               _scalar(z, "y_scale"), int(_scalar(z, "y_zero_point")), dtype=z["y"].dtype)
        if np.any(back(y) != z["y"]):
            wrong.append(path.stem)
    assert wrong == ["tflite-reference__conv2d__pow2", "tflite-reference__depthwise_conv2d__pow2",
                     "tflite__depthwise_conv2d__pow2", "tflite__depthwise_conv2d__pow2x3"]


def test_cases_are_small_and_cover_every_target():
    assert sum(p.stat().st_size for p in CASES[0].parent.glob("*.npz")) < 2 * 1024 * 1024
    seen = {(str(np.load(p)["target"]), OP_OF.get(str(np.load(p)["op"]))) for p in CASES}
    for target in ("tflite", "tflite-reference", "xnnpack", "onnxruntime"):
        for op in targets.OPS:
            assert (target, op) in seen, (target, op)


@pytest.mark.parametrize("target", targets.TARGETS)
def test_every_target_has_a_recipe_per_op(target):
    for op in targets.OPS + ("quantize_per_axis", "activation"):
        r = targets.recipe(target, op)
        assert r.kernel in ("fixq", "numpy") and r.formula
        assert r.compute is not None or r.rounding in ("double", "fp32")   # a function, or a fixq output stage


def test_bad_target_and_op():
    with pytest.raises(ValueError, match="target must be one of"):
        targets.recipe("tensorrt", "add")
    with pytest.raises(ValueError, match="op must be one of"):
        targets.recipe("tflite", "softmax")


def test_target_keyword_rejects_explicit_output_stage():
    a = np.arange(12, dtype=np.int8).reshape(3, 4)
    b = np.ones((4, 2), np.int8)
    with pytest.raises(ValueError, match="derives multiplier"):
        fixq.qmatmul(a, b, target="tflite", scales=(0.1, 0.2, 0.3), multiplier=1 << 30)
    with pytest.raises(ValueError, match="scales="):
        fixq.qmatmul(a, b, target="xnnpack")
    with pytest.raises(ValueError, match="target must be one of"):
        fixq.qlinear(a, b.T.copy(), target="tensorrt", scales=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="leave out qmin"):
        fixq.quantize(np.zeros(3, np.float32), 0.1, target="tflite", qmin=0)


@pytest.mark.parametrize("target", targets.TARGETS)
def test_target_out_and_numpy_paths_agree_with_accumulators(isa, target):
    """qmatmul(target=) equals targets.requantize on qmatmul's exact int32 accumulators, with and without out=."""
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, size=(7, 19)).astype(np.int8)
    b = rng.integers(-127, 128, size=(19, 5)).astype(np.int8)
    bias = rng.integers(-500, 500, size=5).astype(np.int32)
    scales = (np.float32(2.0**-4), rng.uniform(0.001, 0.01, size=5).astype(np.float32), np.float32(0.05))
    acc = fixq.qmatmul(a, b, a_zero_point=-3, bias=bias, out_dtype=np.int32)
    want = targets.requantize(acc, target, "matmul", *scales, 4, out_min=-100)
    got = fixq.qmatmul(a, b, a_zero_point=-3, bias=bias, target=target, scales=scales, out_zero_point=4, out_min=-100)
    np.testing.assert_array_equal(got, want)
    out = np.empty_like(want)
    assert fixq.qmatmul(a, b, a_zero_point=-3, bias=bias, target=target, scales=scales, out_zero_point=4,
                        out_min=-100, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.fixture(scope="module")
def mlp_archive(tmp_path_factory):
    """A fixq.qmodel/1 MLP made by `fixq quantize`."""
    from click.testing import CliRunner
    from fixq.cli import cli

    d = tmp_path_factory.mktemp("target_model")
    rng = np.random.default_rng(5)
    w = {"fc1.weight": rng.standard_normal((24, 10)).astype(np.float32) / 3,
         "fc1.bias": rng.standard_normal(24).astype(np.float32) / 10,
         "fc2.weight": rng.standard_normal((6, 24)).astype(np.float32) / 3,
         "fc2.bias": rng.standard_normal(6).astype(np.float32) / 10}
    np.savez(d / "float.npz", **w)
    x = rng.standard_normal((200, 10)).astype(np.float32)
    np.save(d / "calib.npy", x[:100])
    np.save(d / "x.npy", x[100:])
    r = CliRunner().invoke(cli, ["quantize", str(d / "float.npz"), "-o", str(d / "q.npz"), "--calib",
                                 str(d / "calib.npy"), "--activation", "relu", "--quiet"])
    assert r.exit_code == 0, r.output
    return d


@pytest.mark.parametrize("target", targets.TARGETS)
def test_model_target_runs_the_targets_recipes(mlp_archive, target):
    """Model.load(target=) = the target's quantize, then qlinear(target=) layer by layer (ReLU as a clamp)."""
    m = fixq.Model.load(str(mlp_archive / "q.npz"), target=target)
    x = np.load(mlp_archive / "x.npy")
    got = m.run(x, raw=True)
    a, t = m.arrays, m.meta["tensors"]
    sc, zp = m.qparams(m.input)
    h = fixq.quantize(x, sc, zp, target=target)
    for s in m.steps:
        s_out, z_out = m.qparams(s["output"])
        h = fixq.qlinear(h, a[f"{s['name']}:weight"], a[f"{s['name']}:bias"], a_zero_point=zp, target=target,
                         scales=(sc, a[f"{s['name']}:weight_scale"], s_out), out_zero_point=z_out,
                         out_min=s.get("out_min"), out_max=s.get("out_max"))
        sc, zp = s_out, z_out
    np.testing.assert_array_equal(got, h)
    assert t  # the archive has its tensors


def test_model_target_and_rounding_are_exclusive(mlp_archive):
    with pytest.raises(ValueError, match="not both"):
        fixq.Model.load(str(mlp_archive / "q.npz"), target="xnnpack", rounding="fp32")
    with pytest.raises(ValueError, match="target must be one of"):
        fixq.Model.load(str(mlp_archive / "q.npz"), target="tensorrt")


def test_cli_target(mlp_archive):
    """`fixq quantize --target` records the target; `fixq run --target` overrides it; both run its recipes."""
    from click.testing import CliRunner
    from fixq.cli import cli

    d = mlp_archive
    x = np.load(d / "x.npy")
    r = CliRunner().invoke(cli, ["run", str(d / "q.npz"), str(d / "x.npy"), "-o", str(d / "t.npy"), "--raw",
                                 "--target", "tflite-reference", "--quiet", "--force"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(d / "t.npy"),
                                  fixq.Model.load(str(d / "q.npz"), target="tflite-reference").run(x, raw=True))
    r = CliRunner().invoke(cli, ["quantize", str(d / "float.npz"), "-o", str(d / "qx.npz"), "--calib",
                                 str(d / "calib.npy"), "--target", "xnnpack", "--activation", "relu", "--quiet"])
    assert r.exit_code == 0, r.output
    m = fixq.Model.load(str(d / "qx.npz"))
    assert m.target == "xnnpack"
    np.testing.assert_array_equal(m.run(x, raw=True),
                                  fixq.Model.load(str(d / "q.npz"), target="xnnpack").run(x, raw=True))
    r = CliRunner().invoke(cli, ["run", str(d / "q.npz"), str(d / "x.npy"), "-o", str(d / "t.npy"),
                                 "--target", "tensorrt", "--force"])
    assert r.exit_code == 2 and "tensorrt" in r.output
