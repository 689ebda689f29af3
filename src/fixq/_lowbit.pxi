# Low-bit kernels: fp16-weight linear and the XOR-popcount GEMM.
from libc.stdint cimport uint16_t, uint64_t


def f16_packed_size(Py_ssize_t n, Py_ssize_t k):
    return fixq_f16_packed_size(n, k)


def bgemm_packed_size(Py_ssize_t rows, Py_ssize_t k):
    return fixq_bgemm_packed_size(rows, k)


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


def bgemm_pack_raw(const unsigned char[:, ::1] bits, Py_ssize_t k, unsigned char[::1] packed):
    """bits: [rows, ceil(k / 8)] sign bits; packed: fixq_bgemm_packed_size(rows, k) bytes."""
    cdef size_t rows = bits.shape[0]
    cdef fixq_status st
    if k <= 0 or k > 2147483647 or bits.shape[1] != (k + 7) // 8:
        raise ValueError("bits must have ceil(k / 8) bytes per row, 1 <= k < 2**31")
    if <size_t>packed.shape[0] != fixq_bgemm_packed_size(rows, k):
        raise ValueError("packed buffer size does not match rows and k")
    if rows == 0:
        return
    with nogil:
        st = fixq_bgemm_pack(&bits[0, 0], rows, k, &packed[0])
    check_status(st, "popcount pack")


def bgemm_raw(const unsigned char[::1] a, Py_ssize_t m, const unsigned char[::1] b, Py_ssize_t n, Py_ssize_t k,
              int32_t[:, ::1] y):
    """y[i, j] = k - 2 * popcount(a[i] ^ b[j]) on operands packed by bgemm_pack_raw."""
    cdef fixq_status st
    if k <= 0 or k > 2147483647 or n <= 0 or m < 0:
        raise ValueError("need 1 <= k < 2**31, n >= 1, m >= 0")
    if <size_t>a.shape[0] != fixq_bgemm_packed_size(m, k) or <size_t>b.shape[0] != fixq_bgemm_packed_size(n, k):
        raise ValueError("packed operands do not match m, n and k")
    if y.shape[0] != m or y.shape[1] != n:
        raise ValueError("y must have shape (m, n)")
    if m == 0:
        return
    with nogil:
        st = fixq_bgemm(&a[0], m, &b[0], n, k, &y[0, 0])
    check_status(st, "popcount gemm")
