"""The LiteRT golden cases of the one-input ops (tests/conformance/cases) as one-step fixq.qmodel/1
archives in the step formats a .tflite import writes, run by Model with each case's target: through the C
plan on every CPU path and through the numpy steps, bit for bit."""
from pathlib import Path

import numpy as np
import pytest

from fixq import Model, archive, targets
from fixq.quantizer import activation_table

TABLE_OP = {"logistic": "sigmoid", "tanh": "tanh", "hard_swish": "hardswish", "leaky_relu": "leaky_relu"}
OPS = tuple(TABLE_OP) + ("softmax", "mean", "requantize", "average_pool_2d", "max_pool_2d", "pad")
CASES = sorted(p for p in (Path(__file__).parent / "conformance" / "cases").glob("*.npz")
               if p.stem.split("__")[1] in OPS and not p.stem.split("__")[2].startswith("uint8io"))


def _same_padding(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _nchw(shape):
    return [None, shape[3], shape[1], shape[2]] if len(shape) == 4 else [None] + list(shape[1:])


def one_step_archive(z):
    """(meta, arrays, float input NCHW, the golden output in the model's layout) of case `z`."""
    op, x, y = str(z["op"]), z["x"], z["y"]
    s_in, zp_in = np.float32(z["x_scale"].reshape(-1)[0]), int(z["x_zero_point"].reshape(-1)[0])
    s_out, zp_out = np.float32(z["y_scale"].reshape(-1)[0]), int(z["y_zero_point"].reshape(-1)[0])
    step = {"name": "s", "inputs": ["x"], "output": "y", "act": None}
    arrays = {"t:x:scale": s_in, "t:x:zero_point": np.int32(zp_in), "t:y:scale": s_out,
              "t:y:zero_point": np.int32(zp_out)}
    want = y
    if op in TABLE_OP:
        step["op"] = TABLE_OP[op]
        if op == "leaky_relu":
            step["alpha"] = float(np.float32(z["alpha"]))
        arrays["s:table"] = activation_table(step["op"], step, s_in, zp_in, s_out, zp_out, np.int8)
    elif op == "softmax":
        step.update(op="softmax", axis=-1, beta=float(z["beta"]))
    elif op == "requantize":
        # LiteRT ran the case's batch as one tensor, whose NEON loop runs over all of it: one sample here
        step["op"] = "requantize"
        x, want = x.reshape(1, -1), y.reshape(1, -1)
    elif op == "mean":
        keep = bool(z["keep_dims"])
        step.update(op="global_avgpool", keep_dims=keep)
        real = np.float64(s_in) / (np.float64(s_out) * x.shape[1] * x.shape[2])
        import fixq
        mult, shift = fixq.quantize_multiplier(real)
        arrays.update({"s:multiplier": np.array([mult], np.int32), "s:shift": np.array([shift], np.int32),
                       "s:scale": np.array([real], np.float32)})
        want = y.reshape(y.shape[0], -1)
    elif op in ("average_pool_2d", "max_pool_2d"):
        kh, kw = (int(v) for v in z["kernel"])
        stride = int(z["stride"])
        if str(z["padding"]) == "same":
            (t, b), (left, r) = _same_padding(x.shape[1], kh, stride), _same_padding(x.shape[2], kw, stride)
        else:
            t = b = left = r = 0
        step.update(op="maxpool2d" if op == "max_pool_2d" else "avgpool2d", kernel=[kh, kw], stride=[stride, stride],
                    padding=[t, left, b, r])
        if op == "average_pool_2d":
            step["count_include_pad"] = False
    else:  # pad
        p = z["paddings"]
        step.update(op="pad", padding=[int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1])])
    meta = {"format": archive.QMODEL_FORMAT, "fixq_version": "test", "graph": {},
            "options": {"method": "minmax", "per_channel": True, "weights": "int8", "activations": "int8",
                        "dynamic": False, "rounding": "double", "method_options": {}},
            "input": "x", "input_shape": _nchw(x.shape), "outputs": ["y"],
            "tensors": {"x": _nchw(x.shape), "y": _nchw(want.shape)}, "steps": [step]}
    xf = ((x.astype(np.float32) - np.float32(zp_in)) * s_in).astype(np.float32)
    if x.ndim == 4:
        xf, want = xf.transpose(0, 3, 1, 2), want.transpose(0, 3, 1, 2) if want.ndim == 4 else want
    return meta, arrays, np.ascontiguousarray(xf), want


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_one_step_model_is_bit_exact(isa, path, tmp_path):
    z = np.load(path)
    meta, arrays, x, want = one_step_archive(z)
    archive.write_archive(tmp_path / "m.npz", meta, arrays)   # the step format passes the archive's checks
    m = Model.load(tmp_path / "m.npz", target=str(z["target"]))
    env = m.run_all(x)
    q = env["x"] if env["x"].ndim == 2 else env["x"]
    assert np.array_equal(q.reshape(-1), (z["x"] if z["x"].ndim == 2 else z["x"]).reshape(-1)), \
        "the input did not quantize back to the case's integers"
    for got in (m.run(x, raw=True), m.run(x[:1], raw=True), m.run_all(x, engine=False)["y"]):
        if got.ndim == 4 and got.shape[1:] != want.shape[1:]:
            got = got.transpose(0, 3, 1, 2)   # run_all's internal NHWC
        n = got.shape[0]
        assert got.dtype == want.dtype
        diff = np.flatnonzero(got.astype(np.int64) != want[:n].astype(np.int64))
        assert diff.size == 0, f"{diff.size} of {got.size} differ"
    assert (m._engine is not None), "the C plan refused the step"


@pytest.mark.parametrize("target", [None, "tflite-reference", "tflite", "xnnpack"])
def test_sub_step_runs_the_targets_sub(isa, target, tmp_path):
    """x -> two requantizes (a, b: their own scales and odd zero points) -> sub(a, b) with a fused relu: the
    C plan and the numpy steps give fixq.targets.sub of a and b (checked against LiteRT's SUB cases in
    test_conformance_layers.py); fixq's own (target None) is TFLite's arithmetic."""
    qp = {"x": (0.05, 3), "a": (2.0 ** -4, 3), "b": (0.0311, -5), "y": (2.0 ** -3, 1)}
    arrays = {}
    for t, (sc, zp) in qp.items():
        arrays[f"t:{t}:scale"], arrays[f"t:{t}:zero_point"] = np.float32(sc), np.int32(zp)
    steps = [{"name": "a", "op": "requantize", "inputs": ["x"], "output": "a", "act": None},
             {"name": "b", "op": "requantize", "inputs": ["x"], "output": "b", "act": None},
             {"name": "y", "op": "sub", "inputs": ["a", "b"], "output": "y", "act": "relu", "out_min": 1,
              "out_max": 127}]
    meta = {"format": archive.QMODEL_FORMAT, "fixq_version": "test", "graph": {},
            "options": {"method": "minmax", "per_channel": True, "weights": "int8", "activations": "int8",
                        "dynamic": False, "rounding": "double", "method_options": {}},
            "input": "x", "input_shape": [None, 67], "outputs": ["y"],
            "tensors": {t: [None, 67] for t in qp}, "steps": steps}
    archive.write_archive(tmp_path / "m.npz", meta, arrays)
    m = Model.load(tmp_path / "m.npz", target=target)
    x = np.random.default_rng(4).normal(0, 3, size=(9, 67)).astype(np.float32)
    env = m.run_all(x)
    want = np.maximum(targets.sub(env["a"], env["b"], target or "tflite-reference", *qp["a"], *qp["b"], *qp["y"]),
                      np.int8(1))
    np.testing.assert_array_equal(m.run(x, raw=True), want)
    np.testing.assert_array_equal(m.run_all(x, engine=False)["y"], want)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("target", ["tflite-reference", "tflite", "xnnpack"])
def test_softmax_step_equals_the_targets_softmax(isa, target, dtype, tmp_path):
    """A softmax step over the channels runs in the C plan (fixq.targets.softmax_form) and gives
    fixq.targets.softmax of its quantized input on every element: widths from 1 to 4095, input scales that
    leave most differences below the reference kernel's diff_min and ones that leave none, several betas."""
    dt = np.dtype(dtype)
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    rng = np.random.default_rng(16)
    for k, (width, s_in, beta) in enumerate([(1, 0.1, 1.0), (10, 0.0039, 1.0), (12, 0.25, 1.0), (37, 0.05, 0.5),
                                             (100, 1.7, 1.0), (1000, 0.0123, 2.0), (4095, 0.02, 1.0),
                                             (16, 1e-4, 1.0), (33, 0.9, 0.1)]):
        zp_in = int(rng.integers(lo, hi + 1))
        arrays = {"t:x:scale": np.float32(s_in), "t:x:zero_point": np.int32(zp_in),
                  "t:y:scale": np.float32(1 / 256), "t:y:zero_point": np.int32(lo)}
        step = {"name": "s", "op": "softmax", "inputs": ["x"], "output": "y", "act": None, "axis": 1, "beta": beta}
        meta = {"format": archive.QMODEL_FORMAT, "fixq_version": "test", "graph": {},
                "options": {"method": "minmax", "per_channel": True, "weights": "int8", "activations": dtype,
                            "dynamic": False, "rounding": "double", "method_options": {}},
                "input": "x", "input_shape": [None, width], "outputs": ["y"],
                "tensors": {"x": [None, width], "y": [None, width]}, "steps": [step]}
        archive.write_archive(tmp_path / f"m{k}.npz", meta, arrays)
        m = Model.load(tmp_path / f"m{k}.npz", target=target)
        assert not m._softmax, "the softmax did not run in the C plan"
        q = rng.integers(lo, hi + 1, size=(23, width))
        q[:3] = rng.integers(hi - 3, hi + 1, size=(3, width))  # rows of near-equal values
        x = ((q - zp_in) * np.float32(s_in)).astype(np.float32)
        want = targets.softmax(q.astype(dt), target, s_in, beta, 1 / 256, lo, dt)
        np.testing.assert_array_equal(m.run(x, raw=True), want)
        np.testing.assert_array_equal(m.run(x[:1], raw=True), want[:1])
        np.testing.assert_array_equal(m.run_all(x, engine=False)["y"], want)
