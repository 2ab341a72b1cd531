"""The convex solvers' kernels ("convex solvers and sparse products" sections of kernels.cpu
and kernels.reference): the CSR products against SciPy (through their reference twins) on
awkward matrices (empty rows and columns, one row, a duplicate entry summed by SciPy's own
canonicalisation, int32 and int64 indices); the per-sample loss kernels against their twins
and, in float64, their derivatives against central differences; the dual coordinate descent
against its twin and the SVM's optimality conditions; the perceptron epoch against its twin
and a tie worked by hand. float32 and float64 throughout."""
import numpy as np
import pytest
import scipy.sparse
from backends import STEP_TOL, check_backends
from helpers import DTYPES, randn

from fastnn.kernels import cpu, reference

CPU = ("reference", "cpu")


def _matrices(dtype, index_dtype):
    """(name, CSR matrix) pairs of awkward shapes, canonical as SciPy leaves them."""
    rng = np.random.default_rng(3)
    out = []
    for n, d, density in [(1, 1, 1.0), (1, 13, 0.5), (7, 1, 0.6), (17, 19, 0.2),
                          (31, 5, 0.0), (2, 3, 1.0)]:
        m = scipy.sparse.random(n, d, density=density, random_state=rng, format="csr",
                                dtype=np.float64)
        out.append((f"{n}x{d}@{density}", m))
    # empty rows and columns, and a duplicate (row 0, col 2) that sum_duplicates folds
    rows, cols = np.array([0, 0, 3, 3, 5, 0]), np.array([2, 4, 0, 4, 2, 2])
    vals = np.array([1.0, -2.0, 3.0, 0.5, -1.5, 4.0])
    m = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(7, 6)).tocsr()
    m.sum_duplicates()
    out.append(("gaps+duplicate", m))
    return [(name, m.data.astype(dtype), m.indices.astype(index_dtype),
             m.indptr.astype(index_dtype), m.shape) for name, m in out]


CASES = [(dt, it) for dt in DTYPES for it in (np.int32, np.int64)]


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("kernel", ["csr_matmul", "csr_matmul_parallel"])
def test_csr_matmul_matches_scipy_on_awkward_shapes(dtype, index_dtype, kernel):
    rng = np.random.default_rng(0)
    for name, data, indices, indptr, (n, d) in _matrices(dtype, index_dtype):
        for k in (1, 3, 10):
            w = randn(rng, (d, k), dtype)
            check_backends(kernel, [np.full((n, k), np.nan, dtype), data, indices,
                                          indptr, w], STEP_TOL[dtype], backends=CPU,
                           names=[f"out ({name})", "data", "indices", "indptr", "w"])
            # the transpose product Xᵀ R is csr_matmul on the CSR arrays of Xᵀ (X's CSC)
            xt = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, d)).T.tocsr()
            r = randn(rng, (n, k), dtype)
            got = np.full((d, k), np.nan, dtype)
            getattr(cpu, kernel)(got, xt.data, xt.indices.astype(index_dtype),
                           xt.indptr.astype(index_dtype), r)
            want = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, d)).T @ r
            np.testing.assert_allclose(got, want, *STEP_TOL[dtype], err_msg=name)


@pytest.mark.parametrize("dtype,index_dtype", CASES)
def test_csr_weighted_gram_matches_scipy(dtype, index_dtype):
    rng = np.random.default_rng(1)
    for name, data, indices, indptr, (n, d) in _matrices(dtype, index_dtype):
        weights = rng.random(n).astype(dtype)
        res = check_backends("csr_weighted_gram", [np.full((d, d), np.nan, dtype), data,
                                                   indices, indptr, weights],
                             STEP_TOL[dtype], backends=CPU,
                             names=[f"out ({name})", "data", "indices", "indptr", "d"])
        gram = res["cpu"][1][0]
        np.testing.assert_array_equal(gram, gram.T)  # each pair summed in one order


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 13])
def test_logistic_loss_grad_matches_twin_and_differences(dtype, n):
    rng = np.random.default_rng(n)
    z = randn(rng, n, dtype, 3.0)
    z[0] = 40.0  # far in the tail: exp(-|z|) form, no overflow
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    sw = rng.random(n).astype(dtype)
    check_backends("logistic_loss_grad", [np.empty(n, dtype), np.empty(n, dtype), z, y, sw],
                   STEP_TOL[dtype], backends=CPU)
    if dtype != np.float64:
        return
    dz, hw = np.empty(n), np.empty(n)
    cpu.logistic_loss_grad(dz, hw, z, y, sw)
    eps = 1e-5
    for i in range(n):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        scratch = [np.empty(n) for _ in range(4)]
        fp = cpu.logistic_loss_grad(scratch[0], scratch[1], zp, y, sw)
        fm = cpu.logistic_loss_grad(scratch[2], scratch[3], zm, y, sw)
        # central differences: O(eps²) truncation, O(1e-16 / eps) rounding
        np.testing.assert_allclose(dz[i], (fp - fm) / (2 * eps), atol=1e-8)
        np.testing.assert_allclose(hw[i], (scratch[0][i] - scratch[2][i]) / (2 * eps),
                                   atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (13, 10)])
def test_softmax_loss_grad_and_hessian_rows(dtype, n, k):
    rng = np.random.default_rng(n * k)
    z = randn(rng, (n, k), dtype, 3.0)
    labels = rng.integers(0, k, n)
    sw = rng.random(n).astype(dtype)
    res = check_backends("softmax_loss_grad", [np.empty((n, k), dtype), np.empty((n, k), dtype),
                                               z, labels, sw], STEP_TOL[dtype], backends=CPU)
    p = res["reference"][1][1]
    u = randn(rng, (n, k), dtype)
    check_backends("softmax_hessian_rows", [np.empty((n, k), dtype), p, u, sw],
                   STEP_TOL[dtype], backends=CPU)
    if dtype != np.float64:
        return
    # the Hessian rows are the directional derivative of dz along u
    eps = 1e-6
    grads = []
    for sign in (1, -1):
        dz, pp = np.empty((n, k)), np.empty((n, k))
        cpu.softmax_loss_grad(dz, pp, z + sign * eps * u, labels, sw)
        grads.append(dz)
    r = np.empty((n, k))
    cpu.softmax_hessian_rows(r, p, u, sw)
    # central differences of an O(1) gradient: truncation O(eps²), rounding O(1e-16 / eps)
    np.testing.assert_allclose(r, (grads[0] - grads[1]) / (2 * eps), atol=1e-8)


def _svm_problem(n, d, seed, dtype):
    rng = np.random.default_rng(seed)
    x = randn(rng, (n, d), dtype)
    y = np.where(x[:, 0] + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return x, y


def _ww_objectives(w, alpha, x, labels, upper, diag, bias):
    """(primal at w, dual at alpha), in float64; the dual's w is the one alpha defines (so
    weak duality holds exactly even for a float32 w)."""
    xb = np.hstack([x.astype(np.float64), np.full((x.shape[0], 1), bias)])
    w = w.astype(np.float64)
    z = xb @ w.T
    n, k = alpha.shape
    others = np.arange(k)[None, :] != labels[:, None]
    slack = np.maximum(0.0, 1.0 - (z[np.arange(n), labels][:, None] - z))[others].reshape(n, -1)
    if np.all(diag == 0):  # hinge: ℓ_i(m) = upper_i max(0, m)
        loss = upper @ slack.sum(axis=1)
    else:  # squared hinge: ℓ_i(m) = max(0, m)² / (2 diag_i) (= C s_i max(0, m)²)
        loss = (1.0 / (2.0 * diag)) @ (slack ** 2).sum(axis=1)
    a = alpha[others].reshape(n, -1)
    w_alpha = (np.eye(k)[labels] * alpha.sum(axis=1, keepdims=True) - alpha).T @ xb
    dual = a.sum() - 0.5 * np.sum(w_alpha ** 2) - 0.5 * diag @ (a ** 2).sum(axis=1)
    return 0.5 * np.sum(w * w) + loss, dual


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("n,d,k", [(1, 1, 3), (3, 2, 3), (37, 5, 4), (61, 17, 5)])
def test_svm_ww_dual_cd_reaches_the_optimum_dense_and_csr(dtype, loss, n, d, k):
    """Weston-Watkins dual coordinate descent: w is Σ of its dual variables' rows, the pairs
    satisfy the KKT conditions, the duality gap closes, and the reference (pair by pair, no
    shrinking), dense and CSR kernels reach the same w (the primal is strictly convex)."""
    rng = np.random.default_rng(n + d + k)
    x = randn(rng, (n, d), dtype)
    labels = np.argmax(x[:, :1] * np.arange(k) + rng.gumbel(size=(n, k)), axis=1)
    s = rng.random(n) + 0.5
    upper, diag = (s, np.zeros(n)) if loss == "hinge" else (np.full(n, np.inf), 0.5 / s)
    tol = 1e-5 if dtype == np.float32 else 1e-10  # as the binary solver's test
    results = {}
    for backend in ("reference", "cpu", "csr"):
        w, alpha = np.zeros((k, d + 1), dtype), np.zeros((n, k))
        if backend == "csr":
            m = scipy.sparse.csr_matrix(x)
            it = cpu.svm_ww_dual_cd_csr(w, alpha, m.data, m.indices, m.indptr, labels, upper,
                                        diag, 1.0, tol, 100000, 0)
        else:
            mod = cpu if backend == "cpu" else reference
            it = mod.svm_ww_dual_cd(w, alpha, x, labels, upper, diag, 1.0, tol, 100000, 0)
        assert it < 100000, backend
        results[backend] = (w.astype(np.float64), alpha)
    xb = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    f32 = dtype == np.float32
    for backend, (w, alpha) in results.items():
        assert np.all(alpha[np.arange(n), labels] == 0) and np.all(alpha >= 0)
        assert np.all(alpha <= upper[:, None])
        # w_k = Σ_i (1[k = y_i] Σ_j α_ij − α_ik) x̃_i; float32 w sums float32 axpys (~6e-8 each)
        coef = np.eye(k)[labels] * alpha.sum(axis=1, keepdims=True) - alpha
        np.testing.assert_allclose(w, coef.T @ xb, atol=1e-4 if f32 else 1e-10,
                                   err_msg=backend)
        z = xb @ w.T
        g = z[np.arange(n), labels][:, None] - z - 1.0 + alpha * diag[:, None]
        pairs = np.arange(k)[None, :] != labels[:, None]
        kkt = 1e-3 if f32 else 1e-8  # float32 w rounds every score by ~1e-7 relative
        inside = pairs & (alpha > 1e-9) & (alpha < upper[:, None] - 1e-9)
        assert np.all(np.abs(g[inside]) < kkt), backend
        assert np.all(g[pairs & (alpha <= 1e-9)] > -kkt), backend
        primal, dual = _ww_objectives(w, alpha, x, labels, upper, diag, 1.0)
        # weak duality, and the gap closes at the optimum (relative to the primal's size)
        assert primal >= dual - 1e-9 * max(1.0, abs(primal))
        assert primal - dual <= (1e-3 if f32 else 1e-7) * max(1.0, abs(primal)), backend
    w = results["reference"][0]
    for backend in ("cpu", "csr"):
        np.testing.assert_allclose(results[backend][0], w, atol=10 * kkt, err_msg=backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
@pytest.mark.parametrize("n,d", [(1, 1), (2, 3), (37, 5), (61, 17)])
def test_svm_dual_cd_reaches_the_optimum_dense_and_csr(dtype, loss, n, d):
    x, y = _svm_problem(n, d, n + d, dtype)
    s = np.random.default_rng(0).random(n) + 0.5
    upper, diag = (s, np.zeros(n)) if loss == "hinge" else (np.full(n, np.inf), 0.5 / s)
    # float32 w rounds every margin by ~1e-7 relative: the spread cannot get far below that
    tol = 1e-5 if dtype == np.float32 else 1e-10
    results = {}
    for backend in ("reference", "cpu", "csr"):
        w, alpha = np.zeros(d + 1, dtype), np.zeros(n)
        if backend == "csr":
            m = scipy.sparse.csr_matrix(x)
            it = cpu.svm_dual_cd_csr(w, alpha, m.data, m.indices, m.indptr, y, upper, diag,
                                     1.0, tol, 100000, 0)
        else:
            mod = cpu if backend == "cpu" else reference
            it = mod.svm_dual_cd(w, alpha, x, y, upper, diag, 1.0, tol, 100000, 0)
        assert it < 100000, backend
        results[backend] = (w.astype(np.float64), alpha)
    w, alpha = results["reference"]
    # optimality: w = Σ α_i y_i [x_i, 1], α in its box, and the KKT conditions within tol;
    # a float32 w is the sum of thousands of float32 axpys, each rounding by ~6e-8 relative
    np.testing.assert_allclose(w, (alpha * y) @ np.hstack([x, np.ones((n, 1))]),
                               atol=1e-4 if dtype == np.float32 else 1e-10)
    margins = y * (x.astype(np.float64) @ w[:-1] + w[-1])
    g = margins - 1 + alpha * diag
    inside = (alpha > 1e-9) & (alpha < upper - 1e-9)
    # float32 w carries ~1e-7 relative error into every margin
    kkt = 1e-3 if dtype == np.float32 else 1e-8
    assert np.all(np.abs(g[inside]) < kkt)
    assert np.all(g[alpha <= 1e-9] > -kkt)
    # one optimum (the primal is strictly convex): every backend reaches the same w
    for backend in ("cpu", "csr"):
        np.testing.assert_allclose(results[backend][0], w, atol=10 * kkt, err_msg=backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_perceptron_epoch_matches_twin_dense_and_csr(dtype, k):
    rng = np.random.default_rng(k)
    n, d = 23, 5
    x = randn(rng, (n, d), dtype)
    x[3] = 0.0  # an all-zero row: a tie at every score
    labels = rng.integers(0, max(k, 2), n)
    order = rng.permutation(n)
    w0 = randn(rng, (k, d), dtype) * (k % 2)  # start at 0 for even k (ties), random else
    b0 = np.zeros(k, dtype)
    for use_bias in (True, False):
        res = check_backends("perceptron_epoch", [w0.copy(), b0.copy(), x, labels, order,
                                                  use_bias], STEP_TOL[dtype], backends=CPU)
        m = scipy.sparse.csr_matrix(x)
        w, b = w0.copy(), b0.copy()
        got = cpu.perceptron_epoch_csr(w, b, m.data, m.indices, m.indptr, labels, order,
                                       use_bias)
        assert got == res["reference"][0]
        np.testing.assert_allclose(w, res["reference"][1][0], *STEP_TOL[dtype])
        np.testing.assert_allclose(b, res["reference"][1][1], *STEP_TOL[dtype])


def test_perceptron_tie_is_a_mistake_worked_by_hand():
    """Seed 001: "if argmax \\ {y} is empty, pass; else ŷ ← argmax ...". From W = 0 with
    three classes and x = (1, 2), every score is 0: the argmax is {0, 1, 2}, so for y = 0 the
    set argmax \\ {y} = {1, 2} is not empty and ŷ = 1 (its first element): w_1 −= x,
    w_0 += x. The old rule (first argmax = 0 = y) passed here.
    Sample 2, x = (2, 1), y = 0: scores (4, −4, 0), y is the unique argmax: pass.
    Sample 3, x = (1, 2), y = 2: scores (5, −5, 0): ŷ = 0, w_0 −= x, w_2 += x."""
    w, b = np.zeros((3, 2)), np.zeros(3)
    x = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 2.0]])
    labels = np.array([0, 0, 2])
    for mod in (reference, cpu):
        w, b = np.zeros((3, 2)), np.zeros(3)
        assert mod.perceptron_epoch(w, b, x, labels, np.arange(3), False) == 2
        np.testing.assert_array_equal(w, [[0.0, 0.0], [-1.0, -2.0], [1.0, 2.0]])
    # the loss kernel used by the fused epochs follows the same rule
    for mod in (reference, cpu):
        dz = np.empty((1, 3))
        mod.multiclass_perceptron(dz, np.zeros((1, 3)), np.array([0]), np.empty(0), False)
        np.testing.assert_array_equal(dz, [[-1.0, 1.0, 0.0]])
        mod.multiclass_perceptron(dz, np.array([[0.0, 3.0, 3.0]]), np.array([2]), np.empty(0),
                                  False)
        np.testing.assert_array_equal(dz, [[0.0, 1.0, -1.0]])
        mod.multiclass_perceptron(dz, np.array([[0.0, 1.0, 3.0]]), np.array([2]), np.empty(0),
                                  False)
        np.testing.assert_array_equal(dz, [[0.0, 0.0, 0.0]])


# ---- fused convex passes

def _fused_args(rng, n, d, dtype, density):
    x = scipy.sparse.random(n, d, density=density, random_state=rng, format="csr")
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    return (x.toarray().astype(dtype), x, randn(rng, d + 1, dtype), y,
            rng.random(n).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [1.0, 0.0])
# 1, primes, and 2,003 x 211 at 0.5 (~2e5 multiply-adds): the rows split into chunks
@pytest.mark.parametrize("n,d,density", [(1, 1, 1.0), (13, 7, 0.5), (2003, 211, 0.5)])
def test_fused_passes_match_twins_dense_and_csr(dtype, bias, n, d, density):
    rng = np.random.default_rng(n + d)
    x, xs, w, y, sw = _fused_args(rng, n, d, dtype, density)
    # float32 sums over up to 2,003 rows: rounding grows with n
    tol = STEP_TOL[dtype] if n < 100 or dtype == np.float64 else (2e-4, 2e-4)
    res = check_backends("logistic_value_grad", [np.empty(d + 1, dtype), np.empty(n, dtype),
                                                 x, w, bias, y, sw], tol, backends=CPU)
    hw = res["reference"][1][1]
    for phases in (0, 1, 2):  # the rule's order (here 1), and each order forced
        check_backends("logistic_value_grad_csr", [np.empty(d + 1, dtype), np.empty(n, dtype),
                                                   xs.data.astype(dtype), xs.indices,
                                                   xs.indptr, w, bias, y, sw, phases], tol,
                       backends=CPU)
    # w[:D] = 0 (a solver's first pass): the kernels skip the row dot products
    w0 = np.zeros_like(w)
    w0[-1] = w[-1]
    check_backends("logistic_value_grad", [np.empty(d + 1, dtype), np.empty(n, dtype), x, w0,
                                           bias, y, sw], tol, backends=CPU)
    for phases in (1, 2):
        check_backends("logistic_value_grad_csr", [np.empty(d + 1, dtype), np.empty(n, dtype),
                                                   xs.data.astype(dtype), xs.indices,
                                                   xs.indptr, w0, bias, y, sw, phases], tol,
                       backends=CPU)
    v = randn(rng, d + 1, dtype)
    check_backends("weighted_hessp", [np.empty(d + 1, dtype), x, hw, v, bias], tol,
                   backends=CPU)
    # TRON's warm start (dense X): a product that keeps its scores, and the loss pass that
    # also gives the new Hessian along a direction from its scores
    res = check_backends("weighted_hessp_scores", [np.empty(d + 1, dtype), np.empty(n, dtype),
                                                   x, hw, v, bias], tol, backends=CPU)
    check_backends("logistic_value_grad_along", [np.empty(d + 1, dtype), np.empty(d + 1, dtype),
                                                 np.empty(n, dtype), x, w, bias, y, sw,
                                                 res["reference"][1][1]], tol, backends=CPU)
    index = np.int64 if dtype == np.float64 else np.int32  # both index widths, few compiles
    for phases in (0, 1, 2):
        check_backends("weighted_hessp_csr", [np.empty(d + 1, dtype), xs.data.astype(dtype),
                                              xs.indices.astype(index),
                                              xs.indptr.astype(index), hw, v, bias, phases],
                       tol, backends=CPU)
    res = check_backends("weighted_gram", [np.empty((d + 1, d + 1), dtype), x, hw, bias], tol,
                         backends=CPU)
    gram = res["cpu"][1][0]
    np.testing.assert_array_equal(gram, gram.T)  # one triangle, mirrored
    res = check_backends("weighted_diag", [np.empty(d + 1, dtype), x, hw, bias], tol,
                         backends=CPU)
    # the preconditioner is weighted_gram's diagonal (same sums, same order of rows)
    np.testing.assert_allclose(res["cpu"][1][0], np.diag(gram), rtol=tol[0], atol=tol[1])
    check_backends("weighted_diag_csr", [np.empty(d + 1, dtype), xs.data.astype(dtype),
                                         xs.indices.astype(index), xs.indptr.astype(index), hw,
                                         bias], tol, backends=CPU)


@pytest.mark.parametrize("dtype", DTYPES)
# CSR of >= cpu._CSR_TWO_PHASE_MIN_D columns: each chunk's dot products, then its axpys.
# One row; a prime width, most of its columns empty (37 rows at 1 %); 4,001 rows at 2 %
# (~2.6e6 units of work): the rows split into chunks, each two phases
@pytest.mark.parametrize("n,d,density", [(1, 8192, 0.01), (37, 8209, 0.01),
                                         (4001, 8209, 0.02)])
def test_fused_csr_passes_two_phase_match_twins(dtype, n, d, density):
    assert d >= cpu._CSR_TWO_PHASE_MIN_D
    rng = np.random.default_rng(n)
    xs = scipy.sparse.random(n, d, density=density, random_state=rng, format="csr")
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    w, sw = randn(rng, d + 1, dtype), rng.random(n).astype(dtype)
    # float32 sums over ~160 non-zeros a row, then up to 4,001 rows into a column
    tol = STEP_TOL[dtype] if dtype == np.float64 else (2e-4, 2e-4)
    res = check_backends("logistic_value_grad_csr", [np.empty(d + 1, dtype), np.empty(n, dtype),
                                                     xs.data.astype(dtype), xs.indices,
                                                     xs.indptr, w, 1.0, y, sw, 0], tol,
                         backends=CPU)
    hw = res["reference"][1][1]
    check_backends("weighted_hessp_csr", [np.empty(d + 1, dtype), xs.data.astype(dtype),
                                          xs.indices, xs.indptr, hw, randn(rng, d + 1, dtype),
                                          1.0, 0], tol, backends=CPU)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,density", [(1, 5, 1.0), (4001, 8209, 0.02), (3001, 211, 0.3)])
def test_fused_csr_orders_of_work_agree_bit_for_bit(dtype, n, d, density):
    """The two orders of a fused CSR pass (phases 1 and 2; fastnn.estimator_utils's
    _FasterOrder picks between them by their time) give the same sums in the same order:
    equal results, not merely close ones, in both modes and in every chunk of rows."""
    rng = np.random.default_rng(d)
    xs = scipy.sparse.random(n, d, density=density, random_state=rng, format="csr")
    data = xs.data.astype(dtype)
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    w, sw, v = randn(rng, d + 1, dtype), rng.random(n).astype(dtype), randn(rng, d + 1, dtype)
    got = {}
    for phases in (1, 2):
        grad, hw, hv = np.empty(d + 1, dtype), np.empty(n, dtype), np.empty(d + 1, dtype)
        f = cpu.logistic_value_grad_csr(grad, hw, data, xs.indices, xs.indptr, w, 1.0, y, sw,
                                        phases)
        cpu.weighted_hessp_csr(hv, data, xs.indices, xs.indptr, hw, v, 1.0, phases)
        got[phases] = (f, grad, hw, hv)
    assert got[1][0] == got[2][0]
    for a, b in zip(got[1][1:], got[2][1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
# one row; the top of uint16's range (column 65,535 filled); rows in parallel chunks, row by
# row and in two phases
@pytest.mark.parametrize("n,d,density", [(1, 3, 1.0), (5, 65_536, 1e-3), (3001, 211, 0.3),
                                         (4001, 8209, 0.02)])
def test_fused_csr_passes_read_uint16_indices_bit_for_bit(dtype, n, d, density):
    """fastnn.estimator_utils.Design.fused_rows hands the logistic loss's fused CSR passes
    uint16 column indices where X has at most 65,536 columns: the same sums in the same
    order as with int32 (and int64) indices, so equal results, in every pass and order."""
    rng = np.random.default_rng(d)
    xs = scipy.sparse.random(n, d, density=density, random_state=rng, format="csr")
    if d == 65_536:
        xs = (xs + scipy.sparse.csr_matrix(([2.0], ([n - 1], [d - 1])), shape=(n, d))).tocsr()
        assert xs.indices.max() == 65_535
    data = xs.data.astype(dtype)
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(dtype)
    w, sw, v = randn(rng, d + 1, dtype), rng.random(n).astype(dtype), randn(rng, d + 1, dtype)
    got = {}
    for index in (np.uint16, np.int32, np.int64):
        indices = xs.indices.astype(index)
        assert np.array_equal(indices, xs.indices)
        for phases in (1, 2):
            grad, hw = np.empty(d + 1, dtype), np.empty(n, dtype)
            hv, diag = np.empty(d + 1, dtype), np.empty(d + 1, dtype)
            f = cpu.logistic_value_grad_csr(grad, hw, data, indices, xs.indptr, w, 1.0, y, sw,
                                            phases)
            cpu.weighted_hessp_csr(hv, data, indices, xs.indptr, hw, v, 1.0, phases)
            cpu.weighted_diag_csr(diag, data, indices, xs.indptr, hw, 1.0)
            got[index, phases] = (np.array([f]), grad, hw, hv, diag)
    want = got[np.int32, 1]
    for key, res in got.items():
        for a, b in zip(res, want):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


# P: one value, a prime, and W6's CSR width plus its intercept slot
@pytest.mark.parametrize("p", [1, 97, 50_001])
@pytest.mark.parametrize("scores", [False, True])
def test_cg_step_kernels_match_twins(p, scores):
    """TRON's CG vector work (fastnn.linear_model._steihaug_cg): cg_curvature's four dot
    products, cg_step's update of s, r (and the step's scores u) and rᵀ M⁻¹ r, and
    cg_direction's d = M⁻¹ r + β d, against their NumPy twins, with a metric M far from 1
    (liblinear's preconditioner) and M = 1. float64 only: the solvers' vectors are float64."""
    rng = np.random.default_rng(p)
    for m in (np.ones(p), rng.uniform(0.01, 100.0, p)):
        s, d, hd, r = (rng.standard_normal(p) for _ in range(4))
        n = 13 if scores else 0
        u, sc = rng.standard_normal(n), rng.standard_normal(n)
        # float64 sums of P terms in another order (the twins' are pairwise): ~P eps
        tol = (1e-12, 1e-12)
        check_backends("cg_curvature", [s, d, hd, m], tol, backends=CPU)
        check_backends("cg_step", [s, r, d, hd, m, 0.37, u, sc], tol, backends=CPU,
                       names=["s", "r", "d", "hd", "m", "alpha", "u", "scores"])
        check_backends("cg_direction", [d, r, m, 0.61], tol, backends=CPU,
                       names=["d", "r", "m", "beta"])


def test_weighted_hessp_float32_x_sums_in_float64():
    """fastnn.linear_model's TRON reads a float32 copy of dense X in its Hessian-vector
    products, with float64 curvature, direction and output: the product of the rounded X,
    summed in float64 (not float32)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4001, 503))  # >= 2e6 multiply-adds: two chunks of rows
    x32 = x.astype(np.float32)
    hw, v = rng.random(4001), rng.standard_normal(504)
    out, want = np.empty(504), np.empty(504)
    cpu.weighted_hessp(out, x32, hw, v, 1.0)
    reference.weighted_hessp(want, x32.astype(np.float64), hw, v, 1.0)
    # float64 sums in another order: ~1e-15 relative; float32 sums would be ~1e-5 off
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    # the warm start's kernels read the same copy the same way (scores, then the loss pass
    # with the Hessian along them)
    scores, want_scores = np.empty(4001), np.empty(4001)
    cpu.weighted_hessp_scores(out, scores, x32, hw, v, 1.0)
    reference.weighted_hessp_scores(want, want_scores, x32.astype(np.float64), hw, v, 1.0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(scores, want_scores, rtol=1e-12, atol=1e-12)
    y, sw, w = np.where(rng.random(4001) < 0.5, 1.0, -1.0), rng.random(4001), 0.05 * v
    got = [np.empty(504), np.empty(504), np.empty(4001)]
    want = [np.empty(504), np.empty(504), np.empty(4001)]
    f = cpu.logistic_value_grad_along(*got, x32, w, 1.0, y, sw, scores)
    f_want = reference.logistic_value_grad_along(*want, x32.astype(np.float64), w, 1.0, y, sw,
                                                 want_scores)
    np.testing.assert_allclose(f, f_want, rtol=1e-13)
    for g, h in zip(got, want):
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-12 * np.abs(h).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 13, 2003])
@pytest.mark.parametrize("t", [1.0, 2.5, 1e-3])
def test_logistic_line_derivs_match_twin_and_differences(dtype, n, t):
    """TRON's first-step line search: φ'(t), φ''(t) of φ(t) = Σ s_i log(1 + exp(−y_i t u_i))
    against the NumPy twin, and against central differences of φ and of φ' (float64; φ from
    np.logaddexp), with scores from ±1e3 (σ saturates: no overflow) to 1e-3."""
    rng = np.random.default_rng(n)
    u = (rng.standard_normal(n) * np.where(rng.random(n) < 0.1, 1e3, 1.0)).astype(dtype)
    u[0] = 1e-3
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    sw = rng.random(n) + 0.5
    got = cpu.logistic_line_derivs(u, y, sw, t)
    want = reference.logistic_line_derivs(u, y, sw, t)
    # float64 sums of float64 terms, in another order (the twin's np.sum is pairwise)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    u64 = u.astype(np.float64)

    def phi(tt):
        return float(np.sum(sw * np.logaddexp(0.0, -y * tt * u64)))
    h = 1e-6 * max(t, 1.0)
    d1 = (phi(t + h) - phi(t - h)) / (2 * h)
    d2 = (cpu.logistic_line_derivs(u, y, sw, t + h)[0]
          - cpu.logistic_line_derivs(u, y, sw, t - h)[0]) / (2 * h)
    # a central difference errs by O(h²) times the third derivative, plus the rounding of φ
    # (~1e-16 φ) over h
    scale = 1e-16 * phi(t) / h + 1e-7
    assert abs(got[0] - d1) <= 1e-6 * abs(d1) + scale
    assert abs(got[1] - d2) <= 1e-5 * abs(d2) + scale


def test_fused_logistic_gradient_and_hessp_are_derivatives():
    rng = np.random.default_rng(5)
    x, xs, w, y, sw = _fused_args(rng, 29, 6, np.float64, 0.7)
    grad, hw = np.empty(7), np.empty(29)
    cpu.logistic_value_grad_csr(grad, hw, xs.data, xs.indices, xs.indptr, w, 1.0, y, sw, 0)
    v = rng.standard_normal(7)
    hv = np.empty(7)
    cpu.weighted_hessp(hv, x, hw, v, 1.0)
    eps = 1e-6
    vals, grads = [], []
    for sign in (1, -1):
        g, h = np.empty(7), np.empty(29)
        vals.append(cpu.logistic_value_grad(g, h, x, w + sign * eps * v, 1.0, y, sw))
        grads.append(g)
    # central differences: truncation O(eps²), rounding O(1e-16 / eps) on O(10) values
    np.testing.assert_allclose(grad @ v, (vals[0] - vals[1]) / (2 * eps), atol=1e-7)
    np.testing.assert_allclose(hv, (grads[0] - grads[1]) / (2 * eps), atol=1e-7)
    # TRON's warm start: the scores of v from a product, then the loss pass at w that also
    # gives the Hessian along v, the same derivative of the gradient
    scores = np.empty(29)
    cpu.weighted_hessp_scores(np.empty(7), scores, x, hw, v, 1.0)
    g_along, hs = np.empty(7), np.empty(7)
    cpu.logistic_value_grad_along(g_along, hs, np.empty(29), x, w, 1.0, y, sw, scores)
    np.testing.assert_allclose(g_along, grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hs, (grads[0] - grads[1]) / (2 * eps), atol=1e-7)


def test_fused_logistic_loss_keeps_its_relative_accuracy_when_every_term_is_tiny():
    """Margins of 8 to 40 on every row (e = exp(−t) from 3e-4 down to 4e-18, each row's loss
    about e): the equal-weight path sums log1p(e) by its series below 2^-10 and by the log of
    a product above it (kernels.cpu._logistic_rows), so a loss of ~1e-3 in all keeps ~1e-14
    relative accuracy (a product over every row would lose it: 1 + 4e-18 is 1)."""
    rng = np.random.default_rng(7)
    t = rng.uniform(8.0, 40.0, 1000)
    y = np.where(rng.random(1000) < 0.5, 1.0, -1.0)
    x = (t * y)[:, None].copy()
    w, sw = np.array([1.0, 0.0]), np.full(1000, 2.0)
    got_g, got_h, want_g, want_h = np.empty(2), np.empty(1000), np.empty(2), np.empty(1000)
    f = cpu.logistic_value_grad(got_g, got_h, x, w, 1.0, y, sw)
    want = reference.logistic_value_grad(want_g, want_h, x, w, 1.0, y, sw)
    assert 1e-4 < want < 1.0
    np.testing.assert_allclose(f, want, rtol=1e-14)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2, 17])
def test_cholesky_solve_matches_scipy_and_refuses_indefinite(dtype, p):
    rng = np.random.default_rng(p)
    m = randn(rng, (p + 3, p), dtype)
    a = (m.T @ m + np.eye(p, dtype=dtype)).astype(dtype)
    b = randn(rng, p, dtype)
    # float32: the solve's error grows with κ(A) (~10 here) times eps32
    tol = STEP_TOL[dtype] if dtype == np.float64 else (1e-4, 1e-4)
    res = check_backends("cholesky_solve", [np.empty(p, dtype), a, b], tol, backends=CPU)
    assert res["cpu"][0] is True
    out = np.full(p, 7.0, dtype)
    assert cpu.cholesky_solve(out, -a, b) is False
    np.testing.assert_array_equal(out, 7.0)  # untouched


@pytest.mark.parametrize("weights", ["random", "equal"])
def test_fused_logistic_loss_at_extreme_and_nan_scores(weights):
    """The fused pass computes exp and log1p by polynomials (kernels.cpu._svm_exp,
    _log1p_unit; for rows of equal weight, the log of a product and a short series:
    _logistic_rows) so that its loss loop vectorizes: held to the NumPy twin's logaddexp over
    scores from 0 and ±1e-300 to ±1e4 (exp(-|t|) underflowing to 0 past 708), more rows than
    one block (_LOSS_BLOCK = 64), and a NaN score still makes the loss NaN."""
    t = np.r_[0.0, 1e-300, -1e-300, 1e-8, -1e-8, np.linspace(-40, 40, 161), 700.0, -700.0,
              709.0, -709.0, 745.0, -745.0, 800.0, -800.0, 1e4, -1e4]
    n = t.size
    x = t[:, None].copy()  # one feature: z = t with w = [1, 0]
    rng = np.random.default_rng(6)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    sw = rng.random(n) + 0.1 if weights == "random" else np.full(n, 0.7)
    w = np.array([1.0, 0.0])
    got_g, got_h, want_g, want_h = np.empty(2), np.empty(n), np.empty(2), np.empty(n)
    f = cpu.logistic_value_grad(got_g, got_h, x, w, 1.0, y, sw)
    want = reference.logistic_value_grad(want_g, want_h, x, w, 1.0, y, sw)
    # the polynomials are within a few ulp of libm: ~1e-15 relative on sums of O(n) terms
    np.testing.assert_allclose(f, want, rtol=1e-14)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-13)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-13, atol=1e-300)
    x[3, 0] = np.nan
    assert np.isnan(cpu.logistic_value_grad(got_g, got_h, x, w, 1.0, y, sw))
