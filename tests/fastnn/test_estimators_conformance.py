"""scikit-learn's own conformance suite over every fastnn estimator, with fast settings, and
no expected failures: the convex models are solved to their optimum (fastnn.linear_model), so
weighting a sample and repeating it give the same fit, and fitting twice gives the same model.
LinearRegression(solver="gd"), seed 003's teaching rule, is left out: plain gradient descent
gains a factor (1 − 1/κ) a step, and the checks' small uncentred data sets have condition
numbers κ that need > 10^5 steps to meet their rtol=1e-7 (tests/fastnn/test_linear_solvers.py
holds it to the closed form, weights included, on well-conditioned data). So is the L-BFGS
option (scipy's line search stops ~1e-7 relative short of the optimum on sparse check data;
tested to 1e-6 there). LinearSVM's dual coordinate descent converges linearly: the weighted
and repeated problems agree to the checks' rtol=1e-7 at tol=1e-10, not at the default 1e-6."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from fastnn.linear_model import (LinearRegression, LinearSVM, LogisticRegression,
                                 Perceptron, SoftmaxRegression)
from fastnn.multiclass import OneVsOneClassifier, OneVsRestClassifier
from fastnn.neural_network import MLPClassifier, MLPRegressor

ESTIMATORS = [
    LinearRegression(),
    LogisticRegression(),
    LogisticRegression(solver="tron"),
    SoftmaxRegression(),
    SoftmaxRegression(solver="tron"),
    Perceptron(max_iter=20),
    LinearSVM(tol=1e-10),
    LinearSVM(loss="squared_hinge"),
    LinearSVM(multi_class="weston_watkins", tol=1e-10),
    OneVsRestClassifier(LogisticRegression()),
    OneVsOneClassifier(LinearSVM()),
    OneVsOneClassifier(LogisticRegression()),
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, learning_rate_init=1e-2),
    MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, learning_rate_init=1e-2),
    MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=20),  # no partial_fit
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_conformance(estimator, check):
    check(estimator)
