"""fixq.float_ops on every CPU path: layer_norm / softmax / gelu against float64 references (error
bounds as docs/arithmetic.md states them), dynamic_linear and qmatmul_dynamic bit for bit against an
int64 numpy reference of the same quantization rule, and the argument checks."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixq
from fixq import float_ops as F

ULP = 2.0**-24  # float32 unit roundoff (half an ulp of 1)


def rows_of(rng, shape, scale=3.0, offset=1.0):
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


# ---- layer_norm --------------------------------------------------------------------------------

def layer_norm_ref(x, w, b, eps):
    xd = x.astype(np.float64)
    mean = xd.mean(-1, keepdims=True)
    var = ((xd - mean) ** 2).mean(-1, keepdims=True)
    return (xd - mean) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("shape", [(3, 384), (2, 5, 17), (1, 1), (4, 7), (1, 16), (2, 33), (0, 8), (384,)])
def test_layer_norm(isa, shape):
    rng = np.random.default_rng(2)
    x = rows_of(rng, shape, offset=5.0)
    n = shape[-1]
    w, b = rows_of(rng, n, 1.0, 0.0), rows_of(rng, n, 1.0, 0.0)
    y = F.layer_norm(x, w, b, 1e-5)
    assert y.shape == x.shape and y.dtype == np.float32
    # mean and variance in double; then four float32 roundings on (x - mean) * rstd * w + b, and mean
    # rounded to float32 costs ulp(mean) * rstd
    ref = layer_norm_ref(x, w, b, 1e-5)
    xd = x.astype(np.float64)
    rstd = 1 / np.sqrt(xd.var(-1, keepdims=True) + 1e-5) if n else 0
    bound = 8 * ULP * (np.abs(ref) + np.abs(b) + np.abs(w) * (np.abs(xd - xd.mean(-1, keepdims=True)) * rstd
                                                            + np.abs(xd.mean(-1, keepdims=True)) * rstd))
    assert np.all(np.abs(y - ref) <= bound + 1e-30)


def test_layer_norm_in_place_and_threads(isa):
    rng = np.random.default_rng(3)
    x = rows_of(rng, (300, 384))
    w, b = rows_of(rng, 384, 1.0, 0.0), rows_of(rng, 384, 1.0, 0.0)
    want = F.layer_norm(x, w, b, 1e-12)
    assert np.array_equal(F.layer_norm(x, w, b, 1e-12, threads=4), want)  # rows computed alike on any thread
    out = np.empty_like(x)
    assert F.layer_norm(x, w, b, 1e-12, out=out) is out and np.array_equal(out, want)
    assert F.layer_norm(x, w, b, 1e-12, out=x) is x and np.array_equal(x, want)


# ---- softmax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 128), (2, 3, 17), (1, 1), (5, 7), (1, 16), (3, 33), (0, 4), (100,)])
def test_softmax(isa, shape):
    rng = np.random.default_rng(4)
    x = rows_of(rng, shape, 4.0, 2.0)
    y = F.softmax(x)
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    # x - max rounds to float32 (an error of ulp(max(|x|, |max|)) / 2 in the exponent), exp is within
    # 2 ulp, the sum and the reciprocal add a few more
    big = np.maximum(np.abs(xd), np.abs(xd.max(-1, keepdims=True))) if x.size else 0
    assert np.all(np.abs(y - ref) <= ref * ULP * (12 + 2 * big))


def test_softmax_masked_rows(isa):
    x = np.array([[0.0, -np.inf, 1.0, -1e30], [np.nan, 0.0, 1.0, 2.0], [-np.inf] * 4], np.float32)
    y = F.softmax(x)
    assert y[0, 1] == 0 and y[0, 3] == 0 and abs(y[0, 0] + y[0, 2] - 1) < 1e-6
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()  # NaN in, NaN out; a row of -inf is 0/0


@pytest.mark.parametrize("bshape", [(3, 1, 1, 37), (1, 1, 1, 37)])
@pytest.mark.parametrize("threads", [1, 3])
def test_softmax_with_bias_equals_add_then_softmax(isa, bshape, threads):
    """The attention mask's bias added in the softmax: the bits of x + bias rounded, then softmax."""
    rng = np.random.default_rng(9)
    x = rows_of(rng, (3, 4, 600, 37), 4.0, 2.0)
    bias = np.where(rng.random(bshape) < 0.3, np.finfo(np.float32).min, rng.standard_normal(bshape)).astype(np.float32)
    ref = F.softmax(x + bias)
    np.testing.assert_array_equal(F.softmax(x, bias=bias, threads=threads), ref)
    y = x.copy()
    assert F.softmax(y, y, threads, bias=bias) is y
    np.testing.assert_array_equal(y, ref)
    for bad in (np.ascontiguousarray(bias[..., :5]), bias.reshape(bshape[0], -1), np.ones((3, 2, 1, 37), np.float32),
                np.ones((2, 1, 1, 37), np.float32)):
        with pytest.raises(ValueError, match="bias must have shape"):
            F.softmax(x, bias=bad)
    with pytest.raises(ValueError, match="bias overlaps out"):
        F.softmax(y, y, bias=y[:1, :1, :1])
    with pytest.raises(ValueError, match="float32"):
        F.softmax(x, bias=bias.astype(np.float64))


def test_softmax_in_place_and_threads(isa):
    x = rows_of(np.random.default_rng(5), (64, 12, 128))
    want = F.softmax(x)
    assert np.array_equal(F.softmax(x, threads=3), want)
    assert F.softmax(x, out=x) is x and np.array_equal(x, want)


# ---- gelu --------------------------------------------------------------------------------------

GELU_X = np.concatenate([np.linspace(-12, 12, 4001), [-0.0, 0.0, 1e-30, -1e-30, 1e-5, 40.0, -40.0]]).astype(np.float32)


def gelu_erf_ref(x):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])


def gelu_tanh_ref(x):
    """0.5 x (1 + tanh u) as x / (1 + exp(-2u)): the same value without the cancellation for x < 0."""
    xd = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return xd / (1 + np.exp(-2 * math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))


@pytest.mark.parametrize("count", [len(GELU_X), 1, 7, 16, 17, 0])
def test_gelu_erf(isa, count):
    x = GELU_X[:count]
    y = F.gelu(x)
    # erf within 3e-7 absolute (Eigen's 2e-7 with FMA, a little more without), times |x| / 2, plus a few
    # roundings of the result (relative error is large where 1 + erf cancels, x < -3, as in torch)
    assert np.all(np.abs(y - gelu_erf_ref(x)) <= 1.6e-7 * np.abs(x) + 4 * ULP * np.abs(gelu_erf_ref(x)) + 1e-37)


@pytest.mark.parametrize("count", [len(GELU_X), 1, 7, 16, 17, 0])
def test_gelu_tanh(isa, count):
    x = GELU_X[:count]
    ref = gelu_tanh_ref(x)
    # x / (1 + exp(-2u)): no cancellation, so a relative bound; u's four float32 roundings cost up to
    # 4 u 2^-24 in the exponent, doubled by exp(-2u)
    u = np.abs(math.sqrt(2 / math.pi) * (x.astype(np.float64) + 0.044715 * x.astype(np.float64) ** 3))
    # (below x = -9 the result underflows float32; exp saturating at e^88 leaves below 1e-36 there)
    assert np.all(np.abs(F.gelu(x, "tanh") - ref) <= np.abs(ref) * ULP * (10 + 8 * u) + 1e-36)


def test_gelu_against_torch(isa):
    torch = pytest.importorskip("torch")
    x = GELU_X[np.abs(GELU_X) <= 12]
    t = torch.from_numpy(x.copy())
    for form in ("none", "tanh"):
        want = torch.nn.functional.gelu(t, approximate=form).numpy()
        # torch computes the same formulas with its own erf/tanh: within a few float32 ulp of |x|
        assert np.abs(F.gelu(x, form) - want).max() <= 8 * ULP * 12


def test_gelu_in_place_and_threads(isa):
    x = rows_of(np.random.default_rng(6), (64, 128, 24))
    want = F.gelu(x)
    assert np.array_equal(F.gelu(x, threads=4), want)
    assert F.gelu(x, "none", out=x) is x and np.array_equal(x, want)


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_float_kernels_split_as_one_thread(isa, threads):
    """all-MiniLM-L6-v2's 1x128 shapes (layer_norm 128x384, gelu 128x1536) and element counts off the vector
    width, split over threads at any element: every row and element as one thread computes it."""
    rng = np.random.default_rng(threads)
    x = rows_of(rng, (128, 384))
    w, b = rows_of(rng, 384, 1.0, 0.0), rows_of(rng, 384, 1.0, 0.0)
    assert np.array_equal(F.layer_norm(x, w, b, 1e-12, threads=threads), F.layer_norm(x, w, b, 1e-12))
    for shape in ((128, 1536), (3 * 16384 + 5,), (7, 7001)):
        g = rows_of(rng, shape)
        for form in ("none", "tanh"):
            assert np.array_equal(F.gelu(g, form, threads=threads), F.gelu(g, form))


# ---- attention -------------------------------------------------------------------------------------

F32_MIN = float(np.finfo(np.float32).min)


def heads_of(rng, n, l, h, d, parts=3):
    """parts views [n, l, h, d] of one linear output [n, l, parts * h * d] (the graph's head split: strided)."""
    x = rng.standard_normal((n, l, parts * h * d)).astype(np.float32)
    return [x[..., i * h * d:(i + 1) * h * d].reshape(n, l, h, d) for i in range(parts)]


def attention_ref(q, k, v, scale, bias):
    """float64 attention of float32 scale * q (the graph's scale step), per batch and head."""
    qs = (q * np.float32(scale)).astype(np.float64).transpose(0, 2, 1, 3)
    s = qs @ k.astype(np.float64).transpose(0, 2, 3, 1)
    if bias is not None:
        s = s + bias
    e = np.exp(s - s.max(-1, keepdims=True))
    return ((e / e.sum(-1, keepdims=True)) @ v.astype(np.float64).transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


def mask_bias(lengths, l):
    mask = (np.arange(l)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    return ((1 - mask) * np.float32(F32_MIN))[:, None, None, :]


@pytest.mark.parametrize("n, m, l, h, d", [(2, 128, 128, 12, 32), (3, 17, 17, 1, 64), (2, 1, 1, 2, 32),
                                           (2, 9, 33, 3, 5), (1, 20, 7, 2, 1), (2, 40, 40, 12, 33)])
@pytest.mark.parametrize("masked", [False, True])
def test_attention(isa, n, m, l, h, d, masked):
    """Against float64 on the strided head split: the scores, softmax and P V each within a few float32
    roundings; threads change nothing."""
    rng = np.random.default_rng(n * 100 + l)
    k, v = heads_of(rng, n, l, h, d, 2)
    q = heads_of(rng, n, m, h, d, 1)[0] if m != l else heads_of(rng, n, l, h, d, 1)[0]
    lengths = rng.integers(1, l + 1, n)
    bias = mask_bias(lengths, l) if masked else None
    scale = 1 / math.sqrt(d)
    y = F.attention(q, k, v, scale, bias)
    assert y.shape == (n, m, h, d) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, attention_ref(q, k, v, scale, bias), rtol=0, atol=3e-6 * math.sqrt(d))
    np.testing.assert_array_equal(F.attention(q, k, v, scale, bias, threads=2), y)
    out = np.full_like(y, np.nan)
    assert F.attention(q, k, v, scale, bias, out=out) is out
    np.testing.assert_array_equal(out, y)


def test_attention_softmax_is_softmax_with_bias(isa):
    """Integer q and k make every score exact in any order and one-hot v make O = P: P equals
    F.softmax(scores, bias=) bit for bit."""
    rng = np.random.default_rng(7)
    n, l, h = 2, 37, 2
    q = rng.integers(-3, 4, (n, l, h, 8)).astype(np.float32)
    k = rng.integers(-3, 4, (n, l, h, 8)).astype(np.float32)
    v = np.ascontiguousarray(np.broadcast_to(np.eye(l, dtype=np.float32)[None, :, None, :], (n, l, h, l)))
    bias = np.where(rng.random((n, 1, 1, l)) < 0.3, F32_MIN, rng.standard_normal((n, 1, 1, l))).astype(np.float32)
    scores = np.ascontiguousarray((q * np.float32(0.5)).transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1))
    p = F.softmax(scores, bias=bias)
    qd = np.pad(q, ((0, 0), (0, 0), (0, 0), (0, l - 8)))  # head size l, the padding adds exact zeros
    kd = np.pad(k, ((0, 0), (0, 0), (0, 0), (0, l - 8)))
    y = F.attention(qd, kd, v, 0.5, bias)
    np.testing.assert_array_equal(y.transpose(0, 2, 1, 3), p)


def test_attention_skips_right_padding_bit_for_bit(isa):
    """Keys past a row's last unmasked one (bias <= -2^64, right padding) are skipped: the same bits as
    masking them with -2^63, which the kernel computes; a query too large for the bound computes them all."""
    rng = np.random.default_rng(8)
    q, k, v = heads_of(rng, 3, 128, 12, 32)
    lengths = [13, 128, 60]
    bias = mask_bias(lengths, 128)
    kept = np.where(bias < 0, np.float32(-2.0**63), bias).astype(np.float32)
    y = F.attention(q, k, v, 0.17, bias)
    np.testing.assert_array_equal(y, F.attention(q, k, v, 0.17, kept))
    np.testing.assert_allclose(y, attention_ref(q, k, v, 0.17, bias), atol=2e-5)
    big = q.copy()
    big[0, 5, 3] *= np.float32(2.0**60)  # its scores pass 2^60: this block computes every key
    np.testing.assert_array_equal(F.attention(big, k, v, 0.17, bias), F.attention(big, k, v, 0.17, kept))


def test_attention_fully_masked_rows_average_v(isa):
    """A batch whose keys are all masked: every score + bias rounds to float32 min, the softmax is uniform
    (as add-then-softmax gives), the context the mean of v."""
    rng = np.random.default_rng(9)
    q, k, v = heads_of(rng, 2, 9, 2, 16)
    bias = mask_bias([0, 4], 9)
    y = F.attention(q, k, v, 0.25, bias)
    np.testing.assert_allclose(y[0], np.broadcast_to(v[0].astype(np.float64).mean(0), (9, 2, 16)), atol=1e-6)
    np.testing.assert_allclose(y, attention_ref(q, k, v, 0.25, bias), atol=1e-5)


def test_attention_strides_and_bias_forms(isa):
    """Any strides with rows of D contiguous (negative ones, broadcast keys), a bias of one row or none."""
    rng = np.random.default_rng(10)
    q, k, v = heads_of(rng, 2, 12, 3, 8)
    bias1 = mask_bias([7], 12)
    want = F.attention(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), 0.3, bias1)
    np.testing.assert_array_equal(F.attention(q, k, v, 0.3, bias1), want)
    np.testing.assert_array_equal(F.attention(q[::-1], k[::-1], v[::-1], 0.3, bias1), want[::-1])
    kb = np.broadcast_to(k[:1], k.shape)
    np.testing.assert_allclose(F.attention(q, kb, v, 0.3), attention_ref(q, kb, v, 0.3, None), atol=1e-5)


@pytest.mark.parametrize("lengths, l, h, d", [([13, 128, 1, 60], 128, 12, 32), ([1], 9, 2, 16), ([9, 9], 9, 2, 16),
                                              ([5, 1, 17, 2], 17, 3, 5)])
def test_attention_packed_sequences_equal_the_padded_batch(isa, lengths, l, h, d):
    """seq_offsets: each sequence's real tokens packed one after another attend to their own alone, the bits
    of the padded batch's rows (whose padding keys the kernel skips), on any thread count; a sequence with a
    masked token inside keeps it."""
    rng = np.random.default_rng(len(lengths) * l)
    q, k, v = heads_of(rng, len(lengths), l, h, d)
    bias = mask_bias(lengths, l)
    if lengths[0] > 1:
        bias[0, 0, 0, 0] = F32_MIN
    want = F.attention(q, k, v, 0.3, bias)
    keep = np.arange(l)[None, :] < np.array(lengths)[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    packed = [np.ascontiguousarray(x[keep][None]) for x in (q, k, v)]
    for threads in (1, 2, 3):
        y = F.attention(*packed, 0.3, np.ascontiguousarray(bias[:, 0, 0, :][keep])[None, None, None], threads=threads,
                        seq_offsets=offsets)
        np.testing.assert_array_equal(y[0], want[keep])
    y = F.attention(*packed, 0.3, seq_offsets=offsets)
    for b, (t0, t1) in enumerate(zip(offsets[:-1], offsets[1:])):
        alone = [x[:, t0:t1] for x in packed]
        np.testing.assert_array_equal(y[:, t0:t1], F.attention(*alone, 0.3))


def test_attention_bad_seq_offsets():
    q = np.zeros((1, 6, 2, 4), np.float32)
    for offsets, match in [([0, 3, 3, 6], "rise strictly"), ([1, 6], "rise strictly"), ([0, 5], "rise strictly"),
                           ([0], "rise strictly"), ([0.0, 6.0], "integer"), ([[0, 6]], "integer")]:
        one_line_value_error(lambda: F.attention(q, q, q, 1.0, seq_offsets=np.array(offsets)), match)
    one_line_value_error(lambda: F.attention(q[:, :5], q, q, 1.0, seq_offsets=[0, 6]), "one batch")
    one_line_value_error(lambda: F.attention(np.zeros((2, 3, 2, 4), np.float32), np.zeros((2, 3, 2, 4), np.float32),
                                             np.zeros((2, 3, 2, 4), np.float32), 1.0, seq_offsets=[0, 3]), "one batch")


def test_attention_bad_input():
    rng = np.random.default_rng(11)
    q, k, v = heads_of(rng, 2, 5, 2, 4)
    for args, message in [((q[..., ::2], k, v), "last axis must be contiguous"),
                          ((q.astype(np.float64), k, v), "float32"),
                          ((q[0], k, v), "must be \\[batch, tokens, heads, head size\\]"),
                          ((q, k[:, :3], v), "k and v must be"), ((q, k, v[..., :1, :]), "k and v must be"),
                          ((q, k[:, :0], v[:, :0]), "no keys")]:
        with pytest.raises(ValueError, match=message):
            F.attention(*args, 0.5)
    for scale in (float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="scale must be a finite number"):
            F.attention(q, k, v, scale)
    with pytest.raises(ValueError, match="bias must have shape"):
        F.attention(q, k, v, 0.5, np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        F.attention(q, k, v, 0.5, out=np.zeros((2, 5, 2, 3), np.float32))
    x = np.zeros((2, 5, 24), np.float32)
    with pytest.raises(ValueError, match="out overlaps"):
        F.attention(x[..., :8].reshape(2, 5, 2, 4), k, v, 0.5, out=x.reshape(-1)[:80].reshape(2, 5, 2, 4))
    assert F.attention(q[:, :0], k, v, 0.5).shape == (2, 0, 2, 4)


# ---- dynamic_linear ------------------------------------------------------------------------------

def qparams_ref(lo, hi):
    """onnxruntime DynamicQuantizeLinear's uint8 rule in float32 (docs/arithmetic.md)."""
    f = np.float32
    lo, hi = min(f(lo), f(0)), max(f(hi), f(0))
    scale = f(f(hi - lo) / f(255))
    if scale == 0:
        scale = f(1)
    zp = np.rint(np.clip(f(0) - f(lo / scale), f(0), f(255)))
    return scale, int(zp)


def quantize_ref(x2d, granularity):
    """(q uint8 [M, K], scale float32 [M], zero point int64 [M])."""
    m = x2d.shape[0]
    if granularity == "tensor":
        params = [qparams_ref(x2d.min(initial=0), x2d.max(initial=0))] * m
    else:
        params = [qparams_ref(r.min(initial=0), r.max(initial=0)) for r in x2d]
    scale = np.array([p[0] for p in params], np.float32).reshape(m)
    zp = np.array([p[1] for p in params], np.int64).reshape(m)
    q = np.clip(np.rint(x2d / scale[:, None]) + zp[:, None], 0, 255).astype(np.int64)
    return q, scale, zp


def dynamic_linear_ref(x, w, w_zp, w_scale, bias, granularity):
    """x [..., K] float32, w [N, K] int: the exact int64 sums, then the epilogue's float32 operations."""
    k, n = w.shape[1], w.shape[0]
    x2d = x.reshape(math.prod(x.shape[:-1]), k)
    q, xs, zp = quantize_ref(x2d, granularity)
    acc = (q - zp[:, None]) @ (w.astype(np.int64) - np.asarray(w_zp, np.int64).reshape(-1, 1)).T
    assert np.abs(acc).max(initial=0) < 2**31
    s = xs[:, None] * np.broadcast_to(np.asarray(w_scale, np.float32), (n,))[None, :]
    y = acc.astype(np.float32) * s + (np.zeros(n, np.float32) if bias is None else bias)
    return y.reshape(x.shape[:-1] + (n,))


LINEAR_SHAPES = [(1, 1, 1), (2, 3, 4), (7, 5, 17), (9, 63, 16), (1, 64, 15), (33, 65, 33), (4, 100, 50),
                 (130, 384, 67), (0, 8, 3), (3, 0, 5), (3, 5, 0)]


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES)
def test_dynamic_linear_exact(isa, m, k, n, granularity):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x = rows_of(rng, (m, k), 2.0, 0.3)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)  # -128 included: AVX2's int16 kernel
    ws = (rng.random(n) * 0.02 + 1e-3).astype(np.float32)
    bias = rows_of(rng, n, 1.0, 0.0)
    y = F.dynamic_linear(x, fixq.pack_weights(w), ws, bias, granularity=granularity)
    assert y.shape == (m, n) and y.dtype == np.float32
    assert np.array_equal(y, dynamic_linear_ref(x, w, 0, ws, bias, granularity))


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_dynamic_linear_weight_forms(isa, granularity):
    """uint8 weights with per-column zero points, the matmul layout, a scalar scale, no bias, batch axes."""
    rng = np.random.default_rng(7)
    k, n = 45, 38
    x = rows_of(rng, (2, 3, k), 1.0, -0.5)
    w = rng.integers(0, 256, (n, k)).astype(np.uint8)
    w_zp = rng.integers(0, 256, n)
    want = dynamic_linear_ref(x, w, w_zp, 0.01, None, granularity)
    assert np.array_equal(F.dynamic_linear(x, fixq.pack_weights(w, w_zp), 0.01, granularity=granularity), want)
    packed = fixq.pack_weights(np.ascontiguousarray(w.T), w_zp, layout="matmul")
    assert np.array_equal(F.dynamic_linear(x, packed, np.float32(0.01), granularity=granularity), want)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_dynamic_linear_threads_and_special_rows(isa, granularity):
    """Rows of zeros (scale 1), all-positive and all-negative rows (zero point 0 / 255), constant rows,
    one huge value; any thread count gives the same bits."""
    rng = np.random.default_rng(8)
    k, n = 384, 96
    x = rows_of(rng, (300, k), 1.0, 0.0)
    x[0] = 0
    x[1] = np.abs(x[1])
    x[2] = -np.abs(x[2])
    x[3] = 2.5
    x[4, 7] = 1e30
    x[5] = 1e-40  # subnormal
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    ws = (rng.random(n) * 0.01 + 1e-3).astype(np.float32)
    bias = rows_of(rng, n, 1.0, 0.0)
    packed = fixq.pack_weights(w)
    want = dynamic_linear_ref(x, w, 0, ws, bias, granularity)
    for threads in (1, 2, 5):
        assert np.array_equal(F.dynamic_linear(x, packed, ws, bias, granularity, threads=threads), want)


@pytest.mark.parametrize("scale", [1e-41, 1e-38, 1e-30, 3e-7, 0.0123, 1.0, 7.77, 1e20, 1e36, 2.0**119])
def test_dynamic_linear_half_way_values(isa, scale):
    """Values at x / scale = n + 1/2 and a few ulps either side, at every magnitude of scale (the SIMD paths
    multiply by 1 / scale away from ties and divide near them; scales below FLT_MIN always divide)."""
    rng = np.random.default_rng(int(np.log2(scale)) + 200)
    m, k = 37, 131
    lo, hi = np.float32(-100.25 * scale), np.float32(154.75 * scale)
    s = np.float32(np.float32(hi - lo) / np.float32(255))
    t = rng.integers(-101, 155, (m, k)) + 0.5
    x = (t * np.float64(s)).astype(np.float32)
    steps = rng.integers(-3, 4, (m, k))
    for d in (-3, -2, -1, 1, 2, 3):
        sel = steps == d
        x[sel] = np.nextafter(x[sel], np.float32(np.sign(d) * np.inf))
        for _ in range(abs(d) - 1):
            x[sel] = np.nextafter(x[sel], np.float32(np.sign(d) * np.inf))
    x = np.clip(x, lo, hi)
    x[:, 0], x[:, 1] = lo, hi
    w = rng.integers(-127, 128, (40, k)).astype(np.int8)
    ws = np.full(40, 1e-3, np.float32)
    for granularity in ("row", "tensor"):
        want = dynamic_linear_ref(x, w, 0, ws, None, granularity)
        assert np.array_equal(F.dynamic_linear(x, fixq.pack_weights(w), ws, granularity=granularity), want)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("m,k,n,threads", [(20, 384, 200, 2), (9, 1000, 300, 2), (61, 70, 500, 3),
                                           (300, 1536, 40, 2), (257, 384, 1536, 2)])
def test_dynamic_linear_thread_splits(isa, m, k, n, threads, granularity):
    """Parts that split the rows (each quantizes its own) and parts that split the columns (each quantizes
    every row into its own block), row counts off the tile, K off 4 and 64, N off the panel."""
    rng = np.random.default_rng(m + k + n)
    x = rows_of(rng, (m, k), 3.0, 0.2)
    x[m // 2] = 0
    x[-1] = -1.5
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    ws = (rng.random(n) * 0.01 + 1e-3).astype(np.float32)
    bias = rows_of(rng, n, 1.0, 0.0)
    want = dynamic_linear_ref(x, w, 0, ws, bias, granularity)
    for t in (1, threads):
        assert np.array_equal(F.dynamic_linear(x, fixq.pack_weights(w), ws, bias, granularity, threads=t), want)


def test_dynamic_linear_close_to_float(isa):
    """Per-row quantization error: |y - x @ w.T * ws| <= sum_k (scale_row / 2) |w| ws per output."""
    rng = np.random.default_rng(9)
    x = rows_of(rng, (64, 384), 1.0, 0.0)
    w = rng.integers(-127, 128, (192, 384)).astype(np.int8)
    ws = np.full(192, 0.01, np.float32)
    y = F.dynamic_linear(x, fixq.pack_weights(w), ws)
    ref = x.astype(np.float64) @ (w.astype(np.float64) * 0.01).T
    _, xs, _ = quantize_ref(x, "row")
    bound = xs[:, None].astype(np.float64) / 2 * (np.abs(w).sum(1) * 0.01)[None, :] * 1.001 + 1e-4
    assert np.all(np.abs(y - ref) <= bound)


@pytest.fixture(scope="module")
def dynamic_quantize_linear():
    """onnxruntime's DynamicQuantizeLinear on a float32 vector: (uint8 values, scale, zero point)."""
    ort = pytest.importorskip("onnxruntime")
    helper = pytest.importorskip("onnx.helper")
    from onnx import TensorProto
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [None]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                               helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})


def _vectors(elements):
    return st.lists(elements, min_size=1, max_size=16).map(lambda v: np.array(v, np.float32))


def _near(base, steps):
    """Values a few float32 ulps apart at `base`: a range of a few ulps."""
    b = np.float32(base)
    return b + np.float32(np.spacing(b)) * np.array(steps, np.float32)


def _tie(k, e):
    """[lo, hi] with scale exactly 2^e and 0 - lo / scale = k + 1/2: the zero point rounds half to even."""
    return np.float32([-(k + 0.5), 254.5 - k]) * np.float32(2.0**e)


F32, BIG, TINY = {"width": 32, "allow_nan": False}, 2.0**123, 2.0**-123  # hi - lo within float32
QUANTIZATION_INPUTS = st.one_of(
    st.integers(1, 16).map(lambda n: np.zeros(n, np.float32)),
    _vectors(st.floats(-BIG, 0.0, exclude_max=True, **F32)),   # all negative
    _vectors(st.floats(0.0, BIG, exclude_min=True, **F32)),    # all positive
    _vectors(st.floats(-TINY, TINY, **F32)),                  # subnormal and tiny ranges
    st.builds(_near, st.floats(-2.0**100, 2.0**100, **F32), st.lists(st.integers(-8, 8), min_size=1, max_size=8)),
    st.builds(_tie, st.integers(0, 254), st.integers(-148, 119)),
    _vectors(st.floats(-BIG, BIG, **F32)))


@settings(max_examples=300, deadline=None)
@given(x=QUANTIZATION_INPUTS)
def test_quantization_rule_matches_onnxruntime(dynamic_quantize_linear, x):
    """The rule of dynamic_linear (its C function, through targets.onnxruntime.dynamic_qparams) and the test's
    reference are ORT's DynamicQuantizeLinear: the same scale bits, zero point and uint8 values.  Where the
    range's (hi - lo) / 255 underflows to 0, ORT keeps scale 0 and zero point 255 and fixq takes 1 and 0
    (docs/arithmetic.md)."""
    q, s, z = dynamic_quantize_linear(x)
    scale, zp = fixq.targets.onnxruntime.dynamic_qparams(x)
    q_ref, s_ref, z_ref = quantize_ref(x.reshape(1, -1), "tensor")
    assert type(scale) is np.float32 and (scale, zp) == (s_ref[0], z_ref[0])
    if s == 0:
        assert max(x.max(), 0) - min(x.min(), 0) < np.float32(2.0**-149 * 128) and (scale, zp) == (1, 0)
        return
    assert scale.tobytes() == s.tobytes() and zp == z and np.array_equal(q, q_ref[0])
    assert np.array_equal(fixq.targets.quantize(x, "onnxruntime", scale, zp, np.uint8), q)


def test_quantization_rule_refuses_what_has_no_scale():
    for x in (np.float32([1, np.nan]), np.float32([-np.inf]), np.float32([-3e38, 3e38])):
        with pytest.raises(ValueError, match="NaN or infinity, or a range beyond float32"):
            fixq.targets.onnxruntime.dynamic_qparams(x)
    assert fixq.targets.onnxruntime.dynamic_qparams(np.zeros(0, np.float32)) == (1, 0)


# ---- matmul, qmatmul_dynamic -----------------------------------------------------------------------

def test_matmul():
    rng = np.random.default_rng(11)
    a, b = rows_of(rng, (2, 3, 5, 7)), rows_of(rng, (3, 7, 4))
    assert np.array_equal(F.matmul(a, b), np.matmul(a, b))


def test_qmatmul_dynamic(isa):
    rng = np.random.default_rng(12)
    a, b = rows_of(rng, (2, 3, 9, 20), 1.0, 0.0), rows_of(rng, (3, 20, 11), 1.0, 0.0)
    b[1, :, 4] = 0  # a zero column: scale 1
    y = F.qmatmul_dynamic(a, b, threads=2)
    assert y.shape == (2, 3, 9, 11)
    for i in range(2):
        for j in range(3):
            amax = np.abs(b[j]).max(0)
            scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
            qb = np.clip(np.rint(b[j] / scale), -127, 127).astype(np.int8)
            assert np.array_equal(y[i, j], dynamic_linear_ref(a[i, j], qb.T, 0, scale, None, "row"))
    assert np.abs(y - a @ b).max() < 0.3


# ---- bad input -----------------------------------------------------------------------------------

def one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_input():
    x = np.ones((4, 8), np.float32)
    w8, one = np.ones(8, np.float32), np.ones(1, np.float32)
    packed = fixq.pack_weights(np.ones((3, 8), np.int8))
    cases = [
        (lambda: F.layer_norm(x.astype(np.float64), w8, w8, 1e-5), "x must be float32"),
        (lambda: F.layer_norm(x, one, w8, 1e-5), r"weight and bias must have shape \(8,\)"),
        (lambda: F.layer_norm(x, w8, w8, -1.0), "eps must be"),
        (lambda: F.layer_norm(x, w8, w8, float("nan")), "eps must be"),
        (lambda: F.layer_norm(x, w8, w8, "1e-5"), "eps must be"),
        (lambda: F.layer_norm(x.T, w8[:4], w8[:4], 1e-5), "C-contiguous"),
        (lambda: F.softmax([1.0, 2.0]), "numpy float32 array"),
        (lambda: F.softmax(np.ones((), np.float32)), "at least one dimension"),
        (lambda: F.softmax(x, out=np.empty((4, 9), np.float32)), "out must have the shape"),
        (lambda: F.softmax(x, out=x.reshape(-1)[1:].reshape(1, 31)[:, :0]), "out must have the shape"),
        (lambda: F.gelu(x, approximate="erf"), "approximate must be"),
        (lambda: F.gelu(x, out=np.frombuffer(bytes(128), np.float32).reshape(4, 8)), "out is read-only"),
        (lambda: F.gelu(x, threads=0), "threads must be"),
        (lambda: F.dynamic_linear(x.astype(np.float16), packed, 1.0), "x must be float32"),
        (lambda: F.dynamic_linear(x[:, :5], packed, 1.0), "C-contiguous"),
        (lambda: F.dynamic_linear(np.ones((4, 7), np.float32), packed, 1.0), "last dimension must be K = 8"),
        (lambda: F.dynamic_linear(x, np.ones((3, 8), np.int8), 1.0), "pack_weights"),
        (lambda: F.dynamic_linear(x, packed, np.ones(2, np.float32)), r"shape \(3,\)"),
        (lambda: F.dynamic_linear(x, packed, 0.0), "finite values > 0"),
        (lambda: F.dynamic_linear(x, packed, np.float32([1, np.nan, 1])), "finite values > 0"),
        (lambda: F.dynamic_linear(x, packed, 1.0, bias=np.ones(4, np.float32)), r"bias must have shape \(3,\)"),
        (lambda: F.dynamic_linear(x, packed, 1.0, granularity="channel"), "granularity must be"),
        (lambda: F.matmul(x, x), "do not match"),
        (lambda: F.qmatmul_dynamic(np.ones((2, 4, 8), np.float32), np.ones((3, 8, 2), np.float32)), "broadcast"),
    ]
    for call, match in cases:
        one_line_value_error(call, match)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_dynamic_linear_refuses_nan(isa, bad, granularity):
    packed = fixq.pack_weights(np.ones((3, 40), np.int8))
    x = np.ones((5, 40), np.float32)
    x[3, 37] = bad
    one_line_value_error(lambda: F.dynamic_linear(x, packed, 1.0, granularity=granularity), "NaN or infinity")
    x[3, 37] = 3e38
    x[2, 0] = -3e38  # max - min overflows float32
    one_line_value_error(lambda: F.dynamic_linear(x, packed, 1.0, granularity="tensor"), "NaN or infinity")


def test_dynamic_linear_uint8_weights_centred(isa):
    """uint8 weights whose zero points are all 128 (b' = w - 128 with no zero-point term: the kernels that
    write float straight from the tile take them) and with one zero point off 128 (they do not)."""
    rng = np.random.default_rng(13)
    x = rows_of(rng, (37, 200), 1.0, 0.1)
    w = rng.integers(0, 256, (50, 200)).astype(np.uint8)
    ws = (rng.random(50) * 0.01 + 1e-3).astype(np.float32)
    bias = rows_of(rng, 50, 1.0, 0.0)
    for zp in (np.full(50, 128), np.r_[np.full(49, 128), 127]):
        want = dynamic_linear_ref(x, w, zp, ws, bias, "row")
        assert np.array_equal(F.dynamic_linear(x, fixq.pack_weights(w, zp), ws, bias), want)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_dynamic_linear_refuses_nan_in_any_part(isa, granularity):
    """A NaN in any row block, on any thread, fails the whole call."""
    rng = np.random.default_rng(12)
    packed = fixq.pack_weights(rng.integers(-127, 128, (96, 384)).astype(np.int8))
    for row in (0, 150, 299):
        x = rows_of(rng, (300, 384), 1.0, 0.0)
        x[row, 383] = np.nan
        for threads in (1, 2):
            one_line_value_error(lambda: F.dynamic_linear(x, packed, 1.0, granularity=granularity, threads=threads),
                                 "NaN or infinity")


def test_dynamic_linear_overflow_is_refused():
    k = 70000  # 255 * 128 * k > 2**31 - 1
    packed = fixq.pack_weights(np.full((1, k), -128, np.int8))
    with pytest.raises(OverflowError, match="dynamic_linear: the int32 accumulator could overflow"):
        F.dynamic_linear(np.ones((1, k), np.float32), packed, 1.0)


def test_attention_fresh_empty_arrays():
    """A freshly allocated empty array (numpy may give it zero strides) is judged by its shape."""
    k = np.ones((2, 3, 2, 8), np.float32)
    assert F.attention(np.empty((2, 0, 2, 8), np.float32), k, k, 0.5).shape == (2, 0, 2, 8)
    empty = np.empty((2, 0, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"no keys \(L = 0\)"):
        F.attention(k, empty, empty, 0.5)
