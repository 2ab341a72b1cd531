"""What fastnn's scikit-learn estimators share: input checks, the seed, the fit guard, the
one-Dense-layer trainer, the NumPy forward pass of fitted weights, and sigmoid / softmax for
predict_proba, and the thread count a solver's parallel regions run on.

fastnn.linear_model, fastnn.multiclass and fastnn.neural_network build on these; the report
that compares them with scikit-learn is fastnn.estimators. This module imports scikit-learn;
fastnn's core does not, so `import fastnn` works without it.
"""
import contextlib
import os
import threading
import time
import weakref

import numba
import numpy as np
import scipy.sparse
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted
from sklearn.utils.validation import validate_data as _sklearn_validate_data

from .kernels import codes, cpu
from .layers import LEAKY_ALPHA, L2, Dense
from .models import Sequential
from .validation import reject_all_zero, reject_masked


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
    its C-ordered copy (BLAS and LAPACK round differently per layout). Masked arrays are
    refused by name (validation.reject_masked): scikit-learn would drop the mask silently."""
    kwargs.setdefault("order", "C")
    reject_masked(X, "X")
    reject_masked(y, "y")
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


def check_classifier_data(estimator, X, y, accept_sparse=False, ensure_all_finite=True):
    """X as float64 and y as indices into classes_ (np.unique order); at least 2 classes.
    With accept_sparse, a scipy.sparse X comes back as canonical CSR or CSC (check_sparse).
    ensure_all_finite=False leaves X's NaN/inf check to the caller (Design.check_finite)."""
    X, y = validate_data(estimator, X, y, dtype=np.float64,
                         accept_sparse=_SPARSE_FORMATS if accept_sparse else False,
                         ensure_all_finite=ensure_all_finite)
    X = check_sparse(X)
    if y.dtype.kind not in "iu":  # integer labels (1-D here) are always binary or multiclass
        check_classification_targets(y)
    classes, y_idx = encode_labels(y)
    if classes.size < 2:
        raise ValueError(f"y must hold at least 2 classes to fit a classifier; got 1 class: "
                         f"{classes[0]!r}")
    return X, classes, y_idx.astype(np.int64)


def encode_labels(y):
    """np.unique(y, return_inverse=True) for 1-D y: classes sorted, in y's dtype, and y's
    indices into them. Integer labels within a range of a few times their count go through a
    table (np.bincount) instead of a sort or hash: 0.4 ms against ~4.5 ms for 100,000 labels,
    where scikit-learn's target check and np.unique took ~5 % of a 100,000 x 100 logistic fit."""
    if y.dtype.kind in "iu" and y.size:
        lo, hi = int(y.min()), int(y.max())
        if hi - lo <= 4 * y.size and hi <= np.iinfo(np.intp).max:
            offset = y.astype(np.intp, copy=False) - lo
            present = np.bincount(offset, minlength=hi - lo + 1) > 0
            classes = (np.flatnonzero(present) + lo).astype(y.dtype)
            return classes, (np.cumsum(present) - 1)[offset]
    return np.unique(y, return_inverse=True)


def check_sample_weight(sample_weight, n):
    """sample_weight as float64 of shape (n,), non-negative and not all zero; None stays None.
    A masked array is refused (its mask would not be honoured; validation.reject_masked)."""
    if sample_weight is None:
        return None
    reject_masked(sample_weight, "sample_weight")
    # negative weights have no meaning here (and √w in LinearRegression's solve would be NaN)
    sw = _check_sample_weight(sample_weight, np.empty((n, 1)), dtype=np.float64,
                              ensure_non_negative=True)
    reject_all_zero(sw, "sample_weight")
    return sw


def check_predict_data(estimator, X, accept_sparse=False):
    """X of a fitted estimator as float64, with as many features as it was fitted on."""
    check_is_fitted(estimator)
    return check_sparse(validate_data(estimator, X, reset=False, dtype=np.float64,
                                      accept_sparse=_SPARSE_FORMATS if accept_sparse else False))


# --------------------------------------------------------------------------- threads

def solver_threads():
    """Numba threads for a solver's parallel regions, decided once per fit: numba's thread
    count, or 1 when the 1-minute load average exceeds the number of cores. A parallel region
    (OpenMP underneath) ends at a barrier that waits for its slowest thread, and with more
    runnable threads than cores that thread waits out scheduler slices: on the shared 2-core
    machine at load ~4 a 20,000 x 100 logistic fit took 1.28 s on 2 threads against 25-45 ms
    on 1 (idle: 25-30 ms on 2). This process's own threads count towards the load, so a fit
    alone on the machine keeps every thread. The solvers' results do not depend on the count
    (their row chunks are fixed by the shapes), only their speed does."""
    threads = numba.get_num_threads()
    if threads > 1 and hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        return 1
    return threads


@contextlib.contextmanager
def solver_thread_limit():
    """Run the block with numba's threads set to solver_threads() (this thread's setting,
    restored after)."""
    before = numba.get_num_threads()
    numba.set_num_threads(solver_threads())
    try:
        yield
    finally:
        numba.set_num_threads(before)


_CONTROLLER = []  # one threadpoolctl controller per process: inspecting the libraries ~1 ms


def one_blas_thread():
    """Every BLAS library at one thread for the block (threadpoolctl; ~26 µs a block): the
    convex solvers' vector operations, small factorisations, and W6's one-thread
    scikit-learn configurations."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def check_finite(X, estimator):
    """Raise scikit-learn's ValueError ("Input X contains NaN.", "... infinity ...") when X
    (dense, or scipy.sparse: its stored values) holds NaN or inf, for a fit that validated X
    with ensure_all_finite=False: one pass of kernels.cpu.all_finite over X's memory (C or
    F order; a strided view goes to scikit-learn's check), where scikit-learn's check takes
    a sum over X on one thread (W6's 100,000 x 100 ridge fit: 6 ms -> 2.7 ms)."""
    if scipy.sparse.issparse(X):
        values = X.data
    elif X.flags.c_contiguous or X.flags.f_contiguous:
        values = np.ravel(X, order="K")  # a view
    else:
        values = None
    if values is None or not cpu.all_finite(values):
        assert_all_finite(X, input_name="X", estimator_name=type(estimator).__name__)


# --------------------------------------------------------------------------- sparse input

_SPARSE_FORMATS = ("csr", "csc")


def check_sparse(X, name="X"):
    """A dense X as it is; a scipy.sparse X (CSR or CSC, matrix or array, after
    validate_data's shape checks, and its NaN/inf check unless the caller makes that itself:
    check_finite or Design.check_finite) with its index arrays checked (in range,
    monotone indptr: the kernels index with them unchecked) and in canonical form (sorted
    indices, duplicates summed), copied first when it is not, so the caller's X is never
    touched. Never densified."""
    if not scipy.sparse.issparse(X):
        return X
    try:
        X.check_format(full_check=True)
    except ValueError as e:
        raise ValueError(f"{name} is a malformed sparse matrix: {e}") from None
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


# The float32 copies the convex solvers read (Design.float32) are drawn from one buffer kept
# between fits, up to this size; larger ones are allocated per fit and freed with it
WORKSPACE_MAX_BYTES = 64 << 20
# Design.fused_rows: sparse X of at most this many columns is read with uint16 indices
NARROW_MAX_COLUMNS = int(np.iinfo(np.uint16).max) + 1


class _Workspace:
    """One float32 scratch buffer, reused from fit to fit. A fresh 40 MB array (W6's 100,000 x
    100 float32 copy) costs its page faults, ~6 ms of a 10 ms copy, and on this machine far
    more: its VM hands freed memory back to the host (virtio-balloon free page reporting,
    ~2 s after the free), and touching it again took 30-130 ms in 1 fit in 3 inside W6 (fits
    72-249 ms, median 102; 65-93 ms, median 74-86, reusing it). Held: at most
    WORKSPACE_MAX_BYTES after a fit (release_workspace frees it). The buffer serves one
    Design at a time (a weak reference to the array it handed out tells whether that one is
    still alive); a concurrent fit gets a fresh array."""

    def __init__(self):
        self._lock = threading.Lock()
        self._buf = None
        self._user = None

    def take(self, shape):
        """An uninitialised float32 array of `shape`, and whether it is fresh memory (never
        written: its pages not yet faulted in)."""
        n = int(np.prod(shape))
        if 4 * n > WORKSPACE_MAX_BYTES:
            return np.empty(shape, np.float32), True
        with self._lock:
            if self._user is not None and self._user() is not None:
                return np.empty(shape, np.float32), True
            fresh = self._buf is None or self._buf.size < n
            if fresh:
                self._buf = None  # the old buffer goes before the new one comes
                self._buf = np.empty(n, np.float32)
            out = self._buf[:n].reshape(shape)
            self._user = weakref.ref(out)
            return out, fresh

    def release(self):
        with self._lock:
            self._buf, self._user = None, None


_WORKSPACE = _Workspace()


def release_workspace():
    """Free the float32 buffer fastnn's convex solvers keep between fits (at most
    WORKSPACE_MAX_BYTES; the next fit allocates it again)."""
    _WORKSPACE.release()


class _FasterOrder:
    """The faster of a fused CSR pass's two orders of work (kernels.cpu's `phases`, see
    _CSR_TWO_PHASE_MIN_D there: 1, row by row; 2, each chunk's dot products, then its
    axpys). Both give the same sums in the same order, bit for bit, so the choice changes a
    fit's time and never its result. Which is faster depends on the machine (its L2 and
    prefetchers, not a rule of thumb: two phases won by 1.4x on Zen 3 and lost by 1.2x on Zen
    5 on the same problem), so the first 2 TRIALS passes alternate, timed, and the order with
    the lower fastest time stays (min: a burst of load from elsewhere only slows a pass).
    Until then, order is 0: the kernels' own rule."""

    TRIALS = 2

    def __init__(self):
        self.seconds = {1: [], 2: []}
        self.order = 0

    def timed(self, run):
        """run(phases), timed while the order is being chosen; returns what run returns."""
        if self.order:
            return run(self.order)
        phases = 1 if len(self.seconds[1]) <= len(self.seconds[2]) else 2
        start = time.perf_counter()
        out = run(phases)
        self.seconds[phases].append(time.perf_counter() - start)
        if len(self.seconds[2]) >= self.TRIALS:
            self.order = min(self.seconds, key=lambda k: min(self.seconds[k]))
        return out


class Design:
    """The design matrix X (n_samples, n_features) as the convex solvers use it: X @ W,
    Xᵀ R and the weighted Gram Xᵀ diag(d) X. Dense X goes through BLAS (NumPy's matmul, SciPy's
    ?syrk); sparse X through kernels.cpu's CSR kernels, on the CSR arrays of X (for X @ W) and
    of Xᵀ (the CSC of X, for Xᵀ R, built on first use: the fused one-pass kernels of the
    binary logistic loss read the CSR rows only), so both products are row-parallel gathers
    and nothing n_samples x n_features is ever allocated. Products come back float64."""

    def __init__(self, X):
        self.shape = X.shape
        self.sparse = scipy.sparse.issparse(X)
        self._scaled = None
        self._float32 = None
        self._finite = None  # whether X is finite, known once float32() has run
        self._float32_finite = None  # whether the float32 copy is (float32_holds_x)
        self._narrow = None  # sparse X's column indices as uint16 (float32(), fused_rows)
        if self.sparse:
            self._X = X
            csr = X.tocsr()
            self.rows = (csr.data, csr.indices, csr.indptr)
            self._cols = None
            self._order = _FasterOrder()
        else:
            self.X = np.ascontiguousarray(X)

    def matmul(self, W):
        """X @ W for W of shape (n_features, k)."""
        if not self.sparse:
            return self.X @ W
        out = np.empty((self.shape[0], W.shape[1]))
        self._product(out, self.rows, W)
        return out

    @staticmethod
    def _product(out, csr, W):
        # threads pay from ~1e6 multiply-adds; below that, waking them costs more
        kernel = cpu.csr_matmul_parallel if csr[0].size * W.shape[1] >= 1e6 else cpu.csr_matmul
        kernel(out, *csr, np.ascontiguousarray(W))

    @property
    def cols(self):
        """The CSC arrays of a sparse X (the CSR of Xᵀ), built on first use: the fused
        one-pass kernels never need them."""
        if self._cols is None:
            csc = self._X.tocsc()
            self._cols = (csc.data, csc.indices, csc.indptr)
        return self._cols

    def float32(self):
        """A float32 copy of dense X, or of sparse X's CSR values, built on first use and
        shared by every objective on this design (the one-vs-rest problems of one fit: one
        copy, not K), in the workspace kept between fits (_Workspace). NumPy's one-thread
        copy: a parallel copy into new memory measured 6-44 ms against astype's 10 ms at
        100,000 x 100 (two threads faulting in fresh pages contend in the kernel). Only this
        Design may hold the array: it is the workspace's until the Design is gone. Sparse X
        of at most NARROW_MAX_COLUMNS columns also gets its column indices as uint16, in the
        same buffer (fused_rows)."""
        if self._float32 is None:
            src = self.rows[0] if self.sparse else self.X
            nnz = src.size
            narrow = self.sparse and self.shape[1] <= NARROW_MAX_COLUMNS
            # the uint16 indices take half a float32 slot each, after the values
            buf, fresh = _WORKSPACE.take((nnz + (nnz + 1) // 2,) if narrow else src.shape)
            out = buf[:nnz] if self.sparse else buf
            # the copy's read of X also checks it (check_finite) and the copy's range
            self._finite, self._float32_finite = cpu.float32_copy_finite(
                out.reshape(1, -1) if self.sparse else out,
                src.reshape(1, -1) if self.sparse else src, fresh)
            if narrow:
                self._narrow = buf[nnz:].view(np.uint16)[:nnz]
                self._narrow[:] = self.rows[1]  # 0 <= index < 65,536: checked at the boundary
            self._float32 = out
        return self._float32

    def fused_rows(self, float32=False):
        """Sparse X's CSR arrays (values, column indices, row pointers) as the fused passes
        of the logistic loss read them: the values X's own, or the float32 copy (float32=True);
        the indices X's own, or, once float32() has run on X of at most NARROW_MAX_COLUMNS
        columns, its uint16 copy. A pass's work per non-zero is an index load, a gather and
        a scatter, and 2-byte indices move a quarter fewer bytes than 4-byte ones: on W6's
        50,000 x 50,000 CSR (0.2 %, Zen 5, two threads) a Hessian-vector product 2.60 ->
        2.42 ms, one thread 4.9 -> 4.6; a gather pass alone 3.0 -> 2.4 ms. The sums are the
        same, bit for bit: only the width of the indices differs."""
        data, indices, indptr = self.rows
        return (self.float32() if float32 else data,
                indices if self._narrow is None else self._narrow, indptr)

    def float32_holds_x(self):
        """Whether the float32 copy (made here if need be) holds X: no value of X beyond
        float32's range (±3.4e38), which the copy would hold as ±inf. Where it does not, no
        pass may read the copy (a fit on X with a 1e39 in it returned zeros, its float32
        gradient infinite)."""
        self.float32()
        return self._float32_finite

    def check_finite(self, estimator, float32_copy=False):
        """Raise scikit-learn's ValueError ("Input X contains NaN.", "... infinity ...") when
        X holds NaN or inf, for a fit that validated X with ensure_all_finite=False. With
        float32_copy (dense X whose fit reads the float32 copy anyway: the logistic loss's
        TRON), in the copy's own read of X (kernels.cpu.float32_copy_finite): a 100,000 x 100
        fit's check and copy 7.5-9 -> 2.7-3.2 ms, against scikit-learn's one-thread np.sum
        and NumPy's copy; else in one pass of kernels.cpu.all_finite."""
        if not self.sparse and (float32_copy or self._float32 is not None):
            self.float32()
            if not self._finite:
                assert_all_finite(self.X, input_name="X", estimator_name=type(estimator).__name__)
        else:
            check_finite(self._X if self.sparse else self.X, estimator)

    def csr_product(self, run):
        """A fused pass over the CSR rows that a solver repeats (a Hessian-vector product):
        run(phases), phases the pass's order of work (kernels.cpu's), timed until the faster
        order is known (_FasterOrder). Returns what run returns."""
        return self._order.timed(run)

    @property
    def csr_phases(self):
        """The order the products chose, for the other fused passes over the same rows (0,
        the kernels' own rule, until the products have chosen)."""
        return self._order.order

    def rmatmul(self, R):
        """Xᵀ @ R for R of shape (n_samples, k)."""
        if not self.sparse:
            return self.X.T @ R
        out = np.empty((self.shape[1], R.shape[1]))
        self._product(out, self.cols, R)
        return out

    def gram(self, d):
        """Xᵀ diag(d) X (n_features, n_features) for weights d of shape (n_samples,): dense
        as one ?syrk on √d-scaled rows (half the flops of a gemm, both cores) when d >= 0,
        else one gemm."""
        p = self.shape[1]
        out = np.empty((p, p))
        if self.sparse:
            cpu.csr_weighted_gram(out, *self.rows, d)
            return out
        if self._scaled is None:
            self._scaled = np.empty_like(self.X)
        if np.any(d < 0):  # signed weights (the multinomial's off-diagonal blocks): one gemm
            np.multiply(self.X, d[:, None], out=self._scaled)
            return self.X.T @ self._scaled
        np.multiply(self.X, np.sqrt(d)[:, None], out=self._scaled)
        # NumPy's matmul sees Aᵀ A of one buffer and calls its own BLAS's ?syrk (and mirrors
        # the triangle): SciPy's dsyrk would wake SciPy's separate OpenBLAS thread pool, which
        # then spins against NumPy's (measured 5-15x slower on the shared 2-core machine)
        return self._scaled.T @ self._scaled


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


def sigmoid(z):
    """The logistic function of z, any shape, in float64, through
    kernels.cpu.activation_forward (its stable form: exp only ever sees -|z|)."""
    z = np.asarray(z, dtype=np.float64)
    # elementwise, so any shape goes through the (N, O) kernel as one column
    flat = np.ascontiguousarray(z).reshape(-1, 1)
    out = np.empty_like(flat)
    cpu.activation_forward(out, flat, codes.SIGMOID, 0.0)
    return out.reshape(z.shape)


def softmax(z):
    """Row-wise softmax of z of shape (n_samples, n_classes), in float64, through
    kernels.cpu.softmax (the row max is subtracted, so exp never overflows)."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    out = np.empty_like(z)
    cpu.softmax(out, z)
    return out
