"""W7 of the benchmark suite under pytest-benchmark: data-parallel training of W2's network
(784-256-256-10, batch 128 per rank, SGD, one thread per rank) on 1 and 2 MPI ranks, fastnn
beside PyTorch DistributedDataParallel (gloo), in one run.

The job is fastnn.bench's (`python -m fastnn bench --only W7` runs the same): one
`mpiexec -n 2` launch in which the four implementations take turns epoch by epoch after each
was checked against fastnn on one process with batch R·128. The epochs run in the ranks, other
processes, so each benchmark below hands pytest-benchmark the epoch times the ranks measured
(a replay clock) and records samples/s, the checks and the allreduce sweep in extra_info.
FASTNN_BENCH_FULL=1 gives the full suite's sizes. Nothing here asserts on time.

    pytest benchmarks/test_distributed.py --benchmark-only --benchmark-json=RESULTS.json
"""
import os

import pytest

from fastnn import distributed
from fastnn.bench import workloads as W

CFG_NAME = "full" if os.environ.get("FASTNN_BENCH_FULL") else "quick"
NAMES = ["fastnn, 1 rank", f"fastnn, {W.W7_RANKS} ranks", "DDP, 1 rank",
         f"DDP, {W.W7_RANKS} ranks"]


@pytest.fixture(scope="module")
def job():
    """The W7 job's results (rank 0's JSON); skipped where there is no mpiexec."""
    try:
        distributed.mpiexec_command(W.W7_RANKS)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return W.w7_launch(CFG_NAME, W.W7_RANKS, progress=print)


class Replay:
    """A clock that reads back durations measured elsewhere: each (start, end) pair of calls
    is the next duration apart."""

    def __init__(self, durations):
        self.durations, self.now, self.started = list(durations), 0.0, False

    def __call__(self):
        if self.started:
            self.now += self.durations.pop(0)
        self.started = not self.started
        return self.now


@pytest.mark.parametrize("name", NAMES)
def test_w7_epoch(benchmark, job, name):
    if name not in job["epochs_s"]:
        pytest.skip(f"{name}: {job['unavailable'].get(name, 'not measured')}")
    seconds = job["epochs_s"][name]
    ranks = 1 if "1 rank" in name else job["ranks"]
    benchmark.group = f"W7 one epoch of {job['samples_per_rank']:,} rows per rank"
    benchmark.extra_info.update(
        ranks=ranks, samples_per_s=[ranks * job["samples_per_rank"] / s for s in seconds],
        check_max_abs_diff=job["checks"].get(name), allreduce_p=job["allreduce_p"],
        allreduce_s=job["allreduce_s"])
    benchmark._timer = Replay(seconds)  # the ranks' own measurements (module docstring)
    benchmark.pedantic(lambda: None, rounds=len(seconds), iterations=1)
