"""The C plan's target forms (src/fixq/_csrc/engine_targets.h) on every CPU path: the SIMD forms
(engine_targets__avx2.c, __avx512vnni.c) give the scalar form's bits on large random and exhaustive
inputs, ties and saturation included, and the scalar form gives the runtimes' numpy arithmetic.  Each
form runs in a one- to four-step plan built directly (fixq._core.Engine)."""
import numpy as np
import pytest

import fixq
from fixq import _core, gemm

from conftest import ISAS, using_isa

DTYPES = {"int8": (-128, 127), "uint8": (0, 255)}


def same_on_every_isa(engine, x, every_output=False):
    """The raw outputs of one run of `engine` on `x` per CPU path this machine supports, which must be the same
    bits on each: the first output, or with `every_output` the list of them."""
    outs = {}
    for isa in ISAS:
        with using_isa(isa):
            outs[isa] = engine.run(x, 1, True, False)
    for isa, o in outs.items():
        for y, want in zip(o, outs["scalar"]):
            assert np.array_equal(y, want), f"{isa} differs from scalar at {np.argwhere(y != want)[:5]}"
    return outs["scalar"] if every_output else outs["scalar"][0]


# ---- GEMM epilogues -------------------------------------------------------------------------------

def round_away(d):
    t = np.trunc(d)
    return t + np.where(np.abs(d - t) >= 0.5, np.sign(d), 0.0)


def ruy_reference(acc, m, s):
    """ruy's x86 epilogue in numpy int64 (fixq.targets.tflite._ruy_x86 with the multiplier given)."""
    m, s = m.astype(np.int64), s.astype(np.int64)
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    with np.errstate(over="ignore"):
        t = ((acc << left) * m + (1 << 30)) >> 31
    return (t + ((np.int64(1) << right) >> 1)) >> right


def gemm_plan(dtype, n_in, w_groups, bias, target, zp=0, hw=(1, 1)):
    """x [N, n_in] (or NHWC [N, h, w, n_in]) -> quantized with scale 1 -> a 1x1 GEMM of `w_groups` (one
    [og, n_in / groups] int8 matrix per group) with the target's epilogue."""
    h, w = hw
    out = sum(g.shape[0] for g in w_groups)
    tensors = [(h, w, n_in, 4), (h, w, n_in, 1), (h, w, out, 1)]
    lo, hi = DTYPES[dtype]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": 1.0, "zp": zp, "form": "div-even"},
             {"op": "gemm", "name": "fc", "in": [1], "out": 2, "groups": len(w_groups), "zp": zp,
              "packed": [gemm.pack_weights(g) for g in w_groups], "bias": np.ascontiguousarray(bias, np.int32),
              "target": target}]
    return _core.Engine(dtype, tensors, steps, [(2, False, 1.0, 0, (h, w, out) if h * w > 1 else (out,), True)])


def special_multipliers(rng, n):
    """Multipliers and shifts of ruy's epilogue (M >= 0, shift in [-62, 30]): exact halves (ties at
    both steps), the extremes, and random ones, left shifts (real multipliers >= 1) included."""
    m = rng.integers(0, 2**31, n).astype(np.int32)
    s = rng.integers(-40, 4, n).astype(np.int32)
    fixed = [(2**30, 0), (2**30, -1), (2**30, -2), (3 * 2**29, -3), (2**31 - 1, 0), (2**31 - 1, -31), (0, 0),
             (2**30, -31), (2**30, -32), (2**30, -33), (2**31 - 1, -62), (2**30, 1), (2**31 - 1, 30), (2**30, 5)]
    for i, (mm, ss) in enumerate(fixed[:n]):
        m[i], s[i] = mm, ss
    return m, s


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("channels", ["per-channel", "per-tensor"])
def test_ruy_x86_epilogue_is_the_scalar_form_on_every_path(dtype, channels):
    rng = np.random.default_rng(1)
    lo, hi = DTYPES[dtype]
    n_out = 53  # 3 blocks of 16 (avx512) / 6 of 8 (avx2) and a tail
    bias = rng.integers(-(2**31 - 300), 2**31 - 300, n_out)
    bias[:8] = rng.integers(-300, 300, 8)  # small accumulators: many ties
    bias[8:12] = [2**31 - 300, -(2**31 - 300), 2**30, -(2**30)]
    m, s = special_multipliers(rng, n_out)
    out_zp = int(rng.integers(lo, hi + 1))
    act_lo, act_hi = (lo, hi) if dtype == "uint8" else (-100, 90)
    x = np.arange(lo, hi + 1, dtype=np.float32).reshape(-1, 1)  # every input: acc = x + bias
    acc = x.astype(np.int64) + bias.astype(np.int64)
    # per tensor: each special multiplier in turn
    cases = [(m, s)] if channels == "per-channel" else [(m[k:k + 1], s[k:k + 1]) for k in range(14)]
    for mk, sk in cases:
        target = dict(form="ruy-x86", multiplier=mk, shift=sk, out_zp=out_zp, lo=act_lo, hi=act_hi)
        got = same_on_every_isa(gemm_plan(dtype, 1, [np.ones((n_out, 1), np.int8)], bias, target), x)
        assert np.array_equal(got.astype(np.int64), np.clip(ruy_reference(acc, mk, sk) + out_zp, act_lo, act_hi))


def test_ruy_x86_every_multiplier_on_random_accumulators():
    """Many random (M, shift) pairs, one per channel, on accumulators spread over int32."""
    rng = np.random.default_rng(2)
    n_out, k = 256, 4
    w = rng.integers(-127, 128, (n_out, k)).astype(np.int8)
    bias = rng.integers(-(2**31 - 2**12), 2**31 - 2**12, n_out)
    m = rng.integers(0, 2**31, n_out).astype(np.int32)
    s = rng.integers(-62, 31, n_out).astype(np.int32)
    s[:128] = rng.integers(-20, 1, 128)  # the usual right shifts
    target = dict(form="ruy-x86", multiplier=m, shift=s, out_zp=-3, lo=-128, hi=127)
    plan = gemm_plan("int8", k, [w], bias, target)
    x = rng.integers(-128, 128, (300, k)).astype(np.float32)
    got = same_on_every_isa(plan, x)
    acc = x.astype(np.int64) @ w.T.astype(np.int64) + bias
    assert np.array_equal(got.astype(np.int64), np.clip(ruy_reference(acc, m, s) - 3, -128, 127))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("channels", ["per-channel", "per-tensor"])
def test_float64_away_epilogue_is_the_scalar_form_on_every_path(dtype, channels):
    rng = np.random.default_rng(3)
    lo, hi = DTYPES[dtype]
    n_out = 37
    bias = rng.integers(-2000, 2000, n_out)
    bias[-4:] = [2**31 - 300, -(2**31 - 300), 2**24 + 1, -(2**24 + 1)]
    real = rng.uniform(0, 0.2, n_out)
    real[:10] = [0.5, 0.25, 1.5, 0.125, 0.0, 1.0, 3.0, 2.0**-20, 0.75, 100.0]  # ties and saturation
    if channels == "per-tensor":
        real = real[:1]
    out_zp = int(rng.integers(lo, hi + 1))
    target = dict(form="float64-away", real=np.ascontiguousarray(real), out_zp=out_zp, lo=lo, hi=hi)
    plan = gemm_plan(dtype, 1, [np.ones((n_out, 1), np.int8)], bias, target)
    x = np.arange(lo, hi + 1, dtype=np.float32).reshape(-1, 1)
    got = same_on_every_isa(plan, x)
    acc = x.astype(np.int64) + bias.astype(np.int64)
    want = np.clip(round_away(acc * real) + out_zp, lo, hi)
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64))


@pytest.mark.parametrize("form", ["ruy-x86", "float64-away"])
def test_gemm_epilogue_of_groups_in_an_image(form):
    """Two groups (channel offset, output row longer than the group) over an image of pixels."""
    rng = np.random.default_rng(4)
    og, cg = 19, 3
    w = [rng.integers(-127, 128, (og, cg)).astype(np.int8) for _ in range(2)]
    bias = rng.integers(-(2**20), 2**20, 2 * og)
    if form == "ruy-x86":
        m, s = special_multipliers(rng, 2 * og)
        s = np.minimum(s, 0)
        target = dict(form=form, multiplier=m, shift=s, out_zp=5, lo=-128, hi=127)
    else:
        target = dict(form=form, real=rng.uniform(0, 0.01, 2 * og), out_zp=5, lo=-128, hi=127)
    plan = gemm_plan("int8", 2 * cg, w, bias, target, zp=-7, hw=(3, 5))
    x = rng.integers(-128, 128, (20, 2 * cg, 3, 5)).astype(np.float32)  # NCHW
    got = same_on_every_isa(plan, x)
    xq = np.clip(x.transpose(0, 2, 3, 1).astype(np.int64) - 7, -128, 127) + 7  # quantized with zp -7
    acc = np.concatenate([xq[..., g * cg:(g + 1) * cg] @ w[g].T.astype(np.int64) for g in range(2)], -1) + bias
    if form == "ruy-x86":
        want = ruy_reference(acc, m, s)
    else:
        want = round_away(acc * target["real"])
    want = np.clip(want + 5, -128, 127)  # the output stays NHWC
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64))


@pytest.mark.parametrize("form", ["ruy-x86", "float64-away"])
@pytest.mark.parametrize("out_zp", [2**20, -(2**31)])
def test_gemm_epilogue_of_a_zero_point_past_int16(form, out_zp):
    """A plan's output zero point is not checked against the dtype: the SIMD forms leave one their int32
    clamp cannot take to the scalar form."""
    rng = np.random.default_rng(8)
    bias = rng.integers(-(2**30), 2**30, 16)
    target = dict(form=form, out_zp=out_zp, lo=-128, hi=127)
    if form == "ruy-x86":
        target.update(multiplier=np.full(16, 2**31 - 1, np.int32), shift=np.zeros(16, np.int32))
    else:
        target.update(real=np.ones(16))
    plan = gemm_plan("int8", 1, [np.ones((16, 1), np.int8)], bias, target)
    x = np.arange(-128, 128, dtype=np.float32).reshape(-1, 1)
    acc = x.astype(np.int64) + bias
    want = ruy_reference(acc, target["multiplier"], target["shift"]) if form == "ruy-x86" else acc
    assert np.array_equal(same_on_every_isa(plan, x).astype(np.int64), np.clip(want + out_zp, -128, 127))


# ---- add / mul ------------------------------------------------------------------------------------

def eltwise_plan(dtype, target, n=256):
    """Input [N, 2n] quantized with scale 1; a = its first n values, b = its last n (each by a GEMM with
    an identity block, requantized by 1.0), then the target's add / mul."""
    tensors = [(1, 1, 2 * n, 4), (1, 1, 2 * n, 1), (1, 1, n, 1), (1, 1, n, 1), (1, 1, n, 1)]
    lo, hi = DTYPES[dtype]
    rq = {"rounding": "fp32", "scale": np.ones(1, np.float32), "zero_point": np.zeros(1, np.int32), "qmin": lo,
          "qmax": hi}
    eye = np.eye(n, dtype=np.int8)
    half = [np.hstack([eye, 0 * eye]), np.hstack([0 * eye, eye])]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": 1.0, "zp": 0, "form": "div-even"}]
    for i in range(2):
        steps.append({"op": "gemm", "name": "ab"[i], "in": [1], "out": 2 + i, "zp": 0, "rq": rq,
                      "packed": [gemm.pack_weights(half[i])], "bias": np.zeros(n, np.int32)})
    steps.append({"op": "eltwise", "name": "op", "in": [2, 3], "out": 4, "target": target})
    return _core.Engine(dtype, tensors, steps, [(4, False, 1.0, 0, (n,), True)])


def every_pair(dtype, n=256):
    """Rows of (a, b): a runs over the dtype, b over its rotations: all 65536 pairs."""
    lo, hi = DTYPES[dtype]
    v = np.arange(lo, hi + 1, dtype=np.float32)
    return np.stack([np.concatenate([v, np.roll(v, k)]) for k in range(n)])


def eltwise_targets(dtype, rng):
    lo, hi = DTYPES[dtype]
    z = lambda: int(rng.integers(lo, hi + 1))  # noqa: E731
    out = []
    for sa, sb, so in [(0.02, 0.03, 0.05), (2.0**-4, 2.0**-5, 2.0**-4), (0.1, 0.1, 0.3), (1e-3, 0.5, 0.01),
                       (1.0, 1.0, 1.0)]:
        zp = dict(a_zp=z(), b_zp=z(), out_zp=z())
        f32 = [float(np.float32(v)) for v in (sa, sb, so)]
        out.append(dict(zp, form="onnxruntime-add", a_scale=f32[0], b_scale=f32[1], out_scale=f32[2], lo=lo, hi=hi))
        scale = float(np.float32(f32[0]) * np.float32(f32[1]) / np.float32(f32[2]))
        out.append(dict(zp, form="onnxruntime-mul", scale=scale, lo=lo, hi=hi))
        out.append(dict(zp, form="xnnpack-mul", scale=scale, lo=lo, hi=hi))
        m_a, m_b, shift, bias = fixq.targets.xnnpack.add_params(np.float32(sa), np.float32(sb), np.float32(so),
                                                                zp["a_zp"], zp["b_zp"])
        out.append(dict(zp, form="xnnpack-add", a_mult=m_a, b_mult=m_b, shift_bits=shift, bias=bias, lo=lo, hi=hi))
    # a relu's range, the one-integer output scale (ties), and parameters the vector forms leave to the
    # scalar one (zero points past 2^15, huge scales, multipliers past int32, an infinite scale)
    out.append(dict(form="onnxruntime-add", a_scale=0.5, b_scale=0.5, out_scale=1.0, a_zp=lo, b_zp=hi, out_zp=z(),
                    lo=(lo + hi) // 2, hi=hi))
    out.append(dict(form="onnxruntime-add", a_scale=0.5, b_scale=1.5, out_scale=1.0, a_zp=70000, b_zp=-5, out_zp=1,
                    lo=lo, hi=hi))
    out.append(dict(form="onnxruntime-add", a_scale=3e38, b_scale=-3e38, out_scale=1.0, a_zp=0, b_zp=1, out_zp=0,
                    lo=lo, hi=hi))
    out.append(dict(form="onnxruntime-mul", scale=float("inf"), a_zp=1, b_zp=0, out_zp=0, lo=lo, hi=hi))
    out.append(dict(form="xnnpack-mul", scale=1e30, a_zp=1, b_zp=0, out_zp=3, lo=lo, hi=hi))
    out.append(dict(form="xnnpack-add", a_mult=2**33, b_mult=-5, shift_bits=31, bias=7, a_zp=0, b_zp=0, out_zp=2,
                    lo=lo, hi=hi))
    out.append(dict(form="xnnpack-add", a_mult=2**21, b_mult=2**20, shift_bits=1, bias=-(2**40), a_zp=0, b_zp=0,
                    out_zp=-1 if lo < 0 else 1, lo=lo, hi=hi))
    # XNNPACK's ADD at the edge of the int32 lanes (fixq__eng_xnn_add_fits32), then one past it (int64 lanes)
    for extra in (0, 1):
        out.append(dict(form="xnnpack-add", a_mult=2**22, b_mult=-(2**22), shift_bits=23,
                        bias=2**31 - 1 - 255 * 2**23 + extra, a_zp=0, b_zp=0, out_zp=1, lo=lo, hi=hi))
    return out


def eltwise_reference(t, a, b):
    """fixq.targets' numpy arithmetic of each form (the scalar form's contract)."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    da, db = a - t["a_zp"], b - t["b_zp"]
    zo = t["out_zp"]
    with np.errstate(over="ignore", invalid="ignore"):
        if t["form"] == "onnxruntime-add":
            v = (da.astype(np.float32) * np.float32(t["a_scale"]) + db.astype(np.float32) * np.float32(t["b_scale"]))
            v = np.clip(v / np.float32(t["out_scale"]), np.float32(t["lo"] - zo), np.float32(t["hi"] - zo))
            q = np.rint(v + np.float32(zo))
        elif t["form"] == "onnxruntime-mul":
            q = np.rint((da * db).astype(np.float32) * np.float32(t["scale"]) + np.float32(zo))
        elif t["form"] == "xnnpack-mul":
            q = np.clip(np.rint((da * db).astype(np.float32) * np.float32(t["scale"])), -2.0**40, 2.0**40) + zo
        else:
            return np.clip(((t["bias"] + a * t["a_mult"] + b * t["b_mult"]) >> t["shift_bits"]) + zo, t["lo"], t["hi"])
        q = np.where(np.isnan(q), 0, np.clip(q, -2.0**62, 2.0**62))
    return np.clip(q, t["lo"], t["hi"]).astype(np.int64)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_eltwise_forms_are_the_scalar_form_on_every_pair(dtype):
    rng = np.random.default_rng(5)
    x = every_pair(dtype)
    n = 256
    for t in eltwise_targets(dtype, rng):
        got = same_on_every_isa(eltwise_plan(dtype, t), x)
        want = eltwise_reference(t, x[:, :n], x[:, n:])
        assert np.array_equal(got.astype(np.int64), want), t


def test_eltwise_tails():
    """Lengths that are no multiple of 8 or 16."""
    rng = np.random.default_rng(6)
    for n in (1, 7, 9, 17, 33):
        x = rng.integers(-128, 128, (5, 2 * n)).astype(np.float32)
        for t in eltwise_targets("int8", rng)[:4]:
            got = same_on_every_isa(eltwise_plan("int8", t, n), x)
            assert np.array_equal(got.astype(np.int64), eltwise_reference(t, x[:, :n], x[:, n:])), (n, t)


# ---- QUANTIZE, ties away from zero ---------------------------------------------------------------

def quantize_plan(dtype, form, scale, zp, n):
    tensors = [(1, 1, n, 4), (1, 1, n, 1)]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": scale, "zp": zp, "form": form}]
    return _core.Engine(dtype, tensors, steps, [(1, False, 1.0, 0, (n,), True)])


def quantize_inputs(rng, scale, rows, n):
    """Exact and near ties k/2 * scale, values past the dtype both ways, zeros of both signs, subnormals,
    infinities, and random ones."""
    k = rng.integers(-600, 600, (rows, n)).astype(np.float32) / np.float32(2)
    x = k * np.float32(scale)
    x[0::4] = np.nextafter(x[0::4], np.float32(np.inf))
    x[1::4] = np.nextafter(x[1::4], np.float32(-np.inf))
    x[2, :8] = [0.0, -0.0, 1e-45, -1e-45, np.inf, -np.inf, 3e38, -3e38]
    x[3] = rng.normal(0, 100 * scale, n).astype(np.float32)
    return x


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("form", ["div-away", "zp-div-away"])
def test_quantize_away_forms_are_the_scalar_form_on_every_path(dtype, form):
    rng = np.random.default_rng(7)
    lo, hi = DTYPES[dtype]
    n = 83
    for scale, zp in [(0.5, 0), (0.1, 3), (2.0**-4, lo), (1.0 / 3.0, hi), (7.0, (lo + hi) // 2), (0.02, 2**20),
                      (0.02, -(2**20))]:
        scale = float(np.float32(scale))
        x = quantize_inputs(rng, scale, 40, n)
        got = same_on_every_isa(quantize_plan(dtype, form, scale, zp, n), x)
        s = np.float32(scale)
        with np.errstate(over="ignore", invalid="ignore"):
            q = x / s
            if form == "zp-div-away":
                want = round_away(np.clip(np.float32(zp) + q, np.float32(lo), np.float32(hi)).astype(np.float64))
            else:
                want = np.clip(round_away(np.clip(q, -2.0**31, 2.0**31).astype(np.float64)) + zp, lo, hi)
        assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), (scale, zp)


@pytest.mark.parametrize("form", ["div-away", "zp-div-away"])
@pytest.mark.parametrize("at", [0, 5, 8, 21, 63])
def test_quantize_away_refuses_nan_on_every_path(form, at):
    x = np.ones((1, 64), np.float32)
    x[0, at] = np.nan
    plan = quantize_plan("int8", form, 0.5, 0, 64)
    for isa in ISAS:
        with using_isa(isa), pytest.raises(ValueError, match="NaN"):
            plan.run(x, 1, True, False)
