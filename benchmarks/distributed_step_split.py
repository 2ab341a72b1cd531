"""Where the time of a 2-rank data-parallel step goes (issue 13), measured: run as

    python benchmarks/distributed_step_split.py [--steps 40] [--rounds 5]

The driver launches itself under `mpiexec -n 2` twice per repeat, alternating Open MPI's
mpi_yield_when_idle 1 (fastnn.distributed.mpiexec_command's launch line) and 0 (ranks spin while
they wait). Each launch trains W7's network (784-256-256-10, float32, ReLU, softmax
cross-entropy, plain SGD, batch 128 per rank, one thread per rank) and times, round by round
in turns, blocks of `steps` steps of

  solo       kernels.cpu.minibatch_epoch on rank 0 alone (the other rank asleep): a plain step;
  apart      kernels.cpu.minibatch_epoch on both ranks at once, no messages: the machine's
             ceiling for two ranks;
  direct     kernels.mpi.minibatch_epoch's plain-SGD step, instrumented: the direct gemm
             update of this rank's share, then the Allreduce of the parameters;
  fused      its step for every other optimizer (here with SGD's rule): the batch-sum
             gradient, the Allreduce of P + 1 values, kernels.cpu._reduced_step (scale, L2
             and update in one pass);
  unfused    the step before issue 13 part D: the mean gradient (grads zeroed first), the
             weighting pass, the Allreduce, the scaling pass, the optimizer pass.

The instrumented steps read CLOCK_MONOTONIC (one clock for every process of the machine)
inside the compiled loop, so each step splits into: compute (this rank's gradient, plus the
weighting pass for unfused), wait (the last rank's arrival at the Allreduce minus this rank's),
allreduce (from the last arrival to this rank's return: the transfer itself), and after (the
passes after the Allreduce). Figures are medians over steps and ranks, in ms per step. The
machine may be shared: the modes take turns so load hits them alike.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

_libc = ctypes.CDLL(None)
_clock_gettime = _libc.clock_gettime
_clock_gettime.argtypes = [ctypes.c_int, ctypes.c_int64]  # (CLOCK_MONOTONIC, &timespec)
_clock_gettime.restype = ctypes.c_int
SIZES = np.array([784, 256, 256, 10])
BATCH, LR = 128, 0.05
PHASES = ("compute", "wait", "allreduce", "after")
MODES = {"direct": 0, "fused": 1, "unfused": 2}
DIRECT, FUSED, UNFUSED = MODES.values()


@njit
def _now(ts):
    """CLOCK_MONOTONIC in seconds (ts: int64[2] scratch for the timespec)."""
    _clock_gettime(1, ts.ctypes.data)
    return ts[0] + ts[1] * 1e-9


def worker(out, steps, rounds):
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from fastnn.bench import peers
    from fastnn.kernels import codes, cpu, mpi
    from fastnn.kernels.layout import mlp_layout

    @njit
    def instrumented(params, comm, x, labels, order, sizes, w_off, b_off, acts, l2, hyper,
                     step, mode, times):
        """kernels.mpi.minibatch_epoch's steps (mode DIRECT: plain SGD's; FUSED: every other
        optimizer's, here with SGD's rule) or the steps before issue 13 part D (UNFUSED), with
        times[t] = (start, arrival at the Allreduce, its return, end) of step t."""
        p = params.shape[0]
        grads = comm[:p]
        none, drop = np.zeros(0, params.dtype), np.zeros(sizes.shape[0] - 1)
        targets = np.zeros((0, 1), params.dtype)
        bufs = cpu._minibatch_buffers(params, grads, labels, targets, none, BATCH, sizes,
                                      w_off, b_off, drop, 0)
        ws, dws = bufs[12], bufs[14]
        ts = np.zeros(2, np.int64)
        share = 1.0 / mpi._global_rows(BATCH, 1, BATCH)[1]
        for t in range(times.shape[0]):
            times[t, 0] = _now(ts)
            if mode == UNFUSED:
                grads[:] = 0.0  # the gradient accumulated into zeroed grads
            cpu._minibatch_gradient(grads, bufs, x, labels, targets, none, order, t * BATCH,
                                    BATCH, sizes, acts, 0.0, l2, drop, codes.LOSS_SOFTMAX_CE,
                                    0.0, mode == DIRECT, False, mode != UNFUSED, hyper[0], 0.0,
                                    hyper[0] * share / BATCH, share)
            if mode == UNFUSED:  # the weighting pass of reduce_weighted
                weight = cpu._typed(comm, BATCH)
                for i in range(p):
                    grads[i] = grads[i] * weight
            comm[p] = BATCH
            times[t, 1] = _now(ts)
            mpi.allreduce_inplace(params if mode == DIRECT else comm, mpi.OP_SUM)
            times[t, 2] = _now(ts)
            step += 1
            if mode == FUSED:
                cpu._reduced_step(params, grads, none, none, codes.OPT_SGD, hyper, step,
                                  1.0 / comm[p], l2, sizes, w_off)
            elif mode == UNFUSED:  # the scaling pass, the L2 pass, the optimizer pass
                scale = cpu._typed(comm, 1.0 / comm[p])
                for i in range(p):
                    grads[i] *= scale
                for l in range(sizes.shape[0] - 1):
                    if l2[l] != 0.0:
                        cpu._add_l2_gradient(dws[l], ws[l], l2[l])
                cpu._optimizer_step(params, grads, none, none, codes.OPT_SGD, hyper, step)
            times[t, 3] = _now(ts)
        return step

    comm_world = MPI.COMM_WORLD
    rank = comm_world.Get_rank()
    threadpool_limits(limits=1)
    x, labels = peers.make_data(steps * BATCH * 2, 784, 10, seed=rank)
    start = peers.init_params(SIZES, np.float32, seed=1)
    w_off, b_off, p = mlp_layout(SIZES)
    acts = np.array([codes.RELU, codes.RELU, codes.IDENTITY], np.int64)
    l2, order = np.zeros(3), np.arange(steps * BATCH)
    hyper = np.zeros(codes.N_HYPER)
    hyper[codes.HYPER_LR] = LR
    params, comm = start.copy(), np.zeros(p + 1, np.float32)
    times = np.zeros((steps, 4))
    empty = np.zeros(0, np.float32)

    def plain():
        cpu.minibatch_epoch(params, comm[:p], empty, empty, x, labels, np.zeros((0, 1),
                            np.float32), empty, order, BATCH, SIZES, w_off, b_off, acts, 0.0,
                            l2, np.zeros(3), 0, codes.LOSS_SOFTMAX_CE, 0.0, codes.OPT_SGD,
                            hyper, 0)

    def sleep_barrier():
        request = comm_world.Ibarrier()
        while not request.Test():
            time.sleep(1e-3)

    result = {m: [] for m in ("solo", "apart")}
    result.update({f"{m} {ph}": [] for m in MODES for ph in PHASES})
    for round_ in range(rounds + 1):  # round 0 warms up (compiles) and is not kept
        params[:] = start
        comm_world.Barrier()
        if rank == 0:
            t0 = time.perf_counter()
            plain()
            solo = (time.perf_counter() - t0) / steps
        sleep_barrier()
        comm_world.Barrier()
        t0 = time.perf_counter()
        plain()
        apart = comm_world.allreduce((time.perf_counter() - t0) / steps, op=MPI.MAX)
        for name, mode in MODES.items():
            params[:] = start
            comm_world.Barrier()
            instrumented(params, comm, x, labels, order, SIZES, w_off, b_off, acts, l2, hyper,
                         0, mode, times)
            every = np.array(comm_world.allgather(times))  # (ranks, steps, 4)
            last_arrival = every[:, :, 1].max(axis=0)
            phases = {"compute": times[:, 1] - times[:, 0],
                      "wait": last_arrival - times[:, 1],
                      "allreduce": times[:, 2] - last_arrival,
                      "after": times[:, 3] - times[:, 2]}
            if round_ > 0:
                for ph in PHASES:
                    result[f"{name} {ph}"].extend(phases[ph].tolist())
        if round_ > 0:
            result["apart"].append(apart)
            if rank == 0:
                result["solo"].append(solo)
    gathered = comm_world.gather(result)
    if rank == 0:
        merged = {k: [] for k in result}
        for part in gathered:
            for k, v in part.items():
                merged[k].extend(np.ravel(v).tolist())
        with open(out, "w") as f:
            json.dump({k: float(np.median(v)) * 1e3 for k, v in merged.items() if v}, f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from fastnn.distributed import mpiexec_command
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for yield_ in ("1", "0"):
                cmd = mpiexec_command(2)
                cmd[cmd.index("mpi_yield_when_idle") + 1] = yield_
                out = os.path.join(tmp, f"{rep}-{yield_}.json")
                subprocess.run(cmd + [sys.executable, "-m", "mpi4py", __file__, "--worker",
                                      out, str(args.steps), str(args.rounds)],
                               check=True, env=env)
                with open(out) as f:
                    rows.setdefault(yield_, []).append(json.load(f))
    print(f"ms per step, medians over steps, ranks and {args.rounds} rounds of {args.steps} "
          f"steps; one line per launch (load average {os.getloadavg()[0]:.2f})")
    keys = list(rows["1"][0])
    print("yield " + " ".join(f"{k:>16}" for k in keys))
    for yield_, runs in rows.items():
        for r in runs:
            print(f"{yield_:>5} " + " ".join(f"{r[k]:16.3f}" for k in keys))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
