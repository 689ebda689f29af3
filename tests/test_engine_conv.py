"""The C plan's direct convolution (src/fixq/_csrc/engine_conv.c: a conv's patches read from a padded sample
where they lie, the weights packed once, the output stage on rows of lcm(O, 16) accumulators) and the linear
layers at batch 1 that take it, against the numpy steps (the int64 arithmetic of the reference), bit for bit,
on every CPU path: kernel sizes, strides, padding, dilation, channel counts on every tail of the tiles, every
target's epilogue, int8 and uint8 activations, inputs at their dtype's ends."""
import numpy as np
import pytest

from fixq import graph as G
from fixq.quantizer import quantize_model

from test_engine import calib_batches, graph_of
from test_engine_exec import assert_same

# (input channels, output channels, kernel, stride, padding, dilation)
SHAPES = [(1, 16, (9, 3), (2, 2), (4, 1), 1), (2, 8, 3, 1, 1, 1), (8, 4, 3, 1, 1, 1), (3, 8, 3, 2, 1, 1),
          (3, 5, 3, 2, 0, 1), (5, 3, 2, 1, 0, 1), (4, 17, 3, 1, 2, 2), (7, 9, (1, 3), (1, 2), (0, 1), (1, 2)),
          (1, 1, 5, 1, 2, 1), (6, 33, 3, 2, 1, 1), (16, 64, 3, 1, 1, 1), (13, 24, 2, 2, 1, 1), (2, 6, 1, 2, 0, 1),
          (3, 12, 1, 1, 1, 1), (8, 65, 3, 1, 1, 1), (8, 6, 1, 1, 0, 1), (24, 8, 1, 1, 0, 1), (5, 9, 1, 1, 0, 1)]


def _conv_model(rng, cin, cout, k, stride, pad, dil, hw, activations, target, rounding, per_channel):
    k = (k, k) if isinstance(k, int) else k
    w = {"c.weight": (rng.standard_normal((cout, cin) + k) / np.sqrt(cin * k[0] * k[1])).astype(np.float32),
         "c.bias": rng.standard_normal(cout).astype(np.float32)}
    nodes = [{"name": "c", "op": "conv2d", "inputs": ["x"], "stride": stride, "padding": pad, "dilation": dil},
             {"name": "r", "op": "relu", "inputs": ["c"]}]
    g = G.validate(graph_of(nodes, ["r"], (cin,) + hw), w)
    m = quantize_model(g, calib_batches(rng, (cin,) + hw, n=2, batch=8), activations=activations, target=target,
                       rounding=rounding, per_channel=per_channel)
    assert m._engine is not None
    return m


def _inputs(rng, shape, sc):
    x = (rng.standard_normal((3,) + shape) * 1.5).astype(np.float32)
    x[1] = np.where(np.arange(x[1].size).reshape(shape) % 3, 1e6, -1e6)  # every input at its dtype's ends
    x[2] = sc * (np.arange(x[2].size).reshape(shape) % 301 - 150 + np.float32(0.5))  # ties
    return x


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil", SHAPES)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_direct_conv_equals_the_numpy_steps(isa, cin, cout, k, stride, pad, dil, activations):
    """Kernels 1x1 (up to 8 output channels, strided, padded) to 9x3, strides 1 and 2, padding, dilation (a run per tap), 1 to 65
    output channels (the 8-channel and 16-channel blocks, their tails, the dense output stage's periods, and
    past 64 the im2col GEMM), per tensor and per channel, fixq's three roundings."""
    rng = np.random.default_rng(cin * 100 + cout)
    hw = (9, 7) if cout <= 17 else (5, 6)
    for rounding, per_channel in (("double", True), ("single", False), ("fp32", True)):
        m = _conv_model(rng, cin, cout, k, stride, pad, dil, hw, activations, None, rounding, per_channel)
        assert_same(m, _inputs(rng, (cin,) + hw, np.float32(m.qparams(m.input)[0])))


@pytest.mark.parametrize("target", ["tflite", "tflite-reference", "xnnpack", "gemmlowp", "onnxruntime"])
def test_direct_conv_with_each_target_epilogue(isa, target):
    """The output stage of each runtime (ruy's x86 epilogue, TFLite's reference, XNNPACK's fp32) on the
    dense rows: channel counts whose period is 1, 2, 4, 8 and none."""
    rng = np.random.default_rng(7)
    for cin, cout, k, stride, pad in ((2, 8, 3, 1, 1), (8, 4, 3, 1, 1), (3, 6, 3, 2, 1), (1, 16, 3, 2, 1),
                                      (4, 7, 2, 1, 0), (5, 40, 3, 1, 1)):
        m = _conv_model(rng, cin, cout, k, stride, pad, 1, (8, 9), "int8", target, "double", True)
        assert_same(m, _inputs(rng, (cin, 8, 9), np.float32(m.qparams(m.input)[0])))


@pytest.mark.parametrize("target", [None, "tflite", "tflite-reference", "xnnpack"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_linear_at_batch_1_equals_the_numpy_steps(isa, target, activations):
    """A linear layer at batch 1 (the direct convolution of its one pixel) against the numpy steps and against
    the same samples run as one batch (the GEMM), input and output sizes on every tail."""
    rng = np.random.default_rng(5)
    for k, n in ((1, 1), (3, 5), (4, 8), (17, 16), (90, 16), (33, 64), (64, 65), (70, 3)):
        w = {"fc.weight": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
             "fc.bias": rng.standard_normal(n).astype(np.float32)}
        g = G.validate(graph_of([{"name": "fc", "op": "linear", "inputs": ["x"]}], ["fc"], (k,)), w)
        m = quantize_model(g, calib_batches(rng, (k,), n=2, batch=8), activations=activations, target=target,
                           per_channel=bool(k % 2))
        x = _inputs(rng, (k,), np.float32(m.qparams(m.input)[0]))
        want = m.run_all(x, engine=False)["fc"]
        for i in range(3):
            np.testing.assert_array_equal(m.run_all(x[i:i + 1])["fc"], want[i:i + 1])
        assert_same(m, x)
