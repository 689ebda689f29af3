import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixq
from fixq.qparams import qrange


# (convention, dtype, symmetric, narrow, reduce) -> (qmin, qmax)
RANGES = [
    ("tflite", np.int8, False, False, False, (-128, 127)),
    ("tflite", np.int8, True, False, False, (-127, 127)),
    ("tflite", np.int8, False, True, False, (-127, 127)),
    ("tflite", np.uint8, True, False, False, (1, 255)),
    ("tflite", np.int8, False, False, True, (-64, 63)),
    ("onnxruntime", np.int8, True, False, False, (-127, 127)),
    ("onnxruntime", np.uint8, True, False, False, (0, 255)),
    ("onnxruntime", np.int8, False, False, True, (-64, 64)),
    ("onnxruntime", np.uint8, False, False, True, (0, 127)),
    ("pytorch", np.int8, True, False, False, (-128, 127)),
    ("pytorch", np.int8, False, False, True, (-64, 63)),
    ("pytorch", np.uint8, False, False, True, (0, 127)),
]


@pytest.mark.parametrize("conv,dt,sym,narrow,red,want", RANGES)
def test_qrange(conv, dt, sym, narrow, red, want):
    assert qrange(dt, sym, narrow, red, conv) == want
    qp = fixq.choose_qparams(-1.0, 1.0, dt, sym, narrow, red, convention=conv)
    assert (qp.qmin, qp.qmax) == want


def test_known_answers():
    # symmetric int8 weights: TFLite/ORT divide by 127, PyTorch by 127.5
    for conv, div in (("tflite", 127.0), ("onnxruntime", 127.0), ("pytorch", 127.5)):
        qp = fixq.choose_qparams(-2.0, 1.0, symmetric=True, convention=conv)
        assert qp.scale == np.float32(2.0 / div) and qp.zero_point == 0
    # uint8 symmetric zero points: ORT/PyTorch 128 on [0, 255]; TFLite 128 on narrow [1, 255]
    for conv in ("tflite", "onnxruntime", "pytorch"):
        assert fixq.choose_qparams(-1.0, 1.0, np.uint8, symmetric=True, convention=conv).zero_point == 128
    # affine [-1, 2] on int8: scale 3/255, zero point -128 + 85 = -43
    for conv in ("tflite", "onnxruntime", "pytorch"):
        qp = fixq.choose_qparams(-1.0, 2.0, convention=conv)
        assert qp.scale == np.float32(3.0 / 255) and qp.zero_point == -43
    # range widened to contain 0
    qp = fixq.choose_qparams(2.0, 3.0, np.uint8)
    assert qp.zero_point == 0 and qp.scale == np.float32(3.0 / 255)
    qp = fixq.choose_qparams(-3.0, -2.0, np.uint8)
    assert qp.zero_point == 255
    # a zero point of exactly 0.5: TFLite rounds half away from zero, ORT and PyTorch to even
    zps = {c: int(fixq.choose_qparams(-0.25, 127.25, np.uint8, convention=c).zero_point)
           for c in ("tflite", "onnxruntime", "pytorch")}
    assert zps == {"tflite": 1, "onnxruntime": 0, "pytorch": 0}


def test_degenerate_ranges():
    for conv in ("tflite", "onnxruntime", "pytorch"):
        for dt in (np.int8, np.uint8):
            for sym in (False, True):
                qp = fixq.choose_qparams(0.0, 0.0, dt, symmetric=sym, convention=conv)
                assert np.isfinite(qp.scale) and qp.scale > 0
                assert qp.qmin <= qp.zero_point <= qp.qmax
                q = qp.quantize(np.zeros(3, np.float32))
                assert np.all(qp.dequantize(q) == 0)
    assert fixq.choose_qparams(0.0, 0.0, convention="pytorch").scale == np.finfo(np.float32).eps
    tiny = fixq.choose_qparams(-1e-45, 1e-45)
    assert tiny.scale > 0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_channel_any_axis(axis):
    rng = np.random.default_rng(axis)
    w = rng.standard_normal((3, 4, 5)).astype(np.float32) * np.arange(1, 6, dtype=np.float32)
    others = tuple(i for i in range(3) if i != axis)
    qp = fixq.choose_qparams(w.min(axis=others), w.max(axis=others), symmetric=True, axis=axis)
    assert qp.scale.shape == (w.shape[axis],) and qp.axis == axis
    q = qp.quantize(w)
    err = np.abs(qp.dequantize(q) - w)
    shape = [1, 1, 1]
    shape[axis] = -1
    assert np.all(err <= qp.scale.reshape(shape) / 2 * (1 + 1e-6))
    obs = fixq.calibrate.make("per_channel_minmax", axis=axis).update(w)
    qp2 = obs.qparams(symmetric=True)
    np.testing.assert_array_equal(qp2.scale, qp.scale)


@settings(max_examples=60, deadline=None)
@given(lo=st.floats(-1e4, 1e4), width=st.floats(1e-3, 1e4), conv=st.sampled_from(["tflite", "onnxruntime", "pytorch"]),
       dt=st.sampled_from([np.int8, np.uint8]), sym=st.booleans(), red=st.booleans())
def test_zero_exact_and_error_bound(lo, width, conv, dt, sym, red):
    hi = lo + width
    qp = fixq.choose_qparams(lo, hi, dt, symmetric=sym, reduce_range=red, convention=conv)
    assert qp.qmin <= qp.zero_point <= qp.qmax
    assert qp.dequantize(qp.quantize(np.zeros(1, np.float32)))[0] == 0.0
    x = np.linspace(lo, hi, 257).astype(np.float32)
    # inside the representable range the round trip is within scale/2 (plus float32 rounding)
    rep_lo = (qp.qmin - int(qp.zero_point)) * float(qp.scale)
    rep_hi = (qp.qmax - int(qp.zero_point)) * float(qp.scale)
    x = x[(x >= rep_lo) & (x <= rep_hi)]
    err = np.abs(qp.dequantize(qp.quantize(x)).astype(np.float64) - x)
    assert np.all(err <= float(qp.scale) * 0.5 + np.abs(x) * 2e-7 + 1e-30)


def test_to_from_arrays():
    qp = fixq.choose_qparams(np.array([-1.0, -2.0]), np.array([3.0, 0.5]), np.uint8, axis=1)
    a = qp.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in a.values())
    qp2 = fixq.QParams.from_arrays(a)
    assert qp2.axis == 1 and qp2.dtype == np.uint8 and (qp2.qmin, qp2.qmax) == (qp.qmin, qp.qmax)
    np.testing.assert_array_equal(qp2.scale, qp.scale)
    np.testing.assert_array_equal(qp2.zero_point, qp.zero_point)
    bad = dict(a, zero_point=np.array([300, 0]))
    with pytest.raises(ValueError, match="zero_point"):
        fixq.QParams.from_arrays(bad)


def test_quantize_bias():
    q, s = fixq.quantize_bias(np.array([0.5, -0.25, 1e12], np.float32), 0.5, np.array([0.5, 0.25, 1e-3]))
    assert q.dtype == np.int32 and s.dtype == np.float32
    assert q[0] == 2 and q[1] == -2 and q[2] == 2**31 - 1
    q, _ = fixq.quantize_bias(np.array([0.125, 0.375]), 0.25, 1.0)   # ties to even: 0.5 -> 0, 1.5 -> 2
    assert list(q) == [0, 2]


@pytest.mark.parametrize("call,match", [
    (lambda: fixq.choose_qparams(1.0, -1.0), "min must not exceed max"),
    (lambda: fixq.choose_qparams(np.nan, 1.0), "min must be finite"),
    (lambda: fixq.choose_qparams(0.0, np.inf), "max must be finite"),
    (lambda: fixq.choose_qparams(np.zeros(3), np.ones(3)), "axis="),
    (lambda: fixq.choose_qparams(0.0, 1.0, axis=0), "1-D"),
    (lambda: fixq.choose_qparams(0.0, 1.0, np.int16), "dtype"),
    (lambda: fixq.choose_qparams(0.0, 1.0, convention="tensorrt"), "convention"),
    (lambda: fixq.choose_qparams(0.0, 1.0, axis=-1), "axis"),
    (lambda: fixq.quantize_bias(np.ones(3), 1.0, np.ones(2)), "weight_scale"),
    (lambda: fixq.quantize_bias(np.array([np.nan]), 1.0, 1.0), "bias"),
    (lambda: fixq.quantize_bias(np.ones(2), 0.0, 1.0), "input_scale"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_per_channel_axis_out_of_range():
    qp = fixq.choose_qparams(-np.ones(3), np.ones(3), axis=3)
    with pytest.raises(ValueError, match="axis"):
        qp.quantize(np.zeros((3, 3), np.float32))


@pytest.mark.filterwarnings("ignore:Please use quant_min")
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("red", [False, True])
def test_matches_pytorch_observer(sym, dt, red):
    torch = pytest.importorskip("torch")
    if sym and red and dt == np.uint8:
        pytest.skip("torch returns zero point 128 outside the reduced range [0, 127] (docs/quantization.md)")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1000) * 3 + 0.7).astype(np.float32)
    obs = torch.ao.quantization.MinMaxObserver(
        dtype=torch.qint8 if dt == np.int8 else torch.quint8,
        qscheme=torch.per_tensor_symmetric if sym else torch.per_tensor_affine, reduce_range=red)
    obs(torch.from_numpy(x))
    s, z = obs.calculate_qparams()
    qp = fixq.calibrate.make("minmax").update(x).qparams(dt, symmetric=sym, reduce_range=red, convention="pytorch")
    assert float(s) == float(qp.scale) and int(z) == int(qp.zero_point)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("red", [False, True])
def test_matches_onnxruntime(sym, dt, red):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
    qt = TensorProto.INT8 if dt == np.int8 else TensorProto.UINT8
    for lo, hi in ((-1.3, 2.7), (0.2, 5.0), (-7.0, -0.1), (-1e-3, 1e-3)):
        qmin, qmax = get_qmin_qmax_for_qType(qt, reduce_range=red, symmetric=sym)
        z, s = compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), qmin, qmax, symmetric=sym)
        qp = fixq.choose_qparams(np.float32(lo), np.float32(hi), dt, symmetric=sym, reduce_range=red,
                                 convention="onnxruntime")
        assert (qp.qmin, qp.qmax) == (int(qmin), int(qmax))
        assert float(s) == float(qp.scale) and int(z) == int(qp.zero_point)
