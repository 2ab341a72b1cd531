"""Hessian-vector products by the R-operator (kernels' "Hessian-vector products" sections):
the per-layer R-forward / R-backward kernels and loss_rop held to their NumPy twins on every
backend, and the whole-network mlp_hvp held to central differences of the gradient and to
PyTorch's double-backward hvp in float64."""
import numpy as np
import pytest
import torch

from backends import STEP_TOL, check_backends
from helpers import DTYPES, randn

from fastnn.kernels import codes, cpu, reference
from fastnn.kernels.layout import layer_views, mlp_layout

SMOOTH = (codes.IDENTITY, codes.RELU, codes.LEAKY_RELU, codes.SIGMOID, codes.TANH,
          codes.SOFTPLUS)
HVP_LOSSES = (codes.LOSS_SOFTMAX_CE, codes.LOSS_BCE, codes.LOSS_MSE, codes.LOSS_SOFTMAX_CE_SOFT,
              codes.LOSS_KL)
ALPHA = 0.01
# the whole product, float32: mlp_hvp chains ~4 products per layer (forward, R-forward,
# backward, R-backward) whose summation orders differ between backends (BLAS blocks, tiles);
# each adds a few ulps of O(1) values, measured < 2e-6 relative over these 2-3 layer nets
HVP_TOL = {np.float32: (1e-4, 1e-4), np.float64: (1e-11, 1e-11)}


def _problem(rng, sizes, acts, loss, n, dtype, with_sw=True, l2=0.05, bias=True):
    """The arguments of mlp_hvp for a random network and data."""
    sizes = np.array(sizes, np.int64)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = randn(rng, p, dtype, 0.6)
    v = randn(rng, p, dtype)
    x = randn(rng, (n, sizes[0]), dtype)
    k = int(sizes[-1])
    labels, targets = np.zeros(0, np.int64), np.zeros((0, 0), dtype)
    if loss in codes.LABEL_LOSSES:
        labels = rng.integers(0, k, n).astype(np.int64)
    elif loss == codes.LOSS_BCE:
        targets = rng.integers(0, 2, (n, k)).astype(dtype)
    elif loss == codes.LOSS_MSE:
        targets = randn(rng, (n, k), dtype)
    else:  # distributions; soft cross-entropy also gets rows that sum to 2
        targets = rng.dirichlet(np.ones(k), n).astype(dtype)
        if loss == codes.LOSS_SOFTMAX_CE_SOFT:
            targets[0] *= 2
    sw = rng.uniform(0.2, 2.0, n).astype(dtype) if with_sw else np.zeros(0, dtype)
    l2 = np.full(len(sizes) - 1, l2)
    l2[0] = 0.0  # one layer without the L2 term
    smoothing = 0.1 if loss == codes.LOSS_SOFTMAX_CE else 0.0
    return [np.empty(p, dtype), params, v, x, labels, targets, sw, sizes, w_off, b_off,
            np.array(acts, np.int64), ALPHA, l2, loss, smoothing]


# ---------------------------------------------------------------- kernels against their twins

@pytest.mark.parametrize("act", SMOOTH)
def test_second_derivative_is_the_derivative_of_the_first(act):
    """h'' against central differences of h' in float64 (eps 1e-6: truncation ~1e-12 and
    roundoff ~1e-10, so 1e-7 is safe), away from the kinks at 0."""
    pre = np.array([[-3.0, -0.7, -0.2, 0.3, 1.1, 4.0]])

    def d1(p):
        out = np.empty_like(p)
        reference.activation_forward(out, p, act, ALPHA)
        return reference.activation_derivative(p, out, act, ALPHA)

    out = np.empty_like(pre)
    reference.activation_forward(out, pre, act, ALPHA)
    want = (d1(pre + 1e-6) - d1(pre - 1e-6)) / 2e-6
    got = reference.activation_second_derivative(pre, out, act, ALPHA)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)


def _layer_args(rng, n, fan_in, fan_out, act, dtype, first, bias=True):
    x = randn(rng, (n, fan_in), dtype)
    w, vw = randn(rng, (fan_in, fan_out), dtype, 0.5), randn(rng, (fan_in, fan_out), dtype)
    b = randn(rng, fan_out, dtype) if bias else np.zeros(0, dtype)
    vb = randn(rng, fan_out, dtype) if bias else np.zeros(0, dtype)
    pre, out = np.empty((n, fan_out), dtype), np.empty((n, fan_out), dtype)
    cpu.affine_act_forward(out, pre, x, w, b, act, ALPHA)
    rx = np.zeros((0, 0), dtype) if first else randn(rng, (n, fan_in), dtype)
    return x, w, vw, vb, pre, out, rx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,fan_in,fan_out", [(1, 1, 1), (7, 5, 3), (17, 19, 2)])
@pytest.mark.parametrize("act", SMOOTH)
def test_r_forward_and_backward_match_reference(dtype, n, fan_in, fan_out, act):
    """cpu against the twin on awkward shapes (1, primes, not multiples of a tile), every
    smooth activation, first layer (no rx / rdx) and hidden layer, with and without bias;
    cuda on the smallest shapes (the simulator runs a Python thread per GPU thread)."""
    rng = np.random.default_rng(n * 100 + fan_in + act)
    backends = ("cpu", "cuda") if n == 7 else ("cpu",)
    for first in (True, False):
        x, w, vw, vb, pre, out, rx = _layer_args(rng, n, fan_in, fan_out, act, dtype, first,
                                                 bias=not first)
        rpre, rout = np.empty_like(pre), np.empty_like(pre)
        check_backends("affine_act_rforward",
                       [rout, rpre, rx, x, w, vw, vb, pre, out, act, ALPHA], STEP_TOL[dtype],
                       backends=backends)
        reference.affine_act_rforward(rout, rpre, rx, x, w, vw, vb, pre, out, act, ALPHA)
        dout, rdout = randn(rng, pre.shape, dtype), randn(rng, pre.shape, dtype)
        dpre = np.empty_like(pre)
        dx = np.zeros((0, 0), dtype) if first else np.empty((n, fan_in), dtype)
        reference.affine_act_backward(dx, dpre, dout, pre, out, w, act, ALPHA)
        rdx = np.zeros((0, 0), dtype) if first else np.empty((n, fan_in), dtype)
        check_backends("affine_act_rbackward",
                       [rdx, np.empty_like(pre), rdout, dout, dpre, rpre, pre, out, w, vw, act,
                        ALPHA], STEP_TOL[dtype], backends=backends)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", HVP_LOSSES + (codes.LOSS_HINGE,))
def test_loss_rop_matches_reference(dtype, loss):
    rng = np.random.default_rng(loss)
    args = _problem(rng, [2, 5], [codes.IDENTITY], loss, 7, dtype)
    labels, targets, sw = args[4], args[5], args[6]
    if loss == codes.LOSS_HINGE:
        targets = np.where(rng.random((7, 5)) < 0.5, -1.0, 1.0).astype(dtype)
    z, rz = randn(rng, (7, 5), dtype, 3.0), randn(rng, (7, 5), dtype)
    for weights in (sw, np.zeros(0, dtype)):
        check_backends("loss_rop", [np.empty_like(z), z, rz, labels, targets, weights, loss,
                                    args[-1]], STEP_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", HVP_LOSSES)
def test_mlp_hvp_matches_reference(dtype, loss):
    rng = np.random.default_rng(10 + loss)
    acts = [codes.TANH, codes.SOFTPLUS, codes.IDENTITY]
    args = _problem(rng, [3, 5, 7, 4], acts, loss, 11, dtype)
    check_backends("mlp_hvp", args, HVP_TOL[dtype], backends=("cpu",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_hvp_on_cuda_matches_reference(dtype):
    """The device twin on one small two-layer network per dtype (the simulator runs a Python
    thread per GPU thread: ~15 launches of 256 threads), without a bias on the first layer."""
    rng = np.random.default_rng(5)
    args = _problem(rng, [3, 5, 3], [codes.SIGMOID, codes.IDENTITY], codes.LOSS_SOFTMAX_CE, 5,
                    dtype, bias=[False, True])
    check_backends("mlp_hvp", args, HVP_TOL[dtype], backends=("cuda",))


# ---------------------------------------------------------------- the product is H v

def _torch_objective(args):
    """The objective mlp_hvp differentiates twice, written in PyTorch (float64)."""
    (_, _, _, x, labels, targets, sw, sizes, w_off, b_off, acts, alpha, l2, loss,
     smoothing) = args
    fns = {codes.IDENTITY: lambda z: z, codes.RELU: torch.relu,
           codes.LEAKY_RELU: lambda z: torch.nn.functional.leaky_relu(z, alpha),
           codes.SIGMOID: torch.sigmoid, codes.TANH: torch.tanh,
           codes.SOFTPLUS: torch.nn.functional.softplus}
    xt, n = torch.from_numpy(x), x.shape[0]

    def objective(p):
        a, penalty = xt, 0.0
        for l in range(len(sizes) - 1):
            w = p[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].reshape(int(sizes[l]),
                                                                       int(sizes[l + 1]))
            a = a @ w + (p[b_off[l]:b_off[l] + sizes[l + 1]] if b_off[l] >= 0 else 0.0)
            a = fns[int(acts[l])](a)
            penalty = penalty + l2[l] * (w * w).sum()
        if loss == codes.LOSS_SOFTMAX_CE:
            per = torch.nn.functional.cross_entropy(a, torch.from_numpy(labels),
                                                    reduction="none", label_smoothing=smoothing)
        elif loss == codes.LOSS_BCE:
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                a, torch.from_numpy(targets), reduction="none").sum(1)
        elif loss == codes.LOSS_MSE:
            per = 0.5 * ((a - torch.from_numpy(targets)) ** 2).sum(1)
        else:
            t = torch.from_numpy(targets)
            per = -(t * torch.log_softmax(a, 1)).sum(1)
            if loss == codes.LOSS_KL:
                per = per + torch.special.xlogy(t, t).sum(1)
        if sw.size:
            per = per * torch.from_numpy(sw)
        return per.sum() / n + penalty

    return objective


@pytest.mark.parametrize("seed", range(6))
def test_mlp_hvp_matches_torch_double_backward(seed):
    """Random architectures (depth 1-3, widths 1-9, every smooth activation, with and without
    biases and sample weights), every loss, against torch.autograd.functional.hvp in float64:
    both are exact, so they agree to rounding (1e-10 relative to the largest entry: the
    products sum a few hundred float64 terms)."""
    rng = np.random.default_rng(seed)
    for loss in HVP_LOSSES:
        depth = int(rng.integers(1, 4))
        sizes = [int(s) for s in rng.integers(1, 10, depth + 1)]
        if loss in (codes.LOSS_SOFTMAX_CE, codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL):
            sizes[-1] = max(sizes[-1], 2)
        acts = [int(a) for a in rng.choice(SMOOTH, depth)]
        args = _problem(rng, sizes, acts, loss, int(rng.integers(1, 12)), np.float64,
                        with_sw=bool(seed % 2), bias=bool(seed % 3))
        cpu.mlp_hvp(*args)
        _, want = torch.autograd.functional.hvp(_torch_objective(args),
                                                torch.from_numpy(args[1]),
                                                torch.from_numpy(args[2]))
        want = want.numpy()
        np.testing.assert_allclose(args[0], want, rtol=0,
                                   atol=1e-10 * max(1.0, np.abs(want).max()),
                                   err_msg=f"loss {loss}, sizes {sizes}, acts {acts}")


def _gradient(args, params):
    """The objective's gradient at params by the reference twins' backprop (float64)."""
    (_, _, _, x, labels, targets, sw, sizes, w_off, b_off, acts, alpha, l2, loss,
     smoothing) = args
    ws, bs = layer_views(params, sizes, w_off, b_off)
    grads = np.zeros_like(params)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    outs, pres = [x], []
    for l in range(len(sizes) - 1):
        pres.append(np.empty((x.shape[0], sizes[l + 1])))
        outs.append(np.empty_like(pres[-1]))
        reference.affine_act_forward(outs[-1], pres[-1], outs[-2], ws[l], bs[l], acts[l], alpha)
    dout = np.empty_like(outs[-1])
    reference.apply_loss(dout, outs[-1], labels, targets, sw, loss, smoothing)
    for l in range(len(sizes) - 2, -1, -1):
        dx, dpre = np.empty((x.shape[0], sizes[l]) if l else (0, 0)), np.empty_like(dout)
        reference.affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], alpha)
        reference.weight_grad(dws[l], dbs[l], outs[l], dpre)
        dws[l] += 2 * l2[l] * ws[l]
        dout = dx
    return grads


@pytest.mark.parametrize("loss", HVP_LOSSES)
def test_mlp_hvp_is_central_difference_of_gradient(loss):
    """H v = (g(p + eps v) - g(p - eps v)) / (2 eps) + O(eps^2), float64, eps = 1e-5:
    truncation ~1e-10 and roundoff ~1e-16 / 1e-5 = 1e-11 relative, so 1e-7 is safe."""
    rng = np.random.default_rng(20 + loss)
    args = _problem(rng, [4, 6, 3], [codes.SIGMOID, codes.TANH], loss, 9, np.float64)
    cpu.mlp_hvp(*args)
    params, v, eps = args[1], args[2], 1e-5
    fd = (_gradient(args, params + eps * v) - _gradient(args, params - eps * v)) / (2 * eps)
    np.testing.assert_allclose(args[0], fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


def test_mlp_hvp_is_symmetric():
    """v^T (H w) = w^T (H v): H is a symmetric matrix (float64 rounding: 1e-12 relative)."""
    rng = np.random.default_rng(3)
    args = _problem(rng, [3, 8, 8, 4], [codes.SOFTPLUS, codes.SIGMOID, codes.IDENTITY],
                    codes.LOSS_SOFTMAX_CE, 10, np.float64)
    v, w = args[2].copy(), rng.standard_normal(args[1].size)
    hv = np.empty_like(v)
    cpu.mlp_hvp(hv, *args[1:])
    args[2] = w
    hw = np.empty_like(v)
    cpu.mlp_hvp(hw, *args[1:])
    assert abs(v @ hw - w @ hv) <= 1e-12 * max(abs(v @ hw), 1.0)
