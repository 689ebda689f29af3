"""PyTorch QAT models in: a conv net prepared with torch.ao.quantization (FakeQuantize observers,
prepare_qat, a few training steps), exported by torch.onnx.export as QuantizeLinear / DequantizeLinear
pairs around float ops with float weights and biases, imports with its trained scales and zero points
kept and runs bit for bit as ORT runs the same file (ORT_ENABLE_ALL: weight QuantizeLinear folded, float
biases quantized by WeightBiasQuantization, Relu dropped by ReluQuantFusion, DequantizeLinear moved past
MaxPool and Reshape by QDQ propagation, then QLinearConv / QGemm)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
tq = pytest.importorskip("torch.ao.quantization")

from fixq.io import OnnxError, import_onnx  # noqa: E402
from onnx_helpers import export_torch, ort_run  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.ao.quantization says it moves to torchao


class Net(nn.Module):
    def __init__(self, flatten):
        super().__init__()
        self.flatten = flatten
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.c1, self.r1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(8, 16, 3, padding=1, stride=1), nn.ReLU()
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = self.pool(self.r2(self.c2(self.r1(self.c1(self.quant(x))))))
        y = torch.flatten(y, 1) if self.flatten else y.reshape(y.size(0), -1)
        return self.dequant(self.fc(y))


def _qat_model(path, act, per_channel, flatten=False):
    torch.manual_seed(0)
    m = Net(flatten).train()
    dtype, lo, hi = (torch.quint8, 0, 255) if act == "u8" else (torch.qint8, -128, 127)
    w_obs, w_scheme = ((tq.MovingAveragePerChannelMinMaxObserver, torch.per_channel_symmetric) if per_channel
                       else (tq.MovingAverageMinMaxObserver, torch.per_tensor_symmetric))
    m.qconfig = tq.QConfig(
        activation=tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=lo, quant_max=hi,
                                             dtype=dtype),
        weight=tq.FakeQuantize.with_args(observer=w_obs, quant_min=-128, quant_max=127, dtype=torch.qint8,
                                         qscheme=w_scheme))
    tq.fuse_modules_qat(m, [["c1", "r1"], ["c2", "r2"]], inplace=True)
    tq.prepare_qat(m, inplace=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        x, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    m.apply(tq.disable_observer)
    export_torch(m, path, (1, 8, 8))
    return m


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("act", ["u8", "s8"])
def test_qat_conv_net_keeps_trained_qparams_and_equals_ort(tmp_path, act, per_channel):
    path = tmp_path / "qat.onnx"
    net = _qat_model(path, act, per_channel)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Relu", "Gemm"} <= {n.op_type for n in
                                                                           onnx.load(str(path)).graph.node}
    m = import_onnx(str(path))
    assert m.target == "onnxruntime" and [s["op"] for s in m.steps] == ["conv2d", "conv2d", "maxpool2d", "flatten",
                                                                       "linear"]
    # the trained scales and zero points, as float32 and integers, exactly (int8 ones as ORT runs them: uint8,
    # zero point + 128, its QDQS8ToU8Transformer)
    shift = 128 if act == "s8" else 0
    observers = (net.quant, net.c1, net.c2, net.fc)
    for tensor, fq in zip((m.input, m.steps[0]["name"], m.steps[1]["name"], m.outputs[0]),
                          (o.activation_post_process for o in observers)):
        assert m.qparams(tensor) == (float(fq.scale.item()), int(fq.zero_point.item()) + shift)
    np.testing.assert_array_equal(m.arrays[f"{m.steps[0]['name']}:weight_scale"],
                                  net.c1.weight_fake_quant.scale.numpy().astype(np.float32).reshape(-1))
    x = np.random.default_rng(5).random((256, 1, 8, 8), dtype=np.float32)
    ref = ort_run(path, x)
    np.testing.assert_array_equal(m.run(x), ref)
    np.testing.assert_array_equal(m.run_all(x, engine=False)[m.outputs[0]], m.run(x, raw=True))


def test_qat_flatten_before_linear_is_refused_naming_why(tmp_path):
    """torch.flatten exports Flatten, which ORT's QDQ propagation does not pass: ORT runs that Gemm in float."""
    path = tmp_path / "qat.onnx"
    _qat_model(path, "u8", True, flatten=True)
    with pytest.raises(OnnxError, match=r"\(Gemm, opset 17\): input 0 is the float output of Flatten node .* so ORT "
                                        r"runs this node in float"):
        import_onnx(str(path))
