"""Shared helpers for the kernel tests: tolerances with their reasons, and data makers."""
import numpy as np

DTYPES = (np.float32, np.float64)


def tol(dtype):
    """(rtol, atol-per-unit-scale) for comparing a kernel with its reference twin.

    float32: the kernel and the twin sum in different orders (BLAS blocking, reassociated
    reductions) and some twins compute in float64; dot products of up to a few hundred terms
    then differ by a few ulps of the largest term, ~1e-6 relative, so 2e-5 leaves margin.
    float64: the same effect at eps = 2.2e-16 stays below 1e-12."""
    return (2e-5, 2e-5) if dtype == np.float32 else (1e-12, 1e-12)


def assert_close(actual, expected, dtype, scale=None):
    rtol, atol = tol(dtype)
    expected = np.asarray(expected)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def randn(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def empty(dtype, ndim=1):
    return np.zeros((0,) * ndim, dtype)


def require_cuda(what, module=False):
    """Skip `what` (a test, or the whole module with module=True) when numba.cuda cannot run:
    no GPU and no NUMBA_ENABLE_CUDASIM (tests/conftest.py sets it where there is no GPU).
    Under CI (CI set) it fails instead: a CUDA backend that CI never runs is not tested."""
    import os

    import pytest
    try:
        from numba import cuda
        usable = cuda.is_available()
        why = "numba.cuda.is_available() is False (no GPU, and NUMBA_ENABLE_CUDASIM is not 1)"
    except Exception as exc:  # numba-cuda missing or broken
        usable, why = False, f"numba.cuda cannot be imported: {exc!r}"
    if usable:
        return
    message = (f"{what} cannot run: {why}. Without a GPU, run pytest with "
               "NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator).")
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=module)
