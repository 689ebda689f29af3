"""The C plan's 1x1 convolution of few output channels with XNNPACK's fp32 output stage
(src/fixq/_csrc/engine_pw__avx2.c, __avx512vnni.c: the accumulators laid out as y, the flat output stage over
them a vector at a time with the channels' scales repeated) against the numpy steps, bit for bit, on every CPU
path: 1 to 70 pixels (the tiles' 4 or 8 rows and their tails, blocks of whole pixels), input and output channel
counts on every tail of the 4-byte groups and the 8- and 16-lane vectors (rows of 8, 24 and 40 channels: the
AVX-512 tile's 32-byte stores; past the kernel's k <= 64, n <= 48, where the GEMM runs), per tensor and per
channel, every target's epilogue, int8 and uint8 activations."""
import numpy as np
import pytest

from fixq import graph as G
from fixq.quantizer import quantize_model

from test_engine import calib_batches, graph_of
from test_engine_exec import assert_same

# (input channels, output channels)
SIZES = [(1, 1), (3, 5), (4, 8), (8, 8), (16, 16), (5, 17), (24, 8), (17, 24), (8, 48), (33, 47), (64, 48),
         (61, 40), (9, 40), (2, 24), (65, 8), (16, 49)]


def _rows(rng, n, k, sc):
    x = (rng.standard_normal((n, k)) * 1.5).astype(np.float32)
    x[1] = np.where(np.arange(k) % 3, 1e6, -1e6)  # the input at its dtype's ends
    x[2] = sc * (np.arange(k) % 301 - 150 + np.float32(0.5))  # ties
    return x


def _linear(rng, k, n, activations, target, rounding, per_channel):
    w = {"fc.weight": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
         "fc.bias": rng.standard_normal(n).astype(np.float32)}
    g = G.validate(graph_of([{"name": "fc", "op": "linear", "inputs": ["x"]}], ["fc"], (k,)), w)
    m = quantize_model(g, calib_batches(rng, (k,), n=2, batch=8), activations=activations, target=target,
                       rounding=rounding, per_channel=per_channel)
    assert m._engine is not None
    return m


@pytest.mark.parametrize("k,n", SIZES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_pointwise_rows_equal_the_numpy_steps(isa, k, n, activations):
    """A linear layer's rows are a 1x1 convolution's pixels: every count of them from 1 to 70 against the
    numpy steps of all 70, per channel and per tensor."""
    rng = np.random.default_rng(k * 100 + n)
    for target, rounding, per_channel in (("xnnpack", "fp32", True), (None, "fp32", False)):
        m = _linear(rng, k, n, activations, target, rounding, per_channel)
        x = _rows(rng, 70, k, np.float32(m.qparams(m.input)[0]))
        want = m.run_all(x, engine=False)["fc"]
        for rows in range(1, 71):
            np.testing.assert_array_equal(m.run_all(x[:rows])["fc"], want[:rows], err_msg=f"{rows} rows")


@pytest.mark.parametrize("target", [None, "tflite", "tflite-reference", "xnnpack", "gemmlowp", "onnxruntime"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_pointwise_conv_with_each_target_epilogue(isa, target, activations):
    """1x1 convolutions on 9x9 and 17x17 pixels (mobilenet_v2's maps) with each runtime's output stage: fp32
    ones take the kernel, the others the GEMM."""
    rng = np.random.default_rng(11)
    for cin, cout, hw in ((8, 48, (9, 9)), (48, 8, (9, 9)), (16, 24, (17, 17)), (24, 16, (5, 7)), (7, 13, (3, 3))):
        w = {"c.weight": (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32),
             "c.bias": rng.standard_normal(cout).astype(np.float32)}
        nodes = [{"name": "c", "op": "conv2d", "inputs": ["x"], "stride": 1, "padding": 0},
                 {"name": "r", "op": "relu", "inputs": ["c"]}]
        g = G.validate(graph_of(nodes, ["r"], (cin,) + hw), w)
        m = quantize_model(g, calib_batches(rng, (cin,) + hw, n=2, batch=4), activations=activations,
                           target=target, rounding="fp32", per_channel=True)
        x = (rng.standard_normal((3, cin) + hw) * 1.5).astype(np.float32)
        x[1] = np.where(np.arange(x[1].size).reshape(x[1].shape) % 3, 1e6, -1e6)
        assert_same(m, x)
