"""The C plan's broadcasting add / mul / sub step (src/fixq/_csrc/engine.c run_eltwise): each operand, a
tensor or the plan's constant, broadcast to the output's [h, w, c] by numpy's rules, then every target form
(engine_targets.h) on the same elements, bit for bit the numpy arithmetic on every CPU path: shapes with
tails past 8 and 16, ties, saturation, and TFLite's optimized ADD / MUL with their NEON and scalar loops by
position (fixq.targets.tflite.neon_runs)."""
import numpy as np
import pytest

import fixq
from fixq import _core, gemm
from fixq.engine.plan import eltwise_params
from fixq.targets import tflite

from test_engine_targets import DTYPES, eltwise_reference, eltwise_targets, same_on_every_isa

H, W, C = 3, 5, 19  # 15 pixels of 19 channels: runs and tails that are no multiple of 8 or 16


def plan(dtype, step, const=None, const_at=1, b_channel0=False):
    """x [N, C, H, W] quantized with scale 1 into a = [H, W, C]; b = a's channel 0 ([H, W, 1], a 1x1 GEMM
    with an identity column) or the constant; then `step` on (a, b) or (a, constant).  Outputs: y, and b
    where it is a tensor."""
    lo, hi = DTYPES[dtype]
    tensors = [(H, W, C, 4), (H, W, C, 1)]
    steps = [{"op": "quantize", "name": "x", "in": [0], "out": 1, "scale": 1.0, "zp": 0, "form": "div-even"}]
    if b_channel0:
        rq = {"rounding": "fp32", "scale": np.ones(1, np.float32), "zero_point": np.zeros(1, np.int32),
              "qmin": lo, "qmax": hi}
        w = np.zeros((1, C), np.int8)
        w[0, 0] = 1
        tensors.append((H, W, 1, 1))
        steps.append({"op": "gemm", "name": "b", "in": [1], "out": 2, "zp": 0, "rq": rq,
                      "packed": [gemm.pack_weights(w)], "bias": np.zeros(1, np.int32)})
    tensors.append((H, W, C, 1))
    d = dict(step, op="eltwise", name="op", out=len(tensors) - 1, **{"in": [1, 2] if b_channel0 else [1]})
    if const is not None:
        d.update(constant=const, constant_at=const_at)
    steps.append(d)
    outputs = [(len(tensors) - 1, False, 1.0, 0, (H * W * C,), True)]
    if b_channel0:
        outputs.append((2, False, 1.0, 0, (H * W,), True))
    return _core.Engine(dtype, tensors, steps, outputs)


def inputs(dtype, rng, n=4):
    lo, hi = DTYPES[dtype]
    x = rng.integers(lo, hi + 1, (n, C, H, W)).astype(np.float32)
    x[0] = lo  # the ends: saturation
    x[1] = hi
    return x


def run(engine, x):
    """(y, a, b-tensor or None) as NHWC int64 arrays, the same on every CPU path."""
    o = same_on_every_isa(engine, x, every_output=True)
    a = np.moveaxis(x, 1, -1).astype(np.int64)
    y = o[0].reshape(len(x), H, W, C).astype(np.int64)
    return y, a, (o[1].reshape(len(x), H, W, 1).astype(np.int64) if len(o) > 1 else None)


CONST_SHAPES = [(1, 1, C), (1, 1, 1), (H, W, C), (1, W, C), (H, 1, 1), (H, 1, C)]


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_target_forms_with_a_constant_of_every_broadcast_shape(dtype):
    rng = np.random.default_rng(11)
    lo, hi = DTYPES[dtype]
    x = inputs(dtype, rng)
    for k, shape in enumerate(CONST_SHAPES):
        const = rng.integers(lo, hi + 1, shape).astype(dtype)
        for t in eltwise_targets(dtype, rng)[:4] + eltwise_targets(dtype, rng)[-3:]:
            at = k % 2
            y, a, _ = run(plan(dtype, {"target": t}, const, at), x)
            c = np.broadcast_to(const.astype(np.int64), a.shape)
            want = eltwise_reference(t, *((c, a) if at == 0 else (a, c)))
            assert np.array_equal(y, want), (shape, at, t)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_tensor_broadcast_of_one_channel(dtype):
    """[H, W, C] op [H, W, 1]: the second operand's one channel repeated."""
    rng = np.random.default_rng(12)
    x = inputs(dtype, rng)
    for t in eltwise_targets(dtype, rng)[:4]:
        y, a, b = run(plan(dtype, {"target": t}, b_channel0=True), x)
        assert np.array_equal(b[..., 0], a[..., 0])
        assert np.array_equal(y, eltwise_reference(t, a, np.broadcast_to(b, a.shape))), t


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("rounding", ["double", "fp32"])
def test_fixq_kernel_with_a_constant(op, rounding):
    rng = np.random.default_rng(13)
    x = inputs("int8", rng)
    const = rng.integers(-128, 128, (1, 1, C)).astype(np.int8)
    kw = dict(a_scale=0.05, a_zero_point=3, b_scale=0.02, b_zero_point=-7, out_scale=0.04, out_zero_point=1,
              out_min=-128, out_max=127, out_dtype=np.int8, rounding=rounding)
    y, a, _ = run(plan("int8", {"eltwise": eltwise_params(op, kw)}, const), x)
    kern = fixq.qadd if op == "add" else fixq.qmul
    want = kern(a.astype(np.int8), const[None], **kw)
    assert np.array_equal(y, want.astype(np.int64))


# scales of TFLite's optimized ADD / MUL: ties in the NEON forms (0.5 / 1.0 steps), typical ones, saturation
TFLITE_SCALES = [(0.5, 0.5, 1.0), (0.02, 0.03, 0.05), (1.0 / 3, 0.25, 0.75), (0.1, 0.1, 0.001), (0.0078, 0.05, 0.04)]


def tflite_form(op, sa, sb, so, za, zb, zo, lo, hi, shape_a, shape_b):
    widths = (16, 8) if op == "add" else (16, 16)
    scalar, run_, split = tflite.neon_runs((1,) + shape_a, (1,) + shape_b, widths)
    mults = [tflite.mul_multiplier(sa, sb, so)] if op == "mul" else tflite.sub_multipliers(sa, sb, so)
    return dict(form=f"tflite-{op}", multiplier=np.array([m for m, _ in mults], np.int32),
                shift=np.array([s for _, s in mults], np.int32), a_zp=za, b_zp=zb, out_zp=zo, lo=lo, hi=hi,
                run=0 if op == "sub" else run_, split=0 if op == "sub" else split,
                neon=0 if op == "sub" else 2 if scalar and op == "add" else 1)


@pytest.mark.parametrize("op", ["add", "mul", "sub"])
def test_tflite_optimized_forms_by_position(op):
    """TFLite's optimized ADD / MUL (NEON loops on the first 16 (8) outputs of each run, the scalar loop on
    the rest) and its SUB, with a constant of each broadcast shape: fixq.targets.tflite's numpy kernels."""
    rng = np.random.default_rng(14)
    x = inputs("int8", rng, 6)
    fn = {"add": tflite.add_optimized, "mul": tflite.mul_optimized, "sub": tflite.sub}[op]
    for (sa, sb, so), (lo, hi) in zip(TFLITE_SCALES, [(-128, 127), (-128, 127), (-20, 127), (-128, 127), (0, 90)]):
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        for k, shape in enumerate(CONST_SHAPES):
            const = rng.integers(-128, 128, shape).astype(np.int8)
            at = k % 2
            shapes = [(H, W, C), shape] if at == 1 else [shape, (H, W, C)]
            sca, scb = (sa, sb) if at == 1 else (sb, sa)
            zpa, zpb = (za, zb) if at == 1 else (zb, za)
            t = tflite_form(op, sca, scb, so, zpa, zpb, zo, lo, hi, *shapes)
            y, a, _ = run(plan("int8", {"target": t}, const, at), x)
            ops = (a.astype(np.int8), const[None]) if at == 1 else (const[None], a.astype(np.int8))
            want = fn(*ops, sca, zpa, scb, zpb, so, zo, lo, hi, np.int8)
            assert np.array_equal(y, want.astype(np.int64)), (op, shape, at, (sa, sb, so))


def test_tflite_neon_forms_refused_where_they_cannot_run():
    """A NEON form on uint8, a run that does not divide the sample, a split past the run: one line."""
    base = tflite_form("add", 0.5, 0.5, 1.0, 0, 0, 0, -128, 127, (H, W, C), (1, 1, C))
    const = np.zeros((1, 1, C), np.int8)
    for bad in (dict(run=7), dict(split=base["run"] + 1), dict(neon=3)):
        with pytest.raises(ValueError, match="step 'op' is inconsistent"):
            plan("int8", {"target": dict(base, **bad)}, const)
    with pytest.raises(ValueError, match="step 'op' is inconsistent"):
        plan("uint8", {"target": dict(base, lo=0, hi=255)}, const.view(np.uint8))
    with pytest.raises(ValueError, match="step 'op' is inconsistent"):  # [2, 1, C] does not broadcast to [H, W, C]
        plan("int8", {"target": base}, np.zeros((2, 1, C), np.int8))


# broadcast_ties's two constant ADDs (in, constant, out scales and zero points; the constant's value): scales
# where the NEON loops' roundings part from the scalar loop's on a few input pairs
TIES = [(0.07916879653930664, -86, 0.03243165463209152, 19, 0.05917685106396675, 31, 1),
        (0.015622424893081188, -69, 0.007753962185233831, 38, 0.026468168944120407, -86, 65)]


def test_tflite_add_neon_ties():
    """Sample 0 holds every int8 value: the NEON forms' ties land in their runs and the step computes them
    as LiteRT does, where the scalar loop alone would not."""
    rng = np.random.default_rng(15)
    x = inputs("int8", rng)
    x[0] = np.resize(np.arange(-128, 128), H * W * C).reshape(H, W, C).transpose(2, 0, 1)
    parted = 0
    for sa, za, sb, zb, so, zo, value in TIES:
        for shape in ((1, 1, C), (1, 1, 1), (H, W, C)):
            const = np.full(shape, value, np.int8)
            t = tflite_form("add", sa, sb, so, za, zb, zo, -128, 127, (H, W, C), shape)
            y, a, _ = run(plan("int8", {"target": t}, const), x)
            want = tflite.add_optimized(a.astype(np.int8), const[None], sa, za, sb, zb, so, zo, -128, 127, np.int8)
            assert np.array_equal(y, want.astype(np.int64)), shape
            y0, _, _ = run(plan("int8", {"target": dict(t, neon=0, run=0, split=0)}, const), x)
            parted += np.count_nonzero(y0 != y)
    assert parted > 0
