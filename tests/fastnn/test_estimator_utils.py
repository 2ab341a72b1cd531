"""fastnn.estimator_utils: the helpers the scikit-learn estimators share, against plain NumPy."""
import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris

from fastnn.estimator_utils import (Design, check_classifier_data, check_finite,
                                    check_sample_weight, encode_labels, fit_guard, forward,
                                    seed_from, sigmoid, softmax)
from fastnn.kernels import codes
from fastnn.linear_model import LogisticRegression, SoftmaxRegression
from fastnn.neural_network import MLPClassifier

# logits from 0 to the edge of float64, both signs, and the exp overflow / underflow edges
EXTREME = np.array([0.0, 1e-300, -1e-300, 1.0, -1.0, 36.0, -36.0, 709.0, -709.0, 746.0,
                    -746.0, 1e300, -1e300, 1.7e308, -1.7e308])


def _sigmoid_ref(z):
    # exp only ever sees -|z|, so neither branch overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax_ref(z):
    # subtract the row max so exp never overflows; z - max may overflow to -inf near the
    # edge of float64, whose exp is the right 0
    with np.errstate(over="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- sigmoid, softmax

@pytest.mark.parametrize("shape", [(15,), (5, 3), (3, 5), (1, 15)])
def test_sigmoid_matches_numpy_at_extreme_logits(shape):
    z = EXTREME.reshape(shape)
    p = sigmoid(z)
    assert p.shape == z.shape and p.dtype == np.float64
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, _sigmoid_ref(z), rtol=1e-15, atol=0)
    assert sigmoid(np.array([1e300]))[0] == 1.0 and sigmoid(np.array([-1e300]))[0] == 0.0


def test_sigmoid_takes_any_layout_and_keeps_nan():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=50, size=(7, 4))
    np.testing.assert_array_equal(sigmoid(np.asfortranarray(z)), sigmoid(z))
    np.testing.assert_array_equal(sigmoid(z[:, ::2]), sigmoid(z)[:, ::2])
    np.testing.assert_array_equal(sigmoid(z.astype(np.float32)), sigmoid(
        z.astype(np.float32).astype(np.float64)))
    assert np.isnan(sigmoid(np.array([np.nan, 0.0]))[0])


def test_softmax_matches_numpy_at_extreme_logits():
    z = np.array([[1e300, -1e300, 0.0], [-1e300, -1e300, -1e300], [1e300, 1e300, 1e300],
                  [746.0, -746.0, 0.0], [1.7e308, -1.7e308, 1.0], [0.0, 0.0, 0.0],
                  [1.0, 2.0, 3.0], [-709.0, 0.0, 709.0]])
    p = softmax(z)
    assert p.shape == z.shape and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p, _softmax_ref(z), rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])


def test_softmax_random_logits_match_numpy():
    z = np.random.default_rng(1).normal(scale=30, size=(50, 7))
    np.testing.assert_allclose(softmax(z), _softmax_ref(z), rtol=1e-13, atol=1e-300)
    np.testing.assert_array_equal(softmax(np.asfortranarray(z)), softmax(z))


def test_predict_proba_is_the_numpy_formula_of_the_logits():
    """predict_proba through the kernels is what the NumPy sigmoid / softmax of the same
    logits gives, up to rounding."""
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    Xt = np.vstack([X, 100 * X[:5]])  # large logits too
    for est, link in [(LogisticRegression(max_iter=50).fit(X, y), "ovr"),
                      (LogisticRegression(max_iter=50).fit(X, y == 2), "binary"),
                      (SoftmaxRegression(max_iter=50).fit(X, y), "softmax")]:
        z = est.decision_function(Xt)
        if link == "binary":
            q = _sigmoid_ref(z)
            ref = np.column_stack([1 - q, q])
        elif link == "ovr":
            q = _sigmoid_ref(z)
            ref = q / q.sum(axis=1, keepdims=True)
        else:
            ref = _softmax_ref(z)
        np.testing.assert_allclose(est.predict_proba(Xt), ref, rtol=1e-13, atol=1e-300)
    mlp = MLPClassifier((8,), max_iter=20, random_state=0).fit(X, y)
    z = forward(Xt, mlp.coefs_, mlp.intercepts_, [codes.RELU, codes.IDENTITY])
    np.testing.assert_allclose(mlp.predict_proba(Xt), _softmax_ref(z), rtol=1e-13,
                               atol=1e-300)


# --------------------------------------------------------------------------- the other helpers

def test_forward_is_the_numpy_forward_pass():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 4))
    ws = [rng.normal(size=(4, 5)), rng.normal(size=(5, 3))]
    bs = [rng.normal(size=5), rng.normal(size=3)]
    ref = np.maximum(X @ ws[0] + bs[0], 0) @ ws[1] + bs[1]
    np.testing.assert_allclose(forward(X, ws, bs, [codes.RELU, codes.IDENTITY]), ref,
                               rtol=1e-12, atol=1e-12)


def test_fit_guard_restores_the_estimator_on_error():
    class Est(BaseEstimator):
        @fit_guard
        def fit(self, X):
            """Doc."""
            self.coef_ = 1.0
            if X is None:
                raise ValueError("bad X")
            return self

    est = Est().fit(0)
    est.coef_ = 2.0
    with pytest.raises(ValueError, match="bad X"):
        est.fit(None)
    assert est.coef_ == 2.0 and Est.fit.__doc__ == "Doc."


def test_seed_from_is_deterministic_and_an_int32():
    assert seed_from(0) == seed_from(0) == seed_from(np.random.RandomState(0))
    assert 0 <= seed_from(None) < np.iinfo(np.int32).max


def test_check_classifier_data_and_sample_weight():
    X, classes, y_idx = check_classifier_data(BaseEstimator(), [[0.0], [1.0], [2.0]],
                                              ["b", "a", "b"])
    assert X.dtype == np.float64 and list(classes) == ["a", "b"]
    np.testing.assert_array_equal(y_idx, [1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        check_classifier_data(BaseEstimator(), [[0.0], [1.0]], [3, 3])
    assert check_sample_weight(None, 3) is None
    np.testing.assert_array_equal(check_sample_weight(2, 3), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="[Nn]egative"):
        check_sample_weight([1.0, -1.0, 1.0], 3)


def test_validate_data_refuses_masked_arrays_by_name():
    """scikit-learn's validate_data would drop a mask silently; fastnn's estimators refuse it."""
    from fastnn.estimator_utils import validate_data
    from fastnn.neural_network import MLPRegressor
    X = np.ma.masked_array(np.arange(12.0).reshape(6, 2), mask=np.zeros((6, 2), bool))
    y = np.arange(6.0)
    with pytest.raises(TypeError, match="X is a masked array"):
        validate_data(MLPRegressor(), X, y)
    with pytest.raises(TypeError, match="y is a masked array"):
        validate_data(MLPRegressor(), X.filled(0), np.ma.masked_array(y))


@pytest.mark.parametrize("y", [
    np.array([1, 0, 1, 1, 0]),                            # the usual binary labels
    np.array([-128, 127, 5, 5, -128], dtype=np.int8),     # y - min overflows int8
    np.array([7], dtype=np.uint16),                       # one label
    np.array([2 ** 63 + 5, 2 ** 63 + 1], dtype=np.uint64),  # beyond intp: np.unique's path
    np.array([-2 ** 63, 2 ** 63 - 1, 0]),                 # a range past 4 x the count: too
    np.array([10 ** 9 + 3, 10 ** 9, 10 ** 9 + 3]),        # a narrow range far from 0
    np.array([2.5, -1.0, 2.5]),                           # floats: np.unique's path
    np.array(["b", "a", "b"]),
])
def test_encode_labels_is_np_unique(y):
    classes, index = encode_labels(y)
    want_classes, want_index = np.unique(y, return_inverse=True)
    assert classes.dtype == want_classes.dtype
    np.testing.assert_array_equal(classes, want_classes)
    np.testing.assert_array_equal(index, want_index)


def test_design_float32_copies_share_one_workspace_one_design_at_a_time(monkeypatch):
    """Design.float32 draws its copy from the buffer kept between fits: a live Design keeps
    it (a second one gets its own memory, so neither overwrites the other), a Design that is
    gone gives it back, and copies past WORKSPACE_MAX_BYTES never take it."""
    from fastnn import estimator_utils
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 7)), rng.standard_normal((200, 5))
    estimator_utils.release_workspace()
    first = Design(a)
    x1 = first.float32()
    second = Design(b)
    x2 = second.float32()
    assert not np.shares_memory(x1, x2)
    np.testing.assert_array_equal(x1, a.astype(np.float32))
    np.testing.assert_array_equal(x2, b.astype(np.float32))
    address = x1.__array_interface__["data"][0]
    del first, x1
    third = Design(b)  # the buffer is free again, and large enough
    x3 = third.float32()
    assert x3.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(x2, b.astype(np.float32))  # the live copy is untouched
    np.testing.assert_array_equal(x3, b.astype(np.float32))
    del third, x3
    monkeypatch.setattr(estimator_utils, "WORKSPACE_MAX_BYTES", 4 * b.size - 1)
    x4 = Design(b).float32()
    assert x4.__array_interface__["data"][0] != address
    np.testing.assert_array_equal(x4, b.astype(np.float32))
    estimator_utils.release_workspace()
    assert estimator_utils._WORKSPACE._buf is None


@pytest.mark.parametrize("slow", [1, 2])
def test_faster_order_alternates_then_keeps_the_faster(slow):
    """_FasterOrder: the first 2 TRIALS passes alternate the two orders (0, the kernels'
    own rule, until then), then only the faster runs. The slow order sleeps 0.1 s a pass, a
    margin no scheduler delay of the fast one's two passes bridges on a CI machine."""
    import time

    from fastnn.estimator_utils import _FasterOrder
    order, seen = _FasterOrder(), []

    def run(phases):
        seen.append(phases)
        if phases == slow:
            time.sleep(0.1)
        return phases * 10

    assert order.order == 0
    assert [order.timed(run) for _ in range(7)] == [10 * p for p in seen]
    assert seen[:2 * _FasterOrder.TRIALS] == [1, 2] * _FasterOrder.TRIALS
    assert order.order == 3 - slow
    assert seen[2 * _FasterOrder.TRIALS:] == [3 - slow] * (7 - 2 * _FasterOrder.TRIALS)


def test_sparse_fits_do_not_depend_on_the_order_chosen(monkeypatch):
    """The two orders of a fused CSR pass give equal sums, so a fit is the same, bit for bit,
    whichever order its products ran in (TRON's logistic, float32 products at >= 1e6
    non-zeros and float64 below; sparse ridge's CG)."""
    import scipy.sparse

    from fastnn import estimator_utils
    from fastnn.linear_model import LinearRegression
    rng = np.random.default_rng(0)
    fits = {}
    for phases in (1, 2):
        monkeypatch.setattr(estimator_utils._FasterOrder, "timed",
                            lambda self, run, _p=phases: run(_p))
        for nnz in (30_000, 1_000_000):
            X = scipy.sparse.random(nnz // 50, 10_000, density=0.005, format="csr",
                                    random_state=np.random.default_rng(nnz))
            y = (X @ rng.standard_normal(10_000) > 0).astype(int) if phases == 1 else \
                fits[(1, nnz)][1]
            est = LogisticRegression(fit_intercept=False).fit(X, y)
            fits[(phases, nnz)] = (est.coef_, y)
        Xr = scipy.sparse.random(4000, 300, density=0.02, format="csr",
                                 random_state=np.random.default_rng(1))
        yr = Xr @ np.arange(300.0)
        fits[(phases, "ridge")] = (LinearRegression(alpha=1.0).fit(Xr, yr).coef_, yr)
    for key in (30_000, 1_000_000, "ridge"):
        np.testing.assert_array_equal(fits[(1, key)][0], fits[(2, key)][0])


@pytest.mark.parametrize("bad,message", [(np.nan, "Input X contains NaN"),
                                         (np.inf, "Input X contains infinity"),
                                         (-np.inf, "Input X contains infinity")])
def test_check_finite_names_x_in_every_layout(bad, message):
    """check_finite reads X's memory in one compiled pass, C or F order, a strided view
    through scikit-learn's own check, sparse X's stored values: each raises scikit-learn's
    message for a single bad value (the last one, where a block's early exit cannot see it
    first; and one in the middle), and passes finite X."""
    import scipy.sparse
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4099, 3))  # not a multiple of all_finite's 4,096-value blocks
    est = LogisticRegression()
    layouts = [lambda a: a, np.asfortranarray, lambda a: np.repeat(a, 2, axis=1)[:, ::2],
               scipy.sparse.csr_matrix, scipy.sparse.csc_array]
    for layout in layouts:
        check_finite(layout(X), est)
        for where in [(X.shape[0] - 1, X.shape[1] - 1), (2048, 1)]:
            Xb = X.copy()
            Xb[where] = bad
            with pytest.raises(ValueError, match=message):
                check_finite(layout(Xb), est)
