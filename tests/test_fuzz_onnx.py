"""A structure-aware fuzzer for the ONNX reader (fixq.io.import_onnx, Model.load of a .onnx path): from
small valid float and quantized (QOperator and QDQ) models built with onnx.helper, hypothesis edits
node attributes, the input's dims, initializer dims, data types and sizes, and names toward the edges.
Every outcome is a validated float graph, an int8 model that runs, or one line (a ValueError: OnnxError,
ArchiveError, GraphError); never a crash (tools/sanitize.sh runs it under ASan/UBSan) or another
exception.  External data must stay in the model's directory.

Budget: FIXQ_FUZZ_EXAMPLES examples per test (default 40, a few seconds; docs/security.md)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fixq.graph as G  # noqa: E402
from fixq.engine import Model  # noqa: E402
from fixq.io import OnnxError, import_onnx  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("FIXQ_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)
INTS = [0, 1, 2, 3, -1, -2, 2**31 - 1, 2**31, 2**31 + 1, 2**32, 2**63 - 1, -(2**63), 2**16, 2**16 + 1, 2**23 + 1]
ATTRS = ["strides", "pads", "dilations", "group", "kernel_shape", "axis", "transB", "alpha", "auto_pad",
         "count_include_pad", "ceil_mode", "to", "start", "end", "perm", "axes", "keepdims", "channels_last"]
NAMES = ["t:x", "../../x", "a/b", "", "x" * 300, "x", "é", "a b", "ok_name.1-2", "_", "..", "y"]


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def _model(nodes, inits, in_shape, out="y", opset=13):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


def float_model():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", strides=[1, 1], pads=[1, 1, 1, 1],
                              dilations=[1, 1], group=1),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], name="fc", transB=1),
             helper.make_node("Softmax", ["g"], ["y"], name="sm", axis=-1)]
    inits = [_init("w", rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
             _init("b", rng.standard_normal(4).astype(np.float32)),
             _init("fw", rng.standard_normal((5, 16)).astype(np.float32)),
             _init("fb", rng.standard_normal(5).astype(np.float32))]
    return _model(nodes, inits, ["N", 2, 4, 4])


def qoperator_model():
    rng = np.random.default_rng(2)
    s, z = np.float32(0.05), np.int8(0)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("QLinearConv", ["xq", "s", "z", "w", "ws", "z", "s", "z", "b"], ["c"], name="conv",
                              strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
             helper.make_node("QLinearGlobalAveragePool", ["c", "s", "z", "s", "z"], ["p"], name="gap",
                              domain="com.microsoft", channels_last=0),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("QLinearMatMul", ["f", "s", "z", "fw", "ws", "z", "s", "z"], ["m"], name="fc"),
             helper.make_node("QLinearSigmoid", ["m", "s", "z", "s", "z"], ["sg"], name="sig",
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["sg", "s", "z"], ["y"], name="dq")]
    inits = [_init("s", s), _init("z", z), _init("ws", np.float32(0.02)),
             _init("w", rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)),
             _init("b", rng.integers(-500, 500, 4).astype(np.int32)),
             _init("fw", rng.integers(-127, 128, (4, 3)).astype(np.int8))]
    return _model(nodes, inits, ["N", 2, 4, 4])


def qdq_model():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dq_w", axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], name="dq_b"),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_c"),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="dq_c"),
             helper.make_node("MaxPool", ["cd"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"], name="q_p"),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"], name="dq_y")]
    inits = [_init("s", np.float32(0.05)), _init("z", np.uint8(128)),
             _init("w", rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)),
             _init("ws", np.full(3, 0.02, np.float32)), _init("wz", np.zeros(3, np.int8)),
             _init("b", rng.integers(-500, 500, 3).astype(np.int32)), _init("bs", np.float32(0.001)),
             _init("bz", np.int32(0))]
    return _model(nodes, inits, ["N", 2, 4, 4])


BASES = {"float": float_model, "qoperator": qoperator_model, "qdq": qdq_model}


def _attr_value(draw):
    kind = draw(st.sampled_from(["int", "ints", "float", "string", "tensor"]))
    if kind == "int":
        return draw(st.sampled_from(INTS))
    if kind == "ints":
        return draw(st.lists(st.sampled_from(INTS), min_size=1, max_size=5))
    if kind == "float":
        return draw(st.sampled_from([0.0, -1.0, 1e30, float("inf"), float("nan"), 0.5]))
    if kind == "string":
        return draw(st.sampled_from(["SAME_UPPER", "VALID", "NOTSET", "bogus", ""]))
    return numpy_helper.from_array(np.zeros(draw(st.sampled_from([0, 1, 3])), np.float32), "t")


@st.composite
def edits(draw, base):
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr", "input", "init_dims", "init_data", "init_type", "name",
                                     "reshape"]))
        if kind == "attr":
            nd = draw(st.sampled_from(list(g.node)))
            name = draw(st.sampled_from(ATTRS + [a.name for a in nd.attribute]))
            keep = [a for a in nd.attribute if a.name != name]
            del nd.attribute[:]
            nd.attribute.extend(keep)
            nd.attribute.append(helper.make_attribute(name, _attr_value(draw)))
        elif kind == "input":
            dims = g.input[0].type.tensor_type.shape.dim
            i = draw(st.integers(0, len(dims) - 1))
            dims[i].dim_value = draw(st.sampled_from([v for v in INTS if 0 <= v < 2**63]))
        elif kind == "init_dims":
            t = draw(st.sampled_from(list(g.initializer)))
            del t.dims[:]
            t.dims.extend(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 2**16, 2**31, 2**40, 2**62]), max_size=4)))
        elif kind == "init_data":
            t = draw(st.sampled_from(list(g.initializer)))
            raw = t.raw_data
            t.raw_data = draw(st.sampled_from([raw[:len(raw) // 2], raw + raw, b"", raw[:1]]))
        elif kind == "init_type":
            t = draw(st.sampled_from(list(g.initializer)))
            t.data_type = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8,
                                                TensorProto.INT32, TensorProto.INT64, TensorProto.DOUBLE,
                                                TensorProto.FLOAT16, TensorProto.STRING, TensorProto.BOOL]))
        elif kind == "name":
            nd = draw(st.sampled_from(list(g.node)))
            new = draw(st.sampled_from(NAMES))
            if draw(st.booleans()):
                nd.name = new
            else:  # a tensor renamed where it is made and everywhere it is read
                old = nd.output[0]
                for other in g.node:
                    for j, t in enumerate(other.input):
                        if t == old:
                            other.input[j] = new
                for o in g.output:
                    if o.name == old:
                        o.name = new
                nd.output[0] = new
        elif any(n.op_type == "Flatten" for n in g.node):  # a Reshape of the flattened tensor to an edge shape
            nd = draw(st.sampled_from([n for n in g.node if n.op_type == "Flatten"]))
            shape = draw(st.lists(st.sampled_from([-1, 0, 1, 16, 2**31, -(2**63)]), min_size=1, max_size=4))
            g.initializer.append(_init("shape_" + nd.output[0], np.array(shape, np.int64)))
            nd.op_type = "Reshape"
            del nd.attribute[:]
            nd.input.append("shape_" + nd.output[0])
    return m


def one_line(e):
    assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"
    msg = str(e)
    assert msg and "\n" not in msg, msg


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_import(name):
    out = import_onnx(BASES[name]())
    if isinstance(out, Model):
        out.run(np.zeros((2, 2, 4, 4), np.float32))
    else:
        G.run_float(out, np.zeros((2, 2, 4, 4), np.float32))


@pytest.mark.parametrize("name", sorted(BASES))
def test_edited_models_import_or_fail_in_one_line(name):
    base = BASES[name]()
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)

    @FUZZ
    @given(edits(base))
    def check(m):
        try:
            out = import_onnx(m)
        except Exception as e:  # noqa: BLE001 -- the property: every failure is one ValueError line
            one_line(e)
            return
        if isinstance(out, Model):
            for name in out.meta["tensors"]:
                G.check_name("tensor", name)
            try:
                out.run(x)
            except Exception as e:  # noqa: BLE001
                one_line(e)
        else:
            for nd in out.nodes:
                G.check_name("node", nd.name)

    check()


def test_long_and_odd_names_are_cleaned():
    m = float_model()
    m.graph.node[0].name = "../" + "é" * 50 + "x" * 300
    g = import_onnx(m)
    assert all(len(nd.name) <= G.LIMITS["name_length"] for nd in g.nodes)
    assert all(G.check_name("node", nd.name) for nd in g.nodes)


def test_declared_initializer_size_is_bounded_before_reading():
    m = float_model()
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**20, 2**20])
    with pytest.raises(OnnxError, match=r"initializer 'w': declares dims .* more than 134217728"):
        import_onnx(m)


def test_quantized_import_runs_the_archive_validator():
    # 1100 table steps: more than a static int8 model's C plan holds, refused as read_archive refuses it
    m = qoperator_model()
    g = m.graph
    last = g.node[-1]
    prev = last.input[0]
    for i in range(1100):
        g.node.insert(len(g.node) - 1, helper.make_node("QLinearSigmoid", [prev, "s", "z", "s", "z"], [f"sg{i}"],
                                                        name=f"sig{i}", domain="com.microsoft"))
        prev = f"sg{i}"
    last.input[0] = prev
    with pytest.raises(OnnxError, match=r"^model: key '__meta__': 1104 steps .* at most 1022 steps"):
        import_onnx(m)


def _external(tmp_path, location):
    m = float_model()
    t = m.graph.initializer[0]
    data = t.raw_data
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "m").mkdir(exist_ok=True)
    path = tmp_path / "m" / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path, data


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "link.bin"])
def test_external_data_never_leaves_the_model_directory(tmp_path, location):
    path, data = _external(tmp_path, location)
    (tmp_path / "secret.bin").write_bytes(data)
    os.symlink(tmp_path / "secret.bin", tmp_path / "m" / "link.bin")
    with pytest.raises(OnnxError, match=r"external data must be a file in the model's own directory"):
        import_onnx(str(path))


def test_external_data_inside_the_directory_loads(tmp_path):
    path, data = _external(tmp_path, "w.bin")
    (tmp_path / "m" / "w.bin").write_bytes(data)
    assert import_onnx(str(path)).weights["conv.weight"].shape == (4, 2, 3, 3)
