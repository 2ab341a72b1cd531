"""The fused softmax passes (the "fused softmax passes" sections of kernels.cpu and
kernels.reference): softmax_value_grad and softmax_hessp against their NumPy twins on awkward
shapes (one row, primes, rows not a multiple of the kernel's 4-row blocks, K = 2 and 3, no
intercept, one shape large enough to split the rows across threads), float32 and float64;
in float64 the gradient and the Hessian product against central differences of the kernel's
own loss, and the Hessian product against PyTorch's autograd."""
import numpy as np
import pytest
import torch
from backends import STEP_TOL, check_backends
from helpers import DTYPES, randn

from fastnn.kernels import cpu

CPU = ("reference", "cpu")


def _args(rng, n, d, k, dtype):
    x = randn(rng, (n, d), dtype)
    w = randn(rng, (d + 1, k), dtype, 0.5)
    labels = rng.integers(0, k, n)
    sw = (rng.random(n) * 2).astype(dtype)  # weights in [0, 2): some near 0, none negative
    return x, w, labels, sw


@pytest.mark.parametrize("dtype", DTYPES)
# 1 row; 5 rows (a block of 4 and a short one); primes; 2,003 x 101 x 10 (2e6 multiply-adds:
# two row chunks on numba's threads)
@pytest.mark.parametrize("n,d,k,bias", [(1, 1, 2, 1.0), (5, 3, 3, 0.0), (13, 7, 2, 1.0),
                                        (131, 17, 3, 0.5), (2003, 101, 10, 1.0)])
def test_fused_softmax_passes_match_twins(dtype, n, d, k, bias):
    rng = np.random.default_rng(n + d + k)
    x, w, labels, sw = _args(rng, n, d, k, dtype)
    # float32: the kernels sum up to 2,003 rows in blocks, the twins in float64
    tol = STEP_TOL[dtype] if n < 100 or dtype == np.float64 else (2e-4, 2e-4)
    res = check_backends("softmax_value_grad", [np.empty((d + 1, k), dtype),
                                                np.empty((n, k), dtype), x, w, bias, labels,
                                                sw], tol, backends=CPU)
    p = res["reference"][1][1]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)  # float32: K ulps
    if bias == 0.0:  # no intercept: its gradient row is 0
        np.testing.assert_array_equal(res["cpu"][1][0][d], 0.0)
    v = randn(rng, (d + 1, k), dtype)
    check_backends("softmax_hessp", [np.empty((d + 1, k), dtype), x, p, sw, v, bias], tol,
                   backends=CPU)


def test_fused_softmax_gradient_and_hessp_are_derivatives():
    rng = np.random.default_rng(11)
    n, d, k = 23, 5, 3
    x, w, labels, sw = _args(rng, n, d, k, np.float64)
    grad, p = np.empty((d + 1, k)), np.empty((n, k))
    cpu.softmax_value_grad(grad, p, x, w, 1.0, labels, sw)
    v = rng.standard_normal((d + 1, k))
    hv = np.empty((d + 1, k))
    cpu.softmax_hessp(hv, x, p, sw, v, 1.0)
    eps = 1e-6
    vals, grads = [], []
    for sign in (1, -1):
        g = np.empty((d + 1, k))
        vals.append(cpu.softmax_value_grad(g, np.empty((n, k)), x, w + sign * eps * v, 1.0,
                                           labels, sw))
        grads.append(g)
    # central differences: truncation O(eps²), rounding O(1e-16 / eps) on O(10) values
    np.testing.assert_allclose(np.sum(grad * v), (vals[0] - vals[1]) / (2 * eps), atol=1e-7)
    np.testing.assert_allclose(hv, (grads[0] - grads[1]) / (2 * eps), atol=1e-7)


def test_fused_softmax_hessp_matches_torch_autograd():
    rng = np.random.default_rng(12)
    n, d, k = 17, 4, 3
    x, w, labels, sw = _args(rng, n, d, k, np.float64)
    grad, p, hv = np.empty((d + 1, k)), np.empty((n, k)), np.empty((d + 1, k))
    loss = cpu.softmax_value_grad(grad, p, x, w, 1.0, labels, sw)
    v = rng.standard_normal((d + 1, k))
    cpu.softmax_hessp(hv, x, p, sw, v, 1.0)

    xb = torch.from_numpy(np.hstack([x, np.ones((n, 1))]))

    def f(theta):
        per = torch.nn.functional.cross_entropy(xb @ theta, torch.from_numpy(labels),
                                                reduction="none")
        return torch.sum(torch.from_numpy(sw) * per)

    theta = torch.from_numpy(w)
    value, hvp = torch.autograd.functional.hvp(f, theta, torch.from_numpy(v))
    _, g = torch.autograd.functional.vjp(f, theta)
    # float64 sums of ~20 O(1) terms in other orders
    np.testing.assert_allclose(loss, value.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, g.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, hvp.numpy(), rtol=1e-10, atol=1e-12)
