"""How fastnn's compiled epochs reach MPI_Allreduce, measured (issue 13): run as

    python benchmarks/allreduce_choice.py            # the driver: launches the cases below

The driver launches itself under `mpiexec -n 2` once per launch line (Open MPI's transport and
progress options), and each launch times, on 2 ranks, one in-place sum of P values from inside
@njit code for P in {1e3, 1e4, 1e5, 269322, 1e6} by each way in:

  fastnn f32 / f64   kernels.mpi.allreduce_inplace: MPI_Allreduce bound through a C-ABI shim
                     registered as an LLVM symbol (as kernels.blas binds gemm), float32 native;
  numba-mpi f64      numba_mpi.allreduce on float64 (send and receive buffers);
  numba-mpi f32 via f64   float32 gradients copied into a float64 buffer, reduced, copied back
                     (what numba-mpi 1.3.1 allows without changes);
  numba-mpi f32 registered  numba-mpi with MPI_FLOAT added to its dtype table (a monkeypatch
                     of numba_mpi.common._MPI_DTYPES before the first compile).

Each figure is the median (and the minimum, in brackets: the transport's cost without
interference) of `reps` calls after a warm-up, of the slower rank. Correctness is checked
first (the sum of the ranks' arrays). The machine may be shared: quote ratios.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

SIZES = (1_000, 10_000, 100_000, 269_322, 1_000_000)
LAUNCH_LINES = {
    "default (--oversubscribe only)": [],
    "--bind-to none": ["--bind-to", "none"],
    "--bind-to none, btl self,sm, pml ob1": ["--bind-to", "none", "--mca", "pml", "ob1",
                                             "--mca", "btl", "self,sm"],
    "--bind-to none, btl self,tcp": ["--bind-to", "none", "--mca", "pml", "ob1",
                                     "--mca", "btl", "self,tcp"],
    "--bind-to none, sm, yield_when_idle=1": ["--bind-to", "none", "--mca", "pml", "ob1",
                                              "--mca", "btl", "self,sm",
                                              "--mca", "mpi_yield_when_idle", "1"],
}


def worker():
    from mpi4py import MPI
    import numba_mpi
    import numba_mpi.common
    from numba import njit

    # register float32 with numba-mpi before anything compiles
    numba_mpi.common._MPI_DTYPES[np.dtype(np.float32)] = MPI._addressof(MPI.FLOAT)
    from fastnn.kernels import mpi

    @njit
    def fastnn_loop(buf, reps, times):
        for r in range(reps):
            t0 = numba_mpi.wtime()
            mpi.allreduce_inplace(buf, mpi.OP_SUM)
            times[r] = numba_mpi.wtime() - t0

    @njit
    def numba_mpi_loop(buf, out, reps, times):
        for r in range(reps):
            t0 = numba_mpi.wtime()
            numba_mpi.allreduce(buf, out)
            times[r] = numba_mpi.wtime() - t0

    @njit
    def via_f64_loop(buf, wide, out, reps, times):
        for r in range(reps):
            t0 = numba_mpi.wtime()
            for i in range(buf.shape[0]):
                wide[i] = buf[i]
            numba_mpi.allreduce(wide, out)
            for i in range(buf.shape[0]):
                buf[i] = out[i]
            times[r] = numba_mpi.wtime() - t0

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    results = {}
    for p in SIZES:
        reps = max(5, min(200, int(2e7 // p)))
        row = {}
        for name in ("fastnn f32", "fastnn f64", "numba-mpi f64", "numba-mpi f32 via f64",
                     "numba-mpi f32 registered"):
            dtype = np.float32 if "f32" in name else np.float64
            buf = np.full(p, rank + 1, dtype)
            out = np.empty_like(buf)
            times = np.empty(reps)
            # correctness first: one call, the sum of the ranks' values
            if name.startswith("fastnn"):
                fastnn_loop(buf, 1, times)
                got = buf
            elif name == "numba-mpi f32 via f64":
                via_f64_loop(buf, np.empty(p), np.empty(p), 1, times)
                got = buf
            else:
                numba_mpi_loop(buf, out, 1, times)
                got = out
            assert np.all(got == size * (size + 1) / 2), (name, got[:3])
            comm.Barrier()
            if name.startswith("fastnn"):
                fastnn_loop(buf, reps, times)
            elif name == "numba-mpi f32 via f64":
                via_f64_loop(buf, np.empty(p), np.empty(p), reps, times)
            else:
                numba_mpi_loop(buf, out, reps, times)
            med = comm.allreduce(float(np.median(times[1:])), MPI.MAX)
            best = comm.allreduce(float(np.min(times[1:])), MPI.MAX)
            row[name] = (med, best)
        results[p] = row
    if rank == 0:
        print(json.dumps(results))


def driver():
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    base = [mpiexec, "--allow-run-as-root", "--oversubscribe", "-n", "2"]
    env = dict(os.environ, FASTNN_ALLREDUCE_WORKER="1")
    print(f"allreduce of P values, 2 ranks, median (min) per call of the slower rank, us "
          f"(host: {os.cpu_count()} cores, shared)")
    for title, extra in LAUNCH_LINES.items():
        t0 = time.perf_counter()
        proc = subprocess.run(base + extra + [sys.executable, __file__], capture_output=True,
                              text=True, env=env, timeout=600)
        wall = time.perf_counter() - t0
        print(f"\n== {title}  (launch + run {wall:.1f} s)")
        if proc.returncode != 0:
            print(f"failed ({proc.returncode}): {proc.stderr[-2000:]}")
            continue
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        names = list(next(iter(results.values())))
        print(f"{'P':>9} " + " ".join(f"{n:>24}" for n in names))
        for p, row in results.items():
            print(f"{int(p):>9} " + " ".join(f"{row[n][0] * 1e6:>12.1f} ({row[n][1] * 1e6:>8.1f})"
                                             for n in names))


if __name__ == "__main__":
    worker() if os.environ.get("FASTNN_ALLREDUCE_WORKER") else driver()
