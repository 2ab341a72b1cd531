"""GEMM for the kernels, through the BLAS NumPy itself uses.

Numba's np.dot calls the BLAS that SciPy ships; NumPy's wheels ship their own, newer OpenBLAS,
which measured 10-35% faster here on fastnn's shapes (batch 128 x 784 x 256 and smaller).
fastnn's kernels call gemm through two symbols, `fastnn_cblas_sgemm` and
`fastnn_cblas_dgemm`, with the CBLAS ILP64 signature (row-major, 64-bit sizes):

    void gemm(int order, int trans_a, int trans_b, int64 m, int64 n, int64 k, T alpha,
              const T *a, int64 lda, const T *b, int64 ldb, T beta, T *c, int64 ldc)

This module binds those names in LLVM's symbol table when fastnn.kernels is imported: to NumPy's
`scipy_cblas_?gemm64_` where NumPy bundles scipy-openblas (Linux, macOS and Windows wheels), or
else to a Numba @cfunc with the same signature that computes the product with np.dot (SciPy's
BLAS). Compiled kernels refer to the symbols by name, so Numba's on-disk cache stays valid
whichever one is bound.
"""
import ctypes

import numpy as np
from llvmlite import binding as ll
from numba import carray, cfunc, njit, types

SGEMM = "fastnn_cblas_sgemm"
DGEMM = "fastnn_cblas_dgemm"
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_NUMPY_SYMBOLS = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_")


def _numpy_cblas():
    """Addresses of NumPy's bundled ILP64 cblas_sgemm/dgemm, or None."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # NumPy < 2
        try:
            from numpy.core import _multiarray_umath as umath
        except ImportError:
            return None
    try:
        lib = ctypes.CDLL(umath.__file__)  # dlsym also searches its dependencies
        return tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                     for name in _NUMPY_SYMBOLS)
    except (OSError, AttributeError):
        return None


def _fallback(dtype):
    """A @cfunc with the CBLAS ILP64 gemm signature, computed with np.dot (SciPy's BLAS)."""
    t = types.float32 if dtype == np.float32 else types.float64
    i32, i64, ptr = types.int32, types.int64, types.CPointer(t)
    sig = types.void(i32, i32, i32, i64, i64, i64, t, ptr, i64, ptr, i64, t, ptr, i64)

    @njit
    def operand(p, trans, rows, cols, ld):
        # op(X) is rows x cols; X itself is stored row-major with leading dimension ld
        if trans == TRANS:
            return np.ascontiguousarray(carray(p, (cols, ld))[:, :rows].T)
        return np.ascontiguousarray(carray(p, (rows, ld))[:, :cols])

    @cfunc(sig)
    def gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        cm = carray(c, (m, ldc))
        prod = np.dot(operand(a, trans_a, m, k, lda), operand(b, trans_b, k, n, ldb))
        for i in range(m):
            for j in range(n):
                cm[i, j] = alpha * prod[i, j] + beta * cm[i, j]

    return gemm


def _bind():
    found = _numpy_cblas()
    if found is not None:
        ll.add_symbol(SGEMM, found[0])
        ll.add_symbol(DGEMM, found[1])
        return "numpy"
    global _FALLBACKS
    _FALLBACKS = (_fallback(np.float32), _fallback(np.float64))  # keep them alive
    ll.add_symbol(SGEMM, _FALLBACKS[0].address)
    ll.add_symbol(DGEMM, _FALLBACKS[1].address)
    return "numba-fallback"


_FALLBACKS = None
SOURCE = _bind()  # "numpy" or "numba-fallback": which BLAS the kernels' gemm runs on
