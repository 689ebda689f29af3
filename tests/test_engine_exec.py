"""The C executor of static int8 models (src/fixq/_csrc/engine.c) against the numpy steps of
fixq.engine (run_all(engine=False)), bit for bit, on random graphs with every op, on every CPU path."""
import numpy as np
import pytest

from fixq import graph as G, layout as L
from fixq.quantizer import quantize_model

from test_engine import calib_batches, every_op_model, graph_of


def random_model(rng):
    """A random NCHW graph: conv (kernel, stride, padding, dilation, groups), depthwise with a channel
    multiplier, relu/relu6 fused and standalone, max/avg pools with padding, residual add and mul,
    concat on C, H or W (inputs at other scales), global pool or flatten, linear, softmax; several
    outputs, one of them 4-D."""
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(6, 10)), int(rng.integers(6, 10))
    weights, nodes = {}, []
    cur, shape = "x", (c, h, w)
    count = iter(range(100))

    def r(*s):
        return (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)

    def conv(src, shp, out_c, k, stride=1, pad=0, dil=1, groups=1, bias=True):
        name = f"conv{next(count)}"
        weights[f"{name}.weight"] = r(out_c, shp[0] // groups, k, k)
        if bias:
            weights[f"{name}.bias"] = r(out_c)
        nodes.append({"name": name, "op": "conv2d", "inputs": [src], "stride": stride, "padding": pad,
                      "dilation": dil, "groups": groups})
        span = dil * (k - 1) + 1
        return name, (out_c, (shp[1] + 2 * pad - span) // stride + 1, (shp[2] + 2 * pad - span) // stride + 1)

    def node(op, inputs, **kw):
        name = f"{op}{next(count)}"
        nodes.append({"name": name, "op": op, "inputs": inputs, **kw})
        return name

    # conv with groups, stride, padding, dilation
    groups = int(rng.choice([g for g in (1, 2, 3, 4) if c % g == 0]))
    k = int(rng.integers(1, 4))
    cur, shape = conv(cur, shape, groups * int(rng.integers(1, 4)), k, stride=int(rng.integers(1, 3)),
                      pad=int(rng.integers(0, k + 1)), dil=int(rng.integers(1, 3)) if k > 1 else 1, groups=groups,
                      bias=bool(rng.integers(0, 2)))
    outputs = [cur]  # a 4-D output; the relu after it stays a step of its own
    cur = node(str(rng.choice(["relu", "relu6"])), [cur])
    # depthwise with a channel multiplier, fused relu6
    cur, shape = conv(cur, shape, shape[0] * int(rng.integers(1, 3)), 3, pad=1, groups=shape[0])
    cur = node("relu6", [cur])
    # residual add or mul through a 1x1 conv
    side, _ = conv(cur, shape, shape[0], 1)
    cur = node(str(rng.choice(["add", "mul"])), [side, cur])
    # a pool with padding
    k = int(rng.integers(2, 4))
    cur = node(str(rng.choice(["maxpool2d", "avgpool2d"])), [cur], kernel=k, stride=int(rng.integers(1, 3)),
               padding=int(rng.integers(0, k // 2 + 1)))
    ph = (shape[1] + 2 * nodes[-1]["padding"] - k) // nodes[-1]["stride"] + 1
    pw = (shape[2] + 2 * nodes[-1]["padding"] - k) // nodes[-1]["stride"] + 1
    shape = (shape[0], ph, pw)
    # concat of the pooled tensor and a conv of it (another scale) on C, H or W
    other, _ = conv(cur, shape, shape[0], 1)
    axis = int(rng.integers(1, 4))
    cur = node("concat", [cur, other], axis=axis)
    shape = tuple(d * 2 if i + 1 == axis else d for i, d in enumerate(shape))
    # to 2-D, a concat of features, linear heads, softmax
    flat = node(str(rng.choice(["flatten", "global_avgpool"])), [cur])
    feats = int(np.prod(shape)) if nodes[-1]["op"] == "flatten" else shape[0]
    gap = node("global_avgpool", [cur])
    cat = node("concat", [flat, gap])
    weights["fc.weight"], weights["fc.bias"] = r(5, feats + shape[0]), r(5)
    nodes.append({"name": "fc", "op": "linear", "inputs": [cat]})
    outputs.append("fc")
    if rng.integers(0, 2):
        outputs.append(node("softmax", ["fc"]))
    return weights, graph_of(nodes, outputs, (c, h, w))


def assert_same(m, x):
    c_env, py_env = m.run_all(x), m.run_all(x, engine=False)
    assert set(c_env) == set(py_env)
    for t, want in py_env.items():
        got = c_env[t]
        assert got.dtype == want.dtype and got.shape == want.shape, t
        np.testing.assert_array_equal(got, want, err_msg=t)
    # run: the outputs, raw and dequantized, in any batch split
    raw = m.run(x, raw=True)
    raw = raw if isinstance(raw, tuple) else (raw,)
    for t, y in zip(m.outputs, raw):
        np.testing.assert_array_equal(y, L.to_external(py_env[t]))
    one = m.run(x[1:2])
    one = one if isinstance(one, tuple) else (one,)
    full = m.run(x)
    full = full if isinstance(full, tuple) else (full,)
    for a, b in zip(one, full):
        np.testing.assert_array_equal(a, b[1:2])


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_random_graphs_c_equals_numpy(isa, seed, rounding, activations):
    rng = np.random.default_rng(seed)
    w, spec = random_model(rng)
    g = G.validate(spec, w)
    shape = g.input_shape[1:]
    m = quantize_model(g, calib_batches(rng, shape, n=2, batch=8), rounding=rounding, activations=activations,
                       per_channel=bool(seed % 2))
    assert m._engine is not None
    assert_same(m, (rng.standard_normal((3,) + shape) * 1.5).astype(np.float32))


@pytest.mark.parametrize("weights", ["ternary", "binary"])
def test_lowbit_weights_run_in_c(isa, weights):
    rng = np.random.default_rng(11)
    w, spec = every_op_model(rng)
    m = quantize_model(G.validate(spec, w), calib_batches(rng, (3, 9, 6)), weights=weights, activations="uint8")
    assert m._engine is not None
    assert_same(m, rng.standard_normal((4, 3, 9, 6)).astype(np.float32))


def test_batches_split_into_chunks(isa):
    """A batch larger than one chunk of the C plan gives the rows of the whole batch."""
    rng = np.random.default_rng(4)
    w, spec = every_op_model(rng)
    m = quantize_model(G.validate(spec, w), calib_batches(rng, (3, 9, 6)))
    x = rng.standard_normal((300, 3, 9, 6)).astype(np.float32)
    fc, sm = m.run(x, raw=True)
    env = m.run_all(x, engine=False)
    np.testing.assert_array_equal(fc, env["fc"])
    np.testing.assert_array_equal(sm, env["sm"])
    np.testing.assert_array_equal(m.run(x, threads=3, raw=True)[0], fc)
    np.testing.assert_array_equal(m.run(x.astype(np.float64)[::-1])[0], m.run(np.ascontiguousarray(x[::-1]))[0])


def heavy_model(rng):
    """Convs of ~2.7 M multiply-adds per sample: every sample is worth a worker thread of its own."""
    w = {"c1.weight": rng.standard_normal((32, 2, 3, 3)).astype(np.float32) / 4,
         "c2.weight": rng.standard_normal((64, 32, 3, 3)).astype(np.float32) / 17,
         "c2.bias": rng.standard_normal(64).astype(np.float32),
         "fc.weight": rng.standard_normal((5, 64)).astype(np.float32) / 8}
    nodes = [{"name": "c1", "op": "conv2d", "inputs": ["x"], "padding": 1},
             {"name": "r1", "op": "relu", "inputs": ["c1"]},
             {"name": "c2", "op": "conv2d", "inputs": ["r1"], "padding": 1},
             {"name": "gap", "op": "global_avgpool", "inputs": ["c2"]},
             {"name": "fc", "op": "linear", "inputs": ["gap"]}]
    return quantize_model(G.validate(graph_of(nodes, ["fc", "c2"], (2, 12, 12)), w),
                          calib_batches(rng, (2, 12, 12), n=2, batch=8), activations="uint8")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_run_chunks_in_parallel(isa, threads):
    """threads=N runs chunks of the batch on up to N threads: the same integers as the numpy steps and the
    same floats as threads=1, for batches smaller than N, of one chunk per thread (a ragged last one) and,
    on the small every-op model, of many chunks per thread."""
    rng = np.random.default_rng(7)
    w, spec = every_op_model(rng)
    models = [(heavy_model(rng), (2, 12, 12), (1, 2, 5, 8)),
              (quantize_model(G.validate(spec, w), calib_batches(rng, (3, 9, 6))), (3, 9, 6), (67, 1001))]
    for m, shape, sizes in models:
        for n in sizes:
            x = rng.standard_normal((n,) + shape).astype(np.float32)
            env = m.run_all(x, engine=False)
            for t, y in zip(m.outputs, m.run(x, threads=threads, raw=True)):
                np.testing.assert_array_equal(y, L.to_external(env[t]))
            for a, b in zip(m.run(x, threads=threads), m.run(x)):
                np.testing.assert_array_equal(a, b)
            x[-1, 0, 0, 0] = np.nan  # a failure in the last chunk stops the run with its error
            with pytest.raises(ValueError, match="input contains NaN"):
                m.run(x, threads=threads)


def test_concurrent_runs_from_threads():
    """Runs from several Python threads at once (the GIL is released) each get their own buffers."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(6)
    w, spec = every_op_model(rng)
    m = quantize_model(G.validate(spec, w), calib_batches(rng, (3, 9, 6)))
    xs = [rng.standard_normal((n, 3, 9, 6)).astype(np.float32) for n in (1, 7, 40, 130)]
    want = [m.run(x, raw=True) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda i: m.run(xs[i % 4], threads=1 + i % 3, raw=True), range(64)))
    for i, g in enumerate(got):
        for a, b in zip(g, want[i % 4]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("c,k,stride,pad,dil", [(16, 3, 1, 1, 1), (33, 2, 2, 0, 1), (20, 3, 1, 2, 2), (48, 1, 1, 0, 1),
                                                (32, 4, 1, 2, 1), (24, 3, 2, 1, 1), (13, 3, 1, 1, 2), (8, 2, 1, 0, 1),
                                                (5, 3, 1, 1, 1), (63, 3, 1, 1, 1), (64, 5, 2, 2, 1)])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_depthwise_blocks_of_16_channels(isa, c, k, stride, pad, dil, activations):
    """Depthwise with 5 to 64 channels (the AVX2 tap-pair blocks of 16, then of 8, and their scalar tail; the
    AVX-512 blocks of 32 under a mask), odd and even tap counts, stride, dilation and padding."""
    rng = np.random.default_rng(c + k)
    w = {"pw.weight": rng.standard_normal((c, 2, 1, 1)).astype(np.float32),
         "dw.weight": (rng.standard_normal((c, 1, k, k)) / k).astype(np.float32),
         "dw.bias": rng.standard_normal(c).astype(np.float32)}
    nodes = [{"name": "pw", "op": "conv2d", "inputs": ["x"]},
             {"name": "dw", "op": "conv2d", "inputs": ["pw"], "stride": stride, "padding": pad, "dilation": dil,
              "groups": c}]
    g = G.validate(graph_of(nodes, ["dw"], (2, 7, 6)), w)
    m = quantize_model(g, calib_batches(rng, (2, 7, 6), n=2, batch=8), activations=activations,
                       per_channel=True)
    assert m._engine is not None
    assert_same(m, (rng.standard_normal((3, 2, 7, 6)) * 1.5).astype(np.float32))


@pytest.mark.parametrize("c,k,stride,pad,dil", [(24, 3, 1, 1, 1), (24, 3, 2, 1, 1), (48, 3, 1, 1, 1), (40, 3, 2, 0, 1),
                                                (7, 3, 1, 2, 2), (72, 5, 1, 2, 1), (17, 2, 2, 1, 1), (96, 1, 1, 0, 1),
                                                (9, 7, 1, 3, 1), (33, 3, 1, 1, 1), (64, 3, 1, 0, 1), (20, 3, 2, 2, 2),
                                                (7, 3, 2, 1, 1)])
@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_depthwise_output_stage_in_registers(isa, c, k, stride, pad, dil, rounding, activations):
    """Depthwise of multiplier 1 with the output stage in registers (engine_dwconv__*.c: 3x3 taps unrolled, other
    kernels looped; blocks of 32 channels on AVX-512, of 16 on AVX2, each with its tail; 3x3 of stride 1 or 2 on
    AVX-512 VNNI through the map of tap triples: at stride 1 an output row's lanes in phases of channels (C = 7, 20,
    24, 33, 48, 64: 7, 5, 3, 33, 3, 4 phases), at stride 2 16 channels a pixel) on every rounding of the output
    stage: the numpy steps' integers, the padding's zero point folded into the bias included."""
    rng = np.random.default_rng(c * k + stride)
    w = {"pw.weight": rng.standard_normal((c, 2, 1, 1)).astype(np.float32),
         "dw.weight": (rng.standard_normal((c, 1, k, k)) / k).astype(np.float32),
         "dw.bias": rng.standard_normal(c).astype(np.float32)}
    nodes = [{"name": "pw", "op": "conv2d", "inputs": ["x"]},
             {"name": "dw", "op": "conv2d", "inputs": ["pw"], "stride": stride, "padding": pad, "dilation": dil,
              "groups": c},
             {"name": "act", "op": "relu6", "inputs": ["dw"]}]
    g = G.validate(graph_of(nodes, ["act"], (2, 9, 8)), w)
    m = quantize_model(g, calib_batches(rng, (2, 9, 8), n=2, batch=8), activations=activations,
                       per_channel=True, rounding=rounding)
    assert m._engine is not None and any(s.get("depthwise") for s in m.steps)
    assert_same(m, (rng.standard_normal((3, 2, 9, 8)) * 1.5).astype(np.float32))


@pytest.mark.parametrize("c,stride", [(24, (1, 2)), (24, (2, 1)), (13, (2, 1)), (40, (1, 2))])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_depthwise_3x3_strides_apart(isa, c, stride, activations):
    """A 3x3 depthwise whose row and column strides differ (AVX-512 VNNI: the map of rows with a stride of 2 down,
    the map of columns with one of 1 down; AVX2: the map of pairs, the tap-pair blocks)."""
    rng = np.random.default_rng(c + 7 * stride[0])
    w = {"pw.weight": rng.standard_normal((c, 2, 1, 1)).astype(np.float32),
         "dw.weight": (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32),
         "dw.bias": rng.standard_normal(c).astype(np.float32)}
    nodes = [{"name": "pw", "op": "conv2d", "inputs": ["x"]},
             {"name": "dw", "op": "conv2d", "inputs": ["pw"], "stride": list(stride), "padding": 1, "groups": c}]
    g = G.validate(graph_of(nodes, ["dw"], (2, 11, 10)), w)
    m = quantize_model(g, calib_batches(rng, (2, 11, 10), n=2, batch=8), activations=activations,
                       per_channel=True)
    assert m._engine is not None and any(s.get("depthwise") for s in m.steps)
    assert_same(m, (rng.standard_normal((3, 2, 11, 10)) * 1.5).astype(np.float32))


@pytest.mark.parametrize("c,mult,k,stride,pad", [(16, 2, 3, 1, 1), (2, 8, 3, 2, 1), (3, 3, 2, 1, 0), (5, 5, 3, 1, 1),
                                                 (20, 2, 3, 1, 1), (33, 2, 3, 2, 1)])
@pytest.mark.parametrize("rounding", ["double", "fp32"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_depthwise_channel_multiplier(isa, c, mult, k, stride, pad, rounding, activations):
    """Depthwise with a channel multiplier (the input channels repeated into an image of the output's, a
    multiplier of 2 16 channels a move and the rest one by one; then on AVX2 and AVX-512 the output stage in
    registers, 3x3 on AVX-512 VNNI through the map of tap triples, made from that image flipped)."""
    rng = np.random.default_rng(c * mult + k)
    w = {"pw.weight": rng.standard_normal((c, 2, 1, 1)).astype(np.float32),
         "dw.weight": (rng.standard_normal((c * mult, 1, k, k)) / k).astype(np.float32),
         "dw.bias": rng.standard_normal(c * mult).astype(np.float32)}
    nodes = [{"name": "pw", "op": "conv2d", "inputs": ["x"]},
             {"name": "dw", "op": "conv2d", "inputs": ["pw"], "stride": stride, "padding": pad, "groups": c}]
    g = G.validate(graph_of(nodes, ["dw"], (2, 7, 6)), w)
    m = quantize_model(g, calib_batches(rng, (2, 7, 6), n=2, batch=8), activations=activations,
                       per_channel=True, rounding=rounding)
    assert m._engine is not None and any(s.get("depthwise") for s in m.steps)
    assert_same(m, (rng.standard_normal((3, 2, 7, 6)) * 1.5).astype(np.float32))


# Every target runs on the C plan: fixq's kernel modes where a recipe is one (gemm_out_stage, TFLite's
# fixed-point ADD/MUL, the four float32 QUANTIZE forms), the plan's element-by-element forms of the
# others (ruy's x86 epilogue, TFLite's reference float64 rounding, ONNX Runtime's and XNNPACK's ADD/MUL),
# except ONNX Runtime's average pool, for a conv-only model, a CNN with a linear head, and a random model
# with add and mul.
TARGETS = ("gemmlowp", "tflite", "tflite-reference", "xnnpack", "onnxruntime")


def _target_models(rng):
    w, _ = every_op_model(rng)
    conv = [{"name": "c1", "op": "conv2d", "inputs": ["x"], "padding": 1},
            {"name": "r", "op": "relu6", "inputs": ["c1"]},
            {"name": "gap", "op": "global_avgpool", "inputs": ["r"]}]
    cw = {"c1.weight": w["c1.weight"], "c1.bias": w["c1.bias"]}
    yield G.validate(graph_of(conv, ["gap"], (3, 9, 6)), cw)
    yield G.validate(graph_of(conv + [{"name": "fc", "op": "linear", "inputs": ["gap"]}], ["fc"], (3, 9, 6)),
                     dict(cw, **{"fc.weight": rng.standard_normal((4, 8)).astype(np.float32)}))
    yield G.validate(*reversed(random_model(rng)))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_targets_run_in_c_bit_for_bit_as_their_numpy_recipes(isa, target, activations):
    rng = np.random.default_rng(12)
    for g in _target_models(rng):
        m = quantize_model(g, calib_batches(rng, g.input_shape[1:], n=2, batch=8), activations=activations,
                           target=target)
        # ORT's QLinearAveragePool (float32 sums) has no C form yet: those models run the numpy steps
        ort_pool = target == "onnxruntime" and any(n.op == "avgpool2d" for n in g.nodes)
        assert (m._engine is None) == ort_pool, g.nodes
        x = (rng.standard_normal((5,) + g.input_shape[1:]) * 2).astype(np.float32)
        sc = np.float32(m.qparams(m.input)[0])
        x[0] = (sc * (np.arange(x[0].size) % 301 - 150 + np.float32(0.5))).reshape(x[0].shape)  # ties
        x[1] = 0
        assert_same(m, x)


@pytest.mark.parametrize("target", ["tflite", "tflite-reference", "xnnpack"])
@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_target_epilogue_on_every_block_of_accumulators(isa, target, activations):
    """A target's GEMM epilogue runs on each block of accumulators as the GEMM makes it: grouped 1x1 and 3x3
    convolutions of 2 x 56 output channels (several panel groups a group) on 144 pixels a sample (several
    blocks of rows), and a linear of 60 outputs, against the numpy steps."""
    rng = np.random.default_rng(31)
    w = {"c1.weight": rng.standard_normal((112, 4, 1, 1)).astype(np.float32),
         "c2.weight": (rng.standard_normal((112, 56, 3, 3)) / 9).astype(np.float32),
         "c2.bias": rng.standard_normal(112).astype(np.float32),
         "fc.weight": rng.standard_normal((60, 112)).astype(np.float32)}
    nodes = [{"name": "c1", "op": "conv2d", "inputs": ["x"], "groups": 2},
             {"name": "c2", "op": "conv2d", "inputs": ["c1"], "padding": 1, "groups": 2},
             {"name": "gap", "op": "global_avgpool", "inputs": ["c2"]},
             {"name": "fc", "op": "linear", "inputs": ["gap"]}]
    g = G.validate(graph_of(nodes, ["fc"], (8, 12, 12)), w)
    m = quantize_model(g, calib_batches(rng, (8, 12, 12), n=2, batch=4), activations=activations, target=target,
                       per_channel=True)
    assert m._engine is not None
    assert_same(m, (rng.standard_normal((3, 8, 12, 12)) * 2).astype(np.float32))


def test_relu6_bounds_are_each_targets(isa):
    """relu6's top is zp + round(6 / s): fixq rounds 6.0 / s in float64 half to even, TFLite in float32 half
    away, ONNX Runtime through QuantizeLinear (float32, half to even); fused and standalone alike."""
    from fixq import targets
    rng = np.random.default_rng(5)
    w = {"fc.weight": rng.standard_normal((6, 5)).astype(np.float32)}
    spec = graph_of([{"name": "fc", "op": "linear", "inputs": ["x"]},
                     {"name": "r", "op": "relu6", "inputs": ["fc"]},
                     {"name": "r2", "op": "relu6", "inputs": ["r"]}], ["r2"], (5,))
    g = G.validate(spec, w)
    tie = np.float32(0.24489796)  # 6 / tie is 24.5 in float32, 24.4999998 in float64
    tops = {}
    for target in (None, "tflite", "onnxruntime"):
        m = quantize_model(g, calib_batches(rng, (5,)), target=target)
        fused = next(s for s in m.steps if s["op"] == "linear")
        sc, zp = m.qparams("r")
        assert (fused["out_min"], fused["out_max"]) == targets.activation_range("relu6", sc, zp, np.int8, target)
        m.arrays["t:r:scale"] = m.arrays["t:r2:scale"] = tie  # the standalone relu6 reads its own scale
        m.arrays["t:r:zero_point"] = m.arrays["t:r2:zero_point"] = np.int32(-128)
        from fixq.engine import Model
        m = Model(m.meta, m.arrays, target=target)
        x = (rng.standard_normal((64, 5)) * 20).astype(np.float32)
        env = m.run_all(x)
        tops[target] = int(env["r2"].max())
        if m._engine is not None:
            assert_same(m, x)
    assert tops == {None: -128 + 24, "tflite": -128 + 25, "onnxruntime": -128 + 24}
