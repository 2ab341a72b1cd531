"""W7's ranks: `mpiexec -n R python -m mpi4py -m fastnn.bench.w7_worker OUT.json [options]`.

The benchmark driver (workloads.w7_launch) starts this on R ranks; rank 0 writes OUT.json.
In one job, round by round (so load from elsewhere on a shared machine hits every
implementation alike), it times one epoch each of

    fastnn, 1 rank       Sequential.fit on rank 0's rows, the other ranks idle (asleep, not
                         spinning in MPI)
    fastnn, R ranks      Sequential.fit(..., distributed=True), every rank its own rows
    DDP, 1 rank          PyTorch DistributedDataParallel (gloo) in a process group of rank 0
    DDP, R ranks         the same over all R ranks
    R fits, no messages  every rank an ordinary fit on its own rows at the same time: what R
                         ranks could reach on this machine if messages cost nothing

all W2's network (784-256-256-10, ReLU, softmax cross-entropy, float32), plain SGD, batch B
per rank, one thread per rank (BLAS, numba and torch at 1), no shuffling. Before timing,
each implementation's weights after a few steps are checked against fastnn on one process
with batch R' B over the same rows (R' its rank count): data parallelism with the gradient
averaged over every rank's batch is that. Then the allreduce of a float32 buffer of P values
is timed over the R ranks for several P, through mpi4py's Allreduce, fastnn's compiled one
(fastnn.kernels.mpi, what the distributed epoch calls) and torch.distributed (gloo).

The data: peers.make_data(R N, ...) cut into R contiguous shards of N rows, rank r taking
shard r. Launched with `python -m mpi4py`, a failed check on one rank aborts the job.
"""
import argparse
import inspect
import json
import os
import sys
import time

import numba
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from mpi4py import MPI  # this module only runs under mpiexec, with the `mpi` extra installed
from threadpoolctl import threadpool_limits
from torch.nn.parallel import DistributedDataParallel

from .. import Sequential
from ..kernels import mpi as kernels_mpi
from . import peers
from .workloads import RTOL, ATOL, W2_SIZES, _reset, check_close, fastnn_mlp

LR = 0.05  # W2's
COMM = MPI.COMM_WORLD


def log(message, t0=time.perf_counter()):
    """A progress line on rank 0's stderr (the driver passes it through)."""
    if COMM.Get_rank() == 0:
        print(f"[w7 rank 0 {time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr,
              flush=True)


def idle_barrier():
    """A barrier that waits asleep, so an idle rank leaves its core to the timed ones (Open
    MPI's blocking barrier spins)."""
    request = COMM.Ibarrier()
    while not request.Test():
        time.sleep(1e-3)


def timed(run):
    """Seconds of run() on every rank, from a common start to the last rank's end."""
    COMM.Barrier()
    start = time.perf_counter()
    run()
    COMM.Barrier()
    return time.perf_counter() - start


def interleaved_rows(x, y, shard_rows, used_rows, ranks, batch):
    """The rows one process with batch ranks * batch sees when `ranks` ranks each step through
    the first used_rows rows of their own shard (rows [r shard_rows, (r + 1) shard_rows)) with
    batch `batch`: step t's batch is every rank's t-th batch, rank after rank."""
    order = np.concatenate([np.arange(r * shard_rows + t, r * shard_rows + min(t + batch,
                                                                               used_rows))
                            for t in range(0, used_rows, batch) for r in range(ranks)])
    return x[order], y[order]


def one_process(start, x, y, batch):
    """fastnn's weights after one epoch on one process: the reference of every check."""
    model = fastnn_mlp(np.array(W2_SIZES), start, LR)
    model.fit(x, y, epochs=1, batch_size=batch, shuffle=False, verbose=0)
    return model.params.copy()


class DDP:
    """PyTorch's data parallelism as its users write it: nn.Sequential in
    DistributedDataParallel (gloo), torch.optim.SGD, F.cross_entropy."""

    def __init__(self, start, group):
        self.net = peers.TorchMLP(start, W2_SIZES, LR)
        self.model = DistributedDataParallel(self.net.model, process_group=group)
        self.start = start

    def reset(self):
        self.net.load(self.start)

    def epoch(self, x, y, batch):
        optimizer = self.net.optimizer
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(self.model(x[i:i + batch]), y[i:i + batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def fastnn_distributed_available():
    """Whether Sequential.fit takes distributed= (issue 13's core)."""
    return "distributed" in inspect.signature(Sequential.fit).parameters


def allreduce_sweep(sizes, min_seconds):
    """{method: [seconds per allreduce at each P]}: the slowest rank's mean over enough
    repetitions to fill min_seconds (at least 5), the median of 3 such. The buffers hold
    zeros, which stay zeros however often they are summed."""
    out = {"mpi4py Allreduce": [], "fastnn (kernels.mpi)": [], "torch.distributed gloo": []}
    for p in sizes:
        buf = np.zeros(int(p), np.float32)
        tensor = torch.zeros(int(p))
        runs = {"mpi4py Allreduce": lambda: COMM.Allreduce(MPI.IN_PLACE, buf),
                "fastnn (kernels.mpi)": lambda: kernels_mpi.allreduce_inplace(
                    buf, kernels_mpi.OP_SUM),
                "torch.distributed gloo": lambda: dist.all_reduce(tensor)}
        for name, run in runs.items():
            run()  # warm: connections, first-call compilation
            begin = time.perf_counter()
            for _ in range(5):
                run()
            each = (time.perf_counter() - begin) / 5
            # enough repetitions to fill min_seconds, the same count on every rank
            reps = COMM.allreduce(max(5, int(np.ceil(min_seconds / max(each, 1e-9)))),
                                  op=MPI.MAX)
            samples = []
            for _ in range(3):
                COMM.Barrier()
                begin = time.perf_counter()
                for _ in range(reps):
                    run()
                samples.append(COMM.allreduce((time.perf_counter() - begin) / reps, op=MPI.MAX))
            out[name].append(float(np.median(samples)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastnn.bench.w7_worker")
    parser.add_argument("out", help="JSON file rank 0 writes")
    parser.add_argument("--samples", type=int, default=20_000, help="rows per rank")
    parser.add_argument("--batch", type=int, default=128, help="batch per rank")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=8)
    parser.add_argument("--allreduce-sizes", default="1000,10000,100000,269322,1000000")
    parser.add_argument("--allreduce-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)

    rank, ranks = COMM.Get_rank(), COMM.Get_size()
    threadpool_limits(limits=1)
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    solo_group = dist.new_group([0])  # every rank takes part in making it

    sizes, n, batch = np.array(W2_SIZES), args.samples, args.batch
    x, y = peers.make_data(ranks * n, int(sizes[0]), int(sizes[-1]), seed=0)
    start = peers.init_params(sizes, np.float32, seed=1)
    mine = slice(rank * n, (rank + 1) * n)
    x_mine, y_mine = x[mine], y[mine]
    tx, ty = torch.from_numpy(x_mine), torch.from_numpy(y_mine)
    result = {"ranks": ranks, "samples_per_rank": n, "batch_per_rank": batch,
              "sizes": list(W2_SIZES), "checks": {}, "unavailable": {}, "epochs_s": {}}
    solo, everyone = "fastnn, 1 rank", f"fastnn, {ranks} ranks"
    ddp_solo, ddp_all = "DDP, 1 rank", f"DDP, {ranks} ranks"
    apart = f"{ranks} fits, no messages"

    # ---- build every implementation and check it against fastnn on one process
    log("started; checking every implementation against fastnn on one process")
    n_check = min(n, args.check_steps * batch)
    reference = {r: one_process(start, *interleaved_rows(x, y, n, n_check, r, batch), r * batch)
                 for r in {1, ranks}} if rank == 0 else {}
    runs = {}  # name -> this rank's part of one epoch (None: rank 0 runs it alone)
    model = fastnn_mlp(sizes, start, LR)
    runs[solo] = lambda: _reset(model, start).fit(x_mine, y_mine, epochs=1, batch_size=batch,
                                                  shuffle=False, verbose=0)
    if fastnn_distributed_available():
        model.fit(x_mine[:n_check], y_mine[:n_check], epochs=1, batch_size=batch, shuffle=False,
                  verbose=0, distributed=True)
        if rank == 0:
            result["checks"][everyone] = check_close(everyone, model.params, reference[ranks])
        runs[everyone] = lambda: _reset(model, start).fit(
            x_mine, y_mine, epochs=1, batch_size=batch, shuffle=False, verbose=0,
            distributed=True)
    else:
        result["unavailable"][everyone] = "Sequential.fit has no distributed= yet (issue 13 core)"
    # the machine's ceiling: every rank trains its own model at once, no messages at all
    runs[apart] = runs[solo]
    runs[ddp_solo] = None
    if rank == 0:
        ddp = DDP(start, solo_group)
        ddp.epoch(tx[:n_check], ty[:n_check], batch)
        result["checks"][ddp_solo] = check_close(ddp_solo, ddp.net.flat_params(), reference[1])
        runs[ddp_solo] = lambda: (ddp.reset(), ddp.epoch(tx, ty, batch))
    ddp_every = DDP(start, None)
    ddp_every.epoch(tx[:n_check], ty[:n_check], batch)
    if rank == 0:
        result["checks"][ddp_all] = check_close(ddp_all, ddp_every.net.flat_params(),
                                                reference[ranks])
    runs[ddp_all] = lambda: (ddp_every.reset(), ddp_every.epoch(tx, ty, batch))
    COMM.Barrier()

    # ---- time them, taking turns round by round (one untimed warm-up round first)
    log(f"timing {', '.join(runs)}: {args.rounds} rounds after a warm-up round")
    for name in runs:
        result["epochs_s"][name] = []
    for round_ in range(args.rounds + 1):
        for name, run in runs.items():
            if name in (solo, ddp_solo):  # rank 0 works alone; the others sleep in the barrier
                seconds = 0.0
                if rank == 0:
                    begin = time.perf_counter()
                    run()
                    seconds = time.perf_counter() - begin
                idle_barrier()
            else:
                seconds = timed(run)
            if round_ > 0:
                result["epochs_s"][name].append(seconds)

    log("allreduce against P")
    sizes_p = [int(float(s)) for s in args.allreduce_sizes.split(",") if s]
    result["allreduce_p"] = sizes_p
    result["allreduce_s"] = allreduce_sweep(sizes_p, args.allreduce_seconds) \
        if ranks > 1 else {}
    result["params"] = int(start.size)
    result["tolerances"] = {"rtol": RTOL, "atol": ATOL}
    log("done")
    dist.destroy_process_group()
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
