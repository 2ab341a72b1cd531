"""MLPClassifier / MLPRegressor against scikit-learn's semantics: partial_fit, warm_start,
sample_weight, solver="lbfgs", the fitted attributes and the stopping rule (issue 12)."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from fastnn.neural_network import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=90, n_features=5, noise=10.0, random_state=0)
    return X, y / y.std()


def _same_network(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.coefs_ + a.intercepts_,
                                                    b.coefs_ + b.intercepts_))


# --------------------------------------------------------------------------- partial_fit

@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_partial_fit_epochs_equal_fit_epochs(iris, regression, solver, shuffle):
    """k partial_fit calls on the whole data are k epochs of one fit: same weights, same
    loss_curve_, same t_ (scikit-learn: so with shuffle=False; fastnn continues one random
    stream across calls, so with shuffle=True too). tol=0 and a long patience: no stop."""
    for est_cls, (X, y), extra in ((MLPClassifier, iris, {"classes": [0, 1, 2]}),
                                   (MLPRegressor, regression, {})):
        kw = dict(hidden_layer_sizes=(5,), solver=solver, learning_rate_init=0.02, batch_size=32,
                  shuffle=shuffle, random_state=3, tol=0.0, n_iter_no_change=50)
        streamed = est_cls(**kw)
        for _ in range(4):
            streamed.partial_fit(X, y, **extra)
        whole = est_cls(max_iter=4, **kw).fit(X, y)
        assert _same_network(streamed, whole)
        assert streamed.loss_curve_ == whole.loss_curve_
        assert streamed.t_ == whole.t_ == 4 * X.shape[0]
        assert streamed.n_iter_ == 1 and whole.n_iter_ == 4  # n_iter_: epochs of the last call


def test_partial_fit_counters_match_scikit_learn(iris):
    X, y = iris
    ours, theirs = MLPClassifier((4,), random_state=0), SkMLPClassifier((4,), random_state=0)
    for chunk in np.array_split(np.arange(len(y)), 3):
        for est in (ours, theirs):
            est.partial_fit(X[chunk], y[chunk], classes=np.unique(y))
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 3
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)


def test_partial_fit_streams_chunks_and_learns(iris):
    X, y = iris
    order = np.random.default_rng(0).permutation(len(y))
    clf = MLPClassifier((16,), learning_rate_init=0.02, random_state=0)
    for _ in range(30):
        for chunk in np.array_split(order, 5):  # a chunk may miss classes: classes= fixes them
            clf.partial_fit(X[chunk], y[chunk], classes=[0, 1, 2])
    assert clf.predict_proba(X).shape == (150, 3)
    assert clf.score(X, y) > 0.9  # iris is ~97% separable by a small MLP; 0.9 leaves margin


def test_partial_fit_classes_rules(iris):
    X, y = iris
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier((3,)).partial_fit(X, y)
    clf = MLPClassifier((3,), random_state=0).partial_fit(X[y < 2], y[y < 2], classes=[0, 1])
    before = [c.copy() for c in clf.coefs_], list(clf.loss_curve_), clf.t_
    with pytest.raises(ValueError, match="classes not in classes_"):
        clf.partial_fit(X, y)  # label 2 was not announced
    with pytest.raises(ValueError, match="is not the same as on the last call"):
        clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    # a refused call leaves the estimator as it was
    assert all(np.array_equal(a, b) for a, b in zip(before[0], clf.coefs_))
    assert clf.loss_curve_ == before[1] and clf.t_ == before[2]
    clf.partial_fit(X[y == 0], y[y == 0])  # one class in a chunk is fine
    assert clf.t_ == before[2] + 50
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    for est in (MLPClassifier(solver="lbfgs"), MLPRegressor(solver="lbfgs")):
        assert not hasattr(est, "partial_fit")  # scikit-learn: stochastic solvers only
        with pytest.raises(AttributeError, match="partial_fit"):
            est.partial_fit(X, y)


def test_partial_fit_after_fit_continues_it(regression):
    X, y = regression
    kw = dict(hidden_layer_sizes=(4,), solver="sgd", momentum=0.0, shuffle=False,
              learning_rate_init=0.01, random_state=0, tol=0.0, n_iter_no_change=50)
    est = MLPRegressor(max_iter=3, **kw).fit(X, y)
    est.partial_fit(X, y)
    assert _same_network(est, MLPRegressor(max_iter=4, **kw).fit(X, y))
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :3], y)
    with pytest.raises(ValueError, match="targets"):
        est.partial_fit(X, np.column_stack([y, y]))


# --------------------------------------------------------------------------- warm_start

def test_warm_start_continues_the_network(iris):
    """Plain SGD without momentum and without shuffling has no optimizer or random state, so
    5 + 5 warm-started epochs are exactly 10 epochs of one fit."""
    X, y = iris
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, shuffle=False,
              learning_rate_init=0.05, random_state=0, tol=0.0, n_iter_no_change=50)
    warm = MLPClassifier(max_iter=5, warm_start=True, **kw).fit(X, y).fit(X, y)
    once = MLPClassifier(max_iter=10, **kw).fit(X, y)
    assert _same_network(warm, once) and warm.loss_curve_ == once.loss_curve_
    assert warm.n_iter_ == 5 and warm.t_ == once.t_ == 10 * len(y)
    cold = MLPClassifier(max_iter=5, **kw).fit(X, y).fit(X, y)  # warm_start=False: refit
    assert _same_network(cold, MLPClassifier(max_iter=5, **kw).fit(X, y))
    assert len(cold.loss_curve_) == 5


def test_warm_start_with_adam_and_lbfgs_starts_from_coefs(iris):
    X, y = iris
    for solver in ("adam", "lbfgs"):
        est = MLPClassifier((5,), solver=solver, max_iter=20, warm_start=True, random_state=0,
                            learning_rate_init=0.01).fit(X, y)
        first = est.loss_
        est.fit(X, y)
        assert est.loss_ < first  # continued from a trained network, not from a fresh one
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        est.set_params(hidden_layer_sizes=(7,)).fit(X, y)


# --------------------------------------------------------------------------- sample_weight

def test_lbfgs_sample_weight_equals_repeated_rows(iris, regression):
    """Integer weights and repeated rows give the same objective, Σ w·loss / Σw +
    alpha / (2 Σw) ||W||² (zero weights: rows left out). L-BFGS then follows the same path up
    to summation-order rounding of the gradients. A smooth (tanh), well-regularised problem
    keeps the paths within rounding of each other: atol 1e-6 on the weights (seen: 1e-7),
    rtol 1e-9 on the loss (seen: 1e-12)."""
    w = np.random.default_rng(0).integers(0, 4, 150).astype(float)
    for est_cls, (X, y), alpha in ((MLPClassifier, iris, 1.0), (MLPRegressor, regression, 3.0)):
        w_ = w[:len(y)]
        kw = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=alpha,
                  max_iter=1000, tol=1e-10, random_state=0)
        weighted = est_cls(**kw).fit(X, y, sample_weight=w_)
        repeated = est_cls(**kw).fit(np.repeat(X, w_.astype(int), 0),
                                     np.repeat(y, w_.astype(int)))
        np.testing.assert_allclose(weighted.loss_, repeated.loss_, rtol=1e-9)
        for a, b in zip(weighted.coefs_ + weighted.intercepts_,
                        repeated.coefs_ + repeated.intercepts_):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_unit_sample_weight_is_no_weight(iris, solver):
    X, y = iris
    kw = dict(hidden_layer_sizes=(4,), solver=solver, max_iter=10, random_state=0)
    ones = MLPClassifier(**kw).fit(X, y, sample_weight=np.ones(len(y)))
    assert _same_network(ones, MLPClassifier(**kw).fit(X, y))


def test_sample_weight_moves_the_fit(iris):
    """Weighting class 2 up makes the network predict it more often."""
    X, y = iris
    kw = dict(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=60, random_state=0, alpha=1.0)
    plain = MLPClassifier(**kw).fit(X, y)
    heavy = MLPClassifier(**kw).fit(X, y, sample_weight=np.where(y == 2, 20.0, 1.0))
    assert (heavy.predict(X) == 2).sum() > (plain.predict(X) == 2).sum()


@pytest.mark.parametrize("est", [MLPClassifier((3,), max_iter=2),
                                 MLPRegressor((3,), max_iter=2, solver="lbfgs")])
def test_bad_sample_weight_is_refused_by_name(iris, est):
    X, y = iris
    for bad, match in ((np.zeros(150), "(?i)sample.weight.*(non-zero|0 for every)"),
                       (-np.ones(150), "(?i)negative"),
                       (np.ones(7), "sample_weight"),
                       (np.ma.masked_array(np.ones(150), mask=np.arange(150) == 3),
                        "masked array")):
        with pytest.raises((ValueError, TypeError), match=match):
            est.fit(X, y, sample_weight=bad)
    assert not hasattr(est, "coefs_")


# --------------------------------------------------------------------------- lbfgs

@pytest.mark.parametrize("target", ["multiclass", "binary", "regression"])
def test_lbfgs_from_the_same_start_matches_scikit_learn(iris, regression, target):
    """Both start from scikit-learn's initial weights (a 1-iteration fit, then coefs_
    overwritten, then warm_start): the same objective and gradient under L-BFGS-B with the
    same options give the same final loss. rtol 1e-8: the gradients agree to rounding, not
    bitwise (BLAS vs fastnn's kernels); on this smooth (tanh), well-regularised problem
    L-BFGS-B keeps that at rounding level (seen: 4e-16)."""
    X, y = iris
    ours_cls, theirs_cls, alpha = MLPClassifier, SkMLPClassifier, 1.0
    if target == "binary":
        y = (y == 1).astype(int)
    elif target == "regression":
        (X, y), ours_cls, theirs_cls, alpha = regression, MLPRegressor, SkMLPRegressor, 3.0
    kw = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=alpha,
              max_iter=1, tol=1e-8, random_state=0)
    ours, theirs = ours_cls(**kw).fit(X, y), theirs_cls(**kw).fit(X, y)
    ours.coefs_ = [c.copy() for c in theirs.coefs_]
    ours.intercepts_ = [b.copy() for b in theirs.intercepts_]
    for est in (ours, theirs):
        est.set_params(warm_start=True, max_iter=500).fit(X, y)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-8)
    assert abs(ours.n_iter_ - theirs.n_iter_) <= 2  # the same path, so about the same length


def test_lbfgs_reaches_scikit_learns_loss_from_its_own_start(iris):
    """Each from its own initial weights (fastnn: glorot W and zero b; scikit-learn: uniform
    W and b), so each ends in its own local minimum, and 100 iterations may stop either
    before convergence: over three seeds fastnn's median final loss is within 50% of
    scikit-learn's (seen: fastnn's lower)."""
    X, y = iris
    ours, theirs = [], []
    for seed in range(3):
        kw = dict(hidden_layer_sizes=(8,), solver="lbfgs", alpha=1e-2, max_iter=100,
                  random_state=seed)
        ours.append(MLPClassifier(**kw).fit(X, y).loss_)
        theirs.append(SkMLPClassifier(**kw).fit(X, y).loss_)
    assert np.median(ours) <= 1.5 * np.median(theirs)


def test_lbfgs_attributes_and_convergence_warning(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        est = MLPClassifier((4,), solver="lbfgs", max_iter=3, random_state=0).fit(X, y)
    assert est.n_iter_ == 3 and est.t_ == 0 and isinstance(est.loss_, float)
    for name in ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_"):
        assert not hasattr(est, name)  # as scikit-learn's lbfgs


# --------------------------------------------------------------------------- attributes

@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_attributes_match_scikit_learns(iris, regression, solver, early_stopping, task):
    X, y = iris
    ours_cls, theirs_cls = MLPClassifier, SkMLPClassifier
    if task == "binary":
        y = y % 2
    elif task == "regression":
        (X, y), ours_cls, theirs_cls = regression, MLPRegressor, SkMLPRegressor
    kw = dict(hidden_layer_sizes=(5, 3), solver=solver, early_stopping=early_stopping,
              max_iter=8, random_state=0)
    ours, theirs = ours_cls(**kw).fit(X, y), theirs_cls(**kw).fit(X, y)
    names = ("coefs_", "intercepts_", "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
             "validation_scores_", "best_validation_score_", "n_layers_", "n_outputs_",
             "out_activation_", "n_features_in_", "classes_")
    for name in names:
        assert hasattr(ours, name) == hasattr(theirs, name), name
        if not hasattr(ours, name):
            continue
        a, b = getattr(ours, name), getattr(theirs, name)
        if name in ("coefs_", "intercepts_"):
            assert [x.shape for x in a] == [x.shape for x in b]
            assert all(x.dtype == np.float64 for x in a)
        elif name in ("loss_curve_", "validation_scores_"):
            assert (a is None) == (b is None), name
            if a is not None:
                assert isinstance(a, list) and all(np.isfinite(v) for v in a)
                assert len(a) == ours.n_iter_  # one entry per epoch of this first fit
        elif name in ("best_loss_", "best_validation_score_"):
            assert (a is None) == (b is None), name
        elif name in ("loss_",):
            assert isinstance(a, float) and np.isfinite(a)
        elif name == "classes_":
            np.testing.assert_array_equal(a, b)
        elif name != "n_iter_" and name != "t_":
            assert a == b, name
    if solver != "lbfgs":
        n_train = len(y) - int(np.ceil(0.1 * len(y))) if early_stopping else len(y)
        assert ours.t_ == ours.n_iter_ * n_train  # samples seen: epochs x training rows
        if early_stopping:
            assert ours.best_validation_score_ == max(ours.validation_scores_)
        else:
            assert ours.best_loss_ == min(ours.loss_curve_)
            assert ours.loss_ == ours.loss_curve_[-1]


# --------------------------------------------------------------------------- stopping rule

@pytest.mark.parametrize("solver,learning_rate", [("adam", "constant"), ("sgd", "constant"),
                                                  ("sgd", "adaptive"), ("adam", "adaptive")])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_stopping_epoch_matches_scikit_learn(iris, solver, learning_rate, early_stopping):
    """With tol huge every epoch after the first counts as no improvement, whatever the data
    and the weights, so the epoch at which scikit-learn's rule stops (or, for sgd with
    "adaptive", divides the step by 5 until it is below 1e-6) is fixed: n_iter_ must be
    scikit-learn's exactly (adam ignores "adaptive", as in scikit-learn)."""
    X, y = iris
    kw = dict(hidden_layer_sizes=(4,), solver=solver, learning_rate=learning_rate, tol=1e9,
              n_iter_no_change=2, max_iter=100, random_state=0, early_stopping=early_stopping)
    assert MLPClassifier(**kw).fit(X, y).n_iter_ == SkMLPClassifier(**kw).fit(X, y).n_iter_


def _sklearn_rule(values, tol, patience, higher_is_better):
    """The epoch (1-based) at which scikit-learn's no-improvement count passes `patience`."""
    best, count = (-np.inf if higher_is_better else np.inf), 0
    for epoch, v in enumerate(values, 1):
        worse = v < best + tol if higher_is_better else v > best - tol
        count = count + 1 if worse else 0
        best = max(best, v) if higher_is_better else min(best, v)
        if count > patience:
            return epoch
    return None


@pytest.mark.parametrize("early_stopping", [False, True])
def test_stopping_rule_replayed_on_the_recorded_curve(iris, early_stopping):
    """The recorded loss_curve_ / validation_scores_, replayed through scikit-learn's rule,
    stop exactly where the fit stopped; with early stopping coefs_ are the best epoch's."""
    X, y = iris
    est = MLPClassifier((8,), learning_rate_init=0.05, tol=1e-3, n_iter_no_change=3,
                        max_iter=300, early_stopping=early_stopping, random_state=0).fit(X, y)
    values = est.validation_scores_ if early_stopping else est.loss_curve_
    assert _sklearn_rule(values, est.tol, est.n_iter_no_change, early_stopping) == est.n_iter_
    assert est.n_iter_ < 300
    if early_stopping:
        best = MLPClassifier((8,), learning_rate_init=0.05, tol=1e-3, n_iter_no_change=3,
                             max_iter=int(np.argmax(est.validation_scores_)) + 1,
                             early_stopping=True, random_state=0).fit(X, y)
        assert _same_network(est, best)  # the weights of the first best-scoring epoch


def test_max_iter_reached_warns_as_scikit_learn(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier((3,), max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = MLPClassifier((3,), random_state=0)
        est.partial_fit(X, y, classes=[0, 1, 2])  # one epoch by design: no warning
