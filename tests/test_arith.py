"""The fixed-point core: golden tables, reference sweeps on every CPU path, bad input."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixq
from fixq import _core

import reference as ref

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
EDGE_X = np.array([I32_MIN, I32_MIN + 1, -(2**30), -65536, -257, -256, -129, -128, -3, -2, -1, 0, 1, 2, 3,
                   127, 128, 255, 256, 65535, 2**30, I32_MAX - 1, I32_MAX], np.int64)
EDGE_M = np.array([0, 1, 2**30, 2**30 + 1, 1518500250, 2**31 - 2, 2**31 - 1], np.int64)
EDGE_SHIFT = np.array([-31, -30, -17, -8, -1, 0, 1, 7, 29, 30], np.int64)


# ---- golden tables -----------------------------------------------------------

@pytest.mark.parametrize("a, b, want", [
    (I32_MIN, I32_MIN, I32_MAX),          # the only saturating case
    (1, 2**30, 1),                        # exact 0.5: ties toward +inf
    (-1, 2**30, 0),                       # exact -0.5: ties toward +inf
    (3, 2**30, 2),                        # 1.5 -> 2
    (-3, 2**30, -1),                      # -1.5 -> -1
    (I32_MAX, I32_MAX, I32_MAX - 1),
    (I32_MIN, I32_MAX, -I32_MAX),
    (0, I32_MIN, 0),
])
def test_srdhm_golden(a, b, want):
    assert _core.srdhm(a, b) == want
    assert int(ref.srdhm(a, b)) == want


@pytest.mark.parametrize("x, e, want", [
    (-1, 1, -1), (1, 1, 1), (-3, 1, -2), (3, 1, 2),   # ties away from zero
    (5, 2, 1), (6, 2, 2), (-6, 2, -2), (-5, 2, -1), (7, 2, 2),
    (I32_MAX, 31, 1), (I32_MIN, 31, -1), (2**30, 31, 1), (2**30 - 1, 31, 0), (-(2**30), 31, -1),
    (-(2**30) + 1, 31, 0), (12345, 0, 12345),
])
def test_rounding_divide_by_pot_golden(x, e, want):
    assert _core.rounding_divide_by_pot(x, e) == want
    assert int(ref.rdbpot(x, e)) == want


@pytest.mark.parametrize("x, m, shift, double, single", [
    (1, 2**30, -1, 1, 0),                  # exact 0.25: the two roundings differ (ruy PR #227)
    (3, 2**30, -1, 1, 1),                  # 0.75
    (-1, 2**30, -1, 0, 0),                 # -0.25
    (2, 2**30, -1, 1, 1),                  # 0.5: ties away (double) vs toward +inf (single)
    (-2, 2**30, -1, -1, 0),                # -0.5
    (-6, 2**30, -2, -1, -1),               # -0.75
    (100, 2**31 - 1, 0, 100, 100),         # multiplier ~1.0
    (I32_MAX, 2**31 - 1, 0, I32_MAX - 1, I32_MAX - 1),
    (2**29, 2**30, 2, 2**30, 2**30),       # left shift
    # double rounding saturates x << shift first (gemmlowp SaturatingRoundingMultiplyByPOT),
    # single rounding saturates the final result
    (2**30, 2**30, 2, 2**30, I32_MAX),
    (-(2**30), 2**30, 2, -(2**30), I32_MIN),
    (I32_MAX, 2**31 - 1, 30, I32_MAX - 1, I32_MAX),
    (I32_MIN, 2**31 - 1, 30, -I32_MAX, I32_MIN),
    (I32_MAX, 2**30, -31, 1, 0),           # 0.5 - 2^-32: double rounding rounds twice, up to 1
    (I32_MIN, 2**31 - 1, -31, -1, -1),
    (12345, 0, 0, 0, 0),
])
def test_mbqm_golden(isa, x, m, shift, double, single):
    assert fixq.multiply_by_quantized_multiplier(x, m, shift) == double
    assert fixq.multiply_by_quantized_multiplier(x, m, shift, rounding="single") == single
    assert int(ref.mbqm_double(x, m, shift)) == double
    assert int(ref.mbqm_single(x, m, shift)) == single


@pytest.mark.parametrize("real, want", [
    (0.0, (0, 0)),
    (0.5, (2**30, 0)),
    (1.0, (2**30, 1)),
    (0.75, (3 * 2**29, 0)),
    (2.0**-31, (2**30, -30)),
    (2.0**-32, (2**30, -31)),
    (2.0**-33, (0, 0)),                     # shift < -31 flushes to zero
    (0.9999999999, (2**30, 1)),            # rounds to 2^31: the correction halves it
    (0.5 + 2.0**-32, (2**30 + 1, 0)),      # exact tie in q*2^31: away from zero
    (0.5 + 2.0**-33, (2**30, 0)),
    (1e9, (2000000000, 30)),
])
def test_quantize_multiplier_golden(real, want):
    assert fixq.quantize_multiplier(real) == want
    assert ref.quantize_multiplier(real) == want


def test_quantize_multiplier_arrays_match_scalars():
    rng = np.random.default_rng(1)
    reals = np.concatenate([10.0 ** rng.uniform(-12, 9, 500), [0.0, 0.5, 1.0, 2.0**-33]])
    m, s = fixq.quantize_multiplier(reals)
    assert m.dtype == np.int32 and s.dtype == np.int32 and m.shape == reals.shape
    for r, mi, si in zip(reals, m, s):
        assert (int(mi), int(si)) == ref.quantize_multiplier(float(r))
        if mi:
            assert abs(mi * 2.0 ** (si - 31) - r) <= r * 2.0**-30
    m2, s2 = fixq.quantize_multiplier(reals.reshape(-1, 2))
    assert m2.shape == (252, 2) and np.array_equal(m2.reshape(-1), m)


# ---- sweeps against the reference on every path -------------------------------

def _grid():
    x, m, s = np.meshgrid(EDGE_X, EDGE_M, EDGE_SHIFT, indexing="ij")
    return x.reshape(-1), m.reshape(-1), s.reshape(-1)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mbqm_edge_grid(isa, rounding):
    x, m, s = _grid()
    want = ref.mbqm_double(x, m, s) if rounding == "double" else ref.mbqm_single(x, m, s)
    got = fixq.multiply_by_quantized_multiplier(x.astype(np.int32), m.astype(np.int32), s.astype(np.int32),
                                                rounding=rounding)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mbqm_random(isa, rounding):
    rng = np.random.default_rng(7)
    n = 20000
    x = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    x[::7] = rng.integers(-70000, 70000, len(x[::7]))
    m = rng.integers(0, 2**31 - 1, n, endpoint=True)
    s = rng.integers(-31, 30, n, endpoint=True)
    want = ref.mbqm_double(x, m, s) if rounding == "double" else ref.mbqm_single(x, m, s)
    np.testing.assert_array_equal(fixq.multiply_by_quantized_multiplier(x, m, s, rounding=rounding), want)


@settings(max_examples=150, deadline=None)
@given(x=st.integers(I32_MIN, I32_MAX), m=st.integers(0, 2**31 - 1), s=st.integers(-31, 30),
       rounding=st.sampled_from(["double", "single"]))
def test_mbqm_property(x, m, s, rounding):
    f = ref.mbqm_double if rounding == "double" else ref.mbqm_single
    for isa in fixq.cpu_info()["supported"]:
        _core.select_isa(isa)
        got = fixq.multiply_by_quantized_multiplier(np.full(9, x, np.int32), m, s, rounding=rounding)
        assert np.all(got == int(f(x, m, s)))
    _core.select_isa(fixq.cpu_info()["supported"][-1])


SHAPES = [(1,), (7,), (8,), (9,), (17,), (3, 5), (4, 8), (2, 3, 17), (5, 1, 9)]
OUT_DTYPES = [np.int8, np.uint8, np.int16]


def _acc(rng, shape):
    a = rng.integers(I32_MIN, I32_MAX, shape, endpoint=True)
    small = rng.integers(-300000, 300000, shape)
    return np.where(rng.random(shape) < 0.7, small, a).astype(np.int32)


@pytest.mark.parametrize("rounding", ["double", "single", "fp32"])
@pytest.mark.parametrize("dtype", OUT_DTYPES)
def test_requantize_per_tensor_and_per_channel(isa, rounding, dtype):
    rng = np.random.default_rng(3)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    for shape in SHAPES:
        acc = _acc(rng, shape)
        for axis in [None] + list(range(-len(shape), len(shape))):
            c = 1 if axis is None else shape[axis]
            bshape = [1] * len(shape)
            if axis is not None:
                bshape[axis] = c
            zp = rng.integers(lo, hi, c, endpoint=True)
            zp[0] = lo
            if c > 1:
                zp[-1] = hi
            qmin, qmax = sorted(rng.integers(lo, hi, 2, endpoint=True)) if rng.random() < 0.3 else (lo, hi)
            kw = dict(qmin=int(qmin), qmax=int(qmax), dtype=dtype, rounding=rounding,
                      axis=-1 if axis is None else axis)
            zp_arg = zp if axis is not None else int(zp[0])
            if rounding == "fp32":
                scale = (10.0 ** rng.uniform(-9, 1, c)).astype(np.float32)
                scale[0] = 0.5
                got = fixq.requantize(acc, zero_point=zp_arg, scale=scale if axis is not None else float(scale[0]),
                                      **kw)
                want = ref.requant_fp32(acc, scale.reshape(bshape), zp.reshape(bshape), qmin, qmax)
            else:
                m = rng.integers(0, 2**31 - 1, c, endpoint=True)
                s = rng.integers(-31, 30, c, endpoint=True)
                m[0], s[0] = 2**30, -1
                got = fixq.requantize(acc, m if axis is not None else int(m[0]),
                                      s if axis is not None else int(s[0]), zp_arg, **kw)
                want = ref.requant_fixed(acc, m.reshape(bshape), s.reshape(bshape), zp.reshape(bshape),
                                         qmin, qmax, rounding)
            assert got.dtype == dtype and got.shape == acc.shape
            np.testing.assert_array_equal(got, want, err_msg=f"shape={shape} axis={axis}")


def test_requantize_fp32_ties_round_half_even(isa):
    acc = np.array([1, 3, 5, -1, -3, -5, 255, 256, -257], np.int32)
    got = fixq.requantize(acc, scale=0.5, rounding="fp32", dtype=np.int16)
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, -2, 128, 128, -128])


def test_requantize_int32_output_is_mbqm(isa):
    acc = np.arange(-50, 50, dtype=np.int32)
    got = fixq.requantize(acc, 2**30, -1, dtype=np.int32)
    np.testing.assert_array_equal(got, ref.mbqm_double(acc, 2**30, -1))


def test_requantize_out_and_layouts(isa):
    rng = np.random.default_rng(5)
    acc = _acc(rng, (6, 10))
    out = np.empty((6, 10), np.int8)
    res = fixq.requantize(acc, 2**30, -3, 5, out=out)
    assert res is out
    nc = np.asfortranarray(acc)
    np.testing.assert_array_equal(fixq.requantize(nc, 2**30, -3, 5), out)
    ro = acc.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(fixq.requantize(ro[:, ::2], 2**30, -3, 5), out[:, ::2])
    assert fixq.requantize(np.zeros((0, 4), np.int32), 1, 0).shape == (0, 4)


def test_per_channel_arrays_of_the_c_types_get_the_checks_messages():
    """int32/float32 per-channel arrays go to the C checks first; a value they refuse gets the same
    message as the Python checks give other array types."""
    c = 6
    acc, x, q = np.zeros((3, c), np.int32), np.zeros((3, c), np.float32), np.zeros((3, c), np.int8)
    m, s, zp, sc = np.full(c, 2**30, np.int32), np.full(c, -3, np.int32), np.zeros(c, np.int32), np.ones(c, np.float32)

    def bad(a, i, v):
        a = a.copy()
        a[i] = v
        return a

    cases = [(lambda: fixq.requantize(acc, bad(m, 2, -1), s, zp), "multiplier must be in"),
             (lambda: fixq.requantize(acc, m, bad(s, 0, 31), zp), "shift must be in"),
             (lambda: fixq.requantize(acc, m, s, bad(zp, 5, 128)), "zero_point must lie in"),
             (lambda: fixq.requantize(acc, scale=bad(sc, 1, np.nan), rounding="fp32"), "scale must be finite"),
             (lambda: fixq.quantize(x, bad(sc, 3, 0.0), zp, axis=1), "scale must be finite"),
             (lambda: fixq.quantize(x, sc, bad(zp, 3, -129), axis=1), "zero_point must lie in"),
             (lambda: fixq.dequantize(q, bad(sc, 4, np.inf), zp, axis=1), "scale must be finite"),
             (lambda: fixq.dequantize(q, sc, bad(zp, 0, 1000), axis=1), "zero_point must lie in")]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    np.testing.assert_array_equal(fixq.dequantize(q + 1, sc, zp, axis=1), np.ones((3, c), np.float32))


def test_repeated_calls_take_the_argument_fast_path_with_the_same_results():
    """quantize, dequantize and requantize (int32) remember checked per-tensor arguments: the second
    call with the same scalars skips their checks but not those of the data array and out."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 6)).astype(np.float32) * 20
    acc = _acc(rng, (4, 6))
    q = rng.integers(-128, 128, (4, 6)).astype(np.int8)
    calls = [(fixq.quantize, x, (np.float32(0.07), 3), {"dtype": np.int8}),
             (fixq.dequantize, q, (np.float32(0.07), 3), {}),
             (fixq.requantize, acc, (2**30, -9, 4), {"rounding": "single"})]
    for fn, data, args, kw in calls:
        want = fn(data, *args, **kw)
        for view in (data, data[:, ::2], data.T, data[::-1], data[1:2, 3:4], data[0, 0]):
            np.testing.assert_array_equal(fn(view, *args, **kw), fn(np.ascontiguousarray(view), *args, **kw))
        np.testing.assert_array_equal(fn(data, *args, **kw), want)
        out = np.empty_like(want)
        assert fn(data, *args, **kw, out=out) is out
        np.testing.assert_array_equal(out, want)
        for bad in (out[:, ::2], out.astype(np.float64), out.T):
            with pytest.raises(ValueError, match="out"):
                fn(data, *args, **kw, out=bad)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="out"):
            fn(data, *args, **kw, out=out)
        with pytest.raises((TypeError, ValueError)):
            fn(data.astype(np.complex64), *args, **kw)


@pytest.mark.parametrize("dtype", OUT_DTYPES)
def test_quantize_matches_reference(isa, dtype):
    rng = np.random.default_rng(11)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    specials = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e30, -1e30, np.inf, -np.inf, 0.0, -0.0,
                         3.4e38, 1e-45], np.float32)
    for n in [1, 7, 8, 9, 16, 17, 33, 100]:
        x = np.concatenate([rng.standard_normal(n).astype(np.float32) * 100, specials])
        for scale in [1.0, 0.5, 0.1, 3.7e-5, 1e4]:
            for zp in [lo, 0 if lo < 0 else 1, hi]:
                got = fixq.quantize(x, scale, zp, dtype=dtype)
                np.testing.assert_array_equal(got, ref.quantize(x, scale, zp, lo, hi))
    x = rng.standard_normal((3, 5, 9)).astype(np.float32)
    for axis in range(3):
        c = x.shape[axis]
        sc = (rng.uniform(0.001, 0.1, c)).astype(np.float32)
        zp = rng.integers(lo, hi, c, endpoint=True)
        b = [1, 1, 1]
        b[axis] = c
        np.testing.assert_array_equal(fixq.quantize(x, sc, zp, dtype=dtype, axis=axis),
                                      ref.quantize(x, sc.reshape(b), zp.reshape(b), lo, hi))


def test_quantize_ties_to_even(isa):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5, 1e9, -np.inf], np.float32)
    np.testing.assert_array_equal(fixq.quantize(x, 1.0), [0, 2, 2, 0, -2, -2, 126, 127, -128, 127, -128])


def test_quantize_nan_is_an_error(isa):
    for n in [1, 9, 64]:
        x = np.zeros(n, np.float32)
        x[-1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            fixq.quantize(x, 0.1)


def test_dequantize_matches_reference(isa):
    rng = np.random.default_rng(13)
    for dtype in [np.int8, np.uint8, np.int16, np.int32]:
        info = np.iinfo(dtype)
        for n in [1, 8, 9, 31]:
            q = rng.integers(info.min, info.max, n, endpoint=True).astype(dtype)
            q[0] = info.min
            for zp in [info.min, 0 if info.min < 0 else 1, info.max]:
                got = fixq.dequantize(q, 0.037, zp)
                assert got.dtype == np.float32
                np.testing.assert_array_equal(got, ref.dequantize(q, 0.037, zp))
    q = rng.integers(-128, 127, (4, 6), endpoint=True).astype(np.int8)
    sc = np.linspace(0.01, 0.1, 6).astype(np.float32)
    np.testing.assert_array_equal(fixq.dequantize(q, sc, 0, axis=1), ref.dequantize(q, sc[None, :], 0))


def test_quantize_dequantize_round_trip_error_within_half_scale():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1.0, 1.0, 1000).astype(np.float32)
    scale = 1.0 / 127
    err = np.abs(fixq.dequantize(fixq.quantize(x, scale), scale) - x)
    assert err.max() <= scale / 2 * (1 + 1e-5)


# ---- bad input ----------------------------------------------------------------

@pytest.mark.parametrize("call, exc, match", [
    (lambda: fixq.requantize(np.zeros(3, np.int64), 1, 0), TypeError, "acc must have dtype"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, dtype=np.float32), TypeError, "dtype must be one of"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, rounding="up"), ValueError, "rounding must be one of"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), -1, 0), ValueError, "multiplier must be in"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 31), ValueError, "shift must be in"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, -32), ValueError, "shift must be in"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, 128), ValueError, "zero_point must lie in"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, -1, dtype=np.uint8), ValueError, "zero_point must lie"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), scale=1.0), ValueError, "takes multiplier= and shift="),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, scale=1.0, rounding="fp32"), ValueError, "takes scale="),
    (lambda: fixq.requantize(np.zeros(3, np.int32), scale=0.0, rounding="fp32"), ValueError, "finite and > 0"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), scale=np.nan, rounding="fp32"), ValueError, "finite and > 0"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), scale=1e-50, rounding="fp32"), ValueError, "float32"),
    (lambda: fixq.requantize(np.zeros((2, 3), np.int32), [1, 2], [0, 0]), ValueError, "acc.shape"),
    (lambda: fixq.requantize(np.zeros((2, 3), np.int32), [1, 2, 3], [0, 0]), ValueError, "length"),
    (lambda: fixq.requantize(np.zeros((2, 3), np.int32), [1, 2, 3], 0, axis=2), ValueError, "out of range"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, qmin=-200), ValueError, "qmin=-200 is outside"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, qmin=5, qmax=4), ValueError, "must not exceed"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, out=np.zeros(3, np.uint8)), ValueError, "out must have"),
    (lambda: fixq.requantize(np.zeros(3, np.int32), 1, 0, 3, dtype=np.int32), ValueError, "zero_point must be 0"),
    (lambda: fixq.quantize(np.zeros(3, np.int32), 1.0), TypeError, "x must be a float array"),
    (lambda: fixq.quantize(np.zeros(3, np.float32), -1.0), ValueError, "finite and > 0"),
    (lambda: fixq.quantize(np.zeros(3, np.float32), np.inf), ValueError, "finite and > 0"),
    (lambda: fixq.quantize(np.zeros(3, np.float32), 1.0, 300, dtype=np.uint8), ValueError, "zero_point must lie"),
    (lambda: fixq.quantize(np.zeros(3, np.float32), [1.0, 2.0]), ValueError, "need axis="),
    (lambda: fixq.quantize(np.zeros((2, 3), np.float32), [1.0, 2.0], axis=1), ValueError, "length 3"),
    (lambda: fixq.quantize(np.zeros(3, np.float32), 1.0, dtype=np.int32), TypeError, "dtype must be one of"),
    (lambda: fixq.dequantize(np.zeros(3, np.float32), 1.0), TypeError, "q must have dtype"),
    (lambda: fixq.dequantize(np.zeros(3, np.int8), 1.0, 0.5), TypeError, "zero_point must hold integers"),
    (lambda: fixq.quantize_multiplier(-0.5), ValueError, "finite and >= 0"),
    (lambda: fixq.quantize_multiplier(np.inf), ValueError, "finite and >= 0"),
    (lambda: fixq.quantize_multiplier("x"), TypeError, "real must be"),
    (lambda: fixq.multiply_by_quantized_multiplier(np.zeros(3), 1, 0), TypeError, "x must be an integer"),
    (lambda: fixq.multiply_by_quantized_multiplier(2**31, 1, 0), ValueError, "fit in int32"),
    (lambda: fixq.multiply_by_quantized_multiplier(np.zeros(3, np.int32), [1, 2], 0), ValueError, "broadcast"),
    (lambda: fixq.multiply_by_quantized_multiplier(1, 1.5, 0), TypeError, "multiplier must be an integer"),
    (lambda: fixq.multiply_by_quantized_multiplier(1, 1, 0, rounding="fp32"), ValueError, "rounding must be"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- dispatch -----------------------------------------------------------------

def test_cpu_info():
    info = fixq.cpu_info()
    assert "scalar" in info["compiled"] and "scalar" in info["supported"]
    assert set(info["supported"]) <= set(info["compiled"])
    assert info["selected"] in info["supported"]


def _run_with_isa(value):
    code = "import fixq; print(fixq.cpu_info()['selected'])"
    env = {"FIXQ_ISA": value, "PATH": "/usr/bin:/bin"}
    import os
    env.update({k: v for k, v in os.environ.items() if k != "FIXQ_ISA"})
    env["FIXQ_ISA"] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_fixq_isa_forces_a_path():
    for name in fixq.cpu_info()["supported"]:
        r = _run_with_isa(name)
        assert r.returncode == 0 and r.stdout.strip() == name


def test_fixq_isa_unknown_is_a_clear_error():
    r = _run_with_isa("sse9")
    assert r.returncode != 0
    assert "FIXQ_ISA='sse9' is not a known CPU path" in r.stderr


def test_select_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown CPU path"):
        _core.select_isa("neon9")


def test_requantize_per_channel_along_an_empty_axis():
    """Per-channel arrays of length 0 along an axis of length 0 give the empty result (they used to be
    refused as "a 1-D array of length 1"); a length that does not match the axis is still refused."""
    for shape, axis in (((0,), -1), ((4, 0), 1)):
        acc = np.zeros(shape, np.int32)
        y = fixq.requantize(acc, np.zeros(0, np.int32), np.zeros(0, np.int32), axis=axis)
        assert y.shape == shape and y.dtype == np.int8
        assert fixq.requantize(acc, scale=np.ones(0, np.float32), rounding="fp32", axis=axis).shape == shape
    with pytest.raises(ValueError, match="length 0 but acc.shape"):
        fixq.requantize(np.zeros(3, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))


def test_quantize_dequantize_per_channel_along_an_empty_axis():
    """They used to fail inside the wrapper ("buffer sizes do not match rows*channels*inner")."""
    for shape, axis in (((0,), 0), ((4, 0), 1), ((0, 3), 0)):
        c = shape[axis]
        q = fixq.quantize(np.zeros(shape, np.float32), np.ones(c, np.float32), np.zeros(c, np.int32), axis=axis)
        assert q.shape == shape and q.dtype == np.int8
        assert fixq.dequantize(q, np.ones(c, np.float32), np.zeros(c, np.int32), axis=axis).shape == shape
