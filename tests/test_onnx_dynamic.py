"""ONNX models quantized by ONNX Runtime's quantize_dynamic (DynamicQuantizeLinear, MatMulInteger, ConvInteger,
and ORT's fused DynamicQuantizeMatMul) import as dynamic int8 models whose target onnxruntime equals ORT's CPU
output on every bit of every element, on every CPU path, from the archive too."""
import os
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
from onnx_helpers import export_torch, ort_run  # noqa: E402

nn = torch.nn
SHAPES = {"mlp": (64,), "cnn": (3, 8, 8)}


def _models():
    torch.manual_seed(0)
    return {"mlp": nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)),
            # stride 2 (a value no window reads still sets the range), depthwise, pointwise, max pool
            "cnn": nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))}


@pytest.fixture(scope="module")
def float_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("donnx")
    out = {}
    for name, m in _models().items():
        out[name] = export_torch(m.eval(), d / f"{name}.onnx", SHAPES[name])
    return out


def _quantize(src, per_channel, weight_type):
    dst = src.replace(".onnx", f"_dyn_{weight_type}_{'pc' if per_channel else 'pt'}.onnx")
    if os.path.exists(dst):  # made for another CPU path's run of the same test
        return dst
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_dynamic(src, dst, per_channel=per_channel,
                                      weight_type=getattr(quantization.QuantType, weight_type))
    return dst


def _inputs(name, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + SHAPES[name], dtype=np.float32)


def _bits_equal(y, ref):
    y = y.reshape(ref.shape)
    assert y.dtype == np.float32 and np.array_equal(y.view(np.uint32), ref.view(np.uint32)), \
        f"{(y.view(np.uint32) != ref.view(np.uint32)).sum()} of {ref.size} differ"


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_quantize_dynamic_models_are_bit_exact(float_models, name, per_channel, weight_type, isa):
    path = _quantize(float_models[name], per_channel, weight_type)
    m = import_onnx(path)
    assert isinstance(m, fixq.Model) and m.dynamic and m.target == "onnxruntime" and m.act_dtype == np.uint8
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and ("ConvInteger" in ops) == (name == "cnn")
    for n in (64, 1):
        x = _inputs(name, n, 11 + n)
        ref = ort_run(path, x)
        _bits_equal(m.run(x), ref)
        _bits_equal(m.run(x, threads=2), ref)
        _bits_equal(ort_run(path, x, "ORT_DISABLE_ALL"), ref)  # the graph as written computes the same


def test_ort_fused_graph_imports_too(float_models, tmp_path):
    """ORT's optimized graph (DynamicQuantizeMatMul, com.microsoft) is read as the graph it came from."""
    path = _quantize(float_models["cnn"], True, "QInt8")
    x = _inputs("cnn", 16, 3)
    opt = str(tmp_path / "opt.onnx")
    ref = ort_run(path, x, "ORT_ENABLE_EXTENDED", save=opt)
    assert "DynamicQuantizeMatMul" in {n.op_type for n in onnx.load(opt).graph.node}
    _bits_equal(import_onnx(opt).run(x), ref)


def test_archive_and_cli_round_trip(float_models, tmp_path):
    path = _quantize(float_models["cnn"], False, "QUInt8")
    x = _inputs("cnn", 8, 5)
    np.save(tmp_path / "x.npy", x)
    q, y = str(tmp_path / "m.q.npz"), str(tmp_path / "y.npy")
    r = CliRunner().invoke(cli, ["import", path, "-o", q])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["run", q, str(tmp_path / "x.npy"), "--target", "onnxruntime", "-o", y])
    assert r.exit_code == 0, r.output
    ref = ort_run(path, x)
    _bits_equal(np.load(y), ref)
    _bits_equal(fixq.Model.load(q).run(x), ref)
    with pytest.raises(ValueError, match="target='onnxruntime'"):
        fixq.Model.load(q, target="tflite")


def test_cli_runs_the_whole_input_as_one_ort_call(float_models, tmp_path):
    """The activations' range is the whole batch's: `fixq run` keeps INPUT one batch unless --batch-size is
    given (then each batch is one ORT call, and a note says so)."""
    path = _quantize(float_models["mlp"], False, "QInt8")
    x = _inputs("mlp", 300, 8)
    x[299] *= 50  # an outlier row sets the range of every row beside it
    np.save(tmp_path / "x.npy", x)
    y = str(tmp_path / "y.npy")
    r = CliRunner().invoke(cli, ["run", path, str(tmp_path / "x.npy"), "--target", "onnxruntime", "-o", y])
    assert r.exit_code == 0, r.output
    _bits_equal(np.load(y), ort_run(path, x))
    r = CliRunner().invoke(cli, ["run", path, str(tmp_path / "x.npy"), "--target", "onnxruntime", "-o", y, "-f",
                                 "--batch-size", "100"])
    assert r.exit_code == 0 and "range" in r.output, r.output
    _bits_equal(np.load(y), np.concatenate([ort_run(path, x[i:i + 100]) for i in (0, 100, 200)]))


def test_fixq_dynamic_models_run_target_onnxruntime():
    """A model fixq quantized itself in dynamic mode, uint8 activations, runs ORT's dynamic arithmetic too."""
    rng = np.random.default_rng(7)
    w = {"fc1.weight": rng.standard_normal((16, 12), dtype=np.float32),
         "fc1.bias": rng.standard_normal(16, dtype=np.float32)}
    g = fixq.graph.validate({"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, 12]}],
                             "nodes": [{"name": "fc1", "op": "linear", "inputs": ["x"]}], "outputs": ["fc1"]}, w)
    m = fixq.quantize_model(g, dynamic=True, activations="uint8", target="onnxruntime")
    x = rng.standard_normal((5, 12), dtype=np.float32)
    ws, b = m.arrays["fc1:weight_scale"], m.arrays["fc1:bias"]
    want = fixq.float_ops.dynamic_linear(x, fixq.pack_weights(m.arrays["fc1:weight"]), ws, b, "tensor")
    _bits_equal(m.run(x), want)
    with pytest.raises(ValueError, match="on uint8 activations; quantize it with activations=.uint8."):
        fixq.quantize_model(g, dynamic=True, activations="int8", target="onnxruntime")


def _graph(nodes, inits, out_shape=("N", 2), opset=17):
    h = onnx.helper
    return h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(out_shape))],
                                     [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()]),
                        opset_imports=[h.make_opsetid("", opset)])


def _group(b_name="w", extra=()):
    h = onnx.helper
    return [h.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
            h.make_node("Mul", ["s", "ws"], ["sw"]),
            h.make_node("MatMulInteger", ["q", b_name, "z", "wz"], ["acc"], name="mmi"),
            h.make_node("Cast", ["acc"], ["accf"], to=onnx.TensorProto.FLOAT),
            h.make_node("Mul", ["accf", "sw"], ["y0"]), *extra]


_INITS = {"w": np.arange(8, dtype=np.int8).reshape(4, 2), "ws": np.float32(0.01), "wz": np.int8(0)}


def test_hand_written_group_matches_ort():
    h = onnx.helper
    model = _graph(_group(extra=[h.make_node("Add", ["y0", "b"], ["y"])]), dict(_INITS, b=np.float32([0.5, -0.25])))
    x = np.random.default_rng(2).standard_normal((6, 4), dtype=np.float32)
    ref = ort_run(model, x)
    _bits_equal(import_onnx(model).run(x), ref)


@pytest.mark.parametrize("case, match", [
    ("dynamic_b", "node 'mmi' \\(MatMulInteger, opset 17\\): input 1 \\(weights\\) must be a constant"),
    ("softmax", "node 'sm' \\(Softmax, opset 17\\): this float op is not supported in a quantize_dynamic model"),
    ("scale_mul", "Mul of a constant is supported in a quantize_dynamic model only as the float bias Add"),
    ("zp_output", "reads an output of DynamicQuantizeLinear"),
])
def test_unsupported_dynamic_graphs_are_one_line_errors(case, match):
    h = onnx.helper
    inits = dict(_INITS)
    if case == "dynamic_b":  # B computed at run time (quantize_dynamic leaves such a MatMul float by default)
        nodes = _group("q", extra=[h.make_node("Identity", ["y0"], ["y"])])
    elif case == "softmax":
        nodes = _group(extra=[h.make_node("Softmax", ["y0"], ["y"], name="sm")])
    elif case == "scale_mul":
        nodes, inits["c"] = _group(extra=[h.make_node("Mul", ["y0", "c"], ["y"])]), np.float32(2)
    else:
        nodes = _group(extra=[h.make_node("Add", ["y0", "s"], ["y"])])
    with pytest.raises(OnnxError, match=match) as e:
        import_onnx(_graph(nodes, inits))
    assert "\n" not in str(e.value)
