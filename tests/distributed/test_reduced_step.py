"""The pieces of a distributed mini-batch step (kernels.mpi.minibatch_epoch), in a world of one
(no mpiexec): the fused step after the Allreduce (kernels.cpu._reduced_step) against the
passes it replaces, and the whole distributed epoch on one rank against the plain fit.
"""
import numpy as np
import pytest

import fastnn as fn
from fastnn.kernels import codes, cpu
from fastnn.kernels.layout import mlp_layout

# sizes whose weight blocks straddle the boundaries of _reduced_step's blocks of
# REDUCED_BLOCK values (layer 0's weights end past the first, layer 1's cross the second)
SIZES = np.array([3, cpu.REDUCED_BLOCK // 2 - 1, 3])


def hyper(**kw):
    h = np.zeros(codes.N_HYPER)
    h[codes.HYPER_LR] = 0.05
    h[codes.HYPER_BETA1], h[codes.HYPER_BETA2], h[codes.HYPER_EPS] = 0.9, 0.999, 1e-8
    h[codes.HYPER_RHO], h[codes.HYPER_LR_DECAY] = 0.9, 0.01
    for name, value in kw.items():
        h[getattr(codes, "HYPER_" + name.upper())] = value
    return h


OPTIMIZERS = {  # name: (opt code, hyper, state arrays used)
    "sgd": (codes.OPT_SGD, hyper(), 0),
    "sgd_nesterov_wd": (codes.OPT_SGD, hyper(momentum=0.9, nesterov=1, weight_decay=0.01), 1),
    "adam": (codes.OPT_ADAM, hyper(), 2),
    "adamw": (codes.OPT_ADAM, hyper(weight_decay=0.1, decoupled=1), 2),
    "rmsprop_momentum": (codes.OPT_RMSPROP, hyper(momentum=0.5), 2),
    "adagrad": (codes.OPT_ADAGRAD, hyper(), 1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_reduced_step_is_scale_then_l2_then_the_optimizer(dtype, name):
    """One block-wise pass == the three whole-buffer passes it fuses, bit for bit: every rule
    is element-wise, so cutting the buffer into blocks changes no operation on any value."""
    opt, h, n_states = OPTIMIZERS[name]
    w_off, b_off, p = mlp_layout(SIZES)
    assert p > 2 * cpu.REDUCED_BLOCK  # three blocks, the last one partial
    rng = np.random.default_rng(7)
    params, sums = rng.standard_normal((2, p)).astype(dtype)
    states = [np.abs(rng.standard_normal(p)).astype(dtype) if i < n_states
              else np.zeros(0, dtype) for i in range(2)]
    l2 = np.array([0.01, 0.003])
    scale, step = 1.0 / 37, 3

    want_p, want_g, want_s = params.copy(), sums.copy(), [s.copy() for s in states]
    want_g *= dtype(scale)  # the step's scale in the buffer's dtype, as _reduced_step takes it
    ws, _ = cpu._layer_views(want_p, SIZES, w_off, b_off)
    dws, _ = cpu._layer_views(want_g, SIZES, w_off, b_off)
    for l in range(2):
        cpu._add_l2_gradient(dws[l], ws[l], l2[l])
    cpu._optimizer_step(want_p, want_g, *want_s, opt, h, step)

    got_p, got_g, got_s = params.copy(), sums.copy(), [s.copy() for s in states]
    cpu._reduced_step(got_p, got_g, *got_s, opt, h, step, scale, l2, SIZES, w_off)
    np.testing.assert_array_equal(got_g, want_g)
    np.testing.assert_array_equal(got_p, want_p)
    for got, want in zip(got_s, want_s):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got_p, params)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_epoch_on_one_rank_equals_the_plain_fit(dtype):
    """kernels.mpi.minibatch_epoch on a world of one (batch sums, the Allreduces of a world of
    one, the fused step; plain SGD's direct update at rate lr / m) against
    kernels.cpu.minibatch_epoch (mean deltas, the plain steps): every optimizer, L2 on a
    layer, sample weights, a shorter last batch. They differ only in where 1/m is applied
    (to the loss's delta, or after the weight gemm, or in its alpha): float64 ~1e-16 per step
    (measured <= 1e-14 after 33 steps: 1e-12 leaves room for that and fails on a wrong scale,
    which moves parameters by > 1e-3); float32 ~1e-7 per step (measured <= 8e-6 for RMSprop,
    whose 1/sqrt(v) magnifies it: 1e-4)."""
    tol = 1e-12 if dtype == "float64" else 1e-4
    rng = np.random.default_rng(0)
    x, y, sw = rng.standard_normal((103, 7)), rng.integers(0, 3, 103), rng.random(103)
    optimizers = {"sgd": lambda: fn.optim.SGD(lr=0.1, weight_decay=0.01),
                  "momentum": lambda: fn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
                  "adamw": lambda: fn.optim.AdamW(lr=0.01, weight_decay=0.01),
                  "rmsprop": lambda: fn.optim.RMSprop(lr=0.01),
                  "adagrad": lambda: fn.optim.Adagrad(lr=0.1)}
    for name, make in optimizers.items():
        fits = []
        for distributed in (False, True):
            m = fn.Sequential([fn.Dense(9, activation="tanh", kernel_regularizer=fn.L2(0.01)),
                               fn.Dense(3)], seed=1, dtype=dtype)
            m.compile(optimizer=make(), loss="softmax_cross_entropy")
            hist = m.fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0,
                         sample_weight=sw, distributed=distributed)
            fits.append((m.params.copy(), hist.history["loss"]))
        (plain, plain_loss), (dist, dist_loss) = fits
        assert np.max(np.abs(plain - dist)) <= tol, name
        np.testing.assert_allclose(dist_loss, plain_loss, rtol=tol, err_msg=name)
