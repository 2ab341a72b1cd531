"""Run by tests/distributed/test_cuda_mpi.py as
`mpiexec -n 2 python -m mpi4py cuda_worker.py OUT.json` (it reuses sequential_worker's data
helpers):
data-parallel Sequential.fit with device="cuda" (one GPU per rank, the reduction through the
host) in Numba's CUDA simulator, against fits on the CPU backend that every rank runs itself:
single-process ones (distributed=False) where the steps are those of one process with batch
R B, else the CPU backend's distributed fit (uneven shards, local SGD with sync_every > 1),
which tests/distributed/test_sequential_mpi.py holds to one process. Rank 0 writes
{check: {"diff": largest |difference|, "same_on_ranks": bool, ...}} to OUT.json.
"""
import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda loads: no GPU in CI

import json  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from sequential_worker import data, interleaved, same_on_ranks  # noqa: E402

import fastnn as fn  # noqa: E402
from fastnn import cpu_backend, cuda_backend, distributed  # noqa: E402

RANK, RANKS = distributed.rank(), distributed.world_size()


def model(device, optimizer, l2=0.0):
    """5-4-3: tiny, the simulator runs one Python thread per GPU thread."""
    m = fn.Sequential([fn.Dense(4, activation="tanh",
                                kernel_regularizer=fn.L2(l2) if l2 else None),
                       fn.Dense(3)], seed=3, dtype="float64", device=device)
    m.compile(optimizer=optimizer, loss="softmax_cross_entropy")
    return m


def compare(par, one, hist=None, ref=None):
    out = {"diff": float(np.max(np.abs(par.params - one.params))),
           "same_on_ranks": same_on_ranks(par.params)}
    if hist is not None:
        out["loss_diff"] = float(np.max(np.abs(np.subtract(hist.history["loss"],
                                                           ref.history["loss"]))))
    return out


def main():
    results = {}
    x, y = data(RANKS * 2 * 3)  # 3 steps of 2 rows per rank: 12 rows on 2 ranks
    xr, yr = interleaved(x, y, 2)
    # mini-batch: R ranks on the GPU with batch 2 == one CPU process with batch 2 R
    for name, opt, l2 in (("sgd_l2", lambda: fn.optim.SGD(lr=0.3, momentum=0.5), 1e-2),
                          ("adam", lambda: fn.optim.Adam(lr=0.05), 0.0)):
        par = model("cuda", opt(), l2)
        hist = par.fit(xr, yr, epochs=2, batch_size=2, shuffle=False, verbose=0,
                       distributed=True)
        one = model("cpu", opt(), l2)
        ref = one.fit(x, y, epochs=2, batch_size=2 * RANKS, shuffle=False, verbose=0)
        results[name] = compare(par, one, hist, ref)
    # tol's gradient norm: of the loss over every rank's rows, the L2 terms once
    m = model("cpu", fn.optim.SGD(lr=0.1), l2=1e-2)
    m.build(5)
    yk, kernel = m.loss.prepare(y, 3, m.dtype, "y")
    _, g = cpu_backend.gradient(m.stack, m.params, x, yk, None, kernel)
    trainer = cuda_backend.Trainer(m.stack, m.params, m.optimizer, xr,
                                   m.loss.prepare(yr, 3, m.dtype, "y")[0], None, kernel, 2,
                                   False, distributed.DataParallel(xr.shape[0], 2))
    results["gradient_norm"] = {"diff": abs(trainer.gradient_norm() - np.linalg.norm(g)),
                                "same_on_ranks": True}

    # uneven shards (5 and 2 rows: steps past a rank's rows) and a rank with none (7 and 0),
    # batch 2: the GPU's steps equal the CPU backend's distributed fit
    xu, yu = data(7, seed=2)
    for name, cut in (("uneven", 5), ("zero_rows", 7)):
        mine = slice(0, cut) if RANK == 0 else slice(cut, 7)
        fits = [model(device, fn.optim.Adam(lr=0.05)) for device in ("cuda", "cpu")]
        for m in fits:
            m.fit(xu[mine], yu[mine], epochs=1, batch_size=2, shuffle=False, verbose=0,
                  distributed=True)
        results[name] = compare(*fits)

    # per-sample SGD: local SGD with sync_every=1 == synchronous SGD with batch R (one row per
    # rank), as on the CPU
    xr1, yr1 = interleaved(x, y, 1)
    par = model("cuda", fn.optim.SGD(lr=0.2))
    par.fit(xr1, yr1, epochs=2, batch_size=1, shuffle=False, verbose=0, distributed=True)
    one = model("cpu", fn.optim.SGD(lr=0.2))
    one.fit(x, y, epochs=2, batch_size=RANKS, shuffle=False, verbose=0)
    results["local_sgd_k1"] = compare(par, one)
    # sync_every=4: the GPU's rounds equal the CPU backend's distributed local SGD
    par = model("cuda", fn.optim.SGD(lr=0.2))
    par.fit(xr, yr, epochs=2, batch_size=1, shuffle=False, verbose=0, distributed=True,
            sync_every=4)
    par_cpu = model("cpu", fn.optim.SGD(lr=0.2))
    par_cpu.fit(xr, yr, epochs=2, batch_size=1, shuffle=False, verbose=0, distributed=True,
                sync_every=4)
    results["local_sgd_k4"] = compare(par, par_cpu)
    if RANK == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
