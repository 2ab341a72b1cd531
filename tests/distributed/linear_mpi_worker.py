"""Run by tests/distributed/test_linear_mpi.py as `mpiexec -n R python linear_mpi_worker.py
OUT.json`: every rank builds the same data (seeded), takes its rows by uneven cuts (one rank
a fifth of the rows, another none when R = 3), and fits each case with distributed=True;
every rank also fits the whole data on its own (the single-process answer). Rank 0 writes,
per case, the largest difference between the two, the bound it must stay within (below),
and whether every rank ended with bitwise the same coefficients and iteration count.

The bound: both fits stop once ||∇f(θ)|| <= tol ||∇f(0)|| (LinearRegression's closed form
is exact to rounding), and a μ-strongly convex f has ||θ − θ*|| <= ||∇f(θ)|| / μ, so the
two differ by at most 2 tol ||∇f(0)|| / μ, μ the Hessian's smallest eigenvalue at the optimum
(computed here from the single-process objective), plus rounding: ε κ(H) max|θ| for the
two solves (ε = 2.2e-16 times 100 for the sums taken in other orders). The badly scaled
case stops in TRON's metric instead (||∇f||_{M⁻¹}), where the bound is not a theorem; the two
fits take the same steps, so what it checks there is rounding, far inside it.
"""
import json
import sys

import numpy as np
import scipy.sparse

from fastnn import distributed
from fastnn import linear_model as lm
from fastnn.estimator_utils import Design

RANK, RANKS = distributed.rank(), distributed.world_size()


def cuts(n):
    """Rank r's rows: [0, n/5) to rank 0, the rest to rank 1, none to rank 2 (R = 3)."""
    edges = [0, n // 5] + [n] * (RANKS - 1)
    return slice(edges[RANK], edges[RANK + 1])


def theta(est):
    """coef_ and intercept_ as one vector."""
    return np.r_[np.ravel(est.coef_), np.ravel(est.intercept_)]


def bound(obj, coef_theta, tol):
    """2 tol ||∇f(0)|| / μ + rounding (module docstring), obj the single-process objective,
    coef_theta its optimum in the objective's (p, K) layout."""
    g0 = np.linalg.norm(obj.value_grad(np.zeros(obj.p * obj.K))[1])
    obj.value_grad(coef_theta)
    eig = np.linalg.eigvalsh(obj.hessian())
    mu, kappa = eig[0], eig[-1] / eig[0]
    return 2 * tol * g0 / mu + 100 * 2.2e-16 * kappa * np.max(np.abs(coef_theta))


def layout(est, K):
    """coef_ (K, d), intercept_ (K,) -> the objective's flat Θ of shape (d + 1, K)."""
    return np.vstack([np.atleast_2d(est.coef_).T.reshape(-1, K),
                      np.reshape(est.intercept_, (1, K))]).ravel()


def make(kind, n=241, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.random(n) + 0.5
    if kind == "binary":
        y = (X @ rng.standard_normal(d) + rng.logistic(size=n) > 0).astype(int)
    elif kind == "regression":
        y = X @ rng.standard_normal((d, 2)) + 0.3 * rng.standard_normal((n, 2)) + 1.0
    else:  # three classes, rows sorted by class, so rank 0's fifth holds one class only
        y = np.argmax(X[:, :3] + rng.gumbel(size=(n, 3)), axis=1)
        order = np.argsort(y, kind="stable")
        X, y = X[order], y[order]
    return X, y, w


def cases():
    """name -> (estimator, X, y, sample weights or None, the single-process objective)."""
    tol = 1e-10
    X, y, w = make("binary")
    yield ("logistic binary, newton, weights", lm.LogisticRegression(tol=tol), X, y, w,
           lambda est: lm._LogisticLoss(Design(X), np.where(y == 1, 1.0, -1.0), w, True, 1.0))
    Xs = X.copy()
    Xs[:, 2] *= 1e6  # badly scaled: TRON's metric (linear_model._tron_metric), on every rank
    yield ("logistic binary, tron, a column times 1e6, weights",
           lm.LogisticRegression(solver="tron", tol=tol), Xs, y, w,
           lambda est: lm._LogisticLoss(Design(Xs), np.where(y == 1, 1.0, -1.0), w, True, 1.0))
    X3, y3, w3 = make("classes")
    yield ("softmax, 3 classes, lbfgs, weights, one class on rank 0",
           lm.SoftmaxRegression(solver="lbfgs", tol=tol, max_iter=1000), X3, y3, w3,
           lambda est: lm._SoftmaxLoss(Design(X3), y3, 3, w3, True, 1.0))
    csr = scipy.sparse.csr_matrix(np.where(np.abs(X3) > 0.7, X3, 0.0))
    yield ("softmax, 3 classes, CSR, tron", lm.SoftmaxRegression(tol=tol), csr, y3, None,
           lambda est: lm._SoftmaxLoss(Design(csr), y3, 3, np.ones(len(y3)), True, 1.0))
    yield ("logistic one-vs-rest, 3 classes, tron", lm.LogisticRegression(solver="tron",
                                                                          tol=tol), X3, y3, None,
           None)
    Xr, yr, wr = make("regression")
    yield ("linear regression, 2 targets, weights", lm.LinearRegression(tol=tol), Xr, yr, wr,
           lambda est: lm._SquaredLoss(Design(Xr), yr, wr, True, 0.0))
    yield ("ridge, alpha 2", lm.LinearRegression(alpha=2.0, tol=tol), Xr, yr[:, 0], None,
           lambda est: lm._SquaredLoss(Design(Xr), yr[:, :1], np.ones(len(yr)), True, 2.0))
    yield ("linear SVM, squared hinge, tron", lm.LinearSVM(loss="squared_hinge", C=0.5,
                                                           tol=tol), X, y, w,
           lambda est: lm._SquaredHingeLoss(Design(X), np.where(y == 1, 1.0, -1.0), 0.5 * w,
                                            True, 1.0))


def main(out):
    report = {"ranks": RANKS, "cases": {}}
    for name, est, X, y, w, objective in cases():
        rows = cuts(X.shape[0])
        single = type(est)(**est.get_params()).fit(X, y, sample_weight=w)
        mine = est.fit(X[rows], y[rows], sample_weight=None if w is None else w[rows],
                       distributed=True)
        got, want = theta(mine), theta(single)
        everyone = distributed.allgather((got.tobytes(), mine.n_iter_))
        case = {"max_abs_diff": float(np.max(np.abs(got - want))),
                "scale": float(np.max(np.abs(want))),
                "same_on_every_rank": all(e == everyone[0] for e in everyone),
                "classes_equal": bool(np.array_equal(getattr(mine, "classes_", []),
                                                      getattr(single, "classes_", []))),
                "n_iter": [e[1] for e in everyone], "n_iter_single": int(single.n_iter_)}
        if objective is not None:
            K = np.atleast_2d(single.coef_).shape[0]
            case["bound"] = float(bound(objective(single), layout(single, K), est.tol))
        else:  # one-vs-rest: each binary problem's bound; its largest
            case["bound"] = max(float(bound(lm._LogisticLoss(
                Design(X), np.where(y == c, 1.0, -1.0), np.ones(len(y)), True, 1.0),
                np.r_[single.coef_[c], single.intercept_[c]], est.tol)) for c in range(3))
        report["cases"][name] = case

    # a rank whose X has another feature count: every rank raises, naming that rank
    X, y, _ = make("binary")
    bad = X[cuts(X.shape[0])][:, :(5 if RANK == RANKS - 1 else 6)]
    try:
        lm.LogisticRegression().fit(bad, y[cuts(X.shape[0])], distributed=True)
        report["mismatch"] = None
    except ValueError as err:
        report["mismatch"] = distributed.allgather(str(err))
    if RANK == 0:
        with open(out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
