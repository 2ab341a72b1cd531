"""Run one kernel by name on every backend and compare the results (tinygrad's helper_test_op).

kernels.reference, kernels.cpu and kernels.cuda share names and arguments, so one call
describes a test for all three: each backend gets its own copies of the same NumPy inputs
(kernels.cuda copies host arrays in and the written ones back), then every array argument
after the call (the ones a kernel writes in place, and the ones it must leave alone) and the
return value are compared with the reference's, within a tolerance the caller names with its
reason.

    results = check_backends("minibatch_epoch", args, EPOCH_TOL[dtype])

kernels.cuda runs in Numba's CUDA simulator without a GPU (tests/conftest.py), so keep the
shapes tiny.
"""
import numpy as np

BACKENDS = ("reference", "cpu", "cuda")

# Tolerances (rtol, atol), each with its reason.
# One kernel call: the kernels sum in other orders than the NumPy twins (BLAS blocking,
# tiles, reassociated reductions) and some twins compute in float64; a dot product of up to a
# few hundred terms then differs by a few ulps of its largest term (helpers.tol).
STEP_TOL = {np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)}
# A whole epoch: each step adds the one-call difference, and each update feeds the next
# step's forward; over the <= 10 steps of these tests that grows by about the number of
# steps (measured: < 3e-7 absolute in float32 on O(1) values, < 1e-15 in float64). Adam turns
# a gradient into lr * m / sqrt(v): the step's size does not depend on the gradient's, so
# its differences do not shrink with it either.
EPOCH_TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}


def _module(backend):
    if backend == "cuda":
        from fastnn.kernels import cuda
        return cuda
    from fastnn.kernels import cpu, reference
    return {"reference": reference, "cpu": cpu}[backend]


def run_backends(kernel, args, backends=BACKENDS, kwargs=None):
    """{backend: (return value, [the arguments after the call])}: kernel `kernel` of each
    backend called on its own copies of args (NumPy arrays copied, scalars as they are).
    kwargs: {backend: keyword arguments} for backend-only options (kernels.cuda's fused=)."""
    results = {}
    for backend in backends:
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        out = getattr(_module(backend), kernel)(*copies, **(kwargs or {}).get(backend, {}))
        results[backend] = (out, copies)
    return results


def _assert_close(got, want, tol, what):
    rtol, atol = tol
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


def check_backends(kernel, args, tol, backends=BACKENDS, kwargs=None, ignore=None,
                   names=None):
    """Run `kernel` on every backend (run_backends) and assert that each one's return value
    and every array argument after the call equal the reference's within tol = (rtol, atol).
    ignore: {backend: {argument index: reason}} for outputs a backend documents as scratch
    (kernels.cpu's plain-SGD epoch leaves grads unwritten). names: argument names for the
    messages. Returns the results."""
    results = run_backends(kernel, args, ("reference",) + tuple(
        b for b in backends if b != "reference"), kwargs)
    want_out, want_args = results["reference"]
    for backend, (out, got_args) in results.items():
        if backend == "reference":
            continue
        where = f"{kernel} on {backend} vs reference"
        wants = want_out if isinstance(want_out, tuple) else (want_out,)
        gots = out if isinstance(out, tuple) else (out,)
        assert len(gots) == len(wants), f"{where}: returned {out!r}, expected {want_out!r}"
        for i, (g, w) in enumerate(zip(gots, wants)):
            _assert_close(g, w, tol, f"{where}: return value {i}")
        skip = (ignore or {}).get(backend, {})
        for i, (g, w) in enumerate(zip(got_args, want_args)):
            if isinstance(w, np.ndarray) and i not in skip:
                name = names[i] if names else f"argument {i}"
                assert g.shape == w.shape and g.dtype == w.dtype, f"{where}: {name}"
                _assert_close(g, w, tol, f"{where}: {name}")
    return results
