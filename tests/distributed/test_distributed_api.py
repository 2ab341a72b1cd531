"""fastnn.distributed in a world of one (no mpiexec): the seeded shards, the no-op collectives,
argument checks, and that the MPI packages stay optional."""
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from fastnn import distributed


def test_shards_partition_the_rows_and_follow_the_seed():
    x = np.arange(23 * 2).reshape(23, 2)
    for ranks in (1, 3, 30):  # 30 > 23 rows: some ranks get none
        parts = [distributed.shard_indices(23, seed=4, rank=r, world_size=ranks)
                 for r in range(ranks)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(23))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    xs, ys = distributed.shard(x, x[:, 0], seed=4, rank=1, world_size=3)
    assert np.array_equal(xs[:, 0], ys)
    other = distributed.shard(x, seed=5, rank=1, world_size=3)
    assert not np.array_equal(xs, other)  # another seed, another split


def test_world_of_one_collectives_are_identities():
    assert (distributed.rank(), distributed.world_size(), distributed.is_distributed()) == \
        (0, 1, False)
    a = np.arange(4.0)
    assert distributed.allreduce(a) is a and np.array_equal(a, np.arange(4.0))
    assert distributed.allreduce(2.5, op="max") == 2.5 and distributed.allreduce(3) == 3
    assert distributed.allreduce(True, op="min") is True
    assert distributed.broadcast({"k": 1}) == {"k": 1} and distributed.allgather(7) == [7]


@pytest.mark.parametrize("call, message", [
    (lambda: distributed.allreduce(np.arange(3.0), op="mean"), "op must be"),
    (lambda: distributed.allreduce(np.arange(3, dtype=np.int32)), "float32, float64 or int64"),
    (lambda: distributed.allreduce(np.ones((3, 2))[:, 0]), "C-contiguous"),
    (lambda: distributed.allreduce("x"), "ndarray or a number"),
    (lambda: distributed.shard(np.ones((3, 1)), np.ones(2)), "different lengths"),
    (lambda: distributed.shard(np.ones((3, 1)), rank=3, world_size=3), "rank must be"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_fit_checks_the_distributed_arguments():
    m = fn.Sequential([fn.Dense(2)], seed=0)
    m.compile()
    with pytest.raises(ValueError, match="distributed must be"):
        m.fit(np.ones((4, 3)), np.zeros(4, np.int64), distributed="yes", verbose=0)
    with pytest.raises(ValueError, match="sync_every"):
        m.fit(np.ones((4, 3)), np.zeros(4, np.int64), sync_every=0, verbose=0)


def test_mpi_packages_stay_optional():
    """import fastnn never imports mpi4py; without it, kernels.mpi names the `mpi` extra."""
    code = ("import sys, fastnn, fastnn.distributed\n"
            "assert 'mpi4py' not in sys.modules\n"
            "sys.modules['mpi4py'] = None\n"
            "try:\n    import fastnn.kernels.mpi\nexcept ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "`mpi` extra" in out.stdout
