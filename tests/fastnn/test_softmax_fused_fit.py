"""SoftmaxRegression on dense X runs its solvers on the fused softmax passes
(kernels.cpu.softmax_value_grad, softmax_hessp); sparse X on the generic products
(_Objective: X @ V, the row factors, Xᵀ R). The two paths must find the same optimum, and the
default fit on W6's digits row must be within W6's bar (1e-6 relative) of a tight fit; rows
split across threads give the same fit on any number of threads."""
import numpy as np
import pytest
import scipy.sparse
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from fastnn import linear_model
from fastnn.estimator_utils import Design
from fastnn.linear_model import SoftmaxRegression


def _params(est):
    # softmax ignores a shift shared by all K intercepts: compare them centred
    return np.r_[est.coef_.ravel(), est.intercept_ - est.intercept_.mean()]


def _rel(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


# both paths must converge (a ConvergenceWarning fails the test)
@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dense_fused_path_matches_sparse_generic_path(digits, fit_intercept):
    X, y = digits
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), 307, replace=False)  # a prime number of rows, all 10 classes
    X, y = X[rows], y[rows]
    sw = rng.random(len(y)) * 2
    kw = {"C": 0.5, "fit_intercept": fit_intercept, "tol": 1e-10, "max_iter": 1000}
    dense = SoftmaxRegression(**kw).fit(X, y, sample_weight=sw)
    sparse = SoftmaxRegression(**kw).fit(scipy.sparse.csr_matrix(X), y, sample_weight=sw)
    # both stop at ||∇f|| <= 1e-10 ||∇f(0)|| (measured: 5e-12 apart with an intercept, 7e-16
    # without); 1e-8 leaves room for the last TRON step landing elsewhere inside that ball
    assert _rel(_params(dense), _params(sparse)) < 1e-8


@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
def test_digits_default_fit_is_within_w6s_bar_of_the_optimum(digits):
    X, y = digits
    tight = SoftmaxRegression(tol=1e-13, max_iter=1000).fit(X, y)
    est = SoftmaxRegression().fit(X, y)  # the defaults W6 times: auto (TRON), tol 1e-8
    assert _rel(_params(est), _params(tight)) < 1e-6  # W6's bar (W6_REL)


def test_row_chunks_give_the_same_fit_on_one_thread_or_two(monkeypatch):
    rng = np.random.default_rng(1)
    n, d, k = 4001, 101, 10  # 4e6 multiply-adds a pass: two row chunks
    X = rng.standard_normal((n, d))
    y = np.argmax(X @ rng.standard_normal((d, k)) * 0.3 + rng.gumbel(size=(n, k)), axis=1)
    obj = linear_model._SoftmaxLoss(Design(X), y, k, np.ones(n), True, 1.0)
    assert len(obj._rows) == 2
    fits = {}
    for threads in (1, 2):
        monkeypatch.setattr(linear_model, "solver_threads", lambda: threads)
        fits[threads] = _params(SoftmaxRegression().fit(X, y))
    # the chunks depend on the shapes only, and their sums are added in chunk order
    np.testing.assert_array_equal(fits[1], fits[2])
    monkeypatch.setattr(linear_model, "_SOFTMAX_CHUNK_WORK", 10 ** 12)  # one chunk
    one = _params(SoftmaxRegression().fit(X, y))
    # the same steps summed in another order (measured 3e-15 apart); 1e-9 leaves room for
    # the rounding to change a trust-region decision on another machine
    assert _rel(one, fits[2]) < 1e-9
