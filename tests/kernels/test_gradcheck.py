"""Central finite differences in float64 (scikit-learn's test_gradient habit) for every
activation, every loss and a whole MLP's backward pass through the CPU kernels.

eps = 1e-6: the central difference has truncation error O(eps^2 f''') ~ 1e-12 and round-off
O(1e-16 / eps) ~ 1e-10 for O(1) values, so agreement to rtol/atol 1e-6 is a real check while
leaving two orders of margin. Inputs stay away from kinks (|pre| > 0.05 for ReLU-like
activations, margins away from 0 for hinge/perceptron), where the derivative is one-sided."""
import numpy as np
import pytest
from helpers import empty

from fastnn.kernels import codes
from fastnn.kernels import cpu
from fastnn.kernels.layout import layer_views, mlp_layout

EPS = 1e-6
RTOL = ATOL = 1e-6
DIFFERENTIABLE = list(codes.DIFFERENTIABLE)


def numeric_grad(f, x):
    """d f / d x by central differences; f maps the array x (changed in place) to a float."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        fp = f(x)
        flat[i] = old - EPS
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * EPS)
    return g


def away_from_kinks(rng, shape, scale=2.0):
    v = rng.standard_normal(shape) * scale
    return np.where(np.abs(v) < 0.05, 0.05 * np.sign(v) + (v == 0) * 0.05, v)


@pytest.mark.parametrize("act", DIFFERENTIABLE)
def test_activation_derivative(act):
    rng = np.random.default_rng(act)
    pre = away_from_kinks(rng, (3, 7))
    r = rng.standard_normal(pre.shape)  # a random upstream gradient: f = sum(r * h(pre))

    def f(p):
        out = np.empty_like(p)
        cpu.activation_forward(out, p, act, 0.1)
        return float(np.sum(r * out))

    out = np.empty_like(pre)
    cpu.activation_forward(out, pre, act, 0.1)
    analytic = np.zeros_like(pre)
    cpu.activation_backward(analytic, r, pre, out, act, 0.1)
    np.testing.assert_allclose(analytic, numeric_grad(f, pre.copy()), rtol=RTOL, atol=ATOL)


def _loss_inputs(name, rng, n, k):
    z = rng.standard_normal((n, k)) * 2
    if name in ("softmax_cross_entropy", "multiclass_hinge", "multiclass_perceptron"):
        y = rng.integers(0, k, n)
        if name == "multiclass_hinge":
            # a 0.5 grid plus 0.1 j: 1 + z_j - z_y is 0.5 m + 0.1 (j - y) + 1, never within
            # 0.1 of the kink at 0 for K <= 5
            z = np.round(z * 2) / 2 + 0.1 * np.arange(k)
        if name == "multiclass_perceptron":  # distinct scores: a unique argmax
            z = z + np.arange(k) * 1e-2
        return z, y
    if name in ("softmax_cross_entropy_soft", "kl_divergence"):
        t = rng.random((n, k))
        t[0, 0] = 0.0
        return z, t / t.sum(axis=1, keepdims=True)
    if name == "binary_cross_entropy":
        return z, rng.integers(0, 2, (n, k)).astype(float)
    if name in ("hinge", "perceptron"):
        y = rng.choice([-1.0, 1.0], (n, k))
        return away_from_kinks(rng, (n, k)), y  # |y z| >= 0.05; hinge's |1 - y z| below
    return z, rng.standard_normal((n, k))


LOSSES = ["softmax_cross_entropy", "softmax_cross_entropy_soft", "kl_divergence",
          "binary_cross_entropy", "mse", "hinge", "perceptron", "multiclass_hinge",
          "multiclass_perceptron"]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradient(name, weighted):
    rng = np.random.default_rng(len(name))
    n, k = 5, 4
    z, y = _loss_inputs(name, rng, n, k)
    if name == "hinge":  # keep 1 - y z away from 0 too
        z = np.where(np.abs(1 - y * z) < 0.05, z + 0.1, z)
    sw = rng.random(n) if weighted else empty(np.float64)
    fn = getattr(cpu, name)

    def call(dz, zz):
        if name == "softmax_cross_entropy":
            return fn(dz, zz, y, sw, 0.1, True)
        return fn(dz, zz, y, sw, True)

    dz = np.empty_like(z)
    call(dz, z)
    numeric = numeric_grad(lambda zz: call(np.empty_like(zz), zz), z.copy())
    np.testing.assert_allclose(dz, numeric, rtol=RTOL, atol=ATOL)


def mlp_loss_and_grad(params, x, labels, sizes, acts, w_off, b_off):
    """Forward and backward through the kernels; returns (loss, flat gradient)."""
    n_layers = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    grads = np.zeros_like(params)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    n = x.shape[0]
    outs, pres = [x], []
    for l in range(n_layers):
        pre, out = np.empty((n, sizes[l + 1])), np.empty((n, sizes[l + 1]))
        cpu.affine_act_forward(out, pre, outs[-1], ws[l], bs[l], acts[l], 0.1)
        pres.append(pre)
        outs.append(out)
    dout = np.empty_like(outs[-1])
    loss = cpu.softmax_cross_entropy(dout, outs[-1], labels, empty(np.float64), 0.0, True)
    for l in range(n_layers - 1, -1, -1):
        dpre = np.empty_like(dout)
        dx = np.empty((n, sizes[l])) if l else empty(np.float64, 2)
        cpu.affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], 0.1)
        cpu.weight_grad(dws[l], dbs[l], outs[l], dpre)
        dout = dx
    return loss, grads


@pytest.mark.parametrize("acts", [
    [codes.TANH, codes.SIGMOID, codes.IDENTITY],
    [codes.SOFTPLUS, codes.LEAKY_RELU, codes.IDENTITY],
    [codes.RELU, codes.TANH, codes.IDENTITY],
])
def test_mlp_backward(acts):
    rng = np.random.default_rng(0)
    sizes = [5, 7, 4, 3]
    w_off, b_off, p = mlp_layout(sizes, [True, False, True])
    params = rng.standard_normal(p) * 0.7
    x = rng.standard_normal((6, 5))
    labels = rng.integers(0, 3, 6)
    _, analytic = mlp_loss_and_grad(params, x, labels, sizes, acts, w_off, b_off)
    numeric = numeric_grad(
        lambda q: mlp_loss_and_grad(q, x, labels, sizes, acts, w_off, b_off)[0], params.copy())
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL)
