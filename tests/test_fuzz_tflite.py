"""A fuzzer for the .tflite reader and importer (fixq.import_tflite, Model.load of a .tflite path, fixq
inspect): from the small converter-made models in tests/data/tflite, hypothesis truncates them, flips and
overwrites bytes, and sets single fields (offsets, shapes' buffers, opcode indices, types, the schema
version) to edge values.  Every outcome is an int8 model that runs, or one line (a ValueError: TfliteError,
ArchiveError, GraphError; at run time also OverflowError: an int32 accumulator that could overflow); never a
crash, a hang or another exception.

Budget: FIXQ_FUZZ_EXAMPLES examples per test (default 40, a few seconds; docs/security.md)."""
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("flatbuffers")

import fixq.graph as G  # noqa: E402
from fixq.io import import_tflite  # noqa: E402
from fixq.io.tflite import run_tflite  # noqa: E402
from tflite_edit import patch_field  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("FIXQ_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)
DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
MODELS = ("mobilenet_v2", "ds_cnn", "mlp", "uint8_io", "same_pad", "mlp_float_io")
INTS = [0, 1, 2, 3, 4, -1, -2, 2**31 - 1, 2**31, 2**32 - 1, 2**16, 2**16 + 1, 127, 128, 255, 10**6]


def _content(name):
    with open(os.path.join(DATA, name + ".tflite"), "rb") as f:
        return f.read()


CONTENTS = {n: _content(n) for n in MODELS}


def outcome(content):
    """Import and, when that works and the model is small, run it on one sample: one-line errors only."""
    try:
        m = import_tflite(content)
    except ValueError as e:
        assert "\n" not in str(e) and str(e)
        return "error"
    io = m.meta["tflite"]["inputs"][0]
    if max(np.prod(s[1:]) for s in m.meta["tensors"].values()) > 2**16:
        return "large"
    x = np.zeros([1] + io["shape"][1:], io["dtype"])
    try:
        run_tflite(m, x)
    except (ValueError, OverflowError) as e:  # a model that imports may still be refused at run time, in one line
        assert "\n" not in str(e)
        return "error"
    return "ran"


@FUZZ
@given(st.sampled_from(MODELS), st.data())
def test_truncated(name, data):
    c = CONTENTS[name]
    assert outcome(c[:data.draw(st.integers(0, len(c) - 1))]) in ("error", "ran", "large")


@FUZZ
@given(st.sampled_from(MODELS), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                                         max_size=8))
def test_flipped_bytes(name, edits):
    c = bytearray(CONTENTS[name])
    for pos, v in edits:
        c[pos % len(c)] = v
    assert outcome(bytes(c)) in ("error", "ran", "large")


@FUZZ
@given(st.sampled_from(MODELS), st.integers(0, 2**20), st.sampled_from(INTS))
def test_overwritten_offsets(name, pos, value):
    """A 32-bit word (an offset, a length, an index) set to an edge value."""
    c = bytearray(CONTENTS[name])
    pos = (pos % (len(c) - 4)) & ~3
    struct.pack_into("<I", c, pos, value & 0xFFFFFFFF)
    assert outcome(bytes(c)) in ("error", "ran", "large")


@FUZZ
@given(st.sampled_from(MODELS), st.sampled_from(["buffer", "type", "opcode_index", "builtin_code", "version"]),
       st.integers(0, 40), st.sampled_from(INTS))
def test_fields(name, field, i, value):
    what = {"buffer": "tensor", "type": "tensor", "opcode_index": "operator", "builtin_code": "operator_code",
            "version": None}[field]
    edit = (field,) if what is None else (what, i, field)
    try:
        c = patch_field(CONTENTS[name], edit, value)
    except (LookupError, IndexError):
        return  # no such table in this model, or the field keeps its default (not stored)
    assert outcome(c) in ("error", "ran", "large")


def test_operator_cycle_is_one_line():
    """An operator reading the tensor a later operator writes (a cycle in the graph) is refused."""
    from fixq.io.tflite_file import TfliteError, _File, _Table

    c = bytearray(CONTENTS["mlp"])
    f = _File(memoryview(bytes(c)), "m")
    ops = _Table(f, f.get("I", 0, "root"), "model").tables(2, "s")[0].tables(3, "o")
    start, _ = ops[0].vector(1, "inputs", 4)  # operator 0's input 0 := operator 2's output
    out_start, _ = ops[2].vector(2, "outputs", 4)
    struct.pack_into("<i", c, start, struct.unpack_from("<i", c, out_start)[0])
    with pytest.raises(TfliteError, match="before any operator writes it"):
        import_tflite(bytes(c))


def test_limits_bound_the_declared_shapes(monkeypatch):
    monkeypatch.setitem(G.LIMITS, "elements", 100)
    assert outcome(CONTENTS["mobilenet_v2"]) == "error"
