"""fixq.qmatmul / qlinear / pack_weights against the numpy int64 reference, on every CPU path."""
import concurrent.futures
import io
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixq
import gemm_reference as R
from conftest import ISAS, using_isa

DTYPES = (np.int8, np.uint8)
SIZES = list(range(1, 11)) + [15, 16, 17, 31, 32, 33, 63, 64, 65]
# every size on each axis, paired with odd sizes on the others
SHAPES = sorted({(s, t, u) for s, t, u in zip(SIZES, SIZES[3:] + SIZES[:3], SIZES[7:] + SIZES[:7])}
                | {(s, s, s) for s in SIZES} | {(7, 33, 65), (65, 17, 3), (1, 65, 33), (33, 1, 17), (130, 67, 35)})


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=np.int64).astype(dtype)


def s8_range(b):
    """b without its lowest value, so that it packs for the FIXQ_GEMM_S8 kernel (the full range needs S16)."""
    return np.maximum(b, np.iinfo(b.dtype).min + 1).astype(b.dtype)


def zero_points(dtype):
    info = np.iinfo(dtype)
    return (info.min, 0 if dtype == np.int8 else 128, info.max)


@pytest.mark.parametrize("adt", DTYPES)
@pytest.mark.parametrize("bdt", DTYPES)
def test_shape_sweep_int32(isa, adt, bdt):
    rng = np.random.default_rng(1)
    for i, (m, k, n) in enumerate(SHAPES):
        a, b = rand(rng, adt, (m, k)), rand(rng, bdt, (k, n))
        azp = zero_points(adt)[i % 3]
        bzp = zero_points(bdt)[(i // 3) % 3] if i % 2 else rand(rng, bdt, n).astype(np.int32)
        bias = rng.integers(-10**6, 10**6, n, dtype=np.int32) if i % 4 else None
        for bb in (b, s8_range(b)):
            ref = R.qmatmul_acc(a, bb, azp, bzp, bias)
            y = fixq.qmatmul(a, bb, a_zero_point=azp, b_zero_point=bzp, bias=bias, out_dtype=np.int32)
            np.testing.assert_array_equal(y, ref, err_msg=f"shape {(m, k, n)}")
            packed = fixq.pack_weights(np.ascontiguousarray(bb.T), bzp)
            y2 = fixq.qlinear(a, packed, bias, a_zero_point=azp, out_dtype=np.int32)
            np.testing.assert_array_equal(y2, ref, err_msg=f"packed ({packed.kernel}), shape {(m, k, n)}")


def out_stage(rng, rounding, per_column, n):
    shape = n if per_column else ()
    if rounding == "fp32":
        return {"scale": (rng.uniform(1e-5, 1e-2, shape)).astype(np.float32) if per_column else 3.1e-4}
    m = rng.integers(1 << 30, 2**31 - 1, shape, dtype=np.int64).astype(np.int32)
    s = rng.integers(-14, -6, shape, dtype=np.int64).astype(np.int32)
    return {"multiplier": m if per_column else int(m), "shift": s if per_column else int(s)}


@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("per_column", [False, True], ids=["tensor", "column"])
@pytest.mark.parametrize("out_dtype", [np.int8, np.uint8, np.int16])
def test_fused_output_stage(isa, rounding, per_column, out_dtype):
    rng = np.random.default_rng(2)
    lo, hi = np.iinfo(out_dtype).min, np.iinfo(out_dtype).max
    for i, (m, k, n) in enumerate([(1, 64, 64), (5, 33, 17), (17, 100, 40), (64, 65, 31)]):
        adt, bdt = DTYPES[i % 2], DTYPES[i // 2 % 2]
        a, b = rand(rng, adt, (m, k)), rand(rng, bdt, (k, n))
        b = s8_range(b) if i % 2 else b
        azp, bzp = int(rand(rng, adt, ())), int(rand(rng, bdt, ()))
        bias = rng.integers(-10**5, 10**5, n, dtype=np.int32)
        params = out_stage(rng, rounding, per_column, n)
        ozp = rng.integers(lo, hi + 1, n, dtype=np.int64).astype(np.int32) if per_column else int((lo + hi) // 2)
        omin, omax = (lo + 3, hi - 5) if i % 2 else (None, None)
        acc = R.qmatmul_acc(a, b, azp, bzp, bias)
        ref = R.requantize(acc, rounding, params.get("multiplier"), params.get("shift"), params.get("scale"), ozp,
                           lo if omin is None else omin, hi if omax is None else omax)
        y = fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias, out_zero_point=ozp, out_min=omin,
                         out_max=omax, out_dtype=out_dtype, rounding=rounding, **params)
        assert y.dtype == out_dtype
        np.testing.assert_array_equal(y, ref, err_msg=f"shape {(m, k, n)}")
        # the same through fixq.requantize on the int32 accumulators
        acc32 = fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias, out_dtype=np.int32)
        y2 = fixq.requantize(acc32, zero_point=ozp, qmin=omin, qmax=omax, dtype=out_dtype, rounding=rounding,
                             **params)
        np.testing.assert_array_equal(y, y2)


def test_relu_is_a_clamp(isa):
    rng = np.random.default_rng(3)
    a, w = rand(rng, np.int8, (9, 40)), rand(rng, np.int8, (24, 40))
    y = fixq.qlinear(a, w, multiplier=1 << 30, shift=-6, out_zero_point=-10, out_min=-10)
    acc = R.qmatmul_acc(a, w.T)
    np.testing.assert_array_equal(y, R.requantize(acc, "double", 1 << 30, -6, zero_point=-10, qmin=-10))


# ---- worst cases: where the fast peers saturate int16 -----------------------

@pytest.mark.parametrize("k", [1, 2, 3, 64, 1029, 4096])
@pytest.mark.parametrize("m, n", [(3, 20), (23, 80)])  # 23 x 80: the AVX2 16-row tile on 3 + 2 panels, edges
def test_extremes_exact(isa, k, m, n):
    cases = [
        (np.full((m, k), 255, np.uint8), 0, np.full((k, n), 127, np.int8)),
        (np.full((m, k), 255, np.uint8), 0, np.full((k, n), -127, np.int8)),
        (np.full((m, k), -128, np.int8), 0, np.full((k, n), 127, np.int8)),
        (np.full((m, k), -128, np.int8), 0, np.full((k, n), -127, np.int8)),
        (np.full((m, k), 127, np.int8), 0, np.full((k, n), -127, np.int8)),
        (np.full((m, k), -128, np.int8), 0, np.full((k, n), -128, np.int8)),  # -128 * -128 everywhere
        (np.full((m, k), 0, np.uint8), 255, np.full((k, n), 255, np.uint8)),
        (np.full((m, k), 127, np.int8), -128, np.full((k, n), -128, np.int8)),
    ]
    rng = np.random.default_rng(4)
    alt = np.where(rng.integers(0, 2, (m, k)) == 1, 255, 0).astype(np.uint8)
    cases.append((alt, 0, np.where(rng.integers(0, 2, (k, n)) == 1, 127, -127).astype(np.int8)))
    alt8 = np.where(rng.integers(0, 2, (m, k)) == 1, 127, -128).astype(np.int8)
    cases.append((alt8, 0, np.where(rng.integers(0, 2, (k, n)) == 1, 127, -127).astype(np.int8)))
    for a, azp, b in cases:
        ref = R.qmatmul_acc(a, b, azp)
        np.testing.assert_array_equal(fixq.qmatmul(a, b, a_zero_point=azp, out_dtype=np.int32), ref)


def test_k_65536_with_weights_in_127(isa):
    k = 1 << 16
    a = np.full((2, k), 255, np.uint8)
    a[1, ::2] = 0
    b = np.full((k, 16), 127, np.int8)
    b[:, 1] = -127
    packed = fixq.pack_weights(b, layout="matmul")
    assert packed.kernel == "s8"
    y = fixq.qmatmul(a, packed, out_dtype=np.int32)
    np.testing.assert_array_equal(y, R.qmatmul_acc(a, b))
    assert y[0, 0] == 255 * 127 * k
    a8 = np.full((1, k), -128, np.int8)
    np.testing.assert_array_equal(fixq.qmatmul(a8, packed, out_dtype=np.int32), R.qmatmul_acc(a8, b))


@pytest.mark.parametrize("adt", DTYPES)
def test_k_65536_worst_cases_every_column_and_row_tail(isa, adt):
    """a = 255 (uint8) or -128 (int8) against -128, 127 and -127 at K = 2^16: the VNNI kernel multiplies
    a' + 128 in [0, 255] by b' in [-128, 127]; 9 rows and 17 columns leave a row and a column over
    every tile (4 or 8 rows, 16-column panels)."""
    k, lo = 1 << 16, np.iinfo(adt).min
    top = np.iinfo(adt).max if adt == np.uint8 else lo
    a = np.full((9, k), top, adt)
    a[1] = 0
    a[2, ::2] = lo
    a[3, 1::3] = np.iinfo(adt).max
    b = np.full((k, 17), -128, np.int8)
    b[:, 1::3], b[:, 2::3] = 127, -127
    b[::5, 16] = 127
    packed = fixq.pack_weights(b, layout="matmul")
    assert packed.kernel == "s16"
    y = fixq.qmatmul(a, packed, out_dtype=np.int32)
    np.testing.assert_array_equal(y, R.qmatmul_acc(a, b))
    assert y[0, 0] == int(top) * -128 * k
    b127 = np.where(b == -128, -127, b).astype(np.int8)  # 2 panels: the AVX2 wide tile, 8 rows and 1 over
    s8 = fixq.pack_weights(b127, layout="matmul")
    assert s8.kernel == "s8"
    np.testing.assert_array_equal(fixq.qmatmul(a, s8, out_dtype=np.int32), R.qmatmul_acc(a, b127))


def test_every_row_and_column_remainder(isa):
    """M = 1..17 (every remainder of the 4-, 8- and 16-row tiles), N = 1..49 (every remainder of the
    16-column panels and of the 3-panel tile), odd K, full-range operands and zero points."""
    rng = np.random.default_rng(11)
    for m in range(1, 18):
        for n in range(1, 50):
            k = (1, 3, 5, 36, 37, 71)[(m + n) % 6]
            a, b = rand(rng, np.uint8, (m, k)), rand(rng, np.int8, (k, n))
            bzp = 0 if n % 3 else rand(rng, np.int8, n).astype(np.int32)
            ref = R.qmatmul_acc(a, b, 77, bzp)
            y = fixq.qmatmul(a, b, a_zero_point=77, b_zero_point=bzp, out_dtype=np.int32)
            np.testing.assert_array_equal(y, ref, err_msg=f"shape {(m, k, n)}")


def test_small_k_every_row_tile_and_k_remainder(isa):
    """K = 1..66 (the AVX-512 VNNI path reads A's rows in place up to K = 64: every remainder of the
    4-value groups, the last group's bytes alone), M = 1..17 (every row tile and its remainder), N across
    1-3 panels, int8 and uint8 A at their extremes, weights with -128 and no zero point (the case read in
    place) and with one (packed), int32 and requantized outputs."""
    rng = np.random.default_rng(17)
    for k in range(1, 67):
        m, n = 1 + k % 17, (1, 8, 16, 24, 33, 48, 49)[k % 7]
        adt = (np.int8, np.uint8)[k % 2]
        a, b = rand(rng, adt, (m, k)), rand(rng, np.int8, (k, n))
        a[0, :] = np.iinfo(adt).min
        a[-1, :] = np.iinfo(adt).max
        azp = zero_points(adt)[k % 3]
        bias = rng.integers(-10**6, 10**6, n, dtype=np.int32)
        for bzp in (0, rand(rng, np.int8, n).astype(np.int32)):
            ref = R.qmatmul_acc(a, b, azp, bzp, bias)
            y = fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias, out_dtype=np.int32)
            np.testing.assert_array_equal(y, ref, err_msg=f"shape {(m, k, n)}")
        scale = rng.uniform(1e-5, 1e-3, n).astype(np.float32)
        y = fixq.qmatmul(a, b, a_zero_point=azp, bias=bias, rounding="fp32", scale=scale, out_zero_point=3)
        np.testing.assert_array_equal(y, R.requantize(R.qmatmul_acc(a, b, azp, 0, bias), "fp32", scale=scale,
                                                      zero_point=3))


def test_gemv_rows_every_column_and_k_remainder(isa):
    """M = 1..3 (the GEMV kernels), N around the 16-column panels and the 3-panel tile, K around the
    4-value groups and the 2-group unroll, int8 and uint8 A, both weight kernels, a per-column b zero point."""
    rng = np.random.default_rng(13)
    for m in (1, 2, 3):
        for n in (1, 15, 16, 17, 47, 48, 49, 1000):
            for k in (1, 3, 4, 5, 1023, 4097):
                if n * k > 1_000_000 and m > 1:
                    continue  # one GEMV of the largest shape is enough per path
                adt = (np.uint8, np.int8)[(n + k) % 2]
                a, b = rand(rng, adt, (m, k)), rand(rng, np.int8, (k, n))
                bzp = rand(rng, np.int8, n).astype(np.int32) if k % 2 else 0
                azp = zero_points(adt)[(m + n) % 3]
                for bb in (b, s8_range(b)):
                    ref = R.qmatmul_acc(a, bb, azp, bzp)
                    y = fixq.qlinear(a, fixq.pack_weights(np.ascontiguousarray(bb.T), bzp), a_zero_point=azp,
                                     out_dtype=np.int32)
                    np.testing.assert_array_equal(y, ref, err_msg=f"shape {(m, k, n)}")


@pytest.mark.parametrize("shape", [(261, 1030, 100), (70, 3000, 17)])
def test_blocks_of_rows_and_panels(isa, shape):
    """Several blocks of packed A rows and several groups of panels in one call."""
    m, k, n = shape
    rng = np.random.default_rng(12)
    a, w = rand(rng, np.int8, (m, k)), s8_range(rand(rng, np.int8, (n, k)))
    bias = rng.integers(-10**6, 10**6, n, dtype=np.int32)
    mult = rng.integers(1 << 30, 2**31 - 1, n, dtype=np.int64).astype(np.int32)
    shift = rng.integers(-20, -12, n, dtype=np.int64).astype(np.int32)
    acc = R.qmatmul_acc(a, w.T, -3, 0, bias)
    np.testing.assert_array_equal(fixq.qlinear(a, w, bias, a_zero_point=-3, out_dtype=np.int32), acc)
    y = fixq.qlinear(a, fixq.pack_weights(w), bias, a_zero_point=-3, multiplier=mult, shift=shift, out_zero_point=5)
    np.testing.assert_array_equal(y, R.requantize(acc, "double", mult, shift, zero_point=5))


def test_strided_bias_and_per_column_arrays():
    """Views with strides (every other element) are as good as contiguous arrays."""
    rng = np.random.default_rng(13)
    a, w = rand(rng, np.int8, (5, 40)), rand(rng, np.int8, (7, 40))
    bias = rng.integers(-10**4, 10**4, 14, dtype=np.int32)[::2]
    mult = np.full(14, 1 << 30, np.int32)[::2]
    shift = np.arange(-14, 0, dtype=np.int32)[::2]
    zp = np.arange(14, dtype=np.int32)[::2]
    acc = R.qmatmul_acc(a, w.T, 0, 0, bias)
    np.testing.assert_array_equal(fixq.qlinear(a, w, bias, out_dtype=np.int32), acc)
    y = fixq.qlinear(a, fixq.pack_weights(w), bias, multiplier=mult, shift=shift, out_zero_point=zp)
    np.testing.assert_array_equal(y, R.requantize(acc, "double", mult, shift, zero_point=zp))


def test_double_rounding_ties_every_shift(isa):
    """The output stage's double rounding (one 64-bit rounding on AVX2) at the ties of both roundings
    and at the int32 ends, for every shift, per tensor and per column."""
    rng = np.random.default_rng(13)
    for shift in range(-31, 31):
        e = max(-shift, 0)
        mults = [0, 1, 3, 1 << 30, (1 << 30) + 1, 2**31 - 1] + [int(v) for v in rng.integers(1, 2**31, 6)]
        for m in mults:
            xs = [-(2**31), -(2**31) + 1, 2**31 - 1, 0, 1, -1, 1 << 30, -(1 << 30), -(1 << 30) - 1]
            for t in [int(j) * 2**(31 + e) + 2**(30 + e) for j in rng.integers(-2**20, 2**20, 6)] + \
                     [int(j) * 2**31 + 2**30 for j in rng.integers(-2**20, 2**20, 6)]:
                xs += [v for v in (t // max(m, 1) - 1, t // max(m, 1), t // max(m, 1) + 1) if -(2**31) <= v < 2**31]
            x = np.array(xs, np.int64).astype(np.int32)
            want = R.mbqm(x, m, shift, "double")
            np.testing.assert_array_equal(fixq.requantize(x, m, shift, dtype=np.int32), want,
                                          err_msg=f"m={m} shift={shift}")
        ms = np.array(mults, np.int32)
        x = rng.integers(-(2**31), 2**31, (5, len(ms)), dtype=np.int64).astype(np.int32)
        np.testing.assert_array_equal(fixq.requantize(x, ms, np.full(len(ms), shift, np.int32), dtype=np.int32),
                                      R.mbqm(x, ms, shift, "double"), err_msg=f"per column, shift={shift}")


def test_overflow_is_refused_up_front():
    k = 1 << 16
    a = np.full((1, k), 255, np.uint8)
    b = np.full((k, 4), -128, np.int8)
    np.testing.assert_array_equal(fixq.qmatmul(a, b, out_dtype=np.int32), R.qmatmul_acc(a, b))  # just fits
    b = np.full((k + 1000, 4), -128, np.int8)
    a = np.full((1, k + 1000), 255, np.uint8)
    with pytest.raises(OverflowError, match="int32 accumulator could overflow.*column 0"):
        fixq.qmatmul(a, b, out_dtype=np.int32)
    a = np.full((1, k), 255, np.uint8)
    b127 = np.full((k, 4), 127, np.int8)
    fixq.qmatmul(a, b127, bias=np.full(4, 2**24, np.int32), out_dtype=np.int32)  # fits
    with pytest.raises(OverflowError, match="bias"):
        fixq.qmatmul(a, b127, bias=np.full(4, 2**30, np.int32), out_dtype=np.int32)
    # the largest |bias| and the largest column bound are in different columns: each column fits
    b2 = np.zeros((k, 2), np.int8)
    b2[:, 0] = 127
    bias = np.array([-(2**24), -(2**31)], np.int32)
    np.testing.assert_array_equal(fixq.qmatmul(a, b2, bias=bias, out_dtype=np.int32), R.qmatmul_acc(a, b2, 0, 0, bias))
    with pytest.raises(OverflowError, match="column 0"):
        fixq.qmatmul(a, b2, bias=np.array([-(2**26), 0], np.int32), out_dtype=np.int32)


def test_kernel_choice_follows_weight_range():
    assert fixq.pack_weights(np.array([[-127, 127]], np.int8)).kernel == "s8"
    assert fixq.pack_weights(np.array([[-128, 127]], np.int8)).kernel == "s16"
    assert fixq.pack_weights(np.array([[1, 255]], np.uint8)).kernel == "s8"
    assert fixq.pack_weights(np.array([[0, 255]], np.uint8)).kernel == "s16"


# ---- packed weights, layouts, batching ---------------------------------------

def test_packed_round_trip_through_npz():
    rng = np.random.default_rng(5)
    for dt, layout in ((np.int8, "linear"), (np.uint8, "matmul")):
        w = rand(rng, dt, (37, 21))
        zp = rand(rng, dt, 37 if layout == "linear" else 21).astype(np.int32)
        packed = fixq.pack_weights(w, zp, layout=layout)
        assert packed.shape == w.shape and packed.dtype == dt and packed.layout == layout
        buf = io.BytesIO()
        np.savez(buf, **packed.to_arrays())
        buf.seek(0)
        arrays = dict(np.load(buf, allow_pickle=False))
        np.testing.assert_array_equal(arrays["w"], w)
        np.testing.assert_array_equal(arrays["zero_point"], zp)
        again = fixq.pack_weights(**arrays)
        a = rand(rng, np.int8, (5, 21 if layout == "linear" else 37))
        f = fixq.qlinear if layout == "linear" else fixq.qmatmul
        np.testing.assert_array_equal(f(a, again, out_dtype=np.int32), f(a, packed, out_dtype=np.int32))
        np.testing.assert_array_equal(f(a, packed, out_dtype=np.int32), f(a, w, b_zero_point=zp, out_dtype=np.int32))


def test_batched_and_vector_inputs(isa):
    rng = np.random.default_rng(6)
    a = rand(rng, np.uint8, (2, 3, 5, 24))
    w = rand(rng, np.int8, (10, 24))
    y = fixq.qlinear(a, w, a_zero_point=128, out_dtype=np.int32)
    assert y.shape == (2, 3, 5, 10)
    np.testing.assert_array_equal(y, R.qmatmul_acc(a, w.T, 128))
    v = a[0, 0, 0]
    np.testing.assert_array_equal(fixq.qmatmul(v, w.T, a_zero_point=128, out_dtype=np.int32),
                                  R.qmatmul_acc(v, w.T, 128))


def test_strided_readonly_and_out(isa):
    rng = np.random.default_rng(7)
    base = rand(rng, np.int8, (12, 80))
    a = base[::2, ::2]  # non-contiguous
    b = rand(rng, np.int8, (40, 9))
    b.flags.writeable = False
    ref = R.requantize(R.qmatmul_acc(a, b), "double", 1 << 30, -8)
    out = np.empty((6, 9), np.int8)
    y = fixq.qmatmul(a, b, multiplier=1 << 30, shift=-8, out=out)
    assert y is out
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
def test_no_output_columns(rounding):
    """N = 0 gives numpy's empty result, per-column parameters of length 0 included; length 0 against
    N > 0 is a clear error."""
    a = np.zeros((3, 4), np.uint8)
    per_col = {"scale": np.zeros(0, np.float32)} if rounding == "fp32" else \
        {"multiplier": np.zeros(0, np.int32), "shift": np.zeros(0, np.int32)}
    for b in (np.zeros((4, 0), np.int8), fixq.pack_weights(np.zeros((4, 0), np.int8), layout="matmul")):
        y = fixq.qmatmul(a, b, rounding=rounding, out_zero_point=np.zeros(0, np.int32), out_dtype=np.uint8,
                         bias=np.zeros(0, np.int32), **per_col)
        assert y.shape == (3, 0) and y.dtype == np.uint8
        assert fixq.qmatmul(a[None], b, rounding=rounding, **per_col).shape == (1, 3, 0)
    with pytest.raises(ValueError, match="length N = 3, got 0"):
        fixq.qmatmul(a, np.zeros((4, 3), np.int8), rounding=rounding, **per_col)


def test_empty_dimensions(isa):
    a = np.zeros((0, 8), np.int8)
    assert fixq.qmatmul(a, np.zeros((8, 3), np.int8), out_dtype=np.int32).shape == (0, 3)
    y = fixq.qmatmul(np.zeros((2, 0), np.int8), np.zeros((0, 3), np.int8), bias=np.arange(3, dtype=np.int32),
                     out_dtype=np.int32)
    np.testing.assert_array_equal(y, [[0, 1, 2], [0, 1, 2]])


# ---- threads ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(300, 200, 150), (3, 300, 700), (1, 4096, 1024)])
def test_threads_give_identical_results(isa, shape):
    m, k, n = shape
    rng = np.random.default_rng(8)
    a, w = rand(rng, np.uint8, (m, k)), rand(rng, np.int8, (n, k))
    packed = fixq.pack_weights(w, 3)
    ref = R.requantize(R.qmatmul_acc(a, w.T, 100, 3), "single", 1 << 30, -10)
    for threads in (1, 2, 3):
        y = fixq.qlinear(a, packed, a_zero_point=100, multiplier=1 << 30, shift=-10, rounding="single",
                         threads=threads)
        np.testing.assert_array_equal(y, ref, err_msg=f"threads={threads}")


def test_python_threads_share_inputs(isa):
    rng = np.random.default_rng(9)
    a = rand(rng, np.int8, (64, 256))
    packed = fixq.pack_weights(rand(rng, np.int8, (96, 256)))
    bias = rng.integers(-1000, 1000, 96, dtype=np.int32)
    ref = fixq.qlinear(a, packed, bias, multiplier=1 << 30, shift=-9)

    def work(i):
        return all(np.array_equal(fixq.qlinear(a, packed, bias, multiplier=1 << 30, shift=-9, threads=1 + i % 2), ref)
                   for _ in range(20))

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(8)))


def test_worker_pool_under_concurrent_callers(isa):
    """threads > 1 from several Python threads at once: one call holds the kept workers, the others start
    threads of their own (parallel.c); every result is exact."""
    rng = np.random.default_rng(10)
    a = rand(rng, np.uint8, (130, 256))
    w = rand(rng, np.int8, (260, 256))
    packed = fixq.pack_weights(w)
    ref = R.requantize(R.qmatmul_acc(a, w.T, 7, 0), "double", 1 << 30, -12)

    def work(i):
        return all(np.array_equal(fixq.qlinear(a, packed, a_zero_point=7, multiplier=1 << 30, shift=-12,
                                               threads=2 + i % 3), ref) for _ in range(10))

    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        assert all(ex.map(work, range(6)))


def test_more_threads_than_kept_workers(isa):
    """threads beyond the 63 kept workers: the parts past them are claimed by the threads there are."""
    rng = np.random.default_rng(12)
    a, w = rand(rng, np.int8, (800, 256)), rand(rng, np.int8, (260, 256))
    ref = R.requantize(R.qmatmul_acc(a, w.T, 0, 0), "double", 1 << 30, -12)
    np.testing.assert_array_equal(fixq.qlinear(a, w, multiplier=1 << 30, shift=-12, threads=100), ref)


def test_threads_against_few_row_tiles_and_panels(isa):
    """More threads than row tiles and than 16-column panels (few rows, few columns, long K): every
    part gets rows or panels (an empty part once divided by zero), and the result is threads=1's."""
    rng = np.random.default_rng(14)
    k = 8192
    for m, n in [(1, 48), (5, 16), (8, 17), (9, 32), (16, 33), (17, 16), (33, 100)]:
        a, w = rand(rng, np.uint8, (m, k)), s8_range(rand(rng, np.int8, (n, k)))
        packed = fixq.pack_weights(w)
        ref = fixq.qlinear(a, packed, a_zero_point=128, multiplier=1 << 30, shift=-16)
        for threads in (2, 3, 5, 8, 64):
            y = fixq.qlinear(a, packed, a_zero_point=128, multiplier=1 << 30, shift=-16, threads=threads)
            np.testing.assert_array_equal(y, ref, err_msg=f"m={m} n={n} threads={threads}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_worker_pool_after_fork():
    """The kept workers do not survive fork(): the child starts its own and gets the same result."""
    rng = np.random.default_rng(11)
    a, w = rand(rng, np.int8, (128, 300)), rand(rng, np.int8, (200, 300))
    ref = fixq.qlinear(a, w, multiplier=1 << 30, shift=-11, threads=2)
    pid = os.fork()
    if pid == 0:
        ok = all(np.array_equal(fixq.qlinear(a, w, multiplier=1 << 30, shift=-11, threads=t), ref) for t in (2, 3, 2))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(fixq.qlinear(a, w, multiplier=1 << 30, shift=-11, threads=2), ref)


# ---- properties -----------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 20), k=st.integers(1, 70), n=st.integers(1, 40), adt=st.sampled_from(DTYPES),
       bdt=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1), per_column=st.booleans(), s8=st.booleans())
def test_matches_reference_property(m, k, n, adt, bdt, seed, per_column, s8):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, adt, (m, k)), rand(rng, bdt, (k, n))
    b = s8_range(b) if s8 else b
    azp = int(rand(rng, adt, ()))
    bzp = rand(rng, bdt, n).astype(np.int32) if per_column else int(rand(rng, bdt, ()))
    bias = rng.integers(-2**20, 2**20, n, dtype=np.int32)
    params = out_stage(rng, "double", per_column, n)
    acc = R.qmatmul_acc(a, b, azp, bzp, bias)
    ref = R.requantize(acc, "double", params["multiplier"], params["shift"])
    for isa in ISAS:
        with using_isa(isa):
            np.testing.assert_array_equal(
                fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias, out_dtype=np.int32), acc)
            np.testing.assert_array_equal(
                fixq.qmatmul(a, b, a_zero_point=azp, b_zero_point=bzp, bias=bias, **params), ref)


# ---- bad input ------------------------------------------------------------------

A = np.zeros((4, 8), np.int8)
B = np.zeros((8, 5), np.int8)
MS = {"multiplier": 1 << 30, "shift": -3}


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fixq.qmatmul(A, np.zeros((7, 5), np.int8), **MS), ValueError, r"\(4, 8\).*\(7, 5\)"),
    (lambda: fixq.qlinear(A, np.zeros((5, 7), np.int8), **MS), ValueError, r"\(4, 8\).*\(5, 7\)"),
    (lambda: fixq.qmatmul(A.astype(np.float32), B, **MS), TypeError, "a must have dtype"),
    (lambda: fixq.qmatmul(A, B.astype(np.int16), **MS), TypeError, "b must have dtype"),
    (lambda: fixq.qmatmul(A, np.zeros((2, 8, 5), np.int8), **MS), ValueError, "b must be 2-D"),
    (lambda: fixq.qmatmul(A, B, bias=np.zeros(4, np.int32), **MS), ValueError, r"bias must have shape \(5,\)"),
    (lambda: fixq.qmatmul(A, B, bias=np.zeros(5, np.int64), **MS), TypeError, "bias must have dtype"),
    (lambda: fixq.qmatmul(A, B), ValueError, "takes multiplier= and shift="),
    (lambda: fixq.qmatmul(A, B, multiplier=1, shift=0, scale=0.5), ValueError, "not scale"),
    (lambda: fixq.qmatmul(A, B, scale=0.5, rounding="fp32", multiplier=3), ValueError, "not multiplier"),
    (lambda: fixq.qmatmul(A, B, multiplier=np.ones(4, np.int32) << 20, shift=0), ValueError, "length N = 5"),
    (lambda: fixq.qmatmul(A, B, scale=np.ones(3, np.float32), rounding="fp32"), ValueError, "length N = 5"),
    (lambda: fixq.qmatmul(A, B, multiplier=-1, shift=0), ValueError, "multiplier"),
    # per-column int32 arrays go to the C checks first; a value they refuse gets the Python checks' message
    (lambda: fixq.qmatmul(A, B, multiplier=np.array([1, 2, -3, 4, 5], np.int32), shift=np.zeros(5, np.int32)),
     ValueError, "multiplier must be in"),
    (lambda: fixq.qmatmul(A, B, multiplier=np.ones(5, np.int32), shift=np.full(5, 31, np.int32)), ValueError,
     "shift must be in"),
    (lambda: fixq.qmatmul(A, B, multiplier=np.ones(5, np.int32), shift=np.zeros(5, np.int32),
                          out_zero_point=np.full(5, 200, np.int32)), ValueError, "out_zero_point"),
    (lambda: fixq.qmatmul(A, B, scale=np.array([1, 1, np.inf, 1, 1], np.float32), rounding="fp32"), ValueError,
     "scale must be finite"),
    (lambda: fixq.qmatmul(A, B, multiplier=1, shift=40), ValueError, "shift"),
    (lambda: fixq.qmatmul(A, B, rounding="nearest", **MS), ValueError, "rounding"),
    (lambda: fixq.qmatmul(A, B, out=np.zeros((4, 6), np.int8), **MS), ValueError, r"out must .*\(4, 5\)"),
    (lambda: fixq.qmatmul(A, B, out=np.zeros((4, 5), np.uint8), **MS), ValueError, "out must .*int8"),
    (lambda: fixq.qmatmul(A, B, out=np.zeros((5, 4), np.int8).T, **MS), ValueError, "C-contiguous"),
    (lambda: fixq.qmatmul(A, B, threads=0, **MS), ValueError, "threads"),
    (lambda: fixq.qmatmul(A, B, a_zero_point=200, **MS), ValueError, "a_zero_point"),
    (lambda: fixq.qmatmul(A, B, b_zero_point=-129, **MS), ValueError, "b_zero_point"),
    (lambda: fixq.qmatmul(A, B, out_zero_point=300, **MS), ValueError, "out_zero_point"),
    (lambda: fixq.qmatmul(A, B, out_min=10, out_max=5, **MS), ValueError, "out_min"),
    (lambda: fixq.qmatmul(A, B, out_dtype=np.int32, **MS), ValueError, "raw accumulators"),
    (lambda: fixq.qmatmul(A, B, out_dtype=np.float32, **MS), TypeError, "out_dtype"),
    (lambda: fixq.qmatmul(A, fixq.pack_weights(B, 3, layout="matmul"), b_zero_point=4, **MS), ValueError,
     "packed with"),
    (lambda: fixq.pack_weights(B, layout="nk"), ValueError, "layout"),
    (lambda: fixq.pack_weights(B, np.zeros(7, np.int32)), ValueError, "zero_point"),
    (lambda: fixq.PackedWeights(), TypeError, "pack_weights"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_pack_weights_layout_not_a_string():
    with pytest.raises(ValueError, match="layout must be 'linear'"):
        fixq.pack_weights(np.zeros((2, 3), np.int8), layout=np.array(["linear"]))


def test_threads_beyond_int32_are_capped(isa):
    """threads is an upper bound on the parts: 2**31 and more run like 2**31 - 1 (they used to raise
    OverflowError "value too large to convert to int", the error type of an accumulator overflow)."""
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (16, 300), dtype=np.int8)
    w = rng.integers(-128, 128, (40, 300), dtype=np.int8)
    want = fixq.qlinear(a, w, out_dtype=np.int32)
    for t in (2**31, 2**63, np.int64(2**40)):
        np.testing.assert_array_equal(fixq.qlinear(a, w, out_dtype=np.int32, threads=t), want)


@pytest.mark.parametrize("target", ["tflite", "gemmlowp", "xnnpack", "onnxruntime"])
def test_target_multiplier_out_of_range_is_refused(target):
    """target="tflite" with a_scale * b_scale / out_scale = 1e12 (a left shift of 40) used to wrap in its
    int64 emulation: x = 2 gave -128; gemmlowp named a shift the caller never passed; xnnpack and
    onnxruntime, with a float32 scale that underflows to 0, named a `scale` the caller never passed."""
    a = np.array([[1, 2, -3, 0]], np.int8)
    w = np.eye(4, dtype=np.int8)
    scales = (1e-38, 1e-38, 1.0) if target in ("xnnpack", "onnxruntime") else (1.0, 1.0, 1e-12)
    with pytest.raises(ValueError, match="requantization multiplier a_scale \\* b_scale / out_scale"):
        fixq.qlinear(a, w, target=target, scales=scales)
    np.testing.assert_array_equal(fixq.qlinear(a, w, target=target, scales=(1.0, 1.0, 1e-9)), [[127, 127, -128, 0]])
