"""Hostile input for the kernels: fuzzed shapes, dtypes, strides, aliasing and extreme parameters give a
clear TypeError/ValueError or the exact result, never a crash (tools/sanitize.sh runs this under
ASan/UBSan); and 8 Python threads running mixed kernels on shared read-only inputs get exactly the
single-threaded results."""
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fixq
import reference as ref

DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.float16, np.float32, np.float64,
          np.bool_, np.complex64]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def arrays(draw, dtypes=DTYPES):
    """Arrays of any small shape (0-d and empty included), any dtype, contiguous or as a strided,
    transposed or reversed view of a bigger buffer, writable or read-only."""
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
    steps = tuple(draw(st.sampled_from([1, 1, 2, -1])) for _ in shape)
    big = tuple(max(1, n * abs(s)) for n, s in zip(shape, steps))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        base = rng.integers(info.min, info.max, size=big, dtype=dt, endpoint=True)
    elif dt.kind == "f":
        with np.errstate(over="ignore"):
            base = (rng.standard_normal(big) * 10.0 ** rng.integers(-3, 12, size=big)).astype(dt)
    else:
        base = rng.integers(0, 2, size=big).astype(dt)
    base = np.asarray(base)
    if not shape:
        view = base[...]
    else:
        view = base[tuple(slice(None, None, s) if s > 0 else slice(None, None, -1) for s in steps)]
        view = view[tuple(slice(0, n) for n in shape)]
    if draw(st.booleans()) and view.ndim > 1:
        view = view.T
    if draw(st.booleans()):
        view.flags.writeable = False
    return view


extreme_ints = st.one_of(st.integers(-3, 3), st.sampled_from([-(2**31), 2**31 - 1, 2**31, -(2**63), 2**30,
                                                               127, 128, -128, -129, 255, 256, 32767]),
                         st.integers(-(2**40), 2**40))
extreme_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0.0, -0.0, 1e-45, 1e-38, 2.0**-31, 0.5, 1.0, 3.0e38, float("inf"), float("nan")]))
param = st.one_of(extreme_ints, extreme_floats, st.lists(extreme_ints, min_size=0, max_size=4),
                  st.none(), st.just("x"))


def _call(fn, *args, **kwargs):
    """fn's result, or None when it raised one of fixq's own argument errors."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as e:
        assert str(e), "errors must say what was wrong"
        return None


def mostly(valid, hostile=param):
    """`valid` 19 times in 20, a hostile value otherwise."""
    return st.integers(0, 19).flatmap(lambda i: hostile if i == 0 else valid)


def _per_channel(n, elements):
    """A scalar (per-tensor) or n values (per-channel)."""
    return st.one_of(elements, st.lists(elements, min_size=n, max_size=n).map(np.array))


@FUZZ
@given(acc=mostly(arrays([np.int32, np.int32, np.int8, np.uint8]), arrays()), data=st.data())
def test_fuzz_requantize(isa, acc, data):
    rounding = data.draw(mostly(st.sampled_from(["double", "single", "fp32"]), st.sampled_from(["nearest", 3])))
    dtype = data.draw(mostly(st.sampled_from([np.int8, np.uint8, np.int16, np.int32]),
                             st.sampled_from([np.float32, "bogus", np.int64])))
    axis = data.draw(mostly(st.integers(-max(acc.ndim, 1), max(acc.ndim, 1) - 1), st.integers(-5, 5)))
    n = acc.shape[axis] if acc.ndim and -acc.ndim <= axis < acc.ndim else 1
    info = np.iinfo(dtype) if isinstance(dtype, type) and np.dtype(dtype).kind in "iu" else np.iinfo(np.int8)
    zp_range = st.integers(info.min, info.max) if np.dtype(info.dtype) != np.int32 else st.just(0)
    zero_point = data.draw(mostly(_per_channel(n, zp_range)))
    if rounding == "fp32":
        kw = dict(scale=data.draw(mostly(_per_channel(n, st.floats(1e-6, 1e4).map(np.float32)))))
    else:
        kw = dict(multiplier=data.draw(mostly(_per_channel(n, st.integers(0, 2**31 - 1)))),
                  shift=data.draw(mostly(_per_channel(n, st.integers(-31, 30)))))
    lo = data.draw(mostly(st.one_of(st.none(), st.integers(info.min, info.max))))
    hi = data.draw(mostly(st.one_of(st.none(), st.integers(info.min, info.max))))
    in_zp = data.draw(mostly(st.integers(-128, 255))) if acc.dtype in (np.int8, np.uint8) else 0
    before = acc.copy()
    y = _call(fixq.requantize, acc, zero_point=zero_point, qmin=lo, qmax=hi, dtype=dtype, rounding=rounding,
              axis=axis, input_zero_point=in_zp, **kw)
    np.testing.assert_array_equal(acc, before)          # inputs are never written
    if y is None:
        return
    assert y.shape == acc.shape and acc.dtype in (np.int32, np.int8, np.uint8)   # int8/uint8: rescaling
    dt = np.dtype(y.dtype)
    lo = np.iinfo(dt).min if lo is None else lo
    hi = np.iinfo(dt).max if hi is None else hi
    shape = [1] * acc.ndim
    if -acc.ndim <= axis < acc.ndim:      # per-tensor calls ignore axis
        shape[axis] = -1

    def bc(v):
        v = np.asarray(v)
        return v.reshape(shape) if v.ndim and v.size != 1 else v.reshape(-1)[0]  # size 0: an empty axis

    x = acc.astype(np.int64) - in_zp
    if rounding == "fp32":
        want = ref.requant_fp32(x, bc(kw["scale"]), bc(zero_point), lo, hi)
    else:
        want = ref.requant_fixed(x, bc(kw["multiplier"]), bc(kw["shift"]), bc(zero_point), lo, hi, rounding)
    np.testing.assert_array_equal(y.astype(np.int64), want)


@FUZZ
@given(x=mostly(arrays([np.float32, np.float64, np.float16]), arrays()),
       scale=mostly(st.floats(1e-6, 1e4), param), zero_point=mostly(st.integers(0, 127), param),
       dtype=mostly(st.sampled_from([np.int8, np.uint8, np.int16]), st.sampled_from([np.int32, np.float32])),
       axis=mostly(st.none(), st.integers(-3, 3)))
def test_fuzz_quantize_dequantize(isa, x, scale, zero_point, dtype, axis):
    before = x.copy()
    q = _call(fixq.quantize, x, scale, 0 if zero_point is None else zero_point, dtype=dtype, axis=axis)
    if q is not None:
        assert q.shape == x.shape and q.dtype == np.dtype(dtype)
        assert x.dtype.kind == "f" and not np.isnan(x).any()
        if axis is None:
            info = np.iinfo(q.dtype)
            want = ref.quantize(x, np.float32(scale).reshape(-1)[0], np.asarray(zero_point or 0).reshape(-1)[0],
                                info.min, info.max)
            np.testing.assert_array_equal(q.astype(np.int64), want)
    d = _call(fixq.dequantize, x, scale, 0 if zero_point is None else zero_point, axis=axis)
    if d is not None and axis is None:
        np.testing.assert_array_equal(d, ref.dequantize(x, np.float32(scale).reshape(-1)[0],
                                                        np.asarray(zero_point or 0).reshape(-1)[0]))
    np.testing.assert_array_equal(x, before)


@FUZZ
@given(x=mostly(arrays([np.int32, np.int8, np.int16]), arrays()), multiplier=mostly(st.integers(0, 2**31 - 1)),
       shift=mostly(st.integers(-31, 30)), rounding=mostly(st.sampled_from(["double", "single"]), st.just("fp32")))
def test_fuzz_multiply_by_quantized_multiplier(isa, x, multiplier, shift, rounding):
    y = _call(fixq.multiply_by_quantized_multiplier, x, multiplier, shift, rounding=rounding)
    if y is None:
        return
    f = ref.mbqm_double if rounding == "double" else ref.mbqm_single
    np.testing.assert_array_equal(np.asarray(y, np.int64), f(x, multiplier, shift))


@FUZZ
@given(acc=arrays([np.int32]), data=st.data())
def test_fuzz_out_aliasing(isa, acc, data):
    """out= may be the input itself, a view of it, or a wrong buffer: in-place results equal out-of-place ones."""
    assume(acc.size > 0)
    m, s = data.draw(st.integers(2**30, 2**31 - 1)), data.draw(st.integers(-31, 30))
    want = fixq.requantize(acc.copy(), m, s, dtype=np.int32)
    work = np.ascontiguousarray(acc) if data.draw(st.booleans()) else acc.copy()
    if not work.flags.writeable:
        work = work.copy()
    kind = data.draw(st.sampled_from(["self", "wrong_dtype", "wrong_shape", "readonly"]))
    if kind == "self":
        y = fixq.requantize(work, m, s, dtype=np.int32, out=work)
        assert y is work or np.shares_memory(y, work)
        np.testing.assert_array_equal(work, want)
    else:
        out = {"wrong_dtype": np.empty(work.shape, np.int8), "wrong_shape": np.empty(work.size + 1, np.int32),
               "readonly": np.empty(work.shape, np.int32)}[kind]
        out.flags.writeable = kind != "readonly"
        with pytest.raises((TypeError, ValueError), match="out"):
            fixq.requantize(work, m, s, dtype=np.int32, out=out)


def _jobs(rng):
    """Mixed kernel calls on shared read-only inputs: (name, zero-argument callable)."""
    acc = rng.integers(-(2**31), 2**31, size=(67, 129), dtype=np.int64).astype(np.int32)
    xf = (rng.standard_normal((53, 77)) * 50).astype(np.float32)
    q8 = rng.integers(-128, 128, size=(61, 33)).astype(np.int8)
    m, s = fixq.quantize_multiplier(rng.uniform(1e-4, 2.0, size=129))
    scale = rng.uniform(1e-4, 1.0, size=129).astype(np.float32)
    for v in (acc, xf, q8, m, s, scale):
        v.flags.writeable = False
    jobs = [
        ("requant_double", lambda: fixq.requantize(acc, m, s, 3)),
        ("requant_single", lambda: fixq.requantize(acc, m, s, 250, dtype=np.uint8, rounding="single")),
        ("requant_fp32", lambda: fixq.requantize(acc, scale=scale, zero_point=5, rounding="fp32", dtype=np.int16)),
        ("mbqm", lambda: fixq.multiply_by_quantized_multiplier(acc, m, s)),
        ("quantize", lambda: fixq.quantize(xf, 0.37, 4, dtype=np.int8)),
        ("quantize_axis", lambda: fixq.quantize(xf, scale[:77], 0, axis=1)),
        ("dequantize", lambda: fixq.dequantize(q8, 0.02, -3)),
    ]
    if hasattr(fixq, "qmatmul"):
        w = rng.integers(-127, 128, size=(33, 47)).astype(np.int8)
        w.flags.writeable = False
        ws = rng.uniform(0.001, 0.01, size=47).astype(np.float32)
        jobs += [("qmatmul", lambda: fixq.qmatmul(q8, w, a_zero_point=3, multiplier=1 << 30, shift=-8)),
                 ("qmatmul_2threads", lambda: fixq.qmatmul(q8, w, scale=ws, rounding="fp32", threads=2)),
                 ("qmatmul_tflite", lambda: fixq.qmatmul(q8, w, target="tflite", scales=(0.05, ws, 0.3))),
                 ("qmatmul_xnnpack", lambda: fixq.qmatmul(q8, w, target="xnnpack", scales=(0.05, ws, 0.3)))]
    if hasattr(fixq, "qadd"):
        jobs.append(("qadd", lambda: fixq.qadd(q8, q8[::-1], a_scale=0.1, a_zero_point=1, b_scale=0.05,
                                                b_zero_point=-2, out_scale=0.2, out_zero_point=0)))
    return jobs


def test_eight_threads_mixed_kernels_match_single_thread(isa):
    jobs = _jobs(np.random.default_rng(7))
    want = {name: fn() for name, fn in jobs}
    results, errors = [], []
    start = threading.Barrier(8)

    def worker(t):
        try:
            start.wait()
            for rep in range(6):
                for name, fn in jobs[t % len(jobs):] + jobs[:t % len(jobs)]:
                    results.append((name, fn()))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8 * 6 * len(jobs)
    for name, got in results:
        np.testing.assert_array_equal(got, want[name], err_msg=name)


@FUZZ
@given(data=st.data())
def test_fuzz_qmatmul(isa, data):
    """qmatmul with fuzzed shapes (0-d to 3-D, empty, odd), dtypes, strided/transposed/read-only views, packed or
    plain weights, extreme zero points and output stages, threads: an argument error or the exact result."""
    import gemm_reference as gref

    a = data.draw(mostly(arrays([np.int8, np.uint8]), arrays()))
    k = a.shape[-1] if a.ndim else data.draw(st.integers(0, 5))
    n = data.draw(st.integers(0, 9))
    b = data.draw(mostly(st.builds(lambda seed, dt: np.random.default_rng(seed).integers(
        np.iinfo(dt).min, np.iinfo(dt).max, size=(k, n), endpoint=True).astype(dt),
        st.integers(0, 2**32 - 1), st.sampled_from([np.int8, np.uint8])), arrays()))
    a_zp = data.draw(mostly(st.integers(-128, 255), extreme_ints))
    b_zp = data.draw(mostly(st.one_of(st.integers(-128, 255), st.lists(st.integers(-128, 127), min_size=n,
                                                                        max_size=n).map(np.array))))
    bias = data.draw(mostly(st.one_of(st.none(), st.lists(st.integers(-(2**20), 2**20), min_size=n, max_size=n)
                                      .map(lambda v: np.array(v, np.int32)))))
    out_dtype = data.draw(mostly(st.sampled_from([np.int8, np.uint8, np.int16, np.int32]), st.just(np.float32)))
    rounding = data.draw(mostly(st.sampled_from(["double", "single", "fp32"])))
    stage = {}
    if np.dtype(out_dtype) != np.int32:
        if rounding == "fp32":
            stage = dict(scale=data.draw(mostly(_per_channel(n, st.floats(1e-7, 10.0)))))
        else:
            stage = dict(multiplier=data.draw(mostly(_per_channel(n, st.integers(0, 2**31 - 1)))),
                         shift=data.draw(mostly(_per_channel(n, st.integers(-31, 30)))))
        stage["rounding"] = rounding
    threads = data.draw(mostly(st.integers(1, 3), st.sampled_from([0, -1, 2.5, True])))
    packed = data.draw(st.booleans())
    if packed:
        bb = _call(fixq.pack_weights, b, b_zp, layout="matmul")
        if bb is None:
            return
        b_arg, zp_kw = bb, {}
    else:
        b_arg, zp_kw = b, {"b_zero_point": b_zp}
    a_before, b_before = a.copy(), b.copy()
    y = _call(fixq.qmatmul, a, b_arg, a_zero_point=a_zp, bias=bias, out_dtype=out_dtype, threads=threads,
              **zp_kw, **stage)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)
    if y is None:
        return
    acc = gref.qmatmul_acc(a, b, a_zp, b_zp, bias)
    if np.dtype(out_dtype) == np.int32:
        np.testing.assert_array_equal(y, acc)
        return
    info = np.iinfo(out_dtype)
    want = gref.requantize(acc, rounding, stage.get("multiplier"), stage.get("shift"), stage.get("scale"), 0,
                           info.min, info.max)
    np.testing.assert_array_equal(y.astype(np.int64), want)


# ---------------------------------------------------------------------------------------------
# Input layouts: every array argument of the public API as a strided, Fortran-order, reversed,
# read-only or byte-swapped view, or a list, gives the result of the C-contiguous call or an
# argument error that names it; out= as such a view is filled or refused naming out.

def _layouts(v):
    """(name, v in another layout) with the same values."""
    if not isinstance(v, np.ndarray):
        return [("0-d", np.array(v)), ("numpy scalar", np.array(v)[()])] if isinstance(v, (int, float)) else []
    ro = v.copy()
    ro.flags.writeable = False
    out = [("read-only", ro), ("list", v.tolist())]
    if v.ndim:
        wide = np.zeros(v.shape[:-1] + (2 * v.shape[-1],), v.dtype)
        wide[..., ::2] = v
        out += [("strided", wide[..., ::2]), ("reversed", v[::-1].copy()[::-1])]
    if v.ndim > 1:
        out.append(("fortran", np.asfortranarray(v)))
    if v.dtype.itemsize > 1:
        out.append(("byte-swapped", v.astype(v.dtype.newbyteorder())))
    return out


def _same(x, y):
    if isinstance(x, np.ndarray):
        return isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y)
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if hasattr(x, "to_arrays"):
        return _same(x.to_arrays(), y.to_arrays())
    return x == y


def _layout_cases():
    rng = np.random.default_rng(5)
    i8 = lambda *s: rng.integers(-127, 128, size=s).astype(np.int8)  # noqa: E731
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, q, acc = f32(3, 5), i8(3, 5), rng.integers(-99999, 99999, size=(3, 5)).astype(np.int32)
    sc, zp = np.abs(f32(5)) + 0.01, rng.integers(-9, 9, size=5).astype(np.int32)
    m, s = fixq.quantize_multiplier(sc / 100)
    bias, w, wf = rng.integers(-999, 999, size=5).astype(np.int32), i8(5, 4), f32(5, 4)
    ew = dict(a_scale=0.05, a_zero_point=1, b_scale=0.03, b_zero_point=-2, out_scale=0.07, out_zero_point=4)
    gemm = dict(a_zero_point=2, b_zero_point=zp, bias=bias, multiplier=m, shift=s - 4, out_zero_point=zp)
    o8, o32, of = np.zeros((3, 5), np.int8), np.zeros((3, 5), np.int32), np.zeros((3, 5), np.float32)
    return {  # name: (function, args, keyword args, out= of the right shape and dtype or None)
        "quantize": (fixq.quantize, [x, sc, zp], dict(axis=1), o8),
        "dequantize": (fixq.dequantize, [acc, sc, zp], dict(axis=1), of),
        "requantize": (fixq.requantize, [acc, m, s, zp], {}, o8),
        "requantize_fp32": (fixq.requantize, [acc], dict(scale=sc / 1e3, zero_point=zp, rounding="fp32"), o8),
        "requantize_int8": (fixq.requantize, [q, 1 << 30, 0, 2], dict(input_zero_point=1), o8),
        "mbqm": (fixq.multiply_by_quantized_multiplier, [acc, m, s], {}, None),
        "qadd": (fixq.qadd, [q, i8(5)], ew, o8),
        "qmul_xnnpack": (fixq.qmul, [q, i8(3, 5)], dict(ew, target="xnnpack"), o8),
        "qmatmul": (fixq.qmatmul, [i8(3, 4), np.ascontiguousarray(w.T)], gemm, o8),
        "qmatmul_int32": (fixq.qmatmul, [i8(3, 4), w.T.copy()], dict(b_zero_point=zp, bias=bias, out_dtype=np.int32),
                          o32),
        "qlinear_tflite": (fixq.qlinear, [i8(3, 4), w, bias], dict(target="tflite", scales=(0.05, sc / 100, 0.3)),
                           o8),
        "pack_weights": (fixq.pack_weights, [w, zp], {}, None),
        "fp16_linear": (fixq.fp16_linear, [f32(3, 4), wf.astype(np.float16), f32(5)], {}, None),
        "ternarize": (fixq.ternarize, [wf], {}, None),
        "binarize": (fixq.binarize, [wf], {}, None),
        "storage_report": (fixq.storage_report, [f32(7, 33)], {}, None),
        "lowbit_qlinear": (fixq.lowbit_qlinear, [i8(3, 4), fixq.ternarize(wf), 0.05, 2],
                           dict(bias=f32(5), out_scale=0.3), None),
        "choose_qparams": (fixq.choose_qparams, [-np.abs(sc), sc], dict(axis=0), None),
        "quantize_bias": (fixq.quantize_bias, [f32(5), 0.05, sc], {}, None),
        "calibrate": (lambda b: fixq.calibrate.make("entropy").update(b).range(), [f32(6, 5)], {}, None),
    }


_LAYOUT_CASES = _layout_cases()


@pytest.mark.parametrize("name", sorted(_LAYOUT_CASES))
def test_every_argument_layout_gives_the_contiguous_result(name):
    fn, args, kw, out = _LAYOUT_CASES[name]
    want = fn(*args, **kw)
    slots = [(i, f"arg {i}") for i in range(len(args))] + [(k, k) for k in kw]
    for key, label in slots:
        for layout, v in _layouts(args[key] if isinstance(key, int) else kw[key]):
            a2, kw2 = list(args), dict(kw)
            (a2.__setitem__ if isinstance(key, int) else kw2.__setitem__)(key, v)
            try:
                got = fn(*a2, **kw2)
            except (TypeError, ValueError) as e:   # refused: naming the argument, not in numpy's words
                assert "contiguous" not in str(e) and "buffer" not in str(e), (label, layout, e)
                assert isinstance(key, int) or key in str(e), (label, layout, e)
                continue
            assert _same(want, got), f"{name}: {label} {layout}"
    if out is None:
        return
    for layout, o in [("strided", np.zeros(out.shape[:-1] + (2 * out.shape[-1],), out.dtype)[..., ::2]),
                      ("read-only", np.zeros_like(out)), ("fortran", np.asfortranarray(np.zeros_like(out))),
                      ("reversed", np.zeros_like(out)[::-1])]:
        o.flags.writeable = layout != "read-only"
        with pytest.raises(ValueError, match="out must .*C-contiguous and writeable"):
            fn(*args, **kw, out=o)
    sub = np.zeros_like(out).view(_NdarraySubclass)   # np.memmap, say
    fn(*args, **kw, out=sub)
    assert _same(want, sub.view(np.ndarray)), f"{name}: out an ndarray subclass"


class _NdarraySubclass(np.ndarray):
    pass


def _overlapping(src, dtype, shift):
    """(src's values in a buffer, out of src's shape and `dtype` over the same buffer `shift` bytes on)."""
    buf = np.zeros(src.nbytes + abs(shift) + np.dtype(dtype).itemsize * src.size, np.uint8)
    start = max(-shift, 0)
    a = buf[start:start + src.nbytes].view(src.dtype).reshape(src.shape)
    a[...] = src
    o = buf[start + shift:start + shift + np.dtype(dtype).itemsize * src.size].view(dtype).reshape(src.shape)
    return a, o


@pytest.mark.parametrize("shift", [-4, 4, 64])
def test_out_overlapping_an_input(isa, shift):
    """out as a shifted view over an input: the GEMMs copy that input (exact result), the elementwise
    functions refuse naming it; out as the input itself is exact everywhere."""
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, size=(96, 160)).astype(np.int8)
    b = rng.integers(-127, 128, size=(160, 160)).astype(np.int8)
    kw = dict(a_zero_point=3, multiplier=1 << 30, shift=-9)
    want = fixq.qmatmul(a, b, **kw)
    av, o = _overlapping(a, np.int8, shift)
    np.testing.assert_array_equal(fixq.qmatmul(av, b, **kw, out=o), want)
    av, o = _overlapping(a, np.int8, shift)
    np.testing.assert_array_equal(fixq.qlinear(av, np.ascontiguousarray(b.T), **kw, threads=2, out=o), want)
    acc = rng.integers(-2**24, 2**24, size=(40, 64)).astype(np.int32)
    x = (rng.standard_normal((40, 64)) * 50).astype(np.float32)
    calls = [(lambda v, out: fixq.requantize(v, 1 << 30, -3, dtype=np.int32, out=out), acc, np.int32, "acc"),
             (lambda v, out: fixq.dequantize(v, 0.5, 1, out=out), acc, np.float32, "q"),
             (lambda v, out: fixq.quantize(v, 0.5, 1, dtype=np.int16, out=out), x, np.int16, "x")]
    for f, src, dt, name in calls:
        v, o = _overlapping(src, dt, shift)
        with pytest.raises(ValueError, match=f"out overlaps {name} but is not the same array"):
            f(v, o)
        if src.itemsize == np.dtype(dt).itemsize:
            v = src.copy()
            np.testing.assert_array_equal(f(v, v.view(dt)), f(src, None))


def test_numpy_scalars_and_0d_arrays_where_scalars_are_taken(tmp_path):
    from fixq.archive import load_float_model
    from fixq.cli.demo import bundled
    from fixq.quantizer import quantize_model

    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 10)).astype(np.float32)
    assert _same(fixq.ternarize(w, np.float32(0.5)), fixq.ternarize(w, 0.5))
    a, b = rng.integers(-128, 128, size=(3, 6)).astype(np.int8), rng.integers(-127, 128, size=(6, 4)).astype(np.int8)
    for zp in (np.array(5), np.int16(5)):
        np.testing.assert_array_equal(fixq.qmatmul(a, b, a_zero_point=zp, out_dtype=np.int32),
                                      fixq.qmatmul(a, b, a_zero_point=5, out_dtype=np.int32))
    assert _same(fixq.pack_weights(b, layout=np.str_("matmul")), fixq.pack_weights(b, layout="matmul"))
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    x = np.load(bundled("digits_test_x.npy"))[:8]
    m = quantize_model(g, [np.load(bundled("digits_calib.npy"))[:32]])
    for threads in (np.int64(2), np.uint8(2)):
        np.testing.assert_array_equal(m.run(x, threads=threads), m.run(x, threads=2))
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got np.int64.0."):
        m.run(x, threads=np.int64(0))


@pytest.mark.parametrize("zero_point", [2**31, -2**31 - 1, 2**64])
def test_per_channel_int_zero_point_outside_int32(isa, zero_point):
    """A Python int zero point beyond int32 with per-channel arrays gets the range message (it was numpy's
    OverflowError from the per-channel fast path)."""
    acc = np.array([[1, 2], [3, 4]], np.int32)
    with pytest.raises(ValueError, match="zero_point"):
        fixq.requantize(acc, scale=np.array([1.0, 1.0], np.float32), zero_point=zero_point, dtype=np.int8,
                        rounding="fp32", axis=0)
    with pytest.raises(ValueError, match="zero_point"):
        fixq.quantize(np.ones((2, 2), np.float32), np.array([1.0, 1.0], np.float32), zero_point, axis=0)
    with pytest.raises(ValueError, match="out_zero_point"):
        fixq.qlinear(np.zeros((1, 4), np.int8), np.ones((2, 4), np.int8), multiplier=np.full(2, 1 << 30, np.int32),
                     shift=np.zeros(2, np.int32), out_zero_point=zero_point)


@pytest.mark.parametrize("acc_dtype", [np.int8, np.uint8, np.int32])
@pytest.mark.parametrize("scale", [1.3e36, 1.35e36, 3e38])
def test_requantize_fp32_huge_scale_is_one_behaviour(acc_dtype, scale):
    """8-bit input with a float32 scale past FLT_MAX / 255 gave the internal FixqError; every input type
    now saturates as the int32 form does."""
    x = np.array([1, 0, 100, 3], acc_dtype)
    wide = fixq.requantize(x.astype(np.int32), scale=np.float32(scale), zero_point=0, dtype=np.int8, rounding="fp32")
    y = fixq.requantize(x, scale=np.float32(scale), zero_point=0, dtype=np.int8, rounding="fp32")
    assert np.array_equal(y, wide) and np.array_equal(y, [127, 0, 127, 127])
