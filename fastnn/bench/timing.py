"""Interleaved timing: on a shared, noisy machine, fastnn and each peer take turns round by
round, so a burst of load from elsewhere hits all of them alike; medians, not means."""
import time

import numpy as np


def interleaved(impls, rounds, min_seconds=0.0):
    """Time each implementation `rounds` times, taking turns.

    impls: dict name -> (setup, run); setup() is not timed and returns the argument run takes.
    A round of a fast run repeats it until min_seconds have passed and records the mean, so
    timer resolution and call overhead do not dominate microsecond-scale steps.
    Returns dict name -> np.ndarray of seconds per run, one entry per round."""
    times = {name: [] for name in impls}
    for _ in range(rounds):
        for name, (setup, run) in impls.items():
            total, reps = 0.0, 0
            while reps == 0 or total < min_seconds:
                arg = setup()  # not timed: resets the state the run changes
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
