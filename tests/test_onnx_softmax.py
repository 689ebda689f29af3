"""ONNX Runtime's QLinearSoftmax (com.microsoft), which its default session also makes of a QDQ Softmax
(DequantizeLinear -> Softmax -> QuantizeLinear): fixq's target onnxruntime equals it on every element, the
kernel alone (uint8 and int8, any scales) and in classifiers quantized by quantize_static (both formats)."""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fixq.io import import_onnx  # noqa: E402
from fixq.targets import onnxruntime as ort_target  # noqa: E402
from onnx_helpers import calib_reader, export_torch, ort_run  # noqa: E402

h = onnx.helper
# (activation dtype, output zero point, output scale): quantize_static's 1/256 and 1/255, and others
OUTPUTS = [(np.uint8, 0, 1 / 256), (np.int8, -128, 1 / 256), (np.uint8, 0, 1 / 255), (np.int8, -128, 1 / 255),
           (np.uint8, 3, 0.003), (np.int8, -100, 0.002), (np.int8, 5, 0.0013)]


def _qlinear_softmax_model(dt, d, s_in, zp_out, s_out, opset=13):
    tp = h.np_dtype_to_tensor_dtype(np.dtype(dt))
    node = h.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft", axis=-1,
                       opset=opset)
    inits = [onnx.numpy_helper.from_array(np.float32(s_in), "xs"), onnx.numpy_helper.from_array(dt(0), "xz"),
             onnx.numpy_helper.from_array(np.float32(s_out), "ys"), onnx.numpy_helper.from_array(dt(zp_out), "yz")]
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", tp, [None, d])],
                     [h.make_tensor_value_info("y", tp, [None, d])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid("com.microsoft", 1)])


def _rows(dt, n, d, seed):
    info = np.iinfo(dt)
    x = np.random.default_rng(seed).integers(info.min, info.max + 1, (n, d)).astype(dt)
    x[: n // 3] //= 16  # rows of nearby values
    x[n // 3: n // 3 + 4] = x[n // 3: n // 3 + 4, :1]  # rows of one value
    return x


@pytest.mark.parametrize("dt, zp_out, s_out", OUTPUTS, ids=[f"{np.dtype(o[0]).name}-{o[2]:.4g}" for o in OUTPUTS])
def test_qlinear_softmax_kernel_equals_ort(dt, zp_out, s_out):
    n = 0
    for s_in in (0.01, 0.05, 0.1234, 0.3, 0.7):
        for d in (3, 10, 33, 100):
            x = _rows(dt, 600, d, d)
            ref = ort_run(_qlinear_softmax_model(dt, d, s_in, zp_out, s_out), x)
            y = ort_target.qlinear_softmax(x, s_in, s_out, zp_out, dt)
            assert y.dtype == ref.dtype and np.array_equal(y, ref), f"s_in={s_in} d={d}: {(y != ref).sum()} differ"
            n += ref.size
    assert n == 5 * 600 * 146


def _classifier(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=1)).eval()
    return export_torch(m, tmp_path / "sm.onnx", (1, 8, 8))


@pytest.mark.parametrize("act", ["QUInt8", "QInt8"])
@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_quantize_static_classifier_with_softmax(tmp_path, fmt, act):
    quantization = pytest.importorskip("onnxruntime.quantization")
    src, dst = _classifier(tmp_path), str(tmp_path / f"sm_{fmt}_{act}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(src, dst, calib_reader(), quant_format=getattr(quantization.QuantFormat, fmt),
                                     activation_type=getattr(quantization.QuantType, act),
                                     weight_type=quantization.QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert ("QLinearSoftmax" in ops) == (fmt == "QOperator") and ("Softmax" in ops) == (fmt == "QDQ")
    m = import_onnx(dst)
    assert any(s.get("quantized") for s in m.steps)
    x = np.random.default_rng(5).random((64, 1, 8, 8), dtype=np.float32)
    ref = ort_run(dst, x)
    y = m.run(x)
    assert np.array_equal(y, ref), f"{(y != ref).sum()} of {ref.size} differ"
    raw = m.run(x, raw=True)
    assert np.array_equal(m.run_all(x, engine=False)[m.outputs[0]], raw)


def test_softmax_before_opset_13_over_more_than_the_last_axis_is_refused():
    node = h.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], name="qsm", domain="com.microsoft",
                       axis=1, opset=12)
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in
             (("xs", np.float32(0.1)), ("xz", np.uint8(0)), ("ys", np.float32(1 / 256)), ("yz", np.uint8(0)),
              ("s", np.float32(0.05)), ("z", np.uint8(128)))]
    nodes = [h.make_node("QuantizeLinear", ["x0", "s", "z"], ["x"]), node,
             h.make_node("DequantizeLinear", ["y", "ys", "yz"], ["out"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x0", onnx.TensorProto.FLOAT, ["N", 2, 3, 3])],
                     [h.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 12), h.make_opsetid("com.microsoft", 1)])
    from fixq.io import OnnxError
    with pytest.raises(OnnxError, match=r"node 'qsm' \(QLinearSoftmax, opset 12\): a softmax before opset 13"):
        import_onnx(model)
