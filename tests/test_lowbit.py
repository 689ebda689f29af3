import numpy as np
import pytest

import fixq
from fixq import _core, lowbit

rng = np.random.default_rng(1234)


def _on_every_isa(f):
    out = {}
    for isa in fixq.cpu_info()["supported"]:
        before = _core.selected_isa()
        _core.select_isa(isa)
        try:
            out[isa] = f()
        finally:
            _core.select_isa(before)
    return out


# ---- fp16 -------------------------------------------------------------------------------------

F16_SHAPES = [(m, k, n) for m in (1, 2, 3, 5, 6, 7, 13) for k in (1, 7, 255, 257, 513) for n in (1, 15, 16, 17, 65)]


@pytest.mark.parametrize("m,k,n", F16_SHAPES[::3] + [(1, 1024, 100), (75, 300, 33), (150, 40, 70)])
def test_fp16_linear_same_bits_on_every_path_and_within_bound(m, k, n):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = lowbit.pack_fp16(rng.standard_normal((n, k)))
    bias = rng.standard_normal(n).astype(np.float32)
    outs = _on_every_isa(lambda: fixq.fp16_linear(x, w, bias))
    ys = list(outs.values())
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])   # fixed summation order: bit-identical
    wf = w.weights.astype(np.float64)
    ref = x.astype(np.float64) @ wf.T + bias
    # fma chains of <= 256 terms, then <= K/256 block sums, then the bias: each output is within
    # gamma_{K+2} * (sum |x||w| + |bias|) of the exact value, gamma_j = j*u/(1 - j*u), u = 2^-24
    u = 2.0 ** -24
    g = (k + 2) * u / (1 - (k + 2) * u)
    bound = g * (np.abs(x.astype(np.float64)) @ np.abs(wf).T + np.abs(bias))
    assert np.all(np.abs(ys[0] - ref) <= bound)


def test_fp16_linear_shapes_and_inputs():
    w16 = rng.standard_normal((9, 20)).astype(np.float16)
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    y = fixq.fp16_linear(x, w16)          # a float16 array is packed on the fly
    assert y.shape == (2, 3, 9)
    np.testing.assert_array_equal(y, fixq.fp16_linear(x, lowbit.Fp16Weights.from_arrays({"w": w16})))
    np.testing.assert_allclose(y, x @ w16.astype(np.float32).T, rtol=1e-5, atol=1e-5)
    xt = np.asfortranarray(rng.standard_normal((4, 20)).astype(np.float32))   # non-contiguous input
    np.testing.assert_array_equal(fixq.fp16_linear(xt, w16), fixq.fp16_linear(np.ascontiguousarray(xt), w16))
    assert fixq.fp16_linear(np.zeros((0, 20), np.float32), w16).shape == (0, 9)
    # subnormal and extreme float16 weights convert exactly
    special = np.array([[6.0e-8, -6.0e-8, 65504.0, -65504.0, 0.0, -0.0, 1e-5, 3.0]], np.float16)
    xs = np.eye(8, dtype=np.float32)
    outs = _on_every_isa(lambda: fixq.fp16_linear(xs, special))
    for y in outs.values():
        np.testing.assert_array_equal(y[:, 0], special[0].astype(np.float32))


def test_fp16_storage_round_trip():
    w = rng.standard_normal((5, 7)).astype(np.float32)
    f = fixq.pack_fp16(w)
    a = f.to_arrays()
    assert set(a) == {"w"} and a["w"].dtype == np.float16 and f.nbytes == w.nbytes // 2
    np.testing.assert_array_equal(lowbit.Fp16Weights.from_arrays(a).weights, w.astype(np.float16))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fixq.pack_fp16(np.array([[1e6]])), ValueError, "float16 range"),
    (lambda: fixq.pack_fp16(np.array([[np.nan]])), ValueError, "NaN"),
    (lambda: fixq.pack_fp16(np.ones(3)), ValueError, "2-D"),
    (lambda: fixq.pack_fp16(np.ones((2, 2), np.int8)), TypeError, "float"),
    (lambda: fixq.fp16_linear(np.ones((1, 3), np.float64), np.ones((2, 3), np.float16)), TypeError, "float32"),
    (lambda: fixq.fp16_linear(np.ones((1, 4), np.float32), np.ones((2, 3), np.float16)), ValueError, "shape"),
    (lambda: fixq.fp16_linear(np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)), TypeError, "float16"),
    (lambda: fixq.fp16_linear(np.ones((1, 3), np.float32), np.ones((2, 3), np.float16), np.ones(3, np.float32)),
     ValueError, "bias"),
    (lambda: lowbit.Fp16Weights.from_arrays({"w": np.ones((2, 2), np.float32)}), ValueError, "float16"),
])
def test_fp16_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- ternary ----------------------------------------------------------------------------------

def test_ternary_known_answer():
    w = np.array([[1.0, -1.0, 0.1, -0.1], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, -2.0]])
    t = fixq.ternarize(w)
    # row 0: mean|w| = 0.55, delta = 0.385, alpha = mean(1, 1)
    np.testing.assert_array_equal(t.unpack(), [[1, -1, 0, 0], [0, 0, 0, 0], [1, 1, 1, -1]])
    np.testing.assert_array_equal(t.alpha, np.array([1.0, 0.0, 2.0], np.float32))
    assert t.codes.tolist() == [[0b00001101], [0], [0b11010101]]
    np.testing.assert_array_equal(t.dequantize()[2], [2, 2, 2, -2])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 33])
def test_ternary_pack_round_trip(k):
    w = rng.standard_normal((6, k))
    t = fixq.ternarize(w)
    t2 = lowbit.TernaryWeights.from_arrays(t.to_arrays())
    t2._int8 = None
    np.testing.assert_array_equal(t2.unpack(), t.unpack())
    np.testing.assert_array_equal(t2.alpha, t.alpha)
    mag = np.abs(w)
    delta = 0.7 * mag.mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(t.unpack(), np.sign(w) * (mag > delta))
    assert t.codes.shape == (6, (k + 3) // 4)


def test_ternary_bad_arrays():
    a = fixq.ternarize(rng.standard_normal((2, 5))).to_arrays()
    with pytest.raises(ValueError, match="0b10"):
        lowbit.TernaryWeights.from_arrays(dict(a, codes=np.full_like(a["codes"], 0b10)))
    bad = a["codes"].copy()
    bad[:, -1] |= 0b01 << 2
    with pytest.raises(ValueError, match="padding"):
        lowbit.TernaryWeights.from_arrays(dict(a, codes=bad))
    with pytest.raises(ValueError, match="alpha"):
        lowbit.TernaryWeights.from_arrays(dict(a, alpha=np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="delta_factor"):
        fixq.ternarize(np.ones((1, 2)), delta_factor=1.5)


# ---- binary -----------------------------------------------------------------------------------

def test_binary_known_answer():
    w = np.array([[0.0, -1.0, 2.0, -3.0]])
    b = fixq.binarize(w)
    np.testing.assert_array_equal(b.unpack(), [[1, -1, 1, -1]])   # sign(0) = +1
    assert b.alpha[0] == np.float32(1.5) and b.bits.tolist() == [[0b1010]]


@pytest.mark.parametrize("k", [1, 7, 8, 9, 63, 64, 65, 100])
def test_binary_pack_round_trip(k):
    w = rng.standard_normal((5, k))
    b = fixq.binarize(w)
    b2 = lowbit.BinaryWeights.from_arrays(b.to_arrays())
    np.testing.assert_array_equal(b2.unpack(), np.where(w < 0, -1, 1))
    np.testing.assert_allclose(b2.alpha, np.abs(w).mean(axis=1), rtol=1e-6)
    assert b.bits.shape == (5, (k + 7) // 8)
    if k % 8:
        bad = b.to_arrays()
        bad["bits"][:, -1] |= 0x80
        with pytest.raises(ValueError, match="padding"):
            lowbit.BinaryWeights.from_arrays(bad)


POP_K = [1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 320, 1000, 8200]


@pytest.mark.parametrize("k", POP_K)
def test_popcount_linear_bit_exact(k):
    for m, n in ((1, 1), (3, 5), (2, 4), (7, 9), (5, 130)):
        if k == 8200 and m * n > 20:
            continue
        x = rng.standard_normal((m, k))
        w = rng.standard_normal((n, k))
        a, b = fixq.binarize(x), fixq.binarize(w)
        want = a.unpack().astype(np.int64) @ b.unpack().astype(np.int64).T
        for isa, y in _on_every_isa(lambda: fixq.popcount_linear(a, b)).items():
            assert y.dtype == np.int32
            np.testing.assert_array_equal(y, want, err_msg=isa)


def test_popcount_linear_cache_blocks():
    # k = 8200: 33 chunks (> 31 between widenings), 62-row blocks of a, 8-row tiles of b plus tails
    k, m, n = 8200, 70, 21
    a, b = fixq.binarize(rng.standard_normal((m, k))), fixq.binarize(rng.standard_normal((n, k)))
    want = a.unpack().astype(np.int64) @ b.unpack().astype(np.int64).T
    for isa, y in _on_every_isa(lambda: fixq.popcount_linear(a, b)).items():
        np.testing.assert_array_equal(y, want, err_msg=isa)


def test_popcount_pack_clears_padding_bits():
    k = 70
    a, b = fixq.binarize(rng.standard_normal((3, k))), fixq.binarize(rng.standard_normal((4, k)))
    want = fixq.popcount_linear(a, b)
    dirty = a.bits.copy()
    dirty[:, -1] |= 0xC0   # bits 70, 71: past k
    packed = np.empty_like(a._packed)
    _core.bgemm_pack_raw(dirty, k, packed)
    np.testing.assert_array_equal(packed, a._packed)
    # nibble-plane layout: chunk bytes & 15, then >> 4
    raw = np.zeros(32, np.uint8)
    raw[:9] = a.bits[0]
    np.testing.assert_array_equal(a._packed[:64], np.concatenate([raw & 15, raw >> 4]))
    for y in _on_every_isa(lambda: fixq.popcount_linear(a, b)).values():
        np.testing.assert_array_equal(y, want)


def test_popcount_extremes():
    k = 1000
    ones = fixq.binarize(np.ones((2, k)))
    neg = fixq.binarize(-np.ones((3, k)))
    for y in _on_every_isa(lambda: fixq.popcount_linear(ones, neg)).values():
        assert np.all(y == -k)
    for y in _on_every_isa(lambda: fixq.popcount_linear(neg, neg)).values():
        assert np.all(y == k)
    with pytest.raises(ValueError, match="K"):
        fixq.popcount_linear(ones, fixq.binarize(np.ones((1, 999))))
    with pytest.raises(TypeError, match="BinaryWeights"):
        fixq.popcount_linear(np.ones((2, k)), neg)


def test_binary_linear_xnor_net():
    x = rng.standard_normal((4, 50)).astype(np.float32)
    w = rng.standard_normal((6, 50)).astype(np.float32)
    bw = fixq.binarize(w)
    beta = np.abs(x).mean(axis=1)
    want = (np.where(x < 0, -1, 1) @ np.where(w < 0, -1, 1).T) * beta[:, None] * np.abs(w).mean(axis=1)[None, :]
    np.testing.assert_allclose(fixq.binary_linear(x, bw), want, rtol=1e-5)


# ---- int8 activations through the int8 kernel ---------------------------------------------------

@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_lowbit_qlinear_matches_reference(kind):
    k, n, m = 37, 11, 5
    w = rng.standard_normal((n, k))
    lw = fixq.ternarize(w) if kind == "ternary" else fixq.binarize(w)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    x_zp, x_scale = -3, 0.05
    acc = fixq.lowbit_qlinear(x, lw, x_scale, x_zp, out_dtype=np.int32)
    want = (x.astype(np.int64) - x_zp) @ lw.unpack().astype(np.int64).T
    np.testing.assert_array_equal(acc, want)
    y = fixq.lowbit_qlinear(x, lw, x_scale, x_zp, out_dtype=np.float32)
    np.testing.assert_allclose(y, want * x_scale * lw.alpha[None, :], rtol=1e-6)
    q = fixq.lowbit_qlinear(x, lw, x_scale, x_zp, out_scale=0.5, out_zero_point=2)
    ref = np.clip(np.rint((want * (np.float32(x_scale) * lw.alpha[None, :]).astype(np.float32) / 0.5)) + 2,
                  -128, 127)
    assert np.abs(q.astype(np.int64) - ref).max() <= 1   # float32 vs float64 scale product


# ---- reports ----------------------------------------------------------------------------------

def test_storage_report():
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    rep = {r["precision"]: r for r in fixq.storage_report(w)}
    assert rep["fp16"]["ratio_vs_fp32"] == 0.5
    assert rep["int8"]["ratio_vs_fp32"] == pytest.approx(0.25 + 1 / 1024)
    assert rep["ternary"]["ratio_vs_fp32"] == pytest.approx(1 / 16 + 1 / 1024)
    assert rep["binary"]["ratio_vs_fp32"] == pytest.approx(1 / 32 + 1 / 1024)
    # Gaussian weights: fp16 ~74 dB, int8 ~40 dB, TWN ~7 dB, sign ~4.4 dB (1 - 2/pi of the energy lost)
    assert rep["fp16"]["sqnr_db"] > 65 and 35 < rep["int8"]["sqnr_db"] < 48
    assert 6 < rep["ternary"]["sqnr_db"] < 8.5 and 4.0 < rep["binary"]["sqnr_db"] < 4.8
    assert rep["fp32"]["sqnr_db"] == float("inf")


def test_binary_linear_empty_batch():
    """An empty batch gives [0, N], as fp16_linear and lowbit_qlinear do (it used to be refused with
    "w must be a non-empty 2-D array", naming the weights)."""
    w = fixq.binarize(np.random.default_rng(0).standard_normal((5, 9)).astype(np.float32))
    y = fixq.binary_linear(np.zeros((0, 9), np.float32), w)
    assert y.shape == (0, 5) and y.dtype == np.float32
    with pytest.raises(ValueError, match="x has K=8 but w has K=9"):
        fixq.binary_linear(np.zeros((0, 8), np.float32), w)


def test_binary_linear_errors_name_x():
    w = fixq.binarize(np.random.default_rng(3).standard_normal((5, 40)).astype(np.float32))
    for x, exc in [(np.zeros((3, 39), np.float32), ValueError), (np.zeros((3, 40), np.int8), TypeError),
                   (np.zeros(40, np.float32), ValueError), (np.full((2, 40), np.nan, np.float32), ValueError)]:
        with pytest.raises(exc, match="^x "):
            fixq.binary_linear(x, w)
    with pytest.raises(TypeError, match="^w must be BinaryWeights"):
        fixq.binary_linear(np.ones((2, 40), np.float32), np.ones((5, 40), np.float32))
