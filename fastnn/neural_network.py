"""Multi-layer perceptrons as scikit-learn estimators: MLPClassifier and MLPRegressor with
scikit-learn's parameter names, trained by a float64 fastnn.Sequential on the kernels.

Where fastnn and scikit-learn differ:
  * L2: scikit-learn adds alpha / (2 · batch) ||W||² to each batch's mean loss; fastnn puts
    λ = alpha / (2 · batch_size) on every Dense layer, the same gradient for full batches.
  * weights start from fastnn's glorot_uniform (scikit-learn's for every activation but
    "logistic", where it uses a √2 smaller range).
  * learning_rate: "constant" and "adaptive" (divide by 5 after n_iter_no_change epochs
    without improvement); "invscaling" is fastnn's per-epoch InverseScaling(power_t).

scikit-learn is imported here, not by `import fastnn`.
"""
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions

from . import callbacks, optim
from .estimator_utils import (check_classifier_data, check_predict_data, fit_guard, forward,
                              seed_from, sigmoid, softmax, validate_data)
from .kernels import codes
from .layers import L2, Dense
from .models import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]


class _SklearnStopping(callbacks.Callback):
    """scikit-learn's stopping rule, after each epoch: without early stopping, count epochs
    whose training loss is not below best_loss − tol; with it, epochs whose validation score
    is not above best + tol (and remember the best weights). After more than n_iter_no_change
    such epochs stop, or with learning_rate="adaptive" divide the step by 5 (stop once it
    is below 1e-6)."""

    def __init__(self, est, validation):
        self.est, self.validation = est, validation
        self.loss_curve, self.scores = [], []
        self.best_loss, self.best_score, self.best_params = np.inf, -np.inf, None
        self.bad_epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        est, loss = self.est, logs["loss"]
        self.loss_curve.append(loss)
        if self.validation is not None:
            X_val, y_val, score_fn = self.validation
            score = score_fn(self.model, X_val, y_val)
            self.scores.append(score)
            worse = score < self.best_score + est.tol
            if score > self.best_score:
                self.best_score, self.best_params = score, self.model.params.copy()
        else:
            worse = loss > self.best_loss - est.tol
        self.best_loss = min(self.best_loss, loss)
        self.bad_epochs = self.bad_epochs + 1 if worse else 0
        if self.bad_epochs > est.n_iter_no_change:
            opt = self.model.optimizer
            if est.learning_rate == "adaptive" and opt.lr > 1e-6:
                opt.lr /= 5.0
                self.bad_epochs = 0
            else:
                self.model.stop_training = True


class _BaseMLP(BaseEstimator):
    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"], "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="left")], "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=1e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, device="cpu"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.device = device

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        for i, s in enumerate(sizes):
            if isinstance(s, bool) or not isinstance(s, Integral) or s < 1:
                raise ValueError(f"hidden_layer_sizes must hold positive ints; "
                                 f"hidden_layer_sizes[{i}] is {s!r}")
        return [int(s) for s in sizes]

    def _optimizer(self):
        schedule = (optim.InverseScaling(self.power_t) if self.learning_rate == "invscaling"
                    else None)
        if self.solver == "adam":
            return optim.Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon,
                              schedule=schedule)
        return optim.SGD(self.learning_rate_init, momentum=self.momentum,
                         nesterov=self.nesterovs_momentum and self.momentum > 0,
                         schedule=schedule)

    def _train(self, X, T, n_outputs, loss, y_for_split, score_fn, stratify):
        """Build, train and unpack the network; T are the loss's targets for X."""
        hidden = self._hidden()
        seed = seed_from(self.random_state)
        validation = None
        if self.early_stopping:
            split = train_test_split(X, T, y_for_split, test_size=self.validation_fraction,
                                     random_state=seed,
                                     stratify=y_for_split if stratify else None)
            X, X_val, T, _, _, y_val = split
            validation = (X_val, y_val, score_fn)
        n = X.shape[0]
        bs = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        reg = L2(self.alpha / (2.0 * bs)) if self.alpha > 0 else None
        layers = [Dense(h, activation=self.activation, kernel_regularizer=reg) for h in hidden]
        layers.append(Dense(n_outputs, kernel_regularizer=reg))
        model = Sequential(layers, seed=seed, dtype="float64", device=self.device)
        model.compile(optimizer=self._optimizer(), loss=loss)
        stop = _SklearnStopping(self, validation)
        model.fit(X, T, epochs=self.max_iter, batch_size=bs, shuffle=self.shuffle, verbose=0,
                  callbacks=[stop])
        if validation is not None and stop.best_params is not None:
            model.params[...] = stop.best_params
        self.coefs_ = [l.W.copy() for l in model.layers]
        self.intercepts_ = [l.b.copy() for l in model.layers]
        self.n_iter_ = len(stop.loss_curve)
        self.t_ = self.n_iter_ * n
        self.loss_curve_ = stop.loss_curve
        self.loss_ = stop.loss_curve[-1]
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = n_outputs
        if validation is not None:
            self.validation_scores_ = stop.scores
            self.best_validation_score_ = stop.best_score
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = stop.best_loss

    def _logits(self, X):
        X = check_predict_data(self, X)
        acts = [codes.ACTIVATIONS[self.activation]] * (len(self.coefs_) - 1) + [codes.IDENTITY]
        return forward(X, self.coefs_, self.intercepts_, acts)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier: hidden Dense layers, then one logistic output for
    two classes (binary cross-entropy) or K softmax outputs (softmax cross-entropy).

    Parameters are scikit-learn's MLPClassifier's (hidden_layer_sizes, activation, solver in
    {"sgd", "adam"}, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter,
    shuffle, random_state, tol, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change) with the same defaults,
    plus fastnn's `device` ("cpu", "cuda" or "auto"; see fastnn.Sequential) for the training.

    Attributes
    ----------
    classes_, coefs_ (list of (fan_in, fan_out)), intercepts_, n_features_in_, n_iter_,
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_, t_,
    n_layers_, n_outputs_, out_activation_ ("logistic" or "softmax")
    """

    @fit_guard
    def fit(self, X, y):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        self._validate_params()
        self._hidden()
        X, classes, y_idx = check_classifier_data(self, X, y)
        k = classes.size
        if k == 2:
            loss, n_out, T = "binary_cross_entropy", 1, y_idx[:, None].astype(np.float64)
        else:
            loss, n_out, T = "softmax_cross_entropy", k, y_idx

        def score(model, X_val, y_val):
            z = model.predict(X_val)
            pred = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)
            return accuracy_score(y_val, pred)

        self._train(X, T, n_out, loss, y_idx, score, stratify=True)
        self.classes_ = classes
        self.out_activation_ = "logistic" if k == 2 else "softmax"
        return self

    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes), columns in classes_ order."""
        z = self._logits(X)
        if z.shape[1] == 1:
            p = sigmoid(z[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(z)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        z = self._logits(X)
        idx = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: hidden Dense layers and a linear output trained on
    ½ mean squared error (scikit-learn's squared_error). Parameters and attributes as
    MLPClassifier's (no classes_; out_activation_ is "identity")."""

    @fit_guard
    def fit(self, X, y):
        """Fit on X of shape (n_samples, n_features) and y of shape (n_samples,) or
        (n_samples, n_targets)."""
        self._validate_params()
        self._hidden()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        T = y.reshape(-1, 1) if y.ndim == 1 else y

        def score(model, X_val, y_val):
            return r2_score(y_val, model.predict(X_val).reshape(y_val.shape))

        self._train(X, T, T.shape[1], "mse", y, score, stratify=False)
        self._y_1d = y.ndim == 1
        self.out_activation_ = "identity"
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        z = self._logits(X)
        return z[:, 0] if self._y_1d else z
