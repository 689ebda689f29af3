"""fixq.qconv2d against a numpy int64 reference (stride, padding, dilation, groups, depthwise, per-channel
output stage), on every CPU path; its argument checks and the recipe it picks with target=."""
import numpy as np
import pytest

import fixq


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=np.int64).astype(dtype)


def conv_reference(x, w, bias, stride, pads, dilation, groups, zx, zw):
    """Exact int64 accumulators: x NHWC padded with its zero point, w OHWI, one group at a time."""
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    wz = w.astype(np.int64) - np.reshape(zw, (-1, 1, 1, 1))
    o, kh, kw, cg = w.shape
    og = o // groups
    oh = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    acc = np.zeros((x.shape[0], oh, ow, o), np.int64) + (0 if bias is None else bias.astype(np.int64))
    for i in range(oh):
        for j in range(ow):
            for dy in range(kh):
                for dx in range(kw):
                    v = xp[:, i * stride[0] + dy * dilation[0], j * stride[1] + dx * dilation[1], :]
                    for g in range(groups):
                        acc[:, i, j, g * og:(g + 1) * og] += v[:, g * cg:(g + 1) * cg] @ wz[g * og:(g + 1) * og, dy, dx].T
    return acc


GEOMETRIES = [  # (N, H, W, C, O, kH, kW, stride, padding, pads, dilation, groups)
    (2, 6, 7, 3, 5, 3, 3, 1, 1, ((1, 1), (1, 1)), 1, 1),
    (1, 7, 5, 4, 6, 3, 3, 2, "valid", ((0, 0), (0, 0)), 1, 1),
    (2, 6, 7, 3, 4, 3, 2, (2, 1), "same", ((0, 1), (0, 1)), 1, 1),
    (1, 9, 8, 2, 3, 3, 3, 1, ((0, 2), (1, 0)), ((0, 2), (1, 0)), (2, 1), 1),
    (1, 5, 5, 4, 4, 1, 1, 1, 0, ((0, 0), (0, 0)), 1, 1),
    (2, 6, 5, 6, 4, 3, 3, 1, (1, 2), ((1, 1), (2, 2)), 1, 2),
    (2, 5, 6, 4, 4, 3, 3, 1, "same", ((1, 1), (1, 1)), 1, 4),       # depthwise
    (1, 6, 6, 3, 6, 3, 3, 2, "same", ((0, 1), (0, 1)), 1, 3),       # depthwise, multiplier 2
    (1, 4, 4, 1, 3, 2, 2, 1, 0, ((0, 0), (0, 0)), 1, 1),
]


@pytest.mark.parametrize("geo", GEOMETRIES, ids=[str(i) for i in range(len(GEOMETRIES))])
@pytest.mark.parametrize("xdt", (np.int8, np.uint8))
def test_conv_matches_int64_reference(isa, geo, xdt):
    n, h, wd, c, o, kh, kw, stride, padding, pads, dilation, groups = geo
    rng = np.random.default_rng(7)
    x = rand(rng, xdt, (n, h, wd, c))
    w = rand(rng, np.int8, (o, kh, kw, c // groups))
    bias = rng.integers(-5000, 5000, o).astype(np.int32)
    zx = 3 if xdt == np.int8 else 131
    zw = rng.integers(-3, 4, o).astype(np.int32)
    st, dl = (stride,) * 2 if np.ndim(stride) == 0 else stride, (dilation,) * 2 if np.ndim(dilation) == 0 else dilation
    want = conv_reference(x, w, bias, st, pads, dl, groups, zx, zw)
    kw_ = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, a_zero_point=zx, b_zero_point=zw)
    acc = fixq.qconv2d(x, w, bias, out_dtype=np.int32, **kw_)
    np.testing.assert_array_equal(acc, want)
    m, s = fixq.quantize_multiplier(rng.uniform(1e-4, 1e-2, o))
    zy = rng.integers(-5, 5, o).astype(np.int32)
    y = fixq.qconv2d(x, w, bias, multiplier=m, shift=s, out_zero_point=zy, out_min=-100, **kw_)
    np.testing.assert_array_equal(y, fixq.requantize(want.astype(np.int32), m, s, zy, qmin=-100, axis=-1))
    out = np.empty_like(y)
    assert fixq.qconv2d(x, w, bias, multiplier=m, shift=s, out_zero_point=zy, out_min=-100, out=out, **kw_) is out
    np.testing.assert_array_equal(out, y)


def test_conv_fp32_stage_and_per_tensor_params():
    rng = np.random.default_rng(2)
    x, w = rand(rng, np.int8, (1, 5, 5, 4)), rand(rng, np.int8, (4, 3, 3, 1))
    acc = fixq.qconv2d(x, w, groups=4, padding=1, out_dtype=np.int32)
    y = fixq.qconv2d(x, w, groups=4, padding=1, scale=0.01, rounding="fp32", out_zero_point=2)
    np.testing.assert_array_equal(y, fixq.requantize(acc, scale=0.01, zero_point=2, rounding="fp32"))


@pytest.mark.parametrize("call, match", [
    (lambda x, w: fixq.qconv2d(x[0], w), "NHWC"),
    (lambda x, w: fixq.qconv2d(x, w[0]), r"\[O, kH, kW, C / groups\]"),
    (lambda x, w: fixq.qconv2d(x, w, groups=2), "groups=2"),
    (lambda x, w: fixq.qconv2d(x, w, stride=0), "stride"),
    (lambda x, w: fixq.qconv2d(x, w, dilation=(1, 2, 3)), "dilation"),
    (lambda x, w: fixq.qconv2d(x, w, padding=-1), "padding"),
    (lambda x, w: fixq.qconv2d(x, w, padding="full"), "padding"),
    (lambda x, w: fixq.qconv2d(x[:, :1, :1], w), "larger than the padded input"),
    (lambda x, w: fixq.qconv2d(x, w, multiplier=np.ones(3, np.int32) << 30, shift=-8), "one value per output channel"),
    (lambda x, w: fixq.qconv2d(x, w, np.zeros(2, np.int32), out_dtype=np.int32), "bias"),
    (lambda x, w: fixq.qconv2d(x, w, a_zero_point=200), "a_zero_point"),
    (lambda x, w: fixq.qconv2d(x, w, op="matmul", target="tflite", scales=(0.1, 0.1, 0.1)), "op must be"),
])
def test_conv_argument_errors(call, match):
    x = np.zeros((1, 4, 4, 3), np.int8)
    w = np.zeros((4, 3, 3, 3), np.int8)
    with pytest.raises(ValueError, match=match):
        call(x, w)


def test_conv_picks_the_recipe_from_the_layer():
    """depthwise when groups == C > 1; a one-channel conv needs op= where the target rounds the two apart."""
    rng = np.random.default_rng(4)
    scales = (np.float32(2.0**-4), np.float32(2.0**-6), np.float32(2.0**-3))
    x3, w3 = rand(rng, np.int8, (1, 5, 5, 3)), rand(rng, np.int8, (3, 3, 3, 1))
    acc = fixq.qconv2d(x3, w3, groups=3, out_dtype=np.int32)
    for target in ("tflite", "tflite-reference"):
        got = fixq.qconv2d(x3, w3, groups=3, target=target, scales=scales)
        np.testing.assert_array_equal(got, fixq.targets.requantize(acc, target, "depthwise_conv", *scales))
    x1, w1 = rand(rng, np.int8, (1, 5, 5, 1)), rand(rng, np.int8, (2, 3, 3, 1))
    with pytest.raises(ValueError, match="op='conv'"):
        fixq.qconv2d(x1, w1, target="tflite", scales=scales)
    acc1 = fixq.qconv2d(x1, w1, out_dtype=np.int32)
    for op in ("conv", "depthwise_conv"):
        np.testing.assert_array_equal(fixq.qconv2d(x1, w1, target="tflite", scales=scales, op=op),
                                      fixq.targets.requantize(acc1, "tflite", op, *scales))
    np.testing.assert_array_equal(fixq.qconv2d(x1, w1, target="xnnpack", scales=scales),  # one recipe for both
                                  fixq.targets.requantize(acc1, "xnnpack", "conv", *scales))
    with pytest.raises(ValueError, match="groups = C"):
        fixq.qconv2d(x3, rand(rng, np.int8, (2, 3, 3, 3)), target="tflite", scales=scales, op="depthwise_conv")


def test_qlinear_op_selects_the_runtime_op():
    """qlinear(target=) defaults to the FULLY_CONNECTED recipe; op='conv' gives CONV_2D's on the same accumulators."""
    rng = np.random.default_rng(5)
    x, w = rand(rng, np.int8, (9, 27)), rand(rng, np.int8, (5, 27))
    scales = (np.float32(2.0**-4), np.float32(2.0**-7), np.float32(2.0**-2))
    acc = fixq.qlinear(x, w, out_dtype=np.int32)
    for op in ("matmul", "conv", "depthwise_conv"):
        want = fixq.targets.requantize(acc, "tflite-reference", op, *scales)
        np.testing.assert_array_equal(fixq.qlinear(x, w, target="tflite-reference", scales=scales, op=op), want)
        np.testing.assert_array_equal(fixq.qmatmul(x, w.T.copy(), target="tflite-reference", scales=scales, op=op),
                                      want)
    with pytest.raises(ValueError, match="op must be one of"):
        fixq.qlinear(x, w, target="tflite", scales=scales, op="add")
