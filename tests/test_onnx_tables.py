"""The table ops (sigmoid, tanh, hardswish, leaky_relu, hardsigmoid): int8 in and out through a
256-entry table; the C plan equals the numpy steps and the int64 simulation; ONNX Sigmoid, Tanh,
HardSwish, LeakyRelu, HardSigmoid import as them; ORT's QLinearSigmoid / QLinearLeakyRelu (QOperator
and QDQ) and Tanh / HardSigmoid / HardSwish between DequantizeLinear and QuantizeLinear are bit-exact with
ONNX Runtime on all 256 input values."""
import math

import numpy as np
import pytest

import fixq
from fixq import graph as G
from fixq.quantizer import activation_table, quantize_model
from engine_reference import simulate
from onnx_helpers import ort_run

OPS = [("sigmoid", {}), ("tanh", {}), ("hardswish", {}), ("leaky_relu", {"alpha": 0.1}),
       ("hardsigmoid", {"alpha": 0.25, "beta": 0.4})]


def _graph():
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, 1, 8, 8]}], "nodes": [
        {"name": "c1", "op": "conv2d", "inputs": ["x"], "padding": 1},
        {"name": "s", "op": "sigmoid", "inputs": ["c1"]},
        {"name": "t", "op": "tanh", "inputs": ["s"]},
        {"name": "h", "op": "hardswish", "inputs": ["c1"]},
        {"name": "l", "op": "leaky_relu", "inputs": ["h"], "alpha": 0.1},
        {"name": "hs", "op": "hardsigmoid", "inputs": ["l"], "alpha": 0.25, "beta": 0.4},
        {"name": "a", "op": "add", "inputs": ["t", "hs"]},
        {"name": "f", "op": "flatten", "inputs": ["a"]},
        {"name": "fc", "op": "linear", "inputs": ["f"]}], "outputs": ["fc"]}
    rng = np.random.default_rng(0)
    w = {"c1.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
         "c1.bias": rng.normal(size=4).astype(np.float32),
         "fc.weight": (rng.normal(size=(10, 256)) * 0.1).astype(np.float32)}
    return G.validate(spec, w), rng.random((16, 1, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_plan_equals_numpy_steps_and_simulation(act, tmp_path):
    g, x = _graph()
    m = quantize_model(g, [x], activations=act)
    assert m._engine is not None
    fast, ref = m.run_all(x), m.run_all(x, engine=False)
    for t in fast:
        np.testing.assert_array_equal(fast[t], ref[t], err_msg=t)
    m.save(str(tmp_path / "m.npz"))
    np.testing.assert_array_equal(simulate(str(tmp_path / "m.npz"), x), m.run(x, raw=True))
    np.testing.assert_array_equal(fixq.Model.load(str(tmp_path / "m.npz")).run(x, raw=True), m.run(x, raw=True))
    assert np.abs(m.run(x) - G.run_float(g, x)).max() < 0.1


@pytest.mark.parametrize("op,attrs", OPS)
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_table_is_the_float64_function_rounded_half_to_even(op, attrs, dt):
    s_in, zp_in, s_out, zp_out = 0.05, 3 if dt == np.int8 else 131, 1 / 250, -100 if dt == np.int8 else 20
    f = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
         "hardswish": lambda v: v * min(1.0, max(0.0, v / 6 + 0.5)),
         "leaky_relu": lambda v: v if v >= 0 else attrs["alpha"] * v,
         "hardsigmoid": lambda v: min(1.0, max(0.0, attrs["alpha"] * v + attrs["beta"]))}[op]
    info = np.iinfo(dt)
    table = activation_table(op, attrs, s_in, zp_in, s_out, zp_out, dt)
    assert table.dtype == dt and table.shape == (256,)
    for byte in range(256):
        q = int(np.array(byte, np.uint8).view(dt))
        want = min(info.max, max(info.min, round(f((q - zp_in) * s_in) / s_out) + zp_out))  # round: ties to even
        assert int(table[byte]) == want, (byte, q)


def test_archive_table_key_is_checked(tmp_path):
    g, x = _graph()
    m = quantize_model(g, [x])
    arrays = dict(m.arrays)
    arrays["s:table"] = arrays["s:table"][:255]
    fixq.archive.write_archive(str(tmp_path / "bad.npz"), m.meta, arrays)
    with pytest.raises(fixq.ArchiveError, match=r"step 's': key 's:table' has shape \(255,\); expected \(256,\)"):
        fixq.Model.load(str(tmp_path / "bad.npz"))


# -- ONNX ---------------------------------------------------------------------------------------------

def _onnx_model(nodes, inits, opset=17, ms=False):
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    ops = [h.make_opsetid("", opset)] + ([h.make_opsetid("com.microsoft", 1)] if ms else [])
    return h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
                                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                                     [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()]),
                        opset_imports=ops)


@pytest.mark.parametrize("op,attrs", [("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("LeakyRelu", {"alpha": 0.2}),
                                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.6})])
def test_float_onnx_table_ops_import(op, attrs):
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    m = _onnx_model([onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
                     onnx.helper.make_node(op, ["h"], ["y"], **attrs)], {"w": w})
    g = fixq.import_onnx(m)
    assert [n.op for n in g.nodes][-1] in G.TABLE_OPS
    x = (rng.normal(size=(32, 6)) * 3).astype(np.float32)
    ref = ort_run(m, x)
    assert np.abs(G.run_float(g, x) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


_FLOAT_OPS = {"Tanh": "tanh", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish"}


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
@pytest.mark.parametrize("op,form", [(op, form) for op in ("Sigmoid", "LeakyRelu") for form in ("QOperator", "QDQ")]
                         + [(op, "QDQ") for op in _FLOAT_OPS])
def test_ort_lookup_ops_bit_exact(op, form, dt):
    """Every one of the 256 input values, at several scales and zero points, equals ORT's output: QLinearSigmoid /
    QLinearLeakyRelu's own tables, and Tanh / HardSigmoid / HardSwish, which ORT leaves in float between the
    DequantizeLinear and the QuantizeLinear (MLAS's tanh, HardSwish as x * HardSigmoid(x))."""
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    info = np.iinfo(dt)
    rng = np.random.default_rng(7)
    attrs = {"LeakyRelu": {"alpha": 0.13}, "HardSigmoid": {"alpha": 0.3, "beta": 0.55}}.get(op, {})
    for trial in range(6):
        s_in, s_out = np.float32(rng.uniform(0.01, 0.08)), np.float32(rng.uniform(0.002, 0.04))
        zi, zo = (dt(rng.integers(info.min, info.max + 1)) for _ in range(2))
        if trial == 0:
            zo = dt(info.min)
        inits = {"si": s_in, "zi": np.array(zi), "so": s_out, "zo": np.array(zo)}
        if form == "QOperator":
            nodes = [h.make_node("QuantizeLinear", ["x", "si", "zi"], ["q"]),
                     h.make_node(f"QLinear{op}", ["q", "si", "zi", "so", "zo"], ["qy"], domain="com.microsoft",
                                 **attrs),
                     h.make_node("DequantizeLinear", ["qy", "so", "zo"], ["y"])]
        else:
            nodes = [h.make_node("QuantizeLinear", ["x", "si", "zi"], ["q"]),
                     h.make_node("DequantizeLinear", ["q", "si", "zi"], ["dq"]),
                     h.make_node(op, ["dq"], ["f"], **attrs),
                     h.make_node("QuantizeLinear", ["f", "so", "zo"], ["qy"]),
                     h.make_node("DequantizeLinear", ["qy", "so", "zo"], ["y"])]
        model = _onnx_model(nodes, inits, ms=form == "QOperator")
        m = fixq.import_onnx(model)
        want = {"Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu"}.get(op) or _FLOAT_OPS[op]
        assert [s["op"] for s in m.steps] == [want]
        # every input value: x sweeps the whole int8 / uint8 range of the input quantization
        q = np.arange(256, dtype=np.uint8).view(dt).astype(np.float32)
        x = np.repeat(((q - float(zi)) * s_in)[:, None], 6, axis=1).astype(np.float32)
        np.testing.assert_array_equal(m.run(x), ort_run(model, x), err_msg=f"{s_in} {zi} {s_out} {zo}")
