"""Quantized ONNX import: models exported by torch.onnx.export and quantized by ONNX Runtime's
quantize_static (QOperator and QDQ; per-channel and per-tensor weights; uint8 and int8 activations)
become fixq int8 models (target onnxruntime) whose outputs equal ORT's CPU outputs on every element,
with ORT's default graph optimizations (ORT_ENABLE_ALL, which fuses QDQ groups into QLinear kernels)."""
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

import fixq  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.io import OnnxError, import_onnx  # noqa: E402
from onnx_helpers import calib_reader, export_torch, ort_run  # noqa: E402

nn = torch.nn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + y)
        return self.fc(self.pool(y).view(x.size(0), -1))


class Mobile(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.dw, self.b2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw, self.fc = nn.Conv2d(16, 24, 1), nn.Linear(24, 10)

    def forward(self, x):
        y = nn.functional.relu6(self.b1(self.c1(x)))
        y = nn.functional.relu6(self.b2(self.dw(y)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.pw(y), 1), 1))


def _models():
    torch.manual_seed(0)
    return {"mlp": nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
            "cnn_bn": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(16 * 4 * 4, 10)),
            "residual": Residual(), "mobile": Mobile()}


@pytest.fixture(scope="module")
def float_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("qonnx")
    out = {}
    for name, m in _models().items():
        m.eval()
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
        out[name] = export_torch(m, d / f"{name}.onnx", (1, 8, 8))
    return out


def _quantize(src, fmt, act, per_channel):
    dst = src.replace(".onnx", f"_{fmt}_{act}_{'pc' if per_channel else 'pt'}.onnx")
    QT = quantization.QuantType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(src, dst, calib_reader(), quant_format=getattr(quantization.QuantFormat, fmt),
                                     per_channel=per_channel, weight_type=QT.QInt8,
                                     activation_type=QT.QUInt8 if act == "u8" else QT.QInt8)
    return dst


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("act", ["u8", "s8"])
@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "residual", "mobile"])
def test_ort_quantized_models_are_bit_exact(float_models, name, fmt, act, per_channel):
    try:
        path = _quantize(float_models[name], fmt, act, per_channel)
    except AttributeError as e:  # ORT's quantizer fails on some exported graphs (a bias it cannot find)
        pytest.skip(f"onnxruntime.quantization.quantize_static fails on this model: {e}")
    m = import_onnx(path)
    assert isinstance(m, fixq.Model) and m.target == "onnxruntime"
    # int8 QDQ: ORT (QDQS8ToU8Transformer) and fixq run uint8 activations, zero points + 128
    assert m.act_dtype == (np.uint8 if act == "u8" or fmt == "QDQ" else np.int8)
    x = np.random.default_rng(11).random((64, 1, 8, 8), dtype=np.float32)
    ref = ort_run(path, x)
    y = m.run(x)
    assert np.array_equal(y.reshape(ref.shape), ref), f"{(y.reshape(ref.shape) != ref).sum()} of {ref.size} differ"
    np.testing.assert_array_equal(m.run_all(x, engine=False)[m.outputs[0]], m.run_all(x)[m.outputs[0]])


def test_import_cli_writes_the_int8_archive(float_models, tmp_path):
    path = _quantize(float_models["residual"], "QDQ", "u8", True)
    out = tmp_path / "m.q.npz"
    r = CliRunner().invoke(cli, ["import", path, "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = fixq.Model.load(str(out))
    assert m.target == "onnxruntime"
    x = np.random.default_rng(12).random((16, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(m.run(x), ort_run(path, x))


def test_unsupported_quantized_op_is_named(float_models, tmp_path):
    g = onnx.helper
    model = g.make_model(g.make_graph(
        [g.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         g.make_node("MatMulInteger", ["q", "q"], ["qs"], name="sig"),
         g.make_node("DequantizeLinear", ["qs", "s", "z"], ["y"])], "g",
        [g.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [g.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.float32(0.1), "s"), onnx.numpy_helper.from_array(np.uint8(128), "z")]),
        opset_imports=[g.make_opsetid("", 17), g.make_opsetid("com.microsoft", 1)])
    with pytest.raises(OnnxError, match=r"node 'q' \(QuantizeLinear, opset 17\): static quantization .* in a "
                                        "quantize_dynamic model is not supported"):
        import_onnx(model)


def test_compare_cli_counts_equal_outputs(float_models, tmp_path):
    path = _quantize(float_models["cnn_bn"], "QOperator", "s8", True)
    out, data = tmp_path / "m.q.npz", tmp_path / "x.npy"
    import_onnx(path).save(str(out))
    np.save(data, np.random.default_rng(13).random((20, 1, 8, 8), dtype=np.float32))
    r = CliRunner().invoke(cli, ["compare", str(out), path, "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(": 200 / 200 equal, max difference 0")
