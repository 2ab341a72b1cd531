"""Kernel support vector machines of seed 002 as a scikit-learn estimator, solved like libsvm.

    SVC   the soft-margin SVM  min ½||β||² + C Σ ε_i  s.t.  y_i ⟨φ(x_i), β⟩ + b ≥ 1 − ε_i,
          ε_i ≥ 0, with a kernel k(x, x') = ⟨φ(x), φ(x')⟩, solved through its dual

              min_α ½ αᵀQα − Σ α_i   s.t.  0 ≤ α_i ≤ C_i,  yᵀα = 0,   Q_ij = y_i y_j k(x_i, x_j)

          by SMO with libsvm's second-order working-set selection (WSS3, Fan, Chen & Lin
          2005), shrinking and an LRU cache of kernel rows bounded by cache_size MB
          (kernels.cpu.svm_smo). The decision function is Σ_i α_i y_i k(x_i, x) + b: only the
          support vectors (α_i > 0) enter it, as the seed says.

          SMO stops at tol, anywhere within tol of the optimum. fastnn then finishes at the
          optimum itself where that is cheap (kernels.cpu.svm_exact): from SMO's free set the
          optimality conditions are a linear system of order |free| + 1, solved and checked
          against every sample's condition, with an active-set correction where one fails
          (fastnn's deviation from libsvm: a convex problem has one answer, and two fits of
          the same problem, a sample of weight 2 or the same sample twice, now give the same
          one to rounding). Applied when the support's kernel rows in float64 number at most
          _EXACT_ENTRIES (2^22, 32 MB: e.g. every problem up to 2,048 samples) and at most
          _EXACT_FREE alphas are free; otherwise, or if no exact point is found in
          _EXACT_STEPS systems, SMO's answer stands, as libsvm's. Where the finish applies,
          SMO first stops at _EXACT_SMO_TOL (1e-2, or tol if that is looser), since the
          finish needs SMO's free set, not its tolerance; where that free set is too far
          off for an exact point, SMO goes on from there to tol and the finish is tried
          once more.

Seed 002's objective is ||β||² + C Σ ε_i; fastnn, like libsvm and scikit-learn, minimises
½||β||² + C Σ ε_i, so seed 002's C is twice fastnn's. The hard margin is the limit C → ∞: a
large C (say 1e6) gives it on separable data; on data that no kernel separates the hard-margin
problem has no solution, and a large C then only yields a fit that bends around every
outlier, with α_i reaching C on the points it cannot separate and a much longer solve (seed
002: "hard-margin SVMs are not robust"). More than two classes are handled one-vs-one, as
libsvm does: k(k−1)/2 binary SVMs, prediction by votes (ties to the lowest class index).

Conventions are scikit-learn's SVC: support_ sorted by class, then by index; dual_coef_ of shape
(n_classes − 1, n_SV) in libsvm's one-vs-one layout; intercept_ per pair; in the binary case
dual_coef_, intercept_ and decision_function have the sign for which > 0 means classes_[1].
predict_proba is not provided: libsvm's Platt scaling needs an internal 5-fold
cross-validation that fastnn does not implement, and a probability calibrated on the training
fit would be biased.

scikit-learn is imported here, not by `import fastnn`.
"""
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numba
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight

from .estimator_utils import (check_classifier_data, check_predict_data, check_sample_weight,
                              fit_guard, solver_threads)
from .kernels import codes, cpu

__all__ = ["SVC"]

_PREDICT_CHUNK = 1 << 22  # kernel entries per block of decision_function (32 MB in float64)


def kernel_matrix(A, B, kernel, gamma, coef0, degree):
    """k(A, B) of shape (len(A), len(B)) in float64: a callable's result (shape-checked, the
    error naming `kernel`), else kernels.cpu.svm_kernel (one gemm and one pass)."""
    if callable(kernel):
        K = np.asarray(kernel(A, B), dtype=np.float64)
        want = (A.shape[0], B.shape[0])
        if K.shape != want:
            raise ValueError(f"kernel must return a matrix of shape (n_samples_X, n_samples_Y) "
                             f"= {want}, got shape {K.shape}")
        if not np.all(np.isfinite(K)):
            raise ValueError("kernel returned NaN or infinite values")
        return K
    out = np.empty((A.shape[0], B.shape[0]))
    cpu.svm_kernel(out, A, B, np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", B, B),
                   codes.SVM_KERNELS[kernel], gamma, coef0, float(degree))
    return out


def _weighted_var(X, sw):
    """The variance of all of X's entries, each row counted sample_weight times (X.var()
    when the weights are equal), so that gamma="scale" is the same for a sample of weight 2
    and the same sample twice; scikit-learn's SVC ignores the weights here."""
    total = sw.sum()
    mean = (sw @ X).sum() / (total * X.shape[1])
    return float(sw @ np.square(X - mean).sum(axis=1)) / (total * X.shape[1])


# the exact finish's budget: kernel entries kept (8 bytes each), the free set's order (its
# cube in flops), the active-set steps, the order solved by least squares (an SVD)
_EXACT_ENTRIES = 1 << 22
_EXACT_FREE = 2000
_EXACT_STEPS = 10
_EXACT_LSTSQ = 500
# SMO's stopping tolerance ahead of the exact finish (the larger of it and the user's tol)
_EXACT_SMO_TOL = 1e-2


def _solver_threads(n_pairs):
    """Numba threads for the solves: one per one-vs-one pair up to numba's thread count (the
    pairs are independent); a single binary problem splits its large kernel rows over the
    threads (kernels.cpu._svm_row), a parallel region of 0.1 to 1 ms per SMO iteration, which
    pays only on cores that are free: with the 1-minute load average above the number of
    cores (more runnable threads than cores; this process's own threads count up to it), a
    region waits a scheduler time slice for its second thread (measured on the shared 2-core
    machine at load 9: 74 s on 2 threads against 13 s for libsvm at 20,000 samples), so the
    binary solve then runs on one thread (estimator_utils.solver_threads), as OpenMP's
    dynamic adjustment would."""
    return solver_threads() if n_pairs == 1 else numba.get_num_threads()


def _cache_rows(n, cache_size):
    """Kernel rows of n float32 entries that fit in cache_size MB (at least 2, at most n)."""
    return int(max(2, min(n, cache_size * 2 ** 20 // (4 * max(n, 1)))))


class SVC(ClassifierMixin, BaseEstimator):
    """C-support vector classification with a kernel, by SMO (libsvm's algorithm).

    Parameters
    ----------
    C : float > 0, default 1.0
        Penalty of the slack Σ ε_i (scikit-learn's C; seed 002's C is 2 C). Large C: smaller
        margin, fewer support vectors; C → ∞ is the hard margin.
    kernel : {"linear", "poly", "rbf", "sigmoid"} or callable, default "rbf"
        linear ⟨x, x'⟩; poly (γ⟨x, x'⟩ + coef0)^degree; rbf exp(−γ||x − x'||²); sigmoid
        tanh(γ⟨x, x'⟩ + coef0); a callable k(A, B) returns the (len(A), len(B)) matrix (the
        whole Gram matrix is then formed, as scikit-learn does).
    degree : int >= 0, default 3
    gamma : {"scale", "auto"} or float > 0, default "scale"
        "scale" is 1 / (n_features X.var()), the variance weighted by sample_weight (a
        deviation from scikit-learn, which ignores the weights there), "auto" 1 / n_features.
    coef0 : float, default 0.0
    shrinking : bool, default True
        libsvm's shrinking heuristic (same solution, usually faster).
    tol : float > 0, default 1e-3
        Stop SMO when the maximal KKT violation max_{I_up} −y G − min_{I_low} −y G is below
        tol; within the exact finish's budget (module docstring) the fit then ends at the
        optimum, every condition holding to 1e-9.
    cache_size : float > 0, default 200
        Memory for cached kernel rows, in MB (float32 rows, as libsvm).
    class_weight : dict, "balanced" or None, default None
        C of class c becomes C class_weight[c].
    max_iter : int, default -1
        Limit on SMO iterations per binary problem; -1 is libsvm's own cap,
        max(10⁷, 100 n). A ConvergenceWarning says when it stopped a solve.
    decision_function_shape : {"ovr", "ovo"}, default "ovr"
        "ovo": the k(k−1)/2 pairwise decision values; "ovr": scikit-learn's monotone
        transformation of them into one column per class (votes plus scaled confidences).
    break_ties : bool, default False
        With "ovr" and more than two classes, predict the argmax of decision_function
        instead of the vote (which breaks ties to the lowest class).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    support_ : ndarray of shape (n_SV,), indices into the training set, by class then index
    support_vectors_ : ndarray of shape (n_SV, n_features)
    n_support_ : ndarray of shape (n_classes,), int32
    dual_coef_ : ndarray of shape (n_classes − 1, n_SV), α_i y_i in libsvm's ovo layout
    intercept_ : ndarray of shape (n_classes (n_classes − 1) / 2,)
    class_weight_ : ndarray of shape (n_classes,)
    n_iter_ : ndarray of shape (n_classes (n_classes − 1) / 2,), SMO iterations per pair
        (both stages where the exact finish applies: then fewer than libsvm's, whose SMO
        runs to tol)
    n_features_in_ : int
    """

    _parameter_constraints = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "kernel": [StrOptions({"linear", "poly", "rbf", "sigmoid"}), callable],
        "degree": [Interval(Integral, 0, None, closed="left")],
        "gamma": [StrOptions({"scale", "auto"}), Interval(Real, 0, None, closed="neither")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "shrinking": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "cache_size": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "max_iter": [Interval(Integral, -1, None, closed="left")],
        "decision_function_shape": [StrOptions({"ovr", "ovo"})],
        "break_ties": ["boolean"],
    }

    def __init__(self, C=1.0, kernel="rbf", degree=3, gamma="scale", coef0=0.0, shrinking=True,
                 tol=1e-3, cache_size=200, class_weight=None, max_iter=-1,
                 decision_function_shape="ovr", break_ties=False):
        self.C = C
        self.kernel = kernel
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.shrinking = shrinking
        self.tol = tol
        self.cache_size = cache_size
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.decision_function_shape = decision_function_shape
        self.break_ties = break_ties

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit on X of shape (n_samples, n_features) and class labels y of shape (n_samples,);
        sample_weight (n_samples,) >= 0 scales each sample's C (a zero drops the sample) and
        counts in gamma="scale"'s variance, as repeating the sample would."""
        self._validate_params()
        X, classes, y_idx = check_classifier_data(self, X, y)
        n, k = X.shape[0], classes.size
        sw = check_sample_weight(sample_weight, n)
        sw = np.ones(n) if sw is None else sw
        cw = compute_class_weight(self.class_weight, classes=classes, y=classes[y_idx])
        if isinstance(self.gamma, str):
            var = _weighted_var(X, sw)
            gamma = 1.0 / (X.shape[1] * (var if self.gamma == "scale" and var > 0 else 1.0))
        else:
            gamma = float(self.gamma)
        if callable(self.kernel):
            x, kernel = kernel_matrix(X, X, self.kernel, gamma, 0.0, 0), codes.SVM_PRECOMPUTED
        else:
            x, kernel = X, codes.SVM_KERNELS[self.kernel]
        upper = self.C * cw[y_idx] * sw  # each sample's C_i
        max_iter = max(10_000_000, 100 * n) if self.max_iter == -1 else self.max_iter

        pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
        # one-vs-one pairs are independent: solved on numba's thread count of Python threads
        # (svm_smo releases the GIL), each with its share of cache_size
        threads = _solver_threads(len(pairs))
        workers = min(len(pairs), threads)
        cache_mb = self.cache_size / workers

        def solve(pair):
            if workers > 1 or threads == 1:
                # this thread's own setting (the pool's workers', or the caller's, restored
                # below): the cores are taken
                numba.set_num_threads(1)
            a, b = pair
            idx = np.flatnonzero(((y_idx == a) | (y_idx == b)) & (upper > 0))
            xs = x[np.ix_(idx, idx)] if kernel == codes.SVM_PRECOMPUTED else x[idx]
            xs = np.ascontiguousarray(xs)
            alpha = np.zeros(idx.size)
            cache = np.empty((_cache_rows(idx.size, cache_mb), idx.size), np.float32)
            # libsvm's sign convention: +1 for the lower class of the pair
            xs_sq = np.einsum("ij,ij->i", xs, xs)
            ys = np.where(y_idx[idx] == a, 1.0, -1.0)
            args = (xs, xs_sq, ys, upper[idx], kernel, gamma, float(self.coef0),
                    float(self.degree))
            tol, shrink = float(self.tol), bool(self.shrinking)

            def finish(rho):
                # the exact finish: SMO stops anywhere within tol of the optimum
                exact, found = cpu.svm_exact(alpha, *args, _EXACT_STEPS, _EXACT_FREE,
                                             _EXACT_ENTRIES, _EXACT_LSTSQ)
                return (exact if found else rho), found

            # where the exact finish applies, SMO first stops at the looser _EXACT_SMO_TOL
            # (the finish needs SMO's free set, not its tol); where no exact point is found
            # from there, SMO goes on from where it stopped (warm) to tol, and the finish is
            # tried again
            loose = max(tol, _EXACT_SMO_TOL) if idx.size ** 2 <= _EXACT_ENTRIES else tol
            rho, it, converged = cpu.svm_smo(alpha, *args, loose, max_iter, cache, shrink,
                                             False)
            found = False
            if converged:
                rho, found = finish(rho)
            if converged and not found and loose > tol:
                rho, more, converged = cpu.svm_smo(alpha, *args, tol, max_iter - it, cache,
                                                   shrink, True)
                it += more
                if converged:
                    rho, _ = finish(rho)
            full = np.zeros(n)
            full[idx] = alpha
            return full, rho, it, converged

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                solved = list(pool.map(solve, pairs))
        else:
            before = numba.get_num_threads()
            try:
                solved = [solve(pair) for pair in pairs]
            finally:
                numba.set_num_threads(before)
        alphas, rhos, n_iter, done = (list(v) for v in zip(*solved))
        late = len(done) - sum(done)
        if late:
            warnings.warn(f"Solver terminated early (max_iter={max_iter}) in {late} of "
                          f"{len(alphas)} binary problems. Consider pre-processing your data "
                          f"with StandardScaler or MinMaxScaler.", ConvergenceWarning)
        if not np.all(np.isfinite(rhos)):
            raise ValueError("the dual problem has no finite intercept: every sample of a class "
                             "has zero weight (sample_weight or class_weight)")

        A = np.array(alphas)  # (n_pairs, n)
        is_sv = np.any(A > 0, axis=0)
        support = np.concatenate([np.flatnonzero(is_sv & (y_idx == c)) for c in range(k)])
        n_support = np.array([np.sum(is_sv & (y_idx == c)) for c in range(k)], np.int32)
        # libsvm's ovo layout: pair (a, b) puts class a's SVs (sign +1) in row b - 1 and class
        # b's (sign -1) in row a
        dual = np.zeros((k - 1, support.size))
        sv_class = y_idx[support]
        p = 0
        for a in range(k):
            for b in range(a + 1, k):
                dual[b - 1, sv_class == a] = A[p, support[sv_class == a]]
                dual[a, sv_class == b] = -A[p, support[sv_class == b]]
                p += 1
        intercept = -np.array(rhos)
        self.classes_, self.class_weight_ = classes, cw
        self.support_, self.n_support_ = support.astype(np.int32), n_support
        self.support_vectors_ = X[support]
        self._dual_coef_, self._intercept_ = dual, intercept  # libsvm's signs
        self._gamma = gamma
        if k == 2:  # scikit-learn flips the binary signs so that > 0 means classes_[1]
            dual, intercept = -dual, -intercept
        self.dual_coef_, self.intercept_ = dual, intercept
        self.n_iter_ = np.array(n_iter, np.int32)
        return self

    def _ovo(self, X):
        """The k(k−1)/2 pairwise decision values, libsvm's signs (> 0 votes for the lower
        class), computed from k(X, support_vectors_) in row blocks."""
        X = check_predict_data(self, X)
        k, sv = self.classes_.size, self.support_vectors_
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        out = np.empty((X.shape[0], k * (k - 1) // 2))
        step = max(1, _PREDICT_CHUNK // max(sv.shape[0], 1))
        for r in range(0, X.shape[0], step):
            K = kernel_matrix(X[r:r + step], sv, self.kernel, self._gamma, float(self.coef0),
                              self.degree)
            p = 0
            for a in range(k):
                sa = slice(starts[a], starts[a + 1])
                for b in range(a + 1, k):
                    sb = slice(starts[b], starts[b + 1])
                    out[r:r + step, p] = (K[:, sa] @ self._dual_coef_[b - 1, sa]
                                          + K[:, sb] @ self._dual_coef_[a, sb]
                                          + self._intercept_[p])
                    p += 1
        return out

    def decision_function(self, X):
        """Scores of shape (n_samples,) for two classes (> 0 means classes_[1]); else
        (n_samples, n_classes) with "ovr", (n_samples, n_classes (n_classes − 1) / 2) with
        "ovo" (pairs (0, 1), (0, 2), ..., > 0 meaning the first of the pair)."""
        dec = self._ovo(check_predict_data(self, X))
        k = self.classes_.size
        if k == 2:
            return -dec[:, 0]
        if self.decision_function_shape == "ovo":
            return dec
        return _ovr_from_ovo(dec, k)

    def predict(self, X):
        """Class labels by one-vs-one votes (libsvm), ties to the lowest class index."""
        X = check_predict_data(self, X)
        k = self.classes_.size
        if self.break_ties and k > 2 and self.decision_function_shape == "ovr":
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]
        dec = self._ovo(X)
        return self.classes_[np.argmax(_votes(dec, k), axis=1)]

    @property
    def coef_(self):
        """Primal weights (n_classes (n_classes − 1) / 2, n_features), linear kernel only."""
        if self.kernel != "linear":
            raise AttributeError("coef_ is only available when using a linear kernel")
        k, sv = self.classes_.size, self.support_vectors_
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        rows = []
        for a in range(k):
            sa = slice(starts[a], starts[a + 1])
            for b in range(a + 1, k):
                sb = slice(starts[b], starts[b + 1])
                rows.append(self._dual_coef_[b - 1, sa] @ sv[sa]
                            + self._dual_coef_[a, sb] @ sv[sb])
        coef = np.array(rows)
        return -coef if k == 2 else coef


def _votes(dec, k, zero_to_first=False):
    """One vote per pair (a, b): to a when its decision value is > 0 (>= 0 with
    zero_to_first, as scikit-learn's "ovr" transformation counts), else to b."""
    votes = np.zeros((dec.shape[0], k))
    p = 0
    for a in range(k):
        for b in range(a + 1, k):
            first = dec[:, p] >= 0 if zero_to_first else dec[:, p] > 0
            votes[:, a] += first
            votes[:, b] += ~first
            p += 1
    return votes


def _ovr_from_ovo(dec, k):
    """scikit-learn's "ovr" shape: the votes plus the summed confidences mapped into
    (−1/3, 1/3) by x / (3 (|x| + 1)), which breaks ties without ever overturning a vote."""
    conf = np.zeros((dec.shape[0], k))
    p = 0
    for a in range(k):
        for b in range(a + 1, k):
            conf[:, a] += dec[:, p]
            conf[:, b] -= dec[:, p]
            p += 1
    return _votes(dec, k, zero_to_first=True) + conf / (3.0 * (np.abs(conf) + 1.0))
