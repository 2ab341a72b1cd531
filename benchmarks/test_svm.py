"""W8 under pytest-benchmark: fastnn.svm.SVC (1 and 2 threads) beside scikit-learn's SVC
(libsvm), RBF, one fit per round. The implementations are fastnn.bench.workloads.w8_svc's,
checked against each other (support-vector count, held-out predictions) before anything is
timed. Sizes are the quick suite's (5,000 and 20,000 samples, and digits);
FASTNN_BENCH_FULL=1 adds 50,000. Nothing here asserts on time.

    pytest benchmarks/test_svm.py --benchmark-only
"""
import os

import pytest
from threadpoolctl import threadpool_limits

from fastnn.bench import workloads as W

DATASETS = W.W8_SIZES["full" if os.environ.get("FASTNN_BENCH_FULL") else "quick"] + ("digits",)
NAMES = ["fastnn", "fastnn, 2 threads", "scikit-learn SVC"]
_BUILT = {}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_w8_svc_fit(benchmark, dataset, name, rounds):
    if dataset not in _BUILT:
        with threadpool_limits(1):
            _BUILT[dataset] = W.w8_svc(dataset)
    impls, info = _BUILT[dataset]
    setup, run = impls[name]
    benchmark.group = f"W8 SVC fit, RBF, {dataset}"
    benchmark.extra_info.update(n_samples=info["work"], n_support=info["n_support"],
                                accuracy=info["accuracy"], checks=info["checks"])

    def timed(arg):
        with threadpool_limits(1):  # BLAS at 1 thread; fastnn's own threads are numba's
            run(arg)
    benchmark.pedantic(timed, setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1)
