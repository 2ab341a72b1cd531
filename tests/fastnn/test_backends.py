"""fastnn.cpu_backend and fastnn.cuda_backend: one set of operations, the same results.

Sequential's one fit loop calls only what both backends offer, so the two modules must keep
the same names and signatures (checked here), and compute the same numbers: the GPU backend's
forward, evaluate and gradient are held to the CPU backend's in Numba's CUDA simulator (tiny
shapes, float64). The Trainer's snapshot and divergence contract is checked on the CPU.

Tolerance for CPU vs GPU in float64: the same arithmetic summed in another order (BLAS blocking
vs 16-wide shared-memory tiles, a 32-lane tree for the row losses): a few ulps per dot product
of <= 7 terms, so rtol 1e-12 with atol 1e-13 for values near 0.
"""
import inspect

import numpy as np
import pytest

import fastnn as fn
from fastnn import cpu_backend, cuda_backend
from fastnn.layers import Stack

GPU_TOL = dict(rtol=1e-12, atol=1e-13)


def test_both_backends_offer_the_same_operations():
    for name in ("forward", "evaluate", "gradient"):
        assert (inspect.signature(getattr(cpu_backend, name))
                == inspect.signature(getattr(cuda_backend, name))), name
    cpu_t, gpu_t = cpu_backend.Trainer, cuda_backend.Trainer
    assert inspect.signature(cpu_t.__init__) == inspect.signature(gpu_t.__init__)
    for method in ("epoch", "penalty", "prepare", "evaluate", "train_logits", "gradient_norm", "finite",
                   "save_point", "restore_point", "sync_to_host"):
        assert inspect.signature(getattr(cpu_t, method)) \
            == inspect.signature(getattr(gpu_t, method)), method


def _problem(loss, dtype="float64", n=7, seed=0):
    rng = np.random.default_rng(seed)
    layers = [fn.Dense(4, activation="tanh", kernel_regularizer=0.05), fn.Dense(3)]
    stack = Stack(layers, 5, dtype)
    params = rng.normal(scale=0.5, size=stack.n_params).astype(dtype)
    x = rng.normal(size=(n, 5)).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, 3, n)
    else:
        y = rng.normal(size=(n, 3))
    y, kernel = fn.losses.get(loss).prepare(y, 3, np.dtype(dtype))
    sw = rng.random(n).astype(dtype)
    return stack, params, x, y, sw, kernel


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_cuda_backend_computes_what_the_cpu_backend_computes(loss):
    stack, params, x, y, sw, kernel = _problem(loss)
    np.testing.assert_allclose(cuda_backend.forward(stack, params, x),
                               cpu_backend.forward(stack, params, x), **GPU_TOL)
    for weights in (None, sw):
        got_loss, got_z = cuda_backend.evaluate(stack, params, x, y, weights, kernel)
        want_loss, want_z = cpu_backend.evaluate(stack, params, x, y, weights, kernel)
        np.testing.assert_allclose(got_loss, want_loss, **GPU_TOL)
        np.testing.assert_allclose(got_z, want_z, **GPU_TOL)
        got_loss, got_g = cuda_backend.gradient(stack, params, x, y, weights, kernel)
        want_loss, want_g = cpu_backend.gradient(stack, params, x, y, weights, kernel)
        np.testing.assert_allclose(got_loss, want_loss, **GPU_TOL)
        np.testing.assert_allclose(got_g, want_g, **GPU_TOL)


def test_cpu_gradient_is_the_central_difference_of_evaluate():
    """The backend's gradient, which gradcheck and fit's tol use, against float64 central
    differences of its own evaluate (L2 term included): eps 1e-6 leaves ~1e-9 of truncation
    and roundoff on losses of order 1, hence rtol 1e-6."""
    stack, params, x, y, sw, kernel = _problem("softmax_cross_entropy")
    _, grads = cpu_backend.gradient(stack, params, x, y, sw, kernel)
    fd = np.empty_like(params)
    for i in range(params.size):
        p = params.copy()
        p[i] += 1e-6
        up = cpu_backend.evaluate(stack, p, x, y, sw, kernel)[0]
        p[i] -= 2e-6
        down = cpu_backend.evaluate(stack, p, x, y, sw, kernel)[0]
        fd[i] = (up - down) / 2e-6
    np.testing.assert_allclose(grads, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", [cpu_backend, cuda_backend])
def test_trainer_restores_its_save_point_and_sees_non_finite_state(backend):
    stack, params, x, y, sw, kernel = _problem("softmax_cross_entropy")
    opt = fn.optim.Adam(0.01)
    opt.build(stack.n_params, stack.dtype)
    start = params.copy()
    trainer = backend.Trainer(stack, params, opt, x, y, sw, kernel, 3, False)
    trainer.save_point()
    loss = trainer.epoch(np.arange(7), 0.01)
    assert np.isfinite(loss) and trainer.finite()
    trainer.sync_to_host()
    assert opt.t == 3 and not np.array_equal(params, start)  # ceil(7 / 3) Adam steps
    trainer.restore_point()
    trainer.sync_to_host()
    np.testing.assert_array_equal(params, start)
    np.testing.assert_array_equal(opt.m, 0)
    assert opt.t == 0
    # a NaN in the optimizer state is seen, not only one in the weights
    diverged = backend.Trainer(stack, params, opt, x, y, sw, kernel, 3, False)
    assert diverged.finite()
    opt.v[4] = np.nan
    assert not backend.Trainer(stack, params, opt, x, y, sw, kernel, 3, False).finite()
