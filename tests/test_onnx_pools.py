"""ORT's QLinearAveragePool (com.microsoft) and the QDQ AveragePool ORT fuses into it: imported as
avgpool2d steps that run ORT's arithmetic (fixq.targets.onnxruntime.qlinear_avgpool: float32 sums, the
zero point added before rounding; the global-average fallback over a whole image), bit-exact with ORT."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import fixq  # noqa: E402
from onnx_helpers import ort_run  # noqa: E402

h = onnx.helper

GEOMETRIES = [dict(kernel_shape=[2, 2], strides=[2, 2]), dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                                                             count_include_pad=1),
              dict(kernel_shape=[3, 2], strides=[2, 1]), dict(kernel_shape=[7, 6], strides=[1, 1])]


def _model(form, dt, geo, qi, qo):
    (si, zi), (so, zo) = qi, qo
    inits = [onnx.numpy_helper.from_array(np.float32(si), "si"), onnx.numpy_helper.from_array(np.array(dt(zi)), "zi"),
             onnx.numpy_helper.from_array(np.float32(so), "so"), onnx.numpy_helper.from_array(np.array(dt(zo)), "zo")]
    if form == "QOperator":
        pool = [h.make_node("QLinearAveragePool", ["q", "si", "zi", "so", "zo"], ["qy"], domain="com.microsoft",
                            name="pool", **geo)]
    else:
        pool = [h.make_node("DequantizeLinear", ["q", "si", "zi"], ["dq"]),
                h.make_node("AveragePool", ["dq"], ["f"], name="pool", **geo),
                h.make_node("QuantizeLinear", ["f", "so", "zo"], ["qy"])]
    nodes = [h.make_node("QuantizeLinear", ["x", "si", "zi"], ["q"])] + pool + [
        h.make_node("DequantizeLinear", ["qy", "so", "zo"], ["y"])]
    return h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                           ["N", 5, 7, 6])],
                                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits),
                        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("geo", GEOMETRIES, ids=["2x2s2", "3x3p1", "3x2s21", "global"])
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("form", ["QOperator", "QDQ"])
def test_average_pool_bit_exact_with_ort(form, dt, geo):
    info = np.iinfo(dt)
    rng = np.random.default_rng(3)
    for trial in range(4):
        qi = (np.float32(rng.uniform(0.01, 0.05)), int(rng.integers(info.min, info.max + 1)))
        # the same quantization in and out (fixq-quantized models), then different ones
        qo = qi if trial == 0 else (np.float32(rng.uniform(0.005, 0.05)), int(rng.integers(info.min, info.max + 1)))
        model = _model(form, dt, geo, qi, qo)
        m = fixq.import_onnx(model)
        assert [s["op"] for s in m.steps] == ["avgpool2d"]
        x = ((rng.integers(info.min, info.max + 1, size=(64, 5, 7, 6)) - qi[1]) * qi[0]).astype(np.float32)
        x[0] = (np.arange(x[0].size) % 2 * (info.max - qi[1]) * qi[0]).reshape(x[0].shape)  # ties
        np.testing.assert_array_equal(m.run(x), ort_run(model, x), err_msg=f"{qi} {qo}")


def test_average_pool_excluding_padding_is_refused_by_name():
    geo = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    with pytest.raises(fixq.io.OnnxError, match=r"node 'pool' \(QLinearAveragePool, opset 17\): AveragePool with "
                                                r"padding and count_include_pad=0"):
        fixq.import_onnx(_model("QOperator", np.uint8, geo, (0.1, 3), (0.1, 3)))


# -- export ---------------------------------------------------------------------------------------------

def _pool_concat_model(act):
    from fixq.quantizer import quantize_model
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, 2, 8, 8]}], "nodes": [
        {"name": "c1", "op": "conv2d", "inputs": ["x"], "padding": 1},
        {"name": "r1", "op": "relu", "inputs": ["c1"]},
        {"name": "ap", "op": "avgpool2d", "inputs": ["r1"], "kernel": 3, "stride": 1, "padding": 1},
        {"name": "c2", "op": "conv2d", "inputs": ["x"], "padding": 0},
        {"name": "cat", "op": "concat", "inputs": ["ap", "c2", "r1"], "axis": 1},
        {"name": "ap2", "op": "avgpool2d", "inputs": ["cat"], "kernel": 2, "stride": 2},
        {"name": "f", "op": "flatten", "inputs": ["ap2"]},
        {"name": "fc", "op": "linear", "inputs": ["f"]}], "outputs": ["fc"]}
    rng = np.random.default_rng(0)
    w = {"c1.weight": rng.normal(size=(6, 2, 3, 3)).astype(np.float32) / 3,
         "c1.bias": rng.normal(size=6).astype(np.float32) / 5,
         "c2.weight": rng.normal(size=(4, 2, 1, 1)).astype(np.float32),
         "c2.bias": rng.normal(size=4).astype(np.float32) / 5,
         "fc.weight": rng.normal(size=(10, 16 * 16)).astype(np.float32) / 10}
    g = fixq.graph.validate(spec, w)
    return quantize_model(g, [rng.random((64, 2, 8, 8), dtype=np.float32) * 2 - 0.5], activations=act)


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_export_of_avgpool_and_concat_runs_in_ort_as_target_onnxruntime(act, tmp_path):
    m = _pool_concat_model(act)
    # concat requantizes inputs at two other scales (the pool keeps its input's)
    assert m.qparams("ap") == m.qparams("r1") and len({m.qparams(t) for t in ("ap", "c2", "cat")}) == 3
    path = tmp_path / "m.onnx"
    proto = fixq.export_onnx(m, str(path))
    assert {"AveragePool", "Concat"} <= {n.op_type for n in proto.graph.node}
    x = np.random.default_rng(9).random((512, 2, 8, 8), dtype=np.float32) * 2 - 0.5
    ref = ort_run(path, x)
    want = fixq.Model(m.meta, m.arrays, target="onnxruntime").run(x)
    assert np.array_equal(want, ref), f"{(want != ref).sum()} of {ref.size} differ"
    np.testing.assert_array_equal(fixq.Model.load(str(path)).run(x), ref)  # the exported model imported back
