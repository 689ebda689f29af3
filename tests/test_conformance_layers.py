"""fixq against LiteRT's golden vectors of the int8 activations, SOFTMAX, MEAN, SUB and QUANTIZE (requantize)
(tests/conformance/cases, made by tests/conformance/generate_tflite_ops.py): each case with its target, bit
for bit."""
from pathlib import Path

import numpy as np
import pytest

from fixq import targets

from test_conformance import assert_same_as_runtime

TABLE_OP = {"logistic": "sigmoid", "tanh": "tanh", "hard_swish": "hardswish", "leaky_relu": "leaky_relu"}
LAYER_OPS = tuple(TABLE_OP) + ("softmax", "mean", "requantize", "sub")
CASES = sorted(p for p in (Path(__file__).parent / "conformance" / "cases").glob("*.npz")
               if p.stem.split("__")[1] in LAYER_OPS)


def _q(z, name):
    return np.float32(z[f"{name}_scale"].reshape(-1)[0]), int(z[f"{name}_zero_point"].reshape(-1)[0])


def emulate(z):
    target, op, y = str(z["target"]), str(z["op"]), z["y"]
    if op == "sub":
        return targets.sub(z["a"], z["b"], target, *_q(z, "a"), *_q(z, "b"), *_q(z, "y"), dtype=y.dtype)
    x = z["x"]
    (s_in, zp_in), (s_out, zp_out) = _q(z, "x"), _q(z, "y")
    if op in TABLE_OP:
        attrs = {"alpha": float(z["alpha"])} if "alpha" in z.files else {}
        table = targets.table(target, TABLE_OP[op], attrs, s_in, zp_in, s_out, zp_out, x.dtype)
        return table[x.view(np.uint8)]
    if op == "softmax":
        return targets.softmax(x, target, s_in, float(z["beta"]), s_out, zp_out, y.dtype)
    if op == "mean":
        return targets.mean_hw(x, target, s_in, zp_in, s_out, zp_out, bool(z["keep_dims"]), y.dtype).reshape(y.shape)
    return targets.requantize8(x, target, s_in, zp_in, s_out, zp_out, y.dtype)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_bit_exact(path):
    z = np.load(path, allow_pickle=False)
    assert_same_as_runtime(emulate(z), z["y"])


def test_every_layer_op_has_cases_for_every_tflite_target():
    seen = {tuple(p.stem.split("__")[:2]) for p in CASES}
    for target in ("tflite", "tflite-reference", "xnnpack"):
        for op in LAYER_OPS:
            assert (target, op) in seen, (target, op)
