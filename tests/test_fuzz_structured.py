"""A structure-aware fuzzer for quantized archives: from a valid archive of every op, hypothesis edits
step attributes, tensor shapes, dtypes, names and member sizes toward the edges (0, 1, 2**31 +- 1, 2**32,
2**63 +- 1, negative, float, bool, huge).  Every outcome is a run whose C plan equals the numpy steps, or
one line from fixq (``Model.load``, with and without a ``target=``) and from ``fixq inspect``; never a crash (tools/sanitize.sh runs it
under ASan/UBSan), a traceback or another exception.

Budget: FIXQ_FUZZ_EXAMPLES examples per test (default 40, a few seconds); e.g.
``FIXQ_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_structured.py`` for a long run (docs/security.md)."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixq.archive import ArchiveError, load_float_model, read_archive
from fixq.cli import cli
from fixq.engine import Model
from fixq.quantizer import quantize_model

from test_engine import calib_batches, every_op_model, save_float

FUZZ = settings(max_examples=int(os.environ.get("FIXQ_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)
EDGES = [0, 1, 2, 3, -1, 2**31 - 1, 2**31, 2**31 + 1, 2**32, 2**63 - 1, 2**63, 2**63 + 1, 2**64, -(2**63),
         2**16, 2**16 + 1, 2**23 + 1, 1.0, 2.5, True, False, None, "1", [], [1], [1, 2, 3], [2**63, 1], [1.0, 1],
         [True, 1], [0, 0], [-1, 1], [2**32, 2**32], {}]
NAMES = ["t:x", "../../x", "a/b", "", "x" * 129, "x", "c1", "sm", "é", "a b", "ok_name.1-2"]


@pytest.fixture(scope="module", params=[("int8", False), ("uint8", False), ("int8", True)],
                ids=["int8", "uint8", "dynamic"])
def base(request, tmp_path_factory):
    activations, dynamic = request.param
    d = tmp_path_factory.mktemp("structured")
    rng = np.random.default_rng(7)
    w, graph = every_op_model(rng)
    g, _ = load_float_model(save_float(d / "f.npz", w, graph))
    m = quantize_model(g, None if dynamic else calib_batches(rng, (3, 9, 6)), activations=activations,
                       dynamic=dynamic)
    m.save(str(d / "q.npz"))
    meta, arrays = read_archive(str(d / "q.npz"))
    return d, meta, arrays, rng.standard_normal((3, 3, 9, 6)).astype(np.float32)


@st.composite
def edits(draw, meta, arrays):
    meta = json.loads(json.dumps(meta))
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr", "shape", "name", "dtype", "size", "tensor"]))
        steps = meta["steps"]
        s = draw(st.sampled_from(steps))
        if kind == "attr":
            key = draw(st.sampled_from(sorted(set(s) | {"stride", "padding", "dilation", "groups", "kernel", "axis",
                                                        "depthwise", "act", "out_min", "out_max", "op"})))
            s[key] = draw(st.sampled_from(EDGES + [not s.get(key)] + ([s[key]] if key in s else [])))
        elif kind == "shape" and "weight_shape" in s:
            i = draw(st.integers(0, len(s["weight_shape"]) - 1))
            s["weight_shape"][i] = draw(st.sampled_from(EDGES))
        elif kind == "tensor":
            t = draw(st.sampled_from(sorted(meta["tensors"])))
            shape = meta["tensors"][t]
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(EDGES))
            if draw(st.booleans()) and t == meta["input"]:
                meta["input_shape"] = shape
        elif kind == "name":
            new = draw(st.sampled_from(NAMES))
            field = draw(st.sampled_from(["name", "output", "inputs"]))
            if field == "inputs":
                s["inputs"][0] = new
            else:
                s[field] = new
        elif kind in ("dtype", "size"):
            k = draw(st.sampled_from(sorted(k for k in arrays if not k.startswith("__"))))
            v = arrays[k]
            if kind == "dtype":
                with np.errstate(all="ignore"):
                    arrays[k] = v.astype(draw(st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.float16,
                                                               np.float32, np.float64, np.bool_])))
            else:
                n = draw(st.sampled_from([0, 1, v.size - 1, v.size + 1, 2 * v.size]))
                arrays[k] = np.resize(v.reshape(-1), max(n, 0))
    arrays["__meta__"] = np.array(json.dumps(meta))
    arrays["__format__"] = np.array("fixq.qmodel/1")
    return arrays


def _one_line(text):
    return "\n" not in text.strip() and text.strip()


@FUZZ
@given(data=st.data())
def test_structured_archive_edits(base, data):
    d, meta, arrays, x = base
    a = data.draw(edits(meta, arrays))
    path = str(d / "fuzz.npz")
    np.savez(path, **a)
    # the C plan's target forms (gemm_target, eltwise_target, the half-away quantize) run only with a target
    target = None if meta["options"]["dynamic"] else data.draw(st.sampled_from([None, "onnxruntime", "tflite",
                                                                                "tflite-reference", "xnnpack"]))
    try:
        m = Model.load(path, target=target)
    except ArchiveError as e:
        assert _one_line(str(e)) and str(e).startswith(path)
        loaded = False
    else:
        loaded = True
        try:
            y = m.run_all(x)
        except (ValueError, OverflowError) as e:  # a run-time overflow of the int32 accumulator is named
            assert _one_line(str(e))
        else:
            ref = m.run_all(x, engine=False)
            for t in y:
                np.testing.assert_array_equal(y[t], ref[t], err_msg=t)
    r = CliRunner().invoke(cli, ["inspect", path])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == (0 if loaded else 1), r.output
    if not loaded:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fixq: error: "), r.stderr
