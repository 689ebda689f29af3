"""The C API's size arguments under hypothesis (the table of fixq._core._C_API, called through ctypes): every
size argument of every entry point drawn from small honest values (that the buffers hold) and from
SIZE_MAX, SIZE_MAX / 2 + 1 (a negative int), 2^32 and pairs whose product wraps (2^32 x 2^32, 2^63 x 2);
a call with any such size returns FIXQ_ERR_INVALID_ARGUMENT before it touches memory (fixq.h, Sizes),
one with only honest sizes returns FIXQ_OK.  tests/c/api_limits.c checks the fixed cases one by one in
child processes; tools/sanitize.sh runs this one under ASan/UBSan.

Budget: FIXQ_FUZZ_EXAMPLES examples per test (default 40; docs/security.md)."""
import ctypes as C
import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixq import _core

FUZZ = settings(max_examples=int(os.environ.get("FIXQ_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)
SIZE_MAX = 2**64 - 1
HUGE = [SIZE_MAX, SIZE_MAX // 2 + 1, 2**63 + 1, SIZE_MAX - 63]
SMALL = [1, 2, 3, 4]
OK, INVALID = 0, 1
INT8, UINT8, INT32 = 0, 1, 3
sz, pd, vp, i32 = C.c_size_t, C.c_ssize_t, C.c_void_p, C.c_int32
st_t = C.c_int


class Requant(C.Structure):
    _fields_ = [("rounding", C.c_int), ("multiplier", vp), ("shift", vp), ("scale", vp), ("zero_point", vp),
                ("qmin", i32), ("qmax", i32)]


FIELDS = [  # fixq_capsule.h fixq_api, in order
    ("abi_version", C.c_uint32), ("size", C.c_uint32),
    ("status_string", C.CFUNCTYPE(C.c_char_p, st_t)), ("selected_isa", vp), ("isa_compiled", vp),
    ("isa_supported", vp), ("isa_name", vp), ("srdhm", vp), ("rounding_divide_by_pot", vp),
    ("quantize_multiplier", vp), ("multiply_by_quantized_multiplier", vp),
    ("requantize_s32", C.CFUNCTYPE(st_t, vp, vp, st_t, sz, sz, sz, C.POINTER(Requant))),
    ("quantize_f32", C.CFUNCTYPE(st_t, vp, vp, st_t, sz, sz, sz, vp, vp, i32, i32)),
    ("dequantize", C.CFUNCTYPE(st_t, vp, st_t, vp, sz, sz, sz, vp, vp)),
    ("packed_b_init", C.CFUNCTYPE(None, vp, sz, sz)),
    ("pack_b", C.CFUNCTYPE(st_t, vp, st_t, pd, pd, vp, sz, vp)),
    ("packed_b_finish", C.CFUNCTYPE(st_t, vp)),
    ("qgemm", C.CFUNCTYPE(st_t, sz, vp, st_t, sz, i32, vp, vp, C.POINTER(Requant), sz, vp, st_t, sz, C.c_int)),
    ("eltwise_init", C.CFUNCTYPE(st_t, vp, st_t, st_t, st_t, C.c_float, i32, st_t, C.c_float, i32, st_t,
                                 C.c_float, i32, i32, i32)),
    ("eltwise_nd", C.CFUNCTYPE(st_t, vp, sz, C.POINTER(sz), vp, C.POINTER(pd), vp, C.POINTER(pd), vp,
                               C.POINTER(pd))),
    ("requantize_q8", C.CFUNCTYPE(st_t, vp, st_t, i32, vp, st_t, sz, C.POINTER(Requant))),
    ("f16_packed_size", C.CFUNCTYPE(sz, sz, sz)),
    ("f16_pack", C.CFUNCTYPE(st_t, vp, sz, sz, vp)),
    ("f16_linear", C.CFUNCTYPE(st_t, vp, sz, sz, vp, sz, vp, vp)),
    ("bgemm_packed_size", C.CFUNCTYPE(sz, sz, sz)),
    ("bgemm_pack", C.CFUNCTYPE(st_t, vp, sz, sz, vp)),
    ("bgemm", C.CFUNCTYPE(st_t, vp, sz, vp, sz, sz, vp)),
]


class Api(C.Structure):
    _fields_ = FIELDS


def _api():
    get = C.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
    name = C.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = C.c_char_p, [C.py_object]
    api = Api.from_address(get(_core._C_API, name(_core._C_API)))
    assert api.size >= C.sizeof(Api), "fixq_api grew fields this test does not know"
    return api


API = _api()
BUF = 1 << 16  # every buffer: far more than 4 x 4 x 4 of any element size


def buf():
    return np.zeros(BUF, np.uint8)


def ptr(a):
    return a.ctypes.data


@st.composite
def sizes(draw, n):
    """n size arguments: all honest; or one past PTRDIFF_MAX (SIZE_MAX, SIZE_MAX / 2 + 1, ...); or two whose
    product passes it (2^32 x 2^32 wraps to 0; 2^62 + 1 x 4).  fixq.h promises a refusal for the last two."""
    out = draw(st.lists(st.sampled_from(SMALL), min_size=n, max_size=n))
    mode = draw(st.sampled_from(["honest", "huge", "pair"] if n > 1 else ["honest", "huge"]))
    if mode == "huge":
        out[draw(st.integers(0, n - 1))] = draw(st.sampled_from(HUGE))
    elif mode == "pair":
        i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        out[i], out[j] = draw(st.sampled_from([(2**32, 2**32), (2**62 + 1, 4), (2**33, 2**31), (4, 2**62 + 1)]))
    return out


def refused(args):
    """True if fixq.h promises a refusal for these sizes (one, or their product, past PTRDIFF_MAX), False if
    all are honest, None if neither (a big but possible object: the call would run on it, so it is not made)."""
    if all(a <= 4 for a in args):
        return False
    return True if math.prod(args) > 2**63 - 1 else None


def call(f, args, *a):
    """f(*a) with size arguments `args`: a refusal or FIXQ_OK as fixq.h promises."""
    want = refused(args)
    if want is None:
        return None
    status = f(*a)
    assert status == (INVALID if want else OK), f"{args}: status {status} ({API.status_string(status)!r})"
    return status


def expect(status, args):
    assert refused(args) is not None
    want = INVALID if refused(args) else OK
    assert status == want, f"{args}: status {status} ({API.status_string(status)!r}), expected {want}"


def requant(channels_ok=True):
    a = [np.full(BUF // 4, v, np.int32) for v in (1 << 30, 0, 0)]
    scale = np.full(BUF // 4, 0.5, np.float32)
    r = Requant(0, ptr(a[0]), ptr(a[1]), ptr(scale), ptr(a[2]), -128, 127)
    return r, (a, scale)


@FUZZ
@given(sizes(3))
def test_requantize_quantize_dequantize(s):
    rows, ch, inner = s
    x, y = buf(), buf()
    r, keep = requant()
    expect(API.requantize_s32(ptr(x), ptr(y), INT8, rows, ch, inner, C.byref(r)), s)
    sc, zp = np.ones(BUF // 4, np.float32), np.zeros(BUF // 4, np.int32)
    expect(API.quantize_f32(ptr(x), ptr(y), INT8, rows, ch, inner, ptr(sc), ptr(zp), -128, 127), s)
    expect(API.dequantize(ptr(x), INT8, ptr(y), rows, ch, inner, ptr(sc), ptr(zp)), s)


@FUZZ
@given(sizes(1))
def test_requantize_q8(s):
    x, y = buf(), buf()
    r, keep = requant()
    r.rounding = 2
    expect(API.requantize_q8(ptr(x), INT8, 0, ptr(y), INT8, s[0], C.byref(r)), s)


@FUZZ
@given(sizes(2), sizes(1))
def test_pack_b_and_qgemm(kn, m_):
    k, n = kn
    pb = buf()  # room for fixq_packed_b
    API.packed_b_init(ptr(pb), k, n)
    head = pb[:32].view(np.uint64)  # k, n, k_padded, n_padded
    if any(v > 4 for v in kn):
        assert head[2] == 0 and head[3] == 0, (kn, head)
    panels, zp, cs, ca, b = buf(), buf(), buf(), buf(), buf()
    off = 32 + 16 + 8  # panels, zero_point, col_sum, col_abs after the scalars
    pb[off:off + 32].view(np.uint64)[:] = [ptr(panels), ptr(zp), ptr(cs), ptr(ca)]
    zps = np.zeros(4, np.int32)
    st_pack = API.pack_b(ptr(b), INT8, n if n <= 4 else 1, 1, ptr(zps), 1, ptr(pb))
    expect(st_pack, kn)
    if st_pack != OK:
        return
    assert API.packed_b_finish(ptr(pb)) == OK
    a, y, bias = buf(), buf(), np.zeros(BUF // 4, np.int32)
    r, keep = requant()
    m = m_[0]
    expect(API.qgemm(m, ptr(a), INT8, k, 0, ptr(pb), ptr(bias), C.byref(r), 1, ptr(y), INT8, n, 1), [m])
    for lda, ldy in ((SIZE_MAX, n), (k, SIZE_MAX), (2**63, n)):
        assert API.qgemm(1, ptr(a), INT8, lda, 0, ptr(pb), ptr(bias), C.byref(r), 1, ptr(y), INT8, ldy, 1) == INVALID


@FUZZ
@given(st.integers(1, 4), st.data())
def test_eltwise_nd(ndim, data):
    p = buf()
    assert API.eltwise_init(ptr(p), 0, 2, INT8, 0.5, 0, INT8, 0.5, 0, INT8, 1.0, 0, -128, 127) == OK
    shape = data.draw(sizes(ndim))
    strides = (pd * ndim)(*[1] * ndim)
    for d in range(ndim - 2, -1, -1):  # contiguous strides of the honest part, 1 where a size is huge
        strides[d] = strides[d + 1] * (shape[d + 1] if shape[d + 1] <= 4 else 1)
    a, b, y = buf(), buf(), buf()
    expect(API.eltwise_nd(ptr(p), ndim, (sz * ndim)(*shape), ptr(a), strides, ptr(b), strides, ptr(y), strides),
           shape)


@FUZZ
@given(sizes(3))
def test_f16_and_bgemm(s):
    m, n, k = s
    w, packed, x, y = buf(), buf(), buf(), buf()
    if refused([n, k]):
        assert API.f16_packed_size(n, k) == 0
    call(API.f16_pack, [n, k], ptr(w), n, k, ptr(packed))
    if API.f16_pack(ptr(w), min(n, 4), min(k, 4), ptr(packed)) == OK:
        call(API.f16_linear, [m], ptr(x), m, min(k, 4), ptr(packed), min(n, 4), 0, ptr(y))
    call(API.bgemm_pack, [m, k], ptr(w), m, k, ptr(packed))
    call(API.bgemm, s, ptr(w), m, ptr(packed), n, k, ptr(y))
