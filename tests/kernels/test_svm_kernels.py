"""The kernel SVM's kernels: svm_kernel (reference, cpu and the CUDA twin in the simulator) and
the SMO solver svm_smo (cpu against its NumPy twin, the KKT conditions, a case worked by hand).

Shapes are awkward on purpose: 1, primes, sizes that are not multiples of the 16x16 CUDA tile
(17, 19) nor of anything else. float32 and float64."""
import numba
import numpy as np
import pytest
from backends import check_backends
from helpers import DTYPES, randn, require_cuda
from sklearn.metrics import pairwise

from fastnn.kernels import codes, cpu, reference

KERNELS = (codes.SVM_LINEAR, codes.SVM_POLY, codes.SVM_RBF, codes.SVM_SIGMOID)
SHAPES = [(1, 1, 1), (1, 13, 7), (5, 17, 3), (7, 19, 20), (3, 2, 37)]  # (M, N, F)
# kernel values are O(1) (rbf, sigmoid) or products of O(sqrt F) dot products (linear, poly of
# degree 3 with gamma 0.1): the few-ulp differences of a reordered dot product, relative
SVM_TOL = {np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)}
GAMMA, COEF0, DEGREE = 0.1, 0.5, 3.0


def _kernel_args(rng, dtype, m, n, f):
    a, b = randn(rng, (m, f), dtype), randn(rng, (n, f), dtype)
    return a, b, np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_svm_kernel_cpu_matches_reference(dtype, kernel, shape):
    rng = np.random.default_rng(sum(shape) + kernel)
    a, b, a_sq, b_sq = _kernel_args(rng, dtype, *shape)
    out = np.full(shape[:2], np.nan, dtype)
    check_backends("svm_kernel", [out, a, b, a_sq, b_sq, kernel, GAMMA, COEF0, DEGREE],
                   SVM_TOL[dtype], backends=("reference", "cpu"))


def test_svm_kernel_matches_scikit_learn_pairwise():
    rng = np.random.default_rng(0)
    a, b, a_sq, b_sq = _kernel_args(rng, np.float64, 11, 23, 5)
    want = {codes.SVM_LINEAR: pairwise.linear_kernel(a, b),
            codes.SVM_POLY: pairwise.polynomial_kernel(a, b, degree=3, gamma=GAMMA, coef0=COEF0),
            codes.SVM_RBF: pairwise.rbf_kernel(a, b, gamma=GAMMA),
            codes.SVM_SIGMOID: pairwise.sigmoid_kernel(a, b, gamma=GAMMA, coef0=COEF0)}
    for kernel, k in want.items():
        out = np.empty_like(k)
        cpu.svm_kernel(out, a, b, a_sq, b_sq, kernel, GAMMA, COEF0, DEGREE)
        # the same dot products in another summation order: a few ulps of O(1) values
        np.testing.assert_allclose(out, k, rtol=1e-12, atol=1e-12, err_msg=str(kernel))


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_kernel_rbf_of_a_row_with_itself_is_one(dtype):
    # a large norm: a_sq + b_sq - 2 a.b cancels to a rounding error that may be negative;
    # the clip at 0 keeps k <= 1 (never exp of a positive number)
    x = np.full((3, 7), 1e3, dtype)
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((3, 3), dtype)
    cpu.svm_kernel(out, x, x, sq, sq, codes.SVM_RBF, 1.0, 0.0, 3.0)
    assert np.all(out <= 1) and np.all(np.isfinite(out))


def _cuda():
    require_cuda("the CUDA twin of svm_kernel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 17, 3), (2, 19, 20)])
def test_svm_kernel_cuda_matches_reference(dtype, kernel, shape):
    _cuda()
    rng = np.random.default_rng(sum(shape) + kernel)
    a, b, a_sq, b_sq = _kernel_args(rng, dtype, *shape)
    out = np.full(shape[:2], np.nan, dtype)
    check_backends("svm_kernel", [out, a, b, a_sq, b_sq, kernel, GAMMA, COEF0, DEGREE],
                   SVM_TOL[dtype], backends=("reference", "cuda"))


# --------------------------------------------------------------------------- the solver's rows

@numba.njit
def _exp_all(out, v):
    for t in range(v.shape[0]):
        out[t] = cpu._svm_exp(v[t], out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_svm_exp_within_an_ulp_of_numpy(dtype):
    """The solver's vectorizable exp, for the RBF's arguments (<= 0): within ~1 ulp of the
    correctly rounded exp (NumPy's, in float64 for the float32 case) down to the normal range,
    exactly 1 at 0, exactly 0 below -708 (where libm's e^v is subnormal or 0)."""
    rng = np.random.default_rng(0)
    v = np.concatenate([-rng.exponential(5.0, 20_000), -rng.uniform(0, 1e-6, 100),
                        [0.0, -0.0, -1e-300, -0.5 * np.log(2), -np.log(2), -85.0, -707.9]])
    v = v.astype(dtype)
    out = np.empty_like(v)
    _exp_all(out, v)
    want = np.exp(v.astype(np.float64))
    eps = np.finfo(dtype).eps
    normal = want > np.finfo(dtype).tiny
    # the reduction and polynomial are within 1 ulp (measured 1.01 in float64, 0.8 in
    # float32); 2 ulp leaves room for the compiler's contraction of the products
    assert np.max(np.abs(out - want)[normal] / want[normal]) < 2 * eps
    assert np.all(out[v == 0] == 1.0)
    below = np.array([-708.5, -745.2, -1e4, -np.inf], dtype)
    _exp_all(out[:4], below)
    assert out[:4].tolist() == [0.0] * 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_svm_row_over_a_permuted_range_matches_reference(dtype, kernel):
    """kernels.cpu._svm_row, the solver's row: k(x_i, x_k) for the k in active[lo:hi] (a
    permutation, as shrinking leaves it), through the copy xa of x in that order, scattered to
    row[k]; 4,099 x 67 is above _SVM_PAR_WORK, so the parallel split is taken and its parts'
    boundaries are checked too; the other entries of the row stay untouched."""
    rng = np.random.default_rng(kernel)
    n, f = 4_099, 67
    assert (n - 2) * f >= cpu._SVM_PAR_WORK
    x = randn(rng, (n, f), dtype, scale=0.3)
    x_sq = np.einsum("ij,ij->i", x, x)
    active = rng.permutation(n)
    pos = np.argsort(active)
    xa, xa_sq = x[active], x_sq[active]
    want = np.empty((1, n), dtype)
    i = int(active[5])
    reference.svm_kernel(want, x[i:i + 1], x, x_sq[i:i + 1], x_sq, kernel, GAMMA, COEF0, DEGREE)
    for lo, hi in ((1, n - 1), (7, 12)):  # parallel, then serial
        row = np.full(n, -7.0, np.float32)
        cpu._svm_row(row, x, pos, xa, xa_sq, np.empty(n, dtype), i, active, lo, hi, kernel,
                     dtype(GAMMA), dtype(COEF0), dtype(DEGREE))
        inside = active[lo:hi]
        # the row is float32 (the cache's dtype): its rounding, 6e-8 relative, on top of
        # SVM_TOL's reordered dot products
        rtol, atol = SVM_TOL[dtype]
        np.testing.assert_allclose(row[inside], want[0, inside], rtol=rtol + 1e-7,
                                   atol=(atol + 1e-7) * max(1.0, np.abs(want).max()))
        assert np.all(np.delete(row, inside) == -7.0)


# --------------------------------------------------------------------------- the SMO solver

def _problem(n, f, seed, dtype=np.float64, c_spread=False):
    rng = np.random.default_rng(seed)
    x = randn(rng, (n, f), dtype)
    y = np.where(x[:, 0] + 0.7 * rng.standard_normal(n) > 0, 1.0, -1.0)  # overlapping classes
    if n >= 2:
        y[0], y[1] = 1.0, -1.0  # both classes present
    c = rng.uniform(0.3, 3.0, n) if c_spread else np.full(n, 1.0)
    return x, np.einsum("ij,ij->i", x, x), y, c


def _gram(x, x_sq, kernel):
    gram = np.empty((x.shape[0], x.shape[0]))
    reference.svm_kernel(gram, x.astype(np.float64), x.astype(np.float64),
                         x_sq.astype(np.float64), x_sq.astype(np.float64), kernel, GAMMA,
                         COEF0, DEGREE)
    return gram


def _solve(module, x, x_sq, y, c, kernel, tol, rows=None, shrinking=True, max_iter=10 ** 5,
           start=None):
    """SMO from alpha = 0, or warm from `start`."""
    n = x.shape[0]
    alpha = np.full(n, np.nan) if start is None else start.copy()
    cache = np.empty((rows or n, n), np.float32)
    rho, it, converged = module.svm_smo(alpha, x, x_sq, y, c, kernel, GAMMA, COEF0, DEGREE, tol,
                                        max_iter, cache, shrinking, start is not None)
    return alpha, rho, it, converged


def _decision(alpha, rho, y, gram):
    return gram @ (alpha * y) - rho


@pytest.mark.parametrize("n,f", [(2, 1), (7, 3), (31, 2), (60, 5)])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shrinking", [True, False])
def test_svm_smo_cpu_matches_reference(n, f, kernel, shrinking):
    """At tol 1e-9 both solvers sit at the optimum, whose decision function is unique (the
    alphas need not be when the Gram matrix is singular, as the linear kernel's is for N > F).
    Two cache rows force evictions on every iteration."""
    x, x_sq, y, c = _problem(n, f, seed=n + kernel, c_spread=True)
    gram = _gram(x, x_sq, kernel)
    a_ref, rho_ref, _, ok_ref = _solve(reference, x, x_sq, y, c, kernel, 1e-9)
    a_cpu, rho_cpu, _, ok_cpu = _solve(cpu, x, x_sq, y, c, kernel, 1e-9, rows=2,
                                       shrinking=shrinking)
    assert ok_ref and ok_cpu
    assert np.all(a_cpu >= 0) and np.all(a_cpu <= c)
    # y'alpha = 0 holds exactly up to the rounding of the pair updates
    assert abs(a_cpu @ y) < 1e-9 * max(1.0, c.sum())
    if kernel == codes.SVM_SIGMOID:
        return  # not positive semi-definite: a KKT point, not the one optimum, is all SMO finds
    # the optimum's decision values; the stopping rule leaves O(tol) per value, and the
    # float32 cache rows (libsvm's Qfloat) O(1e-7) relative error in each gradient update
    # (measured: < 4e-7)
    np.testing.assert_allclose(_decision(a_cpu, rho_cpu, y, gram),
                               _decision(a_ref, rho_ref, y, gram), rtol=0, atol=2e-5)


def _violation(alpha, x, x_sq, y, c, kernel):
    """SMO's stopping measure m(alpha) − M(alpha), recomputed from scratch in float64."""
    grad = (y[:, None] * y[None, :] * _gram(x, x_sq, kernel)) @ alpha - 1.0
    up = np.where(y > 0, alpha < c, alpha > 0)
    low = np.where(y > 0, alpha > 0, alpha < c)
    return np.max(-y[up] * grad[up]) - np.min(-y[low] * grad[low])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [97, 200])
@pytest.mark.parametrize("rows", [2, 17, 200])
@pytest.mark.parametrize("kernel", [codes.SVM_RBF, codes.SVM_LINEAR])
def test_svm_smo_warm_start_continues_a_loose_solve(rows, kernel, n, dtype):
    """warm: SMO started from a loose solve's alphas (fastnn.svm: tol 1e-2 before the exact
    finish, then on to tol where the finish fails) builds the gradient from their rows and
    ends at a point as good as a cold solve's, in fewer iterations than the cold one took; the
    reference twin, warm from the same alphas, reaches the same decision values. Some alphas
    start at their bound (c spread): grad_bar is built too, so shrinking loses nothing. A warm
    start at the optimum takes no iteration."""
    x, x_sq, y, c = _problem(n, 4, seed=11, dtype=dtype, c_spread=True)
    rows = min(rows, n)
    loose, _, it_loose, ok = _solve(cpu, x, x_sq, y, c, kernel, 1e-1, rows=rows)
    assert ok and np.any(loose >= c) and np.any((loose > 0) & (loose < c))
    cold, rho_cold, it_cold, ok_cold = _solve(cpu, x, x_sq, y, c, kernel, 1e-6, rows=rows)
    warm, rho_warm, it_warm, ok_warm = _solve(cpu, x, x_sq, y, c, kernel, 1e-6, rows=rows,
                                              start=loose)
    assert ok_cold and ok_warm and it_warm < it_cold
    # float32 cache rows: each entry rounded by up to 2^-24 relative, so the gradient SMO
    # stops on is off by up to 2^-24 max_k sum_t |K_kt| alpha_t (4.8e-6 to 2.8e-5 here); float32
    # x rounds its rows' few products alike. Measured: warm 1.1e-6 to 2.6e-6, the cold solve
    # within 1.5e-7 of it, in both dtypes
    gram = _gram(x, x_sq, kernel)
    drift = 2.0 ** -24 * np.max(np.abs(gram) @ warm)
    assert _violation(warm, x, x_sq, y, c, kernel) < 1e-6 + drift
    assert np.all(warm >= 0) and np.all(warm <= c) and abs(warm @ y) < 1e-9 * c.sum()
    ref, rho_ref, _, ok_ref = _solve(reference, x, x_sq, y, c, kernel, 1e-6, start=loose)
    assert ok_ref
    # each stops within tol of the optimum, whose decision values are unique: O(tol) apart
    np.testing.assert_allclose(_decision(warm, rho_warm, y, gram),
                               _decision(ref, rho_ref, y, gram), rtol=0, atol=1e-4)
    np.testing.assert_allclose(_decision(warm, rho_warm, y, gram),
                               _decision(cold, rho_cold, y, gram), rtol=0, atol=1e-4)
    again, _, it_again, ok_again = _solve(cpu, x, x_sq, y, c, kernel, 1e-3, rows=rows,
                                          start=warm)
    assert ok_again and it_again == 0
    np.testing.assert_array_equal(again, warm)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [2, 17, 200])
def test_svm_smo_stops_at_kkt_point(dtype, rows):
    """The maximal KKT violation, recomputed from scratch in float64, is below tol: shrinking
    (the gradient of shrunk variables rebuilt at the end) and the LRU cache lose nothing."""
    x, x_sq, y, c = _problem(200, 4, seed=3, dtype=dtype, c_spread=True)
    tol = 1e-3
    alpha, rho, it, converged = _solve(cpu, x, x_sq, y, c, codes.SVM_RBF, tol, rows=rows)
    assert converged and it > 0
    grad = (y[:, None] * y[None, :] * _gram(x, x_sq, codes.SVM_RBF)) @ alpha - 1.0
    up = np.where(y > 0, alpha < c, alpha > 0)
    low = np.where(y > 0, alpha > 0, alpha < c)
    violation = np.max(-y[up] * grad[up]) - np.min(-y[low] * grad[low])
    # float32 x (its own kernel rows) and float32 cache rows: each update's gradient change
    # is off by ~1e-7 relative, and a few thousand updates leave ~1e-4 of drift
    assert violation < tol + (1e-4 if dtype == np.float32 else 1e-7)


def test_svm_smo_two_points_by_hand():
    """x = +1 (y = +1) and x = -1 (y = -1), linear kernel: the hard margin is w = 1, b = 0,
    from alpha = (1/2, 1/2) (w = sum alpha_i y_i x_i); a box C = 1/4 caps both alphas at
    1/4, w = 1/2. rho = -b = 0 in both cases."""
    x = np.array([[1.0], [-1.0]])
    x_sq, y = np.ones(2), np.array([1.0, -1.0])
    for module in (reference, cpu):
        for c, a_want in ((10.0, 0.5), (0.25, 0.25)):
            alpha, rho, it, _ = _solve(module, x, x_sq, y, np.full(2, c), codes.SVM_LINEAR,
                                       1e-12)
            # one pair update solves a two-point problem exactly
            np.testing.assert_allclose(alpha, [a_want, a_want], rtol=0, atol=1e-15)
            assert abs(rho) < 1e-15 and it == 1


def test_svm_smo_precomputed_gram_equals_rbf():
    x, x_sq, y, c = _problem(40, 3, seed=5)
    gram = _gram(x, x_sq, codes.SVM_RBF)
    a1, rho1, _, _ = _solve(cpu, x, x_sq, y, c, codes.SVM_RBF, 1e-6)
    a2, rho2, _, _ = _solve(cpu, gram, np.zeros(40), y, c, codes.SVM_PRECOMPUTED, 1e-6)
    # the same rows in the same order: the same iterations, up to the last ulp of each row
    np.testing.assert_allclose(a2, a1, rtol=0, atol=1e-10)
    assert abs(rho1 - rho2) < 1e-10


def test_svm_smo_max_iter_stops_early():
    x, x_sq, y, c = _problem(60, 3, seed=6)
    _, _, it, converged = _solve(cpu, x, x_sq, y, c, codes.SVM_RBF, 1e-6, max_iter=5)
    assert it == 5 and not converged


def test_svm_smo_hard_margin_on_separable_data():
    """C -> infinity: on separable data every training point ends on or outside the margin,
    y_i f(x_i) >= 1 up to tol."""
    rng = np.random.default_rng(7)
    x = np.vstack([rng.standard_normal((20, 2)) + 4, rng.standard_normal((20, 2)) - 4])
    y = np.r_[np.ones(20), -np.ones(20)]
    x_sq = np.einsum("ij,ij->i", x, x)
    alpha, rho, _, converged = _solve(cpu, x, x_sq, y, np.full(40, 1e6), codes.SVM_LINEAR, 1e-6)
    margins = y * _decision(alpha, rho, y, _gram(x, x_sq, codes.SVM_LINEAR))
    assert converged
    assert margins.min() > 1 - 1e-5  # the stopping rule's O(tol) slack
    assert np.sum(alpha > 0) <= 3  # two dimensions: at most three points pin the margin


# --------------------------------------------------------------------------- the exact finish

EXACT_LIMITS = (10, 2000, 1 << 22, 500)  # max_steps, max_free, max_entries, max_lstsq


def _kkt(alpha, rho, y, c, gram):
    """The largest violation of the dual's optimality conditions, from the Gram matrix in
    float64: margins y_i f(x_i) >= 1 at 0, = 1 when free, <= 1 at c_i; and y'alpha = 0."""
    margin = y * _decision(alpha, rho, y, gram)
    free = (alpha > 0) & (alpha < c)
    return max(np.max(np.where(alpha <= 0, 1 - margin, 0.0)),
               np.max(np.where(alpha >= c, margin - 1, 0.0)),
               np.max(np.abs(margin - 1)[free], initial=0.0), abs(y @ alpha) / c.max())


@pytest.mark.parametrize("n,f", [(2, 1), (7, 3), (31, 2), (60, 5), (97, 13)])
@pytest.mark.parametrize("kernel", (codes.SVM_LINEAR, codes.SVM_POLY, codes.SVM_RBF))
def test_svm_exact_cpu_matches_reference_at_the_optimum(n, f, kernel):
    """From SMO's alpha at tol 1e-3 (within 1e-3 of the optimum) both twins reach the
    optimum: every condition holds to rounding (1e-9 on margins of O(1)) where SMO's left up
    to tol, and they agree on the decision function (unique; the alphas need not be, the
    linear kernel's Gram matrix being singular for N > F)."""
    x, x_sq, y, c = _problem(n, f, seed=n + kernel, c_spread=True)
    gram = _gram(x, x_sq, kernel)
    alpha, rho, _, converged = _solve(cpu, x, x_sq, y, c, kernel, 1e-3)
    assert converged
    out = {}
    for module in (reference, cpu):
        a = alpha.copy()
        r, found = module.svm_exact(a, x, x_sq, y, c, kernel, GAMMA, COEF0, DEGREE,
                                    *EXACT_LIMITS)
        assert found, module.__name__
        assert np.all(a >= 0) and np.all(a <= c)
        assert _kkt(a, r, y, c, gram) <= 1e-9
        out[module.__name__] = _decision(a, r, y, gram)
    if n >= 60:  # SMO stops within tol, not at the optimum: the finish has work to do (on
        # the smaller problems SMO happens to end within 1e-7)
        assert _kkt(alpha, rho, y, c, gram) > 1e-6
    np.testing.assert_allclose(out["fastnn.kernels.cpu"], out["fastnn.kernels.reference"],
                               rtol=0, atol=1e-9)


def test_svm_exact_repeated_samples_are_one_variable():
    """A sample twice (the same x and y) makes Q_FF singular: least squares solves the system
    and the decision function is that of the problem with the sample once at twice its C."""
    x, x_sq, y, c = _problem(40, 3, seed=8)
    reps = np.r_[np.arange(40), np.arange(10)]  # the first ten samples twice
    xr, x_sqr, yr, cr = x[reps], x_sq[reps], y[reps], c[reps]
    cw = c + (np.arange(40) < 10)  # ... or once, at twice their C
    decisions = []
    for xs, sq, ys, cs in ((xr, x_sqr, yr, cr), (x, x_sq, y, cw)):
        alpha, _, _, _ = _solve(cpu, xs, sq, ys, cs, codes.SVM_RBF, 1e-3)
        r, found = cpu.svm_exact(alpha, xs, sq, ys, cs, codes.SVM_RBF, GAMMA, COEF0, DEGREE,
                                 *EXACT_LIMITS)
        assert found
        gram = _gram(xs, sq, codes.SVM_RBF)
        assert _kkt(alpha, r, ys, cs, gram) <= 1e-9
        k_x = np.empty((40, xs.shape[0]))
        reference.svm_kernel(k_x, x, xs, x_sq, sq, codes.SVM_RBF, GAMMA, COEF0, DEGREE)
        decisions.append(k_x @ (alpha * ys) - r)
    np.testing.assert_allclose(decisions[0], decisions[1], rtol=0, atol=1e-9)


def test_svm_exact_precomputed_gram_equals_rbf():
    x, x_sq, y, c = _problem(50, 4, seed=9, c_spread=True)
    gram = _gram(x, x_sq, codes.SVM_RBF)
    alpha, _, _, _ = _solve(cpu, x, x_sq, y, c, codes.SVM_RBF, 1e-3)
    a1, a2 = alpha.copy(), alpha.copy()
    r1, f1 = cpu.svm_exact(a1, x, x_sq, y, c, codes.SVM_RBF, GAMMA, COEF0, DEGREE,
                           *EXACT_LIMITS)
    r2, f2 = cpu.svm_exact(a2, gram, np.zeros(50), y, c, codes.SVM_PRECOMPUTED, GAMMA, COEF0,
                           DEGREE, *EXACT_LIMITS)
    assert f1 and f2
    # the same system from the same kernel values, up to the rows' last ulps
    np.testing.assert_allclose(a2, a1, rtol=0, atol=1e-10)
    assert abs(r1 - r2) < 1e-10


@pytest.mark.parametrize("module", [reference, cpu], ids=["reference", "cpu"])
def test_svm_exact_gives_up_within_its_limits(module):
    """Out of steps, over the free-set order, over the kernel-row budget, or with no free
    alpha: (0.0, False), alpha untouched."""
    x, x_sq, y, c = _problem(60, 5, seed=10, c_spread=True)
    alpha, _, _, _ = _solve(cpu, x, x_sq, y, c, codes.SVM_RBF, 1e-3)
    n_free = int(np.sum((alpha > 0) & (alpha < c)))
    n_sup = int(np.sum(alpha > 0))
    for limits in ((0, 2000, 1 << 22, 500), (10, n_free - 1, 1 << 22, 500),
                   (10, 2000, n_sup * 60 - 1, 500)):
        a = alpha.copy()
        assert module.svm_exact(a, x, x_sq, y, c, codes.SVM_RBF, GAMMA, COEF0, DEGREE,
                                *limits) == (0.0, False)
        np.testing.assert_array_equal(a, alpha)
    bound = np.where(alpha > 0, c, 0.0)  # every alpha at a bound
    assert module.svm_exact(bound, x, x_sq, y, c, codes.SVM_RBF, GAMMA, COEF0, DEGREE,
                            *EXACT_LIMITS) == (0.0, False)
