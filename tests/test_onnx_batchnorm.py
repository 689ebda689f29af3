"""A BatchNormalization that ONNX Runtime's quantize_static leaves in float (the export kept it, and no
quant_pre_process folded it): ORT runs DequantizeLinear -> BatchNormalization -> QuantizeLinear unfused, in
float32; fixq imports it as a batchnorm step, one 256-entry table per channel, and equals ORT on every element."""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

import fixq  # noqa: E402
from fixq.io import OnnxError, import_onnx  # noqa: E402
from onnx_helpers import calib_reader, export_torch, ort_run  # noqa: E402

nn = torch.nn


def _models():
    torch.manual_seed(0)
    return {"cnn_bn": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(16 * 4 * 4, 10)),
            # a BatchNorm no layer precedes: nothing to fold it into
            "mlp_bn": nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))}


@pytest.fixture(scope="module")
def kept_bn(tmp_path_factory):
    d = tmp_path_factory.mktemp("bn")
    out = {}
    for name, m in _models().items():
        m.eval()
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):  # statistics a trained model could have
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.5, 0.5)
        out[name] = export_torch(m, d / f"{name}.onnx", (1, 8, 8), training=torch.onnx.TrainingMode.PRESERVE,
                                 do_constant_folding=False)
    return out


def _quantize(src, fmt, act):
    dst = src.replace(".onnx", f"_{fmt}_{act}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(src, dst, calib_reader(), quant_format=getattr(quantization.QuantFormat, fmt),
                                     per_channel=True, weight_type=quantization.QuantType.QInt8,
                                     activation_type=getattr(quantization.QuantType, act))
    return dst


@pytest.mark.parametrize("act", ["QUInt8", "QInt8"])
@pytest.mark.parametrize("name", ["cnn_bn", "mlp_bn"])
def test_qdq_float_batchnorm_equals_ort(kept_bn, name, act, tmp_path):
    path = _quantize(kept_bn[name], "QDQ", act)
    assert "BatchNormalization" in {n.op_type for n in onnx.load(path).graph.node}
    m = import_onnx(path)
    assert "batchnorm" in [s["op"] for s in m.steps]
    x = np.random.default_rng(3).random((64, 1, 8, 8), dtype=np.float32)
    ref = ort_run(path, x)
    y = m.run(x)
    assert np.array_equal(y, ref), f"{(y != ref).sum()} of {ref.size} differ"
    m.save(str(tmp_path / "m.q.npz"))
    assert np.array_equal(fixq.Model.load(str(tmp_path / "m.q.npz")).run(x), ref)


@pytest.mark.parametrize("name, match", [
    ("mlp_bn", "a BatchNormalization of a float tensor"),  # on the float input, before the first QuantizeLinear
    ("cnn_bn", "a chain of float ops between quantized tensors"),  # DequantizeLinear -> BN -> Relu -> MaxPool -> Q
])
def test_qoperator_float_batchnorm_is_refused_by_name(kept_bn, name, match):
    with pytest.raises(OnnxError, match=match):
        import_onnx(_quantize(kept_bn[name], "QOperator", "QUInt8"))


def test_batchnorm_graph_op_quantizes_and_runs():
    """The graph op itself: a float graph with a batchnorm node quantizes (its tables from the calibrated
    scales) and runs within a step of the output scale of the float reference."""
    rng = np.random.default_rng(4)
    c = 3
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, c, 4, 4]}],
            "nodes": [{"name": "bn", "op": "batchnorm", "inputs": ["x"], "scale": [0.5, -1.25, 2.0],
                       "shift": [0.1, 0.0, -0.3]}], "outputs": ["bn"]}
    g = fixq.graph.validate(spec, {})
    x = rng.standard_normal((16, c, 4, 4), dtype=np.float32)
    want = fixq.graph.run_float(g, x)
    affine = x * np.float32([0.5, -1.25, 2.0])[:, None, None] + np.float32([0.1, 0.0, -0.3])[:, None, None]
    assert np.allclose(want, affine)
    m = fixq.quantize_model(g, [x])
    y = m.run(x)
    assert np.abs(y - want).max() <= 1.01 * (m.qparams("x")[0] * 2.0 + m.qparams("bn")[0])
    with pytest.raises(fixq.graph.GraphError, match="keys 'scale' and 'shift' of C finite numbers"):
        fixq.graph.validate(dict(spec, nodes=[dict(spec["nodes"][0], scale=[1.0])]), {})
