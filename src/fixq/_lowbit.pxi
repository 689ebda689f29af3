# Low-bit kernels (issue 5): fp16-weight linear and the XOR-popcount GEMM.
from libc.stdint cimport uint16_t, uint64_t


def f16_packed_size(Py_ssize_t n, Py_ssize_t k):
    return fixq_f16_packed_size(n, k)


def f16_pack_raw(const uint16_t[:, ::1] w, uint16_t[::1] packed):
    """w: [n, k] binary16 bits; packed: fixq_f16_packed_size(n, k) elements."""
    cdef size_t n = w.shape[0], k = w.shape[1]
    cdef fixq_status st
    if n == 0 or k == 0 or <size_t>packed.shape[0] != fixq_f16_packed_size(n, k):
        raise ValueError("packed buffer size does not match the weights")
    with nogil:
        st = fixq_f16_pack(&w[0, 0], n, k, &packed[0])
    check_status(st, "f16 pack")


def f16_linear_raw(const float[:, ::1] x, const uint16_t[::1] packed, Py_ssize_t n, const float[::1] bias,
                   float[:, ::1] y):
    """y[m, n] = x[m, k] @ w.T (+ bias) with w packed by f16_pack_raw."""
    cdef size_t m = x.shape[0], k = x.shape[1]
    cdef const float *bp = NULL
    cdef fixq_status st
    if k == 0 or n <= 0 or <size_t>packed.shape[0] != fixq_f16_packed_size(n, k):
        raise ValueError("packed weights do not match x's k and n")
    if <size_t>y.shape[0] != m or y.shape[1] != n:
        raise ValueError("y must have shape (m, n)")
    if bias is not None:
        if bias.shape[0] != n:
            raise ValueError("bias must have length n")
        bp = &bias[0]
    if m == 0:
        return
    with nogil:
        st = fixq_f16_linear(&x[0, 0], m, k, &packed[0], n, bp, &y[0, 0])
    check_status(st, "fp16 linear")


def bgemm_raw(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, Py_ssize_t k, int32_t[:, ::1] y):
    """y[i, j] = k - 2 * popcount(a[i] ^ b[j]) over the first k bits."""
    cdef size_t m = a.shape[0], n = b.shape[0]
    cdef size_t kw = (k + 63) // 64
    cdef fixq_status st
    if k <= 0 or k > 2147483647 or <size_t>a.shape[1] != kw or <size_t>b.shape[1] != kw:
        raise ValueError("a and b must have ceil(k / 64) words per row")
    if <size_t>y.shape[0] != m or <size_t>y.shape[1] != n or n == 0:
        raise ValueError("y must have shape (m, n), n >= 1")
    if m == 0:
        return
    with nogil:
        st = fixq_bgemm(&a[0, 0], m, &b[0, 0], n, k, &y[0, 0])
    check_status(st, "popcount gemm")
