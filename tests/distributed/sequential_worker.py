"""Run by tests/distributed/test_sequential_mpi.py as
`mpiexec -n R python -m mpi4py sequential_worker.py OUT.json MODE [CHECKPOINT]`.

MODE "main" (R = 2 or 3): every check of a data-parallel Sequential.fit that ends normally;
rank 0 writes {check: {"diff": largest |difference|, "same_on_ranks": bool, ...}} to OUT.json.
Every rank builds the same data (seeded) and compares with single-process fits it runs itself
(no MPI involved: distributed=False). MODE "raise_in_fit" / "raise_outside" / "kill": the
fault cases, which must end the whole job (the test reads the exit status and stderr).
"""
import hashlib
import json
import os
import signal
import sys

import numpy as np

import fastnn as fn
from fastnn import distributed

RANK, RANKS = distributed.rank(), distributed.world_size()
OUT, MODE = (sys.argv[1], sys.argv[2]) if __name__ == "__main__" else (None, None)


def model(hidden=6, dtype="float64", optimizer=None, seed=3, l2=0.0):
    m = fn.Sequential([fn.Dense(hidden, activation="tanh",
                                kernel_regularizer=fn.L2(l2) if l2 else None),
                       fn.Dense(3)], seed=seed, dtype=dtype)
    m.compile(optimizer=optimizer or fn.optim.SGD(lr=0.1), loss="softmax_cross_entropy",
              metrics=["accuracy"])
    return m


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)


def same_on_ranks(params):
    digests = distributed.allgather(hashlib.sha256(params.tobytes()).hexdigest())
    return len(set(digests)) == 1


def interleaved(x, y, batch):
    """Rank r's rows such that step t's global batch (the ranks' t-th batches together) is
    rows [t R batch, (t + 1) R batch) of (x, y): one process with batch R * batch and no
    shuffle takes the same steps."""
    rows = np.arange(x.shape[0]).reshape(-1, RANKS, batch)[:, RANK, :].reshape(-1)
    return x[rows], y[rows]


def main():
    results = {}
    x, y = data(RANKS * 4 * 6)  # 6 steps of 4 rows per rank

    # mini-batch SGD and Adam: R ranks with batch 4 == one process with batch 4 R
    for name, opt in (("sgd", lambda: fn.optim.SGD(lr=0.2, momentum=0.5)),
                      ("sgd_plain_l2", lambda: fn.optim.SGD(lr=0.2)),
                      ("adam", lambda: fn.optim.Adam(lr=0.01))):
        l2 = 1e-3 if name == "sgd_plain_l2" else 0.0
        xr, yr = interleaved(x, y, 4)
        par = model(optimizer=opt(), l2=l2)
        hist = par.fit(xr, yr, epochs=3, batch_size=4, shuffle=False, verbose=0,
                       distributed=True)
        one = model(optimizer=opt(), l2=l2)
        ref = one.fit(x, y, epochs=3, batch_size=4 * RANKS, shuffle=False, verbose=0)
        results[name] = {
            "diff": float(np.max(np.abs(par.params - one.params))),
            "loss_diff": float(np.max(np.abs(np.subtract(hist.history["loss"],
                                                         ref.history["loss"])))),
            "acc_diff": float(np.max(np.abs(np.subtract(hist.history["accuracy"],
                                                        ref.history["accuracy"])))),
            "same_on_ranks": same_on_ranks(par.params)}

    # float32 runs and stays identical on every rank (shuffled, dropout)
    m = fn.Sequential([fn.Dense(7, activation="relu"), fn.Dropout(0.2), fn.Dense(3)], seed=1)
    m.compile(optimizer="adam", loss="softmax_cross_entropy")
    h = m.fit(*distributed.shard(x, y, seed=5), epochs=2, batch_size=3, verbose=0,
              distributed=True)
    results["float32_dropout"] = {"diff": 0.0, "same_on_ranks": same_on_ranks(m.params),
                                  "finite": bool(np.isfinite(h.history["loss"]).all())}

    # local SGD, sync_every=1, == synchronous SGD with a batch of R rows (one per rank)
    xr, yr = interleaved(x, y, 1)
    par = model(optimizer=fn.optim.SGD(lr=0.1))
    par.fit(xr, yr, epochs=2, batch_size=1, shuffle=False, verbose=0, distributed=True)
    one = model(optimizer=fn.optim.SGD(lr=0.1))
    one.fit(x, y, epochs=2, batch_size=RANKS, shuffle=False, verbose=0)
    results["local_sgd_k1"] = {"diff": float(np.max(np.abs(par.params - one.params))),
                               "same_on_ranks": same_on_ranks(par.params)}
    # sync_every=5: ranks average every 5 samples; still one model, and it learns
    par = model(optimizer=fn.optim.SGD(lr=0.05))
    h = par.fit(*distributed.shard(x, y, seed=1), epochs=4, batch_size=1, verbose=0,
                distributed=True, sync_every=5)
    results["local_sgd_k5"] = {"diff": 0.0, "same_on_ranks": same_on_ranks(par.params),
                               "improves": h.history["loss"][-1] < h.history["loss"][0]}

    # uneven shards, the last rank with none: the same steps as one process that runs each
    # global batch (the ranks' t-th batches together) as one step; Adam reduces gradients,
    # plain SGD (with weight decay and L2) parameters, a rank without rows its decayed share
    n = 37
    xu, yu = data(n, seed=2)
    cuts = [0, 23, n] + [n] * (RANKS - 2)  # rank 0: 23 rows, rank 1: 14, rank 2: none
    mine = slice(cuts[RANK], cuts[RANK + 1])
    for name, opt, l2 in (("uneven_zero_row", lambda: fn.optim.Adam(lr=0.02), 0.0),
                          ("uneven_zero_row_sgd",
                           lambda: fn.optim.SGD(lr=0.2, weight_decay=0.01), 1e-3)):
        par = model(optimizer=opt(), l2=l2)
        hist = par.fit(xu[mine], yu[mine], epochs=2, batch_size=5, shuffle=False, verbose=0,
                       distributed=True, validation_data=data(11, seed=RANK + 7))
        one = model(optimizer=opt(), l2=l2)
        for _ in range(2):
            for t in range(-(-23 // 5)):
                rows = np.concatenate([np.arange(cuts[r], cuts[r + 1])[t * 5:(t + 1) * 5]
                                       for r in range(RANKS)])
                one.fit(xu[rows], yu[rows], epochs=1, batch_size=rows.size, shuffle=False,
                        verbose=0)
        xv = np.concatenate([data(11, seed=r + 7)[0] for r in range(RANKS)])
        yv = np.concatenate([data(11, seed=r + 7)[1] for r in range(RANKS)])
        results[name] = {
            "diff": float(np.max(np.abs(par.params - one.params))),
            "same_on_ranks": same_on_ranks(par.params),
            "val_loss_diff": abs(hist.history["val_loss"][-1] - one.evaluate(xv, yv)["loss"]),
            "steps": hist.params["steps"]}

    # early stopping on rank 0 stops every rank in the same epoch
    stop = fn.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    h = model().fit(*distributed.shard(x, y), epochs=6, batch_size=4, verbose=0,
                    distributed=True, callbacks=[stop])
    results["early_stop"] = {"diff": 0.0, "same_on_ranks": len(set(distributed.allgather(
        len(h.epoch)))) == 1, "epochs": len(h.epoch)}

    # mismatched architectures: refused on every rank, naming the difference
    odd = model(hidden=6 + (RANK == RANKS - 1))
    try:
        odd.fit(x[:8], y[:8], epochs=1, verbose=0, distributed=True)
        message = None
    except ValueError as e:
        message = str(e)
    messages = distributed.allgather(message)
    results["mismatch"] = {"diff": 0.0, "messages": messages,
                           "same_on_ranks": len(set(messages)) == 1}

    # checkpoints: rank 0 saves during the fit; resuming on the same ranks continues exactly
    # (per-rank shuffles depend on seed, rank and epoch only); CHECKPOINT (from an earlier
    # launch on another number of ranks) resumes here
    ckpt = sys.argv[3]
    xs, ys = distributed.shard(x, y, seed=9)
    full = model(optimizer=fn.optim.Adam(lr=0.01))
    full.fit(xs, ys, epochs=4, batch_size=4, verbose=0, distributed=True)
    part = model(optimizer=fn.optim.Adam(lr=0.01))
    part.fit(xs, ys, epochs=2, batch_size=4, verbose=0, distributed=True,
             callbacks=[fn.callbacks.ModelCheckpoint(ckpt + f".{RANKS}", monitor="loss")])
    resumed = fn.load(ckpt + f".{RANKS}")
    resumed.fit(xs, ys, epochs=4, batch_size=4, verbose=0, distributed=True, initial_epoch=2)
    results["resume_same_ranks"] = {"diff": float(np.max(np.abs(resumed.params - full.params))),
                                    "same_on_ranks": same_on_ranks(resumed.params)}
    other = ckpt + f".{3 - RANKS + 2}"  # a checkpoint the launch on the other rank count wrote
    if os.path.exists(other):
        other_model = fn.load(other)
        start = other_model.params.copy()
        t0 = other_model.optimizer.t
        h = other_model.fit(xs, ys, epochs=3, batch_size=4, verbose=0, distributed=True,
                            initial_epoch=2)
        results["resume_other_ranks"] = {
            "diff": 0.0, "same_on_ranks": same_on_ranks(other_model.params),
            "moved": bool(np.any(other_model.params != start)),
            "adam_steps": [int(t0), int(other_model.optimizer.t)],
            "finite": bool(np.isfinite(h.history["loss"]).all())}
    if RANK == 0:
        with open(OUT, "w") as f:
            json.dump(results, f)


def faults():
    x, y = data(40)
    xs, ys = distributed.shard(x, y)
    if MODE == "raise_in_fit":  # rank 0's callback raises while the others are in the epoch
        class Boom(fn.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise RuntimeError("boom from rank 0's callback")
        model().fit(xs, ys, epochs=50, batch_size=2, verbose=0, distributed=True,
                    callbacks=[Boom()])
    elif MODE == "raise_outside":  # one rank fails outside fit; python -m mpi4py aborts
        if RANK == 1:
            raise RuntimeError("boom from rank 1 outside fit")
        model().fit(xs, ys, epochs=10_000, batch_size=2, verbose=0, distributed=True)
    elif MODE == "kill":
        if RANK == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        model().fit(xs, ys, epochs=10_000, batch_size=2, verbose=0, distributed=True)
    print(f"rank {RANK} finished: the fault did not end the job", flush=True)


if __name__ == "__main__":
    main() if MODE == "main" else faults()
