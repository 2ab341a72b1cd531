"""Multi-layer perceptrons as scikit-learn estimators: MLPClassifier and MLPRegressor with
scikit-learn's parameter names, fitted attributes and stopping rule, trained by a float64
fastnn.Sequential on the kernels.

What matches scikit-learn (sklearn/neural_network/_multilayer_perceptron.py):
  * `partial_fit` (sgd and adam: one epoch over the rows given, the network, the optimizer
    state and the stopping counters continue across calls; MLPClassifier needs `classes=` on
    the first call and refuses labels outside it), `warm_start` (fit continues from coefs_
    with a fresh optimizer, loss_curve_ and t_ keep growing, n_iter_ counts this call),
    `sample_weight` in fit and partial_fit, `solver="lbfgs"` (scipy's L-BFGS-B on the
    full-batch loss and gradient of cpu_backend.gradient, with maxiter=max_iter,
    maxfun=max_fun, gtol=tol, as scikit-learn passes them).
  * the stopping rule, after each epoch: without early stopping count the epochs whose
    training loss (L2 term included) is not below best_loss_ − tol; with it, the epochs whose
    validation score (accuracy, or R²) is not above best_validation_score_ + tol, and keep the
    weights of the best score. After more than n_iter_no_change such epochs stop, or with
    solver="sgd" and learning_rate="adaptive" divide the step by 5 (stop once it is <= 1e-6).
    A fit that runs all max_iter epochs warns with ConvergenceWarning; early_stopping is
    refused by partial_fit and ignored by lbfgs.
  * the attributes coefs_, intercepts_, n_iter_, t_, loss_, n_layers_, n_outputs_,
    out_activation_, and for sgd/adam loss_curve_, best_loss_ (None with early stopping),
    validation_scores_ and best_validation_score_ (None without). As in scikit-learn, lbfgs
    sets none of these last four.
  * the objective: mean loss + alpha / (2 · Σw) ||W||² (Σw: the batch's size, or its sum of
    sample weights), the weighted mean loss being Σ w·loss / Σw.

Where fastnn deviates:
  * L2 in mini-batches: fastnn puts one λ = alpha / (2 · batch_size · mean weight) on every
    Dense layer, so a short last batch, or a batch whose weights differ from the mean, gets
    the average batch's penalty rather than its own; sample weights are rescaled to mean 1
    over the training rows for the same reason. Full batches (lbfgs) match exactly.
  * weights start from fastnn's glorot_uniform (scikit-learn's for every activation but
    "logistic", where it uses a √2 smaller range).
  * learning_rate="invscaling" (sgd) is fastnn's per-epoch lr / (epoch + 1) ** power_t,
    the epoch counted over every fit and partial_fit of the network; scikit-learn counts
    samples seen.
  * random_state: partial_fit and warm_start continue one random stream (shuffling), so k
    partial_fit calls on the same rows equal fit with max_iter=k also with shuffle=True;
    scikit-learn reseeds on each call, so there only shuffle=False matches.
  * lbfgs always runs on the CPU kernels; `device` applies to sgd and adam.
  * multi-target regression: the loss is ½ squared error summed over the targets (the
    objective whose gradient scikit-learn also follows); scikit-learn reports it divided by
    the number of targets.

scikit-learn is imported here, not by `import fastnn`.
"""
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, unique_labels

from . import callbacks, cpu_backend, optim
from .estimator_utils import (check_predict_data, check_sample_weight, fit_guard, forward,
                              seed_from, sigmoid, softmax, validate_data)
from .kernels import codes
from .layers import L2, Dense
from .models import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

# what a stochastic fit sets and lbfgs does not (scikit-learn's _initialize)
_STOCHASTIC_ATTRS = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_",
                     "_no_improvement_count", "_best_coefs", "_best_intercepts",
                     "_optimizer_state", "_optimizer_lr", "_rng_state")


class _InverseScalingFrom:
    """optim.InverseScaling counted from `start` epochs already run by earlier calls."""

    def __init__(self, power, start):
        self.power, self.start = power, start

    def __call__(self, lr, epoch):
        return lr / (epoch + self.start + 1) ** self.power


class _SklearnStopping(callbacks.Callback):
    """scikit-learn's bookkeeping after each epoch (_update_no_improvement_count and what
    _fit_stochastic does around it), on the estimator's own attributes."""

    def __init__(self, est, n_train, validation):
        self.est, self.n_train, self.validation = est, n_train, validation

    def on_epoch_end(self, epoch, logs=None):
        est, loss = self.est, logs["loss"]
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if self.validation is not None:
            X_val, y_val, sw_val, score_fn = self.validation
            score = score_fn(self.model.predict(X_val), y_val, sw_val)
            est.validation_scores_.append(score)
            worse = score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_coefs = [l.W.copy() for l in self.model.layers]
                est._best_intercepts = [l.b.copy() for l in self.model.layers]
        else:
            worse = loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = est._no_improvement_count + 1 if worse else 0
        if est._no_improvement_count > est.n_iter_no_change:
            opt = self.model.optimizer
            if est.solver == "sgd" and est.learning_rate == "adaptive" and opt.lr > 1e-6:
                opt.lr /= 5.0
                est._no_improvement_count = 0
            else:
                self.model.stop_training = True


def _unit_mean(sw):
    """(weights rescaled to mean 1, their mean): the kernels average Σ w·loss over the rows,
    so mean-1 weights give scikit-learn's Σ w·loss / Σw. Equal weights give (None, w)."""
    if sw is None:
        return None, 1.0
    if np.all(sw == sw[0]):
        scale = float(sw[0])
        sw = None
    else:
        scale = float(np.mean(sw))
    if scale == 0:
        raise ValueError("sample_weight is 0 on every training sample left after the "
                         "early-stopping split; give some of them a positive weight")
    return (None if sw is None else sw / scale), scale


class _BaseMLP(BaseEstimator):
    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"], "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")], "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=1e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="cpu"):
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
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device

    def _stochastic(self):
        """partial_fit exists for sgd and adam only (scikit-learn's available_if)."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        for i, s in enumerate(sizes):
            if isinstance(s, bool) or not isinstance(s, Integral) or s < 1:
                raise ValueError(f"hidden_layer_sizes must hold positive ints; "
                                 f"hidden_layer_sizes[{i}] is {s!r}")
        return [int(s) for s in sizes]

    def _optimizer(self, start):
        """The solver as a fastnn optimizer; `start` epochs already ran (invscaling)."""
        if self.solver == "adam":  # scikit-learn's learning_rate schedules are sgd's only
            return optim.Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        schedule = (_InverseScalingFrom(self.power_t, start)
                    if self.learning_rate == "invscaling" else None)
        return optim.SGD(self.learning_rate_init, momentum=self.momentum,
                         nesterov=self.nesterovs_momentum and self.momentum > 0,
                         schedule=schedule)

    def _network(self, n_features, n_outputs, loss, l2, seed, first, start, device):
        """A compiled, built Sequential: fresh weights from `seed`, or coefs_ / intercepts_."""
        reg = L2(l2) if l2 > 0 else None
        layers = [Dense(h, activation=self.activation, kernel_regularizer=reg)
                  for h in self._hidden()]
        layers.append(Dense(n_outputs, kernel_regularizer=reg))
        model = Sequential(layers, seed=seed, dtype="float64", device=device)
        model.compile(optimizer=self._optimizer(start), loss=loss)
        model.build(n_features)
        if not first:
            for layer, w, b in zip(model.layers, self.coefs_, self.intercepts_):
                layer.W[...], layer.b[...] = w, b
        return model

    def _train(self, X, T, sw, y_score, score_fn, n_outputs, loss, stratify, incremental):
        """Fit (or continue) the network on X with the loss's targets T; y_score is what
        score_fn compares predictions with on the early-stopping split."""
        first = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        hidden = self._hidden()
        shapes = list(zip([X.shape[1]] + hidden, hidden + [n_outputs]))
        if first:
            self.n_iter_, self.t_ = 0, 0
            self.n_layers_, self.n_outputs_ = len(hidden) + 2, n_outputs
            for name in _STOCHASTIC_ATTRS:
                self.__dict__.pop(name, None)
        elif [c.shape for c in self.coefs_] != shapes:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} does not match the "
                             f"fitted network (coefs_ of shapes {[c.shape for c in self.coefs_]}); "
                             "set warm_start=False, or fit a new estimator, to change it")
        seed = seed_from(self.random_state)
        if self.solver == "lbfgs":
            model = self._fit_lbfgs(X, T, sw, n_outputs, loss, seed, first)
        else:
            model = self._fit_stochastic(X, T, sw, y_score, score_fn, n_outputs, loss, stratify,
                                         incremental, seed, first)
        self.coefs_ = [l.W.copy() for l in model.layers]
        self.intercepts_ = [l.b.copy() for l in model.layers]
        if self.solver != "lbfgs" and self.early_stopping:  # scikit-learn's best weights
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts

    def _fit_lbfgs(self, X, T, sw, n_outputs, loss, seed, first):
        sw, scale = _unit_mean(sw)
        model = self._network(X.shape[1], n_outputs, loss, self.alpha / (2.0 * X.shape[0] * scale),
                              seed, first, 0, "cpu")
        y, kernel = model.loss.prepare(T, n_outputs, model.dtype, "y")

        def loss_and_gradient(p):  # (mean loss + L2 term, its gradient), both float64
            return cpu_backend.gradient(model.stack, np.ascontiguousarray(p), X, y, sw, kernel)

        result = scipy.optimize.minimize(
            loss_and_gradient, model.params.copy(), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        model.params[...] = result.x
        if result.status != 0:  # scikit-learn's _check_optimize_result
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) "
                          f"(status={result.status}): {result.message}. Increase max_iter or "
                          "max_fun, or scale the data.", ConvergenceWarning, stacklevel=6)
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        return model

    def _fit_stochastic(self, X, T, sw, y_score, score_fn, n_outputs, loss, stratify,
                        incremental, seed, first):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        # fresh lists: fit_guard restores attributes, not the contents of mutated lists
        self.loss_curve_ = [] if first else list(getattr(self, "loss_curve_", []))
        if first or not hasattr(self, "_no_improvement_count"):
            self._no_improvement_count = 0
        if self.early_stopping:
            if getattr(self, "validation_scores_", None) is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.validation_scores_ = list(self.validation_scores_)
            self.best_loss_ = None
        else:
            if getattr(self, "best_loss_", None) is None:
                self.best_loss_ = min(self.loss_curve_, default=np.inf)
            self.validation_scores_ = self.best_validation_score_ = None
        validation = None
        if self.early_stopping:
            extra = () if sw is None else (sw,)
            parts = train_test_split(X, T, y_score, *extra, test_size=self.validation_fraction,
                                     random_state=seed, stratify=y_score if stratify else None)
            X, X_val, T, y_val = parts[0], parts[1], parts[2], parts[5]
            sw, sw_val = (parts[6], parts[7]) if extra else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = (X_val, y_val, sw_val, score_fn)
        sw, scale = _unit_mean(sw)
        n = X.shape[0]
        bs = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        start = len(self.loss_curve_)
        model = self._network(X.shape[1], n_outputs, loss, self.alpha / (2.0 * bs * scale),
                              seed, first, start, self.device)
        if first:
            self._best_coefs = [l.W.copy() for l in model.layers]
            self._best_intercepts = [l.b.copy() for l in model.layers]
        elif getattr(self, "_rng_state", None) is not None:  # continue the shuffling stream
            model.rng.bit_generator.state = self._rng_state
        saved = getattr(self, "_optimizer_state", None)
        live = model.optimizer.state()
        if incremental and saved is not None and saved.keys() == live.keys() and all(
                np.shape(saved[k]) == np.shape(live[k]) for k in live):
            model.optimizer.set_state(saved)  # partial_fit continues the optimizer
            model.optimizer.lr = self._optimizer_lr
        self.n_iter_ = 0
        model.fit(X, T, epochs=1 if incremental else self.max_iter, batch_size=bs,
                  shuffle=self.shuffle, sample_weight=sw, verbose=0,
                  callbacks=[_SklearnStopping(self, n, validation)])
        self._rng_state = model.rng.bit_generator.state
        self._optimizer_state = {k: np.copy(v) for k, v in model.optimizer.state().items()}
        self._optimizer_lr = model.optimizer.lr
        if not incremental and self.n_iter_ == self.max_iter and not model.stop_training:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=6)
        return model

    def _logits(self, X):
        X = check_predict_data(self, X)
        acts = [codes.ACTIVATIONS[self.activation]] * (len(self.coefs_) - 1) + [codes.IDENTITY]
        return forward(X, self.coefs_, self.intercepts_, acts)


def _class_index(z):
    """Predicted class indices from logits: one logistic column, or the argmax."""
    return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier: hidden Dense layers, then one logistic output for
    two classes (binary cross-entropy) or K softmax outputs (softmax cross-entropy).

    Parameters are scikit-learn's MLPClassifier's (hidden_layer_sizes, activation, solver in
    {"lbfgs", "sgd", "adam"}, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, warm_start, momentum, nesterovs_momentum,
    early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun)
    with the same defaults, plus fastnn's `device` ("cpu", "cuda" or "auto"; see
    fastnn.Sequential) for sgd and adam. The module docstring lists where fastnn deviates.

    Attributes
    ----------
    classes_, coefs_ (list of (fan_in, fan_out)), intercepts_, n_features_in_, n_iter_ (epochs
    of the last call; lbfgs: its iterations), t_ (training samples seen over all calls),
    loss_ (last epoch's mean loss + L2 term), loss_curve_, best_loss_, validation_scores_
    (accuracy on the early-stopping split), best_validation_score_, n_layers_, n_outputs_,
    out_activation_ ("logistic" or "softmax")
    """

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,),
        each sample weighted by sample_weight (n_samples,) when given."""
        self._validate_params()
        self._hidden()
        reset = not hasattr(self, "classes_") or not self.warm_start
        return self._fit(X, y, sample_weight, reset, incremental=False)

    @available_if(_BaseMLP._stochastic)
    @fit_guard
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing the network of the previous fit or partial_fit.

        classes : array-like of shape (n_classes,)
            Every class of the whole stream; required on the first call (it fixes classes_),
            optional later, when it must equal classes_.
        """
        self._validate_params()
        self._hidden()
        first = getattr(self, "classes_", None) is None
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            classes = unique_labels(classes)
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} is not the same as on the last call to "
                                 f"partial_fit, was: {self.classes_!r}")
            if classes.size < 2:
                raise ValueError(f"classes must hold at least 2 classes; got {classes!r}")
            self.classes_ = classes
        return self._fit(X, y, sample_weight, first, incremental=True)

    def _fit(self, X, y, sample_weight, reset, incremental):
        X, y = validate_data(self, X, y, dtype=np.float64, reset=reset)
        check_classification_targets(y)
        if reset and not incremental:
            self.classes_ = np.unique(y)
            if self.classes_.size < 2:
                raise ValueError(f"y must hold at least 2 classes to fit a classifier; got 1 "
                                 f"class: {self.classes_[0]!r}")
        seen = unique_labels(y)
        if self.warm_start and not incremental and not reset \
                and not np.array_equal(seen, self.classes_):
            raise ValueError(f"warm_start can only be used where y has the same classes as in "
                             f"the previous call to fit. Previously got {self.classes_}, y has "
                             f"{seen}")
        unknown = np.setdiff1d(seen, self.classes_)
        if unknown.size:
            raise ValueError(f"y has classes not in classes_: {unknown!r}; classes_ is "
                             f"{self.classes_!r} (fixed by the first partial_fit's classes)")
        y_idx = np.searchsorted(self.classes_, y).astype(np.int64)
        sw = check_sample_weight(sample_weight, X.shape[0])
        k = self.classes_.size
        if k == 2:
            loss, n_out, T = "binary_cross_entropy", 1, y_idx[:, None].astype(np.float64)
        else:
            loss, n_out, T = "softmax_cross_entropy", k, y_idx

        def score(z, y_val, sw_val):
            return accuracy_score(y_val, _class_index(z), sample_weight=sw_val)

        self._train(X, T, sw, y_idx, score, n_out, loss, stratify=True, incremental=incremental)
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
        idx = _class_index(self._logits(X))  # checks that the estimator is fitted first
        return self.classes_[idx]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: hidden Dense layers and a linear output trained on
    ½ squared error (scikit-learn's squared_error). Parameters and attributes as
    MLPClassifier's (no classes_; validation_scores_ holds R² on the early-stopping split;
    out_activation_ is "identity")."""

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and y of shape (n_samples,) or
        (n_samples, n_targets), each sample weighted by sample_weight (n_samples,) when
        given."""
        self._validate_params()
        self._hidden()
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_BaseMLP._stochastic)
    @fit_guard
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the network of the previous fit or partial_fit."""
        self._validate_params()
        self._hidden()
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(self, X, y, sample_weight, incremental):
        first = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True,
                             reset=first)
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} targets but the fitted network has "
                             f"{self.n_outputs_}")
        sw = check_sample_weight(sample_weight, X.shape[0])

        def score(z, y_val, sw_val):
            return r2_score(y_val, z.reshape(y_val.shape), sample_weight=sw_val)

        self._train(X, T, sw, y, score, T.shape[1], "mse", stratify=False,
                    incremental=incremental)
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
