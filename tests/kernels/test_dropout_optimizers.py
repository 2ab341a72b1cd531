"""Dropout inside the compiled epochs and the RMSprop / Adagrad kernels (issue 12), held to
kernels.reference: masks bit for bit on every backend, the epochs with dropout on kernels.cpu,
the backward through a fixed mask by central finite differences in float64, and the update
kernels on every backend. PyTorch's versions are in test_torch_oracle.py, the GPU epochs in
test_cuda_epoch.py. Every RNG is seeded.
"""
import numpy as np
import pytest
from backends import EPOCH_TOL, STEP_TOL, check_backends

from fastnn.kernels import codes, cpu
from fastnn.kernels import reference as ref
from fastnn.kernels.layout import mlp_layout

DTYPES = [np.float32, np.float64]
R, T, I = codes.RELU, codes.TANH, codes.IDENTITY
EXACT = (0.0, 0.0)  # masks are integer decisions times one constant: equal bit for bit


# --------------------------------------------------------------------------- masks

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 17)], ids=str)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.999])
@pytest.mark.parametrize("seed", [0, -5, 2**62 + 7])
def test_dropout_mask_is_the_same_on_every_backend(dtype, shape, rate, seed):
    rows = np.random.default_rng(shape[1]).integers(0, 10**6, shape[0]).astype(np.int64)
    mask = np.full(shape, np.nan, dtype)  # every entry must be written
    results = check_backends("dropout_mask", [mask, seed, rows, 3, rate], EXACT)
    got = results["reference"][1][0]
    scale = dtype(1.0 / (1.0 - rate))
    assert np.all((got == 0) | (got == scale))
    if rate == 0.0:
        assert np.all(got == 1)


def test_dropout_mask_statistics_and_independence():
    """Kept fraction 1 - rate within 5 standard deviations of a binomial, so a biased or
    constant hash fails; the mask's mean is 1 (inverted dropout); different layers, seeds and
    samples get different masks; rate 1 keeps nothing."""
    n, width, rate = 2000, 64, 0.3
    rows = np.arange(n)
    mask = np.empty((n, width))
    ref.dropout_mask(mask, 7, rows, 1, rate)
    kept = np.mean(mask > 0)
    sd = np.sqrt(rate * (1 - rate) / mask.size)
    assert abs(kept - (1 - rate)) < 5 * sd
    assert abs(mask.mean() - 1.0) < 5 * sd / (1 - rate)
    # per unit and per sample: no unit or row is always kept or always dropped
    assert 0 < mask.astype(bool).mean(axis=0).min() and mask.astype(bool).mean(axis=0).max() < 1
    other = np.empty_like(mask)
    for seed, layer in [(8, 1), (7, 2)]:
        ref.dropout_mask(other, seed, rows, layer, rate)
        agree = np.mean((other > 0) == (mask > 0))
        # two independent masks agree on a unit with probability 0.7^2 + 0.3^2 = 0.58
        assert abs(agree - 0.58) < 0.02
    ref.dropout_mask(other, 7, rows + 1, 1, rate)  # shifted samples: a different mask
    assert abs(np.mean((other > 0) == (mask > 0)) - 0.58) < 0.02
    ref.dropout_mask(other, 7, rows, 1, 1.0)
    assert np.all(other == 0)


# --------------------------------------------------------------------------- epochs with dropout

def _problem(rng, sizes, dtype, loss, n):
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    x[1, : sizes[0] // 2] = 0.0  # zero inputs: kernels.cpu's sgd_epoch skips them
    if loss in codes.LABEL_LOSSES:
        return x, rng.integers(0, sizes[-1], n), np.zeros((0, 0), dtype)
    return x, np.zeros(0, np.int64), rng.random((n, sizes[-1])).astype(dtype)


# (sizes, acts, bias, drop): fan-ins that are not multiples of the four-row sweeps, a width-1
# bottleneck, a layer without bias, input dropout alone, hidden dropout alone, both
ARCHS = [
    ((7, 13, 5, 3), (T, R, I), True, (0.2, 0.5, 0.3)),
    ((5, 1, 6, 2), (codes.LEAKY_RELU, codes.SIGMOID, I), (True, False, True), (0.0, 0.4, 0.0)),
    ((9, 4), (I,), True, (0.6,)),
    ((4, 6, 2), (codes.SOFTPLUS, I), True, (0.0, 0.0)),  # rates 0: dropout off
]
ARCH_IDS = ["-".join(map(str, a[0])) for a in ARCHS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("loss", [codes.LOSS_SOFTMAX_CE, codes.LOSS_MSE])
def test_sgd_epoch_with_dropout_matches_reference(dtype, arch, loss):
    sizes, acts, bias, drop = arch
    rng = np.random.default_rng(sum(sizes) + loss)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    x, labels, targets = _problem(rng, sizes, dtype, loss, 11)
    order = np.concatenate([rng.permutation(11), [3, 3]])  # repeats: the same mask again
    args = [params, x, labels, targets, order, np.array(sizes), w_off, b_off, np.array(acts),
            0.1, np.array(drop), 12345, loss, 0.05, 0.01]
    check_backends("sgd_epoch", args, EPOCH_TOL[dtype], backends=("reference", "cpu"))


OPTS = {  # opt code -> hyper slots set (the rest 0)
    "sgd-momentum": (codes.OPT_SGD, {codes.HYPER_MOMENTUM: 0.9, codes.HYPER_WEIGHT_DECAY: 1e-3}),
    "sgd-direct": (codes.OPT_SGD, {codes.HYPER_WEIGHT_DECAY: 1e-3}),
    "adam": (codes.OPT_ADAM, {codes.HYPER_BETA1: 0.9, codes.HYPER_BETA2: 0.999,
                              codes.HYPER_EPS: 1e-8}),
    "rmsprop": (codes.OPT_RMSPROP, {codes.HYPER_RHO: 0.9, codes.HYPER_EPS: 1e-8}),
    "rmsprop-momentum-wd": (codes.OPT_RMSPROP, {codes.HYPER_RHO: 0.99, codes.HYPER_EPS: 1e-8,
                                                codes.HYPER_MOMENTUM: 0.5,
                                                codes.HYPER_WEIGHT_DECAY: 1e-2}),
    "adagrad-decay-wd": (codes.OPT_ADAGRAD, {codes.HYPER_LR_DECAY: 0.1, codes.HYPER_EPS: 1e-10,
                                             codes.HYPER_WEIGHT_DECAY: 1e-2}),
}


def _opt_state(opt, hyper, p, dtype, rng):
    """(state1, state2) as the Python side passes them, mid-fit (not all zeros)."""
    none = np.zeros(0, dtype)
    if opt == codes.OPT_SGD:
        return (rng.standard_normal(p).astype(dtype) * 0.01 if hyper[codes.HYPER_MOMENTUM]
                else none), none
    if opt == codes.OPT_ADAM:
        return (rng.standard_normal(p).astype(dtype) * 0.01, rng.random(p).astype(dtype) * 1e-4)
    squares = (rng.random(p) * 0.01 + 0.1).astype(dtype)  # >= 0: sums of squares
    if opt == codes.OPT_RMSPROP and hyper[codes.HYPER_MOMENTUM]:
        return squares, rng.standard_normal(p).astype(dtype) * 0.01
    return squares, none


def _minibatch_args(dtype, arch, loss, name, batch_size, n=13, seed=99, weighted=True):
    sizes, acts, bias, drop = arch
    rng = np.random.default_rng(sum(sizes) * 7 + batch_size)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    x, labels, targets = _problem(rng, sizes, dtype, loss, n)
    sw = rng.uniform(0.5, 2.0, n).astype(dtype) if weighted else np.zeros(0, dtype)
    opt, slots = OPTS[name]
    hyper = np.zeros(codes.N_HYPER)
    hyper[codes.HYPER_LR] = 0.01
    for slot, value in slots.items():
        hyper[slot] = value
    state1, state2 = _opt_state(opt, hyper, p, dtype, rng)
    l2 = np.linspace(0.0, 0.01, len(acts))
    return [params, np.zeros(p, dtype), state1, state2, x, labels, targets, sw,
            rng.permutation(n), batch_size, np.array(sizes), w_off, b_off, np.array(acts), 0.1,
            l2, np.array(drop), seed, loss, 0.0, opt, hyper, 4]


# kernels.cpu's plain-SGD epoch keeps only bias gradients in grads (see test_cuda_epoch.py)
CPU_DIRECT = {"cpu": {1: "plain SGD: kernels.cpu leaves grads as scratch"}}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("batch_size", [1, 5, 13])
def test_minibatch_epoch_with_dropout_and_every_optimizer_matches_reference(dtype, arch, name,
                                                                           batch_size):
    loss = codes.LOSS_SOFTMAX_CE if batch_size != 5 else codes.LOSS_BCE
    args = _minibatch_args(dtype, arch, loss, name, batch_size)
    results = check_backends("minibatch_epoch", args, EPOCH_TOL[dtype],
                             backends=("reference", "cpu"),
                             ignore=CPU_DIRECT if name == "sgd-direct" else None)
    assert results["cpu"][0][1] == 4 + -(-13 // batch_size)  # one step per batch
    assert not np.array_equal(results["cpu"][1][0], args[0])  # it trained something


def test_masks_do_not_depend_on_how_the_order_is_sliced():
    """An epoch over the whole order equals epochs over two slices of it, bit for bit (a
    mask is a function of the sample, not of its position), per sample and in batches cut at
    a batch boundary; and per-sample SGD equals mini-batch SGD with batches of one row (the
    same masks from the two kernels)."""
    arch = ARCHS[0]
    args = _minibatch_args(np.float64, arch, codes.LOSS_SOFTMAX_CE, "rmsprop", 4, n=12,
                           weighted=False)
    whole = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    _, whole[-1] = cpu.minibatch_epoch(*whole)
    parts = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    order = parts[8]
    for piece in (order[:8], order[8:]):
        parts[8] = piece
        _, parts[-1] = cpu.minibatch_epoch(*parts)
    for i in range(4):
        assert np.array_equal(whole[i], parts[i])

    sizes, acts, _, drop = arch
    params, x, labels = args[0], args[4], args[5]
    w_off, b_off = args[11], args[12]
    tail = (np.array(sizes), w_off, b_off, np.array(acts), 0.1, np.array(drop), 3,
            codes.LOSS_SOFTMAX_CE, 0.05, 0.02)
    p_whole, p_parts = params.copy(), params.copy()
    cpu.sgd_epoch(p_whole, x, labels, np.zeros((0, 0)), order, *tail)
    for piece in (order[:5], order[5:]):
        cpu.sgd_epoch(p_parts, x, labels, np.zeros((0, 0)), piece, *tail)
    assert np.array_equal(p_whole, p_parts)

    hyper = np.zeros(codes.N_HYPER)
    hyper[codes.HYPER_LR] = 0.05
    p_mb = params.copy()
    cpu.minibatch_epoch(p_mb, np.zeros_like(p_mb), np.zeros(0), np.zeros(0), x, labels,
                        np.zeros((0, 0)), np.zeros(0), order, 1, np.array(sizes), w_off, b_off,
                        np.array(acts), 0.1, np.full(len(acts), 0.01), np.array(drop), 3,
                        codes.LOSS_SOFTMAX_CE, 0.0, codes.OPT_SGD, hyper, 0)
    # the same updates, summed in other orders (fused row sweeps vs BLAS): round-off only
    np.testing.assert_allclose(p_mb, p_whole, *EPOCH_TOL[np.float64])
    assert not np.array_equal(p_whole, params)


def test_zero_rates_ignore_the_seed_and_dropout_changes_the_fit():
    arch = ARCHS[3]  # rates 0
    runs = []
    for seed in (1, 2):
        args = _minibatch_args(np.float32, arch, codes.LOSS_SOFTMAX_CE, "adam", 5, seed=seed)
        cpu.minibatch_epoch(*args)
        runs.append(args[0])
    assert np.array_equal(runs[0], runs[1])
    dropped = _minibatch_args(np.float32, arch[:3] + ((0.5, 0.5),), codes.LOSS_SOFTMAX_CE,
                              "adam", 5)
    cpu.minibatch_epoch(*dropped)
    assert not np.array_equal(dropped[0], runs[0])


# --------------------------------------------------------------------------- backward, fixed mask

def _masked_loss(params, x, labels, rows, sizes, w_off, b_off, acts, drop, seed):
    """The mean softmax cross-entropy of the MLP with each layer's input multiplied by its
    fixed dropout mask (the masks of samples `rows`), from kernels.reference's layers."""
    from fastnn.kernels.layout import layer_views
    ws, bs = layer_views(params, sizes, w_off, b_off)
    a = x
    for l, (w, b, act) in enumerate(zip(ws, bs, acts)):
        mask = np.empty(a.shape)
        ref.dropout_mask(mask, seed, rows, l, drop[l])
        out, pre = np.empty((len(a), w.shape[1])), np.empty((len(a), w.shape[1]))
        ref.affine_act_forward(out, pre, a * mask, w, b, act, 0.1)
        a = out
    return ref.softmax_cross_entropy(np.empty_like(a), a, labels, np.zeros(0), 0.0, True)


@pytest.mark.parametrize("arch", ARCHS[:3], ids=ARCH_IDS[:3])
def test_dropout_backward_matches_finite_differences_of_the_masked_loss(arch):
    """One batch of every row, lr 0 (parameters unchanged), SGD with momentum so both
    backends write the whole gradient into grads: the reference's and kernels.cpu's gradients
    equal central differences (eps 1e-6) of the loss with the same fixed masks. Tolerance
    1e-7 absolute: central differences are exact to O(eps^2) ~ 1e-12 on smooth layers plus
    round-off ~1e-16 / 1e-6 = 1e-10; a ReLU kink within eps of a sample would show as ~1e-2."""
    sizes, acts, bias, drop = arch
    n, seed = 6, 77
    rng = np.random.default_rng(len(sizes))
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = rng.standard_normal(p) * 0.5
    x = rng.standard_normal((n, sizes[0]))
    labels = rng.integers(0, sizes[-1], n)
    order = rng.permutation(n)
    hyper = np.zeros(codes.N_HYPER)
    hyper[codes.HYPER_MOMENTUM] = 0.5  # lr 0: nothing moves, grads hold the gradient
    grads = {}
    for mod in (ref, cpu):
        g = np.zeros(p)
        mod.minibatch_epoch(params.copy(), g, np.zeros(p), np.zeros(0), x, labels,
                            np.zeros((0, 0)), np.zeros(0), order, n, np.array(sizes), w_off,
                            b_off, np.array(acts), 0.1, np.zeros(len(acts)), np.array(drop),
                            seed, codes.LOSS_SOFTMAX_CE, 0.0, codes.OPT_SGD, hyper, 0)
        grads[mod.__name__] = g
    eps = 1e-6
    fd = np.empty(p)
    for k in range(p):
        up, down = params.copy(), params.copy()
        up[k] += eps
        down[k] -= eps
        fd[k] = (_masked_loss(up, x[order], labels[order], order, sizes, w_off, b_off, acts,
                              drop, seed)
                 - _masked_loss(down, x[order], labels[order], order, sizes, w_off, b_off, acts,
                                drop, seed)) / (2 * eps)
    for g in grads.values():
        np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7)
    assert np.any(fd != 0)


# --------------------------------------------------------------------------- update kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 37])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop_update_on_every_backend(dtype, p, momentum):
    rng = np.random.default_rng(p)
    params, grads = rng.standard_normal(p).astype(dtype), rng.standard_normal(p).astype(dtype)
    v = rng.random(p).astype(dtype)
    buf = rng.standard_normal(p).astype(dtype) if momentum else np.zeros(0, dtype)
    check_backends("rmsprop_update", [params, grads, v, buf, 0.01, 0.9, momentum, 1e-8, 1e-2],
                   STEP_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 37])
def test_adagrad_update_on_every_backend(dtype, p):
    rng = np.random.default_rng(p + 1)
    params, grads = rng.standard_normal(p).astype(dtype), rng.standard_normal(p).astype(dtype)
    s = rng.random(p).astype(dtype)
    check_backends("adagrad_update", [params, grads, s, 0.05, 0.1, 1e-10, 1e-2, 3],
                   STEP_TOL[dtype])
