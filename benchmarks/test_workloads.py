"""W2-W5 of the benchmark suite under pytest-benchmark, fastnn beside its peers in one run.

The workloads are fastnn.bench.workloads', shared with `python -m fastnn bench`; each builds its
implementations only after checking every one against fastnn (a fast wrong kernel measures
nothing). Sizes are the quick suite's; FASTNN_BENCH_FULL=1 gives the full ones. Nothing here
asserts on time.

    pytest benchmarks/ --benchmark-only --benchmark-json=RESULTS.json
    python benchmarks/report.py RESULTS.json
"""
import os

import pytest
from threadpoolctl import threadpool_limits

from fastnn.bench import workloads as W

CFG = W.Config.full() if os.environ.get("FASTNN_BENCH_FULL") else W.Config.quick()
_BUILT = {}


def _impls(key, build):
    """Build (and check) a workload once per session; every implementation reuses it."""
    if key not in _BUILT:
        with threadpool_limits(1):
            _BUILT[key] = build()
    return _BUILT[key]


def _bench(benchmark, key, build, name, rounds):
    impls, info = _impls(key, build)
    if name not in impls:
        pytest.skip(f"{name} is not installed here")  # only peers; fastnn always runs
    setup, run = impls[name]
    benchmark.extra_info.update({k: v for k, v in info.items() if k != "checks"})
    benchmark.extra_info["checks"] = info["checks"]
    benchmark.extra_info["n_samples"] = info["work"]

    def timed(arg):
        with threadpool_limits(1):
            run(arg)
    benchmark.pedantic(timed, setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1)


W2_NAMES = ["fastnn", "numpy", "torch eager", "scikit-learn"]


@pytest.mark.parametrize("name", W2_NAMES)
def test_w2_minibatch(benchmark, name, rounds):
    benchmark.group = "W2 mini-batch SGD 784-256-256-10 b128, 1 thread"
    _bench(benchmark, "w2", lambda: W.w2_minibatch(CFG), name, rounds)


@pytest.mark.parametrize("name", ["fastnn", "torch eager"])
@pytest.mark.parametrize("width", [16, 128, 1024])
@pytest.mark.parametrize("batch", [1, 64])
def test_w3_step(benchmark, name, width, batch, rounds):
    benchmark.group = f"W3 [w,w,w,w,10] w={width} batch {batch}, 1 thread (an epoch of steps)"
    _bench(benchmark, ("w3", width, batch), lambda: W.w3_step(CFG, width, batch, True), name,
           rounds)


@pytest.mark.parametrize("name", ["fastnn", "numpy", "torch"])
@pytest.mark.parametrize("batch", [1, 1024])
def test_w5_inference(benchmark, name, batch, rounds):
    benchmark.group = f"W5 inference 784-256-256-10 batch {batch}, 1 thread"
    _bench(benchmark, ("w5", batch), lambda: W.w5_inference(CFG, batch), name, max(rounds, 20))
