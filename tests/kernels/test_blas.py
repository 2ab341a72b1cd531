"""kernels.blas: the gemm symbols the kernels call. Where NumPy bundles scipy-openblas they are
bound to it; the fallback (a Numba @cfunc over np.dot) must compute the same CBLAS row-major
product for every transpose combination, alpha and beta, since a machine whose NumPy lacks the
bundled BLAS runs every kernel's products through it."""
import ctypes

import numpy as np
import pytest
from helpers import DTYPES, assert_close

from fastnn.kernels import blas


def test_numpy_blas_is_found_on_this_machine():
    # NumPy's PyPI wheels bundle scipy-openblas; a conda NumPy may not, and then the
    # fallback below is what runs
    assert blas.SOURCE in ("numpy", "numba-fallback")
    if blas._numpy_cblas() is not None:
        assert blas.SOURCE == "numpy"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_fallback_gemm_matches_numpy(dtype, trans_a, trans_b):
    rng = np.random.default_rng(int(trans_a) * 2 + int(trans_b))
    m, n, k = 5, 3, 7
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = 0.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + 2.0 * c
    fn = blas._fallback(np.dtype(dtype))
    ct = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    ptr = ctypes.POINTER(ct)
    call = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int64,
                            ctypes.c_int64, ctypes.c_int64, ct, ptr, ctypes.c_int64, ptr,
                            ctypes.c_int64, ct, ptr, ctypes.c_int64)(fn.address)
    flag = {False: blas.NO_TRANS, True: blas.TRANS}
    call(blas.ROW_MAJOR, flag[trans_a], flag[trans_b], m, n, k, 0.5,
         a.ctypes.data_as(ptr), a.shape[1], b.ctypes.data_as(ptr), b.shape[1], 2.0,
         c.ctypes.data_as(ptr), n)
    assert_close(c, want, dtype)
