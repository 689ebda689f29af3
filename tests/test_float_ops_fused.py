"""fixq.float_ops.dynamic_linear with its epilogue fused on every CPU path: ``residual=`` and ``act=`` give the
bits of the separate ops (the exact int64 reference of test_float_ops, then numpy's float32 add, then
float_ops.gelu of the same path), on tiles full and partial (rows off every path's tile, columns off the
panel), on the kernels that write float straight from the tile and on the int32 block (weights with zero
points), per row and per tensor, split over threads by rows and by columns; in place into the residual; and
the sequence executor's use of them (a linear then gelu, a linear then a residual add) against its unfused
run."""
import numpy as np
import pytest

import fixq
from fixq import float_ops as F
from test_float_ops import dynamic_linear_ref, one_line_value_error, rows_of

# rows off the 8 / 16 / 4-row tiles and below them, columns off the 16-column panel and the 3-panel tile
SHAPES = [(1, 5, 3), (7, 33, 17), (8, 64, 48), (9, 100, 49), (17, 384, 96), (40, 70, 130), (130, 384, 67),
          (3, 0, 5)]
ACTS = [(None, None), ("gelu", "none"), ("gelu_tanh", "tanh")]


def case(m, k, n, seed, zp=False):
    rng = np.random.default_rng(seed)
    x = rows_of(rng, (m, k), 2.0, 0.3)
    if zp:  # uint8 weights with zero points: the driver hands the int32 block to the epilogue
        w = rng.integers(0, 256, (n, k)).astype(np.uint8)
        w_zp = rng.integers(0, 256, n)
        packed = fixq.pack_weights(w, w_zp)
    else:
        w, w_zp = rng.integers(-128, 128, (n, k)).astype(np.int8), 0
        packed = fixq.pack_weights(w)
    ws = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
    bias = rows_of(rng, n, 1.0, 0.0)
    residual = rows_of(rng, (m, n), 1.5, -0.2)
    return x, w, w_zp, packed, ws, bias, residual


@pytest.mark.parametrize("zp", [False, True])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_fused_epilogue_is_the_separate_ops(isa, m, k, n, granularity, zp):
    x, w, w_zp, packed, ws, bias, residual = case(m, k, n, m * 1000 + k * 10 + n, zp)
    linear = dynamic_linear_ref(x, w, w_zp, ws, bias, granularity)
    summed = linear + residual
    for act, approximate in ACTS:
        plain = linear if act is None else F.gelu(linear, approximate)
        added = summed if act is None else F.gelu(summed, approximate)
        assert np.array_equal(F.dynamic_linear(x, packed, ws, bias, granularity, act=act), plain)
        assert np.array_equal(F.dynamic_linear(x, packed, ws, bias, granularity, residual=residual, act=act), added)
        into = residual.copy()
        y = F.dynamic_linear(x, packed, ws, bias, granularity, residual=into, act=act, out=into)
        assert y is into and np.array_equal(into, added)


@pytest.mark.parametrize("m,k,n,threads", [(20, 384, 200, 2), (61, 70, 500, 3), (300, 1536, 40, 2),
                                           (257, 384, 1536, 2)])
def test_fused_epilogue_thread_splits(isa, m, k, n, threads):
    """Parts that split the rows and parts that split the columns (each makes every row's block): each
    block of y is added to and activated once."""
    x, w, _, packed, ws, bias, residual = case(m, k, n, m + k + n)
    linear = dynamic_linear_ref(x, w, 0, ws, bias, "row")
    want = F.gelu(linear + residual)
    for t in (1, threads):
        assert np.array_equal(F.dynamic_linear(x, packed, ws, bias, threads=t, residual=residual, act="gelu"), want)
        into = residual.copy()
        F.dynamic_linear(x, packed, ws, bias, threads=t, residual=into, out=into)
        assert np.array_equal(into, linear + residual)


def test_fused_epilogue_batch_axes_and_special_values(isa):
    """x [N, L, K], no bias; residual values that make the sum infinite, NaN, -0 pass as numpy's add does."""
    x, w, _, packed, ws, _, _ = case(6, 45, 38, 5)
    x = x.reshape(2, 3, 45)
    residual = rows_of(np.random.default_rng(6), (2, 3, 38))
    residual[0, 0, :3] = [np.inf, -np.inf, np.nan]
    residual[1, 2, 5] = -0.0
    linear = dynamic_linear_ref(x, w, 0, ws, None, "row")
    want = linear + residual
    assert np.array_equal(F.dynamic_linear(x, packed, ws, residual=residual), want, equal_nan=True)
    assert np.array_equal(F.dynamic_linear(x, packed, ws, residual=residual, act="gelu"), F.gelu(want),
                          equal_nan=True)
    out = np.empty_like(want)
    assert F.dynamic_linear(x, packed, ws, out=out) is out and np.array_equal(out, linear)


def test_fused_epilogue_bad_arguments():
    x, _, _, packed, ws, bias, residual = case(4, 8, 5, 9)
    cases = [
        (lambda: F.dynamic_linear(x, packed, ws, act="relu"), "act must be None, 'gelu' or 'gelu_tanh'"),
        (lambda: F.dynamic_linear(x, packed, ws, residual=residual[:3]), r"residual must have y's shape \(4, 5\)"),
        (lambda: F.dynamic_linear(x, packed, ws, residual=residual.astype(np.float64)), "residual must be float32"),
        (lambda: F.dynamic_linear(x, packed, ws, residual=np.asfortranarray(residual)), "C-contiguous"),
        (lambda: F.dynamic_linear(x, packed, ws, out=np.empty((4, 6), np.float32)), "out must be a writeable"),
        (lambda: F.dynamic_linear(x, packed, ws, out=np.empty((4, 5), np.float64)), "out must be float32"),
    ]
    for call, match in cases:
        one_line_value_error(call, match)
    both = np.zeros(40, np.float32)
    one_line_value_error(lambda: F.dynamic_linear(x, packed, ws, residual=both[:20].reshape(4, 5),
                                                  out=both[2:22].reshape(4, 5)), "out overlaps x or residual")
    xs = np.zeros((4, 8), np.float32)
    one_line_value_error(lambda: F.dynamic_linear(xs, fixq.pack_weights(np.ones((8, 8), np.int8)), 1.0, out=xs),
                         "out overlaps x or residual")
    read_only = np.zeros((4, 5), np.float32)
    read_only.flags.writeable = False
    one_line_value_error(lambda: F.dynamic_linear(x, packed, ws, out=read_only), "out must be a writeable")


def test_executor_fuses_gelu_and_residual_adds(isa):
    """The sequence executor runs a dynamic linear read by one gelu, or by one add of a same-shape tensor, with
    that step in its epilogue (into the residual where nothing reads it later): run() gives run_all()'s bits.
    Not fused: an add whose other input is a graph input, is made after the linear, or broadcasts."""
    k = 24
    lin = lambda name, x: {"name": name, "op": "linear", "inputs": [x]}  # noqa: E731
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, "seq", k]}], "dims": {"seq": 16},
            "nodes": [lin("a", "x"), {"name": "ln", "op": "layer_norm", "inputs": ["a"]},
                      lin("up", "ln"), {"name": "act", "op": "gelu", "inputs": ["up"]},
                      lin("up2", "ln"), {"name": "act2", "op": "gelu", "inputs": ["up2"], "approximate": "tanh"},
                      {"name": "h", "op": "add", "inputs": ["act", "act2"]},
                      lin("down", "h"), {"name": "r1", "op": "add", "inputs": ["ln", "down"]},  # into ln
                      lin("b", "r1"), {"name": "r2", "op": "add", "inputs": ["b", "r1"]},  # reads r1: not into
                      lin("c", "r2"), {"name": "r3", "op": "add", "inputs": ["c", "r2"]},  # r2 read later
                      {"name": "r4", "op": "add", "inputs": ["r3", "r2"]},
                      lin("d", "r4"), {"name": "r5", "op": "add", "inputs": ["d", "x"]},  # a graph input
                      lin("e", "r5"), {"name": "f", "op": "scale", "inputs": ["r5"], "value": 0.5},
                      {"name": "r6", "op": "add", "inputs": ["e", "f"]}],  # f made after e
            "outputs": ["r6"]}
    rng = np.random.default_rng(21)
    shapes = {"a": (k, k), "up": (40, k), "up2": (40, k), "down": (k, 40), "b": (k, k), "c": (k, k), "d": (k, k),
              "e": (k, k)}
    w = {}
    for name, shape in shapes.items():
        w[f"{name}.weight"] = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        w[f"{name}.bias"] = rng.standard_normal(shape[0]).astype(np.float32)
    w["ln.weight"], w["ln.bias"] = np.ones(k, np.float32), np.zeros(k, np.float32)
    g = fixq.graph.validate(spec, w)
    for granularity in ("row", "tensor"):
        m = fixq.quantize_model(g, dynamic=True, granularity=granularity)
        names = [fn.__name__ for fn, _, _ in m._sequence.steps]
        assert names.count("dynamic_epilogue") == 5 and names.count("dynamic") == 3  # up, up2, down, b, c fused
        x = rows_of(rng, (3, 13, k))
        before = x.copy()
        for threads in (1, 2):
            y = m.run(x, threads=threads)
            np.testing.assert_array_equal(y, m.run_all(x)["r6"])
        np.testing.assert_array_equal(x, before)


def test_executor_stacks_linears_that_share_their_input(isa):
    """Dynamic linears reading one tensor (a layer's query, key and value) run as one product over their stacked
    weights, each output a column view of it: run() gives run_all()'s bits, an in-place add into one view
    leaves the others alone; a linear with a fused gelu or that is an output stays alone."""
    k = 20
    lin = lambda name: {"name": name, "op": "linear", "inputs": ["x"]}  # noqa: E731
    spec = {"format": "fixq.graph/1", "inputs": [{"name": "x", "shape": [None, "seq", k]}], "dims": {"seq": 16},
            "nodes": [lin("p"), lin("q"), lin("v"), lin("g"), lin("o"),
                      {"name": "ga", "op": "gelu", "inputs": ["g"]},
                      {"name": "pq", "op": "add", "inputs": ["p", "q"]},  # in place into p's view
                      {"name": "vh", "op": "reshape", "inputs": ["v"], "shape": [0, 4, -1]},
                      {"name": "vs", "op": "softmax", "inputs": ["vh"]},
                      {"name": "vb", "op": "reshape", "inputs": ["vs"], "shape": [0, -1]},
                      {"name": "s1", "op": "add", "inputs": ["pq", "vb"]},
                      {"name": "s3", "op": "add", "inputs": ["s1", "ga"]}],
            "outputs": ["s3", "o", "q"]}
    rng = np.random.default_rng(22)
    w = {}
    for name in "pqvgo":
        w[f"{name}.weight"] = (rng.standard_normal((k, k)) * 0.3).astype(np.float32)
        w[f"{name}.bias"] = rng.standard_normal(k).astype(np.float32)
    g = fixq.graph.validate(spec, w)
    for granularity in ("row", "tensor"):
        m = fixq.quantize_model(g, dynamic=True, granularity=granularity)
        names = [fn.__name__ for fn, _, _ in m._sequence.steps]
        assert names.count("stacked") == 1  # p and v (q and o are outputs, g has its gelu fused)
        x = rows_of(rng, (3, 13, k))
        for threads in (1, 2):
            got, want = m.run(x, threads=threads), m.run_all(x)
            for y, name in zip(got, spec["outputs"]):
                np.testing.assert_array_equal(y, want[name])


@pytest.mark.parametrize("k", [31, 64, 77, 200])
def test_dynamic_linear_row_range_at_every_position(isa, k):
    """A row's min or max (and a NaN) at each position: in each of the range's side-by-side chains (blocks
    of 64 floats on AVX-512, 32 on AVX2) and in its tail."""
    rng = np.random.default_rng(k)
    w = rng.integers(-127, 128, (24, k)).astype(np.int8)
    packed, ws = fixq.pack_weights(w), np.full(24, 1e-3, np.float32)
    x = np.repeat(rows_of(rng, (1, k), 0.5, 0.1), k, axis=0)
    i = np.arange(k)
    x[i, i] = np.where(i % 2, 7.25, -6.5)  # row i's extreme at position i
    want = dynamic_linear_ref(x, w, 0, ws, None, "row")
    assert np.array_equal(F.dynamic_linear(x, packed, ws), want)
    for p in range(k):
        bad = x[:2].copy()
        bad[1, p] = np.nan
        one_line_value_error(lambda: F.dynamic_linear(bad, packed, ws), "NaN or infinity")


def branch_rows(k):
    """Rows that take every branch of the scale and zero point rule, ordinary rows between them."""
    rng = np.random.default_rng(k)
    t = np.float32(1e-44)  # subnormal: its range / 255 rounds to 0, so scale 1
    special = [np.zeros(k), np.full(k, 3.5), np.full(k, -2.25), np.full(k, t), np.linspace(0, 1e-38, k),
               np.linspace(-1e-39, 2e-39, k), np.linspace(0.5, 9.0, k), np.linspace(-7.0, -0.25, k),
               np.linspace(-3.0, 5.0, k), np.linspace(-1e38, 1.5e38, k), np.linspace(-1e-3, 255e-3, k),
               np.linspace(-255.0, 1.0, k)]
    rows = []
    for s in special:  # each special row between two ordinary ones, at every position of an 8- or 16-row tile
        rows += [rows_of(rng, k, 2.0, 0.3), np.asarray(s, np.float32)]
    x = np.stack(rows + [rows_of(rng, k, 1.0, 0.0)] * 3).astype(np.float32)
    x[1::4, -1] = np.where(x[1::4, -1] > 0, x[1::4, -1] * 2, x[1::4, -1])  # some extremes in the row's tail
    return x


@pytest.mark.parametrize("k", [1, 7, 37, 64, 384])
def test_dynamic_linear_row_params_every_branch(isa, k):
    """Each row's scale and zero point, computed for a tile's rows together, are fixq__dyn_qparams' (ORT's
    DynamicQuantizeLinear): through identity weights y[r, i] = (q[r, i] - zp[r]) * scale[r]."""
    from fixq.targets.onnxruntime import dynamic_qparams

    x = branch_rows(k)
    packed = fixq.pack_weights(np.eye(k, dtype=np.int8))
    y = F.dynamic_linear(x, packed, np.float32(1.0))
    for r, row in enumerate(x):
        scale, zp = dynamic_qparams(row)
        q = np.clip(np.rint(row / scale) + zp, 0, 255)
        assert np.array_equal(y[r], (q - zp).astype(np.float32) * scale), r
    w = np.random.default_rng(k).integers(-127, 128, (24, k)).astype(np.int8)
    ws = np.full(24, 1e-3, np.float32)
    for m in (len(x), 5, 9, 17):
        assert np.array_equal(F.dynamic_linear(x[:m], fixq.pack_weights(w), ws), dynamic_linear_ref(x[:m], w, 0, ws, None, "row"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "overflow"])
@pytest.mark.parametrize("at", [0, 5, 11, 15])
def test_dynamic_linear_bad_row_in_a_tile(isa, bad, at):
    """A row with NaN or infinity, or whose range overflows float32 (no finite scale), among ordinary rows of
    the same tile: the call raises."""
    k = 37
    x = branch_rows(k)[:16].copy()
    x[:, :][np.abs(x) > 1e30] = 1.0
    if bad == "overflow":
        x[at, 0], x[at, 3] = -3e38, 3e38
    else:
        x[at, at % k] = bad
    packed = fixq.pack_weights(np.eye(k, dtype=np.int8))
    one_line_value_error(lambda: F.dynamic_linear(x, packed, np.float32(1.0)), "NaN or infinity")
