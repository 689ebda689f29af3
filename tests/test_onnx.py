"""ONNX float import (fixq.import_onnx, `fixq import`): models exported by torch.onnx.export and built
with onnx.helper, checked against ONNX Runtime's float outputs; the rewrites (BatchNormalization
folding, constant shape subgraphs, symbolic batch) and the one-line refusals."""
import sys

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fixq  # noqa: E402
import fixq.graph as G  # noqa: E402
from fixq.archive import ArchiveError, load_float_model  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.io import OnnxError, import_onnx  # noqa: E402
from onnx_helpers import export_torch  # noqa: E402


def ort_float(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    m = model if isinstance(model, str) else model.SerializeToString()
    s = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def assert_close(got, ref):
    """fixq's float reference within 1e-5 of the largest magnitude of ORT's output."""
    got = got if isinstance(got, tuple) else (got,)
    for y, r in zip(got, ref):
        assert y.size == r.size
        err = np.abs(y.reshape(r.shape).astype(np.float64) - r).max()
        assert err <= 1e-5 * np.abs(r).max(), err


# ---- models from PyTorch ---------------------------------------------------------------------------

def _torch_models():
    torch = pytest.importorskip("torch")
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
            y = self.pool(y)
            return self.fc(y.view(y.size(0), -1))  # Shape -> Gather -> Unsqueeze -> Concat -> Reshape

    class Mobile(nn.Module):  # MobileNetV2-style: depthwise, ReLU6, global pool
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
            self.dw, self.b2 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16)
            self.pw = nn.Conv2d(16, 24, 1)
            self.ap = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            y = nn.functional.relu6(self.b1(self.c1(x)))
            y = nn.functional.relu6(self.b2(self.dw(y)))
            y = self.ap(self.pw(y))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    models = {
        "mlp": nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                             nn.Linear(16, 10)),
        "cnn_bn": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                                nn.Linear(16 * 4 * 4, 10), nn.Softmax(1)),
        "residual": Residual(),
        "mobile": Mobile(),
    }
    for m in models.values():
        m.eval()
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):  # statistics a trained model could have
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.5, 0.5)
    return torch, models


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each model exported twice: as torch exports it (BatchNorm folded by the exporter) and with
    BatchNormalization nodes kept (TrainingMode.PRESERVE, no constant folding), for fixq to fold."""
    torch, models = _torch_models()
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, m in models.items():
        for keep_bn in (False, True):
            extra = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) if keep_bn else {}
            out[(name, keep_bn)] = export_torch(m, d / f"{name}{'_bn' if keep_bn else ''}.onnx", (1, 8, 8), **extra)
    return out


@pytest.mark.parametrize("keep_bn", [False, True], ids=["exported", "batchnorm-kept"])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "residual", "mobile"])
def test_torch_models_match_ort_float(exported, name, keep_bn):
    path = exported[(name, keep_bn)]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    if keep_bn and name != "mlp":
        assert "BatchNormalization" in ops
    g = import_onnx(path)
    assert not any(n.op == "batchnorm" for n in g.nodes)
    x = np.random.default_rng(1).random((7, 1, 8, 8), dtype=np.float32)
    assert_close(G.run_float(g, x), ort_float(path, x))
    # the symbolic batch is the batch: any batch size runs
    assert_close(G.run_float(g, x[:1]), ort_float(path, x[:1]))


def test_import_cli_then_quantize(exported, tmp_path):
    path = exported[("residual", True)]
    out = tmp_path / "model.npz"
    r = CliRunner().invoke(cli, ["import", path, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output
    g, inferred = load_float_model(str(out))
    assert not inferred
    x = np.random.default_rng(2).random((5, 1, 8, 8), dtype=np.float32)
    assert_close(G.run_float(g, x), ort_float(path, x))
    calib = tmp_path / "calib.npy"
    np.save(calib, x)
    r = CliRunner().invoke(cli, ["quantize", str(out), "-o", str(tmp_path / "q.npz"), "--calib", str(calib)])
    assert r.exit_code == 0, r.output
    q = fixq.Model.load(str(tmp_path / "q.npz"))
    ref = ort_float(path, x)[0]
    assert np.abs(q.run(x) - ref).max() < 0.1 * np.abs(ref).max()
    r = CliRunner().invoke(cli, ["import", path, "-o", str(out)])  # an existing output needs --force
    assert r.exit_code == 1 and "--force" in r.output


def test_run_float_models_and_compare_the_float_row(exported, tmp_path):
    """`fixq run` on a float .onnx and on a float archive runs fixq's float reference; `fixq compare --float`
    adds the float model's distance to fixq's int8 outputs and to ORT's."""
    path = exported[("residual", True)]
    x = np.random.default_rng(3).random((6, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = ort_float(path, x)
    assert CliRunner().invoke(cli, ["import", path, "-o", str(tmp_path / "f.npz")]).exit_code == 0
    for model in (path, str(tmp_path / "f.npz")):
        r = CliRunner().invoke(cli, ["run", model, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "-f"])
        assert r.exit_code == 0, r.output
        assert_close(np.load(tmp_path / "y.npy"), ref)
        r = CliRunner().invoke(cli, ["run", model, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "-f",
                                     "--target", "onnxruntime"])
        assert r.exit_code == 1 and r.output.count("\n") == 1 and "is a float model" in r.output, r.output
    assert CliRunner().invoke(cli, ["quantize", str(tmp_path / "f.npz"), "-o", str(tmp_path / "q.npz"), "--calib",
                                    str(tmp_path / "x.npy")]).exit_code == 0
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "q.npz"), path, "--data", str(tmp_path / "x.npy"),
                                 "--float", str(tmp_path / "f.npz")])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().split("\n")
    assert ": float reference (" in lines[1] and "to fixq" in lines[1] and "to ONNX Runtime" in lines[1]
    # a float MODEL compared with its own ONNX file: fixq's float reference against ORT's float
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "f.npz"), path, "--data", str(tmp_path / "x.npy")])
    assert r.exit_code == 0 and float(r.output.split("max difference ")[1]) < 1e-5, r.output


# ---- models built with onnx.helper ---------------------------------------------------------------------

def _model(nodes, inits, in_shape, out_name="y", opset=17, out_shape=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_batchnorm_alone_becomes_a_per_channel_conv_and_clip_relu6():
    rng = np.random.default_rng(3)
    c = 4
    inits = {"s": rng.uniform(0.5, 2, c).astype(np.float32), "b": rng.normal(size=c).astype(np.float32),
             "m": rng.normal(size=c).astype(np.float32), "v": rng.uniform(0.5, 2, c).astype(np.float32),
             "lo": np.float32(0), "hi": np.float32(6)}
    m = _model([helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
                helper.make_node("Clip", ["bn", "lo", "hi"], ["c"]),
                helper.make_node("GlobalAveragePool", ["c"], ["gp"]),
                helper.make_node("Reshape", ["gp", "shape"], ["y"])],
               dict(inits, shape=np.array([-1, c], np.int64)), ["N", c, 5, 5])
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["relu", "conv2d", "relu6", "global_avgpool"]
    x = rng.normal(size=(3, c, 5, 5)).astype(np.float32) * 4
    assert_close(G.run_float(g, x), ort_float(m, x))


def test_add_and_mul_of_constants_fold_into_the_linear():
    rng = np.random.default_rng(4)
    inits = {"w": rng.normal(size=(6, 3)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32),
             "k": rng.uniform(1, 2, (1, 3)).astype(np.float32)}
    m = _model([helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["a"]),
                helper.make_node("Mul", ["a", "k"], ["y"])], inits, ["N", 6])
    g = import_onnx(m)
    assert [n.op for n in g.nodes] == ["linear"]
    x = rng.normal(size=(4, 6)).astype(np.float32)
    assert_close(G.run_float(g, x), ort_float(m, x))


def test_unsupported_node_is_one_line_naming_it():
    m = _model([helper.make_node("Erf", ["x"], ["y"], name="act1")], {}, ["N", 6])
    with pytest.raises(OnnxError, match=r"^node 'act1' \(Erf, opset 17\): this op is not supported "
                                        r"\(docs/onnx.md"):
        import_onnx(m)


def test_average_pool_excluding_padding_is_refused():
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 name="ap")], {}, ["N", 2, 6, 6])
    with pytest.raises(OnnxError, match="node 'ap' .*count_include_pad=0"):
        import_onnx(m)
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 count_include_pad=1)], {}, ["N", 2, 6, 6])
    x = np.random.default_rng(5).normal(size=(2, 2, 6, 6)).astype(np.float32)
    assert_close(G.run_float(import_onnx(m), x), ort_float(m, x))


def test_refusals_name_what_and_why(tmp_path):
    with pytest.raises(OnnxError, match="asymmetric padding"):
        import_onnx(_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1])],
                           {}, ["N", 1, 5, 5]))
    with pytest.raises(OnnxError, match=r"Clip\(-1, 1\)"):
        import_onnx(_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                           {"lo": np.float32(-1), "hi": np.float32(1)}, ["N", 4]))
    with pytest.raises(OnnxError, match="one float input"):
        import_onnx(helper.make_model(helper.make_graph(
                        [helper.make_node("Add", ["x", "z"], ["y"])], "g",
                        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xz"],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])))
    with pytest.raises(OnnxError, match=r"input 'x': has shape \[None, 3, 4\]; fixq takes \[batch, features\]"):
        import_onnx(_model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 3, 4]))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(OnnxError, match="bad.onnx: cannot read it as an ONNX model"):
        import_onnx(str(bad))
    r = CliRunner().invoke(cli, ["import", str(bad), "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == 1 and r.output.startswith("fixq: error:") and len(r.output.splitlines()) == 1


def test_onnx_file_given_to_quantize_points_at_import(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 4]), str(p))
    with pytest.raises(ArchiveError, match="fixq import MODEL.onnx"):
        load_float_model(str(p))


def test_missing_onnx_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(OnnxError, match=r"^reading ONNX models needs the onnx package: pip install 'fixq\[onnx\]'$"):
        import_onnx("whatever.onnx")
