"""Shared fixtures for the benchmarks: one data set, one starting point, one visiting order.

Run with `pytest benchmarks/ --benchmark-only`; the plain `pytest` run (testpaths = tests)
never collects this directory.
"""
import os

import numpy as np
import pytest

from fastnn.bench.peers import init_params, make_data

SIZES = (784, 128, 10)
N_SAMPLES = 10_000
DATA_SEED = 0
PARAM_SEED = 1  # its own stream, so the weights do not share random numbers with the data


@pytest.fixture(scope="session")
def rounds():
    """Timed rounds per benchmark: FASTNN_BENCH_ROUNDS, default 3 (a torch eager epoch
    takes seconds here, and every round is a full epoch)."""
    return int(os.environ.get("FASTNN_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="session")
def sizes():
    """Layer widths, input first: (3,) int64, as the kernels take them."""
    return np.array(SIZES, np.int64)


@pytest.fixture(scope="session")
def data(sizes):
    """x (N, 784) float32 in [0, 1), labels (N,) int64 in [0, 10)."""
    return make_data(N_SAMPLES, int(sizes[0]), int(sizes[-1]), DATA_SEED)


@pytest.fixture(scope="session")
def order():
    """One fixed shuffled visiting order (N,) int64, shared by every implementation:
    per-sample SGD visits samples in random order, and the rows are then gathered from
    all over x (31 MB, larger than the caches), as in real training."""
    return np.random.default_rng(DATA_SEED).permutation(N_SAMPLES).astype(np.int64)


@pytest.fixture(scope="session")
def params32(sizes):
    """The starting point, He-uniform weights and zero biases, flat (P,) float32.
    Read-only: every round copies it, so no run can leak trained weights into another."""
    p = init_params(sizes, np.float32, PARAM_SEED)
    p.flags.writeable = False
    return p
