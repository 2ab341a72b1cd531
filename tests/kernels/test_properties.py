"""Hypothesis property tests: random shapes and values, extremes included. The kernels stay
finite where the math is finite and agree with their NumPy twins; logits of +-1e4 in float32
and +-1e300 in float64 give finite losses and gradients with the right limits."""
import numpy as np
import pytest
from helpers import DTYPES, assert_close, empty
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastnn.kernels import codes
from fastnn.kernels import cpu
from fastnn.kernels import reference as ref
from fastnn.kernels.layout import mlp_layout

ALL_ACTS = sorted(set(codes.ACTIVATIONS.values()))
BIG = {np.float32: 1e4, np.float64: 1e300}


def floats_for(dtype, bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                     width=32 if dtype == np.float32 else 64)


@st.composite
def dense_case(draw):
    dtype = draw(st.sampled_from(DTYPES))
    n, i, o = draw(st.integers(1, 6)), draw(st.integers(1, 19)), draw(st.integers(1, 9))
    bound = draw(st.sampled_from([2.0**-10, 1.0, 30.0, 1024.0]))
    x = draw(hnp.arrays(dtype, (n, i), elements=floats_for(dtype, bound)))
    w = draw(hnp.arrays(dtype, (i, o), elements=floats_for(dtype, bound)))
    b = draw(hnp.arrays(dtype, (o,), elements=floats_for(dtype, bound)))
    act = draw(st.sampled_from(ALL_ACTS))
    return dtype, x, w, b, act


@given(dense_case())
def test_dense_forward_backward_property(case):
    dtype, x, w, b, act = case
    n, o = x.shape[0], w.shape[1]
    # rounding error scales with the sum of |terms|, not with the (possibly cancelled) result
    scale = max(1.0, float((np.abs(x).astype(np.float64) @ np.abs(w)).max() + np.abs(b).max()))
    out, pre = np.empty((n, o), dtype), np.empty((n, o), dtype)
    out_r, pre_r = np.empty((n, o), dtype), np.empty((n, o), dtype)
    cpu.affine_act_forward(out, pre, x, w, b, act, 0.1)
    ref.affine_act_forward(out_r, pre_r, x, w, b, act, 0.1)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(pre))
    assert_close(pre, pre_r, dtype, scale=scale)
    # near h's steep parts an ulp of pre moves out by h'(pre) ulps: compare out at the
    # reference's own pre, which isolates the activation
    out_at_ref = np.empty_like(out)
    cpu.activation_forward(out_at_ref, pre_r, act, 0.1)
    assert_close(out_at_ref, out_r, dtype)

    dout = np.ones((n, o), dtype)
    dx, dpre = np.empty_like(x), np.empty((n, o), dtype)
    dx_r, dpre_r = np.empty_like(x), np.empty((n, o), dtype)
    cpu.affine_act_backward(dx, dpre, dout, pre_r, out_r, w, act, 0.1)
    ref.affine_act_backward(dx_r, dpre_r, dout, pre_r, out_r, w, act, 0.1)
    assert np.all(np.isfinite(dpre)) and np.all(np.isfinite(dx))
    assert_close(dpre, dpre_r, dtype)
    assert_close(dx, dx_r, dtype, scale=max(1.0, float(np.abs(w).sum(axis=1).max())))


@st.composite
def logits_case(draw):
    dtype = draw(st.sampled_from(DTYPES))
    n, k = draw(st.integers(1, 6)), draw(st.integers(2, 7))
    bound = draw(st.sampled_from([1.0, 1e2, BIG[dtype]]))
    z = draw(hnp.arrays(dtype, (n, k), elements=floats_for(dtype, bound)))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    return dtype, z, labels


@given(logits_case(), st.sampled_from([0.0, 0.1]))
def test_softmax_cross_entropy_finite_and_matches(case, smoothing):
    dtype, z, labels = case
    dz, dz_r = np.empty_like(z), np.empty_like(z)
    loss = cpu.softmax_cross_entropy(dz, z, labels, empty(dtype), smoothing, True)
    loss_r = ref.softmax_cross_entropy(dz_r, z, labels, empty(dtype), smoothing, True)
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    assert_close(loss, loss_r, dtype)
    assert_close(dz, dz_r, dtype)
    # p - t sums to zero in every row, up to the rounding of z - logsumexp(z): an ulp of the
    # largest logit per entry
    atol = 4 * z.shape[1] * np.finfo(dtype).eps * max(1.0, float(np.abs(z).max()))
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=atol)


@given(logits_case())
def test_binary_losses_finite_and_match(case):
    dtype, z, labels = case
    y01 = (labels[:, None] + np.arange(z.shape[1])[None, :]) % 2
    for name, y in (("binary_cross_entropy", y01.astype(dtype)),
                    ("hinge", (2 * y01 - 1).astype(dtype)),
                    ("perceptron", (2 * y01 - 1).astype(dtype))):
        dz, dz_r = np.empty_like(z), np.empty_like(z)
        loss = getattr(cpu, name)(dz, z, y, empty(dtype), True)
        loss_r = getattr(ref, name)(dz_r, z, y, empty(dtype), True)
        assert np.isfinite(loss) and np.all(np.isfinite(dz)), name
        assert_close(loss, loss_r, dtype, scale=max(1.0, abs(loss_r)))
        assert_close(dz, dz_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_limits_at_extreme_logits(dtype):
    big = BIG[dtype]
    z = np.array([[big, -big], [big, -big]], dtype)
    dz = np.empty_like(z)
    # label 0 is certain: loss 0 and no gradient; label 1 costs z_0 - z_1 = 2 big, gradient p - t
    loss = cpu.softmax_cross_entropy(dz, z, np.array([0, 1]), empty(dtype), 0.0, False)
    np.testing.assert_allclose(loss, 2 * big, rtol=1e-6)
    np.testing.assert_array_equal(dz, [[0, 0], [1, -1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_logistic_limits_at_extreme_logits(dtype):
    big = BIG[dtype]
    z = np.array([[big], [-big], [big], [-big]], dtype)
    y = np.array([[1], [0], [0], [1]], dtype)
    dz = np.empty_like(z)
    loss = cpu.binary_cross_entropy(dz, z, y, empty(dtype), False)
    np.testing.assert_allclose(loss, 2 * big, rtol=1e-6)  # the two wrong ones cost |z| each
    np.testing.assert_array_equal(dz[:, 0], [0, 0, 1, -1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_at_extremes(dtype):
    big = dtype(1e4) if dtype == np.float32 else dtype(700.0)  # exp(710) overflows float64
    pre = np.array([[big, -big, 0.0]], dtype)
    expect = {
        codes.SIGMOID: ([1, 0, 0.5], [0, 0, 0.25]),
        codes.TANH: ([1, -1, 0], [0, 0, 1]),
        codes.SOFTPLUS: ([big, 0, np.log(2)], [1, 0, 0.5]),
        codes.RELU: ([big, 0, 0], [1, 0, 0]),
    }
    for act, (value, deriv) in expect.items():
        out, d = np.empty_like(pre), np.zeros_like(pre)
        cpu.activation_forward(out, pre, act, 0.1)
        cpu.activation_backward(d, np.ones_like(pre), pre, out, act, 0.1)
        np.testing.assert_allclose(out[0], value, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(d[0], deriv, rtol=1e-6, atol=1e-30)


@st.composite
def mlp_case(draw):
    dtype = draw(st.sampled_from(DTYPES))
    depth = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 9), min_size=depth + 1, max_size=depth + 1))
    acts = draw(st.lists(st.sampled_from(list(codes.DIFFERENTIABLE)), min_size=depth,
                         max_size=depth))
    bias = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    loss = draw(st.sampled_from([codes.LOSS_SOFTMAX_CE, codes.LOSS_BCE, codes.LOSS_MSE]))
    seed = draw(st.integers(0, 2**31))
    return dtype, sizes, acts, bias, loss, seed


@given(mlp_case())
def test_fused_epoch_random_architectures(case):
    dtype, sizes, acts, bias, loss, seed = case
    rng = np.random.default_rng(seed)
    w_off, b_off, p = mlp_layout(sizes, bias)
    params = (rng.standard_normal(p) * 0.5).astype(dtype)
    params_r = params.copy()
    n = 7
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], n)
    targets = rng.random((n, sizes[-1])).astype(dtype)
    order = rng.integers(0, n, 9)
    args = (x, labels, targets, order, np.array(sizes), w_off, b_off, np.array(acts), 0.1,
            np.zeros(len(acts)), 0, loss, 0.05, 0.01)
    got = cpu.sgd_epoch(params, *args)
    want = ref.sgd_epoch(params_r, *args)
    assert np.isfinite(got) and np.all(np.isfinite(params))
    assert_close(got, want, dtype)
    assert_close(params, params_r, dtype)
