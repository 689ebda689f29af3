import numpy as np
import pytest

from fixq import calibrate
from calib_reference import trt_entropy_amax, trt_mse_amax, trt_percentile_amax


def _batches(seed=0, n=6):
    rng = np.random.default_rng(seed)
    # ranges grow from batch to batch, so the histograms must merge
    return [(rng.standard_normal((50, 40)) * (1 + i)).astype(np.float32) for i in range(n)]


def test_minmax_streaming_equals_one_pass():
    bs = _batches()
    obs = calibrate.make("minmax")
    for b in bs:
        obs.update(b)
    allx = np.concatenate(bs)
    assert obs.range() == (float(allx.min()), float(allx.max()))


def test_moving_average_known_answer():
    obs = calibrate.make("moving_average")
    obs.update(np.array([-1.0, 1.0], np.float32))
    obs.update(np.array([-3.0, 2.0], np.float32))
    lo, hi = obs.range()
    assert lo == pytest.approx(-1.0 + 0.01 * (-3.0 + 1.0)) and hi == pytest.approx(1.0 + 0.01 * 1.0)
    obs = calibrate.make("moving_average", averaging_constant=1.0)
    obs.update(np.array([5.0], np.float32)).update(np.array([-2.0, 1.0], np.float32))
    assert obs.range() == (-2.0, 1.0)


def test_per_channel_minmax_streaming():
    bs = _batches(1)
    obs = calibrate.make("per_channel_minmax", axis=1)
    for b in bs:
        obs.update(b)
    allx = np.concatenate(bs)
    lo, hi = obs.range()
    np.testing.assert_array_equal(lo, allx.min(axis=0))
    np.testing.assert_array_equal(hi, allx.max(axis=0))
    assert obs.qparams(symmetric=True).axis == 1


def test_histogram_merge_is_exact_rebinning():
    bs = _batches(2)
    obs = calibrate.make("entropy")
    for b in bs:
        obs.update(b)
    h = obs.hist
    # the same bins built directly over the final range [0, W] with the documented rule
    allx = np.abs(np.concatenate(bs).astype(np.float64)).reshape(-1)
    idx = np.minimum(np.maximum(np.ceil(allx * (h.bins / h.width)) - 1, 0), h.bins - 1).astype(int)
    np.testing.assert_array_equal(h.pos + h.neg, np.bincount(idx, minlength=h.bins))
    assert h.width == 2.0 ** np.ceil(np.log2(allx.max())) and h.width / 2 < allx.max()
    assert h.pos.shape == (2048,)   # constant memory


@pytest.mark.parametrize("bins", [2048, 1001])
@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_streaming_equals_one_pass(method, bins):
    # the histogram depends only on the values seen, so the thresholds are equal exactly
    # (stronger than the "within one bin width" the issue asks for)
    bs = _batches(3)
    stream = calibrate.make(method, bins=bins)
    for b in bs:
        stream.update(b)
    one = calibrate.make(method, bins=bins).update(np.concatenate(bs)[::-1])
    np.testing.assert_array_equal(stream.hist.pos, one.hist.pos)
    np.testing.assert_array_equal(stream.hist.neg, one.hist.neg)
    assert stream.range() == one.range()


def _single_hist(x, bins):
    a = np.abs(x.astype(np.float64))
    return np.histogram(a, bins, range=(0, 2.0 ** np.ceil(np.log2(a.max()))))


def test_entropy_matches_tensorrt_formulation():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(20000), rng.laplace(0, 3, 500)]).astype(np.float32)
    obs = calibrate.make("entropy", bins=512).update(x)
    h, e = _single_hist(x, 512)
    # same histogram up to values on bin edges (ours is (lo, hi], numpy's [lo, hi))
    assert np.abs(obs.hist.pos + obs.hist.neg - h).sum() <= 4
    want = trt_entropy_amax(h, e)
    assert obs.range()[1] == pytest.approx(want, abs=e[1] * 1.01)
    # exact agreement on the very same counts
    i = calibrate.entropy_threshold_bin(h)
    assert e[i] == want


def test_mse_and_percentile_match_tensorrt_formulation():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(30011) ** 3).astype(np.float32)   # p * n never an integer: no float-cdf ties
    h, e = _single_hist(x, 2048)
    i = calibrate.mse_threshold_bin(h, e)
    assert (e[i] + e[i + 1]) / 2 == trt_mse_amax(h, e)
    mse = calibrate.make("mse").update(x).range()[1]
    assert mse == pytest.approx(trt_mse_amax(h, e), abs=e[1] * 1.01)
    for p in (99.0, 99.9, 99.99):
        got = calibrate.make("percentile", percentile=p).update(x).range()[1]
        want = trt_percentile_amax(h, e, p)
        # ours: upper edge of the bin, clipped to max|x|; theirs: lower edge (docs/quantization.md)
        assert want <= got <= want + 1.01 * e[1]


def test_known_answer_uniform():
    # uniform |x| on [0, 1): the p-th percentile of |x| is p/100
    x = np.linspace(-1, 1, 200001, dtype=np.float64)[1:-1].astype(np.float32)
    for p in (90.0, 99.0):
        t = calibrate.make("percentile", percentile=p).update(x).range()[1]
        assert abs(t - p / 100) <= 2 / 2048
    lo, hi = calibrate.make("percentile", percentile=90.0, symmetric=False).update(x).range()
    assert abs(hi - 0.9) <= 2 / 2048 and abs(lo + 0.9) <= 2 / 2048
    # a two-point distribution: every method keeps the whole range
    y = np.array([-1.0, 1.0] * 100, np.float32)
    for m in ("entropy", "mse"):
        lo, hi = calibrate.make(m).update(y).range()
        assert hi == pytest.approx(1.0, abs=1 / 2048) and lo == pytest.approx(-1.0, abs=1 / 2048)


def test_percentile_per_side_and_clipping_to_observed():
    x = np.concatenate([np.linspace(0, 10, 10000), np.linspace(-1, 0, 1000)[:-1]]).astype(np.float32)
    lo, hi = calibrate.make("percentile", percentile=99.0, symmetric=False).update(x).range()
    assert lo == pytest.approx(-0.945, abs=0.02) and hi == pytest.approx(9.945, abs=0.02)
    relu = np.abs(x)
    lo, hi = calibrate.make("entropy").update(relu).range()
    assert lo == 0.0 and hi > 0


def test_all_zero_data_gives_valid_qparams():
    for m in calibrate.METHODS:
        obs = calibrate.make(m).update(np.zeros((4, 3), np.float32))
        qp = obs.qparams()
        assert np.all(qp.scale > 0) and np.all(np.isfinite(qp.scale))
    obs = calibrate.make("entropy").update(np.zeros(10, np.float32)).update(np.ones(10, np.float32))
    assert obs.hist.pos[0] == 10 and obs.range() == (0.0, 1.0)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: calibrate.make("kl"), ValueError, "method"),
    (lambda: calibrate.make("percentile", percentile=0), ValueError, "percentile"),
    (lambda: calibrate.make("percentile", percentile=100.5), ValueError, "percentile"),
    (lambda: calibrate.make("entropy", bins=64), ValueError, "bins"),
    (lambda: calibrate.make("mse", bins=100), ValueError, "bins"),
    (lambda: calibrate.make("entropy", bins=2048.0), TypeError, "bins"),
    (lambda: calibrate.make("moving_average", averaging_constant=0), ValueError, "averaging_constant"),
    (lambda: calibrate.make("minmax", foo=1), TypeError, "foo"),
    (lambda: calibrate.make("minmax").update(np.array([1.0, np.nan])), ValueError, "NaN"),
    (lambda: calibrate.make("entropy").update(np.array([np.inf])), ValueError, "NaN or Inf"),
    (lambda: calibrate.make("minmax").update(np.zeros((0, 3))), ValueError, "empty"),
    (lambda: calibrate.make("minmax").update(np.arange(3)), TypeError, "float"),
    (lambda: calibrate.make("minmax").range(), ValueError, "no data"),
    (lambda: calibrate.make("mse").update(np.ones((2, 3))).update(np.ones((2, 4))), ValueError, "shape"),
    (lambda: calibrate.make("per_channel_minmax", axis=2).update(np.ones((2, 3))), ValueError, "axis"),
    (lambda: calibrate.make("per_channel_minmax", axis=0).update(np.ones((2, 3))).update(np.ones((3, 3))),
     ValueError, "channel axis"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_leading_dimension_may_change():
    obs = calibrate.make("entropy").update(np.ones((8, 3), np.float32)).update(np.ones((2, 3), np.float32))
    assert obs.range() == (1.0, 1.0)


def test_percentile_matches_onnxruntime_collector():
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization.calibrate import HistogramCollector
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(50011) * 2).astype(np.float32)
    col = HistogramCollector(method="percentile", symmetric=True, num_bins=2048, num_quantized_bins=128,
                             percentile=99.9, scenario="same")
    col.collect({"t": [x]})
    lo, hi = col.compute_percentile()["t"][:2]
    obs = calibrate.make("percentile", percentile=99.9).update(x)
    ours = obs.range()
    step = np.abs(x).max() / 2048 + obs.hist.width / 2048   # one bin of each histogram
    assert abs(float(hi) - ours[1]) <= 1.01 * step and abs(float(lo) - ours[0]) <= 1.01 * step


def _shards(seed):
    """Shards of batches whose ranges differ by orders of magnitude (histograms of different W), with an
    all-zero batch and a negative-only one, so merging must re-bin."""
    rng = np.random.default_rng(seed)
    scales = [1.0, 7.0, 0.01, 300.0, 0.5]
    batches = [(rng.standard_normal((int(rng.integers(1, 40)), 6)) * scales[i % 5]).astype(np.float32)
               for i in range(12)]
    batches.insert(3, np.zeros((5, 6), np.float32))
    batches.insert(7, -np.abs(batches[7]))
    cuts = sorted(rng.choice(np.arange(1, len(batches)), size=4, replace=False))
    return [batches[a:b] for a, b in zip([0] + cuts, cuts + [len(batches)])]


def _merge_tree(obs, rng):
    """Merge a list of observers in order, pairing neighbours at random (any tree keeps the order)."""
    obs = list(obs)
    while len(obs) > 1:
        i = int(rng.integers(0, len(obs) - 1))
        obs[i:i + 2] = [obs[i].merge(obs[i + 1])]
    return obs[0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method,options", [
    ("minmax", {}), ("moving_average", {"averaging_constant": 0.3}), ("per_channel_minmax", {"axis": 1}),
    ("percentile", {}), ("percentile", {"symmetric": False, "percentile": 99.0}), ("entropy", {"bins": 1001}),
    ("entropy", {}), ("mse", {}),
])
def test_merged_shards_equal_one_pass(method, options, seed):
    import pickle
    shards = _shards(seed)
    one = calibrate.make(method, **options)
    for b in (b for s in shards for b in s):
        one.update(b)
    parts = []
    for s in shards:
        o = calibrate.make(method, **options)
        for b in s:
            o.update(b)
        parts.append(pickle.loads(pickle.dumps(o)))   # as Dask moves them between processes
    merged = _merge_tree(parts, np.random.default_rng(seed))
    lo, hi = merged.range()
    want_lo, want_hi = one.range()
    np.testing.assert_array_equal(lo, want_lo)
    np.testing.assert_array_equal(hi, want_hi)
    a, b = merged.qparams(symmetric=False), one.qparams(symmetric=False)
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.zero_point, b.zero_point)
    if hasattr(one, "hist"):
        np.testing.assert_array_equal(merged.hist.pos, one.hist.pos)
        np.testing.assert_array_equal(merged.hist.neg, one.hist.neg)
        assert merged.hist.width == one.hist.width


def test_merge_leaves_other_unchanged_and_empty_is_identity():
    x = np.array([0.5, -3.0, 9.0], np.float32)
    small = calibrate.make("entropy").update(x / 100)
    big = calibrate.make("entropy").update(x)
    pos = small.hist.pos.copy()
    big.merge(small)
    np.testing.assert_array_equal(small.hist.pos, pos)
    assert small.hist.width == 0.125 and big.hist.width == 16.0
    for m in calibrate.METHODS:
        seen = calibrate.make(m).update(np.ones((2, 3), np.float32))
        r = seen.range()
        np.testing.assert_array_equal(seen.merge(calibrate.make(m)).range(), r)
        np.testing.assert_array_equal(calibrate.make(m).merge(seen).range(), r)


def test_moving_average_merge_is_in_order():
    bs = [np.array([-1.0, 1.0], np.float32), np.array([-3.0, 2.0], np.float32), np.array([-0.5, 8.0], np.float32)]
    a = calibrate.make("moving_average", averaging_constant=0.5).update(bs[0]).update(bs[1])
    b = calibrate.make("moving_average", averaging_constant=0.5).update(bs[2])
    lo, hi = a.merge(b).range()
    assert (lo, hi) == (-2.0 + 0.5 * (-0.5 + 2.0), 1.5 + 0.5 * (8.0 - 1.5))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: calibrate.make("minmax").merge(calibrate.make("entropy")), TypeError, "'entropy' into a 'minmax'"),
    (lambda: calibrate.make("minmax").merge((0.0, 1.0)), TypeError, "tuple"),
    (lambda: calibrate.make("entropy").merge(calibrate.make("entropy", bins=1024)), ValueError, "same options"),
    (lambda: calibrate.make("percentile", percentile=99.0).merge(calibrate.make("percentile")), ValueError,
     "percentile"),
    (lambda: calibrate.make("mse").update(np.ones((2, 3))).merge(calibrate.make("mse").update(np.ones((2, 4)))),
     ValueError, "shape"),
    (lambda: calibrate.make("per_channel_minmax").update(np.ones((2, 3))).merge(
        calibrate.make("per_channel_minmax").update(np.ones((3, 3)))), ValueError, "channel axis"),
])
def test_bad_merge(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
