"""Export: fixq int8 archives -> QDQ ONNX that ONNX Runtime runs (fixq export, fixq.export_onnx), and
Model.load / fixq run on .onnx paths (a quantized model imported on the fly, a float one refused)."""
import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import fixq  # noqa: E402
from fixq.archive import load_float_model  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.quantizer import quantize_model  # noqa: E402
from fixq.cli.demo import bundled  # noqa: E402
from onnx_helpers import ort_run  # noqa: E402


def _quantized(name, act, per_channel):
    g, _ = load_float_model(bundled(f"{name}.npz"))
    return quantize_model(g, [np.load(bundled("digits_calib.npy"))[:256]], activations=act, per_channel=per_channel)


X = None


def _x():
    global X
    if X is None:
        X = np.ascontiguousarray(np.load(bundled("digits_test_x.npy")), dtype=np.float32)
    return X


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_mlp_export_equals_target_onnxruntime_on_every_element(act, per_channel, tmp_path):
    m = _quantized("digits_mlp", act, per_channel)
    m.save(str(tmp_path / "m.npz"))
    fixq.export_onnx(m, str(tmp_path / "m.onnx"))
    y = fixq.Model.load(str(tmp_path / "m.npz"), target="onnxruntime").run(_x())
    np.testing.assert_array_equal(ort_run(tmp_path / "m.onnx", _x()), y)  # 4500 of 4500


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_cnn_export_equals_target_onnxruntime_on_every_element(act, per_channel, tmp_path):
    """Conv, depthwise, residual add and the global average pool (ORT requantizes its sum by
    s_in / (s_out * (float)HW) in float32: fixq.targets.mean_stage) all equal ORT, and the exported model
    imported back does too."""
    m = _quantized("digits_cnn", act, per_channel)
    fixq.export_onnx(m, str(tmp_path / "m.onnx"))
    ref = ort_run(tmp_path / "m.onnx", _x())
    np.testing.assert_array_equal(fixq.Model(m.meta, m.arrays, target="onnxruntime").run(_x()), ref)  # 4500/4500
    np.testing.assert_array_equal(fixq.Model.load(str(tmp_path / "m.onnx")).run(_x()), ref)


def test_export_cli_and_run_onnx_path(tmp_path):
    _quantized("digits_mlp", "int8", True).save(str(tmp_path / "m.npz"))
    np.save(tmp_path / "x.npy", _x()[:16])
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert "QDQ ONNX (opset 13)" in r.output
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), "-o",
                                 str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), ort_run(tmp_path / "m.onnx", _x()[:16]))


def test_float_onnx_path_says_quantize_first(tmp_path):
    h = onnx.helper
    w = np.ones((6, 3), np.float32)
    model = h.make_model(h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                      [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
                                      [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                                      [onnx.numpy_helper.from_array(w, "w")]),
                         opset_imports=[h.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "f.onnx"))
    with pytest.raises(fixq.ArchiveError, match=r"f.onnx: is a float ONNX model; fixq runs int8 models: fixq import"):
        fixq.Model.load(str(tmp_path / "f.onnx"))


def test_export_refuses_float_activations(tmp_path):
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    with pytest.raises(fixq.io.OnnxError, match="fixq exports static int8 models"):
        fixq.export_onnx(quantize_model(g, dynamic=True))
