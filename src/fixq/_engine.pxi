# The static int8 executor: fixq.engine builds a plan of steps once
# (Model._build); Engine holds it as C structs (_csrc/fixq_engine.h), checks it
# with the GIL, and runs a whole batch through it in one call (nogil unless the run is tiny: ENG_NOGIL_WORK).
from libc.stdlib cimport calloc, free

cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cdef extern from "fixq_engine.h" nogil:
    cdef struct fixq_eng_conv

    ctypedef enum fixq_eng_quantize_form:
        FIXQ_ENG_Q_DIV_EVEN
        FIXQ_ENG_Q_RECIP_EVEN
        FIXQ_ENG_Q_DIV_AWAY
        FIXQ_ENG_Q_ZP_DIV_AWAY

    ctypedef enum fixq_eng_op:
        FIXQ_ENG_QUANTIZE
        FIXQ_ENG_GEMM
        FIXQ_ENG_DEPTHWISE
        FIXQ_ENG_ELTWISE
        FIXQ_ENG_CONCAT
        FIXQ_ENG_CLAMP
        FIXQ_ENG_MAXPOOL
        FIXQ_ENG_AVGPOOL
        FIXQ_ENG_GLOBAL_AVGPOOL
        FIXQ_ENG_FLATTEN
        FIXQ_ENG_LUT
        FIXQ_ENG_PAD
        FIXQ_ENG_REQUANTIZE
        FIXQ_ENG_SOFTMAX

    ctypedef enum fixq_eng_target_form:
        FIXQ_ENG_T_RUY_X86
        FIXQ_ENG_T_FLOAT64_AWAY
        FIXQ_ENG_T_ORT_ADD
        FIXQ_ENG_T_ORT_MUL
        FIXQ_ENG_T_XNN_ADD
        FIXQ_ENG_T_XNN_MUL
        FIXQ_ENG_T_TFLITE_SUB
        FIXQ_ENG_T_TFLITE_MEAN
        FIXQ_ENG_T_XNN_MEAN
        FIXQ_ENG_T_TFLITE_REQUANT
        FIXQ_ENG_T_XNN_REQUANT
        FIXQ_ENG_T_TFLITE_SOFTMAX
        FIXQ_ENG_T_TFLITE_ADD
        FIXQ_ENG_T_TFLITE_MUL
        FIXQ_ENG_T_TFLITE_SOFTMAX_LUT

    ctypedef struct fixq_eng_target:
        fixq_eng_target_form form
        const int32_t *multiplier
        const int32_t *shift
        const double *real
        size_t channels
        float a_scale, b_scale, out_scale, scale
        int32_t a_zp, b_zp, out_zp, lo, hi
        int64_t a_mult, b_mult, bias
        int32_t shift_bits
        size_t split, run
        int neon
        float offset
        int32_t diff_min
        const float *table

    ctypedef struct fixq_eng_tensor:
        size_t h, w, c, esize

    ctypedef struct fixq_eng_step:
        fixq_eng_op op
        size_t n_in
        const int32_t *in_ "in"
        int32_t out
        size_t kh, kw, sh, sw, ph, pw, dh, dw
        size_t pb_extra, pr_extra
        int count_valid
        size_t groups
        const fixq_packed_b *const *packed
        const int32_t *bias
        const int8_t *taps
        fixq_requant rq
        size_t rq_channels
        int32_t zp, lo, hi
        float scale
        int form
        const fixq_eltwise *eltwise
        const void *constant
        fixq_eng_tensor constant_dims
        size_t constant_at
        const fixq_eng_target *target
        size_t axis
        const int32_t *in_zp
        const fixq_requant *in_rq
        const uint8_t *table
        int acc_fits
        const fixq_eng_conv *conv

    ctypedef struct fixq_eng_plan:
        fixq_dtype dtype
        size_t n_tensors
        const fixq_eng_tensor *tensors
        size_t n_steps
        const fixq_eng_step *steps

    fixq_status fixq_eng_check(const fixq_eng_plan *plan, size_t *bad_step)
    int fixq_eng_gemm_fits(const fixq_eng_plan *plan, size_t step)
    size_t fixq_eng_scratch_bytes(const fixq_eng_plan *plan, size_t batch)
    fixq_status fixq_eng_run(const fixq_eng_plan *plan, size_t batch, void *const *buffers, void *scratch,
                             int threads, size_t *failed_step)
    ctypedef enum fixq_eng_in_form:
        FIXQ_ENG_IN_FLOAT_NCHW
        FIXQ_ENG_IN_FLOAT_NHWC
        FIXQ_ENG_IN_Q

    ctypedef enum fixq_eng_out_form:
        FIXQ_ENG_OUT_RAW
        FIXQ_ENG_OUT_FLOAT
        FIXQ_ENG_OUT_FLOAT_TFLITE

    ctypedef struct fixq_eng_out:
        int32_t t
        size_t a, b
        int form
        uint8_t flip
        float scale
        int32_t zp

    ctypedef struct fixq_eng_batch:
        size_t n, chunk
        const void *x
        size_t x_sample
        int in_form
        uint8_t in_flip
        const size_t *offsets
        size_t scratch_off
        size_t n_out
        const fixq_eng_out *outs
        char *const *dst
        const size_t *dst_row

    int fixq_eng_workers(const fixq_eng_plan *plan, size_t n, int threads)

    fixq_status fixq_eng_run_batch(const fixq_eng_plan *plan, const fixq_eng_batch *b, char *const *arenas,
                                   int workers, int gemm_threads, size_t *failed_step)

cdef extern from "engine_conv.h" nogil:
    size_t fixq_eng_conv_bytes(const fixq_eng_plan *plan, size_t step)
    const fixq_eng_conv *fixq_eng_conv_pack(const fixq_eng_plan *plan, size_t step, void *mem)

_ENG_OPS = {"quantize": FIXQ_ENG_QUANTIZE, "gemm": FIXQ_ENG_GEMM, "depthwise": FIXQ_ENG_DEPTHWISE,
            "eltwise": FIXQ_ENG_ELTWISE, "concat": FIXQ_ENG_CONCAT, "clamp": FIXQ_ENG_CLAMP,
            "maxpool": FIXQ_ENG_MAXPOOL, "avgpool": FIXQ_ENG_AVGPOOL, "global_avgpool": FIXQ_ENG_GLOBAL_AVGPOOL,
            "flatten": FIXQ_ENG_FLATTEN, "lut": FIXQ_ENG_LUT, "pad": FIXQ_ENG_PAD,
            "requantize": FIXQ_ENG_REQUANTIZE, "softmax": FIXQ_ENG_SOFTMAX}
_TARGET_FORMS = {"ruy-x86": FIXQ_ENG_T_RUY_X86, "float64-away": FIXQ_ENG_T_FLOAT64_AWAY,
                 "onnxruntime-add": FIXQ_ENG_T_ORT_ADD, "onnxruntime-mul": FIXQ_ENG_T_ORT_MUL,
                 "xnnpack-add": FIXQ_ENG_T_XNN_ADD, "xnnpack-mul": FIXQ_ENG_T_XNN_MUL, "tflite-sub": FIXQ_ENG_T_TFLITE_SUB,
                 "tflite-add": FIXQ_ENG_T_TFLITE_ADD, "tflite-mul": FIXQ_ENG_T_TFLITE_MUL,
                 "tflite-mean": FIXQ_ENG_T_TFLITE_MEAN, "xnnpack-mean": FIXQ_ENG_T_XNN_MEAN,
                 "tflite-requantize": FIXQ_ENG_T_TFLITE_REQUANT, "xnnpack-requantize": FIXQ_ENG_T_XNN_REQUANT,
                 "tflite-softmax": FIXQ_ENG_T_TFLITE_SOFTMAX, "tflite-softmax-lut": FIXQ_ENG_T_TFLITE_SOFTMAX_LUT}
_QUANTIZE_FORMS = {"div-even": FIXQ_ENG_Q_DIV_EVEN, "recip-even": FIXQ_ENG_Q_RECIP_EVEN,
                   "div-away": FIXQ_ENG_Q_DIV_AWAY, "zp-div-away": FIXQ_ENG_Q_ZP_DIV_AWAY}
_IN_FORMS = {"float-nchw": FIXQ_ENG_IN_FLOAT_NCHW, "float-nhwc": FIXQ_ENG_IN_FLOAT_NHWC, "q": FIXQ_ENG_IN_Q}
_OUT_FORMS = {"raw": FIXQ_ENG_OUT_RAW, "float": FIXQ_ENG_OUT_FLOAT, "float-tflite": FIXQ_ENG_OUT_FLOAT_TFLITE}
_ENG_CHUNK_BYTES = 1 << 18  # activations + scratch of one chunk of samples: stays in L2
# A run of less work (multiply-adds + values written, over all steps) keeps the GIL: releasing and taking it
# back costs ~400 instructions and a contended hand-over far more, while such a run takes a microsecond or
# two (numpy keeps the GIL below a size in the same way, NPY_BEGIN_THREADS_THRESHOLDED)
DEF ENG_NOGIL_WORK = 1 << 15
DEF ENG_ALIGN = 64
DEF ENG_MAX_OUTPUTS = 64
DEF ENG_MAX_TENSORS = 1024
DEF ENG_MAX_WORKERS = 256
DEF ENG_MAX_SAMPLE_BYTES = 1 << 40  # so that chunk * workers * sample bytes stays far below 2**63


cdef const void *_ptr(object arr, type want) except NULL:
    """Start of a C-contiguous numpy array of dtype `want` (the caller keeps `arr`)."""
    if type(arr) is not _np.ndarray or arr.dtype.type is not want or not arr.flags.c_contiguous or arr.size == 0:
        raise ValueError(f"engine plan: expected a non-empty contiguous {want.__name__} array")
    return <const void *><size_t>arr.ctypes.data


cdef bint _is_c_f32(object x) noexcept:
    """x is an ndarray (not a subclass) of native float32, C-contiguous, of rank 1 or more."""
    if type(x) is not _cnp.ndarray:
        return False
    a = <_cnp.ndarray>x
    return (_cnp.PyArray_TYPE(a) == _cnp.NPY_FLOAT and _cnp.PyArray_NDIM(a) > 0 and _cnp.PyArray_IS_C_CONTIGUOUS(a)
            and _cnp.PyArray_ISNOTSWAPPED(a))


cdef int _fill_rq(fixq_requant *p, dict rq) except -1:
    """rq: {"rounding", "multiplier", "shift" | "scale", "zero_point" (arrays of one length), "qmin", "qmax"}."""
    p.rounding = _ROUNDING_CODES[rq["rounding"]]
    p.multiplier = p.shift = NULL
    p.scale = NULL
    if p.rounding == FIXQ_ROUND_FP32:
        p.scale = <const float *>_ptr(rq["scale"], _np.float32)
    else:
        p.multiplier = <const int32_t *>_ptr(rq["multiplier"], _np.int32)
        p.shift = <const int32_t *>_ptr(rq["shift"], _np.int32)
    p.zero_point = <const int32_t *>_ptr(rq["zero_point"], _np.int32)
    p.qmin = rq["qmin"]
    p.qmax = rq["qmax"]
    n = rq["zero_point"].size
    if (rq["scale"] if p.rounding == FIXQ_ROUND_FP32 else rq["multiplier"]).size != n:
        raise ValueError("engine plan: requantization arrays of different lengths")
    if p.rounding != FIXQ_ROUND_FP32 and rq["shift"].size != n:
        raise ValueError("engine plan: requantization arrays of different lengths")
    return 0


cdef class Engine:
    """A checked C plan of a static int8 model (built by fixq.engine.Model; not public).

    tensors: [(h, w, c, esize)] (tensor 0: the float input, NCHW); steps: dicts (see
    fixq.engine.plan.engine_step); outputs: [(tensor, four_d, scale, zero_point, external shape)]."""
    cdef fixq_eng_plan plan
    cdef fixq_eng_tensor *tensors
    cdef fixq_eng_step *steps
    cdef void **mem_blocks
    cdef Py_ssize_t n_blocks
    cdef list keep, names, errors
    cdef object dtype
    cdef size_t in_elems, sample_bytes, chunk_max, work
    cdef size_t *offsets
    cdef char *arena
    cdef size_t arena_batch, arena_workers, n_out
    cdef bint busy  # a run uses the cached arena (runs from other threads then take their own)
    cdef size_t stride_chunk, stride_bytes, stride_scratch  # _worker_bytes and the scratch offset of one chunk size
    cdef fixq_eng_out outs[ENG_MAX_OUTPUTS]  # Model.run's float outputs (external layout)
    cdef int out_rawable[ENG_MAX_OUTPUTS]
    cdef int out_ndim[ENG_MAX_OUTPUTS]
    cdef _cnp.npy_intp out_dims[ENG_MAX_OUTPUTS][8]

    def __cinit__(self):
        self.tensors = NULL
        self.steps = NULL
        self.mem_blocks = NULL
        self.n_blocks = 0
        self.offsets = NULL
        self.arena = NULL
        self.arena_batch = self.arena_workers = 0
        self.stride_chunk = 0
        self.busy = False

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n_blocks):
            free(self.mem_blocks[i])
        free(self.mem_blocks)
        free(self.tensors)
        free(self.steps)
        free(self.offsets)
        free(self.arena)

    cdef void *_alloc(self, size_t nbytes) except NULL:
        cdef void *p = calloc(nbytes if nbytes else 1, 1)
        if p == NULL:
            raise MemoryError("engine plan: out of memory")
        self.mem_blocks[self.n_blocks] = p
        self.n_blocks += 1
        return p

    cdef const fixq_eng_target *_target(self, dict d) except NULL:
        """A runtime's arithmetic (fixq_engine.h fixq_eng_target) from its dict; its arrays kept by the
        step's dict."""
        cdef fixq_eng_target *t = <fixq_eng_target *>self._alloc(sizeof(fixq_eng_target))
        t.form = _TARGET_FORMS[d["form"]]
        if "multiplier" in d:
            t.multiplier = <const int32_t *>_ptr(d["multiplier"], _np.int32)
            t.shift = <const int32_t *>_ptr(d["shift"], _np.int32)
            t.channels = d["multiplier"].size
            if d["shift"].size != t.channels:
                raise ValueError("engine plan: one multiplier and shift per channel")
        if "real" in d:
            t.real = <const double *>_ptr(d["real"], _np.float64)
            t.channels = d["real"].size
        t.a_scale, t.b_scale, t.out_scale = d.get("a_scale", 1.0), d.get("b_scale", 1.0), d.get("out_scale", 1.0)
        t.scale = d.get("scale", 1.0)
        t.a_zp, t.b_zp, t.out_zp = d.get("a_zp", 0), d.get("b_zp", 0), d["out_zp"]
        t.lo, t.hi = d["lo"], d["hi"]
        t.a_mult, t.b_mult, t.bias = d.get("a_mult", 0), d.get("b_mult", 0), d.get("bias", 0)
        t.shift_bits = d.get("shift_bits", 0)
        t.split, t.run, t.neon = d.get("split", 0), d.get("run", 0), d.get("neon", 0)
        t.offset = d.get("offset", 0.0)
        t.diff_min = d.get("diff_min", 0)
        if "table" in d:
            if d["table"].size != 256:
                raise ValueError("engine plan: a softmax table has 256 entries")
            t.table = <const float *>_ptr(d["table"], _np.float32)
        return t

    def __init__(self, str dtype, list tensors, list steps, list outputs):
        cdef Py_ssize_t i, j, nt = len(tensors), ns = len(steps)
        cdef fixq_eng_step *s
        cdef const fixq_packed_b **pk
        cdef int32_t *ins
        cdef fixq_requant *rqs
        cdef size_t bad = 0
        cdef fixq_status st
        self.dtype = _np.dtype(dtype)
        self.keep = []
        self.names = []
        self.errors = []
        self.mem_blocks = <void **>calloc(5 * ns + 1, sizeof(void *))
        self.tensors = <fixq_eng_tensor *>calloc(nt if nt else 1, sizeof(fixq_eng_tensor))
        self.steps = <fixq_eng_step *>calloc(ns if ns else 1, sizeof(fixq_eng_step))
        self.offsets = <size_t *>calloc(nt if nt else 1, sizeof(size_t))
        if self.mem_blocks == NULL or self.tensors == NULL or self.steps == NULL or self.offsets == NULL:
            raise MemoryError("engine plan: out of memory")
        for i, (h, w, c, es) in enumerate(tensors):
            self.tensors[i].h, self.tensors[i].w, self.tensors[i].c, self.tensors[i].esize = h, w, c, es
        for i, d in enumerate(steps):
            s = &self.steps[i]
            s.op = _ENG_OPS[d["op"]]
            self.names.append(d["name"])
            self.errors.append(d.get("overflow"))
            ins = <int32_t *>self._alloc(len(d["in"]) * sizeof(int32_t))
            for j, t in enumerate(d["in"]):
                ins[j] = t
            s.in_ = ins
            s.n_in = len(d["in"])
            s.out = d["out"]
            s.kh, s.kw = d.get("kernel", (1, 1))
            s.sh, s.sw = d.get("stride", (1, 1))
            s.ph, s.pw = d.get("padding", (0, 0))
            s.pb_extra, s.pr_extra = d.get("padding_extra", (0, 0))
            s.count_valid = d.get("count_valid", False)
            s.dh, s.dw = d.get("dilation", (1, 1))
            s.groups = d.get("groups", 1)
            s.zp, s.lo, s.hi = d.get("zp", 0), d.get("lo", 0), d.get("hi", 0)
            s.scale = d.get("scale", 1.0)
            s.form = _QUANTIZE_FORMS[d.get("form", "div-even")]
            s.axis = d.get("axis", 0)
            if "packed" in d:
                pk = <const fixq_packed_b **>self._alloc(len(d["packed"]) * sizeof(void *))
                for j, pw in enumerate(d["packed"]):
                    pk[j] = &(<PackedWeights?>pw).pb
                s.packed = pk
            if "bias" in d:
                if d["bias"].size != tensors[d["out"]][2]:
                    raise ValueError(f"engine plan: step {d['name']!r}: bias length is not the output channels")
                s.bias = <const int32_t *>_ptr(d["bias"], _np.int32)
            if "taps" in d:
                if d["taps"].size != s.kh * s.kw * tensors[d["out"]][2]:
                    raise ValueError(f"engine plan: step {d['name']!r}: taps do not match the kernel")
                s.taps = <const int8_t *>_ptr(d["taps"], _np.int8)
            if "rq" in d:
                _fill_rq(&s.rq, d["rq"])
                s.rq_channels = d["rq"]["zero_point"].size
            if "table" in d:
                if d["table"].size != 256:
                    raise ValueError(f"engine plan: step {d['name']!r}: a table has 256 entries")
                s.table = <const uint8_t *>_ptr(d["table"], _np.uint8)
            if "eltwise" in d:
                s.eltwise = &(<EltwiseParams?>d["eltwise"]).p
            if "target" in d:
                s.target = self._target(d["target"])
            if "constant" in d:  # one sample [h, w, c] of the dtype's bytes
                if d["constant"].ndim != 3:
                    raise ValueError(f"engine plan: step {d['name']!r}: a constant is [h, w, c]")
                s.constant = _ptr(d["constant"], self.dtype.type)
                s.constant_dims.h, s.constant_dims.w, s.constant_dims.c = d["constant"].shape
                s.constant_dims.esize = 1
                s.constant_at = d["constant_at"]
            if "in_rq" in d:
                if d["in_zp"].size != len(d["in"]) or len(d["in_rq"]) != len(d["in"]):
                    raise ValueError(f"engine plan: step {d['name']!r}: one zero point and requantization per input")
                s.in_zp = <const int32_t *>_ptr(d["in_zp"], _np.int32)
                rqs = <fixq_requant *>self._alloc(len(d["in_rq"]) * sizeof(fixq_requant))
                for j, r in enumerate(d["in_rq"]):
                    if r is not None:
                        _fill_rq(&rqs[j], r)
                s.in_rq = rqs
            self.keep.append(d)
        self.plan.dtype = _DTYPE_CODES[dtype]
        self.plan.n_tensors = nt
        self.plan.tensors = self.tensors
        self.plan.n_steps = ns
        self.plan.steps = self.steps
        st = fixq_eng_check(&self.plan, &bad)
        if st != FIXQ_OK:
            raise ValueError(f"engine plan: step {self.names[bad]!r} is inconsistent")
        for i in range(ns):  # the int32 bound of each GEMM proven once (else every run proves it)
            self.steps[i].acc_fits = fixq_eng_gemm_fits(&self.plan, i)
            conv_bytes = fixq_eng_conv_bytes(&self.plan, i)
            if conv_bytes:  # a convolution whose patches are read where they lie (engine_conv.h)
                self.steps[i].conv = fixq_eng_conv_pack(&self.plan, i, self._alloc(conv_bytes))
        if nt > ENG_MAX_TENSORS:
            raise ValueError(f"engine plan: more than {ENG_MAX_TENSORS} tensors")
        if len(outputs) > ENG_MAX_OUTPUTS:
            raise ValueError(f"engine plan: more than {ENG_MAX_OUTPUTS} outputs")
        self.n_out = len(outputs)
        for i, (t, four_d, sc, zp, shape, rawable) in enumerate(outputs):
            if not 0 < t < nt:
                raise ValueError("engine plan: an output names no tensor")
            hw = self.tensors[t].h * self.tensors[t].w
            self._out(&self.outs[i], t, hw if four_d else 1, self.tensors[t].c if four_d else hw * self.tensors[t].c,
                      "float", 0, sc, zp)
            self.out_rawable[i] = rawable
            if len(shape) >= 8:
                raise ValueError("engine plan: an output of rank over 8")
            self.out_ndim[i] = len(shape) + 1
            for j, d in enumerate(shape):
                self.out_dims[i][j + 1] = d
        off = 0  # a Python int: the sum of the checked tensor sizes cannot wrap
        for i in range(1, nt):  # tensor 0 (the float input) is the caller's
            self.offsets[i] = off
            off += self.tensors[i].h * self.tensors[i].w * self.tensors[i].c
        scratch = fixq_eng_scratch_bytes(&self.plan, 1)
        if off + scratch > ENG_MAX_SAMPLE_BYTES:
            raise MemoryError(f"engine plan: one sample needs {off + scratch} bytes of activations and scratch, more "
                              f"than {ENG_MAX_SAMPLE_BYTES}")
        self.sample_bytes = off + scratch
        self.in_elems = self.tensors[0].h * self.tensors[0].w * self.tensors[0].c
        self.chunk_max = max(1, _ENG_CHUNK_BYTES // max(1, self.sample_bytes))
        work = 0  # per sample (a Python int: cannot wrap)
        for i in range(ns):
            s = &self.steps[i]
            out_elems = self.tensors[s.out].h * self.tensors[s.out].w * self.tensors[s.out].c
            work += out_elems
            if s.op == FIXQ_ENG_GEMM:
                work += out_elems * s.kh * s.kw * (self.tensors[s.in_[0]].c // max(1, s.groups))
            elif s.op == FIXQ_ENG_DEPTHWISE:
                work += out_elems * s.kh * s.kw
        self.work = min(work, ENG_NOGIL_WORK)

    cdef int _out(self, fixq_eng_out *o, t, a, b, str form, flip, scale, zp) except -1:
        """Output descriptor o: tensor t as a x b values (fixq_engine.h fixq_eng_out)."""
        if not 0 < t < self.plan.n_tensors or a * b != self.tensors[t].h * self.tensors[t].w * self.tensors[t].c:
            raise ValueError("engine plan: an output does not match its tensor")
        o.t, o.a, o.b, o.form, o.flip, o.scale, o.zp = t, a, b, _OUT_FORMS[form], flip, scale, zp
        return 0

    cdef size_t _arena_bytes(self, size_t batch):
        cdef size_t i, n = 0, end
        for i in range(1, self.plan.n_tensors):
            end = (self.offsets[i] + self.tensors[i].h * self.tensors[i].w * self.tensors[i].c) * batch
            n = end if end > n else n
        return n

    cdef size_t _worker_bytes(self, size_t chunk):
        """Activations, then scratch, of one worker running chunks of `chunk` samples (a multiple of ENG_ALIGN)."""
        return ((self._arena_bytes(chunk) + ENG_ALIGN - 1) // ENG_ALIGN * ENG_ALIGN
                + (fixq_eng_scratch_bytes(&self.plan, chunk) + ENG_ALIGN - 1) // ENG_ALIGN * ENG_ALIGN)

    cdef int _arena(self, size_t chunk, size_t workers) except -1:
        """The cached memory of `workers` workers running chunks of `chunk` samples."""
        if chunk == self.arena_batch and workers == self.arena_workers and self.arena != NULL:
            return 0
        free(self.arena)
        self.arena = NULL
        self.arena = <char *>aligned_alloc(ENG_ALIGN, workers * self._worker_bytes(chunk))
        if self.arena == NULL:
            raise MemoryError(f"engine: out of memory for {workers} chunks of {chunk} samples")
        self.arena_batch, self.arena_workers = chunk, workers
        return 0

    cdef int _fail(self, fixq_status st, size_t step) except -1:
        if step >= self.plan.n_steps:
            check_status(st, "engine outputs")
        if st == FIXQ_ERR_OVERFLOW and self.errors[step] is not None:
            raise OverflowError(self.errors[step]())
        if st == FIXQ_ERR_NAN:
            check_status(st, "quantize")
        check_status(st, f"step {self.names[step]!r}")
        return 0

    cdef object _run(self, const void *x, size_t n, size_t x_sample, int in_form, uint8_t in_flip,
                     const fixq_eng_out *outs, size_t no, char *const *dst, const size_t *dst_row, int threads,
                     bint keep_all):
        """Runs n samples of x (x_sample bytes each, read in in_form) into the outputs dst; with keep_all in one
        chunk of new memory, returned as (that array, the offset of its aligned start), else None."""
        cdef size_t chunk, i, bad = 0, workers, stride, start = 0
        cdef char *base
        cdef char *arenas[ENG_MAX_WORKERS]
        cdef fixq_eng_batch b
        cdef fixq_status st = FIXQ_OK
        cdef Py_buffer vy
        cdef bint own = False
        buf = None
        workers = 1 if keep_all or threads == 1 else min(<size_t>fixq_eng_workers(&self.plan, n, threads),
                                                         ENG_MAX_WORKERS)
        chunk = n if keep_all else min(self.chunk_max, (n + workers - 1) // workers)
        chunk = chunk if chunk else 1
        workers = min(workers, (n + chunk - 1) // chunk) if n else 1
        if chunk * workers > (<size_t>1 << 62) // self.sample_bytes:
            raise MemoryError(f"engine: {chunk} samples of {self.sample_bytes} bytes of activations and scratch "
                              "do not fit in memory; run a smaller batch")
        if chunk != self.stride_chunk:
            self.stride_bytes = self._worker_bytes(chunk)
            self.stride_scratch = (self._arena_bytes(chunk) + ENG_ALIGN - 1) // ENG_ALIGN * ENG_ALIGN
            self.stride_chunk = chunk
        stride = self.stride_bytes
        try:
            if keep_all or self.busy:  # the views outlive the call / another thread runs in the cached arena
                buf = _np.empty(workers * stride + ENG_ALIGN, _np.uint8)
                base = <char *>_data(buf, &vy, True)
                PyBuffer_Release(&vy)  # buf keeps the memory
                start = (-<size_t>base) % ENG_ALIGN
                base += start
            else:
                self._arena(chunk, workers)
                self.busy = own = True
                base = self.arena
            for i in range(workers):
                arenas[i] = base + i * stride
            b.n, b.chunk, b.x, b.x_sample, b.in_form, b.in_flip = n, chunk, x, x_sample, in_form, in_flip
            b.offsets, b.scratch_off = self.offsets, self.stride_scratch
            b.n_out, b.outs, b.dst, b.dst_row = no, outs, dst, dst_row
            if n and workers == 1 and n * self.work < ENG_NOGIL_WORK:
                st = fixq_eng_run_batch(&self.plan, &b, arenas, 1, threads, &bad)
            elif n:
                with nogil:
                    st = fixq_eng_run_batch(&self.plan, &b, arenas, <int>workers, threads if workers == 1 else 1, &bad)
        finally:
            if own:
                self.busy = False
        if st != FIXQ_OK:
            self._fail(st, bad)
        return (buf, start) if keep_all else None

    def run(self, x, int threads, bint raw, bint keep_all):
        """The outputs (external layout; float32 dequantized unless raw) of float x [N, ...], or with
        keep_all the views of every tensor of the batch, run in one chunk. threads > 1 runs chunks of the
        batch on that many threads at once (each in its own memory, its GEMMs on one thread)."""
        cdef size_t n, i, k, nt = self.plan.n_tensors, no
        cdef char *dst[ENG_MAX_OUTPUTS]
        cdef size_t dst_row[ENG_MAX_OUTPUTS]
        cdef fixq_eng_out outs[ENG_MAX_OUTPUTS]
        cdef _cnp.npy_intp dims[8]
        cdef int raw_type = self.dtype.num
        if not _is_c_f32(x):
            x = _np.ascontiguousarray(x, dtype=_np.float32)
            if not _is_c_f32(x):
                raise ValueError("engine: input size does not match the plan")
        n = <size_t>_cnp.PyArray_DIM(<_cnp.ndarray>x, 0)
        if <size_t>_cnp.PyArray_SIZE(<_cnp.ndarray>x) != n * self.in_elems:
            raise ValueError("engine: input size does not match the plan")
        ys = []
        no = 0 if keep_all else self.n_out
        for k in range(no):
            outs[k] = self.outs[k]
            if raw and self.out_rawable[k]:
                outs[k].form = FIXQ_ENG_OUT_RAW
            dims[0] = <_cnp.npy_intp>n
            for i in range(1, <size_t>self.out_ndim[k]):
                dims[i] = self.out_dims[k][i]
            y = _cnp.PyArray_EMPTY(self.out_ndim[k], dims,
                                   raw_type if outs[k].form == FIXQ_ENG_OUT_RAW else _cnp.NPY_FLOAT, 0)
            ys.append(y)
            dst[k] = <char *>_cnp.PyArray_DATA(<_cnp.ndarray>y)
            dst_row[k] = <size_t>_cnp.PyArray_NBYTES(<_cnp.ndarray>y) // n if n else 0
        kept = self._run(_cnp.PyArray_DATA(<_cnp.ndarray>x), n, self.in_elems * 4, FIXQ_ENG_IN_FLOAT_NCHW, 0, outs, no,
                         dst, dst_row, threads, keep_all)
        if keep_all:
            buf, start = kept
            views = [None]
            for i in range(1, nt):
                size = self.tensors[i].h * self.tensors[i].w * self.tensors[i].c
                v = buf[start + self.offsets[i] * n:start + (self.offsets[i] + size) * n].view(self.dtype)
                views.append(v.reshape(n, self.tensors[i].h, self.tensors[i].w, self.tensors[i].c))
            return views
        return ys


cdef class EngineIO:
    """An Engine run on a model's own input and output types and layouts (built once by fixq.io.tflite's
    runner; not public): x of dtype `in_dtype`, shape [N, *in_tail], C-contiguous, read in `in_form`
    ("q": the quantized input's bytes XOR in_flip; "float-nhwc"; fixq_engine.h fixq_eng_in_form); outputs:
    [(tensor, a, b, form, flip, scale, zero_point, dtype, tail)] (fixq_eng_out). `check(x, threads)` gives
    back (x, threads) fit for the fast path or raises the one-line error; it runs only where x or threads are
    not already so. A call returns new arrays, one per output, made through numpy's C API (no Python call)."""
    cdef Engine engine
    cdef object check
    cdef _cnp.npy_intp in_shape[8]
    cdef int in_ndim, in_typenum
    cdef int in_form
    cdef uint8_t in_flip
    cdef size_t in_bytes, n_out
    cdef fixq_eng_out outs[ENG_MAX_OUTPUTS]
    cdef int out_ndim[ENG_MAX_OUTPUTS]
    cdef int out_typenum[ENG_MAX_OUTPUTS]
    cdef _cnp.npy_intp out_dims[ENG_MAX_OUTPUTS][8]
    cdef size_t out_row[ENG_MAX_OUTPUTS]

    def __init__(self, Engine engine not None, check, str in_form, int in_flip, in_dtype, tuple in_tail, list outputs):
        cdef Py_ssize_t i, j
        if in_form not in ("q", "float-nhwc") or not 0 <= in_flip <= 255 or len(outputs) > ENG_MAX_OUTPUTS:
            raise ValueError("engine io: unknown input form or too many outputs")
        self.engine, self.check, self.in_form, self.in_flip = engine, check, _IN_FORMS[in_form], in_flip
        in_dtype = _np.dtype(in_dtype)
        if len(in_tail) >= 8 or in_dtype.char not in "bBf":
            raise ValueError("engine io: an input of rank 2 to 8 of int8, uint8 or float32")
        self.in_ndim, self.in_typenum = len(in_tail) + 1, in_dtype.num
        for i, d in enumerate(in_tail):
            self.in_shape[i + 1] = d
        if (engine.plan.n_steps == 0 or engine.steps[0].op != FIXQ_ENG_QUANTIZE or
                int(_np.prod(in_tail)) != engine.in_elems or
                in_dtype.itemsize != (1 if in_form == "q" else 4)):
            raise ValueError("engine io: the input does not match the plan's QUANTIZE step")
        self.in_bytes = engine.in_elems * in_dtype.itemsize
        self.n_out = len(outputs)
        for i, (t, a, b, form, flip, sc, zp, dt, tail) in enumerate(outputs):
            engine._out(&self.outs[i], t, a, b, form, flip, sc, zp)
            dt = _np.dtype(dt)
            if (dt.char not in "bBf" or dt.itemsize != (1 if form == "raw" else 4) or int(_np.prod(tail)) != a * b
                    or len(tail) >= 8):
                raise ValueError("engine io: an output's dtype or shape does not match its form")
            self.out_ndim[i], self.out_typenum[i], self.out_row[i] = len(tail) + 1, dt.num, a * b * dt.itemsize
            for j, d in enumerate(tail):
                self.out_dims[i][j + 1] = d

    cdef bint _fits(self, x) noexcept:
        """x is an ndarray (not a subclass) of the input's dtype, native byte order, C-contiguous, of shape
        [N, *in_tail]."""
        cdef int i
        cdef _cnp.npy_intp *dims
        if type(x) is not _cnp.ndarray:  # the type object itself: no lookup of numpy.ndarray
            return False
        a = <_cnp.ndarray>x
        if (_cnp.PyArray_TYPE(a) != self.in_typenum or _cnp.PyArray_NDIM(a) != self.in_ndim or
                not _cnp.PyArray_IS_C_CONTIGUOUS(a) or not _cnp.PyArray_ISNOTSWAPPED(a)):
            return False
        dims = _cnp.PyArray_DIMS(a)
        for i in range(1, self.in_ndim):
            if dims[i] != self.in_shape[i]:
                return False
        return True

    def __call__(self, x, threads=1):
        cdef size_t n, k, i
        cdef char *dst[ENG_MAX_OUTPUTS]
        cdef _cnp.npy_intp dims[8]  # this call's own: the object is shared by every thread calling it
        if type(threads) is not int or not 0 < threads <= 0x7FFFFFFF or not self._fits(x):  # the C core's int
            x, threads = self.check(x, threads)
            if not self._fits(x):
                raise ValueError("engine io: the checked input does not match the plan")
        n = <size_t>_cnp.PyArray_DIM(<_cnp.ndarray>x, 0)
        ys = []
        for k in range(self.n_out):
            dims[0] = <_cnp.npy_intp>n
            for i in range(1, <size_t>self.out_ndim[k]):
                dims[i] = self.out_dims[k][i]
            y = _cnp.PyArray_EMPTY(self.out_ndim[k], dims, self.out_typenum[k], 0)
            ys.append(y)
            dst[k] = <char *>_cnp.PyArray_DATA(<_cnp.ndarray>y)
        self.engine._run(_cnp.PyArray_DATA(<_cnp.ndarray>x), n, self.in_bytes, self.in_form, self.in_flip, self.outs,
                         self.n_out, dst, self.out_row, threads, False)
        return ys
