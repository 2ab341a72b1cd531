"""Data-parallel Sequential.fit over MPI (issue 13): mpiexec -n 2 and -n 3 launches of
sequential_worker.py, which batches the checks of a normal run into one launch per rank count
(a launch costs seconds), and one launch per fault, each of which must end the whole job.

Tolerances: the distributed and single-process fits take the same steps on the same rows in
float64; they differ only in the order the gradient sums are taken (per rank, then across
ranks), in where 1/m is applied (to the loss's delta on one process; when distributed to the
summed gradient, or for plain SGD in the gemm's alpha), and in plain SGD's parameters being
summed from the ranks' shares (W / R each: exact for R = 2, an ulp for R = 3), each a few ulps
per step: 1e-12 on parameters and losses of order 1
after <= 36 steps leaves room for that and fails on any real difference (a wrong weighting
of a rank's rows moves them by > 1e-3).
"""
import time

import pytest
from mpi_helpers import run_checks, run_mpi

TOL = 1e-12  # float64 rounding of sums taken in another order (module docstring)
LAUNCH_TIMEOUT = 600  # seconds; a cold Numba cache compiles every kernel in every rank
EQUIVALENT = ("sgd", "sgd_plain_l2", "adam", "local_sgd_k1", "uneven_zero_row",
              "uneven_zero_row_sgd", "resume_same_ranks")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The normal-run checks on 2 ranks, then on 3 ranks (which resumes the checkpoint the
    2-rank launch wrote)."""
    tmp = tmp_path_factory.mktemp("mpi")
    ckpt = tmp / "ckpt.npz"
    return {ranks: run_checks(ranks, "sequential_worker.py", tmp_path_factory.mktemp(str(ranks)),
                              "main", ckpt, timeout=LAUNCH_TIMEOUT) for ranks in (2, 3)}


@pytest.mark.parametrize("ranks", [2, 3])
def test_data_parallel_fit_equals_one_process(runs, ranks):
    res = runs[ranks]
    for check in EQUIVALENT:
        assert res[check]["diff"] <= TOL, (check, res[check])
    for check in ("sgd", "sgd_plain_l2", "adam"):  # the logged loss and metric are global
        assert res[check]["loss_diff"] <= TOL and res[check]["acc_diff"] <= TOL, res[check]
    for check in ("uneven_zero_row", "uneven_zero_row_sgd"):
        assert res[check]["val_loss_diff"] <= TOL  # validation over every rank's rows
        assert res[check]["steps"] == 5  # the longest shard's steps, on every rank
    for check, outcome in res.items():
        assert outcome["same_on_ranks"], (check, outcome)
    assert res["float32_dropout"]["finite"] and res["local_sgd_k5"]["improves"]
    assert res["early_stop"]["epochs"] == 2  # patience 0: stops after the second epoch


@pytest.mark.parametrize("ranks", [2, 3])
def test_mismatched_architecture_refused_on_every_rank(runs, ranks):
    messages = runs[ranks]["mismatch"]["messages"]
    assert len(messages) == ranks
    assert all(m is not None and f"rank {ranks - 1}'s model or fit differs" in m
               and "layers" in m and "('Dense', 7" in m for m in messages), messages


def test_checkpoint_resumes_on_another_number_of_ranks(runs):
    res = runs[3]["resume_other_ranks"]  # written on 2 ranks, resumed on 3
    assert res["moved"] and res["finite"] and res["same_on_ranks"]
    # Adam's step count carries over: 2 epochs of 6 steps on 2 ranks, then one of 6 on 3
    assert res["adam_steps"] == [12, 18]


@pytest.mark.parametrize("mode, message", [
    ("raise_in_fit", "boom from rank 0's callback"),
    ("raise_outside", "boom from rank 1 outside fit"),
    ("kill", "signal 9"),
])
def test_a_failing_rank_ends_the_job(tmp_path, mode, message):
    t0 = time.perf_counter()
    proc = run_mpi(2, "sequential_worker.py", tmp_path / "out.json", mode, timeout=300)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0, proc.stdout
    assert "did not end the job" not in proc.stdout
    assert message in proc.stderr + proc.stdout, proc.stderr
    if mode == "raise_in_fit":  # fit names the rank before MPI_Abort
        assert "fastnn.distributed: rank 0 failed" in proc.stderr
    assert elapsed < 300  # the others were not left blocked in a collective
