"""Multiclass reductions over binary classifiers (seed 000): one-vs-rest and one-vs-one.

Both take any binary classifier with decision_function or predict_proba (fastnn's or
scikit-learn's) and clone it per sub-problem. The binary sub-problems are labelled 0 / 1, so
a positive decision_function (or predict_proba[:, 1] > ½) means "the second class".

X may be dense or scipy.sparse (CSR or CSC); sparse X is handed to the binary classifiers
as it is (row subsets for one-vs-one), never densified, so the classifier must accept it
(fastnn's linear models do).

Ties are broken deterministically:

* OneVsRestClassifier predicts the class whose binary classifier scores highest; equal top
  scores go to the lowest class index (np.argmax).
* OneVsOneClassifier predicts the class with the most pairwise votes; equal votes go to the
  class with the larger summed confidence (Σ of its pairwise decision values, each pushed
  into (−⅓, ⅓) so it can never outweigh one vote), and exact ties after that to the lowest
  class index. This is scikit-learn's rule too.

scikit-learn is imported here, not by `import fastnn`.
"""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from .estimator_utils import check_classifier_data, check_predict_data, fit_guard

__all__ = ["OneVsRestClassifier", "OneVsOneClassifier"]


def _has(name):
    return lambda self: hasattr(self.estimator, name)


def _score(estimator, X):
    """A binary classifier's confidence in its second class, shape (n_samples,)."""
    if hasattr(estimator, "decision_function"):
        z = np.asarray(estimator.decision_function(X))
        return z.ravel() if z.ndim == 2 and z.shape[1] == 1 else z
    return estimator.predict_proba(X)[:, 1] - 0.5


class _SparseTags:
    """Sparse X is accepted when the binary classifier accepts it (it is passed on as is)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = get_tags(self.estimator).input_tags.sparse
        return tags


def _check_estimator(estimator):
    if not (hasattr(estimator, "fit") and (hasattr(estimator, "decision_function")
                                           or hasattr(estimator, "predict_proba"))):
        raise TypeError(f"estimator must be a classifier with fit and decision_function or "
                        f"predict_proba, got {estimator!r}")


class OneVsRestClassifier(_SparseTags, MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """One binary classifier per class, class k against all others. With two classes, one
    classifier for classes_[1] against classes_[0] (as scikit-learn).

    Parameters
    ----------
    estimator : binary classifier
        Cloned once per class; needs fit and decision_function or predict_proba.

    Attributes
    ----------
    estimators_ : list of fitted classifiers
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    """

    def __init__(self, estimator):
        self.estimator = estimator

    @fit_guard
    def fit(self, X, y):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        _check_estimator(self.estimator)
        X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
        columns = [1] if classes.size == 2 else range(classes.size)
        self.estimators_ = [clone(self.estimator).fit(X, (y_idx == k).astype(np.int64))
                            for k in columns]
        self.classes_ = classes
        return self

    def decision_function(self, X):
        """Per-class scores (n_samples, n_classes); (n_samples,) for two classes."""
        X = check_predict_data(self, X, accept_sparse=True)
        scores = np.column_stack([_score(e, X) for e in self.estimators_])
        return scores[:, 0] if len(self.estimators_) == 1 else scores

    def predict(self, X):
        z = self.decision_function(X)
        idx = (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]

    @available_if(_has("predict_proba"))
    def predict_proba(self, X):
        """Each classifier's probability of its class, normalised to sum to 1 per row."""
        X = check_predict_data(self, X, accept_sparse=True)
        p = np.column_stack([e.predict_proba(X)[:, 1] for e in self.estimators_])
        if p.shape[1] == 1:
            return np.column_stack([1 - p[:, 0], p[:, 0]])
        total = p.sum(axis=1, keepdims=True)
        # a row every classifier rejects outright: fall back to uniform
        return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / p.shape[1])


class OneVsOneClassifier(_SparseTags, MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """One binary classifier per pair of classes (i < j), trained on those two classes' samples
    only (label 1 for class j); prediction by votes, ties as the module docstring says.

    Parameters
    ----------
    estimator : binary classifier

    Attributes
    ----------
    estimators_ : list of K (K − 1) / 2 fitted classifiers, pairs in order (0, 1), (0, 2), ...
    pairs_ : list of (i, j) class-index pairs, in the same order
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    """

    def __init__(self, estimator):
        self.estimator = estimator

    @fit_guard
    def fit(self, X, y):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        _check_estimator(self.estimator)
        X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
        k = classes.size
        self.pairs_ = [(i, j) for i in range(k) for j in range(i + 1, k)]
        self.estimators_ = []
        for i, j in self.pairs_:
            rows = (y_idx == i) | (y_idx == j)
            self.estimators_.append(
                clone(self.estimator).fit(X[rows], (y_idx[rows] == j).astype(np.int64)))
        self.classes_ = classes
        return self

    def decision_function(self, X):
        """votes + summed confidence squashed into (−⅓, ⅓): shape (n_samples, n_classes);
        for two classes the one classifier's score, shape (n_samples,)."""
        X = check_predict_data(self, X, accept_sparse=True)
        if len(self.estimators_) == 1:
            return _score(self.estimators_[0], X)
        k = self.classes_.size
        votes = np.zeros((X.shape[0], k))
        confidence = np.zeros((X.shape[0], k))
        for (i, j), est in zip(self.pairs_, self.estimators_):
            s = _score(est, X)
            votes[:, j] += s > 0
            votes[:, i] += s <= 0
            confidence[:, j] += s
            confidence[:, i] -= s
        return votes + confidence / (3 * (np.abs(confidence) + 1))

    def predict(self, X):
        z = self.decision_function(X)
        idx = (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]
