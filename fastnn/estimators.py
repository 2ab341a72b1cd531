"""What fastnn's scikit-learn estimators share, and the accuracy/time report.

The estimators live in three submodules named after scikit-learn's:

    fastnn.linear_model     LinearRegression, LogisticRegression, SoftmaxRegression,
                            Perceptron, LinearSVM
    fastnn.multiclass       OneVsRestClassifier, OneVsOneClassifier
    fastnn.neural_network   MLPClassifier, MLPRegressor

They import scikit-learn at module import; fastnn's core does not, so `import fastnn` works
without it. Each estimator validates its inputs with scikit-learn's helpers (validate_data,
check_classification_targets, its parameter constraints), trains a fastnn.Sequential in float64
on the kernels, and keeps plain NumPy fitted attributes (coef_, intercept_, coefs_, ...), so a
fitted estimator pickles without the Sequential it was trained with.

`python -m fastnn.estimators` prints each estimator's score and fit time beside its
scikit-learn counterpart on iris, digits and diabetes (see `report`).
"""
import time

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from sklearn.utils.validation import validate_data as _sklearn_validate_data

from .kernels import cpu
from .layers import LEAKY_ALPHA, L2, Dense
from .models import Sequential


def fit_guard(fit):
    """Wrap a fit method so that a call that raises leaves the estimator as it was."""

    def guarded(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    guarded.__name__, guarded.__doc__ = fit.__name__, fit.__doc__
    guarded.__wrapped__ = fit
    return guarded


def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
    """scikit-learn's validate_data, with a failed conversion to an array (a ragged list, a
    tensor that refuses NumPy, such as a GPU tensor or one requiring grad) reported as a
    TypeError that names X or y instead of the converter's own error. Arrays come back
    C-contiguous, so a Fortran-ordered or strided X gives bitwise the fit and predictions of
    its C-ordered copy (BLAS and LAPACK round differently per layout)."""
    kwargs.setdefault("order", "C")
    try:
        return _sklearn_validate_data(estimator, X, y, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        for name, a in (("X", X), ("y", y)):
            try:
                np.asarray(a)
            except (TypeError, ValueError, RuntimeError) as bad:
                raise TypeError(f"{name} must be a rectangular numeric array (NumPy-convertible, "
                                f"on the CPU), got {type(a).__name__}: {bad}") from e
        raise


def seed_from(random_state):
    """The int seed Sequential takes, drawn from a scikit-learn random_state."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def check_classifier_data(estimator, X, y):
    """X as float64 and y as indices into classes_ (np.unique order); at least 2 classes."""
    X, y = validate_data(estimator, X, y, dtype=np.float64)
    check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y must hold at least 2 classes to fit a classifier; got 1 class: "
                         f"{classes[0]!r}")
    return X, classes, y_idx.astype(np.int64)


def check_sample_weight(sample_weight, n):
    if sample_weight is None:
        return None
    from sklearn.utils.validation import _check_sample_weight
    # negative weights have no meaning here (and √w in LinearRegression's solve would be NaN)
    return _check_sample_weight(sample_weight, np.empty((n, 1)), dtype=np.float64,
                                ensure_non_negative=True)


def check_predict_data(estimator, X):
    check_is_fitted(estimator)
    return validate_data(estimator, X, reset=False, dtype=np.float64)


def train_linear(X, T, loss, n_outputs, l2, fit_intercept, optimizer, max_iter, batch_size,
                 tol, seed, shuffle=True, sample_weight=None, callbacks=None):
    """Fit one Dense layer (zero start) with `loss` on the kernels; return
    (coef (n_outputs, n_features), intercept (n_outputs,), epochs run, History).

    l2 is the λ of λ ||W||² added to the mean loss (0 for none)."""
    layer = Dense(n_outputs, use_bias=fit_intercept, kernel_initializer="zeros",
                  kernel_regularizer=L2(l2) if l2 > 0 else None)
    model = Sequential([layer], seed=seed, dtype="float64")
    model.compile(optimizer=optimizer, loss=loss)
    history = model.fit(X, T, epochs=max_iter, batch_size=batch_size, shuffle=shuffle,
                        sample_weight=sample_weight, verbose=0, tol=tol, callbacks=callbacks)
    coef = np.ascontiguousarray(layer.W.T)
    intercept = layer.b.copy() if fit_intercept else np.zeros(n_outputs)
    return coef, intercept, len(history.epoch), history


def forward(X, coefs, intercepts, act_codes):
    """Logits of a stack of dense layers through kernels.cpu.affine_act_forward (float64)."""
    a = np.ascontiguousarray(X, dtype=np.float64)
    for w, b, act in zip(coefs, intercepts, act_codes):
        out = np.empty((a.shape[0], w.shape[1]))
        pre = np.empty_like(out)
        cpu.affine_act_forward(out, pre, a, w, b, act, LEAKY_ALPHA)
        a = out
    return a


# --------------------------------------------------------------------------- report

def _pairs():
    """(name, fastnn estimator, scikit-learn counterpart, dataset names) with matching
    hyperparameters; the comparison `report` and the accuracy test run."""
    import sklearn.linear_model as sk_lm
    import sklearn.multiclass as sk_mc
    import sklearn.neural_network as sk_nn
    import sklearn.svm as sk_svm

    from . import linear_model as lm
    from . import multiclass as mc
    from . import neural_network as nn

    cls, reg = ("iris", "digits"), ("diabetes",)
    mlp = dict(hidden_layer_sizes=(64,), alpha=1e-4, learning_rate_init=1e-3, max_iter=200,
               batch_size=64, random_state=0)
    mlp_reg = dict(mlp, hidden_layer_sizes=(16,), early_stopping=True)
    return [
        ("LinearRegression", lm.LinearRegression(), sk_lm.LinearRegression(), reg),
        ("LinearRegression(alpha=1)", lm.LinearRegression(alpha=1.0),
         sk_lm.Ridge(alpha=1.0), reg),
        ("LinearRegression(solver=gd)", lm.LinearRegression(solver="gd", max_iter=2000),
         sk_lm.LinearRegression(), reg),
        ("LogisticRegression (OvR)", lm.LogisticRegression(C=1.0),
         sk_mc.OneVsRestClassifier(sk_lm.LogisticRegression(C=1.0)), cls),
        ("SoftmaxRegression", lm.SoftmaxRegression(C=1.0),
         sk_lm.LogisticRegression(C=1.0), cls),
        ("Perceptron (multiclass rule)", lm.Perceptron(shuffle=False),
         sk_lm.Perceptron(shuffle=False, tol=None), cls),
        ("OvR(Perceptron)", mc.OneVsRestClassifier(lm.Perceptron(shuffle=False)),
         sk_lm.Perceptron(shuffle=False, tol=None), cls),
        ("LinearSVM (OvR)", lm.LinearSVM(C=1.0, random_state=0),
         # SVC solves the same per-class problem exactly (intercept unpenalised, unlike
         # LinearSVC's liblinear); wrapped one-vs-rest as LinearSVM's default
         sk_mc.OneVsRestClassifier(sk_svm.SVC(kernel="linear", C=1.0)), cls),
        ("OvO(LogisticRegression)", mc.OneVsOneClassifier(lm.LogisticRegression()),
         sk_mc.OneVsOneClassifier(sk_lm.LogisticRegression()), cls),
        ("MLPClassifier", nn.MLPClassifier(**mlp), sk_nn.MLPClassifier(**mlp), cls),
        ("MLPRegressor(early_stopping)", nn.MLPRegressor(**mlp_reg),
         sk_nn.MLPRegressor(**mlp_reg), reg),
    ]


def load_split(name):
    """A dataset split with train_test_split(random_state=0) and scaled by StandardScaler
    fitted on the training part (targets of diabetes scaled too, for the gradient solvers)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    if name == "diabetes":
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


def compare():
    """Rows (estimator, dataset, fastnn score, fastnn fit s, sklearn score, sklearn fit s)."""
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    rows, data = [], {}
    for name, ours, theirs, sets in _pairs():
        for ds in sets:
            if ds not in data:
                data[ds] = load_split(ds)
            X_tr, X_te, y_tr, y_te = data[ds]
            scores = []
            for est in (clone(ours), clone(theirs)):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    est.fit(X_tr, y_tr)
                scores += [est.score(X_te, y_te), time.perf_counter() - t0]
            rows.append((name, ds, *scores))
    return rows


def report(print_fn=print):
    """Print and return the table of `compare` (scores are accuracy, or R² for diabetes)."""
    rows = compare()
    head = (f"{'estimator':<30} {'dataset':<9} {'fastnn':>8} {'fit s':>7} {'sklearn':>8} "
            f"{'fit s':>7}")
    lines = [head, "-" * len(head)]
    lines += [f"{n:<30} {d:<9} {a:8.4f} {ta:7.3f} {b:8.4f} {tb:7.3f}"
              for n, d, a, ta, b, tb in rows]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return rows


if __name__ == "__main__":
    report()
