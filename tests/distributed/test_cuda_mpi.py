"""Data-parallel Sequential.fit with device="cuda" (issue 13: one GPU per rank, the gradient
reduced through the host), in Numba's CUDA simulator: one `mpiexec -n 2` launch of
cuda_worker.py, whose checks compare with the CPU backend.

Tolerance: the GPU kernels and the CPU kernels take the same steps on the same rows in
float64 and differ only in the order of their sums (per-row, per-batch, then across the
ranks through the host), a few ulps per step; after <= 8 steps on parameters and losses of
order 1, 1e-12 leaves room for that and fails on any real difference (a step skipped, a rank
weighted wrongly or the L2 term counted per rank moves them by > 1e-4).
"""
import pytest
from mpi_helpers import run_checks

TOL = 1e-12  # float64 rounding of sums in another order (module docstring)
LAUNCH_TIMEOUT = 600  # seconds; a cold Numba cache compiles the CPU kernels in every rank


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_checks(2, "cuda_worker.py", tmp_path_factory.mktemp("cuda2"),
                      timeout=LAUNCH_TIMEOUT)


@pytest.mark.parametrize("check", ["sgd_l2", "adam", "gradient_norm", "uneven", "zero_rows",
                                   "local_sgd_k1", "local_sgd_k4"])
def test_cuda_data_parallel_fit_equals_cpu(results, check):
    res = results[check]
    assert res["diff"] <= TOL, res
    assert res.get("loss_diff", 0.0) <= TOL, res  # the logged loss is over every rank's rows
    assert res["same_on_ranks"], res
