"""The C plan's GEMMs of a few rows (batch 1 to 3 of a linear layer: the GEMV of a .tflite FULLY_CONNECTED),
which run with the int32 bound proven once per plan and their memory on the stack, against the numpy steps
and the int64 reference, bit for bit, on every CPU path."""
import numpy as np
import pytest

import fixq
from fixq import graph as G
from fixq.quantizer import quantize_model

import gemm_reference as R
from test_engine import calib_batches, graph_of
from test_engine_exec import assert_same

SIZES = (1, 3, 4, 15, 16, 17, 31, 33, 48, 49, 64, 65, 70)


def _mlp(rng, k, n, out):
    w = {"fc1.weight": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
         "fc1.bias": rng.standard_normal(n).astype(np.float32),
         "fc2.weight": (rng.standard_normal((out, n)) / np.sqrt(n)).astype(np.float32)}
    nodes = [{"name": "fc1", "op": "linear", "inputs": ["x"]},
             {"name": "r", "op": "relu", "inputs": ["fc1"]},
             {"name": "fc2", "op": "linear", "inputs": ["r"]}]
    return G.validate(graph_of(nodes, ["fc2"], (k,)), w)


def _inputs(rng, m, k, sc):
    x = (rng.standard_normal((3, k)) * 2).astype(np.float32)
    x[1] = np.where(np.arange(k) % 2, 1e6, -1e6)  # every input at its dtype's ends
    x[2] = sc * (np.arange(k) % 301 - 150 + np.float32(0.5))  # ties
    return x


@pytest.mark.parametrize("target", [None, "gemmlowp", "tflite", "tflite-reference", "xnnpack", "onnxruntime"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_few_rows_equal_the_numpy_steps(isa, target, activations):
    """Input and output sizes with every tail of the tiles (1..70), per tensor and per channel, every target's
    epilogue (None: fixq's own output stage in each rounding), batches of 1, 2 and 3."""
    rng = np.random.default_rng(3)
    for k, n in zip(SIZES, SIZES[::-1]):
        g = _mlp(rng, k, n, int(rng.integers(1, 71)))
        roundings = ("double", "single", "fp32") if target is None else ("double",)
        for rounding in roundings:
            m = quantize_model(g, calib_batches(rng, (k,), n=2, batch=8), activations=activations, target=target,
                               rounding=rounding, per_channel=bool(k % 2))
            assert m._engine is not None
            x = _inputs(rng, 3, k, np.float32(m.qparams(m.input)[0]))
            assert_same(m, x)
            np.testing.assert_array_equal(m.run(x[:2], raw=True), m.run(x, raw=True)[:2])


def test_overflow_is_still_named_at_run_time(isa):
    """A linear whose int32 accumulator could overflow still loads and is refused when run, as before."""
    k = 70000
    w = {"fc.weight": np.ones((1, k), np.float32)}
    g = G.validate(graph_of([{"name": "fc", "op": "linear", "inputs": ["x"]}], ["fc"], (k,)), w)
    rng = np.random.default_rng(0)
    m = quantize_model(g, [np.abs(rng.standard_normal((4, k))).astype(np.float32)], activations="uint8")
    with pytest.raises(OverflowError, match="could overflow"):
        m.run(np.ones((1, k), np.float32))


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_public_gemm_of_few_rows_at_the_extremes(m, dt):
    """fixq_qgemm of 1 to 3 rows with a and b at their dtype's ends (b' = -128: the 16-bit kernels), zero
    points at the ends, every tail of k and n, against the int64 reference on every CPU path."""
    info = np.iinfo(dt)
    rng = np.random.default_rng(m)
    for k in (1, 3, 4, 5, 17, 64, 65, 70):
        for n in (1, 15, 16, 17, 47, 49, 70):
            a = rng.choice([info.min, info.max], (m, k)).astype(dt)
            b = rng.choice([info.min, info.max, 0], (k, n)).astype(dt)
            azp, bzp = int(info.max if k % 2 else info.min), int(rng.integers(info.min, info.max + 1))
            bias = rng.integers(-2**20, 2**20, n, dtype=np.int32)
            acc = R.qmatmul_acc(a, b, azp, bzp, bias)
            ref = R.requantize(acc, "double", 1 << 30, -12)
            for isa in fixq.cpu_info()["supported"]:
                with fixq.using_isa(isa):
                    np.testing.assert_array_equal(fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias,
                                                               out_dtype=np.int32), acc)
                    np.testing.assert_array_equal(fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias,
                                                               multiplier=1 << 30, shift=-12), ref)
