"""Edits of single fields of a .tflite file in place, for the tests of fixq's reader (test_tflite.py,
test_fuzz_tflite.py): the field found with the reader's own checked table walk."""
import struct

from fixq.io.tflite_file import _File, _Table

# (table path) -> how to reach a table from the model root: (slot of a vector of tables, ...)
_KINDS = {"version": (0, "I"), "builtin_code": (3, "i"), "deprecated_builtin_code": (0, "b"), "buffer": (2, "I"),
          "opcode_index": (0, "I"), "type": (1, "b")}
_TABLES = {"operator_code": (1,), "tensor": (2, 0), "operator": (2, 3)}


def field_position(content, edit):
    """(position, struct kind) of the field named by `edit`: ("version",), ("operator_code", i, name),
    ("tensor", i, name) or ("operator", i, name) (subgraph 0)."""
    f = _File(memoryview(bytes(content)), "model")
    t = _Table(f, f.get("I", 0, "root"), "model")
    if len(edit) > 1:
        slots = _TABLES[edit[0]]
        for s in slots[:-1]:
            t = t.tables(s, "table")[0]
        t = t.tables(slots[-1], "table")[edit[1]]
    slot, kind = _KINDS[edit[-1]]
    p = t.field(slot)
    if p is None:
        raise LookupError(f"{edit}: the field is not stored (it has its default value)")
    return p, kind


def patch_field(content, edit, value):
    """The bytes of `content` with the field named by `edit` set to `value` (wrapped to the field's width)."""
    out = bytearray(content)
    p, kind = field_position(out, edit)
    size = struct.calcsize(kind)
    struct.pack_into("<" + kind.upper(), out, p, value % 2 ** (8 * size))
    if edit[-1] == "builtin_code":  # readers take max(deprecated_builtin_code, builtin_code)
        try:
            q, _ = field_position(out, edit[:-1] + ("deprecated_builtin_code",))
            struct.pack_into("<B", out, q, min(value % 2**32, 127))
        except LookupError:
            pass
    return bytes(out)
