"""The convex linear models fitted over MPI ranks (fit(..., distributed=True)) reach the
single-process coefficients: `mpiexec -n 2` and `-n 3` run linear_mpi_worker.py, whose
docstring gives the cases (uneven shards, a rank with one class, a rank with no rows,
sample weights, intercepts, CSR input, a badly scaled column; Newton, TRON, L-BFGS;
LogisticRegression one-vs-rest, SoftmaxRegression, LinearRegression and ridge, LinearSVM's
squared-hinge TRON) and the bound each difference must stay within. Without mpiexec the test skips, except under CI (CI set),
where it fails: CI must run it (mpi_helpers.mpiexec)."""
import numpy as np
import pytest
from mpi_helpers import run_checks  # tests/distributed/: skips, or fails under CI, without
#                                     mpiexec

from fastnn.linear_model import LinearSVM, LogisticRegression, SoftmaxRegression

TIMEOUT_S = 240  # a hard stop: a rank stuck in a collective must not hang CI (normally ~10 s)


@pytest.mark.parametrize("ranks", [2, 3])
def test_distributed_fits_reach_the_single_process_coefficients(ranks, tmp_path):
    report = run_checks(ranks, "linear_mpi_worker.py", tmp_path, timeout=TIMEOUT_S)
    assert report["ranks"] == ranks
    assert len(report["cases"]) == 8
    for name, case in report["cases"].items():
        # the bound: both fits within tol ||∇f(0)|| / μ of the optimum, plus rounding (the
        # worker's docstring); measured differences are ~1e-15, bounds ~1e-9
        assert case["max_abs_diff"] <= case["bound"], (name, case)
        # every rank left every solver loop together, with the same bits
        assert case["same_on_every_rank"], (name, case)
        assert case["classes_equal"], name
    assert report["mismatch"] == [f"X has 5 features on rank {ranks - 1} but 6 on rank 0: "
                                  "every rank must pass the same features"] * ranks


def test_a_world_of_one_fits_as_one_process():
    """Outside mpiexec, distributed=True (and "auto") is the ordinary fit, to the bit: the
    reductions of a world of one return their input."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((53, 4)), rng.integers(0, 3, 53)
    for est in (SoftmaxRegression(), LinearSVM(loss="squared_hinge")):
        plain = est.fit(X, y).coef_.copy()
        for flag in (True, "auto"):
            assert np.array_equal(est.fit(X, y, distributed=flag).coef_, plain)


@pytest.mark.parametrize("flag, solver, match", [
    ("yes", "auto", "distributed must be False, True or 'auto', got 'yes'"),
    (True, "sgd", "distributed=True fits LogisticRegression with solver 'auto' or 'newton'"),
])
def test_distributed_arguments_are_checked(flag, solver, match):
    with pytest.raises(ValueError, match=match):
        LogisticRegression(solver=solver).fit(np.eye(4), [0, 1, 0, 1], distributed=flag)
