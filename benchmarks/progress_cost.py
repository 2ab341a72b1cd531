"""What the in-epoch progress costs: an epoch run in whole-batch slices (as fit does for a
long epoch with verbose=1, so the bar can advance inside it) against one call of the compiled
epoch, 784-128-10 on 20,000 samples, per-sample SGD and batch 32, interleaved, medians.

    OPENBLAS_NUM_THREADS=1 python benchmarks/progress_cost.py
"""
import contextlib
import io
import time

import numpy as np

import fastnn as fn
from fastnn import models


def fit_seconds(x, y, sliced, batch):
    model = fn.Sequential([fn.Dense(128, activation="relu", input_dim=784), fn.Dense(10)], seed=0)
    model.compile(optimizer=fn.optim.SGD(0.01), loss="softmax_cross_entropy")
    # sliced: every epoch counts as long, so it runs in slices of about 0.25 s
    models._Pace.LONG_EPOCH = 0.0 if sliced else np.inf
    models._Pace.PROBE_WORK = 0.0 if sliced else np.inf
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        model.fit(x, y, epochs=2, batch_size=batch, verbose=1)
    return time.perf_counter() - t


def main(rounds=5):
    rng = np.random.default_rng(0)
    x = rng.random((20000, 784)).astype(np.float32)
    y = rng.integers(0, 10, 20000)
    for batch in (1, 32):
        fit_seconds(x[:256], y[:256], False, batch)  # compile the kernels
        times = {False: [], True: []}
        for _ in range(rounds):
            for sliced in (False, True):
                times[sliced].append(fit_seconds(x, y, sliced, batch))
        one, sliced = np.median(times[False]), np.median(times[True])
        print(f"batch {batch:2d}: one call {one * 1e3:7.1f} ms, in slices {sliced * 1e3:7.1f} ms "
              f"(2 epochs): {sliced / one:.3f}x")


if __name__ == "__main__":
    main()
