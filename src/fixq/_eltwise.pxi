# Elementwise add / mul: parameter derivation and the broadcast
# kernel call.  fixq.eltwise normalises the arguments.

_OPS = {"add": FIXQ_OP_ADD, "mul": FIXQ_OP_MUL}


# A lazily planned EltwiseParams plans once the exact kernels have run this many
# outputs with it: about as long as planning takes (0.5 to 15 ms), so parameter
# sets used once on small tensors (dynamic scales) never pay for a plan.
_PLAN_AFTER = 1 << 20

cdef class EltwiseParams:
    """A filled fixq_eltwise: scales, zero points, clamp and the derived
    TFLite multipliers (read-only attributes).  plan=False defers the SIMD plan
    until the kernels have run _PLAN_AFTER outputs with these parameters; it
    is then found once, outside the GIL, into a second block that calls use
    from then on (the first is never written again, so concurrent calls are
    safe)."""
    cdef fixq_eltwise p
    cdef fixq_eltwise planned
    cdef int state  # 0: p is final; 1: lazy, not planned yet; 2: being planned; 3: planned is final
    cdef unsigned long long ran
    cdef bint made  # __init__ has filled p: a second call would rewrite p under running kernels and a plan

    def __init__(self, str op, str rounding, str a_dtype, float a_scale, int32_t a_zero_point,
                 str b_dtype, float b_scale, int32_t b_zero_point, str y_dtype, float y_scale,
                 int32_t y_zero_point, int32_t qmin, int32_t qmax, bint plan=True):
        if self.made:
            raise TypeError("EltwiseParams is filled once: make a new one for other parameters")
        if op not in _OPS:
            raise ValueError(f"op must be one of {list(_OPS)}, got {op!r}")
        if rounding not in _ROUNDING_CODES:
            raise ValueError(f"rounding must be one of {list(_ROUNDING_CODES)}, got {rounding!r}")
        st = fixq__eltwise_setup(&self.p, _OPS[op], _ROUNDING_CODES[rounding], _DTYPE_CODES[a_dtype],
                                 a_scale, a_zero_point, _DTYPE_CODES[b_dtype], b_scale, b_zero_point,
                                 _DTYPE_CODES[y_dtype], y_scale, y_zero_point, qmin, qmax)
        self.state = 0 if plan else 1
        self.ran = 0
        if st == FIXQ_OK and plan:
            fixq__eltwise_plan(&self.p)
        if st == FIXQ_ERR_UNSUPPORTED:
            raise ValueError(self._unrepresentable(op, rounding))
        check_status(st, f"q{op}")
        self.made = True

    def _unrepresentable(self, str op, str rounding):
        sa, sb, sy = <double>self.p.a_scale, <double>self.p.b_scale, <double>self.p.y_scale
        tm = 2.0 * max(sa, sb)
        if op == "add":
            cands = [("the input multiplier for a, a_scale / (2*max(a_scale, b_scale))", sa / tm,
                      self.p.a_multiplier, self.p.a_shift),
                     ("the input multiplier for b, b_scale / (2*max(a_scale, b_scale))", sb / tm,
                      self.p.b_multiplier, self.p.b_shift),
                     ("the output multiplier 2*max(a_scale, b_scale) / (2**20 * out_scale)", tm / (2.0**20 * sy),
                      self.p.y_multiplier, self.p.y_shift)]
        else:
            cands = [("the multiplier a_scale * b_scale / out_scale", sa * sb / sy,
                      self.p.y_multiplier, self.p.y_shift)]
        for what, real, m, s in cands:
            if m == 0:
                return (f"q{op}: {what} = {real:.6g} is below 2**-32 and would flush to zero in "
                        f"fixed point (rounding={rounding!r}); the scale ratio is too extreme for the "
                        f"TFLite formula: use rounding='fp32'")
            if s > 30:
                return (f"q{op}: {what} = {real:.6g} needs a left shift of {s} > 30 in fixed point "
                        f"(rounding={rounding!r}); the scale ratio is too extreme for the TFLite "
                        f"formula: use rounding='fp32'")
        return f"q{op}: a multiplier cannot be represented; use rounding='fp32'"

    @property
    def multipliers(self):
        """{'a': (multiplier, shift), 'b': ..., 'out': ...} as derived (ADD: all three; MUL: 'out')."""
        return {"a": (self.p.a_multiplier, self.p.a_shift), "b": (self.p.b_multiplier, self.p.b_shift),
                "out": (self.p.y_multiplier, self.p.y_shift)}


    cdef const fixq_eltwise *use(self, unsigned long long n):
        """The block for a call of n outputs (with the GIL held)."""
        cdef fixq_eltwise local
        if self.state == 3:
            return &self.planned
        if self.state == 1:
            self.ran += n
            if self.ran >= _PLAN_AFTER:
                self.state = 2  # other threads keep using p meanwhile
                local = self.p
                with nogil:
                    fixq__eltwise_plan(&local)
                self.planned = local
                self.state = 3
                return &self.planned
        return &self.p

    @property
    def plan(self):
        """The SIMD plan (fixq.h, fixq_eltwise.lin_*): ADD and int8 requantize {ra, rb, u, k, t, neg}, MUL
        {alpha, g, gneg, t, bias} (float32 values; the fma takes P + bias); None when absent (or, for
        plan=False, not made yet)."""
        cdef const fixq_eltwise *e = &self.planned if self.state == 3 else &self.p
        if e.lin_k == 0:
            return None
        if e.op == FIXQ_OP_MUL and e.lin_rb >= 0:
            bits = _np.array([e.lin_ra, e.lin_u, e.lin_neg], _np.int32).view(_np.float32)
            return {"alpha": float(bits[0]), "g": float(bits[1]), "gneg": float(bits[2]), "t": e.lin_t,
                    "bias": FIXQ__MUL_BIAS if e.lin_k == 2 else 0}
        return {"ra": e.lin_ra, "rb": e.lin_rb, "u": e.lin_u, "k": e.lin_k, "t": e.lin_t, "neg": e.lin_neg}


def eltwise_nd(EltwiseParams params, const unsigned char[::1] a, const unsigned char[::1] b,
               unsigned char[::1] y, tuple shape, tuple a_strides, tuple b_strides, tuple y_strides):
    """y = op(a, b) over `shape`; a, b, y are flat byte buffers, strides in elements (bytes)."""
    cdef size_t c_shape[16]
    cdef ptrdiff_t c_as[16]
    cdef ptrdiff_t c_bs[16]
    cdef ptrdiff_t c_ys[16]
    cdef Py_ssize_t nd = len(shape), d, ext_a = 0, ext_b = 0, ext_y = 0
    cdef fixq_status st
    cdef unsigned long long count = 1
    cdef const fixq_eltwise *e
    if not 1 <= nd <= 16 or len(a_strides) != nd or len(b_strides) != nd or len(y_strides) != nd:
        raise ValueError("shape and strides must have the same length, 1..16")
    for d in range(nd):
        if shape[d] < 0 or a_strides[d] < 0 or b_strides[d] < 0 or y_strides[d] < 0:
            raise ValueError("negative shape or stride")
        if shape[d] == 0:
            return
        c_shape[d] = shape[d]
        c_as[d] = a_strides[d]
        c_bs[d] = b_strides[d]
        c_ys[d] = y_strides[d]
        count *= <unsigned long long>c_shape[d]
        ext_a += (shape[d] - 1) * a_strides[d]
        ext_b += (shape[d] - 1) * b_strides[d]
        ext_y += (shape[d] - 1) * y_strides[d]
    if ext_a >= a.shape[0] or ext_b >= b.shape[0] or ext_y >= y.shape[0]:
        raise ValueError("strides reach outside a buffer")
    e = params.use(count)
    with nogil:
        st = fixq_eltwise_nd(e, nd, c_shape, &a[0], c_as, &b[0], c_bs, &y[0], c_ys)
    check_status(st, "eltwise")


def requantize_q8_params(str x_dtype, int32_t x_zero_point, str dtype, str rounding, const int32_t[::1] multiplier,
                         const int32_t[::1] shift, const float[::1] scale, const int32_t[::1] zero_point,
                         int32_t qmin, int32_t qmax, bint plan):
    """The EltwiseParams that requantizes int8/uint8 (x - x_zero_point) per tensor to int8/uint8 through
    eltwise_flat(params, x, <an int8 1>, y); plan: also find the SIMD plan (a few microseconds)."""
    cdef EltwiseParams e = EltwiseParams.__new__(EltwiseParams)
    cdef fixq_requant p
    if x_dtype not in ("int8", "uint8") or dtype not in ("int8", "uint8"):
        raise ValueError("requantize_q8_params takes and returns int8/uint8")
    _fill_requant(&p, rounding, multiplier, shift, scale, zero_point, 1, qmin, qmax)
    check_status(fixq__requantize_q8_params(&e.p, _DTYPE_CODES[x_dtype], x_zero_point, _DTYPE_CODES[dtype], &p,
                                            plan), "requantize")
    e.made = True
    return e


def eltwise_flat(EltwiseParams params, a, b, y):
    """y = op(a, b) over C-contiguous buffers of 1-byte elements: a and y of one size, b of that size, of one
    element, or a row that a repeats (the caller checked the dtypes, that y has a's shape and that b's shape
    is a trailing part of it).  False, with nothing done, when a buffer is not C-contiguous (y: or not
    writeable) or when y overlaps a or b without being the same memory: the caller then takes the general
    path, which explains why."""
    cdef Py_buffer va, vb, vy
    cdef size_t shape[2]
    cdef ptrdiff_t sa[2]
    cdef ptrdiff_t sb[2]
    cdef fixq_status st = FIXQ_OK
    cdef char *pa
    cdef char *pb
    cdef char *py
    cdef Py_ssize_t n, nb
    cdef bint ok
    cdef size_t nd = 1
    cdef const fixq_eltwise *e
    try:
        PyObject_GetBuffer(a, &va, PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):  # numpy: not C-contiguous, read-only
        return False
    try:
        PyObject_GetBuffer(b, &vb, PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        PyBuffer_Release(&va)
        return False
    try:
        PyObject_GetBuffer(y, &vy, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
    except (BufferError, ValueError):
        PyBuffer_Release(&va)
        PyBuffer_Release(&vb)
        return False
    pa, pb, py = <char *>va.buf, <char *>vb.buf, <char *>vy.buf
    n, nb = vy.len, vb.len
    ok = (va.itemsize == 1 and vb.itemsize == 1 and vy.itemsize == 1 and va.len == n and nb > 0
          and n % nb == 0 and (pa == py or pa + n <= py or py + n <= pa)
          and ((pb == py and nb == n) or pb + nb <= py or py + n <= pb))
    if ok and n > 0:
        if nb == n or nb == 1:  # one row; b broadcast when it is one element
            shape[0] = n
            sa[0] = 1
            sb[0] = 1 if nb == n else 0
        else:  # rows of nb elements, b the same row for each
            nd = 2
            shape[0], shape[1] = n // nb, nb
            sa[0], sa[1] = nb, 1
            sb[0], sb[1] = 0, 1
        e = params.use(n)
        with nogil:
            st = fixq_eltwise_nd(e, nd, shape, pa, sa, pb, sb, py, sa)
    PyBuffer_Release(&va)
    PyBuffer_Release(&vb)
    PyBuffer_Release(&vy)
    if ok and n > 0:
        check_status(st, "eltwise")
    return ok
