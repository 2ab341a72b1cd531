"""Hostile inputs through every scikit-learn estimator's fit and predict: each case either
gives exactly the clean input's result, or raises ValueError/TypeError naming the argument (or
with scikit-learn's standard validation message, which the estimators reuse) and leaves a fitted
estimator exactly as it was."""
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from fastnn import linear_model as lm
from fastnn import multiclass as mc
from fastnn import neural_network as nn

N, P = 12, 3
RNG = np.random.default_rng(5)
X = RNG.normal(size=(N, P))
Y_CLS = np.arange(N) % 3
Y_REG = X @ np.array([1.0, -2.0, 0.5]) + 0.1

ESTIMATORS = {
    "LinearRegression": (lambda: lm.LinearRegression(), "reg"),
    "LinearRegression_cholesky": (lambda: lm.LinearRegression(alpha=1.0), "reg"),
    "LinearRegression_sgd": (lambda: lm.LinearRegression(solver="sgd", max_iter=5,
                                                         random_state=0), "reg"),
    "LogisticRegression": (lambda: lm.LogisticRegression(max_iter=10, random_state=0), "cls"),
    "SoftmaxRegression": (lambda: lm.SoftmaxRegression(max_iter=10, batch_size=4,
                                                       random_state=0), "cls"),
    "Perceptron": (lambda: lm.Perceptron(max_iter=3, random_state=0), "cls"),
    "LinearSVM": (lambda: lm.LinearSVM(max_iter=10, random_state=0), "cls"),
    "OneVsRest": (lambda: mc.OneVsRestClassifier(lm.LogisticRegression(max_iter=5,
                                                                      random_state=0)), "cls"),
    "OneVsOne": (lambda: mc.OneVsOneClassifier(lm.LinearSVM(max_iter=5, random_state=0)), "cls"),
    "MLPClassifier": (lambda: nn.MLPClassifier((4,), max_iter=5, random_state=0), "cls"),
    "MLPRegressor": (lambda: nn.MLPRegressor((4,), max_iter=5, random_state=0), "reg"),
}

# scikit-learn's own wording for a bad array, which the estimators keep
SKLEARN_WORDING = ("Expected 2D array", "Found array with 0 sample", "Found array with 0 feature",
                   "inconsistent numbers of samples", "Unknown label type", "Complex data",
                   "dtype", "could not convert", "features", "at least 2 classes",
                   "while dim <= 2", "Sample weights", "Negative values in data")


def _fitted(name):
    make, kind = ESTIMATORS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make().fit(X, Y_CLS if kind == "cls" else Y_REG)


def _state(est):
    return pickle.dumps(est.__dict__)


def _assert_refused(call, est, arg):
    before = _state(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError)) as info:
            call()
    msg = str(info.value)
    assert arg in msg or any(w in msg for w in SKLEARN_WORDING), msg
    assert _state(est) == before, "a rejected call changed the estimator"


def _arrays(v):
    return [np.asarray(a) for a in v] if isinstance(v, list) else [np.asarray(v)]


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _noncontig(a):
    wide = np.repeat(a, 2, axis=1)
    return wide[:, ::2]


X_SAME = {
    "fortran": lambda: np.asfortranarray(X), "noncontiguous": lambda: _noncontig(X),
    "readonly": lambda: _readonly(X), "list": lambda: X.tolist(),
    "torch_cpu": lambda: torch.from_numpy(X.copy()),
}
X_BAD = {
    "nan": lambda: np.where(np.eye(N, P) > 0, np.nan, X),
    "inf": lambda: np.where(np.eye(N, P) > 0, np.inf, X),
    "-inf": lambda: np.where(np.eye(N, P) > 0, -np.inf, X),
    "1d": lambda: X[:, 0], "3d": lambda: X[None], "empty": lambda: X[:0],
    "no_features": lambda: X[:, :0], "strings": lambda: np.full((N, P), "a"),
    "object_mixed": lambda: np.array([[1.0, "a", None]] * N, dtype=object),
    "complex": lambda: X.astype(complex), "ragged": lambda: [[1.0, 2.0, 3.0], [1.0]] * (N // 2),
    "torch_requires_grad": lambda: torch.tensor(X, requires_grad=True), "none": lambda: None,
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("case", sorted(X_BAD))
def test_bad_x_refused_by_fit_and_predict(name, case):
    est = _fitted(name)
    kind = ESTIMATORS[name][1]
    y = Y_CLS if kind == "cls" else Y_REG
    _assert_refused(lambda: est.fit(X_BAD[case](), y), est, "X")
    _assert_refused(lambda: est.predict(X_BAD[case]()), est, "X")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_y_and_wrong_feature_count_refused(name):
    est = _fitted(name)
    kind = ESTIMATORS[name][1]
    y = Y_CLS if kind == "cls" else Y_REG
    bad_y = [y[:-1], np.append(y, y[0]), np.where(np.arange(N) == 0, np.nan, y.astype(float)),
             np.full(N, np.inf), None, [[0], [1, 2]] * (N // 2),
             torch.tensor(y.astype(np.float32), requires_grad=True)]
    if kind == "cls":
        bad_y += [np.zeros(N), y + 0.5, np.full((N, 2, 2), 0)]
    else:
        bad_y += [np.full(N, "a"), np.zeros((N, 2, 2))]
    for b in bad_y:
        _assert_refused(lambda: est.fit(X, b), est, "y")
    for bad in (X[:, :2], np.hstack([X, X])):
        _assert_refused(lambda: est.predict(bad), est, "X")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("case", sorted(X_SAME) + ["int", "bool", "float16", "float32"])
def test_x_in_another_form_gives_the_same_fit_and_predictions(name, case):
    if case in X_SAME:
        bad, clean = X_SAME[case](), X
    else:
        base = {"int": np.rint(X * 3).astype(np.int64), "bool": X > 0,
                "float16": X.astype(np.float16), "float32": X.astype(np.float32)}[case]
        bad, clean = base, base.astype(np.float64)
    make, kind = ESTIMATORS[name]
    y = Y_CLS if kind == "cls" else Y_REG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = make().fit(bad, y), make().fit(clean, y)
        np.testing.assert_array_equal(a.predict(bad), b.predict(clean))
    for attr in ("coef_", "intercept_", "coefs_", "intercepts_"):
        if hasattr(b, attr):
            for u, v in zip(_arrays(getattr(a, attr)), _arrays(getattr(b, attr))):
                assert u.tobytes() == v.tobytes(), attr


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_one_sample_one_feature_and_huge_values(name):
    make, kind = ESTIMATORS[name]
    y = Y_CLS if kind == "cls" else Y_REG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one feature
        est = make().fit(X[:, :1], y)
        assert est.predict(X[:, :1]).shape == (N,)
        # one sample: a regressor fits it, a classifier sees one class and says so
        if kind == "reg":
            pred = make().fit(X[:1], y[:1]).predict(X[:1])
            assert np.all(np.isfinite(pred))
        else:
            _assert_refused(lambda: make().fit(X[:1], y[:1]), make(), "y")
        # huge values: a finite model or a clear error, never NaN weights
        for scale in (1e30, 1e-30):
            try:
                est = make().fit(X * scale, y * scale if kind == "reg" else y)
            except FloatingPointError as e:
                assert "restored" in str(e)
                continue
            for attr in ("coef_", "intercept_", "coefs_", "intercepts_"):
                for a in _arrays(getattr(est, attr, [])):
                    assert np.all(np.isfinite(a)), (attr, scale)
            pred = est.predict(X * scale)
            if kind == "reg":
                assert np.all(np.isfinite(pred))
            else:
                assert set(pred.tolist()) <= set(y.tolist())


@pytest.mark.parametrize("name", ["LinearRegression", "LinearRegression_sgd", "LogisticRegression",
                                  "LinearSVM"])
def test_bad_sample_weight_refused(name):
    est = _fitted(name)
    kind = ESTIMATORS[name][1]
    y = Y_CLS if kind == "cls" else Y_REG
    for sw in (np.ones(N - 1), np.full(N, np.nan), np.full(N, np.inf), np.ones((N, 2)),
               np.full(N, "a"), -np.ones(N)):
        _assert_refused(lambda: est.fit(X, y, sample_weight=sw), est, "sample_weight")


def test_predict_before_fit_is_refused():
    from sklearn.exceptions import NotFittedError
    for make, _ in ESTIMATORS.values():
        with pytest.raises(NotFittedError):
            make().predict(X)


# ---- all-zero and masked sample weights, hostile partial_fit (issue 12)

def _takes_sample_weight(est):
    import inspect
    return "sample_weight" in inspect.signature(est.fit).parameters


@pytest.mark.parametrize("name", [n for n, (make, _) in ESTIMATORS.items()
                                  if _takes_sample_weight(make())])
def test_all_zero_and_masked_sample_weight_refused(name):
    est = _fitted(name)
    y = Y_CLS if ESTIMATORS[name][1] == "cls" else Y_REG
    for sw in (np.zeros(N), np.ma.masked_array(np.ones(N), mask=np.arange(N) == 2)):
        _assert_refused(lambda: est.fit(X, y, sample_weight=sw), est, "sample_weight")


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_bad_partial_fit_input_refused(name):
    est = _fitted(name)
    kind = ESTIMATORS[name][1]
    y = Y_CLS if kind == "cls" else Y_REG
    bad = [(X[:, :2], y, "X"), (X, y[:-1], "y"), (np.full_like(X, np.nan), y, "X"),
           (X, y, "sample_weight")]
    for xb, yb, arg in bad:
        sw = np.zeros(N) if arg == "sample_weight" else None
        _assert_refused(lambda: est.partial_fit(xb, yb, sample_weight=sw), est, arg)
    if kind == "cls":
        _assert_refused(lambda: est.partial_fit(X, Y_CLS + 5), est, "classes")
        _assert_refused(lambda: est.partial_fit(X, Y_CLS, classes=[0, 1]), est, "classes")
