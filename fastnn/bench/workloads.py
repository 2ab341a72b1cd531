"""The benchmark workloads, shared by `python -m fastnn bench` and benchmarks/ (pytest-benchmark).

Each workload builds a set of implementations, fastnn and its peers, that do identical work from
identical starting weights, and checks every one against fastnn (and fastnn against its NumPy
reference twin) before anything is timed: a fast wrong kernel measures nothing (llm.c's habit).

An implementation is a pair (setup, run): setup() resets whatever run changes (weights,
optimizer state) and returns run's argument; only run is timed.

Shape legend: N samples, F features, K classes, P parameters, B batch size.
"""
import json  # W7
import os  # W7
import socket  # W7
import subprocess  # W7
import sys  # W7
import tempfile  # W7
import threading  # W7
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize  # W7

from .. import Dense, Sequential, distributed, optim
from .. import cpu_backend  # W9
from ..layers import Stack  # W9
from ..losses import LossKernel  # W9
from ..kernels import codes, cpu
from ..kernels import reference
from ..kernels.layout import layer_views, mlp_layout
from . import peers

# Tolerances of the correctness checks, float32 weights after a short training run.
# Implementations sum dot products in different orders (BLAS blocking, fastnn's four-row
# sweeps), so logits differ by a few ulp and a couple of hundred updates carry that forward:
# measured differences are ~1e-7 on weights of size ~0.1. rtol 1e-4 / atol 1e-5 leave two
# decades of room and still catch a real bug (a wrong sign, a missing ReLU mask or bias step
# moves weights by lr * |x * delta| ~ 1e-3).
RTOL, ATOL = 1e-4, 1e-5


@dataclass
class Config:
    """Sizes of one suite run. quick() stays within a few minutes on a 2-core machine,
    full() is the issue's spec, smoke() is for CI: tiny, checks on, timing meaningless."""
    rounds: int = 3
    w1_samples: int = 5_000
    w2_samples: int = 20_000
    w3_widths: tuple = (16, 32, 64, 128, 256, 512, 1024)
    w3_torch_widths: tuple = (16, 32, 64, 128, 256, 512, 1024)
    w3_batches: tuple = (1, 64)
    w3_min_seconds: float = 0.05
    w4_sizes: tuple = ((4, 4, 2), (8, 8, 3), (16, 16, 4), (24, 32, 5), (40, 48, 6), (64, 64, 8),
                       (96, 96, 8), (160, 160, 10), (256, 256, 10), (400, 400, 10))
    w5_batches: tuple = (1, 1024)
    w5_min_seconds: float = 0.05
    threads: tuple = (1, 2)
    name: str = "quick"
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls):
        return cls()

    @classmethod
    def full(cls):
        return cls(rounds=5, w1_samples=10_000, w2_samples=60_000,
                   w3_widths=(16, 32, 64, 128, 256, 512, 1024, 2048),
                   w3_torch_widths=(16, 32, 64, 128, 256, 512, 1024, 2048),
                   w3_min_seconds=0.2, w5_min_seconds=0.2, name="full")

    @classmethod
    def smoke(cls):
        return cls(rounds=1, w1_samples=300, w2_samples=512, w3_widths=(16, 32),
                   w3_torch_widths=(16,), w3_min_seconds=0.0, w4_sizes=((4, 4, 2), (8, 8, 3)),
                   w5_batches=(1, 16), w5_min_seconds=0.0, threads=(1,), name="smoke")


def have_torch():
    return peers.torch is not None


def have_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- helpers

def fastnn_mlp(sizes, params, lr, momentum=0.0):
    """A compiled fastnn Sequential with ReLU hidden layers, identity output, softmax-CE and
    plain SGD, holding a copy of the flat buffer `params` (mlp_layout order, as the peers)."""
    layers = [Dense(int(u), activation="relu") for u in sizes[1:-1]] + [Dense(int(sizes[-1]))]
    model = Sequential(layers, seed=0, dtype=params.dtype.name)
    model.compile(optimizer=optim.SGD(lr=lr, momentum=momentum), loss="softmax_cross_entropy")
    model.build(int(sizes[0]))
    model.params[...] = params
    return model


def _reset(model, params):
    model.params[...] = params
    model.optimizer.build(model.params.size, model.dtype)
    return model


def check_close(name, got, want, outliers=0.0):
    """Raise AssertionError naming the implementation when two weight buffers disagree.

    outliers: the fraction of weights allowed beyond the tolerance. Wide ReLU layers need it:
    a pre-activation within rounding of 0 takes ReLU'=1 in one correct implementation and 0
    in the other, which changes that unit's whole gradient column. With 64 rows and 2048
    units per layer such ties occur (measured: 5,399 of 12.6M weights, 0.04%, in W3 at
    w=2048); with a few hundred units they do not."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL)
    if bad.sum() > outliers * bad.size:
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(f"{name} disagrees with fastnn: {int(bad.sum())} of {bad.size} "
                             f"weights differ beyond rtol {RTOL} / atol {ATOL}; first at {i}: "
                             f"{got[i]!r} vs {want[i]!r}")
    return float(np.max(np.abs(got - want))) if got.size else 0.0


def sklearn_load(clf, params, sizes, x, labels):
    """Give an sklearn MLPClassifier fastnn's weights: one tiny fit creates its structure,
    then coefs_ / intercepts_ are overwritten (sklearn also keeps W as (fan_in, fan_out))."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    # one sample of each class, so the output layer gets every class
    _, first = np.unique(labels, return_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # "batch_size ... will be clipped"
        clf.fit(x[first], labels[first])
    ws, bs = peers._views(params.astype(x.dtype), sizes)
    clf.coefs_ = [w.copy() for w in ws]
    clf.intercepts_ = [b.copy() for b in bs]
    clf.t_ = 0
    clf._optimizer = None  # a fresh SGD state on the next (warm-started) fit
    return clf


def sklearn_epoch(clf, x, labels):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, labels)  # warm_start and max_iter=1: one epoch from the loaded weights
    return clf


def sklearn_flat(clf, sizes):
    _, _, n = mlp_layout(sizes)
    flat = np.empty(n)
    ws, bs = peers._views(flat, sizes)
    for w, b, cw, cb in zip(ws, bs, clf.coefs_, clf.intercepts_):
        w[...] = cw
        b[...] = cb
    return flat


def add_sklearn_peer(impls, info, sizes, lr, batch_size, start, x, labels, n_check,
                     fastnn_after):
    """scikit-learn's MLPClassifier as a peer (where installed): loaded with the start weights,
    checked on n_check samples against fastnn's weights after the same steps, then timed over
    a whole epoch from the start weights each round."""
    if not have_sklearn():
        return
    clf = peers.sklearn_mlp(sizes, lr, batch_size=batch_size)
    sklearn_load(clf, start, sizes, x, labels)
    sklearn_epoch(clf, x[:n_check], labels[:n_check])
    info["checks"]["scikit-learn"] = check_close("scikit-learn", sklearn_flat(clf, sizes),
                                                 fastnn_after)
    impls["scikit-learn"] = (lambda: sklearn_load(clf, start, sizes, x, labels),
                             lambda c: sklearn_epoch(c, x, labels))


def flops_per_sample(sizes):
    """Multiply-adds x 2 of one training step per sample: forward x @ W, dW = x.T @ delta,
    and dx = delta @ W.T for every layer but the first."""
    total = 0
    for l in range(len(sizes) - 1):
        io = int(sizes[l]) * int(sizes[l + 1])
        total += 2 * io * (3 if l > 0 else 2)
    return total


def sgemm_gflops(n=1024, repeats=5):
    """The machine's float32 GEMM rate through NumPy's BLAS (at the current thread limit)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_gemm_gflops(sizes, batch, repeats=20):
    """NumPy's GEMM rate on exactly one training step's products at this batch size (forward
    x @ W, dW = x.T @ delta, dx = delta @ W.T): the ceiling for a step made only of its
    matrix products, lower than a large square sgemm's because the batch dimension is small."""
    rng = np.random.default_rng(0)
    mats = []
    for l in range(len(sizes) - 1):
        i, o = int(sizes[l]), int(sizes[l + 1])
        x = rng.random((batch, i), dtype=np.float32)
        w = rng.random((i, o), dtype=np.float32)
        d = rng.random((batch, o), dtype=np.float32)
        mats.append((x, w, d, l > 0))

    def step():
        for x, w, d, need_dx in mats:
            x @ w
            x.T @ d
            if need_dx:
                d @ w.T
    step()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return flops_per_sample(sizes) * batch / best / 1e9


# --------------------------------------------------------------------------- W1

W1_SIZES = (784, 128, 10)


def w1_per_sample(cfg, n_check=200):
    """Per-sample SGD, MLP 784-128-10, ReLU, softmax-CE, one epoch over cfg.w1_samples.
    Returns (impls, info); impls maps name -> (setup, run)."""
    sizes = np.array(W1_SIZES)
    lr = 0.01
    x, labels = peers.make_data(cfg.w1_samples, sizes[0], sizes[-1], seed=0)
    start = peers.init_params(sizes, np.float32, seed=1)
    order = np.arange(len(x))  # the data is already in random order: every peer walks it as is
    info = {"workload": "W1", "title": "per-sample SGD, 784-128-10, one epoch",
            "n_samples": len(x), "unit": "samples/s", "work": len(x), "checks": {}}

    # fastnn against its own NumPy twin, then every peer against fastnn
    model = fastnn_mlp(sizes, start, lr)
    model.fit(x[:n_check], labels[:n_check], epochs=1, batch_size=1, shuffle=False, verbose=0)
    want = start.copy()
    w_off, b_off, _ = mlp_layout(sizes)
    reference.sgd_epoch(want, x, labels, np.zeros((0, 0), np.float32), np.arange(n_check), sizes,
                        w_off, b_off, np.array([codes.RELU, codes.IDENTITY]), 0.0,
                        np.zeros(2), 0, codes.LOSS_SOFTMAX_CE, lr, 0.0)
    info["checks"]["fastnn vs reference"] = check_close("fastnn", model.params, want)
    fastnn_after = model.params.copy()

    p = start.copy()
    peers.numpy_sgd_epoch(p, x, labels, np.arange(n_check), sizes, lr)
    info["checks"]["numpy"] = check_close("numpy", p, fastnn_after)

    impls = {
        "fastnn": (lambda: _reset(model, start),
                   lambda m: m.fit(x, labels, epochs=1, batch_size=1, shuffle=False, verbose=0)),
        "numpy": (lambda: start.copy(),
                  lambda q: peers.numpy_sgd_epoch(q, x, labels, order, sizes, lr)),
    }
    if have_torch():
        torch = peers.torch
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
        net = peers.TorchMLP(start, sizes, lr)
        net.epoch(tx, ty, list(range(n_check)))
        info["checks"]["torch"] = check_close("torch", net.flat_params(), fastnn_after)
        order_list = [int(i) for i in order]
        for threads in cfg.threads:
            def run(n, threads=threads):
                with peers.torch_threads(threads):
                    n.epoch(tx, ty, order_list)
            impls[f"torch eager, {threads} thread{'s' * (threads > 1)}"] = (
                lambda: (net.load(start), net)[1], run)
    add_sklearn_peer(impls, info, sizes, lr, 1, start, x, labels, n_check, fastnn_after)
    return impls, info


# --------------------------------------------------------------------------- W2

W2_SIZES = (784, 256, 256, 10)
W2_BATCH = 128


def w2_minibatch(cfg, n_check=1024):
    """Mini-batch SGD, 784-256-256-10, batch 128, one epoch over cfg.w2_samples."""
    sizes = np.array(W2_SIZES)
    lr = 0.05
    x, labels = peers.make_data(cfg.w2_samples, sizes[0], sizes[-1], seed=0)
    start = peers.init_params(sizes, np.float32, seed=1)
    order = np.arange(len(x))
    info = {"workload": "W2", "title": f"mini-batch SGD, 784-256-256-10, batch {W2_BATCH}",
            "n_samples": len(x), "unit": "samples/s", "work": len(x),
            "flops_per_sample": flops_per_sample(sizes), "checks": {}}
    n_check = min(n_check, len(x))

    model = fastnn_mlp(sizes, start, lr)
    model.fit(x[:n_check], labels[:n_check], epochs=1, batch_size=W2_BATCH, shuffle=False,
              verbose=0)
    fastnn_after = model.params.copy()
    p = start.copy()
    peers.numpy_minibatch_epoch(p, x, labels, np.arange(n_check), sizes, lr, W2_BATCH)
    info["checks"]["numpy"] = check_close("numpy", p, fastnn_after)

    impls = {
        "fastnn": (lambda: _reset(model, start),
                   lambda m: m.fit(x, labels, epochs=1, batch_size=W2_BATCH, shuffle=False,
                                   verbose=0)),
        "numpy": (lambda: start.copy(),
                  lambda q: peers.numpy_minibatch_epoch(q, x, labels, order, sizes, lr, W2_BATCH)),
    }
    if have_torch():
        torch = peers.torch
        tx, ty, torder = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(order)
        net = peers.TorchMLP(start, sizes, lr)
        net.minibatch_epoch(tx, ty, torder[:n_check], W2_BATCH)
        info["checks"]["torch"] = check_close("torch", net.flat_params(), fastnn_after)
        impls["torch eager"] = (lambda: (net.load(start), net)[1],
                                lambda n: n.minibatch_epoch(tx, ty, torder, W2_BATCH))
    add_sklearn_peer(impls, info, sizes, lr, W2_BATCH, start, x, labels, n_check, fastnn_after)
    return impls, info


# --------------------------------------------------------------------------- W3

def w3_sizes(width):
    return np.array([width, width, width, width, 10])


def w3_step(cfg, width, batch, with_torch):
    """Per-step time of training [w, w, w, w, 10] at one batch size: an epoch of enough steps
    that the fit call's own overhead is amortised (fastnn runs a whole epoch per call)."""
    sizes = w3_sizes(width)
    _, _, n_params = mlp_layout(sizes)
    steps = int(np.clip(3e7 / (n_params * batch), 8, 4000)) if cfg.name != "smoke" else 4
    x, labels = peers.make_data(steps * batch, width, 10, seed=0)
    start = peers.init_params(sizes, np.float32, seed=1)
    lr = 0.01
    info = {"workload": "W3", "width": width, "batch": batch, "n_params": n_params,
            "steps": steps, "unit": "steps/s", "work": steps, "checks": {}}
    model = fastnn_mlp(sizes, start, lr)
    n_check = min(8, steps) * batch
    model.fit(x[:n_check], labels[:n_check], epochs=1, batch_size=batch, shuffle=False,
              verbose=0)
    impls = {"fastnn": (lambda: _reset(model, start),
                        lambda m: m.fit(x, labels, epochs=1, batch_size=batch, shuffle=False,
                                        verbose=0))}
    if with_torch and have_torch():
        torch = peers.torch
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
        net = peers.TorchMLP(start, sizes, lr)
        torder = torch.arange(len(x))
        net.minibatch_epoch(tx, ty, torder[:n_check], batch)
        info["checks"]["torch"] = check_close("torch", net.flat_params(), model.params,
                                              outliers=1e-3 if width >= 512 else 0.0)
        impls["torch eager"] = (lambda: (net.load(start), net)[1],
                                lambda n: n.minibatch_epoch(tx, ty, torder, batch))
    return impls, info


# --------------------------------------------------------------------------- W4

def w4_gradients(hidden_in, hidden, n_classes, batch=128, seed=0, max_coords=1024):
    """Backprop against central finite differences for one MLP [F, H, K] (ReLU, softmax-CE,
    float64): returns (P, seconds for backprop, seconds for 2P forward passes, relative error).
    Backprop costs O(P); finite differences 2P forward passes of O(P) each, O(P^2) (seed 000).
    With 128 rows a pass's arithmetic, not its ~15 us of call overhead, is the cost from a
    few thousand parameters on; the slopes are fitted there. ReLU, not tanh: a tanh per
    hidden unit would cost more than the products and scale with H, not with P.

    Every coordinate's central difference costs the same two forward passes, so past
    max_coords parameters the finite-difference time is measured on max_coords coordinates
    spread evenly over the buffer (every layer, weights and biases) and scaled by
    P / max_coords; those coordinates are also the ones checked against backprop."""
    rng = np.random.default_rng(seed)
    sizes = np.array([hidden_in, hidden, n_classes])
    w_off, b_off, n_params = mlp_layout(sizes)
    params = rng.standard_normal(n_params) * 0.3
    x = rng.standard_normal((batch, hidden_in))
    labels = rng.integers(0, n_classes, batch)
    acts = np.array([codes.RELU, codes.IDENTITY])
    ws, bs = layer_views(params, sizes, w_off, b_off)
    grads = np.zeros(n_params)
    dws, dbs = layer_views(grads, sizes, w_off, b_off)
    pre = [np.empty((batch, s)) for s in sizes[1:]]
    out = [np.empty((batch, s)) for s in sizes[1:]]
    dpre = [np.empty((batch, s)) for s in sizes[1:]]
    dout = [np.empty((batch, s)) for s in sizes[1:]]
    no_sw, no_dx = np.zeros(0), np.zeros((0, 0))

    def forward_loss():
        a = x
        for l in range(2):
            cpu.affine_act_forward(out[l], pre[l], a, ws[l], bs[l], acts[l], 0.0)
            a = out[l]
        return cpu.softmax_cross_entropy(dout[1], a, labels, no_sw, 0.0, True)

    def backprop():
        forward_loss()
        grads[...] = 0
        for l in (1, 0):
            cpu.affine_act_backward(dout[l - 1] if l else no_dx, dpre[l], dout[l], pre[l], out[l],
                                    ws[l], acts[l], 0.0)
            cpu.weight_grad(dws[l], dbs[l], x if l == 0 else out[l - 1], dpre[l])

    coords = np.unique(np.linspace(0, n_params - 1, min(n_params, max_coords)).astype(np.int64))

    def numeric():
        g = np.empty(len(coords))
        eps = 1e-6
        for k, i in enumerate(coords):
            keep = params[i]
            params[i] = keep + eps
            fp = forward_loss()
            params[i] = keep - eps
            fm = forward_loss()
            params[i] = keep
            g[k] = (fp - fm) / (2 * eps)
        return g

    backprop()
    t = time.perf_counter()
    reps = 0
    while True:
        backprop()
        reps += 1
        if time.perf_counter() - t > 0.02:
            break
    t_bp = (time.perf_counter() - t) / reps
    analytic = grads[coords]
    t = time.perf_counter()
    num = numeric()
    t_fd = (time.perf_counter() - t) * n_params / len(coords)
    # error relative to the gradient's scale: elementwise ratios blow up on components near 0,
    # where the central difference's round-off (~1e-16 * |loss| / eps ~ 1e-10) dominates
    err = float(np.max(np.abs(analytic - num)) / max(float(np.max(np.abs(analytic))), 1e-12))
    if err > 1e-5:
        raise AssertionError(f"backprop and finite differences disagree: max error {err:.2e} "
                             "relative to the largest gradient component")
    return n_params, t_bp, t_fd, err


# --------------------------------------------------------------------------- W5

W5_SIZES = (784, 256, 256, 10)


def w5_inference(cfg, batch):
    """Inference (logits) for 784-256-256-10 at one batch size."""
    sizes = np.array(W5_SIZES)
    start = peers.init_params(sizes, np.float32, seed=1)
    x, _ = peers.make_data(batch, sizes[0], sizes[-1], seed=2)
    model = fastnn_mlp(sizes, start, 0.01)
    got = model.predict(x)
    info = {"workload": "W5", "batch": batch, "unit": "samples/s", "work": batch, "checks": {}}
    info["checks"]["numpy"] = check_close("numpy", peers.numpy_predict(start, x, sizes), got)
    impls = {"fastnn": (lambda: model, lambda m: m.predict(x)),
             "numpy": (lambda: start, lambda p: peers.numpy_predict(p, x, sizes))}
    if have_torch():
        torch = peers.torch
        net = peers.TorchMLP(start, sizes, 0.01)
        tx = torch.from_numpy(x)
        info["checks"]["torch"] = check_close("torch", net.predict(tx).numpy(), got)
        impls["torch"] = (lambda: net, lambda n: n.predict(tx))
    return impls, info


# ---- W9: Hessian-vector products

# widths w of the [w, w, w, 10] tanh network: P = 2 w^2 + 13 w + 10, from ~1e3 to ~1e6
W9_WIDTHS = {"smoke": (8, 16), "quick": (20, 45, 100, 220, 450),
             "full": (20, 45, 100, 220, 450, 700)}
W9_BATCH = 128


def w9_hvp(cfg, width):
    """One Hessian-vector product (kernels.cpu.mlp_hvp, the R-operator) beside one gradient
    (fastnn.cpu_backend.gradient, the one fit and diagnostics use) on the same float32
    network and batch, and PyTorch's double-backward hvp (grad of (grad . v)) beside its own
    gradient. Checked first: fastnn's H v against PyTorch's, and the two gradients."""
    sizes = np.array([width, width, width, 10])
    w_off, b_off, n_params = mlp_layout(sizes)
    x, labels = peers.make_data(W9_BATCH, width, 10, seed=0)
    params = peers.init_params(sizes, np.float32, seed=1)
    v = np.random.default_rng(2).standard_normal(n_params).astype(np.float32)
    stack = Stack([Dense(width, activation="tanh"), Dense(width, activation="tanh"),
                   Dense(10)], width, np.float32)
    kernel = LossKernel(codes.LOSS_SOFTMAX_CE)
    no_targets, no_sw, hv = np.zeros((0, 0), np.float32), np.zeros(0, np.float32), \
        np.empty_like(params)

    def hvp(_):
        cpu.mlp_hvp(hv, params, v, x, labels, no_targets, no_sw, stack.sizes, stack.w_off,
                    stack.b_off, stack.acts, stack.alpha, stack.l2, kernel.code, 0.0)
        return hv

    def gradient(_):
        return cpu_backend.gradient(stack, params, x, labels, None, kernel)[1]

    info = {"workload": "W9", "width": width, "n_params": n_params, "batch": W9_BATCH,
            "unit": "products/s", "work": 1, "checks": {}}
    impls = {"fastnn": (lambda: None, hvp), "fastnn gradient": (lambda: None, gradient)}
    if have_torch():
        torch = peers.torch
        tx, ty, tv = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(v)
        tp = torch.from_numpy(params.copy()).requires_grad_(True)

        def objective(p):
            a = tx
            for l in range(3):
                w = p[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].view(int(sizes[l]),
                                                                        int(sizes[l + 1]))
                a = a @ w + p[b_off[l]:b_off[l] + sizes[l + 1]]
                a = torch.tanh(a) if l < 2 else a
            return torch.nn.functional.cross_entropy(a, ty)

        def torch_hvp(_):
            g, = torch.autograd.grad(objective(tp), tp, create_graph=True)
            return torch.autograd.grad(g @ tv, tp)[0]

        def torch_gradient(_):
            return torch.autograd.grad(objective(tp), tp)[0]

        want_hv, got_hv = torch_hvp(None).numpy(), hvp(None)
        scale = float(np.abs(want_hv).max())
        # float32, sums of up to a few thousand terms in other orders (BLAS blocking): ~1e-6
        # of the largest entry; a wrong second-derivative term moves entries by O(1) of it
        err = float(np.abs(got_hv - want_hv).max()) / scale
        if err > 1e-4:
            raise AssertionError(f"W9 width {width}: fastnn's H v differs from PyTorch's by "
                                 f"{err:.2e} of its largest entry")
        info["checks"]["torch"] = {"max_err_over_max": err}
        info["checks"]["torch gradient"] = check_close("torch gradient",
                                                       torch_gradient(None).numpy(),
                                                       gradient(None))
        impls["torch double backward"] = (lambda: None, torch_hvp)
        impls["torch gradient"] = (lambda: None, torch_gradient)
    return impls, info


# ---- W8: kernel SVM

W8_SIZES = {"smoke": (300,), "quick": (5_000,), "full": (5_000, 20_000, 50_000)}
W8_TEST = 0.2  # held-out fraction, for the accuracy column


def w8_data(dataset, seed=0):
    """(X, y, X_test, y_test): an int is that many training samples of
    make_classification(n_features=20, n_informative=10) (plus W8_TEST as many held out),
    "digits" scikit-learn's digits (/16), 80/20."""
    from sklearn.datasets import load_digits, make_classification
    if dataset == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
        n = int(len(y) * (1 - W8_TEST))
    else:
        n = int(dataset)
        X, y = make_classification(n + int(n * W8_TEST), n_features=20, n_informative=10,
                                   random_state=seed)
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = X[order], y[order]
    return X[:n], y[:n], X[n:], y[n:]


def w8_svc(dataset, threads=(1, 2)):
    """fastnn.svm.SVC (on 1 and 2 numba threads) and scikit-learn's SVC (libsvm, one
    thread), RBF, C = 1, gamma "scale", tol 1e-3, cache 200 MB: one fit each. Checked
    before timing: the same support-vector count within 1% and the same test predictions on
    at least 99.5% of the held-out samples, against libsvm at tol 1e-8 up to 2,048 samples
    (where fastnn's exact finish makes its fit the optimum), at its default above (both
    stop at a tol-optimal point, not the same one; measured: identical support sets at
    5,000)."""
    import numba
    from sklearn.svm import SVC as SklearnSVC

    from ..svm import SVC

    X, y, X_test, y_test = w8_data(dataset)
    # the reference for the checks: within the exact finish's budget (fastnn.svm: every
    # problem up to 2,048 samples) fastnn's fit is the optimum, which libsvm reaches at a
    # tight tol (on 300 samples its default stop differed on 1 of 60 held-out predictions);
    # above it both stop within tol. The timed libsvm fit is the default one in every case.
    ours = SVC().fit(X, y)
    theirs = SklearnSVC(tol=1e-8 if len(y) <= 2048 else 1e-3).fit(X, y)
    n_sv = {"fastnn": int(ours.support_.size), "scikit-learn SVC": int(theirs.support_.size)}
    p_ours, p_theirs = ours.predict(X_test), theirs.predict(X_test)
    agree = float(np.mean(p_ours == p_theirs))
    if abs(n_sv["fastnn"] - n_sv["scikit-learn SVC"]) > 0.01 * n_sv["scikit-learn SVC"] + 1 \
            or agree < 0.995:
        raise AssertionError(f"W8 {dataset}: fastnn and scikit-learn disagree: support vectors "
                             f"{n_sv}, test predictions agree on {agree:.4f}")
    info = {"workload": "W8", "dataset": dataset, "unit": "samples/s", "work": len(y),
            "title": f"SVC fit, RBF, {dataset} ({len(y)} training samples)",
            "n_support": n_sv, "prediction_agreement": agree,
            "accuracy": {"fastnn": float(np.mean(p_ours == y_test)),
                         "scikit-learn SVC": float(np.mean(p_theirs == y_test))},
            "checks": {"scikit-learn SVC": {"n_support": n_sv, "agreement": agree}}}

    def fastnn_fit(n_threads):
        def run(_):
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            try:
                SVC().fit(X, y)
            finally:
                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        return run

    impls = {}
    for t in threads:
        impls["fastnn" if t == 1 else f"fastnn, {t} threads"] = (lambda: None, fastnn_fit(t))
    impls["scikit-learn SVC"] = (lambda: None, lambda _: SklearnSVC().fit(X, y))
    return impls, info


# ---- W6: convex models to the optimum

# (rows, features) of the synthetic W6 problems per suite; "full" is the sizes
W6_SIZES = {
    "smoke": {"logistic_dense": (600, 10), "logistic_csr": (800, 600), "softmax": (400, 12),
              "svm": (500, 10), "ridge_dense": (600, 10), "ridge_csr": (800, 300)},
    "quick": {"logistic_dense": (20_000, 100), "logistic_csr": (20_000, 20_000),
              "softmax": (10_000, 200), "svm": (20_000, 100), "ridge_dense": (50_000, 100),
              "ridge_csr": (50_000, 1_000)},
    "full": {"logistic_dense": (100_000, 100), "logistic_csr": (50_000, 50_000),
             "softmax": (50_000, 200), "svm": (20_000, 100), "ridge_dense": (100_000, 100),
             "ridge_csr": (200_000, 2_000)},
}
W6_DENSITY = {"logistic_csr": 0.002, "ridge_csr": 0.005}
W6_REL = 1e-6  # the bar: max |coef − optimum| / max |optimum|
W6_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12)  # scikit-learn's tol ladder


def _w6_synthetic(kind, n, d, seed=0):
    """X (dense N(0, 1), or CSR with W6_DENSITY of N(0, 1) entries) and y from a random linear
    model with noise: ±1 labels through a logistic draw, 10 classes through Gumbel noise
    (softmax), or real targets."""
    import scipy.sparse
    rng = np.random.default_rng(seed)
    if kind in W6_DENSITY:
        X = scipy.sparse.random(n, d, density=W6_DENSITY[kind], format="csr", random_state=rng,
                                data_rvs=rng.standard_normal)
        scale = 1.0 / np.sqrt(max(d * W6_DENSITY[kind], 1.0))
    else:
        X = rng.standard_normal((n, d))
        scale = 1.0 / np.sqrt(d)
    if kind == "softmax":
        z = X @ (rng.standard_normal((d, 10)) * 3 * scale) + rng.gumbel(size=(n, 10))
        return X, np.argmax(z, axis=1)
    z = X @ (rng.standard_normal(d) * 3 * scale)
    if kind.startswith("ridge"):
        return X, z + 0.5 * rng.standard_normal(n) + 1.0
    return X, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)


def w6_problems(cfg_name):
    """The W6 rows: (name, kind, X, y, params, fit_intercept, scikit-learn solvers)."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.preprocessing import StandardScaler
    sizes = W6_SIZES.get(cfg_name, W6_SIZES["quick"])
    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    digits_x, digits_y = load_digits(return_X_y=True)
    lr = ("lbfgs", "newton-cg", "newton-cholesky")
    rows = [("LogisticRegression, breast cancer (scaled)", "logistic",
             StandardScaler().fit_transform(cancer_x), cancer_y, 1.0, True, lr),
            ("LogisticRegression, breast cancer (raw)", "logistic", cancer_x, cancer_y, 1.0,
             True, lr)]
    if cfg_name == "smoke":  # CI: the synthetic rows at tiny sizes only (lbfgs alone spends
        rows = []            # ~10 s failing to reach 1e-6 on raw breast cancer)
    n, d = sizes["logistic_dense"]
    rows.append((f"LogisticRegression, {n:,} x {d} dense", "logistic",
                 *_w6_synthetic("logistic_dense", n, d), 1.0, True, lr))
    n, d = sizes["logistic_csr"]
    # no intercept, so that liblinear (which penalises one) solves the same problem
    rows.append((f"LogisticRegression, {n:,} x {d:,} CSR {W6_DENSITY['logistic_csr']:.1%}",
                 "logistic", *_w6_synthetic("logistic_csr", n, d), 1.0, False,
                 ("lbfgs", "newton-cg", "liblinear")))
    if cfg_name != "smoke":
        rows.append(("SoftmaxRegression, digits (scaled)", "softmax",
                     StandardScaler().fit_transform(digits_x), digits_y, 1.0, True, lr))
    n, d = sizes["softmax"]
    rows.append((f"SoftmaxRegression, {n:,} x {d} dense, 10 classes", "softmax",
                 *_w6_synthetic("softmax", n, d), 1.0, True, lr))
    n, d = sizes["svm"]
    rows.append((f"LinearSVM (squared hinge, C=0.1), {n:,} x {d} dense", "svm",
                 *_w6_synthetic("logistic_dense", n, d, seed=1), 0.1, True,
                 ("liblinear dual", "liblinear primal")))
    n, d = sizes["ridge_dense"]
    ridge = ("cholesky", "svd", "lsqr", "sparse_cg")
    rows.append((f"LinearRegression (alpha=1), {n:,} x {d} dense", "ridge",
                 *_w6_synthetic("ridge_dense", n, d), 1.0, True, ridge))
    n, d = sizes["ridge_csr"]
    rows.append((f"LinearRegression (alpha=1), {n:,} x {d:,} CSR "
                 f"{W6_DENSITY['ridge_csr']:.1%}", "ridge",
                 *_w6_synthetic("ridge_csr", n, d), 1.0, True,
                 ("lsqr", "sparse_cg", "sag")))  # cholesky: no intercept on sparse X
    return rows


def _w6_coef(est, kind):
    """The fitted parameters as one vector: coef_ and intercept_ (a softmax's intercepts
    centred: softmax ignores a shift shared by all classes)."""
    b = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))
    if kind == "softmax":
        b = b - b.mean()
    return np.r_[np.ravel(est.coef_), b]


def _w6_fastnn(kind, param, fit_intercept, **kw):
    from .. import linear_model as lm
    if kind == "logistic":
        return lm.LogisticRegression(C=param, fit_intercept=fit_intercept, **kw)
    if kind == "softmax":
        return lm.SoftmaxRegression(C=param, fit_intercept=fit_intercept, **kw)
    if kind == "svm":
        return lm.LinearSVM(C=param, loss="squared_hinge", fit_intercept=fit_intercept, **kw)
    return lm.LinearRegression(alpha=param, fit_intercept=fit_intercept, **kw)


def _w6_sklearn(kind, param, fit_intercept, solver, tol):
    import sklearn.linear_model as sk_lm
    from sklearn.svm import LinearSVC
    if kind in ("logistic", "softmax"):
        return sk_lm.LogisticRegression(C=param, fit_intercept=fit_intercept, solver=solver,
                                        tol=tol, max_iter=100_000)
    if kind == "svm":
        return LinearSVC(C=param, loss="squared_hinge", dual=solver == "liblinear dual",
                         fit_intercept=fit_intercept, tol=tol, max_iter=1_000_000)
    return sk_lm.Ridge(alpha=param, fit_intercept=fit_intercept, solver=solver, tol=tol,
                       max_iter=100_000)


def _fit_one_thread(est, X, y):
    from ..estimator_utils import one_blas_thread  # scikit-learn's side: imported with it
    with one_blas_thread():
        return est.fit(X, y)


def _w6_error(coef, ref):
    return float(np.max(np.abs(coef - ref)) / np.max(np.abs(ref)))


def w6_row(problem, tight=True):
    """One W6 row, checked before it is timed: the reference optimum (fastnn's own solver at
    tol 1e-13, ridge's direct solve; some scikit-learn solver must reproduce it to 1e-6, or
    the row fails), fastnn's default fit and its error, and for each scikit-learn solver the
    loosest tol of W6_TOLS whose fit is within W6_REL of the optimum (its error, or its best
    error when no tol reaches it). Returns (impls to time, info)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..estimator_utils import one_blas_thread
    name, kind, X, y, param, fit_intercept, solvers = problem
    # ridge: a tol no CG reaches, so the reference is the direct (Cholesky) solve
    tight_kw = {"tol": 1e-13, "max_iter": 100_000} if kind != "ridge" else {"tol": 1e-15}
    if kind == "svm":
        tight_kw = {"tol": 1e-13, "max_iter": 1000}
    ref = _w6_coef(_w6_fastnn(kind, param, fit_intercept, **tight_kw).fit(X, y), kind)
    ours = _w6_fastnn(kind, param, fit_intercept).fit(X, y)
    info = {"workload": "W6", "title": name, "work": X.shape[0], "unit": "fits/s",
            "fastnn_error": _w6_error(_w6_coef(ours, kind), ref), "sklearn": {},
            "checks": {}}
    impls = {"fastnn": (lambda: None, lambda _: _w6_fastnn(kind, param, fit_intercept)
                        .fit(X, y))}
    exact = {"cholesky", "svd"}  # direct solves: tol does not apply
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in solvers:
            best = None
            for tol in ((1e-3,) if solver in exact else W6_TOLS):
                start = time.perf_counter()
                est = _w6_sklearn(kind, param, fit_intercept, solver, tol).fit(X, y)
                seconds = time.perf_counter() - start
                err = _w6_error(_w6_coef(est, kind), ref)
                if best is None or err < best["error"]:
                    best = {"tol": tol, "error": err, "seconds_once": seconds}
                if err <= W6_REL or seconds > 20:  # a solver that slow is out of the race
                    break
            best["reached"] = best["error"] <= W6_REL
            info["sklearn"][solver] = best
            if best["reached"]:
                tol = best["tol"]
                impls[f"scikit-learn {solver}"] = (
                    lambda: None, lambda _, s=solver, t=tol: _w6_sklearn(
                        kind, param, fit_intercept, s, t).fit(X, y))
                # the same fit with BLAS on one thread: on a 2-core machine scikit-learn's
                # threaded BLAS can contend with itself (its lbfgs on 50,000 x 50,000 CSR:
                # 1.19 s on one thread, 2.22 s on two), so the best peer is the faster of
                # the two configurations; its error is checked at one thread too
                with one_blas_thread():
                    err1 = _w6_error(_w6_coef(_w6_sklearn(kind, param, fit_intercept, solver,
                                                          tol).fit(X, y), kind), ref)
                best["error_1_thread"] = err1
                if err1 <= W6_REL:
                    impls[f"scikit-learn {solver}, 1 thread"] = (
                        lambda: None, lambda _, s=solver, t=tol: _fit_one_thread(
                            _w6_sklearn(kind, param, fit_intercept, s, t), X, y))
    best_err = min(v["error"] for v in info["sklearn"].values())
    info["checks"]["reference"] = {"best_sklearn_error": best_err}
    if best_err > 1e-4:
        raise AssertionError(f"W6 {name}: no scikit-learn solver comes within 1e-4 of "
                             f"fastnn's optimum (best {best_err:.1e}): they disagree")
    return impls, info


# ---- W7 distributed

# rows per rank, interleaved rounds, the allreduce sizes P (float32 values) and the seconds
# each allreduce timing fills, per suite
W7_SIZES = {
    "smoke": {"samples": 256, "rounds": 1, "allreduce": (1_000, 269_322), "seconds": 0.0,
              "timeout": 900},  # a hang guard: cold Numba caches compile for minutes
    "quick": {"samples": 10_000, "rounds": 3, "seconds": 0.05, "timeout": 1200,
              "allreduce": (1_000, 3_000, 10_000, 30_000, 100_000, 269_322, 1_000_000)},
    "full": {"samples": 30_000, "rounds": 5, "seconds": 0.2, "timeout": 1800,
             "allreduce": (1_000, 3_000, 10_000, 30_000, 100_000, 269_322, 1_000_000)},
}
W7_RANKS = 2
W7_P = 269_322  # W2's parameter count: the allreduce of one step's gradient
# The projection's networks: link rate (bit/s) and an ASSUMED per-message latency alpha (s):
# MPI over TCP on 10 Gb/s Ethernet ~20 us, over RDMA (InfiniBand / RoCE) at 100 Gb/s ~2 us.
# Nothing here measures a network; the machine's own fitted beta is shared memory's.
W7_NETWORKS = {"10 Gb/s Ethernet (TCP)": (10e9, 20e-6), "100 Gb/s RDMA": (100e9, 2e-6)}
W7_MACHINES = (8, 64)


def w7_launch(cfg_name, ranks=W7_RANKS, out_dir=None, progress=None, rounds=None):
    """Run fastnn.bench.w7_worker on `ranks` ranks with the sizes of W7_SIZES[cfg_name] (and
    `rounds` interleaved rounds, default the suite's) and return rank 0's results (dict; see
    the worker's docstring). The ranks reach each other
    for torch.distributed through MASTER_ADDR/MASTER_PORT (a free local port); rank 0's
    progress lines go to `progress` (a callable) or stderr."""
    sizes = W7_SIZES.get(cfg_name, W7_SIZES["quick"])
    with socket.socket() as s:  # a free port for gloo's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        out = os.path.join(tmp, "w7.json")
        cmd = distributed.mpiexec_command(ranks) + [
            # -m mpi4py: an exception on one rank (a failed check) aborts the whole job
            sys.executable, "-m", "mpi4py", "-m", "fastnn.bench.w7_worker", out,
            "--samples", str(sizes["samples"]), "--rounds", str(rounds or sizes["rounds"]),
            "--allreduce-sizes", ",".join(str(p) for p in sizes["allreduce"]),
            "--allreduce-seconds", str(sizes["seconds"])]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines = []

        def forward():  # rank 0's progress and any rank's errors, as they come
            for line in proc.stdout:
                lines.append(line)
                (progress or (lambda m: print(m, file=sys.stderr)))(line.rstrip())
        reader = threading.Thread(target=forward, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=sizes["timeout"])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"W7: the {ranks}-rank job ran past {sizes['timeout']} s") \
                from None
        reader.join()
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"W7: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                               + "".join(lines[-40:]))
        with open(out) as f:
            return json.load(f)


def ring_allreduce_fit(ranks, p_values, seconds, bytes_per_value=4):
    """alpha (s per message) and beta (s per byte) of a ring allreduce,
    t = 2(R-1) alpha + 2(R-1)/R P b beta, fitted by non-negative least squares on the relative
    error (each row divided by its measured t, so the microsecond points weigh as much as the
    millisecond ones). Returns (alpha, beta, the fit's largest relative error)."""
    t = np.asarray(seconds, float)
    p = np.asarray(p_values, float)
    A = np.column_stack([np.full_like(p, 2.0 * (ranks - 1)),
                         2.0 * (ranks - 1) / ranks * p * bytes_per_value])
    (alpha, beta), _ = scipy.optimize.nnls(A / t[:, None], np.ones_like(t))
    worst = float(np.max(np.abs(A @ [alpha, beta] - t) / t))
    return float(alpha), float(beta), worst


def ring_allreduce_time(alpha, beta, ranks, p, bytes_per_value=4):
    """The α–β model's seconds for one ring allreduce of p values over `ranks` machines."""
    return 2.0 * (ranks - 1) * alpha + 2.0 * (ranks - 1) / ranks * p * bytes_per_value * beta
