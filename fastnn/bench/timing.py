"""Interleaved timing: on a shared, noisy machine, fastnn and each peer take turns round by
round, so a burst of load from elsewhere hits all of them alike; medians, not means."""
import time

import numpy as np


def interleaved(impls, rounds, min_seconds=0.0, settle=0.0):
    """Time each implementation `rounds` times, taking turns.

    impls: dict name -> (setup, run); setup() is not timed and returns the argument run takes.
    A round of a fast run repeats it until min_seconds have passed and records the mean, so
    timer resolution and call overhead do not dominate microsecond-scale steps.
    settle: seconds of idle before each timed run, for whole fits that use thread pools.
    OpenBLAS's workers spin for ~2^28 cycles (~0.1 s here) after each threaded call before
    they sleep, NumPy and SciPy each carry their own OpenBLAS, and numba's OpenMP workers
    spin too; on a 2-core machine a fit that starts while another library's threads spin
    runs 2-4x slower (fastnn's 20,000 x 100 logistic fit: 25-30 ms idle, 110-150 ms right
    after a scikit-learn fit). With settle, every implementation starts from the same idle
    machine, so the order of the turns does not decide the ratio.
    Returns dict name -> np.ndarray of seconds per run, one entry per round."""
    times = {name: [] for name in impls}
    for _ in range(rounds):
        for name, (setup, run) in impls.items():
            total, reps = 0.0, 0
            while reps == 0 or total < min_seconds:
                arg = setup()  # not timed: resets the state the run changes
                if settle:
                    time.sleep(settle)
                start = time.perf_counter()
                run(arg)
                total += time.perf_counter() - start
                reps += 1
            times[name].append(total / reps)
    return {name: np.asarray(t) for name, t in times.items()}


def summary(seconds):
    """median, min, max of an array of per-run seconds."""
    return float(np.median(seconds)), float(np.min(seconds)), float(np.max(seconds))


def fit_loglog_slope(x, y):
    """Least-squares slope of log y against log x: the exponent a in y ~ c x^a."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, _ = np.polyfit(lx, ly, 1)
    return float(slope)
