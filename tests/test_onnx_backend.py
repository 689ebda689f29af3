"""The onnx package's own node tests (``onnx.backend.test.case.node``: the models and the input / output
data that ``onnx/backend/test/data/node/`` is generated from) run through fixq's importer and float
reference.  Every case whose ops the importer handles must either import and match the stored outputs
within 1e-5 of their largest magnitude, or be refused with one line naming the node; the supported and
skipped cases are printed (pytest -s)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx.backend.test.case.node import collect_testcases  # noqa: E402

import fixq.graph as G  # noqa: E402
from fixq.io import OnnxError, import_onnx  # noqa: E402
from fixq.io.onnx import SUPPORTED  # noqa: E402

# node tests fixq must import and run: a change that breaks one of them is a regression
MUST_PASS = {
    "test_conv_with_strides_padding", "test_conv_with_strides_no_padding", "test_basic_conv_with_padding",
    "test_basic_conv_without_padding", "test_conv_with_autopad_same", "test_maxpool_2d_default",
    "test_maxpool_2d_strides", "test_averagepool_2d_default", "test_globalaveragepool",
    "test_gemm_default_single_elem_vector_bias", "test_gemm_alpha", "test_gemm_beta", "test_matmul_2d",
    "test_batchnorm_example", "test_softmax_example",
}


def _cases():
    with np.errstate(all="ignore"):
        cases = collect_testcases(None)
    return [c for c in cases if c.data_sets and all(n.op_type in SUPPORTED for n in c.model.graph.node)]


def _run_case(case):
    """'pass', or the reason fixq refuses the case; an assertion error on a wrong result."""
    inputs, outputs = case.data_sets[0]
    graph_inputs = [i.name for i in case.model.graph.input
                    if i.name not in {t.name for t in case.model.graph.initializer}]
    if not inputs or np.asarray(inputs[0]).dtype.kind != "f":
        return "the first input is not a float tensor"
    constants = dict(zip(graph_inputs[1:], inputs[1:]))
    try:
        g = import_onnx(case.model, constants=constants)
    except OnnxError as e:
        return str(e)
    x = np.asarray(inputs[0])
    if x.shape[0] == 0:
        return "empty batch"
    got = G.run_float(g, x.astype(np.float32))
    got = got if isinstance(got, tuple) else (got,)
    for y, ref in zip(got, outputs):
        ref = np.asarray(ref)
        assert y.size == ref.size, (case.name, y.shape, ref.shape)
        err = np.abs(y.reshape(ref.shape).astype(np.float64) - ref).max()
        assert err <= 1e-5 * max(np.abs(ref).max(), 1e-30), f"{case.name}: max error {err} vs max {np.abs(ref).max()}"
    return "pass"


def test_onnx_node_tests():
    results = {c.name: _run_case(c) for c in _cases()}
    passed = sorted(n for n, r in results.items() if r == "pass")
    skipped = {n: r for n, r in results.items() if r != "pass"}
    print(f"\nonnx node tests with supported op types: {len(results)}; passed {len(passed)}: {', '.join(passed)}")
    for n in sorted(skipped):
        print(f"  skipped {n}: {skipped[n]}")
    assert MUST_PASS <= set(passed), sorted(MUST_PASS - set(passed))
