"""Data parallelism over MPI: this process's rank and the world size, its shard of the data,
and collectives for Python-level values (losses, metrics, decisions, a solver's gradient).

Launch a script on R processes with `mpiexec -n R python -m mpi4py train.py` (README, "Past
one machine"); each process passes its own rows to `Sequential.fit(..., distributed=True)`,
which trains one model: see Sequential.fit. Every collective here is over MPI_COMM_WORLD.

Outside mpiexec (no MPI launcher in the environment and mpi4py not already initialised), a
process is a world of one: rank() is 0, world_size() 1, allreduce and broadcast return their
input, and mpi4py is never imported, so none of this needs the `mpi` extra. Under a
launcher, the first call imports fastnn.kernels.mpi (mpi4py; an ImportError naming the `mpi`
extra when it is missing).
"""
import os
import shutil
import subprocess
import sys
import traceback

import numpy as np

from .validation import check_positive_int

# environment variables by which MPI launchers tell a process it is one of several:
# Open MPI, MPICH/Intel MPI (Hydra, PMI), PMIx (Slurm's srun --mpi=pmix), MVAPICH
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                      "MV2_COMM_WORLD_SIZE")


def mpiexec_command(ranks):
    """The launcher line for `ranks` ranks on this machine, as the tests and benchmark W7 run
    it: the mpiexec next to this Python (the `mpi` extra's Open MPI wheel), else the one on
    PATH. For Open MPI: --oversubscribe (more ranks than free cores is fine on a shared or
    small machine), --bind-to none (the OS may move a rank away from other load), the
    shared-memory transport (`btl self,sm`; TCP was 2-4x slower on one machine), and ranks
    that yield the core while they wait in a collective (`mpi_yield_when_idle`: on the shared
    2-core machine a spinning rank held the core its peer needed, and a 1 MB allreduce took
    2.7-32 ms against 0.2-0.4 ms; benchmarks/allreduce_choice.py), plus --allow-run-as-root
    when running as root (CI containers). MPICH's mpiexec needs none of them.
    Raises FileNotFoundError when there is no mpiexec."""
    ranks = check_positive_int(ranks, "ranks")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if exe is None:
        raise FileNotFoundError("mpiexec not found: install the `mpi` extra (pip install "
                                "\"fastnn-numba[mpi]\": mpi4py and Open MPI wheels)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    cmd = [exe, "-n", str(ranks)]
    if "Open MPI" in version or "OpenRTE" in version or "prte" in version.lower():
        cmd += ["--oversubscribe", "--bind-to", "none", "--mca", "pml", "ob1",
                "--mca", "btl", "self,sm", "--mca", "mpi_yield_when_idle", "1"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd


def _mpi():
    """kernels.mpi when this process runs under MPI, else None (a world of one)."""
    mpi4py_up = "mpi4py.MPI" in sys.modules
    if not mpi4py_up and not any(v in os.environ for v in LAUNCHER_VARIABLES):
        return None
    from .kernels import mpi  # optional: needs mpi4py (the `mpi` extra)
    return mpi


def _this_rank():
    mpi = _mpi()
    return 0 if mpi is None else mpi.COMM.Get_rank()


def _this_size():
    mpi = _mpi()
    return 1 if mpi is None else mpi.COMM.Get_size()


def rank():
    """This process's rank in MPI_COMM_WORLD (0 outside mpiexec)."""
    return _this_rank()


def world_size():
    """The number of processes in MPI_COMM_WORLD (1 outside mpiexec)."""
    return _this_size()


def is_distributed():
    """Whether this process is one of several (world_size() > 1)."""
    return world_size() > 1


def shard_indices(n, seed=0, rank=None, world_size=None):
    """The row indices of shard `rank` of n rows split over `world_size` ranks: a seeded
    permutation of range(n) cut into world_size contiguous pieces whose sizes differ by at
    most one (np.array_split), returned sorted. The same seed gives the same split on every
    rank, so the shards partition the rows; n < world_size leaves some ranks empty."""
    r = _this_rank() if rank is None else rank
    size = _this_size() if world_size is None else check_positive_int(world_size, "world_size")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < size:
        raise ValueError(f"rank must be an int in [0, {size}), got {r!r}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(np.array_split(perm, size)[int(r)])


def shard(x, y=None, seed=0, rank=None, world_size=None):
    """This rank's rows of x (and y) by a seeded split: x[i] (or (x[i], y[i])) with
    i = shard_indices(len(x), seed, rank, world_size). Sizes may differ by one row between
    ranks; a rank may get none. rank / world_size default to this process's (give them to
    build any rank's shard in one process, as the tests do)."""
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x and y have different lengths: {n} and {len(y)}")
    i = shard_indices(n, seed, rank, world_size)
    return x[i] if y is None else (x[i], y[i])


def allreduce(value, op="sum"):
    """The reduction (op "sum", "max" or "min") of `value` over every rank.

    value : ndarray (float32, float64 or int64) or a Python int / float / bool.
        An array is reduced IN PLACE (C-contiguous; any shape) and returned; a scalar's reduced
        value is returned (a bool's "sum" is the number of ranks where it holds; "max" is any,
        "min" all). Every rank must call it with the same shape, dtype and op.
    """
    if op not in ("sum", "max", "min"):
        raise ValueError(f"op must be 'sum', 'max' or 'min', got {op!r}")
    mpi = _mpi()
    if isinstance(value, np.ndarray):
        if value.dtype not in (np.float32, np.float64, np.int64):
            raise TypeError(f"allreduce: the array must be float32, float64 or int64, got "
                            f"{value.dtype}")
        if not value.flags.c_contiguous or not value.flags.writeable:
            raise ValueError("allreduce: the array must be C-contiguous and writeable (it is "
                             "reduced in place)")
        if mpi is not None and value.size:
            status = mpi.allreduce_inplace(value.reshape(-1), mpi.OPS[op])
            if status != 0:
                raise RuntimeError(f"MPI_Allreduce failed with status {status}")
        return value
    if isinstance(value, (bool, np.bool_)):
        total = allreduce(np.array([int(value)], np.int64), op)[0]
        return int(total) if op == "sum" else bool(total)
    if isinstance(value, (int, np.integer)):
        return int(allreduce(np.array([value], np.int64), op)[0])
    if isinstance(value, (float, np.floating)):
        return float(allreduce(np.array([value], np.float64), op)[0])
    raise TypeError(f"allreduce takes an ndarray or a number, got {type(value).__name__}")


def broadcast(value, root=0):
    """Rank `root`'s value on every rank. An ndarray is overwritten in place with root's (same
    shape and dtype everywhere) and returned; any other picklable object is returned as
    root's copy."""
    mpi = _mpi()
    if mpi is None:
        return value
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            raise ValueError("broadcast: the array must be C-contiguous (it is overwritten in "
                             "place)")
        mpi.COMM.Bcast(value, root=root)
        return value
    return mpi.COMM.bcast(value, root=root)


def allgather(value):
    """Every rank's picklable `value`, as a list indexed by rank."""
    mpi = _mpi()
    return [value] if mpi is None else mpi.COMM.allgather(value)


def barrier():
    """Wait until every rank gets here."""
    mpi = _mpi()
    if mpi is not None:
        mpi.COMM.Barrier()


def abort(exc=None, errorcode=1):
    """End the whole job from this rank: print this rank's number and the traceback of `exc`
    (or the one being handled) to stderr, then MPI_Abort, which makes the launcher kill every
    other rank, instead of leaving them blocked in a collective. Outside MPI it only prints."""
    r = rank()
    text = "".join(traceback.format_exception(exc)) if exc is not None else \
        traceback.format_exc()
    sys.stderr.write(f"fastnn.distributed: rank {r} failed; aborting the job\n{text}")
    sys.stderr.flush()
    mpi = _mpi()
    if mpi is not None and world_size() > 1:
        mpi.COMM.Abort(errorcode)


def weighted_means(groups):
    """Means over every rank's rows of per-rank means, in one allreduce: `groups` is a list of
    (rows, {name: this rank's mean over its rows}); returns one dict per group with each
    value's mean over all ranks' rows (Σ rows_r value_r / Σ rows_r). A rank with rows = 0
    contributes nothing (its values are not read, so they may be NaN); a group with no rows
    anywhere gets NaN."""
    buf = []
    for rows, values in groups:
        buf.append(float(rows))
        buf.extend(float(rows) * v if rows else 0.0 for v in values.values())
    buf = allreduce(np.array(buf, np.float64))
    out, i = [], 0
    for _, values in groups:
        total = buf[i]
        out.append({k: float(buf[i + 1 + j] / total) if total else float("nan")
                    for j, k in enumerate(values)})
        i += 1 + len(values)
    return out


class DataParallel:
    """One fit's view of the other ranks, for a backend's Trainer (collective: every rank
    builds it in the same fit). `unit` is the rows a rank trains on between two reductions
    (the batch size, or sync_every for local per-sample SGD); `steps` is the most units any
    rank has, which every rank runs so that the collectives pair up.

    mpi : fastnn.kernels.mpi, whose compiled epochs the Trainer calls.
    """

    def __init__(self, n_local, unit):
        self.mpi = _mpi()
        if self.mpi is None:  # a world of one: the same kernels, with a no-op reduction
            from .kernels import mpi as kernels_mpi  # optional: needs mpi4py
            self.mpi = kernels_mpi
        self.n_local, self.unit = int(n_local), int(unit)
        self.steps = allreduce(-(-self.n_local // self.unit), "max")
        self.n_total = allreduce(self.n_local)

    def mean_loss(self, local_sum):
        """The loss over every rank's rows, from this rank's loss summed over its rows."""
        buf = allreduce(np.array([local_sum, self.n_local], np.float64))
        return float(buf[0] / buf[1]) if buf[1] else float("nan")

    def all(self, flag):
        """Whether `flag` holds on every rank."""
        return allreduce(bool(flag), "min")
