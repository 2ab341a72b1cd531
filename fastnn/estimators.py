"""How fastnn's scikit-learn estimators compare with scikit-learn's: accuracy and fit time.

The estimators live in three submodules named after scikit-learn's:

    fastnn.linear_model     LinearRegression, LogisticRegression, SoftmaxRegression,
                            Perceptron, LinearSVM
    fastnn.multiclass       OneVsRestClassifier, OneVsOneClassifier
    fastnn.neural_network   MLPClassifier, MLPRegressor

and share the helpers of fastnn.estimator_utils. They import scikit-learn at module import;
fastnn's core does not, so `import fastnn` works without it. Each estimator validates its
inputs with scikit-learn's helpers (validate_data, check_classification_targets, its parameter
constraints), trains a fastnn.Sequential in float64 on the kernels, and keeps plain NumPy
fitted attributes (coef_, intercept_, coefs_, ...), so a fitted estimator pickles without the
Sequential it was trained with.

`python -m fastnn.estimators` prints each estimator's score and fit time beside its
scikit-learn counterpart on iris, digits and diabetes (see `report`): the time of a second
fit, with fastnn's first (which also loads its compiled kernels) in a column of its own.
"""
import time
import warnings

import sklearn.linear_model as sk_lm
import sklearn.multiclass as sk_mc
import sklearn.neural_network as sk_nn
import sklearn.svm as sk_svm
from sklearn import datasets
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from . import linear_model as lm
from . import multiclass as mc
from . import neural_network as nn


def _pairs():
    """(name, fastnn estimator, scikit-learn counterpart, dataset names) with matching
    hyperparameters; the comparison `report` and the accuracy test run."""
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
         # LinearSVM solves liblinear's problem (hinge loss, the intercept penalised as a
         # feature of value intercept_scaling), one-vs-rest: LinearSVC with the hinge loss
         sk_svm.LinearSVC(loss="hinge", C=1.0, max_iter=100000), cls),
        ("OvO(LogisticRegression)", mc.OneVsOneClassifier(lm.LogisticRegression()),
         sk_mc.OneVsOneClassifier(sk_lm.LogisticRegression()), cls),
        ("MLPClassifier", nn.MLPClassifier(**mlp), sk_nn.MLPClassifier(**mlp), cls),
        ("MLPRegressor(early_stopping)", nn.MLPRegressor(**mlp_reg),
         sk_nn.MLPRegressor(**mlp_reg), reg),
    ]


def load_split(name):
    """A dataset split with train_test_split(random_state=0) and scaled by StandardScaler
    fitted on the training part (targets of diabetes scaled too, for the gradient solvers)."""
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    if name == "diabetes":
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


def _timed_fit(est, X, y):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return time.perf_counter() - t0


def compare():
    """Rows (estimator, dataset, fastnn score, fastnn fit s, sklearn score, sklearn fit s,
    fastnn first fit s). Each side fits twice, a fresh clone each time, and the fit time is
    the second's: fastnn's first fit of a kind in a process also loads its compiled kernels
    from Numba's cache (~0.2-1 s, once per process), which the last column shows apart."""
    rows, data = [], {}
    for name, ours, theirs, sets in _pairs():
        for ds in sets:
            if ds not in data:
                data[ds] = load_split(ds)
            X_tr, X_te, y_tr, y_te = data[ds]
            scores, first = [], None
            for est in (ours, theirs):
                once = _timed_fit(clone(est), X_tr, y_tr)
                first = once if first is None else first
                fitted = clone(est)
                seconds = _timed_fit(fitted, X_tr, y_tr)
                scores += [fitted.score(X_te, y_te), seconds]
            rows.append((name, ds, *scores, first))
    return rows


def report(print_fn=print):
    """Print and return the table of `compare` (scores are accuracy, or R² for diabetes)."""
    rows = compare()
    head = (f"{'estimator':<30} {'dataset':<9} {'fastnn':>8} {'fit s':>7} {'1st fit':>7} "
            f"{'sklearn':>8} {'fit s':>7}")
    lines = [head, "-" * len(head)]
    lines += [f"{n:<30} {d:<9} {a:8.4f} {ta:7.3f} {first:7.3f} {b:8.4f} {tb:7.3f}"
              for n, d, a, ta, b, tb, first in rows]
    lines += ["fit s: the second fit in this process; 1st fit: fastnn's first, which also",
              "loads its compiled kernels (once per process)"]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return rows


if __name__ == "__main__":
    report()
