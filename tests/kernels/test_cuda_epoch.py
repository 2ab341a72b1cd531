"""The GPU epochs, kernels.cuda.minibatch_epoch and sgd_epoch, held to kernels.reference (and
to kernels.cpu, its other twin) with backends.check_backends, and their launch counts.

Runs in Numba's CUDA simulator without a GPU, about 50,000 FMA/s with every simulated thread a
Python thread, so the networks are tiny and the epochs a few steps: awkward all the same (batch
1, a last shorter batch, N not a multiple of the batch, a width-1 bottleneck, widths that are
not multiples of any tile, one output, layers without bias). Every RNG is seeded.

The launch counts are the GPU cost a simulator can measure: on a narrow network a step costs
its launches (a few microseconds each) more than its arithmetic.
"""
import numpy as np
import pytest
from backends import EPOCH_TOL, check_backends
from helpers import require_cuda

from fastnn.kernels import codes
from fastnn.kernels.layout import mlp_layout

require_cuda("CUDA epoch tests", module=True)
from numba import cuda  # noqa: E402

from fastnn.kernels import cuda as gpu  # noqa: E402  (after the usability check)

R, T, I = codes.RELU, codes.TANH, codes.IDENTITY
MB_NAMES = ("params", "grads", "state1", "state2", "x", "labels", "targets", "sample_weight",
            "order", "batch_size", "sizes", "w_off", "b_off", "acts", "alpha", "l2", "drop",
            "seed", "loss", "label_smoothing", "opt", "hyper", "step")
# kernels.cpu's plain-SGD epoch (no momentum) updates W straight from the gemm and keeps
# only the bias gradients in grads: its grads are scratch, not the last batch's gradient
CPU_DIRECT = {"cpu": {1: "plain SGD: kernels.cpu leaves grads as scratch"}}


def _hyper(opt, momentum=0.0, nesterov=False, weight_decay=0.0, decoupled=False,
           lr_decay=0.0):
    h = np.zeros(codes.N_HYPER)
    h[codes.HYPER_LR] = 0.05 if opt == codes.OPT_SGD else 0.01
    h[codes.HYPER_WEIGHT_DECAY] = weight_decay
    if opt == codes.OPT_SGD:
        h[codes.HYPER_MOMENTUM], h[codes.HYPER_NESTEROV] = momentum, float(nesterov)
    elif opt == codes.OPT_RMSPROP:
        h[codes.HYPER_RHO], h[codes.HYPER_MOMENTUM], h[codes.HYPER_EPS] = 0.9, momentum, 1e-8
    elif opt == codes.OPT_ADAGRAD:
        h[codes.HYPER_LR_DECAY], h[codes.HYPER_EPS] = lr_decay, 1e-10
    else:
        h[codes.HYPER_BETA1], h[codes.HYPER_BETA2], h[codes.HYPER_EPS] = 0.9, 0.999, 1e-8
        h[codes.HYPER_DECOUPLED] = float(decoupled)
    return h


def _minibatch_args(dtype, sizes, acts, bias, loss, n, batch_size, opt, hyper, l2=0.0,
                    weighted=False, smoothing=0.0, seed=0, step=0, drop=0.0):
    """minibatch_epoch's arguments for a random problem (host NumPy arrays)."""
    rng = np.random.default_rng(seed)
    sizes = np.array(sizes, np.int64)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    k = int(sizes[-1])
    if loss in codes.LABEL_LOSSES:
        labels, targets = rng.integers(0, k, n).astype(np.int64), np.zeros((0, 0), dtype)
    else:
        labels = np.zeros(0, np.int64)
        if loss in (codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL):
            targets = rng.dirichlet(np.ones(k), n).astype(dtype)
            targets[0, 0], targets[0] = 0.0, targets[0] / targets[0].sum()  # a 0 log 0 entry
        elif loss in (codes.LOSS_HINGE, codes.LOSS_PERCEPTRON):
            targets = rng.choice([-1.0, 1.0], (n, k)).astype(dtype)
        else:
            targets = rng.random((n, k)).astype(dtype)
    sw = rng.uniform(0.2, 2.0, n).astype(dtype) if weighted else np.zeros(0, dtype)
    squares = opt in (codes.OPT_RMSPROP, codes.OPT_ADAGRAD)  # state1 a sum of squares
    state = np.zeros(p, dtype) if opt == codes.OPT_ADAM or squares or \
        (opt == codes.OPT_SGD and hyper[codes.HYPER_MOMENTUM]) else np.zeros(0, dtype)
    state2 = np.zeros(p, dtype) if opt == codes.OPT_ADAM or \
        (opt == codes.OPT_RMSPROP and hyper[codes.HYPER_MOMENTUM]) else np.zeros(0, dtype)
    if state.size:  # a mid-fit state: not all zeros (and >= 0 where it sums squares)
        state[:] = rng.random(p) * 1e-2 if squares else rng.standard_normal(p) * 0.01
    if state2.size:
        state2[:] = rng.random(p) * 1e-4
    order = rng.permutation(n).astype(np.int64)
    return [params, np.zeros(p, dtype), state, state2, x, labels, targets, sw, order,
            batch_size, sizes, w_off, b_off, np.array(acts, np.int64), 0.1,
            np.full(len(acts), l2), np.broadcast_to(np.asarray(drop, float), len(acts)).copy(),
            seed + 1000, loss, smoothing, opt, hyper, step]


# (id, dtype, sizes, acts, bias, loss, n, batch, opt, hyper, l2, weighted, smoothing):
# the fused narrow path (softmax cross-entropy, MSE)
FUSED = [
    ("ce-nesterov-l2-sw-smooth", np.float32, (3, 5, 2), (R, I), True, codes.LOSS_SOFTMAX_CE,
     7, 3, codes.OPT_SGD, _hyper(codes.OPT_SGD, 0.9, True, 0.01), 0.02, True, 0.1),
    ("ce-nesterov-l2-sw-smooth", np.float64, (3, 5, 2), (R, I), True, codes.LOSS_SOFTMAX_CE,
     7, 3, codes.OPT_SGD, _hyper(codes.OPT_SGD, 0.9, True, 0.01), 0.02, True, 0.1),
    # a width-1 bottleneck, one bias missing, one batch of all 5 rows
    ("mse-adam-bottleneck", np.float32, (2, 1, 3), (T, I), (False, True), codes.LOSS_MSE,
     5, 5, codes.OPT_ADAM, _hyper(codes.OPT_ADAM, weight_decay=0.01), 0.0, False, 0.0),
    ("mse-adamw-one-output", np.float64, (3, 4, 1), (codes.SIGMOID, I), True, codes.LOSS_MSE,
     5, 2, codes.OPT_ADAM, _hyper(codes.OPT_ADAM, weight_decay=0.05, decoupled=True), 0.01,
     True, 0.0),
    # batch 1, plain SGD with weight decay (kernels.cpu's direct path), depth 3
    ("ce-batch1-sgd-wd", np.float64, (4, 3, 3, 2), (codes.LEAKY_RELU, T, I), True,
     codes.LOSS_SOFTMAX_CE, 3, 1, codes.OPT_SGD, _hyper(codes.OPT_SGD, weight_decay=0.05),
     0.0, False, 0.0),
]


@pytest.mark.parametrize("case", FUSED, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_minibatch_epoch_fused_matches_reference_and_cpu(case):
    _, dtype, sizes, acts, bias, loss, n, batch, opt, hyper, l2, weighted, smoothing = case
    args = _minibatch_args(dtype, sizes, acts, bias, loss, n, batch, opt, hyper, l2, weighted,
                           smoothing, seed=n * batch + len(sizes), step=3)
    with gpu.count_launches() as launches:
        results = check_backends("minibatch_epoch", args, EPOCH_TOL[dtype], names=MB_NAMES,
                                 kwargs={"cuda": {"fused": True}},
                                 ignore=CPU_DIRECT if not hyper[codes.HYPER_MOMENTUM]
                                 and opt == codes.OPT_SGD else None)
    assert launches["fused_mlp_train_step"] == -(-n // batch)  # it took the fused path
    assert not np.array_equal(results["cuda"][1][0], args[0])  # it trained something


# the per-layer path: every loss (one layer where the loss is the point: a layer's
# forward and backward are a few 16x16-thread blocks, the simulator's slowest launches)
LAYERWISE = [
    ("bce-momentum-2layer", np.float32, (3, 5, 2), (T, I), True, codes.LOSS_BCE, 3, 2,
     codes.OPT_SGD, _hyper(codes.OPT_SGD, 0.9), 0.01, True),
    ("ce-forced-layerwise", np.float64, (3, 5, 2), (R, I), (True, False),
     codes.LOSS_SOFTMAX_CE, 5, 3, codes.OPT_ADAM, _hyper(codes.OPT_ADAM, weight_decay=0.01),
     0.02, True),
] + [
    (f"loss{loss}-1layer", np.float64, (3, 3), (I,), True, loss, 4, 4, codes.OPT_SGD,
     _hyper(codes.OPT_SGD, 0.5), 0.0, loss % 2 == 0)
    for loss in (codes.LOSS_MSE, codes.LOSS_SOFTMAX_CE_SOFT, codes.LOSS_KL, codes.LOSS_HINGE,
                 codes.LOSS_MULTICLASS_HINGE, codes.LOSS_PERCEPTRON,
                 codes.LOSS_MULTICLASS_PERCEPTRON)
]


@pytest.mark.parametrize("case", LAYERWISE, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_minibatch_epoch_layerwise_matches_reference_and_cpu(case):
    _, dtype, sizes, acts, bias, loss, n, batch, opt, hyper, l2, weighted = case
    args = _minibatch_args(dtype, sizes, acts, bias, loss, n, batch, opt, hyper, l2, weighted,
                           seed=loss + n)
    with gpu.count_launches() as launches:
        check_backends("minibatch_epoch", args, EPOCH_TOL[dtype], names=MB_NAMES,
                       kwargs={"cuda": {"fused": False}})
    assert launches["fused_mlp_train_step"] == 0


# dropout and RMSprop / Adagrad on both mini-batch paths (issue 12):
# (id, dtype, sizes, acts, loss, n, batch, opt, hyper, drop, fused)
DROPOUT = [
    ("fused-ce-rmsprop-momentum-dropout", np.float32, (3, 5, 4, 2), (R, T, I),
     codes.LOSS_SOFTMAX_CE, 5, 3, codes.OPT_RMSPROP,
     _hyper(codes.OPT_RMSPROP, 0.5, weight_decay=0.01), (0.3, 0.5, 0.2), True),
    ("fused-mse-adagrad-hidden-dropout", np.float64, (3, 5, 2), (codes.SIGMOID, I),
     codes.LOSS_MSE, 3, 2, codes.OPT_ADAGRAD, _hyper(codes.OPT_ADAGRAD, lr_decay=0.1),
     (0.0, 0.4), True),
    # the middle layer without dropout: its input still goes through `ins` (a copy)
    ("layerwise-bce-rmsprop-dropout", np.float64, (3, 5, 4, 2), (T, R, I), codes.LOSS_BCE, 5,
     3, codes.OPT_RMSPROP, _hyper(codes.OPT_RMSPROP), (0.25, 0.0, 0.5), False),
    ("layerwise-ce-adagrad-input-dropout", np.float32, (4, 3), (I,), codes.LOSS_SOFTMAX_CE, 4,
     4, codes.OPT_ADAGRAD, _hyper(codes.OPT_ADAGRAD, weight_decay=0.01), (0.5,), False),
]


@pytest.mark.parametrize("case", DROPOUT, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_minibatch_epoch_dropout_and_new_optimizers_match_reference_and_cpu(case):
    """The masks are rebuilt from the hash on the device (gather_batch, the fused kernel,
    dropout_rows) and must be the reference's: any differing unit changes the fit by far more
    than EPOCH_TOL. The fused path keeps its 4 launches a step with dropout on."""
    _, dtype, sizes, acts, loss, n, batch, opt, hyper, drop, fused = case
    args = _minibatch_args(dtype, sizes, acts, True, loss, n, batch, opt, hyper, 0.01, True,
                           seed=n + batch, step=2, drop=drop)
    with gpu.count_launches() as launches:
        results = check_backends("minibatch_epoch", args, EPOCH_TOL[dtype], names=MB_NAMES,
                                 kwargs={"cuda": {"fused": fused}})
    steps = -(-n // batch)
    update = "rmsprop_update" if opt == codes.OPT_RMSPROP else "adagrad_update"
    assert launches[update] == steps
    if fused:
        assert launches.total() - 1 == 4 * steps, dict(launches)
    elif any(drop[1:]):  # every hidden input masked (or copied), each dropped dx masked
        per_step = len(drop) - 1 + sum(d > 0 for d in drop[1:])
        assert launches["dropout_rows"] == per_step * steps
    else:  # input dropout only: gather_batch does it
        assert launches["dropout_rows"] == 0
    assert not np.array_equal(results["cuda"][1][0], args[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minibatch_epoch_on_device_arrays_reuses_its_workspace(dtype):
    """As a fit calls it: device arrays, a device order, one workspace for every epoch. The
    second epoch allocates nothing, and two epochs equal two reference epochs."""
    from fastnn.kernels import reference as ref
    hyper = _hyper(codes.OPT_ADAM)
    args = _minibatch_args(dtype, (3, 6, 3), (T, I), True, codes.LOSS_SOFTMAX_CE, 3, 2,
                           codes.OPT_ADAM, hyper, l2=0.01, seed=11)
    want = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    got = [cuda.to_device(a) if isinstance(a, np.ndarray) and i < 9 else a
           for i, a in enumerate(args)]
    ws = gpu.EpochWorkspace()
    for epoch in range(2):
        want[-1] = ref.minibatch_epoch(*want)[1]
        before = ws.allocations
        loss, got[-1] = gpu.minibatch_epoch(*got, workspace=ws)
        assert got[-1] == want[-1] == 2 * (epoch + 1)
        assert epoch == 0 or ws.allocations == before
        assert isinstance(loss, float)
    for i in range(4):  # params, grads, m, v
        np.testing.assert_allclose(got[i].copy_to_host(), want[i], *EPOCH_TOL[dtype])


def test_minibatch_epoch_empty_order_and_fused_refusal():
    args = _minibatch_args(np.float64, (3, 2), (I,), True, codes.LOSS_HINGE, 3, 2,
                           codes.OPT_SGD, _hyper(codes.OPT_SGD))
    empty = list(args)
    empty[8] = np.zeros(0, np.int64)
    assert gpu.minibatch_epoch(*empty) == (0.0, 0)
    with pytest.raises(ValueError, match="fused"):
        gpu.minibatch_epoch(*args, fused=True)  # hinge has no fused kernel


# --------------------------------------------------------------------------- per-sample SGD

SGD_NAMES = ("params", "x", "labels", "targets", "order", "sizes", "w_off", "b_off", "acts",
             "alpha", "drop", "seed", "loss", "lr", "weight_decay")


def _sgd_args(dtype, sizes, acts, bias, loss, n, weight_decay, seed, drop=0.0):
    rng = np.random.default_rng(seed)
    sizes = np.array(sizes, np.int64)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    x[1, : sizes[0] // 2] = 0.0  # zero inputs: kernels.cpu skips them
    labels = rng.integers(0, sizes[-1], n).astype(np.int64)
    targets = rng.random((n, sizes[-1])).astype(dtype)
    order = np.concatenate([rng.permutation(n), [1, 1]]).astype(np.int64)  # repeats allowed
    return [params, x, labels, targets, order, sizes, w_off, b_off, np.array(acts, np.int64),
            0.1, np.broadcast_to(np.asarray(drop, float), len(acts)).copy(), seed + 1000, loss,
            0.05, weight_decay]


# (id, dtype, sizes, acts, bias, loss, weight_decay, path)
SGD_CASES = [
    ("ce-depth4-shared", np.float64, (5, 13, 1, 7, 3), (T, R, I, codes.LEAKY_RELU),
     (True, False, True, True), codes.LOSS_SOFTMAX_CE, 0.05, "shared"),
    ("ce-depth4-global", np.float32, (5, 13, 1, 7, 3), (T, R, I, codes.LEAKY_RELU),
     (True, False, True, True), codes.LOSS_SOFTMAX_CE, 0.05, "global"),
    ("bce-linear-shared", np.float32, (4, 3), (I,), True, codes.LOSS_BCE, 0.0, "shared"),
    ("mse-shared", np.float32, (4, 6, 1), (codes.SIGMOID, I), False, codes.LOSS_MSE, 0.05,
     "shared"),
    ("mse-minibatch", np.float64, (4, 6, 1), (codes.SOFTPLUS, I), True, codes.LOSS_MSE, 0.05,
     "minibatch"),
]


SGD_CASES += [  # with dropout (issue 12): the input, hidden outputs, one layer without
    ("ce-dropout-shared", np.float64, (5, 7, 4, 3), (T, R, I), True, codes.LOSS_SOFTMAX_CE,
     0.05, "shared", (0.2, 0.0, 0.5)),
    ("bce-dropout-global", np.float32, (4, 6, 3), (R, I), True, codes.LOSS_BCE, 0.0, "global",
     (0.3, 0.4)),
    ("mse-dropout-minibatch", np.float64, (4, 6, 1), (codes.SOFTPLUS, I), True, codes.LOSS_MSE,
     0.05, "minibatch", (0.5, 0.25)),
]


@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_sgd_epoch_matches_reference_and_cpu_in_one_launch(case):
    _, dtype, sizes, acts, bias, loss, weight_decay, path, *drop = case
    args = _sgd_args(dtype, sizes, acts, bias, loss, 4, weight_decay, seed=sum(sizes) + loss,
                     drop=drop[0] if drop else 0.0)
    with gpu.count_launches() as launches:
        check_backends("sgd_epoch", args, EPOCH_TOL[dtype], names=SGD_NAMES,
                       kwargs={"cuda": {"path": path}})
    if path != "minibatch":
        assert dict(launches) == {"sgd_epoch": 1}


def test_sgd_path_picks_shared_memory_when_the_parameters_fit():
    def path(dtype, sizes):
        w_off, b_off, _ = mlp_layout(sizes)
        return gpu.sgd_path(dtype, sizes, w_off, b_off)
    assert path(np.float32, (784, 10)) == "shared"  # 7,850 parameters: 31 kB
    assert path(np.float64, (784, 10)) == "global"  # 63 kB: over the 48 kB
    assert path(np.float32, (784, 128, 10)) == "global"
    assert path(np.float32, (8192, 4096, 10)) == "minibatch"


# --------------------------------------------------------------------------- launch counts

def _count(depth, fused, n, batch, opt=codes.OPT_ADAM, drop=0.0):
    sizes = (3,) + (2,) * depth
    acts = (R,) * (depth - 1) + (I,)
    args = _minibatch_args(np.float32, sizes, acts, True, codes.LOSS_SOFTMAX_CE, n, batch,
                           opt, _hyper(opt), l2=0.01, weighted=True, seed=depth, drop=drop)
    with gpu.count_launches() as launches:
        gpu.minibatch_epoch(*args, fused=fused)
    return launches


def test_launches_per_step_fused_constant_layerwise_linear_in_depth():
    """The fused narrow path: 4 launches a step whatever the depth (gather, fused forward /
    loss / deltas, all weight gradients, optimizer), plus 1 an epoch (the loss reduction).
    The per-layer path: 2 L + 4 a step. Printed as a table (pytest -s)."""
    rows = []
    for depth in (1, 2, 4):
        fused = _count(depth, True, 4, 2)  # 2 steps
        assert fused["epoch_loss"] == 1
        per_step = (fused.total() - 1) / 2
        assert per_step == 4, dict(fused)
        assert {name: c for name, c in fused.items() if name != "epoch_loss"} == {
            "gather_batch": 2, "fused_mlp_train_step": 2, "weight_grads": 2,
            "adam_update": 2}
        layerwise = _count(depth, False, 2, 2)  # 1 step
        assert layerwise.total() - 1 == 2 * depth + 4, dict(layerwise)
        rows.append((depth, per_step, layerwise.total() - 1))
    # RMSprop, Adagrad, and dropout on every layer's input: still 4 a step on the fused path
    for opt, name in ((codes.OPT_RMSPROP, "rmsprop_update"), (codes.OPT_ADAGRAD,
                                                             "adagrad_update")):
        fused = _count(3, True, 4, 2, opt, drop=0.3)
        assert {n: c for n, c in fused.items() if n != "epoch_loss"} == {
            "gather_batch": 2, "fused_mlp_train_step": 2, "weight_grads": 2, name: 2}
    print("\nkernel launches per step (+1 per epoch: epoch_loss)")
    print(f"{'depth L':>8} {'fused':>6} {'per-layer':>10}")
    for depth, f, lw in rows:
        print(f"{depth:8d} {f:6.0f} {lw:10d}")


def test_sgd_epoch_is_one_launch_whatever_the_samples():
    args = _sgd_args(np.float32, (3, 4, 2), (T, I), True, codes.LOSS_SOFTMAX_CE, 5, 0.0, 1)
    with gpu.count_launches() as outer:
        with gpu.count_launches() as launches:
            gpu.sgd_epoch(*args)
    assert dict(launches) == dict(outer) == {"sgd_epoch": 1}


def test_weight_grads_one_launch_for_every_layer_both_kernels_across_tiles():
    """weight_grads (a thread per parameter, the fused path's) and weight_grads_tiled (16x16
    GEMM tiles, the per-layer path's) on layers that span 2 x 2 tiles, the layers' blocks
    spaced blk = 4 rows apart with m = 3 used, one bias missing: both equal the NumPy
    gradients, dW_l = a_{l-1}^T delta_l + 2 l2_l W_l, db_l = column sums of delta_l, written
    over whatever grads held. float64: sums of 3 products, STEP_TOL."""
    from backends import STEP_TOL

    from fastnn.kernels.layout import layer_views
    rng = np.random.default_rng(17)
    sizes = np.array([17, 18, 2])
    w_off, b_off, p = mlp_layout(sizes, (True, False))
    m, blk, off = 3, 4, np.array([0, 18])
    x = rng.standard_normal((m, 17))
    outs, deltas = rng.standard_normal(blk * 20), rng.standard_normal(blk * 20)
    params, two_l2 = rng.standard_normal(p), np.array([0.2, 0.0])
    want = np.zeros(p)
    dws, dbs = layer_views(want, sizes, w_off, b_off)
    ws, _ = layer_views(params, sizes, w_off, b_off)
    inputs = [x, outs[:m * 18].reshape(m, 18)]
    for l in range(2):
        fo = sizes[l + 1]
        d = deltas[blk * off[l]:blk * off[l] + m * fo].reshape(m, fo)
        dws[l][...] = inputs[l].T @ d + two_l2[l] * ws[l]
        if dbs[l].size:
            dbs[l][...] = d.sum(axis=0)
    k = gpu.namespace(np.float64)
    layout = [cuda.to_device(np.asarray(a, np.int64)) for a in (sizes, w_off, b_off, off)]
    args = [cuda.to_device(a) for a in (params, x, outs, deltas)]
    tiles = cuda.to_device(np.array([0, 4, 6], np.int64))
    for name, launch, extra in (("weight_grads", k.weight_grads[gpu._grid(p)], []),
                                ("weight_grads_tiled", k.weight_grads_tiled[6, (16, 16)],
                                 [tiles])):
        got = cuda.to_device(np.full(p, np.nan))
        with gpu.count_launches() as launches:
            launch(got, *args, *layout, *extra, cuda.to_device(two_l2), m, blk)
        assert dict(launches) == {name: 1}
        np.testing.assert_allclose(got.copy_to_host(), want, *STEP_TOL[np.float64],
                                   err_msg=name)
