"""fastnn.svm.SVC held to scikit-learn's SVC (libsvm): the same support vectors, dual
coefficients, intercepts and predictions on binary and multiclass data, separable and not,
every kernel; scikit-learn's conformance checks; validation; seed 002's effect of C and the
hard margin; the example that draws it."""
import copy
import importlib.util
import os
import pathlib
import warnings

import numba
import numpy as np
import pytest
from sklearn import svm as sk_svm
from sklearn.datasets import load_digits, load_iris, make_blobs, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastnn import svm as svm_module
from fastnn.svm import SVC, kernel_matrix

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _datasets():
    xb, yb = make_classification(160, 4, n_informative=3, n_redundant=0, flip_y=0.1,
                                 random_state=0)
    xs, ys = make_blobs(120, 2, centers=[[-3, -3], [3, 3]], cluster_std=1.0, random_state=1)
    xi, yi = load_iris(return_X_y=True)
    xm, ym = make_blobs(150, 3, centers=4, cluster_std=2.5, random_state=2)
    xd, yd = load_digits(return_X_y=True)
    return {"binary overlapping": (xb, yb), "binary separable": (xs, ys),
            "iris (3 classes)": (xi, yi), "4 overlapping blobs": (xm, ym),
            "digits 500 (10 classes)": (xd[:500] / 16.0, yd[:500])}


DATA = _datasets()
CASES = [("binary overlapping", dict(kernel="rbf")),
         ("binary overlapping", dict(kernel="linear", C=0.5)),
         ("binary overlapping", dict(kernel="poly", degree=2, coef0=1.0, gamma=0.2)),
         ("binary overlapping", dict(kernel="sigmoid", gamma=0.05, coef0=-0.5)),
         ("binary separable", dict(kernel="linear", C=100.0)),
         ("binary separable", dict(kernel="rbf", gamma="auto")),
         ("iris (3 classes)", dict(kernel="rbf", C=3.0)),
         ("iris (3 classes)", dict(kernel="linear")),
         ("4 overlapping blobs", dict(kernel="rbf", class_weight="balanced")),
         ("4 overlapping blobs", dict(kernel="poly", degree=3, gamma=0.1)),
         ("digits 500 (10 classes)", dict(kernel="rbf"))]


def _dense_duals(clf, X):
    """Σ over the pairs of |α_i y_i| per distinct training point (0 off the support set):
    identical points (iris repeats rows 102 and 143) are one point of the problem, whose
    dual value any split between the copies attains."""
    dense = np.zeros(X.shape[0])
    dense[clf.support_] = np.abs(clf.dual_coef_).sum(axis=0)
    _, point = np.unique(X, axis=0, return_inverse=True)
    return np.bincount(point.ravel(), weights=dense)


def _agree(ours, theirs, X, tol_dual, tol_b):
    a, b = _dense_duals(ours, X), _dense_duals(theirs, X)
    # the same support set, up to points whose dual value is within tol of 0 in the other
    only = (a > 0) != (b > 0)
    assert np.all(np.maximum(a[only], b[only]) <= tol_dual), np.flatnonzero(only)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol_dual)
    # the same support vectors: the signed coefficients in the same ovo layout, where no
    # point is repeated (a repeated point's dual value may be split differently)
    if (np.array_equal(ours.support_, theirs.support_)
            and np.unique(X, axis=0).shape[0] == X.shape[0]):
        np.testing.assert_array_equal(ours.n_support_, theirs.n_support_)
        np.testing.assert_allclose(ours.dual_coef_, theirs.dual_coef_, rtol=0, atol=tol_dual)
        np.testing.assert_array_equal(ours.support_vectors_, theirs.support_vectors_)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=tol_b)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def _dual_objective(clf):
    """Σ over the one-vs-one pairs of ½ vᵀ K v − Σ |v|, v the pair's signed dual coefficients
    (y_i α_i) over its support vectors: the dual objective, from the fitted model alone."""
    k, sv = clf.classes_.size, clf.support_vectors_
    starts = np.concatenate([[0], np.cumsum(clf.n_support_)])
    K = kernel_matrix(sv, sv, clf.kernel, clf._gamma, float(clf.coef0), clf.degree)
    total = 0.0
    for a in range(k):
        for b in range(a + 1, k):
            idx = np.r_[starts[a]:starts[a + 1], starts[b]:starts[b + 1]]
            v = np.r_[clf._dual_coef_[b - 1, starts[a]:starts[a + 1]],
                      clf._dual_coef_[a, starts[b]:starts[b + 1]]]
            total += 0.5 * v @ K[np.ix_(idx, idx)] @ v - np.abs(v).sum()
    return total


def _kkt_violation(clf, X, y, sample_weight=None):
    """The largest violation of the dual's optimality conditions over the one-vs-one pairs,
    computed here from X and the fitted model alone: each pair's margins y_i f(x_i) must be
    >= 1 at α_i = 0, = 1 for 0 < α_i < C_i, <= 1 at α_i = C_i, and Σ y_i α_i = 0."""
    n, k = X.shape[0], clf.classes_.size
    y_idx = np.searchsorted(clf.classes_, y)
    upper = clf.C * clf.class_weight_[y_idx] * (1.0 if sample_weight is None else sample_weight)
    starts = np.concatenate([[0], np.cumsum(clf.n_support_)])
    # the pairs' values, libsvm's signs (> 0 votes for the lower class of the pair)
    dec = copy.copy(clf).set_params(decision_function_shape="ovo").decision_function(X)
    dec = -dec[:, None] if k == 2 else dec
    worst, p = 0.0, 0
    for a in range(k):
        for b in range(a + 1, k):
            alpha = np.zeros(n)
            sa, sb = slice(starts[a], starts[a + 1]), slice(starts[b], starts[b + 1])
            alpha[clf.support_[sa]] = clf._dual_coef_[b - 1, sa]
            alpha[clf.support_[sb]] = -clf._dual_coef_[a, sb]
            pair = ((y_idx == a) | (y_idx == b)) & (upper > 0)  # weight 0: not in the problem
            sign = np.where(y_idx == a, 1.0, -1.0)
            margin, al, c = (sign * dec[:, p])[pair], alpha[pair], upper[pair]
            assert np.all(al >= 0) and np.all(al <= c * (1 + 1e-12))
            free = (al > 0) & (al < c)
            worst = max(worst, np.max(np.where(al <= 0, 1 - margin, 0.0)),
                        np.max(np.where(al >= c, margin - 1, 0.0)),
                        np.max(np.abs(margin - 1)[free], initial=0.0),
                        abs(sign[pair] @ al) / max(c.max(), 1e-300))
            p += 1
    return worst


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_agrees_with_libsvm_at_default_tol(name, params):
    """At tol = 1e-3 libsvm stops once the maximal KKT violation is below 1e-3; fastnn then
    finishes at the optimum (test_default_fit_is_the_dual_optimum). The decision values
    differ by libsvm's O(tol) (the votes agree), the intercepts by a few tol, the training
    predictions not at all, and fastnn's dual objective is no higher than libsvm's. The duals
    themselves are not compared: where the Gram matrix is singular (linear, and polynomial
    of degree 2 on 4 features: rank 15) the optimal duals are a face, not a point, and SMO's
    and the optimum's differ there by more than O(tol) (measured 2.7e-2 on one sample)."""
    X, y = DATA[name]
    params = dict(params, decision_function_shape="ovo")  # the pairs' values, not the votes
    ours, theirs = SVC(**params).fit(X, y), sk_svm.SVC(**params).fit(X, y)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0, atol=2e-2)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    # libsvm's duals are each within O(tol C) of an optimum: values of O(1) move by O(tol),
    # the polynomial kernel's values of 20 to 40 (4 blobs, degree 3) by O(tol) relative
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X),
                               rtol=5e-3, atol=5e-2)
    assert _dual_objective(ours) <= _dual_objective(theirs) + 1e-12 * abs(_dual_objective(theirs))


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_default_fit_is_the_dual_optimum(name, params):
    """The exact finish (kernels.cpu.svm_exact) turns SMO's tol-accurate duals into the
    optimum: every optimality condition holds to rounding (1e-9 on margins of O(1); measured
    <= 4e-13), where libsvm's default leaves up to tol (measured up to 6.4e-4; 4e-8 on the
    separable case)."""
    X, y = DATA[name]
    assert _kkt_violation(SVC(**params).fit(X, y), X, y) <= 1e-9


def test_exact_finish_can_be_told_apart(monkeypatch):
    """Without the exact finish SMO's duals violate the conditions by O(tol): the certificate
    above sees the difference (the test of the optimum can fail)."""
    X, y = DATA["iris (3 classes)"]
    monkeypatch.setattr(svm_module, "_EXACT_STEPS", 0)
    assert _kkt_violation(SVC(C=3.0).fit(X, y), X, y) > 1e-5


def test_loose_smo_then_warm_smo_reaches_the_same_optimum(monkeypatch):
    """SMO stops at _EXACT_SMO_TOL (1e-2) ahead of the exact finish; on scaled iris with a
    linear kernel and C = 0.1 one pair's free set there is too far off for an exact point, so
    SMO goes on warm to tol and the finish succeeds. Both paths are taken, and the fit is the
    optimum, the one SMO run straight to tol finishes at (1e-12: the same linear system up to
    the order of its rows; measured 0)."""
    X, y = DATA["iris (3 classes)"]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    real, starts = svm_module.cpu.svm_smo, []

    def counted(*args):
        starts.append(args[-1])  # warm
        return real(*args)

    monkeypatch.setattr(svm_module.cpu, "svm_smo", counted)
    staged = SVC(kernel="linear", C=0.1).fit(X, y)
    assert starts.count(False) == 3 and starts.count(True) >= 1
    assert _kkt_violation(staged, X, y) <= 1e-9
    monkeypatch.setattr(svm_module, "_EXACT_SMO_TOL", 0.0)
    starts.clear()
    straight = SVC(kernel="linear", C=0.1).fit(X, y)
    assert starts == [False] * 3
    np.testing.assert_array_equal(staged.support_, straight.support_)
    np.testing.assert_allclose(staged.dual_coef_, straight.dual_coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(staged.intercept_, straight.intercept_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", ["rbf", "linear", "poly"])
def test_sample_weight_is_repetition(kernel):
    """A sample of weight w and the same sample w times (0: dropped) are the same convex
    problem, and fastnn returns its one answer for both: the same decision function to
    rounding (gamma="scale" counts the weights in X's variance). scikit-learn's SVC stops
    each at tol and lists this check as an expected failure."""
    X, y = load_iris(return_X_y=True)
    sw = np.random.default_rng(0).integers(0, 4, y.size)
    weighted = SVC(kernel=kernel, C=2.0).fit(X, y, sample_weight=sw)
    repeated = SVC(kernel=kernel, C=2.0).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    assert weighted._gamma == pytest.approx(repeated._gamma, rel=1e-12)
    # both at the optimum to rounding: decision values of O(1) agree to far below tol
    np.testing.assert_allclose(weighted.decision_function(X), repeated.decision_function(X),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))
    assert _kkt_violation(weighted, X, y, sample_weight=sw) <= 1e-9


@pytest.mark.parametrize("name,params", CASES[:2] + CASES[6:7] + CASES[8:9],
                         ids=[f"{n}-{p}" for n, p in CASES[:2] + CASES[6:7] + CASES[8:9]])
def test_agrees_with_libsvm_at_tight_tol(name, params):
    """At tol = 1e-9 both are at the optimum, unique for the RBF kernel (positive definite
    Gram matrix): duals and intercepts agree to what libsvm's float32 kernel cache allows
    (~1e-7 relative per update)."""
    X, y = DATA[name]
    ours = SVC(tol=1e-9, **params).fit(X, y)
    theirs = sk_svm.SVC(tol=1e-9, **params).fit(X, y)
    _agree(ours, theirs, X, tol_dual=1e-4, tol_b=1e-4)
    dec = ours.decision_function(X)
    np.testing.assert_allclose(dec, theirs.decision_function(X), rtol=0, atol=1e-4)


def test_ovo_shape_and_break_ties_as_scikit_learn():
    X, y = DATA["4 overlapping blobs"]
    for params in (dict(decision_function_shape="ovo"), dict(break_ties=True)):
        ours, theirs = SVC(**params).fit(X, y), sk_svm.SVC(**params).fit(X, y)
        assert ours.decision_function(X).shape == theirs.decision_function(X).shape
        # the pairwise values: the stopping rule's O(tol) on values of O(1)
        np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X),
                                   rtol=0, atol=5e-2)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_weights_and_callable_kernel_as_scikit_learn():
    X, y = DATA["binary overlapping"]
    sw = np.random.default_rng(0).uniform(0, 2, y.size)
    sw[:5] = 0  # dropped from the problem, as libsvm drops them
    for params, fit_kw in ((dict(class_weight={0: 3.0, 1: 0.5}), {}),
                           (dict(), dict(sample_weight=sw)),
                           (dict(kernel=lambda a, b: (a @ b.T + 1.0) ** 2), {})):
        ours = SVC(tol=1e-8, **params).fit(X, y, **fit_kw)
        # gamma="scale": fastnn weights X's variance by sample_weight, scikit-learn does not
        theirs = sk_svm.SVC(tol=1e-8, **params, gamma=ours._gamma).fit(X, y, **fit_kw)
        # at tol 1e-8: the optimum's duals and intercepts, to libsvm's float32-cache
        # precision (~1e-7 relative per entry, summed over the support: the callable
        # kernel's values of up to 9 agree to 1.1e-4); the non-RBF Gram matrix is singular,
        # so compare the decision function, not the duals
        np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X),
                                   rtol=2e-5, atol=1e-4)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        if "sample_weight" in fit_kw:
            assert not np.isin(np.arange(5), ours.support_).any()  # weight 0: never an SV


def test_linear_coef_as_scikit_learn():
    X, y = DATA["iris (3 classes)"]
    ours = SVC(kernel="linear", tol=1e-8).fit(X, y)
    theirs = sk_svm.SVC(kernel="linear", tol=1e-8).fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-4)  # as above
    with pytest.raises(AttributeError, match="linear kernel"):
        SVC().fit(X, y).coef_


def test_smaller_c_more_support_vectors_and_the_hard_margin():
    """Seed 002: 'Small C ... larger margin, more support vectors'; C -> ∞ on separable data
    is the hard margin: every point on or outside it (y f(x) >= 1 up to tol)."""
    X, y = DATA["binary overlapping"]
    counts = [SVC(kernel="linear", C=c).fit(X, y).support_.size for c in (0.01, 1.0, 100.0)]
    assert counts[0] > counts[1] >= counts[2]
    Xs, ys = DATA["binary separable"]
    hard = SVC(kernel="linear", C=1e6, tol=1e-6).fit(Xs, ys)
    margins = np.where(ys == hard.classes_[1], 1, -1) * hard.decision_function(Xs)
    assert margins.min() > 1 - 1e-4  # the stopping rule's slack at tol 1e-6
    w = hard.coef_[0]
    # the margin 1 / ||w|| is at most half the gap between the closest opposite points
    gap = min(np.linalg.norm(a - b) for a in Xs[ys == 0] for b in Xs[ys == 1])
    assert 1 / np.linalg.norm(w) <= gap / 2 + 1e-6


@pytest.mark.parametrize("data", ["binary overlapping", "iris (3 classes)"])
def test_fit_leaves_numba_thread_count_and_solution_as_one_thread(data, monkeypatch):
    """The binary solve may drop to one numba thread on a loaded machine (fastnn.
    estimator_utils.solver_threads) and the one-vs-one workers set their own: either way the caller's thread
    count is restored, and the solution is the one-thread solution (the threads only split
    kernel rows or whole pairs, never an SMO step)."""
    X, y = DATA[data]
    before = numba.get_num_threads()
    one = SVC().fit(X, y)
    for load in (0.0, 1e6):  # an idle machine, then one that is full
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        clf = SVC().fit(X, y)
        assert numba.get_num_threads() == before
        np.testing.assert_array_equal(clf.dual_coef_, one.dual_coef_)
        np.testing.assert_array_equal(clf.intercept_, one.intercept_)


def test_max_iter_warns():
    X, y = DATA["binary overlapping"]
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        clf = SVC(max_iter=3).fit(X, y)
    assert clf.n_iter_.tolist() == [3]


# --------------------------------------------------------------------------- validation

X0, Y0 = DATA["binary overlapping"]


@pytest.mark.parametrize("params,fit_args,exc,match", [
    (dict(gamma=0.0), (X0, Y0), ValueError, "gamma"),
    (dict(gamma=-1.0), (X0, Y0), ValueError, "gamma"),
    (dict(C=0.0), (X0, Y0), ValueError, "'C'"),
    (dict(C=-2.0), (X0, Y0), ValueError, "'C'"),
    (dict(kernel="cubic"), (X0, Y0), ValueError, "kernel"),
    (dict(cache_size=0), (X0, Y0), ValueError, "cache_size"),
    (dict(), (np.where(np.eye(160, 4) > 0, np.nan, X0), Y0), ValueError, "NaN"),
    (dict(), (X0, np.zeros(160)), ValueError, "1 class"),
    (dict(), (X0, Y0[:-1]), ValueError, "inconsistent numbers of samples"),
    (dict(), (X0[:, 0], Y0), ValueError, "2D array"),
    (dict(kernel=lambda a, b: a @ b.T[:, :3]), (X0, Y0), ValueError, "kernel must return"),
    (dict(kernel=lambda a, b: np.full((len(a), len(b)), np.nan)), (X0, Y0), ValueError,
     "kernel returned NaN"),
])
def test_bad_input_names_the_argument_and_leaves_the_estimator(params, fit_args, exc, match):
    clf = SVC(**params)
    fitted = SVC(**params) if params.get("kernel") is None else None
    with pytest.raises(exc, match=match):
        clf.fit(*fit_args)
    assert not hasattr(clf, "support_")
    # a fitted estimator keeps its fit when a later fit fails
    if fitted is not None:
        good = SVC().fit(X0, Y0)
        before = good.dual_coef_.copy()
        good.set_params(**params)
        with pytest.raises(exc, match=match):
            good.fit(*fit_args)
        np.testing.assert_array_equal(good.dual_coef_, before)


def test_bad_sample_weight_and_predict_input():
    with pytest.raises(ValueError, match="[Nn]egative"):
        SVC().fit(X0, Y0, sample_weight=-np.ones(160))
    with pytest.raises(ValueError, match="[Ss]ample weights must contain"):
        SVC().fit(X0, Y0, sample_weight=np.zeros(160))
    clf = SVC().fit(X0, Y0)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X0[:, :3])
    bad_shape = SVC(kernel=lambda a, b: a @ b.T if len(a) == len(b) else a @ a.T).fit(X0, Y0)
    with pytest.raises(ValueError, match="kernel must return"):
        bad_shape.decision_function(X0[:7])


def test_no_predict_proba():
    """Platt scaling (libsvm's probability=True) is not implemented, so there is none."""
    assert not hasattr(SVC().fit(X0, Y0), "predict_proba")


# --------------------------------------------------------------------------- conformance

@parametrize_with_checks([SVC(), SVC(kernel="linear", C=0.5), SVC(kernel="poly", coef0=1.0)])
def test_sklearn_conformance(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# --------------------------------------------------------------------------- the example

def test_svm_margin_example_writes_its_png(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("svm_margin", EXAMPLES / "svm_margin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.main(out=tmp_path, n=25, cs=(0.01, 100.0), grid=40)
    png = tmp_path / "svm_margin.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for kernel in ("linear", "rbf"):
        assert counts[kernel, 0.01] > counts[kernel, 100.0]  # seed 002's effect of C
    assert "python examples/svm_margin.py" in (EXAMPLES / "svm_margin.py").read_text()
    assert "svm_margin.png" in capsys.readouterr().out
