# fixq._core._C_API: the capsule C extensions import through
# include/fixq/fixq_capsule.h (import_fixq) and Cython modules through fixq/cfixq.pxd.
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "fixq/fixq_capsule.h":
    ctypedef struct fixq_api:
        pass
    const char *FIXQ_CAPSULE_NAME
    const fixq_api *fixq__capsule_api()

_C_API = PyCapsule_New(<void *>fixq__capsule_api(), FIXQ_CAPSULE_NAME, NULL)
