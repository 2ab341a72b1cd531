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
