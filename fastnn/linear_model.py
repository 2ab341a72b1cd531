"""Linear models of the course notes as scikit-learn estimators, solved to their optimum.

    LinearRegression     seed 003's normal equations, solved stably (lstsq, or a Cholesky solve
                         of the ridge system; never an explicit inverse); sparse X by the
                         normal equations (few features) or LSQR; or gradient descent
    LogisticRegression   seed 003: binary cross-entropy, gradient Xᵀ(σ(Xw) − y), L2
    SoftmaxRegression    seed 000: multinomial, softmax cross-entropy, L2
    Perceptron           seed 001: w ← w + y x on a mistake; multiclass w_ŷ ← w_ŷ − x,
                         w_y ← w_y + x unless y is the unique argmax
    LinearSVM            seed 002: hinge (or squared hinge) loss + L2, by dual coordinate
                         descent

The logistic models minimise scikit-learn's objective C Σ_i s_i loss_i + ½ ||W||² (s_i the
sample weights; the intercept is not penalised), a strictly convex function with one
minimiser, by one of

    "newton"  Newton's method with the exact Hessian Xᵀ D X (seed 004: positive definite),
              built by BLAS ?syrk (the multinomial one as K(K+1)/2 such blocks), a Cholesky
              solve and a backtracking (Armijo) line search;
    "tron"    trust-region Newton-CG (Lin, Weng & Keerthi 2008, liblinear's TRON): conjugate
              gradients on Hessian-vector products, each two passes over X, never a d x d
              matrix;
    "lbfgs"   SciPy's L-BFGS-B on the same loss and gradient;
    "gd"      seed 003's full-batch gradient descent w ← w − α ∇f, α = 1 / L (L the gradient's
              Lipschitz constant bound), deterministic;
    "sgd"     seed 000's per-sample SGD from W = 0 (mini-batches with batch_size > 1), on a
              one-layer fastnn.Sequential with the mean loss plus λ ||W||², λ = 1 / (2 C n)
              (the same minimiser), dense X only.

"auto" picks Newton while its Hessian is small (K·p <= 200 coefficients, p = features +
intercept, on dense X), else TRON. Every solver stops once the gradient's norm is below
tol times its norm at the start (W = 0), or at max_iter with scikit-learn's
ConvergenceWarning; all but "sgd" are deterministic and ignore random_state.

Sparse X (scipy.sparse CSR or CSC, matrix or array) goes through kernels.cpu's CSR kernels
(fastnn.estimator_utils.Design) and is never densified. scikit-learn is imported here, not by
`import fastnn`.
"""
import contextlib
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from threadpoolctl import ThreadpoolController

from . import optim
from .estimator_utils import (Design, check_classifier_data, check_predict_data,
                              check_sample_weight, check_sparse, fit_guard, seed_from, sigmoid,
                              softmax, train_linear, validate_data)
from .kernels import cpu

__all__ = ["LinearRegression", "LogisticRegression", "SoftmaxRegression", "Perceptron",
           "LinearSVM"]

_POSITIVE = Interval(Real, 0, None, closed="neither")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_COUNT = Interval(Integral, 1, None, closed="left")
_NEWTON_MAX_COEF = 200  # "auto": Newton up to this many coefficients K·p, TRON beyond


def _dense_only(X, solver):
    if scipy.sparse.issparse(X):
        raise TypeError(f"solver={solver!r} trains a fastnn.Sequential, which takes dense X; "
                        f"X is a scipy.sparse matrix: use the default solver='auto'")


def _warn_unconverged(name, max_iter):
    warnings.warn(f"{name} did not converge in max_iter={max_iter} iterations; increase "
                  f"max_iter or tol", ConvergenceWarning, stacklevel=3)


# --------------------------------------------------------------------------- objectives

class _Objective:
    """f(Θ) = Σ_i loss(z_i) + ½ l2 ||W||² (+ ½ l2 b² when the intercept is penalised, as
    liblinear does), z = X W + bias · b, for Θ = [W; b] of shape (p, K), p = n_features (+1
    with an intercept), flattened in C order. Subclasses give the per-sample loss
    (`_loss`: f and ∂f/∂z, keeping what the Hessian needs), its Hessian along a direction
    (`_curvature`: ∂²f/∂z² · u) and its Hessian weights (`_weights`: {(k, l): d_kl})."""

    def __init__(self, design, n_out, fit_intercept, l2, bias=1.0, penalize_intercept=False):
        self.X, self.K, self.l2 = design, n_out, l2
        self.d = design.shape[1]
        self.p = self.d + int(fit_intercept)
        self.bias = bias
        self.penalty = np.full(self.p, l2)
        if fit_intercept and not penalize_intercept:
            self.penalty[-1] = 0.0

    def _logits(self, theta):
        T = theta.reshape(self.p, self.K)
        Z = self.X.matmul(T[:self.d])
        if self.p > self.d:
            Z += self.bias * T[self.d]
        return Z

    def _back(self, theta, dZ):
        """Xᵀ-side of a gradient or Hessian product: [Xᵀ dZ; bias Σ dZ] + penalty Θ."""
        G = np.empty((self.p, self.K))
        G[:self.d] = self.X.rmatmul(dZ)
        if self.p > self.d:
            G[self.d] = self.bias * dZ.sum(axis=0)
        G += self.penalty[:, None] * theta.reshape(self.p, self.K)
        return G.ravel()

    def value_grad(self, theta):
        f, dZ = self._loss(self._logits(theta))
        T = theta.reshape(self.p, self.K)
        f += 0.5 * float(np.sum(self.penalty[:, None] * T * T))
        return f, self._back(theta, dZ)

    def value(self, theta):
        return self.value_grad(theta)[0]

    def hessp(self, v):
        """H v at the point of the last value_grad."""
        return self._back(v, self._curvature(self._logits(v)))

    def hessian(self):
        """The (pK, pK) Hessian at the point of the last value_grad, from weighted Grams."""
        p, K, d = self.p, self.K, self.d
        H = np.zeros((p, K, p, K))
        for (k, l), w in self._weights().items():
            G = np.empty((p, p))
            G[:d, :d] = self.X.gram(w)
            if p > d:
                col = self.bias * self.X.rmatmul(w[:, None])[:, 0]
                G[:d, d], G[d, :d], G[d, d] = col, col, self.bias ** 2 * w.sum()
            H[:, k, :, l] = G
            H[:, l, :, k] = G
        H = H.reshape(p * K, p * K)
        H[np.diag_indices_from(H)] += np.repeat(self.penalty, K)
        return H


class _LogisticLoss(_Objective):
    """Σ s_i log(1 + exp(−y_i z_i)), y = ±1, s the (C-scaled) sample weights."""

    def __init__(self, design, y_pm, s, fit_intercept, l2):
        super().__init__(design, 1, fit_intercept, l2)
        self.y, self.s = y_pm, s
        n = y_pm.shape[0]
        self.dz, self.hw = np.empty(n), np.empty(n)

    def _loss(self, Z):
        f = cpu.logistic_loss_grad(self.dz, self.hw, np.ascontiguousarray(Z[:, 0]), self.y,
                                   self.s)
        return f, self.dz[:, None].copy()

    def _curvature(self, U):
        return self.hw[:, None] * U

    def _weights(self):
        return {(0, 0): self.hw}


class _SoftmaxLoss(_Objective):
    """Σ s_i (logsumexp(z_i) − z_{i, y_i}) over K logits."""

    def __init__(self, design, labels, n_classes, s, fit_intercept, l2):
        super().__init__(design, n_classes, fit_intercept, l2)
        self.labels, self.s = labels, s
        self.P = np.empty((labels.shape[0], n_classes))

    def _loss(self, Z):
        dZ = np.empty_like(Z)
        f = cpu.softmax_loss_grad(dZ, self.P, Z, self.labels, self.s)
        return f, dZ

    def _curvature(self, U):
        R = np.empty_like(U)
        cpu.softmax_hessian_rows(R, self.P, np.ascontiguousarray(U), self.s)
        return R

    def _weights(self):
        P, s, K = self.P, self.s, self.K
        return {(k, l): s * (P[:, k] * ((k == l) - P[:, l])) for k in range(K)
                for l in range(k, K)}

    def hessian(self):
        """The Hessian plus (1/K) 1 1ᵀ on each unpenalised row's K classes. Softmax ignores a
        shift shared by all K logits, so those directions (the intercepts', and every
        feature's with penalty=None) are the Hessian's null space; the gradient has no part
        in them, so the added term leaves the Newton step's meaningful part alone, keeps
        the Cholesky factorisation defined, and leaves the shift at its start, 0."""
        H = super().hessian().reshape(self.p, self.K, self.p, self.K)
        for j in np.flatnonzero(self.penalty == 0):
            H[j, :, j, :] += 1.0 / self.K
        return H.reshape(self.p * self.K, self.p * self.K)


class _SquaredLoss(_Objective):
    """½ Σ s_i ||z_i − y_i||² over K targets (least squares; ridge with l2 = alpha)."""

    def __init__(self, design, Y, s, fit_intercept, l2):
        super().__init__(design, Y.shape[1], fit_intercept, l2)
        self.Y, self.s = Y, s

    def _loss(self, Z):
        R = Z - self.Y
        dZ = self.s[:, None] * R
        return 0.5 * float(np.sum(dZ * R)), dZ

    def _curvature(self, U):
        return self.s[:, None] * U

    def _weights(self):
        return {(k, k): self.s for k in range(self.K)}


class _SquaredHingeLoss(_Objective):
    """Σ s_i max(0, 1 − y_i z_i)², the primal of the L2-loss SVM (liblinear's l2r_l2_svc),
    with the intercept as a penalised constant feature of value `bias` (liblinear's)."""

    def __init__(self, design, y_pm, s, fit_intercept, bias):
        super().__init__(design, 1, fit_intercept, 1.0, bias=bias, penalize_intercept=True)
        self.y, self.s = y_pm, s
        self.active = np.zeros(y_pm.shape[0])

    def _loss(self, Z):
        m = np.maximum(1.0 - self.y * Z[:, 0], 0.0)
        self.active = 2.0 * self.s * (m > 0)
        return float(np.sum(self.s * m * m)), (-2.0 * self.s * self.y * m)[:, None]

    def _curvature(self, U):
        return self.active[:, None] * U

    def _weights(self):
        return {(0, 0): self.active}


# --------------------------------------------------------------------------- solvers
# Each takes an _Objective, a start θ0, tol (on ||∇f|| relative to ||∇f(θ0)||) and max_iter,
# and returns (θ, iterations, converged).

_CONTROLLER = []


def _small_blas(order):
    """One BLAS thread for a factorisation of order < 1000: OpenBLAS's threaded ?potrf on a
    130 x 130 matrix measured 150 ms on the shared 2-core machine against 1.7 ms on one
    thread (its threads wait for each other); larger ones keep every thread."""
    if order >= 1000:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())  # inspecting the libraries costs ~1 ms
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _newton(obj, theta, tol, max_iter):
    f, g = obj.value_grad(theta)
    g0 = np.linalg.norm(g)
    for it in range(max_iter):
        gnorm = np.linalg.norm(g)
        if gnorm <= tol * g0:
            return theta, it, True
        H = obj.hessian()
        with _small_blas(H.shape[0]):
            try:
                step = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), g)
            except np.linalg.LinAlgError:  # singular (no penalty, separable data)
                step = -scipy.linalg.lstsq(H, g)[0]
        gs = float(g @ step)
        t = 1.0
        for _ in range(40):
            cand = theta + t * step
            f_new, g_new = obj.value_grad(cand)
            # Armijo; near the optimum f stops changing in floating point, and a smaller
            # gradient is the better test of progress
            if f_new <= f + 1e-4 * t * gs or (
                    abs(f_new - f) <= 1e-12 * abs(f) and np.linalg.norm(g_new) < gnorm):
                break
            t *= 0.5
        else:
            obj.value_grad(theta)
            return theta, it + 1, gnorm <= tol * g0
        theta, f, g = cand, f_new, g_new
    return theta, max_iter, np.linalg.norm(g) <= tol * g0


def _steihaug_cg(obj, g, delta, cg_tol):
    """Conjugate gradients on H s = −g inside ||s|| <= delta (liblinear's trcg): returns s and
    the residual r = −g − H s."""
    s = np.zeros_like(g)
    r = -g
    d = r.copy()
    rr = float(r @ r)
    for _ in range(g.shape[0] + 1):
        if np.sqrt(rr) <= cg_tol:
            break
        Hd = obj.hessp(d)
        dHd = float(d @ Hd)
        if dHd <= 0:
            break
        alpha = rr / dHd
        s += alpha * d
        if np.linalg.norm(s) > delta:  # step to the trust region's boundary and stop
            s -= alpha * d
            sd, ss, dd = float(s @ d), float(s @ s), float(d @ d)
            rad = np.sqrt(sd * sd + dd * (delta * delta - ss))
            alpha = (delta * delta - ss) / (sd + rad) if sd >= 0 else (rad - sd) / dd
            s += alpha * d
            r -= alpha * Hd
            break
        r -= alpha * Hd
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
    return s, r


def _tron(obj, theta, tol, max_iter):
    """TRON as liblinear's tron.cpp (Lin & Moré's trust-region update), with the CG forcing
    term min(0.1, √(||g|| / ||g0||)), which makes the outer iterations superlinear."""
    eta0, eta1, eta2 = 1e-4, 0.25, 0.75
    sigma1, sigma2, sigma3 = 0.25, 0.5, 4.0
    f, g = obj.value_grad(theta)
    g0 = gnorm = np.linalg.norm(g)
    delta = g0
    it = 0
    for _ in range(10 * max_iter):  # accepted steps count towards max_iter; rejected ones
        if it >= max_iter:           # shrink the region, at most 10x as many
            break
        if gnorm <= tol * g0:
            return theta, it, True
        s, r = _steihaug_cg(obj, g, delta, min(0.1, np.sqrt(gnorm / g0)) * gnorm)
        gs = float(g @ s)
        prered = -0.5 * (gs - float(s @ r))
        f_new, g_new = obj.value_grad(theta + s)
        actred = f - f_new
        snorm = np.linalg.norm(s)
        if it == 0:
            delta = min(delta, snorm)
        denom = f_new - f - gs
        alpha = sigma3 if denom <= 0 else max(sigma1, -0.5 * gs / denom)
        if actred < eta0 * prered:
            delta = min(alpha * snorm, sigma2 * delta)
        elif actred < eta1 * prered:
            delta = max(sigma1 * delta, min(alpha * snorm, sigma2 * delta))
        elif actred < eta2 * prered:
            delta = max(sigma1 * delta, min(alpha * snorm, sigma3 * delta))
        else:
            delta = max(delta, min(alpha * snorm, sigma3 * delta))
        if actred > eta0 * prered or (abs(actred) <= 1e-12 * abs(f)
                                      and np.linalg.norm(g_new) < gnorm):
            theta, f, g, gnorm = theta + s, f_new, g_new, np.linalg.norm(g_new)
            it += 1
        else:
            obj.value_grad(theta)  # the Hessian-vector products read the accepted point
        if abs(actred) <= 1e-15 * abs(f) and abs(prered) <= 1e-15 * abs(f):
            break  # no change left that float64 can represent
    return theta, it, gnorm <= tol * g0


def _lbfgs(obj, theta, tol, max_iter):
    g0 = np.linalg.norm(obj.value_grad(theta)[1])
    res = scipy.optimize.minimize(
        obj.value_grad, theta, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "maxcor": 20, "ftol": 0.0,
                 "gtol": tol * g0 / np.sqrt(theta.shape[0])})
    gnorm = np.linalg.norm(obj.value_grad(res.x)[1])
    return res.x, res.nit, gnorm <= tol * g0 or res.nit < max_iter


def _gradient_descent(obj, theta, tol, max_iter, lipschitz):
    """Seed 003's rule θ ← θ − α ∇f(θ) with α = 1 / L."""
    f, g = obj.value_grad(theta)
    g0 = np.linalg.norm(g)
    for it in range(max_iter):
        if np.linalg.norm(g) <= tol * g0:
            return theta, it, True
        theta = theta - g / lipschitz
        f, g = obj.value_grad(theta)
    return theta, max_iter, np.linalg.norm(g) <= tol * g0


def _spectral_norm_sq(design, fit_intercept, seed=0):
    """An upper estimate of σ_max([X, 1])² by 30 power iterations on XᵀX, times 1.1 (power
    iteration approaches σ_max from below)."""
    d = design.shape[1]
    v = np.random.default_rng(seed).normal(size=d + int(fit_intercept))
    lam = 0.0
    for _ in range(30):
        v /= np.linalg.norm(v)
        u = design.matmul(v[:d, None])[:, 0] + (v[d] if fit_intercept else 0.0)
        w = design.rmatmul(u[:, None])[:, 0]
        v = np.append(w, u.sum()) if fit_intercept else w
        lam = np.linalg.norm(v)
    return 1.1 * lam


def _solve(obj, solver, tol, max_iter, curvature=0.25, lr=None):
    """Minimise obj from θ = 0 with the named solver; "gd" steps by lr, or by 1 / L where
    `curvature` bounds the loss's second derivative in z (¼ for the logistic, ½ for softmax)."""
    theta = np.zeros(obj.p * obj.K)
    if solver == "newton":
        return _newton(obj, theta, tol, max_iter)
    if solver == "tron":
        return _tron(obj, theta, tol, max_iter)
    if solver == "lbfgs":
        return _lbfgs(obj, theta, tol, max_iter)
    if lr is not None:
        return _gradient_descent(obj, theta, tol, max_iter, 1.0 / lr)
    s_max = float(np.max(obj.s)) if obj.s.size else 0.0
    lipschitz = curvature * s_max * _spectral_norm_sq(obj.X, obj.p > obj.d) + obj.l2
    return _gradient_descent(obj, theta, tol, max_iter, max(lipschitz, 1e-12))


def _auto_solver(solver, design, n_coef):
    if solver != "auto":
        return solver
    return "newton" if not design.sparse and n_coef <= _NEWTON_MAX_COEF else "tron"


def _split(theta, p, K, d):
    """Θ (p, K) flat -> coef (K, d), intercept (K,)."""
    T = theta.reshape(p, K)
    return np.ascontiguousarray(T[:d].T), (T[d].copy() if p > d else np.zeros(K))


# --------------------------------------------------------------------------- regression

class LinearRegression(RegressorMixin, BaseEstimator):
    """Least squares, optionally ridge: minimises ||y − Xw − b||² + alpha ||w||².

    Parameters
    ----------
    alpha : float >= 0, default 0
        L2 penalty on the coefficients (ridge); 0 is ordinary least squares.
    fit_intercept : bool, default True
    solver : {"auto", "lstsq", "cholesky", "gd", "sgd"}, default "auto"
        Dense X: "lstsq": np.linalg.lstsq on the centred data (ridge as the stacked system
        [X; √α I] w ≈ [y; 0]). "cholesky": a Cholesky solve of (XᵀX + α I) w = Xᵀy, the
        normal equations of seed 003. "auto" is lstsq for alpha = 0, else cholesky.
        Sparse X: the centred normal equations (Xᵀ X from kernels.cpu.csr_weighted_gram,
        minus n x̄ x̄ᵀ; a least-squares solve of that small system for alpha = 0) when
        n_features <= 2000, else SciPy's LSQR on the implicitly centred X (damp √alpha),
        never densifying X; both give the dense path's answer.
        "gd": seed 003's full-batch gradient descent on ½ Σ s_i (x_iᵀw + b − y_i)² +
        ½ α ||w||² (dense or sparse, deterministic); "sgd": mini-batch SGD on a one-layer
        fastnn.Sequential with the mse loss (dense X only).
    learning_rate_init : float > 0 or None, default None
        Step size of "gd"/"sgd". None is 1 / L: for "gd" L = max s · σ_max([X, 1])² + α (a
        power-iteration estimate, raised by 10 %), the Lipschitz constant of the gradient,
        for "sgd" L = σ_max([X, 1])² / n + α / n.
    batch_size : int, default 32
        Mini-batch size of "sgd".
    max_iter : int, default 1000
        Epochs of "gd"/"sgd".
    tol : float > 0 or None, default 1e-10
        "gd" stops once ||∇f|| <= tol ||∇f(0)|| (a ConvergenceWarning at max_iter); "sgd"
        once an epoch changes the loss by less than tol, or the gradient norm is below it.
    random_state : int, RandomState or None, default None
        Shuffling of "sgd".

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    n_iter_ : int
        Epochs run by "gd"/"sgd", LSQR iterations on wide sparse X; 1 (one solve) for the
        closed forms.
    """

    _parameter_constraints = {
        "alpha": [_NON_NEGATIVE], "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", "lstsq", "cholesky", "gd", "sgd"})],
        "learning_rate_init": [_POSITIVE, None], "batch_size": [_COUNT], "max_iter": [_COUNT],
        "tol": [_POSITIVE, None], "random_state": ["random_state"],
    }
    _SPARSE_GRAM_MAX = 2000  # sparse X: normal equations up to this many features, else LSQR

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
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and y of shape
        (n_samples,) or (n_samples, n_targets)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True,
                             accept_sparse=("csr", "csc"))
        X = check_sparse(X)
        sw = check_sample_weight(sample_weight, X.shape[0])
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        solver = self.solver
        if solver == "auto":
            solver = "lstsq" if self.alpha == 0 else "cholesky"
        self.n_iter_ = 1
        if solver == "gd":
            obj = _SquaredLoss(Design(X), Y, np.ones(X.shape[0]) if sw is None else sw,
                               self.fit_intercept, self.alpha)
            theta, self.n_iter_, ok = _solve(obj, "gd", self.tol or 0.0, self.max_iter, 1.0,
                                             self.learning_rate_init)
            if not ok:
                _warn_unconverged("LinearRegression", self.max_iter)
            coef, intercept = _split(theta, obj.p, obj.K, X.shape[1])
        elif solver == "sgd":
            _dense_only(X, solver)
            coef, intercept = self._fit_gradient(X, Y, sw)
        elif scipy.sparse.issparse(X):
            coef, intercept = self._fit_sparse(X, Y, sw)
        else:
            coef, intercept = self._fit_closed_form(X, Y, sw, solver)
        self.coef_ = coef[0] if y.ndim == 1 else coef
        self.intercept_ = float(intercept[0]) if y.ndim == 1 else intercept
        return self

    def _centering(self, X, Y, w):
        if not self.fit_intercept:
            return np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        if scipy.sparse.issparse(X):
            return Design(X).rmatmul(w[:, None])[:, 0] / w.sum(), np.average(Y, axis=0,
                                                                              weights=w)
        return np.average(X, axis=0, weights=w), np.average(Y, axis=0, weights=w)

    def _fit_closed_form(self, X, Y, sw, solver):
        w = np.ones(X.shape[0]) if sw is None else sw
        x_mean, y_mean = self._centering(X, Y, w)
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
            with _small_blas(p):
                coef = self._cholesky(A, Xc.T @ Yc)
        return coef.T, y_mean - x_mean @ coef

    @staticmethod
    def _cholesky(A, B):
        try:
            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(A), B)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "solver='cholesky': XᵀX + alpha I is singular (collinear features); use "
                "alpha > 0 or solver='lstsq'") from None

    def _fit_sparse(self, X, Y, sw):
        w = np.ones(X.shape[0]) if sw is None else sw
        x_mean, y_mean = self._centering(X, Y, w)
        design, p = Design(X), X.shape[1]
        total = w.sum() if self.fit_intercept else 0.0
        if p <= self._SPARSE_GRAM_MAX:
            # (X − 1x̄ᵀ)ᵀ W (X − 1x̄ᵀ) = XᵀWX − Σw x̄x̄ᵀ, and likewise the right-hand side
            A = design.gram(w) - total * np.outer(x_mean, x_mean)
            B = design.rmatmul(w[:, None] * Y) - total * np.outer(x_mean, y_mean)
            A[np.diag_indices(p)] += self.alpha
            with _small_blas(p):
                if self.alpha > 0:
                    coef = self._cholesky(A, B)
                else:  # the minimum-norm solution, as lstsq's on the dense path
                    coef = scipy.linalg.lstsq(A, B, cond=1e-12)[0]
            return coef.T, y_mean - x_mean @ coef
        root = np.sqrt(w)
        op = scipy.sparse.linalg.LinearOperator(
            (X.shape[0], p), dtype=np.float64,
            matvec=lambda v: root * (design.matmul(v.reshape(-1, 1))[:, 0] - x_mean @ v),
            rmatvec=lambda u: (design.rmatmul((root * u.ravel())[:, None])[:, 0]
                               - x_mean * (root @ u.ravel())))
        coef = np.empty((p, Y.shape[1]))
        self.n_iter_ = 0
        for t in range(Y.shape[1]):
            sol = scipy.sparse.linalg.lsqr(op, root * (Y[:, t] - y_mean[t]),
                                           damp=np.sqrt(self.alpha), atol=1e-14, btol=1e-14,
                                           conlim=1e12, iter_lim=max(self.max_iter, 2 * p))
            coef[:, t] = sol[0]
            self.n_iter_ = max(self.n_iter_, int(sol[2]))
        return coef.T, y_mean - x_mean @ coef

    def _fit_gradient(self, X, Y, sw):
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
            self.max_iter, self.batch_size, self.tol, seed_from(self.random_state),
            sample_weight=sw)
        return coef, intercept

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags

    def predict(self, X):
        """Predictions X @ coef_.T + intercept_."""
        X = check_predict_data(self, X, accept_sparse=True)
        coef = np.atleast_2d(self.coef_)
        out = Design(X).matmul(np.ascontiguousarray(coef.T)) + self.intercept_
        return out[:, 0] if np.ndim(self.coef_) == 1 else out


# --------------------------------------------------------------------------- classifiers

class _LinearClassifier(ClassifierMixin, BaseEstimator):
    """decision_function / predict for coef_ of shape (1, p) (binary: classes_[1] when the
    score is > 0) or (K, p) (argmax, the lowest class index on ties), dense or sparse X."""

    def decision_function(self, X):
        """Scores of shape (n_samples,) for two classes (> 0 means classes_[1]), else
        (n_samples, n_classes)."""
        X = check_predict_data(self, X, accept_sparse=True)
        z = Design(X).matmul(np.ascontiguousarray(self.coef_.T)) + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict(self, X):
        z = self.decision_function(X)
        idx = (z > 0).astype(np.int64) if z.ndim == 1 else np.argmax(z, axis=1)
        return self.classes_[idx]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class LogisticRegression(_LinearClassifier):
    """Logistic regression: binary cross-entropy on logits plus L2, minimising
    C Σ_i s_i log(1 + exp(−y_i (w·x_i + b))) + ½ ||w||² (scikit-learn's objective; gradient
    C Xᵀ(σ(Xw) − y) + w, seed 003), to its optimum (module docstring: the solvers).

    With more than two classes it fits one binary problem per class against the rest
    (one-vs-rest), and predict_proba normalises their probabilities to sum to 1.

    Parameters
    ----------
    C : float > 0, default 1.0
        Inverse regularisation strength.
    penalty : {"l2", None}, default "l2"
        None drops ½ ||w||² (on separable data the optimum is then at infinity, and the
        solver stops at max_iter with a ConvergenceWarning).
    fit_intercept : bool, default True
    solver : {"auto", "newton", "tron", "lbfgs", "gd", "sgd"}, default "auto"
        See the module docstring. "auto": Newton while the Hessian has <= 200 rows on dense
        X, else TRON.
    tol : float > 0, default 1e-8
        Stop once ||∇f|| <= tol ||∇f(0)||; "sgd": once an epoch changes the loss by less.
    max_iter : int, default 100
        Iterations (Newton/TRON/L-BFGS steps, "gd" steps, "sgd" epochs) at most.
    learning_rate_init : float > 0 or None, default None
        Step of "sgd" (None: 0.01) and "gd" (None: 1 / L, L the gradient's Lipschitz
        bound, which never diverges).
    batch_size : int, default 1
        "sgd"'s mini-batch size; 1 is seed 000's per-sample SGD.
    random_state : int, RandomState or None, default None
        The order of "sgd"'s samples; every other solver is deterministic and ignores it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    n_iter_ : int
        Iterations of the solver (the most over the one-vs-rest problems).
    """

    _parameter_constraints = {
        "C": [_POSITIVE], "penalty": [StrOptions({"l2"}), None], "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", "newton", "tron", "lbfgs", "gd", "sgd"})],
        "tol": [_POSITIVE], "max_iter": [_COUNT], "learning_rate_init": [_POSITIVE, None],
        "batch_size": [_COUNT], "random_state": ["random_state"],
    }
    _multinomial = False

    def __init__(self, C=1.0, penalty="l2", fit_intercept=True, solver="auto", tol=1e-8,
                 max_iter=100, learning_rate_init=None, batch_size=1, random_state=None):
        self.C = C
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and class labels
        y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
        sw = check_sample_weight(sample_weight, X.shape[0])
        if self.solver == "sgd":
            _dense_only(X, "sgd")
            coef, intercept = self._fit_sgd(X, y_idx, classes.size, sw)
        else:
            coef, intercept = self._fit_convex(Design(X), y_idx, classes.size, sw)
        if self._multinomial and classes.size == 2:
            # two softmax logits carry one decision: their difference is the log-odds
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        return self

    def _fit_convex(self, design, y_idx, k, sw):
        s = self.C * (np.ones(design.shape[0]) if sw is None else sw)
        l2 = 1.0 if self.penalty == "l2" else 0.0
        d, fi = design.shape[1], self.fit_intercept
        if self._multinomial:
            problems = [_SoftmaxLoss(design, y_idx, k, s, fi, l2)]
        else:
            columns = [1] if k == 2 else range(k)
            problems = [_LogisticLoss(design, np.where(y_idx == c, 1.0, -1.0), s, fi, l2)
                        for c in columns]
        coefs, intercepts, self.n_iter_, converged = [], [], 0, True
        for obj in problems:
            solver = _auto_solver(self.solver, design, obj.p * obj.K)
            theta, n_iter, ok = _solve(obj, solver, self.tol, self.max_iter,
                                       0.5 if self._multinomial else 0.25,
                                       self.learning_rate_init)
            coef, intercept = _split(theta, obj.p, obj.K, d)
            coefs.append(coef)
            intercepts.append(intercept)
            self.n_iter_, converged = max(self.n_iter_, n_iter), converged and ok
        if not converged:
            _warn_unconverged(type(self).__name__, self.max_iter)
        return np.vstack(coefs), np.concatenate(intercepts)

    def _fit_sgd(self, X, y_idx, k, sw):
        n = X.shape[0]
        if self._multinomial:
            loss, n_out, T = "softmax_cross_entropy", k, y_idx
        elif k == 2:
            loss, n_out, T = "binary_cross_entropy", 1, y_idx[:, None].astype(np.float64)
        else:
            loss, n_out, T = "binary_cross_entropy", k, np.eye(k)[y_idx]
        l2 = 1.0 / (2.0 * self.C * n) if self.penalty == "l2" else 0.0
        lr = 0.01 if self.learning_rate_init is None else self.learning_rate_init
        coef, intercept, self.n_iter_, _ = train_linear(
            X, T, loss, n_out, l2, self.fit_intercept, optim.SGD(lr), self.max_iter,
            self.batch_size, self.tol, seed_from(self.random_state), sample_weight=sw)
        return coef, intercept

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
    minimising C Σ_i s_i (−log softmax(W x_i + b)_{y_i}) + ½ ||W||², to its optimum. Its
    Hessian has (K p)² entries (K(K+1)/2 weighted Grams), so "auto" uses Newton only for
    K·p <= 200 and TRON's Hessian-vector products beyond. Parameters and attributes as
    LogisticRegression; with two classes coef_ is the difference of the two rows (the
    log-odds of classes_[1]), as scikit-learn's.
    """

    _multinomial = True


# --------------------------------------------------------------------------- perceptron

class Perceptron(_LinearClassifier):
    """Rosenblatt's perceptron with exactly seed 001's update rules, from w = 0, one sample at
    a time (kernels.cpu.perceptron_epoch, dense or CSR):

    * two classes, y in {−1, +1}: on a mistake (y (w·x + b) <= 0), w ← w + y x, b ← b + y;
    * K classes: unless y is the *unique* argmax of W x + b ("if argmax \\ {y} is empty,
      pass": a tie is a mistake), ŷ = the first argmax other than y and
      w_ŷ ← w_ŷ − x, w_y ← w_y + x (and the biases likewise).

    From W = 0 every score ties, so the first sample of every class is a mistake. It stops
    after an epoch without a mistake or at max_iter.

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
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and class labels
        y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
        n, d = X.shape
        n_out = 1 if classes.size == 2 else classes.size
        W, b = np.zeros((n_out, d)), np.zeros(n_out)
        rng = np.random.default_rng(seed_from(self.random_state))
        order = np.arange(n, dtype=np.int64)
        csr = X.tocsr() if scipy.sparse.issparse(X) else None
        self.converged_ = False
        for epoch in range(self.max_iter):
            if self.shuffle:
                order = rng.permutation(n).astype(np.int64)
            if csr is None:
                mistakes = cpu.perceptron_epoch(W, b, X, y_idx, order, self.fit_intercept)
            else:
                mistakes = cpu.perceptron_epoch_csr(W, b, csr.data, csr.indices, csr.indptr,
                                                    y_idx, order, self.fit_intercept)
            if mistakes == 0:
                self.converged_ = True
                break
        self.n_iter_ = epoch + 1
        self.classes_, self.coef_, self.intercept_ = classes, W, b
        return self


# --------------------------------------------------------------------------- SVM

class LinearSVM(_LinearClassifier):
    """Soft-margin linear SVM (seed 002), minimising C Σ_i s_i ℓ(y_i (w·x_i + b)) +
    ½ (||w||² + b²), ℓ the hinge max(0, 1 − m) or the squared hinge max(0, 1 − m)²:
    liblinear's (scikit-learn's LinearSVC's) objective, whose intercept is a constant feature
    of value intercept_scaling and so is penalised too. C convention: seed 002 writes
    ||β||² + C_seed Σ ε_i, so C_seed = 2 C; its λ ||β||² + Σ hinge has λ = 1 / (2 C).

    Solvers: "dual_cd" (default), dual coordinate descent with shrinking (Hsieh et al. 2008,
    liblinear's default), for either loss: it stops when the projected gradients' spread is
    below tol on every coordinate; "tron", trust-region Newton on the primal of the squared
    hinge (the hinge is not differentiable); "sgd", the old full-batch subgradient descent with
    momentum on a fastnn.Sequential (learning_rate_init), the only solver of
    multi_class="weston_watkins".

    Parameters
    ----------
    C : float > 0, default 1.0
    loss : {"hinge", "squared_hinge"}, default "hinge"
    multi_class : {"ovr", "weston_watkins"}, default "ovr"
        More than two classes: "ovr" solves one binary SVM per class against the rest,
        "weston_watkins" the multiclass hinge Σ_{j≠y} max(0, 1 + z_j − z_y) (solver "sgd").
    fit_intercept : bool, default True
    intercept_scaling : float > 0, default 1.0
        The constant feature's value (liblinear's).
    solver : {"auto", "dual_cd", "tron", "sgd"}, default "auto"
        "auto": "sgd" for weston_watkins; "tron" for the squared hinge (the primal, as
        scikit-learn's LinearSVC(dual="auto") picks when samples outnumber features; TRON's
        Hessian-vector products serve wide X too); else "dual_cd".
    tol : float > 0 or None, default None
        dual_cd: the projected-gradient spread (None: 1e-6); tron: ||∇f|| relative to its
        start (None: 1e-10: the squared hinge's Hessian jumps where a margin crosses 1, so
        the last steps converge only linearly); sgd: the epoch's change in loss (None: 1e-8).
    max_iter : int, default 10000
        Passes over the data (dual_cd), Newton steps (tron), epochs (sgd).
    learning_rate_init : float > 0, default 0.1
        "sgd" only.
    batch_size : int or None, default None
        "sgd" only: None is full-batch.
    random_state : int, RandomState or None, default None
        The order of dual_cd's coordinates in each pass (the optimal w is unique, so it
        changes w only within tol; None is a fixed order, so refits are identical) and
        sgd's shuffling.

    Attributes
    ----------
    classes_, coef_ ((1, n_features) or (n_classes, n_features)), intercept_,
    n_features_in_, n_iter_
    dual_coef_ : ndarray of shape (n_problems, n_samples)
        The dual variables α (dual_cd; one row per binary problem).
    support_ : ndarray of int
        The support vectors, samples with a non-zero dual variable in any binary problem
        (seed 002: "any x_i with a non-zero ε_i is a support vector"; a sample exactly on the
        margin has α > 0 with ε = 0 and counts too).
    n_support_ : ndarray of shape (n_classes,)
        The number of support vectors of each class.
    margin_ : ndarray of shape (n_problems,)
        1 / ||w|| of each binary problem (seed 002), w without the intercept.
    """

    _parameter_constraints = {
        "C": [_POSITIVE], "loss": [StrOptions({"hinge", "squared_hinge"})],
        "multi_class": [StrOptions({"ovr", "weston_watkins"})], "fit_intercept": ["boolean"],
        "intercept_scaling": [_POSITIVE],
        "solver": [StrOptions({"auto", "dual_cd", "tron", "sgd"})], "tol": [_POSITIVE, None],
        "max_iter": [_COUNT], "learning_rate_init": [_POSITIVE],
        "batch_size": [_COUNT, None], "random_state": ["random_state"],
    }

    def __init__(self, C=1.0, loss="hinge", multi_class="ovr", fit_intercept=True,
                 intercept_scaling=1.0, solver="auto", tol=None, max_iter=10000,
                 learning_rate_init=0.1, batch_size=None, random_state=None):
        self.C = C
        self.loss = loss
        self.multi_class = multi_class
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.random_state = random_state

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and class labels
        y of shape (n_samples,)."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
        sw = check_sample_weight(sample_weight, X.shape[0])
        solver = self.solver
        if solver == "auto":
            solver = ("sgd" if self.multi_class == "weston_watkins" and classes.size > 2
                      else "tron" if self.loss == "squared_hinge" else "dual_cd")
        if self.multi_class == "weston_watkins" and classes.size > 2 and solver != "sgd":
            raise ValueError(f"multi_class='weston_watkins' is solved by solver='sgd' only, "
                             f"got solver={self.solver!r}")
        if solver == "tron" and self.loss != "squared_hinge":
            raise ValueError("solver='tron' needs loss='squared_hinge' (the hinge is not "
                             "differentiable)")
        if solver == "sgd":
            _dense_only(X, "sgd")
            coef, intercept = self._fit_sgd(X, y_idx, classes.size, sw)
        else:
            coef, intercept = self._fit_ovr(X, y_idx, classes.size, sw, solver)
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        self.margin_ = 1.0 / np.maximum(np.linalg.norm(coef, axis=1), np.finfo(float).tiny)
        return self

    def _fit_ovr(self, X, y_idx, k, sw, solver):
        n, d = X.shape
        s = self.C * (np.ones(n) if sw is None else sw)
        bias = self.intercept_scaling if self.fit_intercept else 0.0
        columns = [1] if k == 2 else range(k)
        # a fixed order unless asked: refitting gives bitwise the same model
        seed = 0 if self.random_state is None else seed_from(self.random_state)
        csr = X.tocsr() if scipy.sparse.issparse(X) else None
        coefs, alphas, self.n_iter_, converged = [], [], 0, True
        for c in columns:
            y_pm = np.where(y_idx == c, 1.0, -1.0)
            if solver == "tron":
                obj = _SquaredHingeLoss(Design(X), y_pm, s, self.fit_intercept, bias)
                theta, it, ok = _tron(obj, np.zeros(obj.p), self.tol or 1e-10, self.max_iter)
                w = np.append(theta[:d], theta[d] if self.fit_intercept else 0.0)
                alpha = np.maximum(1.0 - y_pm * (obj._logits(theta)[:, 0]), 0.0) * 2 * s
            else:
                w, alpha = np.zeros(d + 1), np.zeros(n)
                if self.loss == "hinge":
                    upper, diag = s, np.zeros(n)
                else:
                    upper = np.where(s > 0, np.inf, 0.0)
                    with np.errstate(divide="ignore"):
                        diag = np.where(s > 0, 0.5 / s, np.inf)
                args = (w, alpha) + ((X,) if csr is None else
                                     (csr.data, csr.indices, csr.indptr))
                kernel = cpu.svm_dual_cd if csr is None else cpu.svm_dual_cd_csr
                it = kernel(*args, y_pm, upper, diag, bias, self.tol or 1e-6, self.max_iter,
                            seed)
                ok = it < self.max_iter
            coefs.append(w)
            alphas.append(alpha)
            self.n_iter_, converged = max(self.n_iter_, int(it)), converged and ok
        if not converged:
            _warn_unconverged("LinearSVM", self.max_iter)
        W = np.array(coefs)
        self.dual_coef_ = np.array(alphas)
        self.support_ = np.flatnonzero(np.any(self.dual_coef_ > 0, axis=0))
        self.n_support_ = np.bincount(y_idx[self.support_], minlength=k)
        return np.ascontiguousarray(W[:, :d]), W[:, d] * bias

    def _fit_sgd(self, X, y_idx, k, sw):
        n = X.shape[0]
        if k == 2:
            n_out, T = 1, np.where(y_idx == 1, 1.0, -1.0)[:, None]
        elif self.multi_class == "ovr":
            n_out, T = k, 2.0 * np.eye(k)[y_idx] - 1.0
        else:
            n_out, T = k, y_idx
        opt = optim.SGD(self.learning_rate_init, momentum=0.9)
        coef, intercept, self.n_iter_, _ = train_linear(
            X, T, "hinge", n_out, 1.0 / (2.0 * self.C * n), self.fit_intercept, opt,
            self.max_iter, self.batch_size, self.tol or 1e-8, seed_from(self.random_state),
            sample_weight=sw)
        return coef, intercept
