"""Reading ``.tflite`` files: the FlatBuffers runtime (an optional extra, ``fixq[tflite]``) decodes the
scalars, and the readers below walk the tables of TFLite's schema (tensorflow/compiler/mlir/lite/schema/
schema.fbs) that fixq's importer needs, each offset checked against the file before it is followed.
Tensor data are numpy views of the file's bytes (read once), never copies of the whole file.

A damaged or hostile file (truncated, an offset out of range, a buffer shorter than its tensor, an
unknown schema version, a cycle between operators, more than fixq.graph.LIMITS) raises
:class:`TfliteError`, one line."""
import os

import numpy as np

from .. import graph as G

DOCS = "docs/tflite.md"
SCHEMA_VERSION = 3

# TensorType -> numpy dtype (schema.fbs; the types fixq reads)
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
TENSOR_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
                     7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
                     13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 17: "INT4"}

# BuiltinOperator codes of the ops fixq imports, and the names of a few more for error messages
BUILTIN_OPS = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
               6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
               21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE",
               40: "MEAN", 41: "SUB", 42: "DIV", 43: "SQUEEZE", 45: "STRIDED_SLICE", 53: "CAST", 60: "PADV2",
               74: "SUM", 98: "LEAKY_RELU", 114: "QUANTIZE", 117: "HARD_SWISH"}

# fields of builtin option tables: op name -> ((field, slot, kind, default), ...); kinds as in _Table.scalar
_OPTIONS = {
    "CONV_2D": (("padding", 0, "b", 0), ("stride_w", 1, "i", 1), ("stride_h", 2, "i", 1),
                ("activation", 3, "b", 0), ("dilation_w", 4, "i", 1), ("dilation_h", 5, "i", 1)),
    "DEPTHWISE_CONV_2D": (("padding", 0, "b", 0), ("stride_w", 1, "i", 1), ("stride_h", 2, "i", 1),
                          ("depth_multiplier", 3, "i", 0), ("activation", 4, "b", 0), ("dilation_w", 5, "i", 1),
                          ("dilation_h", 6, "i", 1)),
    "AVERAGE_POOL_2D": (("padding", 0, "b", 0), ("stride_w", 1, "i", 1), ("stride_h", 2, "i", 1),
                        ("filter_w", 3, "i", 0), ("filter_h", 4, "i", 0), ("activation", 5, "b", 0)),
    "FULLY_CONNECTED": (("activation", 0, "b", 0), ("weights_format", 1, "b", 0), ("keep_num_dims", 2, "?", False),
                        ("asymmetric_quantize_inputs", 3, "?", False)),
    "SOFTMAX": (("beta", 0, "f", 0.0),),
    "CONCATENATION": (("axis", 0, "i", 0), ("activation", 1, "b", 0)),
    "ADD": (("activation", 0, "b", 0),),
    "SUB": (("activation", 0, "b", 0),),
    "MUL": (("activation", 0, "b", 0),),
    "MEAN": (("keep_dims", 0, "?", False),),
    "LEAKY_RELU": (("alpha", 0, "f", 0.0),),
}
_OPTIONS["MAX_POOL_2D"] = _OPTIONS["AVERAGE_POOL_2D"]
# vector-valued option fields: op name -> ((field, slot), ...)
_OPTION_VECTORS = {"RESHAPE": (("new_shape", 0),), "SQUEEZE": (("squeeze_dims", 0),)}


class TfliteError(ValueError):
    """A .tflite file fixq cannot read or import (one line: what, where, and what to do)."""


def _fb():
    try:
        from flatbuffers import encode, number_types as N
    except ImportError:
        raise TfliteError("reading .tflite models needs the flatbuffers package: pip install 'fixq[tflite]'") from None
    return encode, N


class _Table:
    """One table of a FlatBuffer `buf`, every offset checked before it is followed."""
    __slots__ = ("f", "pos", "what", "vt", "vt_len")

    def __init__(self, f, pos, what):
        self.f, self.pos, self.what = f, pos, what
        vt = pos - f.get("i", pos, what)
        f.check(vt, 4, what + " vtable")
        self.vt, self.vt_len = vt, f.get("H", vt, what)
        if self.vt_len < 4 or self.vt_len % 2:
            f.fail(f"{what}: a vtable of {self.vt_len} bytes; the file is truncated or damaged")
        f.check(vt, self.vt_len, what + " vtable")

    def field(self, slot):
        """The absolute position of field `slot`, or None when the table leaves it out."""
        o = 4 + 2 * slot
        if o >= self.vt_len:
            return None
        rel = self.f.get("H", self.vt + o, self.what)
        return self.pos + rel if rel else None

    def scalar(self, slot, kind, default):
        p = self.field(slot)
        return default if p is None else self.f.get(kind, p, self.what)

    def _target(self, slot, what):
        p = self.field(slot)
        if p is None:
            return None
        return p + self.f.get("I", p, what)

    def table(self, slot, what):
        p = self._target(slot, what)
        return None if p is None else _Table(self.f, p, what)

    def vector(self, slot, what, elem_size):
        """(start, length) of a vector field, its bytes checked, or None."""
        p = self._target(slot, what)
        if p is None:
            return None
        n = self.f.get("I", p, what)
        self.f.check(p + 4, n * elem_size, what)
        return p + 4, n

    def ints(self, slot, what, kind="i"):
        v = self.vector(slot, what, np.dtype("<" + kind).itemsize)
        if v is None:
            return None
        return np.frombuffer(self.f.buf, "<" + kind, v[1], v[0]).tolist()

    def tables(self, slot, what):
        v = self.vector(slot, what, 4)
        if v is None:
            return []
        if v[1] > G.LIMITS["nodes"] * 4:
            self.f.fail(f"{what}: {v[1]} entries, more than {G.LIMITS['nodes'] * 4} (docs/security.md)")
        return [_Table(self.f, v[0] + 4 * i + self.f.get("I", v[0] + 4 * i, what), f"{what} {i}")
                for i in range(v[1])]

    def string(self, slot, what):
        v = self.vector(slot, what, 1)
        return None if v is None else bytes(self.f.buf[v[0]:v[0] + v[1]]).decode("utf-8", "replace")


class _File:
    """The file's bytes and the checked reads of scalars from them."""

    def __init__(self, buf, where):
        self.buf, self.where = buf, where
        self.encode, self.N = _fb()
        self.kinds = {"b": self.N.Int8Flags, "B": self.N.Uint8Flags, "?": self.N.BoolFlags,
                      "H": self.N.Uint16Flags, "h": self.N.Int16Flags, "i": self.N.Int32Flags,
                      "I": self.N.Uint32Flags, "q": self.N.Int64Flags, "Q": self.N.Uint64Flags,
                      "f": self.N.Float32Flags}

    def fail(self, msg):
        raise TfliteError(f"{self.where}: {msg}")

    def check(self, pos, size, what):
        if pos < 0 or size < 0 or pos + size > len(self.buf):
            self.fail(f"{what}: offset {pos} (+{size} bytes) is outside the file's {len(self.buf)} bytes; "
                      "the file is truncated or damaged")

    def get(self, kind, pos, what):
        flags = self.kinds[kind]
        self.check(pos, flags.bytewidth, what)
        return self.encode.Get(flags.packer_type, self.buf, pos)


class Tensor:
    """A tensor of the subgraph: shape, numpy dtype (None for types fixq does not read), name, quantization
    (float32 scales, int64 zero points, quantized dimension) and its constant data (a view) or None."""
    __slots__ = ("index", "shape", "type", "dtype", "name", "scale", "zero_point", "qdim", "data")

    def __repr__(self):
        return f"tensor {self.index} {self.name!r}"


class Operator:
    __slots__ = ("index", "op", "version", "inputs", "outputs", "options")


class TfliteModel:
    """The parts of a .tflite model fixq imports: subgraph 0's tensors, operators in execution order, and its
    inputs and outputs; `description` and the schema version."""

    def __init__(self, tensors, operators, inputs, outputs, version, description):
        self.tensors, self.operators, self.inputs, self.outputs = tensors, operators, inputs, outputs
        self.version, self.description = version, description


def read_bytes(source):
    """The bytes of a model: a path (bounded by LIMITS["archive_bytes"] before it is read) or bytes-like."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        # the model's arrays are views of these bytes: a buffer the caller may change is copied, once
        return (view if view.readonly else memoryview(bytes(view))), "the .tflite bytes"
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise TfliteError(f"{path}: no such file")
    if os.path.getsize(path) > G.LIMITS["archive_bytes"]:
        raise TfliteError(f"{path}: holds more than {G.LIMITS['archive_bytes']} bytes (docs/security.md)")
    with open(path, "rb") as fh:
        return memoryview(fh.read()), path


def _quantization(f, q, t):
    if q is None:
        return None, None, 0
    scale = q.vector(2, f"{t}: quantization scale", 4)
    zp = q.vector(3, f"{t}: quantization zero_point", 8)
    s = None if scale is None else np.frombuffer(f.buf, "<f4", scale[1], scale[0]).astype(np.float32)
    z = None if zp is None else np.frombuffer(f.buf, "<i8", zp[1], zp[0]).astype(np.int64)
    return s, z, q.scalar(6, "i", 0)


def _buffer_data(f, buffers, index, t, nbytes):
    if not 0 <= index < len(buffers):
        f.fail(f"{t}: buffer {index} does not exist ({len(buffers)} buffers)")
    b = buffers[index]
    data = b.vector(0, f"buffer {index}", 1)
    if data is not None and data[1]:
        start, n = data
    else:
        off, n = b.scalar(1, "Q", 0), b.scalar(2, "Q", 0)
        if off <= 1:  # no data (offset 1 is the converter's placeholder while it writes the file)
            return None
        f.check(off, n, f"buffer {index}")
        start = off
    if n != nbytes:
        f.fail(f"{t}: buffer {index} holds {n} bytes; the tensor's shape and type need {nbytes}")
    return start


def read_model(source):
    """A :class:`TfliteModel` from a path or the bytes of a .tflite file."""
    buf, where = read_bytes(source)
    f = _File(buf, where)
    if len(buf) < 8:
        f.fail("is too short to be a .tflite model")
    if bytes(buf[4:8]) != b"TFL3":
        f.fail(f"is not a .tflite model (file identifier {bytes(buf[4:8])!r}, expected b'TFL3')")
    model = _Table(f, f.get("I", 0, "root offset"), "root table")
    version = model.scalar(0, "I", 0)
    if version != SCHEMA_VERSION:
        f.fail(f"schema version {version}; fixq reads version {SCHEMA_VERSION} ({DOCS})")
    codes = []
    for i, oc in enumerate(model.tables(1, "operator code")):
        code = max(oc.scalar(0, "b", 0), oc.scalar(3, "i", 0))
        name = BUILTIN_OPS.get(code, f"builtin op {code}")
        if code == 32:
            name = f"CUSTOM {oc.string(1, 'custom code')!r}"
        codes.append((code, name, oc.scalar(2, "i", 1)))
    subgraphs = model.tables(2, "subgraph")
    if not subgraphs:
        f.fail("holds no subgraph")
    buffers = model.tables(4, "buffer")
    sg = subgraphs[0]
    tensors = []
    for i, tt in enumerate(sg.tables(0, "tensor")):
        t = Tensor()
        t.index = i
        t.name = tt.string(3, f"tensor {i} name") or f"tensor_{i}"
        shape = tt.ints(0, f"tensor {i} shape")
        t.shape = tuple(shape or ())
        if any(d < 0 for d in t.shape) or len(t.shape) > 8:
            f.fail(f"tensor {i} {t.name!r}: shape {list(t.shape)}; fixq reads static shapes of rank <= 8")
        n = int(np.prod(t.shape, dtype=object))
        if n > G.LIMITS["elements"]:
            f.fail(f"tensor {i} {t.name!r}: shape {list(t.shape)}, {n} values, more than {G.LIMITS['elements']} "
                   "(docs/security.md)")
        t.type = tt.scalar(1, "b", 0)
        t.dtype = None if t.type not in TENSOR_TYPES else np.dtype(TENSOR_TYPES[t.type])
        t.scale, t.zero_point, t.qdim = _quantization(f, tt.table(4, f"tensor {i} quantization"), f"tensor {i}")
        t.data = None
        bi = tt.scalar(2, "I", 0)
        if bi and t.dtype is not None:
            start = _buffer_data(f, buffers, bi, f"tensor {i} {t.name!r}", n * t.dtype.itemsize)
            if start is not None:
                t.data = np.frombuffer(buf, t.dtype.newbyteorder("<"), n, start).reshape(t.shape)
        tensors.append(t)

    def indices(tbl, slot, what):
        v = tbl.ints(slot, what) or []
        for k in v:
            if k != -1 and not 0 <= k < len(tensors):
                f.fail(f"{what}: tensor index {k} does not exist ({len(tensors)} tensors)")
        return v

    ops = []
    for i, ot in enumerate(sg.tables(3, "operator")):
        o = Operator()
        o.index = i
        ci = ot.scalar(0, "I", 0)
        if ci >= len(codes):
            f.fail(f"operator {i}: opcode index {ci} does not exist ({len(codes)} operator codes)")
        code, o.op, o.version = codes[ci]
        o.inputs = indices(ot, 1, f"operator {i} ({o.op}) inputs")
        o.outputs = indices(ot, 2, f"operator {i} ({o.op}) outputs")
        opts = ot.table(4, f"operator {i} options")
        o.options = {}
        for name, slot, kind, default in _OPTIONS.get(o.op, ()):
            o.options[name] = default if opts is None else opts.scalar(slot, kind, default)
        for name, slot in _OPTION_VECTORS.get(o.op, ()):
            o.options[name] = None if opts is None else opts.ints(slot, f"operator {i} {name}")
        ops.append(o)
    inputs = indices(sg, 1, "subgraph inputs")
    outputs = indices(sg, 2, "subgraph outputs")
    _check_order(f, tensors, ops, inputs)
    return TfliteModel(tensors, ops, inputs, outputs, version, model.string(3, "description"))


def _check_order(f, tensors, ops, inputs):
    """Each operator reads only tensors that are constants, subgraph inputs or written by an earlier
    operator, and each tensor is written once: a cycle between operators is an error, not a hang."""
    known = set(inputs) | {t.index for t in tensors if t.data is not None}
    written = set()
    for o in ops:
        for k in o.inputs:
            if k != -1 and k not in known:
                f.fail(f"operator {o.index} ({o.op}) reads tensor {k} {tensors[k].name!r} before any operator "
                       "writes it (operators out of order or in a cycle)")
        for k in o.outputs:
            if k in written or k in known:
                f.fail(f"operator {o.index} ({o.op}) writes tensor {k} {tensors[k].name!r}, which is already "
                       "written or constant")
            written.add(k)
            known.add(k)
