"""fastnn.diagnostics' curvature: hessian_vector_product, hessian and hessian_eigenvalues on
Sequential models, held to central differences of the backend gradient, to symmetry, to a
dense eigendecomposition, and to seed 004's worked 3-variable example."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import cpu_backend
from fastnn.datasets import make_moons
from fastnn.diagnostics import hessian, hessian_eigenvalues, hessian_vector_product
from fastnn.layers import Stack

RNG = np.random.default_rng(0)
X = RNG.standard_normal((15, 3))


def _model(loss, k=2, l2=0.01, seed=0):
    model = fn.Sequential([fn.Dense(4, activation="tanh", input_dim=3, kernel_regularizer=l2),
                           fn.Dense(3, activation="softplus", use_bias=False),
                           fn.Dense(k, activation="sigmoid" if loss == "binary_cross_entropy"
                                    else None)], seed=seed)
    model.compile(optimizer=fn.optim.SGD(lr=0.1), loss=loss)
    return model


def _backend_gradient(model, x, y, sw, params):
    """The gradient fit uses (cpu_backend.gradient), in float64, at params."""
    y, kernel = model.loss.prepare(y, model.n_outputs, np.float64)
    stack = Stack(model.layers, x.shape[1], np.float64,
                  fold_output=model.output_activation == "sigmoid")
    return cpu_backend.gradient(stack, params, x, y, sw, kernel)[1]


LOSSES = [("softmax_cross_entropy", RNG.integers(0, 2, 15)),
          (fn.losses.SoftmaxCrossEntropy(0.2), RNG.integers(0, 2, 15)),
          ("binary_cross_entropy", (RNG.random((15, 2)) > 0.5).astype(float)),
          ("mse", RNG.standard_normal((15, 2))),
          ("kl_divergence", RNG.dirichlet(np.ones(2), 15))]


@pytest.mark.parametrize("loss, y", LOSSES)
def test_hvp_is_the_central_difference_of_the_backend_gradient(loss, y):
    """H v = (g(p + eps v) - g(p - eps v)) / (2 eps) + O(eps^2) with the backend's gradient,
    float64, eps 1e-5: truncation ~1e-10, roundoff ~1e-11, so 1e-7 relative is safe. The
    sigmoid output folded into BCE, sample weights and the L2 term all enter."""
    model = _model(loss)
    model.build(3)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, 15)
    v = np.random.default_rng(2).standard_normal(model.params.size)
    hv = hessian_vector_product(model, X, y, v, sample_weight=sw)
    p, eps = model.params.astype(np.float64), 1e-5
    fd = (_backend_gradient(model, X, y, sw, p + eps * v)
          - _backend_gradient(model, X, y, sw, p - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


def test_hessian_is_symmetric_and_built_from_products():
    model = _model("softmax_cross_entropy", k=3)
    y = RNG.integers(0, 3, 15)
    h = hessian(model, X, y)
    p = model.params.size
    assert h.shape == (p, p)
    np.testing.assert_array_equal(h, h.T)
    v, w = np.random.default_rng(3).standard_normal((2, p))
    hv, hw = (hessian_vector_product(model, X, y, d) for d in (v, w))
    # float64 sums of a few hundred terms: 1e-12 relative
    assert abs(v @ hw - w @ hv) <= 1e-12 * max(abs(v @ hw), 1.0)
    np.testing.assert_allclose(h @ v, hv, rtol=0, atol=1e-12 * np.abs(hv).max() * p)


def test_eigenvalues_by_lanczos_match_the_dense_hessian():
    model = _model("mse", k=2)
    y = LOSSES[3][1]
    dense = np.linalg.eigvalsh(hessian(model, X, y))
    got = hessian_eigenvalues(model, X, y, k=4)
    want = np.r_[dense[:2], dense[-2:]]
    # ARPACK's tol=1e-8 is relative to each eigenvalue's magnitude; the extremes are O(1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * np.abs(dense).max())
    assert hessian_eigenvalues(model, X, y, k=1)[0] == pytest.approx(dense[-1], rel=1e-6)
    np.testing.assert_allclose(hessian_eigenvalues(model, X, y, k=10 ** 6), dense,
                               rtol=1e-12, atol=1e-12)  # k >= P: every eigenvalue, dense


def _seed_004_model():
    """Seed 004's f(x1, x2, x3) = x1^2 + x1 (1 - x2) + x2^2 - x2 x3 + x3^2 + x3 as a model's
    objective: f = w^T A w / 2 + c^T w with A = [[2, -1, 0], [-1, 2, -1], [0, -1, 2]] and
    c = (1, 0, 1). A linear model z = x . w with the mse loss (1/N) sum 1/2 (x_n . w - y_n)^2
    has Hessian X^T X / N and gradient A w - X^T y / N: with X = sqrt(3) L^T (A = L L^T,
    N = 3) and y = -3 X^-T c the two functions differ by a constant."""
    a = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
    x = np.sqrt(3.0) * np.linalg.cholesky(a).T
    y = -3.0 * np.linalg.solve(x.T, np.array([1.0, 0.0, 1.0]))
    model = fn.Sequential([fn.Dense(1, use_bias=False, input_dim=3)], seed=0, dtype="float64")
    model.compile(optimizer=fn.optim.SGD(lr=0.2), loss="mse")
    return model, a, x, y[:, None]


def test_seed_004_worked_example():
    """The notes' steps: the gradient is 0 at x = (-1, -1, -1), the Hessian there is A, its
    eigenvalues 2 - sqrt 2 = 0.586, 2 and 2 + sqrt 2 = 3.414 are all positive: a minimum.
    Then gradient descent finds that point, and the test holds there too."""
    model, a, x, y = _seed_004_model()
    model.params[:] = -1.0
    assert np.abs(_backend_gradient(model, x, y, None, model.params)).max() < 1e-12
    np.testing.assert_allclose(hessian(model, x, y), a, atol=1e-12)  # float64 rounding
    np.testing.assert_allclose(hessian_eigenvalues(model, x, y, k=3),
                               [2 - np.sqrt(2), 2, 2 + np.sqrt(2)], atol=1e-12)
    model.params[:] = 0.0
    model.fit(x, y, epochs=300, batch_size=None, shuffle=False, verbose=0)
    # gradient descent with lr 0.2 on eigenvalues in [0.586, 3.414] contracts the error by
    # max |1 - 0.2 lambda| = 0.883 per step: 300 steps take it below 1e-15
    np.testing.assert_allclose(model.params, [-1.0, -1.0, -1.0], atol=1e-9)
    assert hessian_eigenvalues(model, x, y, k=2)[0] > 0


def test_a_trained_logistic_model_is_at_a_positive_definite_minimum():
    """The docstring's example: a sigmoid unit with an L2 term, trained to its minimum by
    full-batch gradient descent, has a gradient ~0 and a positive definite Hessian."""
    x, y = make_moons(60, noise=0.3, seed=1)
    model = fn.Sequential([fn.Dense(1, activation="sigmoid", input_dim=2,
                                    kernel_regularizer=fn.L2(1e-2))], seed=0, dtype="float64")
    model.compile(optimizer=fn.optim.SGD(lr=2.0), loss="binary_cross_entropy")
    model.fit(x, y[:, None], epochs=1500, batch_size=None, shuffle=False, verbose=0)
    grad = _backend_gradient(model, x, y[:, None], None, model.params)
    assert np.abs(grad).max() < 1e-6  # converged: GD contracts linearly on a convex loss
    lo, hi = hessian_eigenvalues(model, x, y[:, None], k=2)
    assert 0 < lo <= hi


def test_bad_arguments_are_named():
    model = _model("mse")
    y = LOSSES[3][1]
    with pytest.raises(ValueError, match="v must have shape"):
        hessian_vector_product(model, X, y, np.zeros(3))
    with pytest.raises(ValueError, match="v contains NaN"):
        hessian_vector_product(model, X, y, np.full(model.params.size, np.nan))
    with pytest.raises(ValueError, match="max_params"):
        hessian(model, X, y, max_params=5)
    with pytest.raises(ValueError, match="k"):
        hessian_eigenvalues(model, X, y, k=0)
    with pytest.raises(ValueError, match="x has 4 features"):
        hessian_vector_product(model, np.zeros((2, 4)), y[:2], np.zeros(model.params.size))
    step = fn.Sequential([fn.Dense(2, activation="step", input_dim=3), fn.Dense(2)])
    step.compile(loss="mse")
    with pytest.raises(ValueError, match="step activation"):
        hessian(step, X, y)
    with pytest.raises(RuntimeError, match="compile"):
        hessian(fn.Sequential([fn.Dense(2, input_dim=3)]), X, y)


def test_a_gpu_model_computes_the_product_on_the_device():
    """device="cuda" runs kernels.cuda.mlp_hvp (Numba's simulator without a GPU: a tiny
    model); it agrees with the CPU's product to float64 rounding (1e-12 of the largest)."""
    x, y = X[:4], RNG.integers(0, 2, 4)
    models = [fn.Sequential([fn.Dense(3, activation="sigmoid", input_dim=3,
                                      kernel_regularizer=0.1), fn.Dense(2)],
                            seed=1, device=device) for device in ("cpu", "cuda")]
    for m in models:
        m.compile(loss="softmax_cross_entropy")
        m.build(3)
    v = np.random.default_rng(4).standard_normal(models[0].params.size)
    cpu_hv, gpu_hv = (hessian_vector_product(m, x, y, v) for m in models)
    np.testing.assert_allclose(gpu_hv, cpu_hv, rtol=0, atol=1e-12 * np.abs(cpu_hv).max())
