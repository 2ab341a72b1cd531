"""The fused per-sample epoch (kernels.cpu.sgd_epoch) equals stepping the reference twin sample
by sample: forward, loss, backward, update, for each sample in turn.

The fused kernel reorders work (the first layer's update for sample t shares one pass with the
forward product for sample t + 1; four-row register blocks; zero inputs skipped), so these cases
cover what could break that: depth 1 (a linear model) to 4, fan-ins not a multiple of 4, zero
inputs and zero rows, layers without bias, one sample, repeated indices, every loss, decay."""
import numpy as np
import pytest
from helpers import DTYPES, assert_close

from fastnn.kernels import codes
from fastnn.kernels import cpu
from fastnn.kernels import reference as ref
from fastnn.kernels.layout import mlp_layout

ARCHS = [
    ([5, 3], [codes.IDENTITY], True),  # softmax regression: one layer, no hidden
    ([13, 7, 5, 3], [codes.TANH, codes.RELU, codes.IDENTITY], [True, False, True]),
    ([9, 8, 2], [codes.LEAKY_RELU, codes.IDENTITY], False),
    ([4, 17, 6, 11, 3], [codes.SIGMOID, codes.SOFTPLUS, codes.RELU, codes.IDENTITY], True),
    ([1, 1], [codes.IDENTITY], True),
]


def _problem(rng, sizes, dtype, n=11, sparse=False):
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    if sparse:
        x[rng.random(x.shape) < 0.6] = 0.0
        x[0] = 0.0  # a whole zero sample
    labels = rng.integers(0, sizes[-1], n)
    targets = rng.random((n, sizes[-1])).astype(dtype)
    return x, labels, targets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(map(str, a[0])))
@pytest.mark.parametrize("loss", [codes.LOSS_SOFTMAX_CE, codes.LOSS_BCE, codes.LOSS_MSE])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("sparse", [False, True])
def test_sgd_epoch_matches_reference(dtype, arch, loss, weight_decay, sparse):
    sizes, acts, bias = arch
    rng = np.random.default_rng(sum(sizes) + loss)
    sizes_a = np.array(sizes)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    params_r, start = params.copy(), params.copy()
    x, labels, targets = _problem(rng, sizes, dtype, sparse=sparse)
    order = np.concatenate([rng.permutation(len(x)), [3, 3]])  # repeats are allowed
    acts_a = np.array(acts)
    no_drop = np.zeros(len(acts))
    loss_k = cpu.sgd_epoch(params, x, labels, targets, order, sizes_a, w_off, b_off, acts_a,
                           0.1, no_drop, 0, loss, 0.05, weight_decay)
    loss_r = ref.sgd_epoch(params_r, x, labels, targets, order, sizes_a, w_off, b_off, acts_a,
                           0.1, no_drop, 0, loss, 0.05, weight_decay)
    assert np.all(np.isfinite(params))
    assert_close(loss_k, loss_r, dtype)
    assert_close(params, params_r, dtype)
    if not (loss == codes.LOSS_SOFTMAX_CE and sizes[-1] == 1):  # one-class softmax: p - t = 0
        assert not np.array_equal(params, start)  # it trained something


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_epoch_one_sample_and_empty_order(dtype):
    sizes, acts, bias = ARCHS[1]
    rng = np.random.default_rng(1)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    x, labels, targets = _problem(rng, sizes, dtype)
    args = (x, labels, targets)
    tail = (np.array(sizes), w_off, b_off, np.array(acts), 0.1, np.zeros(len(acts)), 0,
            codes.LOSS_SOFTMAX_CE, 0.1, 0.0)
    before = params.copy()
    assert cpu.sgd_epoch(params, *args, np.zeros(0, np.int64), *tail) == 0.0
    assert np.array_equal(params, before)
    params_r = params.copy()
    one = np.array([4])
    assert_close(cpu.sgd_epoch(params, *args, one, *tail), ref.sgd_epoch(params_r, *args, one, *tail),
                 dtype)
    assert_close(params, params_r, dtype)
    assert not np.array_equal(params, before)


def test_sgd_epoch_is_bitwise_reproducible():
    sizes, acts, bias = ARCHS[3]
    rng = np.random.default_rng(2)
    w_off, b_off, p = mlp_layout(sizes, bias)
    start = (rng.standard_normal(p) * 0.5).astype(np.float32)
    x, labels, targets = _problem(rng, sizes, np.float32, n=50)
    order = rng.permutation(50)
    runs = []
    for _ in range(2):
        params = start.copy()
        cpu.sgd_epoch(params, x, labels, targets, order, np.array(sizes), w_off, b_off,
                      np.array(acts), 0.1, np.zeros(len(acts)), 0, codes.LOSS_SOFTMAX_CE, 0.05,
                      1e-3)
        runs.append(params)
    assert np.array_equal(runs[0], runs[1])


def test_sgd_epoch_learns_a_separable_problem():
    """Several epochs on a linearly separable 2-class problem reach zero training error."""
    rng = np.random.default_rng(3)
    n = 200
    x = rng.standard_normal((n, 2)).astype(np.float32)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    sizes = np.array([2, 8, 2])
    w_off, b_off, p = mlp_layout(sizes)
    params = (rng.standard_normal(p) * 0.5).astype(np.float32)
    acts = np.array([codes.TANH, codes.IDENTITY])
    losses = [cpu.sgd_epoch(params, x, labels, np.zeros((0, 0), np.float32), rng.permutation(n),
                            sizes, w_off, b_off, acts, 0.0, np.zeros(2), 0,
                            codes.LOSS_SOFTMAX_CE, 0.1, 0.0)
              for _ in range(30)]
    assert losses[-1] < 0.25 * losses[0]
    w1 = params[:16].reshape(2, 8)
    b1 = params[16:24]
    w2 = params[24:40].reshape(8, 2)
    b2 = params[40:42]
    pred = np.argmax(np.tanh(x @ w1 + b1) @ w2 + b2, axis=1)
    assert np.mean(pred == labels) > 0.97


# --------------------------------------------------------------------------- mini-batch epoch

def _minibatch_args(rng, sizes, bias, dtype, loss, weighted, n=23):
    w_off, b_off, p = mlp_layout(sizes, bias)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    if loss in codes.LABEL_LOSSES:
        labels, targets = rng.integers(0, sizes[-1], n), np.zeros((0, 0), dtype)
    else:
        labels, targets = np.zeros(0, np.int64), rng.random((n, sizes[-1])).astype(dtype)
        if loss in (codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL):
            targets /= targets.sum(axis=1, keepdims=True)
    sw = rng.random(n).astype(dtype) if weighted else np.zeros(0, dtype)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    return params, x, labels, targets, sw, w_off, b_off


ALL_LOSSES = [codes.LOSS_SOFTMAX_CE, codes.LOSS_BCE, codes.LOSS_MSE, codes.LOSS_SOFTMAX_CE_SOFT,
              codes.LOSS_KL, codes.LOSS_HINGE, codes.LOSS_MULTICLASS_HINGE, codes.LOSS_PERCEPTRON,
              codes.LOSS_MULTICLASS_PERCEPTRON]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS[:4], ids=lambda a: "-".join(map(str, a[0])))
@pytest.mark.parametrize("loss", ALL_LOSSES)
@pytest.mark.parametrize("opt,momentum", [(codes.OPT_SGD, 0.0), (codes.OPT_SGD, 0.9),
                                          (codes.OPT_ADAM, 0.0)])
@pytest.mark.parametrize("batch_size", [1, 5, 23, 64])
def test_minibatch_epoch_matches_reference(dtype, arch, loss, opt, momentum, batch_size):
    sizes, acts, bias = arch
    rng = np.random.default_rng(sum(sizes) * 10 + loss)
    weighted = bool(loss % 2)
    params, x, labels, targets, sw, w_off, b_off = _minibatch_args(rng, sizes, bias, dtype, loss,
                                                                   weighted)
    n_layers = len(sizes) - 1
    l2 = np.linspace(0.0, 0.02, n_layers)  # the first layer unregularised, the others not
    # plain SGD, Nesterov momentum, Adam with decoupled decay: every branch of the update
    # (lr 0.01: momentum 0.9 at batch 1 on random MSE targets diverges from lr 0.05 on)
    # momentum 0 takes the kernel's direct path: the update as one gemm into the weights
    hyper = np.array([0.01, momentum, float(momentum > 0), 1e-3, 0.9, 0.999, 1e-8, 1.0, 0.0, 0.0])
    runs = []
    for mod in (cpu, ref):
        p = params.copy()
        state = [np.zeros_like(p), np.zeros_like(p) if opt == codes.OPT_ADAM else np.zeros(0, dtype)]
        grads = np.zeros_like(p)
        order = np.random.default_rng(7).permutation(len(x))
        result = mod.minibatch_epoch(p, grads, state[0], state[1], x, labels, targets, sw, order,
                                     batch_size, np.array(sizes), w_off, b_off, np.array(acts),
                                     0.1, l2, np.zeros(n_layers), 0, loss, 0.1, opt, hyper, 3)
        runs.append((p, state, result))
    (p, state, (loss_k, step_k)), (p_r, state_r, (loss_r, step_r)) = runs
    assert step_k == step_r == 3 + -(-len(x) // batch_size)
    assert np.isfinite(loss_k) and np.all(np.isfinite(p))
    assert_close(loss_k, loss_r, dtype)
    assert_close(p, p_r, dtype)
    assert_close(state[0], state_r[0], dtype)
    assert not np.array_equal(p, params)
