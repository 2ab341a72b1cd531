"""Linear models of the course notes as scikit-learn estimators, trained on fastnn's kernels.

    LinearRegression     seed 003's normal equations, solved stably (lstsq, or a Cholesky solve
                         of the ridge system; never an explicit inverse), or gradient descent
    LogisticRegression   seed 003: binary cross-entropy, gradient Xᵀ(σ(Xw) − y), L2
    SoftmaxRegression    seed 000: multinomial, softmax cross-entropy, L2
    Perceptron           seeds 001 and 003: w ← w + y x on a mistake; multiclass
                         w_ŷ ← w_ŷ − x, w_y ← w_y + x
    LinearSVM            seed 002: hinge loss + λ ||w||² by mini-batch SGD

Every gradient-trained model is one fastnn.Dense layer in a float64 Sequential, started at
zero. Regularisation follows scikit-learn's scaling so that hyperparameters match: with n
samples, the objective C Σ loss_i + ½ ||w||² is divided by C n, so the Dense layer's L2
coefficient (λ in λ ||W||²) is 1 / (2 C n); ridge's ||y − Xw||² + α ||w||² over 2n gives
fastnn's ½ mean squared error plus α / (2n) ||W||². The intercept is never penalised.

scikit-learn is imported here, not by `import fastnn`.
"""
from numbers import Integral, Real

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

from . import callbacks, optim
from .estimator_utils import (check_classifier_data, check_predict_data, check_sample_weight,
                              fit_guard, seed_from, sigmoid, softmax, train_linear,
                              validate_data)

__all__ = ["LinearRegression", "LogisticRegression", "SoftmaxRegression", "Perceptron",
           "LinearSVM"]

_POSITIVE = Interval(Real, 0, None, closed="neither")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_COUNT = Interval(Integral, 1, None, closed="left")


class LinearRegression(RegressorMixin, BaseEstimator):
    """Least squares, optionally ridge: minimises ||y − Xw − b||² + alpha ||w||².

    Parameters
    ----------
    alpha : float >= 0, default 0
        L2 penalty on the coefficients (ridge); 0 is ordinary least squares.
    fit_intercept : bool, default True
    solver : {"auto", "lstsq", "cholesky", "gd", "sgd"}, default "auto"
        "lstsq": np.linalg.lstsq on the centred data (ridge as the stacked system
        [X; √α I] w ≈ [y; 0]). "cholesky": a Cholesky solve of (XᵀX + α I) w = Xᵀy, the
        normal equations of seed 003. "auto" is lstsq for alpha = 0, else cholesky.
        "gd": full-batch gradient descent and "sgd": mini-batch SGD, both a one-layer
        fastnn.Sequential with the mse loss.
    learning_rate_init : float > 0 or None, default None
        Step size of "gd"/"sgd". None is 1 / L with L = σ_max([X, 1])² / n + α / n, the
        Lipschitz constant of the gradient, which never diverges for "gd".
    batch_size : int, default 32
        Mini-batch size of "sgd".
    max_iter : int, default 1000
        Epochs of "gd"/"sgd".
    tol : float > 0 or None, default 1e-10
        "gd"/"sgd" stop once an epoch changes the loss by less than tol, or the full-batch
        gradient norm is below it.
    random_state : int, RandomState or None, default None
        Shuffling of "sgd".

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    n_iter_ : int
        Epochs run by "gd"/"sgd"; 1 (one solve) for the closed forms.
    """

    _parameter_constraints = {
        "alpha": [_NON_NEGATIVE], "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", "lstsq", "cholesky", "gd", "sgd"})],
        "learning_rate_init": [_POSITIVE, None], "batch_size": [_COUNT], "max_iter": [_COUNT],
        "tol": [_POSITIVE, None], "random_state": ["random_state"],
    }

    def __init__(self, alpha=0.0, fit_intercept=True, solver="auto", learning_rate_init=None,
                 batch_size=32, max_iter=1000, tol=1e-10, random_state=None):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and y of shape (n_samples,) or
        (n_samples, n_targets)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        sw = check_sample_weight(sample_weight, X.shape[0])
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        solver = self.solver
        if solver == "auto":
            solver = "lstsq" if self.alpha == 0 else "cholesky"
        if solver in ("gd", "sgd"):
            coef, intercept = self._fit_gradient(X, Y, sw, solver)
        else:
            coef, intercept = self._fit_closed_form(X, Y, sw, solver)
            self.n_iter_ = 1
        self.coef_ = coef[0] if y.ndim == 1 else coef
        self.intercept_ = float(intercept[0]) if y.ndim == 1 else intercept
        return self

    def _fit_closed_form(self, X, Y, sw, solver):
        w = np.ones(X.shape[0]) if sw is None else sw
        if self.fit_intercept:
            x_mean, y_mean = np.average(X, axis=0, weights=w), np.average(Y, axis=0, weights=w)
        else:
            x_mean, y_mean = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        # weighted least squares is ordinary least squares on rows scaled by √w
        root = np.sqrt(w)[:, None]
        Xc, Yc = (X - x_mean) * root, (Y - y_mean) * root
        p = X.shape[1]
        if solver == "lstsq":
            if self.alpha > 0:
                Xc = np.vstack([Xc, np.sqrt(self.alpha) * np.eye(p)])
                Yc = np.vstack([Yc, np.zeros((p, Yc.shape[1]))])
            coef = np.linalg.lstsq(Xc, Yc, rcond=None)[0]
        else:
            A = Xc.T @ Xc + self.alpha * np.eye(p)
            try:
                coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A), Xc.T @ Yc)
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(
                    "solver='cholesky': XᵀX + alpha I is singular (collinear features); use "
                    "alpha > 0 or solver='lstsq'") from None
        return coef.T, y_mean - x_mean @ coef

    def _fit_gradient(self, X, Y, sw, solver):
        n = X.shape[0]
        lr = self.learning_rate_init
        if lr is None:
            ones = np.ones((n, 1)) if self.fit_intercept else np.zeros((n, 0))
            lipschitz = np.linalg.norm(np.hstack([X, ones]), 2) ** 2 / n + self.alpha / n
            if sw is not None:
                lipschitz *= max(float(sw.max()), 1e-12)
            lr = 1.0 / max(lipschitz, 1e-12)
        coef, intercept, self.n_iter_, _ = train_linear(
            X, Y, "mse", Y.shape[1], self.alpha / (2 * n), self.fit_intercept, optim.SGD(lr),
            self.max_iter, None if solver == "gd" else self.batch_size, self.tol,
            seed_from(self.random_state), sample_weight=sw)
        return coef, intercept

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predictions X @ coef_.T + intercept_."""
        X = check_predict_data(self, X)
        return X @ np.asarray(self.coef_).T + self.intercept_


class _LinearClassifier(ClassifierMixin, BaseEstimator):
    """decision_function / predict for coef_ of shape (1, p) (binary: classes_[1] when the
    score is > 0) or (K, p) (argmax, the lowest class index on ties)."""

    def decision_function(self, X):
        """Scores of shape (n_samples,) for two classes (> 0 means classes_[1]), else
        (n_samples, n_classes)."""
        X = check_predict_data(self, X)
        z = X @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict(self, X):
        z = self.decision_function(X)
        idx = (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]


_GD_PARAMS = {
    "C": [_POSITIVE], "fit_intercept": ["boolean"], "learning_rate_init": [_POSITIVE],
    "batch_size": [_COUNT, None], "max_iter": [_COUNT], "tol": [_POSITIVE, None],
    "random_state": ["random_state"],
}


class LogisticRegression(_LinearClassifier):
    """Logistic regression: binary cross-entropy on logits plus L2, minimising
    C Σ_i log(1 + exp(−y_i (w·x_i + b))) + ½ ||w||² (scikit-learn's objective), trained with
    Adam on a one-layer fastnn.Sequential (gradient Xᵀ(σ(Xw) − y) + w / (C n), seed 003).

    With more than two classes it fits one sigmoid per class against the rest (one-vs-rest)
    in the same layer, and predict_proba normalises their probabilities to sum to 1.

    Parameters
    ----------
    C : float > 0, default 1.0
        Inverse regularisation strength.
    fit_intercept : bool, default True
    learning_rate_init : float > 0, default 0.05
        Adam's step size.
    batch_size : int or None, default None
        None is full-batch (deterministic); an int is mini-batch Adam.
    max_iter : int, default 1000
        Epochs at most.
    tol : float > 0 or None, default 1e-7
        Stop once an epoch changes the loss by less than tol or the gradient norm is below it.
    random_state : int, RandomState or None, default None
        Shuffling of mini-batches.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    n_iter_ : int
    """

    _parameter_constraints = dict(_GD_PARAMS)
    _multinomial = False

    def __init__(self, C=1.0, fit_intercept=True, learning_rate_init=0.05, batch_size=None,
                 max_iter=1000, tol=1e-7, random_state=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y)
        sw = check_sample_weight(sample_weight, X.shape[0])
        n, k = X.shape[0], classes.size
        if self._multinomial:
            loss, n_out, T = "softmax_cross_entropy", k, y_idx
        elif k == 2:
            loss, n_out, T = "binary_cross_entropy", 1, y_idx[:, None].astype(np.float64)
        else:
            loss, n_out, T = "binary_cross_entropy", k, np.eye(k)[y_idx]
        coef, intercept, self.n_iter_, _ = train_linear(
            X, T, loss, n_out, 1.0 / (2.0 * self.C * n), self.fit_intercept,
            optim.Adam(self.learning_rate_init), self.max_iter, self.batch_size, self.tol,
            seed_from(self.random_state), sample_weight=sw)
        if self._multinomial and k == 2:
            # two softmax logits carry one decision: their difference is the log-odds
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        return self

    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes), columns in classes_ order."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = sigmoid(z)
            return np.column_stack([1 - p, p])
        if self._multinomial:
            return softmax(z)
        p = sigmoid(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))


class SoftmaxRegression(LogisticRegression):
    """Multinomial logistic regression (seed 000): softmax cross-entropy on K logits plus L2,
    minimising C Σ_i −log softmax(W x_i + b)_{y_i} + ½ ||W||², trained with Adam on a one-layer
    fastnn.Sequential. Parameters and attributes as LogisticRegression; with two classes
    coef_ is the difference of the two rows (the log-odds of classes_[1]), as scikit-learn's.
    """

    _multinomial = True


class Perceptron(_LinearClassifier):
    """Rosenblatt's perceptron with exactly the seeds' update rules (seeds 001 and 003),
    from w = 0, one sample at a time:

    * two classes, y in {−1, +1}: on a mistake (y (w·x + b) <= 0), w ← w + y x, b ← b + y;
    * K classes: with ŷ the first argmax of W x + b, on a mistake (ŷ != y)
      w_ŷ ← w_ŷ − x, w_y ← w_y + x (and the biases likewise).

    Trained as per-sample SGD with learning rate 1 on fastnn's perceptron loss, whose
    gradient is exactly −y x (binary) and +x at ŷ, −x at y (multiclass) on a mistake, 0 else.
    It stops after an epoch without a mistake (no weight changed) or at max_iter.

    Parameters
    ----------
    fit_intercept : bool, default True
    max_iter : int, default 1000
        Epochs at most.
    shuffle : bool, default True
        Visit the samples in a fresh random order each epoch (else in the given order).
    random_state : int, RandomState or None, default None

    Attributes
    ----------
    classes_, coef_ ((1, n_features) or (n_classes, n_features)), intercept_,
    n_features_in_, n_iter_ (epochs run), converged_ (an epoch had no mistake)
    """

    _parameter_constraints = {"fit_intercept": ["boolean"], "max_iter": [_COUNT],
                              "shuffle": ["boolean"], "random_state": ["random_state"]}

    def __init__(self, fit_intercept=True, max_iter=1000, shuffle=True, random_state=None):
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y)
        k = classes.size
        if k == 2:
            n_out, T = 1, np.where(y_idx == 1, 1.0, -1.0)[:, None]
        else:
            n_out, T = k, y_idx
        stop = _NoMistakeStop()
        coef, intercept, self.n_iter_, _ = train_linear(
            X, T, "perceptron", n_out, 0.0, self.fit_intercept, optim.SGD(1.0), self.max_iter,
            1, None, seed_from(self.random_state), shuffle=self.shuffle, callbacks=[stop])
        self.converged_ = stop.converged
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        return self


class _NoMistakeStop(callbacks.Callback):
    """Stop training after an epoch in which no weight changed. With learning rate 1 every
    mistake changes the weights (by ±x, and the bias by ±1), so this is the seeds' "an epoch
    without mistakes" (up to an all-zero sample with fit_intercept=False, which changes
    nothing either way)."""

    converged = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.model.params.copy()

    def on_epoch_end(self, epoch, logs=None):
        if np.array_equal(self._start, self.model.params):
            self.converged = True
            self.model.stop_training = True


class LinearSVM(_LinearClassifier):
    """Soft-margin linear SVM (seed 002): hinge loss plus L2, minimising
    C Σ_i max(0, 1 − y_i (w·x_i + b)) + ½ ||w||² (scikit-learn's LinearSVC(loss="hinge")
    objective; seed 002's λ ||β||² + Σ hinge with λ = 1 / (2C)), by mini-batch SGD on a
    one-layer fastnn.Sequential. The default is full-batch (sub)gradient descent with
    momentum, which gets closest to the optimum on small data; an int batch_size makes it
    mini-batch SGD, whose noise floor leaves it a little above.

    Parameters
    ----------
    C : float > 0, default 1.0
    multi_class : {"ovr", "weston_watkins"}, default "ovr"
        More than two classes: "ovr" trains one binary hinge per class against the rest (in
        one layer), "weston_watkins" the multiclass hinge Σ_{j≠y} max(0, 1 + z_j − z_y).
    fit_intercept : bool, default True
    learning_rate_init : float > 0, default 0.1
    momentum : float in [0, 1), default 0.9
    batch_size : int or None, default None
        None is full-batch.
    max_iter : int, default 1000
        Epochs at most.
    tol : float > 0 or None, default 1e-8
    shuffle : bool, default True
    random_state : int, RandomState or None, default None

    Attributes
    ----------
    classes_, coef_ ((1, n_features) or (n_classes, n_features)), intercept_,
    n_features_in_, n_iter_
    """

    _parameter_constraints = dict(
        _GD_PARAMS, multi_class=[StrOptions({"ovr", "weston_watkins"})],
        momentum=[Interval(Real, 0, 1, closed="left")], shuffle=["boolean"])

    def __init__(self, C=1.0, multi_class="ovr", fit_intercept=True, learning_rate_init=0.1,
                 momentum=0.9, batch_size=None, max_iter=1000, tol=1e-8, shuffle=True,
                 random_state=None):
        self.C = C
        self.multi_class = multi_class
        self.fit_intercept = fit_intercept
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y)
        sw = check_sample_weight(sample_weight, X.shape[0])
        n, k = X.shape[0], classes.size
        if k == 2:
            n_out, T = 1, np.where(y_idx == 1, 1.0, -1.0)[:, None]
        elif self.multi_class == "ovr":
            n_out, T = k, 2.0 * np.eye(k)[y_idx] - 1.0
        else:
            n_out, T = k, y_idx
        opt = optim.SGD(self.learning_rate_init, momentum=self.momentum)
        coef, intercept, self.n_iter_, _ = train_linear(
            X, T, "hinge", n_out, 1.0 / (2.0 * self.C * n), self.fit_intercept, opt,
            self.max_iter, self.batch_size, self.tol, seed_from(self.random_state),
            shuffle=self.shuffle, sample_weight=sw)
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        return self
