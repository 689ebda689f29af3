"""fixq.qadd / fixq.qmul / int8 requantize against the numpy int64 reference, on every CPU path."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixq
from reference_eltwise import add_multipliers, eltwise, mul_multiplier

OPS = {"add": fixq.qadd, "mul": fixq.qmul}
ROUNDINGS = ("double", "single", "fp32")
Q8 = (np.int8, np.uint8)


def run(op, a, b, sa, za, sb, zb, so, zo, rounding, out_dtype=np.int8, out_min=None, out_max=None, out=None):
    return OPS[op](a, b, a_scale=sa, a_zero_point=za, b_scale=sb, b_zero_point=zb, out_scale=so,
                   out_zero_point=zo, out_dtype=out_dtype, rounding=rounding, out_min=out_min, out_max=out_max,
                   out=out)


def expect(op, a, b, sa, za, sb, zb, so, zo, rounding, out_dtype=np.int8, out_min=None, out_max=None):
    info = np.iinfo(out_dtype)
    lo = info.min if out_min is None else out_min
    hi = info.max if out_max is None else out_max
    return eltwise(op, a, b, sa, za, sb, zb, so, zo, lo, hi, rounding).astype(out_dtype)


def all_pairs(dta, dtb):
    ia, ib = np.iinfo(dta), np.iinfo(dtb)
    a = np.repeat(np.arange(ia.min, ia.max + 1), 256).astype(dta)
    b = np.tile(np.arange(ib.min, ib.max + 1), 256).astype(dtb)
    return a, b


# ---- golden values: the three roundings differ exactly at ties ----------------------------

def test_golden_add_ties(isa):
    # s_a = s_b = 1, s_out = 2: out = (va + vb) / 2; a - za + b - zb = -3..3
    a = np.array([-3, -2, -1, 0, 1, 2, 3, 5], np.int8)
    b = np.zeros(8, np.int8)
    want = {
        "double": [-2, -1, -1, 0, 1, 1, 2, 3],   # RoundingDivideByPOT: ties away from zero
        "single": [-1, -1, 0, 0, 1, 1, 2, 3],    # (x*M + 2^(30-s)) >> (31-s): ties toward +inf
        "fp32": [-2, -1, 0, 0, 0, 1, 2, 2],      # round half to even
    }
    for rounding, w in want.items():
        got = run("add", a, b, 1.0, 0, 1.0, 0, 2.0, 0, rounding)
        assert got.tolist() == w, rounding


def test_golden_mul_double_rounding(isa):
    # M = 0.25 = 2^30 * 2^-32: (x=1) -> SRDHM gives 1 (0.5 up), RDBPOT(1, 1) gives 1 (0.5 away)
    a = np.array([1, -1, 2, -2, 3, 6], np.int8)
    b = np.ones(6, np.int8)
    want = {"double": [1, 0, 1, -1, 1, 2], "single": [0, 0, 1, 0, 1, 2], "fp32": [0, 0, 0, 0, 1, 2]}
    for rounding, w in want.items():
        assert run("mul", a, b, 1.0, 0, 1.0, 0, 4.0, 0, rounding).tolist() == w, rounding


def test_golden_saturation_and_zero_points(isa):
    a = np.array([-128, 127, 0], np.int8)
    b = np.array([255, 0, 255], np.uint8)
    got = run("add", a, b, 1.0, 127, 1.0, 0, 1.0, 0, "double", out_dtype=np.uint8)
    # va = -255, 0, -127 ; vb = 255, 0, 255 ; out = va + vb
    assert got.tolist() == [0, 0, 128]
    got = run("add", a, b, 1.0, 127, 1.0, 0, 1.0, 127, "double")
    assert got.tolist() == [127, 127, 127]
    got = run("add", a, b, 1.0, -128, 1.0, 0, 1.0, 0, "double", out_dtype=np.uint8)
    assert got.tolist() == [255, 255, 255]


def test_multiplier_derivation():
    ((ma, sha), (mb, shb), (mo, sho)) = add_multipliers(0.5, 0.25, 0.75)
    assert (ma, sha) == (2**30, 0)  # the larger input scale gives exactly 0.5
    assert (mb, shb) == (2**30, -1)
    p = fixq._core.EltwiseParams("add", "double", "int8", 0.5, 0, "int8", 0.25, 0, "int8", 0.75, 0, -128, 127)
    assert p.multipliers == {"a": (ma, sha), "b": (mb, shb), "out": (mo, sho)}
    p = fixq._core.EltwiseParams("mul", "single", "int8", 0.5, 0, "uint8", 0.25, 0, "int8", 0.75, 0, -128, 127)
    assert p.multipliers["out"] == mul_multiplier(0.5, 0.25, 0.75)


# ---- exhaustive: every input pair, per parameter set --------------------------------------

PARAM_SETS = [
    # (sa, sb, so, za, zb, zo, dta, dtb, dto)
    (0.02, 0.013, 0.03, 3, -5, 1, np.int8, np.int8, np.int8),
    (0.013, 0.02, 0.05, -128, 127, -128, np.int8, np.int8, np.int8),
    (0.1, 0.1, 0.2, 0, 255, 128, np.uint8, np.uint8, np.uint8),
    (1e-3, 1e-9, 1e-3, 127, 0, 0, np.int8, np.uint8, np.int8),       # ratio 1e-6
    (1e-9, 1e-3, 2e-3, 0, 0, 0, np.uint8, np.int8, np.uint8),        # ratio 1e6
    (1e-3, 1e-3, 1e-9, 0, 0, 127, np.int8, np.int8, np.int8),        # output ratio 1e6 (left shift)
    (0.5, 0.25, 0.125, -128, -128, 0, np.int8, np.int8, np.uint8),  # powers of two: many exact ties
    (0.007843138, 0.0039215689, 0.011764706, 128, 0, 0, np.uint8, np.uint8, np.uint8),
]


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("params", PARAM_SETS)
def test_all_pairs(isa, op, params):
    sa, sb, so, za, zb, zo, dta, dtb, dto = params
    if op == "mul":
        so = so * max(sa, sb)
    a, b = all_pairs(dta, dtb)
    for rounding in ROUNDINGS:
        got = run(op, a, b, sa, za, sb, zb, so, zo, rounding, out_dtype=dto)
        np.testing.assert_array_equal(got, expect(op, a, b, sa, za, sb, zb, so, zo, rounding, dto),
                                      err_msg=f"{op} {rounding} {params}")


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(["add", "mul"]), rounding=st.sampled_from(ROUNDINGS),
       la=st.floats(-6, 6), lb=st.floats(-6, 6), lo=st.floats(-3, 3),
       za=st.integers(-128, 255), zb=st.integers(-128, 255), zo=st.integers(-128, 255),
       dts=st.tuples(*[st.sampled_from(Q8)] * 3), seed=st.integers(0, 2**32 - 1))
def test_random_parameters_all_pairs(op, rounding, la, lb, lo, za, zb, zo, dts, seed):
    """Scale ratios 1e-6..1e6, zero points anywhere in each dtype, on every path."""
    dta, dtb, dto = dts
    clip = lambda z, dt: int(np.clip(z, np.iinfo(dt).min, np.iinfo(dt).max))
    za, zb, zo = clip(za, dta), clip(zb, dtb), clip(zo, dto)
    sa = float(np.float32(0.01))
    sb = float(np.float32(sa * 10.0**lb))
    so = float(np.float32((max(sa, sb) if op == "add" else sa * sb) * 10.0**lo))
    a, b = all_pairs(dta, dtb)
    want = expect(op, a, b, sa, za, sb, zb, so, zo, rounding, dto)
    for isa_name in fixq.cpu_info()["supported"]:
        from conftest import using_isa
        with using_isa(isa_name):
            np.testing.assert_array_equal(run(op, a, b, sa, za, sb, zb, so, zo, rounding, dto), want)


@pytest.mark.parametrize("op", ["add", "mul"])
def test_linear_plan(isa, op):
    """The SIMD plan (when init finds one) reproduces every pair; scales with exact ties may have none."""
    rng = np.random.default_rng(7)
    planned = 0
    for _ in range(12):
        dta, dtb, dto = (Q8[i] for i in rng.integers(0, 2, 3))
        sa = float(np.float32(10 ** rng.uniform(-3, -1)))
        sb = float(np.float32(sa * 10 ** rng.uniform(-2, 2)))
        so = float(np.float32((max(sa, sb) if op == "add" else sa * sb * 100) * 10 ** rng.uniform(-0.5, 1)))
        za, zb, zo = (int(rng.integers(np.iinfo(d).min, np.iinfo(d).max + 1)) for d in (dta, dtb, dto))
        a, b = all_pairs(dta, dtb)
        for rounding in ROUNDINGS:
            p = fixq._core.EltwiseParams(op, rounding, np.dtype(dta).name, sa, za, np.dtype(dtb).name, sb, zb,
                                         np.dtype(dto).name, so, zo, np.iinfo(dto).min, np.iinfo(dto).max)
            planned += p.plan is not None
            got = run(op, a, b, sa, za, sb, zb, so, zo, rounding, dto)
            np.testing.assert_array_equal(got, expect(op, a, b, sa, za, sb, zb, so, zo, rounding, dto))
            got = run(op, a, b, sa, za, sb, zb, so, zo, rounding, dto, out_min=zo)  # ReLU
            np.testing.assert_array_equal(got, expect(op, a, b, sa, za, sb, zb, so, zo, rounding, dto, out_min=zo))
            # broadcast rows use the same plan
            got = run(op, a.reshape(256, 256), b[:256], sa, za, sb, zb, so, zo, rounding, dto)
            np.testing.assert_array_equal(got, expect(op, a.reshape(256, 256), b[:256], sa, za, sb, zb, so, zo,
                                                      rounding, dto))
    assert planned >= 24  # most calibrated-looking scale sets get a plan
    if op == "add":
        tied = fixq._core.EltwiseParams("add", "double", "int8", 0.02, 3, "int8", 0.013, -5, "int8", 0.03, 1, -128,
                                        127)
        assert tied.plan is None  # exact ties decided by the input rounding: the exact kernel runs


# "Round" scales: y depends on a' + 8 b' (say) alone, with exact real ties that the fixed-point roundings
# decide (or, in fp32, half to even); init finds plans whose slopes keep the scale ratio, whose tie shift
# below zero is fitted, or that round exact ties to even.
ROUND_SCALES = [(1 / 256, 1 / 256, 0.1, "double"), (1 / 256, 1 / 32, 0.1, "double"), (1 / 256, 1 / 32, 0.1, "single"),
                (1 / 256, 1 / 128, 0.1, "single"), (1 / 128, 0.5, 0.05, "double"), (0.5, 1 / 64, 0.2, "single"),
                (1 / 256, 1 / 256, 1 / 128, "fp32"), (1 / 256, 1 / 32, 0.1, "fp32"), (1.0, 1.0, 2.0, "fp32")]


@pytest.mark.parametrize("sa, sb, so, rounding", ROUND_SCALES)
def test_round_scale_plans(isa, sa, sb, so, rounding):
    a, b = all_pairs(np.int8, np.int8)
    for zo in (1, 0, -128):  # ties to even depend on the zero point's parity
        p = fixq._core.EltwiseParams("add", rounding, "int8", sa, 3, "int8", sb, -5, "int8", so, zo, -128, 127)
        assert p.plan is not None
        want = expect("add", a, b, sa, 3, sb, -5, so, zo, rounding)
        np.testing.assert_array_equal(run("add", a, b, sa, 3, sb, -5, so, zo, rounding), want)
        for n in (1, 31, 33, 63, 65, 257):
            np.testing.assert_array_equal(run("add", a[:n], b[:n], sa, 3, sb, -5, so, zo, rounding), want[:n])
        rows = run("add", a.reshape(256, 256), b[:256], sa, 3, sb, -5, so, zo, rounding)
        np.testing.assert_array_equal(rows, expect("add", a.reshape(256, 256), b[:256], sa, 3, sb, -5, so, zo,
                                                   rounding))
    p = fixq._core.EltwiseParams("add", rounding, "uint8", sa, 128, "uint8", sb, 0, "uint8", so, 7, 0, 255)
    au, bu = all_pairs(np.uint8, np.uint8)
    np.testing.assert_array_equal(run("add", au, bu, sa, 128, sb, 0, so, 7, rounding, np.uint8),
                                  expect("add", au, bu, sa, 128, sb, 0, so, 7, rounding, np.uint8), err_msg=str(p.plan))


ZP_EXTREMES = [(-128, 127, -128, np.int8, np.int8, np.int8), (127, -128, 127, np.int8, np.int8, np.int8),
               (0, 255, 0, np.uint8, np.uint8, np.uint8), (255, 0, 255, np.uint8, np.uint8, np.uint8),
               (-128, 0, 255, np.int8, np.uint8, np.uint8), (3, -5, 1, np.int8, np.int8, np.int8)]


@pytest.mark.parametrize("zps", ZP_EXTREMES)
def test_mul_float_plan(isa, zps):
    """MUL's float plan (one offset, or two split at P < t under double rounding) on every pair, every tail
    length, broadcast rows, in place; zero points at both extremes, ratios 1e-6..1e6 (the extreme ones fall
    back to the exact kernels)."""
    za, zb, zo, dta, dtb, dto = zps
    a, b = all_pairs(dta, dtb)
    kinds, biases = set(), set()
    for ratio in (1e-6, 3.7e-3, 0.0213 * 0.0171 / 0.0391, 0.25, 1 / 3, 41.0, 1e6):
        sa, sb = 0.0213, 0.0171
        so = float(np.float32(sa * sb / ratio))
        for rounding in ROUNDINGS:
            p = fixq._core.EltwiseParams("mul", rounding, np.dtype(dta).name, sa, za, np.dtype(dtb).name, sb, zb,
                                         np.dtype(dto).name, so, zo, np.iinfo(dto).min, np.iinfo(dto).max)
            plan = p.plan
            kinds.add(None if plan is None else plan["g"] != plan["gneg"])
            biases.add(None if plan is None else plan["bias"])
            want = expect("mul", a, b, sa, za, sb, zb, so, zo, rounding, dto)
            np.testing.assert_array_equal(run("mul", a, b, sa, za, sb, zb, so, zo, rounding, dto), want,
                                          err_msg=f"{ratio} {rounding} {plan}")
            for n in (1, 2, 31, 33, 63, 64, 65, 127, 129, 255, 257):
                np.testing.assert_array_equal(run("mul", a[:n], b[:n], sa, za, sb, zb, so, zo, rounding, dto),
                                              want[:n], err_msg=f"n={n}")
            rows = run("mul", a.reshape(256, 256), b[:256], sa, za, sb, zb, so, zo, rounding, dto)
            np.testing.assert_array_equal(rows, expect("mul", a.reshape(256, 256), b[:256], sa, za, sb, zb, so, zo,
                                                       rounding, dto))
            if dta == dto:
                y = a.copy()
                run("mul", y, b, sa, za, sb, zb, so, zo, rounding, dto, out=y)
                np.testing.assert_array_equal(y, want)
    assert False in kinds  # the one-offset plan ran
    assert True in kinds or za != 3  # and the two-offset one, with the typical zero points
    assert 12582912 in biases and (0 in biases or za != 3)  # the biased product taken by its bits, and converted
    split = fixq._core.EltwiseParams("mul", "double", "int8", 0.0213, 3, "int8", 0.0171, -5, "int8",
                                     float(np.float32(0.0213 * 0.0171 * 3)), 1, -128, 127).plan
    assert split["g"] != split["gneg"]  # double rounding's two offsets (test_all_pairs runs such sets)



@pytest.mark.parametrize("case", [
    # (rounding, scales and zero points, x86 <fenv.h> mode): the second set's AVX2 plan differs from the contract
    # on some pair when its fma rounds upward
    ("double", (0.0213, 3, 0.0171, -5, float(np.float32(0.0213 * 0.0171 * 3)), 1), 0x400),
    ("single", (0.00940979831, 121, 0.00111401803, -61, 0.00742177572, 52), 0x800)])
def test_mul_float_plan_other_rounding_mode(isa, case):
    """MUL's float plan rounds to nearest even whatever the caller's rounding mode: a plan made under the
    default mode stays exact when the caller switches mode (AVX-512 names the rounding in the instruction;
    AVX2 then runs the exact kernel), and no plan is made under another mode."""
    import ctypes
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 rounding mode constants")
    libm = ctypes.CDLL(None)
    rounding, (sa, za, sb, zb, so, zo), mode = case
    a, b = all_pairs(np.int8, np.int8)
    want = expect("mul", a, b, sa, za, sb, zb, so, zo, rounding)
    planned = fixq._core.EltwiseParams("mul", rounding, "int8", sa, za, "int8", sb, zb, "int8", so, zo, -128, 127)
    assert planned.plan is not None
    np.testing.assert_array_equal(run("mul", a, b, sa, za, sb, zb, so, zo, rounding), want)  # the API keeps it
    before = libm.fegetround()
    assert libm.fesetround(mode) == 0
    try:
        got = run("mul", a, b, sa, za, sb, zb, so, zo, rounding)
        fresh = fixq._core.EltwiseParams("mul", rounding, "int8", 0.0213, 3, "int8", 0.0171, -5, "int8", 0.0311, 1,
                                         -128, 127)
    finally:
        libm.fesetround(before)
    np.testing.assert_array_equal(got, want)
    assert fresh.plan is None

# ---- lengths, broadcasting, clamps ----------------------------------------------------------

LENGTHS = list(range(1, 66)) + [2**k + d for k in range(6, 13) for d in (-1, 0, 1)]


@pytest.mark.parametrize("op", ["add", "mul"])
def test_lengths(isa, op):
    rng = np.random.default_rng(1)
    for n in LENGTHS:
        a = rng.integers(-128, 128, n).astype(np.int8)
        b = rng.integers(0, 256, n).astype(np.uint8)
        for rounding in ROUNDINGS:
            got = run(op, a, b, 0.03, -7, 0.011, 130, 0.05, 4, rounding)
            np.testing.assert_array_equal(got, expect(op, a, b, 0.03, -7, 0.011, 130, 0.05, 4, rounding),
                                          err_msg=f"n={n} {rounding}")


def test_long_rows_stream(isa):
    """Rows of 2^23 elements and more store with non-temporal writes from y's first aligned byte."""
    from conftest import using_isa
    rng = np.random.default_rng(8)
    n = (1 << 23) + 8243
    a = rng.integers(-128, 128, n).astype(np.int8)
    b = rng.integers(0, 256, n).astype(np.uint8)
    buf = np.zeros(n + 64, np.int8)
    for op in ("add", "mul"):
        with using_isa("scalar"):
            want = run(op, a, b, 0.03, -7, 0.011, 130, 0.05, 4, "double")
        for off in (0, 3, 37):
            buf[:] = 0
            y = buf[off:off + n]
            np.testing.assert_array_equal(run(op, a, b, 0.03, -7, 0.011, 130, 0.05, 4, "double", out=y), want)
            assert not buf[:off].any() and not buf[off + n:].any()
    # many short rows: the whole call streams, each row from its own first aligned byte
    for rows, cols in (((1 << 23) // 5 + 1, 5), ((1 << 23) // 64, 64), ((1 << 23) // 4099 + 1, 4099)):
        a2 = a[:rows * cols].reshape(rows, cols)
        with using_isa("scalar"):
            want = run("add", a2, b[:cols], 0.03, -7, 0.011, 130, 0.05, 4, "double")
        buf[:] = 0
        y = buf[7:7 + rows * cols].reshape(rows, cols)
        np.testing.assert_array_equal(run("add", a2, b[:cols], 0.03, -7, 0.011, 130, 0.05, 4, "double", out=y), want)
        assert not buf[:7].any() and not buf[7 + rows * cols:].any()


BROADCASTS = [((), ()), ((5,), ()), ((), (37,)), ((7, 33), (33,)), ((7, 33), (7, 1)), ((1, 33), (7, 1)),
              ((2, 1, 3), (4, 1)), ((3, 4, 5, 6), (4, 1, 6)), ((65,), (1,)), ((4, 1, 70), (1, 3, 1))]


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("shapes", BROADCASTS)
def test_broadcast(isa, op, shapes):
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, shapes[0]).astype(np.int8)
    b = rng.integers(-128, 128, shapes[1]).astype(np.int8)
    for rounding in ROUNDINGS:
        got = run(op, a, b, 0.02, 1, 0.07, -3, 0.06, 0, rounding)
        assert got.shape == np.broadcast_shapes(a.shape, b.shape)
        np.testing.assert_array_equal(got, expect(op, a, b, 0.02, 1, 0.07, -3, 0.06, 0, rounding))


def test_non_contiguous_and_read_only(isa):
    rng = np.random.default_rng(3)
    base = rng.integers(-128, 128, (10, 20)).astype(np.int8)
    a = base[::2, ::3]
    b = base[1::2, 1::3].copy()
    b.flags.writeable = False
    got = run("add", a, b, 0.1, 0, 0.1, 0, 0.1, 0, "double")
    np.testing.assert_array_equal(got, expect("add", a, b, 0.1, 0, 0.1, 0, 0.1, 0, "double"))


@pytest.mark.parametrize("op", ["add", "mul"])
def test_fused_relu_clamps(isa, op):
    a, b = all_pairs(np.int8, np.int8)
    zo, so = -20, 0.05
    relu6 = (zo, min(127, zo + int(round(6 / so))))
    for lo, hi in [(zo, None), relu6]:
        for rounding in ROUNDINGS:
            got = run(op, a, b, 0.04, 2, 0.03, -1, so, zo, rounding, out_min=lo, out_max=hi)
            np.testing.assert_array_equal(got, expect(op, a, b, 0.04, 2, 0.03, -1, so, zo, rounding,
                                                      out_min=lo, out_max=hi))


# ---- aliasing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "mul"])
def test_out_aliases_inputs(isa, op):
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (6, 45)).astype(np.int8)
    y = rng.integers(-128, 128, (6, 45)).astype(np.int8)
    row = rng.integers(-128, 128, 45).astype(np.int8)
    args = (0.02, 1, 0.03, -2, 0.04, 3, "double")
    cases = [("a", x, y), ("b", x, y), ("ab", x, x), ("a-row", x, row), ("b-row", row, x), ("a-scalar", x, 5)]
    for name, a, b in cases:
        a = np.array(a, np.int8, copy=True)
        b = a if b is a else np.array(b, np.int8, copy=True)
        want = expect(op, a, b, *args)
        out = b if name in ("b", "b-row") else a
        got = run(op, a, b, *args, out=out)
        assert got is out
        np.testing.assert_array_equal(out, want, err_msg=name)


@pytest.mark.parametrize("op", ["add", "mul"])
def test_out_invalid_overlap(op):
    x = np.arange(-20, 40, dtype=np.int8).reshape(6, 10)
    args = (0.02, 1, 0.03, -2, 0.04, 3, "double")
    with pytest.raises(ValueError, match="out overlaps a"):
        run(op, x[0], x, *args, out=x)  # a broadcast along rows from out's first row
    with pytest.raises(ValueError, match="out overlaps b"):
        run(op, x, x.reshape(-1)[:6].reshape(6, 1), *args, out=x)  # b: out's first 6 bytes as a column
    col = x[:, :1]  # not contiguous: fixq reads a copy, so writing over it is safe
    want = expect(op, x, col, *args)
    run(op, x, col, *args, out=x)
    np.testing.assert_array_equal(x, want)
    flat = np.arange(0, 50, dtype=np.int8)
    with pytest.raises(ValueError, match="out overlaps a"):
        run(op, flat[1:41], flat[:40], *args, out=flat[:40])  # shifted view


# ---- requantize int8 -> int8 ------------------------------------------------------------------

@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("dts", [(np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8)])
def test_requantize_q8(isa, rounding, dts):
    dx, dy = dts
    info = np.iinfo(dx)
    x = np.tile(np.arange(info.min, info.max + 1, dtype=np.int64), 3)[:700].astype(dx)
    for real in (1e-6, 0.37, 0.5, 1.0, 3.3, 1e3):
        zx, zy = int(info.min + 3), int(np.iinfo(dy).max - 9)
        if rounding == "fp32":
            kw = dict(scale=np.float32(real))
        else:
            m, s = fixq.quantize_multiplier(real)
            kw = dict(multiplier=m, shift=s)
        got = fixq.requantize(x, zero_point=zy, dtype=dy, rounding=rounding, input_zero_point=zx, **kw)
        wide = x.astype(np.int32) - np.int32(zx)
        want = fixq.requantize(wide, zero_point=zy, dtype=dy, rounding=rounding, **kw)
        np.testing.assert_array_equal(got, want, err_msg=f"{real}")
        out = x.copy() if dx == dy else None
        if out is not None:
            fixq.requantize(out, zero_point=zy, dtype=dy, rounding=rounding, input_zero_point=zx, out=out, **kw)
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_requantize_q8_planned_lengths(isa, rounding):
    """From 1024 elements (and on repeated calls) the 256-value plan runs; every path, every tail."""
    for dx, dy in ((np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8)):
        info = np.iinfo(dx)
        for real, zx, zy in ((0.37, info.min + 3, 5), (1.7, info.max, np.iinfo(dy).max - 9), (1e-3, 0, 0)):
            kw = dict(scale=np.float32(real)) if rounding == "fp32" else dict(zip(("multiplier", "shift"),
                                                                                  fixq.quantize_multiplier(real)))
            for n in (1023, 1024, 1025, 1024 + 63, 4097):
                x = np.resize(np.arange(info.min, info.max + 1, dtype=np.int64), n).astype(dx)
                want = fixq.requantize(x.astype(np.int32) - np.int32(zx), zero_point=zy, dtype=dy, rounding=rounding,
                                       **kw)
                for _ in range(2):  # the second call finds the checked arguments again
                    got = fixq.requantize(x, zero_point=zy, dtype=dy, rounding=rounding, input_zero_point=zx, **kw)
                    np.testing.assert_array_equal(got, want, err_msg=f"{real} n={n}")


def test_repeated_calls_keep_every_check():
    """A parameter set seen before skips re-deriving it, never a check on the arrays or the arguments."""
    x = np.arange(-64, 64, dtype=np.int8)
    for op in ("add", "mul"):
        run(op, x, x, *GOOD_ARGS)  # seen once, accepted
        flat = np.arange(0, 200, dtype=np.int8)
        with pytest.raises(ValueError, match="out overlaps a"):
            run(op, flat[1:129], x, *GOOD_ARGS, out=flat[:128])
        with pytest.raises(ValueError, match="out overlaps b"):
            run(op, x, flat[3:131], *GOOD_ARGS, out=flat[:128])
        ro = np.zeros(128, np.int8)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            run(op, x, x, *GOOD_ARGS, out=ro)
        with pytest.raises(ValueError, match="C-contiguous"):
            run(op, x, x, *GOOD_ARGS, out=np.zeros(256, np.int8)[::2])
        with pytest.raises(ValueError, match="out must have shape"):
            run(op, x, x, *GOOD_ARGS, out=np.zeros(128, np.uint8))
        with pytest.raises(TypeError, match="b must have dtype"):
            run(op, x, x.astype(np.int16), *GOOD_ARGS)
        sa, za, sb, zb, so, zo, rounding = GOOD_ARGS
        with pytest.raises(TypeError, match="a_zero_point"):
            run(op, x, x, sa, str(za), sb, zb, so, zo, rounding)
        np.testing.assert_array_equal(run(op, x, x[::-1], *GOOD_ARGS), expect(op, x, x[::-1], *GOOD_ARGS))
        grid = np.arange(-64, 64, dtype=np.int8).reshape(8, 16)
        want = expect(op, grid, grid[0], *GOOD_ARGS)
        np.testing.assert_array_equal(run(op, grid, grid[0], *GOOD_ARGS), want)  # a row, seen from now on
        np.testing.assert_array_equal(run(op, grid, grid[0].copy(), *GOOD_ARGS), want)
        np.testing.assert_array_equal(run(op, grid, np.int8(5), *GOOD_ARGS), expect(op, grid, 5, *GOOD_ARGS))
        with pytest.raises(ValueError, match="out overlaps b"):
            run(op, grid, grid[0], *GOOD_ARGS, out=grid)  # b is out's first row
        with pytest.raises(ValueError, match="out overlaps b"):
            run(op, grid, grid.reshape(-1)[:1].reshape(()), *GOOD_ARGS, out=grid)  # b is out's first element
        y = x.copy()
        assert run(op, y, x, *GOOD_ARGS, out=y) is y  # in place, same memory
        np.testing.assert_array_equal(y, expect(op, x, x, *GOOD_ARGS))
    m, s = fixq.quantize_multiplier(0.4)
    fixq.requantize(x, m, s, 3, input_zero_point=1)
    flat = np.arange(0, 200, dtype=np.int8)
    with pytest.raises(ValueError, match="out overlaps acc"):
        fixq.requantize(flat[1:129], m, s, 3, input_zero_point=1, out=flat[:128])
    with pytest.raises(ValueError, match="dtype"):
        fixq.requantize(x, m, s, 3, input_zero_point=1, out=np.zeros(128, np.uint8))


def test_requantize_q8_per_channel_and_wide_output(isa):
    x = np.arange(-128, 128, dtype=np.int8).reshape(64, 4)
    m, s = fixq.quantize_multiplier(np.array([0.3, 0.5, 1.7, 0.01]))
    got = fixq.requantize(x, m, s, [1, 2, 3, 4], input_zero_point=-5, axis=1)
    np.testing.assert_array_equal(got, fixq.requantize(x.astype(np.int32) + 5, m, s, [1, 2, 3, 4], axis=1))
    got = fixq.requantize(x, 2**30, 1, dtype=np.int16, input_zero_point=7)
    np.testing.assert_array_equal(got, fixq.requantize(x.astype(np.int32) - 7, 2**30, 1, dtype=np.int16))


def test_requantize_int32_input_zero_point_rejected():
    with pytest.raises(ValueError, match="input_zero_point"):
        fixq.requantize(np.zeros(3, np.int32), 2**30, 0, input_zero_point=1)


# ---- bad input ------------------------------------------------------------------------------

GOOD = dict(a_scale=0.1, a_zero_point=0, b_scale=0.1, b_zero_point=0, out_scale=0.1, out_zero_point=0)


GOOD_ARGS = (0.02, 1, 0.03, -2, 0.04, 3, "double")


@pytest.mark.parametrize("op", ["add", "mul"])
def test_bad_input(op):
    f = OPS[op]
    a = np.zeros((3, 4), np.int8)
    with pytest.raises(ValueError, match="do not broadcast"):
        f(a, np.zeros(3, np.int8), **GOOD)
    with pytest.raises(TypeError, match="a must have dtype"):
        f(a.astype(np.float32), a, **GOOD)
    with pytest.raises(TypeError, match="b must have dtype"):
        f(a, a.astype(np.int16), **GOOD)
    with pytest.raises(TypeError, match="out_dtype"):
        f(a, a, **GOOD, out_dtype=np.int16)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="a_scale"):
            f(a, a, **{**GOOD, "a_scale": bad})
        with pytest.raises(ValueError, match="out_scale"):
            f(a, a, **{**GOOD, "out_scale": bad})
    with pytest.raises(ValueError, match="b_scale.*too large"):
        f(a, a, **{**GOOD, "b_scale": 1e37})
    with pytest.raises(ValueError, match="a_zero_point"):
        f(a, a, **{**GOOD, "a_zero_point": 128})
    with pytest.raises(ValueError, match="b_zero_point"):
        f(a, a.view(np.uint8), **{**GOOD, "b_zero_point": -1})
    with pytest.raises(ValueError, match="out_zero_point"):
        f(a, a, **{**GOOD, "out_zero_point": 200})
    with pytest.raises(ValueError, match="out_min"):
        f(a, a, **GOOD, out_min=5, out_max=4)
    with pytest.raises(ValueError, match="rounding"):
        f(a, a, **GOOD, rounding="nearest")
    with pytest.raises(ValueError, match="out must have shape"):
        f(a, a, **GOOD, out=np.zeros((4, 3), np.int8))
    with pytest.raises(ValueError, match="out must have shape"):
        f(a, a, **GOOD, out=np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="C-contiguous"):
        f(a, a, **GOOD, out=np.zeros((4, 3), np.int8).T)


def test_unrepresentable_ratio_messages():
    a = np.zeros(4, np.int8)
    with pytest.raises(ValueError, match=r"input multiplier for b.*flush to zero.*rounding='fp32'"):
        fixq.qadd(a, a, **{**GOOD, "b_scale": 1e-12})
    with pytest.raises(ValueError, match=r"output multiplier.*shift of \d+ > 30.*rounding='fp32'"):
        fixq.qadd(a, a, **{**GOOD, "out_scale": 1e-25})
    with pytest.raises(ValueError, match=r"a_scale \* b_scale / out_scale.*flush to zero"):
        fixq.qmul(a, a, **{**GOOD, "a_scale": 1e-8, "b_scale": 1e-8, "out_scale": 1e3})
    # fp32 accepts the same ratios
    fixq.qadd(a, a, **{**GOOD, "b_scale": 1e-12}, rounding="fp32")
    fixq.qmul(a, a, **{**GOOD, "a_scale": 1e-8, "b_scale": 1e-8, "out_scale": 1e3}, rounding="fp32")


def test_empty():
    got = fixq.qadd(np.zeros((0, 3), np.int8), np.zeros(3, np.int8), **GOOD)
    assert got.shape == (0, 3)


@pytest.mark.parametrize("ndim", [17, 18])
def test_broadcast_over_more_than_16_dimensions(isa, ndim):
    """Shapes that alternate 1 and 2 leave ndim dimensions no coalescing merges, more than the C core's
    16: they used to raise "shape and strides must have the same length, 1..16"."""
    rng = np.random.default_rng(ndim)
    a = rng.integers(-128, 128, tuple(2 if d % 2 else 1 for d in range(ndim)), dtype=np.int8)
    b = rng.integers(-128, 128, tuple(1 if d % 2 else 2 for d in range(ndim)), dtype=np.int8)
    kw = dict(a_scale=0.05, a_zero_point=-3, b_scale=0.07, b_zero_point=5, out_scale=0.1, out_zero_point=2)
    for op, fn in (("add", fixq.qadd), ("mul", fixq.qmul)):
        want = eltwise(op, a, b, 0.05, -3, 0.07, 5, 0.1, 2, -128, 127, "double")
        np.testing.assert_array_equal(fn(a, b, **kw), want)


def test_lazy_plan(monkeypatch):
    """fixq.qadd plans a parameter set only once a million outputs ran with it (dynamic scales on small
    tensors never pay 0.5-15 ms for a plan); the unplanned and planned kernels agree on every pair."""
    monkeypatch.setattr(fixq._core, "_PLAN_AFTER", 1 << 20)
    fixq.eltwise._params.cache_clear()
    fixq.eltwise._SEEN.clear()
    a, b = all_pairs(np.int8, np.int8)
    kw = dict(a_scale=0.0213, a_zero_point=3, b_scale=0.0171, b_zero_point=-5, out_scale=0.0391, out_zero_point=1)
    want = expect("add", a, b, 0.0213, 3, 0.0171, -5, 0.0391, 1, "double")
    np.testing.assert_array_equal(fixq.qadd(a, b, **kw), want)
    (params, _), = fixq.eltwise._SEEN.values()
    assert params.plan is None  # 65536 outputs so far
    for _ in range(14):
        np.testing.assert_array_equal(fixq.qadd(a, b, **kw), want)
    assert params.plan is None  # 15 * 65536 < 2^20
    np.testing.assert_array_equal(fixq.qadd(a.reshape(256, 256), b[:256], **kw),
                                  expect("add", a.reshape(256, 256), b[:256], 0.0213, 3, 0.0171, -5, 0.0391, 1,
                                         "double"))  # the general path counts too: 2^20 reached
    assert params.plan is not None
    np.testing.assert_array_equal(fixq.qadd(a, b, **kw), want)
    fixq.eltwise._params.cache_clear()
    fixq.eltwise._SEEN.clear()


def test_params_filled_once():
    """A second __init__ would rewrite the block that running kernels read, and a plan being made
    outside the GIL from the old parameters would then land on the new ones (silently wrong)."""
    args = ("mul", "fp32", "int8", 0.05, 3, "int8", 0.1, -7, "int8", 0.001, 0, -128, 127)
    params = fixq._core.EltwiseParams(*args, plan=False)
    with pytest.raises(TypeError, match="filled once"):
        params.__init__(*args[:9], 0.5, *args[10:], plan=False)
