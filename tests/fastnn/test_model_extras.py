"""gradcheck, class_weight, sample and ModelCheckpoint."""
import numpy as np
import pytest

import fastnn as fn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((12, 4))
Y = RNG.integers(0, 3, 12)


def _smooth_model(k=3, dtype="float32"):
    # smooth activations only: finite differences do not straddle a ReLU kink
    return fn.Sequential([fn.Dense(5, activation="tanh", input_dim=4, kernel_regularizer=0.01),
                          fn.Dense(4, activation="softplus", use_bias=False),
                          fn.Dense(k, activation="sigmoid"), fn.Dense(k)], seed=2, dtype=dtype)


@pytest.mark.parametrize("loss, y", [
    ("softmax_cross_entropy", Y), (fn.losses.SoftmaxCrossEntropy(0.2), Y),
    ("binary_cross_entropy", (RNG.random((12, 3)) > 0.5).astype(float)),
    ("mse", RNG.standard_normal((12, 3))),
    ("kl_divergence", RNG.dirichlet(np.ones(3), 12)),
])
def test_gradcheck_agrees_with_backprop(loss, y):
    model = _smooth_model()
    model.compile(loss=loss)
    sw = np.random.default_rng(1).random(12)
    # float64 central differences, eps 1e-5: the worst over 75 seeded problems was 9e-7, so
    # 1e-5 leaves a 10x margin; a 1% wrong gradient scores ~5e-3
    assert fn.gradcheck(model, X, y, sample_weight=sw) < 1e-5


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    model = _smooth_model()
    model.compile(loss="softmax_cross_entropy")
    real = fn.cpu_backend.gradient

    def off_by_one_percent(*args):
        loss, grads = real(*args)
        return loss, grads * 1.01
    monkeypatch.setattr(fn.cpu_backend, "gradient", off_by_one_percent)
    assert fn.gradcheck(model, X, Y) > 1e-3  # a 1% error is |0.01 g| / 2.01 |g| ~ 5e-3


def test_gradcheck_builds_a_compiled_model_that_has_not_seen_data():
    model = fn.Sequential([fn.Dense(5, activation="tanh"), fn.Dense(3)], seed=4)
    model.compile(loss="softmax_cross_entropy")
    assert not model.built
    assert fn.gradcheck(model, X, Y) < 1e-5  # the bound of test_gradcheck_agrees_with_backprop
    assert model.built and model.count_params() == 4 * 5 + 5 + 5 * 3 + 3
    with pytest.raises(RuntimeError, match="compile"):
        fn.gradcheck(fn.Sequential([fn.Dense(2)]), X, Y)


def test_class_weight_equals_the_matching_sample_weights():
    a, b = _smooth_model(), _smooth_model()
    for m in (a, b):
        m.compile(optimizer=fn.optim.SGD(lr=0.1), loss="softmax_cross_entropy")
    a.fit(X, Y, epochs=2, batch_size=5, class_weight={0: 2.0, 2: 0.5}, verbose=0)
    b.fit(X, Y, epochs=2, batch_size=5, sample_weight=np.array([2.0, 1.0, 0.5])[Y], verbose=0)
    np.testing.assert_array_equal(a.params, b.params)


def test_bad_class_weight_is_rejected_before_training():
    model = _smooth_model()
    model.compile(loss="softmax_cross_entropy")
    before = model.params.copy()
    with pytest.raises(ValueError, match="class_weight has class 3"):
        model.fit(X, Y, class_weight={3: 1.0}, verbose=0)
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        model.fit(X, Y, class_weight=[1.0, 2.0], verbose=0)
    np.testing.assert_array_equal(model.params, before)


def test_sample_draws_from_predicted_probabilities():
    model = fn.Sequential([fn.Dense(3, input_dim=1)], dtype="float64")
    model.compile(loss="softmax_cross_entropy")
    p = np.array([0.2, 0.5, 0.3])
    model.set_weights([np.zeros((1, 3)), np.log(p)])
    draws = model.sample(np.zeros((20000, 1)), seed=0)
    # 20000 draws: std of each frequency <= 0.0036, so 0.015 is > 4 sigma
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, p, atol=0.015)
    np.testing.assert_array_equal(model.sample(np.zeros((50, 1)), seed=1),
                                  model.sample(np.zeros((50, 1)), seed=1))


def test_model_checkpoint_saves_best_epochs(tmp_path):
    model = _smooth_model()
    model.compile(optimizer=fn.optim.SGD(lr=0.1), loss="softmax_cross_entropy")
    ckpt = fn.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.npz"), monitor="loss",
                                        save_best_only=True)
    hist = model.fit(X, Y, epochs=3, batch_size=None, callbacks=[ckpt], verbose=0)
    losses = hist.history["loss"]
    expected = [f"m-{e + 1}.npz" for e in range(3) if losses[e] == min(losses[:e + 1])]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    np.testing.assert_array_equal(fn.load(tmp_path / expected[-1]).params.shape, model.params.shape)


def test_tol_stops_on_a_flat_loss_or_a_small_gradient():
    x = RNG.standard_normal((50, 2))
    y = x @ np.array([[1.0], [-2.0]])  # exactly linear: the loss can go to 0
    model = fn.Sequential([fn.Dense(1, input_dim=2)], dtype="float64")
    model.compile(optimizer=fn.optim.SGD(lr=0.5), loss="mse")
    hist = model.fit(x, y, epochs=1000, batch_size=None, tol=1e-6, verbose=0)
    assert hist.converged in ("loss", "gradient") and len(hist.history["loss"]) < 1000
    # plain fit, no tol: runs every epoch
    assert model.fit(x, y, epochs=3, batch_size=None, verbose=0).converged is None
    with pytest.raises(ValueError, match="tol"):
        model.fit(x, y, tol=-1.0, verbose=0)


def test_gradient_norm_matches_gradcheck_gradient():
    """The norm tol compares against is the full-batch gradient: zero at a least-squares fit."""
    x = RNG.standard_normal((30, 2))
    y = x @ np.array([[0.5], [1.5]]) + 0.1
    model = fn.Sequential([fn.Dense(1, input_dim=2)], dtype="float64")
    model.compile(loss="mse")
    model.set_weights([np.array([[0.5], [1.5]]), np.array([0.1])])
    y, kernel = model.loss.prepare(y, 1, np.float64)
    trainer = fn.cpu_backend.Trainer(model.stack, model.params, model.optimizer, x, y, None,
                                     kernel, 30, False)
    assert trainer.gradient_norm() < 1e-12  # the exact solution
    loss, grads = fn.cpu_backend.gradient(model.stack, model.params, x, y, None, kernel)
    assert loss < 1e-28 and np.abs(grads).max() < 1e-12
    # away from it, the norm is the full-batch gradient's
    model.set_weights([np.array([[0.0], [1.5]]), np.array([0.1])])
    _, grads = fn.cpu_backend.gradient(model.stack, model.params, x, y, None, kernel)
    np.testing.assert_allclose(trainer.gradient_norm(), np.linalg.norm(grads), rtol=1e-14)
    # mse's 1/2 (z - y)^2 with residual r = -0.5 x_0: dL/dW = mean(x r), dL/db = mean(r)
    r = -0.5 * x[:, 0]
    np.testing.assert_allclose(grads, [np.mean(x[:, 0] * r), np.mean(x[:, 1] * r), np.mean(r)],
                               rtol=1e-12)
