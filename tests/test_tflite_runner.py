"""fixq.io.tflite's prepared runner (tflite_runner, run_tflite): the C plan reading the .tflite model's own input
(int8 bytes, uint8 XOR 0x80, float32 through the kernel set's QUANTIZE) and writing its own outputs (int8, uint8,
float32 by the kernel set's DEQUANTIZE, a flattened map back in TFLite's order) equals the numpy route
(tflite_input, Model.run, tflite_outputs) on every model, kernel set and CPU path, for every input and output
type; and its errors are one line."""
import ast
import copy
import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flatbuffers")

import fixq  # noqa: E402
from fixq.io import tflite as io_tflite  # noqa: E402
from fixq.archive import load_float_model  # noqa: E402
from fixq.cli.demo import bundled  # noqa: E402
from fixq.io.tflite import _engine_io, _numpy_runner, run_tflite, tflite_input, tflite_runner  # noqa: E402

from test_tflite import CASES, DATA, TARGETS  # noqa: E402


def load(name, target, in_dtype=None, out_dtype=None):
    """The imported model, its .tflite signature's input / outputs retyped to in_dtype / out_dtype (the int8
    tensors' scale and zero point kept: uint8 is the same scale with the zero point + 128)."""
    m = fixq.Model.load(os.path.join(DATA, name + ".tflite"), target=target)
    if in_dtype is None and out_dtype is None:
        return m
    io = copy.deepcopy(m.meta["tflite"])
    for d, want in [(io["inputs"][0], in_dtype)] + [(o, out_dtype) for o in io["outputs"]]:
        if want is not None:
            zp = d["zero_point"] - (128 if d["dtype"] == "uint8" else 0)
            d.update(dtype=want, zero_point=zp + (128 if want == "uint8" else 0))
    return fixq.Model(dict(m.meta, tflite=io), m.arrays, target=target)


def sample(m, n, seed):
    io = m.meta["tflite"]["inputs"][0]
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(io["shape"][1:])
    if io["dtype"] == "float32":
        q = rng.integers(-128, 128, shape)
        return ((q - io["zero_point"]) * io["scale"] * rng.uniform(0.8, 1.2, shape)).astype(np.float32)
    info = np.iinfo(io["dtype"])
    return rng.integers(info.min, info.max + 1, shape).astype(io["dtype"])


def check_same(m, x):
    fast = _engine_io(m)
    assert fast is not None
    want = _numpy_runner(m)(x)
    got = fast(x)
    assert len(got) == len(want)
    for y, ref in zip(got, want):
        assert y.dtype == ref.dtype and y.shape == ref.shape
        if y.dtype == np.float32:
            np.testing.assert_array_equal(y.view(np.int32), ref.view(np.int32))  # bit for bit
        else:
            np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("name,target", CASES)
@pytest.mark.parametrize("in_dtype", [None, "int8", "uint8", "float32"])
def test_runner_equals_the_numpy_route(isa, name, target, in_dtype):
    m = load(name, target, in_dtype=in_dtype)
    for n, seed in ((1, 0), (3, 1)):
        check_same(m, sample(m, n, seed))


@pytest.mark.parametrize("name,target", CASES)
@pytest.mark.parametrize("out_dtype", ["int8", "uint8", "float32"])
def test_runner_writes_every_output_type(isa, name, target, out_dtype):
    """float32 outputs of 5, 8, 10, 200 values per sample (uint8_io, mlp, ds_cnn, same_pad's map): the
    optimized DEQUANTIZE's 8-wide head and its tail; uint8 outputs; a flattened map put back in H, W, C."""
    m = load(name, target, out_dtype=out_dtype)
    check_same(m, sample(m, 5, 2))


@pytest.mark.parametrize("target", TARGETS)
def test_float_input_quantize_edges(isa, target):
    """Ties, saturation and infinities through the kernel set's QUANTIZE of a float32 input; NaN refused."""
    m = load("mlp_float_io", target)
    io = m.meta["tflite"]["inputs"][0]
    s = np.float32(io["scale"])
    k = np.arange(-140, 140, dtype=np.float32)
    ties = np.concatenate([(k + np.float32(0.5)) * s, k * s, (k + np.float32(0.4999)) * s,
                           np.array([np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0], np.float32)])
    x = np.resize(ties, (len(ties) // 20 + 1) * 20).reshape(-1, 20).astype(np.float32)
    check_same(m, x)
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_tflite(m, bad)


def test_runner_is_made_once_and_gives_new_arrays():
    m = load("mlp", "xnnpack")
    r = tflite_runner(m)
    assert tflite_runner(m) is r
    x = sample(m, 1, 0)
    a, = r(x)
    b, = run_tflite(m, x)
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, b)


def test_output_plan_is_what_the_runner_reads():
    """Model.output_plan: the C plan and each output's tensor number where Model.run is one plan call (the
    numbered tensors are the numpy steps' outputs); None where numpy runs a part (a dynamic model)."""
    m = load("ds_cnn", "tflite")
    engine, index = m.output_plan()
    x = tflite_input(m, sample(m, 2, 4))
    views, ref = engine.run(x, 1, False, True), m.run_all(x, engine=False)
    assert len(index) == len(m.outputs)
    for k, t in zip(index, m.outputs):
        np.testing.assert_array_equal(views[k].reshape(-1), ref[t].reshape(-1))
    g, _ = load_float_model(bundled("digits_mlp.npz"))
    assert fixq.quantize_model(g, dynamic=True).output_plan() is None


def test_runner_goes_with_its_model():
    m = load("mlp", "xnnpack")
    run_tflite(m, sample(m, 1, 0))
    gone, key = weakref.ref(m), id(m)
    assert key in io_tflite._PLAN_RUNNERS
    del m
    gc.collect()
    assert gone() is None and key not in io_tflite._PLAN_RUNNERS


def test_io_reads_no_private_attribute_of_a_model():
    """The front-ends use Model's public methods (output_plan for the runner), not its internals."""
    m = load("ds_cnn", "tflite")
    private = {k for k in vars(m) if k.startswith("_")} | {k for k in vars(fixq.Model) if k.startswith("_")
                                                           and not k.startswith("__")}
    for path in sorted(Path(fixq.io.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.Attribute) and node.attr in private), \
                f"{path.name}:{node.lineno} reads Model.{node.attr}"


def test_runner_takes_any_array_like():
    m = load("uint8_io", "xnnpack")
    x = sample(m, 4, 3)
    want = run_tflite(m, x)
    for other in (np.asfortranarray(x), x.tolist()):
        got = run_tflite(m, np.asarray(other, np.uint8) if isinstance(other, list) else other)
        for y, ref in zip(got, want):
            np.testing.assert_array_equal(y, ref)
    wide = np.zeros((8,) + x.shape[1:], np.uint8)
    wide[::2] = x
    for y, ref in zip(run_tflite(m, wide[::2]), want):  # a strided view
        np.testing.assert_array_equal(y, ref)
    for y, ref in zip(run_tflite(m, x, threads=2), want):
        np.testing.assert_array_equal(y, ref)
    assert [y.shape[0] for y in run_tflite(m, x[:0])] == [0] * len(want)


@pytest.mark.parametrize("x,threads,err,match", [
    (np.zeros((1, 20), np.float32), 1, TypeError, r"x has dtype float32; the model's input is int8 of shape \[1, 20\]"),
    (np.zeros((1, 21), np.int8), 1, ValueError, r"x has shape \[1, 21\]; the model's input needs \[N, 20\]"),
    (np.zeros(20, np.int8), 1, ValueError, r"x has shape \[20\]"),
    (np.zeros((1, 20), np.int8), 0, ValueError, "threads"),
    (np.zeros((1, 20), np.int8), "2", ValueError, "threads"),
])
def test_runner_errors_are_one_line(x, threads, err, match):
    m = load("mlp", "xnnpack")
    with pytest.raises(err, match=match) as e:
        run_tflite(m, x, threads)
    assert "\n" not in str(e.value)


def test_runner_fast_path_takes_only_what_it_can_read():
    """The runner reads x in place only as a plain C-contiguous ndarray of the input's dtype in native byte
    order; a byte-swapped float32 is refused in one line, a subclass or a negative-strided view is read as
    its values."""
    m = load("mlp_float_io", "xnnpack")
    x = sample(m, 3, 1)
    want = run_tflite(m, x)
    with pytest.raises(TypeError, match="x has dtype >f4"):
        run_tflite(m, x.astype(">f4"))

    class Sub(np.ndarray):
        pass
    for other in (x.view(Sub), x[::-1].copy()[::-1], x[:, ::-1].copy()[:, ::-1]):
        for y, ref in zip(run_tflite(m, other), want):
            assert type(y) is np.ndarray and y.flags.c_contiguous and y.flags.writeable
            np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("name", ["mlp", "ds_cnn"])  # a plan run with the GIL held, one with it released
def test_runner_from_several_threads(name):
    from concurrent.futures import ThreadPoolExecutor
    m = load(name, "xnnpack")
    xs = [sample(m, 1, k) for k in range(8)]
    want = [run_tflite(m, x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: run_tflite(m, x), xs * 8))
    for k, ys in enumerate(got):
        for y, ref in zip(ys, want[k % 8]):
            np.testing.assert_array_equal(y, ref)
