"""Every CPU kernel against its NumPy twin (tinygrad's helper_test_op habit), on awkward shapes:
batch 1, primes, one output, wide and narrow layers, fan-ins that are not multiples of 4 (the
fused epoch's register block), in float32 and float64."""
import numpy as np
import pytest
from helpers import DTYPES, assert_close, empty, randn

from fastnn.kernels import codes
from fastnn.kernels import cpu
from fastnn.kernels import reference as ref

ALL_ACTS = sorted(set(codes.ACTIVATIONS.values()))
SHAPES = [(1, 1, 1), (7, 13, 5), (1, 784, 10), (13, 7, 1), (3, 257, 2), (2, 3, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_affine_act_forward_backward(dtype, act, shape, bias):
    n, i, o = shape
    rng = np.random.default_rng(n * 1000 + i * 10 + o + act)
    x, w = randn(rng, (n, i), dtype), randn(rng, (i, o), dtype, 1 / np.sqrt(i))
    b = randn(rng, o, dtype) if bias else empty(dtype)
    got, want = [np.empty((n, o), dtype) for _ in range(2)], [np.empty((n, o), dtype) for _ in range(2)]
    cpu.affine_act_forward(got[0], got[1], x, w, b, act, 0.1)
    ref.affine_act_forward(want[0], want[1], x, w, b, act, 0.1)
    assert_close(got[1], want[1], dtype)
    assert_close(got[0], want[0], dtype)

    dout = randn(rng, (n, o), dtype)
    pre, out = want[1], want[0]
    dx, dpre = np.full((n, i), np.nan, dtype), np.full((n, o), np.nan, dtype)
    dx_r, dpre_r = np.empty((n, i), dtype), np.empty((n, o), dtype)
    cpu.affine_act_backward(dx, dpre, dout, pre, out, w, act, 0.1)
    ref.affine_act_backward(dx_r, dpre_r, dout, pre, out, w, act, 0.1)
    assert_close(dpre, dpre_r, dtype)
    assert_close(dx, dx_r, dtype)

    # the first layer passes an empty dx: only dpre is written
    dpre2 = np.empty((n, o), dtype)
    cpu.affine_act_backward(empty(dtype, 2), dpre2, dout, pre, out, w, act, 0.1)
    assert_close(dpre2, dpre_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(0, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_grad_accumulates(dtype, shape, bias):
    n, i, o = shape
    rng = np.random.default_rng(i * o + n)
    x, dpre = randn(rng, (n, i), dtype), randn(rng, (n, o), dtype)
    dw0, db0 = randn(rng, (i, o), dtype), (randn(rng, o, dtype) if bias else empty(dtype))
    dw, db, dw_r, db_r = dw0.copy(), db0.copy(), dw0.copy(), db0.copy()
    cpu.weight_grad(dw, db, x, dpre)
    ref.weight_grad(dw_r, db_r, x, dpre)
    assert_close(dw, dw_r, dtype)
    assert_close(db, db_r, dtype)
    if n:  # it accumulated: the result is not the fresh product alone
        assert_close(dw - dw0, x.T @ dpre, dtype, scale=max(1.0, float(np.abs(dw_r).max())))


def test_weight_grad_reads_strided_x_without_copy_errors():
    """x.T of a C array is F-contiguous: the BLAS call must pass it transposed, not reread it."""
    rng = np.random.default_rng(3)
    x = np.asfortranarray(randn(rng, (5, 3), np.float64))
    dpre = randn(rng, (5, 2), np.float64)
    dw = np.zeros((3, 2))
    cpu.weight_grad(dw, empty(np.float64), x, dpre)
    assert_close(dw, x.T @ dpre, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTS)
def test_activation_forward_backward(dtype, act):
    rng = np.random.default_rng(act)
    pre = randn(rng, (5, 11), dtype, 3.0)
    pre[0, :4] = [0.0, 30.0, -30.0, 1e-3]
    pre[1, 0] = np.nan  # NaN must pass through as in NumPy, so a diverging fit cannot hide it
    out, out_r = np.empty_like(pre), np.empty_like(pre)
    cpu.activation_forward(out, pre, act, 0.2)
    with np.errstate(invalid="ignore"):  # NumPy warns about the NaN it propagates
        ref.activation_forward(out_r, pre, act, 0.2)
    assert_close(out, out_r, dtype)
    dout = randn(rng, pre.shape, dtype)
    start = randn(rng, pre.shape, dtype)
    d, d_r = start.copy(), start.copy()
    cpu.activation_backward(d, dout, pre, out_r, act, 0.2)
    ref.activation_backward(d_r, dout, pre, out_r, act, 0.2)
    assert_close(d, d_r, dtype)


def test_relu_derivative_at_zero_is_zero():
    pre = np.zeros((1, 3))
    out = np.zeros((1, 3))
    dpre = np.full((1, 3), 7.0)
    cpu.affine_act_backward(empty(np.float64, 2), dpre, np.ones((1, 3)), pre, out,
                            np.ones((2, 3)), codes.RELU, 0.0)
    assert np.all(dpre == 0.0)


# --------------------------------------------------------------------------- losses

LABEL_LOSSES = ["softmax_cross_entropy", "multiclass_hinge", "multiclass_perceptron"]
TARGET_LOSSES = ["softmax_cross_entropy_soft", "kl_divergence", "binary_cross_entropy", "mse",
                 "hinge", "perceptron"]


def _loss_args(name, rng, n, k, dtype):
    z = randn(rng, (n, k), dtype, 3.0)
    if name in LABEL_LOSSES:
        return z, rng.integers(0, k, n)
    if name in ("softmax_cross_entropy_soft", "kl_divergence"):
        t = rng.random((n, k))
        if k > 1:
            t[0, 0] = 0.0  # a zero target probability: 0 log 0 = 0
        return z, (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    if name == "binary_cross_entropy":
        return z, rng.integers(0, 2, (n, k)).astype(dtype)
    if name in ("hinge", "perceptron"):
        return z, rng.choice([-1.0, 1.0], (n, k)).astype(dtype)
    return z, randn(rng, (n, k), dtype)


def _call(mod, name, dz, z, y, sw, mean, smoothing=0.0):
    fn = getattr(mod, name)
    if name == "softmax_cross_entropy":
        return fn(dz, z, y, sw, smoothing, mean)
    return fn(dz, z, y, sw, mean)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LABEL_LOSSES + TARGET_LOSSES)
@pytest.mark.parametrize("nk", [(1, 1), (1, 2), (7, 13), (31, 3), (4, 1000)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mean", [True, False])
def test_loss_matches_reference(dtype, name, nk, weighted, mean):
    n, k = nk
    rng = np.random.default_rng(n * 7 + k)
    z, y = _loss_args(name, rng, n, k, dtype)
    sw = rng.random(n).astype(dtype) if weighted else empty(dtype)
    dz, dz_r = np.full_like(z, np.nan), np.full_like(z, np.nan)
    loss = _call(cpu, name, dz, z, y, sw, mean)
    loss_r = _call(ref, name, dz_r, z, y, sw, mean)
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    assert_close(loss, loss_r, dtype)
    assert_close(dz, dz_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_label_smoothing_matches_reference_and_soft_target(dtype, smoothing):
    rng = np.random.default_rng(11)
    n, k = 9, 5
    z, y = randn(rng, (n, k), dtype), rng.integers(0, k, n)
    sw = empty(dtype)
    dz, dz_r, dz_s = (np.empty_like(z) for _ in range(3))
    loss = cpu.softmax_cross_entropy(dz, z, y, sw, smoothing, True)
    loss_r = ref.softmax_cross_entropy(dz_r, z, y, sw, smoothing, True)
    # seed 004's form: eps' = smoothing / K off the true class, 1 - (K - 1) eps' on it
    t = np.full((n, k), smoothing / k)
    t[np.arange(n), y] = 1 - (k - 1) * smoothing / k
    loss_s = cpu.softmax_cross_entropy_soft(dz_s, z, t.astype(dtype), sw, True)
    assert_close(loss, loss_r, dtype)
    assert_close(loss, loss_s, dtype)
    assert_close(dz, dz_r, dtype)
    assert_close(dz, dz_s, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_sum_to_one(dtype):
    rng = np.random.default_rng(5)
    z = randn(rng, (6, 17), dtype, 50.0)
    p, p_r = np.empty_like(z), np.empty_like(z)
    cpu.softmax(p, z)
    ref.softmax(p_r, z)
    assert_close(p, p_r, dtype)
    assert_close(p.sum(axis=1), np.ones(6), dtype)


# --------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("p", [1, 7, 1031])
def test_sgd_update(dtype, momentum, nesterov, weight_decay, p):
    rng = np.random.default_rng(p)
    params, vel = randn(rng, p, dtype), randn(rng, p, dtype)
    params_r, vel_r = params.copy(), vel.copy()
    for _ in range(3):
        g = randn(rng, p, dtype)
        cpu.sgd_update(params, g, vel if momentum else empty(dtype), 0.05, momentum, nesterov,
                       weight_decay)
        ref.sgd_update(params_r, g, vel_r, 0.05, momentum, nesterov, weight_decay)
    assert_close(params, params_r, dtype)
    if momentum:
        assert_close(vel, vel_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("p", [1, 7, 1031])
def test_adam_update(dtype, decoupled, weight_decay, p):
    rng = np.random.default_rng(p + 1)
    params = randn(rng, p, dtype)
    m, v = np.zeros(p, dtype), np.zeros(p, dtype)
    params_r, m_r, v_r = params.copy(), m.copy(), v.copy()
    for t in range(1, 5):
        g = randn(rng, p, dtype)
        cpu.adam_update(params, g, m, v, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled, t)
        ref.adam_update(params_r, g, m_r, v_r, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled, t)
    assert_close(params, params_r, dtype)
    assert_close(m, m_r, dtype)
    assert_close(v, v_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 10_007])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, -1, "middle"])
def test_all_finite(dtype, n, bad, where):
    a = np.random.default_rng(n).standard_normal(n).astype(dtype) * 1e30
    if bad is not None and n:
        a[n // 2 if where == "middle" else where] = bad
    assert cpu.all_finite(a) == ref.all_finite(a) == (bad is None or n == 0)


# one row, primes, and 20,011 x 101 (~2e6 entries: the rows split into chunks; "middle"
# lands in a chunk other than the first and the last)
@pytest.mark.parametrize("n,d", [(1, 1), (13, 7), (20_011, 101)])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, -1, "middle"])
@pytest.mark.parametrize("huge", [False, True])
def test_float32_copy_finite(n, d, bad, where, huge):
    """The copy is astype's, bit for bit (ties to even, -0.0 kept, finite values beyond
    float32's range to ±inf), and the flags are np.isfinite's over x and over the copy."""
    x = np.random.default_rng(n).standard_normal((n, d))
    x.flat[0] = -0.0
    x.flat[-1] = 1.0 + 2.0 ** -24  # a tie: rounds to even, 1.0
    if huge:  # beyond float32's range: inf in the copy, finite in x
        x.flat[x.size // 3] = 1e300 if n > 1 else -3.5e38
    if bad is not None:
        x.flat[x.size // 2 if where == "middle" else where] = bad
    flags = (bad is None, bad is None and not huge)
    want = np.empty((n, d), np.float32)
    assert ref.float32_copy_finite(want, x, False) == flags
    for fresh in (False, True):  # threads over row chunks, or one thread
        out = np.empty((n, d), np.float32)
        assert cpu.float32_copy_finite(out, x, fresh) == flags
        np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,bias", [([5, 13, 1, 7, 3], [True, False, True, True]),
                                        ([784, 128, 10], True), ([1, 1], False)])
@pytest.mark.parametrize("n", [1, 17])
def test_fused_mlp_forward(dtype, sizes, bias, n):
    from fastnn.kernels.layout import mlp_layout
    rng = np.random.default_rng(n + len(sizes))
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = randn(rng, p, dtype, 0.3)
    acts = np.array(ALL_ACTS[:len(sizes) - 1][::-1])
    x = randn(rng, (n, sizes[0]), dtype)
    out, out_r = np.full((n, sizes[-1]), np.nan, dtype), np.empty((n, sizes[-1]), dtype)
    cpu.fused_mlp_forward(out, x, params, np.array(sizes), w_off, b_off, acts, 0.1)
    ref.fused_mlp_forward(out_r, x, params, np.array(sizes), w_off, b_off, acts, 0.1)
    assert_close(out, out_r, dtype)
