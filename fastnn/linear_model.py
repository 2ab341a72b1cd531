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
              gradients on Hessian-vector products, each one fused pass over X (the binary
              logistic loss, the dense softmax) or two, never a d x d matrix; liblinear
              2.2+'s diagonal preconditioner is an option (_tron's precondition,
              _Objective.precondition), off by default: on W6's rows it saved no
              Hessian-vector products at the same accuracy (their features share a scale);
    "lbfgs"   SciPy's L-BFGS-B on the same loss and gradient;
    "gd"      seed 003's full-batch gradient descent w ← w − α ∇f, α = 1 / L (L the gradient's
              Lipschitz constant bound), deterministic;
    "sgd"     seed 000's per-sample SGD from W = 0 (mini-batches with batch_size > 1), on a
              one-layer fastnn.Sequential with the mean loss plus λ ||W||², λ = 1 / (2 C n)
              (the same minimiser), dense X only.

"auto" picks Newton while its Hessian is small and cheap (K·p <= 200 coefficients, p =
features + intercept, and n (K·p)² <= 2e7 multiply-adds, on dense X), else TRON. The binary
logistic loss's gradient and Hessian-vector products are one fused pass over the rows of X
each (kernels.cpu.logistic_value_grad, weighted_hessp, dense or CSR; no CSC copy), and its
small Newton systems are built and solved in compiled code (weighted_gram, cholesky_solve).
The multinomial loss's value and gradient and its Hessian-vector products are one fused pass
over the rows of dense X each too (kernels.cpu.softmax_value_grad, softmax_hessp; sparse X
takes X @ V and Xᵀ R). On W6's digits row (K·p = 650) TRON stays the choice: its fit is ~260
fused products of ~0.25 ms, where one exact Hessian is n p² K² / 2 ≈ 3.8e8 multiply-adds
(measured on one thread: 40 ms to build as 55 weighted Grams, a Newton fit 394 ms of CPU
against TRON's 74 ms). Every solver stops once the gradient's norm is below tol times its
norm at the start (W = 0), or at max_iter with scikit-learn's ConvergenceWarning; all but
"sgd" are deterministic and ignore random_state.

Sparse X (scipy.sparse CSR or CSC, matrix or array) goes through kernels.cpu's CSR kernels
(fastnn.estimator_utils.Design) and is never densified. scikit-learn is imported here, not by
`import fastnn`.
"""
import contextlib
import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from . import distributed_linear, optim
from .estimator_utils import (Design, check_classifier_data, check_finite,
                              check_predict_data, check_sample_weight, check_sparse, fit_guard,
                              one_blas_thread, seed_from, sigmoid, softmax, solver_thread_limit,
                              solver_threads, train_linear, validate_data)
from .kernels import cpu

__all__ = ["LinearRegression", "LogisticRegression", "SoftmaxRegression", "Perceptron",
           "LinearSVM"]

_POSITIVE = Interval(Real, 0, None, closed="neither")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_COUNT = Interval(Integral, 1, None, closed="left")
_NEWTON_MAX_COEF = 200  # "auto": Newton up to this many coefficients K·p, TRON beyond
# "auto": Newton only while its Hessian (n (K p)² multiply-adds a step, BLAS-bound) costs less
# than TRON's ~4 passes over X a step: on 20,000 x 100 dense one ?syrk took 14 ms against
# 2 ms a fused pass (1 thread, shared machine), and TRON needed 27 passes in all to Newton's
# 6 Hessians; at breast cancer's 569 x 31 the Hessian is 0.6 M and Newton wins
_NEWTON_MAX_WORK = 2e7
_N_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
# the softmax's fused passes (_SoftmaxLoss): rows split into at most this many chunks, each of
# at least this many multiply-adds (N D K / chunks), so that a chunk's work outweighs handing
# it to a thread
_SOFTMAX_CHUNKS = 4
_SOFTMAX_CHUNK_WORK = 2_000_000


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

    # TRON's CG stops at a residual of min(cg_forcing, √(||g|| / ||g0||)) ||g||, or at
    # cg_enough tol ||g0|| where that is larger (_tron): 0 solves each step's system to the
    # forcing term alone, however far below the tolerance that takes the next gradient
    cg_forcing = 0.1
    cg_enough = 0.0
    precondition = False  # TRON's default (_tron): liblinear 2.2+'s diagonal preconditioner
    # True where every pass over X is a compiled kernel (numba's threads), so BLAS serves only
    # the solver's vector operations and runs them on one thread (_solve)
    compiled_products = False
    # True where TRON may first solve the problem with X rounded to float32, then finish on X
    # itself (_tron_float32_first); a distributed wrapper turns it off
    float32_phase = False
    # which X the dense passes read: None (the value and gradient X, the Hessian-vector
    # products per hessp_float32_min), "float32" (every pass the float32 copy: TRON's first
    # phase) or "float64" (every pass X: the second phase)
    x_precision = None
    # True where hessp(d) leaves the scores of d (X d, bias-extended: an (n,) vector) in
    # self.scores, and value_grad_along returns the new Hessian along a step from the step's
    # scores in the gradient's own pass: TRON then starts each CG from the previous step
    # (_steihaug_cg's warm start). A distributed wrapper turns it off
    step_scores = False
    # TRON's diagonal metric for badly scaled columns (_tron_metric), once decided
    metric_decided = False
    metric = None

    def __init__(self, design, n_out, fit_intercept, l2, bias=1.0, penalize_intercept=False):
        self.X, self.K, self.l2 = design, n_out, l2
        self.d = design.shape[1]
        self.p = self.d + int(fit_intercept)
        self.bias = bias
        self.penalty = np.full(self.p, l2)
        if fit_intercept and not penalize_intercept:
            self.penalty[-1] = 0.0
        self.pen = np.repeat(self.penalty, n_out)  # per entry of the flat Θ
        self._squared = None  # X with its entries squared (data_diag), built on first use

    def _logits(self, theta):
        T = theta.reshape(self.p, self.K)
        Z = self.X.matmul(T[:self.d])
        if self.p > self.d:
            Z += self.bias * T[self.d]
        return Z

    def _back(self, dZ):
        """Xᵀ-side of a gradient or Hessian product: [Xᵀ dZ; bias Σ dZ]."""
        G = np.empty((self.p, self.K))
        G[:self.d] = self.X.rmatmul(dZ)
        if self.p > self.d:
            G[self.d] = self.bias * dZ.sum(axis=0)
        return G.ravel()

    # The objective is a data term plus the L2 penalty ½ Θᵀ diag(pen) Θ; the penalty is added
    # here and nowhere else (the data_* methods never see it), so a wrapper that reduces the
    # data term across processes wraps data_value_grad / data_hessp / data_hessian only.

    def value_grad(self, theta):
        f, g = self.data_value_grad(theta)
        return f + 0.5 * float(theta @ (self.pen * theta)), g + self.pen * theta

    def value(self, theta):
        return self.value_grad(theta)[0]

    def first_step_scale(self, s, u):
        """t > 0 that minimises f(t s) from Θ = 0, for a direction s with scores u (TRON's
        first step, where step_scores gives them); 1 where the objective has no line search
        of its own."""
        return 1.0

    def value_grad_along(self, theta, s, u):
        """value_grad at theta, and H s there (the Hessian at theta along s, whose scores u
        the caller built from hessp's: step_scores), in one pass over X."""
        f, g, hs = self.data_value_grad_along(theta, u)
        return (f + 0.5 * float(theta @ (self.pen * theta)), g + self.pen * theta,
                hs + self.pen * s)

    def hessp(self, v):
        """H v at the point of the last value_grad."""
        return self.data_hessp(v) + self.pen * v

    def hessian(self):
        """The (pK, pK) Hessian at the point of the last value_grad."""
        H = self.data_hessian()
        H[np.diag_indices_from(H)] += self.pen
        return H

    def data_value_grad(self, theta):
        """The data term Σ_i loss(z_i) and its gradient, from the per-sample `_loss`."""
        f, dZ = self._loss(self._logits(theta))
        return f, self._back(dZ)

    def data_hessp(self, v):
        return self._back(self._curvature(self._logits(v)))

    def diag(self):
        """The Hessian's diagonal at the point of the last value_grad (TRON's preconditioner)."""
        return self.data_diag() + self.pen

    def data_diag(self):
        """The data term's Hessian diagonal, Σ_i d_kk,i x_ij² (bias² Σ_i d_kk,i for the
        intercept), from `_diag_weights`: one product with the squared X, built on first use."""
        if self._squared is None:
            if self.X.sparse:
                data, indices, indptr = self.X.rows
                self._squared = Design(scipy.sparse.csr_matrix((data * data, indices, indptr),
                                                               shape=self.X.shape))
            else:
                self._squared = Design(self.X.X * self.X.X)
        W = self._diag_weights()
        D = np.empty((self.p, self.K))
        D[:self.d] = self._squared.rmatmul(W)
        if self.p > self.d:
            D[self.d] = self.bias ** 2 * W.sum(axis=0)
        return D.ravel()

    def _diag_weights(self):
        """(n, K): the per-sample curvature d_kk of each output."""
        weights = self._weights()
        return np.stack([weights[(k, k)] for k in range(self.K)], axis=1)

    def data_hessian(self):
        """The data term's Hessian from the weighted Grams of `_weights`."""
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
        return H.reshape(p * K, p * K)


class _LogisticLoss(_Objective):
    """Σ s_i log(1 + exp(−y_i z_i)), y = ±1, s the (C-scaled) sample weights. Its gradient and
    Hessian-vector products are one fused pass over X each (kernels.cpu.logistic_value_grad,
    weighted_hessp: each row read once), which also leaves the Hessian's weights in hw."""

    # a looser CG pays here: 43 Hessian-vector products instead of 58 on W6's 20,000 x 20,000
    # CSR row (both to 1e-8 of the optimum); on the softmax (digits) it stopped short of 1e-6
    cg_forcing = 0.5
    # the last step's CG stops once the model's gradient is half the stopping bound (the
    # forcing term alone took W6's 50,000 x 50,000 CSR fit to 7e-10 against a bound of
    # 1e-8): W6's 100,000 x 100 dense fit 10 -> 7 products, the CSR fit 59 -> 55, at tol
    # 1e-8 still 6e-9 and 1.7e-8 from the optimum (2e-9 and 3e-9 before). Not for the
    # softmax: on digits (scaled, C = 1) the same rule stopped 2.5e-6 from the optimum (0.1
    # of the bound: 2.5e-7), where the gradient bound alone does not hold the coefficients
    # to 1e-6
    cg_enough = 0.5
    compiled_products = True
    # Dense X of at least this many entries: the Hessian-vector products read a float32 copy
    # of X (sums in float64; Design.float32, one per fit). They only shape TRON's steps (its
    # CG stops at a residual of 0.5 relative), while the value and gradient, which decide the
    # answer and when to stop, read X itself (after _tron_float32_first's first phase); X's
    # rounding to float32 (2^-24 relative) perturbs each product by about
    # that, far below CG's own stopping error. A dense pass is bound by memory traffic, so
    # the product reads half the bytes: 1.5x faster per product at 20,000 and 100,000 x 100
    # (one thread), for a copy half X's size. Sparse X of at least this many non-zeros: the
    # whole product in float32 (values, curvature, direction and sums), converted back: its
    # passes are bound by the gathers and scatters into two (D + 1,) vectors, not by X's bytes
    # (float32 values alone: 1.06x at 50,000 x 50,000, 0.2 %), and float32 vectors halve what
    # must stay in L2 (1.25x on W6's 50,000 x 50,000 fit: 794 -> 634 ms, the same 3.1e-9 from
    # the optimum); the float32 sums over a column's ~100 non-zeros err by ~1e-6 relative, still
    # below the CG's stopping residual.
    hessp_float32_min = 1_000_000
    # TRON's warm start (step_scores) on dense X: the products keep their scores (a store per
    # row) and each loss pass adds a second axpy per row for the Hessian along the step, read
    # from L1. W6's 100,000 x 100 fit (in-fit profile, medians of 5 fits): 16 products of 2.3
    # ms -> 10 of 2.4 ms, 7 loss passes of 4.3 -> 5.2 ms, ~7 ms a fit. Not on sparse X: there
    # the second axpy is a second scatter, and W6's 50,000 x 50,000 CSR fit took 60 products
    # warm-started against 59 cold (a NumPy prototype)
    warm_start_cg = True

    def __init__(self, design, y_pm, s, fit_intercept, l2):
        super().__init__(design, 1, fit_intercept, l2)
        self.y, self.s = y_pm, s
        self.hw = np.zeros(y_pm.shape[0])
        self._w = np.zeros(self.d + 1)  # Θ with the intercept slot the kernels expect
        self._out = np.empty(self.d + 1)
        self._b = self.bias if self.p > self.d else 0.0
        self._out32 = np.empty(self.d + 1, np.float32)
        self._hw32 = None  # the float32 curvature, per value_grad
        self.float32_phase = self.dense_float32(design)
        self.step_scores = self.warm_start_cg and not design.sparse
        self.scores = None if design.sparse else np.empty(y_pm.shape[0])
        self._hs = np.empty(self.d + 1)

    @classmethod
    def dense_float32(cls, design):
        """Whether TRON's passes over this dense design read its float32 copy (its first
        phase, and its Hessian-vector products: hessp_float32_min)."""
        return (not design.sparse and design.shape[0] * design.shape[1] >= cls.hessp_float32_min
                and design.float32_holds_x())

    def _padded(self, theta):
        self._w[:self.p] = theta
        return self._w

    def data_value_grad(self, theta):
        w = self._padded(theta)
        self._hw32 = None  # hw changes below
        if self.X.sparse:
            f = cpu.logistic_value_grad_csr(self._out, self.hw, *self._csr_rows(), w, self._b,
                                            self.y, self.s, self.X.csr_phases)
        else:
            f = cpu.logistic_value_grad(self._out, self.hw, self._value_design(), w, self._b,
                                        self.y, self.s)
        return f, self._out[:self.p].copy()

    def first_step_scale(self, s, u):
        """The minimiser of φ(t) = f(t s) from Θ = 0, by Newton's method on the step's
        scores u = Xb s (kernels.cpu.logistic_line_derivs: one pass over N values, none over
        X), from t = 1, halving t where a Newton step would leave t > 0; φ is convex.
        Newton's first step from 0 takes the curvature at z = 0, σ'(0) = ¼, the largest it
        can be, so it falls short: on W6's 100,000 x 100 dense row the minimum lies at t =
        2.3, where the gradient is 0.036 of ||g0|| (0.27 at t = 1), and the fit takes 4 TRON
        steps instead of 7 (9 products and 6 loss passes against 7 and 9). A departure from
        liblinear's TRON, which takes the step as CG gives it."""
        sps = float(s @ (self.pen * s))
        t = 1.0
        for _ in range(20):
            d1, d2 = cpu.logistic_line_derivs(u, self.y, self.s, t)
            d1, d2 = d1 + t * sps, d2 + sps
            if not d2 > 0:
                break
            step = d1 / d2
            t = t - step if t - step > 0 else 0.5 * t
            if abs(step) <= 0.05 * t:  # t to a few %: it shapes the step, not the answer
                break
        return t

    def data_value_grad_along(self, theta, u):
        w = self._padded(theta)
        f = cpu.logistic_value_grad_along(self._out, self._hs, self.hw, self._value_design(), w,
                                          self._b, self.y, self.s, u)
        return f, self._out[:self.p].copy(), self._hs[:self.p].copy()

    def _value_design(self):
        """Dense X as the value and gradient read it (x_precision)."""
        return self.X.float32() if self.x_precision == "float32" else self.X.X

    def data_hessp(self, v):
        w = self._padded(v)
        if self.X.sparse and self._csr_float32():
            return self._hessp_csr_float32(w)
        if self.X.sparse:
            self.X.csr_product(lambda phases: cpu.weighted_hessp_csr(
                self._out, *self._csr_rows(), self.hw, w, self._b, phases))
        else:
            cpu.weighted_hessp_scores(self._out, self.scores, self._hessp_design(), self.hw, w,
                                      self._b)
        return self._out[:self.p].copy()

    def _csr_float32(self):
        """Whether sparse X's Hessian-vector products read its float32 copy
        (hessp_float32_min)."""
        return self.X.rows[0].size >= self.hessp_float32_min and self.X.float32_holds_x()

    def _csr_rows(self, float32=False):
        """Sparse X's arrays for the fused passes (Design.fused_rows), with the uint16
        indices that come with the products' float32 copy from the first pass on: the copy is
        made here, before the first loss pass, where the products will read it."""
        self._csr_float32()
        return self.X.fused_rows(float32)

    def _hessp_csr_float32(self, w):
        """data_hessp on sparse X in float32 (hessp_float32_min)."""
        if self._hw32 is None:
            self._hw32 = self.hw.astype(np.float32)
        w32 = w.astype(np.float32)
        rows = self._csr_rows(float32=True)
        self.X.csr_product(lambda phases: cpu.weighted_hessp_csr(
            self._out32, *rows, self._hw32, w32, self._b, phases))
        return self._out32[:self.p].astype(np.float64)

    def _hessp_design(self):
        """Dense X as the Hessian-vector products read it (hessp_float32_min)."""
        if not self.dense_float32(self.X) or self.x_precision == "float64":
            return self.X.X
        return self.X.float32()

    def data_hessian(self):
        if self.X.sparse or self.X.shape[0] * self.p ** 2 > _NEWTON_MAX_WORK:
            return super().data_hessian()  # BLAS's ?syrk (or the sparse Gram)
        H = np.empty((self.d + 1, self.d + 1))
        cpu.weighted_gram(H, self.X.X, self.hw, self._b)
        return H[:self.p, :self.p].copy()

    def data_diag(self):
        if self.X.sparse:
            cpu.weighted_diag_csr(self._out, *self._csr_rows(), self.hw, self._b)
        else:
            cpu.weighted_diag(self._out, self.X.X, self.hw, self._b)
        return self._out[:self.p].copy()

    def _weights(self):
        return {(0, 0): self.hw}


class _SoftmaxLoss(_Objective):
    """Σ s_i (logsumexp(z_i) − z_{i, y_i}) over K logits. On dense X its value and gradient
    and its Hessian-vector products are one fused pass over the rows each
    (kernels.cpu.softmax_value_grad, softmax_hessp: each row read once, no (N, K)
    temporaries, no BLAS call): a TRON fit is mostly Hessian-vector products (~260 on
    digits), which cost ~300 µs each as NumPy's X V, the row factors and Xᵀ R. Rows are
    split into at most _SOFTMAX_CHUNKS contiguous chunks of >= _SOFTMAX_CHUNK_WORK
    multiply-adds, run on solver_threads() threads (the kernels release the GIL), whose
    outputs are added in chunk order: the chunks depend on the shapes only, so the sums do
    not depend on the threads. Sparse X takes the generic products."""

    # TRON's CG forcing (_Objective.cg_forcing): Hessian-vector products of a default fit
    # and its distance to the tol=1e-13 optimum, forcing 0.1 / 0.15 / 0.2 / 0.25 / 0.3: W6's
    # digits 259 / 241 / 228 / 221 / 253 (5e-10 / 6e-10 / 7e-9 / 2e-8 / 2e-9), 10,000 x 200
    # 196 / 188 / 184 / 184 / 184 (3e-9 .. 8e-9); 0.5 saves more (159 on digits) but ends
    # 2e-6 away
    cg_forcing = 0.2
    compiled_products = True  # dense: the fused passes; sparse: kernels.cpu's CSR products

    def __init__(self, design, labels, n_classes, s, fit_intercept, l2):
        super().__init__(design, n_classes, fit_intercept, l2)
        self.labels, self.s = labels, s
        self.P = np.empty((labels.shape[0], n_classes))
        # Θ with the intercept row the kernels expect (zero, and bias 0, without one)
        self._w = np.zeros((self.d + 1, n_classes))
        self._b = self.bias if self.p > self.d else 0.0
        n = labels.shape[0]
        chunks = 1 if design.sparse else int(min(_SOFTMAX_CHUNKS, max(
            1, n * self.d * n_classes // _SOFTMAX_CHUNK_WORK)))
        self._rows = [slice(c * n // chunks, (c + 1) * n // chunks) for c in range(chunks)]
        self._parts = np.empty((chunks, self.d + 1, n_classes))
        self._threads = min(chunks, solver_threads())
        # this fit's own helper threads (a process-wide pool would be dead in a forked
        # child); they end with the objective
        self._pool = ThreadPoolExecutor(self._threads - 1) if self._threads > 1 else None

    def _padded(self, theta):
        self._w[:self.p] = theta.reshape(self.p, self.K)
        return self._w

    def _fused(self, pass_rows):
        """pass_rows(out, rows) over each chunk of rows into its own part, the chunks spread
        over the threads (this one runs the first share); returns the sum of what it returns
        (the losses; None counts 0) and the data term's flat (p·K,) sum of the parts."""
        t = self._threads
        if len(self._rows) == 1:  # most problems: one call, no part to add
            f = pass_rows(self._parts[0], self._rows[0]) or 0.0
            return f, self._parts[0, :self.p].flatten()

        def share(first):
            return sum(pass_rows(self._parts[c], self._rows[c]) or 0.0
                       for c in range(first, len(self._rows), t))
        others = [self._pool.submit(share, first) for first in range(1, t)]
        f = share(0) + sum(job.result() for job in others)
        return f, self._parts.sum(axis=0)[:self.p].ravel()

    def data_value_grad(self, theta):
        if self.X.sparse:
            return super().data_value_grad(theta)
        X, w, b, y, s, P = self.X.X, self._padded(theta), self._b, self.labels, self.s, self.P
        return self._fused(lambda out, r: cpu.softmax_value_grad(out, P[r], X[r], w, b, y[r],
                                                                 s[r]))

    def data_hessp(self, v):
        if self.X.sparse:
            return super().data_hessp(v)
        X, w, b, s, P = self.X.X, self._padded(v), self._b, self.s, self.P
        return self._fused(lambda out, r: cpu.softmax_hessp(out, X[r], P[r], s[r], w, b))[1]

    def _loss(self, Z):
        dZ = np.empty_like(Z)
        f = cpu.softmax_loss_grad(dZ, self.P, Z, self.labels, self.s)
        return f, dZ

    def _curvature(self, U):
        R = np.empty_like(U)
        cpu.softmax_hessian_rows(R, self.P, np.ascontiguousarray(U), self.s)
        return R

    def _diag_weights(self):
        return self.s[:, None] * self.P * (1.0 - self.P)

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

def _small_blas(order):
    """One BLAS thread for a factorisation or a ?syrk of order < 1000: OpenBLAS's threaded
    ?potrf on a 130 x 130 matrix measured 150 ms on the shared 2-core machine against 1.7 ms
    on one thread (its threads wait for each other), its ?syrk of 20,000 x 100 46 ms against
    14 ms (load ~2; 334 ms against 17 ms at load 4); larger ones keep every thread."""
    if order >= 1000:
        return contextlib.nullcontext()
    return one_blas_thread()


def _newton_step(H, g):
    """−H⁻¹ g: kernels.cpu.cholesky_solve for the small systems (no LAPACK call, no thread
    pool: ~2 ms of SciPy's checks and threadpoolctl's limit per step on breast cancer, more
    than the solve), SciPy's Cholesky for larger ones, least squares when H is singular (no
    penalty, separable data)."""
    step = np.empty_like(g)
    if H.shape[0] <= _NEWTON_MAX_COEF and cpu.cholesky_solve(step, H, g):
        return -step
    with _small_blas(H.shape[0]):
        try:
            return -scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), g)
        except np.linalg.LinAlgError:
            return -scipy.linalg.lstsq(H, g)[0]


def _squares_of_x_finite(values):
    """values (a Hessian, its diagonal, a gradient's norm, margins), or ValueError naming X
    where they overflowed: a second-order solver squares X's values, and beyond ~1.3e154
    float64 cannot hold the squares (a fit with 1e200 in X returned coefficients 5e-5 off
    with NumPy's overflow warnings, or of 1e-90; Newton's ||g0|| overflowed to inf, and
    every gradient passed its test). fit_guard leaves the estimator as it was."""
    if not np.all(np.isfinite(values)):
        raise ValueError("X has values too large for this solver: it squares them, and "
                         "beyond ~1.3e154 their squares overflow float64; scale X")
    return values


def _newton(obj, theta, tol, max_iter):
    f, g = obj.value_grad(theta)
    with np.errstate(over="ignore"):
        g0 = _squares_of_x_finite(np.linalg.norm(g))
    for it in range(max_iter):
        gnorm = np.linalg.norm(g)
        if gnorm <= tol * g0:
            return theta, it, True
        with np.errstate(over="ignore", invalid="ignore"):  # _squares_of_x_finite says it
            H = obj.hessian()
        step = _newton_step(_squares_of_x_finite(H), g)
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


def _steihaug_cg(obj, g, delta, forcing, M, warm=None):
    """Preconditioned conjugate gradients on H s = −g inside ||s||_M <= delta, ||s||_M² =
    Σ M_j s_j² (liblinear 2.2+'s trpcg; M = 1 is the plain Steihaug CG of liblinear's trcg):
    stops at a preconditioned residual √(rᵀ M⁻¹ r) <= forcing √(gᵀ M⁻¹ g). Returns s, the
    residual r = −g − H s, whether s reached the region's boundary, and s's scores (X s,
    from the products' scores where obj.step_scores, else None).

    warm = (p, H p, scores of p), the previous step with the new Hessian along it
    (obj.value_grad_along): CG starts from the minimiser of the quadratic model along p (cut
    to the region), a ⋅ p with a = −gᵀp / pᵀHp, residual −g − a H p, at no product's cost.
    This departs from liblinear, whose CG starts at 0: consecutive Newton steps point much
    the same way, so the start takes the first CG step's place (W6's 100,000 x 100 dense
    logistic fit: 10 products instead of 16, the same 7 outer steps).
    Started there, s is still CG's iterate, so r and the model's decrease stay exact; TRON
    drops the warm start after a rejected step."""
    s = np.zeros_like(g)
    r = -g
    z = r / M
    cg_tol = forcing * np.sqrt(float(z @ r))
    u = None
    if warm is not None:
        p, hp, up = warm
        php = float(p @ hp)
        if php > 0:
            a = -float(g @ p) / php
            pnorm = abs(a) * np.sqrt(float(p @ (M * p)))
            if pnorm > delta:
                a *= delta / pnorm
            s, r, u = a * p, r - a * hp, a * up
            z = r / M
    if u is None and obj.step_scores:
        u = np.zeros_like(obj.scores)
    d = z.copy()
    zr = float(z @ r)
    # the step's vector work in kernels.cpu's cg_* passes (two over the (P,) vectors a step)
    no_scores = np.empty(0)
    u_step, scores = (no_scores, no_scores) if u is None else (u, obj.scores)
    for _ in range(g.shape[0] + 1):
        if np.sqrt(zr) <= cg_tol:
            break
        Hd = obj.hessp(d)
        dHd, sd, ss, dd = cpu.cg_curvature(s, d, Hd, M)
        if dHd <= 0:
            break
        alpha = zr / dHd
        if ss + 2 * alpha * sd + alpha * alpha * dd > delta * delta:
            # step to the trust region's boundary and stop
            rad = np.sqrt(sd * sd + dd * max(delta * delta - ss, 0.0))
            alpha = (delta * delta - ss) / (sd + rad) if sd >= 0 else (rad - sd) / dd
            s += alpha * d
            r -= alpha * Hd
            if u is not None:
                u += alpha * obj.scores
            return s, r, True, u
        zr_new = cpu.cg_step(s, r, d, Hd, M, alpha, u_step, scores)
        cpu.cg_direction(d, r, M, zr_new / zr)
        zr = zr_new
    return s, r, False, u


_PCG_ALPHA = 0.01  # liblinear's alpha_pcg: M = (1 − α) I + α diag(H)


# TRON's column-scale metric (_tron_metric): the gradient's hint and diag(H)'s confirmation
_SCALE_GATE = 100.0
_SCALE_RATIO = 1e3


def _metric_norm(g, M):
    """||g||_{M⁻¹} = √(gᵀ M⁻¹ g)."""
    return np.sqrt(float(g @ (g / M)))


def _tron_metric(obj, g):
    """The diagonal metric M in which TRON's default measures this problem's gradient, or
    None for the Euclidean norm (liblinear's); decided at TRON's first start on obj and kept
    (both phases of _tron_float32_first measure alike).

    liblinear's rule ||g|| <= tol ||g0|| is not invariant to the scale of X's columns: a
    column c times larger than the rest has c times their gradient and c² their curvature, so
    it dominates ||g0|| and lets the other coefficients stop up to c times further from the
    optimum. Measured (20,000 x 60 logistic, one N(0, 1) column times c, tol 1e-8, against
    Newton's optimum): c = 1e3, 18 steps against 5; c = 1e6, 25 steps and 2.0e-5 off,
    silently; one value of 1e20 in X, coefficients of 1e-35. Where M is not None, TRON
    measures ||g||_{M⁻¹} = √(gᵀ M⁻¹ g), M = diag(H(Θ0)), the norm it would measure on X with
    every column scaled to the same curvature, and preconditions its CG as liblinear 2.2+
    does (_tron's precondition): 5 steps and 1.6e-9 off at every c from 100 to 1e6, the
    right coefficients with 1e20 in X (Jacobi does not mend collinear columns; nothing
    diagonal does). M itself as CG's preconditioner (constant) took 708 products on raw
    breast cancer against liblinear's 95. This departs from liblinear, and only where the
    columns' scales differ: |g0|'s largest entry exceeds _SCALE_GATE times the 25th
    percentile of its non-zero entries (W6's rows: at most 13, so well-scaled data spends no
    pass on the question), and diag(H), one pass, confirms it: its largest entry exceeds
    _SCALE_RATIO times its 25th percentile (column scales ~30 apart). M is normalised by its
    median (a zero entry, a column without data or penalty, counts as the median)."""
    if obj.metric_decided:
        return obj.metric
    obj.metric_decided = True
    a = np.abs(g)
    nonzero = a[a > 0]
    if nonzero.size and a.max() > _SCALE_GATE * np.percentile(nonzero, 25):
        with np.errstate(over="ignore", invalid="ignore"):  # _squares_of_x_finite says it
            D = _squares_of_x_finite(obj.diag())
        positive = D[D > 0]
        if positive.size and D.max() > _SCALE_RATIO * np.percentile(positive, 25):
            med = np.median(positive)
            obj.metric = np.where(D > 0, D, med) / med
    return obj.metric


def _tron(obj, theta, tol, max_iter, precondition=None, start=None, g0=None):
    """TRON as liblinear's tron.cpp (Lin & Moré's trust-region update), with the CG forcing
    term min(obj.cg_forcing, √(||g|| / ||g0||)), which makes the outer iterations
    superlinear. precondition (None: obj.precondition) runs liblinear 2.2+'s preconditioned
    TRON (Hsia, Chiang & Lin 2018; Hsieh, Yu & Lin 2018): CG preconditioned by M = (1 − α) I
    + α diag(H), α = 0.01, recomputed at each accepted point (obj.diag: one pass over X),
    the trust region measured in the M-norm, and the region enlarged 4x after a very
    successful step that reached its boundary. precondition=None (obj.precondition False,
    the default) decides by X's columns: where their scales differ (_tron_metric), that
    preconditioned TRON with the gradient measured in diag(H(Θ0))'s metric; else liblinear's
    plain TRON. start: (f, g) at theta when the caller has them; g0: the gradient norm the
    tolerance is relative to, in that metric (default: the one at theta)."""
    auto = precondition is None and not obj.precondition
    precondition = bool(obj.precondition if precondition is None else precondition)
    eta0, eta1, eta2 = 1e-4, 0.25, 0.75
    sigma1, sigma2, sigma3 = 0.25, 0.5, 4.0
    f, g = obj.value_grad(theta) if start is None else start
    # the default on badly scaled columns: liblinear's preconditioner, the gradient measured
    # in _tron_metric's metric
    metric = _tron_metric(obj, g) if auto else None
    precondition = precondition or metric is not None
    M = np.ones_like(g)
    if precondition:
        M = (1.0 - _PCG_ALPHA) + _PCG_ALPHA * obj.diag()
    gnorm = np.linalg.norm(g) if metric is None else _metric_norm(g, metric)
    g0 = gnorm if g0 is None else g0
    with np.errstate(over="ignore"):  # inf on huge columns (|x| ~1e150): the first step caps it
        delta = np.sqrt(float(g @ (M * g)))
    it, warm = 0, None
    for _ in range(10 * max_iter):  # accepted steps count towards max_iter; rejected ones
        if it >= max_iter:           # shrink the region, at most 10x as many
            break
        if gnorm <= tol * g0:
            return theta, it, True
        forcing = min(obj.cg_forcing, np.sqrt(gnorm / g0))
        # no solve past what the tolerance asks: CG may stop once its residual, the
        # model's next gradient, is within cg_enough of the stopping bound
        forcing = max(forcing, obj.cg_enough * tol * g0 / gnorm)
        s, r, boundary, u = _steihaug_cg(obj, g, delta, forcing, M, warm)
        if it == 0 and u is not None and not theta.any():
            # the first step from Θ = 0, along CG's direction to the minimum of f (a line
            # search on the step's scores, no pass over X); s, its scores and CG's residual
            # r = −g − H s scale with it
            t = obj.first_step_scale(s, u)
            s, u, r = t * s, t * u, -g + t * (g + r)
        gs = float(g @ s)
        prered = -0.5 * (gs - float(s @ r))
        if u is not None:
            f_new, g_new, hs = obj.value_grad_along(theta + s, s, u)
        else:
            f_new, g_new = obj.value_grad(theta + s)
        actred = f - f_new
        snorm = np.sqrt(float(s @ (M * s)))
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
        elif precondition and boundary:
            delta = sigma3 * delta
        else:
            delta = max(delta, min(alpha * snorm, sigma3 * delta))
        gnorm_new = np.linalg.norm(g_new) if metric is None else _metric_norm(g_new, metric)
        if actred > eta0 * prered or (abs(actred) <= 1e-12 * abs(f) and gnorm_new < gnorm):
            theta, f, g, gnorm = theta + s, f_new, g_new, gnorm_new
            warm = (s, hs, u) if u is not None else None
            it += 1
            if precondition and gnorm > tol * g0:
                M = (1.0 - _PCG_ALPHA) + _PCG_ALPHA * obj.diag()
        else:
            obj.value_grad(theta)  # the Hessian-vector products read the accepted point
            warm = None
        if abs(actred) <= 1e-15 * abs(f) and abs(prered) <= 1e-15 * abs(f):
            break  # no change left that float64 can represent
    return theta, it, gnorm <= tol * g0


def _tron_float32_first(obj, theta, tol, max_iter):
    """TRON in two phases (obj.float32_phase). First on X rounded to float32 (every pass reads
    the float32 copy, half X's bytes, with float64 sums) to the same tolerance; then on X
    itself, every pass in float64, from that point and relative to the same ||g0||. A dense
    pass is bound by memory traffic, so the first phase's passes cost about half. The second
    usually ends at its first pass, since the two problems' optima differ by X's rounding
    (2^-24 relative); where the rounding matters (badly scaled features: 1000 + 0.01 N(0, 1)
    keeps ~1.6 digits of each feature's variation) it goes on until the tolerance holds on X
    itself, its Hessian-vector products reading X too. Should it stop short (on that example
    TRON started that close to the optimum, where f no longer resolves its steps, stalled at
    3e-7 relative, with float32 or float64 products alike), the plain solve from the start
    follows, so the answer is X's optimum whenever the one-phase TRON finds it. Iterations
    add up towards max_iter."""
    start = theta
    obj.x_precision = "float32"
    try:
        f, g = obj.value_grad(theta)
        g0 = np.linalg.norm(g)
        theta, it, _ = _tron(obj, theta, tol, max_iter, start=(f, g))
        if obj.metric is not None:  # the second phase's tolerance, in the first's metric
            g0 = _metric_norm(g, obj.metric)
        obj.x_precision = "float64"
        theta, it2, ok = _tron(obj, theta, tol, max_iter - it, g0=g0)
    finally:
        obj.x_precision = None
    it += it2
    if not ok and it < max_iter:
        theta, it2, ok = _tron(obj, start, tol, max_iter - it)
        it += it2
    return theta, it, ok


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
    `curvature` bounds the loss's second derivative in z (¼ for the logistic, ½ for softmax).

    When obj's passes over X are compiled kernels (obj.compiled_products), BLAS runs the
    solver's vector operations (dot products, norms of p·K values) on one thread: at p·K in
    the tens of thousands OpenBLAS threads them, and its workers then spin ~0.1 s after each
    one, against numba's threads running the next pass: W6's 20,000 x 20,000 CSR logistic fit
    took 706 ms on two numba threads with BLAS threaded, 116 ms with BLAS on one thread (162
    ms with everything on one thread; quiet machine)."""
    with one_blas_thread() if obj.compiled_products else contextlib.nullcontext():
        return _run_solver(obj, solver, tol, max_iter, curvature, lr)


def _run_solver(obj, solver, tol, max_iter, curvature, lr):
    theta = np.zeros(obj.p * obj.K)
    if solver == "newton":
        return _newton(obj, theta, tol, max_iter)
    if solver == "tron":
        if obj.float32_phase:
            return _tron_float32_first(obj, theta, tol, max_iter)
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
    small = n_coef <= _NEWTON_MAX_COEF and design.shape[0] * n_coef ** 2 <= _NEWTON_MAX_WORK
    return "newton" if not design.sparse and small else "tron"


def _split(theta, p, K, d):
    """Θ (p, K) flat -> coef (K, d), intercept (K,)."""
    T = theta.reshape(p, K)
    return np.ascontiguousarray(T[:d].T), (T[d].copy() if p > d else np.zeros(K))


def _ridge_cg(design, w, x_mean, total, alpha, B, rtol):
    """The centred ridge system (XᵀWX − Σw x̄x̄ᵀ + α I) C = B for sparse X by conjugate
    gradients, Jacobi-preconditioned, each product one fused pass over the CSR rows
    (kernels.cpu.weighted_hessp_csr) and never a p x p matrix; stops at a residual (the
    gradient of the quadratic) of rtol ||B[:, t]|| (its gradient at C = 0), LinearRegression's
    tol. Returns None when CG would cost more than the direct solve (the sparse
    Gram, Σ nnz_i² / 2, plus a Cholesky, p³ / 3), so the caller solves directly: a
    well-conditioned problem (W6's 50,000 x 1,000 at 0.5 %: ~15 products) takes CG, an
    ill-conditioned one the Cholesky."""
    data, indices, indptr = design.rows
    p = design.shape[1]
    per_row = np.diff(indptr).astype(np.float64)
    budget = int((0.5 * per_row @ per_row + p ** 3 / 3.0) / (2.0 * data.shape[0] + 10 * p))
    if budget < 3:
        return None
    diag = np.empty(p + 1)
    cpu.weighted_diag_csr(diag, data, indices, indptr, w, 0.0)  # Σ_i w_i x_ij², one pass
    diag = diag[:p] - total * x_mean * x_mean + alpha
    inv = 1.0 / np.maximum(diag, alpha)
    v, out = np.zeros(p + 1), np.empty(p + 1)

    def product(u):
        v[:p] = u
        design.csr_product(lambda phases: cpu.weighted_hessp_csr(out, data, indices, indptr, w,
                                                                 v, 0.0, phases))
        return out[:p] - total * x_mean * (x_mean @ u) + alpha * u

    C = np.zeros_like(B)
    for t in range(B.shape[1]):
        b = B[:, t]
        x, r = np.zeros(p), b.copy()
        z = inv * r
        d, rz = z.copy(), float(r @ z)
        stop = rtol * np.linalg.norm(b)
        for _ in range(budget):
            if np.linalg.norm(r) <= stop:
                break
            Ad = product(d)
            step = rz / float(d @ Ad)
            x += step * d
            r -= step * Ad
            z = inv * r
            rz, rz_old = float(r @ z), rz
            d = z + (rz / rz_old) * d
        else:
            if np.linalg.norm(r) > stop:
                return None
        C[:, t] = x
    return C


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
        Sparse X, n_features <= 2000: the centred normal equations, for alpha > 0 by
        Jacobi-preconditioned conjugate gradients (one fused pass over the CSR rows a
        product, to tol) while that costs less than the direct solve, else directly (Xᵀ X
        from kernels.cpu.csr_weighted_gram minus n x̄ x̄ᵀ; a least-squares solve of that small
        system for alpha = 0); wider: SciPy's LSQR on the implicitly centred X (damp
        √alpha); X is never densified, and every path gives the dense path's answer. Dense
        "cholesky" centres a block of rows at a time (no copy of X).
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
        "gd" and the sparse conjugate gradients stop once ||∇f|| <= tol ||∇f(0)|| ("gd": a
        ConvergenceWarning at max_iter); "sgd" once an epoch changes the loss by less than
        tol, or the gradient norm is below it.
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
    def fit(self, X, y, sample_weight=None, distributed=False):
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and y of shape
        (n_samples,) or (n_samples, n_targets). distributed=True (or "auto" under mpiexec):
        X, y are this MPI rank's rows of one fit over every rank (fastnn.distributed_linear):
        Newton on the normal equations summed across the ranks, for solver "auto", "lstsq"
        or "cholesky"."""
        self._validate_params()
        wrap = None
        if distributed_linear.requested(distributed):
            X, y, sw, wrap = distributed_linear.regressor_data(
                self, X, y, sample_weight, self.solver, ("auto", "lstsq", "cholesky"))
        else:
            X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True,
                                 y_numeric=True, accept_sparse=("csr", "csc"),
                                 ensure_all_finite=False)
            X = check_sparse(X)
            check_finite(X, self)
            sw = check_sample_weight(sample_weight, X.shape[0])
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        solver = self.solver
        if solver == "auto":
            solver = "lstsq" if self.alpha == 0 else "cholesky"
        self.n_iter_ = 1
        if solver == "gd" or wrap is not None:
            obj = _SquaredLoss(Design(X), Y, np.ones(X.shape[0]) if sw is None else sw,
                               self.fit_intercept, self.alpha)
            obj, solver = (obj, solver) if wrap is None else (wrap(obj), "newton")
            theta, self.n_iter_, ok = _solve(obj, solver, self.tol or 0.0, self.max_iter, 1.0,
                                             self.learning_rate_init)
            if not ok:
                _warn_unconverged("LinearRegression", self.max_iter)
            coef, intercept = _split(theta, obj.p, obj.K, X.shape[1])
        elif solver == "sgd":
            _dense_only(X, solver)
            coef, intercept = self._fit_gradient(X, Y, sw)
        else:
            with solver_thread_limit():
                coef, intercept = (self._fit_sparse(X, Y, sw) if scipy.sparse.issparse(X)
                                   else self._fit_closed_form(X, Y, sw, solver))
        self.coef_ = coef[0] if y.ndim == 1 else coef
        self.intercept_ = float(intercept[0]) if y.ndim == 1 else intercept
        return self

    def _centering(self, X, Y, w):
        if not self.fit_intercept:
            return np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        if scipy.sparse.issparse(X):  # Xᵀ w by SciPy's transposed product: no CSC copy
            return np.asarray(X.T @ w).ravel() / w.sum(), np.average(Y, axis=0, weights=w)
        # w @ X is one gemv; np.average(X, weights=w) would allocate an n x p product first
        return (w @ X) / w.sum(), (w @ Y) / w.sum()

    # the Cholesky path centres _BLOCK_ROWS rows at a time into one buffer per thread (1.6 MB
    # at 100 features: the ?syrk then reads them from cache, and no block faults in fresh
    # pages; 16,384-row blocks, a new array each, took 57 ms against 35 ms at 100,000 x 100
    # on two threads), and splits the rows over the cores from _PART_ROWS rows a part
    _BLOCK_ROWS = 2048
    _PART_ROWS = 16384

    def _fit_closed_form(self, X, Y, sw, solver):
        w = np.ones(X.shape[0]) if sw is None else sw
        p = X.shape[1]
        # the centring's gemv on one BLAS thread where the normal equations run on one:
        # threaded, OpenBLAS's workers spin ~0.1 s after it, against the two threads of the
        # normal equations (W6's 100,000 x 100 ridge fit: 43 -> 30 ms)
        with _small_blas(p) if solver != "lstsq" else contextlib.nullcontext():
            x_mean, y_mean = self._centering(X, Y, w)
        if solver == "lstsq":
            # weighted least squares is ordinary least squares on rows scaled by √w
            root = np.sqrt(w)[:, None]
            Xc, Yc = (X - x_mean) * root, (Y - y_mean) * root
            if self.alpha > 0:
                Xc = np.vstack([Xc, np.sqrt(self.alpha) * np.eye(p)])
                Yc = np.vstack([Yc, np.zeros((p, Yc.shape[1]))])
            coef = np.linalg.lstsq(Xc, Yc, rcond=None)[0]
            return coef.T, y_mean - x_mean @ coef
        # the normal equations of the centred, √w-scaled rows, a block of rows at a time:
        # never a copy of X (which cost as much as the ?syrk itself at 50,000 x 100), and the
        # centring is exact (not XᵀX − n x̄x̄ᵀ, which cancels digits when |x̄| >> spread)
        def normal_equations(lo, hi):
            A, B = np.zeros((p, p)), np.zeros((p, Y.shape[1]))
            buf = np.empty((min(self._BLOCK_ROWS, hi - lo), p))
            for start in range(lo, hi, self._BLOCK_ROWS):
                rows = slice(start, min(start + self._BLOCK_ROWS, hi))
                Xb = buf[:rows.stop - start]
                np.subtract(X[rows], x_mean, out=Xb)
                Yb = Y[rows] - y_mean
                if sw is not None:
                    root = np.sqrt(w[rows])[:, None]
                    Xb *= root
                    Yb *= root
                A += Xb.T @ Xb  # NumPy sees Aᵀ A of one buffer: ?syrk
                B += Xb.T @ Yb
            return A, B

        # both cores as two threads over halves of the rows, each with a one-thread BLAS
        # (NumPy releases the GIL): OpenBLAS's own threads on a 100-wide ?syrk wait for each
        # other, and on a busy machine for a descheduled peer (_small_blas). The parts are
        # fixed by the cores, the threads that run them by the load (solver_threads), so the
        # sum and its rounding do not depend on the load
        n = X.shape[0]
        parts = min(_N_CORES, max(1, n // self._PART_ROWS))
        bounds = [(k * n // parts, (k + 1) * n // parts) for k in range(parts)]
        with _small_blas(p):
            if parts == 1:
                A, B = normal_equations(0, n)
            else:
                with ThreadPoolExecutor(min(parts, solver_threads())) as pool:
                    sums = list(pool.map(lambda b: normal_equations(*b), bounds))
                A, B = sum(a for a, _ in sums), sum(b for _, b in sums)
            A[np.diag_indices(p)] += self.alpha
            coef = self._cholesky(A, B)
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
        """Sparse X: every pass over X is a compiled kernel (kernels.cpu's CSR products), so
        BLAS serves only vector operations and the small Gram solve, on one thread: threaded,
        its spinning workers stalled numba's passes (W6's 200,000 x 2,000 CSR ridge fit 109
        ms with BLAS threaded, 67.5 ms on one thread; quiet machine)."""
        with one_blas_thread():
            return self._solve_sparse(X, Y, sw)

    def _solve_sparse(self, X, Y, sw):
        w = np.ones(X.shape[0]) if sw is None else sw
        design, p = Design(X), X.shape[1]
        total = w.sum() if self.fit_intercept else 0.0
        if p <= self._SPARSE_GRAM_MAX:
            # Xᵀ [w, W Y] in one pass (SciPy's transposed product: no CSC copy) gives x̄ and
            # the right-hand side; (X − 1x̄ᵀ)ᵀ W (X − 1x̄ᵀ) = XᵀWX − Σw x̄x̄ᵀ, and likewise B
            XtWY = np.asarray(X.T @ np.column_stack([w, w[:, None] * Y]))
            x_mean, y_mean = self._centering(X, Y, w) if not self.fit_intercept else (
                XtWY[:, 0] / w.sum(), (w @ Y) / w.sum())
            B = XtWY[:, 1:] - total * np.outer(x_mean, y_mean)
            if self.alpha > 0:
                coef = _ridge_cg(design, w, x_mean, total, self.alpha, B, self.tol or 1e-10)
                if coef is not None:
                    return coef.T, y_mean - x_mean @ coef
            A = design.gram(w) - total * np.outer(x_mean, x_mean)
            A[np.diag_indices(p)] += self.alpha
            with _small_blas(p):
                if self.alpha > 0:
                    coef = self._cholesky(A, B)
                else:  # the minimum-norm solution, as lstsq's on the dense path
                    coef = scipy.linalg.lstsq(A, B, cond=1e-12)[0]
            return coef.T, y_mean - x_mean @ coef
        x_mean, y_mean = self._centering(X, Y, w)
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
        See the module docstring. "auto": Newton while the Hessian has <= 200 rows and
        n_samples x rows² <= 2e7 on dense X, else TRON. TRON on a binary (or one-vs-rest)
        problem with dense X of >= 1e6 entries first solves with X rounded to float32, then
        finishes on X in float64 (_tron_float32_first: the same optimum, ~half the memory
        traffic); its Hessian-vector products read a float32 copy of X (half X's size).
    tol : float > 0, default 1e-8
        Stop once ||∇f|| <= tol ||∇f(0)|| (TRON on badly scaled columns: both norms in
        diag(H(0))'s metric, _tron_metric); "sgd": once an epoch changes the loss by less.
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
    def fit(self, X, y, sample_weight=None, distributed=False):
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and class labels
        y of shape (n_samples,). distributed=True (or "auto" under mpiexec): X, y are this
        MPI rank's rows of one fit over every rank (fastnn.distributed_linear; solvers auto,
        newton, tron, lbfgs)."""
        self._validate_params()
        wrap = None
        if distributed_linear.requested(distributed):
            X, classes, y_idx, sw, wrap = distributed_linear.classifier_data(
                self, X, y, sample_weight, self.solver)
        else:
            X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True,
                                                      ensure_all_finite=self.solver == "sgd")
            sw = check_sample_weight(sample_weight, X.shape[0])
        if self.solver == "sgd":
            _dense_only(X, "sgd")
            coef, intercept = self._fit_sgd(X, y_idx, classes.size, sw)
        else:
            design = Design(X)
            with solver_thread_limit():  # the float32 copy's threads too
                if wrap is None:  # X's NaN/inf check (in the copy's own pass where TRON reads one)
                    design.check_finite(self, float32_copy=self._reads_float32(design))
                coef, intercept = self._fit_convex(design, y_idx, classes.size, sw, wrap)
        if self._multinomial and classes.size == 2:
            # two softmax logits carry one decision: their difference is the log-odds
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        return self

    def _reads_float32(self, design):
        """Whether this fit's solver reads dense X's float32 copy (Design.float32): the binary
        logistic loss's TRON on at least _LogisticLoss.hessp_float32_min entries."""
        n_coef = design.shape[1] + int(self.fit_intercept)
        return (not self._multinomial and _auto_solver(self.solver, design, n_coef) == "tron"
                and _LogisticLoss.dense_float32(design))

    def _fit_convex(self, design, y_idx, k, sw, wrap=None):
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
            if wrap is not None:  # distributed: the data term reduced, rank 0's solver
                obj, solver = wrap(obj), distributed_linear.rank0s(solver)
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
    Hessian has (K p)² entries (K(K+1)/2 weighted Grams), so "auto" uses Newton only on
    dense X with K·p <= 200 and n_samples (K·p)² <= 2e7 (p = n_features + 1 with an
    intercept), and TRON's Hessian-vector products otherwise: on dense X each product, and
    each value and gradient, is one compiled pass over the rows of X
    (kernels.cpu.softmax_hessp, softmax_value_grad). Parameters and attributes as
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

# The hinge's solver under solver="auto": the interior point where its steps are cheap
# ((D + 1)² per sample, a weighted Gram) and samples outnumber features, where dual
# coordinate descent crawls; else coordinate descent (wide or very sparse X)
_IPM_MAX_COEF = 1000
# samples per coefficient from which coordinate descent's degenerate free set costs more
# than the interior point (2,000 x 900 CSR at 5 %: coordinate descent converged in 121 ms,
# the interior point took 291; 5,000 x 200: 36 ms to the optimum against 63 ms unconverged)
_IPM_MIN_ROWS = 10
_IPM_MAX_GRAM = 2e9  # multiply-adds of one Gram: N (D + 1)² dense, Σ nnz_i² on CSR


def _hinge_solver(X):
    n, d = X.shape
    if d + 1 > _IPM_MAX_COEF or n < _IPM_MIN_ROWS * (d + 1):
        return "dual_cd"
    if scipy.sparse.issparse(X):
        nnz = (np.diff(X.indptr) if X.format == "csr"  # check_sparse: CSR or CSC
               else np.bincount(X.indices, minlength=n)).astype(np.float64)
        cost = float(nnz @ nnz) + n * (d + 1)
    else:
        cost = n * (d + 1) ** 2
    return "interior_point" if cost <= _IPM_MAX_GRAM else "dual_cd"


def _svm_margins(design, y_pm, w, bias):
    """y_i (w[:D]·x_i + bias w[D]): the margins (N,) of the SVM's virtual rows a_i."""
    return y_pm * (design.matmul(w[:-1, None])[:, 0] + bias * w[-1])


def _svm_w(design, y_pm, alpha, bias):
    """Aᵀ α = Σ_i α_i a_i, a_i = y_i [x_i, bias]: the primal w (D + 1,) of dual variables α
    (or the transpose product of any (N,) vector)."""
    ya = y_pm * alpha
    return np.append(design.rmatmul(ya[:, None])[:, 0], bias * ya.sum())


def _svm_kkt_violation(margins, alpha, upper):
    """The hinge SVM's dual optimality, max_i |PG_i|, PG the projected gradient of G_i =
    margin_i − 1 (min(G, 0) where α_i = 0, max(G, 0) where α_i is at its bound, else G):
    zero exactly at the optimum. Not liblinear's spread max PG − min PG, which its
    coordinate descent stops on: w = 0, α = 0 has every PG = −1 and a spread of 0 (the
    interior point's first margin-set test returned it for iris's separable class)."""
    G = margins - 1.0
    pg = np.where(alpha <= 0.0, np.minimum(G, 0.0),
                  np.where(alpha >= upper, np.maximum(G, 0.0), G))
    return float(np.abs(pg).max()) if pg.size else 0.0


def _hinge_exact(design, y_pm, upper, bias, w, tol):
    """The hinge SVM's exact solution from an approximate w, or None: the samples whose
    margin is within thr of 1 form the margin set S (generically at most D + 1 of them),
    those below it the bound set B (α = upper); then w = Σ_B upper_i a_i + Σ_S β_i a_i
    with a_i·w = 1 on S, a (|S|, |S|) system. Accepted for the first thr (1e-8 .. 1e-3)
    whose β lies in its box and whose (w, α) meets the dual's conditions (max |PG| <= tol):
    the optimum then holds to rounding, which no coordinate descent reaches on n >> D."""
    m = _svm_margins(design, y_pm, w, bias)
    n, d = design.shape
    tried = None
    for thr in (1e-8, 1e-6, 1e-4, 1e-3):
        S = np.flatnonzero(np.abs(m - 1.0) <= thr)
        B = np.flatnonzero(m < 1.0 - thr)
        if S.size > d + 1:  # generically at most D + 1; beyond, leave it to the steps
            break
        if tried is not None and np.array_equal(S, tried):
            continue  # the same partition as the last threshold's
        tried = S
        alpha = np.zeros(n)
        alpha[B] = upper[B]
        c = _svm_w(design, y_pm, alpha, bias)
        if S.size:
            AS = y_pm[S, None] * np.hstack([_rows_dense(design, S), np.full((S.size, 1), bias)])
            try:  # an ill-conditioned system is fine: the test below judges the result
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
                    beta = scipy.linalg.solve(AS @ AS.T, 1.0 - AS @ c, assume_a="pos")
            except np.linalg.LinAlgError:
                continue
            slack = 1e-9 * upper[S]
            if np.any(beta < -slack) or np.any(beta > upper[S] + slack):
                continue
            alpha[S] = np.clip(beta, 0.0, upper[S])
            c = c + AS.T @ beta
        if _svm_kkt_violation(_svm_margins(design, y_pm, c, bias), alpha, upper) <= tol:
            return c, alpha
    return None


def _design_rows(design, rows):
    """Rows of the design's X: a dense array, or CSR."""
    if design.sparse:
        return scipy.sparse.csr_matrix(design.rows, shape=design.shape)[rows]
    return design.X[rows]


def _rows_dense(design, rows):
    """Rows of X as a dense (len(rows), D) array (the margin set: at most D + 1)."""
    x = _design_rows(design, rows)
    return x.toarray() if design.sparse else x


def _hinge_interior_point(design, y_pm, upper, bias, tol, max_iter):
    """The hinge SVM (liblinear's l2r_l1_svc) by its dual, min ½ αᵀ Q α − Σ α over 0 <= α <=
    upper, Q = A Aᵀ, a_i = y_i [x_i, bias], with Mehrotra's predictor-corrector
    interior-point method (Gertz & Wright 2003; Ferris & Munson 2003 for SVMs): each step
    solves (Q + Σ) Δα = r, Σ diagonal, through Sherman-Morrison-Woodbury as one (D + 1)²
    system I + Aᵀ Σ⁻¹ A (one weighted Gram of X, Design.gram), so a step costs N (D + 1)²
    and the method suits N >> D, where dual coordinate descent crawls (its free set is far
    larger than the D + 1 samples the optimum keeps on the margin: W6's 20,000 x 100, C = 1,
    10,000 passes left it 2.0e-3 off, with a ConvergenceWarning). From μ < 1e-6 each step
    tries the exact solution from the margin set (_hinge_exact) and stops there: 20,000 x
    100 in ~20 steps, the optimum to rounding. Returns (w (D + 1,), α (N,), steps,
    converged); samples of weight 0 keep α = 0 and stay out."""
    rows = np.flatnonzero(upper > 0)
    n_all, d = design.shape
    if rows.size < n_all:  # a box [0, 0] never moves: solve on the others
        sub = Design(_design_rows(design, rows))
        w, a, it, ok = _hinge_interior_point(sub, y_pm[rows], upper[rows], bias, tol,
                                             max_iter)
        alpha = np.zeros(n_all)
        alpha[rows] = a
        return w, alpha, it, ok
    # its factorisations, of order D + 1 and |S| <= D + 1, on one BLAS thread below 1,000
    # (_small_blas; OpenBLAS's threads waited on each other here)
    with _small_blas(d + 1):
        return _hinge_ipm_steps(design, y_pm, upper, bias, tol, max_iter)


def _hinge_ipm_steps(design, y_pm, upper, bias, tol, max_iter):
    """_hinge_interior_point's steps, every sample's box non-empty."""
    n, d = design.shape
    p = d + 1
    u = upper
    alpha, z, v = 0.5 * u, np.ones(n), np.ones(n)

    it = 0
    for it in range(1, max_iter + 1):
        w = _svm_w(design, y_pm, alpha, bias)
        with np.errstate(over="ignore", invalid="ignore"):
            margins = _squares_of_x_finite(_svm_margins(design, y_pm, w, bias))
        rd = margins - 1.0 - z + v  # the dual's gradient Q α − 1, less z, plus v
        s2 = u - alpha
        mu = (z @ alpha + v @ s2) / (2 * n)
        if mu < 1e-6 * u.mean():
            exact = _hinge_exact(design, y_pm, u, bias, w, tol)
            if exact is not None:
                return exact[0], exact[1], it, True
        if mu < 1e-15 * u.mean():
            break
        omega = 1.0 / (z / alpha + v / s2)  # Σ⁻¹
        M = np.empty((p, p))
        with np.errstate(over="ignore", invalid="ignore"):  # _squares_of_x_finite says it
            M[:d, :d] = design.gram(omega)
            col = bias * design.rmatmul(omega[:, None])[:, 0]
            M[:d, d], M[d, :d], M[d, d] = col, col, bias * bias * omega.sum()
        M[np.diag_indices(p)] += 1.0
        _squares_of_x_finite(M)
        # scaled to a unit diagonal first: raw features (breast cancer's areas, ~1e3) put
        # ~1e12 beside the identity, where Cholesky failed unscaled
        scale = 1.0 / np.sqrt(np.diag(M))
        scaled = M * scale[:, None] * scale[None, :]
        try:
            factor = scipy.linalg.cho_factor(scaled)
            inverse = functools.partial(scipy.linalg.cho_solve, factor)
        except np.linalg.LinAlgError:
            # rounding left it indefinite (collinear raw features: raw breast cancer):
            # its eigenvalues, floored where M >= I puts them, min(scale)²
            lam, vec = np.linalg.eigh(scaled)
            lam = np.maximum(lam, scale.min() ** 2)
            inverse = functools.partial(lambda b, lam, vec: vec @ ((vec.T @ b) / lam),
                                        lam=lam, vec=vec)

        def solve(r):  # (Q + Σ)⁻¹ r = Σ⁻¹ r − Σ⁻¹ A (I + Aᵀ Σ⁻¹ A)⁻¹ Aᵀ Σ⁻¹ r
            t = omega * r
            k = scale * inverse(scale * _svm_w(design, y_pm, t, bias))
            return t - omega * _svm_margins(design, y_pm, k, bias)

        def directions(target, cz, cv):
            da = solve(-rd + (target - cz) / alpha - z - (target - cv) / s2 + v)
            return (da, (target - z * alpha - cz - z * da) / alpha,
                    (target - v * s2 - cv + v * da) / s2)

        def longest(x, dx):
            neg = dx < 0
            return min(1.0, float(np.min(-x[neg] / dx[neg]))) if neg.any() else 1.0

        da, dz, dv = directions(0.0, 0.0, 0.0)  # the affine-scaling predictor
        ap = min(longest(alpha, da), longest(s2, -da))
        ad = min(longest(z, dz), longest(v, dv))
        mu_aff = ((z + ad * dz) @ (alpha + ap * da) + (v + ad * dv) @ (s2 - ap * da)) / (2 * n)
        da, dz, dv = directions((mu_aff / mu) ** 3 * mu, dz * da, -dv * da)  # the corrector
        step = 0.99 * min(longest(alpha, da), longest(s2, -da), longest(z, dz), longest(v, dv))
        alpha, z, v = alpha + step * da, z + step * dz, v + step * dv
        if step < 1e-12:  # stalled: the caller's coordinate descent finishes from here
            break
    alpha = np.clip(alpha, 0.0, u)
    w = _svm_w(design, y_pm, alpha, bias)
    margins = _svm_margins(design, y_pm, w, bias)
    return w, alpha, it, _svm_kkt_violation(margins, alpha, u) <= tol


class LinearSVM(_LinearClassifier):
    """Soft-margin linear SVM (seed 002), minimising C Σ_i s_i ℓ(y_i (w·x_i + b)) +
    ½ (||w||² + b²), ℓ the hinge max(0, 1 − m) or the squared hinge max(0, 1 − m)²:
    liblinear's (scikit-learn's LinearSVC's) objective, whose intercept is a constant feature
    of value intercept_scaling and so is penalised too. C convention: seed 002 writes
    ||β||² + C_seed Σ ε_i, so C_seed = 2 C; its λ ||β||² + Σ hinge has λ = 1 / (2 C).

    Solvers: "dual_cd", dual coordinate descent with shrinking (Hsieh et al. 2008,
    liblinear's default), for either loss: it stops when the projected gradients' spread is
    below tol on every coordinate; "interior_point" (the hinge, one-vs-rest), Mehrotra's
    predictor-corrector on the same dual, each step one weighted Gram of X, then the exact
    solution from the margin set (_hinge_interior_point): where samples outnumber features
    coordinate descent crawls (W6's 20,000 x 100: 10,000 passes, 2e-3 off the optimum, a
    ConvergenceWarning; scikit-learn's LinearSVC(loss="hinge") 1.3e-2 off in 844 ms) and the
    interior point reaches the optimum to rounding in ~20 steps (196 ms); "tron",
    trust-region Newton on the primal of the squared hinge (the hinge is not
    differentiable); "sgd", the old full-batch subgradient descent with
    momentum on a fastnn.Sequential (learning_rate_init), which approaches the optimum
    without reaching it. multi_class="weston_watkins" takes "dual_cd" (its dual by coordinate
    descent, kernels.cpu.svm_ww_dual_cd: one box [0, C s_i] per pair (i, j ≠ y_i), the same
    stopping test) or "sgd".

    Parameters
    ----------
    C : float > 0, default 1.0
    loss : {"hinge", "squared_hinge"}, default "hinge"
    multi_class : {"ovr", "weston_watkins"}, default "ovr"
        More than two classes: "ovr" solves one binary SVM per class against the rest,
        "weston_watkins" one problem over all classes, the multiclass hinge
        Σ_{j≠y} max(0, 1 + z_j − z_y) (or its square) per sample (solver "dual_cd" or "sgd").
    fit_intercept : bool, default True
    intercept_scaling : float > 0, default 1.0
        The constant feature's value (liblinear's).
    solver : {"auto", "dual_cd", "interior_point", "tron", "sgd"}, default "auto"
        "auto": "dual_cd" for weston_watkins; "tron" for the squared hinge (the primal, as
        scikit-learn's LinearSVC(dual="auto") picks when samples outnumber features; TRON's
        Hessian-vector products serve wide X too); for the hinge "interior_point" where
        samples number at least 10 times the coefficients, these at most 1,000, and a Gram of
        X costs at most 2e9 multiply-adds (N (D + 1)², or Σ nnz_i² on sparse X), else
        "dual_cd". Where the interior point does not find the exact solution (its steps
        lose their accuracy on raw breast cancer's collinear features, and on raw digits at
        C >= 100), coordinate descent finishes from its α (and warns, as it alone would).
    tol : float > 0 or None, default None
        dual_cd: the projected gradient's spread, liblinear's (None: 1e-6); interior_point:
        its largest magnitude (None: 1e-6); tron: ||∇f|| relative to its start (None:
        1e-10: the squared hinge's Hessian jumps where a margin crosses 1, so the last steps
        converge only linearly); sgd: the epoch's change in loss (None: 1e-8).
    max_iter : int, default 10000
        Passes over the data (dual_cd), interior-point steps (interior_point, plus the
        passes of a coordinate descent that finishes), Newton steps (tron), epochs (sgd).
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
        The dual variables α (dual_cd; one row per binary problem; weston_watkins: row k holds
        α_ik of the pairs (i, k), zero where k is sample i's class).
    support_ : ndarray of int
        The support vectors, samples with a non-zero dual variable in any binary problem (or pair)
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
        "solver": [StrOptions({"auto", "dual_cd", "interior_point", "tron", "sgd"})],
        "tol": [_POSITIVE, None],
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
    def fit(self, X, y, sample_weight=None, distributed=False):
        """Fit on X of shape (n_samples, n_features) (dense or scipy.sparse) and class labels
        y of shape (n_samples,). distributed=True (or "auto" under mpiexec): X, y are this
        MPI rank's rows of one fit over every rank (fastnn.distributed_linear), by TRON on
        the squared hinge's primal; dual_coef_ and support_ then describe this rank's rows."""
        self._validate_params()
        solver, wrap = self.solver, None
        if distributed_linear.requested(distributed):
            if solver == "auto" and self.loss == "squared_hinge":
                solver = "tron"
            X, classes, y_idx, sw, wrap = distributed_linear.classifier_data(
                self, X, y, sample_weight, solver, ("tron",))
        else:
            X, classes, y_idx = check_classifier_data(self, X, y, accept_sparse=True)
            sw = check_sample_weight(sample_weight, X.shape[0])
        weston_watkins = self.multi_class == "weston_watkins" and classes.size > 2
        if solver == "auto":
            solver = ("dual_cd" if weston_watkins
                      else "tron" if self.loss == "squared_hinge" else _hinge_solver(X))
        if solver == "interior_point" and (weston_watkins or self.loss != "hinge"):
            raise ValueError("solver='interior_point' solves the hinge loss one-vs-rest, got "
                             f"loss={self.loss!r}, multi_class={self.multi_class!r}")
        if weston_watkins and solver == "tron":
            raise ValueError("multi_class='weston_watkins' is solved by solver='dual_cd' or "
                             "'sgd', got solver='tron'")
        if solver == "tron" and self.loss != "squared_hinge":
            raise ValueError("solver='tron' needs loss='squared_hinge' (the hinge is not "
                             "differentiable)")
        if solver == "sgd":
            _dense_only(X, "sgd")
            coef, intercept = self._fit_sgd(X, y_idx, classes.size, sw)
        elif weston_watkins:
            coef, intercept = self._fit_weston_watkins(X, y_idx, classes.size, sw)
        else:
            with solver_thread_limit():
                coef, intercept = self._fit_ovr(X, y_idx, classes.size, sw, solver, wrap)
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        self.margin_ = 1.0 / np.maximum(np.linalg.norm(coef, axis=1), np.finfo(float).tiny)
        return self

    def _fit_ovr(self, X, y_idx, k, sw, solver, wrap=None):
        n, d = X.shape
        s = self.C * (np.ones(n) if sw is None else sw)
        bias = self.intercept_scaling if self.fit_intercept else 0.0
        columns = [1] if k == 2 else range(k)
        # a fixed order unless asked: refitting gives bitwise the same model
        seed = 0 if self.random_state is None else seed_from(self.random_state)
        csr = X.tocsr() if scipy.sparse.issparse(X) else None
        design = None if solver != "interior_point" else Design(X if csr is None else csr)
        coefs, alphas, self.n_iter_, converged = [], [], 0, True
        for c in columns:
            y_pm = np.where(y_idx == c, 1.0, -1.0)
            if solver == "tron":
                obj = _SquaredHingeLoss(Design(X), y_pm, s, self.fit_intercept, bias)
                obj = obj if wrap is None else wrap(obj)  # distributed: reduced across ranks
                theta, it, ok = _tron(obj, np.zeros(obj.p), self.tol or 1e-10, self.max_iter)
                w = np.append(theta[:d], theta[d] if self.fit_intercept else 0.0)
                alpha = np.maximum(1.0 - y_pm * (obj._logits(theta)[:, 0]), 0.0) * 2 * s
            else:
                w, alpha = np.zeros(d + 1), np.zeros(n)
                upper, diag = self._dual_box(s)
                it, ok = 0, False
                if solver == "interior_point":
                    w, alpha, it, ok = _hinge_interior_point(design, y_pm, upper, bias,
                                                             self.tol or 1e-6, self.max_iter)
                if not ok:  # coordinate descent, or its finish from the interior point's α
                    args = (w, alpha) + ((X,) if csr is None else
                                         (csr.data, csr.indices, csr.indptr))
                    kernel = cpu.svm_dual_cd if csr is None else cpu.svm_dual_cd_csr
                    passes = kernel(*args, y_pm, upper, diag, bias, self.tol or 1e-6,
                                    self.max_iter, seed)
                    it, ok = it + passes, passes < self.max_iter
            coefs.append(w)
            alphas.append(alpha)
            self.n_iter_, converged = max(self.n_iter_, int(it)), converged and ok
        if not converged:
            _warn_unconverged("LinearSVM", self.max_iter)
        W = np.array(coefs)
        self._set_support(np.array(alphas), y_idx, k)
        return np.ascontiguousarray(W[:, :d]), W[:, d] * bias

    def _dual_box(self, s):
        """(upper, diag) of each sample's dual variables: the hinge's box [0, C s_i]; the
        squared hinge's [0, inf) with diag 1 / (2 C s_i) (a zero weight: the box [0, 0])."""
        n = s.shape[0]
        if self.loss == "hinge":
            return s, np.zeros(n)
        with np.errstate(divide="ignore"):
            return np.where(s > 0, np.inf, 0.0), np.where(s > 0, 0.5 / s, np.inf)

    def _set_support(self, dual_coef, y_idx, k):
        self.dual_coef_ = dual_coef
        self.support_ = np.flatnonzero(np.any(dual_coef > 0, axis=0))
        self.n_support_ = np.bincount(y_idx[self.support_], minlength=k)

    def _fit_weston_watkins(self, X, y_idx, k, sw):
        """The Weston-Watkins SVM by dual coordinate descent (kernels.cpu.svm_ww_dual_cd)."""
        n, d = X.shape
        upper, diag = self._dual_box(self.C * (np.ones(n) if sw is None else sw))
        bias = self.intercept_scaling if self.fit_intercept else 0.0
        seed = 0 if self.random_state is None else seed_from(self.random_state)
        W, alpha = np.zeros((k, d + 1)), np.zeros((n, k))
        labels = y_idx.astype(np.int64)
        if scipy.sparse.issparse(X):
            csr = X.tocsr()
            it = cpu.svm_ww_dual_cd_csr(W, alpha, csr.data, csr.indices, csr.indptr, labels,
                                        upper, diag, bias, self.tol or 1e-6, self.max_iter,
                                        seed)
        else:
            it = cpu.svm_ww_dual_cd(W, alpha, X, labels, upper, diag, bias, self.tol or 1e-6,
                                    self.max_iter, seed)
        self.n_iter_ = int(it)
        if it >= self.max_iter:
            _warn_unconverged("LinearSVM", self.max_iter)
        self._set_support(np.ascontiguousarray(alpha.T), y_idx, k)
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
