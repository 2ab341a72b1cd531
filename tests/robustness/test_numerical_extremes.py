"""Numerical extremes through the public API (the loss objects, a model's evaluate, predict and
fit), and a hypothesis suite over random small networks checking that fit and predict stay
finite and agree with the NumPy reference (kernels/reference.py).

tests/kernels/test_properties.py holds the kernel-level versions; these go through
fastnn.losses and Sequential, as a user would."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import Dense, Sequential, losses, optim
from fastnn.kernels import codes
from fastnn.kernels import reference as ref
from fastnn.layers import LEAKY_ALPHA

BIG = {"float32": 1e4, "float64": 1e300}
DTYPES = sorted(BIG)


def _loss_call(loss, y, z):
    """loss value and dz through the public loss object: prepare, then its kernel."""
    yk, kernel = loss.prepare(y, z.shape[1], z.dtype)
    dz = np.empty_like(z)
    value = kernel(dz, z, yk, np.zeros(0, z.dtype))
    return value, dz


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_limits(dtype):
    B = BIG[dtype]
    z = np.array([[B, -B, 0.0], [B, -B, 0.0]], dtype)
    # right class dominant: loss -> 0, gradient -> 0; wrong class: loss -> 2B (z_max - z_y)
    value, dz = _loss_call(losses.SoftmaxCrossEntropy(), [0, 1], z)
    assert np.isfinite(value) and np.all(np.isfinite(dz))
    np.testing.assert_allclose(value, (0 + 2 * B) / 2, rtol=1e-6)
    np.testing.assert_allclose(dz, np.array([[0, 0, 0], [1, -1, 0]]) / 2, atol=1e-6)
    value, dz = _loss_call(losses.SoftmaxCrossEntropy(label_smoothing=0.1), [0, 1], z)
    assert np.isfinite(value) and np.all(np.isfinite(dz))


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_limits(dtype):
    B = BIG[dtype]
    z = np.array([[B], [B], [-B], [-B]], dtype)
    value, dz = _loss_call(losses.BinaryCrossEntropy(), [[1], [0], [0], [1]], z)
    assert np.isfinite(value) and np.all(np.isfinite(dz))
    np.testing.assert_allclose(value, 2 * B / 4, rtol=1e-6)
    np.testing.assert_allclose(dz[:, 0], np.array([0, 1, 0, -1]) / 4, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge_perceptron_kl_limits(dtype):
    B = BIG[dtype]
    z = np.array([[B], [-B]], dtype)
    value, dz = _loss_call(losses.Hinge(), [[1], [1]], z)
    np.testing.assert_allclose(value, (1 + B) / 2, rtol=1e-6)
    np.testing.assert_allclose(dz[:, 0], [0, -0.5])
    value, dz = _loss_call(losses.Perceptron(), [[-1], [-1]], z)
    np.testing.assert_allclose(value, B / 2, rtol=1e-6)
    np.testing.assert_allclose(dz[:, 0], [0.5, 0])
    z2 = np.array([[B, -B], [-B, B]], dtype)
    for loss in (losses.Hinge(), losses.Perceptron()):
        value, dz = _loss_call(loss, [0, 0], z2)  # multiclass: second row wrong by 2B
        assert np.isfinite(value) and np.all(np.isfinite(dz))
        assert value >= B * 0.99
    value, dz = _loss_call(losses.KLDivergence(), [[1.0, 0.0], [0.5, 0.5]], z2)
    assert np.isfinite(value) and np.all(np.isfinite(dz))
    np.testing.assert_allclose(value, (0 + B - np.log(2)) / 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_evaluate_and_predict_at_extreme_logits(dtype):
    B = BIG[dtype]
    m = Sequential([Dense(3, input_dim=1)], seed=0, dtype=dtype)
    m.compile(optimizer="sgd", loss="softmax_cross_entropy", metrics=["accuracy"])
    m.set_weights([np.array([[B, -B, 0.0]]), np.zeros(3)])
    x = np.ones((2, 1))
    logs = m.evaluate(x, [0, 1])
    assert np.isfinite(logs["loss"])
    np.testing.assert_allclose(logs["loss"], B, rtol=1e-6)
    assert logs["accuracy"] == 0.5
    p = m.predict_proba(x)
    assert np.all(np.isfinite(p)) and np.allclose(p, [[1, 0, 0]] * 2)
    assert m.predict_classes(x).tolist() == [0, 0]
    # a gradient step from there stays finite (tiny lr so the weights stay representable)
    m.compile(optimizer=optim.SGD(1e-30), loss="softmax_cross_entropy")
    m.fit(x, [0, 1], epochs=1, batch_size=None, verbose=0)
    assert np.all(np.isfinite(m.params))
    # binary cross-entropy: sigmoid probabilities at the limits
    m = Sequential([Dense(2, input_dim=1)], seed=0, dtype=dtype)
    m.compile(optimizer="sgd", loss="binary_cross_entropy")
    m.set_weights([np.array([[B, -B]]), np.zeros(2)])
    assert np.isfinite(m.evaluate(x, [[1, 0], [0, 1]])["loss"])
    np.testing.assert_array_equal(m.predict_proba(x), [[1, 0]] * 2)


LIMITS = {  # activation: (h(+B), h(-B)) as functions of B
    "sigmoid": (lambda B: 1.0, lambda B: 0.0),
    "tanh": (lambda B: 1.0, lambda B: -1.0),
    "softplus": (lambda B: B, lambda B: 0.0),
    "relu": (lambda B: B, lambda B: 0.0),
    "leaky_relu": (lambda B: B, lambda B: -LEAKY_ALPHA * B),
    "identity": (lambda B: B, lambda B: -B),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(LIMITS))
def test_activations_and_their_gradients_at_extremes(dtype, activation):
    B = BIG[dtype]
    m = Sequential([Dense(2, activation=activation, input_dim=1), Dense(1, use_bias=False)],
                   seed=0, dtype=dtype)
    m.set_weights([np.array([[B, -B]]), np.zeros(2), np.array([[1.0], [0.0]])])
    hidden = Sequential([Dense(2, activation=activation, input_dim=1)], seed=0, dtype=dtype)
    hidden.set_weights([np.array([[B, -B]]), np.zeros(2)])
    h = hidden.predict(np.ones((1, 1)))[0]
    hi, lo = LIMITS[activation]
    np.testing.assert_allclose(h, [hi(B), lo(B)], rtol=1e-6, atol=0)
    # backward through the saturated unit: finite gradients, so a tiny step stays finite
    # (binary cross-entropy, whose gradient is bounded; mse of a 1e300 logit is not finite)
    m.compile(optimizer=optim.SGD(1e-30 if dtype == "float64" else 1e-12),
              loss="binary_cross_entropy")
    m.fit(np.ones((1, 1)), np.zeros((1, 1)), epochs=1, batch_size=None, verbose=0)
    assert np.all(np.isfinite(m.params))


# --------------------------------------------------------------------------- hypothesis

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "softplus"]


def _targets(loss, n, k, rng):
    if loss == "softmax_cross_entropy" or (loss in ("hinge", "perceptron") and k > 1):
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, k)).astype(np.float64)
    if loss in ("hinge", "perceptron"):
        return rng.choice([-1.0, 1.0], (n, k))
    if loss in ("kl_divergence", "categorical_crossentropy"):
        t = rng.random((n, k)) + 0.1
        return t / t.sum(axis=1, keepdims=True)
    return rng.normal(size=(n, k))


def _reference_forward(model, x):
    a = x
    for layer in model.layers:
        out = np.empty((a.shape[0], layer.units))
        pre = np.empty_like(out)
        ref.affine_act_forward(out, pre, a, layer.W, layer.b, layer.act_code, LEAKY_ALPHA)
        a = out
    return a


@given(widths=st.lists(st.integers(1, 5), min_size=0, max_size=2),
       acts=st.lists(st.sampled_from(ACTS), min_size=2, max_size=2),
       loss=st.sampled_from(sorted(losses.LOSSES)),
       n_out=st.integers(1, 3), n=st.integers(1, 9), n_in=st.integers(1, 4),
       batch=st.sampled_from([1, 2, 4, None]), opt=st.sampled_from(["sgd", "momentum", "adam"]),
       seed=st.integers(0, 2 ** 16), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_random_networks_fit_and_predict_like_the_reference(widths, acts, loss, n_out, n, n_in,
                                                             batch, opt, seed, scale):
    if loss in ("softmax_cross_entropy", "kl_divergence", "categorical_crossentropy") \
            and n_out == 1:
        n_out = 2
    rng = np.random.default_rng(seed)
    layers = [Dense(w, activation=acts[i % 2]) for i, w in enumerate(widths)] + [Dense(n_out)]
    model = Sequential(layers, seed=seed, dtype="float64")
    optimizer = {"sgd": optim.SGD(0.05), "momentum": optim.SGD(0.05, momentum=0.9),
                 "adam": optim.Adam(0.01)}[opt]
    model.compile(optimizer=optimizer, loss=loss)
    model.build(n_in)
    x = rng.normal(size=(n, n_in)) * scale
    y = _targets(loss, n, n_out, rng)

    # the reference's run of the same two epochs from the same start, in the same order
    params = model.params.copy()
    grads = np.zeros_like(params)
    yk, kernel = model.loss.prepare(y, n_out, np.float64)
    labels, targets = kernel.split(yk, np.float64)
    model.optimizer.build(params.size, np.float64)
    code, hyper, s1, s2, step = model.optimizer.kernel_args(model.optimizer.lr)
    s1, s2 = s1.copy(), s2.copy()
    bs = n if batch is None else min(batch, n)
    for _ in range(2):
        _, step = ref.minibatch_epoch(
            params, grads, s1, s2, x, labels, targets, np.zeros(0), np.arange(n), bs,
            model.sizes, model.w_off, model.b_off, model.acts, LEAKY_ALPHA,
            np.zeros(len(layers)), np.zeros(len(layers)), 0, kernel.code,
            kernel.label_smoothing, code, hyper, step)

    history = model.fit(x, y, epochs=2, batch_size=batch, shuffle=False, verbose=0)
    assert all(np.isfinite(v) for v in history.history["loss"])
    assert np.all(np.isfinite(model.params))
    np.testing.assert_allclose(model.params, params, rtol=1e-7, atol=1e-10)
    z = model.predict(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z, _reference_forward(model, x), rtol=1e-10, atol=1e-12)
    value = model.evaluate(x, y)["loss"]
    dz = np.empty_like(z)
    want = ref.apply_loss(dz, z, labels, targets, np.zeros(0), kernel.code,
                          kernel.label_smoothing)
    np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12)
    assert codes.IDENTITY == model.acts[-1]
