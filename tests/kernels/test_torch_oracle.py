"""PyTorch autograd as an outside oracle for the CPU kernels, in float64 (micrograd's habit).

kernels.reference is fastnn's own reading of the math; PyTorch is somebody else's. Each test
builds the same computation in torch, lets autograd differentiate it, and holds the kernel's
values and gradients to torch's.

Tolerances. Both sides run in float64 and evaluate the same formulas, in sums of at most a few
dozen terms of order one, so they differ by round-off only: a few ulps (~1e-16) per operation,
~1e-14 after a sum or a chain of layers. RTOL = 1e-12 leaves two orders of magnitude of room
and still catches any wrong formula (a wrong term is off by ~1e-2 or more); ATOL = 1e-12 covers
entries that cancel to ~0 (p - t, gradients through a saturated unit), where relative error has
no meaning. Optimizer trajectories get rtol 1e-10 (see there).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastnn.kernels import codes, cpu
from fastnn.kernels.layout import layer_views, mlp_layout

RTOL = 1e-12  # float64 round-off over short sums: ~1e-14 relative at worst (module docstring)
ATOL = 1e-12  # entries that cancel to ~0, where a relative bound means nothing
ALPHA = 0.1  # LEAKY_RELU slope

ACT_NAMES = {codes.IDENTITY: "identity", codes.RELU: "relu", codes.LEAKY_RELU: "leaky_relu",
             codes.SIGMOID: "sigmoid", codes.TANH: "tanh", codes.SOFTPLUS: "softplus"}
TORCH_ACT = {
    codes.IDENTITY: lambda p: p,
    codes.RELU: torch.relu,
    codes.LEAKY_RELU: lambda p: F.leaky_relu(p, ALPHA),
    codes.SIGMOID: torch.sigmoid,
    codes.TANH: torch.tanh,
    codes.SOFTPLUS: F.softplus,  # threshold 20 is never reached by these inputs
}
NO_WEIGHTS = np.zeros(0)  # empty sample_weight: all ones


def t64(a, grad=False):
    """A float64 torch leaf holding a copy of a (so torch never aliases the kernel's array)."""
    return torch.tensor(np.array(a, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# =========================================================================== dense layer

SHAPES = [(1, 1, 1), (7, 13, 5), (3, 2, 17)]  # (N, I, O): ones, primes, a fan-out of 17


def _dense_case(seed, n, i, o):
    rng = np.random.default_rng(seed)
    # normal draws: no pre-activation lands exactly on ReLU's kink at 0
    return (rng.normal(size=(n, i)), rng.normal(size=(i, o)) / np.sqrt(i),
            rng.normal(size=o), rng.normal(size=(n, o)))


def _torch_dense(x, w, b, dout, act):
    """out = act(x @ w + b) in torch and the gradients of sum(out * dout)."""
    xt, wt = t64(x, True), t64(w, True)
    pre = xt @ wt
    bt = None
    if b.size:
        bt = t64(b, True)
        pre = pre + bt
    out = TORCH_ACT[act](pre)
    (out * t64(dout)).sum().backward()
    return out, xt.grad, wt.grad, (bt.grad if bt is not None else None)


@pytest.mark.parametrize("act", list(ACT_NAMES), ids=list(ACT_NAMES.values()))
@pytest.mark.parametrize("n,i,o", SHAPES, ids=lambda s: str(s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_dense_forward_backward_and_weight_grad(act, n, i, o, bias):
    x, w, b, dout = _dense_case(10 * act + n, n, i, o)
    if not bias:
        b = np.zeros(0)
    out, pre = np.empty((n, o)), np.empty((n, o))
    cpu.affine_act_forward(out, pre, x, w, b, act, ALPHA)

    dx, dpre = np.empty((n, i)), np.empty((n, o))
    cpu.affine_act_backward(dx, dpre, dout, pre, out, w, act, ALPHA)
    dw, db = np.zeros((i, o)), np.zeros(b.shape)  # weight_grad accumulates: start from zero
    cpu.weight_grad(dw, db, x, dpre)

    t_out, t_dx, t_dw, t_db = _torch_dense(x, w, b, dout, act)
    close(out, t_out)
    close(pre, x @ w + (b if bias else 0.0))
    close(dx, t_dx)
    close(dw, t_dw)
    if bias:
        close(db, t_db)


@pytest.mark.parametrize("act", [codes.RELU, codes.TANH], ids=["relu", "tanh"])
def test_weight_grad_accumulates_onto_existing_gradients(act):
    n, i, o = 7, 13, 5
    x, w, b, dout = _dense_case(99, n, i, o)
    out, pre = np.empty((n, o)), np.empty((n, o))
    cpu.affine_act_forward(out, pre, x, w, b, act, ALPHA)
    dx, dpre = np.empty((n, i)), np.empty((n, o))
    cpu.affine_act_backward(dx, dpre, dout, pre, out, w, act, ALPHA)

    rng = np.random.default_rng(7)
    dw0, db0 = rng.normal(size=(i, o)), rng.normal(size=o)  # e.g. from an earlier micro-batch
    dw, db = dw0.copy(), db0.copy()
    cpu.weight_grad(dw, db, x, dpre)

    _, _, t_dw, t_db = _torch_dense(x, w, b, dout, act)
    close(dw, dw0 + t_dw.numpy())
    close(db, db0 + t_db.numpy())
    # and a second call adds the same gradient again
    cpu.weight_grad(dw, db, x, dpre)
    close(dw, dw0 + 2 * t_dw.numpy())
    close(db, db0 + 2 * t_db.numpy())


def test_first_layer_backward_with_empty_dx_still_writes_dpre():
    n, i, o = 7, 13, 5
    x, w, b, dout = _dense_case(3, n, i, o)
    out, pre = np.empty((n, o)), np.empty((n, o))
    cpu.affine_act_forward(out, pre, x, w, b, codes.SIGMOID, ALPHA)
    dpre = np.full((n, o), np.nan)  # written, not accumulated: NaN must be overwritten
    cpu.affine_act_backward(np.zeros((0, 0)), dpre, dout, pre, out, w, codes.SIGMOID, ALPHA)
    dw, db = np.zeros((i, o)), np.zeros(o)
    cpu.weight_grad(dw, db, x, dpre)

    _, _, t_dw, t_db = _torch_dense(x, w, b, dout, codes.SIGMOID)
    close(dw, t_dw)
    close(db, t_db)


# =========================================================================== losses
# Each case: how to call the kernel, how to draw its targets, and the per-sample loss in torch.
# The hinge and perceptron losses have kinks (margin exactly 0, argmax ties) where the gradient
# is a choice, not a fact; their logits come from _lattice, which keeps every margin at least
# 0.04 away from any kink by construction, and _no_kinks re-checks it on the drawn data.


def _lattice(rng, n, k):
    """Logits 0.3 m + 0.15 + u, m distinct integers within a row, u in [0, 0.01): never within
    0.04 of 0 or +-1, and z_j - z_y (j != y) never within 0.09 of 0 or -1."""
    m = np.stack([rng.permutation(np.arange(-7, 7))[:k] for _ in range(n)])
    return 0.3 * m + 0.15 + rng.uniform(0, 0.01, size=(n, k))


def _no_kinks(values, kinks, gap=1e-3):
    for k in kinks:
        assert np.abs(np.asarray(values) - k).min() > gap, "test data sits on a kink"


def _pm1(y):
    return np.where(y > 0, 1.0, -1.0)


def _labels(rng, z):
    n, k = z.shape
    labels = rng.integers(0, k, size=n)
    labels[0] = np.argmax(z[0])  # at least one correctly classified row
    return labels


def _distributions(rng, z, scale=1.0):
    t = rng.dirichlet(np.ones(z.shape[1]), size=z.shape[0])
    if z.shape[1] > 2:
        t[:, 1] = 0.0  # exact zeros: KL's 0 log 0 = 0
    t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-300)
    return t * scale


def _binary(rng, z, coding):
    y = rng.integers(0, 2, size=z.shape).astype(np.float64)
    if coding == "pm1":
        return 2 * y - 1
    if coding == "prob":
        return rng.uniform(0, 1, size=z.shape)
    return y


def _hinge_targets(rng, z, coding):
    y = _binary(rng, z, coding)
    _no_kinks(_pm1(y) * z, [1.0])
    return y


def _perceptron_targets(rng, z, coding):
    y = _binary(rng, z, coding)
    _no_kinks(_pm1(y) * z, [0.0])
    return y


def _mc_hinge_labels(rng, z):
    labels = _labels(rng, z)
    rows = np.arange(len(z))
    diffs = (z - z[rows, labels][:, None])
    diffs[rows, labels] = 0.0  # j = y is not a term
    _no_kinks(diffs, [-1.0])
    return labels


def _mc_perceptron_labels(rng, z):
    if z.shape[1] > 1:
        top2 = np.sort(z, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-3, "test data has an argmax tie"
    return _labels(rng, z)


def _ce_call(eps):
    return lambda dz, z, y, sw, mean: cpu.softmax_cross_entropy(dz, z, y, sw, eps, mean)


def _torch_mc_hinge(z, y):
    # multi_margin_loss averages over the K classes; Weston-Watkins sums
    return F.multi_margin_loss(z, y, reduction="none") * z.shape[1]


def _torch_mc_perceptron(z, y):
    return z.max(dim=1).values - z.gather(1, y[:, None]).squeeze(1)


LOSS_CASES = {
    # name: (kernel call, draw targets (rng, z), torch per-sample loss (z, targets))
    "ce": (_ce_call(0.0), _labels,
           lambda z, y: F.cross_entropy(z, y, reduction="none")),
    "ce_smooth": (_ce_call(0.1), _labels,
                  lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1, reduction="none")),
    "ce_soft": (cpu.softmax_cross_entropy_soft, _distributions,
                lambda z, t: F.cross_entropy(z, t, reduction="none")),
    # targets that do not sum to 1: the documented dz = p * sum(t) - t
    "ce_soft_unnormalized": (cpu.softmax_cross_entropy_soft,
                             lambda rng, z: _distributions(rng, z, 2.5),
                             lambda z, t: F.cross_entropy(z, t, reduction="none")),
    "kl": (cpu.kl_divergence, _distributions,
           lambda z, t: F.kl_div(F.log_softmax(z, dim=1), t, reduction="none").sum(dim=1)),
    "kl_unnormalized": (cpu.kl_divergence, lambda rng, z: _distributions(rng, z, 2.5),
                        lambda z, t: F.kl_div(F.log_softmax(z, dim=1), t,
                                              reduction="none").sum(dim=1)),
    "bce_01": (cpu.binary_cross_entropy, lambda rng, z: _binary(rng, z, "01"),
               lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1)),
    # -1 is the negative class: torch sees 0 there
    "bce_pm1": (cpu.binary_cross_entropy, lambda rng, z: _binary(rng, z, "pm1"),
                lambda z, y: F.binary_cross_entropy_with_logits(
                    z, torch.clamp(y, min=0), reduction="none").sum(1)),
    "bce_prob": (cpu.binary_cross_entropy, lambda rng, z: _binary(rng, z, "prob"),
                 lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1)),
    "mse": (cpu.mse, lambda rng, z: rng.normal(size=z.shape),
            lambda z, y: 0.5 * ((z - y) ** 2).sum(dim=1)),
    "hinge_pm1": (cpu.hinge, lambda rng, z: _hinge_targets(rng, z, "pm1"),
                  lambda z, y: torch.clamp(1 - y * z, min=0).sum(dim=1)),
    # 0 is read as -1
    "hinge_01": (cpu.hinge, lambda rng, z: _hinge_targets(rng, z, "01"),
                 lambda z, y: torch.clamp(1 - (2 * y - 1) * z, min=0).sum(dim=1)),
    "multiclass_hinge": (cpu.multiclass_hinge, _mc_hinge_labels, _torch_mc_hinge),
    "perceptron_pm1": (cpu.perceptron, lambda rng, z: _perceptron_targets(rng, z, "pm1"),
                       lambda z, y: torch.clamp(-y * z, min=0).sum(dim=1)),
    "perceptron_01": (cpu.perceptron, lambda rng, z: _perceptron_targets(rng, z, "01"),
                      lambda z, y: torch.clamp(-(2 * y - 1) * z, min=0).sum(dim=1)),
    "multiclass_perceptron": (cpu.multiclass_perceptron, _mc_perceptron_labels,
                              _torch_mc_perceptron),
}
LOSS_SHAPES = [(1, 1), (7, 5), (4, 13)]  # (N, K)


def _loss_inputs(name, n, k, weighted):
    rng = np.random.default_rng(sum(map(ord, name)) + 31 * n + k)
    kinked = "hinge" in name or "perceptron" in name
    z = _lattice(rng, n, k) if kinked else 1.5 * rng.normal(size=(n, k))
    target = LOSS_CASES[name][1](rng, z)
    sw = rng.uniform(0.5, 2.0, size=n) if weighted else NO_WEIGHTS
    return z, target, sw


def _torch_target(target):
    return torch.tensor(target) if target.dtype.kind == "i" else t64(target)


@pytest.mark.parametrize("name", list(LOSS_CASES))
@pytest.mark.parametrize("n,k", LOSS_SHAPES, ids=lambda s: str(s))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
def test_loss_value_and_gradient(name, n, k, weighted, mean):
    call, _, torch_per_sample = LOSS_CASES[name]
    z, target, sw = _loss_inputs(name, n, k, weighted)
    dz = np.full((n, k), np.nan)  # losses write dz: every entry must be overwritten
    value = call(dz, z, target, sw, mean)

    zt = t64(z, True)
    per = torch_per_sample(zt, _torch_target(target))
    if weighted:
        per = per * t64(sw)
    expected = per.sum() / n if mean else per.sum()  # fastnn's mean divides by N only
    expected.backward()

    assert value == pytest.approx(expected.item(), rel=RTOL, abs=ATOL)
    close(dz, zt.grad)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
def test_softmax_cross_entropy_matches_torch_reductions(eps, mean):
    """Unweighted: fastnn's mean/sum is torch's own reduction='mean'/'sum'."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=(9, 4))
    labels = rng.integers(0, 4, size=9)
    dz = np.empty_like(z)
    value = cpu.softmax_cross_entropy(dz, z, labels, NO_WEIGHTS, eps, mean)

    zt = t64(z, True)
    loss = F.cross_entropy(zt, torch.tensor(labels), label_smoothing=eps,
                           reduction="mean" if mean else "sum")
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=RTOL)
    close(dz, zt.grad)


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
def test_soft_targets_and_kl_match_torch_reductions(mean):
    """cross_entropy with probabilities ('mean' = sum / N), kl_div ('batchmean' = sum / N)."""
    rng = np.random.default_rng(6)
    z = rng.normal(size=(6, 5))
    t = _distributions(rng, z)

    dz = np.empty_like(z)
    value = cpu.softmax_cross_entropy_soft(dz, z, t, NO_WEIGHTS, mean)
    zt = t64(z, True)
    loss = F.cross_entropy(zt, t64(t), reduction="mean" if mean else "sum")
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=RTOL)
    close(dz, zt.grad)

    dz = np.empty_like(z)
    value = cpu.kl_divergence(dz, z, t, NO_WEIGHTS, mean)
    zt = t64(z, True)
    loss = F.kl_div(F.log_softmax(zt, dim=1), t64(t), reduction="batchmean" if mean else "sum")
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=RTOL)
    close(dz, zt.grad)


# =========================================================================== optimizers
# Several steps on one flat buffer, a fresh random gradient each step, compared after every
# step. Tolerance rtol 1e-10: both sides apply the same float64 update formula, but torch
# divides by sqrt(v) / sqrt(bc2) where the kernel multiplies by 1 / sqrt(bc2), and the kernel
# may fuse a multiply-add; each step adds a few ulps, and 5 steps stay below ~1e-14 relative.
# 1e-10 still flags any wrong term (a missing bias correction is off by >= 1e-3).

OPT_RTOL = 1e-10
OPT_ATOL = 1e-13  # parameters that happen to pass near 0
N_STEPS = 5
P = 23


def _opt_case(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=P), [rng.normal(size=P) for _ in range(N_STEPS)]


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)],
                         ids=["plain", "momentum", "nesterov"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_sgd_update_matches_torch_sgd(momentum, nesterov, weight_decay):
    lr = 0.05
    p0, grads = _opt_case(11)
    params = p0.copy()
    velocity = np.zeros(P) if momentum else np.zeros(0)

    pt = t64(p0, True)
    opt = torch.optim.SGD([pt], lr=lr, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)
    for g in grads:
        cpu.sgd_update(params, g, velocity, lr, momentum, nesterov, weight_decay)
        pt.grad = t64(g)
        opt.step()
        close(params, pt, OPT_RTOL, OPT_ATOL)
        if momentum:
            close(velocity, opt.state[pt]["momentum_buffer"], OPT_RTOL, OPT_ATOL)
    assert not np.allclose(params, p0)  # the steps did move the parameters


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.95)],
                         ids=["betas0.9,0.999", "betas0.8,0.95"])
def test_adam_update_matches_torch_adam_and_adamw(decoupled, weight_decay, betas):
    lr, eps = 0.01, 1e-8
    p0, grads = _opt_case(12)
    params, m, v = p0.copy(), np.zeros(P), np.zeros(P)

    pt = t64(p0, True)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls([pt], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for step, g in enumerate(grads, start=1):
        cpu.adam_update(params, g, m, v, lr, betas[0], betas[1], eps, weight_decay,
                        decoupled, step)
        pt.grad = t64(g)
        opt.step()
        state = opt.state[pt]
        assert int(state["step"]) == step
        close(params, pt, OPT_RTOL, OPT_ATOL)
        close(m, state["exp_avg"], OPT_RTOL, OPT_ATOL)
        close(v, state["exp_avg_sq"], OPT_RTOL, OPT_ATOL)


# =========================================================================== whole MLP

MLP_SIZES = [5, 4, 3, 2]
MLP_CASES = {
    "tanh-relu-identity": ((codes.TANH, codes.RELU, codes.IDENTITY), True),
    "sigmoid-leaky-softplus": ((codes.SIGMOID, codes.LEAKY_RELU, codes.SOFTPLUS), True),
    "relu-tanh-identity-middle_nobias": (
        (codes.RELU, codes.TANH, codes.IDENTITY), [True, False, True]),
}


def _torch_mlp(params, sizes, w_off, b_off):
    """torch leaves for every layer's W and b (or None) from the flat buffer."""
    ws, bs = layer_views(params, sizes, w_off, b_off)
    tw = [t64(w, True) for w in ws]
    tb = [t64(b, True) if b.size else None for b in bs]
    return tw, tb


def _torch_forward(x, tw, tb, acts):
    a = t64(x)
    for w, b, act in zip(tw, tb, acts):
        pre = a @ w
        if b is not None:
            pre = pre + b
        a = TORCH_ACT[act](pre)
    return a


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_softmax_ce_gradients_match_torch_autograd(case):
    acts, has_bias = MLP_CASES[case]
    sizes, n = MLP_SIZES, 6
    w_off, b_off, n_params = mlp_layout(sizes, has_bias)
    rng = np.random.default_rng(21)
    params = rng.normal(size=n_params)
    x = rng.normal(size=(n, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=n)
    ws, bs = layer_views(params, sizes, w_off, b_off)

    # kernels: forward, loss, backward, gradients into one flat buffer
    outs, pres = [x], []
    for w, b, act in zip(ws, bs, acts):
        pre, out = np.empty((n, w.shape[1])), np.empty((n, w.shape[1]))
        cpu.affine_act_forward(out, pre, outs[-1], w, b, act, ALPHA)
        pres.append(pre)
        outs.append(out)
    dz = np.empty_like(outs[-1])
    loss = cpu.softmax_cross_entropy(dz, outs[-1], labels, NO_WEIGHTS, 0.0, True)
    grads = np.zeros(n_params)
    gws, gbs = layer_views(grads, sizes, w_off, b_off)
    dout = dz
    for l in range(len(ws) - 1, -1, -1):
        dpre = np.empty_like(dout)
        dx = np.empty((n, sizes[l])) if l > 0 else np.zeros((0, 0))
        cpu.affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], ALPHA)
        cpu.weight_grad(gws[l], gbs[l], outs[l], dpre)
        dout = dx

    # torch
    tw, tb = _torch_mlp(params, sizes, w_off, b_off)
    tz = _torch_forward(x, tw, tb, acts)
    tloss = F.cross_entropy(tz, torch.tensor(labels))
    tloss.backward()

    close(outs[-1], tz)
    assert loss == pytest.approx(tloss.item(), rel=RTOL)
    expected = np.zeros(n_params)
    ews, ebs = layer_views(expected, sizes, w_off, b_off)
    for l in range(len(tw)):
        close(gws[l], tw[l].grad)
        ews[l][...] = tw[l].grad.numpy()
        if tb[l] is not None:
            close(gbs[l], tb[l].grad)
            ebs[l][...] = tb[l].grad.numpy()
    close(grads, expected)  # the whole buffer: nothing written outside the layer views


# =========================================================================== fused epoch

def _torch_sample_loss(z, loss, label, target):
    if loss == codes.LOSS_SOFTMAX_CE:
        return F.cross_entropy(z, torch.tensor([label]), reduction="sum")
    if loss == codes.LOSS_BCE:
        return F.binary_cross_entropy_with_logits(z, torch.clamp(t64(target), min=0),
                                                  reduction="sum")
    return 0.5 * ((z - t64(target)) ** 2).sum()


EPOCH_CASES = {
    "ce-5,4,3,2-tanh-relu-identity": (
        [5, 4, 3, 2], (codes.TANH, codes.RELU, codes.IDENTITY), codes.LOSS_SOFTMAX_CE),
    # fan-ins of 9 and 6: the four-row sweeps and their leftover rows
    "bce_pm1-9,6,3-relu-identity": ([9, 6, 3], (codes.RELU, codes.IDENTITY), codes.LOSS_BCE),
    "mse-9,6,3,2-sigmoid-leaky-identity": (
        [9, 6, 3, 2], (codes.SIGMOID, codes.LEAKY_RELU, codes.IDENTITY), codes.LOSS_MSE),
}


@pytest.mark.parametrize("case", list(EPOCH_CASES))
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_sgd_epoch_matches_per_sample_torch_sgd(case, weight_decay):
    """The fused epoch against plain per-sample SGD in torch: W -= lr (dW + wd W), b -= lr db."""
    sizes, acts, loss = EPOCH_CASES[case]
    lr, n = 0.1, 6
    w_off, b_off, n_params = mlp_layout(sizes)
    rng = np.random.default_rng(33)
    params = rng.normal(size=n_params) / 2
    x = rng.normal(size=(n, sizes[0]))
    x[:, :4] = 0.0  # a whole zero block of four inputs: the kernel's skip of zero rows
    x[1, 4:] = 0.0  # one all-zero sample
    labels = rng.integers(0, sizes[-1], size=n)
    targets = rng.integers(0, 2, size=(n, sizes[-1])).astype(np.float64)
    if loss == codes.LOSS_BCE:
        targets = 2 * targets - 1  # -1/+1 coding
    elif loss == codes.LOSS_MSE:
        targets = rng.normal(size=(n, sizes[-1]))
    order = np.array([3, 0, 1, 5, 1, 2, 4, 0])  # repeats, and the zero sample twice

    tw, tb = _torch_mlp(params, sizes, w_off, b_off)
    torch_losses = []
    for idx in order:
        z = _torch_forward(x[idx:idx + 1], tw, tb, acts)
        sample_loss = _torch_sample_loss(z, loss, labels[idx], targets[idx:idx + 1])
        torch_losses.append(sample_loss.item())
        sample_loss.backward()
        with torch.no_grad():
            for w, b in zip(tw, tb):
                w -= lr * (w.grad + weight_decay * w)
                b -= lr * b.grad  # no decay on biases
                w.grad = None
                b.grad = None

    k_labels = labels if loss == codes.LOSS_SOFTMAX_CE else np.zeros(0, np.int64)
    k_targets = targets if loss != codes.LOSS_SOFTMAX_CE else np.zeros((0, 0))
    value = cpu.sgd_epoch(params, x, k_labels, k_targets, order, np.array(sizes), w_off, b_off,
                          np.array(acts), ALPHA, np.zeros(len(acts)), 0, loss, lr,
                          weight_decay)

    assert value == pytest.approx(np.mean(torch_losses), rel=RTOL)
    ws, bs = layer_views(params, sizes, w_off, b_off)
    for l in range(len(tw)):
        close(ws[l], tw[l])
        close(bs[l], tb[l])


# =========================================================================== RMSprop, Adagrad,
# dropout (issue 12): the update kernels step by step, then whole mini-batch epochs

@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("rho", [0.99, 0.9])
def test_rmsprop_update_matches_torch_rmsprop(momentum, weight_decay, rho):
    lr, eps = 0.01, 1e-8
    p0, grads = _opt_case(13)
    params, v = p0.copy(), np.zeros(P)
    buf = np.zeros(P) if momentum else np.zeros(0)
    pt = t64(p0, True)
    opt = torch.optim.RMSprop([pt], lr=lr, alpha=rho, eps=eps, weight_decay=weight_decay,
                              momentum=momentum, centered=False)
    for g in grads:
        cpu.rmsprop_update(params, g, v, buf, lr, rho, momentum, eps, weight_decay)
        pt.grad = t64(g)
        opt.step()
        close(params, pt, OPT_RTOL, OPT_ATOL)
        close(v, opt.state[pt]["square_avg"], OPT_RTOL, OPT_ATOL)
        if momentum:
            close(buf, opt.state[pt]["momentum_buffer"], OPT_RTOL, OPT_ATOL)
    assert not np.allclose(params, p0)


@pytest.mark.parametrize("lr_decay", [0.0, 0.1])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("initial", [0.0, 0.1])
def test_adagrad_update_matches_torch_adagrad(lr_decay, weight_decay, initial):
    lr, eps = 0.05, 1e-10
    p0, grads = _opt_case(14)
    params, s = p0.copy(), np.full(P, initial)  # the Python side fills initial_accumulator
    pt = t64(p0, True)
    opt = torch.optim.Adagrad([pt], lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                              initial_accumulator_value=initial, eps=eps)
    for step, g in enumerate(grads, start=1):
        cpu.adagrad_update(params, g, s, lr, lr_decay, eps, weight_decay, step)
        pt.grad = t64(g)
        opt.step()
        close(params, pt, OPT_RTOL, OPT_ATOL)
        close(s, opt.state[pt]["sum"], OPT_RTOL, OPT_ATOL)


def _hyper_for(name, lr, weight_decay):
    hyper = np.zeros(codes.N_HYPER)
    hyper[codes.HYPER_LR], hyper[codes.HYPER_WEIGHT_DECAY] = lr, weight_decay
    if name == "rmsprop":
        hyper[codes.HYPER_RHO], hyper[codes.HYPER_MOMENTUM], hyper[codes.HYPER_EPS] = 0.9, 0.5, 1e-8
        return codes.OPT_RMSPROP, hyper
    hyper[codes.HYPER_LR_DECAY], hyper[codes.HYPER_EPS] = 0.05, 1e-10
    return codes.OPT_ADAGRAD, hyper


def _torch_optimizer(name, leaves, lr, weight_decay):
    if name == "rmsprop":
        return torch.optim.RMSprop(leaves, lr=lr, alpha=0.9, eps=1e-8, momentum=0.5,
                                   weight_decay=weight_decay)
    return torch.optim.Adagrad(leaves, lr=lr, lr_decay=0.05, eps=1e-10,
                               weight_decay=weight_decay, initial_accumulator_value=0.1)


@pytest.mark.parametrize("name", ["rmsprop", "adagrad"])
@pytest.mark.parametrize("drop", [(0.0, 0.0, 0.0), (0.25, 0.5, 0.3)], ids=["nodrop", "dropout"])
def test_minibatch_epoch_matches_torch_optimizer_with_the_same_dropout_masks(name, drop):
    """Three steps of kernels.cpu.minibatch_epoch (batches of 3, 3 and 1 rows: a shorter last
    one) against torch.optim on the same network, the same batches, and, with dropout, the
    same masks: kernels.reference.dropout_mask's for each layer's input, multiplied in torch
    (inverted dropout), so autograd takes the gradient through them. Also kernels.cpu.dropout_mask
    equals the reference's bit for bit."""
    from fastnn.kernels import reference as ref
    sizes, acts = [5, 7, 4, 3], (codes.TANH, codes.RELU, codes.IDENTITY)
    lr, weight_decay, n, batch, seed = 0.05, 1e-2, 7, 3, 2024
    w_off, b_off, n_params = mlp_layout(sizes)
    rng = np.random.default_rng(35)
    params = rng.normal(size=n_params) / 2
    x = rng.normal(size=(n, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=n)
    order = rng.permutation(n)
    opt_code, hyper = _hyper_for(name, lr, weight_decay)
    state1 = np.full(n_params, 0.1) if name == "adagrad" else np.zeros(n_params)
    state2 = np.zeros(n_params) if name == "rmsprop" else np.zeros(0)

    tw, tb = _torch_mlp(params, sizes, w_off, b_off)
    leaves = [t for pair in zip(tw, tb) for t in pair]
    topt = _torch_optimizer(name, leaves, lr, weight_decay)
    for start in range(0, n, batch):
        idx = order[start:start + batch]
        a = t64(x[idx])
        for l, (w, b, act) in enumerate(zip(tw, tb, acts)):
            if drop[l] > 0:
                mask = np.empty((len(idx), sizes[l]))
                ref.dropout_mask(mask, seed, idx, l, drop[l])
                mask_cpu = np.empty_like(mask)
                cpu.dropout_mask(mask_cpu, seed, idx, l, drop[l])
                assert np.array_equal(mask, mask_cpu)
                a = a * t64(mask)
            a = TORCH_ACT[act](a @ w + b)
        topt.zero_grad()
        F.cross_entropy(a, torch.tensor(labels[idx])).backward()
        topt.step()

    loss, step = cpu.minibatch_epoch(
        params, np.zeros(n_params), state1, state2, x, labels, np.zeros((0, 0)), NO_WEIGHTS,
        order, batch, np.array(sizes), w_off, b_off, np.array(acts), ALPHA,
        np.zeros(len(acts)), np.array(drop), seed, codes.LOSS_SOFTMAX_CE, 0.0, opt_code, hyper,
        0)
    assert step == 3 and np.isfinite(loss)
    ws, bs = layer_views(params, sizes, w_off, b_off)
    for l in range(len(tw)):
        close(ws[l], tw[l], OPT_RTOL, OPT_ATOL)
        close(bs[l], tb[l], OPT_RTOL, OPT_ATOL)
