"""fastnn's fused per-sample SGD epoch beside its peers, in one run.

Every benchmark times ONE full epoch of per-sample SGD (batch size 1, lr 0.01, no momentum,
no weight decay) over 10,000 samples of a 784-128-10 MLP (ReLU hidden layer, softmax
cross-entropy), from the same starting weights, in the same visiting order. Each round starts
from a fresh copy of those weights (pedantic's setup, not timed), so every round does
identical work.

Before it is timed, every implementation is checked on a short epoch from the same start:
fastnn against its NumPy twin kernels.reference.sgd_epoch, each peer against fastnn. A fast
wrong kernel measures nothing. Nothing here asserts on time: shared machines are noisy, and
the numbers are for benchmarks/report.py to put side by side.

    pytest benchmarks/ --benchmark-only --benchmark-json=RESULTS.json
    python benchmarks/report.py RESULTS.json
"""
import os

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from fastnn.kernels import cpu, reference
from fastnn.kernels.codes import IDENTITY, LOSS_SOFTMAX_CE, RELU
from fastnn.kernels.layout import mlp_layout
from fastnn.bench.peers import TorchMLP, numpy_sgd_epoch, torch_threads

GROUP = "per-sample-sgd-784-128-10"
GROUP_64 = "per-sample-sgd-784-128-10-float64"
LR = 0.01
N_CHECK = 200  # samples in the correctness check before each benchmark

# Tolerances of the correctness checks.
# float32: the implementations sum the 784- and 128-term dot products in different orders
# (fastnn four rows per sweep with reassociation, BLAS gemv/gemm in blocks), so each logit
# differs by a few ulp, and 200 updates carry that forward. Measured: the largest difference is
# ~1e-7 on weights of size up to ~0.1-0.2, i.e. ~1e-6 relative; rtol 1e-4 leaves two decades of
# room and still catches any real bug (a wrong sign, a missing ReLU mask or bias step changes
# weights by lr * |x * delta| ~ 1e-3). atol 1e-5 covers the weights that are near 0, where a
# relative test means nothing. One known, rare failure mode: a pre-activation within a few ulp
# of 0 can fall on different sides of the ReLU in two implementations; with this seed it
# does not happen.
RTOL_32, ATOL_32 = 1e-4, 1e-5
# float64: the same argument with an epsilon 2^29 times smaller; measured differences ~1e-16.
RTOL_64, ATOL_64 = 1e-9, 1e-12


def fastnn_sgd_epoch(params, x, labels, order, sizes, lr):
    """fastnn.kernels.cpu.sgd_epoch with the peers' arguments: ReLU hidden layers, identity
    output, softmax cross-entropy, no weight decay. Updates params in place; returns the mean
    loss."""
    w_off, b_off, _ = mlp_layout(sizes)
    acts = np.full(len(sizes) - 1, RELU, np.int64)
    acts[-1] = IDENTITY
    no_targets = np.empty((0, int(sizes[-1])), params.dtype)  # softmax CE reads labels only
    return cpu.sgd_epoch(params, x, labels, no_targets, order, sizes, w_off, b_off, acts,
                         0.0, np.zeros(len(acts)), 0, LOSS_SOFTMAX_CE, lr, 0.0)


def reference_sgd_epoch(params, x, labels, order, sizes, lr):
    """kernels.reference.sgd_epoch (the NumPy oracle) with the same arguments as above."""
    w_off, b_off, _ = mlp_layout(sizes)
    acts = np.full(len(sizes) - 1, RELU, np.int64)
    acts[-1] = IDENTITY
    no_targets = np.empty((0, int(sizes[-1])), params.dtype)
    return reference.sgd_epoch(params, x, labels, no_targets, order, sizes, w_off, b_off, acts,
                               0.0, np.zeros(len(acts)), 0, LOSS_SOFTMAX_CE, lr, 0.0)


def check_same_epoch(expected_epoch, actual_epoch, params0, x, labels, order, sizes, rtol, atol):
    """Run both epochs over order[:N_CHECK] from copies of params0; assert the resulting
    weights and mean losses match. Returns the largest absolute weight difference."""
    short = order[:N_CHECK]
    p_exp, p_act = params0.copy(), params0.copy()
    loss_exp = expected_epoch(p_exp, x, labels, short, sizes, LR)
    loss_act = actual_epoch(p_act, x, labels, short, sizes, LR)
    # the check must see training happen, or matching weights would prove nothing
    assert not np.array_equal(p_exp, params0)
    np.testing.assert_allclose(p_act, p_exp, rtol=rtol, atol=atol)
    np.testing.assert_allclose(loss_act, loss_exp, rtol=rtol)
    return float(np.max(np.abs(p_act.astype(np.float64) - p_exp)))


def record(benchmark, impl, threads, dtype, loss, check_diff):
    """Store what report.py needs beside the timings (n_samples is already there)."""
    info = benchmark.extra_info
    info.update(impl=impl, threads=threads, dtype=np.dtype(dtype).name,
                mean_loss=float(loss), check_max_abs_diff=check_diff,
                # other work on a small shared machine slows multi-threaded peers the most
                # (their threads wait at barriers for a core someone else holds): keep the load
                loadavg_1min=os.getloadavg()[0])
    # stats is None when timing is disabled (--benchmark-disable): one plain call, no numbers
    if benchmark.stats is not None:
        info["samples_per_s"] = info["n_samples"] / benchmark.stats.stats.median


def time_epoch(benchmark, epoch, params0, x, labels, order, sizes, rounds):
    """Time `epoch` over all of `order`, each round from a fresh copy of params0."""
    benchmark.extra_info["n_samples"] = len(order)

    def setup():
        return (params0.copy(), x, labels, order, sizes, LR), {}

    return benchmark.pedantic(epoch, setup=setup, rounds=rounds, iterations=1)


# --------------------------------------------------------------------------- float32

@pytest.mark.benchmark(group=GROUP)
def test_fastnn(benchmark, data, order, params32, sizes, rounds):
    x, labels = data
    # the check also compiles the float32 specialisation (or loads it from numba's cache),
    # so no round times the compiler
    diff = check_same_epoch(reference_sgd_epoch, fastnn_sgd_epoch, params32, x, labels, order,
                            sizes, RTOL_32, ATOL_32)
    loss = time_epoch(benchmark, fastnn_sgd_epoch, params32, x, labels, order, sizes, rounds)
    record(benchmark, "fastnn", 1, np.float32, loss, diff)


@pytest.mark.benchmark(group=GROUP)
def test_numpy(benchmark, data, order, params32, sizes, rounds):
    x, labels = data
    # one BLAS thread, like fastnn's kernel; at these sizes (gemv on 784 x 128) a second
    # thread did not help in a trial run anyway
    with threadpool_limits(1, user_api="blas"):
        diff = check_same_epoch(fastnn_sgd_epoch, numpy_sgd_epoch, params32, x, labels, order,
                                sizes, RTOL_32, ATOL_32)
        loss = time_epoch(benchmark, numpy_sgd_epoch, params32, x, labels, order, sizes, rounds)
    record(benchmark, "numpy", 1, np.float32, loss, diff)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_torch_eager(benchmark, data, order, params32, sizes, rounds, n_threads):
    x, labels = data
    net = TorchMLP(params32, sizes, LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    order_list = order.tolist()  # Python ints: slicing a tensor with them is the cheapest

    def torch_epoch(params, x, labels, order, sizes, lr):
        # the checker's calling convention; only TorchMLP.epoch is timed below
        net.load(params)
        with torch_threads(n_threads):
            loss = net.epoch(xt, yt, order.tolist())
        params[...] = net.flat_params()
        return loss

    diff = check_same_epoch(fastnn_sgd_epoch, torch_epoch, params32, x, labels, order, sizes,
                            RTOL_32, ATOL_32)

    def setup():
        net.load(params32)  # copies into the Linear layers; plain SGD keeps no other state
        return (xt, yt, order_list), {}

    benchmark.extra_info["n_samples"] = len(order_list)
    with torch_threads(n_threads):
        loss = benchmark.pedantic(net.epoch, setup=setup, rounds=rounds, iterations=1)
    record(benchmark, f"torch-eager-{n_threads}t", n_threads, np.float32, loss, diff)


# --------------------------------------------------------------------------- float64

@pytest.fixture(scope="module")
def data64(data):
    x, labels = data
    return x.astype(np.float64), labels


@pytest.fixture(scope="module")
def params64(params32):
    p = params32.astype(np.float64)
    p.flags.writeable = False
    return p


@pytest.mark.benchmark(group=GROUP_64)
def test_fastnn_float64(benchmark, data64, order, params64, sizes, rounds):
    x, labels = data64
    diff = check_same_epoch(reference_sgd_epoch, fastnn_sgd_epoch, params64, x, labels, order,
                            sizes, RTOL_64, ATOL_64)
    loss = time_epoch(benchmark, fastnn_sgd_epoch, params64, x, labels, order, sizes, rounds)
    record(benchmark, "fastnn", 1, np.float64, loss, diff)


@pytest.mark.benchmark(group=GROUP_64)
def test_numpy_float64(benchmark, data64, order, params64, sizes, rounds):
    x, labels = data64
    with threadpool_limits(1, user_api="blas"):
        diff = check_same_epoch(fastnn_sgd_epoch, numpy_sgd_epoch, params64, x, labels, order,
                                sizes, RTOL_64, ATOL_64)
        loss = time_epoch(benchmark, numpy_sgd_epoch, params64, x, labels, order, sizes, rounds)
    record(benchmark, "numpy", 1, np.float64, loss, diff)
